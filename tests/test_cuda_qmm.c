/*
 * test_cuda_qmm.c — the CUDA expert matmuls through the public API:
 * gather_qmm (both transposes, plain and gathered, x per token or per slot),
 * gather_qmm_swiglu, gather_qmm_combine, glu_act, moe_combine and
 * embed_lookup, against f64 oracles built from zmlx_dequantize on the host
 * (qmm_argmax also against gather_qmm then argmax);
 * fused == unfused (memcmp) and repeated runs identical, on the small-M
 * (GEMV) and large-M (sorted, tensor-core) paths; every format and T; and
 * every linear of the tiny models with M swept 1..130 (tight oracle, per-row
 * bit identity within a kernel family); attention_step with its projection
 * folded in against the two calls.
 * Exits 77 without a GPU.
 */
#include "cuda_test.h"

typedef struct {
    zmlx_qmode mode;
    int bits, gs;
} fmt;

/* A quantized stack of E matrices on the device plus its host dequantization
 * deq[E][N][K] (logical out x in, whatever the storage transpose). */
typedef struct {
    zmlx_qweight w; /* device view */
    void *dw, *ds, *db;
    double *deq;
} qmat;

static void qmat_make(h_rng *r, fmt f, int transpose, int64_t E, int64_t N, int64_t K,
                      zmlx_dtype st, qmat *m) {
    const int64_t rows = transpose ? N : K, cols = transpose ? K : N;
    float *src = h_alloc(sizeof(float) * (size_t)(E * rows * cols));
    for (int64_t i = 0; i < E * rows * cols; i++) src[i] = h_nonzero(r, -1.0f, 1.0f);
    const zmlx_dtype scale_t = f.mode == ZMLX_QMODE_AFFINE ? st : ZMLX_U8;
    size_t wb = zmlx_quant_packed_bytes(f.bits, E * rows, cols);
    size_t sc = zmlx_quant_scales_count(f.gs, E * rows, cols) * zmlx_dtype_size(scale_t);
    void *hw = h_alloc(wb), *hs = h_alloc(sc), *hb = f.mode == ZMLX_QMODE_AFFINE ? h_alloc(sc) : NULL;
    zmlx_quant_opts qo = {ZMLX_AFFINE_GPU, f.mode == ZMLX_QMODE_NVFP4 ? 3.0f : 0.0f};
    zmlx_status s = zmlx_quantize(f.mode, f.bits, f.gs, ZMLX_F32, src, E * rows, cols, scale_t, hw, hs, hb, &qo);
    CHECK_EQ_INT(s, ZMLX_OK);
    zmlx_qweight hv = {f.mode, f.bits, f.gs, transpose, E, N, K, hw, hs, hb, scale_t, qo.global_scale, 0};
    m->deq = h_alloc(sizeof(double) * (size_t)(E * N * K));
    float *tmp = h_alloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t e = 0; e < E; e++) {
        CHECK_EQ_INT(zmlx_dequantize(&hv, e, ZMLX_F32, tmp), ZMLX_OK);
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++)
                m->deq[(e * N + n) * K + k] = transpose ? tmp[n * K + k] : tmp[k * N + n];
    }
    m->dw = ct_dev(hw, wb);
    m->ds = ct_dev(hs, sc);
    m->db = hb ? ct_dev(hb, sc) : NULL;
    m->w = hv;
    m->w.w = m->dw;
    m->w.scales = m->ds;
    m->w.biases = m->db;
    m->w.on_device = 1;
    free(src); free(hw); free(hs); free(hb); free(tmp);
}

static void qmat_free(qmat *m) {
    zmlx_mem_free(g_ctx, m->dw);
    zmlx_mem_free(g_ctx, m->ds);
    zmlx_mem_free(g_ctx, m->db);
    free(m->deq);
}

/* oracle y[p][n] = Σ_k x[row(p)][k] · deq[e][n][k]; a[p][n] = Σ|x||w| */
static void oracle_qmm(zmlx_dtype T, const void *x, int64_t n_tok, int k, int x_per_slot,
                       const qmat *m, const int32_t *idx, double *y, double *a) {
    const int64_t N = m->w.N, K = m->w.K;
    for (int64_t p = 0; p < n_tok * k; p++) {
        const int64_t xr = x_per_slot ? p : p / k, e = idx ? idx[p] : 0;
        for (int64_t n = 0; n < N; n++) {
            double s = 0, s_abs = 0;
            for (int64_t kk = 0; kk < K; kk++) {
                double t = ct_get(T, x, xr * K + kk) * m->deq[(e * N + n) * K + kk];
                s += t;
                s_abs += fabs(t);
            }
            y[p * N + n] = s;
            a[p * N + n] = s_abs;
        }
    }
}

static double act_f64(zmlx_act act, double g, double u) {
    switch (act) {
    case ZMLX_ACT_GEGLU: return 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * u;
    case ZMLX_ACT_SWIGLU_OAI:
        g = g > 7 ? 7 : g;
        u = u > 7 ? 7 : (u < -7 ? -7 : u);
        return g / (1.0 + exp(-1.702 * g)) * (u + 1.0);
    default: return g / (1.0 + exp(-g)) * u;
    }
}

static int32_t *rand_idx(h_rng *r, int64_t n_tok, int k, int64_t E) {
    int32_t *idx = h_alloc(sizeof(int32_t) * (size_t)(n_tok * k));
    for (int64_t t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) {
            int32_t e;
            int dup;
            do { /* distinct within a token, as a router gives */
                e = (int32_t)h_int(r, E);
                dup = 0;
                for (int i = 0; i < j; i++) dup |= idx[t * k + i] == e;
            } while (dup);
            idx[t * k + j] = e;
        }
    return idx;
}

/* Tolerance of a matmul output in T against the f64 oracle: T's output
 * rounding, plus (bf16/f16 inputs, tensor-core path) the rounding of the
 * dequantized weights to T, bounded by Σ|x·w|. */
static double tol_rel(zmlx_dtype T) { return ct_eps(T); }
static double tol_abs(zmlx_dtype T) { return T == ZMLX_F32 ? 1e-5 : ct_eps(T); }

/* One full MoE step for a format: swiglu (fused vs unfused vs oracle), down
 * + combine (fused vs unfused vs oracle), repeated runs identical. */
