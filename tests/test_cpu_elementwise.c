/*
 * test_cpu_elementwise.c — the optimised CPU kernels around the matmuls:
 * add, rms_norm, add_rms_norm, glu_act, moe_combine and moe_route, each
 * against an f64 oracle written here (routers: exact indices), fused ==
 * unfused with memcmp (add_rms_norm vs add + rms_norm), the same bits for 1,
 * 2 and 3 threads, and the router's error path (non-finite logits: RANGE,
 * nothing written); attention_decode against the reference by memcmp; LFM2's
 * short convolution against an oracle, in pieces == whole.
 */
#include "harness.h"
#include "zmlx.h"
#include "cpu/cpu_kern.h"
#include "cpu/ref.h"

static double rel_T(zmlx_dtype T) { return T == ZMLX_F32 ? 0x1p-22 : T == ZMLX_F16 ? 0x1p-10 : 0x1p-8; }

static void *rand_T(h_rng *r, zmlx_dtype T, int64_t n, float lo, float hi) {
    void *p = h_alloc((size_t)n * zmlx_dtype_size(T));
    for (int64_t i = 0; i < n; i++) h_set_T(T, p, i, h_nonzero(r, lo, hi));
    return p;
}

static zmlx_ctx *g_ctx[4]; /* [0]: the reference table; [n]: CPU, n threads */
static const zmlx_dtype Ts[3] = {ZMLX_F32, ZMLX_F16, ZMLX_BF16};

static zmlx_ctx *ctx_n(int n) {
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.n_threads = n;
    zmlx_ctx *c = NULL;
    if (zmlx_ctx_create(&o, &c, NULL, 0) != ZMLX_OK) exit(2);
    return c;
}

static void test_norms(void) {
    h_rng r = {1};
    static const int64_t Ds[4] = {1, 7, 64, 2051};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 4; di++) {
            zmlx_dtype T = Ts[ti];
            int64_t D = Ds[di], rows = 5, n = rows * D;
            size_t bytes = (size_t)n * zmlx_dtype_size(T);
            void *x = rand_T(&r, T, n, -2, 2), *res = rand_T(&r, T, n, -2, 2);
            void *wt = rand_T(&r, T, D, 0.5f, 1.5f);
            void *r1 = h_alloc(bytes), *y1 = h_alloc(bytes), *r2 = h_alloc(bytes), *y2 = h_alloc(bytes);
            h_poison(r1, bytes); h_poison(y1, bytes); h_poison(r2, bytes); h_poison(y2, bytes);
            CHECK(zmlx_add_rms_norm(g_ctx[2], T, x, res, wt, rows, D, 1e-5f, r1, y1) == ZMLX_OK);
            CHECK(zmlx_add(g_ctx[2], T, x, res, n, r2) == ZMLX_OK);
            CHECK(zmlx_rms_norm(g_ctx[2], T, r2, wt, rows, D, 1e-5f, y2) == ZMLX_OK);
            CHECK(memcmp(r1, r2, bytes) == 0);
            CHECKF(memcmp(y1, y2, bytes) == 0, "T=%s D=%lld fused norm != unfused",
                   zmlx_dtype_name(T), (long long)D);
            int bad = 0;
            for (int64_t row = 0; row < rows; row++) {
                double ss = 0;
                for (int64_t i = 0; i < D; i++) {
                    double a = h_get_T(T, x, row * D + i) + h_get_T(T, res, row * D + i);
                    double got = h_get_T(T, r1, row * D + i);
                    if (fabs(got - a) > rel_T(T) * fabs(a)) bad++;
                    ss += got * got;
                }
                double inv = 1.0 / sqrt(ss / (double)D + 1e-5);
                for (int64_t i = 0; i < D; i++) {
                    double want = h_get_T(T, wt, i) * h_get_T(T, r1, row * D + i) * inv;
                    /* two roundings to T plus f32 math */
                    if (fabs(h_get_T(T, y1, row * D + i) - want) > 2.5 * rel_T(T) * fabs(want) + 1e-6) bad++;
                }
            }
            CHECKF(bad == 0, "T=%s D=%lld: %d elements off the oracle", zmlx_dtype_name(T), (long long)D, bad);
            /* no weight, in place, other thread counts */
            for (int nt = 1; nt <= 3; nt++) {
                memcpy(r2, r1, bytes);
                CHECK(zmlx_rms_norm(g_ctx[nt], T, r2, NULL, rows, D, 1e-5f, r2) == ZMLX_OK);
                if (nt == 1) memcpy(y2, r2, bytes);
                CHECK(memcmp(y2, r2, bytes) == 0);
            }
            free(x); free(res); free(wt); free(r1); free(y1); free(r2); free(y2);
        }
}

