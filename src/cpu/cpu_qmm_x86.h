/*
 * cpu_qmm_x86.h — x86 SIMD dot routines (transpose = 1) for affine 2- to
 * 8-bit and mxfp4 weights: the inner loop of gather_qmm,
 * gather_qmm_swiglu and gather_qmm_combine. Not an ordinary header: it is
 * the body of two translation units, each compiled for its instruction set
 * and defining CQ_AVX512 and CQ_PICK first:
 *   cpu_qmm_avx2.c    AVX2 + FMA + F16C (CQ_AVX512 = 0, cq_pick_avx2)
 *   cpu_qmm_avx512.c  the same plus AVX-512 F/DQ/BW/VL and VNNI (CQ_AVX512 = 1,
 *                     cq_pick_avx512)
 * The AVX-512 build differs in the inner loops only, each giving the AVX2
 * build's bits by construction (test_cpu_qmm compares them with memcmp)
 * except the first:
 * - integer dots, affine 4-bit gs >= 64 and 8-bit: 32 code bytes per step
 *   (one 512-bit unpack), x loaded once for the 4 rows, vpdpwssd (igroup_z),
 *   and 16 f32 lanes per (row, token) where AVX2 has 8 (the even and the odd
 *   16-byte chunks' sums each in its own chain, added after the last group:
 *   folding them to 8 lanes per group, for the AVX2 bits, cost ~20% of the
 *   M = 1 rate);
 * - mxfp4 with K % 64 == 0: 32-byte steps of two groups, each group's sums in
 *   its half of the vector (the AVX2 build's); 4-bit gs32 and the other
 *   mxfp4 keep 16-byte steps with vpdpwssd in place of vpmaddwd + vpaddd (the
 *   same exact sums);
 * - f32 dots: two steps per 512-bit vector, the even step's chain in the low
 *   half and the odd step's in the high half (the AVX2 build's two chains:
 *   the same lanes, operations and order).
 * It also has 32 vector registers (EVEX), against spills, and a third
 * family, the bf16 dots, for CPUs with AVX512_BF16.
 *
 * Three families:
 *
 * Integer dots (affine 2- to 8-bit, mxfp4; taken for T = bf16/f16). Numerics: the
 * activation row is quantized once per call, per weight group, to int16 with
 * an f32 scale (x ≈ sx·xi, sx = max|x|/32767, xi = round-to-nearest-even, so
 * |x − sx·xi| <= ~2^-16 of the group's max |x|, the same for every row and
 * expert), and by default a second int16 piece of the residual (x ≈ sx·(xi +
 * 2^-15·xl), error <= ~2^-31 of the max: f32-like; the same code path runs
 * on each piece and the pieces' group sums are added as two FMAs). Per
 * 16 bytes of codes: vpmovzxbw; 4-bit: AND 0x0F (the even elements) and
 * SRL 4 (the odd ones), two vpmaddwd with x stored even-then-odd; 8-bit: one
 * vpmaddwd; 2/3/5/6-bit: 2b bytes per 16 codes unpacked by gunpack, then as
 * 8-bit (x in natural order). The i32 lane sums of a group are exact
 * (|sum| < 2^28 for 8-bit gs128) and become f32 once per group (rounding
 * 2^-24 relative):
 * acc += f32(Σ q·xi)·f32(s·sx); the bias term is Σ_g b_g·Σx_g with Σx from
 * the ORIGINAL x. mxfp4: each nibble becomes 2·(its E2M1 value), an integer
 * in [-12, 12] (vpshufb table + vpsignw), and the E8M0 scale (a power of two,
 * down to 2^-127) is applied after sx, acc += (f32(Σ)·sx)·2^(e-128), so no
 * product underflows early. Each (row, token) has its own chain, so decoding
 * a code vector once for up to CQ_MAXT tokens gives the same values as one
 * token alone. Taken for T = bf16 / f16 below the AVX512_BF16 level (and
 * there for the widths without bf16 dots); T = f32 takes the f32 dots
 * (CQ_PICK); cq_xint_force overrides the choice.
 *
 * f32 dots (affine 2- to 8-bit, mxfp4 with K % 64 == 0; T = f32, and every T
 * with ZMLX_CPU_INT_DOT=0 (CQ_XINT_OFF); 2/3/5/6-bit: gdot_rows, x in
 * natural order, below). Codes are consumed 256 bits at a
 * time ("a chunk": 64 4-bit or 32 8-bit codes) as 8 u32 lanes; code s of
 * every lane is isolated with one shift and one AND (no shuffles) and
 * converted to f32, so lane l, step s holds element V*l + s of the chunk (V
 * codes per lane). cq_prep_x stores x in that order, once per activation row.
 * Each code vector is dequantized once, w = fma(f32(q), scale, bias) (the
 * weight as MLX defines it, one rounding; mxfp4: f32(q)·2^(e-127), exact; a
 * chunk that holds two groups, 4-bit gs32, gets each half's scale and bias),
 * then acc += w·x for each of up to CQ_MAXT tokens: one FMA per 8 products
 * and token, against the integer dots' vpmaddwd + add per 16 and piece, so
 * at 3-4 tokens per decode they do ~1.7x the integer dots' work per second
 * (src/cpu/NOTES.md). Two chains per (row, token), even and odd s; result =
 * hsum(chain 0 + chain 1) (fixed tree).
 *
 * bf16 dots (AVX-512 build, CQ_ISA_AVX512_BF16; T = bf16; affine 4-bit and
 * mxfp4 with K % 64 == 0). x is its own bf16 values and each code's value is
 * exact in bf16, so vdpbf16ps multiplies exactly, 32 products per
 * instruction, summed in f32 (bdot_rows); the group scale is applied once
 * per step (128 elements, 1-4 groups). Zen 5, hot, one
 * core, 4-bit: 1.36x the integer dots' rate at one slot, 1.7x the f32 dots'
 * at 4; on a Sapphire Rapids slower than both (three 512-bit shuffles per
 * step: cq_isa_active keeps the level to AMD CPUs; src/cpu/NOTES.md).
 *
 * The AVX2 build also holds the GLU activation's vector form (cq_act_avx2),
 * which every SIMD level uses.
 */
#include "cpu/cpu_kern.h"

#include <immintrin.h>

/* Formats: affine 4-bit, 8-bit, mxfp4, and affine 2/3/5/6-bit (fmt_gen: 16
 * codes = 2·bits bytes at a time, gunpack) */
enum { F_A4, F_A8, F_MX4, F_A2, F_A3, F_A5, F_A6 };

#define AI static inline __attribute__((always_inline))

AI int fmt_gen(int fmt) { return fmt >= F_A2; }
AI int fmt_bits(int fmt) {
    return fmt == F_A8 ? 8 : fmt == F_A2 ? 2 : fmt == F_A3 ? 3 : fmt == F_A5 ? 5 : fmt == F_A6 ? 6 : 4;
}

/* Element i of a scale/bias array, f32. sdt is a compile-time constant after
 * inlining (one instance per scale dtype), ZMLX_U8 meaning an E8M0 byte. */
AI float ld_scale(zmlx_dtype sdt, const void *p, int64_t i) {
    switch (sdt) {
    case ZMLX_F32: return ((const float *)p)[i];
    case ZMLX_BF16: return zc_bits_f32((uint32_t)((const uint16_t *)p)[i] << 16);
    case ZMLX_F16: return _cvtsh_ss(((const uint16_t *)p)[i]); /* exact */
    default: { /* E8M0: 2^(e-127) = bits e << 23, except e = 0 -> 2^-127 (subnormal); as zq_e8m0_value */
        const uint32_t e = ((const uint8_t *)p)[i];
        return zc_bits_f32(e ? e << 23 : 0x00400000u);
    }
    }
}

/* Elements i..i+7 of a scale/bias array (bf16/f16/f32, or ZMLX_U8 meaning
 * E8M0 bytes), f32. */
AI __m256 ld8_scale(zmlx_dtype sdt, const void *p, int64_t i) {
    switch (sdt) {
    case ZMLX_F32: return _mm256_loadu_ps((const float *)p + i);
    case ZMLX_BF16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i))), 16));
    case ZMLX_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    default: { /* E8M0: 2^(e-127) = bits e << 23, except e = 0 -> 2^-127 (subnormal) */
        const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)p + i)));
        const __m256i f = _mm256_blendv_epi8(_mm256_slli_epi32(e, 23), _mm256_set1_epi32(0x00400000),
                                             _mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
        return _mm256_castsi256_ps(f);
    }
    }
}

/* Elements i..i+n-1 (1 <= n <= 8) of a scale/bias array, f32, zero lanes
 * after n. lim = elements readable from p: a full 8-element load when it
 * stays inside the array (the lanes past n, another row's values, are
 * masked off), else a copy through the stack. */
