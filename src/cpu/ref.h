/*
 * ref.h — the scalar reference kernels (src/cpu/ref_*.c).
 *
 * Always built; the oracle that every optimised CPU kernel and every CUDA
 * kernel is tested against. Plain loops, f32 accumulation, the rounding points
 * of include/zmlx.h, compiled with -ffp-contract=off (no hidden FMA).
 * Arguments are validated by src/ops.c before these run.
 *
 * Fidelity by construction: gather_qmm, gather_qmm_swiglu, gather_qmm_combine
 * and embed_lookup all go through zr_qdot (one dot product of an activation
 * row with one dequantized weight row / column), and the fused kernels call
 * the same activation (zr_act) and combine step (zr_combine_step) as the
 * unfused ones, so fused == unfused bit for bit.
 */
#ifndef ZMLX_CPU_REF_H
#define ZMLX_CPU_REF_H

#include "backend.h"

/* ref_qmm.c */
zmlx_status zr_gather_qmm(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok, int x_per_slot,
                          const zmlx_qweight *W, const int32_t *idx, int k, void *y);
zmlx_status zr_gather_qmm_swiglu(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                                 const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                 const int32_t *idx, int k, zmlx_act act, void *h);
zmlx_status zr_gather_qmm_combine(zmlx_ctx *, zmlx_dtype T, const void *h, int64_t n_tok,
                                  const zmlx_qweight *Wd, const int32_t *idx, int k,
                                  const float *w, void *out);
zmlx_status zr_moe_combine(zmlx_ctx *, zmlx_dtype T, const void *y, const float *w,
                           int64_t n_tok, int k, int64_t D, void *out);
zmlx_status zr_embed_lookup(zmlx_ctx *, zmlx_dtype T, const zmlx_qweight *table,
                            const int32_t *ids, int64_t n, void *out);

/* ref_elementwise.c */
zmlx_status zr_add(zmlx_ctx *, zmlx_dtype T, const void *a, const void *b, int64_t n, void *out);

/* ref_norm.c */
zmlx_status zr_add_rms_norm(zmlx_ctx *, zmlx_dtype T, const void *x, const void *residual,
                            const void *weight, int64_t n_rows, int64_t D, float eps,
                            void *r_out, void *y_out);
zmlx_status zr_rms_norm(zmlx_ctx *, zmlx_dtype T, const void *x, const void *weight,
                        int64_t n_rows, int64_t D, float eps, void *y);
zmlx_status zr_softmax(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                       void *y);
/* The one f32 softmax of the CPU paths (softmax, routers, attention), in
 * place over v[n]: m = max, e = expf(v - m), sum in index order, v = e * (1/sum). */
void zr_softmax_f32(float *v, int64_t n);

/* ref_router.c */
zmlx_status zr_moe_route(zmlx_ctx *, const zmlx_router_params *p, zmlx_dtype T,
                         const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out);

/* ref_rope.c */
zmlx_status zr_rope(zmlx_ctx *, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                    int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0);

/* ref_attn.c */
/* The first attended position of a context of n_ctx: n_ctx - window under a
 * sliding window shorter than the context, else 0. */
static inline int64_t zr_attn_first(const zmlx_attn_params *p, int64_t n_ctx) {
    return p->window > 0 && n_ctx > p->window ? n_ctx - p->window : 0;
}
zmlx_status zr_attention_decode(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T,
                                const void *q, const void *k_cache, const void *v_cache,
                                int64_t n_ctx, void *out);

/* attention_prefill as its per-token composition: the ctx's attention_decode
 * (the reference's without a ctx) for token t (q row t at q + t·q_stride
 * elements) with n_ctx = pos + t + 1; out rows Hq·hd_v apart. */
zmlx_status zr_attention_tokens(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                int64_t q_stride, int64_t n_tok, int64_t pos, const void *k_cache,
                                const void *v_cache, void *out);

/* The fused attention step as the composition its contract names: per token,
 * the ctx's own rms_norm, rope and kv_append entries, then zr_attention_tokens
 * (the unfused path's bits on every backend without an attention_prefill
 * entry, which the host backends are). Position from pos[0]. */
zmlx_status zr_attention_step(zmlx_ctx *, const zmlx_attn_step_params *p, zmlx_dtype T, void *qkv,
                              int64_t n_tok, const int32_t *pos, void *k_cache, void *v_cache,
                              void *out);

/* ref_elementwise.c: row argmax (ties low, NaN ignored), int32 add */
zmlx_status zr_argmax(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                      int32_t *idx);
zmlx_status zr_i32_add(zmlx_ctx *, int32_t *x, int64_t n, int32_t delta);

/* ref_kv.c */
zmlx_status zr_kv_append(zmlx_ctx *, zmlx_dtype T, const void *rows, int64_t n_tok, int H, int hd,
                         void *cache, int64_t cap, int64_t pos);
/* ref_kv.c: LFM2's short convolution and its state (also the CPU backend's). */
zmlx_status zr_short_conv(zmlx_ctx *, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                          const void *w, void *state, void *y);

/* ref_act.c: the unfused activation, and the scalar pieces, also used by the optimised CPU kernels so
 * that activation and combine round identically on every CPU path. */
zmlx_status zr_glu_act(zmlx_ctx *, zmlx_dtype T, zmlx_act act, const void *g, const void *u,
                       int64_t n, void *h);
float zr_act(zmlx_act act, float g, float u);            /* f32 in, f32 out */
float zr_sigmoid(float x);                               /* stable form     */
/* One combine step, the only way any CPU path adds an expert's output into a
 * token's accumulator: acc + w*y with the product rounded to f32 before the
 * add (no FMA: the project builds with -ffp-contract=off). A token's
 * accumulator starts at 0.0f and takes slots j = 0..k-1 in order; the result
 * is rounded to T once at the end. */
static inline float zr_combine_step(float acc, float w, float y) {
    float p = w * y;
    return acc + p;
}

#endif
