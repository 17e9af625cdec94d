/*
 * ops.c — the public primitive entry points: argument validation (done once,
 * here, for every backend) and dispatch through the backend table of the
 * context (the reference table when ctx is NULL). Also the context itself.
 */
#include "backend.h"
#include "cpu/ref.h"

#include <stdlib.h>

/* ------------------------------------------------------------- context */

void zmlx_ctx_opts_default(zmlx_ctx_opts *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->backend = ZMLX_BACKEND_CPU;
}

zmlx_status zmlx_ctx_create(const zmlx_ctx_opts *opts, zmlx_ctx **out, char *err, size_t errlen) {
    if (!out) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "zmlx_ctx_create: out is NULL");
    *out = NULL;
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    if (opts) o = *opts;
    if (o.n_threads < 0) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "n_threads %d < 0", o.n_threads);
    zmlx_ctx *c = calloc(1, sizeof *c);
    if (!c) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory creating a context");
    c->opts = o;
    zmlx_status s = ZMLX_OK;
    switch (o.backend) {
    case ZMLX_BACKEND_CPU_REF:
        c->be = &zmlx_backend_ref;
        break;
    case ZMLX_BACKEND_CPU:
        c->be = &zmlx_backend_cpu;
        s = zc_pool_create(o.n_threads, &c->pool);
        if (s != ZMLX_OK) zc_err(err, errlen, s, "cannot start %d worker threads", o.n_threads);
        break;
    case ZMLX_BACKEND_CUDA:
#ifdef ZMLX_HAVE_CUDA
        s = zmlx_cuda_backend_init(c, err, errlen);
#else
        s = zc_err(err, errlen, ZMLX_ERR_NO_DEVICE, "this zmlx was built without CUDA (nvcc not found at build time)");
#endif
        break;
    default:
        s = zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "unknown backend %d", (int)o.backend);
    }
    if (s != ZMLX_OK) {
        zmlx_ctx_free(c);
        return s;
    }
    *out = c;
    return ZMLX_OK;
}

void zmlx_ctx_free(zmlx_ctx *c) {
    if (!c) return;
    if (c->be && c->be->destroy) c->be->destroy(c);
    zc_pool_free(c->pool);
    free(c);
}

zmlx_backend_kind zmlx_ctx_backend(const zmlx_ctx *c) {
    return c ? c->opts.backend : ZMLX_BACKEND_CPU_REF;
}

static const zmlx_backend *backend_of(const zmlx_ctx *c) { return c ? c->be : &zmlx_backend_ref; }
static int on_host(const zmlx_ctx *c) { return !c || c->opts.backend != ZMLX_BACKEND_CUDA; }

/* --------------------------------------------------------------- memory */

zmlx_status zmlx_mem_alloc(zmlx_ctx *c, size_t bytes, void **out) {
    if (!out || bytes == 0) return ZMLX_ERR_INVALID_ARG;
    *out = NULL;
    return backend_of(c)->mem_alloc(c, bytes, out);
}

void zmlx_mem_free(zmlx_ctx *c, void *p) {
    if (p) backend_of(c)->mem_free(c, p);
}

zmlx_status zmlx_mem_upload(zmlx_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) return ZMLX_ERR_INVALID_ARG;
    return bytes ? backend_of(c)->upload(c, dst, src, bytes) : ZMLX_OK;
}

zmlx_status zmlx_mem_download(zmlx_ctx *c, void *dst, const void *src, size_t bytes) {
    if (bytes && (!dst || !src)) return ZMLX_ERR_INVALID_ARG;
    return bytes ? backend_of(c)->download(c, dst, src, bytes) : ZMLX_OK;
}

zmlx_status zmlx_ctx_sync(zmlx_ctx *c) { return backend_of(c)->sync(c); }

zmlx_status zmlx_measure_bandwidth(zmlx_ctx *c, size_t bytes, double *gbps) {
    if (!gbps) return ZMLX_ERR_INVALID_ARG;
    return backend_of(c)->measure_bandwidth(c, bytes, gbps);
}

/* --------------------------------------------------------------- graphs */

zmlx_status zmlx_graph_capture_begin(zmlx_ctx *c) {
    const zmlx_backend *be = backend_of(c);
    return be->graph_begin ? be->graph_begin(c) : ZMLX_ERR_UNSUPPORTED;
}