static double act64(zmlx_act a, double g, double u) {
    switch (a) {
    case ZMLX_ACT_GEGLU: return 0.5 * g * (1 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * u;
    case ZMLX_ACT_SWIGLU_OAI:
        g = g > 7 ? 7 : g;
        u = u > 7 ? 7 : u < -7 ? -7 : u;
        return g / (1 + exp(-1.702 * g)) * (u + 1);
    default: return g / (1 + exp(-g)) * u;
    }
}

static void test_glu_act(void) {
    h_rng r = {2};
    for (int ti = 0; ti < 3; ti++)
        for (int a = 0; a < ZMLX_ACT_COUNT_; a++) {
            zmlx_dtype T = Ts[ti];
            int64_t n = 3001;
            size_t bytes = (size_t)n * zmlx_dtype_size(T);
            void *g = rand_T(&r, T, n, -9, 9), *u = rand_T(&r, T, n, -9, 9);
            void *h = h_alloc(bytes), *h1 = h_alloc(bytes);
            h_poison(h, bytes);
            CHECK(zmlx_glu_act(g_ctx[2], T, (zmlx_act)a, g, u, n, h) == ZMLX_OK);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                double gv = h_get_T(T, g, i), uv = h_get_T(T, u, i), want = act64((zmlx_act)a, gv, uv);
                /* f32 math: 1 + tanh cancels for negative g (GeGLU), so allow
                   an absolute f32-sized error on top of the rounding to T */
                double tol = rel_T(T) * fabs(want) + 1e-6 * (fabs(gv) + 1) * (fabs(uv) + 1);
                if (fabs(h_get_T(T, h, i) - want) > tol) bad++;
            }
            CHECKF(bad == 0, "T=%s act %d: %d off", zmlx_dtype_name(T), a, bad);
            h_poison(h1, bytes);
            CHECK(zmlx_glu_act(g_ctx[1], T, (zmlx_act)a, g, u, n, h1) == ZMLX_OK);
            CHECK(memcmp(h, h1, bytes) == 0);
            free(g); free(u); free(h); free(h1);
        }
}

/* |a - b| within n ulp of the larger, or both below 2^-120 and within 2^-140
 * (e^y underflows through the subnormals differently) */
static int close_ulp(float a, float b, int n) {
    const float m = fmaxf(fabsf(a), fabsf(b));
    if (m < 0x1p-120f) return fabsf(a - b) <= 0x1p-140f;
    int e;
    frexpf(m, &e);
    return fabsf(a - b) <= n * ldexpf(1.0f, e - 24);
}

/* The optimised CPU kernels' activation (zcpu_act_f32: 8-lane vectors with
 * an exp of their own on AVX2) against zr_act, SwiGLU and SwiGLU-OAI: within
 * 4 ulp on a sweep of g over the exp's whole range (results down to the
 * subnormals and 0), an odd count so the vector tail runs; on edge values
 * (±0, huge, the clamps, ±inf, NaN, each g with each u) the same NaNs and
 * infinities and otherwise within 4 ulp. */
