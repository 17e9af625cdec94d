/*
 * test_cuda_ops.c — the CUDA backend's non-matmul primitives and plumbing
 * through the public API: add, rms_norm, add_rms_norm (== add + rms_norm,
 * memcmp), softmax, the four routers (indices exact, weights within rounding,
 * NaN logits -> ZMLX_ERR_RANGE at the next sync), rope, attention_decode
 * (GQA, window, sinks), attention_prefill (the flash kernel and the chunked
 * one), attention_step (== the unfused ops, bit for bit; graph
 * replays with a device position), argmax, i32_add, kv_append, short_conv (== the
 * reference, bit for bit), memory round trips, measure_bandwidth and graph
 * capture/replay; the forward's per-token ops at the tiny models' shapes
 * (n-token call == one-token calls, bit for bit). f64 oracles written here.
 * Exits 77 without a GPU.
 */
#include "cuda_test.h"

static const zmlx_dtype TS[3] = {ZMLX_F32, ZMLX_F16, ZMLX_BF16};

static void test_add_norms(void) {
    h_rng r = {11};
    for (int ti = 0; ti < 3; ti++) {
        zmlx_dtype T = TS[ti];
        const int64_t rows = 3, D = 1000 + ti * 37, n = rows * D;
        const size_t b = (size_t)n * zmlx_dtype_size(T);
        void *hx = ct_rand(&r, T, n, -2, 2), *hres = ct_rand(&r, T, n, -2, 2), *hw = ct_rand(&r, T, D, 0.5f, 1.5f);
        void *x = ct_dev(hx, b), *res = ct_dev(hres, b), *w = ct_dev(hw, (size_t)D * zmlx_dtype_size(T));
        void *r1 = ct_dev_poison(b), *y1 = ct_dev_poison(b), *r2 = ct_dev_poison(b), *y2 = ct_dev_poison(b);
        CHECK_EQ_INT(zmlx_add_rms_norm(g_ctx, T, x, res, w, rows, D, 1e-5f, r1, y1), ZMLX_OK);
        CHECK_EQ_INT(zmlx_add(g_ctx, T, x, res, n, r2), ZMLX_OK);
        CHECK_EQ_INT(zmlx_rms_norm(g_ctx, T, r2, w, rows, D, 1e-5f, y2), ZMLX_OK);
        void *R1 = ct_host(r1, b), *Y1 = ct_host(y1, b), *R2 = ct_host(r2, b), *Y2 = ct_host(y2, b);
        CHECK(memcmp(R1, R2, b) == 0);
        CHECK(memcmp(Y1, Y2, b) == 0);
        double *ref = h_alloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) ref[i] = ct_get(T, hx, i) + ct_get(T, hres, i);
        ct_close("add", T, R1, ref, NULL, n, ct_eps(T) / 2 + 1e-12, 0);
        for (int64_t rr = 0; rr < rows; rr++) {
            double ss = 0;
            for (int64_t i = 0; i < D; i++) ss += ct_get(T, R1, rr * D + i) * ct_get(T, R1, rr * D + i);
            double inv = 1.0 / sqrt(ss / D + 1e-5);
            for (int64_t i = 0; i < D; i++) ref[rr * D + i] = ct_get(T, hw, i) * ct_get(T, R1, rr * D + i) * inv;
        }
        ct_close("add_rms_norm", T, Y1, ref, NULL, n, 2.5 * ct_eps(T) + 1e-6, 0);
        /* no weight, in place (y aliases x) */
        CHECK_EQ_INT(zmlx_rms_norm(g_ctx, T, r2, NULL, rows, D, 1e-5f, r2), ZMLX_OK);
        void *Y3 = ct_host(r2, b);
        for (int64_t rr = 0; rr < rows; rr++)
            for (int64_t i = 0; i < D; i++) ref[rr * D + i] /= ct_get(T, hw, i);
        ct_close("rms_norm in place", T, Y3, ref, NULL, n, 1.5 * ct_eps(T) + 1e-6, 0);
        free(hx); free(hres); free(hw); free(R1); free(Y1); free(R2); free(Y2); free(Y3); free(ref);
        void *dev[] = {x, res, w, r1, y1, r2, y2};
        for (int i = 0; i < 7; i++) zmlx_mem_free(g_ctx, dev[i]);
    }
}

static void test_softmax(void) {
    h_rng r = {12};
    for (int ti = 0; ti < 3; ti++) {
        zmlx_dtype T = TS[ti];
        const int64_t rows = 4, n = 517;
        const size_t b = (size_t)(rows * n) * zmlx_dtype_size(T);
        void *hx = ct_rand(&r, T, rows * n, -6, 6);
        void *x = ct_dev(hx, b), *y = ct_dev_poison(b);
        CHECK_EQ_INT(zmlx_softmax(g_ctx, T, x, rows, n, y), ZMLX_OK);
        void *Y = ct_host(y, b);
        double *ref = h_alloc(sizeof(double) * (size_t)(rows * n));
        for (int64_t rr = 0; rr < rows; rr++) {
            double m = -INFINITY, s = 0;
            for (int64_t i = 0; i < n; i++) m = fmax(m, ct_get(T, hx, rr * n + i));
            for (int64_t i = 0; i < n; i++) s += exp(ct_get(T, hx, rr * n + i) - m);
            for (int64_t i = 0; i < n; i++) ref[rr * n + i] = exp(ct_get(T, hx, rr * n + i) - m) / s;
        }
        ct_close("softmax", T, Y, ref, NULL, rows * n, ct_eps(T) + 1e-5, 0); /* + f16 subnormal floor */
        /* in place gives the same bits */
        CHECK_EQ_INT(zmlx_softmax(g_ctx, T, x, rows, n, x), ZMLX_OK);
        void *Y2 = ct_host(x, b);
        CHECK(memcmp(Y, Y2, b) == 0);
        free(hx); free(Y); free(Y2); free(ref);
        zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, y);
    }
}

/* f64 router oracle (independent of the kernels): selection scores, top-k
 * by descending score with ties to the lower index, weights. E <= ORACLE_E,
 * k <= ORACLE_K. */
enum { ORACLE_E = 512, ORACLE_K = 64 };
static void route_oracle(const zmlx_router_params *p, const float *bias, const double *l,
                         int32_t *idx, double *w) {
    const int E = p->E, k = p->k;
    double sc[ORACLE_E], sel[ORACLE_E];
    int taken[ORACLE_E] = {0};
    const int sig = p->kind == ZMLX_ROUTER_SIGMOID_TOPK || p->kind == ZMLX_ROUTER_SIGMOID_GROUPED_TOPK;
    double m = -INFINITY, s = 0;
    for (int e = 0; e < E; e++) m = fmax(m, l[e]);
    for (int e = 0; e < E; e++) s += exp(l[e] - m);
    for (int e = 0; e < E; e++) {
        sc[e] = p->kind == ZMLX_ROUTER_SOFTMAX_TOPK ? exp(l[e] - m) / s : sig ? 1.0 / (1.0 + exp(-l[e])) : l[e];
        sel[e] = sig && bias ? sc[e] + bias[e] : sc[e];
    }
    if (p->kind == ZMLX_ROUTER_SIGMOID_GROUPED_TOPK) {
        int G = p->n_group, per = E / G, keep[ORACLE_E] = {0};
        double gs[ORACLE_E];
        for (int g = 0; g < G; g++) {
            double a = -INFINITY, b = -INFINITY;
            for (int e = 0; e < per; e++) {
                double v = sel[g * per + e];
                if (v > a) { b = a; a = v; } else if (v > b) b = v;
            }
            gs[g] = a + b;
        }
        for (int j = 0; j < p->topk_group; j++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!keep[g] && (best < 0 || gs[g] > gs[best])) best = g;
            keep[best] = 1;
        }
        for (int e = 0; e < E; e++)
            if (!keep[e / per]) sel[e] = 0.0;
    }
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!taken[e] && (best < 0 || sel[e] > sel[best])) best = e;
        taken[best] = 1;
        idx[j] = best;
        w[j] = sc[best];
    }
    if (p->kind == ZMLX_ROUTER_TOPK_SOFTMAX) {
        double mm = w[0], ss = 0;
        for (int j = 0; j < k; j++) ss += exp(w[j] - mm);
        for (int j = 0; j < k; j++) w[j] = exp(w[j] - mm) / ss;
        return;
    }
    double sum = 0;
    for (int j = 0; j < k; j++) sum += w[j];
    for (int j = 0; j < k; j++) {
        if (p->norm_topk) w[j] /= sig ? sum + p->norm_eps : sum;
        if (sig) w[j] *= p->scale == 0.0f ? 1.0 : p->scale;
    }
}