static void moe_case(uint64_t seed, fmt f, int transpose, zmlx_dtype T, int64_t n_tok, int k,
                     int64_t E, int64_t D, int64_t F, zmlx_act act) {
    h_rng r = {seed};
    char what[160];
    snprintf(what, sizeof what, "mode %d bits %d gs %d tr %d T %s M %lld k %d E %lld D %lld F %lld act %d",
             f.mode, f.bits, f.gs, transpose, zmlx_dtype_name(T), (long long)n_tok, k, (long long)E,
             (long long)D, (long long)F, act);
    const size_t es = zmlx_dtype_size(T);
    const int64_t P = n_tok * k;
    qmat g, u, dn;
    qmat_make(&r, f, transpose, E, F, D, T, &g);
    qmat_make(&r, f, transpose, E, F, D, T, &u);
    qmat_make(&r, f, transpose, E, D, F, T, &dn);
    void *hx = ct_rand(&r, T, n_tok * D, -1.0f, 1.0f);
    int32_t *hidx = rand_idx(&r, n_tok, k, E);
    float *hw = h_alloc(sizeof(float) * (size_t)P);
    for (int64_t i = 0; i < P; i++) hw[i] = h_uniform(&r, 0.05f, 1.0f);
    void *x = ct_dev(hx, (size_t)(n_tok * D) * es);
    int32_t *idx = ct_dev(hidx, sizeof(int32_t) * (size_t)P);
    float *w = ct_dev(hw, sizeof(float) * (size_t)P);

    /* gate/up: fused, unfused, again */
    const size_t hb = (size_t)(P * F) * es;
    void *h1 = ct_dev_poison(hb), *h2 = ct_dev_poison(hb), *h3 = ct_dev_poison(hb);
    void *gg = ct_dev_poison(hb), *uu = ct_dev_poison(hb);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, x, n_tok, &g.w, &u.w, idx, k, act, h1), ZMLX_OK);
    CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x, n_tok, 0, &g.w, idx, k, gg), ZMLX_OK);
    CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x, n_tok, 0, &u.w, idx, k, uu), ZMLX_OK);
    CHECK_EQ_INT(zmlx_glu_act(g_ctx, T, act, gg, uu, P * F, h2), ZMLX_OK);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, x, n_tok, &g.w, &u.w, idx, k, act, h3), ZMLX_OK);
    CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
    void *H1 = ct_host(h1, hb), *H2 = ct_host(h2, hb), *H3 = ct_host(h3, hb), *G = ct_host(gg, hb);
    CHECKF(memcmp(H1, H2, hb) == 0, "%s: fused swiglu != unfused", what);
    CHECKF(memcmp(H1, H3, hb) == 0, "%s: swiglu not repeatable", what);

    double *ry = h_alloc(sizeof(double) * (size_t)(P * (D > F ? D : F)));
    double *ra = h_alloc(sizeof(double) * (size_t)(P * (D > F ? D : F)));
    oracle_qmm(T, hx, n_tok, k, 0, &g, hidx, ry, ra);
    char w2[200];
    snprintf(w2, sizeof w2, "%s gate", what);
    ct_close(w2, T, G, ry, ra, P * F, tol_rel(T), tol_abs(T));
    /* swiglu oracle from f64 g and u, each rounded to T as the spec says;
       compared loosely (the rounding of g/u may fall either way) */
    double *ru = h_alloc(sizeof(double) * (size_t)(P * F)), *rua = h_alloc(sizeof(double) * (size_t)(P * F));
    oracle_qmm(T, hx, n_tok, k, 0, &u, hidx, ru, rua);
    for (int64_t i = 0; i < P * F; i++) {
        /* g and u may each be off by their matmul tolerance plus one rounding
           to T; the bound is how far act moves over that box */
        double gv = ct_round(T, ry[i]), uv = ct_round(T, ru[i]), h0 = act_f64(act, gv, uv);
        double dg = 2 * tol_abs(T) * ra[i] + 2 * ct_eps(T) * fabs(gv), du = 2 * tol_abs(T) * rua[i] + 2 * ct_eps(T) * fabs(uv);
        double sc = 0;
        for (int sg = -1; sg <= 1; sg++)
            for (int su = -1; su <= 1; su++) sc = fmax(sc, fabs(act_f64(act, gv + sg * dg, uv + su * du) - h0));
        ry[i] = h0;
        ra[i] = sc;
    }
    snprintf(w2, sizeof w2, "%s swiglu", what);
    ct_close(w2, T, H1, ry, ra, P * F, 2 * tol_rel(T), 1.5);

    /* down + combine: fused, unfused, again; input h = the fused output */
    const size_t yb = (size_t)(P * D) * es, ob = (size_t)(n_tok * D) * es;
    void *o1 = ct_dev_poison(ob), *o2 = ct_dev_poison(ob), *o3 = ct_dev_poison(ob), *yy = ct_dev_poison(yb);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, h1, n_tok, &dn.w, idx, k, w, o1), ZMLX_OK);
    CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, h1, n_tok, 1, &dn.w, idx, k, yy), ZMLX_OK);
    CHECK_EQ_INT(zmlx_moe_combine(g_ctx, T, yy, w, n_tok, k, D, o2), ZMLX_OK);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, h1, n_tok, &dn.w, idx, k, w, o3), ZMLX_OK);
    void *O1 = ct_host(o1, ob), *O2 = ct_host(o2, ob), *O3 = ct_host(o3, ob), *Y = ct_host(yy, yb);
    CHECKF(memcmp(O1, O2, ob) == 0, "%s: fused combine != unfused", what);
    CHECKF(memcmp(O1, O3, ob) == 0, "%s: combine not repeatable", what);
    oracle_qmm(T, H1, n_tok, k, 1, &dn, hidx, ry, ra);
    snprintf(w2, sizeof w2, "%s down", what);
    ct_close(w2, T, Y, ry, ra, P * D, tol_rel(T), tol_abs(T));
    /* combine oracle over the y the GPU produced (its rounding is checked above) */
    double *ro = h_alloc(sizeof(double) * (size_t)(n_tok * D)), *roa = h_alloc(sizeof(double) * (size_t)(n_tok * D));
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t d = 0; d < D; d++) {
            double s = 0, sa = 0;
            for (int j = 0; j < k; j++) {
                double v = hw[t * k + j] * ct_get(T, Y, (t * k + j) * D + d);
                s += v;
                sa += fabs(v);
            }
            ro[t * D + d] = s;
            roa[t * D + d] = sa;
        }
    snprintf(w2, sizeof w2, "%s combine", what);
    ct_close(w2, T, O1, ro, roa, n_tok * D, tol_rel(T), 1e-6);

    free(H1); free(H2); free(H3); free(G); free(O1); free(O2); free(O3); free(Y);
    free(ry); free(ra); free(ru); free(rua); free(ro); free(roa);
    void *dev[] = {x, idx, w, h1, h2, h3, gg, uu, o1, o2, o3, yy};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) zmlx_mem_free(g_ctx, dev[i]);
    free(hx); free(hidx); free(hw);
    qmat_free(&g); qmat_free(&u); qmat_free(&dn);
}

static const fmt AFF4 = {ZMLX_QMODE_AFFINE, 4, 64}, MX4 = {ZMLX_QMODE_MXFP4, 4, 32}, A8 = {ZMLX_QMODE_AFFINE, 8, 64};

/* bf16 / 4-bit on both paths (M = 1, 3 small; 20, 70 large), odd N */
static void test_paths_bf16(void) {
    const fmt a32 = {ZMLX_QMODE_AFFINE, 4, 32};
    moe_case(1, AFF4, 1, ZMLX_BF16, 1, 8, 16, 256, 128, ZMLX_ACT_SWIGLU);
    moe_case(2, AFF4, 1, ZMLX_BF16, 3, 4, 8, 192, 64, ZMLX_ACT_SWIGLU);
    moe_case(3, AFF4, 1, ZMLX_BF16, 20, 4, 8, 320, 128, ZMLX_ACT_SWIGLU);
    moe_case(4, AFF4, 1, ZMLX_BF16, 70, 2, 4, 128, 192, ZMLX_ACT_GEGLU);
    /* K % 64 == 32 (a half last tile), N % 64 != 0 */
    moe_case(5, a32, 1, ZMLX_BF16, 24, 2, 5, 96, 160, ZMLX_ACT_SWIGLU);
    moe_case(6, a32, 1, ZMLX_F16, 24, 3, 5, 160, 96, ZMLX_ACT_SWIGLU_OAI);
}

/* every affine width and group size, f16/f32, small and large M */
static void test_affine_formats(void) {
    const int bits[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128};
    uint64_t seed = 100;
    for (int b = 0; b < 6; b++) {
        fmt f = {ZMLX_QMODE_AFFINE, bits[b], gss[b % 3]};
        moe_case(seed++, f, 1, ZMLX_BF16, 2, 3, 6, 256, f.gs, ZMLX_ACT_SWIGLU);
        moe_case(seed++, f, 1, b & 1 ? ZMLX_F16 : ZMLX_F32, 9, 2, 5, 128, f.gs, ZMLX_ACT_SWIGLU_OAI);
    }
}

/* mxfp4 / mxfp8 / nvfp4 (K = 48: 16-element chunks) */
static void test_fp_formats(void) {
    const fmt fs[] = {{ZMLX_QMODE_MXFP4, 4, 32}, {ZMLX_QMODE_MXFP8, 8, 32}, {ZMLX_QMODE_NVFP4, 4, 16}};
    for (int i = 0; i < 3; i++) {
        moe_case(200 + i, fs[i], 1, ZMLX_BF16, 1, 4, 8, 96, 64, ZMLX_ACT_SWIGLU);
        moe_case(210 + i, fs[i], 1, ZMLX_BF16, 12, 2, 4, 64, 32, ZMLX_ACT_GEGLU);
        moe_case(220 + i, fs[i], 1, ZMLX_F32, 2, 2, 3, 64, i == 2 ? 48 : 96, ZMLX_ACT_SWIGLU);
    }
    moe_case(230, fs[2], 1, ZMLX_BF16, 16, 2, 3, 48, 48, ZMLX_ACT_SWIGLU);
    moe_case(231, fs[2], 1, ZMLX_F16, 1, 2, 3, 48, 16, ZMLX_ACT_SWIGLU);
    /* mxfp4 on the MMV path (K % 64 == 0): GPT-OSS's K = 2880 at one token
       (the one-kernel combine), unsorted pairs in f16, sorted tiles through
       k_mmv (K = 2880) and k_mmv_warp (K = 512 and 192: <= 4 steps per range) */
    moe_case(240, fs[0], 1, ZMLX_BF16, 1, 4, 8, 2880, 192, ZMLX_ACT_SWIGLU_OAI);
    moe_case(241, fs[0], 1, ZMLX_F16, 5, 4, 8, 1024, 128, ZMLX_ACT_SWIGLU);
    moe_case(242, fs[0], 1, ZMLX_BF16, 12, 4, 8, 2880, 64, ZMLX_ACT_SWIGLU);
    moe_case(243, fs[0], 1, ZMLX_BF16, 40, 4, 8, 512, 192, ZMLX_ACT_SWIGLU_OAI);
}

/* transpose = 0 (stored [E, K, N]): N multiple of the group, K any */
static void test_transpose0(void) {
    moe_case(300, AFF4, 0, ZMLX_BF16, 3, 2, 4, 128, 64, ZMLX_ACT_SWIGLU);
    moe_case(301, (fmt){ZMLX_QMODE_AFFINE, 3, 32}, 0, ZMLX_F32, 10, 2, 3, 64, 96, ZMLX_ACT_SWIGLU);
    moe_case(302, (fmt){ZMLX_QMODE_NVFP4, 4, 16}, 0, ZMLX_F16, 2, 1, 2, 48, 16, ZMLX_ACT_SWIGLU);
}

/* plain qmm (idx NULL) of M rows x (host copy hx) by m, bf16, against the
 * f64 oracle with tolerance rel·|y| + rel_sum·Σ|x·w| */
