/*
 * test_ref_attn.c — the reference single-token attention step (ctx NULL)
 * against an f64 oracle written here: GQA head mapping h -> h / (Hq/Hkv),
 * sliding window (last `window` positions), per-head sinks as an extra
 * softmax column, output rounded to T once.
 *
 * Also attention_step (the fused attention block) and argmax on the host
 * backends.
 *
 * Cache rows that must not be read (at or past n_ctx, before the window) hold
 * NaN, so reading one shows up as a NaN output. Tolerance: 1e-5 of Σ_j p_j|v_j|
 * (f32 scores/softmax/accumulation vs f64), plus one ulp of T for f16/bf16.
 */
#include "harness.h"
#include "core/core.h"
#include "zmlx.h"

static const zmlx_dtype Ts[3] = {ZMLX_F32, ZMLX_F16, ZMLX_BF16};

/* Returns the number of output elements outside tolerance. */
static int64_t check_attn(const zmlx_attn_params *p, zmlx_dtype T, const void *q, const void *kc,
                          const void *vc, int64_t n_ctx, const void *out) {
    int64_t lo = (p->window > 0 && n_ctx > p->window) ? n_ctx - p->window : 0, bad = 0;
    double s[1024];
    for (int h = 0; h < p->Hq; h++) {
        int g = h / (p->Hq / p->Hkv);
        double m = p->sinks ? p->sinks[h] : -INFINITY, sum = 0;
        for (int64_t j = lo; j < n_ctx; j++) {
            double d = 0;
            for (int i = 0; i < p->hd; i++)
                d += (double)p->scale * zc_load(T, q, h * p->hd + i) *
                     zc_load(T, kc, (g * p->cap + j) * p->hd + i);
            s[j - lo] = d;
            m = fmax(m, d);
        }
        if (p->sinks) sum += exp(p->sinks[h] - m);
        for (int64_t j = lo; j < n_ctx; j++) sum += exp(s[j - lo] - m);
        for (int i = 0; i < p->hd_v; i++) {
            double acc = 0, mag = 0;
            for (int64_t j = lo; j < n_ctx; j++) {
                double pj = exp(s[j - lo] - m) / sum, v = zc_load(T, vc, (g * p->cap + j) * p->hd_v + i);
                acc += pj * v;
                mag += pj * fabs(v);
            }
            double got = zc_load(T, out, h * p->hd_v + i);
            double tol = 1e-5 * mag + 1e-30 + (T == ZMLX_F32 ? 0 : h_ulp_T(T, acc));
            if (!(fabs(got - acc) <= tol)) bad++;
        }
    }
    return bad;
}

static void run_case(zmlx_dtype T, int Hq, int Hkv, int hd, int hd_v, int64_t cap, int64_t n_ctx,
                     int64_t window, int sinks, uint64_t seed) {
    zmlx_attn_params p = {Hq, Hkv, hd, hd_v, cap, 1.0f / sqrtf((float)hd), window, NULL};
    size_t es = zmlx_dtype_size(T);
    int64_t nk = (int64_t)Hkv * cap * hd, nv = (int64_t)Hkv * cap * hd_v;
    void *q = h_alloc(es * (size_t)(Hq * hd)), *kc = h_alloc(es * (size_t)nk);
    void *vc = h_alloc(es * (size_t)nv), *out = h_alloc(es * (size_t)(Hq * hd_v));
    float sk[64];
    h_rng r = {seed};
    for (int i = 0; i < Hq * hd; i++) zc_store(T, q, i, h_nonzero(&r, -2, 2));
    int64_t lo = (window > 0 && n_ctx > window) ? n_ctx - window : 0;
    for (int g = 0; g < Hkv; g++)
        for (int64_t j = 0; j < cap; j++) {
            int used = j >= lo && j < n_ctx;
            for (int i = 0; i < hd; i++)
                zc_store(T, kc, (g * cap + j) * hd + i, used ? h_nonzero(&r, -2, 2) : NAN);
            for (int i = 0; i < hd_v; i++)
                zc_store(T, vc, (g * cap + j) * hd_v + i, used ? h_nonzero(&r, -3, 3) : NAN);
        }
    if (sinks) {
        for (int h = 0; h < Hq; h++) sk[h] = h_nonzero(&r, -3, 3);
        p.sinks = sk;
    }
    h_poison(out, es * (size_t)(Hq * hd_v));
    CHECK_EQ_INT(zmlx_attention_decode(NULL, &p, T, q, kc, vc, n_ctx, out), ZMLX_OK);
    int64_t bad = check_attn(&p, T, q, kc, vc, n_ctx, out);
    CHECKF(bad == 0, "T=%s Hq=%d Hkv=%d hd=%d/%d cap=%" PRId64 " n_ctx=%" PRId64 " window=%" PRId64
           " sinks=%d: %" PRId64 " bad", zmlx_dtype_name(T), Hq, Hkv, hd, hd_v, cap, n_ctx, window,
           sinks, bad);
    free(q); free(kc); free(vc); free(out);
}