/* zmlx_moe_route on the GPU over n_tok rows of the host logits hl vs the f64
 * oracle (hbias: the host copy of p->bias): ids exact, weights within
 * 1e-5 relative; returns the ids and weights off. */
static void route_vs_oracle(const zmlx_router_params *p, const float *hbias, zmlx_dtype T, const void *hl,
                            int64_t n_tok, int *bad_idx, int *bad_w) {
    const int64_t E = p->E, k = p->k;
    void *l = ct_dev(hl, (size_t)(n_tok * E) * zmlx_dtype_size(T));
    int32_t *idx = ct_dev_poison(sizeof(int32_t) * (size_t)(n_tok * k));
    float *w = ct_dev_poison(sizeof(float) * (size_t)(n_tok * k));
    CHECK_EQ_INT(zmlx_moe_route(g_ctx, p, T, l, n_tok, idx, w), ZMLX_OK);
    CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
    int32_t *I = ct_host(idx, sizeof(int32_t) * (size_t)(n_tok * k));
    float *W = ct_host(w, sizeof(float) * (size_t)(n_tok * k));
    *bad_idx = *bad_w = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        double lt[ORACLE_E], rw[ORACLE_K];
        int32_t ri[ORACLE_K];
        for (int64_t e = 0; e < E; e++) lt[e] = ct_get(T, hl, t * E + e);
        route_oracle(p, hbias, lt, ri, rw);
        for (int j = 0; j < k; j++) {
            *bad_idx += I[t * k + j] != ri[j];
            *bad_w += !(fabs(W[t * k + j] - rw[j]) <= 1e-5 * fabs(rw[j]) + 1e-7);
        }
    }
    free(I); free(W);
    zmlx_mem_free(g_ctx, l); zmlx_mem_free(g_ctx, idx); zmlx_mem_free(g_ctx, w);
}

static void test_router(void) {
    for (int kind = 0; kind < ZMLX_ROUTER_COUNT_; kind++)
        for (int ti = 0; ti < 3; ti++) {
            zmlx_dtype T = TS[ti];
            zmlx_router_params p = {(zmlx_router_kind)kind, 64 + 32 * (kind & 1), 4 + kind, kind != 3,
                                    kind ? 1e-20f : 0.0f, kind == 1 ? 2.5f : 0.0f, NULL, 8, 3};
            const int64_t n_tok = 5, E = p.E, k = p.k;
            const size_t lb = (size_t)(n_tok * E) * zmlx_dtype_size(T);
            void *hl = h_alloc(lb);
            /* distinct logits (a permutation of a grid) so no selection is a tie */
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t e = 0; e < E; e++) ct_set(T, hl, t * E + e, 0.0625 * (double)((e * 37 + t * 11) % E) - 2.0);
            float hb[128];
            for (int e = 0; e < E; e++) hb[e] = (float)(e % 7) * 0.03f;
            float *bias = (kind == 1 || kind == 2) ? ct_dev(hb, sizeof(float) * (size_t)E) : NULL;
            p.bias = bias;
            int bad_idx, bad_w;
            route_vs_oracle(&p, bias ? hb : NULL, T, hl, n_tok, &bad_idx, &bad_w);
            CHECKF(bad_idx == 0 && bad_w == 0, "router kind %d T %d: %d ids, %d weights off", kind, ti, bad_idx, bad_w);
            /* a NaN logit: the call is queued, the next sync reports it */
            ct_set(T, hl, 3, NAN);
            void *l = ct_dev(hl, lb);
            int32_t *idx = ct_dev_poison(sizeof(int32_t) * (size_t)(n_tok * k));
            float *w = ct_dev_poison(sizeof(float) * (size_t)(n_tok * k));
            CHECK_EQ_INT(zmlx_moe_route(g_ctx, &p, T, l, n_tok, idx, w), ZMLX_OK);
            CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_ERR_RANGE);
            CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
            free(hl);
            zmlx_mem_free(g_ctx, l); zmlx_mem_free(g_ctx, idx); zmlx_mem_free(g_ctx, w); zmlx_mem_free(g_ctx, bias);
        }
}

/* Ties: logits on five levels (0 stored as +0 and -0 alternately), E = 128
 * (the Qwen3 router), 100 (not a multiple of the warp), 20 and 200 (1 and 8
 * entries per lane), k = 4-8, on the one-warp kernel; E = 300 and k = 40 on
 * the block kernel (the grouped kind always): every selection among equal
 * scores must go to the lower index, as the oracle's. */
static void test_router_ties(void) {
    static const int Es[6] = {128, 100, 300, 100, 20, 200}, Ks[6] = {8, 8, 8, 40, 4, 8};
    for (int kind = 0; kind < ZMLX_ROUTER_COUNT_; kind++)
        for (int ei = 0; ei < 6; ei++) {
            const zmlx_dtype T = TS[(kind + ei) % 3];
            zmlx_router_params p = {(zmlx_router_kind)kind, Es[ei], Ks[ei], kind != 3, kind ? 1e-20f : 0.0f,
                                    kind == 1 ? 2.5f : 0.0f, NULL, 4, 2};
            const int64_t n_tok = 7, E = p.E;
            const size_t lb = (size_t)(n_tok * E) * zmlx_dtype_size(T);
            void *hl = h_alloc(lb);
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t e = 0; e < E; e++) {
                    /* the grouped kind on non-negative levels: no two different pairs
                       of sigmoids sum to the same value (s(a) + s(-a) = 2 s(0)) */
                    const int lv = (int)((e * 7 + t * 3 + (e * e) % 3) % 5), z = kind == 2 ? 0 : 2;
                    const double v = lv == z ? ((e & 1) ? -0.0 : 0.0) : 0.5 * (lv - z);
                    ct_set(T, hl, t * E + e, v);
                }
            int bad_idx, bad_w;
            route_vs_oracle(&p, NULL, T, hl, n_tok, &bad_idx, &bad_w);
            CHECKF(bad_idx == 0 && bad_w == 0, "router ties kind %d E %d k %d: %d ids, %d weights off", kind, p.E,
                   p.k, bad_idx, bad_w);
            free(hl);
        }
}

