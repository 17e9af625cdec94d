/*
 * cpu_qmm.c — the optimised CPU quantized matmuls: gather_qmm (both
 * transposes), gather_qmm_swiglu and gather_qmm_combine, their run-time
 * kernel choice (AVX-512 or AVX2 where a kernel exists, else the portable
 * dots below), and the thread split.
 *
 * Shape of the work: slots (token t, choice j) are grouped by expert, and a
 * task is (expert, block of output rows): it streams that block of the
 * expert's weights once and computes it for every slot routed there, so at
 * M = 1 the k experts' rows are spread over the threads and at larger M each
 * expert's weights are read once for all its tokens (handed to the dot
 * routine up to CQ_MAXT slots at a time, so it can unpack each code vector
 * once for all of them). Each output element is computed by exactly one task
 * with a fixed order that depends neither on the thread count nor on which
 * slots share a dot call, and the three ops share the kernel's dot routine.
 *
 * Activation rows are prepared once per call (cq_prep_x): f32 in the lane
 * order of the f32 kernels, or int16 per group with an f32 scale for the
 * integer dots (numerics: cpu_qmm_x86.h), plus Σx per group for the affine
 * bias term.
 */
#include "cpu/cpu_kern.h"
#include "cpu/ref.h"

#include <float.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ ISA */

static int isa_forced = -1;
/* Integer dots with two int16 pieces per activation by default: one piece
 * moves outputs by ~2^-16 of a group's max, about 100x more than the f32
 * kernels' reordering, and on real routers (logits rounded to bf16, so near
 * ties are common) that flipped expert choices measurably more often than the
 * f32 path; two pieces bring the x error below the f32 kernels' (src/cpu/
 * NOTES.md). ZMLX_CPU_INT_DOT=1: one piece (fast, on request); =0: the f32
 * kernels. -1: not read from the environment yet. */
static _Atomic int xint_mode = -1, xpieces = -1;

static void xint_from_env(void) {
    const char *e = getenv("ZMLX_CPU_INT_DOT");
    const int off = e && strcmp(e, "0") == 0, one = e && strcmp(e, "1") == 0;
    if (xint_mode < 0) xint_mode = off ? CQ_XINT_OFF : CQ_XINT_AUTO;
    if (xpieces < 0) xpieces = one ? 1 : 2;
}

cq_xint cq_xint_force(cq_xint mode) {
    cq_xint old = cq_xint_mode();
    xint_mode = (int)mode;
    return old;
}

cq_xint cq_xint_mode(void) {
    if (xint_mode < 0) xint_from_env();
    return (cq_xint)xint_mode;
}

int cq_xpieces_force(int pieces) {
    int old = cq_xpieces();
    xpieces = pieces == 1 ? 1 : 2;
    return old;
}

int cq_xpieces(void) {
    if (xpieces < 0) xint_from_env();
    return xpieces;
}

/* AVX2 + FMA + F16C + BMI2 with the YMM state saved by the OS, AVX-512
 * F/DQ/BW/VL/VNNI with the opmask and ZMM states saved too, then BF16. Read with
 * cpuid/xgetbv (clang's __builtin_cpu_supports knows no "f16c"), once: cpuid
 * traps to the hypervisor in a VM, so it must not run per call. */
static cq_isa isa_probe(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return CQ_ISA_SCALAR;
    const unsigned fma = 1u << 12, osxsave = 1u << 27, avx = 1u << 28, f16c = 1u << 29;
    if ((c & (fma | osxsave | avx | f16c)) != (fma | osxsave | avx | f16c)) return CQ_ISA_SCALAR;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 6u) != 6u) return CQ_ISA_SCALAR; /* XMM and YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CQ_ISA_SCALAR;
    const unsigned avx2 = 1u << 5, bmi2 = 1u << 8;
    if ((b & (avx2 | bmi2)) != (avx2 | bmi2)) return CQ_ISA_SCALAR;
    const unsigned f = 1u << 16, dq = 1u << 17, bw = 1u << 30, vl = 1u << 31, vnni = 1u << 11;
    const int zmm_state = (xcr0_lo & 0xE0u) == 0xE0u; /* opmask, ZMM 0-15 upper halves, ZMM 16-31 */
    if (!zmm_state || (b & (f | dq | bw | vl)) != (f | dq | bw | vl) || !(c & vnni)) return CQ_ISA_AVX2;
    const unsigned bf16 = 1u << 5; /* leaf 7 subleaf 1, eax */
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & bf16)) return CQ_ISA_AVX512_BF16;
    return CQ_ISA_AVX512;