static void test_act_vector(void) {
    static const zmlx_act acts[2] = {ZMLX_ACT_SWIGLU, ZMLX_ACT_SWIGLU_OAI};
    enum { NS = 22001 };
    float *g = h_alloc(NS * 4), *u = h_alloc(NS * 4), *h = h_alloc(NS * 4);
    for (int a = 0; a < 2; a++) {
        int bad = 0;
        for (int i = 0; i < NS; i++) g[i] = -110.0f + 0.01f * (float)i, u[i] = i % 2 ? 1.5f : -0.75f;
        zcpu_act_f32(acts[a], g, u, NS, h);
        for (int i = 0; i < NS; i++) bad += !close_ulp(h[i], zr_act(acts[a], g[i], u[i]), 4);
        CHECKF(bad == 0, "act %d: %d of the sweep past 4 ulp", (int)acts[a], bad);
        static const float ge[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 7.0f, 7.5f, -7.5f, 88.0f, -88.0f, 103.0f,
                                   -103.0f, 104.0f, -104.0f, 150.0f, -150.0f, INFINITY, -INFINITY, NAN};
        static const float ue[] = {1.0f, -3.0f, 0.0f, 8.0f, -8.0f, INFINITY, NAN};
        const int ng = (int)(sizeof ge / sizeof *ge), nu = (int)(sizeof ue / sizeof *ue);
        for (int i = 0; i < ng * nu; i++) g[i] = ge[i / nu], u[i] = ue[i % nu];
        zcpu_act_f32(acts[a], g, u, ng * nu, h);
        bad = 0;
        for (int i = 0; i < ng * nu; i++) {
            const float want = zr_act(acts[a], g[i], u[i]);
            bad += isnan(want) ? !isnan(h[i]) : isinf(want) ? h[i] != want : !close_ulp(h[i], want, 4);
        }
        CHECKF(bad == 0, "act %d: %d edge values differ from zr_act", (int)acts[a], bad);
    }
    free(g); free(u); free(h);
}

static void test_moe_combine(void) {
    h_rng r = {3};
    for (int ti = 0; ti < 3; ti++) {
        zmlx_dtype T = Ts[ti];
        int64_t n_tok = 5, D = 1031;
        int k = 3;
        void *y = rand_T(&r, T, n_tok * k * D, -3, 3);
        float w[15];
        for (int i = 0; i < 15; i++) w[i] = h_nonzero(&r, 0, 1);
        size_t bytes = (size_t)(n_tok * D) * zmlx_dtype_size(T);
        void *o = h_alloc(bytes), *o1 = h_alloc(bytes);
        h_poison(o, bytes);
        CHECK(zmlx_moe_combine(g_ctx[2], T, y, w, n_tok, k, D, o) == ZMLX_OK);
        int bad = 0;
        for (int64_t t = 0; t < n_tok; t++)
            for (int64_t d = 0; d < D; d++) {
                double acc = 0, asum = 0;
                for (int j = 0; j < k; j++) {
                    double p = (double)w[t * k + j] * h_get_T(T, y, (t * k + j) * D + d);
                    acc += p;
                    asum += fabs(p);
                }
                if (fabs(h_get_T(T, o, t * D + d) - acc) > rel_T(T) * fabs(acc) + 1e-6 * asum) bad++;
            }
        CHECKF(bad == 0, "T=%s: %d off", zmlx_dtype_name(T), bad);
        h_poison(o1, bytes);
        CHECK(zmlx_moe_combine(g_ctx[3], T, y, w, n_tok, k, D, o1) == ZMLX_OK);
        CHECK(memcmp(o, o1, bytes) == 0);
        free(y); free(o); free(o1);
    }
}