static void plain_vs_oracle(const char *what, const qmat *m, const void *hx, const void *x, int64_t M, double rel,
                            double rel_sum) {
    const int64_t N = m->w.N;
    void *y = ct_dev_poison((size_t)(M * N) * 2);
    CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, ZMLX_BF16, x, M, 0, &m->w, NULL, 1, y), ZMLX_OK);
    void *Y = ct_host(y, (size_t)(M * N) * 2);
    double *ry = h_alloc(sizeof(double) * (size_t)(M * N)), *ra = h_alloc(sizeof(double) * (size_t)(M * N));
    oracle_qmm(ZMLX_BF16, hx, M, 1, 0, m, NULL, ry, ra);
    ct_close(what, ZMLX_BF16, Y, ry, ra, M * N, rel, rel_sum);
    free(Y); free(ry); free(ra);
    zmlx_mem_free(g_ctx, y);
}

/* plain qmm (idx NULL, E = 1), and expert ids out of range on the device
 * (only the host checks them): no fault, a deterministic result */
static void test_plain_and_bad_ids(void) {
    h_rng r = {400};
    qmat m;
    const int64_t n_tok = 5, N = 33, K = 64;
    qmat_make(&r, AFF4, 1, 1, N, K, ZMLX_BF16, &m);
    void *hx = ct_rand(&r, ZMLX_BF16, n_tok * K, -1, 1);
    void *x = ct_dev(hx, (size_t)(n_tok * K) * 2), *y = ct_dev_poison((size_t)(n_tok * N) * 2);
    plain_vs_oracle("plain qmm", &m, hx, x, n_tok, tol_rel(ZMLX_BF16), tol_abs(ZMLX_BF16));
    /* host weights on a CUDA context: invalid */
    zmlx_qweight hv = m.w;
    hv.on_device = 0;
    CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, ZMLX_BF16, x, n_tok, 0, &hv, NULL, 1, y), ZMLX_ERR_INVALID_ARG);
    /* bad device ids, both paths */
    qmat e4;
    qmat_make(&r, AFF4, 1, 4, N, K, ZMLX_BF16, &e4);
    for (int M = 1; M <= 40; M += 39) {
        int32_t hid[80];
        for (int i = 0; i < 2 * M; i++) hid[i] = i % 3 == 0 ? 999 : (i % 3 == 1 ? -7 : 2);
        int32_t *id = ct_dev(hid, sizeof(int32_t) * (size_t)(2 * M));
        void *xx = ct_dev_poison((size_t)(M * K) * 2), *yy = ct_dev_poison((size_t)(M * 2 * N) * 2);
        void *hx2 = ct_rand(&r, ZMLX_BF16, M * K, -1, 1);
        zmlx_mem_upload(g_ctx, xx, hx2, (size_t)(M * K) * 2);
        CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, ZMLX_BF16, xx, M, 0, &e4.w, id, 2, yy), ZMLX_OK);
        CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
        free(hx2);
        zmlx_mem_free(g_ctx, id); zmlx_mem_free(g_ctx, xx); zmlx_mem_free(g_ctx, yy);
    }
    free(hx);
    zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, y);
    qmat_free(&m); qmat_free(&e4);
}

/* embedding rows from a quantized table, every float T */
static void test_embed(void) {
    h_rng r = {500};
    /* the last three: the tiny models' tables (bf16; V x D of make-tiny) */
    const fmt fs[] = {AFF4, {ZMLX_QMODE_AFFINE, 5, 32}, {ZMLX_QMODE_NVFP4, 4, 16}, {ZMLX_QMODE_MXFP8, 8, 32},
                      AFF4, {ZMLX_QMODE_AFFINE, 3, 32}, {ZMLX_QMODE_MXFP4, 4, 32}};
    for (int i = 0; i < 7; i++) {
        zmlx_dtype T = i < 4 ? (zmlx_dtype)(i % 3) : ZMLX_BF16;
        qmat m;
        const int64_t V = i < 4 ? 50 : i == 5 ? 300 : 256, Dm = i == 2 ? 80 : i >= 4 && i != 5 ? 64 : 128, n = 7;
        qmat_make(&r, fs[i], 1, 1, V, Dm, T, &m);
        int32_t hid[7];
        for (int j = 0; j < n; j++) hid[j] = j == 0 ? (int32_t)(V - 1) : (int32_t)h_int(&r, V);
        int32_t *id = ct_dev(hid, sizeof hid);
        const size_t ob = (size_t)(n * Dm) * zmlx_dtype_size(T);
        void *o = ct_dev_poison(ob);
        CHECK_EQ_INT(zmlx_embed_lookup(g_ctx, T, &m.w, id, n, o), ZMLX_OK);
        void *O = ct_host(o, ob);
        double *ref = h_alloc(sizeof(double) * (size_t)(n * Dm));
        for (int j = 0; j < n; j++)
            for (int64_t d = 0; d < Dm; d++) ref[j * Dm + d] = m.deq[hid[j] * Dm + d];
        ct_close("embed", T, O, ref, NULL, n * Dm, ct_eps(T) / 2 + 1e-7, 0);
        free(O); free(ref);
        zmlx_mem_free(g_ctx, id); zmlx_mem_free(g_ctx, o);
        qmat_free(&m);
    }
}

/* ------------------------------------------------ the tiny models' shapes */

/* The kernel family the dispatch picks for (format, T, M) — restated here from
 * the documented thresholds (qmm_impl.cuh, defaults): 0 GEMV, 1 MMV (for
 * affine 4-bit also its MMA kernel, which gives MMV's bits), 2 MMA.
 * Within one family every output row must have the same bits whatever M is. */
static int family(fmt f, zmlx_dtype T, int64_t M, int64_t E, int64_t N, int64_t K) {
    if (T == ZMLX_F32) return 0;
    const int mx = f.mode == ZMLX_QMODE_MXFP4;
    const int aff = f.mode == ZMLX_QMODE_AFFINE && f.gs % 64 == 0 &&
                    (f.bits == 4 || E > 1 || N >= 65536 || (f.bits == 8 && f.gs == 64 && N >= 512));
    if (aff || (mx && K % 64 == 0 && K < (1 << 24))) {
        if (!mx && f.bits == 4) return 1; /* MMV and its MMA kernel (k_mma_mmv) give the same bits */
        /* qmm_impl.cuh mmv_max_tokens (4-bit never gets here) */
        const char *env = getenv("ZMLX_CUDA_MMV_MAX_TOKENS"), *denv = getenv("ZMLX_CUDA_MMV_DENSE_MAX_TOKENS");
        const int dense = E == 1 && N < 65536;
        int64_t lim = mx ? 320 : f.bits == 8 ? (dense ? 224 : 288) : f.bits <= 3 ? 288 : 240;
        if (env && atoi(env) > 0) lim = atoi(env);
        if (dense && denv && atoi(denv) > 0) lim = atoi(denv);
        return M < lim ? 1 : 2;
    }
    if (E == 1 && M < 1024 && (M + 63) / 64 * ((N + 63) / 64) < 16) return 0; /* MMA_DENSE_TOKENS, MMA_MIN_TILES */
    return M < 8 ? 0 : 2;
}

static const int64_t SWEEP_M[] = {130, 64, 16, 9, 8, 7, 6, 5, 4, 3, 2, 1}; /* descending */
#define N_SWEEP ((int)(sizeof SWEEP_M / sizeof SWEEP_M[0]))

/* Compare the first `bytes` of got with the family's reference (the largest M
 * of the family, run first); the first call of a family stores its copy. */
static void same_bits(const char *what, int64_t M, int fam, void **ref, int64_t *ref_M, const void *got,
                      size_t bytes) {
    if (!ref[fam]) {
        ref[fam] = h_alloc(bytes);
        memcpy(ref[fam], got, bytes);
        ref_M[fam] = M;
        return;
    }
    CHECKF(memcmp(ref[fam], got, bytes) == 0, "%s: M %lld rows differ from M %lld (same kernel family %d)", what,
           (long long)M, (long long)ref_M[fam], fam);
}

/* One linear of a tiny model (E = 1: plain qmm with idx NULL; E > 1: gathered
 * with k slots), bf16, M swept: every M against the f64 oracle, and per-row
 * bit identity within a kernel family. For E > 1 also the fused gate/up
 * (this matrix as both) and down + combine (this matrix as the down
 * projection when N == K is not needed: a second matrix [E, K, N]). */