#else
    return CQ_ISA_SCALAR;
#endif
}

const char *cq_isa_name(cq_isa isa) {
    static const char *const names[] = {"scalar", "avx2", "avx512", "avx512bf16"};
    return (unsigned)isa < 4 ? names[isa] : "?";
}

/* Whether the CPU is AMD's (cpuid leaf 0's vendor "AuthenticAMD"). */
static int cpu_is_amd(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d;
    return __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;
#else
    return 0;
#endif
}

/* The ISA used by default and the most cq_isa_force reaches (cq_isa_active),
 * chosen once: racing first calls compute the same values, the limit stored
 * first. An unknown ZMLX_CPU_ISA changes nothing (the environment cannot make
 * a path fail, only slower). */
static _Atomic int isa_default = -1, isa_limit = -1;

static void isa_choose(void) {
    if (isa_default >= 0) return;
    const cq_isa best = isa_probe();
    int def = best == CQ_ISA_AVX512_BF16 && !cpu_is_amd() ? CQ_ISA_AVX512 : (int)best, lim = (int)best;
    const char *e = getenv("ZMLX_CPU_ISA");
    for (int i = CQ_ISA_SCALAR; e && i <= (int)best; i++)
        if (strcmp(e, cq_isa_name((cq_isa)i)) == 0) def = lim = i;
    isa_limit = lim;
    isa_default = def;
}

cq_isa cq_isa_active(void) {
    isa_choose();
    if (isa_forced >= 0) return (cq_isa)(isa_forced < isa_limit ? isa_forced : isa_limit);
    return (cq_isa)isa_default;
}

cq_isa cq_isa_force(cq_isa isa) {
    isa_forced = (int)isa;
    return cq_isa_active();
}

/* ------------------------------------------------------ portable dots */

/* Element value of code q in W's mode, before the group scale/bias. */
static inline float elem_value(const zmlx_qweight *W, uint32_t q) {
    switch (W->mode) {
    case ZMLX_QMODE_AFFINE: return (float)q;
    case ZMLX_QMODE_MXFP8: return zq_e4m3_value(q);
    default: return zq_fp4_value(q);
    }
}

/* transpose = 1: per row, per group d = Σ x·elem (8 partial lanes, then a
 * fixed tree), acc += scale·d; affine adds Σ_g bias_g·xs_g at the end. */
static void dot_t1_portable(const zmlx_qweight *W, int64_t e, int64_t r0, int nr,
                            const cq_xrow *x, int nx, float *out) {
    const int64_t K = W->K;
    const int gs = W->group_size, affine = W->mode == ZMLX_QMODE_AFFINE;
    float wq[ZQ_MAX_GROUP];
    for (int t = 0; t < nx; t++)
        for (int i = 0; i < nr; i++) {
            const float *xf = x[t].x, *xs = x[t].xs;
            const uint8_t *row = zq_row_ptr(W, e, r0 + i);
            int64_t si = zq_scale_index(W, e, r0 + i);
            float acc = 0.0f, bsum = 0.0f;
            for (int64_t g0 = 0, g = 0; g0 < K; g0 += gs, g++) {
                for (int j = 0; j < gs; j++) wq[j] = elem_value(W, zq_code(row, g0 + j, W->bits));
                float l[8] = {0};
                for (int j = 0; j < gs; j += 8)
                    for (int m = 0; m < 8; m++) l[m] = l[m] + wq[j + m] * xf[g0 + j + m];
                float d = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
                zq_group p = zq_group_params(W, si + g);
                acc = acc + p.scale * d;
                if (affine) bsum = bsum + p.bias * xs[g];
            }
            out[t * nr + i] = acc + bsum;
        }
}

