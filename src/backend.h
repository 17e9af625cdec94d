/*
 * backend.h — the flat op boundary between the public API / model code and
 * the backends (cpu/, cuda/). One table of function pointers per backend.
 *
 * Every entry has the signature of the public call of the same name
 * (include/zmlx.h) and is called only after src/ops.c validated the
 * arguments: kernels never re-check shapes, dtypes or NULLs.
 */
#ifndef ZMLX_BACKEND_H
#define ZMLX_BACKEND_H

#include "zmlx.h"
#include "core/core.h"

typedef struct zmlx_backend {
    const char *name;
    zmlx_status (*gather_qmm)(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                              int x_per_slot, const zmlx_qweight *W, const int32_t *idx, int k,
                              void *y);
    zmlx_status (*gather_qmm_swiglu)(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                                     const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                     const int32_t *idx, int k, zmlx_act act, void *h);
    zmlx_status (*glu_act)(zmlx_ctx *, zmlx_dtype T, zmlx_act act, const void *g,
                           const void *u, int64_t n, void *h);
    zmlx_status (*gather_qmm_combine)(zmlx_ctx *, zmlx_dtype T, const void *h, int64_t n_tok,
                                      const zmlx_qweight *Wd, const int32_t *idx, int k,
                                      const float *w, void *out);
    zmlx_status (*moe_combine)(zmlx_ctx *, zmlx_dtype T, const void *y, const float *w,
                               int64_t n_tok, int k, int64_t D, void *out);
    zmlx_status (*add_rms_norm)(zmlx_ctx *, zmlx_dtype T, const void *x, const void *residual,
                                const void *weight, int64_t n_rows, int64_t D, float eps,
                                void *r_out, void *y_out);
    zmlx_status (*add)(zmlx_ctx *, zmlx_dtype T, const void *a, const void *b, int64_t n,
                       void *out);
    zmlx_status (*rms_norm)(zmlx_ctx *, zmlx_dtype T, const void *x, const void *weight,
                            int64_t n_rows, int64_t D, float eps, void *y);
    zmlx_status (*softmax)(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                           void *y);
    zmlx_status (*moe_route)(zmlx_ctx *, const zmlx_router_params *p, zmlx_dtype T,
                             const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out);
    zmlx_status (*rope)(zmlx_ctx *, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                        int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0);
    zmlx_status (*attention_decode)(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T,
                                    const void *q, const void *k_cache, const void *v_cache,
                                    int64_t n_ctx, void *out);
    zmlx_status (*embed_lookup)(zmlx_ctx *, zmlx_dtype T, const zmlx_qweight *table,
                                const int32_t *ids, int64_t n, void *out);
    zmlx_status (*kv_append)(zmlx_ctx *, zmlx_dtype T, const void *rows, int64_t n_tok, int H,
                             int hd, void *cache, int64_t cap, int64_t pos);
    zmlx_status (*short_conv)(zmlx_ctx *, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                              const void *w, void *state, void *y);
    /* with p->proj set a backend may decline (ZMLX_ERR_UNSUPPORTED, nothing
       done): ops.c then runs gather_qmm and the step without it */
    zmlx_status (*attention_step)(zmlx_ctx *, const zmlx_attn_step_params *p, zmlx_dtype T,
                                  void *qkv, int64_t n_tok, const int32_t *pos, void *k_cache,
                                  void *v_cache, void *out);
    zmlx_status (*argmax)(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                          int32_t *idx);
    zmlx_status (*i32_add)(zmlx_ctx *, int32_t *x, int64_t n, int32_t delta);
    /* ops a backend may leave NULL: ops.c then runs their unfused chain
       (attention_prefill: attention_decode per token) */
    zmlx_status (*attention_prefill)(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                     int64_t n_tok, int64_t pos, const void *k_cache, const void *v_cache,
                                     void *out);
    zmlx_status (*qmm_argmax)(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                              const zmlx_qweight *W, void *y, int32_t *idx);
    /* memory (see zmlx_mem_* in zmlx.h) */
    zmlx_status (*mem_alloc)(zmlx_ctx *, size_t bytes, void **out);
    void (*mem_free)(zmlx_ctx *, void *p);
    zmlx_status (*upload)(zmlx_ctx *, void *dst, const void *host_src, size_t bytes);
    zmlx_status (*download)(zmlx_ctx *, void *host_dst, const void *src, size_t bytes);
    zmlx_status (*sync)(zmlx_ctx *);
    zmlx_status (*measure_bandwidth)(zmlx_ctx *, size_t bytes, double *gbps);
    /* graphs (NULL entries: not supported by this backend) */
    zmlx_status (*graph_begin)(zmlx_ctx *);
    zmlx_status (*graph_end)(zmlx_ctx *, zmlx_graph **out);
    zmlx_status (*graph_launch)(zmlx_ctx *, zmlx_graph *g);
    void (*graph_free)(zmlx_ctx *, zmlx_graph *g);
    /* Tear down backend_state (may be NULL). */
    void (*destroy)(zmlx_ctx *);
} zmlx_backend;

struct zmlx_ctx {
    zmlx_ctx_opts opts;
    const zmlx_backend *be;
    zc_pool *pool;        /* CPU worker threads (NULL for the reference backend) */
    void *backend_state;  /* owned by the backend                                */
};

/* Host memory entries shared by the CPU tables (cpu/host_mem.c). */
zmlx_status zh_mem_alloc(zmlx_ctx *, size_t bytes, void **out);
void zh_mem_free(zmlx_ctx *, void *p);
zmlx_status zh_copy(zmlx_ctx *, void *dst, const void *src, size_t bytes);
zmlx_status zh_sync(zmlx_ctx *);
zmlx_status zh_measure_bandwidth(zmlx_ctx *, size_t bytes, double *gbps);

/* The tables. zmlx_backend_cpu entries fall back to the reference entry for
 * any shape/format without an optimised kernel. */
extern const zmlx_backend zmlx_backend_ref;
extern const zmlx_backend zmlx_backend_cpu;

/* CUDA: defined in src/cuda when built with ZMLX_HAVE_CUDA. init fills
 * ctx->be and ctx->backend_state or returns ZMLX_ERR_NO_DEVICE. */
zmlx_status zmlx_cuda_backend_init(zmlx_ctx *ctx, char *err, size_t errlen);

#endif
