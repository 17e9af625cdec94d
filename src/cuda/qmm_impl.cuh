/*
 * qmm_impl.cuh — the expert matmul kernels on the GPU: gather_qmm, gather_qmm_swiglu,
 * gather_qmm_combine, their unfused halves glu_act and moe_combine, and the
 * quantized embedding lookup.
 *
 * Four kernel families, chosen by one rule (qmm_path) that depends only on
 * (T, n_tok, the weight's format and shape), so a fused call and its unfused
 * chain always take the same family and round at the same points (a packed
 * matrix and its row blocks may not: run_qkv_parts):
 *  MMV   transpose=1, affine with groups of a multiple of 64 or mxfp4, K % 64 == 0,
 *        T=bf16/f16, n_tok below a threshold: tensor-core GEMV, 16 weight rows
 *        x 8 pairs per warp (see the MMV section).
 *  GEMV  transpose=1, small M, formats MMV does not serve (or T=f32): a warp per (token×slot, rows); every
 *        lane owns chunks c = lane + 32i of the row, accumulates
 *        s·Σ(x·q) + b·Σx per chunk in f32, then a fixed xor-butterfly shuffle
 *        tree. One routine (qdot_rows) serves 1..NR rows at once with
 *        per-row arithmetic that does not depend on NR, so the fused kernels
 *        (gate+up sharing x; k slots of the down projection in flight) equal
 *        the unfused ones bit for bit.
 *  MMA   transpose=1, T=bf16/f16, n_tok >= threshold: the (token,slot) pairs
 *        are counting-sorted by expert on the device (one small kernel), then
 *        64×64 output tiles per expert: x rows gathered and weights
 *        dequantized to T in shared memory, mma.sync m16n8k16 with f32
 *        accumulation. The large-M combine writes y to scratch and runs the
 *        same combine kernel as moe_combine.
 *  COLS  transpose=0 (stored [E,K,N]): a thread per (pair, chunk of
 *        consecutive outputs) walks K in order.
 * No float atomics anywhere: every output element is written by one thread.
 *
 * Everything is templated on the activation type; qmm_f32.cu, qmm_f16.cu and
 * qmm_bf16.cu each instantiate one type (qmm_run<TT>), so the heavy
 * instantiation compiles in parallel; qmm_cuda.cu holds the entry points.
 */
#ifndef ZMLX_QMM_IMPL_CUH
#define ZMLX_QMM_IMPL_CUH
#include "cuda/rows.cuh"

#include <algorithm>
#include <cooperative_groups.h>
#include <type_traits>

/* Token-count thresholds (ENV_TOKENS_KNOB, cuda_internal.cuh):
 * ZMLX_CUDA_MMA_MIN_TOKENS  n_tok from which transpose=1 bf16/f16 matmuls of
 *                           the formats MMV does not serve use the MMA path;
 * ZMLX_CUDA_MMV_MAX_TOKENS  n_tok from which the MMV formats use it too
 *                           (default per format: mmv_max_tokens);
 * ZMLX_CUDA_MMV_DENSE_MAX_TOKENS the same for dense matrices (E = 1) of
 *                           fewer than MMV_DENSE_ROWS rows (before the one
 *                           above; default per format: mmv_max_tokens);
 * ZMLX_CUDA_MMV_SORT_TOKENS n_tok from which the MMV path groups the pairs by
 *                           expert (8 per tile) instead of one pair per tile;
 * ZMLX_CUDA_MMV_COMBINE_TOKENS n_tok from which the fused down + combine of
 *                           the MMV formats runs as the unfused chain (y to
 *                           scratch, then k_combine) instead of k_mmv_combine;
 * ZMLX_CUDA_MMV_STREAM_TOKENS n_tok from which the experts' MMV matmuls that
 *                           fit it run as a stream (k_mmv_stream);
 * ZMLX_CUDA_MMV_WARP_STEPS steps per K range up to which the experts' MMV
 *                           matmuls in sorted tiles (KS = 4) run as
 *                           k_mmv_warp (a warp per row block, every K range)
 *                           instead of k_mmv;
 * ZMLX_CUDA_MMV_HALF_TOKENS n_tok from which the fast MMV variant loads a
 *                           dense (E = 1) matrix's steps in batches of MMV_U / 2
 *                           (experts always; same arithmetic);
 * ZMLX_CUDA_QKV_STEP_TOKENS n_tok from which attention_step with its
 *                           projection runs gather_qmm and the prep kernel
 *                           instead of k_mmv_qkv (which serves one token, so
 *                           1 turns it off; the same bits either way). */
ENV_TOKENS_KNOB(mma_min_tokens, "ZMLX_CUDA_MMA_MIN_TOKENS", 8)
ENV_TOKENS_KNOB(mmv_max_tokens_env, "ZMLX_CUDA_MMV_MAX_TOKENS", 0)
ENV_TOKENS_KNOB(mmv_dense_max_tokens_env, "ZMLX_CUDA_MMV_DENSE_MAX_TOKENS", 0)
ENV_TOKENS_KNOB(mmv_sort_tokens, "ZMLX_CUDA_MMV_SORT_TOKENS", 8)
ENV_TOKENS_KNOB(mmv_combine_tokens, "ZMLX_CUDA_MMV_COMBINE_TOKENS", 2)
ENV_TOKENS_KNOB(mmv_stream_tokens, "ZMLX_CUDA_MMV_STREAM_TOKENS", 8)
ENV_TOKENS_KNOB(mmv_warp_steps, "ZMLX_CUDA_MMV_WARP_STEPS", 4)
ENV_TOKENS_KNOB(mmv_half_tokens, "ZMLX_CUDA_MMV_HALF_TOKENS", 2)
ENV_TOKENS_KNOB(qkv_step_tokens, "ZMLX_CUDA_QKV_STEP_TOKENS", 2)

enum { PATH_GEMV, PATH_MMA, PATH_COLS, PATH_MMV };
/* E bound of the device counting sort (its histogram lives in shared memory);
 * MMA tiles; MMV tiles: 8 pairs (the n8 of mma.m16n8k16) */
enum { SORT_MAX_E = 4096, TILE_M = 64, TILE_N = 64, TILE_K = 64, MMV_TILE = 8 };
/* A dense (E = 1) matmul whose MMA grid would have fewer tiles than this
 * stays on the GEMV path below MMA_DENSE_TOKENS tokens: the 8-bit router
 * (N = 128) at 16 tokens was 2 MMA blocks taking 65 us on an H200, its GEMV
 * ~6 us (NOTES.md "Router and sort at M >= 16"). The GEMV grows with the
 * tokens (the router at 2048: 378 us alone, ncu) while a grid of under one
 * wave does not: at 128 tiles (one per SM, the first rule) the 512-row k/v
 * projections of 8-bit models stayed on the GEMV at 512 tokens, and 16 tiles
 * measured prefill 1.67x faster for an 8-bit Qwen3 and 3% for a 4-bit one (its
 * 8-bit router; NOTES.md v31). From 1024 tokens (prefill chunks below it keep
 * such a matrix in its one-token family) the MMA path takes them all. */
enum { MMA_MIN_TILES = 16, MMA_DENSE_TOKENS = 1024 };

/* MMV serves bf16/f16 activations and affine weights with groups of a
 * multiple of 64 (every 64-column step lies inside one group) or mxfp4 (a
 * step holds two groups of 32) with K % 64 == 0 and K < 2^24 (mmv_fast_mx's
 * 32-bit offsets; affine's generic variants have none). Affine widths other
 * than 4 serve the experts and dense matrices of at least MMV_DENSE_ROWS
 * rows (an LM head): a dense matrix's rows are known before the PDL wait,
 * and k_gemv loads its first pass then, which the generic variants do not;
 * on the 8-bit routers and the q/k/v and o projections they measured slower
 * than k_gemv (NOTES.md v31). In groups of 64 every width has a fast form
 * (mmv_fast_w) that loads before the wait: 8- and 3-bit dense matrices of at
 * least MMV_W_DENSE_ROWS rows take it (the attention blocks of a step on the
 * H200: 8-bit model 1474 -> 1157 us, NOTES.md v32, its 128-row routers ~0.7
 * us a layer slower on it; 3-bit 1322 -> 1272). 6-bit ones measured slower
 * (1384 -> 1806, NOTES.md v33); 2 and 5 bits not measured. */
enum { MMV_DENSE_ROWS = 65536, MMV_W_DENSE_ROWS = 512 };
static bool mmv_ok(const zmlx_qweight *W, zmlx_dtype T) {
    if (T == ZMLX_F32) return false;
    if (W->mode == ZMLX_QMODE_MXFP4) return W->K % 64 == 0 && W->K < ((int64_t)1 << 24);
    if (W->mode != ZMLX_QMODE_AFFINE || W->group_size % 64 != 0) return false;
    if ((W->bits == 8 || W->bits == 3) && W->group_size == 64 && W->N >= MMV_W_DENSE_ROWS) return true;
    return W->bits == 4 || W->E > 1 || W->N >= MMV_DENSE_ROWS;
}

/* n_tok from which an MMV format takes the MMA path. Measured on the H200
 * (MoE layer us, MMV against MMA): Qwen3 (affine 4-bit, k_mma_mmv: the same
 * bits either way, NOTES.md v24) 459 / 638 / 820 / 1186 / 1430 against 556 /
 * 614 / 694 / 877 / 991 at 256 / 384 / 512 / 768 / 1024 tokens; GPT-OSS
 * (mxfp4, k_mma, v21) 468 / 818 / 1189 / 1527 against 814 / 866 / 932 /
 * 1260 at 128 / 256 / 384 / 512; the other affine widths (generic variants
 * against k_mma, Qwen3, v31): 8-bit 875 / 1009 against 890 / 909 at 160 /
 * 192, 6-bit 939 / 1043 against 965 / 979 at 224 / 256, 3-bit 904 / 1081
 * against 934 / 960 at 256 / 320; 8-bit on its fast variant (v32) 856 / 972 /
 * 1063 against 996 / 1022 / 1021 at 384 / 448 / 512, but the whole 8-bit
 * model's prefill of 320-448 tokens measured 7-13% slower with its experts on
 * MMV than on k_mma, so 8-bit keeps 288 (not explained). A dense matrix's MMV
 * re-reads its weights for every 8 tokens, so it leaves MMV earlier: the
 * whole model's prefill of P tokens (one chunk; H200, full-size Qwen3, tok/s
 * with q/k/v/o on MMV against MMA) 4-bit 6940 / 7171 / 7715 against 6740 /
 * 7493 / 8659 at P = 128 / 160 / 256, 8-bit 5798 / 5926 / 6048 against 5569
 * / 5920 / 6268 at 192 / 224 / 256 (NOTES.md v32). */
static int64_t mmv_max_tokens(const zmlx_qweight *W) {
    const bool dense = W->E == 1 && W->N < MMV_DENSE_ROWS, affine = W->mode == ZMLX_QMODE_AFFINE;
    if (dense && mmv_dense_max_tokens_env() > 0) return mmv_dense_max_tokens_env();
    if (mmv_max_tokens_env() > 0) return mmv_max_tokens_env();
    if (dense && affine) return W->bits == 4 ? 144 : 224; /* 8 and 3 bits (mmv_ok); 224 measured for 8 */
    if (!affine) return 320; /* mxfp4 */
    return W->bits == 4 ? 384 : W->bits <= 3 || W->bits == 8 ? 288 : 240;
}

static int qmm_path(const zmlx_qweight *W, zmlx_dtype T, int64_t n_tok) {
    if (!W->transpose) return PATH_COLS;
    if (T == ZMLX_F32 || W->K % 32 != 0 || W->E > SORT_MAX_E) return PATH_GEMV;
    if (mmv_ok(W, T)) return n_tok < mmv_max_tokens(W) ? PATH_MMV : PATH_MMA;
    if (W->E == 1 && n_tok < MMA_DENSE_TOKENS &&
        (n_tok + TILE_M - 1) / TILE_M * ((W->N + TILE_N - 1) / TILE_N) < MMA_MIN_TILES)
        return PATH_GEMV;
    return n_tok < mma_min_tokens() ? PATH_GEMV : PATH_MMA;
}

/* chunk length: 32 elements, or 16 for nvfp4 rows of odd multiples of 16 */
static int chunk_of(const zcu_qw &q) { return q.cols % 32 == 0 ? 32 : 16; }

/* ------------------------------------------------------------- loads */

/* CH activations of row p starting at column c0, as f32. */
template <int CH>
__device__ __forceinline__ void ldx(const float *p, float (&v)[CH]) {
    if (((uintptr_t)p & 15) == 0) {
#pragma unroll
        for (int i = 0; i < CH / 4; i++) {
            float4 f = __ldg((const float4 *)p + i);
            v[4 * i] = f.x; v[4 * i + 1] = f.y; v[4 * i + 2] = f.z; v[4 * i + 3] = f.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < CH; i++) v[i] = p[i];
    }
}
template <int CH, typename H>
__device__ __forceinline__ void ldx(const H *p, float (&v)[CH]) {
    if (((uintptr_t)p & 15) == 0) {
#pragma unroll
        for (int i = 0; i < CH / 8; i++) {
            uint4 u = __ldg((const uint4 *)p + i);
            const H *h = (const H *)&u;
#pragma unroll
            for (int j = 0; j < 8; j++) v[8 * i + j] = zcu_ld(h, j);
        }
    } else {
#pragma unroll
        for (int i = 0; i < CH; i++) v[i] = zcu_ld(p, i);
    }
}

/* --------------------------------------------------------- GEMV core */

/* Scale and bias of each of the CH/SUB groups of chunk c of one row (loaded
 * ahead of the words, so that they are in flight together). */
template <int MODE, int CH>
__device__ __forceinline__ void chunk_groups(const zcu_qw &q, int64_t row, int64_t c,
                                             float (&s)[CH / ZCU_SUB(MODE, CH)],
                                             float (&b)[CH / ZCU_SUB(MODE, CH)]) {
    constexpr int SUB = ZCU_SUB(MODE, CH);
#pragma unroll
    for (int g = 0; g < CH / SUB; g++) zcu_group(q, row * q.gpr + ((c * CH + g * SUB) >> q.gs_lg), s[g], b[g]);
}

/* Contribution of one chunk (words w, activations xv, its groups' s and b)
 * of one row: Σ over its groups of s·Σ(x·q) + b·Σx (affine) or s·Σ(x·elem) (fp). */
template <int MODE, int BITS, int CH>
__device__ __forceinline__ float chunk_dot(const float (&s)[CH / ZCU_SUB(MODE, CH)],
                                           const float (&b)[CH / ZCU_SUB(MODE, CH)],
                                           const uint32_t (&w)[CH * BITS / 32],
                                           const float (&xv)[CH], float acc) {
    constexpr int NW = CH * BITS / 32, SUB = ZCU_SUB(MODE, CH);
#pragma unroll
    for (int g0 = 0; g0 < CH; g0 += SUB) {
        float sxq = 0.0f, sx = 0.0f;
#pragma unroll
        for (int j = g0; j < g0 + SUB; j++) {
            float e = zcu_elem<MODE, BITS>(zcu_code<BITS, NW>(w, j));
            sxq = __fmaf_rn(xv[j], e, sxq);
            if (MODE == ZMLX_QMODE_AFFINE) sx = __fadd_rn(sx, xv[j]);
        }
        const float sg = s[g0 / SUB], bg = b[g0 / SUB];
        float part = MODE == ZMLX_QMODE_AFFINE ? __fadd_rn(__fmul_rn(sg, sxq), __fmul_rn(bg, sx))
                                               : __fmul_rn(sg, sxq);
        acc = __fadd_rn(acc, part);
    }
    return acc;
}

/* The fixed reduction tree: xor butterfly 16, 8, 4, 2, 1. a+b == b+a in IEEE,
 * so every lane ends with the same bits. */
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* res[r] = x_r · row_r for NR rows (row[r] < 0: skipped, res 0), by one
 * warp. A pass covers U chunks per lane (c, c+32, .. c+32(U-1)): the scales
 * and weight words of all NR x U chunks are loaded before any arithmetic, so
 * one memory round trip serves U chunks. The per-row sum runs over the lane's
 * chunks in ascending order whatever NR and U, so results do not depend on
 * them. begin() loads the first pass, run() computes it and the rest: a dense
 * weight's kernel calls begin() before its PDL wait. */
template <typename TT, int MODE, int BITS, int CH, int NR, int U>
struct qdot_rows {
    static constexpr int NW = CH * BITS / 32, NG = CH / ZCU_SUB(MODE, CH);
    int64_t c0, nch;
    uint32_t w[NR][U][NW];
    float s[NR][U][NG], b[NR][U][NG];

    __device__ __forceinline__ void load(const zcu_qw (&q)[NR], const int64_t (&row)[NR]) {
#pragma unroll
        for (int r = 0; r < NR; r++)
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int64_t c = c0 + 32 * u;
                if (row[r] < 0 || c >= nch) continue;
                chunk_groups<MODE, CH>(q[r], row[r], c, s[r][u], b[r][u]);
                zcu_ldchunk<NW>(q[r].w + row[r] * q[r].row_bytes + c * (NW * 4), w[r][u]);
            }
    }
    __device__ __forceinline__ void begin(const zcu_qw (&q)[NR], const int64_t (&row)[NR], int lane) {
        nch = q[0].cols / CH;
        c0 = lane;
        load(q, row);
    }
    __device__ __forceinline__ void run(const zcu_qw (&q)[NR], const TT *const (&xr)[NR], const int64_t (&row)[NR],
                                        float (&res)[NR]) {
        float acc[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) acc[r] = 0.0f;
        while (c0 < nch) {
#pragma unroll
            for (int r = 0; r < NR; r++)
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int64_t c = c0 + 32 * u;
                    if (row[r] < 0 || c >= nch) continue;
                    float xv[CH];
                    ldx<CH>(xr[r] + c * CH, xv);
                    acc[r] = chunk_dot<MODE, BITS, CH>(s[r][u], b[r][u], w[r][u], xv, acc[r]);
                }
            c0 += 32 * U;
            if (c0 < nch) load(q, row);
        }
#pragma unroll
        for (int r = 0; r < NR; r++) res[r] = warp_sum(acc[r]);
    }
};

/* Chunks per lane per pass of the plain GEMV (one row per warp; v1 had two
 * rows x one chunk: same bytes in flight, half the warps). */
enum { GEMV_U = 2, WARPS = 8 };

/* Unfused gather_qmm (y) or fused gate/up + act (h): warp -> (pair, row n).
 * Fused: row n of Wg and of Wu (NR=2, one chunk per pass); plain: row n of W
 * (NR=1, GEMV_U chunks per pass). */
