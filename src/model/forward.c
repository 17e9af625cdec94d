/*
 * forward.c — the qwen3_moe and lfm2_moe forwards (FORMATS.md C.1, C.3) on
 * any backend, written only with the public primitives of include/zmlx.h. n tokens (one
 * decode step, or a prefill chunk) go through every layer together: the
 * projections and experts see n_tok = n (the multi-token kernel paths);
 * attention_prefill takes the n query tokens over the cache (causal).
 *
 * Per layer, with x the residual stream [n, D] and the patch plan choosing
 * fused or unfused primitives:
 *   a = rms_norm(x (+ pending MLP output), input_layernorm)
 *   q,k,v = a·Wqᵀ, a·Wkᵀ, a·Wvᵀ ; q,k normed per head ; RoPE(q,k) at pos.. ;
 *   k,v appended to the cache ; att = attention_prefill(q, cache) ; o = att·Woᵀ
 *     (attention switch: zmlx_attention_step with the packed projection
 *     folded in, the same bits, with the position read from sc.pos)
 *   m = rms_norm(x += o, post_attention_layernorm)
 *   MoE: logits = m·Wrᵀ ; (idx, w) = route ; y = Σ_j w_j·down_e(swiglu(gate_e(m), up_e(m)))
 *   dense: y = down(swiglu(gate(m), up(m)))
 * lfm2_moe differs in three places: its conv layers take the short-conv
 * block (bcx = a·W_inᵀ ; cy = short_conv(bcx, state) ; o = cy·W_outᵀ) where
 * the others take attention; the route is sigmoid + selection bias + scale;
 * the LM head is the embedding table. Then x += y, the final norm (last row only), the LM head and its argmax
 * (left in sc.tok), and sc.pos advanced: nothing goes through the host.
 */
#include "model/runtime.h"
#include "core/core.h"

#include <stdio.h>

/* Stop at the first failing primitive, naming the layer and the step. */
#define RUN(what, call) \
    do { \
        zmlx_status st_ = (call); \
        if (st_ != ZMLX_OK) \
            return zc_err(err, errlen, st_, "%s (layer %lld, position %lld): %s", what, (long long)layer, \
                          (long long)s->pos, zmlx_status_str(st_)); \
    } while (0)

/*
 * out = rms_norm(x + delta) over n rows of D, leaving x + delta in x; without
 * delta just the norm. Fused (add_rms_norm) or add then rms_norm: the same
 * bits by construction.
 */
static zmlx_status resid_norm(zmlx_session *s, void *x, const void *delta, const void *w, int64_t n, void *out) {
    const zr_dims *d = &s->d;
    if (delta && (s->patch & ZMLX_PATCH_ADD_RMS_NORM))
        return zmlx_add_rms_norm(s->ctx, s->T, delta, x, w, n, d->D, d->eps, x, out);
    if (delta) {
        zmlx_status st = zmlx_add(s->ctx, s->T, x, delta, n * d->D, x);
        if (st != ZMLX_OK) return st;
    }
    return zmlx_rms_norm(s->ctx, s->T, x, w, n, d->D, d->eps, out);
}

