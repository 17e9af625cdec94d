/*
 * cpu_elementwise.c — the optimised CPU kernels around the quantized
 * matmuls: add, rms_norm / add_rms_norm, the GLU activation, the MoE combine
 * and the router, spread over the context's thread pool.
 *
 * Fidelity: add_rms_norm and add + rms_norm go through the same norm_row;
 * the combine is the one routine that gather_qmm_combine also uses (on its
 * scratch of the slots' rows in T), adding slots with zr_combine_step in
 * order j = 0..k-1; the activation is zcpu_act_f32, which the fused SwiGLU
 * calls too. Every element is computed by one thread with a fixed order, so
 * results do not depend on the thread count.
 */
#include "cpu/cpu_kern.h"
#include "cpu/ref.h"

static zc_pool *pool_of(zmlx_ctx *c) { return c ? c->pool : NULL; }

/* ----------------------------------------------------------- combine */

typedef struct {
    zmlx_dtype T;
    const void *y;
    const float *w;
    int k;
    int64_t D;
    void *out;
} comb_job;

/* Elements of a combine task: a piece of one token's row. */
enum { COMB_CHUNK = 256 };

/* Elements [d0, d0 + n) of token tok's row: each acc starts at 0.0f and takes
 * the k slots in order; slot by slot over the piece, so the inner loops run
 * over contiguous elements (T a constant after inlining). */
static inline __attribute__((always_inline)) void comb_piece(zmlx_dtype T, const comb_job *j, int64_t tok,
                                                             int64_t d0, int n) {
    float acc[COMB_CHUNK];
    for (int i = 0; i < n; i++) acc[i] = 0.0f;
    for (int s = 0; s < j->k; s++) {
        const float w = j->w[tok * j->k + s];
        const int64_t y0 = (tok * j->k + s) * j->D + d0;
        for (int i = 0; i < n; i++) acc[i] = zr_combine_step(acc[i], w, zc_load(T, j->y, y0 + i));
    }
    for (int i = 0; i < n; i++) zc_store(T, j->out, tok * j->D + d0 + i, acc[i]);
}

/* pieces [b, e) of COMB_CHUNK elements (the last of a row may be shorter) */
static void comb_task(void *arg, int64_t b, int64_t e, int t) {
    (void)t;
    const comb_job *j = arg;
    const int64_t per_row = (j->D + COMB_CHUNK - 1) / COMB_CHUNK;
    for (int64_t p = b; p < e; p++) {
        const int64_t tok = p / per_row, d0 = p % per_row * COMB_CHUNK;
        const int n = j->D - d0 < COMB_CHUNK ? (int)(j->D - d0) : COMB_CHUNK;
        switch (j->T) {
        case ZMLX_F32: comb_piece(ZMLX_F32, j, tok, d0, n); break;
        case ZMLX_BF16: comb_piece(ZMLX_BF16, j, tok, d0, n); break;
        default: comb_piece(ZMLX_F16, j, tok, d0, n); break;
        }
    }
}

zmlx_status zcpu_moe_combine(zmlx_ctx *c, zmlx_dtype T, const void *y, const float *w,
                             int64_t n_tok, int k, int64_t D, void *out) {
    comb_job j = {T, y, w, k, D, out};
    zc_pool_run(pool_of(c), n_tok * ((D + COMB_CHUNK - 1) / COMB_CHUNK), 4, comb_task, &j);
    return ZMLX_OK;
}

/* -------------------------------------------------------- elementwise */

void zcpu_act_f32(zmlx_act act, const float *g, const float *u, int64_t n, float *h) {
    if (act != ZMLX_ACT_GEGLU && cq_isa_active() >= CQ_ISA_AVX2) {
        cq_act_avx2(act, g, u, n, h);
        return;
    }
    for (int64_t i = 0; i < n; i++) h[i] = zr_act(act, g[i], u[i]);
}

typedef struct {
    zmlx_dtype T;
    zmlx_act act;
    const void *a, *b;
    void *out;
} ew_job;

static void add_task(void *arg, int64_t b, int64_t e, int t) {
    (void)t;
    const ew_job *j = arg;
    for (int64_t i = b; i < e; i++) zc_store(j->T, j->out, i, zc_load(j->T, j->a, i) + zc_load(j->T, j->b, i));
}

/* elements [b, e) in pieces of 256: loaded to f32, zcpu_act_f32, stored */
static void act_task(void *arg, int64_t b, int64_t e, int t) {
    (void)t;
    const ew_job *j = arg;
    float g[256], u[256], h[256];
    for (int64_t i0 = b; i0 < e; i0 += 256) {
        const int n = e - i0 < 256 ? (int)(e - i0) : 256;
        for (int i = 0; i < n; i++) g[i] = zc_load(j->T, j->a, i0 + i), u[i] = zc_load(j->T, j->b, i0 + i);
        zcpu_act_f32(j->act, g, u, n, h);
        for (int i = 0; i < n; i++) zc_store(j->T, j->out, i0 + i, h[i]);
    }
}