static void sweep_linear(uint64_t seed, const char *name, fmt f, int64_t E, int64_t N, int64_t K, int k) {
    h_rng r = {seed};
    const zmlx_dtype T = ZMLX_BF16;
    const int64_t MM = SWEEP_M[0], P = MM * k;
    char what[200];
    qmat m, dn;
    qmat_make(&r, f, 1, E, N, K, T, &m);
    if (E > 1) qmat_make(&r, f, 1, E, K, N, T, &dn);
    void *hx = ct_rand(&r, T, MM * K, -1, 1);
    int32_t *hidx = E > 1 ? rand_idx(&r, MM, k, E) : NULL;
    float *hw = h_alloc(sizeof(float) * (size_t)P);
    for (int64_t i = 0; i < P; i++) hw[i] = h_uniform(&r, 0.05f, 1.0f);
    void *x = ct_dev(hx, (size_t)(MM * K) * 2);
    int32_t *idx = hidx ? ct_dev(hidx, sizeof(int32_t) * (size_t)P) : NULL;
    float *w = ct_dev(hw, sizeof(float) * (size_t)P);
    double *ry = h_alloc(sizeof(double) * (size_t)(P * N)), *ra = h_alloc(sizeof(double) * (size_t)(P * N));
    oracle_qmm(T, hx, MM, k, 0, &m, hidx, ry, ra);
    void *ref_y[3] = {0}, *ref_h[3] = {0}, *ref_o[3] = {0}, *hfix = NULL;
    int64_t rm_y[3], rm_h[3], rm_o[3];
    for (int i = 0; i < N_SWEEP; i++) {
        const int64_t M = SWEEP_M[i];
        const int fam = family(f, T, M, E, N, K);
        const size_t yb = (size_t)(M * k * N) * 2;
        void *y = ct_dev_poison(yb);
        CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x, M, 0, &m.w, idx, k, y), ZMLX_OK);
        void *Y = ct_host(y, yb);
        snprintf(what, sizeof what, "%s (%s) qmm M %lld", name, fam == 0 ? "gemv" : fam == 1 ? "mmv" : "mma",
                 (long long)M);
        /* the output's rounding to bf16 plus 2^-12·Σ|x·w|: every family must
           keep the weights at about f32 precision (weights rounded to bf16
           alone are ~2^-9 off and fail this) */
        ct_close(what, T, Y, ry, ra, M * k * N, ct_eps(T) / 2, 0x1p-12);
        same_bits(what, M, fam, ref_y, rm_y, Y, yb);
        free(Y);
        zmlx_mem_free(g_ctx, y);
        if (E == 1) continue;
        /* fused gate/up (m as both): per-row bits within the family */
        void *h = ct_dev_poison(yb);
        CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, x, M, &m.w, &m.w, idx, k, ZMLX_ACT_SWIGLU, h), ZMLX_OK);
        void *H = ct_host(h, yb);
        snprintf(what, sizeof what, "%s swiglu M %lld", name, (long long)M);
        same_bits(what, M, fam, ref_h, rm_h, H, yb);
        if (!hfix) hfix = ct_dev(H, yb); /* the down input of every M: the largest M's h */
        free(H);
        zmlx_mem_free(g_ctx, h);
        /* down + combine over the fixed h */
        const size_t ob = (size_t)(M * K) * 2;
        void *o = ct_dev_poison(ob);
        CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, hfix, M, &dn.w, idx, k, w, o), ZMLX_OK);
        void *O = ct_host(o, ob);
        snprintf(what, sizeof what, "%s down+combine M %lld", name, (long long)M);
        same_bits(what, M, family(f, T, M, E, K, N), ref_o, rm_o, O, ob);
        if (i == 0 || M == 1) { /* against the oracle of the down matmul and the combine */
            void *Hh = ct_host(hfix, (size_t)(P * N) * 2);
            double *dy = h_alloc(sizeof(double) * (size_t)(M * k * K)), *da = h_alloc(sizeof(double) * (size_t)(M * k * K));
            double *ro = h_alloc(sizeof(double) * (size_t)(M * K)), *roa = h_alloc(sizeof(double) * (size_t)(M * K));
            oracle_qmm(T, Hh, M, k, 1, &dn, hidx, dy, da);
            for (int64_t t = 0; t < M; t++)
                for (int64_t d = 0; d < K; d++) {
                    double s = 0, sa = 0;
                    for (int j = 0; j < k; j++) {
                        s += hw[t * k + j] * dy[(t * k + j) * K + d];
                        sa += hw[t * k + j] * (fabs(dy[(t * k + j) * K + d]) * ct_eps(T) + da[(t * k + j) * K + d]);
                    }
                    ro[t * K + d] = s;
                    roa[t * K + d] = sa;
                }
            ct_close(what, T, O, ro, roa, M * K, 2 * tol_rel(T), tol_abs(T));
            free(Hh); free(dy); free(da); free(ro); free(roa);
        }
        free(O);
        zmlx_mem_free(g_ctx, o);
    }
    for (int i = 0; i < 3; i++) { free(ref_y[i]); free(ref_h[i]); free(ref_o[i]); }
    zmlx_mem_free(g_ctx, hfix);
    zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, idx); zmlx_mem_free(g_ctx, w);
    free(hx); free(hidx); free(hw); free(ry); free(ra);
    qmat_free(&m);
    if (E > 1) qmat_free(&dn);
}

static void *dev_at(const void *host, size_t bytes, int off, void **base) { /* host bytes at device base + off */
    *base = ct_dev(NULL, bytes + 16);
    CHECK_EQ_INT(zmlx_mem_upload(g_ctx, (char *)*base + off, host, bytes), ZMLX_OK);
    return (char *)*base + off;
}
/* 8-bit codes 4 bytes past a 16-byte boundary (mmv_ldcodes' word loads
 * instead of one 16-byte load) give the aligned codes' bits: experts at 3
 * tokens (MMV), and fused gate/up. */
static void test_mmv_a8_offset(uint64_t seed) {
    h_rng r = {seed};
    const int64_t E = 4, N = 192, K = 2048, M = 3;
    const int k = 2;
    qmat m;
    qmat_make(&r, A8, 1, E, N, K, ZMLX_BF16, &m);
    const size_t wb = zmlx_quant_packed_bytes(8, E * N, K), yb = (size_t)(M * k * N) * 2;
    void *hw = ct_host(m.dw, wb), *base;
    zmlx_qweight off = m.w;
    off.w = dev_at(hw, wb, 4, &base);
    void *hx = ct_rand(&r, ZMLX_BF16, M * K, -1, 1), *x = ct_dev(hx, (size_t)(M * K) * 2);
    int32_t *hidx = rand_idx(&r, M, k, E), *idx = ct_dev(hidx, sizeof(int32_t) * (size_t)(M * k));
    for (int fused = 0; fused < 2; fused++) {
        void *ya = ct_dev_poison(yb), *yo = ct_dev_poison(yb);
        if (fused) {
            CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, ZMLX_BF16, x, M, &m.w, &m.w, idx, k, ZMLX_ACT_SWIGLU, ya),
                         ZMLX_OK);
            CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, ZMLX_BF16, x, M, &off, &off, idx, k, ZMLX_ACT_SWIGLU, yo),
                         ZMLX_OK);
        } else {
            CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, ZMLX_BF16, x, M, 0, &m.w, idx, k, ya), ZMLX_OK);
            CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, ZMLX_BF16, x, M, 0, &off, idx, k, yo), ZMLX_OK);
        }
        void *A = ct_host(ya, yb), *O = ct_host(yo, yb);
        CHECKF(memcmp(A, O, yb) == 0, "8-bit codes 4 bytes off: %s differs from the aligned codes",
               fused ? "swiglu" : "qmm");
        free(A); free(O);
        zmlx_mem_free(g_ctx, ya); zmlx_mem_free(g_ctx, yo);
    }
    free(hw); free(hx); free(hidx);
    zmlx_mem_free(g_ctx, base); zmlx_mem_free(g_ctx, x); zmlx_mem_free(g_ctx, idx);
    qmat_free(&m);
}

/* The affine widths other than 4 on the MMV path (qmm_impl.cuh mmv_step_w,
 * the generic variants -B, and the fast forms of 2, 3, 5, 6 and 8 bits; 8-bit as
 * two nibble chains): every width at
 * gs 64 with the Qwen3 gate/up's K = 2048 (4 ranges of 8 steps) and a down
 * of K = 256, bf16 and f16, one token (the one-kernel combine), 3 unsorted,
 * 12 and 40 in sorted tiles, against the oracle and fused == unfused
 * (moe_case); 8-bit also in groups of 128. Then experts of 192 rows of
 * each width (K = 2048; their down projection K = 192) over the swept M,
 * and a 65536-row dense matrix (an LM head; smaller dense matrices take
 * k_gemv, but 8-bit ones of 512 rows or more): the oracle at weight
 * precision and the same row bits at every M
 * (sweep_linear).
 * ZMLX_TEST_QUICK (under compute-sanitizer): 5-bit (half-word loads, and
 * words from 2 bytes before the odd lanes' codes) and 8-bit (whole words, two
 * chains), moe_case only. */