zmlx_status zmlx_graph_capture_end(zmlx_ctx *c, zmlx_graph **out) {
    const zmlx_backend *be = backend_of(c);
    if (!out) return ZMLX_ERR_INVALID_ARG;
    *out = NULL;
    return be->graph_end ? be->graph_end(c, out) : ZMLX_ERR_UNSUPPORTED;
}

zmlx_status zmlx_graph_launch(zmlx_ctx *c, zmlx_graph *g) {
    const zmlx_backend *be = backend_of(c);
    if (!g) return ZMLX_ERR_INVALID_ARG;
    return be->graph_launch ? be->graph_launch(c, g) : ZMLX_ERR_UNSUPPORTED;
}

void zmlx_graph_free(zmlx_ctx *c, zmlx_graph *g) {
    const zmlx_backend *be = backend_of(c);
    if (g && be->graph_free) be->graph_free(c, g);
}

/* ----------------------------------------------------------- validation */

#define CHECK(cond) \
    do { if (!(cond)) return ZMLX_ERR_INVALID_ARG; } while (0)

static int valid_T(zmlx_dtype T) { return zmlx_dtype_is_float(T); }

static int valid_rope(const zmlx_rope_params *p) {
    return p->head_dim >= 2 && p->rot_dims >= 2 && p->rot_dims <= p->head_dim && p->rot_dims % 2 == 0 &&
           (p->inv_freq || p->base > 0.0f);
}

static int valid_attn(const zmlx_attn_params *p) {
    return p->Hq >= 1 && p->Hkv >= 1 && p->Hq % p->Hkv == 0 && p->hd >= 1 && p->hd_v >= 1 &&
           p->cap >= 1 && p->window >= 0;
}

/* Weight view usable by this context: well-formed, and in the memory the
 * backend works on. */
static zmlx_status check_weight(const zmlx_ctx *c, const zmlx_qweight *W) {
    if (!W) return ZMLX_ERR_INVALID_ARG;
    zmlx_status s = zmlx_qweight_check(W, NULL, 0);
    if (s != ZMLX_OK) return s;
    if (W->on_device != !on_host(c)) return ZMLX_ERR_INVALID_ARG;
    return ZMLX_OK;
}

/* Expert ids must lie in [0, E). Checked only where they live on the host. */
static zmlx_status check_idx(const zmlx_ctx *c, const int32_t *idx, int64_t n, int64_t E) {
    if (!on_host(c)) return ZMLX_OK;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= E) return ZMLX_ERR_RANGE;
    return ZMLX_OK;
}

/* Shared by every gather entry: token count, slot count and the index array. */
static zmlx_status check_gather(const zmlx_ctx *c, int64_t n_tok, const zmlx_qweight *W,
                                const int32_t *idx, int k) {
    CHECK(n_tok >= 0 && k >= 1);
    if (!idx) return (W->E == 1 && k == 1) ? ZMLX_OK : ZMLX_ERR_INVALID_ARG;
    if (k > W->E) return ZMLX_ERR_RANGE;
    return check_idx(c, idx, n_tok * k, W->E);
}

static int same_format(const zmlx_qweight *a, const zmlx_qweight *b) {
    return a->mode == b->mode && a->bits == b->bits && a->group_size == b->group_size &&
           a->transpose == b->transpose && a->E == b->E && a->N == b->N && a->K == b->K &&
           a->scale_dtype == b->scale_dtype && a->on_device == b->on_device;
}

/* -------------------------------------------------------------- entries */

zmlx_status zmlx_gather_qmm(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_tok,
                            int x_per_slot, const zmlx_qweight *W, const int32_t *idx, int k,
                            void *y) {
    CHECK(valid_T(T) && x && y);
    zmlx_status s = check_weight(c, W);
    if (s == ZMLX_OK) s = check_gather(c, n_tok, W, idx, k);
    if (s != ZMLX_OK || n_tok == 0) return s;
    return backend_of(c)->gather_qmm(c, T, x, n_tok, x_per_slot != 0, W, idx, k, y);
}