zmlx_status zcpu_add(zmlx_ctx *c, zmlx_dtype T, const void *a, const void *b, int64_t n,
                     void *out) {
    ew_job j = {T, ZMLX_ACT_SWIGLU, a, b, out};
    zc_pool_run(pool_of(c), n, 8192, add_task, &j);
    return ZMLX_OK;
}

zmlx_status zcpu_glu_act(zmlx_ctx *c, zmlx_dtype T, zmlx_act act, const void *g, const void *u,
                         int64_t n, void *h) {
    ew_job j = {T, act, g, u, h};
    zc_pool_run(pool_of(c), n, 1024, act_task, &j);
    return ZMLX_OK;
}

/* --------------------------------------------------------------- norms */

/* One row r[D] (values already in T) → y: ss = Σ r² in 8 interleaved partial
 * sums combined by a fixed tree, inv = 1/sqrt(ss/D + eps), n = round_T(r·inv),
 * y = round_T(weight·n). y may be r (each r[i] is read before y[i] is written). */
static void norm_row(zmlx_dtype T, const void *r, const void *weight, int64_t D, float eps,
                     void *y) {
    float l[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= D; i += 8)
        for (int m = 0; m < 8; m++) {
            float v = zc_load(T, r, i + m);
            l[m] = l[m] + v * v;
        }
    for (int m = 0; i < D; i++, m++) {
        float v = zc_load(T, r, i);
        l[m] = l[m] + v * v;
    }
    float ss = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
    float inv = 1.0f / sqrtf(ss / (float)D + eps);
    for (i = 0; i < D; i++) {
        float nv = zc_round(T, zc_load(T, r, i) * inv);
        zc_store(T, y, i, weight ? zc_load(T, weight, i) * nv : nv);
    }
}

typedef struct {
    zmlx_dtype T;
    const void *x, *res, *weight;
    int64_t D;
    float eps;
    void *r_out, *y;
} norm_job;

static void norm_task(void *arg, int64_t b, int64_t e, int t) {
    (void)t;
    const norm_job *j = arg;
    const size_t rb = zmlx_dtype_size(j->T) * (size_t)j->D;
    for (int64_t row = b; row < e; row++) {
        const char *src = (const char *)j->x + row * rb;
        if (j->res) {
            /* r = round_T(x + residual); r_out may alias x or residual */
            ew_job a = {j->T, ZMLX_ACT_SWIGLU, src, (const char *)j->res + row * rb,
                        (char *)j->r_out + row * rb};
            add_task(&a, 0, j->D, 0);
            src = a.out;
        }
        norm_row(j->T, src, j->weight, j->D, j->eps, (char *)j->y + row * rb);
    }
}

zmlx_status zcpu_add_rms_norm(zmlx_ctx *c, zmlx_dtype T, const void *x, const void *residual,
                              const void *weight, int64_t n_rows, int64_t D, float eps,
                              void *r_out, void *y_out) {
    norm_job j = {T, x, residual, weight, D, eps, r_out, y_out};
    zc_pool_run(pool_of(c), n_rows, (4096 + D - 1) / D, norm_task, &j);
    return ZMLX_OK;
}

zmlx_status zcpu_rms_norm(zmlx_ctx *c, zmlx_dtype T, const void *x, const void *weight,
                          int64_t n_rows, int64_t D, float eps, void *y) {
    norm_job j = {T, x, NULL, weight, D, eps, NULL, y};
    zc_pool_run(pool_of(c), n_rows, (4096 + D - 1) / D, norm_task, &j);
    return ZMLX_OK;
}

/* -------------------------------------------------------------- router */

/* The reference router per token (its per-token math is already cheap and
 * must select exactly as every backend does), run on slices of the tokens in
 * parallel. Non-finite inputs are rejected up front so that, as in the
 * reference, nothing is written when any token is bad. */
typedef struct {
    const zmlx_router_params *p;
    zmlx_dtype T;
    const void *logits;
    int32_t *idx;
    float *w;
    zmlx_status st[1024];
} route_job;

static void route_task(void *arg, int64_t b, int64_t e, int t) {
    route_job *j = arg;
    const int64_t E = j->p->E, k = j->p->k;
    zmlx_status s = zr_moe_route(NULL, j->p, j->T,
                                 (const char *)j->logits + (size_t)(b * E) * zmlx_dtype_size(j->T),
                                 e - b, j->idx + b * k, j->w + b * k);
    if (s != ZMLX_OK) j->st[t & 1023] = s;
}

zmlx_status zcpu_moe_route(zmlx_ctx *c, const zmlx_router_params *p, zmlx_dtype T,
                           const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out) {
    for (int64_t i = 0; i < n_tok * p->E; i++)
        if (!isfinite(zc_load(T, logits, i))) return ZMLX_ERR_RANGE;
    for (int i = 0; p->bias && i < p->E; i++)
        if (!isfinite(p->bias[i])) return ZMLX_ERR_RANGE;
    route_job j = {.p = p, .T = T, .logits = logits, .idx = idx_out, .w = w_out};
    zc_pool_run(pool_of(c), n_tok, 8, route_task, &j);
    for (int i = 0; i < 1024; i++)
        if (j.st[i] != ZMLX_OK) return j.st[i];
    return ZMLX_OK;
}