static void test_rope(void) {
    h_rng r = {14};
    for (int v = 0; v < 4; v++) {
        zmlx_dtype T = TS[v % 3];
        const int n_tok = 3, H = 2, hd = 24, rot = v == 1 ? 16 : 24;
        float hinv[12];
        for (int i = 0; i < rot / 2; i++) hinv[i] = 1.0f / (float)(1 + i * 3);
        float *inv = v == 2 ? ct_dev(hinv, sizeof hinv) : NULL;
        zmlx_rope_params p = {hd, rot, v & 1, 10000.0f, v == 3 ? 0.5f : 0.0f, inv, v == 2 ? 1.25f : 0.0f};
        int32_t hpos[3] = {7, 0, 1234};
        int32_t *pos = v >= 2 ? ct_dev(hpos, sizeof hpos) : NULL;
        const int64_t n = n_tok * H * hd;
        const size_t b = (size_t)n * zmlx_dtype_size(T);
        void *hx = ct_rand(&r, T, n, -1, 1);
        void *x = ct_dev(hx, b);
        CHECK_EQ_INT(zmlx_rope(g_ctx, &p, T, x, n_tok, H, pos, 5), ZMLX_OK);
        void *X = ct_host(x, b);
        double *ref = h_alloc(sizeof(double) * (size_t)n);
        const int half = rot / 2;
        for (int t = 0; t < n_tok; t++)
            for (int h = 0; h < H; h++) {
                const int64_t o = ((int64_t)t * H + h) * hd;
                for (int i = 0; i < hd; i++) ref[o + i] = ct_get(T, hx, o + i);
                double P = (pos ? hpos[t] : 5 + t) * (p.pos_scale ? p.pos_scale : 1.0);
                double ms = p.mscale ? p.mscale : 1.0;
                for (int i = 0; i < half; i++) {
                    double fr = inv ? hinv[i] : pow(10000.0, -(double)i / half);
                    int i1 = p.traditional ? 2 * i : i, i2 = p.traditional ? i1 + 1 : i1 + half;
                    double a = ms * ct_get(T, hx, o + i1), bb = ms * ct_get(T, hx, o + i2);
                    ref[o + i1] = a * cos(P * fr) - bb * sin(P * fr);
                    ref[o + i2] = a * sin(P * fr) + bb * cos(P * fr);
                }
            }
        /* angles up to ~1234 rad in f32 lose ~1e-4 absolute */
        ct_close("rope", T, X, ref, NULL, n, 2 * ct_eps(T) + 3e-4, 0);
        free(hx); free(X); free(ref);
        zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, pos); zmlx_mem_free(g_ctx, inv);
    }
}

/* The exact attention of one token (host copies: q [Hq, hd], the caches)
 * over n_ctx positions: ref [Hq, hd_v], mag = Σ |p_j·v_jd| (the scale of
 * the rounding a sum of those terms may carry). */
static void attn_oracle(zmlx_dtype T, const zmlx_attn_params *pp, const void *hq, const void *hk, const void *hv,
                        int64_t n_ctx, const float *hs, double *ref, double *mag) {
    const zmlx_attn_params p = *pp;
    const int64_t lo = p.window && n_ctx > p.window ? n_ctx - p.window : 0;
    double *s = h_alloc(sizeof(double) * (size_t)n_ctx);
    for (int h = 0; h < p.Hq; h++) {
        const int64_t g = h / (p.Hq / p.Hkv);
        double m = hs ? hs[h] : -INFINITY, den = 0;
        for (int64_t j = lo; j < n_ctx; j++) {
            double d = 0;
            for (int i = 0; i < p.hd; i++) d += ct_get(T, hq, h * p.hd + i) * ct_get(T, hk, (g * p.cap + j) * p.hd + i);
            s[j] = d * p.scale;
            m = fmax(m, s[j]);
        }
        if (hs) den += exp(hs[h] - m);
        for (int64_t j = lo; j < n_ctx; j++) den += exp(s[j] - m);
        for (int d = 0; d < p.hd_v; d++) {
            double acc = 0, acc_abs = 0;
            for (int64_t j = lo; j < n_ctx; j++) {
                double t = exp(s[j] - m) / den * ct_get(T, hv, (g * p.cap + j) * p.hd_v + d);
                acc += t;
                acc_abs += fabs(t);
            }
            ref[h * p.hd_v + d] = acc;
            mag[h * p.hd_v + d] = acc_abs;
        }
    }
    free(s);
}

/* Five geometries, each in every dtype (the second with sinks, the third
 * with a window): a short context (a few chunks); head dims of 512 over 3000
 * positions, whose chunks (<= 32 positions in shared memory on any path)
 * outnumber the grid's ATT_GRID chunk blocks, so blocks take several rounds;
 * head dims 18 / 10, whose rows are not whole 16-byte runs (the kernel's path with
 * element loads and bounds checks); and 8 and 16 query heads per kv head
 * (Qwen3's group; every row of a tensor-core tile), whose 16-bit rows take
 * the tensor-core path. */
static void test_attention(void) {
    static const struct {
        int Hq, Hkv, hd, hd_v;
        int64_t cap, n_ctx, window;
        float scale;
    } geo[] = {
        {4, 2, 40, 24, 300, 213, 50, 0.15f},      {4, 2, 512, 512, 3200, 3000, 2800, 0.05f},
        {4, 2, 18, 10, 300, 150, 50, 0.15f},      {16, 2, 128, 128, 700, 650, 300, 0.09f},
        {32, 2, 64, 48, 400, 390, 100, 0.125f},
    };
    h_rng r = {15};
    for (int v = 0; v < 15; v++) {
        zmlx_dtype T = TS[v % 3];
        const int gi = v / 3;
        float hs[32];
        for (int h = 0; h < 32; h++) hs[h] = 0.5f - 0.25f * (float)(h % 7);
        float *sinks = v % 3 == 1 ? ct_dev(hs, sizeof hs) : NULL;
        zmlx_attn_params p = {geo[gi].Hq, geo[gi].Hkv, geo[gi].hd, geo[gi].hd_v, geo[gi].cap,
                              geo[gi].scale, v % 3 == 2 ? geo[gi].window : 0, sinks};
        const int64_t n_ctx = geo[gi].n_ctx;
        const size_t es = zmlx_dtype_size(T);
        void *hq = ct_rand(&r, T, p.Hq * p.hd, -1, 1);
        void *hk = ct_rand(&r, T, p.Hkv * p.cap * p.hd, -1, 1), *hv = ct_rand(&r, T, p.Hkv * p.cap * p.hd_v, -1, 1);
        void *q = ct_dev(hq, (size_t)(p.Hq * p.hd) * es), *kc = ct_dev(hk, (size_t)(p.Hkv * p.cap * p.hd) * es);
        void *vc = ct_dev(hv, (size_t)(p.Hkv * p.cap * p.hd_v) * es);
        void *o = ct_dev_poison((size_t)(p.Hq * p.hd_v) * es);
        CHECK_EQ_INT(zmlx_attention_decode(g_ctx, &p, T, q, kc, vc, n_ctx, o), ZMLX_OK);
        void *O = ct_host(o, (size_t)(p.Hq * p.hd_v) * es);
        double *ref = h_alloc(sizeof(double) * (size_t)(p.Hq * p.hd_v)), *mag = h_alloc(sizeof(double) * (size_t)(p.Hq * p.hd_v));
        attn_oracle(T, &p, hq, hk, hv, n_ctx, sinks ? hs : NULL, ref, mag);
        ct_close("attention", T, O, ref, mag, p.Hq * p.hd_v, ct_eps(T), 1e-5);
        free(mag);
        free(hq); free(hk); free(hv); free(O); free(ref);
        void *dev[] = {q, kc, vc, o, sinks};
        for (int i = 0; i < 5; i++) zmlx_mem_free(g_ctx, dev[i]);
    }
}

/* attention_prefill of n_tok tokens at pos against the exact attention of
 * each token, in every dtype, sinks on every other case: Qwen3's group of 8
 * over head dims of 128, a group of 3 (a block's 64 rows split tokens) under a
 * window from position 0, heads of their own (G = 1) at exactly 64 tokens,
 * all of which take the flash kernel in 16-bit T; and 20 tokens and head dims
 * 40 / 24, which keep the chunked kernel and so equal attention_decode per
 * token bit for bit. A second call repeats the first bit for bit. */
