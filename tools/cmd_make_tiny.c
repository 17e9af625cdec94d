/*
 * cmd_make_tiny.c — `zmlx make-tiny`: write a synthetic MLX-format qwen3_moe
 * or lfm2_moe checkpoint (random weights) laid out like an mlx-community conversion; the
 * generator itself is src/model/writer.c (zw_make_tiny). With --tokenizer the
 * tokenizer files are copied in and the vocabulary and BOS/EOS ids follow the
 * tokenizer, so `zmlx generate --prompt` runs on the result.
 */
#include "cli.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_make_tiny(int argc, char **argv);
__attribute__((constructor)) static void register_make_tiny(void) {
    cli_register("make-tiny", cmd_make_tiny, "write a small random MLX-format MoE checkpoint");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: zmlx make-tiny --out DIR [--arch qwen3_moe|lfm2_moe] [--preset qwen3-30b-a3b|lfm2-8b-a1b]\n"
            "         [--layers N] [--hidden N] [--heads N] [--kv-heads N] [--head-dim N]\n"
            "         [--experts N] [--top-k N] [--moe-inter N] [--dense-layers N] [--dense-inter N]\n"
            "         [--vocab N]\n"
            "         [--bits B] [--group-size G] [--mode affine|mxfp4|mxfp8|nvfp4] [--tie]\n"
            "         [--seed S] [--shard-mb MB] [--init quantize|codes] [--threads N]\n"
            "         [--tokenizer FILE]\n"
            "Default: 2 layers, hidden 64, 4 heads (2 kv) of 16, 8 experts top-2, moe-inter 64,\n"
            "vocab 256, affine 4-bit gs64, router affine 8-bit gs64, shards of 5 GiB.\n"
            "--init quantize (default without a preset) quantizes random bf16 weights with\n"
            "zmlx_quantize; --init codes (the preset's default) writes random codes and scales\n"
            "directly, which is what makes the ~17 GB Qwen3-30B-A3B preset quick to write.\n"
            "--tokenizer FILE copies FILE (a tokenizer.json) into DIR, with the tokenizer_config.json\n"
            "and chat_template.jinja beside it when present; the vocab becomes the tokenizer's\n"
            "(largest id + 1, unless --vocab is larger) and BOS/EOS its ids.\n"
            "--dense-layers N makes the first N layers dense SwiGLU MLPs of --dense-inter\n"
            "(config mlp_only_layers), the rest MoE.\n"
            "--arch lfm2_moe: 4 layers, attention at layers 1 and 3 and short-conv blocks (kernel 3)\n"
            "elsewhere, the first layer dense, head dim = hidden / heads, tied embeddings.\n");
}

/* Copy src to dir/name; 1 on success, else prints why. */
static int copy_file(const char *src, const char *dir, const char *name) {
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    int ok = in && out;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    if (out && fclose(out) != 0) ok = 0;
    if (in) fclose(in);
    if (!ok) fprintf(stderr, "make-tiny: cannot copy %s to %s\n", src, dst);
    return ok;
}

/* Size the vocab and set BOS/EOS from the tokenizer at path (vocab_given: --vocab
   was passed, and wins when larger). 1 on success, else prints why. */
static int follow_tokenizer(const char *path, int vocab_given, zw_tiny_opts *o) {
    zmlx_tokenizer *tok = NULL;
    char err[512] = "";
    zmlx_status s = zmlx_tokenizer_open(path, &tok, err, sizeof err);
    if (s != ZMLX_OK) {
        fprintf(stderr, "make-tiny: cannot use tokenizer %s: %s (%s)\n", path, err, zmlx_status_str(s));
        return 0;
    }
    int32_t nv = zmlx_tokenizer_n_vocab(tok);
    if (!vocab_given || o->vocab < nv) o->vocab = nv;
    zmlx_tok_info ti;
    zmlx_tokenizer_info(tok, &ti);
    if (ti.n_eos > 0) {
        o->n_eos = ti.n_eos < ZMLX_MAX_EOS ? ti.n_eos : ZMLX_MAX_EOS;
        memcpy(o->eos, ti.eos, (size_t)o->n_eos * sizeof o->eos[0]);
        /* no BOS token: Qwen3 configs name the pad token <|endoftext|> as BOS */
        o->bos = ti.bos >= 0 ? ti.bos : ti.pad >= 0 ? ti.pad : ti.eos[0];
    }
    zmlx_tokenizer_free(tok);
    return 1;
}

/* The tokenizer files: FILE itself as tokenizer.json, and its side files. */
static int copy_tokenizer(const char *path, const char *dir) {
    if (!copy_file(path, dir, "tokenizer.json")) return 0;
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path) : 1;
    const char *pdir = slash ? path : ".";
    static const char *const side[] = {"tokenizer_config.json", "chat_template.jinja"};
    for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%.*s/%s", dlen, pdir, side[i]);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        fclose(f);
        if (!copy_file(p, dir, side[i])) return 0;
    }
    return 1;
}