static zmlx_status attention(zmlx_session *s, const zr_layer *L, int64_t n, int64_t layer, char *err,
                             size_t errlen) {
    const zr_dims *d = &s->d;
    zr_scratch *c = &s->sc;
    zmlx_ctx *ctx = s->ctx;
    const zmlx_dtype T = s->T;
    const zmlx_rope_params rp = {.head_dim = (int)d->hd, .rot_dims = (int)d->hd, .traditional = 0,
                                 .base = d->theta};
    const zmlx_attn_params ap = {.Hq = (int)d->H, .Hkv = (int)d->Hkv, .hd = (int)d->hd, .hd_v = (int)d->hd,
                                 .cap = s->cap, .scale = d->attn_scale};
    if ((s->patch & ZMLX_PATCH_ATTENTION) && L->has_qkv) {
        const zmlx_attn_step_params sp = {.attn = ap, .rope = &rp, .q_norm = L->q_norm, .k_norm = L->k_norm,
                                          .eps = d->eps, .proj = &L->qkv, .x = c->a};
        RUN("qkv_proj+attention step", zmlx_attention_step(ctx, &sp, T, c->qkv, n, c->pos, L->kc, L->vc, c->att));
    } else {
        RUN("q_proj", zmlx_gather_qmm(ctx, T, c->a, n, 0, &L->q, NULL, 1, c->q));
        RUN("k_proj", zmlx_gather_qmm(ctx, T, c->a, n, 0, &L->k, NULL, 1, c->k));
        RUN("v_proj", zmlx_gather_qmm(ctx, T, c->a, n, 0, &L->v, NULL, 1, c->v));
        RUN("q_norm", zmlx_rms_norm(ctx, T, c->q, L->q_norm, n * d->H, d->hd, d->eps, c->q));
        RUN("k_norm", zmlx_rms_norm(ctx, T, c->k, L->k_norm, n * d->Hkv, d->hd, d->eps, c->k));
        RUN("rope(q)", zmlx_rope(ctx, &rp, T, c->q, n, (int)d->H, NULL, s->pos));
        RUN("rope(k)", zmlx_rope(ctx, &rp, T, c->k, n, (int)d->Hkv, NULL, s->pos));
        RUN("k cache", zmlx_kv_append(ctx, T, c->k, n, (int)d->Hkv, (int)d->hd, L->kc, s->cap, s->pos));
        RUN("v cache", zmlx_kv_append(ctx, T, c->v, n, (int)d->Hkv, (int)d->hd, L->vc, s->cap, s->pos));
        RUN("attention", zmlx_attention_prefill(ctx, &ap, T, c->q, n, s->pos, L->kc, L->vc, c->att));
    }
    RUN("o_proj", zmlx_gather_qmm(ctx, T, c->att, n, 0, &L->o, NULL, 1, c->o));
    return ZMLX_OK;
}

/* LFM2's short-conv block on c->a, into c->o (its state carries over). */
static zmlx_status conv_block(zmlx_session *s, const zr_layer *L, int64_t n, int64_t layer, char *err,
                              size_t errlen) {
    zr_scratch *c = &s->sc;
    RUN("conv in_proj", zmlx_gather_qmm(s->ctx, s->T, c->a, n, 0, &L->conv_in, NULL, 1, c->bcx));
    RUN("short conv", zmlx_short_conv(s->ctx, s->T, c->bcx, n, s->d.D, (int)s->d.conv_L, L->conv_w, L->conv_state,
                                      c->cy));
    RUN("conv out_proj", zmlx_gather_qmm(s->ctx, s->T, c->cy, n, 0, &L->conv_out, NULL, 1, c->o));
    return ZMLX_OK;
}

/* y = the MLP of layer L on c->a: routed experts (k slots per token) or the
 * dense SwiGLU MLP (one slot, no index). */