zmlx_status zmlx_gather_qmm_swiglu(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_tok,
                                   const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                   const int32_t *idx, int k, zmlx_act act, void *h) {
    CHECK(valid_T(T) && x && h && (unsigned)act < ZMLX_ACT_COUNT_);
    zmlx_status s = check_weight(c, Wg);
    if (s == ZMLX_OK) s = check_weight(c, Wu);
    if (s != ZMLX_OK) return s;
    CHECK(same_format(Wg, Wu));
    s = check_gather(c, n_tok, Wg, idx, k);
    if (s != ZMLX_OK || n_tok == 0) return s;
    return backend_of(c)->gather_qmm_swiglu(c, T, x, n_tok, Wg, Wu, idx, k, act, h);
}

zmlx_status zmlx_glu_act(zmlx_ctx *c, zmlx_dtype T, zmlx_act act, const void *g, const void *u,
                         int64_t n, void *h) {
    CHECK(valid_T(T) && g && u && h && n >= 0 && (unsigned)act < ZMLX_ACT_COUNT_);
    if (n == 0) return ZMLX_OK;
    return backend_of(c)->glu_act(c, T, act, g, u, n, h);
}

zmlx_status zmlx_gather_qmm_combine(zmlx_ctx *c, zmlx_dtype T, const void *h, int64_t n_tok,
                                    const zmlx_qweight *Wd, const int32_t *idx, int k,
                                    const float *w, void *out) {
    CHECK(valid_T(T) && h && w && out);
    zmlx_status s = check_weight(c, Wd);
    if (s == ZMLX_OK) s = check_gather(c, n_tok, Wd, idx, k);
    if (s != ZMLX_OK || n_tok == 0) return s;
    return backend_of(c)->gather_qmm_combine(c, T, h, n_tok, Wd, idx, k, w, out);
}

zmlx_status zmlx_moe_combine(zmlx_ctx *c, zmlx_dtype T, const void *y, const float *w,
                             int64_t n_tok, int k, int64_t D, void *out) {
    CHECK(valid_T(T) && y && w && out && n_tok >= 0 && k >= 1 && D >= 1);
    if (n_tok == 0) return ZMLX_OK;
    return backend_of(c)->moe_combine(c, T, y, w, n_tok, k, D, out);
}

zmlx_status zmlx_add_rms_norm(zmlx_ctx *c, zmlx_dtype T, const void *x, const void *residual,
                              const void *weight, int64_t n_rows, int64_t D, float eps,
                              void *r_out, void *y_out) {
    CHECK(valid_T(T) && x && residual && weight && r_out && y_out);
    CHECK(n_rows >= 0 && D >= 1 && eps >= 0.0f);
    if (n_rows == 0) return ZMLX_OK;
    return backend_of(c)->add_rms_norm(c, T, x, residual, weight, n_rows, D, eps, r_out, y_out);
}

zmlx_status zmlx_add(zmlx_ctx *c, zmlx_dtype T, const void *a, const void *b, int64_t n,
                     void *out) {
    CHECK(valid_T(T) && a && b && out && n >= 0);
    if (n == 0) return ZMLX_OK;
    return backend_of(c)->add(c, T, a, b, n, out);
}

zmlx_status zmlx_rms_norm(zmlx_ctx *c, zmlx_dtype T, const void *x, const void *weight,
                          int64_t n_rows, int64_t D, float eps, void *y) {
    CHECK(valid_T(T) && x && y && n_rows >= 0 && D >= 1 && eps >= 0.0f);
    if (n_rows == 0) return ZMLX_OK;
    return backend_of(c)->rms_norm(c, T, x, weight, n_rows, D, eps, y);
}

zmlx_status zmlx_softmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                         void *y) {
    CHECK(valid_T(T) && x && y && n_rows >= 0 && n >= 1);
    if (n_rows == 0) return ZMLX_OK;
    return backend_of(c)->softmax(c, T, x, n_rows, n, y);
}

zmlx_status zmlx_moe_route(zmlx_ctx *c, const zmlx_router_params *p, zmlx_dtype T,
                           const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out) {
    CHECK(p && valid_T(T) && logits && idx_out && w_out && n_tok >= 0);
    CHECK((unsigned)p->kind < ZMLX_ROUTER_COUNT_ && p->E >= 1 && p->k >= 1);
    if (p->k > p->E) return ZMLX_ERR_RANGE;
    CHECK(p->norm_eps >= 0.0f);
    if (p->kind == ZMLX_ROUTER_SIGMOID_GROUPED_TOPK) {
        CHECK(p->n_group >= 1 && p->E % p->n_group == 0);
        CHECK(p->topk_group >= 1 && p->topk_group <= p->n_group);
        /* a group score is the sum of its top 2, and the kept groups must hold k experts */
        CHECK(p->E / p->n_group >= 2 || p->n_group == 1);
        if ((int64_t)p->topk_group * (p->E / p->n_group) < p->k) return ZMLX_ERR_RANGE;
    }
    if (n_tok == 0) return ZMLX_OK;
    return backend_of(c)->moe_route(c, p, T, logits, n_tok, idx_out, w_out);
}