/* transpose = 0: output column n = Σ_k (x_k·s_kg)·elem(q_kn) [+ Σ_k x_k·b_kg],
 * accumulated over k in index order for a block of up to 64 columns. */
enum { T0_BLOCK = 64 };
static void dot_t0_one(const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const float *xf,
                       float *out) {
    const int gs = W->group_size, affine = W->mode == ZMLX_QMODE_AFFINE;
    float acc[T0_BLOCK] = {0}, bacc[T0_BLOCK] = {0};
    for (int64_t kk = 0; kk < W->K; kk++) {
        const uint8_t *row = zq_row_ptr(W, e, kk);
        int64_t si = zq_scale_index(W, e, kk);
        float xk = xf[kk];
        for (int a = 0; a < nr;) {
            int64_t n = r0 + a, g = n / gs;
            int b = (int)((g + 1) * gs - r0);
            if (b > nr) b = nr;
            zq_group p = zq_group_params(W, si + g);
            float xsc = xk * p.scale, xb = xk * p.bias;
            for (int i = a; i < b; i++) {
                acc[i] = acc[i] + xsc * elem_value(W, zq_code(row, r0 + i, W->bits));
                if (affine) bacc[i] = bacc[i] + xb;
            }
            a = b;
        }
    }
    for (int i = 0; i < nr; i++) out[i] = acc[i] + bacc[i];
}

static void dot_t0_portable(const zmlx_qweight *W, int64_t e, int64_t r0, int nr,
                            const cq_xrow *x, int nx, float *out) {
    for (int t = 0; t < nx; t++) dot_t0_one(W, e, r0, nr, x[t].x, out + t * nr);
}

static const cq_kernel k_t1_portable = {dot_t1_portable, 4, CQ_X_F32, 0};
static const cq_kernel k_t0_portable = {dot_t0_portable, T0_BLOCK, CQ_X_F32, 0};

const cq_kernel *cq_pick(const zmlx_qweight *W, zmlx_dtype T) {
    if (!W->transpose) return &k_t0_portable;
    const cq_isa isa = cq_isa_active();
    if (isa >= CQ_ISA_AVX2) {
        const cq_kernel *k = isa >= CQ_ISA_AVX512 ? cq_pick_avx512(W, T) : cq_pick_avx2(W, T);
        if (k) return k;
    }
    return &k_t1_portable;
}