static zmlx_status mlp(zmlx_session *s, const zr_layer *L, int64_t n, int64_t layer, char *err, size_t errlen) {
    const zr_dims *d = &s->d;
    zr_scratch *c = &s->sc;
    zmlx_ctx *ctx = s->ctx;
    const zmlx_dtype T = s->T;
    const int32_t *idx = NULL;
    int k = 1;
    if (L->is_moe) {
        RUN("router", zmlx_gather_qmm(ctx, T, c->a, n, 0, &L->router, NULL, 1, c->rl));
        /* with renormalised weights, softmax-then-top-k equals top-k-then-softmax */
        int fused = (s->patch & ZMLX_PATCH_ROUTER) && d->norm_topk;
        zmlx_router_params rp = {.kind = fused ? ZMLX_ROUTER_TOPK_SOFTMAX : ZMLX_ROUTER_SOFTMAX_TOPK,
                                 .E = (int)d->E, .k = (int)d->k, .norm_topk = d->norm_topk};
        if (d->sigmoid_router) { /* lfm2_moe (FORMATS.md C.3 steps 1-3) */
            rp.kind = ZMLX_ROUTER_SIGMOID_TOPK;
            rp.norm_eps = 1e-6f;
            rp.scale = d->route_scale;
            rp.bias = L->expert_bias;
        }
        RUN("route", zmlx_moe_route(ctx, &rp, T, c->rl, n, c->idx, c->w));
        idx = c->idx;
        k = (int)d->k;
    }
    if (s->patch & ZMLX_PATCH_SWIGLU) {
        RUN("gate/up+swiglu", zmlx_gather_qmm_swiglu(ctx, T, c->a, n, &L->gate, &L->up, idx, k, ZMLX_ACT_SWIGLU, c->h));
    } else {
        RUN("gate_proj", zmlx_gather_qmm(ctx, T, c->a, n, 0, &L->gate, idx, k, c->g));
        RUN("up_proj", zmlx_gather_qmm(ctx, T, c->a, n, 0, &L->up, idx, k, c->u));
        RUN("swiglu", zmlx_glu_act(ctx, T, ZMLX_ACT_SWIGLU, c->g, c->u, n * k * L->gate.N, c->h));
    }
    if (!L->is_moe) {
        RUN("down_proj", zmlx_gather_qmm(ctx, T, c->h, n, 0, &L->down, NULL, 1, c->y));
    } else if (s->patch & ZMLX_PATCH_COMBINE) {
        RUN("down+combine", zmlx_gather_qmm_combine(ctx, T, c->h, n, &L->down, idx, k, c->w, c->y));
    } else {
        RUN("down_proj", zmlx_gather_qmm(ctx, T, c->h, n, 1, &L->down, idx, k, c->yk));
        RUN("combine", zmlx_moe_combine(ctx, T, c->yk, c->w, n, k, d->D, c->y));
    }
    return ZMLX_OK;
}

zmlx_status zr_forward(zmlx_session *s, const int32_t *ids, int64_t n, unsigned sections, char *err,
                       size_t errlen) {
    const zr_dims *d = &s->d;
    zr_scratch *c = &s->sc;
    zmlx_ctx *ctx = s->ctx;
    const zmlx_dtype T = s->T;
    const size_t drow = (size_t)d->D * zmlx_dtype_size(T);
    int64_t layer = -1;
    if (sections & ZR_SEC_REST) RUN("embedding", zmlx_embed_lookup(ctx, T, &s->embed, ids, n, c->x));
    for (layer = 0; layer < d->L; layer++) {
        const zr_layer *L = &s->layers[layer];
        zmlx_status st;
        if (sections & ZR_SEC_ATTN) {
            /* the previous layer's MLP output joins the stream here */
            RUN("input norm", resid_norm(s, c->x, layer ? c->y : NULL, L->in_norm, n, c->a));
            st = L->is_attn ? attention(s, L, n, layer, err, errlen) : conv_block(s, L, n, layer, err, errlen);
            if (st != ZMLX_OK) return st;
        }
        if (sections & ZR_SEC_MLP) {
            RUN("post-attention norm", resid_norm(s, c->x, c->o, L->post_norm, n, c->a));
            if ((st = mlp(s, L, n, layer, err, errlen)) != ZMLX_OK) return st;
        }
    }
    if (sections & ZR_SEC_HEAD) {
        /* only the last token's logits are wanted */
        const size_t last = (size_t)(n - 1) * drow;
        RUN("final norm", resid_norm(s, (char *)c->x + last, (char *)c->y + last, s->final_norm, 1, c->xl));
        if (s->patch & ZMLX_PATCH_LM_HEAD) {
            RUN("lm head+argmax", zmlx_qmm_argmax(ctx, T, c->xl, 1, &s->head, c->logits, c->tok));
        } else {
            RUN("lm head", zmlx_gather_qmm(ctx, T, c->xl, 1, 0, &s->head, NULL, 1, c->logits));
            RUN("argmax", zmlx_argmax(ctx, T, c->logits, 1, d->V, c->tok));
        }
    }
    if (sections & ZR_SEC_REST) RUN("position", zmlx_i32_add(ctx, c->pos, 1, (int32_t)n));
    return ZMLX_OK;
}