/* softmax → top-k → renormalise, in f64 (ties cannot occur with these logits) */
static void test_router(void) {
    h_rng r = {4};
    for (int ti = 0; ti < 3; ti++) {
        zmlx_dtype T = Ts[ti];
        const int E = 40, k = 6;
        const int64_t n_tok = 37;
        void *lg = h_alloc((size_t)(n_tok * E) * zmlx_dtype_size(T));
        /* distinct logits per token: a random permutation of spaced values */
        for (int64_t t = 0; t < n_tok; t++) {
            int perm[40];
            for (int i = 0; i < E; i++) perm[i] = i;
            for (int i = E - 1; i > 0; i--) {
                int j = (int)h_int(&r, i + 1), tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
            }
            for (int i = 0; i < E; i++) h_set_T(T, lg, t * E + i, -4.0f + 0.125f * (float)perm[i]);
        }
        zmlx_router_params p = {.kind = ZMLX_ROUTER_SOFTMAX_TOPK, .E = E, .k = k, .norm_topk = 1};
        int32_t idx[37 * 6], idx1[37 * 6];
        float w[37 * 6], w1[37 * 6];
        h_poison(idx, sizeof idx);
        h_poison(w, sizeof w);
        CHECK(zmlx_moe_route(g_ctx[2], &p, T, lg, n_tok, idx, w) == ZMLX_OK);
        int bad = 0;
        for (int64_t t = 0; t < n_tok; t++) {
            double m = -1e300, z = 0, sel = 0;
            for (int i = 0; i < E; i++) m = fmax(m, h_get_T(T, lg, t * E + i));
            for (int i = 0; i < E; i++) z += exp(h_get_T(T, lg, t * E + i) - m);
            int taken[40] = {0}, want[6];
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int i = 0; i < E; i++)
                    if (!taken[i] && (best < 0 || h_get_T(T, lg, t * E + i) > h_get_T(T, lg, t * E + best))) best = i;
                taken[best] = 1;
                want[j] = best;
                sel += exp(h_get_T(T, lg, t * E + best) - m) / z;
            }
            for (int j = 0; j < k; j++) {
                double pw = exp(h_get_T(T, lg, t * E + want[j]) - m) / z / sel;
                if (idx[t * k + j] != want[j] || fabs(w[t * k + j] - pw) > 1e-5 * pw) bad++;
            }
        }
        CHECKF(bad == 0, "T=%s: %d router outputs off", zmlx_dtype_name(T), bad);
        for (int nt = 1; nt <= 3; nt += 2) {
            h_poison(idx1, sizeof idx1);
            h_poison(w1, sizeof w1);
            CHECK(zmlx_moe_route(g_ctx[nt], &p, T, lg, n_tok, idx1, w1) == ZMLX_OK);
            CHECK(memcmp(idx, idx1, sizeof idx) == 0 && memcmp(w, w1, sizeof w) == 0);
        }
        /* a NaN in the last token: RANGE and nothing written for any token */
        h_set_T(T, lg, n_tok * E - 1, NAN);
        h_poison(idx1, sizeof idx1);
        CHECK(zmlx_moe_route(g_ctx[2], &p, T, lg, n_tok, idx1, w1) == ZMLX_ERR_RANGE);
        int untouched = 1;
        for (int i = 0; i < 37 * 6; i++) untouched &= idx1[i] == -1;
        CHECK(untouched);
        /* and a non-finite bias (sigmoid kind) */
        h_set_T(T, lg, n_tok * E - 1, 0.5f);
        float bias[40] = {0};
        bias[7] = INFINITY;
        zmlx_router_params ps = {.kind = ZMLX_ROUTER_SIGMOID_TOPK, .E = E, .k = k, .norm_topk = 1,
                                 .bias = bias};
        CHECK(zmlx_moe_route(g_ctx[2], &ps, T, lg, n_tok, idx1, w1) == ZMLX_ERR_RANGE);
        free(lg);
    }
}

/* zmlx_short_conv against an oracle that keeps its rounding points (Bx and
 * c rounded to T, the sums in f64): y within T's rounding of C·c, the state
 * exactly the last rows of Bx; a call over pieces == one call (memcmp);
 * state zeros give the sequence start. Reference and CPU tables alike. */