template <typename TT, int MODE, int BITS, int CH, bool FUSED>
__global__ void __launch_bounds__(WARPS * 32)
k_gemv(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, const int32_t *idx, int k,
       int64_t n_pairs, int act, TT *y) {
    constexpr int NR = FUSED ? 2 : 1;
    const int lane = threadIdx.x & 31;
    const int64_t N = qa.rows;
    const int64_t wid = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5), p = wid / N, n0 = wid % N;
    const bool live = wid < n_pairs * N;
    zcu_qw q[NR];
    int64_t row[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) q[r] = r ? qb : qa, row[r] = n0;
    qdot_rows<TT, MODE, BITS, CH, NR, FUSED ? 1 : GEMV_U> dot;
    /* a dense weight (the routers): its row is known before the wait, so it
       is pulled into L2 and its first pass into registers while the previous
       kernel runs */
    if (!idx && live) {
#pragma unroll
        for (int r = 0; r < NR; r++) zcu_prefetch_l2(q[r].w + n0 * q[r].row_bytes, q[r].row_bytes, lane, 32);
        dot.begin(q, row, lane);
    }
    zcu_pdl_entry();
    if (!live) return;
    if (idx) {
        const int64_t e = zcu_expert(idx, p, qa.E);
#pragma unroll
        for (int r = 0; r < NR; r++) row[r] = e * N + n0;
        dot.begin(q, row, lane);
    }
    const TT *xrow = x + (x_per_slot ? p : p / k) * qa.cols;
    const TT *xr[NR];
    float res[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) xr[r] = xrow;
    dot.run(q, xr, row, res);
    if (lane) return;
    if (FUSED) {
        float g = zcu_round(y, res[0]), u = zcu_round(y, res[NR - 1]);
        zcu_st(y, p * N + n0, zcu_act(act, g, u));
    } else {
        zcu_st(y, p * N + n0, res[0]);
    }
}

/* ------------------------------------------------------ COLS (transpose=0) */

/* acc[j] = Σ_kk x[kk]·w[kk][n0+j] over kk = 0..K-1 in order, for the CH
 * consecutive outputs n0.. of expert e (stored [E, K, N], groups along N). */
template <typename TT, int MODE, int BITS, int CH>
__device__ __forceinline__ void qdot_cols(const zcu_qw &q, const TT *x, int64_t e, int64_t n0,
                                          float (&acc)[CH]) {
#pragma unroll
    for (int j = 0; j < CH; j++) acc[j] = 0.0f;
    const int64_t K = q.rows;
    for (int64_t kk = 0; kk < K; kk++) {
        float v[CH];
        zcu_dequant_chunk<MODE, BITS, CH>(q, e * K + kk, n0, v);
        const float xv = zcu_ld(x, kk);
#pragma unroll
        for (int j = 0; j < CH; j++) acc[j] = __fmaf_rn(xv, v[j], acc[j]);
    }
}

/* thread -> (pair, chunk of outputs); FUSED applies the activation to Wg, Wu */
template <typename TT, int MODE, int BITS, int CH, bool FUSED>
__global__ void k_cols(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, const int32_t *idx,
                       int k, int64_t n_pairs, int act, TT *y) {
    zcu_pdl_entry();
    const int64_t N = qa.cols, nch = N / CH;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_pairs * nch) return;
    const int64_t p = i / nch, n0 = (i % nch) * CH, e = zcu_expert(idx, p, qa.E);
    const TT *xr = x + (x_per_slot ? p : p / k) * qa.rows;
    float a[CH];
    qdot_cols<TT, MODE, BITS, CH>(qa, xr, e, n0, a);
    if (FUSED) {
        float b[CH];
        qdot_cols<TT, MODE, BITS, CH>(qb, xr, e, n0, b);
#pragma unroll
        for (int j = 0; j < CH; j++)
            zcu_st(y, p * N + n0 + j, zcu_act(act, zcu_round(y, a[j]), zcu_round(y, b[j])));
    } else {
#pragma unroll
        for (int j = 0; j < CH; j++) zcu_st(y, p * N + n0 + j, a[j]);
    }
}

/* thread -> (token, chunk of outputs): down projection of every slot + combine */
template <typename TT, int MODE, int BITS, int CH>
__global__ void k_cols_combine(zcu_qw q, const TT *h, const int32_t *idx, int k,
                               const float *wts, int64_t n_tok, TT *out) {
    zcu_pdl_entry();
    const int64_t D = q.cols, nch = D / CH;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tok * nch) return;
    const int64_t t = i / nch, n0 = (i % nch) * CH;
    float acc[CH];
#pragma unroll
    for (int j = 0; j < CH; j++) acc[j] = 0.0f;
    for (int s = 0; s < k; s++) {
        const int64_t p = t * k + s;
        float y[CH];
        qdot_cols<TT, MODE, BITS, CH>(q, h + p * q.rows, zcu_expert(idx, p, q.E), n0, y);
#pragma unroll
        for (int j = 0; j < CH; j++) acc[j] = zcu_combine_step(acc[j], wts[p], zcu_round(out, y[j]));
    }
#pragma unroll
    for (int j = 0; j < CH; j++) zcu_st(out, t * D + n0 + j, acc[j]);
}

/* ------------------------------------------------------------ MMA path */

/* Exclusive prefix sum of a[0..n) in place by the whole block (blockDim.x a
 * multiple of 32, <= 1024); wsum: 33 ints of shared scratch. Returns the
 * total. Thread i owns a contiguous run of ceil(n / blockDim.x) elements. */
__device__ __forceinline__ int block_exclusive_scan(int *a, int n, int *wsum) {
    const int per = (n + (int)blockDim.x - 1) / (int)blockDim.x, i0 = (int)threadIdx.x * per;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int own = 0;
    for (int i = i0; i < i0 + per && i < n; i++) own += a[i];
    int inc = own; /* inclusive scan of the owned totals within the warp */
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, inc, d);
        if (lane >= d) inc += v;
    }
    if (lane == 31) wsum[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        const int w = lane < nw ? wsum[lane] : 0;
        int wi = w;
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, wi, d);
            if (lane >= d) wi += v;
        }
        if (lane < nw) wsum[lane] = wi - w; /* the warps' exclusive prefixes */
        if (lane == 31) wsum[32] = wi;      /* the total */
    }
    __syncthreads();
    const int total = wsum[32];
    int run = wsum[warp] + inc - own;
    for (int i = i0; i < i0 + per && i < n; i++) {
        const int v = a[i];
        a[i] = run;
        run += v;
    }
    __syncthreads();
    return total;
}

/* Pair segments (one warp each) of k_sort for E experts: as many as keep its
 * count table (segments x E ints) within 4096 ints, at most 32. */
static int sort_segments(int64_t E) { return E >= 4096 ? 1 : (int)(4096 / E < 32 ? 4096 / E : 32); }

/* Stable counting sort of the P (token,slot) pairs by expert, and the list of
 * tm-pair tiles {expert, first sorted position, pairs} in expert order. One
 * block of 1024 threads. Layout of the scratch: perm[P] | n_tiles |
 * tiles[max_tiles] (int4). Shared: tab[NS][E] | aux[E] | 33 ints.
 * The pairs are cut into NS = sort_segments(E) contiguous segments, one warp
 * each: pass A counts each segment's pairs per expert (__match_any_sync: the
 * lowest lane of each same-expert group adds the group's size, so no two
 * lanes write one counter); the counts become each (segment, expert)'s first
 * sorted position (expert starts by a block scan, then segments in order);
 * pass B walks each segment again in order and places pair p at its group
 * base + its rank among the lower lanes. Positions ascend with p within an
 * expert: the same permutation as a serial stable sort. (Was: thread 0 laid
 * out the E experts serially and thread e scanned every pair: 12.8 us at
 * P = 128, 20.7 at 512, on an H200.) */
static __global__ void __launch_bounds__(1024)
k_sort(const int32_t *idx, int64_t P, int E, int NS, int tm, int *perm, int *n_tiles, int4 *tiles) {
    zcu_pdl_entry();
    extern __shared__ int sh[];
    int *tab = sh, *aux = sh + NS * E, *wsum = aux + E;
    const int lane = threadIdx.x & 31, seg = threadIdx.x >> 5;
    const int64_t L = (P + NS - 1) / NS, lo = seg * L, hi = lo + L < P ? lo + L : P;
    for (int i = threadIdx.x; i < NS * E; i += blockDim.x) tab[i] = 0;
    __syncthreads();
    if (seg < NS) /* pass A */
        for (int64_t b = lo; b < hi; b += 32) {
            const int64_t p = b + lane;
            const int e = p < hi ? (int)zcu_expert(idx, p, E) : -1;
            const unsigned m = __match_any_sync(0xffffffffu, e);
            if (e >= 0 && lane == __ffs(m) - 1) tab[seg * E + e] += __popc(m);
            __syncwarp(); /* the next round's leader of e may be another lane */
        }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int c = 0;
        for (int g = 0; g < NS; g++) c += tab[g * E + e];
        aux[e] = c;
    }
    __syncthreads();
    block_exclusive_scan(aux, E, wsum); /* aux[e] = first sorted position of expert e */
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int run = aux[e];
        for (int g = 0; g < NS; g++) {
            const int c = tab[g * E + e];
            tab[g * E + e] = run;
            run += c;
        }
        aux[e] = (run - aux[e] + tm - 1) / tm; /* tiles of expert e */
    }
    __syncthreads();
    const int nt = block_exclusive_scan(aux, E, wsum);
    for (int e = threadIdx.x; e < E; e += blockDim.x) { /* tab[0][e]: expert e's start */
        const int start = tab[e], c = (e + 1 < E ? tab[e + 1] : (int)P) - start;
        for (int s = 0, ti = aux[e]; s < c; s += tm, ti++) tiles[ti] = make_int4(e, start + s, min(tm, c - s), 0);
    }
    if (threadIdx.x == 0) *n_tiles = nt;
    __syncthreads(); /* the starts in tab[0] are read above before pass B moves them */
    if (seg < NS) /* pass B */
        for (int64_t b = lo; b < hi; b += 32) {
            const int64_t p = b + lane;
            const int e = p < hi ? (int)zcu_expert(idx, p, E) : -1;
            const unsigned m = __match_any_sync(0xffffffffu, e);
            const int leader = __ffs(m) - 1;
            int base = 0;
            if (e >= 0 && lane == leader) {
                base = tab[seg * E + e];
                tab[seg * E + e] = base + __popc(m);
            }
            base = __shfl_sync(0xffffffffu, base, leader);
            if (e >= 0) perm[base + __popc(m & ((1u << lane) - 1))] = (int)p;
            __syncwarp();
        }
}

enum { SROW = TILE_K + 8 }; /* padded shared row (elements): conflict-free fragment loads */

/* One 64x64 tile of y (or of h when FUSED) for the pairs of one expert.
 * 4 warps in 2x2, each 32x32 = 2 m16 x 4 n8 mma tiles per matrix.
 * A dequantized weight w (f32) does not fit T (an affine s·q + b has up to
 * ~16 significant bits; bf16 keeps 8), so it goes in as two T values,
 * hi = round_T(w) and lo = round_T(w − hi), and each k-step runs two mmas
 * (A·hi, then A·lo) into the same f32 accumulators: the weights are then
 * ~2^-16 relative from the f32 dequantization, as on the GEMV/MMV paths and
 * the CPU, instead of 2^-9 (bf16) — which shifted prefill logits enough to
 * flip near-tie expert choices against the other backends. An mxfp4 weight,
 * e2m1 · 2^(e - 127), is exact in bf16 (f32's exponent range, subnormals
 * down to 2^-133): with T = bf16 its lo is 0 and is left out (NL = 1). */
template <typename TT, int MODE, int BITS, bool FUSED>
__global__ void __launch_bounds__(128)
k_mma(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, int k, const int *perm,
      const int *n_tiles, const int4 *tiles, int act, TT *y) {
    zcu_pdl_entry();
    constexpr int NB = FUSED ? 2 : 1;
    constexpr int NL = MODE == ZMLX_QMODE_MXFP4 && std::is_same<TT, __nv_bfloat16>::value ? 1 : 2;
    __shared__ __align__(16) TT As[TILE_M * SROW];
    __shared__ __align__(16) TT Bs[NB][NL][TILE_N * SROW]; /* [matrix][hi, lo]: 46 KB when FUSED */
    if ((int)blockIdx.x >= *n_tiles) return;
    const int4 tile = tiles[blockIdx.x];
    const int64_t e = tile.x, N = qa.rows, K = qa.cols;
    const int start = tile.y, cnt = tile.z;
    const int64_t n0 = (int64_t)blockIdx.y * TILE_N;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1, gq = lane >> 2, tq = lane & 3;
    /* loader role: row lr (of A and of B), 32-element half lh */
    const int lr = tid >> 1, lh = tid & 1;
    const int64_t a_pair = lr < cnt ? perm[start + lr] : -1;
    const TT *a_src = a_pair >= 0 ? x + (x_per_slot ? a_pair : a_pair / k) * K : x;
    const zcu_qw qq[2] = {qa, FUSED ? qb : qa};

    float acc[NB][2][4][4];
#pragma unroll
    for (int b = 0; b < NB; b++)
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int r = 0; r < 4; r++) acc[b][i][j][r] = 0.0f;

    for (int64_t k0 = 0; k0 < K; k0 += TILE_K) {
        const int64_t col = k0 + lh * 32;
        const bool colok = col < K;
        /* A: 32 activations of pair row lr */
        TT *ad = As + lr * SROW + lh * 32;
        if (a_pair >= 0 && colok) {
            const TT *src = a_src + col;
            if (((uintptr_t)src & 15) == 0) {
#pragma unroll
                for (int i = 0; i < 4; i++) ((uint4 *)ad)[i] = __ldg((const uint4 *)src + i);
            } else {
#pragma unroll
                for (int i = 0; i < 32; i++) ad[i] = src[i];
            }
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) ((uint4 *)ad)[i] = make_uint4(0, 0, 0, 0);
        }
        /* B: 32 dequantized weights of output row n0+lr as hi (+ lo) in T */
#pragma unroll
        for (int b = 0; b < NB; b++) {
            uint32_t *bh = (uint32_t *)(Bs[b][0] + lr * SROW + lh * 32);
            uint32_t *bl = (uint32_t *)(Bs[b][NL - 1] + lr * SROW + lh * 32);
            if (n0 + lr < N && colok) {
                float v[32];
                zcu_dequant_chunk<MODE, BITS, 32>(qq[b], e * N + n0 + lr, col, v);
#pragma unroll
                for (int i = 0; i < 16; i++) {
                    const float h0 = zcu_round((const TT *)0, v[2 * i]), h1 = zcu_round((const TT *)0, v[2 * i + 1]);
                    bh[i] = pack2((TT *)0, h0, h1);
                    if (NL == 2) bl[i] = pack2((TT *)0, __fsub_rn(v[2 * i], h0), __fsub_rn(v[2 * i + 1], h1));
                }
            } else {
#pragma unroll
                for (int i = 0; i < 16; i++) bh[i] = bl[i] = 0;
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const TT *a0 = As + (wm * 32 + i * 16 + gq) * SROW + kk + 2 * tq;
                af[i][0] = *(const uint32_t *)a0;
                af[i][1] = *(const uint32_t *)(a0 + 8 * SROW);
                af[i][2] = *(const uint32_t *)(a0 + 8);
                af[i][3] = *(const uint32_t *)(a0 + 8 * SROW + 8);
            }
#pragma unroll
            for (int b = 0; b < NB; b++)
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int hl = 0; hl < NL; hl++) { /* hi, then lo */
                        const TT *b0 = Bs[b][hl] + (wn * 32 + j * 8 + gq) * SROW + kk + 2 * tq;
                        const uint32_t r0 = *(const uint32_t *)b0, r1 = *(const uint32_t *)(b0 + 8);
#pragma unroll
                        for (int i = 0; i < 2; i++) mma_op<TT>::run(acc[b][i][j], af[i], r0, r1);
                    }
        }
        __syncthreads();
    }
    /* epilogue: c0,c1 at (row gq, cols 2tq, 2tq+1), c2,c3 at row gq+8 */
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            const int m = wm * 32 + i * 16 + gq + hr * 8;
            if (m >= cnt) continue;
            const int64_t p = perm[start + m];
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int cc = 0; cc < 2; cc++) {
                    const int64_t n = n0 + wn * 32 + j * 8 + 2 * tq + cc;
                    if (n >= N) continue;
                    const float g = acc[0][i][j][hr * 2 + cc];
                    if (FUSED) {
                        const float u = acc[NB - 1][i][j][hr * 2 + cc];
                        zcu_st(y, p * N + n, zcu_act(act, zcu_round(y, g), zcu_round(y, u)));
                    } else {
                        zcu_st(y, p * N + n, g);
                    }
                }
        }
}

/* ------------------------------------------------------------ MMV path */

/* Tensor-core GEMV for affine 4-bit, groups % 64 == 0, bf16/f16 (small and
 * mid M; the other affine widths have their own step, mmv_step_w, and mxfp4
 * its own, mmv_step_mx, below). A warp computes a
 * tile of 16 weight rows x 8 pairs (the pairs of one expert; at small M one
 * pair) with mma.m16n8k16: the rows are A, the activations B. K is walked in steps of 64 columns; lane (gq, tq) loads 8
 * bytes (16 codes) of rows gq and gq+8 at column 64s + 16tq, so every mma
 * sees 16 columns of one group. Codes become T as 0x4300|q (bf16 128+q) or
 * 0x6400|q (f16 1024+q), two per lop3: the pairs of a word come out as
 * (0,4), (1,5), (2,6), (3,7), and the activations are permuted the same way
 * (the order of k inside an mma is free as long as A and B agree). Per step,
 * a second mma with A = 1 gives Σx of each pair, and
 *     part = s·D + (b − OFF·s)·Σx      (D = Σ(OFF+q)·x, exact products)
 * is added to the lane's f32 accumulators in step order as
 * acc = fma(s, D, fma(b', Σx, acc)), b' = fma(−OFF, s, b): FMAs chosen here
 * (-fmad=false contracts nothing), 10 instructions a step instead of 24.
 * The block's 4 warps split the steps into 4 contiguous ranges; their
 * partials are summed in range order (mmv_sum). Every output element depends
 * only on its own row and pair, never on the tile it shares, so the fused
 * kernels (gate+up in one tile; down + combine) equal the unfused ones. */
/* MMV_MINB: blocks per SM the fast k_mmv variant is compiled for at 4 K
 * ranges (mmv_min_blocks; 6: 80 registers; measured against 1 (121) and 5 (92) in NOTES.md
 * v5); other range counts keep the same warps per SM.
 * K ranges per row (KS, mmv_ks): 4 for matrices of >= 65536 rows (the LM
 * head: tiles to spare; the stream kernel's warps per tile, NOTES.md v10,
 * where 2 ranges left it too few warps per SM); for a dense
 * matrix (E = 1: q/k/v, o_proj) K/256 rounded down to 4, 8 or 16, i.e. one
 * batch of MMV_U steps per warp (a few hundred 16-row tiles cannot fill 132
 * SMs with 4 warps each; measured in NOTES.md "Dense MMV ranges": 2 steps
 * per warp lose); for experts 4, but 8 for K >= 4096. KS depends only on the
 * weight's shape, never on M or on which kernel family runs, so fused and
 * unfused stay equal; a packed q/k/v and its parts (the same K and E, fewer
 * than 65536 rows) share theirs. */
enum { MMV_U = 4, MMV_MINB = 6 };
static inline int mmv_ks(const zcu_qw &q) {
    if (q.rows >= 65536) return 4;
    if (q.E == 1) return q.cols >= 16 * 256 ? 16 : q.cols >= 8 * 256 ? 8 : 4; /* K / (64 MMV_U), a power of 2 */
    return q.cols >= 4096 ? 8 : 4;
}
/* 64-column steps per K range of weight q (the device's mmv_range) */
static inline int64_t mmv_range_steps(const zcu_qw &q) { return (q.cols / 64 + mmv_ks(q) - 1) / mmv_ks(q); }

