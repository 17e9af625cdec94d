/*
 * test_cpu_qmm.c — the optimised CPU quantized matmuls (backend "cpu"):
 * gather_qmm (both transposes), gather_qmm_swiglu (every activation) and
 * gather_qmm_combine, on every affine bit width and group size, mxfp4,
 * T ∈ {f32, f16, bf16}, on each forced path: AVX2, and AVX-512 where the
 * CPU has it, each with the integer dots as chosen automatically (bf16/f16),
 * forced for every T, forced off (the f32 dots), and the portable dots.
 *
 * - gather_qmm against an f64 oracle written here (own bit-stream decoder,
 *   own dequantization), tolerance per T;
 * - fused == unfused with memcmp on the same path (swiglu vs 2× gather_qmm +
 *   glu_act; combine vs gather_qmm(x_per_slot) + moe_combine); the fused
 *   combine also against the oracle;
 * - on AVX-512, every output of a case identical to the AVX2 build's (memcmp),
 *   except where the affine integer dots take 512-bit steps (16 lanes of their
 *   own: cpu_qmm_x86.h);
 * - bit-identical outputs for 1, 2 and 3 threads, including the expert-grouped
 *   path for M = 1..64 tokens; each token's row identical to computing that
 *   token alone (the dots decode once for up to 4 tokens; in the AUTO
 *   integer mode a slot sharing its expert runs on the f32 dots, and equals
 *   the token alone with the integer dots off);
 * - the integer dots' stated error: x is quantized per group to int16 with
 *   |error| <= 2^-16·max|x| for one piece, 2^-31·max|x| for two (plus a hair
 *   of f32 rounding), so the oracle tolerance gains 1.01·that·Σ_g max_g|x|·
 *   Σ_{i∈g}|s·q_i| on that path; two pieces held to a tight f32-level bound
 *   on groups of wide dynamic range (one piece fails it); a non-finite x gives
 *   a non-finite output, an all-zero group just its bias; mxfp4 over the whole
 *   E8M0 range (2^-127 included) with a purely relative tolerance.
 * Weights are random codes with random scales/biases (not zmlx_quantize).
 */
#include "harness.h"
#include "zmlx.h"
#include "cpu/cpu_kern.h"

/* ------------------------------------------------------------ helpers */

/* relative tolerance of one rounding to T (one ulp) */
static double rel_T(zmlx_dtype T) { return T == ZMLX_F32 ? 0.0 : T == ZMLX_F16 ? 0x1p-10 : 0x1p-8; }
/* absolute tolerance of that rounding near 0 (f16 subnormals are 2^-24 apart) */
static double abs_T(zmlx_dtype T) { return T == ZMLX_F16 ? 0x1p-24 : 1e-30; }

/* code j of a packed LSB-first row, bit by bit (independent of quant.h) */
static uint32_t t_code(const uint8_t *row, int64_t j, int bits) {
    uint32_t v = 0;
    for (int b = 0; b < bits; b++) {
        int64_t bit = j * bits + b;
        v |= (uint32_t)((row[bit >> 3] >> (bit & 7)) & 1u) << b;
    }
    return v;
}

typedef struct {
    zmlx_qweight q;
    uint8_t *w;
    void *s, *b;
} tweight;

static void tw_make(tweight *t, h_rng *r, zmlx_qmode mode, int bits, int gs, int transpose,
                    int64_t E, int64_t N, int64_t K, zmlx_dtype sdt) {
    memset(t, 0, sizeof *t);
    int64_t rows = transpose ? N : K, cols = transpose ? K : N;
    size_t wb = (size_t)(E * rows * cols * bits / 8), ns = (size_t)(E * rows * cols / gs);
    t->w = h_alloc(wb);
    for (size_t i = 0; i < wb; i++) t->w[i] = (uint8_t)h_next(r);
    if (mode == ZMLX_QMODE_AFFINE) {
        t->s = h_alloc(ns * zmlx_dtype_size(sdt));
        t->b = h_alloc(ns * zmlx_dtype_size(sdt));
        for (size_t i = 0; i < ns; i++) {
            h_set_T(sdt, t->s, (int64_t)i, h_nonzero(r, -0.05f, 0.05f));
            h_set_T(sdt, t->b, (int64_t)i, h_nonzero(r, -0.3f, 0.3f));
        }
    } else {
        t->s = h_alloc(ns);
        for (size_t i = 0; i < ns; i++) ((uint8_t *)t->s)[i] = (uint8_t)(118 + h_int(r, 10));
        sdt = ZMLX_U8;
    }
    t->q = (zmlx_qweight){.mode = mode, .bits = bits, .group_size = gs, .transpose = transpose,
                          .E = E, .N = N, .K = K, .w = t->w, .scales = t->s, .biases = t->b,
                          .scale_dtype = sdt};
}
static void tw_free(tweight *t) {
    free(t->w);
    free(t->s);
    free(t->b);
}

/* f64 value of element (n, k) of expert e's logical N×K matrix; *mag gets
 * |scale·q| + |bias|, the size the kernel's terms can have before they cancel */