/* f32 sum of n (a multiple of 8) values: 8 lane sums, then a fixed tree. */
static float sum8(const float *f, int n) {
    float l[8] = {0};
    for (int j = 0; j < n; j += 8)
        for (int m = 0; m < 8; m++) l[m] = l[m] + f[j + m];
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* int16 image of a group of n (a multiple of 8) f32 values: xi = round(x·
 * 32767/max|x|) (ties to even: adding and removing 1.5·2^52 rounds an f64 of
 * magnitude < 2^51 in the default rounding mode; f64 so a tiny max cannot
 * overflow the reciprocal); returns the scale sx = f32(max|x|/32767). With
 * xl != NULL also the second pieces xl = round((x − sx·xi)·2^15/sx): x − sx·xi
 * is exact in f64 and at most ~sx/2, so |xl| <= ~16400 and x = sx·(xi +
 * 2^-15·xl) within 2^-16·sx (a subnormal or zero sx, max|x| < ~4e-34, keeps
 * xl = 0 and loses relative precision). A non-finite value gives scale NaN
 * (the dot is then NaN, as an f32 dot of a non-finite row would be
 * non-finite) and xi = xl = 0. Branch-free lane loops: this runs on every
 * activation row of every call. */
static float quant_group(const float *f, int n, int16_t *xi, int16_t *xl) {
    float l[8] = {0};
    int bad = 0;
    for (int j = 0; j < n; j += 8)
        for (int m = 0; m < 8; m++) {
            float a = fabsf(f[j + m]);
            l[m] = a > l[m] ? a : l[m];
            bad |= !(a <= FLT_MAX);
        }
    float mx = 0.0f;
    for (int m = 0; m < 8; m++) mx = l[m] > mx ? l[m] : mx;
    if (bad) {
        memset(xi, 0, (size_t)n * sizeof *xi);
        if (xl) memset(xl, 0, (size_t)n * sizeof *xl);
        return NAN;
    }
    const double inv = mx > 0.0f ? 32767.0 / (double)mx : 0.0;
    const float sx = (float)((double)mx / 32767.0);
    for (int j = 0; j < n; j++) xi[j] = (int16_t)(((double)f[j] * inv + 0x1.8p52) - 0x1.8p52);
    if (xl) {
        const double linv = sx >= FLT_MIN ? 32768.0 / (double)sx : 0.0;
        for (int j = 0; j < n; j++)
            xl[j] = (int16_t)((((double)f[j] - (double)sx * xi[j]) * linv + 0x1.8p52) - 0x1.8p52);
    }
    return sx;
}

/* Reorder a row of K 16-bit values (int16 or bf16, natural order) in place
 * into the form's order: natural (8-bit codes); per B elements the B/2 even
 * then the B/2 odd ones (B/2 bytes of 4-bit codes unpack into low nibbles,
 * then high nibbles): B = 32 (CQ_X_I16_4), 64 (CQ_X_I16_4W: K a multiple of
 * 64; a block may span two groups); or per 128 elements (the last 64 when
 * K % 128 = 64) elements 4k + m at m·B/4 + k (CQ_X_BF16_4Q). */
static void order_16(cq_xform xform, int16_t *row, int64_t K) {
    if (xform == CQ_X_I16_8) return;
    const int quad = xform == CQ_X_BF16_4Q, B = xform == CQ_X_I16_4 ? 32 : quad ? 128 : 64;
    int16_t q[128];
    for (int64_t c = 0; c < K; c += B) {
        const int n = K - c < B ? (int)(K - c) : B; /* < B: CQ_X_BF16_4Q's last 64 */
        memcpy(q, row + c, (size_t)n * sizeof *q);
        const int ways = quad ? 4 : 2;
        for (int m = 0; m < ways; m++)
            for (int k = 0; k < n / ways; k++) row[c + m * (n / ways) + k] = q[ways * k + m];
    }
}

void cq_prep_x(const cq_kernel *kern, zmlx_dtype T, const void *x, int64_t K, int gs, void *xbuf,
               float *xsc, float *xs) {
    float *xf = xbuf, f[ZQ_MAX_GROUP];
    int16_t *xi = xbuf;
    for (int64_t g0 = 0, g = 0; g0 < K; g0 += gs, g++) {
        /* n < gs only at the end of a transpose = 0 row (K is not quantized
           there; only CQ_X_F32 is used); everything else has whole groups */
        const int n = K - g0 < gs ? (int)(K - g0) : gs;
        for (int j = 0; j < n; j++) f[j] = zc_load(T, x, g0 + j);
        if (xs) xs[g] = sum8(f, gs);
        switch (kern->xform) {
        case CQ_X_F32: memcpy(xf + g0, f, (size_t)n * sizeof *f); break;
        case CQ_X_F32_L4:
        case CQ_X_F32_L8: {
            /* A 256-bit chunk of codes holds W = 256/bits elements as 8 u32
               lanes of V = 32/bits codes; the kernel extracts code s of every
               lane at once, i.e. elements c + V*l + s for l = 0..7, so xf keeps
               them there. Chunks never straddle a group start (W <= gs or W
               a multiple of gs: gs32 4-bit chunks hold two whole groups). */
            const int bits = kern->xform == CQ_X_F32_L4 ? 4 : 8, W = 256 / bits, V = 32 / bits;
            if (W > gs) { /* chunk c0 = g0 rounded down to W; fill once per chunk */
                if (g0 % W == 0)
                    for (int s = 0; s < V; s++)
                        for (int l = 0; l < 8; l++) xf[g0 + s * 8 + l] = zc_load(T, x, g0 + V * l + s);
                break;
            }
            for (int c = 0; c < gs; c += W)
                for (int s = 0; s < V; s++)
                    for (int l = 0; l < 8; l++) xf[g0 + c + s * 8 + l] = f[c + V * l + s];
            break;
        }
        case CQ_X_I16_4:
        case CQ_X_I16_4W:
        case CQ_X_I16_8:
            xsc[g] = quant_group(f, gs, xi + g0, kern->pieces == 2 ? xi + K + g0 : NULL);
            break;
        case CQ_X_BF16_4Q: memcpy(xi + g0, (const uint16_t *)x + g0, (size_t)n * 2); break;
        }
    }
    const int rows16 = cq_xform_int16(kern->xform) ? kern->pieces : cq_xform_bf16(kern->xform);
    for (int p = 0; p < rows16; p++) order_16(kern->xform, xi + p * K, K);
}

/* ------------------------------------------------------------ drivers */

typedef enum { OP_QMM, OP_SWIGLU, OP_COMBINE } qop;

typedef struct {
    qop op;
    zmlx_dtype T;
    zmlx_act act;
    const zmlx_qweight *W, *Wu;
    /* the kernel of every run and its prepared rows [n_xrows][xrow_bytes]
       (f32, int16 or bf16 [K]) */
    const cq_kernel *kern;
    char *xb;
    size_t xrow_bytes;
    int64_t N, K, G, nblocks; /* G: groups per row rounded up to 8 (cq_gpad) */
    int k, x_per_slot;
    const void *x;
    int64_t n_xrows;
    float *xsc, *xs;     /* [n_xrows][G]: int16 group scales, Σx (either may be NULL) */
    int32_t *order;      /* slots sorted by expert (stable)                           */
    int64_t *gstart;     /* [ng+1] starts of each expert's run in order               */
    int32_t *gexp;       /* [ng] expert of each run                                   */
    int64_t *gpre;       /* [ng+1] prefix of task weights (slots+1 per row block)     */
    int64_t ng;
    int parts;           /* task ranges of near-equal weight, claimed in order by next_part */
    _Atomic int next_part;
    void *y;             /* QMM: y [slots, N] in T; SWIGLU: h; COMBINE: scratch as QMM's y */
    /* combine phase */
    const float *cw;
    void *out;
} qjob;

static void prep_task(void *arg, int64_t b, int64_t e, int t) {
    (void)t;
    qjob *j = arg;
    size_t ts = zmlx_dtype_size(j->T);
    for (int64_t r = b; r < e; r++)
        cq_prep_x(j->kern, j->T, (const char *)j->x + (size_t)(r * j->K) * ts, j->K, j->W->group_size,
                  j->xb + (size_t)r * j->xrow_bytes, j->xsc ? j->xsc + r * j->G : NULL,
                  j->xs ? j->xs + r * j->G : NULL);
}

/* First task (linear id g*nblocks + b) whose starting weight is >= w. */
static int64_t first_task(const qjob *j, int64_t w) {
    if (w >= j->gpre[j->ng]) return j->ng * j->nblocks;
    int64_t lo = 0, hi = j->ng - 1; /* last g with gpre[g] <= w */
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (j->gpre[mid] <= w) lo = mid; else hi = mid - 1;
    }
    int64_t c = (j->gstart[lo + 1] - j->gstart[lo]) + 1;
    int64_t b = (w - j->gpre[lo] + c - 1) / c;
    return lo * j->nblocks + b; /* b == nblocks lands on (lo+1, 0) */
}