template <typename TT> struct mmv_consts;
template <> struct mmv_consts<__nv_bfloat16> {
    static constexpr uint32_t MAGIC = 0x43004300u, ONE = 0x3f803f80u;
    static constexpr float OFF = 128.0f;
    static constexpr int ST = ZMLX_BF16; /* scale dtype of the fast variant */
};
template <> struct mmv_consts<__half> {
    static constexpr uint32_t MAGIC = 0x64006400u, ONE = 0x3c003c00u;
    static constexpr float OFF = 1024.0f;
    static constexpr int ST = ZMLX_F16;
};

__device__ __forceinline__ uint32_t lop3_magic(uint32_t w, uint32_t magic) {
    uint32_t r;
    /* (w & 0x000f000f) | magic */
    asm("lop3.b32 %0, %1, %2, %3, 0xea;" : "=r"(r) : "r"(w), "n"(0x000f000f), "r"(magic));
    return r;
}

/* 8 bytes of a weight row (8-byte aligned in practice; else two words) */
__device__ __forceinline__ uint2 mmv_ldw(const uint8_t *p) {
    if (((uintptr_t)p & 7) == 0) return __ldg((const uint2 *)p);
    return make_uint2(__ldg((const uint32_t *)p), __ldg((const uint32_t *)p + 1));
}
/* 16 activations x[0..16) as two uint4 */
template <typename TT>
__device__ __forceinline__ void mmv_ldx(const TT *p, uint4 &a, uint4 &b) {
    if (((uintptr_t)p & 15) == 0) {
        a = __ldg((const uint4 *)p);
        b = __ldg((const uint4 *)p + 1);
    } else {
        unsigned short v[16];
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = __ldg((const unsigned short *)p + i);
        a = make_uint4(v[0] | (uint32_t)v[1] << 16, v[2] | (uint32_t)v[3] << 16,
                       v[4] | (uint32_t)v[5] << 16, v[6] | (uint32_t)v[7] << 16);
        b = make_uint4(v[8] | (uint32_t)v[9] << 16, v[10] | (uint32_t)v[11] << 16,
                       v[12] | (uint32_t)v[13] << 16, v[14] | (uint32_t)v[15] << 16);
    }
}

/* One word per row (8 codes, columns c..c+7; row gq: wa, row gq+8: wb) as
 * the A fragments of two mmas: code pairs (0,4), (1,5) in A0, (2,6), (3,7)
 * in A1. */
template <typename TT>
__device__ __forceinline__ void mmv_word_a(uint32_t wa, uint32_t wb, uint32_t (&A0)[4], uint32_t (&A1)[4]) {
    constexpr uint32_t M = mmv_consts<TT>::MAGIC;
    const uint32_t a0 = lop3_magic(wa, M), a1 = lop3_magic(wa >> 4, M);
    const uint32_t a2 = lop3_magic(wa >> 8, M), a3 = lop3_magic(wa >> 12, M);
    const uint32_t b0 = lop3_magic(wb, M), b1 = lop3_magic(wb >> 4, M);
    const uint32_t b2 = lop3_magic(wb >> 8, M), b3 = lop3_magic(wb >> 12, M);
    A0[0] = a0, A0[1] = b0, A0[2] = a1, A0[3] = b1;
    A1[0] = a2, A1[1] = b2, A1[2] = a3, A1[3] = b3;
}
/* The matching 8 activations X as B pairs (0,4), (1,5) | (2,6), (3,7) */
__device__ __forceinline__ void mmv_word_b(const uint4 &X, uint32_t (&p)[4]) {
    p[0] = __byte_perm(X.x, X.z, 0x5410), p[1] = __byte_perm(X.x, X.z, 0x7632);
    p[2] = __byte_perm(X.y, X.w, 0x5410), p[3] = __byte_perm(X.y, X.w, 0x7632);
}
/* d += A·x over one word (two mmas) */
template <typename TT>
__device__ __forceinline__ void mmv_word_d(const uint32_t (&A0)[4], const uint32_t (&A1)[4], const uint32_t (&p)[4],
                                           float (&d)[4]) {
    mma_op<TT>::run(d, A0, p[0], p[1]);
    mma_op<TT>::run(d, A1, p[2], p[3]);
}
/* sx += 1·x over one word (two mmas): Σx of the word's pair column in every row */
template <typename TT>
__device__ __forceinline__ void mmv_word_sx(const uint32_t (&p)[4], float (&sx)[4]) {
    constexpr uint32_t O = mmv_consts<TT>::ONE;
    const uint32_t ONES[4] = {O, O, O, O};
    mma_op<TT>::run(sx, ONES, p[0], p[1]);
    mma_op<TT>::run(sx, ONES, p[2], p[3]);
}
/* Two mmas over one word per row and the matching 8 activations X: d +=
 * A·x, and (SX) two more: sx += 1·x. */
template <typename TT, bool SX>
__device__ __forceinline__ void mmv_word(uint32_t wa, uint32_t wb, const uint4 &X, float (&d)[4],
                                         float (&sx)[4]) {
    uint32_t A0[4], A1[4], p[4];
    mmv_word_a<TT>(wa, wb, A0, A1);
    mmv_word_b(X, p);
    mmv_word_d<TT>(A0, A1, p, d);
    if (SX) mmv_word_sx<TT>(p, sx);
}

/* Raw bits of scale/bias element g (f32, or 16-bit f16/bf16) and their
 * value: split so that every load of a batch is issued before any use. */
__device__ __forceinline__ uint32_t mmv_ldraw(const void *p, int64_t g, int t) {
    return t == ZMLX_F32 ? __ldg((const uint32_t *)p + g) : (uint32_t)__ldg((const unsigned short *)p + g);
}
__device__ __forceinline__ float mmv_cvt(uint32_t v, int t) {
    return t == ZMLX_F32 ? __uint_as_float(v)
           : t == ZMLX_F16 ? __half2float(__ushort_as_half((unsigned short)v)) : __uint_as_float(v << 16);
}

/* A step's scales of rows gq and gq+8 from raw bits r = {s_a, b_a, s_b, b_b}
 * of dtype t, with the code offset folded into the bias: bo = b - NO·OFF·s,
 * NO the offset's multiple in D (1; 17 where D is lo + 16·hi of two nibble
 * chains, mmv_step_w). */
template <typename TT, int NO = 1>
__device__ __forceinline__ void mmv_scales(const uint32_t (&r)[4], int t, float (&sc)[2], float (&bo)[2]) {
    constexpr float OFF = NO * mmv_consts<TT>::OFF;
    sc[0] = mmv_cvt(r[0], t), sc[1] = mmv_cvt(r[2], t);
    bo[0] = mmv_cvt(r[1], t), bo[1] = mmv_cvt(r[3], t);
    bo[0] = __fmaf_rn(-OFF, sc[0], bo[0]);
    bo[1] = __fmaf_rn(-OFF, sc[1], bo[1]);
}
/* acc += s·D + bo·Σx for the step's D (d) and Σx (sx) */
__device__ __forceinline__ void mmv_fold(const float (&d)[4], const float (&sx)[4], const float (&sc)[2],
                                         const float (&bo)[2], float (&acc)[4]) {
#pragma unroll
    for (int c = 0; c < 4; c++) acc[c] = __fmaf_rn(sc[c >> 1], d[c], __fmaf_rn(bo[c >> 1], sx[c], acc[c]));
}

/* One 64-column step of a lane, the same in both variants below: words wa
 * (row gq) and wb (row gq+8), activations xa (columns 16tq..+7) and xb
 * (+8..+15), scale/bias raw bits r = {s_a, b_a, s_b, b_b} of dtype t. SX:
 * the step's Σx by its own 4 mmas from sx = 0; else sx comes in holding that
 * chain's result (mmv_sx8). */
template <typename TT, bool SX = true>
__device__ __forceinline__ void mmv_step(const uint2 &wa, const uint2 &wb, const uint4 &xa, const uint4 &xb,
                                         const uint32_t (&r)[4], int t, float (&sx)[4], float (&acc)[4]) {
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (SX) sx[0] = sx[1] = sx[2] = sx[3] = 0.0f;
    mmv_word<TT, SX>(wa.x, wb.x, xa, d, sx);
    mmv_word<TT, SX>(wa.y, wb.y, xb, d, sx);
    float sc[2], bo[2];
    mmv_scales<TT>(r, t, sc, bo);
    mmv_fold(d, sx, sc, bo, acc);
}

/* The other affine widths B (2, 3, 5, 6, 8; the generic variants LG = -B).
 * Lane (gq, tq) takes the same 16 columns of a step as for 4-bit, 16tq ..
 * 16tq + 15: its 2B code bytes at byte 2B·tq of the row's 8B bytes of the
 * step, as NL little-endian words (mmv_ldcodes). Code i of the 16 is bits
 * [B·i, B·i + B); A register half-pairs are codes (i, i + 8), i = 0..7, so
 * that the activations pair as (x_i, x_i+8), x's words of columns i and
 * i + 8 (mmv_word_b on {xa.x, xa.y, xb.x, xb.y}, then on the .z/.w halves).
 * Codes below 128 become T exactly as OFF + q (as for 4-bit); 8-bit codes
 * do not fit bf16's 8 significant bits that way, so an 8-bit code runs as
 * two nibble chains, D = Σ(OFF + lo)·x + 16·Σ(OFF + hi)·x (both exact
 * products; the 16· exact), and the fold takes 17·OFF·s off the bias. */
template <int B> struct mmv_width {
    static constexpr int NL = (2 * B + 3) / 4; /* code words per lane and row */
    static constexpr int NC = B == 8 ? 2 : 1;  /* chains of fields per code */
    static constexpr int FW = B == 8 ? 4 : B;  /* bits per field */
};
/* The lane's 2B code bytes of one row's step at p: 2-byte aligned (weights
 * are 4-byte aligned, 2B·tq is even), so 4-byte words where p allows, else
 * halves; the top half of a last word of 2 bytes (B = 3, 5) is 0. 4-bit
 * keeps mmv_ldw's 8-byte load; 8-bit takes one 16-byte load where aligned.
 * For B = 5 a p 2 bytes past a word (the odd lanes) loads the NL = 3 words
 * from p - 2, exactly [p - 2, p + 10): its own bytes and the 2 before them,
 * in p's word, so in the same allocation; then the words shifted down by 16
 * bits. 3 loads instead of 5 halves (the 5-bit MoE layer's k_mmv ran at
 * 84-92% of the L1's throughput, 18% of the DRAM's); the same for 3 bits
 * made its one-token fused layer 9% slower (NOTES.md v33). */
template <int B>
__device__ __forceinline__ void mmv_ldcodes(const uint8_t *p, uint32_t (&v)[mmv_width<B>::NL]) {
    typedef unsigned short u16;
    if constexpr (B == 4) {
        const uint2 w = mmv_ldw(p);
        v[0] = w.x, v[1] = w.y;
    } else if constexpr (B == 8) {
        if (((uintptr_t)p & 15) == 0) {
            const uint4 w = __ldg((const uint4 *)p);
            v[0] = w.x, v[1] = w.y, v[2] = w.z, v[3] = w.w;
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) v[j] = __ldg((const uint32_t *)p + j);
        }
    } else {
        constexpr int NL = mmv_width<B>::NL;
        const bool a4 = ((uintptr_t)p & 3) == 0;
        if constexpr (B == 5) {
            if (!a4) {
                const uint32_t *w = (const uint32_t *)(p - 2);
                uint32_t a[NL];
#pragma unroll
                for (int j = 0; j < NL; j++) a[j] = __ldg(w + j);
#pragma unroll
                for (int j = 0; j + 1 < NL; j++) v[j] = __funnelshift_r(a[j], a[j + 1], 16);
                v[NL - 1] = a[NL - 1] >> 16;
                return;
            }
        }
#pragma unroll
        for (int j = 0; j < NL; j++) {
            const bool whole = 4 * j + 4 <= 2 * B;
            const u16 *h = (const u16 *)p + 2 * j;
            if (whole && a4) v[j] = __ldg((const uint32_t *)p + j);
            else v[j] = __ldg(h) | (whole ? (uint32_t)__ldg(h + 1) << 16 : 0u);
        }
    }
}
/* Field h of code i (bits [B·i + 4h, + FW)) and of code i + 8, as T's
 * OFF + q in the low and high half (i, h compile-time after unrolling). */
template <typename TT, int B>
__device__ __forceinline__ uint32_t mmv_half_pair(const uint32_t (&v)[mmv_width<B>::NL], int i, int h) {
    constexpr int FW = mmv_width<B>::FW;
    auto field = [&](int bit) {
        const int j = bit >> 5, o = bit & 31;
        const uint32_t w = o + FW <= 32 ? v[j] >> o : __funnelshift_r(v[j], v[j + 1], o);
        return w & ((1u << FW) - 1);
    };
    return field(B * i + 4 * h) | field(B * (i + 8) + 4 * h) << 16 | mmv_consts<TT>::MAGIC;
}
/* The A register half-pairs of codes 4j .. 4j + 3 and their + 8, field h:
 * q[k] = mmv_half_pair(v, 4j + k, h). 8-bit codes are bytes, so one byte
 * permute gathers codes (i, i + 1, i + 8, i + 9) into a word whose nibble
 * fields shifted by 0 / 4 / 8 / 12 are the four half-pairs of (i, i + 8)
 * and (i + 1, i + 9): ~2 instructions a half-pair instead of ~6, and the
 * 8-bit MMV was issue-bound on them (Qwen3 MoE layer on the H200 -25% at
 * one token, -31% at 64; NOTES.md v32). The same scheme for the other
 * widths (a 16-bit window of codes 0-7 and one of codes 8-15 side by side)
 * measured -2..-8% for 2 and 6 bits, nothing for 5, and made the fused
 * 3-bit gate/up slower than the unfused pair; not kept. */
template <typename TT, int B>
__device__ __forceinline__ void mmv_quad(const uint32_t (&v)[mmv_width<B>::NL], int j, int h, uint32_t (&q)[4]) {
    if constexpr (B == 8) {
        constexpr uint32_t M = mmv_consts<TT>::MAGIC;
        const uint32_t t0 = __byte_perm(v[j], v[j + 2], 0x5410), t1 = __byte_perm(v[j], v[j + 2], 0x7632);
        q[0] = lop3_magic(t0 >> 4 * h, M), q[1] = lop3_magic(t0 >> (8 + 4 * h), M);
        q[2] = lop3_magic(t1 >> 4 * h, M), q[3] = lop3_magic(t1 >> (8 + 4 * h), M);
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) q[k] = mmv_half_pair<TT, B>(v, 4 * j + k, h);
    }
}
/* One 64-column step of width B, as mmv_step (which it is for B = 4): rows
 * gq (wa) and gq + 8 (wb), activations xa, xb, scale/bias bits r of dtype t;
 * Σx by its own 4 mmas. */