static void test_short_conv(void) {
    h_rng r = {31};
    static const int64_t Ds[3] = {1, 7, 130};
    zmlx_ctx *ctxs[2] = {g_ctx[0], g_ctx[2]};
    for (int ti = 0; ti < 3; ti++)
        for (int di = 0; di < 3; di++)
            for (int L = 2; L <= 4; L++) {
                const zmlx_dtype T = Ts[ti];
                const int64_t D = Ds[di], n = 9, es = (int64_t)zmlx_dtype_size(T);
                void *bcx = rand_T(&r, T, n * 3 * D, -2, 2), *w = rand_T(&r, T, D * L, -1, 1);
                void *st0 = rand_T(&r, T, (L - 1) * D, -2, 2);
                /* oracle: Bx over [state; tokens], rounded to T as the op rounds it */
                const int64_t nb = (L - 1) + n;
                void *bx = h_alloc((size_t)(nb * D * es));
                for (int64_t i = 0; i < (L - 1) * D; i++) h_set_T(T, bx, i, (float)h_get_T(T, st0, i));
                for (int64_t t = 0; t < n; t++)
                    for (int64_t d = 0; d < D; d++)
                        h_set_T(T, bx, (L - 1 + t) * D + d,
                                (float)(h_get_T(T, bcx, t * 3 * D + d) * h_get_T(T, bcx, t * 3 * D + 2 * D + d)));
                for (int ci = 0; ci < 2; ci++) {
                    zmlx_ctx *c = ctxs[ci];
                    void *st = h_alloc((size_t)((L - 1) * D * es)), *y = h_alloc((size_t)(n * D * es));
                    memcpy(st, st0, (size_t)((L - 1) * D * es));
                    h_poison(y, (size_t)(n * D * es));
                    CHECK_EQ_INT(zmlx_short_conv(c, T, bcx, n, D, L, w, st, y), ZMLX_OK);
                    int bad = 0;
                    for (int64_t t = 0; t < n; t++)
                        for (int64_t d = 0; d < D; d++) {
                            double s = 0, sa = 0;
                            for (int j = 0; j < L; j++) {
                                double p = h_get_T(T, w, d * L + j) * h_get_T(T, bx, (t + j) * D + d);
                                s += p, sa += fabs(p);
                            }
                            const double cc = h_get_T(T, bcx, t * 3 * D + D + d);
                            const double want = cc * s, got = h_get_T(T, y, t * D + d);
                            bad += !(fabs(got - want) <= 2.01 * rel_T(T) * fabs(cc) * sa + 1e-30);
                        }
                    CHECKF(bad == 0, "T=%s D=%lld L=%d ctx %d: %d outputs off the oracle", zmlx_dtype_name(T),
                           (long long)D, L, ci, bad);
                    CHECK(memcmp(st, (char *)bx + n * D * es, (size_t)((L - 1) * D * es)) == 0);
                    /* the same tokens in pieces of 1, 3 and 5 */
                    void *st2 = h_alloc((size_t)((L - 1) * D * es)), *y2 = h_alloc((size_t)(n * D * es));
                    memcpy(st2, st0, (size_t)((L - 1) * D * es));
                    static const int64_t piece[3] = {1, 3, 5};
                    for (int64_t p = 0, t0 = 0; p < 3; t0 += piece[p++])
                        CHECK_EQ_INT(zmlx_short_conv(c, T, (char *)bcx + t0 * 3 * D * es, piece[p], D, L, w, st2,
                                                     (char *)y2 + t0 * D * es),
                                     ZMLX_OK);
                    CHECK(memcmp(y, y2, (size_t)(n * D * es)) == 0);
                    CHECK(memcmp(st, st2, (size_t)((L - 1) * D * es)) == 0);
                    free(st); free(y); free(st2); free(y2);
                }
                free(bcx); free(w); free(st0); free(bx);
            }
    /* a zero state is the start of a sequence: the first output sees only itself */
    const int64_t D = 4;
    float bcx[12] = {1, 2, 3, 4, /* C */ 1, 1, 1, 1, /* xx */ 2, 2, 2, 2}, w[12], st[8] = {0}, y[4];
    for (int i = 0; i < 12; i++) w[i] = (float)(i + 1); /* w[d, j] = 3d + j + 1 */
    CHECK_EQ_INT(zmlx_short_conv(g_ctx[0], ZMLX_F32, bcx, 1, D, 3, w, st, y), ZMLX_OK);
    for (int d = 0; d < D; d++) CHECK(y[d] == (float)(3 * d + 3) * (float)(2 * (d + 1)));
    CHECK(st[4] == 2.0f && st[7] == 8.0f && st[0] == 0.0f);
    CHECK_EQ_INT(zmlx_short_conv(g_ctx[0], ZMLX_F32, bcx, 1, D, 1, w, st, y), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_short_conv(g_ctx[0], ZMLX_F32, bcx, 1, D, ZMLX_SHORT_CONV_MAX_L + 1, w, st, y),
                 ZMLX_ERR_INVALID_ARG);
}

