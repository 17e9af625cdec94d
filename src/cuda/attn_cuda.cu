/*
 * attn_cuda.cu — rope, the single-token attention (attention_decode) and the
 * fused attention step of a decode (attention_step) on the GPU.
 *
 * Attention splits each (token, query head)'s attended positions into chunks
 * of C positions (C fixed by the cache capacity and window, so every call on
 * the same cache chunks alike): a block per chunk computes its scores, their
 * max m_c, l_c = Σ exp(s - m_c) and o_c = Σ exp(s - m_c)·v (no FMA, in the
 * fixed order k_attn describes); the last block of a (token, head) to finish (an integer
 * counter, reset by that block) combines the chunks in chunk order:
 *   M = max(sink, m_c), L = Σ_c l_c·exp(m_c - M) (+ exp(sink - M)),
 *   out = round_T((Σ_c o_c·exp(m_c - M)) · (1/L)).
 * The order of every sum depends only on C and the position count, so results
 * are bit-identical from run to run, and attention_step (which reads its
 * position from device memory) equals attention_decode at the same position.
 * The reference (ref_attn.c) normalises before summing: CUDA and CPU agree
 * within rounding.
 */
#include "cuda/rows.cuh"

/* --------------------------------------------------------------- rope */

/* Rotate pair i of one head row (head_dim features) sitting at position
 * `at`: zr_rope's formula, f32, stored as T. */
template <typename TT>
__device__ __forceinline__ void rope_pair(const zmlx_rope_params &p, TT *row, int i, int64_t at) {
    const int half = p.rot_dims / 2;
    const float inv = p.inv_freq ? p.inv_freq[i]
                                 : exp2f(__fmul_rn(-__fdiv_rn((float)i, (float)half), log2f(p.base)));
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

/* thread -> (token, head, pair i) */
template <typename TT>
__global__ void k_rope(zmlx_rope_params p, TT *x, int64_t n_tok, int n_heads, const int32_t *pos,
                       int64_t pos0) {
    const int half = p.rot_dims / 2;
    const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= n_tok * n_heads * half) return;
    const int64_t th = id / half, t = th / n_heads;
    rope_pair(p, x + th * p.head_dim, (int)(id % half), pos ? (int64_t)pos[t] : pos0 + t);
}