template <typename TT, int B>
__device__ __forceinline__ void mmv_step_w(const uint32_t (&wa)[mmv_width<B>::NL],
                                           const uint32_t (&wb)[mmv_width<B>::NL], const uint4 &xa, const uint4 &xb,
                                           const uint32_t (&r)[4], int t, float (&acc)[4]) {
    float sx[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (B == 4) {
        mmv_step<TT>(make_uint2(wa[0], wa[1]), make_uint2(wb[0], wb[1]), xa, xb, r, t, sx, acc);
    } else {
        constexpr int NC = mmv_width<B>::NC;
        float d[NC][4] = {};
#pragma unroll
        for (int j = 0; j < 2; j++) { /* codes 4j .. 4j + 3 and their + 8 */
            uint32_t p[4];
            mmv_word_b(j ? make_uint4(xa.z, xa.w, xb.z, xb.w) : make_uint4(xa.x, xa.y, xb.x, xb.y), p);
#pragma unroll
            for (int h = 0; h < NC; h++) {
                uint32_t qa[4], qb[4];
                mmv_quad<TT, B>(wa, j, h, qa);
                mmv_quad<TT, B>(wb, j, h, qb);
                const uint32_t A0[4] = {qa[0], qb[0], qa[1], qb[1]}, A1[4] = {qa[2], qb[2], qa[3], qb[3]};
                mmv_word_d<TT>(A0, A1, p, d[h]);
            }
            mmv_word_sx<TT>(p, sx);
        }
        float D[4];
#pragma unroll
        for (int c = 0; c < 4; c++) D[c] = NC == 2 ? __fmaf_rn(16.0f, d[1][c], d[0][c]) : d[0][c];
        float sc[2], bo[2];
        mmv_scales<TT, NC == 2 ? 17 : 1>(r, t, sc, bo);
        mmv_fold(D, sx, sc, bo, acc);
    }
}

/* Σx of a tile of one pair (every pair column computes on the same
 * activation row; mmv_tile_of): instead of each step's 4 Σx mmas, one step's
 * 4 mmas give 8 steps' Σx, step sb + j in pair column j: lanes gq = j load
 * step sb + j's activations (px: the lane's uint4 of step sb; steps past
 * n - 1 load step n - 1, unused). An mma's output element depends only on
 * its own row and column, so column j has the bits of step sb + j's own
 * chain (mmv_step with SX), and every row the same bits (A is all ones).
 * mmv_sx_of: step sb + j's Σx in every accumulator of the lane, from the
 * lane of its row group holding column j. */
template <typename TT>
__device__ __forceinline__ void mmv_sx8(const uint4 *px, int n, float (&sx8)[4]) {
    const int gq = (threadIdx.x & 31) >> 2, j = gq < n ? gq : n - 1;
    uint32_t p[4];
    sx8[0] = sx8[1] = sx8[2] = sx8[3] = 0.0f;
    mmv_word_b(__ldg(px + 8 * j), p);
    mmv_word_sx<TT>(p, sx8);
    mmv_word_b(__ldg(px + 8 * j + 1), p);
    mmv_word_sx<TT>(p, sx8);
}
__device__ __forceinline__ void mmv_sx_of(const float (&sx8)[4], int j, float (&sx)[4]) {
    const float v = __shfl_sync(0xffffffffu, j & 1 ? sx8[1] : sx8[0], (threadIdx.x & 28) | j >> 1);
    sx[0] = sx[1] = sx[2] = sx[3] = v;
}

/* Per-lane partial over steps [s0, s1) of the tile: rows ra (of qa) for
 * gq and rb (of qb) for gq+8, absolute (e*rows + r); xc: the activation row
 * of pair-column gq. Rows past the matrix and columns past the tile's pairs
 * come in as some valid row / pair (the callers' clamps): an mma output
 * element depends only on its own row and column, so what they compute is
 * simply not stored. acc: (gq, 2tq), (gq, 2tq+1), (gq+8, 2tq), (gq+8, 2tq+1).
 * Two variants, one arithmetic (mmv_step), different loads:
 * - mmv_steps_any: any scale dtype (read at run time), any alignment
 *   (checked per load); each batch of MMV_U steps loads weights, scales and
 *   activations into registers before its first mma. It also serves the
 *   other affine widths B (mmv_step_w).
 * - mmv_fast (mmv_fast_lg holds): below. */
template <typename TT, int B>
__device__ __forceinline__ void mmv_steps_any(const zcu_qw &qa, int64_t ra, const zcu_qw &qb, int64_t rb,
                                              const TT *xc, int64_t s0, int64_t s1, int tq, float (&acc)[4]) {
    constexpr int SB = 8 * B, NL = mmv_width<B>::NL; /* code bytes of a row's step; words of a lane's */
    const uint8_t *pa = qa.w + ra * qa.row_bytes + tq * 2 * B, *pb = qb.w + rb * qb.row_bytes + tq * 2 * B;
    const TT *px = xc + tq * 16;
    const int lg = qa.gs_lg - 6; /* log2(steps per group) */
    const int64_t ga = ra * qa.gpr, gb = rb * qb.gpr;
    for (int64_t s = s0; s < s1; s += MMV_U) {
        uint32_t wa[MMV_U][NL], wb[MMV_U][NL];
        uint4 xa[MMV_U], xb[MMV_U];
        uint32_t r[MMV_U][4];
#pragma unroll
        for (int u = 0; u < MMV_U; u++) {
            /* past s1: the last step again (loaded, never computed) */
            const int64_t su = s + u < s1 ? s + u : s1 - 1, g = su >> lg;
            mmv_ldcodes<B>(pa + su * SB, wa[u]);
            mmv_ldcodes<B>(pb + su * SB, wb[u]);
            r[u][0] = mmv_ldraw(qa.scales, ga + g, qa.scale_t);
            r[u][1] = mmv_ldraw(qa.biases, ga + g, qa.scale_t);
            r[u][2] = mmv_ldraw(qb.scales, gb + g, qb.scale_t);
            r[u][3] = mmv_ldraw(qb.biases, gb + g, qb.scale_t);
            mmv_ldx<TT>(px + su * 64, xa[u], xb[u]);
        }
#pragma unroll
        for (int u = 0; u < MMV_U; u++) {
            if (s + u >= s1) break;
            mmv_step_w<TT, B>(wa[u], wb[u], xa[u], xb[u], r[u], qa.scale_t, acc);
        }
    }
}
/* Fast variant (mmv_fast_lg holds: scales/biases of T's 16-bit type, 8-byte
 * aligned weight rows, 16-byte aligned activation rows, groups of 64 << LG
 * columns with every batch starting on a group). Every load is a pointer
 * walked once per batch plus an immediate (ncu found this loop's earlier
 * form spending ~30 of its ~122 instructions per step on 64-bit address
 * arithmetic, the pointers rebuilt from the kernel parameters per load), and
 * activations are loaded at use (L1/L2 hits; 32 fewer registers).
 * Batches of U steps: MMV_U / 2, except for a dense matrix at one token
 * (below ZMLX_CUDA_MMV_HALF_TOKENS), whose K ranges give each warp exactly
 * one batch of MMV_U steps (mmv_ks), and in k_mmv_combine. The order of the
 * steps, so every result, is the same whatever U (NOTES.md v7: the shallower
 * batch is 3-7% faster on the MoE shapes, slower for the one-token dense
 * matrices and the one-token combine).
 * begin() loads the first batch of weights, run() computes and loads the
 * rest: a dense matrix's kernel calls begin() before its PDL wait (its
 * weights do not depend on the previous kernel), so the first batch is in
 * registers when the activations become readable. ONE: a tile of one pair,
 * Σx of 8 steps at a time by mmv_sx8 (the same bits). The other widths B
 * (mmv_fast_w: groups of 64, no ONE): the same loads and walks for their
 * 2B code bytes a lane and row per step (8-bit: one 16-byte load; 2, 3:
 * mmv_ldcodes), computed by mmv_step_w<B> (the generic variant's bits). */
template <int B> struct mmv_code_words {
    uint32_t v[mmv_width<B>::NL];
};
template <typename TT, int LG, int U, bool ONE, int B = 4>
struct mmv_fast {
    static_assert(B == 4 || (LG == 0 && !ONE), "widths other than 4: groups of 64, Σx per step");
    typedef unsigned short u16;
    /* a lane's codes of a row's step; a row's code bytes per step */
    typedef typename std::conditional<B == 8, uint4, mmv_code_words<B>>::type wide_t;
    typedef typename std::conditional<B == 4, uint2, wide_t>::type code_t;
    static constexpr int SB = 8 * B;
    const uint8_t *pa, *pb;
    /* the groups of rows a and b at step s, as indices into the weights'
       scales and biases (< 2^32: mmv_fast_lg): the arrays' bases stay kernel
       parameters, not 8 registers of pointers (with them the fused 5- and
       6-bit forms spilled 16-32 bytes at their 80 registers, NOTES.md v34) */
    uint32_t ga, gb;
    int s, se; /* K < 2^24 */
    code_t wa[U], wb[U];
    uint32_t r[U >> LG][4]; /* scale/bias bits per group of the batch */

    __device__ __forceinline__ void begin(const zcu_qw &qa, int64_t ra, const zcu_qw &qb, int64_t rb, int64_t s0,
                                          int64_t s1, int tq) {
        s = (int)s0, se = (int)s1;
        pa = qa.w + ra * qa.row_bytes + tq * 2 * B + s * SB;
        pb = qb.w + rb * qb.row_bytes + tq * 2 * B + s * SB;
        ga = (uint32_t)(ra * qa.gpr + (s >> LG));
        gb = (uint32_t)(rb * qb.gpr + (s >> LG));
        load(qa, qb);
    }
    __device__ __forceinline__ void load(const zcu_qw &qa, const zcu_qw &qb) {
        const u16 *sa = (const u16 *)qa.scales + ga, *ba = (const u16 *)qa.biases + ga;
        const u16 *sb = (const u16 *)qb.scales + gb, *bb = (const u16 *)qb.biases + gb;
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (s + u >= se) break;
            if constexpr (B == 4 || B == 8) {
                wa[u] = __ldg((const code_t *)(pa + u * SB));
                wb[u] = __ldg((const code_t *)(pb + u * SB));
            } else {
                mmv_ldcodes<B>(pa + u * SB, wa[u].v);
                mmv_ldcodes<B>(pb + u * SB, wb[u].v);
            }
            if (u % (1 << LG)) continue; /* the group's first step loads its scales */
            r[u >> LG][0] = __ldg(sa + (u >> LG));
            r[u >> LG][1] = __ldg(ba + (u >> LG));
            r[u >> LG][2] = __ldg(sb + (u >> LG));
            r[u >> LG][3] = __ldg(bb + (u >> LG));
        }
    }
    /* xc: the activation row (see mmv_steps_any); qa, qb: begin's */
    __device__ __forceinline__ void run(const zcu_qw &qa, const zcu_qw &qb, const TT *xc, int tq, float (&acc)[4]) {
        const uint4 *px = (const uint4 *)(xc + tq * 16) + s * 8; /* 8 uint4 = one step's 64 activations */
        float sx8[4];
        static_assert(8 % U == 0, "a batch never straddles mmv_sx8's 8 steps");
        for (int j = 0;; j = (j + U) & 7) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (s + u >= se) break;
                if constexpr (B == 8) {
                    const uint32_t a[4] = {wa[u].x, wa[u].y, wa[u].z, wa[u].w};
                    const uint32_t b[4] = {wb[u].x, wb[u].y, wb[u].z, wb[u].w};
                    mmv_step_w<TT, 8>(a, b, __ldg(px + 8 * u), __ldg(px + 8 * u + 1), r[u], mmv_consts<TT>::ST, acc);
                } else if constexpr (B != 4) {
                    mmv_step_w<TT, B>(wa[u].v, wb[u].v, __ldg(px + 8 * u), __ldg(px + 8 * u + 1), r[u],
                                      mmv_consts<TT>::ST, acc);
                } else {
                    float sx[4];
                    if (ONE) {
                        if (j + u == 0) mmv_sx8<TT>(px, se - s, sx8);
                        mmv_sx_of(sx8, j + u, sx);
                    }
                    mmv_step<TT, !ONE>(wa[u], wb[u], __ldg(px + 8 * u), __ldg(px + 8 * u + 1), r[u >> LG],
                                       mmv_consts<TT>::ST, sx, acc);
                }
            }
            s += U;
            if (s >= se) return;
            pa += U * SB;
            pb += U * SB;
            ga += U >> LG;
            gb += U >> LG;
            px += U * 8;
            load(qa, qb);
        }
    }
};

/* mxfp4 on the MMV path (groups of 32, so a 64-column step holds two). Lane
 * (gq, tq) takes, of rows gq and gq + 8, the 4-byte word at byte 4tq of each
 * group's 16 (columns 8tq..8tq+7 of the group), so that every mma (which
 * takes 4 columns from each of the 4 lanes tq) stays inside one group: per
 * step and group, two mmas from zero give D = Σ e2m1·x (E2M1 values are
 * exact in bf16 and f16, their products with x exact in f32), then
 *     acc = fma(2^(e - 127), D, acc)
 * with the row's E8M0 scale of that group, group 0 before group 1. The codes
 * become T by byte lookups (prmt) in two 8-entry tables, the low and the high
 * byte of T's value of each magnitude; a code's sign comes from prmt's
 * sign-replicate mode on the byte holding its bit 3 as the top bit. An A
 * register holds columns (2j, 2j + 1), as x's own pairs: no permutation. */
template <typename TT> struct mx_lut;
template <> struct mx_lut<__nv_bfloat16> { /* 0, .5, 1, 1.5, 2, 3, 4, 6 = 0x0000 0x3f00 0x3f80 .. 0x40c0 */
    static constexpr uint32_t L0 = 0xc0800000u, L1 = 0xc0804000u, H0 = 0x3f3f3f00u, H1 = 0x40404040u;
};
template <> struct mx_lut<__half> { /* 0x0000 0x3800 0x3c00 0x3e00 0x4000 0x4200 0x4400 0x4600 */
    static constexpr uint32_t L0 = 0u, L1 = 0u, H0 = 0x3e3c3800u, H1 = 0x46444240u;
};
/* bytes of {b, a} (a: 0..3, b: 4..7) by the 4 selector nibbles of c */
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
/* The 8 E2M1 codes of w (columns 0..7, code j in bits 4j..4j+3) as four
 * pairs of T: r[j] = (column 2j, column 2j + 1). */
template <typename TT>
__device__ __forceinline__ void mx_word(uint32_t w, uint32_t (&r)[4]) {
    typedef mx_lut<TT> L;
    const uint32_t mag = w & 0x77777777u, w4 = w << 4;
#pragma unroll
    for (int h = 0; h < 2; h++) { /* codes 4h..4h+3 */
        const uint32_t sel = h ? mag >> 16 : mag;
        const uint32_t lo = prmt(L::L0, L::L1, sel);
        /* 0xff where the code's bit 3 is set: selector nibbles 8-15 replicate
           the top bit of byte 0-7 of {w, w << 4} */
        const uint32_t neg = prmt(w4, w, h ? 0xfbeau : 0xd9c8u);
        const uint32_t hi = prmt(L::H0, L::H1, sel) | (neg & 0x80808080u);
        r[2 * h] = prmt(lo, hi, 0x5140u);
        r[2 * h + 1] = prmt(lo, hi, 0x7362u);
    }
}
/* E8M0 byte b: 2^(b - 127) as zq_e8m0_value (b = 0 the subnormal 2^-127,
 * which b << 23 would make 0; 255 infinity) */
__device__ __forceinline__ float mx_scale(uint32_t b) { return __uint_as_float(max(b << 23, 0x00400000u)); }

/* One 64-column step: words wa (row gq) and wb (row gq + 8) of groups 0
 * (.x) and 1 (.y), activations x0 / x1 (columns 8tq..8tq+7 of group 0 / 1),
 * scale bytes sa / sb (group 0 in bits 0..7, group 1 in 8..15). */
template <typename TT>
__device__ __forceinline__ void mmv_step_mx(const uint2 &wa, const uint2 &wb, const uint4 &x0, const uint4 &x1,
                                            uint32_t sa, uint32_t sb, float (&acc)[4]) {
#pragma unroll
    for (int g = 0; g < 2; g++) {
        uint32_t a[4], b[4];
        mx_word<TT>(g ? wa.y : wa.x, a);
        mx_word<TT>(g ? wb.y : wb.x, b);
        const uint4 &X = g ? x1 : x0;
        const uint32_t A0[4] = {a[0], b[0], a[1], b[1]}, A1[4] = {a[2], b[2], a[3], b[3]};
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_op<TT>::run(d, A0, X.x, X.y);
        mma_op<TT>::run(d, A1, X.z, X.w);
        const float s[2] = {mx_scale(sa >> 8 * g & 0xffu), mx_scale(sb >> 8 * g & 0xffu)};
#pragma unroll
        for (int c = 0; c < 4; c++) acc[c] = __fmaf_rn(s[c >> 1], d[c], acc[c]);
    }
}

/* mmv_fast's interface for mxfp4: batches of U steps, weights and scales of
 * a batch loaded before its first mma. ANY: any alignment of the codes, the
 * scales and x (byte and 2-byte loads; the fallback, mmv_fast_lg says
 * which); else 4-byte codes, 2-byte scale pairs, 16-byte activations. */
template <typename TT, bool ANY, int U>
struct mmv_fast_mx {
    const uint8_t *pa, *pb, *sa, *sb;
    int s, se; /* K < 2^24 */
    uint2 wa[U], wb[U];
    uint32_t r[U][2]; /* the step's two scale bytes of each row */

    static __device__ __forceinline__ uint32_t ld16(const uint8_t *p) {
        if constexpr (!ANY) return __ldg((const unsigned short *)p);
        else return __ldg(p) | (uint32_t)__ldg(p + 1) << 8;
    }
    static __device__ __forceinline__ uint32_t ld32(const uint8_t *p) {
        if constexpr (!ANY) return __ldg((const uint32_t *)p);
        else return ld16(p) | ld16(p + 2) << 16;
    }
    static __device__ __forceinline__ uint4 ldx(const TT *p) {
        if constexpr (!ANY) {
            return __ldg((const uint4 *)p);
        } else {
            const unsigned short *q = (const unsigned short *)p;
            uint32_t v[4];
#pragma unroll
            for (int i = 0; i < 4; i++) v[i] = __ldg(q + 2 * i) | (uint32_t)__ldg(q + 2 * i + 1) << 16;
            return make_uint4(v[0], v[1], v[2], v[3]);
        }
    }
    __device__ __forceinline__ void begin(const zcu_qw &qa, int64_t ra, const zcu_qw &qb, int64_t rb, int64_t s0,
                                          int64_t s1, int tq) {
        s = (int)s0, se = (int)s1;
        pa = qa.w + ra * qa.row_bytes + tq * 4 + s * 32;
        pb = qb.w + rb * qb.row_bytes + tq * 4 + s * 32;
        sa = (const uint8_t *)qa.scales + ra * qa.gpr + s * 2;
        sb = (const uint8_t *)qb.scales + rb * qb.gpr + s * 2;
        load();
    }
    __device__ __forceinline__ void load() {
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (s + u >= se) break;
            wa[u] = make_uint2(ld32(pa + u * 32), ld32(pa + u * 32 + 16));
            wb[u] = make_uint2(ld32(pb + u * 32), ld32(pb + u * 32 + 16));
            r[u][0] = ld16(sa + u * 2);
            r[u][1] = ld16(sb + u * 2);
        }
    }
    /* qa, qb: unused (the scales by pointer: as mmv_fast's indices, the
       mxfp4 MoE layer measured ~1% slower at every M, NOTES.md v34) */
    __device__ __forceinline__ void run(const zcu_qw &, const zcu_qw &, const TT *xc, int tq, float (&acc)[4]) {
        const TT *px = xc + tq * 8 + s * 64;
        for (;;) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (s + u >= se) break;
                mmv_step_mx<TT>(wa[u], wb[u], ldx(px + 64 * u), ldx(px + 64 * u + 32), r[u][0], r[u][1], acc);
            }
            s += U;
            if (s >= se) return;
            pa += U * 32;
            pb += U * 32;
            sa += U * 2;
            sb += U * 2;
            px += U * 64;
            load();
        }
    }
};

/* The MMV variants, the kernels' LG parameter: -B mmv_steps_any (affine of
 * width B, any scale dtype, group size and alignment: the fallback); 0 / 1
 * mmv_fast (affine 4-bit, groups of 64 << LG); MMV_MX / MMV_MX_ANY
 * mmv_fast_mx (mxfp4; aligned / any); mmv_fast_w(B) mmv_fast's form for
 * width B (MMV_A8 = 8-bit). Every variant >= 0 has mmv_fast's begin / run. */
enum { MMV_MX = 2, MMV_MX_ANY = 3, MMV_FW = 8, MMV_A8 = MMV_FW + 8 };
static constexpr int mmv_fast_w(int bits) { return MMV_FW + bits; }
template <typename TT, int LG, int U, bool ONE>
using mmv_fast_of = typename std::conditional<
    LG >= MMV_FW, mmv_fast<TT, 0, U, false, LG - MMV_FW>,
    typename std::conditional<(LG >= MMV_MX), mmv_fast_mx<TT, LG == MMV_MX_ANY, U>,
                              mmv_fast<TT, LG == 1 ? 1 : 0, U, ONE>>::type>::type;
/* the affine 4-bit fast variants (mmv_fast: groups of 64 / 128) */
static constexpr bool mmv_affine_fast(int lg) { return lg == 0 || lg == 1; }
/* the aligned variants (0, 1, MMV_MX, mmv_fast_w): the ones with shallow
   batches and k_mmv_warp; the generic ones (< 0, MMV_MX_ANY) are fallbacks */
static constexpr bool mmv_aligned(int lg) { return mmv_affine_fast(lg) || lg == MMV_MX || lg >= MMV_FW; }
/* k_mmv's blocks per SM (its launch bounds, KS ranges of 32 lanes, batches
   of U steps): the generic variants 1; MMV_MINB * 4 / KS, except the wide
   forms' (mmv_fast_w) batches of MMV_U steps (dense matrices at a few
   tokens) at 4 ranges: MMV_MINB - 1 (96 registers; at 80 the 8-bit one
   spilled 244 bytes and the 8-bit LM head took 173 us instead of 135,
   NOTES.md v33). At 8 ranges 5 * 4 / 8 rounds down to 2 blocks, a third
   fewer warps: k_mmv_qkv's 8-bit q/k/v lost ~2.5 us a layer that way. */
static constexpr int mmv_min_blocks(int lg, int ks, int u) {
    return lg < 0 ? 1 : lg >= MMV_FW && u == MMV_U && ks == 4 ? MMV_MINB - 1 : MMV_MINB * 4 / ks;
}
/* k_mmv_combine's batch: MMV_U steps, but one step for 5 and 6 bits (at
   MMV_U their unpacking spilled 152 and 448 bytes at the kernel's 128
   registers, NOTES.md v33; at MMV_U / 2 ptxas gave them 64 registers and 32
   bytes of spills, and the 5-bit fused MoE layer at one token took 37.6 us
   against 36.5 at one step, NOTES.md v34) */
static constexpr int mmv_combine_u(int lg) { return lg == mmv_fast_w(5) || lg == mmv_fast_w(6) ? 1 : MMV_U; }

