#!/usr/bin/env python3
"""hf-reference.py — check zmlx's greedy tokens on an lfm2_moe checkpoint
against transformers' own Lfm2Moe model (an implementation nobody here wrote).

    scripts/hf-reference.py MODEL_DIR IDS_FILE

MODEL_DIR is an MLX-format checkpoint (e.g. `zmlx make-tiny --arch lfm2_moe`);
IDS_FILE holds the prompt ids on its first line and zmlx's greedy ids on its
second (`zmlx generate --prompt-ids ... --ignore-eos` output). The weights are
dequantized (affine, LSB-first codes) into float32, the model is run once over
prompt + generated ids, and at every generated position zmlx's token is
compared with transformers' argmax. A token that differs must be a near tie:
its logit within 1% of the logit range of the best. Needs torch, transformers
and numpy (the device machine has them); exits 1 on a mismatch.
"""
import glob
import json
import re
import sys

import numpy as np
import torch


def load_file(path):
    """A safetensors file as numpy arrays (BF16 widened to float32, which
    numpy lacks)."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8 : 8 + n])
    types = {"F32": np.float32, "F16": np.float16, "U32": np.uint32, "U8": np.uint8, "BF16": np.uint16}
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        a = np.frombuffer(raw[8 + n + b : 8 + n + e], dtype=types[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a
    return out


def dequant(w, scales, biases, bits, gs):
    """MLX affine: element i of a row is bits [i*bits, (i+1)*bits) of the row's
    little-endian bit stream; value = scale * code + bias per group of gs."""
    rows = w.reshape(-1, w.shape[-1])
    by = rows.view(np.uint8)
    bitsarr = np.unpackbits(by, axis=1, bitorder="little")
    K = bitsarr.shape[1] // bits
    codes = bitsarr[:, : K * bits].reshape(rows.shape[0], K, bits)
    codes = (codes * (1 << np.arange(bits))).sum(axis=2).astype(np.float32)
    s = scales.reshape(rows.shape[0], -1).astype(np.float32)
    b = biases.reshape(rows.shape[0], -1).astype(np.float32)
    out = codes * np.repeat(s, gs, axis=1) + np.repeat(b, gs, axis=1)
    return out.reshape(*w.shape[:-1], K)


def load_mlx(d):
    cfg = json.load(open(f"{d}/config.json"))
    q = cfg["quantization"]
    raw = {}
    for f in sorted(glob.glob(f"{d}/model*.safetensors")):
        raw.update(load_file(f))
    out = {}
    for name, t in raw.items():
        if name.endswith(".scales") or name.endswith(".biases"):
            continue
        if name.endswith(".weight") and name[:-7] + ".scales" in raw:
            path = name[:-7]
            spec = q.get(path, q)
            bits, gs = spec.get("bits", q["bits"]), spec.get("group_size", q["group_size"])
            out[name] = dequant(t, raw[path + ".scales"], raw[path + ".biases"], bits, gs)
        else:
            out[name] = t.astype(np.float32)
    return cfg, out


def main():
    d, ids_file = sys.argv[1], sys.argv[2]
    lines = open(ids_file).read().strip().splitlines()
    prompt = [int(x) for x in re.findall(r"-?\d+", lines[0])]
    gen = [int(x) for x in re.findall(r"-?\d+", lines[1])]
    cfg, W = load_mlx(d)
    from transformers import Lfm2MoeConfig, Lfm2MoeForCausalLM

    hc = Lfm2MoeConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        moe_intermediate_size=cfg["moe_intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
        num_experts=cfg["num_experts"], num_experts_per_tok=cfg["num_experts_per_tok"],
        num_dense_layers=cfg["num_dense_layers"], norm_topk_prob=cfg["norm_topk_prob"],
        use_expert_bias=cfg["use_expert_bias"], norm_eps=cfg["norm_eps"], conv_bias=cfg["conv_bias"],
        conv_L_cache=cfg["conv_L_cache"], rope_theta=cfg["rope_theta"], layer_types=cfg["layer_types"],
        routed_scaling_factor=cfg.get("routed_scaling_factor", 1.0), tie_word_embeddings=True,
        max_position_embeddings=cfg["max_position_embeddings"])
    model = Lfm2MoeForCausalLM(hc).float().eval()
    sd = model.state_dict()
    E = cfg["num_experts"]
    new = {}
    for k, v in sd.items():
        m = re.match(r"(model\.layers\.\d+)\.feed_forward\.experts\.(\d+)\.(w[123])\.weight$", k)
        if m:
            src = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}[m.group(3)]
            new[k] = W[f"{m.group(1)}.feed_forward.switch_mlp.{src}.weight"][int(m.group(2))]
        elif re.search(r"feed_forward\.experts\.gate_up_proj$", k):
            base = k[: -len(".experts.gate_up_proj")]
            g, u = W[f"{base}.switch_mlp.gate_proj.weight"], W[f"{base}.switch_mlp.up_proj.weight"]
            gu = np.concatenate([g, u], axis=1)  # [E, 2I, D]
            new[k] = gu if tuple(v.shape) == gu.shape else gu.transpose(0, 2, 1)
        elif re.search(r"feed_forward\.experts\.down_proj$", k):
            base = k[: -len(".experts.down_proj")]
            dn = W[f"{base}.switch_mlp.down_proj.weight"]  # [E, D, I]
            new[k] = dn if tuple(v.shape) == dn.shape else dn.transpose(0, 2, 1)
        elif re.search(r"feed_forward\.(w[123])\.weight$", k):
            w = re.search(r"feed_forward\.(w[123])\.weight$", k).group(1)
            src = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}[w]
            new[k] = W[k.replace(f"feed_forward.{w}.weight", f"feed_forward.{src}.weight")]
        elif k.endswith("conv.conv.weight"):
            new[k] = W[k].transpose(0, 2, 1)  # MLX [D, L, 1] -> torch [D, 1, L]
        elif k == "lm_head.weight":
            new[k] = W["model.embed_tokens.weight"]
        elif k in W:
            new[k] = W[k]
        else:
            sys.exit(f"hf-reference: no source for {k} {tuple(v.shape)}")
        if tuple(np.shape(new[k])) != tuple(v.shape):
            sys.exit(f"hf-reference: {k}: shape {np.shape(new[k])} for {tuple(v.shape)}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in new.items()})
    ids = torch.tensor([prompt + gen[:-1]])
    with torch.no_grad():
        logits = model(ids).logits[0].numpy()
    P, bad, ties, worst = len(prompt), 0, 0, 0.0
    for i, t in enumerate(gen):
        row = logits[P - 1 + i]
        best = int(row.argmax())
        gap = float(row[best] - row[t]) / float(row.max() - row.min())
        worst = max(worst, gap)
        if t != best:
            ties += gap <= 0.01
            bad += gap > 0.01
    print(f"hf-reference: {len(gen)} tokens, {len(gen) - bad - ties} argmax-identical, {ties} near ties, "
          f"{bad} mismatches, worst gap {worst:.4f} of the logit range")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