static void test_random(void) {
    for (uint64_t seed = 1; seed <= 3; seed++)
        for (int ti = 0; ti < 3; ti++) {
            zmlx_dtype T = Ts[ti];
            uint64_t s = seed * 100 + (uint64_t)ti * 10;
            const int64_t cap = 37;
            int64_t n = 1 + h_int(&(h_rng){s}, cap);
            for (int sinks = 0; sinks < 2; sinks++) {
                run_case(T, 8, 2, 64, 64, cap, n, 0, sinks, s + 1);       /* GQA 8/2 */
                run_case(T, 8, 2, 64, 64, cap, 1, 0, sinks, s + 2);       /* n_ctx = 1 */
                run_case(T, 8, 2, 64, 64, cap, cap, 0, sinks, s + 3);     /* n_ctx = cap */
                run_case(T, 8, 2, 64, 64, cap, cap, 5, sinks, s + 4);     /* window */
                run_case(T, 8, 2, 64, 64, cap, 3, 5, sinks, s + 5);       /* window > n_ctx */
                run_case(T, 4, 4, 7, 5, 9, 9, 1, sinks, s + 6);           /* window 1, odd dims */
                run_case(T, 6, 1, 1, 3, 1, 1, 0, sinks, s + 7);           /* MQA, hd 1, cap 1 */
                run_case(T, 3, 3, 130, 17, 300, 257, 128, sinks, s + 8);  /* long */
            }
        }
}

/* Hand cases: one position gives exactly v (no sink); with a sink of equal
 * logit the weight halves; equal keys average the values. */
static void test_exact(void) {
    float q[2] = {1, 2}, k[4] = {0.5f, 0.25f, 0.5f, 0.25f}, v[4] = {4, -2, 8, 6}, out[2];
    zmlx_attn_params p = {1, 1, 2, 1, 2, 1.0f, 0, NULL};
    h_poison(out, sizeof out);
    CHECK_EQ_INT(zmlx_attention_decode(NULL, &p, ZMLX_F32, q, k, v, 1, out), ZMLX_OK);
    CHECK(out[0] == 4.0f);
    CHECK_EQ_INT(zmlx_attention_decode(NULL, &p, ZMLX_F32, q, k, v, 2, out), ZMLX_OK);
    CHECK(out[0] == 1.0f); /* (4 + -2) / 2 */
    float sink = 1.0f; /* q·k = 1 = the sink logit: p = 1/2 for the one position */
    p.sinks = &sink;
    CHECK_EQ_INT(zmlx_attention_decode(NULL, &p, ZMLX_F32, q, k, v, 1, out), ZMLX_OK);
    CHECK(out[0] == 2.0f);
}

/* attention_step on the host backends: for n tokens, the same bits as the
 * unfused ops on separate q/k/v arrays one token at a time (which also pins
 * the packed row layout: q heads, k heads, v heads), with hd_v != hd and a
 * window; n tokens in one call == n one-token calls; an out-of-range
 * position returns ZMLX_ERR_RANGE with the caches untouched. */