/* The MMV as a stream (k_mmv_stream, for slab_fits: SLAB_KS K ranges of K =
 * 64·SLAB_STEPS, whole tiles, 16-byte aligned rows, scales and biases): the
 * LM head (~9500 16-row tiles at one token), and the experts' matmuls in
 * sorted tiles (from mmv_stream_tokens(): thousands of tiles), i.e. where
 * one call runs many waves of tiles. As k_mmv blocks (one tile each) every
 * block waits for its own rows, then computes while nothing of its slot is
 * in flight (the LM head ran at ~2 TB/s so). Here STREAM_BPS blocks per SM
 * each take tiles b, b + G, .. through a ring of STREAM_STAGES slabs in
 * shared memory: a tile's 16 rows are requested whole by bulk copies (TMA,
 * cp.async.bulk: no registers held while in flight; a copy per row on one
 * mbarrier, the scales and biases on another) STREAM_STAGES - 1 tiles ahead
 * of the one computed, the first ones before the PDL wait where the rows
 * do not depend on the previous kernel (a dense matrix); warp q computes
 * its range with the same mmv_step calls in the same order as mmv_fast:
 * the same bits as k_mmv. (Slower, NOTES.md v9 and v11: staging one tile
 * per block for the experts at one token; this stream over unsorted pairs
 * at 2-7 tokens, and for K = 768 (a runtime slab size).) */
enum { SLAB_STEPS = 32, SLAB_KS = 4, STREAM_STAGES = 2, STREAM_BPS = 5 };
struct alignas(16) mmv_slab {
    static constexpr int ROW = SLAB_STEPS * 32 + 16; /* codes bytes per row, padded against bank conflicts */
    uint8_t codes[16][ROW];
    unsigned short sc[16][SLAB_STEPS], bi[16][SLAB_STEPS];
    unsigned long long bar[2]; /* the codes; the scales and biases */
};
__device__ __forceinline__ void bar_init(unsigned long long *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)));
#endif
}
__device__ __forceinline__ void bar_expect(unsigned long long *bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
/* until the barrier's phase of this parity (0 for its 1st, 3rd, .. use) has completed */
__device__ __forceinline__ void bar_wait(unsigned long long *bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done = 0;
    while (!done)
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done)
                     : "r"(smem_u32(bar)), "r"(parity)
                     : "memory");
#endif
}
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes, unsigned long long *bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
#endif
}
/* The slab's barriers, by one thread; the block syncs before any use. */
__device__ __forceinline__ void slab_init(mmv_slab &S) {
    for (unsigned long long &b : S.bar) bar_init(&b);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
/* Into the slab, by one thread: 8 rows of qa from row ra (slab rows 0..7)
 * and 8 of qb from rb (8..15); for one matrix's 16 rows, qb = qa and rb =
 * ra + 8. Each barrier is armed with its bytes, then a copy per code row
 * and the scales' and biases' (one copy each where the two halves are
 * contiguous). The slab's previous contents must be read by every warp
 * before (a block barrier). */
__device__ __forceinline__ void slab_request(mmv_slab &S, const zcu_qw &qa, int64_t ra, const zcu_qw &qb, int64_t rb) {
    typedef unsigned short u16;
    constexpr uint32_t RB = SLAB_STEPS * 32, HALF = 8 * SLAB_STEPS * 2; /* a code row; 8 rows' scales */
    bar_expect(&S.bar[0], 16 * RB);
    bar_expect(&S.bar[1], 4 * HALF);
    for (int j = 0; j < 8; j++) bulk_copy(&S.codes[j][0], qa.w + (ra + j) * qa.row_bytes, RB, &S.bar[0]);
    for (int j = 0; j < 8; j++) bulk_copy(&S.codes[8 + j][0], qb.w + (rb + j) * qb.row_bytes, RB, &S.bar[0]);
    const u16 *src[2][2] = {{(const u16 *)qa.scales + ra * qa.gpr, (const u16 *)qb.scales + rb * qb.gpr},
                            {(const u16 *)qa.biases + ra * qa.gpr, (const u16 *)qb.biases + rb * qb.gpr}};
    u16(*dst[2])[SLAB_STEPS] = {S.sc, S.bi};
    for (int m = 0; m < 2; m++) {
        if (src[m][1] == src[m][0] + 8 * SLAB_STEPS) {
            bulk_copy(dst[m][0], src[m][0], 2 * HALF, &S.bar[1]);
        } else {
            bulk_copy(dst[m][0], src[m][0], HALF, &S.bar[1]);
            bulk_copy(dst[m][8], src[m][1], HALF, &S.bar[1]);
        }
    }
}
/* Warp ks's steps from the slab (its barriers' phase of this parity): rows
 * gq and gq + 8, x row xc. */
template <typename TT, bool ONE>
__device__ __forceinline__ void slab_run(mmv_slab &S, uint32_t parity, const TT *xc, int ks, int gq, int tq,
                                         float (&acc)[4]) {
    constexpr int PER = SLAB_STEPS / SLAB_KS;
    static_assert(PER == 8, "ONE: one mmv_sx8 per K range");
    bar_wait(&S.bar[1], parity);
    bar_wait(&S.bar[0], parity);
    const int s0 = ks * PER;
    const uint4 *px = (const uint4 *)(xc + tq * 16) + s0 * 8;
    float sx8[4];
    if (ONE) mmv_sx8<TT>(px, PER, sx8);
#pragma unroll 4
    for (int u = 0; u < PER; u++) {
        const uint2 wa = *(const uint2 *)&S.codes[gq][(s0 + u) * 32 + tq * 8];
        const uint2 wb = *(const uint2 *)&S.codes[gq + 8][(s0 + u) * 32 + tq * 8];
        const uint32_t r[4] = {S.sc[gq][s0 + u], S.bi[gq][s0 + u], S.sc[gq + 8][s0 + u], S.bi[gq + 8][s0 + u]};
        float sx[4];
        if (ONE) mmv_sx_of(sx8, u, sx);
        mmv_step<TT, !ONE>(wa, wb, __ldg(px + 8 * u), __ldg(px + 8 * u + 1), r, mmv_consts<TT>::ST, sx, acc);
    }
}

/* The variant LG of k_mmv_combine (mmv_fast_of; one pair per tile: ONE) */
template <typename TT, int LG>
__device__ __forceinline__ void mmv_steps(const zcu_qw &qa, int64_t ra, const zcu_qw &qb, int64_t rb, const TT *xc,
                                          int64_t s0, int64_t s1, int tq, float (&acc)[4]) {
    if constexpr (LG >= 0) {
        mmv_fast_of<TT, LG, mmv_combine_u(LG), true> f;
        f.begin(qa, ra, qb, rb, s0, s1, tq);
        f.run(qa, qb, xc, tq, acc);
    } else {
        mmv_steps_any<TT, -LG>(qa, ra, qb, rb, xc, s0, s1, tq, acc);
    }
}

/* The variant (LG, see mmv_fast_of) for weight q with activation rows from
 * base x (rows of K = q.cols elements; K % 64 == 0 on the MMV path, so every
 * row keeps the base's alignment). Affine 4-bit: the fast one for groups of
 * 64 or 128 columns, and for 128 K ranges of an even number of steps (a
 * batch then never starts mid-group), else -4 (generic); 2, 3, 5, 6 and 8
 * bits in groups of 64: mmv_fast_w(B) (8-bit: with 16-byte aligned codes and
 * rows), else -B; any affine weight of 2^32 groups or more: -B. mxfp4:
 * MMV_MX where the codes, scales and x allow its loads, else MMV_MX_ANY.
 * Decided on the host: each
 * variant is its own kernel, so its registers are not the other's. */
template <typename TT>
static int mmv_fast_lg(const zcu_qw &q, const void *x) {
    if (q.mode == ZMLX_QMODE_MXFP4) /* K < 2^24: mmv_ok */
        return ((uintptr_t)q.w & 3) == 0 && ((uintptr_t)q.scales & 1) == 0 && ((uintptr_t)x & 15) == 0 ? MMV_MX
                                                                                                         : MMV_MX_ANY;
    /* the codes' load width - 1 (2, 3: mmv_ldcodes, 2-byte aligned) */
    const int align = q.bits == 8 ? 15 : q.bits == 4 ? 7 : 1;
    if ((q.bits != 4 && q.gs != 64) || q.scale_t != mmv_consts<TT>::ST ||
        ((uintptr_t)q.w & align) != 0 || (q.row_bytes & align) != 0 || ((uintptr_t)x & 15) != 0 ||
        q.cols >= ((int64_t)1 << 24) || q.E * q.rows * q.gpr > (int64_t)UINT32_MAX) /* mmv_fast::ga */
        return -q.bits;
    if (q.bits != 4) return mmv_fast_w(q.bits);
    return q.gs == 64 ? 0 : q.gs == 128 && mmv_range_steps(q) % 2 == 0 ? 1 : -4;
}

/* Steps of split ks of a K-column row: contiguous, in order. */
template <int KS>
__device__ __forceinline__ void mmv_range(int64_t K, int ks, int64_t &s0, int64_t &s1) {
    const int64_t ns = K / 64, per = (ns + KS - 1) / KS;
    s0 = ks * per < ns ? ks * per : ns;
    s1 = s0 + per < ns ? s0 + per : ns;
}
/* The result of one (row, pair): the KS partials (stride apart) in order. */
template <int KS>
__device__ __forceinline__ float mmv_sum(const float *p, int stride) {
    float v = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) v = __fadd_rn(v, p[ks * stride]);
    return v;
}

/* Pull weight row r's bytes of steps [s0, s1) into L2 (from the 128-byte
 * line holding step s0; lane tq of the row's four takes every fourth line),
 * before the PDL wait of kernels whose weight rows do not depend on the
 * previous kernel. LG: the variant, whose width gives a step's bytes (a
 * constant: read from the weight at run time, the 4-bit kernels' prologues
 * grew and the decode step measured 0.2% slower, NOTES.md v31). */
template <int LG>
__device__ __forceinline__ void mmv_prefetch(const zcu_qw &q, int64_t r, int64_t s0, int64_t s1, int tq) {
    constexpr int64_t SB = LG < 0 ? -8 * LG : LG >= MMV_FW ? 8 * (LG - MMV_FW) : 32; /* 8·bits; 4-bit, mxfp4: 32 */
    if (r < 0) return;
    const int64_t lo = s0 * SB & ~(int64_t)127;
    zcu_prefetch_l2(q.w + r * q.row_bytes + lo, s1 * SB - lo, tq, 4);
}

/* qmm_argmax's argmax, taken by the blocks of the matmul that store the
 * logits (one pair per tile, so each tile's rows are one token's).
 * amax_put, by every warp of the block: the warp's largest amax_word of
 * token t's rows (best: each thread's) into one of the token's
 * ZCU_AMAX_SLOTS words by an integer atomic max (the order of arrival does
 * not matter). amax_done, by the whole block once: it counts itself done
 * (one release-acquire add by thread 0 between two barriers, as k_attn); the
 * grid's last block reduces each token's words into idx with one warp and
 * zeroes them and the count for the next call. */
__device__ __forceinline__ void amax_put(unsigned long long best, unsigned long long *amax, int64_t t) {
    best = amax_warp(best);
    if ((threadIdx.x & 31) == 0 && best) atomicMax(amax + t * ZCU_AMAX_SLOTS + blockIdx.x % ZCU_AMAX_SLOTS, best);
}
__device__ __forceinline__ void amax_done(unsigned long long *amax, int32_t *idx, int64_t n_tok) {
    static_assert(ZCU_AMAX_SLOTS == 32, "a token's words are reduced one per lane");
    __shared__ int last;
    const int lane = threadIdx.x & 31;
    __syncthreads();
    unsigned *count = (unsigned *)(amax + ZCU_AMAX_TOK * ZCU_AMAX_SLOTS);
    if (threadIdx.x == 0) {
        unsigned before;
        asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n" : "=r"(before) : "l"(count) : "memory");
        last = before == gridDim.x - 1;
        if (last) *count = 0;
    }
    __syncthreads();
    if (!last || threadIdx.x >= 32) return;
    for (int64_t t = 0; t < n_tok; t++) {
        unsigned long long *slot = amax + t * ZCU_AMAX_SLOTS + lane;
        const unsigned long long w = amax_warp(__ldcg(slot));
        *slot = 0;
        if (lane == 0) idx[t] = amax_index(w);
    }
}
/* k_mmv's, out of line so that the kernels' registers stay theirs: a grid
 * of one 16-row tile of an N-row matrix per block, this one token ti's. */
static __device__ __noinline__ void mmv_amax(unsigned long long best, unsigned long long *amax, int32_t *idx, int64_t ti,
                                             int64_t N) {
    amax_put(best, amax, ti);
    amax_done(amax, idx, gridDim.x / ((N + 15) / 16));
}

/* Tile ti of an MMV call: its expert and its pairs, perm[start ..
 * start + cnt) when sorted (perm set), else pair ti alone. */
struct mmv_tile {
    int64_t e, start;
    int cnt;
};
__device__ __forceinline__ mmv_tile mmv_tile_of(int64_t ti, const int32_t *idx, const int *perm, const int4 *tiles,
                                                int64_t E) {
    if (perm) {
        const int4 t = tiles[ti];
        return {t.x, t.y, t.z};
    }
    return {zcu_expert(idx, ti, E), ti, 1};
}
/* The activation row of the tile's pair column c (columns past its pairs
 * compute on pair 0's and are not stored). Pairs are ints (perm's type):
 * a 32-bit division, which the stream does per tile. */
template <typename TT>
__device__ __forceinline__ const TT *mmv_xrow(const mmv_tile &T, int c, const int *perm, const TT *x, int x_per_slot,
                                              int k, int64_t K) {
    const int pc = perm ? perm[T.start + (c < T.cnt ? c : 0)] : (int)T.start;
    return x + (int64_t)(x_per_slot ? pc : pc / k) * K;
}
/* A lane's accumulators of pair columns < C into red[KS][16][C] (K range
 * ks): C = MMV_TILE, or 1 where every tile has one pair (less shared
 * memory, which the stream's slabs need) */
template <int C>
__device__ __forceinline__ void mmv_red_put(float *red, int ks, int gq, int tq, const float (&acc)[4]) {
    float *r = red + ks * 16 * C;
    if (2 * tq < C) r[gq * C + 2 * tq] = acc[0], r[(gq + 8) * C + 2 * tq] = acc[2];
    if (2 * tq + 1 < C) r[gq * C + 2 * tq + 1] = acc[1], r[(gq + 8) * C + 2 * tq + 1] = acc[3];
}
/* One result into y[i]: v (plain), or act(gate v, up u) (FUSED), each
 * rounded to T first. */
template <typename TT, bool FUSED>
__device__ __forceinline__ void mmv_put(TT *y, int64_t i, float v, float u, int act) {
    zcu_st(y, i, FUSED ? zcu_act(act, zcu_round(y, v), zcu_round(y, u)) : v);
}
/* The tile's 16 rows x C columns of results from red (after a block
 * barrier), over however many threads there are, column by column (a
 * tile of one pair keeps warp 0 busy, not one lane of every warp, which
 * the stream's next turn would wait for): rows n0.. (FUSED: rows 0..7
 * gate, 8..15 up, act of the pair stored). Returns the thread's largest
 * amax_word of what it stored (plain only; 0 when !want_amax). */
template <typename TT, bool FUSED, int KS, int C>
__device__ __forceinline__ unsigned long long mmv_store(const float *red, const mmv_tile &T, int64_t n0, int64_t N,
                                                        const int *perm, int act, TT *y, bool want_amax) {
    constexpr int rpt = FUSED ? 8 : 16;
    unsigned long long best = 0;
    for (int i = threadIdx.x; i < 16 * C; i += KS * 32) {
        const int col = i >> 4, r = i & 15;
        if (col >= T.cnt || n0 + (r & (rpt - 1)) >= N || (FUSED && r >= 8)) continue;
        const int64_t p = perm ? perm[T.start + col] : T.start, n = n0 + r;
        const float v = mmv_sum<KS>(&red[r * C + col], 16 * C);
        mmv_put<TT, FUSED>(y, p * N + n, v, FUSED ? mmv_sum<KS>(&red[(r + 8) * C + col], 16 * C) : 0.0f, act);
        if (!FUSED && want_amax) best = amax_max(best, amax_word(zcu_round(y, v), (uint32_t)n));
    }
    return best;
}

/* The stream (see mmv_slab), k_mmv's arguments: block b of G takes the
 * tiles b, b + G, .. of (tile, block of rpt rows), tile-major; SLAB_KS
 * warps, STREAM_STAGES slabs of dynamic shared memory. A dense matrix's
 * first slabs are requested before the PDL wait; routed rows (idx, or the
 * sorted tiles and their count) after it. The K-range partials go through
 * red (C pair columns: MMV_TILE for the sorted tiles, else 1),
 * double-buffered by turn, so the next turn's never overwrite ones still
 * being summed. amax as k_mmv (plain and unsorted only: a block's
 * tokens then ascend, so each is put once its last tile is stored). */
template <typename TT, bool FUSED, int C>
__global__ void __launch_bounds__(SLAB_KS * 32, STREAM_BPS)
k_mmv_stream(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, const int32_t *idx, int k, int64_t n_pairs,
             const int *perm, const int *n_tiles, const int4 *tiles, int act, TT *y, unsigned long long *amax,
             int32_t *amax_idx) {
    extern __shared__ __align__(16) unsigned char mmv_shm[];
    mmv_slab *S = (mmv_slab *)mmv_shm;
    __shared__ float red[2][SLAB_KS][16][C];
    constexpr int rpt = FUSED ? 8 : 16;
    /* tile numbers in 32 bits (the launcher checks): fewer instructions per
       turn, which the LM head measured (NOTES.md v11) */
    const int64_t N = qa.rows, K = qa.cols;
    const uint32_t nrb = (uint32_t)(N / rpt), G = gridDim.x;
    const int lane = threadIdx.x & 31, ks = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const bool dense = !idx && !perm;
    /* by thread 0: tile t's rows into slab Sl; the first ones, tiles b +
       st·G into slab st (those of the nt that exist) */
    auto request = [&](mmv_slab &Sl, uint32_t t) {
        const uint32_t ti = t / nrb;
        const int64_t r0 = mmv_tile_of(ti, idx, perm, tiles, qa.E).e * N + (int64_t)(t - ti * nrb) * rpt;
        slab_request(Sl, qa, r0, FUSED ? qb : qa, FUSED ? r0 : r0 + 8);
    };
    auto request_first = [&](uint32_t nt) {
        for (int st = 0; st < STREAM_STAGES && blockIdx.x + st * G < nt; st++) request(S[st], blockIdx.x + st * G);
    };
    uint32_t nt = (uint32_t)n_pairs * nrb;
    if (threadIdx.x == 0) {
        for (int st = 0; st < STREAM_STAGES; st++) slab_init(S[st]);
        if (dense) request_first(nt);
    }
    __syncthreads(); /* the barriers made before any wait on them */
    zcu_pdl_entry();
    if (perm) nt = (uint32_t)*n_tiles * nrb;
    if (!dense && threadIdx.x == 0) request_first(nt);
    unsigned long long best = 0;
    uint32_t tok = blockIdx.x / nrb;
    int turn = 0;
    for (uint32_t t = blockIdx.x; t < nt; t += G, turn++) {
        mmv_slab &St = S[turn % STREAM_STAGES];
        const uint32_t ti = t / nrb;
        const int64_t n0 = (int64_t)(t - ti * nrb) * rpt;
        const mmv_tile T = mmv_tile_of(ti, idx, perm, tiles, qa.E);
        if (amax && ti != tok) {
            amax_put(best, amax, tok);
            best = 0, tok = ti;
        }
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        slab_run<TT, C == 1>(St, (uint32_t)(turn / STREAM_STAGES) & 1, mmv_xrow(T, gq, perm, x, x_per_slot, k, K),
                             ks, gq, tq, acc);
        mmv_red_put<C>(&red[turn & 1][0][0][0], ks, gq, tq, acc);
        __syncthreads(); /* every warp done with the slab, red complete */
        if (threadIdx.x == 0 && t + STREAM_STAGES * G < nt) request(St, t + STREAM_STAGES * G);
        best = amax_max(best, mmv_store<TT, FUSED, SLAB_KS, C>(&red[turn & 1][0][0][0], T, n0, N, perm, act, y, amax));
    }
    if (amax) {
        amax_put(best, amax, tok);
        amax_done(amax, amax_idx, n_pairs);
    }
}