static void test_mmv_widths(void) {
    const int quick = getenv("ZMLX_TEST_QUICK") != NULL;
    const int bits[] = {5, 8, 2, 3, 6};
    const zmlx_act acts[] = {ZMLX_ACT_SWIGLU, ZMLX_ACT_GEGLU, ZMLX_ACT_SWIGLU_OAI};
    const int64_t Ms[] = {1, 3, 12, 40};
    uint64_t seed = 900;
    for (int b = 0; b < (quick ? 2 : 5); b++) {
        const fmt f = {ZMLX_QMODE_AFFINE, bits[b], 64};
        for (int mi = 0; mi < 4; mi++)
            moe_case(seed++, f, 1, mi & 1 ? ZMLX_F16 : ZMLX_BF16, Ms[mi], 2, 6, 2048, 256, acts[(b + mi) % 3]);
        if (quick) continue;
        char name[64];
        snprintf(name, sizeof name, "%d-bit experts", bits[b]);
        sweep_linear(seed++, name, f, 4, 192, 2048, 2);
    }
    if (quick) return;
    test_mmv_a8_offset(seed++);
    moe_case(seed++, (fmt){ZMLX_QMODE_AFFINE, 8, 128}, 1, ZMLX_BF16, 5, 4, 8, 1024, 128, ZMLX_ACT_SWIGLU);
    sweep_linear(seed, "65536-row 3-bit head", (fmt){ZMLX_QMODE_AFFINE, 3, 64}, 1, 65536, 128, 1);
}

/* The MMV K-range counts other than 4 (qmm_impl.cuh mmv_ks): K >= 4096 (8
 * ranges: fused gate/up and fused down+combine against the unfused kernels
 * and the oracle), and >= 65536 rows (2 ranges, an LM head's shape). */
static void test_mmv_ranges(void) {
    moe_case(7, AFF4, 1, ZMLX_BF16, 1, 2, 3, 4096, 4096, ZMLX_ACT_SWIGLU);
    moe_case(8, AFF4, 1, ZMLX_F16, 3, 2, 3, 4096, 256, ZMLX_ACT_SWIGLU);
    sweep_linear(9, "65536-row head", AFF4, 1, 65536, 128, 1);
}

/* The experts' MMV as a stream (qmm_impl.cuh k_mmv_stream: K = 2048 in
 * groups of 64, from mmv_stream_tokens() tokens: the sorted tiles, from 8,
 * unless the environment says otherwise; the ctest test_cuda_qmm_stream2
 * says 2, so its unsorted pairs run too): M = 2, 5, sorted tiles at M = 12
 * and at M = 40 over 3 experts (several tiles per expert, partial ones),
 * bf16 and f16, every activation, against the oracle and fused == unfused. */
static void test_mmv_stream(void) {
    moe_case(14, AFF4, 1, ZMLX_BF16, 2, 8, 16, 2048, 256, ZMLX_ACT_SWIGLU);
    moe_case(15, AFF4, 1, ZMLX_F16, 5, 4, 8, 2048, 128, ZMLX_ACT_GEGLU);
    moe_case(16, AFF4, 1, ZMLX_BF16, 12, 4, 6, 2048, 64, ZMLX_ACT_SWIGLU);
    moe_case(17, AFF4, 1, ZMLX_BF16, 40, 2, 3, 2048, 192, ZMLX_ACT_SWIGLU_OAI);
}

/* The device sort's segment counts other than 32 (qmm_impl.cuh
 * sort_segments: 4096 / E for E > 128) with more pairs than segments x 32
 * (MMV tiles of 8 at 100 tokens; MMA tiles of 64 at 150, 8-bit gs 32: a
 * format MMV does not serve), and a dense 8-bit gs-32 matmul with enough
 * tiles for the MMA path (>= MMA_MIN_TILES). */
static void test_sort_and_dense_mma(void) {
    const fmt r8 = {ZMLX_QMODE_AFFINE, 8, 32};
    moe_case(10, AFF4, 1, ZMLX_BF16, 100, 8, 300, 64, 64, ZMLX_ACT_SWIGLU);
    moe_case(11, r8, 1, ZMLX_BF16, 150, 4, 1000, 64, 64, ZMLX_ACT_SWIGLU);
    moe_case(12, AFF4, 1, ZMLX_BF16, 40, 4, 4096, 64, 64, ZMLX_ACT_SWIGLU);
    h_rng r = {13};
    qmat m;
    const int64_t M = 1030, N = 1024, K = 64; /* 17 x 16 tiles */
    qmat_make(&r, r8, 1, 1, N, K, ZMLX_BF16, &m);
    void *hx = ct_rand(&r, ZMLX_BF16, M * K, -1, 1);
    void *x = ct_dev(hx, (size_t)(M * K) * 2);
    plain_vs_oracle("dense 8-bit qmm, MMA path", &m, hx, x, M, ct_eps(ZMLX_BF16) / 2, 0x1p-12);
    qmat_free(&m);
    /* few rows (a router's 64) at 1030 tokens: 17 tiles, MMA (MMA_DENSE_TOKENS, MMA_MIN_TILES) */
    qmat_make(&r, r8, 1, 1, 64, K, ZMLX_BF16, &m);
    plain_vs_oracle("dense 8-bit qmm of 64 rows, MMA path", &m, hx, x, M, ct_eps(ZMLX_BF16) / 2, 0x1p-12);
    free(hx);
    zmlx_mem_free(g_ctx, x);
    qmat_free(&m);
}

/* The MMV kernels' two load variants (qmm_impl.cuh mmv_steps_any and
 * mmv_fast) share one arithmetic: the same call on activations that are
 * 16-byte aligned (fast) and 2 bytes off (generic) must give the same bits.
 * The fast variant loads batches of 2 steps (experts; dense from 2 tokens)
 * or 4 (dense at one token, the fused combine), the generic one of 4, so this
 * also compares the batch depths. Shapes: K = 3072 (ranges of 12 steps);
 * gs 128 (two steps per scale); a dense matrix of 40 rows (a partial row
 * block); experts with K = 2048 (the Qwen3 gate/up: 4 ranges of 8 steps;
 * aligned, the stream kernel at M = 12, and at M = 3 too under
 * test_cuda_qmm_stream2); an LM-head-shaped matrix
 * (65552 x 2048: the stream at every M, aligned, against the generic one);
 * M = 1 and 3 unsorted, 12 sorted; gate/up fused and down + combine for
 * E > 1. Aligned at M = 12, the sorted tiles of at most 4 steps per K range
 * (the down projections, K = 256 and 192; the gs-128 experts' K = 1024,
 * fused and plain) run as k_mmv_warp, so it is compared with the generic
 * k_mmv bit for bit. mxfp4 likewise (mmv_fast_mx, aligned against ANY):
 * K = 2880 (ranges of 12 steps), K = 1024 with a down of K = 192 (sorted:
 * k_mmv_warp), a dense 40 x 4096 (16 ranges of one batch of 4 steps).
 * 8-bit in groups of 64 likewise (MMV_A8 against -8): K = 3072, K = 2048
 * with a down of K = 192 (k_mmv_warp when sorted), an LM head's shape; and
 * the fast forms of 2, 3, 5 and 6 bits against their generic variants. */
static void same_dev(const char *what, const void *a, const void *b, size_t bytes) {
    void *A = ct_host(a, bytes), *B = ct_host(b, bytes);
    CHECKF(memcmp(A, B, bytes) == 0, "%s: the fast and generic MMV variants differ", what);
    free(A); free(B);
}
static void test_mmv_variants(void) {
    const zmlx_dtype T = ZMLX_BF16;
    const struct { fmt f; int64_t E, F, D; int k; } cs[] = {
        {AFF4, 8, 256, 3072, 2}, {{ZMLX_QMODE_AFFINE, 4, 128}, 6, 256, 1024, 3}, {AFF4, 1, 40, 2048, 1},
        {AFF4, 8, 192, 2048, 2}, {AFF4, 1, 65552, 2048, 1}, {MX4, 8, 256, 2880, 2}, {MX4, 8, 192, 1024, 2},
        {MX4, 1, 40, 4096, 1}, {A8, 8, 256, 3072, 2}, {A8, 8, 192, 2048, 2}, {A8, 1, 65552, 2048, 1},
        {{ZMLX_QMODE_AFFINE, 3, 64}, 8, 192, 2048, 2}, {{ZMLX_QMODE_AFFINE, 2, 64}, 6, 192, 1024, 2},
        {{ZMLX_QMODE_AFFINE, 5, 64}, 8, 192, 2048, 2}, {{ZMLX_QMODE_AFFINE, 6, 64}, 6, 256, 1024, 2}};
    const int64_t Ms[] = {1, 3, 12};
    char what[160];
    for (int c = 0; c < (int)(sizeof cs / sizeof cs[0]); c++) {
        h_rng r = {700 + (uint64_t)c};
        const int64_t E = cs[c].E, F = cs[c].F, D = cs[c].D;
        const int k = cs[c].k;
        qmat g, u, dn;
        qmat_make(&r, cs[c].f, 1, E, F, D, T, &g);
        if (E > 1) { /* the fused gate/up's second matrix, the down projection */
            qmat_make(&r, cs[c].f, 1, E, F, D, T, &u);
            qmat_make(&r, cs[c].f, 1, E, D, F, T, &dn);
        }
        for (int mi = 0; mi < 3; mi++) {
            const int64_t M = Ms[mi], P = M * k;
            const size_t xb = (size_t)(M * D) * 2, yb = (size_t)(P * F) * 2, ob = xb;
            void *hx = ct_rand(&r, T, M * D, -1, 1), *hh = ct_rand(&r, T, P * F, -1, 1);
            int32_t *hidx = E > 1 ? rand_idx(&r, M, k, E) : NULL;
            float *hw = h_alloc(sizeof(float) * (size_t)P);
            for (int64_t i = 0; i < P; i++) hw[i] = h_uniform(&r, 0.05f, 1.0f);
            void *xbase, *hbase;
            void *xa = ct_dev(hx, xb), *xm = dev_at(hx, xb, 2, &xbase);
            void *ha = ct_dev(hh, yb), *hm = dev_at(hh, yb, 2, &hbase);
            int32_t *idx = hidx ? ct_dev(hidx, sizeof(int32_t) * (size_t)P) : NULL;
            float *w = ct_dev(hw, sizeof(float) * (size_t)P);
            void *y1 = ct_dev_poison(yb), *y2 = ct_dev_poison(yb), *o1 = ct_dev_poison(ob), *o2 = ct_dev_poison(ob);
            snprintf(what, sizeof what, "%d-bit gs %d E %lld F %lld D %lld M %lld", cs[c].f.bits, cs[c].f.gs,
                     (long long)E, (long long)F, (long long)D, (long long)M);
            CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, xa, M, 0, &g.w, idx, k, y1), ZMLX_OK);
            CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, xm, M, 0, &g.w, idx, k, y2), ZMLX_OK);
            same_dev(what, y1, y2, yb);
            if (E > 1) {
                CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, xa, M, &g.w, &u.w, idx, k, ZMLX_ACT_SWIGLU, y1), ZMLX_OK);
                CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, xm, M, &g.w, &u.w, idx, k, ZMLX_ACT_SWIGLU, y2), ZMLX_OK);
                same_dev(what, y1, y2, yb);
                CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, ha, M, &dn.w, idx, k, w, o1), ZMLX_OK);
                CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, hm, M, &dn.w, idx, k, w, o2), ZMLX_OK);
                same_dev(what, o1, o2, ob);
            }
            void *dev[] = {xa, xbase, ha, hbase, idx, w, y1, y2, o1, o2};
            for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) zmlx_mem_free(g_ctx, dev[i]);
            free(hx); free(hh); free(hidx); free(hw);
        }
        qmat_free(&g);
        if (E > 1) { qmat_free(&u); qmat_free(&dn); }
    }
}