AI __m256 ld8_part(zmlx_dtype sdt, const void *p, int64_t i, int n, int64_t lim) {
    if (n == 8) return ld8_scale(sdt, p, i);
    if (i + 8 <= lim) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        return _mm256_and_ps(ld8_scale(sdt, p, i), _mm256_castsi256_ps(m));
    }
    float v[8] = {0};
    for (int j = 0; j < n; j++) v[j] = ld_scale(sdt, p, i + j);
    return _mm256_loadu_ps(v);
}

/* f32 values of code s of each u32 lane of v */
AI __m256 codes_f32(int fmt, __m256i v, int s, __m256 fp4tab) {
    if (fmt == F_MX4) {
        /* vpermps reads the low 3 bits of each index (the magnitude code); the
           sign bit (bit 3 of the code) is moved to bit 31 and xor-ed in */
        __m256i t = s ? _mm256_srli_epi32(v, 4 * s) : v;
        __m256 m = _mm256_permutevar8x32_ps(fp4tab, t);
        __m256i sign = _mm256_and_si256(s == 7 ? v : _mm256_slli_epi32(v, 28 - 4 * s),
                                        _mm256_set1_epi32((int)0x80000000u));
        return _mm256_xor_ps(m, _mm256_castsi256_ps(sign));
    }
    const int bits = fmt == F_A4 ? 4 : 8, V = 32 / bits;
    __m256i t = s ? _mm256_srli_epi32(v, bits * s) : v;
    if (s < V - 1) t = _mm256_and_si256(t, _mm256_set1_epi32((1 << bits) - 1));
    return _mm256_cvtepi32_ps(t);
}

#if CQ_AVX512
/* codes_f32 of steps s (low half) and s + 1 (high half) at once, vz = the
 * chunk's 8 u32 lanes in both halves: per lane the same operations (the AND
 * of the last step, which AVX2 skips, changes nothing) */
AI __m512 codes2_f32(int fmt, __m512i vz, int s, __m512 fp4tab2) {
    const int bits = fmt == F_A8 ? 8 : 4;
    const __m512i t = _mm512_srlv_epi32(
        vz, _mm512_inserti64x4(_mm512_set1_epi32(bits * s), _mm256_set1_epi32(bits * (s + 1)), 1));
    if (fmt == F_MX4) {
        /* 16-entry vpermps reads the low 4 bits: fp4tab2 holds the magnitudes
           twice, so the sign bit (bit 3) picks the same one */
        const __m512 m = _mm512_permutexvar_ps(t, fp4tab2);
        const __m512i sign = _mm512_and_si512(
            _mm512_sllv_epi32(vz, _mm512_inserti64x4(_mm512_set1_epi32(28 - 4 * s),
                                                     _mm256_set1_epi32(28 - 4 * (s + 1)), 1)),
            _mm512_set1_epi32((int)0x80000000u));
        return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(m), sign));
    }
    return _mm512_cvtepi32_ps(_mm512_and_si512(t, _mm512_set1_epi32((1 << bits) - 1)));
}

/* the 256-bit v in both halves */
AI __m512i twice_si(__m256i v) { return _mm512_broadcast_i64x4(v); }
AI __m512 twice_ps(__m256 v) { return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(v))); }
#endif

/* Software prefetch of the next 4-row block, at the same offsets: its rows
 * follow in memory, but a 4-row block is 4 short streams (plus scales and
 * biases) that the hardware prefetchers, stopped at every 4 KB page, pick up
 * too late (measured on Zen 3, one expert matrix at a time: 7.3 -> 13.1 GB/s).
 * One line per row per 64 bytes consumed, into L1; pf = 4 rows' bytes (into
 * L2 measured the same; a fixed 8 KB, or 2 or 8 rows, the same or up to 10%
 * worse). Prefetches never fault, so running past the last row is harmless. */
AI void pf_rows(int R, const uint8_t *const *row, int64_t off, int64_t pf) {
    if ((off & 63) == 0)
        for (int r = 0; r < R; r++) _mm_prefetch((const char *)row[r] + off + pf, _MM_HINT_T0);
}

/* pf_rows for a group of n code bytes at p that need not start a line
 * (fmt_gen: 2b bytes per 16 codes): its first and last bytes' lines (and
 * for n > 64 the one between), pf ahead; a line twice is harmless. */
AI void pf_group(const uint8_t *p, int n, int64_t pf) {
    _mm_prefetch((const char *)p + pf, _MM_HINT_T0);
    if (n > 64) _mm_prefetch((const char *)p + pf + 64, _MM_HINT_T0);
    _mm_prefetch((const char *)p + pf + n - 1, _MM_HINT_T0);
}

/* Every 64-byte line of the n bytes at p (prefetches never fault). */
AI void pf_lines(const char *p, int64_t n) {
    const uintptr_t b = (uintptr_t)p;
    for (uintptr_t q = b & ~(uintptr_t)63; q < b + (uintptr_t)n; q += 64) _mm_prefetch((const char *)q, _MM_HINT_T0);
}

/* Rows r0..r0+R-1 of expert e: the codes row[r], the scales sp[r] and biases
 * bp[r] (NULL unless affine) of ss bytes an element, and lim[r] = the scale /
 * bias elements readable from there (to the arrays' end); prefetches the
 * next 4-row block's scales and biases (pfs bytes on): every line of the R
 * rows' there (consecutive rows' scales are contiguous). One line per row
 * missed some where a row's scales span more than a line: K = 2880 (gpt-oss)
 * has 90 bytes a row (mxfp4; affine gs64 also 90 of biases), so 2-3 of a
 * block's 6-7 lines were left to the hardware prefetchers, which kept up
 * less well in the fused SwiGLU (gate and up rows alternate every task) than
 * in gate + up: fused measured 1-5% slower there (src/cpu/NOTES.md). */
AI void rows_at(const zmlx_qweight *W, int64_t e, int64_t r0, int R, int affine, size_t ss, int64_t pfs,
                const uint8_t **row, const char **sp, const char **bp, int64_t *lim) {
    const int64_t G = W->K / W->group_size;
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        row[r] = zq_row_ptr(W, e, r0 + r);
        const int64_t si = zq_scale_index(W, e, r0 + r);
        lim[r] = W->E * W->N * G - si;
        sp[r] = (const char *)W->scales + (size_t)si * ss;
        bp[r] = affine ? (const char *)W->biases + (size_t)si * ss : NULL;
    }
    pf_lines(sp[0] + pfs, R * G * (int64_t)ss);
    if (affine) pf_lines(bp[0] + pfs, R * G * (int64_t)ss);
}

AI float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

/* Scale and bias vectors of the chunk that starts group g (lane l's group:
 * g, or for two groups per chunk g + l/4). */
AI void chunk_sb(zmlx_dtype sdt, int two, int affine, const char *sp, const char *bp, int64_t g, __m256 *sv,
                 __m256 *bv) {
    if (two) {
        *sv = _mm256_set_m128(_mm_set1_ps(ld_scale(sdt, sp, g + 1)), _mm_set1_ps(ld_scale(sdt, sp, g)));
        *bv = affine ? _mm256_set_m128(_mm_set1_ps(ld_scale(sdt, bp, g + 1)), _mm_set1_ps(ld_scale(sdt, bp, g)))
                     : _mm256_setzero_ps();
        return;
    }
    *sv = _mm256_set1_ps(ld_scale(sdt, sp, g));
    *bv = affine ? _mm256_set1_ps(ld_scale(sdt, bp, g)) : _mm256_setzero_ps();
}

/* R rows from r0 × NT prepared rows (R = 4, NT = 1 at one slot per expert;
 * R = 1, NT = 1..4 (AVX-512: R = 4 too) when several slots share an expert:
 * each code vector is dequantized once for all NT); fmt, sdt, R, NT are
 * compile-time constants after inlining. Per code vector w = fma(f32(q), scale, bias) (affine; the
 * weight MLX defines, one rounding) or f32(q)·scale (mxfp4, exact), then
 * acc += w·x with two chains per (row, token) (even and odd steps). x is read
 * through memory operands (L1-resident), so the registers hold the 2·R·NT
 * chains, one w and the chunk's scale and bias. Output (t, r) goes to
 * out[t*ostride + r] = hsum(chain0 + chain1); its value does not depend on R
 * or NT. */