/* gather_qmm (y) or gate+up+act (h), MMV. Block (KS warps = the KS K ranges)
 * -> (tile, block of 16 rows; FUSED: 8 rows of Wg as gq, the same 8 of Wu
 * as gq+8). Tiles: mmv_tile_of. amax (qmm_argmax; plain and unsorted only):
 * the argmax of each token's row of y into amax_idx (mmv_amax). ONE: the
 * tiles are unsorted pairs (mmv_fast's ONE). mmv_block: a block's work up
 * to the K-range partials red[KS][16][MMV_TILE] (after the block barrier),
 * then epilogue(red, tile, first row); nothing for a block past the sorted
 * tiles (k_mmv_qkv shares it with k_mmv). */
template <typename TT, bool FUSED, int LG, int KS, int U, bool ONE, typename EPI>
__device__ __forceinline__ void mmv_block(const zcu_qw &qa, const zcu_qw &qb, const TT *x, int x_per_slot,
                                          const int32_t *idx, int k, const int *perm, const int *n_tiles,
                                          const int4 *tiles, EPI &&epilogue) {
    __shared__ float red[KS][16][MMV_TILE];
    const int64_t N = qa.rows, K = qa.cols, rpt = FUSED ? 8 : 16, nrb = (N + rpt - 1) / rpt;
    const int64_t ti = blockIdx.x / nrb, n0 = (blockIdx.x % nrb) * rpt;
    const int lane = threadIdx.x & 31, ks = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    int64_t s0, s1;
    mmv_range<KS>(K, ks, s0, s1);
    /* rows of the tile within its expert: rows past N compute on row N-1 and
       are not stored, nor are columns past the tile's pairs (see
       mmv_steps_any) */
    const int64_t na = n0 + gq, nb = FUSED ? na : n0 + gq + 8;
    const int64_t rowa = na < N ? na : N - 1, rowb = nb < N ? nb : N - 1;
    const zcu_qw &qB = FUSED ? qb : qa; /* the matrix of rows nb */
    const bool dense = !idx && !perm; /* its rows are known before the wait */
    mmv_fast_of<TT, LG, U, ONE> f;
    if (dense) { /* the K range into L2, the first batch into registers */
        mmv_prefetch<LG>(qa, na < N ? na : -1, s0, s1, tq);
        mmv_prefetch<LG>(qB, nb < N ? nb : -1, s0, s1, tq);
        if (LG >= 0) f.begin(qa, rowa, qB, rowb, s0, s1, tq);
    }
    zcu_pdl_entry();
    if (perm && ti >= *n_tiles) return;
    const mmv_tile T = mmv_tile_of(ti, idx, perm, tiles, qa.E);
    const TT *xc = mmv_xrow(T, gq, perm, x, x_per_slot, k, K);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if constexpr (LG >= 0) {
        if (!dense) f.begin(qa, T.e * N + rowa, qB, T.e * N + rowb, s0, s1, tq);
        f.run(qa, qB, xc, tq, acc);
    } else {
        mmv_steps_any<TT, -LG>(qa, T.e * N + rowa, qB, T.e * N + rowb, xc, s0, s1, tq, acc);
    }
    zcu_trace_mark(1); /* warp 0's K range done */
    mmv_red_put<MMV_TILE>(&red[0][0][0], ks, gq, tq, acc);
    __syncthreads();
    zcu_trace_mark(2); /* every range done */
    epilogue(&red[0][0][0], T, n0);
}
template <typename TT, bool FUSED, int LG, int KS, int U, bool ONE>
__global__ void __launch_bounds__(KS * 32, mmv_min_blocks(LG, KS, U))
k_mmv(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, const int32_t *idx, int k,
      const int *perm, const int *n_tiles, const int4 *tiles, int act, TT *y, unsigned long long *amax,
      int32_t *amax_idx) {
    mmv_block<TT, FUSED, LG, KS, U, ONE>(qa, qb, x, x_per_slot, idx, k, perm, n_tiles, tiles,
                                         [&](const float *red, const mmv_tile &T, int64_t n0) {
        const unsigned long long best = mmv_store<TT, FUSED, KS, MMV_TILE>(red, T, n0, qa.rows, perm, act, y, amax);
        if (!FUSED && amax) mmv_amax(best, amax, amax_idx, T.start, qa.rows);
        zcu_trace_mark(3); /* stored */
    });
}

/* attention_step's q/k/v projection and prep at one token (zcu_qkv_step):
 * k_mmv's blocks (16 rows, KS ranges, fast variant LG, one token) over the
 * packed matrix [(Hq + 2·Hkv)·hd, K], in clusters of hd / 16 blocks, one per
 * head (the q heads, the k heads, then the v heads). Every block stores its
 * 16 results as k_mmv does (the projection's bits) and keeps them in shared
 * memory; after a cluster barrier warp 0 of each block of a q or k head
 * gathers the head's row from the cluster's blocks, norms it (rms_row_warp:
 * rms_row's bits) and rotates it (rope_rotate, as rope_pair), every block alike, and
 * stores its own 16 over the projected ones (k: also into the cache); a v
 * block stores its 16 into the v cache at once (its cluster never syncs).
 * So the same bits as gather_qmm then k_attn_prep, without the prep's node
 * in the step (NOTES.md v27). An out-of-range position flags err and leaves
 * the projection in qkv and the caches untouched, as k_attn_prep does. */
struct qkv_prep {
    zmlx_attn_params a;
    const void *q_norm, *k_norm;
    float eps;
    zmlx_rope_params rp;
    int has_rope;
    const int32_t *pos;
    void *kc, *vc;
    int *err;
};
enum { QKV_MAX_CLUSTER = 8 }; /* blocks per head: the portable cluster size, so hd <= 128 */
/* the two halves of a cluster barrier (every thread of every block, each warp converged) */
__device__ __forceinline__ void cluster_arrive() {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }
template <typename TT, int LG, int KS>
__global__ void __launch_bounds__(KS * 32, MMV_MINB * 4 / KS)
k_mmv_qkv(zcu_qw q, const TT *x, TT *qkv, qkv_prep pp) {
    __shared__ float inv[8 * QKV_MAX_CLUSTER];
    __shared__ __align__(16) TT mine[16], head[16 * QKV_MAX_CLUSTER], wsh[16 * QKV_MAX_CLUSTER];
    const int hd = pp.a.hd, h = (int)(blockIdx.x * 16 / hd);
    const bool is_v = h >= pp.a.Hq + pp.a.Hkv, is_k = !is_v && h >= pp.a.Hq;
    const TT *w = is_v ? NULL : (const TT *)(is_k ? pp.k_norm : pp.q_norm);
    /* before the PDL wait (in mmv_block), what no kernel writes: the head's
       norm weight and the rope's frequencies, out of the chain's tail */
    if (w && threadIdx.x < hd) wsh[threadIdx.x] = w[threadIdx.x];
    if (!is_v && pp.has_rope && threadIdx.x < pp.rp.rot_dims / 2) inv[threadIdx.x] = rope_inv(pp.rp, threadIdx.x);
    mmv_block<TT, false, LG, KS, MMV_U, false>(q, q, x, 0, NULL, 1, NULL, NULL, NULL,
                                               [&](const float *red, const mmv_tile &, int64_t n0) {
        namespace cg = cooperative_groups;
        const cg::cluster_group cl = cg::this_cluster();
        const int rank = (int)cl.block_rank();
        const int64_t base = pp.pos[0], cap = pp.a.cap;
        const bool in_range = base >= 0 && base < cap;
        if (!in_range && blockIdx.x == 0 && threadIdx.x == 0) *pp.err = 1;
        const int64_t kv = h - pp.a.Hq - (is_v ? pp.a.Hkv : 0), at = (kv * cap + base) * hd + rank * 16;
        if (threadIdx.x < 16) {
            const float v = mmv_sum<KS>(red + threadIdx.x * MMV_TILE, 16 * MMV_TILE);
            zcu_st(mine, threadIdx.x, v);
            zcu_st(qkv, n0 + threadIdx.x, v);
            if (is_v && in_range) zcu_st((TT *)pp.vc, at + threadIdx.x, v);
        }
        if (is_v) return; /* a v head's cluster shares nothing */
        cluster_arrive(); /* `mine` complete */
        cluster_wait();
        const int lane = threadIdx.x;
        const bool mine_to_do = in_range && threadIdx.x < 32;
        if (mine_to_do && lane < hd / 8) /* 8 values per lane: lanes 2r, 2r + 1 hold block r's */
            *(uint4 *)(head + lane * 8) = *((const uint4 *)cl.map_shared_rank(mine, lane / 2) + (lane & 1));
        cluster_arrive(); /* done with the cluster's rows */
        if (mine_to_do) {
            __syncwarp();
            if (w) rms_row_warp(head, (const TT *)wsh, hd, pp.eps, head);
            __syncwarp();
            if (pp.has_rope) {
                for (int i = lane; i < pp.rp.rot_dims / 2; i += 32) rope_rotate(pp.rp, head, i, base, inv[i]);
                __syncwarp();
            }
            if (lane < 2) {
                const uint4 u = *((const uint4 *)(head + rank * 16) + lane);
                *((uint4 *)(qkv + n0) + lane) = u;
                if (is_k) *((uint4 *)((TT *)pp.kc + at) + lane) = u;
            }
        }
        cluster_wait(); /* no block leaves while its cluster may still read its `mine` */
    });
}

/* The experts' sorted tiles where a K range has few steps (at most
 * mmv_warp_steps(): Qwen3's down projection, K = 768, has 3): a warp per
 * (tile, block of rpt rows), MMV_WARP_ROWS such per block, each warp all KS
 * ranges of its rows in order, adding each range's partial to its sums as
 * mmv_sum adds them (from 0.0f, in range order): the same bits as k_mmv,
 * with no partials through shared memory, no block barrier, and one tile
 * lookup (count, tile, pair: three dependent L2 trips) per KS ranges
 * instead of per range. Measured (NOTES.md v12): the Qwen3 MoE layer 5-9%
 * faster at M = 8..64; over unsorted pairs (a few thousand
 * warps) and at 6-7 steps per range (GLM, LFM2) no faster or slower, so
 * those stay on k_mmv. The aligned variants only (mmv_aligned); 5 blocks per
 * SM (at 6 the 80-register cap spilled 16-28 bytes and Qwen3's M = 8 / 16
 * lost 3.5 / 2 us). */
enum { MMV_WARP_ROWS = 4 }; /* row blocks (warps) per block */
template <typename TT, bool FUSED, int LG, int KS, int U>
__global__ void __launch_bounds__(MMV_WARP_ROWS * 32, MMV_MINB - 1)
k_mmv_warp(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, int k, const int *perm, const int *n_tiles,
           const int4 *tiles, int act, TT *y) {
    static_assert(mmv_aligned(LG), "an aligned variant");
    /* row numbers within an expert in 32 bits (the launcher checks) */
    const int N = (int)qa.rows, rpt = FUSED ? 8 : 16, nrb = (N + rpt - 1) / rpt;
    const int bpt = (nrb + MMV_WARP_ROWS - 1) / MMV_WARP_ROWS, ti = blockIdx.x / bpt;
    const int n0 = ((blockIdx.x - ti * bpt) * MMV_WARP_ROWS + (threadIdx.x >> 5)) * rpt;
    const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    /* rows past N compute on row N-1 and are not stored (as k_mmv) */
    const int na = n0 + gq, nb = FUSED ? na : n0 + gq + 8;
    zcu_pdl_entry();
    if (n0 >= N) return;
    /* the count and the tile read together (ti < the grid's tiles: in bounds) */
    const int nt = *n_tiles;
    const mmv_tile T = mmv_tile_of(ti, nullptr, perm, tiles, qa.E);
    if (ti >= nt) return;
    const TT *xc = mmv_xrow(T, gq, perm, x, x_per_slot, k, qa.cols);
    const int64_t ra = T.e * qa.rows + (na < N ? na : N - 1), rb = T.e * qa.rows + (nb < N ? nb : N - 1);
    const zcu_qw &qB = FUSED ? qb : qa; /* the matrix of rows nb */
    float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 1
    for (int ks = 0; ks < KS; ks++) {
        int64_t s0, s1;
        mmv_range<KS>(qa.cols, ks, s0, s1);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mmv_fast_of<TT, LG, U, false> f;
        f.begin(qa, ra, qB, rb, s0, s1, tq);
        f.run(qa, qB, xc, tq, acc);
#pragma unroll
        for (int c = 0; c < 4; c++) sum[c] = __fadd_rn(sum[c], acc[c]);
    }
    /* the lane's results: rows gq (sum[j]) and gq + 8 (sum[2 + j]) of pair
       column 2tq + j; FUSED: row gq of the gate and of the up */
#pragma unroll
    for (int j = 0; j < 2; j++) {
        const int c = 2 * tq + j;
        if (c >= T.cnt) break;
        const int64_t p = perm[T.start + c];
        if (na < N) mmv_put<TT, FUSED>(y, p * N + na, sum[j], sum[2 + j], act);
        if (!FUSED && nb < N) mmv_put<TT, FUSED>(y, p * N + nb, sum[2 + j], 0.0f, act);
    }
}

/* The affine 4-bit MMV weights (mmv_ok, bits 4) at the MMA path's
 * token counts: k_mma_mmv, the MMV arithmetic in MMA-sized tiles. A block
 * takes one sorted tile (up to TILE_M pairs of one expert) and MQ_ROWS weight
 * rows: rows n0.. of the matrix, or (FUSED) 32 rows n0.. of the gate and the
 * same 32 of the up, as row tiles of 8 gate rows (gq) and the same 8 up rows
 * (gq + 8), as k_mmv pairs them. Its 4 warps are 2 row halves x 2 pair
 * halves, each 2 row tiles (m16) x 4 pair tiles (n8). K is walked in
 * 64-column steps through MQ_STAGES shared-memory stages (the block's code
 * rows, 32 bytes a step, and its pairs' activations, 128 bytes), filled
 * MQ_STAGES - 1 steps ahead by 16-byte cp.async (ALIGNED; else by plain loads
 * and stores). Every (row tile, pair tile) runs mmv_step's arithmetic on the
 * same operands: per step the same mmas in the same order from 0 (Σx once
 * per pair tile, the same chain), the same fold (mmv_scales, mmv_fold), and
 * the steps' sums in the same K ranges (mmv_range: range_steps steps each)
 * added from 0.0f in range order, as mmv_sum and k_mmv_warp add them. An
 * mma's output element depends only on its own row and column, so every
 * result has the bits k_mmv gives it: for these formats the MMV and MMA
 * paths agree bit for bit at any token count. Rows past N compute on row
 * N - 1 and are not stored; pairs past the tile's count are not staged,
 * not stored, and their pair tiles (8 pairs) not computed.
 * The range sums live in shared memory, each thread its own 32 (not in
 * registers): 128 registers, 4 blocks per SM instead of 3 at 168 registers,
 * with 3 stages instead of 4 to fit; measured 7% faster (NOTES.md v24). */
