/*
 * rows.cuh — block-level row helpers shared by the CUDA primitives: warp and
 * block reductions in fixed trees, and the RMS norm of one row by one block.
 * Every kernel that norms a row (rms_norm, add_rms_norm, the q/k heads of
 * attention_step) calls rms_row, so they all round identically; every one
 * that rotates q/k rows calls rope_rotate (rope_pair: with its own rope_inv).
 */
#ifndef ZMLX_CUDA_ROWS_CUH
#define ZMLX_CUDA_ROWS_CUH
#include "cuda/cuda_internal.cuh"

#include <type_traits>

/* ------------------------------------------------------ reductions */

__device__ __forceinline__ float wsum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* max that lets a NaN through (as zr_softmax_f32 does) */
__device__ __forceinline__ float nmax(float a, float b) {
    return (isnan(a) || a > b) ? a : (isnan(b) ? b : b);
}
__device__ __forceinline__ float wmax(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = nmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum / max: warp trees, then warp 0 over the per-warp values in
 * warp order. Every thread gets the result. sh: >= 32 floats. */
template <bool MAX>
__device__ float block_reduce(float v, float *sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = MAX ? wmax(v) : wsum(v);
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    if (w == 0) {
        float r = lane < nw ? sh[lane] : (MAX ? -INFINITY : 0.0f);
        r = MAX ? wmax(r) : wsum(r);
        if (lane == 0) sh[32] = r;
    }
    __syncthreads();
    return sh[32];
}

/* Block per row of RMS_T threads; thread i owns the 8-element chunks
 * c = i + RMS_T*j, the first RMS_REG of them kept in registers between the
 * two passes (rows up to 8192 elements), the rest read again. With x2
 * (add_rms_norm) r = round_T(x + x2) is written to r and the row is normed
 * from those rounded values (r may alias x or x2: every element is read and
 * written by one thread). Each thread sums its squares in index order, then
 * block_reduce: the order depends only on D, so add_rms_norm equals add +
 * rms_norm bit for bit whatever the pointers' alignment. */
enum { RMS_T = 256, RMS_REG = 4 };

/* elements i..i+N-1 of p as f32 (0 past n): one 8- or 16-byte load when the
 * N elements are that wide, lie below n and are aligned (KNOWN: the caller
 * knows they do), else element by element. A plain load, not __ldg: callers
 * read rows written by this kernel (rms_row's second pass) or shared memory. */
template <int N, bool KNOWN = false, typename TT>
__device__ __forceinline__ void ld_run(const TT *p, int64_t i, int64_t n, float (&v)[N]) {
    constexpr int B = N * (int)sizeof(TT);
    constexpr bool VEC = B == 8 || B == 16;
    const TT *q = p + i;
    if (VEC && (KNOWN || (i + N <= n && ((uintptr_t)q & (B - 1)) == 0))) {
        typedef typename std::conditional<B == 16, uint4, uint2>::type V;
        const V u = *(const V *)q;
        const TT *h = (const TT *)&u;
#pragma unroll
        for (int e = 0; e < N; e++) v[e] = zcu_ld(h, e);
    } else {
#pragma unroll
        for (int e = 0; e < N; e++) v[e] = i + e < n ? zcu_ld(q, e) : 0.0f;
    }
}

/* v[0..N) rounded to T into p[i..i+N) (elements past n not stored): one
 * 16-byte store (two for f32) when the run is aligned and below n, else
 * element by element. A thread owns runs of 8 elements, so a warp's
 * element-wise 2-byte stores land 16 bytes apart: 16 partial sectors per
 * store instruction (for the 2048-element add_rms_norm ~0.5 of its ~2.7 us
 * per node in a chain: src/cuda/NOTES.md v19). */
template <int N, typename TT>
__device__ __forceinline__ void st_run(TT *p, int64_t i, int64_t n, const float (&v)[N]) {
    constexpr int B = N * (int)sizeof(TT);
    TT *q = p + i;
    if (B % 16 == 0 && i + N <= n && ((uintptr_t)q & 15) == 0) {
        __align__(16) TT h[N];
#pragma unroll
        for (int e = 0; e < N; e++) zcu_st(h, e, v[e]);
#pragma unroll
        for (int b = 0; b < B / 16; b++) ((uint4 *)q)[b] = ((const uint4 *)h)[b];
    } else {
#pragma unroll
        for (int e = 0; e < N; e++)
            if (i + e < n) zcu_st(q, e, v[e]);
    }
}

/* first pass over one chunk: v = the row's values (r = round_T(x + x2) when
 * x2), ss += v·v in index order */
template <typename TT>
__device__ __forceinline__ void rms_in(const TT *x, const TT *x2, TT *r, int64_t i0, int64_t D,
                                       float (&v)[8], float &ss) {
    ld_run<8>(x, i0, D, v);
    if (x2) {
        float v2[8];
        ld_run<8>(x2, i0, D, v2);
#pragma unroll
        for (int j = 0; j < 8; j++) v[j] = zcu_round(r, __fadd_rn(v[j], v2[j]));
        st_run<8>(r, i0, D, v);
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
        if (i0 + j < D) ss = __fadd_rn(ss, __fmul_rn(v[j], v[j]));
}

/* y = round_T(v·inv), times the weight values wv when there is a weight */
template <typename TT>
__device__ __forceinline__ void rms_out(const float (&v)[8], float inv, bool has_w,
                                        const float (&wv)[8], TT *y, int64_t i0, int64_t D) {
    float o[8];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const float nv = zcu_round(y, __fmul_rn(v[j], inv));
        o[j] = has_w ? __fmul_rn(wv[j], nv) : nv;
    }
    st_run<8>(y, i0, D, o);
}

/* 1 / sqrt(mean square + eps) from the row's sum of squares */
__device__ __forceinline__ float rms_inv(float ss, int64_t D, float eps) {
    return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, (float)D), eps)));
}