/* Parts per thread a call's tasks are cut into (block_task): enough for the
 * last parts to even out the threads, few enough that claiming costs nothing */
enum { PARTS_PER_THREAD = 8 };

/* Rows of a task: a multiple of every kernel's block (4, or T0_BLOCK). */
enum { TASK_ROWS = 64 };
_Static_assert(TASK_ROWS % T0_BLOCK == 0 && TASK_ROWS % 4 == 0, "a task is whole kernel blocks");

/* The dot of rows [r0, r0 + nr) (nr <= TASK_ROWS) in calls of the kernel's
 * block, into o[t * TASK_ROWS + i]. */
static void dot_rows_of_task(const cq_kernel *kern, const zmlx_qweight *W, int32_t e, int64_t r0, int nr,
                             const cq_xrow *xr, int nx, float *o) {
    float part[CQ_MAXT * TASK_ROWS];
    for (int s0 = 0; s0 < nr; s0 += kern->block) {
        const int n = nr - s0 < kern->block ? nr - s0 : kern->block;
        kern->dot(W, e, r0 + s0, n, xr, nx, part);
        for (int t = 0; t < nx; t++) memcpy(o + t * TASK_ROWS + s0, part + t * n, (size_t)n * sizeof *o);
    }
}

/* Block b of TASK_ROWS rows of expert run g for every slot routed there,
 * CQ_MAXT slots per dot call (one weight decode serves them all; each slot's
 * values are the same as if it were alone). A task's slot writes TASK_ROWS
 * contiguous outputs: whole cache lines, where the kernels' 4-row blocks
 * wrote 8 bytes per slot row. */