/* The affine MMV formats on the MMA path (qmm_impl.cuh k_mma_mmv, from
 * mmv_max_tokens() = 384 tokens) give the MMV path's bits: rows of a
 * 1030-token call against the same tokens alone (one token: k_mmv, and the
 * one-kernel combine), memcmp, for gather_qmm, the fused gate/up and down +
 * combine. K ranges of 8 and 3 steps (experts, K = 2048 / 768), 4 (a dense
 * K = 4096 in 16 ranges, 200 rows: a partial row block), groups of 128 in
 * f16, activations 2 bytes off (the kernel's plain-load staging), f32
 * scales (a dtype the kernel reads at run time). */
static void test_mma_equals_mmv(void) {
    const fmt g128 = {ZMLX_QMODE_AFFINE, 4, 128};
    const zmlx_dtype B = ZMLX_BF16, H = ZMLX_F16, F32 = ZMLX_F32;
    const struct { fmt f; zmlx_dtype T, st; int64_t E, F, D; int k, off; } cs[] = {
        {AFF4, B, B, 8, 768, 2048, 2, 0}, {g128, H, H, 6, 256, 1024, 3, 0}, {AFF4, B, B, 1, 200, 4096, 1, 0},
        {AFF4, B, B, 8, 192, 2048, 2, 1}, {AFF4, H, F32, 4, 128, 1024, 2, 0}};
    const int64_t M = 1030, toks[] = {0, 1, 517, 1029};
    char what[160];
    for (int c = 0; c < (int)(sizeof cs / sizeof cs[0]); c++) {
        h_rng r = {800 + (uint64_t)c};
        const zmlx_dtype T = cs[c].T;
        const int64_t E = cs[c].E, F = cs[c].F, D = cs[c].D, P = M * cs[c].k;
        const int k = cs[c].k;
        const size_t es = zmlx_dtype_size(T), xb = (size_t)(M * D) * es, yb = (size_t)(P * F) * es;
        qmat g, u, dn;
        qmat_make(&r, cs[c].f, 1, E, F, D, cs[c].st, &g);
        if (E > 1) {
            qmat_make(&r, cs[c].f, 1, E, F, D, cs[c].st, &u);
            qmat_make(&r, cs[c].f, 1, E, D, F, cs[c].st, &dn);
        }
        void *hx = ct_rand(&r, T, M * D, -1, 1), *hh = ct_rand(&r, T, P * F, -1, 1), *xbase = NULL;
        int32_t *hidx = E > 1 ? rand_idx(&r, M, k, E) : NULL;
        float *hw = h_alloc(sizeof(float) * (size_t)P);
        for (int64_t i = 0; i < P; i++) hw[i] = h_uniform(&r, 0.05f, 1.0f);
        char *x = cs[c].off ? dev_at(hx, xb, 2, &xbase) : ct_dev(hx, xb);
        char *h = ct_dev(hh, yb);
        int32_t *idx = hidx ? ct_dev(hidx, sizeof(int32_t) * (size_t)P) : NULL;
        float *w = ct_dev(hw, sizeof(float) * (size_t)P);
        void *y = ct_dev_poison(yb), *sw = ct_dev_poison(yb), *o = ct_dev_poison(xb);
        void *y1 = ct_dev_poison(yb), *sw1 = ct_dev_poison(yb), *o1 = ct_dev_poison(xb);
        CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x, M, 0, &g.w, idx, k, y), ZMLX_OK);
        if (E > 1) {
            CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, x, M, &g.w, &u.w, idx, k, ZMLX_ACT_SWIGLU, sw), ZMLX_OK);
            CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, h, M, &dn.w, idx, k, w, o), ZMLX_OK);
        }
        char *Y = ct_host(y, yb), *SW = ct_host(sw, yb), *O = ct_host(o, xb);
        for (int ti = 0; ti < 4; ti++) {
            const int64_t t = toks[ti];
            const size_t rb = (size_t)(k * F) * es, ob = (size_t)D * es; /* a token's y rows, its output row */
            const int32_t *it = idx ? idx + t * k : NULL;
            snprintf(what, sizeof what, "gs %d %s scales %s E %lld F %lld D %lld token %lld", cs[c].f.gs,
                     zmlx_dtype_name(T), zmlx_dtype_name(cs[c].st), (long long)E, (long long)F, (long long)D,
                     (long long)t);
            CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x + t * D * es, 1, 0, &g.w, it, k, y1), ZMLX_OK);
            void *Y1 = ct_host(y1, rb);
            CHECKF(!memcmp(Y1, Y + t * rb, rb), "%s: gather_qmm's MMA rows differ from MMV's", what);
            free(Y1);
            if (E == 1) continue;
            CHECK_EQ_INT(zmlx_gather_qmm_swiglu(g_ctx, T, x + t * D * es, 1, &g.w, &u.w, it, k, ZMLX_ACT_SWIGLU, sw1),
                         ZMLX_OK);
            CHECK_EQ_INT(zmlx_gather_qmm_combine(g_ctx, T, h + t * rb, 1, &dn.w, it, k, w + t * k, o1), ZMLX_OK);
            void *S1 = ct_host(sw1, rb), *O1 = ct_host(o1, ob);
            CHECKF(!memcmp(S1, SW + t * rb, rb), "%s: the fused gate/up's MMA rows differ from MMV's", what);
            CHECKF(!memcmp(O1, O + t * ob, ob), "%s: down + combine on MMA differs from MMV", what);
            free(S1); free(O1);
        }
        free(Y); free(SW); free(O);
        void *dev[] = {cs[c].off ? xbase : x, h, idx, w, y, sw, o, y1, sw1, o1};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) zmlx_mem_free(g_ctx, dev[i]);
        free(hx); free(hh); free(hidx); free(hw);
        qmat_free(&g);
        if (E > 1) { qmat_free(&u); qmat_free(&dn); }
    }
}

/* qmm_argmax == gather_qmm then argmax (logits and indices, memcmp; the
 * indices also against the host's zr_argmax of those logits), twice in a
 * row: the fused argmax's device words must be back at zero after each
 * call. Returns token 0's index. */
static int32_t amax_same(const char *what, zmlx_dtype T, const qmat *m, const void *x, int64_t M) {
    const int64_t N = m->w.N;
    const size_t yb = (size_t)(M * N) * zmlx_dtype_size(T), ib = (size_t)M * sizeof(int32_t);
    void *y1 = ct_dev_poison(yb), *y2 = ct_dev_poison(yb);
    int32_t *i1 = ct_dev_poison(ib), *i2 = ct_dev_poison(ib), first = -1;
    for (int rep = 0; rep < 2; rep++) {
        CHECK_EQ_INT(zmlx_qmm_argmax(g_ctx, T, x, M, &m->w, y1, i1), ZMLX_OK);
        CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x, M, 0, &m->w, NULL, 1, y2), ZMLX_OK);
        CHECK_EQ_INT(zmlx_argmax(g_ctx, T, y2, M, N, i2), ZMLX_OK);
        void *h1 = ct_host(y1, yb), *h2 = ct_host(y2, yb);
        int32_t *a1 = ct_host(i1, ib), *a2 = ct_host(i2, ib), *host = h_alloc(ib);
        CHECK_EQ_INT(zmlx_argmax(NULL, T, h2, M, N, host), ZMLX_OK);
        CHECKF(!memcmp(h1, h2, yb), "%s M %lld: qmm_argmax's logits differ from gather_qmm's", what, (long long)M);
        for (int64_t t = 0; t < M; t++)
            CHECKF(a1[t] == a2[t] && a1[t] == host[t], "%s M %lld rep %d token %lld: qmm_argmax %d, argmax %d, host %d",
                   what, (long long)M, rep, (long long)t, a1[t], a2[t], host[t]);
        first = a1[0];
        free(h1); free(h2); free(a1); free(a2); free(host);
    }
    void *dev[] = {y1, y2, i1, i2};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) zmlx_mem_free(g_ctx, dev[i]);
    return first;
}

