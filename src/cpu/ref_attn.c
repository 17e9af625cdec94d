/*
 * ref_attn.c — the reference single-token attention step (zr_attention_decode).
 *
 * Per query head h (kv head g = h / (Hq/Hkv)), over the attended positions
 * j in [lo, n_ctx), lo = window > 0 ? max(0, n_ctx - window) : 0, all f32:
 *   qs[d]  = scale · q[h, d]                       (MLX scales q first)
 *   s_j    = Σ_d qs[d] · k[g, j, d]                 (index order)
 *   p      = zr_softmax_f32([sink_h, s_lo, ..., s_{n_ctx-1}])  (the sink, when
 *            given, is the first column of the softmax and is then dropped; it
 *            is a raw logit, not scaled)
 *   out[h, d] = round_T( Σ_j p_j · v[g, j, d] )    (j ascending, no FMA)
 * Scratch: one f32 array of the attended positions (+1 for the sink) and one
 * of hd (the scaled query), allocated per call.
 */
#include "cpu/ref.h"

#include <stdlib.h>

zmlx_status zr_attention_decode(zmlx_ctx *ctx, const zmlx_attn_params *p, zmlx_dtype T,
                                const void *q, const void *k_cache, const void *v_cache,
                                int64_t n_ctx, void *out) {
    (void)ctx;
    const int64_t lo = zr_attn_first(p, n_ctx);
    const int64_t n = n_ctx - lo, off = p->sinks ? 1 : 0;
    float *sc = malloc(sizeof(float) * (size_t)(n + off + p->hd));
    if (!sc) return ZMLX_ERR_OOM;
    float *qs = sc + n + off;
    const int group = p->Hq / p->Hkv;

    for (int h = 0; h < p->Hq; h++) {
        const int64_t g = h / group;
        for (int d = 0; d < p->hd; d++) qs[d] = p->scale * zc_load(T, q, (int64_t)h * p->hd + d);
        if (p->sinks) sc[0] = p->sinks[h];
        for (int64_t j = 0; j < n; j++) {
            int64_t kb = (g * p->cap + lo + j) * p->hd;
            float s = 0.0f;
            for (int d = 0; d < p->hd; d++) s += qs[d] * zc_load(T, k_cache, kb + d);
            sc[off + j] = s;
        }
        zr_softmax_f32(sc, n + off);
        for (int d = 0; d < p->hd_v; d++) {
            float acc = 0.0f;
            for (int64_t j = 0; j < n; j++)
                acc += sc[off + j] * zc_load(T, v_cache, (g * p->cap + lo + j) * p->hd_v + d);
            zc_store(T, out, (int64_t)h * p->hd_v + d, acc);
        }
    }
    free(sc);
    return ZMLX_OK;
}

zmlx_status zr_attention_step(zmlx_ctx *c, const zmlx_attn_step_params *p, zmlx_dtype T, void *qkv,
                              int64_t n_tok, const int32_t *pos, void *k_cache, void *v_cache,
                              void *out) {
    if (p->proj) return ZMLX_ERR_UNSUPPORTED; /* ops.c runs the projection through gather_qmm first */
    const zmlx_backend *be = c ? c->be : &zmlx_backend_ref;
    const zmlx_attn_params *a = &p->attn;
    const int64_t pos0 = pos[0];
    if (pos0 < 0 || pos0 > a->cap - n_tok) return ZMLX_ERR_RANGE;
    const size_t es = zmlx_dtype_size(T);
    const int64_t nq = (int64_t)a->Hq * a->hd, nk = (int64_t)a->Hkv * a->hd;
    const int64_t row = nq + nk + (int64_t)a->Hkv * a->hd_v;
    for (int64_t t = 0; t < n_tok; t++) {
        char *q = (char *)qkv + (size_t)(t * row) * es, *k = q + (size_t)nq * es, *v = k + (size_t)nk * es;
        const int64_t at = pos0 + t;
        zmlx_status st = ZMLX_OK;
        if (p->q_norm) st = be->rms_norm(c, T, q, p->q_norm, a->Hq, a->hd, p->eps, q);
        if (st == ZMLX_OK && p->k_norm) st = be->rms_norm(c, T, k, p->k_norm, a->Hkv, a->hd, p->eps, k);
        if (st == ZMLX_OK && p->rope) st = be->rope(c, p->rope, T, q, 1, a->Hq, NULL, at);
        if (st == ZMLX_OK && p->rope) st = be->rope(c, p->rope, T, k, 1, a->Hkv, NULL, at);
        if (st == ZMLX_OK) st = be->kv_append(c, T, k, 1, a->Hkv, a->hd, k_cache, a->cap, at);
        if (st == ZMLX_OK) st = be->kv_append(c, T, v, 1, a->Hkv, a->hd_v, v_cache, a->cap, at);
        if (st != ZMLX_OK) return st;
    }
    return zr_attention_tokens(c, a, T, qkv, row, n_tok, pos0, k_cache, v_cache, out);
}

zmlx_status zr_attention_tokens(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                int64_t q_stride, int64_t n_tok, int64_t pos, const void *k_cache,
                                const void *v_cache, void *out) {
    const zmlx_backend *be = c ? c->be : &zmlx_backend_ref;
    const size_t es = zmlx_dtype_size(T);
    for (int64_t t = 0; t < n_tok; t++) {
        const zmlx_status st = be->attention_decode(c, p, T, (const char *)q + (size_t)(t * q_stride) * es, k_cache,
                                                    v_cache, pos + t + 1,
                                                    (char *)out + (size_t)(t * p->Hq * p->hd_v) * es);
        if (st != ZMLX_OK) return st;
    }
    return ZMLX_OK;
}