AI void dot_rows(int fmt, zmlx_dtype sdt, int R, int NT, const zmlx_qweight *W, int64_t e, int64_t r0,
                 const cq_xrow *x, int ostride, float *out) {
    const int V = fmt == F_A8 ? 4 : 8, CW = 8 * V; /* codes per lane, elements per chunk */
    const int gs = W->group_size, two = gs < CW;  /* two groups per chunk (4-bit gs32) */
    const int gstep = two ? 2 : 1, cpg = two ? 1 : gs / CW;
    const int64_t G = W->K / gs;
    const int affine = fmt != F_MX4;
    const __m256 fp4tab = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const uint8_t *row[4];
    const char *sp[4], *bp[4];
    int64_t lim[4];
    const size_t ss = fmt == F_MX4 ? 1 : zmlx_dtype_size(sdt);
#if CQ_AVX512
    const __m512 fp4tab2 = twice_ps(fp4tab);
    __m512 acc[4][CQ_MAXT]; /* chain 0 in the low half, chain 1 in the high half */
#else
    __m256 acc[4][CQ_MAXT][2];
#endif
    const float *xf[CQ_MAXT];
    const int64_t pfw = 4 * W->K * (fmt == F_A8 ? 8 : 4) / 8, pfs = 4 * G * (int64_t)ss;
    rows_at(W, e, r0, R, affine, ss, pfs, row, sp, bp, lim);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
#if CQ_AVX512
            acc[r][t] = _mm512_setzero_ps();
#else
            acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
#endif
    for (int t = 0; t < NT; t++) xf[t] = x[t].x;
    int64_t off = 0, xo = 0;
    for (int64_t g = 0; g < G; g += gstep) {
        for (int cc = 0; cc < cpg; cc++, xo += CW, off += 32) {
            pf_rows(R, row, off, pfw);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(row[r] + off));
                __m256 sv, bv;
                chunk_sb(fmt == F_MX4 ? ZMLX_U8 : sdt, two, affine, sp[r], bp[r], g, &sv, &bv);
#if CQ_AVX512
                const __m512i vz = twice_si(v);
                const __m512 sz = twice_ps(sv), bz = twice_ps(bv);
#pragma GCC unroll 4
                for (int s = 0; s < V; s += 2) {
                    const __m512 w = affine ? _mm512_fmadd_ps(codes2_f32(fmt, vz, s, fp4tab2), sz, bz)
                                            : _mm512_mul_ps(codes2_f32(fmt, vz, s, fp4tab2), sz);
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++)
                        acc[r][t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xf[t] + xo + 8 * s), acc[r][t]);
                }
#else
#pragma GCC unroll 8
                for (int s = 0; s < V; s++) {
                    const __m256 w = affine ? _mm256_fmadd_ps(codes_f32(fmt, v, s, fp4tab), sv, bv)
                                            : _mm256_mul_ps(codes_f32(fmt, v, s, fp4tab), sv);
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++)
                        acc[r][t][s & 1] = _mm256_fmadd_ps(w, _mm256_load_ps(xf[t] + xo + 8 * s), acc[r][t][s & 1]);
                }
#endif
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
#if CQ_AVX512
            out[t * ostride + r] = hsum(_mm256_add_ps(_mm512_castps512_ps256(acc[r][t]),
                                                      _mm512_extractf32x8_ps(acc[r][t], 1)));
#else
            out[t * ostride + r] = hsum(_mm256_add_ps(acc[r][t][0], acc[r][t][1]));
#endif
}

/* A dot call's nr rows × nx tokens as compile-time shapes, the same for both
 * families: one 4-row pass at up to NT4 tokens, else row by row with all nx
 * tokens (R = 1, NT = nx). ROWS(R, NT, r, o) computes rows from r into o. */
#define DOT_SHAPES(ROWS, NT4)                                    \
    do {                                                         \
        if (nr == 4 && nx <= (NT4)) {                            \
            if (nx == 1) ROWS(4, 1, r0, out);                    \
            else if ((NT4) >= 2 && nx == 2) ROWS(4, 2, r0, out); \
            else if ((NT4) >= 3 && nx == 3) ROWS(4, 3, r0, out); \
            else if ((NT4) >= 4) ROWS(4, 4, r0, out);            \
            break;                                               \
        }                                                        \
        for (int i = 0; i < nr; i++) switch (nx) {               \
            case 1: ROWS(1, 1, r0 + i, out + i); break;          \
            case 2: ROWS(1, 2, r0 + i, out + i); break;          \
            case 3: ROWS(1, 3, r0 + i, out + i); break;          \
            default: ROWS(1, 4, r0 + i, out + i); break;         \
            }                                                    \
    } while (0)

/* one instance per (format, scale dtype, rows × tokens) */
AI void dot_sdt(int fmt, zmlx_dtype sdt, const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x,
                int nx, float *out) {
#define F32_ROWS(R, NT, r, o) dot_rows(fmt, sdt, R, NT, W, e, r, x, nr, o)
    /* AVX-512: 4 rows at every token count (4·NT chains against the FMA
       latency; 32 registers hold them); AVX2 has registers for 4 rows at one */
    DOT_SHAPES(F32_ROWS, CQ_AVX512 ? CQ_MAXT : 1);
#undef F32_ROWS
}

AI void dot_fmt(int fmt, const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x, int nx,
                float *out) {
    switch (fmt == F_MX4 ? ZMLX_U8 : W->scale_dtype) {
    case ZMLX_F32: dot_sdt(fmt, ZMLX_F32, W, e, r0, nr, x, nx, out); break;
    case ZMLX_F16: dot_sdt(fmt, ZMLX_F16, W, e, r0, nr, x, nx, out); break;
    case ZMLX_BF16: dot_sdt(fmt, ZMLX_BF16, W, e, r0, nr, x, nx, out); break;
    default: dot_sdt(fmt, ZMLX_U8, W, e, r0, nr, x, nx, out); break;
    }
}

#define DEFINE_DOT(name, fmt)                                                                          \
    static void name(const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x, int nx, \
                     float *out) {                                                                   \
        dot_fmt(fmt, W, e, r0, nr, x, nx, out);                                                      \
    }
DEFINE_DOT(dot_a4, F_A4)
DEFINE_DOT(dot_a8, F_A8)
DEFINE_DOT(dot_mx4, F_MX4)

/* ------------------------------------------------------ integer dots */

/* mxfp4 nibble (sign bit 3, E2M1 magnitude bits 0-2) in the low byte of a
 * u16 lane -> 2·value as int16: vpshufb looks the doubled magnitude up
 * (0,1,2,3,4,6,8,12; the lane's high byte, 0, looks up entry 0 = 0) and
 * vpsignw negates where bit 3 (moved to bit 15) is set. */
AI __m256i mx_val2(__m256i nib) {
    const __m256i tab = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, 1, 2, 3, 4, 6, 8, 12,
                                         0, 1, 2, 3, 4, 6, 8, 12, 0, 1, 2, 3, 4, 6, 8, 12);
    return _mm256_sign_epi16(_mm256_shuffle_epi8(tab, nib), _mm256_slli_epi16(nib, 12));
}

/* fmt_gen chunks: 16 codes of b bits (2b bytes; LSB-first stream, code i
 * at bit i·b). Code i lies in the two bytes from byte i·b/8, at bit i·b%8
 * (<= 7, and 7 + b <= 16): vpshufb gathers those two bytes into 16-bit lane
 * i (each 128-bit half of the vector holds the 16 loaded bytes; lanes 0-7
 * index the low copy, 8-15 the high one), vpmullw by 2^(16 - i·b%8 - b)
 * moves the code to the top of the lane (the bits above it fall off), and
 * one vpsrlw by 16 - b brings it down. The 16-byte load reads past the
 * chunk: a chunk within 16 bytes of end (the end of the codes) copies its 2b
 * bytes first. b is a compile-time constant in the integer dots (half their
 * rate without: GCC then kept their sums on the stack), read from W in the
 * f32 dots. */
#define GU_LO(b, i) (((i) * (b)) >> 3)
#define GU_P(b, i) GU_LO(b, i), GU_LO(b, i) + 1
#define GU_CTL(b)                                                                                            \
    {GU_P(b, 0), GU_P(b, 1), GU_P(b, 2), GU_P(b, 3), GU_P(b, 4), GU_P(b, 5), GU_P(b, 6), GU_P(b, 7),          \
     GU_P(b, 8), GU_P(b, 9), GU_P(b, 10), GU_P(b, 11), GU_P(b, 12), GU_P(b, 13), GU_P(b, 14), GU_P(b, 15)}
#define GU_M(b, i) (1 << (16 - (((i) * (b)) & 7) - (b)))
#define GU_MUL(b)                                                                                            \
    {GU_M(b, 0), GU_M(b, 1), GU_M(b, 2), GU_M(b, 3), GU_M(b, 4), GU_M(b, 5), GU_M(b, 6), GU_M(b, 7),          \
     GU_M(b, 8), GU_M(b, 9), GU_M(b, 10), GU_M(b, 11), GU_M(b, 12), GU_M(b, 13), GU_M(b, 14), GU_M(b, 15)}