/* One row by a block of RMS_T threads (sh: >= 33 floats); the body of every
 * CUDA RMS norm (rows, q/k heads of the attention step).
 * The weights of the register-held chunks are loaded in the first pass, with
 * the row: the weight is cold (one per layer), so loading it after the block
 * reduction cost a second memory round trip. */
template <typename TT>
__device__ __forceinline__ void rms_row(const TT *x, const TT *x2, const TT *weight, int64_t D, float eps,
                                        TT *r, TT *y, float *sh) {
    const int64_t tid = threadIdx.x;
    const bool has_w = weight != NULL;
    float v[RMS_REG][8], wv[RMS_REG][8], ss = 0.0f;
#pragma unroll
    for (int j = 0; j < RMS_REG; j++) {
        const int64_t i0 = (tid + j * RMS_T) * 8;
        if (i0 < D && has_w) ld_run<8>(weight, i0, D, wv[j]);
    }
#pragma unroll
    for (int j = 0; j < RMS_REG; j++) {
        const int64_t i0 = (tid + j * RMS_T) * 8;
        if (i0 < D) rms_in(x, x2, r, i0, D, v[j], ss);
    }
    for (int64_t i0 = (tid + RMS_REG * RMS_T) * 8; i0 < D; i0 += RMS_T * 8) {
        float t[8];
        rms_in(x, x2, r, i0, D, t, ss);
    }
    zcu_trace_mark(5); /* rms_row: thread 0's elements in */
    ss = block_reduce<false>(ss, sh);
    const float inv = rms_inv(ss, D, eps);
    zcu_trace_mark(6); /* rms_row: reduced */
    /* y may alias the source (rms_norm): every read of it is done */
#pragma unroll
    for (int j = 0; j < RMS_REG; j++) {
        const int64_t i0 = (tid + j * RMS_T) * 8;
        if (i0 < D) rms_out(v[j], inv, has_w, wv[j], y, i0, D);
    }
    const TT *src = x2 ? r : x;
    for (int64_t i0 = (tid + RMS_REG * RMS_T) * 8; i0 < D; i0 += RMS_T * 8) {
        float t[8], tw[8];
        ld_run<8>(src, i0, D, t);
        if (has_w) ld_run<8>(weight, i0, D, tw);
        rms_out(t, inv, has_w, tw, y, i0, D);
    }
}

/* rms_row by one warp, for rows of at most 32 chunks (256 elements): lane i
 * owns chunk i as rms_row's thread i does, and at that size rms_row's
 * block_reduce only adds zeros to warp 0's sum (the other warps own nothing;
 * the sum of squares is never -0), so wsum gives its bits. For the
 * attention step's per-head norms over many tokens: no block barriers. */
template <typename TT>
__device__ __forceinline__ void rms_row_warp(const TT *x, const TT *weight, int64_t D, float eps, TT *y) {
    const int64_t i0 = (int64_t)(threadIdx.x & 31) * 8;
    const bool mine = i0 < D, has_w = weight != NULL;
    float v[8], wv[8], ss = 0.0f;
    if (mine && has_w) ld_run<8>(weight, i0, D, wv);
    if (mine) rms_in(x, (const TT *)NULL, (TT *)NULL, i0, D, v, ss);
    ss = wsum(ss);
    if (mine) rms_out(v, rms_inv(ss, D, eps), has_w, wv, y, i0, D);
}

/* ------------------------------------------------------------- rope */

/* The inverse frequency of rotation pair i: zr_rope's formula, f32. */
__device__ __forceinline__ float rope_inv(const zmlx_rope_params &p, int i) {
    const int half = p.rot_dims / 2;
    return p.inv_freq ? p.inv_freq[i] : exp2f(__fmul_rn(-__fdiv_rn((float)i, (float)half), log2f(p.base)));
}
/* Rotate pair i of one head row (head_dim features) sitting at position
 * `at`, inv = rope_inv(p, i): zr_rope's formula, f32, stored as T. */
template <typename TT>
__device__ __forceinline__ void rope_rotate(const zmlx_rope_params &p, TT *row, int i, int64_t at, float inv) {
    const int half = p.rot_dims / 2;
    const float ps = p.pos_scale == 0.0f ? 1.0f : p.pos_scale;
    const float ms = p.mscale == 0.0f ? 1.0f : p.mscale;
    const float ang = __fmul_rn(__fmul_rn(ps, (float)at), inv);
    const float c = cosf(ang), s = sinf(ang);
    const int64_t i1 = p.traditional ? 2 * i : i, i2 = p.traditional ? i1 + 1 : i1 + half;
    const float a = zcu_round(row, __fmul_rn(ms, zcu_ld(row, i1)));
    const float b = zcu_round(row, __fmul_rn(ms, zcu_ld(row, i2)));
    zcu_st(row, i1, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
    zcu_st(row, i2, __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c)));
}
template <typename TT>
__device__ __forceinline__ void rope_pair(const zmlx_rope_params &p, TT *row, int i, int64_t at) {
    rope_rotate(p, row, i, at, rope_inv(p, i));
}

#endif