zmlx_status zmlx_rope(zmlx_ctx *c, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                      int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0) {
    CHECK(p && valid_T(T) && x && n_tok >= 0 && n_heads >= 1 && valid_rope(p));
    if (n_tok == 0) return ZMLX_OK;
    return backend_of(c)->rope(c, p, T, x, n_tok, n_heads, pos, pos0);
}

zmlx_status zmlx_attention_decode(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T,
                                  const void *q, const void *k_cache, const void *v_cache,
                                  int64_t n_ctx, void *out) {
    CHECK(p && valid_T(T) && q && k_cache && v_cache && out && valid_attn(p));
    if (n_ctx < 1 || n_ctx > p->cap) return ZMLX_ERR_RANGE;
    return backend_of(c)->attention_decode(c, p, T, q, k_cache, v_cache, n_ctx, out);
}

zmlx_status zmlx_attention_prefill(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                   int64_t n_tok, int64_t pos, const void *k_cache, const void *v_cache,
                                   void *out) {
    CHECK(p && valid_T(T) && q && k_cache && v_cache && out && valid_attn(p) && n_tok >= 0);
    if (pos < 0 || pos > p->cap || n_tok > p->cap - pos) return ZMLX_ERR_RANGE;
    if (n_tok == 0) return ZMLX_OK;
    const zmlx_backend *be = backend_of(c);
    if (be->attention_prefill) return be->attention_prefill(c, p, T, q, n_tok, pos, k_cache, v_cache, out);
    return zr_attention_tokens(c, p, T, q, (int64_t)p->Hq * p->hd, n_tok, pos, k_cache, v_cache, out);
}

zmlx_status zmlx_embed_lookup(zmlx_ctx *c, zmlx_dtype T, const zmlx_qweight *table,
                              const int32_t *ids, int64_t n, void *out) {
    CHECK(valid_T(T) && ids && out && n >= 0);
    zmlx_status s = check_weight(c, table);
    if (s != ZMLX_OK) return s;
    CHECK(table->E == 1 && table->transpose == 1);
    s = check_idx(c, ids, n, table->N);
    if (s != ZMLX_OK || n == 0) return s;
    return backend_of(c)->embed_lookup(c, T, table, ids, n, out);
}

zmlx_status zmlx_kv_append(zmlx_ctx *c, zmlx_dtype T, const void *rows, int64_t n_tok, int H,
                           int hd, void *cache, int64_t cap, int64_t pos) {
    CHECK(valid_T(T) && rows && cache && n_tok >= 0 && H >= 1 && hd >= 1 && cap >= 1);
    if (pos < 0 || pos > cap || n_tok > cap - pos) return ZMLX_ERR_RANGE;
    if (n_tok == 0) return ZMLX_OK;
    return backend_of(c)->kv_append(c, T, rows, n_tok, H, hd, cache, cap, pos);
}

zmlx_status zmlx_short_conv(zmlx_ctx *c, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                            const void *w, void *state, void *y) {
    CHECK(valid_T(T) && bcx && w && state && y && n_tok >= 0 && D >= 1 && L >= 2 && L <= ZMLX_SHORT_CONV_MAX_L);
    if (n_tok == 0) return ZMLX_OK;
    return backend_of(c)->short_conv(c, T, bcx, n_tok, D, L, w, state, y);
}