static const uint8_t gu_ctl[4][32] = {GU_CTL(2), GU_CTL(3), GU_CTL(5), GU_CTL(6)};
static const uint16_t gu_mul[4][16] = {GU_MUL(2), GU_MUL(3), GU_MUL(5), GU_MUL(6)};
/* the tables' row for width b; -1: not a fmt_gen width */
AI int gu_row(int b) { return b == 2 ? 0 : b == 3 ? 1 : b == 5 ? 2 : b == 6 ? 3 : -1; }

AI __m256i gunpack(int b, const uint8_t *p, const uint8_t *end) {
    __m128i v;
    if (end - p >= 16) {
        v = _mm_loadu_si128((const __m128i *)p);
    } else {
        uint8_t t[16] = {0};
        memcpy(t, p, (size_t)(2 * b));
        v = _mm_loadu_si128((const __m128i *)t);
    }
    const __m256i c = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(v),
                                          _mm256_loadu_si256((const __m256i *)gu_ctl[gu_row(b)]));
    return _mm256_srli_epi16(_mm256_mullo_epi16(c, _mm256_loadu_si256((const __m256i *)gu_mul[gu_row(b)])), 16 - b);
}

/* s (+)= the 8 i32 lane sums of 16 bytes of codes, unpacked to lo (and for
 * 4-bit hi), times the int16 activations at x (bits compile-time) */
AI __m256i imadd(int bits, __m256i s, __m256i lo, __m256i hi, const int16_t *x, int add) {
    /* each product goes straight into the sum (few live registers) */
    const __m256i x0 = _mm256_load_si256((const __m256i *)x);
#if CQ_AVX512 /* vpdpwssd = vpmaddwd + vpaddd in one, the same exact i32 sums */
    s = add ? _mm256_dpwssd_epi32(s, lo, x0) : _mm256_madd_epi16(lo, x0);
    if (bits == 4) s = _mm256_dpwssd_epi32(s, hi, _mm256_load_si256((const __m256i *)(x + 16)));
#else
    const __m256i p = _mm256_madd_epi16(lo, x0);
    s = add ? _mm256_add_epi32(s, p) : p;
    if (bits == 4) s = _mm256_add_epi32(s, _mm256_madd_epi16(hi, _mm256_load_si256((const __m256i *)(x + 16))));
#endif
    return s;
}

/* is[t] = the 8 i32 lane sums of one group of row p (cpg chunks of 16 code
 * bytes, fmt_gen 2b, from byte off; end: the end of the codes, for
 * gunpack) times the int16 x of token t from element xo, and for
 * two pieces (P = 2) il[t] the same with the second pieces at xi[t] + K
 * (fmt, NT, P, cpg compile-time). One row at a time, x as memory operands
 * (L1-resident): the live registers are the decoded chunk, the P·NT sums and
 * the caller's R·NT f32 accumulators. Rows interleaved in the chunk loop (4
 * rows' sums live at once) spilled to the stack: 17.7 -> 22.0 G MAC/s hot
 * at M = 1, two pieces (src/cpu/NOTES.md). */
AI void igroup(int fmt, int NT, int P, int cpg, const uint8_t *p, int64_t off, int64_t pfw,
               const int16_t *const *xi, int64_t K, int64_t xo, const uint8_t *end,
               __m256i is[CQ_MAXT], __m256i il[CQ_MAXT]) {
    const __m256i lo4 = _mm256_set1_epi16(0x0F);
    /* bits: 4 where 16 code bytes unpack into two vectors (even, odd), else one */
    const int bits = fmt == F_A4 || fmt == F_MX4 ? 4 : 8, CW = bits == 4 ? 32 : 16, CB = 2 * fmt_bits(fmt);
    if (fmt_gen(fmt)) pf_group(p + off, CB * cpg, pfw);
#pragma GCC unroll 8
    for (int c = 0; c < cpg; c++) {
        __m256i lo, hi;
        if (fmt_gen(fmt)) {
            lo = hi = gunpack(fmt_bits(fmt), p + off + CB * c, end);
        } else {
            pf_rows(1, &p, off + 16 * c, pfw);
            __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + off + 16 * c)));
            lo = bits == 4 ? _mm256_and_si256(v, lo4) : v;
            hi = _mm256_srli_epi16(v, 4);
        }
        if (fmt == F_MX4) lo = mx_val2(lo), hi = mx_val2(hi);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            is[t] = imadd(bits, is[t], lo, hi, xi[t] + xo + CW * c, c > 0);
            if (P == 2) il[t] = imadd(bits, il[t], lo, hi, xi[t] + K + xo + CW * c, c > 0);
        }
    }
}

#if CQ_AVX512
/* igroup for R rows at once, 32 code bytes per step (zpg steps per group;
 * affine 4-bit with gs >= 64 or mxfp4 with K % 64 == 0, x in CQ_X_I16_4W
 * order, or 8-bit): one 512-bit unpack, 4-bit: AND (the 32 even elements)
 * and SRL (the odd ones), vpdpwssd against x loaded once for the R rows (32
 * registers hold the R·NT·P sums zs, zl). 512-bit lane l < 8 sums what AVX2
 * lane l sums from the step's first 16 code bytes, lane 8 + l what it sums
 * from the second. mxfp4 (gs 32): a step is two groups, the first's sums in
 * the low lanes, the second's in the high ones (each exactly igroup's); a
 * nibble becomes 2·value by one vpermw from a table of signed words
 * (mx_val2's integers; 512-bit vpsignw does not exist). */
AI void igroup_z(int fmt, int R, int NT, int P, int zpg, const uint8_t *const *row, int64_t off, int64_t pfw,
                 const int16_t *const *xi, int64_t K, int64_t xo, __m512i zs[4][CQ_MAXT], __m512i zl[4][CQ_MAXT]) {
    const int four = fmt != F_A8, CZ = four ? 64 : 32; /* elements per 32 code bytes */
    /* mxfp4 nibble -> 2·value, by vpermw (the low 5 bits of each word index: entries 16-31 repeat 0-15) */
    const __m512i mxtab = _mm512_set_epi16(-12, -8, -6, -4, -3, -2, -1, 0, 12, 8, 6, 4, 3, 2, 1, 0,
                                           -12, -8, -6, -4, -3, -2, -1, 0, 12, 8, 6, 4, 3, 2, 1, 0);
#pragma GCC unroll 4
    for (int c = 0; c < zpg; c++) {
        pf_rows(R, row, off + 32 * c, pfw);
        __m512i xa[CQ_MAXT], xb[CQ_MAXT], la[CQ_MAXT], lb[CQ_MAXT]; /* x: even/odd halves, pieces */
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const int16_t *xp = xi[t] + xo + CZ * c;
            xa[t] = _mm512_loadu_si512(xp);
            if (four) xb[t] = _mm512_loadu_si512(xp + 32);
            if (P == 2) {
                la[t] = _mm512_loadu_si512(xp + K);
                if (four) lb[t] = _mm512_loadu_si512(xp + K + 32);
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(row[r] + off + 32 * c)));
            __m512i lo = four ? _mm512_and_si512(v, _mm512_set1_epi16(0x0F)) : v, hi = _mm512_srli_epi16(v, 4);
            if (fmt == F_MX4) lo = _mm512_permutexvar_epi16(lo, mxtab), hi = _mm512_permutexvar_epi16(hi, mxtab);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                zs[r][t] = c ? _mm512_dpwssd_epi32(zs[r][t], lo, xa[t]) : _mm512_madd_epi16(lo, xa[t]);
                if (four) zs[r][t] = _mm512_dpwssd_epi32(zs[r][t], hi, xb[t]);
                if (P == 2) {
                    zl[r][t] = c ? _mm512_dpwssd_epi32(zl[r][t], lo, la[t]) : _mm512_madd_epi16(lo, la[t]);
                    if (four) zl[r][t] = _mm512_dpwssd_epi32(zl[r][t], hi, lb[t]);
                }
            }
        }
    }
}
#endif

/* R rows from r0 × NT prepared rows (R = 4, NT = 1 at M = 1; R = 1,
 * NT = 1..4 when several slots share an expert: the codes are unpacked once
 * for all NT); bits, sdt, gs (= W->group_size), R, NT, P are compile-time
 * constants after inlining (the chunk loop of a group unrolls). Output (t, r)
 * goes to out[t*ostride + r]. Per (r, t), whatever R and NT:
 *   acc = Σ_g f32(is_g)·S_g [+ f32(il_g)·S_g·2^-15, P = 2] in group order
 *   (8 lanes; one FMA per group and piece), S_g = f32(s_g·sx_g), bias lane
 *   l = Σ b_g·Σx_g over g ≡ l (mod 8) in order, out = hsum(acc + bias).
 * The AVX-512 build's affine 512-bit steps keep 16 lanes instead (the sums of
 * the even and the odd 16-byte chunks apart, each its own chain: folding them
 * to 8 first cost ~20% of the M = 1 rate), acc = their two halves added
 * after the last group; the other paths are the AVX2 build's, bit for bit. */