/* bytes of one row's 16-bit scales (or biases) of matrix m */
static size_t scale_row_bytes(const qmat *m) { return (size_t)(m->w.K / m->w.group_size) * 2; }

/* Row `from` of matrix m (codes, scales, biases; 16-bit scales) copied over
 * row `to`, or row `to`'s scales set to NaN (from < 0), on the device. */
static void row_set(const qmat *m, int64_t from, int64_t to) {
    const size_t rb = (size_t)(m->w.K * m->w.bits / 8), sb = scale_row_bytes(m);
    unsigned char buf[8192];
    CHECK(rb <= sizeof buf && sb <= sizeof buf);
    if (from < 0) {
        memset(buf, 0xff, sb); /* a NaN in f16 and bf16 */
        CHECK_EQ_INT(zmlx_mem_upload(g_ctx, (char *)m->ds + to * sb, buf, sb), ZMLX_OK);
        return;
    }
    struct { void *p; size_t n; } part[3] = {{m->dw, rb}, {m->ds, sb}, {m->db, sb}};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(zmlx_mem_download(g_ctx, buf, (char *)part[i].p + from * part[i].n, part[i].n), ZMLX_OK);
        CHECK_EQ_INT(zmlx_mem_upload(g_ctx, (char *)part[i].p + to * part[i].n, buf, part[i].n), ZMLX_OK);
    }
}

/* qmm_argmax on the fused path (MMV with one pair per tile: the stream
 * LM-head variant at 65552 x 2048, K ranges 4 / 8 / 16, groups of 128, a
 * partial last tile, unaligned activations for the generic variant, a 6-bit
 * LM head) and on the unfused ones (sorted tiles from 8 tokens, the 8-bit
 * GEMV), its matmul also against the f64 oracle; then, on the LM-head shape, a three-way tie
 * at the maximum in rows of different blocks (the lowest index wins), the
 * winner's row turned NaN (the runner-up wins) and every row NaN (index 0):
 * at M = 1, the last M, since these rewrite the matrix. */
static void test_qmm_argmax(void) {
    const zmlx_dtype T = ZMLX_BF16;
    const fmt g128 = {ZMLX_QMODE_AFFINE, 4, 128}, a6 = {ZMLX_QMODE_AFFINE, 6, 64};
    const struct { fmt f; int64_t N, K; int unaligned; } cs[] = {
        {AFF4, 65552, 2048, 0}, {AFF4, 300, 256, 0}, {AFF4, 300, 256, 1}, {AFF4, 2000, 2048, 0},
        {g128, 1000, 4096, 0}, {A8, 500, 512, 0}, {a6, 65552, 512, 1}};
    const int64_t Ms[] = {8, 7, 2, 1};
    char what[96];
    for (int c = 0; c < (int)(sizeof cs / sizeof cs[0]); c++) {
        h_rng r = {800 + (uint64_t)c};
        qmat m;
        qmat_make(&r, cs[c].f, 1, 1, cs[c].N, cs[c].K, T, &m);
        for (int mi = 0; mi < 4; mi++) {
            const int64_t M = Ms[mi];
            const size_t xb = (size_t)(M * cs[c].K) * 2;
            void *hx = ct_rand(&r, T, M * cs[c].K, -1, 1), *base = NULL;
            void *x = cs[c].unaligned ? dev_at(hx, xb, 2, &base) : ct_dev(hx, xb);
            snprintf(what, sizeof what, "bits %d gs %d N %lld K %lld%s", cs[c].f.bits, cs[c].f.gs, (long long)cs[c].N,
                     (long long)cs[c].K, cs[c].unaligned ? " unaligned x" : "");
            plain_vs_oracle(what, &m, hx, x, M, tol_rel(T), tol_abs(T));
            const int32_t a = amax_same(what, T, &m, x, M);
            if (c == 0 && M == 1) {
                const int64_t N = cs[c].N, t1 = (a + N / 3) % N, t2 = (a + 2 * N / 3) % N;
                row_set(&m, a, t1);
                row_set(&m, a, t2);
                const int64_t lo = a < t1 ? (a < t2 ? a : t2) : (t1 < t2 ? t1 : t2);
                snprintf(what, sizeof what, "tie of rows %d, %lld, %lld", a, (long long)t1, (long long)t2);
                CHECKF(amax_same(what, T, &m, x, M) == lo, "%s: the lowest index %lld wins", what, (long long)lo);
                row_set(&m, -1, lo);
                snprintf(what, sizeof what, "row %lld NaN", (long long)lo);
                CHECKF(amax_same(what, T, &m, x, M) != lo, "%s: a NaN row wins", what);
                const size_t sb = (size_t)N * scale_row_bytes(&m);
                void *nan = h_alloc(sb);
                h_poison(nan, sb); /* every scale NaN */
                CHECK_EQ_INT(zmlx_mem_upload(g_ctx, m.ds, nan, sb), ZMLX_OK);
                free(nan);
                CHECKF(amax_same("every row NaN", T, &m, x, M) == 0, "every row NaN: index 0");
            }
            free(hx);
            zmlx_mem_free(g_ctx, cs[c].unaligned ? base : x);
        }
        qmat_free(&m);
    }
}

/* Every linear of the three tiny models (make-tiny defaults: D 64, 4/2 heads
 * of 16, 8 experts top-2, I 64, V 256, 8-bit gs64 router; the tied 3-bit gs32
 * variant: D 128, 6/2 heads of 32, 6 experts top-3, I 192, V 300; mxfp4). */
static void test_model_shapes(void) {
    const fmt a3 = {ZMLX_QMODE_AFFINE, 3, 32}, mx = {ZMLX_QMODE_MXFP4, 4, 32}, r8 = {ZMLX_QMODE_AFFINE, 8, 64};
    const fmt fs[3] = {AFF4, a3, mx};
    uint64_t seed = 600;
    for (int v = 0; v < 3; v++) {
        const fmt f = fs[v];
        const int64_t D = v == 1 ? 128 : 64, Hq = v == 1 ? 192 : 64, Hkv = v == 1 ? 64 : 32;
        const int64_t E = v == 1 ? 6 : 8, I = v == 1 ? 192 : 64, V = v == 1 ? 300 : 256;
        const int k = v == 1 ? 3 : 2;
        char nm[64];
        snprintf(nm, sizeof nm, "v%d q_proj", v);
        sweep_linear(seed++, nm, f, 1, Hq, D, 1);
        snprintf(nm, sizeof nm, "v%d k_proj", v);
        sweep_linear(seed++, nm, f, 1, Hkv, D, 1);
        snprintf(nm, sizeof nm, "v%d o_proj", v);
        sweep_linear(seed++, nm, f, 1, D, Hq, 1);
        snprintf(nm, sizeof nm, "v%d lm_head", v);
        sweep_linear(seed++, nm, f, 1, V, D, 1);
        snprintf(nm, sizeof nm, "v%d router", v);
        sweep_linear(seed++, nm, r8, 1, E, D, 1);
        snprintf(nm, sizeof nm, "v%d experts", v);
        sweep_linear(seed++, nm, f, E, I, D, k);
    }
}

/* Rows [r0, r0 + n) of a device weight (transpose = 1, E = 1) */
static zmlx_qweight weight_rows(const zmlx_qweight *W, int64_t r0, int64_t n) {
    const int64_t sb = (W->K / W->group_size) * (int64_t)zmlx_dtype_size(W->scale_dtype);
    zmlx_qweight v = *W;
    v.N = n;
    v.w = (const char *)W->w + r0 * (int64_t)zmlx_quant_packed_bytes(W->bits, 1, W->K);
    v.scales = (const char *)W->scales + r0 * sb;
    if (W->biases) v.biases = (const char *)W->biases + r0 * sb;
    return v;
}