/* attention_decode: the CPU kernel gives the reference's bits (ref_attn.c's
 * operations in its order) for every thread count: GQA groups, sinks, a
 * sliding window, hd_v != hd, position counts around the kernel's blocks of
 * 8 and its 64-element passes over v. */
static void test_attention(void) {
    h_rng r = {7};
    static const struct {
        int Hq, Hkv, hd, hd_v;
        int64_t cap, n_ctx, window;
        int sinks;
    } cs[] = {
        {4, 2, 16, 16, 40, 1, 0, 0},    {4, 2, 16, 16, 40, 9, 0, 1},      {8, 1, 64, 64, 600, 513, 0, 0},
        {6, 3, 72, 136, 100, 37, 16, 1}, {2, 2, 128, 128, 300, 300, 100, 0}, {3, 1, 8, 8, 20, 16, 0, 1},
    };
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++)
        for (int ti = 0; ti < 3; ti++) {
            const zmlx_dtype T = Ts[ti];
            const zmlx_attn_params p = {cs[ci].Hq, cs[ci].Hkv, cs[ci].hd, cs[ci].hd_v, cs[ci].cap,
                                        1.0f / sqrtf((float)cs[ci].hd), cs[ci].window, NULL};
            float sinks[8];
            for (int h = 0; h < p.Hq; h++) sinks[h] = h_uniform(&r, -2, 2);
            zmlx_attn_params ps = p;
            if (cs[ci].sinks) ps.sinks = sinks;
            void *q = rand_T(&r, T, (int64_t)p.Hq * p.hd, -2, 2);
            void *kc = rand_T(&r, T, p.Hkv * p.cap * p.hd, -2, 2), *vc = rand_T(&r, T, p.Hkv * p.cap * p.hd_v, -2, 2);
            const size_t ob = (size_t)p.Hq * (size_t)p.hd_v * zmlx_dtype_size(T);
            void *want = h_alloc(ob), *got = h_alloc(ob);
            h_poison(want, ob);
            CHECK(zr_attention_decode(NULL, &ps, T, q, kc, vc, cs[ci].n_ctx, want) == ZMLX_OK);
            for (int n = 1; n <= 3; n++) {
                h_poison(got, ob);
                CHECK(zmlx_attention_decode(g_ctx[n], &ps, T, q, kc, vc, cs[ci].n_ctx, got) == ZMLX_OK);
                CHECKF(memcmp(want, got, ob) == 0, "case %zu T=%s threads %d: attention differs from the reference",
                       ci, zmlx_dtype_name(T), n);
            }
            free(q);
            free(kc);
            free(vc);
            free(want);
            free(got);
        }
}

int main(void) {
    for (int n = 1; n <= 3; n++) g_ctx[n] = ctx_n(n);
    zmlx_ctx_opts ro;
    zmlx_ctx_opts_default(&ro);
    ro.backend = ZMLX_BACKEND_CPU_REF;
    if (zmlx_ctx_create(&ro, &g_ctx[0], NULL, 0) != ZMLX_OK) return 2;
    RUN(test_norms);
    RUN(test_glu_act);
    RUN(test_act_vector);
    RUN(test_moe_combine);
    RUN(test_router);
    RUN(test_attention);
    RUN(test_short_conv);
    for (int n = 0; n <= 3; n++) zmlx_ctx_free(g_ctx[n]);
    return harness_done();
}