AI void idot_rows(int fmt, zmlx_dtype sdt, int gs, int R, int NT, int P, int mxw, const zmlx_qweight *W,
                  int64_t e, int64_t r0, const cq_xrow *x, int ostride, float *out) {
    const int four = fmt == F_A4 || fmt == F_MX4, affine = fmt != F_MX4;
    const int gen = fmt_gen(fmt), bits = fmt_bits(fmt);
    const int CW = four ? 32 : 16, CB = gen ? 2 * bits : 16; /* elements, code bytes per chunk */
    const int cpg = gs / CW;
    /* 512-bit steps (igroup_z): whole 32-byte steps per group, or (mxfp4
       with mxw: x in CQ_X_I16_4W order, K % 64 == 0) two groups per step (GS
       groups); 4-bit codes from x in CQ_X_I16_4W order (cq_pick gives 4-bit
       gs >= 64 that form) */
    const int ZW = CQ_AVX512 && !gen && (affine ? cpg % 2 == 0 : mxw), GS = ZW && !affine ? 2 : 1;
    const uint8_t *const wend = zq_row_ptr(W, W->E, 0);
    const int64_t G = W->K / W->group_size;
    const size_t ss = affine ? zmlx_dtype_size(sdt) : 1;
    const int64_t pfw = 4 * W->K * bits / 8, pfs = 4 * G * (int64_t)ss;
    const uint8_t *row[4];
    const char *sp[4], *bp[4];
    const int16_t *xi[CQ_MAXT];
    int64_t lim[4]; /* scale/bias elements readable from sp[r] (to the array end) */
    __m256 acc[4][CQ_MAXT];
#if CQ_AVX512
    __m512 accz[4][CQ_MAXT]; /* the affine 512-bit steps' 16-lane chains */
#endif
    rows_at(W, e, r0, R, affine, ss, pfs, row, sp, bp, lim);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
#if CQ_AVX512
            accz[r][t] = _mm512_setzero_ps();
#endif
        }
    for (int t = 0; t < NT; t++) xi[t] = x[t].x;
    int64_t off = 0, xo = 0; /* byte offset in a row, element offset */
    __m256 bacc[4][CQ_MAXT];
    /* S: the first piece's scales, S2 = 2^-15·S the second's */
    float S[4][CQ_MAXT][8] __attribute__((aligned(32))), S2[4][CQ_MAXT][8] __attribute__((aligned(32)));
    float Sw[4][8] __attribute__((aligned(32)));
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) bacc[r][t] = _mm256_setzero_ps();
    for (int64_t g8 = 0; g8 < G; g8 += 8) {
        /* per 8 groups: the combined scales S = s_g·sx_g (f32 products) and
           the bias terms b_g·Σx_g, 8 lanes; past G the lanes are zero (scale
           and bias lanes masked, xsc/xs rows zero-padded to 8 groups) */
        const int ng = G - g8 < 8 ? (int)(G - g8) : 8;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 sv = ld8_part(sdt, sp[r], g8, ng, lim[r]);
            if (!affine) { /* 2^(e-128) (codes are 2·value), applied after sx: see below */
                _mm256_store_ps(Sw[r], _mm256_mul_ps(sv, _mm256_set1_ps(0.5f)));
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m256 xsc = _mm256_loadu_ps(x[t].xsc + g8);
                    _mm256_store_ps(S[r][t], xsc);
                    if (P == 2) _mm256_store_ps(S2[r][t], _mm256_mul_ps(xsc, _mm256_set1_ps(0x1p-15f)));
                }
                continue;
            }
            const __m256 bv = ld8_part(sdt, bp[r], g8, ng, lim[r]);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const __m256 st = _mm256_mul_ps(sv, _mm256_loadu_ps(x[t].xsc + g8));
                _mm256_store_ps(S[r][t], st);
                if (P == 2) _mm256_store_ps(S2[r][t], _mm256_mul_ps(st, _mm256_set1_ps(0x1p-15f)));
                bacc[r][t] = _mm256_fmadd_ps(bv, _mm256_loadu_ps(x[t].xs + g8), bacc[r][t]);
            }
        }
        for (int gi = 0; gi < ng; gi += GS, off += CB * cpg * GS, xo += CW * cpg * GS) {
            __m256i is[2][4][CQ_MAXT], il[2][4][CQ_MAXT]; /* [group of the step][row][token] */
#if CQ_AVX512
            if (ZW) {
                __m512i zs[4][CQ_MAXT], zl[4][CQ_MAXT];
                igroup_z(fmt, R, NT, P, affine ? cpg / 2 : 1, row, off, pfw, xi, W->K, xo, zs, zl);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++)
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++) {
                        if (affine) {
                            accz[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(zs[r][t]), _mm512_set1_ps(S[r][t][gi]),
                                                         accz[r][t]);
                            if (P == 2)
                                accz[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(zl[r][t]),
                                                             _mm512_set1_ps(S2[r][t][gi]), accz[r][t]);
                            continue;
                        }
                        /* mxfp4: group gi's sums in the low halves, gi + 1's in the high */
                        is[0][r][t] = _mm512_castsi512_si256(zs[r][t]);
                        is[1][r][t] = _mm512_extracti64x4_epi64(zs[r][t], 1);
                        if (P == 2) {
                            il[0][r][t] = _mm512_castsi512_si256(zl[r][t]);
                            il[1][r][t] = _mm512_extracti64x4_epi64(zl[r][t], 1);
                        }
                    }
                if (affine) continue;
            }
#endif
#pragma GCC unroll 2
            for (int h = 0; h < GS; h++)
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    if (!ZW) igroup(fmt, NT, P, cpg, row[r], off, pfw, xi, W->K, xo, wend, is[0][r], il[0][r]);
                    const int g = gi + h;
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++) {
                        if (affine) {
                            acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[h][r][t]),
                                                        _mm256_broadcast_ss(&S[r][t][g]), acc[r][t]);
                            if (P == 2)
                                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(il[h][r][t]),
                                                            _mm256_broadcast_ss(&S2[r][t][g]), acc[r][t]);
                            continue;
                        }
                        /* mxfp4 scales reach 2^-127: s·sx could be subnormal, so
                           sx first, then the power of two */
                        __m256 d = _mm256_mul_ps(_mm256_cvtepi32_ps(is[h][r][t]), _mm256_broadcast_ss(&S[r][t][g]));
                        if (P == 2)
                            d = _mm256_fmadd_ps(_mm256_cvtepi32_ps(il[h][r][t]), _mm256_broadcast_ss(&S2[r][t][g]), d);
                        acc[r][t] = _mm256_fmadd_ps(d, _mm256_broadcast_ss(&Sw[r][g]), acc[r][t]);
                    }
                }
        }
    }
    /* (every loop over r and t is unrolled so acc stays in registers) */
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
#if CQ_AVX512
            if (ZW && affine)
                acc[r][t] = _mm256_add_ps(_mm512_castps512_ps256(accz[r][t]), _mm512_extractf32x8_ps(accz[r][t], 1));
#endif
            out[t * ostride + r] = hsum(_mm256_add_ps(acc[r][t], bacc[r][t]));
        }
}

/* one instance per (format, scale dtype, group size, pieces, rows × tokens) */
AI void idot_gs(int fmt, zmlx_dtype sdt, int gs, int P, int mxw, const zmlx_qweight *W, int64_t e, int64_t r0,
                int nr, const cq_xrow *x, int nx, float *out) {
#define INT_ROWS(R, NT, r, o) idot_rows(fmt, sdt, gs, R, NT, P, mxw, W, e, r, x, nr, o)
    DOT_SHAPES(INT_ROWS, 1);
#undef INT_ROWS
}

AI void idot_sdt(int fmt, zmlx_dtype sdt, int P, const zmlx_qweight *W, int64_t e, int64_t r0, int nr,
                 const cq_xrow *x, int nx, float *out) {
    switch (W->group_size) {
    case 32: idot_gs(fmt, sdt, 32, P, 0, W, e, r0, nr, x, nx, out); break;
    case 64: idot_gs(fmt, sdt, 64, P, 0, W, e, r0, nr, x, nx, out); break;
    default: idot_gs(fmt, sdt, 128, P, 0, W, e, r0, nr, x, nx, out); break;
    }
}