static void run_block(const qjob *j, int64_t g, int64_t b) {
    float o1[CQ_MAXT * TASK_ROWS], o2[CQ_MAXT * TASK_ROWS];
    cq_xrow xr[CQ_MAXT];
    int64_t slots[CQ_MAXT];
    const int32_t e = j->gexp[g];
    const cq_kernel *kern = j->kern;
    const int64_t r0 = b * TASK_ROWS, N = j->N;
    const int nr = (int)(N - r0 < TASK_ROWS ? N - r0 : TASK_ROWS);
    /* the run's slots in as few calls as CQ_MAXT allows, of near-equal size
       (5 slots: 3 + 2, not 4 + 1: a call's rate grows with its slots) */
    const int64_t end = j->gstart[g + 1];
    for (int64_t p0 = j->gstart[g], calls = (end - p0 + CQ_MAXT - 1) / CQ_MAXT; p0 < end; calls--) {
        const int nx = (int)((end - p0 + calls - 1) / calls);
        for (int t = 0; t < nx; t++) {
            const int64_t slot = j->order[p0 + t], r = j->x_per_slot ? slot : slot / j->k;
            slots[t] = slot;
            const char *xrow = j->xb + (size_t)r * j->xrow_bytes;
            xr[t] = (cq_xrow){xrow, j->xsc ? j->xsc + r * j->G : NULL, j->xs ? j->xs + r * j->G : NULL};
        }
        dot_rows_of_task(kern, j->W, e, r0, nr, xr, nx, o1);
        if (j->op == OP_SWIGLU) dot_rows_of_task(kern, j->Wu, e, r0, nr, xr, nx, o2);
        for (int t = 0; t < nx; t++) {
            const int64_t base = slots[t] * N + r0;
            const float *a = o1 + t * TASK_ROWS, *u = o2 + t * TASK_ROWS;
            switch (j->op) {
            case OP_QMM:
            case OP_COMBINE: /* y: the slots' rows in T, as gather_qmm stores them */
                for (int i = 0; i < nr; i++) zc_store(j->T, j->y, base + i, a[i]);
                break;
            case OP_SWIGLU: { /* glu_act's values from the gate and up rounded to T */
                float gr[TASK_ROWS], ur[TASK_ROWS], h[TASK_ROWS];
                for (int i = 0; i < nr; i++) gr[i] = zc_round(j->T, a[i]), ur[i] = zc_round(j->T, u[i]);
                zcpu_act_f32(j->act, gr, ur, nr, h);
                for (int i = 0; i < nr; i++) zc_store(j->T, j->y, base + i, h[i]);
                break;
            }
            }
        }
        p0 += nx;
    }
}