static void test_attention_prefill(void) {
    static const struct {
        int Hq, Hkv, hd, hd_v;
        int64_t cap, pos, n_tok, window;
        float scale;
        int chunked; /* fewer tokens or head dims the flash kernel does not take */
    } geo[] = {
        {32, 4, 128, 128, 600, 300, 200, 0, 0.088f, 0}, {12, 4, 64, 64, 400, 0, 150, 40, 0.125f, 0},
        {8, 8, 64, 64, 200, 5, 64, 0, 0.125f, 0},      {8, 2, 128, 128, 300, 100, 20, 0, 0.088f, 1},
        {4, 2, 40, 24, 300, 50, 70, 0, 0.15f, 1},
    };
    h_rng r = {16};
    const int quick = getenv("ZMLX_TEST_QUICK") != NULL; /* under compute-sanitizer: one flash case, 16-bit T */
    float hs[32];
    for (int h = 0; h < 32; h++) hs[h] = 0.5f - 0.25f * (float)(h % 7);
    float *sinks = ct_dev(hs, sizeof hs);
    for (size_t gi = quick ? 1 : 0; gi < (quick ? 2 : sizeof geo / sizeof geo[0]); gi++)
        for (int ti = quick ? 1 : 0; ti < 3; ti++) {
            const zmlx_dtype T = TS[ti];
            const int with_sinks = (int)(gi + (size_t)ti) % 2;
            const zmlx_attn_params p = {geo[gi].Hq, geo[gi].Hkv, geo[gi].hd, geo[gi].hd_v, geo[gi].cap,
                                        geo[gi].scale, geo[gi].window, with_sinks ? sinks : NULL};
            const int64_t nt = geo[gi].n_tok, pos = geo[gi].pos;
            const size_t es = zmlx_dtype_size(T), qrow = (size_t)p.Hq * p.hd, orow = (size_t)p.Hq * p.hd_v;
            const size_t kb = (size_t)(p.Hkv * p.cap * p.hd) * es, vb = (size_t)(p.Hkv * p.cap * p.hd_v) * es;
            void *hq = ct_rand(&r, T, nt * (int64_t)qrow, -1, 1);
            void *hk = ct_rand(&r, T, p.Hkv * p.cap * p.hd, -1, 1), *hv = ct_rand(&r, T, p.Hkv * p.cap * p.hd_v, -1, 1);
            void *q = ct_dev(hq, nt * qrow * es), *kc = ct_dev(hk, kb), *vc = ct_dev(hv, vb);
            void *o = ct_dev_poison(nt * orow * es), *o2 = ct_dev_poison(nt * orow * es);
            CHECK_EQ_INT(zmlx_attention_prefill(g_ctx, &p, T, q, nt, pos, kc, vc, o), ZMLX_OK);
            CHECK_EQ_INT(zmlx_attention_prefill(g_ctx, &p, T, q, nt, pos, kc, vc, o2), ZMLX_OK);
            void *O = ct_host(o, nt * orow * es), *O2 = ct_host(o2, nt * orow * es);
            CHECKF(!memcmp(O, O2, nt * orow * es), "geo %zu T%d: attention_prefill does not repeat", gi, ti);
            if (geo[gi].chunked || T == ZMLX_F32) {
                void *od = ct_dev_poison(orow * es);
                int differ = 0;
                for (int64_t t = 0; t < nt; t++) {
                    const char *qt = (const char *)q + t * qrow * es;
                    CHECK_EQ_INT(zmlx_attention_decode(g_ctx, &p, T, qt, kc, vc, pos + t + 1, od), ZMLX_OK);
                    void *D = ct_host(od, orow * es);
                    differ += memcmp(D, (char *)O + t * orow * es, orow * es) != 0;
                    free(D);
                }
                CHECKF(differ == 0, "geo %zu T%d: %d tokens != attention_decode", gi, ti, differ);
                zmlx_mem_free(g_ctx, od);
            }
            double *ref = h_alloc(sizeof(double) * orow), *mag = h_alloc(sizeof(double) * orow);
            for (int64_t t = 0; t < nt; t++) {
                attn_oracle(T, &p, (char *)hq + t * qrow * es, hk, hv, pos + t + 1, with_sinks ? hs : NULL, ref, mag);
                char what[64];
                snprintf(what, sizeof what, "prefill geo %zu token %lld", gi, (long long)t);
                ct_close(what, T, (char *)O + t * orow * es, ref, mag, (int64_t)orow, ct_eps(T), 1e-5);
            }
            free(ref); free(mag); free(hq); free(hk); free(hv); free(O); free(O2);
            void *dev[] = {q, kc, vc, o, o2};
            for (int i = 0; i < 5; i++) zmlx_mem_free(g_ctx, dev[i]);
        }
    zmlx_mem_free(g_ctx, sinks);
}

/* memory round trip, bandwidth probe, graph capture == direct, bad device */
static void test_plumbing(void) {
    uint8_t hb[1000], back[1000];
    for (int i = 0; i < 1000; i++) hb[i] = (uint8_t)(i * 7 + 3);
    void *d = ct_dev(hb, sizeof hb);
    CHECK_EQ_INT(zmlx_mem_download(g_ctx, back, d, sizeof back), ZMLX_OK);
    CHECK(memcmp(hb, back, sizeof hb) == 0);
    zmlx_mem_free(g_ctx, d);

    /* kv_append: rows [2 tok, 2 heads, 3] into cache [2, cap 5, 3] at pos 1 */
    float rows[12], cache[30], back2[30];
    for (int i = 0; i < 12; i++) rows[i] = (float)(i + 1);
    for (int i = 0; i < 30; i++) cache[i] = -1.0f;
    void *drows = ct_dev(rows, sizeof rows), *dcache = ct_dev(cache, sizeof cache);
    CHECK_EQ_INT(zmlx_kv_append(g_ctx, ZMLX_F32, drows, 2, 2, 3, dcache, 5, 1), ZMLX_OK);
    CHECK_EQ_INT(zmlx_kv_append(g_ctx, ZMLX_F32, drows, 2, 2, 3, dcache, 5, 4), ZMLX_ERR_RANGE);
    float *C = ct_host(dcache, sizeof cache);
    memcpy(back2, C, sizeof back2);
    int kv_bad = 0;
    for (int h = 0; h < 2; h++)
        for (int p = 0; p < 5; p++)
            for (int d = 0; d < 3; d++) {
                float want = (p == 1 || p == 2) ? rows[((p - 1) * 2 + h) * 3 + d] : -1.0f;
                kv_bad += back2[(h * 5 + p) * 3 + d] != want;
            }
    CHECK_EQ_INT(kv_bad, 0);
    free(C);
    zmlx_mem_free(g_ctx, drows);
    zmlx_mem_free(g_ctx, dcache);

    double gbps = 0;
    CHECK_EQ_INT(zmlx_measure_bandwidth(g_ctx, (size_t)64 << 20, &gbps), ZMLX_OK);
    CHECKF(gbps > 100.0 && gbps < 1e5, "bandwidth %.1f GB/s", gbps);

    /* a captured add + rms_norm replays to the same bits as the direct calls */
    h_rng r = {16};
    const int64_t D = 256;
    void *hx = ct_rand(&r, ZMLX_BF16, D, -1, 1), *hy = ct_rand(&r, ZMLX_BF16, D, -1, 1);
    void *x = ct_dev(hx, (size_t)D * 2), *y = ct_dev(hy, (size_t)D * 2);
    void *a = ct_dev_poison((size_t)D * 2), *n1 = ct_dev_poison((size_t)D * 2), *n2 = ct_dev_poison((size_t)D * 2);
    CHECK_EQ_INT(zmlx_add(g_ctx, ZMLX_BF16, x, y, D, a), ZMLX_OK);
    CHECK_EQ_INT(zmlx_rms_norm(g_ctx, ZMLX_BF16, a, x, 1, D, 1e-6f, n1), ZMLX_OK);
    zmlx_graph *g = NULL;
    CHECK_EQ_INT(zmlx_graph_capture_begin(g_ctx), ZMLX_OK);
    CHECK_EQ_INT(zmlx_add(g_ctx, ZMLX_BF16, x, y, D, a), ZMLX_OK);
    CHECK_EQ_INT(zmlx_rms_norm(g_ctx, ZMLX_BF16, a, x, 1, D, 1e-6f, n2), ZMLX_OK);
    CHECK_EQ_INT(zmlx_graph_capture_end(g_ctx, &g), ZMLX_OK);
    CHECK(g != NULL);
    if (g) {
        CHECK_EQ_INT(zmlx_graph_launch(g_ctx, g), ZMLX_OK);
        CHECK_EQ_INT(zmlx_graph_launch(g_ctx, g), ZMLX_OK);
    }
    void *N1 = ct_host(n1, (size_t)D * 2), *N2 = ct_host(n2, (size_t)D * 2);
    CHECK(memcmp(N1, N2, (size_t)D * 2) == 0);
    zmlx_graph_free(g_ctx, g);
    free(hx); free(hy); free(N1); free(N2);
    void *dev[] = {x, y, a, n1, n2};
    for (int i = 0; i < 5; i++) zmlx_mem_free(g_ctx, dev[i]);

    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = ZMLX_BACKEND_CUDA;
    o.device = 999;
    zmlx_ctx *bad = NULL;
    char err[200] = "";
    CHECK_EQ_INT(zmlx_ctx_create(&o, &bad, err, sizeof err), ZMLX_ERR_NO_DEVICE);
    CHECK(bad == NULL && err[0] != 0);
}