/* affine: per scale dtype; mxfp4: E8M0 scales, group size 32 */
AI void idot_fmt(int fmt, int P, int mxw, const zmlx_qweight *W, int64_t e, int64_t r0, int nr,
                 const cq_xrow *x, int nx, float *out) {
    if (fmt == F_MX4) {
        idot_gs(F_MX4, ZMLX_U8, 32, P, mxw, W, e, r0, nr, x, nx, out);
        return;
    }
    if (fmt_gen(fmt)) { /* the scale dtype at run time: a third of the instances */
        idot_sdt(fmt, W->scale_dtype, P, W, e, r0, nr, x, nx, out);
        return;
    }
    switch (W->scale_dtype) {
    case ZMLX_F32: idot_sdt(fmt, ZMLX_F32, P, W, e, r0, nr, x, nx, out); break;
    case ZMLX_F16: idot_sdt(fmt, ZMLX_F16, P, W, e, r0, nr, x, nx, out); break;
    default: idot_sdt(fmt, ZMLX_BF16, P, W, e, r0, nr, x, nx, out); break;
    }
}

#define DEFINE_IDOT(name, fmt, P, mxw)                                                                   \
    static void name(const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x, int nx, \
                     float *out) {                                                                   \
        idot_fmt(fmt, P, mxw, W, e, r0, nr, x, nx, out);                                             \
    }
/* mxw: mxfp4 with x in CQ_X_I16_4W order (K % 64 == 0; AVX-512 build) */
DEFINE_IDOT(idot_a4, F_A4, 1, 0)
DEFINE_IDOT(idot_a8, F_A8, 1, 0)
DEFINE_IDOT(idot_mx4, F_MX4, 1, 0)
DEFINE_IDOT(idot_a4p2, F_A4, 2, 0)
DEFINE_IDOT(idot_a8p2, F_A8, 2, 0)
DEFINE_IDOT(idot_mx4p2, F_MX4, 2, 0)
DEFINE_IDOT(idot_a2, F_A2, 1, 0)
DEFINE_IDOT(idot_a3, F_A3, 1, 0)
DEFINE_IDOT(idot_a5, F_A5, 1, 0)
DEFINE_IDOT(idot_a6, F_A6, 1, 0)
DEFINE_IDOT(idot_a2p2, F_A2, 2, 0)
DEFINE_IDOT(idot_a3p2, F_A3, 2, 0)
DEFINE_IDOT(idot_a5p2, F_A5, 2, 0)
DEFINE_IDOT(idot_a6p2, F_A6, 2, 0)
#if CQ_AVX512
DEFINE_IDOT(idot_mx4w, F_MX4, 1, 1)
DEFINE_IDOT(idot_mx4wp2, F_MX4, 2, 1)
#else /* the AVX2 build keeps 16-byte steps and CQ_X_I16_4 */
#define idot_mx4w idot_mx4
#define idot_mx4wp2 idot_mx4p2
#endif

/* f32 dots of the affine 2/3/5/6-bit codes (fmt_gen), as dot_rows: each
 * code vector dequantized once, w = fma(f32(q), scale, bias), then acc +=
 * w·x for each of the NT tokens; x in natural order (CQ_X_F32), a chunk's 16
 * codes (gunpack) as two 8-lane vectors, the low one in chain 0 and the high
 * one in chain 1; out = hsum(chain0 + chain1). 256-bit in both builds, so
 * the AVX-512 build gives these bits too. */
AI void gdot_rows(int R, int NT, const zmlx_qweight *W, int64_t e, int64_t r0, const cq_xrow *x, int ostride,
                  float *out) {
    const zmlx_dtype sdt = W->scale_dtype;
    const int b = W->bits, CB = 2 * b, cpg = W->group_size / 16;
    const int64_t G = W->K / W->group_size;
    const size_t ss = zmlx_dtype_size(sdt);
    const int64_t pfw = 4 * W->K * b / 8, pfs = 4 * G * (int64_t)ss;
    const uint8_t *row[4], *const wend = zq_row_ptr(W, W->E, 0);
    const char *sp[4], *bp[4];
    int64_t lim[4];
    __m256 acc[4][CQ_MAXT][2];
    const float *xf[CQ_MAXT];
    rows_at(W, e, r0, R, 1, ss, pfs, row, sp, bp, lim);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
    for (int t = 0; t < NT; t++) xf[t] = x[t].x;
    int64_t off = 0, xo = 0;
    for (int64_t g = 0; g < G; g++) {
        __m256 sv[4], bv[4];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) chunk_sb(sdt, 0, 1, sp[r], bp[r], g, &sv[r], &bv[r]);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) pf_group(row[r] + off, CB * cpg, pfw);
        for (int c = 0; c < cpg; c++, off += CB, xo += 16) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const __m256i q = gunpack(b, row[r] + off, wend);
                const __m256 w0 = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(q))), sv[r], bv[r]);
                const __m256 w1 = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(q, 1))), sv[r], bv[r]);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    acc[r][t][0] = _mm256_fmadd_ps(w0, _mm256_load_ps(xf[t] + xo), acc[r][t][0]);
                    acc[r][t][1] = _mm256_fmadd_ps(w1, _mm256_load_ps(xf[t] + xo + 8), acc[r][t][1]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) out[t * ostride + r] = hsum(_mm256_add_ps(acc[r][t][0], acc[r][t][1]));
}

static void dot_ag(const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x, int nx, float *out) {
#define G_ROWS(R, NT, r, o) gdot_rows(R, NT, W, e, r, x, nr, o)
    DOT_SHAPES(G_ROWS, 1);
#undef G_ROWS
}

#if !CQ_AVX512
/* ------------------------------------------------------- GLU activations */

/* e^y for y <= 0 (or NaN), 8 lanes: y = n·ln2 + r with n = round(y·log2 e)
 * and ln2 in two parts (n·ln2_hi exact for |n| <= 150), e^r by its Taylor
 * polynomial to r^7 (|r| <= ~0.35: truncation < 2^-27 relative, Horner with
 * FMA), times 2^n as two powers of two, each >= 2^-75, so only the last
 * product can be subnormal. y < -104 (e^y below half the least subnormal)
 * gives 0; NaN stays NaN. Within ~2 ulp of e^y. */
static inline __m256 exp_nonpos8(__m256 y) {
    y = _mm256_max_ps(_mm256_set1_ps(-104.0f), y); /* a NaN y is the second operand: kept */
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693145752f), y);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-1.42860677e-6f), r);
    static const float c[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 8; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[i]));
    const __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

/* zr_sigmoid's form with exp_nonpos8: x >= 0: 1/(1 + e^-x), else e^x/(1 + e^x) */
static inline __m256 sigmoid8(__m256 x) {
    const __m256 t = exp_nonpos8(_mm256_or_ps(x, _mm256_set1_ps(-0.0f))); /* e^-|x| */
    const __m256 num = _mm256_blendv_ps(t, _mm256_set1_ps(1.0f), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
    return _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.0f), t));
}

/* zr_act's SwiGLU and SwiGLU-OAI, operation for operation, with sigmoid8;
 * x86 min/max return their second operand when either is NaN, so a NaN g
 * or u passes the clamps as in zr_act */
static inline __m256 act8(zmlx_act act, __m256 g, __m256 u) {
    if (act == ZMLX_ACT_SWIGLU_OAI) {
        g = _mm256_min_ps(_mm256_set1_ps(7.0f), g);
        u = _mm256_max_ps(_mm256_set1_ps(-7.0f), _mm256_min_ps(_mm256_set1_ps(7.0f), u));
        const __m256 s = sigmoid8(_mm256_mul_ps(_mm256_set1_ps(1.702f), g));
        return _mm256_mul_ps(_mm256_mul_ps(g, s), _mm256_add_ps(u, _mm256_set1_ps(1.0f)));
    }
    return _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), u);
}

void cq_act_avx2(zmlx_act act, const float *g, const float *u, int64_t n, float *h) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(h + i, act8(act, _mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i == n) return;
    float gt[8] = {0}, ut[8] = {0}, ht[8]; /* the tail: its lanes compute as any others */
    memcpy(gt, g + i, (size_t)(n - i) * sizeof *g);
    memcpy(ut, u + i, (size_t)(n - i) * sizeof *u);
    _mm256_storeu_ps(ht, act8(act, _mm256_loadu_ps(gt), _mm256_loadu_ps(ut)));
    memcpy(h + i, ht, (size_t)(n - i) * sizeof *h);
}
#endif

#if CQ_AVX512
/* ------------------------------------------------------------ bf16 dots */