/* Each thread claims the next part until none is left. The weights (slots + 1
 * per block) only estimate a task's time, and the threads need not run at one
 * speed (a VM's vCPUs, other processes), so a static split of one part per
 * thread left the first done waiting: Qwen3 M = 64 on 2 Zen 5 vCPUs, the
 * experts' matmuls 12-13% faster in a slow spell, 18% with a busy process on
 * one core, the same in a fast spell (src/cpu/NOTES.md). Which thread runs a
 * task never changes its outputs. */
static void block_task(void *arg, int64_t pb, int64_t pe, int t) {
    (void)pb, (void)pe, (void)t;
    qjob *j = arg;
    const int64_t tot = j->gpre[j->ng];
    for (int64_t part; (part = atomic_fetch_add(&j->next_part, 1)) < j->parts;) {
        int64_t t0 = first_task(j, tot * part / j->parts);
        int64_t t1 = first_task(j, tot * (part + 1) / j->parts);
        for (int64_t tid = t0; tid < t1; tid++) run_block(j, tid / j->nblocks, tid % j->nblocks);
    }
}

/* n rounded up to a whole number of 64-byte lines */
static size_t pad64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Carve a 64-byte aligned piece of n bytes from *p. */
static void *carve(char **p, size_t n) {
    void *r = *p;
    *p += pad64(n);
    return r;
}

/* Size in bytes of one prepared activation row for kern (a multiple of 64):
 * K f32, K int16 per piece, or K bf16. */
static size_t xrow_size(const cq_kernel *kern, int64_t K) {
    const size_t per = cq_xform_int16(kern->xform) ? 2 * (size_t)kern->pieces : cq_xform_bf16(kern->xform) ? 2 : 4;
    return pad64((size_t)K * per);
}