/* ------------------------------------------------ the tiny models' shapes */

/* The per-token ops of the qwen3_moe forward at the tiny models' shapes
 * (heads of 16 and 32, D 64/128, 8 experts top-2 / 6 top-3, rope theta 1e6,
 * 77 positions), bf16: a call over n tokens gives each token the bits of the
 * one-token call (prefill == token-by-token), and every result is close to
 * its f64 oracle. */
static void test_model_shapes(void) {
    h_rng r = {700};
    const zmlx_dtype T = ZMLX_BF16;
    const int64_t NT = 13, CAP = 77;
    for (int v = 0; v < 2; v++) {
        const int hd = v ? 32 : 16, H = v ? 6 : 4, Hkv = 2, D = v ? 128 : 64, E = v ? 6 : 8, k = v ? 3 : 2;
        char what[160];
        /* q_norm (rows of hd, in place) and the input norm (rows of D) */
        for (int pass = 0; pass < 2; pass++) {
            const int64_t w_ = pass ? D : hd, rows = pass ? NT : NT * H, n = rows * w_;
            void *hx = ct_rand(&r, T, n, -3, 3), *hw = ct_rand(&r, T, w_, 0.5f, 1.5f);
            void *x = ct_dev(hx, (size_t)n * 2), *w = ct_dev(hw, (size_t)w_ * 2), *one = ct_dev_poison((size_t)w_ * 2);
            CHECK_EQ_INT(zmlx_rms_norm(g_ctx, T, x, w, rows, w_, 1e-6f, x), ZMLX_OK);
            void *X = ct_host(x, (size_t)n * 2);
            int bad = 0;
            for (int64_t rr = 0; rr < rows; rr++) {
                zmlx_mem_upload(g_ctx, one, (char *)hx + rr * w_ * 2, (size_t)w_ * 2);
                CHECK_EQ_INT(zmlx_rms_norm(g_ctx, T, one, w, 1, w_, 1e-6f, one), ZMLX_OK);
                void *O = ct_host(one, (size_t)w_ * 2);
                bad += memcmp(O, (char *)X + rr * w_ * 2, (size_t)w_ * 2) != 0;
                free(O);
            }
            CHECKF(bad == 0, "v%d rms_norm D %lld: %d of %lld rows differ from the one-row call", v, (long long)w_, bad,
                   (long long)rows);
            double *ref = h_alloc(sizeof(double) * (size_t)n);
            for (int64_t rr = 0; rr < rows; rr++) {
                double ss = 0;
                for (int64_t i = 0; i < w_; i++) ss += ct_get(T, hx, rr * w_ + i) * ct_get(T, hx, rr * w_ + i);
                for (int64_t i = 0; i < w_; i++)
                    ref[rr * w_ + i] = ct_get(T, hx, rr * w_ + i) / sqrt(ss / (double)w_ + 1e-6) * ct_get(T, hw, i);
            }
            snprintf(what, sizeof what, "v%d rms_norm D %lld", v, (long long)w_);
            ct_close(what, T, X, ref, NULL, n, 2.5 * ct_eps(T), 0);
            free(hx); free(hw); free(X); free(ref);
            zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, w); zmlx_mem_free(g_ctx, one);
        }
        /* rope at positions 60..72 (one call of 13 tokens vs 13 one-token calls) */
        {
            const zmlx_rope_params rp = {hd, hd, 0, 1e6f, 0.0f, NULL, 0.0f};
            const int64_t n = NT * H * hd, pos0 = 60;
            void *hx = ct_rand(&r, T, n, -1, 1);
            void *x = ct_dev(hx, (size_t)n * 2), *one = ct_dev_poison((size_t)(H * hd) * 2);
            CHECK_EQ_INT(zmlx_rope(g_ctx, &rp, T, x, NT, H, NULL, pos0), ZMLX_OK);
            void *X = ct_host(x, (size_t)n * 2);
            int bad = 0;
            for (int64_t t = 0; t < NT; t++) {
                zmlx_mem_upload(g_ctx, one, (char *)hx + t * H * hd * 2, (size_t)(H * hd) * 2);
                CHECK_EQ_INT(zmlx_rope(g_ctx, &rp, T, one, 1, H, NULL, pos0 + t), ZMLX_OK);
                void *O = ct_host(one, (size_t)(H * hd) * 2);
                bad += memcmp(O, (char *)X + t * H * hd * 2, (size_t)(H * hd) * 2) != 0;
                free(O);
            }
            CHECKF(bad == 0, "v%d rope: %d of %lld tokens differ from the one-token call", v, bad, (long long)NT);
            double *ref = h_alloc(sizeof(double) * (size_t)n);
            for (int64_t t = 0; t < NT; t++)
                for (int h = 0; h < H; h++) {
                    const int64_t o = (t * H + h) * hd;
                    for (int i = 0; i < hd / 2; i++) {
                        double a = (double)(pos0 + t) * pow(1e6, -2.0 * i / hd);
                        double x1 = ct_get(T, hx, o + i), x2 = ct_get(T, hx, o + i + hd / 2);
                        ref[o + i] = x1 * cos(a) - x2 * sin(a);
                        ref[o + i + hd / 2] = x1 * sin(a) + x2 * cos(a);
                    }
                }
            snprintf(what, sizeof what, "v%d rope", v);
            ct_close(what, T, X, ref, NULL, n, 2 * ct_eps(T) + 1e-4, 0);
            free(hx); free(X); free(ref);
            zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, one);
        }
        /* attention over a growing context 1..CAP of a cap-CAP cache */
        {
            const zmlx_attn_params ap = {H, Hkv, hd, hd, CAP, (float)pow(hd, -0.5), 0, NULL};
            const size_t cb = (size_t)(Hkv * CAP * hd) * 2, qb = (size_t)(H * hd) * 2;
            void *hk = ct_rand(&r, T, Hkv * CAP * hd, -2, 2), *hv = ct_rand(&r, T, Hkv * CAP * hd, -1, 1);
            void *hq = ct_rand(&r, T, H * hd, -2, 2);
            void *kc = ct_dev(hk, cb), *vc = ct_dev(hv, cb), *q = ct_dev(hq, qb), *o = ct_dev_poison(qb);
            double *ref = h_alloc(sizeof(double) * (size_t)(H * hd)), *mag = h_alloc(sizeof(double) * (size_t)(H * hd));
            int bad_n = 0;
            for (int64_t n = 1; n <= CAP; n++) {
                CHECK_EQ_INT(zmlx_attention_decode(g_ctx, &ap, T, q, kc, vc, n, o), ZMLX_OK);
                void *O = ct_host(o, qb);
                for (int h = 0; h < H; h++) {
                    const int64_t g = h / (H / Hkv);
                    double sc[77], m = -INFINITY, den = 0;
                    for (int64_t j = 0; j < n; j++) {
                        double d = 0;
                        for (int i = 0; i < hd; i++) d += ct_get(T, hq, h * hd + i) * ct_get(T, hk, (g * CAP + j) * hd + i);
                        sc[j] = d * ap.scale;
                        m = fmax(m, sc[j]);
                    }
                    for (int64_t j = 0; j < n; j++) den += exp(sc[j] - m);
                    for (int i = 0; i < hd; i++) {
                        double acc = 0, aa = 0;
                        for (int64_t j = 0; j < n; j++) {
                            double t = exp(sc[j] - m) / den * ct_get(T, hv, (g * CAP + j) * hd + i);
                            acc += t;
                            aa += fabs(t);
                        }
                        ref[h * hd + i] = acc;
                        mag[h * hd + i] = aa;
                    }
                }
                snprintf(what, sizeof what, "v%d attention n_ctx %lld", v, (long long)n);
                bad_n += !ct_close(what, T, O, ref, mag, H * hd, ct_eps(T), 1e-4);
                free(O);
                if (bad_n > 3) break;
            }
            free(hk); free(hv); free(hq); free(ref); free(mag);
            zmlx_mem_free(g_ctx, kc); zmlx_mem_free(g_ctx, vc); zmlx_mem_free(g_ctx, q); zmlx_mem_free(g_ctx, o);
        }
        /* kv_append of 13 rows at position 50, vs 13 one-row appends */
        {
            const size_t cb = (size_t)(Hkv * CAP * hd) * 2, rb = (size_t)(NT * Hkv * hd) * 2;
            void *hrows = ct_rand(&r, T, NT * Hkv * hd, -1, 1), *hc = ct_rand(&r, T, Hkv * CAP * hd, -1, 1);
            void *rows = ct_dev(hrows, rb), *c1 = ct_dev(hc, cb), *c2 = ct_dev(hc, cb);
            CHECK_EQ_INT(zmlx_kv_append(g_ctx, T, rows, NT, Hkv, hd, c1, CAP, 50), ZMLX_OK);
            for (int64_t t = 0; t < NT; t++)
                CHECK_EQ_INT(zmlx_kv_append(g_ctx, T, (char *)rows + t * Hkv * hd * 2, 1, Hkv, hd, c2, CAP, 50 + t),
                             ZMLX_OK);
            uint16_t *C1 = ct_host(c1, cb), *C2 = ct_host(c2, cb), *R = hrows, *HC = hc;
            int bad = memcmp(C1, C2, cb) != 0;
            for (int h = 0; h < Hkv; h++)
                for (int64_t p = 0; p < CAP; p++)
                    for (int i = 0; i < hd; i++) {
                        uint16_t want = p >= 50 && p < 50 + NT ? R[((p - 50) * Hkv + h) * hd + i] : HC[(h * CAP + p) * hd + i];
                        bad += C1[(h * CAP + p) * hd + i] != want;
                    }
            CHECKF(bad == 0, "v%d kv_append: %d elements wrong", v, bad);
            free(hrows); free(hc); free(C1); free(C2);
            zmlx_mem_free(g_ctx, rows); zmlx_mem_free(g_ctx, c1); zmlx_mem_free(g_ctx, c2);
        }
        /* router, both kinds the forward uses, 13 tokens vs one at a time */
        for (int kind = 0; kind < 2; kind++) {
            const zmlx_router_params rp = {kind ? ZMLX_ROUTER_TOPK_SOFTMAX : ZMLX_ROUTER_SOFTMAX_TOPK, E, k, 1, 0.0f,
                                           0.0f, NULL, 0, 0};
            const size_t lb = (size_t)(NT * E) * 2;
            void *hl = ct_rand(&r, T, NT * E, -2, 2);
            void *l = ct_dev(hl, lb);
            int32_t *idx = ct_dev_poison(sizeof(int32_t) * (size_t)(NT * k)), *i1 = ct_dev_poison(sizeof(int32_t) * (size_t)k);
            float *w = ct_dev_poison(sizeof(float) * (size_t)(NT * k)), *w1 = ct_dev_poison(sizeof(float) * (size_t)k);
            CHECK_EQ_INT(zmlx_moe_route(g_ctx, &rp, T, l, NT, idx, w), ZMLX_OK);
            int32_t *I = ct_host(idx, sizeof(int32_t) * (size_t)(NT * k));
            float *W = ct_host(w, sizeof(float) * (size_t)(NT * k));
            int bad = 0, bad_o = 0;
            for (int64_t t = 0; t < NT; t++) {
                CHECK_EQ_INT(zmlx_moe_route(g_ctx, &rp, T, (char *)l + t * E * 2, 1, i1, w1), ZMLX_OK);
                int32_t *I1 = ct_host(i1, sizeof(int32_t) * (size_t)k);
                float *W1 = ct_host(w1, sizeof(float) * (size_t)k);
                bad += memcmp(I1, I + t * k, sizeof(int32_t) * (size_t)k) || memcmp(W1, W + t * k, sizeof(float) * (size_t)k);
                free(I1); free(W1);
                double lt[8], rw[8];
                int32_t ri[8];
                for (int e = 0; e < E; e++) lt[e] = ct_get(T, hl, t * E + e);
                route_oracle(&rp, NULL, lt, ri, rw);
                for (int j = 0; j < k; j++)
                    bad_o += I[t * k + j] != ri[j] || !(fabs(W[t * k + j] - rw[j]) <= 1e-5 * fabs(rw[j]) + 1e-7);
            }
            CHECKF(bad == 0 && bad_o == 0, "v%d router kind %d: %d tokens differ from the one-token call, %d vs oracle",
                   v, kind, bad, bad_o);
            free(hl); free(I); free(W);
            zmlx_mem_free(g_ctx, l); zmlx_mem_free(g_ctx, idx); zmlx_mem_free(g_ctx, i1);
            zmlx_mem_free(g_ctx, w); zmlx_mem_free(g_ctx, w1);
        }
    }
}