template <typename TT>
static zmlx_status rope_t(cudaStream_t st, const zmlx_rope_params *p, void *x, int64_t n_tok,
                          int n_heads, const int32_t *pos, int64_t pos0) {
    const int64_t n = n_tok * n_heads * (p->rot_dims / 2);
    k_rope<TT><<<(unsigned)((n + 127) / 128), 128, 0, st>>>(*p, (TT *)x, n_tok, n_heads, pos, pos0);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_rope(zmlx_ctx *c, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                                int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0) {
    return ZCU_DISPATCH_T(T, rope_t, zcu_state_of(c)->stream, p, x, n_tok, n_heads, pos, pos0);
}

/* ---------------------------------------------------------- attention */

enum {
    ATT_T = 256,       /* threads per chunk block                                  */
    ATT_NCH = 32,      /* chunks a full cache splits into (while C stays in range) */
    ATT_MINC = 64,     /* chunk length bounds: at least a warp's worth per warp... */
    ATT_MAXC = 2048,   /* ...and the scores of one chunk fit in 8 KB of shared     */
};

/* Chunk length C and the most chunks a (token, head) can have, from the
 * cache geometry alone (never from the current position). */
static void att_split(const zmlx_attn_params *p, int64_t *C, int64_t *nch) {
    const int64_t span = p->window > 0 && p->window < p->cap ? p->window : p->cap;
    int64_t c = (span + ATT_NCH - 1) / ATT_NCH;
    c = c < ATT_MINC ? ATT_MINC : (c > ATT_MAXC ? ATT_MAXC : c);
    *C = c;
    *nch = (span + c - 1) / c;
}

enum { ATT_W = ATT_T / 32, ATT_JU = 4 };

/* elements i..i+3 of p as f32 (0 past n): one 8- or 16-byte load when
 * aligned */
template <typename TT>
__device__ __forceinline__ void ld4(const TT *p, int64_t i, int64_t n, float (&v)[4]) {
    const TT *q = p + i;
    if (i + 4 <= n && ((uintptr_t)q & (4 * sizeof(TT) - 1)) == 0) {
        if constexpr (sizeof(TT) == 4) {
            const float4 f = *(const float4 *)q;
            v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
        } else {
            const uint2 u = *(const uint2 *)q;
            const TT *h = (const TT *)&u;
#pragma unroll
            for (int e = 0; e < 4; e++) v[e] = zcu_ld(h, e);
        }
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = i + e < n ? zcu_ld(q, e) : 0.0f;
    }
}

/* Features d..d+3 of the ATT_JU rows jb, jb + ATT_W, ... of a [len, n]
 * block (rows past len read row len - 1: loaded, never used). */
template <typename TT>
__device__ __forceinline__ void ld_rows(const TT *rows, int n, int64_t jb, int64_t len, int d,
                                        float (&v)[ATT_JU][4]) {
#pragma unroll
    for (int u = 0; u < ATT_JU; u++) {
        const int64_t j = jb + u * ATT_W < len ? jb + u * ATT_W : len - 1;
        ld4(rows + j * n, d, n, v[u]);
    }
}

/* Grid (chunk, query head, token). Token t's context is base + t + 1
 * positions, base = pos[0] (device; 0 without pos) + pos0; q row of token t at
 * q + t·q_stride. part: [tokens, Hq, nch, 2 + hd_v] f32 (m, l, o);
 * cnt: [tokens, Hq] zeroed counters. Shared (floats): C scores, nch chunk
 * weights, hd scaled q values, max(ATT_W·hd_v, 2·nch) for the per-warp sums
 * of o, then the chunks' (m, l).
 * Scores: warp w takes positions w, w + ATT_W, ... four at a time (their
 * loads in flight together); lane l sums (scale·q_d)·k_d over its features
 * d = 4l + 128r + e (r, then e ascending), then a butterfly. o: warp w sums
 * e_j·v_j over the same positions (ascending) for the same features of v;
 * the ATT_W warp sums are then added in warp order. */
template <typename TT>
__global__ void __launch_bounds__(ATT_T)
k_attn(zmlx_attn_params p, const TT *q, int64_t q_stride, const TT *kc, const TT *vc, int64_t n_tok,
       const int32_t *pos, int64_t pos0, int64_t C, int64_t nch, float *part, unsigned *cnt, TT *out) {
    extern __shared__ float dyn[];
    __shared__ float sh[33];
    __shared__ int last;
    float *sc = dyn, *wc = sc + C, *qs = wc + nch, *vp = qs + p.hd;
    const int c = blockIdx.x, h = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t t = blockIdx.z, base = (pos ? (int64_t)pos[0] : 0) + pos0;
    if (base < 0 || base > p.cap - n_tok) return; /* attention_step's prep flagged it */
    const int64_t n_ctx = base + t + 1, lo = p.window > 0 && n_ctx > p.window ? n_ctx - p.window : 0;
    const int64_t n = n_ctx - lo, nact = (n + C - 1) / C;
    if (c >= nact) return;
    const int64_t j0 = lo + (int64_t)c * C, len = min(C, n - (int64_t)c * C);
    const int64_t g = h / (p.Hq / p.Hkv), th = t * p.Hq + h;
    const TT *qh = q + t * q_stride + (int64_t)h * p.hd;
    const TT *kg = kc + (g * p.cap + j0) * p.hd, *vg = vc + (g * p.cap + j0) * p.hd_v;
    for (int d = threadIdx.x; d < p.hd; d += ATT_T) qs[d] = __fmul_rn(p.scale, zcu_ld(qh, d));
    __syncthreads();

    /* every load of ATT_JU positions is issued before the first add, one
     * 4-element load per lane and position (the loop carries no load-to-use
     * chain) */
    for (int64_t jb = warp; jb < len; jb += ATT_JU * ATT_W) {
        float s[ATT_JU];
#pragma unroll
        for (int u = 0; u < ATT_JU; u++) s[u] = 0.0f;
        for (int d = 4 * lane; d < p.hd; d += 128) {
            float kv[ATT_JU][4];
            ld_rows(kg, p.hd, jb, len, d, kv);
#pragma unroll
            for (int u = 0; u < ATT_JU; u++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (d + e < p.hd) s[u] = __fadd_rn(s[u], __fmul_rn(qs[d + e], kv[u][e]));
        }
#pragma unroll
        for (int u = 0; u < ATT_JU; u++) {
            s[u] = wsum(s[u]);
            if (lane == 0 && jb + u * ATT_W < len) sc[jb + u * ATT_W] = s[u];
        }
    }
    __syncthreads();
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < len; j += ATT_T) m = nmax(m, sc[j]);
    m = block_reduce<true>(m, sh);
    float l = 0.0f;
    for (int64_t j = threadIdx.x; j < len; j += ATT_T) {
        const float e = expf(__fsub_rn(sc[j], m));
        sc[j] = e;
        l = __fadd_rn(l, e);
    }
    l = block_reduce<false>(l, sh); /* its barriers also publish sc */
    for (int d = 4 * lane; d < p.hd_v; d += 128) {
        float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t jb = warp; jb < len; jb += ATT_JU * ATT_W) {
            float vv[ATT_JU][4];
            ld_rows(vg, p.hd_v, jb, len, d, vv);
#pragma unroll
            for (int u = 0; u < ATT_JU; u++)
                if (jb + u * ATT_W < len) {
                    const float e = sc[jb + u * ATT_W];
#pragma unroll
                    for (int i = 0; i < 4; i++) a[i] = __fadd_rn(a[i], __fmul_rn(e, vv[u][i]));
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (d + i < p.hd_v) vp[warp * p.hd_v + d + i] = a[i];
    }
    __syncthreads();
    float *pc = part + (th * nch + c) * (2 + p.hd_v);
    for (int d = threadIdx.x; d < p.hd_v; d += ATT_T) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_W; w++) acc = __fadd_rn(acc, vp[w * p.hd_v + d]);
        pc[2 + d] = acc;
    }
    if (threadIdx.x == 0) pc[0] = m, pc[1] = l;
    if (nact > 1) {
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) {
            last = atomicAdd(&cnt[th], 1u) == (unsigned)(nact - 1);
            if (last) cnt[th] = 0;
        }
        __syncthreads();
        if (!last) return;
        __threadfence();
    } else {
        __syncthreads();
    }
    /* the combine, by the last block; other blocks' partials are read from L2
     * (m and l by one thread per chunk into shared memory, o eight chunks per
     * round: no chain of dependent loads) */
    const float *ph = part + th * nch * (2 + p.hd_v);
    float *ml = vp; /* the o sums are in part now: their space (>= 2·nch floats) takes m, l */
    for (int64_t i = threadIdx.x; i < nact; i += ATT_T)
        ml[2 * i] = __ldcg(ph + i * (2 + p.hd_v)), ml[2 * i + 1] = __ldcg(ph + i * (2 + p.hd_v) + 1);
    __syncthreads();
    const float sink = p.sinks ? p.sinks[h] : -INFINITY;
    float M = sink;
    for (int64_t i = 0; i < nact; i++) M = nmax(M, ml[2 * i]);
    for (int64_t i = threadIdx.x; i < nact; i += ATT_T) wc[i] = expf(__fsub_rn(ml[2 * i], M));
    __syncthreads();
    float L = 0.0f;
    for (int64_t i = 0; i < nact; i++) L = __fadd_rn(L, __fmul_rn(ml[2 * i + 1], wc[i]));
    if (p.sinks) L = __fadd_rn(L, expf(__fsub_rn(sink, M)));
    const float inv = __fdiv_rn(1.0f, L);
    for (int d = threadIdx.x; d < p.hd_v; d += ATT_T) {
        float acc = 0.0f;
        for (int64_t i0 = 0; i0 < nact; i0 += 8) {
            float o[8];
#pragma unroll
            for (int u = 0; u < 8; u++) o[u] = i0 + u < nact ? __ldcg(ph + (i0 + u) * (2 + p.hd_v) + 2 + d) : 0.0f;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (i0 + u < nact) acc = __fadd_rn(acc, __fmul_rn(o[u], wc[i0 + u]));
        }
        zcu_st(out, th * p.hd_v + d, __fmul_rn(acc, inv));
    }
}