/* The AVX512_BF16 instructions are confined to the functions so marked
 * (the build's other code runs on AVX-512 CPUs without them); cq_pick hands
 * them out only at CQ_ISA_AVX512_BF16. */
#define BF16_FN __attribute__((target("avx512bf16")))

/* 32 bf16 words of the 16 values v (entries 16-31 repeat 0-15: vpermw reads
 * the low 5 bits of each index, so a byte's unmasked low nibble picks its own
 * code). Exact: every value used has at most 4 significant bits. */
AI BF16_FN __m512i bf16_table(__m512 v) { return (__m512i)_mm512_cvtne2ps_pbh(v, v); }

/* One step of one row × NT tokens into the group sums a[t] (first: start
 * them from zero). 4-bit and mxfp4: 64 code bytes (128 elements) read as 32
 * 16-bit words, word k holding elements 4k..4k+3 in its nibbles; vector m =
 * vpermw of the words shifted right 4m holds element 4k + m in word k (the
 * table repeats, so the bits above the nibble pick the same value), and
 * CQ_X_BF16_4Q stores x that way (x vector m at xp + 32m). Lane j of every
 * vector then holds elements 8j..8j+7: lanes 0-7 the step's first 64
 * elements, 8-15 its last 64. half: a row's last 64 elements (K % 128 = 64),
 * in lanes 0-7 the same way (masked loads: lanes 8-15 sum zeros). 8-bit:
 * 32 code bytes, q = lo + 16·hi, two vectors against the same x (natural
 * order). No 8-bit instance is built now (CQ_PICK gives 8-bit the integer
 * dots), but its branches stay: without them GCC scheduled the 4-bit and
 * mxfp4 instances differently, ~15% slower at one slot (src/cpu/NOTES.md). */
AI BF16_FN void bstep(int four, int half, int NT, int first, const uint8_t *codes, const uint16_t *const *xb,
                      int64_t xo, __m512i tlo, __m512i thi, __m512 *a) {
    const int NV = four ? 4 : 2; /* code vectors per step */
    __m512bh w[4];
    if (four) {
        const __m512i v = half ? _mm512_maskz_loadu_epi8(0xFFFFFFFFull, codes) : _mm512_loadu_si512(codes);
#pragma GCC unroll 4
        for (int m = 0; m < NV; m++) w[m] = (__m512bh)_mm512_permutexvar_epi16(m ? _mm512_srli_epi16(v, 4 * m) : v, tlo);
    } else {
        const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)codes));
        w[0] = (__m512bh)_mm512_permutexvar_epi16(v, tlo);
        w[1] = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), thi);
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const uint16_t *xp = xb[t] + xo;
        /* From 2 tokens x is loaded here for each row, as memory operands: GCC otherwise keeps the NT·NV x
           vectors of a step in registers across the 4 rows and spills (4-bit 256 x 2048, one core, L2:
           2 / 4 tokens 104 / 113 -> 109 / 117 G MAC/s); at one token holding them is faster (80 against 66). */
        if (NT > 1) __asm__("" : "+r"(xp));
#pragma GCC unroll 4
        for (int m = 0; m < NV; m++) {
            const __m512bh xv = (__m512bh)(!four  ? _mm512_loadu_si512(xp)
                                           : half ? _mm512_maskz_loadu_epi16(0xFFFF, xp + 16 * m)
                                                  : _mm512_loadu_si512(xp + 32 * m));
            a[t] = _mm512_dpbf16_ps(first && !m ? _mm512_setzero_ps() : a[t], w[m], xv);
        }
    }
}

/* The steps of R rows × NT tokens that make the groups gi.. of this 8-group
 * chunk (one step of 128 / gs groups, or gs / 32 steps of one; half: the
 * row's last 64 elements), each row's sums scaled into tot at once. */
AI BF16_FN void bgroups(int four, int half, int R, int NT, int spg, int gps, const uint8_t *const *row, int64_t off,
                        const uint16_t *const *xb, int64_t xo, __m512i tlo, __m512i thi, const float (*S)[8], int gi,
                        __m512 tot[4][CQ_MAXT]) {
    const int SB = four ? 64 : 32, EZ = four ? 128 : 32; /* code bytes, elements per step */
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        __m512 a[CQ_MAXT];
#pragma GCC unroll 4
        for (int s = 0; s < spg; s++) bstep(four, half, NT, !s, row[r] + off + SB * s, xb, xo + EZ * s, tlo, thi, a);
        /* lane j's group scale: gi + j / (16 / gps), by masked broadcasts (loads; a vpermps of the 8
           scales cost ~15% at one slot) */
        __m512 sc = _mm512_set1_ps(S[r][gi]);
#pragma GCC unroll 4
        for (int q = 1; q < gps; q++)
            sc = _mm512_mask_broadcastss_ps(sc, (__mmask16)(0xFFFFu << (16 / gps * q)), _mm_load_ss(&S[r][gi + q]));
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            tot[r][t] = half ? _mm512_mask3_fmadd_ps(a[t], sc, tot[r][t], 0x00FF) : _mm512_fmadd_ps(a[t], sc, tot[r][t]);
    }
}

/* R rows from r0 × NT bf16 activation rows (R = 4 at up to CQ_MAXT tokens;
 * fmt, sdt, gs, R, NT compile-time). T = bf16 only: x is its own values, so
 * nothing is quantized. A step (bstep) turns a row's codes into bf16 words
 * by vpermw and takes per token one vdpbf16ps per 32 elements: each of 16
 * f32 lanes adds two exact products (a code value has <= 4 significant
 * bits, x 8). Per (row, token), whatever R and NT:
 *   a = Σ over a group's steps (8-bit gs 64 / 128: 2 / 4 steps; 4-bit a step
 *       holds 128 / gs groups, lane j's group the (8j / gs)-th)
 *   tot = fma(a, s, tot) per step, s each lane's group scale (mxfp4:
 *       2^(e-127), possibly subnormal, applied in one rounding); a half
 *       step's lanes 8-15 are left as they are
 *   out = hsum(low half + high half of tot + bias lanes), bias lane l =
 *       Σ b_g·Σx_g over g ≡ l (mod 8) in order (affine, Σx of the row).
 * vdpbf16ps ignores MXCSR: it reads subnormal inputs (|x| < 2^-126) as zero
 * and flushes subnormal sums to zero, rounding to nearest-even otherwise;
 * those are its only departures from exact products summed in f32, each
 * below 2^-126 absolute. One scale FMA per 128 elements (4-bit gs <= 64:
 * half or a quarter of one per group) keeps the FMA pipes for the dots. */
AI BF16_FN void bdot_rows(int fmt, zmlx_dtype sdt, int gs, int R, int NT, const zmlx_qweight *W, int64_t e,
                          int64_t r0, const cq_xrow *x, int ostride, float *out) {
    const int four = fmt != F_A8, affine = fmt != F_MX4;
    const int SB = four ? 64 : 32, EZ = four ? 128 : 32; /* code bytes, elements per step */
    const int gps = EZ > gs ? EZ / gs : 1;               /* groups per step */
    const int spg = gs > EZ ? gs / EZ : 1;               /* steps per group */
    const int64_t G = W->K / gs;
    const size_t ss = affine ? zmlx_dtype_size(sdt) : 1;
    /* prefetch distance: whole 4-row blocks, at least 8 KB (streamed, one
       thread, 1 / 2 slots: K = 768 34 / 62 -> 42-46 / 71-76 G MAC/s,
       K = 2048 53 -> 55-58 at one slot; 4 KB or 4 rows did less) */
    const int64_t pfb = 4 * W->K * (four ? 4 : 8) / 8, pfw = pfb * ((8192 + pfb - 1) / pfb);
    const uint8_t *row[4];
    const char *sp[4], *bp[4];
    int64_t lim[4];
    rows_at(W, e, r0, R, affine, ss, 4 * G * (int64_t)ss, row, sp, bp, lim);
    const __m512 vals = fmt == F_MX4 ? _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f,
                                                      -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f)
                                     : _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i tlo = bf16_table(vals), thi = fmt == F_A8 ? bf16_table(_mm512_mul_ps(vals, _mm512_set1_ps(16))) : tlo;
    const uint16_t *xb[CQ_MAXT];
    __m512 tot[4][CQ_MAXT];
    __m256 bacc[4][CQ_MAXT];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        xb[t] = x[t].x;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) tot[r][t] = _mm512_setzero_ps(), bacc[r][t] = _mm256_setzero_ps();
    }
    float S[4][8] __attribute__((aligned(32))); /* the 8 groups' scales of each row, f32 */
    int64_t off = 0, xo = 0;                    /* code byte offset in a row, element offset in x */
    for (int64_t g8 = 0; g8 < G; g8 += 8) {
        const int ng = G - g8 < 8 ? (int)(G - g8) : 8;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            _mm256_store_ps(S[r], ld8_part(affine ? sdt : ZMLX_U8, sp[r], g8, ng, lim[r]));
            if (!affine) continue;
            const __m256 bv = ld8_part(sdt, bp[r], g8, ng, lim[r]);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) bacc[r][t] = _mm256_fmadd_ps(bv, _mm256_loadu_ps(x[t].xs + g8), bacc[r][t]);
        }
        int gi = 0;
        for (; gi + gps <= ng; gi += gps, off += SB * spg, xo += EZ * spg) {
            for (int s = 0; s < spg; s++) pf_rows(R, row, off + SB * s, pfw);
            bgroups(four, 0, R, NT, spg, gps, row, off, xb, xo, tlo, thi, S, gi, tot);
        }
        /* a 4-bit row's last 64 elements when K % 128 = 64 (fewer groups than a step holds) */
        if (gi < ng) bgroups(four, 1, R, NT, 1, gps, row, off, xb, xo, tlo, thi, S, gi, tot);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const __m256 t8 = _mm256_add_ps(_mm512_castps512_ps256(tot[r][t]), _mm512_extractf32x8_ps(tot[r][t], 1));
            out[t * ostride + r] = hsum(_mm256_add_ps(t8, bacc[r][t]));
        }
}