/* attention_step (device position) == rms_norm, rope, kv_append and
 * attention_prefill on the same GPU, bit for bit (outputs, rewritten qkv,
 * caches), for 5 tokens, for one and for 80 (the flash kernel), multi-chunk
 * and single-chunk contexts,
 * a window and sinks, and a context of more chunks than k_attn's grid holds
 * (head dim 512: short chunks, 3000 positions: blocks loop over chunks);
 * head dim 128 with a traditional rope over 96 of the features; given
 * inverse frequencies and no q/k norms;
 * close to the CPU reference; a graph that replays it with i32_add advancing
 * the position == eager calls; an out-of-range position flags
 * ZMLX_ERR_RANGE at the sync and leaves the caches alone. */
static void test_attention_step(void) {
    h_rng r = {31};
    enum { HQ = 8, HKV = 2, NT = 5, NL = 80, NV = 4 };
    float hsinks[HQ];
    for (int h = 0; h < HQ; h++) hsinks[h] = -1.0f + 0.3f * (float)h;
    float *sinks = ct_dev(hsinks, sizeof hsinks);
    for (int ti = 0; ti < 3; ti++)
        for (int vi = 0; vi < 3 * NV; vi++) {
            /* variants v with NT tokens, with one, then with NL (the flash kernel in 16-bit T) */
            const int v = vi % NV;
            if (vi >= 2 * NV && v == 3) continue; /* head dim 512 keeps the chunked kernel: covered at NT */
            const int64_t nt = vi < NV ? NT : vi < 2 * NV ? 1 : NL;
            const int64_t HD = v == 3 ? 512 : v == 1 ? 128 : 64, CAP = v == 3 ? 3200 : 300;
            const int64_t row = (HQ + 2 * HKV) * HD, nq = HQ * HD, nk = HKV * HD;
            const zmlx_dtype T = TS[ti];
            const size_t es = zmlx_dtype_size(T), cb = (size_t)(HKV * CAP * HD) * es, qb = (size_t)(nt * row) * es;
            const size_t ob = (size_t)(nt * nq) * es;
            const int32_t pos0 = v == 1 ? 10 : v == 3 ? 3000 : 137; /* one chunk of 64 / several / > ATT_GRID */
            float hinv[32];
            for (int i = 0; i < 32; i++) hinv[i] = 1.0f / (float)(1 + 3 * i);
            float *dinv = ct_dev(hinv, sizeof hinv);
            const zmlx_rope_params rp = {.head_dim = HD, .rot_dims = v == 1 ? 96 : HD, .base = 10000.0f,
                                         .traditional = v == 1, .inv_freq = v == 2 ? dinv : NULL};
            const zmlx_attn_params ap = {HQ, HKV, HD, HD, CAP, 0.125f, v == 2 ? 50 : 0, v == 2 ? sinks : NULL};
            void *hqkv = ct_rand(&r, T, nt * row, -2, 2), *hk = ct_rand(&r, T, HKV * CAP * HD, -1, 1);
            void *hv = ct_rand(&r, T, HKV * CAP * HD, -1, 1);
            void *hqn = ct_rand(&r, T, HD, 0.5f, 1.5f), *hkn = ct_rand(&r, T, HD, 0.5f, 1.5f);
            void *qn = ct_dev(hqn, HD * es), *kn = ct_dev(hkn, HD * es);
            const zmlx_attn_step_params sp = {ap, &rp, v == 2 ? NULL : qn, v == 2 ? NULL : kn, 1e-6f, NULL, NULL};
            int32_t *pos = ct_dev(&pos0, sizeof pos0);
            void *qkv1 = ct_dev(hqkv, qb), *k1 = ct_dev(hk, cb), *v1 = ct_dev(hv, cb), *o1 = ct_dev_poison(ob);
            void *qkv2 = ct_dev(hqkv, qb), *k2 = ct_dev(hk, cb), *v2 = ct_dev(hv, cb), *o2 = ct_dev_poison(ob);
            CHECK_EQ_INT(zmlx_attention_step(g_ctx, &sp, T, qkv1, nt, pos, k1, v1, o1), ZMLX_OK);
            for (int64_t t = 0; t < nt; t++) {
                char *q = (char *)qkv2 + (size_t)(t * row) * es, *k = q + (size_t)nq * es, *vv = k + (size_t)nk * es;
                if (sp.q_norm) CHECK_EQ_INT(zmlx_rms_norm(g_ctx, T, q, qn, HQ, HD, 1e-6f, q), ZMLX_OK);
                if (sp.k_norm) CHECK_EQ_INT(zmlx_rms_norm(g_ctx, T, k, kn, HKV, HD, 1e-6f, k), ZMLX_OK);
                CHECK_EQ_INT(zmlx_rope(g_ctx, &rp, T, q, 1, HQ, NULL, pos0 + t), ZMLX_OK);
                CHECK_EQ_INT(zmlx_rope(g_ctx, &rp, T, k, 1, HKV, NULL, pos0 + t), ZMLX_OK);
                CHECK_EQ_INT(zmlx_kv_append(g_ctx, T, k, 1, HKV, HD, k2, CAP, pos0 + t), ZMLX_OK);
                CHECK_EQ_INT(zmlx_kv_append(g_ctx, T, vv, 1, HKV, HD, v2, CAP, pos0 + t), ZMLX_OK);
            }
            { /* attention_prefill over the normed, rotated q heads, gathered into rows of their own */
                char *Qp = ct_host(qkv2, qb), *qh = h_alloc((size_t)(nt * nq) * es);
                for (int64_t t = 0; t < nt; t++)
                    memcpy(qh + (size_t)(t * nq) * es, Qp + (size_t)(t * row) * es, (size_t)nq * es);
                void *qc = ct_dev(qh, (size_t)(nt * nq) * es);
                CHECK_EQ_INT(zmlx_attention_prefill(g_ctx, &ap, T, qc, nt, pos0, k2, v2, o2), ZMLX_OK);
                CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
                zmlx_mem_free(g_ctx, qc);
                free(Qp); free(qh);
            }
            CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
            void *O1 = ct_host(o1, ob), *O2 = ct_host(o2, ob), *Q1 = ct_host(qkv1, qb), *Q2 = ct_host(qkv2, qb);
            void *K1 = ct_host(k1, cb), *K2 = ct_host(k2, cb), *V1 = ct_host(v1, cb), *V2 = ct_host(v2, cb);
            CHECKF(!memcmp(O1, O2, ob) && !memcmp(Q1, Q2, qb), "T%d v%d n%d: step != unfused ops (out, qkv)", ti, v,
                   (int)nt);
            CHECKF(!memcmp(K1, K2, cb) && !memcmp(V1, V2, cb), "T%d v%d n%d: step != unfused ops (caches)", ti, v,
                   (int)nt);
            /* the CPU reference on host copies of the same inputs */
            void *hq2 = h_alloc(qb), *hk2 = h_alloc(cb), *hv2 = h_alloc(cb), *ho = h_alloc(ob);
            memcpy(hq2, hqkv, qb), memcpy(hk2, hk, cb), memcpy(hv2, hv, cb);
            zmlx_attn_step_params hsp = sp;
            zmlx_rope_params hrp = rp;
            hrp.inv_freq = rp.inv_freq ? hinv : NULL;
            hsp.rope = &hrp;
            hsp.q_norm = sp.q_norm ? hqn : NULL, hsp.k_norm = sp.k_norm ? hkn : NULL;
            hsp.attn.sinks = v == 2 ? hsinks : NULL;
            CHECK_EQ_INT(zmlx_attention_step(NULL, &hsp, T, hq2, nt, &pos0, hk2, hv2, ho), ZMLX_OK);
            double *ref = h_alloc(sizeof(double) * (size_t)(nt * nq)), *mag = h_alloc(sizeof(double) * (size_t)(nt * nq));
            for (int64_t i = 0; i < nt * nq; i++) ref[i] = ct_get(T, ho, i), mag[i] = 1.0;
            char what[96];
            snprintf(what, sizeof what, "T%d v%d n%d attention_step vs CPU", ti, v, (int)nt);
            /* q/k round to T after the norm and rope: a 1-ulp difference there moves the output by ~eps;
               in f32 the rope angle's rounding grows with the position (~p·2^-24 at position p) */
            ct_close(what, T, O1, ref, mag, nt * nq, 4 * ct_eps(T), 4 * ct_eps(T) + 1e-5 + pos0 * 0x1p-24);
            free(hq2); free(hk2); free(hv2); free(ho); free(ref); free(mag);
            free(O1); free(O2); free(Q1); free(Q2); free(K1); free(K2); free(V1); free(V2);

            /* graph: one token per replay, position advanced inside the graph */
            if (v == 1 && nt == NT) {
                const size_t rb = (size_t)row * es, ob1 = (size_t)nq * es;
                void *g_qkv = ct_dev_poison(rb), *g_out = ct_dev_poison(ob1);
                void *kg = ct_dev(hk, cb), *vg = ct_dev(hv, cb), *ke = ct_dev(hk, cb), *ve = ct_dev(hv, cb);
                void *e_qkv = ct_dev_poison(rb), *e_out = ct_dev_poison(ob1);
                int32_t *gpos = ct_dev(&pos0, sizeof pos0), *epos = ct_dev(&pos0, sizeof pos0);
                zmlx_graph *g = NULL;
                CHECK_EQ_INT(zmlx_graph_capture_begin(g_ctx), ZMLX_OK);
                zmlx_status s1 = zmlx_attention_step(g_ctx, &sp, T, g_qkv, 1, gpos, kg, vg, g_out);
                zmlx_status s2 = zmlx_i32_add(g_ctx, gpos, 1, 1);
                CHECK_EQ_INT(zmlx_graph_capture_end(g_ctx, &g), ZMLX_OK);
                CHECK(s1 == ZMLX_OK && s2 == ZMLX_OK);
                int bad = 0;
                for (int64_t t = 0; t < 3 && g; t++) {
                    const char *src = (const char *)hqkv + (size_t)(t * row) * es;
                    CHECK_EQ_INT(zmlx_mem_upload(g_ctx, g_qkv, src, rb), ZMLX_OK);
                    CHECK_EQ_INT(zmlx_mem_upload(g_ctx, e_qkv, src, rb), ZMLX_OK);
                    CHECK_EQ_INT(zmlx_graph_launch(g_ctx, g), ZMLX_OK);
                    CHECK_EQ_INT(zmlx_attention_step(g_ctx, &sp, T, e_qkv, 1, epos, ke, ve, e_out), ZMLX_OK);
                    CHECK_EQ_INT(zmlx_i32_add(g_ctx, epos, 1, 1), ZMLX_OK);
                    void *A = ct_host(g_out, ob1), *B = ct_host(e_out, ob1);
                    bad += memcmp(A, B, ob1) != 0;
                    free(A); free(B);
                }
                int32_t pend = 0;
                CHECK_EQ_INT(zmlx_mem_download(g_ctx, &pend, gpos, sizeof pend), ZMLX_OK);
                CHECKF(bad == 0 && pend == pos0 + 3, "T%d: graph replays != eager steps (%d differ, pos %d)", ti, bad,
                       (int)pend);
                zmlx_graph_free(g_ctx, g);
                void *bufs[] = {g_qkv, g_out, kg, vg, ke, ve, e_qkv, e_out, gpos, epos};
                for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) zmlx_mem_free(g_ctx, bufs[i]);
            }
            /* out of range: flagged at the sync, caches untouched */
            if (v == 0) {
                const int32_t bad_pos = (int32_t)(CAP - nt + 1);
                CHECK_EQ_INT(zmlx_mem_upload(g_ctx, pos, &bad_pos, sizeof bad_pos), ZMLX_OK);
                void *K0 = ct_host(k1, cb);
                CHECK_EQ_INT(zmlx_attention_step(g_ctx, &sp, T, qkv1, nt, pos, k1, v1, o1), ZMLX_OK);
                CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_ERR_RANGE);
                CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
                void *Kafter = ct_host(k1, cb);
                CHECK(!memcmp(K0, Kafter, cb));
                free(K0); free(Kafter);
            }
            free(hqkv); free(hk); free(hv); free(hqn); free(hkn);
            void *bufs[] = {qn, kn, pos, qkv1, k1, v1, o1, qkv2, k2, v2, o2, dinv};
            for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) zmlx_mem_free(g_ctx, bufs[i]);
        }
    zmlx_mem_free(g_ctx, sinks);
}