/* Bounds of one k_attn launch: tokens per launch so that the counters fit
 * their fixed buffer and the partials stay under ATT_PART_BYTES. */
static const size_t ATT_PART_BYTES = (size_t)64 << 20;

/* Attention of n_tok tokens whose q rows are q_stride apart; base position
 * pos[0] (device; 0 without pos) + pos0. grid_nch: chunks to launch per (token, head)
 * (fewer than nch when the context is known on the host: same bits). */
template <typename TT>
static zmlx_status attn_run(zmlx_ctx *c, const zmlx_attn_params *p, const void *q, int64_t q_stride,
                            const void *kc, const void *vc, int64_t n_tok, const int32_t *pos,
                            int64_t pos0, int64_t grid_nch, void *out) {
    zcu_state *s = zcu_state_of(c);
    int64_t C, nch;
    att_split(p, &C, &nch);
    if (grid_nch <= 0 || grid_nch > nch) grid_nch = nch;
    const size_t per_tok = (size_t)p->Hq * (size_t)nch * (size_t)(2 + p->hd_v) * sizeof(float);
    int64_t tb = ZCU_ATT_COUNTERS / p->Hq;
    if ((size_t)tb * per_tok > ATT_PART_BYTES) tb = (int64_t)(ATT_PART_BYTES / per_tok);
    if (tb < 1) tb = 1;
    if (tb > n_tok) tb = n_tok;
    if (tb > 65535) tb = 65535;
    void *part;
    zmlx_status st = zcu_scratch(c, 2, (size_t)tb * per_tok, &part);
    if (st != ZMLX_OK) return st;
    const int64_t vp = (int64_t)ATT_W * p->hd_v > 2 * nch ? (int64_t)ATT_W * p->hd_v : 2 * nch;
    const size_t shm = (size_t)(C + nch + p->hd + vp) * sizeof(float);
    if (shm > 48 * 1024) return ZMLX_ERR_UNSUPPORTED; /* head dims past ~1000 */
    for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
        const int64_t nt = n_tok - t0 < tb ? n_tok - t0 : tb;
        /* tokens t0.. of this launch: q, out and the base position shift by t0 */
        k_attn<TT><<<dim3((unsigned)grid_nch, (unsigned)p->Hq, (unsigned)nt), ATT_T, shm, s->stream>>>(
            *p, (const TT *)q + t0 * q_stride, q_stride, (const TT *)kc, (const TT *)vc, n_tok - t0,
            pos, pos0 + t0, C, nch, (float *)part, s->att_counters, (TT *)out + t0 * p->Hq * p->hd_v);
        ZCU_LAUNCHED();
    }
    return ZMLX_OK;
}