/* attention_step with the projection folded in (proj, x) == the unfused
 * chain's projection (q, k and v apart, as the runtime's unfused path runs
 * them; assembled into the packed rows) then attention_step without it:
 * memcmp of qkv, both caches and the output. One token: k_mmv_qkv serves
 * bf16 / f16 with head dims 128 and 64 (clusters of 8 / 4 blocks), K in 8,
 * 16 and 4 ranges, groups of 64 and 128, with and without norms, a partial
 * traditional rope, 8- and 3-bit in groups of 64 (mmv_fast_w: k and v of
 * 512 rows); the declined calls (3 tokens, f32, head dim 256, x 2 bytes
 * off; 6- and 5-bit, whose dense matrices take k_gemv) take ops.c's two
 * calls. The projection runs part by part (qmm_impl.cuh run_qkv_parts) for
 * 8- and 3-bit at one token with k and v of 256 rows (k_gemv, the packed
 * matrix and q MMV), and for 8-bit at 64 tokens: the packed matrix (1280
 * rows, 20 tiles) and q (16) take k_mma, k and v (128 rows, 2 tiles)
 * k_gemv. An out-of-range position flags ZMLX_ERR_RANGE at the sync and
 * leaves the caches alone. */
static void test_qkv_step(void) {
    const fmt g128 = {ZMLX_QMODE_AFFINE, 4, 128}, A6 = {ZMLX_QMODE_AFFINE, 6, 64};
    const fmt A5 = {ZMLX_QMODE_AFFINE, 5, 64}, A3 = {ZMLX_QMODE_AFFINE, 3, 64};
    const zmlx_dtype B = ZMLX_BF16, H = ZMLX_F16;
    const struct { fmt f; zmlx_dtype T; int hq, hkv, hd; int64_t K, nt; int off, norms, rot; } cs[] = {
        {AFF4, B, 32, 4, 128, 2048, 1, 0, 1, 128}, {g128, H, 8, 2, 128, 4096, 1, 0, 1, 128},
        {AFF4, B, 4, 2, 64, 512, 1, 0, 0, 32},     {AFF4, H, 16, 4, 64, 2048, 1, 0, 1, 64},
        {AFF4, B, 8, 2, 128, 1024, 3, 0, 1, 128},  {AFF4, ZMLX_F32, 8, 2, 128, 1024, 1, 0, 1, 128},
        {A8, B, 8, 2, 128, 1024, 1, 0, 1, 128},    {AFF4, B, 2, 1, 256, 1024, 1, 0, 1, 256},
        {AFF4, B, 8, 2, 128, 1024, 1, 2, 1, 128},  {A8, B, 8, 1, 128, 256, 64, 0, 1, 128},
        {A8, B, 16, 4, 128, 1024, 1, 0, 1, 128},   {A8, H, 16, 8, 64, 2048, 1, 0, 1, 64},
        {A6, B, 16, 4, 128, 1024, 1, 0, 1, 128},   {A5, B, 32, 4, 128, 2048, 1, 0, 1, 128},
        {A3, H, 16, 8, 64, 2048, 1, 0, 1, 64},     {A3, B, 8, 2, 128, 1024, 1, 0, 1, 128}};
    enum { CAP = 700 };
    for (int c = 0; c < (int)(sizeof cs / sizeof cs[0]); c++) {
        h_rng r = {900 + (uint64_t)c};
        const zmlx_dtype T = cs[c].T;
        const int64_t hd = cs[c].hd, nt = cs[c].nt, K = cs[c].K, N = (int64_t)(cs[c].hq + 2 * cs[c].hkv) * hd;
        const size_t es = zmlx_dtype_size(T), qb = (size_t)(nt * N) * es, cb = (size_t)(cs[c].hkv * CAP * hd) * es;
        const size_t ob = (size_t)(nt * cs[c].hq * hd) * es, xb = (size_t)(nt * K) * es;
        qmat m;
        qmat_make(&r, cs[c].f, 1, 1, N, K, T == ZMLX_F32 ? B : T, &m);
        void *hx = ct_rand(&r, T, nt * K, -1, 1), *hk = ct_rand(&r, T, CAP * cs[c].hkv * hd, -1, 1);
        void *hv = ct_rand(&r, T, CAP * cs[c].hkv * hd, -1, 1);
        void *hqn = ct_rand(&r, T, hd, 0.5f, 1.5f), *hkn = ct_rand(&r, T, hd, 0.5f, 1.5f);
        void *qn = ct_dev(hqn, hd * es), *kn = ct_dev(hkn, hd * es), *xbase = NULL;
        void *x = cs[c].off ? dev_at(hx, xb, 2, &xbase) : ct_dev(hx, xb);
        const int32_t pos0 = 137;
        int32_t *pos = ct_dev(&pos0, sizeof pos0);
        const zmlx_rope_params rp = {.head_dim = (int)hd, .rot_dims = cs[c].rot, .base = 10000.0f,
                                     .traditional = cs[c].rot < hd};
        const zmlx_attn_params ap = {cs[c].hq, cs[c].hkv, (int)hd, (int)hd, CAP, 0.125f, 0, NULL};
        const zmlx_attn_step_params plain = {ap, &rp, cs[c].norms ? qn : NULL, cs[c].norms ? kn : NULL, 1e-6f,
                                             NULL, NULL};
        zmlx_attn_step_params folded = plain;
        folded.proj = &m.w, folded.x = x;
        void *q1 = ct_dev_poison(qb), *k1 = ct_dev(hk, cb), *v1 = ct_dev(hv, cb), *o1 = ct_dev_poison(ob);
        void *q2 = ct_dev_poison(qb), *k2 = ct_dev(hk, cb), *v2 = ct_dev(hv, cb), *o2 = ct_dev_poison(ob);
        CHECK_EQ_INT(zmlx_attention_step(g_ctx, &folded, T, q1, nt, pos, k1, v1, o1), ZMLX_OK);
        const int64_t part[3] = {cs[c].hq * hd, cs[c].hkv * hd, cs[c].hkv * hd};
        char *Q = h_alloc(qb);
        for (int i = 0, r0 = 0; i < 3; r0 += (int)part[i++]) {
            const zmlx_qweight w = weight_rows(&m.w, r0, part[i]);
            void *y = ct_dev_poison((size_t)(nt * part[i]) * es);
            CHECK_EQ_INT(zmlx_gather_qmm(g_ctx, T, x, nt, 0, &w, NULL, 1, y), ZMLX_OK);
            char *Y = ct_host(y, (size_t)(nt * part[i]) * es);
            for (int64_t t = 0; t < nt; t++) memcpy(Q + (t * N + r0) * es, Y + t * part[i] * es, part[i] * es);
            free(Y);
            zmlx_mem_free(g_ctx, y);
        }
        CHECK_EQ_INT(zmlx_mem_upload(g_ctx, q2, Q, qb), ZMLX_OK);
        free(Q);
        CHECK_EQ_INT(zmlx_attention_step(g_ctx, &plain, T, q2, nt, pos, k2, v2, o2), ZMLX_OK);
        CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
        const void *a[] = {q1, k1, v1, o1}, *b[] = {q2, k2, v2, o2};
        const size_t n[] = {qb, cb, cb, ob};
        const char *nm[] = {"qkv", "k cache", "v cache", "out"};
        for (int i = 0; i < 4; i++) {
            void *A = ct_host(a[i], n[i]), *Bh = ct_host(b[i], n[i]);
            CHECKF(memcmp(A, Bh, n[i]) == 0, "case %d: attention_step with proj != q/k/v apart + attention_step (%s)",
                   c, nm[i]);
            free(A); free(Bh);
        }
        if (c == 0) { /* out of range */
            const int32_t bad = CAP;
            CHECK_EQ_INT(zmlx_mem_upload(g_ctx, pos, &bad, sizeof bad), ZMLX_OK);
            void *K0 = ct_host(k1, cb), *V0 = ct_host(v1, cb);
            CHECK_EQ_INT(zmlx_attention_step(g_ctx, &folded, T, q1, nt, pos, k1, v1, o1), ZMLX_OK);
            CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_ERR_RANGE);
            CHECK_EQ_INT(zmlx_ctx_sync(g_ctx), ZMLX_OK);
            void *K1 = ct_host(k1, cb), *V1 = ct_host(v1, cb);
            CHECKF(!memcmp(K0, K1, cb) && !memcmp(V0, V1, cb), "out-of-range position: caches changed");
            free(K0); free(V0); free(K1); free(V1);
        }
        void *dev[] = {qn, kn, cs[c].off ? xbase : x, pos, q1, k1, v1, o1, q2, k2, v2, o2};
        for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) zmlx_mem_free(g_ctx, dev[i]);
        free(hx); free(hk); free(hv); free(hqn); free(hkn);
        qmat_free(&m);
    }
}

int main(void) {
    int skip = ct_open();
    if (skip) return skip;
    /* ZMLX_TEST_QUICK (set under compute-sanitizer): the paths, not every width */
    const int quick = getenv("ZMLX_TEST_QUICK") != NULL;
    RUN(test_paths_bf16);
    if (!quick) RUN(test_affine_formats);
    RUN(test_fp_formats);
    RUN(test_transpose0);
    RUN(test_plain_and_bad_ids);
    RUN(test_embed);
    RUN(test_model_shapes);
    RUN(test_mmv_variants);
    RUN(test_mma_equals_mmv);
    RUN(test_qmm_argmax);
    RUN(test_qkv_step);
    RUN(test_mmv_stream);
    RUN(test_mmv_widths);
    if (!quick) RUN(test_mmv_ranges);
    if (!quick) RUN(test_sort_and_dense_mma);
    zmlx_ctx_free(g_ctx);
    return harness_done();
}