/* zmlx_short_conv on the GPU == the reference table, bit for bit (y and the
 * state), over a whole call and over pieces of one token. */
static void test_short_conv(void) {
    h_rng r = {801};
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = ZMLX_BACKEND_CPU_REF;
    zmlx_ctx *ref = NULL;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &ref, NULL, 0), ZMLX_OK);
    if (!ref) return;
    for (int ti = 0; ti < 3; ti++)
        for (int v = 0; v < 4; v++) {
            const zmlx_dtype T = TS[ti];
            const int64_t D = v & 1 ? 2048 : 130, n = v & 2 ? 37 : 1;
            const int L = v & 1 ? 3 : 4;
            const size_t es = zmlx_dtype_size(T), bb = (size_t)(n * 3 * D) * es, yb = (size_t)(n * D) * es,
                         sb = (size_t)((L - 1) * D) * es;
            void *hbcx = ct_rand(&r, T, n * 3 * D, -2, 2), *hw = ct_rand(&r, T, D * L, -1, 1);
            void *hst = ct_rand(&r, T, (L - 1) * D, -2, 2), *hy = h_alloc(yb);
            void *bcx = ct_dev(hbcx, bb), *w = ct_dev(hw, (size_t)(D * L) * es), *st = ct_dev(hst, sb);
            void *st1 = ct_dev(hst, sb), *y = ct_dev_poison(yb), *y1 = ct_dev_poison(yb);
            CHECK_EQ_INT(zmlx_short_conv(g_ctx, T, bcx, n, D, L, w, st, y), ZMLX_OK);
            for (int64_t t = 0; t < n; t++)
                CHECK_EQ_INT(zmlx_short_conv(g_ctx, T, (char *)bcx + (size_t)(t * 3 * D) * es, 1, D, L, w, st1,
                                             (char *)y1 + (size_t)(t * D) * es),
                             ZMLX_OK);
            CHECK_EQ_INT(zmlx_short_conv(ref, T, hbcx, n, D, L, hw, hst, hy), ZMLX_OK);
            void *Y = ct_host(y, yb), *Y1 = ct_host(y1, yb), *S = ct_host(st, sb), *S1 = ct_host(st1, sb);
            CHECKF(memcmp(Y, hy, yb) == 0 && memcmp(S, hst, sb) == 0, "T=%s D=%lld n=%lld: GPU != reference",
                   zmlx_dtype_name(T), (long long)D, (long long)n);
            CHECK(memcmp(Y1, hy, yb) == 0 && memcmp(S1, hst, sb) == 0);
            free(hbcx); free(hw); free(hst); free(hy); free(Y); free(Y1); free(S); free(S1);
            void *dev[] = {bcx, w, st, st1, y, y1};
            for (int i = 0; i < 6; i++) zmlx_mem_free(g_ctx, dev[i]);
        }
    zmlx_ctx_free(ref);
}