static void test_step(zmlx_ctx *c) {
    h_rng r = {77};
    enum { HQ = 4, HKV = 2, HD = 8, HDV = 6, NT = 4, CAP = 40 };
    const int row = HQ * HD + HKV * HD + HKV * HDV;
    for (int ti = 0; ti < 3; ti++) {
        const zmlx_dtype T = Ts[ti];
        const size_t es = zmlx_dtype_size(T);
        char qkv[NT * row * 4], q1[NT * row * 4], kc[3][HKV * CAP * HD * 4], vc[3][HKV * CAP * HDV * 4];
        char o[3][NT * HQ * HDV * 4], qn[HD * 4], kn[HD * 4];
        for (int i = 0; i < NT * row; i++) zc_store(T, qkv, i, h_uniform(&r, -2, 2));
        for (int i = 0; i < HD; i++) zc_store(T, qn, i, h_uniform(&r, 0.5f, 1.5f)), zc_store(T, kn, i, h_uniform(&r, 0.5f, 1.5f));
        for (int i = 0; i < HKV * CAP * HD; i++) zc_store(T, kc[0], i, h_uniform(&r, -1, 1));
        for (int i = 0; i < HKV * CAP * HDV; i++) zc_store(T, vc[0], i, h_uniform(&r, -1, 1));
        for (int i = 1; i < 3; i++) memcpy(kc[i], kc[0], sizeof kc[0]), memcpy(vc[i], vc[0], sizeof vc[0]);
        const zmlx_rope_params rp = {.head_dim = HD, .rot_dims = HD, .base = 10000.0f};
        const zmlx_attn_params ap = {HQ, HKV, HD, HDV, CAP, 0.3f, 20, NULL};
        const zmlx_attn_step_params sp = {ap, &rp, qn, kn, 1e-5f, NULL, NULL};
        const int32_t pos0 = 23;
        memcpy(q1, qkv, sizeof qkv);
        CHECK_EQ_INT(zmlx_attention_step(c, &sp, T, q1, NT, &pos0, kc[0], vc[0], o[0]), ZMLX_OK);
        for (int t = 0; t < NT; t++) {
            /* separate arrays for the unfused ops */
            char q[HQ * HD * 4], k[HKV * HD * 4], v[HKV * HDV * 4], q2[row * 4];
            const char *src = qkv + (size_t)(t * row) * es;
            memcpy(q, src, HQ * HD * es), memcpy(k, src + HQ * HD * es, HKV * HD * es);
            memcpy(v, src + (HQ + HKV) * HD * es, HKV * HDV * es);
            CHECK_EQ_INT(zmlx_rms_norm(c, T, q, qn, HQ, HD, 1e-5f, q), ZMLX_OK);
            CHECK_EQ_INT(zmlx_rms_norm(c, T, k, kn, HKV, HD, 1e-5f, k), ZMLX_OK);
            CHECK_EQ_INT(zmlx_rope(c, &rp, T, q, 1, HQ, NULL, pos0 + t), ZMLX_OK);
            CHECK_EQ_INT(zmlx_rope(c, &rp, T, k, 1, HKV, NULL, pos0 + t), ZMLX_OK);
            CHECK_EQ_INT(zmlx_kv_append(c, T, k, 1, HKV, HD, kc[1], CAP, pos0 + t), ZMLX_OK);
            CHECK_EQ_INT(zmlx_kv_append(c, T, v, 1, HKV, HDV, vc[1], CAP, pos0 + t), ZMLX_OK);
            CHECK_EQ_INT(zmlx_attention_decode(c, &ap, T, q, kc[1], vc[1], pos0 + t + 1,
                                               o[1] + (size_t)(t * HQ * HDV) * es), ZMLX_OK);
            /* one token per call */
            const int32_t pt = pos0 + t;
            memcpy(q2, src, (size_t)row * es);
            CHECK_EQ_INT(zmlx_attention_step(c, &sp, T, q2, 1, &pt, kc[2], vc[2], o[2] + (size_t)(t * HQ * HDV) * es),
                         ZMLX_OK);
            CHECKF(!memcmp(q1 + (size_t)(t * row) * es, q, HQ * HD * es) &&
                       !memcmp(q1 + (size_t)(t * row + HQ * HD) * es, k, HKV * HD * es),
                   "T%d token %d: normed/rotated q, k", ti, t);
        }
        const size_t ob = (size_t)(NT * HQ * HDV) * es;
        CHECKF(!memcmp(o[0], o[1], ob) && !memcmp(kc[0], kc[1], sizeof kc[0]) && !memcmp(vc[0], vc[1], sizeof vc[0]),
               "T%d: step != unfused ops", ti);
        CHECKF(!memcmp(o[0], o[2], ob) && !memcmp(kc[0], kc[2], sizeof kc[0]), "T%d: n tokens != n calls", ti);
        const int32_t bad = CAP - NT + 1;
        memcpy(kc[1], kc[0], sizeof kc[0]);
        CHECK_EQ_INT(zmlx_attention_step(c, &sp, T, q1, NT, &bad, kc[0], vc[0], o[0]), ZMLX_ERR_RANGE);
        CHECK(!memcmp(kc[0], kc[1], sizeof kc[0]));
    }
}

/* argmax: first of equal maxima, NaN never wins, a row of NaN gives 0,
 * -inf rows give 0. */
static void test_argmax(void) {
    const float nan = NAN, inf = INFINITY;
    const float x[5][4] = {{1, 3, 3, 2}, {nan, 1, 2, nan}, {nan, nan, nan, nan}, {-inf, -inf, -inf, -inf},
                           {-1, -inf, nan, -0.5f}};
    const int32_t want[5] = {1, 2, 0, 0, 3};
    for (int ti = 0; ti < 3; ti++) {
        char buf[20 * 4];
        for (int i = 0; i < 20; i++) zc_store(Ts[ti], buf, i, (&x[0][0])[i]);
        int32_t idx[5];
        CHECK_EQ_INT(zmlx_argmax(NULL, Ts[ti], buf, 5, 4, idx), ZMLX_OK);
        CHECKF(!memcmp(idx, want, sizeof want), "T%d: %d %d %d %d %d", ti, idx[0], idx[1], idx[2], idx[3], idx[4]);
    }
}

int main(void) {
    RUN(test_random);
    RUN(test_exact);
    RUN(test_argmax);
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.n_threads = 2;
    zmlx_ctx *cpu = NULL;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &cpu, NULL, 0), ZMLX_OK);
    h_current = "step, ctx NULL";
    test_step(NULL);
    h_current = "step, ctx cpu";
    if (cpu) test_step(cpu);
    zmlx_ctx_free(cpu);
    return harness_done();
}