int cmd_make_tiny(int argc, char **argv) {
    zw_tiny_opts o;
    zw_tiny_defaults(&o);
    const char *out = NULL, *tok_path = NULL;
    int vocab_given = 0;
    /* an architecture or a preset first, so explicit flags override it whatever their position */
    for (int i = 1; i + 1 < argc; i++) {
        const char *v = argv[i + 1];
        if (!strcmp(argv[i], "--arch")) {
            if (strcmp(v, "qwen3_moe") && strcmp(v, "lfm2_moe")) {
                fprintf(stderr, "make-tiny: arch '%s' is not supported (supported: qwen3_moe, lfm2_moe)\n", v);
                return 2;
            }
            if (!strcmp(v, "lfm2_moe")) zw_tiny_lfm2(&o);
        }
    }
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--preset")) {
            if (!zw_tiny_preset(argv[i + 1], &o)) {
                fprintf(stderr, "make-tiny: unknown preset '%s' (known: " ZW_TINY_PRESETS ")\n", argv[i + 1]);
                return 2;
            }
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--tie")) {
            o.tie = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "make-tiny: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long long n = 0;
        struct { const char *flag; int *dst; long long lo, hi; } ints[] = {
            {"--layers", &o.layers, 1, 4096},      {"--hidden", &o.hidden, 1, 1 << 20},
            {"--heads", &o.heads, 1, 4096},        {"--kv-heads", &o.kv_heads, 1, 4096},
            {"--head-dim", &o.head_dim, 2, 4096},  {"--experts", &o.experts, 1, 65536},
            {"--top-k", &o.top_k, 1, 65536},       {"--moe-inter", &o.moe_inter, 1, 1 << 20},
            {"--dense-inter", &o.dense_inter, 1, 1 << 20}, {"--vocab", &o.vocab, 1, 1 << 30},
            {"--dense-layers", &o.dense_layers, 0, 4096},
            {"--bits", &o.bits, 1, 32},            {"--group-size", &o.group_size, 1, 1024},
            {"--threads", &o.n_threads, 0, 1024},
        };
        int done = 0;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !done; k++)
            if (!strcmp(a, ints[k].flag)) {
                if (!cli_parse_int(v, &n) || n < ints[k].lo || n > ints[k].hi) {
                    fprintf(stderr, "make-tiny: bad value '%s' for %s\n", v, a);
                    return 2;
                }
                *ints[k].dst = (int)n;
                vocab_given |= ints[k].dst == &o.vocab;
                done = 1;
            }
        if (done) continue;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--preset") || !strcmp(a, "--arch")) continue;
        else if (!strcmp(a, "--mode")) {
            if (zmlx_qmode_parse(v, &o.mode) != ZMLX_OK) {
                fprintf(stderr, "make-tiny: unknown mode '%s'\n", v);
                return 2;
            }
            if (o.mode != ZMLX_QMODE_AFFINE) { /* the mode's fixed sizes unless given later */
                o.bits = o.mode == ZMLX_QMODE_MXFP8 ? 8 : 4;
                o.group_size = o.mode == ZMLX_QMODE_NVFP4 ? 16 : 32;
            }
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_int(v, &n)) { fprintf(stderr, "make-tiny: bad seed '%s'\n", v); return 2; }
            o.seed = (uint64_t)n;
        } else if (!strcmp(a, "--shard-mb")) {
            double mb;
            if (!cli_parse_float(v, &mb) || !(mb > 0)) { fprintf(stderr, "make-tiny: bad --shard-mb '%s'\n", v); return 2; }
            o.shard_limit = (uint64_t)(mb * 1048576.0);
            if (!o.shard_limit) o.shard_limit = 1;
        } else if (!strcmp(a, "--init")) {
            if (!strcmp(v, "quantize")) o.init = ZW_INIT_QUANTIZE;
            else if (!strcmp(v, "codes")) o.init = ZW_INIT_CODES;
            else { fprintf(stderr, "make-tiny: --init must be quantize or codes\n"); return 2; }
        } else {
            fprintf(stderr, "make-tiny: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!out) {
        usage(stderr);
        return 2;
    }
    if (tok_path && !follow_tokenizer(tok_path, vocab_given, &o)) return 2;
    if (o.vocab <= o.bos || o.vocab <= o.eos[0]) { /* keep special ids inside a shrunk vocab */
        o.bos = o.vocab > 1 ? o.vocab - 2 : 0;
        o.n_eos = 1;
        o.eos[0] = o.vocab - 1;
    }
    char err[512];
    zmlx_status s = zw_make_tiny(out, &o, err, sizeof err);
    if (s != ZMLX_OK) {
        fprintf(stderr, "%s (%s)\n", err, zmlx_status_str(s));
        return 1;
    }
    return tok_path && !copy_tokenizer(tok_path, out) ? 1 : 0;
}