enum { MQ_ROWS = 64, MQ_STAGES = 3 };
struct alignas(16) mq_stage {
    uint8_t codes[MQ_ROWS][32];
    uint8_t x[TILE_M][128]; /* 16-byte run r of pair row q at run r ^ (q & 1): no bank conflicts */
};
template <typename TT, bool FUSED, bool ALIGNED>
__global__ void __launch_bounds__(128, 4)
k_mma_mmv(zcu_qw qa, zcu_qw qb, const TT *x, int x_per_slot, int k, const int *perm, const int *n_tiles,
          const int4 *tiles, int range_steps, int act, TT *y) {
    __shared__ mq_stage S[MQ_STAGES];
    __shared__ float sums[32][128]; /* [(row tile, pair tile, c)][thread]: a thread's own, no barrier */
    const auto sum_of = [&](int i, int j, int c) -> float & { return sums[(i * 4 + j) * 4 + c][threadIdx.x]; };
    zcu_pdl_entry();
    if ((int)blockIdx.x >= *n_tiles) return;
    const int4 tile = tiles[blockIdx.x];
    const int64_t N = qa.rows, K = qa.cols, e = tile.x;
    const int start = tile.y, cnt = tile.z, ns = (int)(K / 64), lg = qa.gs_lg - 6, st = qa.scale_t;
    const int64_t n0 = (int64_t)blockIdx.y * (FUSED ? MQ_ROWS / 2 : MQ_ROWS);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const zcu_qw &qB = FUSED ? qb : qa; /* the matrix of rows gq + 8 */
    /* block row b -> its absolute row (of qB where b & 8 and FUSED) */
    const auto row_of = [&](int b) -> int64_t {
        const int64_t n = FUSED ? n0 + 8 * (b >> 4) + (b & 7) : n0 + b;
        return e * N + (n < N ? n : N - 1);
    };
    /* copies: thread tid takes 16 bytes of code row tid / 2 and 64 bytes of pair tid / 2 */
    const int cb = tid >> 1, half = tid & 1;
    const zcu_qw &qc = FUSED && (cb & 8) ? qb : qa;
    const uint8_t *csrc = qc.w + row_of(cb) * qc.row_bytes + 16 * half;
    const bool xon = cb < cnt;
    const TT *xsrc = x;
    if (xon) {
        const int64_t pr = perm[start + cb];
        xsrc = x + (x_per_slot ? pr : pr / k) * K + 32 * half;
    }
    const auto stage_in = [&](int s) {
        if (s < ns) {
            mq_stage &D = S[s % MQ_STAGES];
            uint8_t *cd = &D.codes[cb][16 * half], *xd = &D.x[cb][0];
            const int sw = cb & 1;
            const uint8_t *cs = csrc + (int64_t)s * 32;
            const TT *xs = xsrc + (int64_t)s * 64;
            if (ALIGNED) {
                cp_async16(smem_u32(cd), cs);
                if (xon)
#pragma unroll
                    for (int i = 0; i < 4; i++) cp_async16(smem_u32(xd + 16 * ((4 * half + i) ^ sw)), xs + 8 * i);
            } else {
                for (int i = 0; i < 16; i++) cd[i] = cs[i];
                if (xon)
                    for (int i = 0; i < 32; i++) ((TT *)(xd + 16 * ((4 * half + i / 8) ^ sw)))[i % 8] = xs[i];
            }
        }
        if (ALIGNED) cp_async_commit(); /* a group per step, empty past the end: the waits count steps */
    };
#pragma unroll
    for (int s = 0; s < MQ_STAGES - 1; s++) stage_in(s);

    /* this warp: row tiles rt0, rt0 + 1; pair tiles pt0.. of which npt hold
       pairs (computing all 4 unconditionally, so that their mma chains
       interleave, measured 2-8% slower up to 1024 tokens: NOTES.md v24) */
    const int rt0 = 2 * (warp >> 1), pt0 = 4 * (warp & 1);
    const int npt = min(4, max(0, (cnt - 8 * pt0 + 7) / 8));
    int64_t ga[2], gb[2]; /* scale index of rows gq and gq + 8 of each row tile, less the group */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        ga[i] = row_of(16 * (rt0 + i) + gq) * qa.gpr;
        gb[i] = row_of(16 * (rt0 + i) + 8 + gq) * qa.gpr;
    }
    const auto ld_scales = [&](int s, uint32_t (&r)[2][4]) {
        const int64_t g = s >> lg;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            r[i][0] = mmv_ldraw(qa.scales, ga[i] + g, st), r[i][1] = mmv_ldraw(qa.biases, ga[i] + g, st);
            r[i][2] = mmv_ldraw(qB.scales, gb[i] + g, st), r[i][3] = mmv_ldraw(qB.biases, gb[i] + g, st);
        }
    };
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[i][j][c] = 0.0f;
    for (int q = 0; q < 32; q++) sums[q][tid] = 0.0f;
    uint32_t raw[2][4];
    ld_scales(0, raw);
    for (int s = 0; s < ns; s++) {
        if (ALIGNED) cp_async_wait<MQ_STAGES - 2>(); /* step s landed (this thread's copies) */
        __syncthreads();                            /* everyone's; and step s - 1's stage is free */
        stage_in(s + MQ_STAGES - 1);
        const mq_stage &C = S[s % MQ_STAGES];
        float sc[2][2], bo[2][2];
        uint32_t A[2][2][2][4]; /* [row tile][word][mma] */
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mmv_scales<TT>(raw[i], st, sc[i], bo[i]);
            const uint2 wa = *(const uint2 *)&C.codes[16 * (rt0 + i) + gq][8 * tq];
            const uint2 wb = *(const uint2 *)&C.codes[16 * (rt0 + i) + 8 + gq][8 * tq];
            mmv_word_a<TT>(wa.x, wb.x, A[i][0][0], A[i][0][1]);
            mmv_word_a<TT>(wa.y, wb.y, A[i][1][0], A[i][1][1]);
        }
        if (s + 1 < ns) ld_scales(s + 1, raw);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (j >= npt) break;
            const uint8_t *xr = &C.x[8 * (pt0 + j) + gq][0];
            const int sw = gq & 1;
            uint32_t p[2][4];
            mmv_word_b(*(const uint4 *)(xr + 16 * ((2 * tq) ^ sw)), p[0]);
            mmv_word_b(*(const uint4 *)(xr + 16 * ((2 * tq + 1) ^ sw)), p[1]);
            float sx[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            mmv_word_sx<TT>(p[0], sx);
            mmv_word_sx<TT>(p[1], sx);
#pragma unroll
            for (int i = 0; i < 2; i++) {
                float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                mmv_word_d<TT>(A[i][0][0], A[i][0][1], p[0], d);
                mmv_word_d<TT>(A[i][1][0], A[i][1][1], p[1], d);
                mmv_fold(d, sx, sc[i], bo[i], acc[i][j]);
            }
        }
        if ((s + 1) % range_steps == 0 || s + 1 == ns) /* a K range ends */
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        sum_of(i, j, c) = __fadd_rn(sum_of(i, j, c), acc[i][j][c]);
                        acc[i][j][c] = 0.0f;
                    }
    }
    /* the lane's results: rows gq (c < 2) and gq + 8 of pair column 2tq + (c & 1) */
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
        for (int c = 0; c < 2; c++) {
            const int slot = 8 * (pt0 + j) + 2 * tq + c;
            if (slot >= cnt) continue;
            const int64_t p = perm[start + slot];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                if (FUSED) {
                    const int64_t n = n0 + 8 * (rt0 + i) + gq;
                    if (n < N) mmv_put<TT, true>(y, p * N + n, sum_of(i, j, c), sum_of(i, j, 2 + c), act);
                } else {
                    const int64_t na = n0 + 16 * (rt0 + i) + gq, nb = na + 8;
                    if (na < N) mmv_put<TT, false>(y, p * N + na, sum_of(i, j, c), 0.0f, act);
                    if (nb < N) mmv_put<TT, false>(y, p * N + nb, sum_of(i, j, 2 + c), 0.0f, act);
                }
            }
        }
    }
}

/* Fused down projection + combine, one pair per tile (unsorted): block ->
 * (token t, 16 output rows); warp (ks, j0) computes slots j0, j0+NS, ... over
 * K range ks; then thread r sums each slot's partials (mmv_sum), rounds to T
 * and combines the slots in order j = 0..k-1 from 0.0f. Shared: red[k][KS][16]. */
template <typename TT, int LG, int KS>
__global__ void __launch_bounds__(512)
k_mmv_combine(zcu_qw q, const TT *h, const int32_t *idx, int k, const float *wts, TT *out) {
    extern __shared__ float cred[];
    const int64_t D = q.rows, K = q.cols, nrb = (D + 15) / 16;
    const int64_t t = blockIdx.x / nrb, d0 = (blockIdx.x % nrb) * 16;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, ks = w % KS, ns = (blockDim.x >> 5) / KS;
    const int gq = lane >> 2, tq = lane & 3;
    int64_t s0, s1;
    mmv_range<KS>(K, ks, s0, s1);
    /* In a MoE block the expert ids come from the router two kernels back
     * (done before the previous kernel started): prefetch the slots' rows
     * before the wait. Read through L2 (never a stale L1 line); a hint, so an
     * id still being written costs bandwidth, not correctness. */
    for (int j = w / KS; j < k; j += ns) {
        const int64_t e = idx ? (int64_t)min(max(__ldcg(idx + t * k + j), 0), (int)q.E - 1) : 0;
        mmv_prefetch<LG>(q, d0 + gq < D ? e * D + d0 + gq : -1, s0, s1, tq);
        mmv_prefetch<LG>(q, d0 + gq + 8 < D ? e * D + d0 + gq + 8 : -1, s0, s1, tq);
    }
    zcu_pdl_entry();
    for (int j = w / KS; j < k; j += ns) {
        const int64_t p = t * k + j, e = zcu_expert(idx, p, q.E);
        /* rows past D compute on row D-1, columns 1..7 on this pair: not stored */
        const int64_t ra = e * D + (d0 + gq < D ? d0 + gq : D - 1);
        const int64_t rb = e * D + (d0 + gq + 8 < D ? d0 + gq + 8 : D - 1);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mmv_steps<TT, LG>(q, ra, q, rb, h + p * K, s0, s1, tq, acc);
        if (tq == 0) { /* column 0 */
            cred[(j * KS + ks) * 16 + gq] = acc[0];
            cred[(j * KS + ks) * 16 + gq + 8] = acc[2];
        }
    }
    zcu_trace_mark(1); /* warp 0's slots done */
    __syncthreads();
    zcu_trace_mark(2); /* every warp's slots done */
    const int r = threadIdx.x;
    if (r >= 16 || d0 + r >= D) return;
    float acc = 0.0f;
    for (int j = 0; j < k; j++)
        acc = zcu_combine_step(acc, wts[t * k + j], zcu_round(out, mmv_sum<KS>(&cred[j * KS * 16 + r], 16)));
    zcu_st(out, t * D + d0 + r, acc);
    zcu_trace_mark(3); /* combined and stored */
}

/* --------------------------------------------------------- combine, act */

template <typename TT>
__global__ void k_combine(const TT *y, const float *w, int64_t n_tok, int k, int64_t D, TT *out) {
    zcu_pdl_entry();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tok * D) return;
    const int64_t t = i / D, d = i % D;
    float acc = 0.0f;
    for (int j = 0; j < k; j++) acc = zcu_combine_step(acc, w[t * k + j], zcu_ld(y, (t * k + j) * D + d));
    zcu_st(out, i, acc);
}

template <typename TT>
__global__ void k_glu(int act, const TT *g, const TT *u, int64_t n, TT *h) {
    zcu_pdl_entry();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) zcu_st(h, i, zcu_act(act, zcu_ld(g, i), zcu_ld(u, i)));
}

/* out[i, :] = round_T(deq(row ids[i])): thread -> (i, chunk) */
template <typename TT, int MODE, int BITS, int CH>
__global__ void k_embed(zcu_qw q, const int32_t *ids, int64_t n, TT *out) {
    zcu_pdl_entry();
    const int64_t nch = q.cols / CH;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * nch) return;
    const int64_t r = i / nch, c0 = (i % nch) * CH;
    float v[CH];
    zcu_dequant_chunk<MODE, BITS, CH>(q, zcu_expert(ids, r, q.rows), c0, v);
#pragma unroll
    for (int j = 0; j < CH; j++) zcu_st(out, r * q.cols + c0 + j, v[j]);
}

/* ----------------------------------------------------------- launchers */