template <typename TT>
static zmlx_status decode_t(zmlx_ctx *c, const zmlx_attn_params *p, const void *q, const void *kc,
                            const void *vc, int64_t n_ctx, void *out) {
    int64_t C, nch;
    att_split(p, &C, &nch);
    const int64_t lo = p->window > 0 && n_ctx > p->window ? n_ctx - p->window : 0;
    return attn_run<TT>(c, p, q, 0, kc, vc, 1, NULL, n_ctx - 1, (n_ctx - lo + C - 1) / C, out);
}

extern "C" zmlx_status zcu_attention_decode(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T,
                                            const void *q, const void *k_cache,
                                            const void *v_cache, int64_t n_ctx, void *out) {
    return ZCU_DISPATCH_T(T, decode_t, c, p, q, k_cache, v_cache, n_ctx, out);
}

/* ----------------------------------------------------- attention step */

/* Block per (head, token) over the q heads then the k heads of each token's
 * packed row: rms_row with the head's norm weight, rope at base + t (the
 * unfused rms_norm and rope kernels' own device functions, so the same
 * bits); k-head blocks then store the k row and the matching v row into the
 * caches. An out-of-range base flags the error and touches nothing. */
template <typename TT>
__global__ void __launch_bounds__(RMS_T)
k_attn_prep(zmlx_attn_params p, const TT *q_norm, const TT *k_norm, float eps, zmlx_rope_params rp,
            int has_rope, TT *qkv, int64_t n_tok, const int32_t *pos, TT *kc, TT *vc, int *err) {
    __shared__ float sh[33];
    const int64_t base = pos[0];
    if (base < 0 || base > p.cap - n_tok) {
        if (blockIdx.x == 0 && threadIdx.x == 0) *err = 1;
        return;
    }
    const int nh = p.Hq + p.Hkv, hb = (int)(blockIdx.x % nh);
    const int64_t t = blockIdx.x / nh, nq = (int64_t)p.Hq * p.hd, nk = (int64_t)p.Hkv * p.hd;
    TT *row = qkv + t * (nq + nk + (int64_t)p.Hkv * p.hd_v);
    const bool is_k = hb >= p.Hq;
    const int kv = hb - p.Hq;
    TT *x = is_k ? row + nq + (int64_t)kv * p.hd : row + (int64_t)hb * p.hd;
    const TT *w = is_k ? k_norm : q_norm;
    if (w) {
        rms_row(x, (const TT *)NULL, w, p.hd, eps, (TT *)NULL, x, sh);
        __syncthreads();
    }
    if (has_rope) {
        for (int i = threadIdx.x; i < rp.rot_dims / 2; i += blockDim.x) rope_pair(rp, x, i, base + t);
        __syncthreads();
    }
    if (!is_k) return;
    const TT *v = row + nq + nk + (int64_t)kv * p.hd_v;
    const int64_t at = (int64_t)kv * p.cap + base + t;
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) kc[at * p.hd + d] = x[d];
    for (int d = threadIdx.x; d < p.hd_v; d += blockDim.x) vc[at * p.hd_v + d] = v[d];
}