static zmlx_status run_qmm(zmlx_ctx *ctx, qjob *j, const int32_t *idx, int64_t n_tok) {
    const zmlx_qweight *W = j->W;
    const int64_t n_slots = n_tok * j->k, E = W->E;
    j->N = W->N; /* output features of one slot */
    j->K = W->K;
    j->G = cq_gpad(W->K / W->group_size); /* stride of xsc/xs rows (see cq_xrow) */
    j->kern = cq_pick(W, j->T);
    j->nblocks = (j->N + TASK_ROWS - 1) / TASK_ROWS;
    j->n_xrows = j->x_per_slot ? n_slots : n_tok;

    /* counting sort of slots by expert (stable: slot order within an expert) */
    size_t sbytes = 0;
    sbytes += pad64((size_t)n_slots * 4);       /* order  */
    sbytes += pad64((size_t)(n_slots + 1) * 8); /* gstart */
    sbytes += pad64((size_t)n_slots * 4);       /* gexp   */
    sbytes += pad64((size_t)(n_slots + 1) * 8); /* gpre   */
    sbytes += pad64((size_t)(E + 1) * 8);       /* counts */
    char *smem = zc_alloc_aligned(sbytes, 64), *p = smem;
    if (!smem) return ZMLX_ERR_OOM;
    j->order = carve(&p, (size_t)n_slots * 4);
    j->gstart = carve(&p, (size_t)(n_slots + 1) * 8);
    j->gexp = carve(&p, (size_t)n_slots * 4);
    j->gpre = carve(&p, (size_t)(n_slots + 1) * 8);
    int64_t *cnt = carve(&p, (size_t)(E + 1) * 8);
    memset(cnt, 0, (size_t)(E + 1) * 8);
    for (int64_t s = 0; s < n_slots; s++) cnt[(idx ? idx[s] : 0) + 1]++;
    j->ng = 0;
    j->gstart[0] = 0;
    for (int64_t e = 0; e < E; e++) {
        if (cnt[e + 1]) {
            j->gexp[j->ng] = (int32_t)e;
            j->gstart[j->ng + 1] = j->gstart[j->ng] + cnt[e + 1];
            j->ng++;
        }
        cnt[e + 1] += cnt[e]; /* cnt[e] becomes the first position of expert e */
    }
    for (int64_t s = 0; s < n_slots; s++) j->order[cnt[idx ? idx[s] : 0]++] = (int32_t)s;
    j->gpre[0] = 0;
    for (int64_t g = 0; g < j->ng; g++)
        j->gpre[g + 1] = j->gpre[g] + j->nblocks * ((j->gstart[g + 1] - j->gstart[g]) + 1);

    /* the prepared rows, their int16 scales and Σx */
    const int need_xsc = cq_xform_int16(j->kern->xform);
    const int need_xs = W->mode == ZMLX_QMODE_AFFINE && W->transpose && cq_xform_uses_xs(j->kern->xform);
    j->xrow_bytes = xrow_size(j->kern, j->K);
    size_t bytes = (size_t)j->n_xrows * j->xrow_bytes;
    const size_t gbytes = pad64((size_t)(j->n_xrows * j->G) * 4);
    bytes += (need_xsc + need_xs) * gbytes;
    const size_t ybytes = (size_t)(n_slots * j->N) * zmlx_dtype_size(j->T);
    if (j->op == OP_COMBINE) bytes += pad64(ybytes);
    char *mem = zc_alloc_aligned(bytes ? bytes : 64, 64);
    if (!mem) {
        zc_free_aligned(smem);
        return ZMLX_ERR_OOM;
    }
    p = mem;
    j->xb = carve(&p, (size_t)j->n_xrows * j->xrow_bytes);
    j->xsc = need_xsc ? carve(&p, gbytes) : NULL;
    j->xs = need_xs ? carve(&p, gbytes) : NULL;
    if (j->xsc) memset(j->xsc, 0, gbytes); /* the pads */
    if (j->xs) memset(j->xs, 0, gbytes);
    if (j->op == OP_COMBINE) {
        j->out = j->y;
        j->y = carve(&p, ybytes);
    }

    zc_pool *pool = ctx ? ctx->pool : NULL;
    const int threads = zc_pool_size(pool);
    j->parts = threads > 1 ? PARTS_PER_THREAD * threads : 1;
    atomic_init(&j->next_part, 0);
    zc_pool_run(pool, j->n_xrows, (16384 + j->K - 1) / j->K, prep_task, j);
    zc_pool_run(pool, threads, 1, block_task, j);
    /* the combine: moe_combine's, on the slots' rows just computed */
    if (j->op == OP_COMBINE) zcpu_moe_combine(ctx, j->T, j->y, j->cw, n_tok, j->k, j->N, j->out);
    zc_free_aligned(mem);
    zc_free_aligned(smem);
    return ZMLX_OK;
}

zmlx_status zcpu_gather_qmm(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_tok,
                            int x_per_slot, const zmlx_qweight *W, const int32_t *idx, int k,
                            void *y) {
    qjob j = {.op = OP_QMM, .T = T, .W = W, .k = k, .x_per_slot = x_per_slot, .x = x, .y = y};
    return run_qmm(ctx, &j, idx, n_tok);
}

zmlx_status zcpu_gather_qmm_swiglu(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_tok,
                                   const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                   const int32_t *idx, int k, zmlx_act act, void *h) {
    qjob j = {.op = OP_SWIGLU, .T = T, .act = act, .W = Wg, .Wu = Wu, .k = k, .x = x, .y = h};
    return run_qmm(ctx, &j, idx, n_tok);
}

zmlx_status zcpu_gather_qmm_combine(zmlx_ctx *ctx, zmlx_dtype T, const void *h, int64_t n_tok,
                                    const zmlx_qweight *Wd, const int32_t *idx, int k,
                                    const float *w, void *out) {
    qjob j = {.op = OP_COMBINE, .T = T, .W = Wd, .k = k, .x_per_slot = 1, .x = h, .y = out,
              .cw = w};
    return run_qmm(ctx, &j, idx, n_tok);
}