static double t_weight_m(const tweight *t, int64_t e, int64_t n, int64_t kk, double *mag) {
    const zmlx_qweight *q = &t->q;
    int64_t rows = q->transpose ? q->N : q->K, cols = q->transpose ? q->K : q->N;
    int64_t r = q->transpose ? n : kk, c = q->transpose ? kk : n;
    const uint8_t *row = t->w + (size_t)((e * rows + r) * cols * q->bits / 8);
    uint32_t code = t_code(row, c, q->bits);
    int64_t si = (e * rows + r) * (cols / q->group_size) + c / q->group_size;
    if (q->mode == ZMLX_QMODE_AFFINE) {
        double sq = h_get_T(q->scale_dtype, t->s, si) * code, b = h_get_T(q->scale_dtype, t->b, si);
        *mag = fabs(sq) + fabs(b);
        return sq + b;
    }
    static const double fp4[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    double v = fp4[code & 7] * ldexp(1.0, ((const uint8_t *)t->s)[si] - 127);
    *mag = v;
    return (code & 8) ? -v : v;
}

/* Σ |scale·q| (affine) or Σ |w| (mxfp4) over the group of (transposed) row
 * n starting at column g0: the weight mass the integer dots' x rounding error
 * multiplies (the affine bias term uses the exact Σx) */
static double t_scaled_sum(const tweight *t, int64_t e, int64_t n, int64_t g0) {
    const zmlx_qweight *q = &t->q;
    const uint8_t *row = t->w + (size_t)((e * q->N + n) * q->K * q->bits / 8);
    double s = q->mode == ZMLX_QMODE_AFFINE
                   ? fabs(h_get_T(q->scale_dtype, t->s,
                                 (e * q->N + n) * (q->K / q->group_size) + g0 / q->group_size))
                   : 0;
    double sum = 0, m;
    for (int64_t kk = g0; kk < g0 + q->group_size; kk++)
        sum += q->mode == ZMLX_QMODE_AFFINE ? s * t_code(row, kk, q->bits)
                                            : fabs(t_weight_m(t, e, n, kk, &m));
    return sum;
}

static zmlx_ctx *ctx_n(int n_threads) {
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = ZMLX_BACKEND_CPU;
    o.n_threads = n_threads;
    zmlx_ctx *c = NULL;
    if (zmlx_ctx_create(&o, &c, NULL, 0) != ZMLX_OK) {
        fprintf(stderr, "cannot create a context\n");
        exit(2);
    }
    return c;
}

static void rand_idx(h_rng *r, int32_t *idx, int64_t n_tok, int k, int64_t E) {
    for (int64_t t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) {
            int32_t e;
            int dup;
            do { /* distinct experts per token, as a router gives */
                e = (int32_t)h_int(r, E);
                dup = 0;
                for (int i = 0; i < j; i++) dup |= idx[t * k + i] == e;
            } while (dup);
            idx[t * k + j] = e;
        }
}

static void *rand_act(h_rng *r, zmlx_dtype T, int64_t n, float lo, float hi) {
    void *p = h_alloc((size_t)n * zmlx_dtype_size(T));
    for (int64_t i = 0; i < n; i++) h_set_T(T, p, i, h_nonzero(r, lo, hi));
    return p;
}

static zmlx_ctx *g_ctx[4]; /* contexts with 1, 2, 3 threads (index = n) */
static cq_isa g_simd;      /* the x86 SIMD build the SIMD tests run on (main loops over them) */

/* force g_simd; 0 when this CPU lacks it */
static int simd_on(void) { return cq_isa_force(g_simd) == g_simd; }

/* ------------------------------------------------------- one full case */

typedef struct {
    zmlx_qmode mode;
    int bits, gs, transpose;
    int64_t E, N, K, n_tok;
    int k, use_idx;
    zmlx_dtype T, sdt;
} qcase;

static const char *case_str(const qcase *c) {
    static char s[160];
    snprintf(s, sizeof s, "%s b%d gs%d t%d E%lld N%lld K%lld M%lld k%d T=%s isa=%d",
             zmlx_qmode_name(c->mode), c->bits, c->gs, c->transpose, (long long)c->E,
             (long long)c->N, (long long)c->K, (long long)c->n_tok, c->k, zmlx_dtype_name(c->T),
             (int)cq_isa_active());
    return s;
}

/* whether W with activations T runs on the integer (int16 x) dots now */
static int uses_xint(const zmlx_qweight *q, zmlx_dtype T) { return cq_xform_int16(cq_pick(q, T)->xform); }
/* the same for the bf16 dots (AVX512_BF16, T = bf16) */
static int uses_xbf16(const zmlx_qweight *q, zmlx_dtype T) { return cq_xform_bf16(cq_pick(q, T)->xform); }

/* whether the active SIMD level computes q's outputs with the bits of the
 * level below: AVX-512 those of AVX2 everywhere but the affine integer dots'
 * 512-bit steps (4-bit gs >= 64, 8-bit), which sum in 16 lanes where AVX2
 * has 8; AVX512_BF16 those of AVX-512 wherever the bf16 dots are not taken */
static int isa_identical(const zmlx_qweight *q, zmlx_dtype T) {
    const int zsteps = q->mode == ZMLX_QMODE_AFFINE && (q->bits == 8 || (q->bits == 4 && q->group_size >= 64));
    switch (cq_isa_active()) {
    case CQ_ISA_AVX512: return !(zsteps && uses_xint(q, T));
    case CQ_ISA_AVX512_BF16: return !uses_xbf16(q, T);
    default: return 0;
    }
}

/* the stated x error of the path now, relative to a group's max |x|: 0 for
 * the f32 and bf16 dots, 2^-16 for one int16 piece, 2^-31 for two */
static double xint_err(const zmlx_qweight *q, zmlx_dtype T) {
    return !uses_xint(q, T) ? 0.0 : cq_pick(q, T)->pieces == 2 ? 0x1p-31 : 0x1p-16;
}

/* y [n_tok, k, N] against the oracle; x rows per slot or per token */
static int check_qmm(const qcase *c, const tweight *tw, const void *x, int x_per_slot,
                     const int32_t *idx, const void *y) {
    int bad = 0;
    const double xerr = xint_err(&tw->q, c->T);
    for (int64_t t = 0; t < c->n_tok; t++)
        for (int j = 0; j < c->k; j++) {
            int64_t slot = t * c->k + j, e = idx ? idx[slot] : 0, xr = x_per_slot ? slot : t;
            for (int64_t n = 0; n < c->N; n++) {
                double acc = 0, asum = 0, xq = 0;
                for (int64_t g0 = 0; g0 < c->K; g0 += c->gs) {
                    double gmax = 0;
                    for (int64_t kk = g0; kk < g0 + c->gs && kk < c->K; kk++) {
                        double m, xv = h_get_T(c->T, x, xr * c->K + kk);
                        acc += xv * t_weight_m(tw, e, n, kk, &m);
                        asum += fabs(xv) * m;
                        gmax = fmax(gmax, fabs(xv));
                    }
                    if (xerr > 0) xq += gmax * t_scaled_sum(tw, e, n, g0);
                }
                double got = h_get_T(c->T, y, slot * c->N + n);
                double tol = rel_T(c->T) * fabs(acc) + 1e-5 * asum + abs_T(c->T) +
                             1.01 * xerr * xq;
                if (!(fabs(got - acc) <= tol)) {
                    if (!bad)
                        fprintf(stderr, "  %s slot %lld n %lld: got %.9g want %.9g (tol %.3g)\n",
                                case_str(c), (long long)slot, (long long)n, got, acc, tol);
                    bad++;
                }
            }
        }
    return bad;
}

static void run_case(h_rng *r, const qcase *c) {
    const size_t ts = zmlx_dtype_size(c->T);
    const int64_t slots = c->n_tok * c->k;
    tweight wg, wu, wd;
    tw_make(&wg, r, c->mode, c->bits, c->gs, c->transpose, c->E, c->N, c->K, c->sdt);
    tw_make(&wu, r, c->mode, c->bits, c->gs, c->transpose, c->E, c->N, c->K, c->sdt);
    /* down projection: D outputs from I inputs; the quantized one of the two
       (I for transpose = 1, D for 0) spans two groups, the other is odd */
    const int64_t D = c->transpose ? 9 : 2 * c->gs, I = c->transpose ? 2 * c->gs : 5;
    tw_make(&wd, r, c->mode, c->bits, c->gs, c->transpose, c->E, D, I, c->sdt);
    int32_t *idx = NULL;
    if (c->use_idx) {
        idx = h_alloc((size_t)slots * 4);
        rand_idx(r, idx, c->n_tok, c->k, c->E);
    }
    void *x = rand_act(r, c->T, c->n_tok * c->K, -1.0f, 1.0f);
    void *xs = rand_act(r, c->T, slots * c->K, -1.0f, 1.0f); /* per-slot rows */
    float *cw = h_alloc((size_t)slots * 4);
    for (int64_t i = 0; i < slots; i++) cw[i] = h_nonzero(r, 0.0f, 1.0f);
    size_t ny = (size_t)slots * (size_t)c->N * ts, nyd = (size_t)slots * (size_t)D * ts;
    void *yg = h_alloc(ny), *yu = h_alloc(ny), *h1 = h_alloc(ny), *h2 = h_alloc(ny);
    void *ysl = h_alloc(ny), *yd = h_alloc(nyd);
    size_t no = (size_t)c->n_tok * (size_t)D * ts;
    void *o1 = h_alloc(no), *o2 = h_alloc(no), *o3 = h_alloc(no);
    void *hin = rand_act(r, c->T, slots * I, -2.0f, 2.0f); /* h for the down projection */
    zmlx_ctx *ctx = g_ctx[2];

    /* gather_qmm, x per token and per slot, against the oracle */
    h_poison(yg, ny);
    CHECK(zmlx_gather_qmm(ctx, c->T, x, c->n_tok, 0, &wg.q, idx, c->k, yg) == ZMLX_OK);
    CHECKF(check_qmm(c, &wg, x, 0, idx, yg) == 0, "%s", case_str(c));
    h_poison(ysl, ny);
    CHECK(zmlx_gather_qmm(ctx, c->T, xs, c->n_tok, 1, &wg.q, idx, c->k, ysl) == ZMLX_OK);
    CHECKF(check_qmm(c, &wg, xs, 1, idx, ysl) == 0, "%s (x per slot)", case_str(c));

    /* swiglu fused == unfused, every activation */
    h_poison(yu, ny);
    CHECK(zmlx_gather_qmm(ctx, c->T, x, c->n_tok, 0, &wu.q, idx, c->k, yu) == ZMLX_OK);
    for (int act = 0; act < ZMLX_ACT_COUNT_; act++) {
        h_poison(h1, ny);
        h_poison(h2, ny);
        CHECK(zmlx_gather_qmm_swiglu(ctx, c->T, x, c->n_tok, &wg.q, &wu.q, idx, c->k,
                                     (zmlx_act)act, h1) == ZMLX_OK);
        CHECK(zmlx_glu_act(ctx, c->T, (zmlx_act)act, yg, yu, slots * c->N, h2) == ZMLX_OK);
        CHECKF(memcmp(h1, h2, ny) == 0, "%s act %d: fused swiglu != unfused", case_str(c), act);
    }

    /* combine fused == unfused, and against the oracle */
    qcase cd = *c;
    cd.N = D;
    cd.K = I;
    h_poison(yd, nyd);
    CHECK(zmlx_gather_qmm(ctx, c->T, hin, c->n_tok, 1, &wd.q, idx, c->k, yd) == ZMLX_OK);
    CHECKF(check_qmm(&cd, &wd, hin, 1, idx, yd) == 0, "%s (down)", case_str(&cd));
    h_poison(o1, no);
    h_poison(o2, no);
    CHECK(zmlx_gather_qmm_combine(ctx, c->T, hin, c->n_tok, &wd.q, idx, c->k, cw, o1) == ZMLX_OK);
    CHECK(zmlx_moe_combine(ctx, c->T, yd, cw, c->n_tok, c->k, D, o2) == ZMLX_OK);
    CHECKF(memcmp(o1, o2, no) == 0, "%s: fused combine != unfused", case_str(c));
    int bad = 0;
    const double dxerr = xint_err(&wd.q, c->T);
    for (int64_t t = 0; t < c->n_tok && !bad; t++)
        for (int64_t d = 0; d < D; d++) {
            double acc = 0, asum = 0;
            for (int j = 0; j < c->k; j++) {
                int64_t slot = t * c->k + j, e = idx ? idx[slot] : 0;
                double y = 0, ya = 0, xq = 0, gmax = 0;
                for (int64_t n = 0; n < I; n++) {
                    double m, hv = h_get_T(c->T, hin, slot * I + n);
                    y += hv * t_weight_m(&wd, e, d, n, &m);
                    ya += fabs(hv) * m;
                    gmax = fmax(gmax, fabs(hv));
                    if ((n + 1) % c->gs == 0) { /* group end (I is whole groups when transposed) */
                        if (dxerr > 0) xq += gmax * t_scaled_sum(&wd, e, d, n + 1 - c->gs);
                        gmax = 0;
                    }
                }
                acc += cw[slot] * y;
                asum += cw[slot] * (fabs(y) * 2 * rel_T(c->T) + 1e-5 * ya + 1.01 * dxerr * xq);
            }
            double got = h_get_T(c->T, o1, t * D + d);
            if (!(fabs(got - acc) <= rel_T(c->T) * fabs(acc) + asum + abs_T(c->T))) bad++;
        }
    CHECKF(bad == 0, "%s: fused combine vs oracle (%d bad)", case_str(c), bad);

    /* the same results with 1 and 3 threads */
    for (int nt = 1; nt <= 3; nt += 2) {
        h_poison(h2, ny);
        CHECK(zmlx_gather_qmm_swiglu(g_ctx[nt], c->T, x, c->n_tok, &wg.q, &wu.q, idx, c->k,
                                     ZMLX_ACT_SWIGLU_OAI, h2) == ZMLX_OK);
        CHECK(zmlx_gather_qmm_swiglu(ctx, c->T, x, c->n_tok, &wg.q, &wu.q, idx, c->k,
                                     ZMLX_ACT_SWIGLU_OAI, h1) == ZMLX_OK);
        CHECKF(memcmp(h1, h2, ny) == 0, "%s: swiglu differs with %d threads", case_str(c), nt);
        h_poison(o3, no);
        CHECK(zmlx_gather_qmm_combine(g_ctx[nt], c->T, hin, c->n_tok, &wd.q, idx, c->k, cw, o3) ==
              ZMLX_OK);
        CHECKF(memcmp(o1, o3, no) == 0, "%s: combine differs with %d threads", case_str(c), nt);
    }

    /* the bits of the SIMD level below (h1: SwiGLU-OAI, o1: the combine, both
       with 2 threads) where the kernels sum alike */
    const cq_isa isa = cq_isa_active(), below = (cq_isa)(isa - 1);
    if (isa >= CQ_ISA_AVX512 && isa_identical(&wg.q, c->T)) {
        CHECK(cq_isa_force(below) == below);
        h_poison(h2, ny);
        CHECK(zmlx_gather_qmm(ctx, c->T, x, c->n_tok, 0, &wg.q, idx, c->k, h2) == ZMLX_OK);
        CHECKF(memcmp(yg, h2, ny) == 0, "%s: gather_qmm differs on %s", case_str(c), cq_isa_name(below));
        h_poison(h2, ny);
        CHECK(zmlx_gather_qmm_swiglu(ctx, c->T, x, c->n_tok, &wg.q, &wu.q, idx, c->k,
                                     ZMLX_ACT_SWIGLU_OAI, h2) == ZMLX_OK);
        CHECKF(memcmp(h1, h2, ny) == 0, "%s: swiglu differs on %s", case_str(c), cq_isa_name(below));
        h_poison(o3, no);
        CHECK(zmlx_gather_qmm_combine(ctx, c->T, hin, c->n_tok, &wd.q, idx, c->k, cw, o3) == ZMLX_OK);
        CHECKF(memcmp(o1, o3, no) == 0, "%s: combine differs on %s", case_str(c), cq_isa_name(below));
        cq_isa_force(isa);
    }

    free(idx); free(x); free(xs); free(cw); free(yg); free(yu); free(h1); free(h2);
    free(ysl); free(yd); free(o1); free(o2); free(o3); free(hin);
    tw_free(&wg); tw_free(&wu); tw_free(&wd);
}

/* --------------------------------------------------------------- tests */

static const zmlx_dtype Ts[3] = {ZMLX_F32, ZMLX_F16, ZMLX_BF16};

/* every format × dtype × transpose on small odd shapes: N = 1 and 7, K = one
 * group and a few groups, k = 1 and k = E, plain qmm (idx NULL) */
static void formats_on_current_isa(uint64_t seed) {
    h_rng r = {seed};
    static const int bitsv[6] = {2, 3, 4, 5, 6, 8}, gsv[3] = {32, 64, 128};
    for (int ti = 0; ti < 3; ti++)
        for (int tr = 0; tr <= 1; tr++)
            for (int f = 0; f < 19; f++) {
                qcase c = {.mode = ZMLX_QMODE_AFFINE, .transpose = tr, .T = Ts[ti], .sdt = Ts[ti]};
                if (f == 18) {
                    c.mode = ZMLX_QMODE_MXFP4;
                    c.bits = 4;
                    c.gs = 32;
                } else {
                    c.bits = bitsv[f / 3];
                    c.gs = gsv[f % 3];
                }
                if (f % 4 == 1) c.sdt = ZMLX_F32; /* scale dtype other than T */
                int64_t Ks[3] = {c.gs, 3 * c.gs, 256 > c.gs ? 256 : 2 * c.gs};
                for (int v = 0; v < 3; v++) {
                    /* the quantized dimension (K, or N when transpose = 0) spans
                       whole groups; the other is odd or small */
                    int64_t odd = v == 0 ? 7 : v == 1 ? 1 : 12;
                    c.K = tr ? Ks[v] : odd;
                    c.N = tr ? odd : Ks[v];
                    c.E = v == 2 ? 1 : 5;
                    c.use_idx = v != 2;
                    c.k = v == 0 ? 1 : v == 1 ? (int)c.E : 1;
                    c.n_tok = v == 0 ? 3 : v == 1 ? 2 : 4;
                    run_case(&r, &c);
                }
            }
}

/* by default (no ZMLX_CPU_INT_DOT) the integer dots run with two pieces;
 * the first test to touch the settings */
static void test_env_defaults(void) {
    const char *env = getenv("ZMLX_CPU_INT_DOT");
    cq_xint prev = cq_xint_force(CQ_XINT_AUTO);
    CHECK(prev == ((env && strcmp(env, "0") == 0) ? CQ_XINT_OFF : CQ_XINT_AUTO));
    CHECK(cq_xpieces_force(2) == ((env && strcmp(env, "1") == 0) ? 1 : 2));
    printf("  CPU kernels: best ISA %s\n", cq_isa_name(cq_isa_active()));
}

static void test_formats_simd(void) {
    if (!simd_on()) return;
    /* AUTO takes the integer dots for bf16/f16 and the f32 dots for f32; on
       AVX512_BF16 the bf16 dots for T = bf16 (4-bit and mxfp4 with K % 64 ==
       0); OFF the f32 dots for every T */
    const int bf = cq_isa_active() == CQ_ISA_AVX512_BF16;
    tweight t;
    h_rng r = {5};
    tw_make(&t, &r, ZMLX_QMODE_AFFINE, 4, 64, 1, 1, 1, 128, ZMLX_BF16);
    CHECK(uses_xint(&t.q, ZMLX_F16) && !uses_xint(&t.q, ZMLX_F32));
    CHECK(uses_xbf16(&t.q, ZMLX_BF16) == bf);
    CHECK(uses_xint(&t.q, ZMLX_BF16) == !bf && xint_err(&t.q, ZMLX_BF16) == (bf ? 0 : 0x1p-31));
    CHECK(!uses_xbf16(&t.q, ZMLX_F16) && !uses_xbf16(&t.q, ZMLX_F32));
    cq_xint_force(CQ_XINT_OFF);
    CHECK(cq_pick(&t.q, ZMLX_F16) == cq_pick(&t.q, ZMLX_F32) && !uses_xint(&t.q, ZMLX_F16));
    cq_xint_force(CQ_XINT_AUTO);
    tw_free(&t);
    tw_make(&t, &r, ZMLX_QMODE_AFFINE, 8, 32, 1, 1, 1, 64, ZMLX_F16);
    /* 8-bit: no bf16 dots */
    CHECK(uses_xint(&t.q, ZMLX_F16) && uses_xint(&t.q, ZMLX_BF16) && !uses_xint(&t.q, ZMLX_F32));
    tw_free(&t);
    tw_make(&t, &r, ZMLX_QMODE_MXFP4, 4, 32, 1, 1, 1, 128, ZMLX_U8);
    CHECK(uses_xint(&t.q, ZMLX_F16) && !uses_xint(&t.q, ZMLX_F32));
    CHECK(uses_xbf16(&t.q, ZMLX_BF16) == bf);
    tw_free(&t);
    /* mxfp4 with K % 64 != 0 has neither f32 nor bf16 dots: the integer ones
       for bf16/f16, the portable ones for f32 */
    tw_make(&t, &r, ZMLX_QMODE_MXFP4, 4, 32, 1, 1, 1, 96, ZMLX_U8);
    CHECK(uses_xint(&t.q, ZMLX_F16) && uses_xint(&t.q, ZMLX_BF16) && !uses_xint(&t.q, ZMLX_F32));
    tw_free(&t);
    /* affine 2/3/5/6-bit: integer dots for bf16/f16, f32 dots (x in natural
       order) for f32, never the portable ones */
    for (int b = 2; b <= 6; b++) {
        if (b == 4) continue;
        tw_make(&t, &r, ZMLX_QMODE_AFFINE, b, 32 << (b % 3), 1, 1, 1, 256, ZMLX_BF16);
        cq_isa_force(CQ_ISA_SCALAR);
        const cq_kernel *kp = cq_pick(&t.q, ZMLX_F32);
        cq_isa_force(g_simd);
        CHECK(uses_xint(&t.q, ZMLX_BF16) && uses_xint(&t.q, ZMLX_F16) && !uses_xint(&t.q, ZMLX_F32));
        CHECK(cq_pick(&t.q, ZMLX_F32) != kp && cq_pick(&t.q, ZMLX_F32)->xform == CQ_X_F32);
        tw_free(&t);
    }
    formats_on_current_isa(11);
}

/* the integer dots for every T, with one piece and with two */
static void test_formats_simd_xint_all(void) {
    if (!simd_on()) return;
    cq_xint_force(CQ_XINT_ALL);
    for (int p = 1; p <= 2; p++) {
        cq_xpieces_force(p);
        formats_on_current_isa(13 + 2 * p);
    }
    cq_xint_force(CQ_XINT_AUTO);
}

static void test_formats_simd_xint_off(void) {
    if (!simd_on()) return;
    cq_xint_force(CQ_XINT_OFF);
    formats_on_current_isa(14);
    cq_xint_force(CQ_XINT_AUTO);
}

static void test_formats_portable(void) {
    CHECK(cq_isa_force(CQ_ISA_SCALAR) == CQ_ISA_SCALAR);
    formats_on_current_isa(12);
    cq_isa_force(g_simd);
}

/* the expert-grouped path: M = 1..64 tokens over E = 8 experts (k = 2), MoE
 * shapes of the kernels that matter most (4- and 8-bit, mxfp4) */
static void test_grouped_tokens(void) {
    h_rng r = {21};
    static const int Ms[8] = {1, 2, 5, 8, 13, 32, 33, 64};
    for (int f = 0; f < 3; f++)
        for (int mi = 0; mi < 8; mi++) {
            qcase c = {.mode = f == 2 ? ZMLX_QMODE_MXFP4 : ZMLX_QMODE_AFFINE,
                       .bits = f == 1 ? 8 : 4, .gs = f == 2 ? 32 : 64, .transpose = 1,
                       .E = 8, .N = 20, .K = 128, .n_tok = Ms[mi], .k = 2, .use_idx = 1,
                       .T = Ts[mi % 3], .sdt = Ts[mi % 3]};
            run_case(&r, &c);
        }
}

/* Each token's rows of an M-token gather_qmm equal that token computed alone
 * (memcmp), on the formats with AVX2 kernels and on every forced path: the
 * expert-grouped path hands up to 4 slots of one expert to one dot call, and
 * every run of a call takes the same kernel (cq_pick), whether or not its
 * expert has other slots in the call. */
static void token_alone_on_current(h_rng *r) {
    static const int fmt[7][3] = {{4, 64, 0}, {4, 32, 0}, {4, 128, 0}, {8, 64, 0}, {4, 32, 1}, {3, 64, 0}, {6, 32, 0}};
    for (int f = 0; f < 7; f++)
        for (int v = 0; v < 3; v++) {
            const zmlx_dtype T = Ts[(f + v) % 3];
            /* v = 0: 7 tokens over 6 experts (1..4 slots per expert); v = 1: every
               token to the same 3 experts (7 slots each); v = 2: x per slot */
            const int64_t E = v == 1 ? 3 : 6, N = 9, K = 2 * fmt[f][1] * (v + 1), M = 7;
            const int k = 3, xps = v == 2;
            tweight tw;
            tw_make(&tw, r, fmt[f][2] ? ZMLX_QMODE_MXFP4 : ZMLX_QMODE_AFFINE, fmt[f][0], fmt[f][1], 1,
                    E, N, K, T);
            int32_t *idx = h_alloc((size_t)(M * k) * 4);
            rand_idx(r, idx, M, k, E);
            const size_t ts = zmlx_dtype_size(T), rowb = (size_t)(k * N) * ts;
            void *x = rand_act(r, T, (xps ? M * k : M) * K, -3.0f, 3.0f);
            void *y = h_alloc((size_t)M * rowb), *y1 = h_alloc(rowb);
            h_poison(y, (size_t)M * rowb);
            CHECK(zmlx_gather_qmm(g_ctx[2], T, x, M, xps, &tw.q, idx, k, y) == ZMLX_OK);
            for (int64_t t = 0; t < M; t++) {
                const void *xt = (const char *)x + (size_t)(t * (xps ? k : 1) * K) * ts;
                h_poison(y1, rowb);
                CHECK(zmlx_gather_qmm(g_ctx[1], T, xt, 1, xps, &tw.q, idx + t * k, k, y1) == ZMLX_OK);
                CHECKF(memcmp(y1, (char *)y + (size_t)t * rowb, rowb) == 0,
                       "bits %d gs %d mx %d v %d T %s isa %d xint %d: token %lld alone differs", fmt[f][0],
                       fmt[f][1], fmt[f][2], v, zmlx_dtype_name(T), (int)cq_isa_active(), (int)cq_xint_mode(),
                       (long long)t);
            }
            free(idx); free(x); free(y); free(y1);
            tw_free(&tw);
        }
}

static void test_token_alone(void) {
    h_rng r = {41};
    static const cq_xint modes[3] = {CQ_XINT_AUTO, CQ_XINT_ALL, CQ_XINT_OFF};
    if (simd_on())
        for (int m = 0; m < 5; m++) { /* ALL and AUTO with one piece and with two */
            cq_xint_force(modes[m % 3]);
            cq_xpieces_force(m < 3 ? 2 : 1);
            token_alone_on_current(&r);
        }
    cq_xint_force(CQ_XINT_AUTO);
    cq_xpieces_force(2);
    cq_isa_force(CQ_ISA_SCALAR);
    token_alone_on_current(&r);
    cq_isa_force(g_simd);
}

/* Integer dots (and the bf16 dots where the CPU has them) on awkward
 * activations: an all-zero group, a group with one huge element among tiny
 * ones, groups of huge, of tiny and of subnormal magnitude (oracle with the
 * stated tolerance); a non-finite element makes its token's outputs
 * non-finite and leaves the other token as computed alone. */
static void test_xint_edges(void) {
    if (!simd_on()) return;
    h_rng r = {51};
    const int nf = cq_isa_active() == CQ_ISA_AVX512_BF16 ? 10 : 8;
    for (int f = 0; f < nf; f++) {
        /* f < 8: the integer dots, forced (AUTO takes the bf16 dots at the
           bf16 level), two pieces then one; f = 8, 9: the bf16 dots (AUTO,
           T = bf16, 4-bit) */
        cq_xint_force(f < 8 ? CQ_XINT_ALL : CQ_XINT_AUTO);
        cq_xpieces_force(f < 4 ? 2 : 1);
        const int bits = f % 4 < 2 ? 4 : 8, gs = f % 2 ? 32 : 64;
        const zmlx_dtype T = f % 2 && f < 8 ? ZMLX_F16 : ZMLX_BF16;
        const int64_t K = 6 * gs, N = 6;
        const float big = T == ZMLX_F16 ? 64.0f : 1e30f, tiny = T == ZMLX_F16 ? 1e-4f : 1e-30f;
        const float sub = T == ZMLX_F16 ? 1e-6f : 1e-39f; /* below T's least normal */
        tweight tw;
        tw_make(&tw, &r, ZMLX_QMODE_AFFINE, bits, gs, 1, 1, N, K, ZMLX_BF16);
        CHECK(f < 8 ? uses_xint(&tw.q, T) : uses_xbf16(&tw.q, T));
        qcase c = {.mode = ZMLX_QMODE_AFFINE, .bits = bits, .gs = gs, .transpose = 1, .E = 1,
                   .N = N, .K = K, .n_tok = 2, .k = 1, .T = T, .sdt = ZMLX_BF16};
        void *x = rand_act(&r, T, 2 * K, -1.0f, 1.0f);
        for (int j = 0; j < gs; j++) {
            h_set_T(T, x, j, 0.0f);                                   /* group 0: zeros   */
            h_set_T(T, x, 2 * gs + j, h_nonzero(&r, -1.0f, 1.0f) * 1e-3f); /* group 2: one big */
            h_set_T(T, x, 3 * gs + j, h_nonzero(&r, -1.0f, 1.0f) * big / 4);   /* huge      */
            h_set_T(T, x, 4 * gs + j, h_nonzero(&r, -1.0f, 1.0f) * tiny);      /* tiny      */
            h_set_T(T, x, 5 * gs + j, h_nonzero(&r, -1.0f, 1.0f) * sub);       /* subnormal */
        }
        h_set_T(T, x, 2 * gs + 5, 900.0f);
        void *y = h_alloc((size_t)(2 * N) * zmlx_dtype_size(T)), *y1 = h_alloc((size_t)N * zmlx_dtype_size(T));
        h_poison(y, (size_t)(2 * N) * zmlx_dtype_size(T));
        CHECK(zmlx_gather_qmm(g_ctx[2], T, x, 2, 0, &tw.q, NULL, 1, y) == ZMLX_OK);
        CHECKF(check_qmm(&c, &tw, x, 0, NULL, y) == 0, "bits %d gs %d: awkward x", bits, gs);
        /* one infinity (or NaN) in token 0 */
        h_set_T(T, x, K / 2 + 3, f % 2 ? NAN : -INFINITY);
        h_poison(y, (size_t)(2 * N) * zmlx_dtype_size(T));
        CHECK(zmlx_gather_qmm(g_ctx[2], T, x, 2, 0, &tw.q, NULL, 1, y) == ZMLX_OK);
        for (int64_t n = 0; n < N; n++) CHECKF(!isfinite(h_get_T(T, y, n)), "n %lld finite", (long long)n);
        h_poison(y1, (size_t)N * zmlx_dtype_size(T));
        CHECK(zmlx_gather_qmm(g_ctx[1], T, (char *)x + (size_t)K * zmlx_dtype_size(T), 1, 0, &tw.q,
                              NULL, 1, y1) == ZMLX_OK);
        CHECK(memcmp(y1, (char *)y + (size_t)N * zmlx_dtype_size(T), (size_t)N * zmlx_dtype_size(T)) == 0);
        free(x); free(y); free(y1);
        tw_free(&tw);
    }
    cq_xpieces_force(2);
    cq_xint_force(CQ_XINT_AUTO);
}

/* The bf16 dots' f32 values, the dot routine called directly (before the
 * rounding to T hides their last bits): within 2^-20 of Σ|x·w| of the f64
 * oracle on x of wide dynamic range, for every format and group size they
 * take, 1-4 tokens per call, in a 4-row block and row by row; and each
 * (row, token) the same bits as that row and token computed alone. */
static void test_bf16_dots_direct(void) {
    if (!simd_on() || cq_isa_active() != CQ_ISA_AVX512_BF16) return;
    h_rng r = {81};
    static const int fmt[4][3] = {{4, 32, 0}, {4, 64, 0}, {4, 128, 0}, {4, 32, 1}};
    enum { NX = 4, N = 7 };
    const int64_t K = 512;
    for (int f = 0; f < 4; f++) {
        const int gs = fmt[f][1];
        const int64_t G = K / gs, E = 2;
        tweight tw;
        tw_make(&tw, &r, fmt[f][2] ? ZMLX_QMODE_MXFP4 : ZMLX_QMODE_AFFINE, fmt[f][0], gs, 1, E, N, K, Ts[f % 3]);
        const cq_kernel *kern = cq_pick(&tw.q, ZMLX_BF16);
        CHECKF(cq_xform_bf16(kern->xform), "format %d: no bf16 dots", f);

        uint16_t *x = h_alloc((size_t)(NX * K) * 2), *xb = h_alloc((size_t)(NX * K) * 2);
        float *xs = h_alloc((size_t)(NX * cq_gpad(G)) * 4);
        memset(xs, 0, (size_t)(NX * cq_gpad(G)) * 4);
        cq_xrow xr[NX];
        for (int t = 0; t < NX; t++) {
            for (int64_t i = 0; i < K; i++)
                h_set_T(ZMLX_BF16, x, t * K + i,
                        h_nonzero(&r, -1.0f, 1.0f) * (i % 16 == 3 ? 1.0f : ldexpf(1.0f, -(int)h_int(&r, 21))));
            cq_prep_x(kern, ZMLX_BF16, x + t * K, K, gs, xb + t * K, NULL, xs + t * cq_gpad(G));
            xr[t] = (cq_xrow){xb + t * K, NULL, xs + t * cq_gpad(G)};
        }
        int over = 0, moved = 0;
        for (int64_t e = 0; e < E; e++)
            for (int nx = 1; nx <= NX; nx++)
                for (int64_t r0 = 0; r0 < N; r0 += 4) {
                    const int nr = N - r0 < 4 ? (int)(N - r0) : 4;
                    float out[NX * 4], one;
                    kern->dot(&tw.q, e, r0, nr, xr, nx, out);
                    for (int t = 0; t < nx; t++)
                        for (int i = 0; i < nr; i++) {
                            double acc = 0, asum = 0, m;
                            for (int64_t kk = 0; kk < K; kk++) {
                                const double w = t_weight_m(&tw, e, r0 + i, kk, &m);
                                const double xv = h_get_T(ZMLX_BF16, x, t * K + kk);
                                acc += xv * w;

                                asum += fabs(xv) * m;
                            }
                            const float got = out[t * nr + i];
                            over += !(fabs(got - acc) <= 0x1p-20 * asum);
                            kern->dot(&tw.q, e, r0 + i, 1, &xr[t], 1, &one);
                            moved += memcmp(&got, &one, sizeof one) != 0;
                        }
                }
        CHECKF(over == 0, "format %d: %d values past 2^-20 of sum |x*w|", f, over);
        CHECKF(moved == 0, "format %d: %d values differ from their row and token alone", f, moved);
        free(x); free(xb); free(xs);
        tw_free(&tw);
    }
}

/* mxfp4 integer dots over the E8M0 range: row n has scale byte {0 (2^-127,
 * subnormal), 1, 127, 230}[n] on every group ({110, 118, 127, 135} for f16
 * outputs), so each output is homogeneous and is checked with a purely
 * relative tolerance (no absolute floor). */
static void test_xint_mx_scales(void) {
    if (!simd_on()) return;
    h_rng r = {61};
    static const uint8_t sbw[4] = {0, 1, 127, 230}, sbh[4] = {110, 118, 127, 135};
    for (int ti = 0; ti < 6; ti++) { /* each T with two pieces, then one */
        const zmlx_dtype T = Ts[ti % 3];
        cq_xpieces_force(ti < 3 ? 2 : 1);
        const uint8_t *sb = T == ZMLX_F16 ? sbh : sbw;
        const int64_t N = 4, K = 96;
        cq_xint_force(CQ_XINT_ALL);
        tweight tw;
        tw_make(&tw, &r, ZMLX_QMODE_MXFP4, 4, 32, 1, 1, N, K, ZMLX_U8);
        CHECK(uses_xint(&tw.q, T));
        for (int64_t n = 0; n < N; n++)
            for (int64_t g = 0; g < K / 32; g++) ((uint8_t *)tw.s)[n * (K / 32) + g] = sb[n];
        void *x = rand_act(&r, T, K, -1.0f, 1.0f), *y = h_alloc((size_t)N * zmlx_dtype_size(T));
        h_poison(y, (size_t)N * zmlx_dtype_size(T));
        CHECK(zmlx_gather_qmm(g_ctx[2], T, x, 1, 0, &tw.q, NULL, 1, y) == ZMLX_OK);
        for (int64_t n = 0; n < N; n++) {
            double acc = 0, asum = 0, xq = 0, m;
            for (int64_t g0 = 0; g0 < K; g0 += 32) {
                double gmax = 0;
                for (int64_t kk = g0; kk < g0 + 32; kk++) {
                    double xv = h_get_T(T, x, kk), w = t_weight_m(&tw, 0, n, kk, &m);
                    acc += xv * w;
                    asum += fabs(xv * w);
                    gmax = fmax(gmax, fabs(xv));
                }
                xq += gmax * t_scaled_sum(&tw, 0, n, g0);
            }
            double got = h_get_T(T, y, n);
            double tol = rel_T(T) * fabs(acc) + 1e-6 * asum + 1.01 * xint_err(&tw.q, T) * xq;
            CHECKF(fabs(got - acc) <= tol, "T %s scale byte %d: got %.9g want %.9g (tol %.3g)",
                   zmlx_dtype_name(T), sb[n], got, acc, tol);
        }
        free(x); free(y);
        tw_free(&tw);
        cq_xint_force(CQ_XINT_AUTO);
    }
    cq_xpieces_force(2);
}

/* Two pieces hold x to ~2^-31 of a group's max: on groups of wide dynamic
 * range (a few elements near 1, the rest spread down to 2^-20) the f32
 * outputs stay within an f32-level bound of the oracle, 2^-20 of Σ|x·w|;
 * one piece (error up to 2^-16 of the max) must break that bound somewhere,
 * or this test could not tell the two apart. Affine 4/8-bit and mxfp4. */
static void test_xint_two_pieces(void) {
    if (!simd_on()) return;
    h_rng r = {71};
    cq_xint_force(CQ_XINT_ALL); /* T = f32: the output is not rounded to 16 bits */
    for (int f = 0; f < 3; f++) {
        const int bits = f == 1 ? 8 : 4, gs = f == 2 ? 32 : 64;
        const int64_t K = 8 * gs, N = 9;
        tweight tw;
        tw_make(&tw, &r, f == 2 ? ZMLX_QMODE_MXFP4 : ZMLX_QMODE_AFFINE, bits, gs, 1, 1, N, K, ZMLX_BF16);
        float *x = h_alloc((size_t)K * 4), *y = h_alloc((size_t)N * 4);
        for (int64_t i = 0; i < K; i++)
            x[i] = i % 16 == 3 ? h_nonzero(&r, -1.0f, 1.0f) : h_nonzero(&r, -1.0f, 1.0f) * ldexpf(1.0f, -h_int(&r, 21));
        int over[3] = {0, 0, 0}; /* outputs past the bound, by piece count */
        for (int p = 1; p <= 2; p++) {
            cq_xpieces_force(p);
            CHECK(uses_xint(&tw.q, ZMLX_F32) && cq_pick(&tw.q, ZMLX_F32)->pieces == p);
            h_poison(y, (size_t)N * 4);
            CHECK(zmlx_gather_qmm(g_ctx[2], ZMLX_F32, x, 1, 0, &tw.q, NULL, 1, y) == ZMLX_OK);
            for (int64_t n = 0; n < N; n++) {
                double acc = 0, asum = 0, m;
                for (int64_t kk = 0; kk < K; kk++) {
                    double w = t_weight_m(&tw, 0, n, kk, &m);
                    acc += (double)x[kk] * w;
                    asum += fabs((double)x[kk]) * m;
                }
                over[p] += !(fabs(y[n] - acc) <= 0x1p-20 * asum);
            }
        }
        CHECKF(over[2] == 0, "format %d: two pieces, %d of %lld outputs past 2^-20 of sum |x*w|", f, over[2], (long long)N);
        CHECKF(over[1] > 0, "format %d: one piece stayed within the two-piece bound (the test cannot tell them apart)", f);
        free(x); free(y);
        tw_free(&tw);
    }
    cq_xpieces_force(2);
    cq_xint_force(CQ_XINT_AUTO);
}

/* a wider plain qmm where rows split over threads in several blocks */
static void test_threads_wide(void) {
    h_rng r = {31};
    qcase c = {.mode = ZMLX_QMODE_AFFINE, .bits = 4, .gs = 64, .transpose = 1, .E = 4, .N = 150,
               .K = 512, .n_tok = 1, .k = 4, .use_idx = 1, .T = ZMLX_BF16, .sdt = ZMLX_BF16};
    run_case(&r, &c);
    c.transpose = 0;
    c.bits = 8;
    c.N = 512;
    c.K = 150;
    run_case(&r, &c);
}

int main(void) {
    for (int n = 1; n <= 3; n++) g_ctx[n] = ctx_n(n);
    RUN(test_env_defaults);
    /* the SIMD tests on each x86 build this CPU can run (the grouped and
       threaded cases too: the AVX-512 build is compared with AVX2 in every
       case); the portable dots once */
    for (g_simd = CQ_ISA_AVX2; g_simd <= CQ_ISA_AVX512_BF16; g_simd++) {
        if (!simd_on()) {
            printf("  skip the %s tests: this CPU (or ZMLX_CPU_ISA) rules it out\n", cq_isa_name(g_simd));
            continue;
        }
        RUN(test_formats_simd);
        RUN(test_formats_simd_xint_all);
        RUN(test_formats_simd_xint_off);
        RUN(test_token_alone);
        RUN(test_xint_edges);
        RUN(test_xint_mx_scales);
        RUN(test_xint_two_pieces);
        RUN(test_bf16_dots_direct);

        RUN(test_grouped_tokens);
        RUN(test_threads_wide);
    }
    g_simd = cq_isa_force(CQ_ISA_AVX512_BF16); /* the best there is, restored after the portable run */
    RUN(test_formats_portable);
    for (int n = 1; n <= 3; n++) zmlx_ctx_free(g_ctx[n]);
    return harness_done();
}