/* argmax == the CPU's on rows with ties, NaN, a row of NaN and a vocabulary-
 * sized row; i32_add adds. */
static void test_argmax(void) {
    h_rng r = {32};
    for (int ti = 0; ti < 3; ti++) {
        const zmlx_dtype T = TS[ti];
        const int64_t sizes[] = {1, 33, 1000, 151936};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int64_t n = sizes[si], rows = 4;
            const size_t b = (size_t)(rows * n) * zmlx_dtype_size(T);
            void *hx = ct_rand(&r, T, rows * n, -4, 4);
            /* row 1: the max twice (ties -> lower); row 2: NaN first and a NaN at the max's
             * neighbour; row 3: all NaN */
            for (int64_t i = 0; i < n; i++) ct_set(T, hx, 3 * n + i, NAN);
            if (n > 3) {
                ct_set(T, hx, n + n / 3, 100.0), ct_set(T, hx, n + 2 * n / 3, 100.0);
                ct_set(T, hx, 2 * n, NAN), ct_set(T, hx, 2 * n + n / 2, 50.0), ct_set(T, hx, 2 * n + n / 2 + 1, NAN);
            }
            void *x = ct_dev(hx, b);
            int32_t *idx = ct_dev_poison(rows * sizeof(int32_t)), want[4], got[4];
            CHECK_EQ_INT(zmlx_argmax(g_ctx, T, x, rows, n, idx), ZMLX_OK);
            CHECK_EQ_INT(zmlx_argmax(NULL, T, hx, rows, n, want), ZMLX_OK);
            CHECK_EQ_INT(zmlx_mem_download(g_ctx, got, idx, sizeof got), ZMLX_OK);
            CHECKF(!memcmp(got, want, sizeof got), "T%d n=%lld argmax %d %d %d %d, CPU %d %d %d %d", ti, (long long)n,
                   got[0], got[1], got[2], got[3], want[0], want[1], want[2], want[3]);
            if (n > 3) CHECK(want[1] == n / 3 && want[2] == n / 2 && want[3] == 0);
            free(hx);
            zmlx_mem_free(g_ctx, x);
            CHECK_EQ_INT(zmlx_i32_add(g_ctx, idx, rows, -7), ZMLX_OK);
            int32_t after[4];
            CHECK_EQ_INT(zmlx_mem_download(g_ctx, after, idx, sizeof after), ZMLX_OK);
            CHECK(after[0] == got[0] - 7 && after[3] == got[3] - 7);
            zmlx_mem_free(g_ctx, idx);
        }
    }
}

int main(void) {
    int skip = ct_open();
    if (skip) return skip;
    RUN(test_add_norms);
    RUN(test_softmax);
    RUN(test_router);
    RUN(test_router_ties);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_attention_prefill);
    RUN(test_attention_step);
    RUN(test_argmax);
    RUN(test_short_conv);
    RUN(test_plumbing);
    RUN(test_model_shapes);
    zmlx_ctx_free(g_ctx);
    return harness_done();
}