static unsigned blocks_of(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* Kernel launchers, one template per family, reached through the dtype and
 * format dispatch macros (which need a callable template of F<A, B>). */
struct qargs {
    zcu_qw qa, qb;
    const void *x;
    int x_per_slot;
    const int32_t *idx;
    int k;
    int64_t n_tok;
    int act;
    const float *w;
    void *y;
    cudaStream_t st;
    /* MMA: sort results */
    const int *perm, *n_tiles;
    const int4 *tiles;
    unsigned max_tiles;
    int sm_count;
    /* qmm_argmax (MMV, unsorted): the fused argmax's words and its output */
    unsigned long long *amax;
    int32_t *amax_idx;
};

/* Call f with the row chunk as a compile-time constant (std::integral_constant):
 * 32 columns, or 16 when a stored row is not a multiple of 32 — only nvfp4's
 * group of 16 allows that, so no other mode instantiates the 16 path. */
template <int MODE, typename F> static void with_chunk(const zcu_qw &q, F &&f) {
    if constexpr (MODE == ZMLX_QMODE_NVFP4) {
        if (chunk_of(q) == 16) {
            f(std::integral_constant<int, 16>{});
            return;
        }
    }
    f(std::integral_constant<int, 32>{});
}

template <typename TT, bool FUSED> struct fam_gemv {
    template <int MODE, int BITS> static zmlx_status go(const qargs &a) {
        const int64_t P = a.n_tok * a.k, warps = P * a.qa.rows;
        with_chunk<MODE>(a.qa, [&](auto ch) {
            zcu_launch(ZCU_PDL_QMM, k_gemv<TT, MODE, BITS, decltype(ch)::value, FUSED>, blocks_of(warps, WARPS), WARPS * 32, 0,
                       a.st, a.qa, a.qb, (const TT *)a.x, a.x_per_slot, a.idx, a.k, P, a.act, (TT *)a.y);
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
};

template <typename TT, bool FUSED> struct fam_cols {
    template <int MODE, int BITS> static zmlx_status go(const qargs &a) {
        const int64_t P = a.n_tok * a.k;
        with_chunk<MODE>(a.qa, [&](auto ch) {
            constexpr int CH = decltype(ch)::value;
            zcu_launch(ZCU_PDL_QMM, k_cols<TT, MODE, BITS, CH, FUSED>, blocks_of(P * (a.qa.cols / CH), 128), 128, 0, a.st,
                       a.qa, a.qb, (const TT *)a.x, a.x_per_slot, a.idx, a.k, P, a.act, (TT *)a.y);
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
};

template <typename TT> struct fam_cols_combine {
    template <int MODE, int BITS> static zmlx_status go(const qargs &a) {
        with_chunk<MODE>(a.qa, [&](auto ch) {
            constexpr int CH = decltype(ch)::value;
            zcu_launch(ZCU_PDL_QMM, k_cols_combine<TT, MODE, BITS, CH>, blocks_of(a.n_tok * (a.qa.cols / CH), 128), 128, 0,
                       a.st, a.qa, (const TT *)a.x, a.idx, a.k, a.w, a.n_tok, (TT *)a.y);
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
};

template <typename TT, bool FUSED> struct fam_mma {
    template <int MODE, int BITS> static zmlx_status go(const qargs &a) {
        dim3 grid(a.max_tiles, (unsigned)((a.qa.rows + TILE_N - 1) / TILE_N));
        zcu_launch(ZCU_PDL_QMM, k_mma<TT, MODE, BITS, FUSED>, grid, 128, 0, a.st, a.qa, a.qb, (const TT *)a.x,
                   a.x_per_slot, a.k, a.perm, a.n_tiles, a.tiles, a.act, (TT *)a.y);
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
};

/* k_mma_mmv for the affine 4-bit MMV formats on the MMA path (after sort_pairs) */
template <typename TT, bool FUSED>
static zmlx_status mma_mmv_launch(const qargs &a) {
    if constexpr (std::is_same<TT, float>::value) {
        return ZMLX_ERR_UNSUPPORTED; /* mmv_ok excludes f32 */
    } else {
        const int64_t rows = FUSED ? MQ_ROWS / 2 : MQ_ROWS;
        const dim3 grid(a.max_tiles, (unsigned)((a.qa.rows + rows - 1) / rows));
        const int rs = (int)mmv_range_steps(a.qa);
        const uintptr_t bits = (uintptr_t)a.qa.w | (uintptr_t)a.qb.w | (uintptr_t)a.x | (uintptr_t)a.qa.row_bytes;
        const bool aligned = (bits & 15) == 0;
        auto kern = aligned ? k_mma_mmv<TT, FUSED, true> : k_mma_mmv<TT, FUSED, false>;
        zcu_launch(ZCU_PDL_QMM, kern, grid, 128, 0, a.st, a.qa, a.qb, (const TT *)a.x, a.x_per_slot, a.k, a.perm,
                   a.n_tiles, a.tiles, rs, a.act, (TT *)a.y);
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
}

template <typename TT> struct fam_embed {
    template <int MODE, int BITS> static zmlx_status go(const qargs &a) {
        const int64_t n = a.n_tok;
        with_chunk<MODE>(a.qa, [&](auto ch) {
            constexpr int CH = decltype(ch)::value;
            zcu_launch(ZCU_PDL_QMM, k_embed<TT, MODE, BITS, CH>, blocks_of(n * (a.qa.cols / CH), 128), 128, 0, a.st, a.qa,
                       a.idx, n, (TT *)a.y);
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
};

#define FAM(name, ...) name<__VA_ARGS__>::template go

/* f(std::integral_constant<int, KS>) for the weight's K-range count */
template <typename F> static void with_ks(const zcu_qw &q, F &&f) {
    const int ks = mmv_ks(q);
    if (ks == 8) f(std::integral_constant<int, 8>{});
    else if (ks == 16) f(std::integral_constant<int, 16>{});
    else f(std::integral_constant<int, 4>{});
}

/* Whether weight q fits the stream (k_mmv_stream, mmv_slab): SLAB_KS K
 * ranges of 64·SLAB_STEPS columns, groups of 64, whole tiles of rpt rows,
 * bulk-copy alignment. */
static bool slab_fits(const zcu_qw &q, int rpt) {
    return q.gs == 64 && mmv_ks(q) == SLAB_KS && q.cols == 64 * SLAB_STEPS && q.rows % rpt == 0 &&
           ((uintptr_t)q.w & 15) == 0 && q.row_bytes % 16 == 0 && ((uintptr_t)q.scales & 15) == 0 &&
           ((uintptr_t)q.biases & 15) == 0;
}

/* f(std::integral_constant<int, LG>) for a variant of mmv_fast_lg */
template <typename F> static void with_variant(int lg, F &&f) {
    switch (lg) {
    case 0: f(std::integral_constant<int, 0>{}); break;
    case 1: f(std::integral_constant<int, 1>{}); break;
    case MMV_MX: f(std::integral_constant<int, MMV_MX>{}); break;
    case MMV_MX_ANY: f(std::integral_constant<int, MMV_MX_ANY>{}); break;
    case mmv_fast_w(2): f(std::integral_constant<int, mmv_fast_w(2)>{}); break;
    case mmv_fast_w(3): f(std::integral_constant<int, mmv_fast_w(3)>{}); break;
    case mmv_fast_w(5): f(std::integral_constant<int, mmv_fast_w(5)>{}); break;
    case mmv_fast_w(6): f(std::integral_constant<int, mmv_fast_w(6)>{}); break;
    case MMV_A8: f(std::integral_constant<int, MMV_A8>{}); break;
    case -2: f(std::integral_constant<int, -2>{}); break;
    case -3: f(std::integral_constant<int, -3>{}); break;
    case -5: f(std::integral_constant<int, -5>{}); break;
    case -6: f(std::integral_constant<int, -6>{}); break;
    case -8: f(std::integral_constant<int, -8>{}); break;
    default: f(std::integral_constant<int, -4>{});
    }
}

/* Whether the MMV call a (variant lg, rpt rows per block, nt tiles of nrb
 * row blocks) runs as the stream (k_mmv_stream) rather than k_mmv. */
static bool mmv_streams(const qargs &a, int lg, int64_t rpt, int64_t nt, int64_t nrb) {
    return lg == 0 && slab_fits(a.qa, (int)rpt) && slab_fits(a.qb, (int)rpt) &&
           nt * nrb <= INT32_MAX && /* tile numbers (+ 2 G) in 32 bits */
           (a.qa.E == 1 || a.n_tok >= mmv_stream_tokens());
}

/* MMV launchers (the variant of mmv_fast_lg is the format dispatch; none for
 * f32). The stream serves the affine fast variant's fitting weights in the
 * many-wave calls: a dense matrix of >= 65536 rows (the LM head: the only
 * E = 1 weight with SLAB_KS ranges), the experts from mmv_stream_tokens().
 * The generic variants (LG < 0, MMV_MX_ANY: odd alignments, and the affine
 * widths other than 4) run as k_mmv with batches of MMV_U steps only. */
template <typename TT> struct mmv_launch {
    template <bool FUSED> static zmlx_status qmm(const qargs &a) {
        const int64_t rpt = FUSED ? 8 : 16, nrb = (a.qa.rows + rpt - 1) / rpt;
        const int64_t nt = a.perm ? (int64_t)a.max_tiles : a.n_tok * a.k;
        const int la = mmv_fast_lg<TT>(a.qa, a.x), lg = la == mmv_fast_lg<TT>(a.qb, a.x) ? la : -a.qa.bits;
        const bool half = a.qa.E > 1 || a.n_tok >= mmv_half_tokens();
        if (mmv_streams(a, lg, rpt, nt, nrb)) {
            const int64_t g = (int64_t)a.sm_count * STREAM_BPS;
            zcu_launch(ZCU_PDL_QMM, a.perm ? k_mmv_stream<TT, FUSED, MMV_TILE> : k_mmv_stream<TT, FUSED, 1>,
                       (unsigned)(nt * nrb < g ? nt * nrb : g), SLAB_KS * 32, STREAM_STAGES * sizeof(mmv_slab), a.st,
                       a.qa, a.qb, (const TT *)a.x, a.x_per_slot, a.idx, a.k, a.n_tok * a.k, a.perm, a.n_tiles,
                       a.tiles, a.act, (TT *)a.y, a.amax, a.amax_idx);
            ZCU_LAUNCHED();
            return ZMLX_OK;
        }
        if (a.perm && mmv_aligned(lg) && mmv_ks(a.qa) == 4 &&
            mmv_range_steps(a.qa) <= mmv_warp_steps() && a.qa.rows < INT32_MAX) {
            with_variant(lg, [&](auto lgc) {
                constexpr int LG = decltype(lgc)::value;
                if constexpr (mmv_aligned(LG))
                    zcu_launch(ZCU_PDL_QMM, k_mmv_warp<TT, FUSED, LG, 4, MMV_U / 2>,
                               (unsigned)(nt * ((nrb + MMV_WARP_ROWS - 1) / MMV_WARP_ROWS)), MMV_WARP_ROWS * 32, 0,
                               a.st, a.qa, a.qb, (const TT *)a.x, a.x_per_slot, a.k, a.perm, a.n_tiles, a.tiles,
                               a.act, (TT *)a.y);
            });
            ZCU_LAUNCHED();
            return ZMLX_OK;
        }
        with_ks(a.qa, [&](auto ksc) {
            with_variant(lg, [&](auto lgc) {
                constexpr int KS = decltype(ksc)::value, LG = decltype(lgc)::value;
                auto go = [&](auto kern) {
                    zcu_launch(ZCU_PDL_QMM, kern, (unsigned)(nt * nrb), KS * 32, 0, a.st, a.qa, a.qb, (const TT *)a.x,
                               a.x_per_slot, a.idx, a.k, a.perm, a.n_tiles, a.tiles, a.act, (TT *)a.y, a.amax,
                               a.amax_idx);
                };
                /* ONE: the affine fast variants' unsorted tiles (mxfp4 has no Σx, the generic
                   variants keep the per-step form), but not a dense matrix at one token (its
                   weights are in registers before the wait; with ONE the decode step was 1-2%
                   slower, NOTES.md v26) */
                if constexpr (mmv_aligned(LG))
                    go(!half   ? k_mmv<TT, FUSED, LG, KS, MMV_U, false>
                       : a.perm ? k_mmv<TT, FUSED, LG, KS, MMV_U / 2, false>
                                : k_mmv<TT, FUSED, LG, KS, MMV_U / 2, mmv_affine_fast(LG)>);
                else
                    go(k_mmv<TT, FUSED, LG, KS, MMV_U, false>);
            });
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
    static zmlx_status combine(const qargs &a) {
        const int lg = mmv_fast_lg<TT>(a.qa, a.x);
        with_ks(a.qa, [&](auto ksc) {
            with_variant(lg, [&](auto lgc) {
                constexpr int KS = decltype(ksc)::value, LG = decltype(lgc)::value;
                const int ns = a.k < 16 / KS ? a.k : 16 / KS; /* <= 512 threads */
                const size_t shm = (size_t)a.k * KS * 16 * sizeof(float);
                const int64_t nrb = (a.qa.rows + 15) / 16;
                zcu_launch(ZCU_PDL_QMM, k_mmv_combine<TT, LG, KS>, (unsigned)(a.n_tok * nrb), 32 * KS * ns, shm, a.st,
                           a.qa, (const TT *)a.x, a.idx, a.k, a.w, (TT *)a.y);
            });
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
};
template <> struct mmv_launch<float> {
    template <bool FUSED> static zmlx_status qmm(const qargs &) { return ZMLX_ERR_UNSUPPORTED; }
    static zmlx_status combine(const qargs &) { return ZMLX_ERR_UNSUPPORTED; }
};

/* Sort the pairs by expert into scratch slot 0, in tiles of at most tm
 * pairs; fills a->perm, tiles. */
static zmlx_status sort_pairs(zmlx_ctx *c, qargs *a, int tm) {
    const int64_t P = a->n_tok * a->k, E = a->qa.E;
    const int64_t max_tiles = P / tm + (E < P ? E : P) + 1;
    void *buf;
    zmlx_status s = zcu_scratch(c, 0, (size_t)(P + 4) * sizeof(int) + (size_t)max_tiles * sizeof(int4), &buf);
    if (s != ZMLX_OK) return s;
    int *perm = (int *)buf;
    int *n_tiles = perm + P;
    /* int4 array 16-byte aligned after perm and the count */
    int4 *tiles = (int4 *)(((uintptr_t)(n_tiles + 1) + 15) & ~(uintptr_t)15);
    const int NS = sort_segments(E);
    const size_t shm = (size_t)((NS + 1) * E + 33) * sizeof(int); /* <= 33 KiB (E <= SORT_MAX_E) */
    zcu_launch(ZCU_PDL_QMM, k_sort, 1, 1024, shm, a->st, a->idx, P, (int)E, NS, tm, perm, n_tiles, tiles);
    ZCU_LAUNCHED();
    a->perm = perm;
    a->n_tiles = n_tiles;
    a->tiles = tiles;
    a->max_tiles = (unsigned)max_tiles;
    return ZMLX_OK;
}

/* The plain qmm (idx NULL) is one "expert" used by every token: P = n_tok. */
static qargs make_args(zmlx_ctx *c, const zmlx_qweight *Wa, const zmlx_qweight *Wb, const void *x,
                       int x_per_slot, const int32_t *idx, int k, int64_t n_tok, int act,
                       const float *w, void *y) {
    qargs a;
    memset(&a, 0, sizeof a);
    a.qa = zcu_qw_of(Wa);
    a.qb = zcu_qw_of(Wb ? Wb : Wa);
    a.x = x;
    a.x_per_slot = x_per_slot;
    a.idx = idx;
    a.k = k;
    a.n_tok = n_tok;
    a.act = act;
    a.w = w;
    a.y = y;
    a.st = zcu_state_of(c)->stream;
    a.sm_count = zcu_state_of(c)->sm_count;
    return a;
}

/* gather_qmm / gather_qmm_swiglu: Wb NULL = plain. */
template <typename TT>
static zmlx_status run_qmm(zmlx_ctx *c, const zmlx_qweight *Wa, const zmlx_qweight *Wb,
                           zmlx_dtype T, const void *x, int64_t n_tok, int x_per_slot,
                           const int32_t *idx, int k, int act, void *y) {
    qargs a = make_args(c, Wa, Wb, x, x_per_slot, idx, k, n_tok, act, NULL, y);
    switch (qmm_path(Wa, T, n_tok)) {
    case PATH_COLS:
        return Wb ? ZCU_DISPATCH_FMT(a.qa, FAM(fam_cols, TT, true), a)
                  : ZCU_DISPATCH_FMT(a.qa, FAM(fam_cols, TT, false), a);
    case PATH_MMA: {
        zmlx_status s = sort_pairs(c, &a, TILE_M);
        if (s != ZMLX_OK) return s;
        if (mmv_ok(Wa, T) && Wa->mode == ZMLX_QMODE_AFFINE && Wa->bits == 4)
            return Wb ? mma_mmv_launch<TT, true>(a) : mma_mmv_launch<TT, false>(a);
        return Wb ? ZCU_DISPATCH_FMT(a.qa, FAM(fam_mma, TT, true), a)
                  : ZCU_DISPATCH_FMT(a.qa, FAM(fam_mma, TT, false), a);
    }
    case PATH_MMV: {
        if (n_tok >= mmv_sort_tokens()) {
            zmlx_status s = sort_pairs(c, &a, MMV_TILE);
            if (s != ZMLX_OK) return s;
        }
        return Wb ? mmv_launch<TT>::template qmm<true>(a) : mmv_launch<TT>::template qmm<false>(a);
    }
    default:
        return Wb ? ZCU_DISPATCH_FMT(a.qa, FAM(fam_gemv, TT, true), a)
                  : ZCU_DISPATCH_FMT(a.qa, FAM(fam_gemv, TT, false), a);
    }
}

/* qmm_argmax: where the plain matmul takes the MMV family with one pair per
 * tile (so a block's rows are one token's), its blocks also take the argmax
 * (k_mmv's amax); elsewhere the matmul, then k_argmax over y. The same y and
 * the same argmax rule either way (amax_word). */
template <typename TT>
static zmlx_status run_qmm_argmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_tok, const zmlx_qweight *W,
                                  void *y, int32_t *idx) {
    if (qmm_path(W, T, n_tok) == PATH_MMV && n_tok < mmv_sort_tokens() && n_tok <= ZCU_AMAX_TOK) {
        qargs a = make_args(c, W, NULL, x, 0, NULL, 1, n_tok, 0, NULL, y);
        a.amax = zcu_state_of(c)->amax;
        a.amax_idx = idx;
        return mmv_launch<TT>::template qmm<false>(a);
    }
    const zmlx_status s = run_qmm<TT>(c, W, NULL, T, x, n_tok, 0, NULL, 1, 0, y);
    return s == ZMLX_OK ? zcu_argmax(c, T, y, n_tok, W->N, idx) : s;
}

/* Rows [r0, r0 + n) of a dense transpose=1 weight as a weight of their own. */
static zmlx_qweight row_view(const zmlx_qweight *W, int64_t r0, int64_t n) {
    const int64_t s0 = zq_scale_index(W, 0, r0) * (int64_t)zmlx_dtype_size(W->scale_dtype); /* bytes */
    zmlx_qweight v = *W;
    v.N = n;
    v.w = zq_row_ptr(W, 0, r0);
    v.scales = (const uint8_t *)W->scales + s0;
    if (W->biases) v.biases = (const uint8_t *)W->biases + s0;
    return v;
}

/* The packed q/k/v weight's parts (rows: Hq·hd of q, Hkv·hd of k, Hkv·hd_v
 * of v) as row views; returns whether some part takes another family than
 * the packed matrix at q.n_tok tokens (see run_qkv_parts). */
static bool qkv_split(const zcu_qcall &q, zmlx_qweight (&part)[3], int64_t (&rows)[3]) {
    const zmlx_attn_params &p = q.sp->attn;
    rows[0] = (int64_t)p.Hq * p.hd, rows[1] = (int64_t)p.Hkv * p.hd, rows[2] = (int64_t)p.Hkv * p.hd_v;
    const int path = qmm_path(q.Wa, q.T, q.n_tok);
    bool differ = false;
    for (int i = 0, r0 = 0; i < 3; r0 += (int)rows[i++]) {
        part[i] = row_view(q.Wa, r0, rows[i]);
        differ = differ || qmm_path(&part[i], q.T, q.n_tok) != path;
    }
    return differ;
}

/* attention_step with its projection at one token (zcu_qkv_step) as
 * k_mmv_qkv, where the projection alone would take k_mmv with a fast affine
 * variant (so the same kernel body and bits), and so would each of q, k and
 * v alone (the unfused chain's projections: 8- and 3-bit parts of under
 * MMV_W_DENSE_ROWS rows take k_gemv), and a head is at most
 * QKV_MAX_CLUSTER blocks of 16 rows, with 16-byte aligned qkv and caches;
 * else ZMLX_ERR_UNSUPPORTED before anything is launched. */
template <typename TT>
static zmlx_status run_qkv_step(zmlx_ctx *c, const zcu_qcall &q) {
    if constexpr (std::is_same<TT, float>::value) {
        return ZMLX_ERR_UNSUPPORTED; /* mmv_ok excludes f32 */
    } else {
        const zmlx_attn_step_params *sp = q.sp;
        const zmlx_attn_params &p = sp->attn;
        const uintptr_t bits = (uintptr_t)q.y | (uintptr_t)q.kc | (uintptr_t)q.vc;
        if (q.n_tok != 1 || q.n_tok >= qkv_step_tokens() || qmm_path(q.Wa, q.T, 1) != PATH_MMV || p.hd != p.hd_v ||
            p.hd % 16 != 0 || p.hd > 16 * QKV_MAX_CLUSTER || (bits & 15) != 0)
            return ZMLX_ERR_UNSUPPORTED;
        zmlx_qweight part[3];
        int64_t rows[3];
        if (qkv_split(q, part, rows)) return ZMLX_ERR_UNSUPPORTED;
        qargs a = make_args(c, q.Wa, NULL, q.x, 0, NULL, 1, 1, 0, NULL, q.y);
        const int lg = mmv_fast_lg<TT>(a.qa, a.x);
        const int64_t nrb = a.qa.rows / 16;
        if (!(mmv_affine_fast(lg) || lg >= MMV_FW) || mmv_streams(a, lg, 16, 1, nrb) || nrb > INT32_MAX)
            return ZMLX_ERR_UNSUPPORTED;
        qkv_prep pp;
        memset(&pp, 0, sizeof pp);
        pp.a = p;
        pp.q_norm = sp->q_norm, pp.k_norm = sp->k_norm, pp.eps = sp->eps;
        if (sp->rope) pp.rp = *sp->rope, pp.has_rope = 1;
        pp.pos = q.pos, pp.kc = q.kc, pp.vc = q.vc, pp.err = zcu_state_of(c)->err_flag;
        with_ks(a.qa, [&](auto ksc) {
            with_variant(lg, [&](auto lgc) {
                constexpr int KS = decltype(ksc)::value, LG = decltype(lgc)::value;
                if constexpr (mmv_affine_fast(LG) || LG >= MMV_FW)
                    zcu_launch_cluster(ZCU_PDL_QMM, (unsigned)(p.hd / 16), k_mmv_qkv<TT, LG, KS>, (unsigned)nrb,
                                       KS * 32, 0, a.st, a.qa, (const TT *)a.x, (TT *)a.y, pp);
            });
        });
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
}

/* attention_step's packed projection as one matmul per part where a part
 * takes another family than the packed matrix (qmm_path: the dense GEMV /
 * MMA rule counts output tiles, so at a few hundred tokens the packed matrix
 * can take k_mma while k and v take k_gemv, and those two differ in bits for
 * every format but affine 4-bit; 8- and 3-bit k and v of under
 * MMV_W_DENSE_ROWS rows take k_gemv beside a packed MMV matrix at any token count).
 * The unfused chain projects the parts apart; this gives its bits. Each part
 * into scratch 3, then a 2-D copy into its columns of qkv. Within a family a
 * row's bits do not depend on the matrix's other rows, so where every part
 * takes the packed matrix's family: ZMLX_ERR_UNSUPPORTED, nothing launched
 * (one packed matmul then gives the same bits). */
template <typename TT>
static zmlx_status run_qkv_parts(zmlx_ctx *c, const zcu_qcall &q) {
    zmlx_qweight part[3];
    int64_t rows[3];
    if (!qkv_split(q, part, rows)) return ZMLX_ERR_UNSUPPORTED;
    const int64_t row = rows[0] + rows[1] + rows[2];
    const int64_t most = std::max(rows[0], std::max(rows[1], rows[2])); /* the largest part's rows */
    void *tmp;
    zmlx_status s = zcu_scratch(c, 3, (size_t)(q.n_tok * most) * sizeof(TT), &tmp);
    for (int i = 0, r0 = 0; i < 3 && s == ZMLX_OK; r0 += (int)rows[i++]) {
        s = run_qmm<TT>(c, &part[i], NULL, q.T, q.x, q.n_tok, 0, NULL, 1, 0, tmp);
        if (s == ZMLX_OK)
            s = zcu_status(cudaMemcpy2DAsync((TT *)q.y + r0, (size_t)row * sizeof(TT), tmp,
                                             (size_t)rows[i] * sizeof(TT), (size_t)rows[i] * sizeof(TT),
                                             (size_t)q.n_tok, cudaMemcpyDeviceToDevice, zcu_state_of(c)->stream));
    }
    return s;
}

/* f32 has no MMA instantiation (qmm_path never picks it for f32) */
template <> struct fam_mma<float, true> {
    template <int MODE, int BITS> static zmlx_status go(const qargs &) { return ZMLX_ERR_UNSUPPORTED; }
};
template <> struct fam_mma<float, false> {
    template <int MODE, int BITS> static zmlx_status go(const qargs &) { return ZMLX_ERR_UNSUPPORTED; }
};

template <typename TT>
static zmlx_status launch_combine(const void *y, const float *w, int64_t n_tok, int k, int64_t D,
                                  void *out, cudaStream_t st) {
    zcu_launch(ZCU_PDL_QMM, k_combine<TT>, blocks_of(n_tok * D, 256), 256, 0, st, (const TT *)y, w, n_tok, k, D,
               (TT *)out);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

template <typename TT>
static zmlx_status run_combine(zmlx_ctx *c, zmlx_dtype T, const void *h, int64_t n_tok,
                               const zmlx_qweight *Wd, const int32_t *idx, int k, const float *w,
                               void *out) {
    qargs a = make_args(c, Wd, NULL, h, 1, idx, k, n_tok, 0, w, out);
    const int path = qmm_path(Wd, T, n_tok);
    /* One kernel only where it measured faster: the MMV formats at one token
       (one pair per tile; shared bound of its partials). Elsewhere the
       unfused chain, y to scratch with the gather kernel, then k_combine,
       measured faster than a one-kernel combine (k_mmv_combine from 2 tokens,
       the GEMV formats' combine kernel at every M: NOTES.md "The fused combine
       as the unfused chain"), and agrees with unfused by construction. */
    if (path == PATH_MMV && n_tok < mmv_sort_tokens() && n_tok < mmv_combine_tokens() &&
        k * mmv_ks(a.qa) * 16 * sizeof(float) <= 48 * 1024)
        return mmv_launch<TT>::combine(a);
    if (path == PATH_COLS) return ZCU_DISPATCH_FMT(a.qa, FAM(fam_cols_combine, TT), a);
    void *ybuf;
    const int64_t D = Wd->N;
    zmlx_status s = zcu_scratch(c, 1, (size_t)(n_tok * k * D) * sizeof(TT), &ybuf);
    if (s == ZMLX_OK) s = run_qmm<TT>(c, Wd, NULL, T, h, n_tok, 1, idx, k, 0, ybuf);
    if (s == ZMLX_OK) s = launch_combine<TT>(ybuf, w, n_tok, k, D, out, a.st);
    return s;
}

/* One public op, described for the per-type runner. */
template <typename TT>
zmlx_status qmm_run(zmlx_ctx *c, const zcu_qcall &q) {
    zmlx_dtype T = q.T;
    switch (q.op) {
    case ZCU_OP_QMM:
        return run_qmm<TT>(c, q.Wa, NULL, T, q.x, q.n_tok, q.x_per_slot, q.idx, q.k, 0, q.y);
    case ZCU_OP_SWIGLU:
        return run_qmm<TT>(c, q.Wa, q.Wb, T, q.x, q.n_tok, 0, q.idx, q.k, q.act, q.y);
    case ZCU_OP_QMM_COMBINE:
        return run_combine<TT>(c, T, q.x, q.n_tok, q.Wa, q.idx, q.k, q.w, q.y);
    case ZCU_OP_QMM_ARGMAX:
        return run_qmm_argmax<TT>(c, T, q.x, q.n_tok, q.Wa, q.y, q.idx_out);
    case ZCU_OP_QKV_STEP:
        return run_qkv_step<TT>(c, q);
    case ZCU_OP_QKV_PARTS:
        return run_qkv_parts<TT>(c, q);
    case ZCU_OP_COMBINE:
        return launch_combine<TT>(q.x, q.w, q.n_tok, q.k, q.D, q.y, zcu_state_of(c)->stream);
    case ZCU_OP_GLU: {
        cudaStream_t st = zcu_state_of(c)->stream;
        zcu_launch(ZCU_PDL_QMM, k_glu<TT>, blocks_of(q.n_tok, 256), 256, 0, st, q.act, (const TT *)q.x, (const TT *)q.u,
                   q.n_tok, (TT *)q.y);
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
    default: { /* ZCU_OP_EMBED */
        qargs a = make_args(c, q.Wa, NULL, NULL, 0, q.idx, 1, q.n_tok, 0, NULL, q.y);
        return ZCU_DISPATCH_FMT(a.qa, FAM(fam_embed, TT), a);
    }
    }
}

#endif