zmlx_status zmlx_attention_step(zmlx_ctx *c, const zmlx_attn_step_params *p, zmlx_dtype T, void *qkv,
                                int64_t n_tok, const int32_t *pos, void *k_cache, void *v_cache,
                                void *out) {
    CHECK(p && valid_T(T) && qkv && pos && k_cache && v_cache && out && n_tok >= 0);
    CHECK(valid_attn(&p->attn) && p->eps >= 0.0f);
    CHECK(!p->rope || (p->rope->head_dim == p->attn.hd && valid_rope(p->rope)));
    CHECK(!p->proj == !p->x);
    if (p->proj) {
        zmlx_status s = check_weight(c, p->proj);
        if (s == ZMLX_OK) s = check_gather(c, n_tok, p->proj, NULL, 1);
        if (s != ZMLX_OK) return s;
        const zmlx_attn_params *a = &p->attn;
        const int64_t row = (int64_t)(a->Hq + a->Hkv) * a->hd + (int64_t)a->Hkv * a->hd_v; /* packed q/k/v */
        const size_t es = zmlx_dtype_size(T), xb = (size_t)(n_tok * p->proj->K) * es, qb = (size_t)(n_tok * row) * es;
        CHECK(p->proj->N == row);
        CHECK((const char *)p->x + xb <= (const char *)qkv || (const char *)qkv + qb <= (const char *)p->x);
    }
    if (n_tok > p->attn.cap) return ZMLX_ERR_RANGE;
    if (n_tok == 0) return ZMLX_OK;
    const zmlx_backend *be = backend_of(c);
    zmlx_status s = be->attention_step(c, p, T, qkv, n_tok, pos, k_cache, v_cache, out);
    if (!p->proj || s != ZMLX_ERR_UNSUPPORTED) return s;
    /* the backend declined the projection folded in: the two calls */
    s = be->gather_qmm(c, T, p->x, n_tok, 0, p->proj, NULL, 1, qkv);
    if (s != ZMLX_OK) return s;
    zmlx_attn_step_params plain = *p;
    plain.proj = NULL, plain.x = NULL;
    return be->attention_step(c, &plain, T, qkv, n_tok, pos, k_cache, v_cache, out);
}

zmlx_status zmlx_argmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n, int32_t *idx) {
    CHECK(valid_T(T) && x && idx && n_rows >= 0 && n >= 1 && n <= INT32_MAX);
    if (n_rows == 0) return ZMLX_OK;
    return backend_of(c)->argmax(c, T, x, n_rows, n, idx);
}

zmlx_status zmlx_qmm_argmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_tok, const zmlx_qweight *W,
                            void *y, int32_t *idx) {
    CHECK(valid_T(T) && x && y && idx);
    zmlx_status s = check_weight(c, W);
    if (s == ZMLX_OK) s = check_gather(c, n_tok, W, NULL, 1);
    if (s != ZMLX_OK || n_tok == 0) return s;
    CHECK(W->N <= INT32_MAX);
    const zmlx_backend *be = backend_of(c);
    if (be->qmm_argmax) return be->qmm_argmax(c, T, x, n_tok, W, y, idx);
    s = be->gather_qmm(c, T, x, n_tok, 0, W, NULL, 1, y);
    return s == ZMLX_OK ? be->argmax(c, T, y, n_tok, W->N, idx) : s;
}

zmlx_status zmlx_i32_add(zmlx_ctx *c, int32_t *x, int64_t n, int32_t delta) {
    CHECK(x && n >= 0);
    if (n == 0) return ZMLX_OK;
    return backend_of(c)->i32_add(c, x, n, delta);
}

/* --------------------------------------------------------------- tables */

const zmlx_backend zmlx_backend_ref = {
    .name = "cpu-ref",
    .gather_qmm = zr_gather_qmm,
    .gather_qmm_swiglu = zr_gather_qmm_swiglu,
    .glu_act = zr_glu_act,
    .gather_qmm_combine = zr_gather_qmm_combine,
    .moe_combine = zr_moe_combine,
    .add_rms_norm = zr_add_rms_norm,
    .add = zr_add,
    .rms_norm = zr_rms_norm,
    .softmax = zr_softmax,
    .moe_route = zr_moe_route,
    .rope = zr_rope,
    .attention_decode = zr_attention_decode,
    .embed_lookup = zr_embed_lookup,
    .kv_append = zr_kv_append,
    .short_conv = zr_short_conv,
    .attention_step = zr_attention_step,
    .argmax = zr_argmax,
    .i32_add = zr_i32_add,
    .mem_alloc = zh_mem_alloc,
    .mem_free = zh_mem_free,
    .upload = zh_copy,
    .download = zh_copy,
    .sync = zh_sync,
    .measure_bandwidth = zh_measure_bandwidth,
    .destroy = NULL,
};