/* one instance per (format, scale dtype, group size, rows × tokens) */
AI BF16_FN void bdot_gs(int fmt, zmlx_dtype sdt, int gs, const zmlx_qweight *W, int64_t e, int64_t r0, int nr,
                        const cq_xrow *x, int nx, float *out) {
#define BF_ROWS(R, NT, r, o) bdot_rows(fmt, sdt, gs, R, NT, W, e, r, x, nr, o)
    DOT_SHAPES(BF_ROWS, CQ_MAXT);
#undef BF_ROWS
}

/* affine: per scale dtype and group size (32, 64, 128); mxfp4: E8M0, gs 32 */
AI BF16_FN void bdot_fmt(int fmt, const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x, int nx,
                         float *out) {
    if (fmt == F_MX4) {
        bdot_gs(F_MX4, ZMLX_U8, 32, W, e, r0, nr, x, nx, out);
        return;
    }
#define BF_SDT(sdt)                                                    \
    switch (W->group_size) {                                           \
    case 32: bdot_gs(fmt, sdt, 32, W, e, r0, nr, x, nx, out); break;  \
    case 64: bdot_gs(fmt, sdt, 64, W, e, r0, nr, x, nx, out); break;  \
    default: bdot_gs(fmt, sdt, 128, W, e, r0, nr, x, nx, out); break; \
    }
    switch (W->scale_dtype) {
    case ZMLX_F32: BF_SDT(ZMLX_F32); break;
    case ZMLX_F16: BF_SDT(ZMLX_F16); break;
    default: BF_SDT(ZMLX_BF16); break;
    }
#undef BF_SDT
}
/* (bdot_gs / bdot_fmt repeat idot_gs / idot_fmt's dispatch because a
   target("avx512bf16") function cannot be inlined into one without it) */

#define DEFINE_BDOT(name, fmt)                                                                                \
    static BF16_FN void name(const zmlx_qweight *W, int64_t e, int64_t r0, int nr, const cq_xrow *x, int nx, \
                             float *out) {                                                                    \
        bdot_fmt(fmt, W, e, r0, nr, x, nx, out);                                                              \
    }
DEFINE_BDOT(bdot_a4, F_A4)
DEFINE_BDOT(bdot_mx4, F_MX4)
#endif

static const cq_kernel k_a4 = {dot_a4, 4, CQ_X_F32_L4, 0};
static const cq_kernel k_a8 = {dot_a8, 4, CQ_X_F32_L8, 0};
static const cq_kernel k_mx4 = {dot_mx4, 4, CQ_X_F32_L4, 0};
/* integer dots, 4-bit [gs >= 64][pieces - 1]: the AVX-512 build's 512-bit
   steps take x for gs >= 64 in CQ_X_I16_4W order (whole 64-element blocks);
   8-bit [pieces - 1] */
#define I16_4W (CQ_AVX512 ? CQ_X_I16_4W : CQ_X_I16_4)
static const cq_kernel k_ia4[2][2] = {{{idot_a4, 4, CQ_X_I16_4, 1}, {idot_a4p2, 4, CQ_X_I16_4, 2}},
                                      {{idot_a4, 4, I16_4W, 1}, {idot_a4p2, 4, I16_4W, 2}}};
static const cq_kernel k_ia8[2] = {{idot_a8, 4, CQ_X_I16_8, 1}, {idot_a8p2, 4, CQ_X_I16_8, 2}};
/* affine 2/3/5/6-bit: integer [pieces - 1], f32 */
static const cq_kernel k_iag[4][2] = {{{idot_a2, 4, CQ_X_I16_8, 1}, {idot_a2p2, 4, CQ_X_I16_8, 2}},
                                      {{idot_a3, 4, CQ_X_I16_8, 1}, {idot_a3p2, 4, CQ_X_I16_8, 2}},
                                      {{idot_a5, 4, CQ_X_I16_8, 1}, {idot_a5p2, 4, CQ_X_I16_8, 2}},
                                      {{idot_a6, 4, CQ_X_I16_8, 1}, {idot_a6p2, 4, CQ_X_I16_8, 2}}};
static const cq_kernel k_ag = {dot_ag, 4, CQ_X_F32, 0};
/* mxfp4 [K % 64 == 0][pieces - 1] (the AVX-512 build's two-group steps) */
static const cq_kernel k_imx4[2][2] = {{{idot_mx4, 4, CQ_X_I16_4, 1}, {idot_mx4p2, 4, CQ_X_I16_4, 2}},
                                       {{idot_mx4w, 4, I16_4W, 1}, {idot_mx4wp2, 4, I16_4W, 2}}};

#if CQ_AVX512
/* bf16 dots: affine 4-bit, mxfp4 */
static const cq_kernel k_ba4 = {bdot_a4, 4, CQ_X_BF16_4Q, 0};
static const cq_kernel k_bmx4 = {bdot_mx4, 4, CQ_X_BF16_4Q, 0};
#endif

const cq_kernel *CQ_PICK(const zmlx_qweight *W, zmlx_dtype T) {
    if (!W->transpose) return NULL;
    /* the integer and the f32 dots for W's format and shape (NULL: none); the
       integer dots have instances for group sizes 32, 64, 128 */
    const int p = cq_xpieces() - 1, affine = W->mode == ZMLX_QMODE_AFFINE;
    const int gsok = W->group_size == 32 || W->group_size == 64 || W->group_size == 128;
    const cq_kernel *ki = NULL, *kf = NULL;
    if (affine && W->bits == 4 && W->K % 64 == 0) ki = &k_ia4[W->group_size >= 64][p], kf = &k_a4;
    if (affine && W->bits == 8 && W->K % 32 == 0) ki = &k_ia8[p], kf = &k_a8;
    if (affine && gu_row(W->bits) >= 0 && gsok) ki = &k_iag[gu_row(W->bits)][p], kf = &k_ag;
    if (W->mode == ZMLX_QMODE_MXFP4) {
        ki = W->K % 32 == 0 ? &k_imx4[W->K % 64 == 0][p] : NULL;
        kf = W->K % 64 == 0 ? &k_mx4 : NULL;
    }
    if (!gsok) ki = NULL;
    const cq_xint xm = cq_xint_mode();
#if CQ_AVX512
    /* T = bf16 at the AVX512_BF16 level: the bf16 dots (exact products, x
       unquantized) for 4-bit and mxfp4, faster than both other families at
       every run size on Zen 5, unless the integer mode is forced. (8-bit had
       them too, for its shared runs; with one kernel for every run its
       decode layer ran 5-30% slower on them than on the integer dots, whose
       step is one unpack against three: src/cpu/NOTES.md) */
    if (xm == CQ_XINT_AUTO && T == ZMLX_BF16 && gsok && cq_isa_active() >= CQ_ISA_AVX512_BF16) {
        if (affine && W->bits == 4 && W->K % 64 == 0) return &k_ba4;
        if (W->mode == ZMLX_QMODE_MXFP4 && W->K % 64 == 0) return &k_bmx4;
    }
#endif
    /* one family for every run of a call, whatever its slots share: a slot's
       bits never depend on the other tokens of the call (a prefill chunk
       gives the bits of its tokens one at a time) */
    if (xm == CQ_XINT_ALL || (xm == CQ_XINT_AUTO && T != ZMLX_F32)) return ki ? ki : kf;
    return kf;
}