template <typename TT>
static zmlx_status step_t(zmlx_ctx *c, const zmlx_attn_step_params *sp, void *qkv, int64_t n_tok,
                          const int32_t *pos, void *kc, void *vc, void *out) {
    zcu_state *s = zcu_state_of(c);
    const zmlx_attn_params *p = &sp->attn;
    zmlx_rope_params rp;
    memset(&rp, 0, sizeof rp);
    if (sp->rope) rp = *sp->rope;
    const int64_t blocks = (int64_t)(p->Hq + p->Hkv) * n_tok;
    if (blocks > INT32_MAX) return ZMLX_ERR_UNSUPPORTED;
    k_attn_prep<TT><<<(unsigned)blocks, RMS_T, 0, s->stream>>>(
        *p, (const TT *)sp->q_norm, (const TT *)sp->k_norm, sp->eps, rp, sp->rope != NULL, (TT *)qkv,
        n_tok, pos, (TT *)kc, (TT *)vc, s->err_flag);
    ZCU_LAUNCHED();
    const int64_t row = (int64_t)(p->Hq + p->Hkv) * p->hd + (int64_t)p->Hkv * p->hd_v;
    return attn_run<TT>(c, p, qkv, row, kc, vc, n_tok, pos, 0, 0, out);
}

extern "C" zmlx_status zcu_attention_step(zmlx_ctx *c, const zmlx_attn_step_params *p, zmlx_dtype T,
                                          void *qkv, int64_t n_tok, const int32_t *pos, void *k_cache,
                                          void *v_cache, void *out) {
    return ZCU_DISPATCH_T(T, step_t, c, p, qkv, n_tok, pos, k_cache, v_cache, out);
}
