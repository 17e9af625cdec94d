/*
 * attn_cuda.cu — rope, the single-token attention (attention_decode), the
 * attention of many tokens (attention_prefill: k_attn_flash from
 * flash_min_tokens() tokens, else the chunks below) and the fused attention step
 * (attention_step) on the GPU.
 *
 * Attention splits each (token, query head)'s attended positions into chunks
 * of C positions (C a function of the attended length alone, att_chunk, so
 * every call at the same position chunks alike). A block takes one chunk
 * (every ATT_GRID-th one past ATT_GRID chunks) for several query heads of one
 * kv head (the chunk's K and V rows are staged in shared memory once for all
 * of them) and computes each head's scores, their max m_c,
 * l_c = Σ exp(s - m_c) and o_c = Σ exp(s - m_c)·v: with 16-bit T and head
 * dims that are multiples of 16 on the tensor cores (att_chunk_mma: the heads
 * as the rows of mma tiles, exp(s - m_c) as two T pieces), else by f32 FMAs
 * in a fixed order (att_chunk_fma, a warp per head); the last block of a
 * (token, kv head block) to finish (an integer counter, reset by that block)
 * combines each head's chunks:
 *   M = max(sink, m_c), L = Σ_c l_c·exp(m_c - M) (+ exp(sink - M)),
 *   out = round_T((Σ_c o_c·exp(m_c - M)) · (1/L)), the o sum in chunk order.
 * The order of every sum depends only on the position count (C included), so results
 * are bit-identical from run to run, and attention_step (which reads its
 * position from device memory) equals attention_decode at the same position.
 * The reference (ref_attn.c) normalises before summing: CUDA and CPU agree
 * within rounding.
 */
#include "cuda/rows.cuh"

/* --------------------------------------------------------------- rope */

/* thread -> (token, head, pair i) */
template <typename TT>
__global__ void k_rope(zmlx_rope_params p, TT *x, int64_t n_tok, int n_heads, const int32_t *pos,
                       int64_t pos0) {
    zcu_pdl_entry();
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
    zcu_launch(ZCU_PDL_ATTN, k_rope<TT>, (unsigned)((n + 127) / 128), 128, 0, st, *p, (TT *)x, n_tok, n_heads, pos, pos0);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_rope(zmlx_ctx *c, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                                int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0) {
    return ZCU_DISPATCH_T(T, rope_t, zcu_state_of(c)->stream, p, x, n_tok, n_heads, pos, pos0);
}

/* ---------------------------------------------------------- attention */

#ifndef ZMLX_ATT_GB /* a build flag only for A/B runs (src/cuda/NOTES.md, decode v3) */
#define ZMLX_ATT_GB 4
#endif
enum {
    ATT_GB = ZMLX_ATT_GB, /* most query heads per block on the FMA paths (a warp each)   */
    ATT_MMA_GB = 16,     /* most query heads per block on the tensor-core path (mma rows) */
    ATT_MMA_W = 8,       /* warps of a tensor-core block (a head each in softmax, combine) */
    ATT_NCH = 16,        /* chunks a context splits into (while C stays in range)        */
    ATT_MINC = 16,       /* shortest chunk                                               */
    ATT_SHM = 48 * 1024 - 16, /* FMA paths' dynamic shared memory: K, V, q, scores (+ `last`: 48 KB) */
    ATT_MMA_SHM = 100 * 1024, /* the tensor-core path's (opted in; 2 blocks per SM)        */
    ATT_JU = 4,          /* positions whose loads are in flight together                 */
    ATT_GRID = 64,       /* most chunk blocks per (token, head block); longer contexts loop */
    ATT_CB = 16,         /* chunks whose partial o loads the combine has in flight together */
};

/* How a chunk is computed: PLAIN, element loads with bounds checks; FAST, the
 * same f32 FMA sums from 16-byte K and 8-byte V loads (K rows whole 16-byte
 * runs, hd_v % 4 == 0); MMA, on the tensor cores (16-bit T, hd and hd_v
 * multiples of 16: att_chunk_mma). */
enum { ATT_PLAIN, ATT_FAST, ATT_MMA };

/* How a cache geometry splits: gb query heads per block, the largest divisor
 * of the group size Hq/Hkv up to ATT_GB (FMA paths: a warp per head) or
 * ATT_MMA_GB (MMA: the 16 rows of a tile, ATT_MMA_W warps), so a block's
 * heads share one kv head and the chunk's K and V rows are read once for all
 * of them; the longest chunk cmax that shared memory holds, and the most
 * chunks nch any context up to the cache's span can have (the partials'
 * extent; the grid launches at most ATT_GRID chunk blocks, which then loop);
 * partial stride (o, then m and l, 16-byte aligned). Shared memory, each
 * region 16-byte aligned: K rows kld elements apart, V rows vld apart (MMA:
 * cmax rounded up to whole 16-position tiles of both), the q rows (FMA: gb
 * rows of hd f32, scale·q; MMA: 16 rows kld apart in T, rows past gb zero),
 * gb score rows of cmax f32, and (MMA) the two pieces of P, 16 rows pld
 * apart each. On the FAST and MMA paths kld (and on MMA vld) pads a row to an
 * odd number of 16-byte runs, so 8 rows read at one offset (a load phase of
 * 16-byte loads, an ldmatrix, a B fragment) hit 8 different bank groups;
 * pld/2 words ≡ 4 mod 8 does the same for P's A fragments. */
typedef struct {
    int gb, mode, warps;
    int64_t cmax, nch, stride, kld, vld, pld;
    size_t k_bytes, kv_bytes, s_off, p_off, shm; /* V at k_bytes, q at kv_bytes, scores at s_off, P at p_off */
} att_geom;

/* Chunk length for a context of n attended positions: n/ATT_NCH within
 * [ATT_MINC, cmax]. A function of n alone (not of the cache capacity), so
 * attention_decode and attention_step at the same position split alike, and
 * a large cache does not make short contexts run in a few long chunks (at
 * capacity 8192 the old capacity-derived chunks cost ~5 us per layer at
 * position 600: src/cuda/NOTES.md "Attention chunks from the context"). */
__host__ __device__ __forceinline__ int64_t att_chunk(int64_t n, int64_t cmax) {
    int64_t c = (n + ATT_NCH - 1) / ATT_NCH;
    if (c < ATT_MINC) c = ATT_MINC;
    return c < cmax ? c : cmax;
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* n elements of tsz bytes padded to an odd number of 16-byte runs */
static int64_t att_pad(int64_t n, size_t tsz) { return (size_t)n * tsz / 16 % 2 == 0 ? n + (int64_t)(16 / tsz) : n; }

/* The regions of g for chunks of up to cmax positions; returns the bytes. */
static size_t att_layout(const zmlx_attn_params *p, size_t tsz, int64_t cmax, att_geom *g) {
    const bool mma = g->mode == ATT_MMA;
    const size_t rows = mma ? (size_t)(cmax + 15) / 16 * 16 : (size_t)cmax;
    g->cmax = cmax;
    g->pld = mma ? (int64_t)rows + 8 : 0;
    g->k_bytes = round16(rows * (size_t)g->kld * tsz);
    g->kv_bytes = g->k_bytes + round16(rows * (size_t)g->vld * tsz);
    g->s_off = g->kv_bytes + round16(mma ? 16 * (size_t)g->kld * tsz : (size_t)g->gb * (size_t)p->hd * 4);
    g->p_off = g->s_off + round16((size_t)g->gb * (size_t)cmax * 4);
    return g->p_off + (mma ? 2 * 16 * (size_t)g->pld * tsz : 0);
}

static zmlx_status att_geometry(const zmlx_attn_params *p, size_t tsz, int mode, att_geom *g) {
    const int G = p->Hq / p->Hkv;
    const bool mma = mode == ATT_MMA;
    g->mode = mode;
    g->gb = 1;
    for (int d = mma ? ATT_MMA_GB : ATT_GB; d > 1; d--)
        if (G % d == 0) {
            g->gb = d;
            break;
        }
    g->warps = mma ? ATT_MMA_W : g->gb;
    const int64_t span = p->window > 0 && p->window < p->cap ? p->window : p->cap;
    g->kld = g->mode == ATT_PLAIN ? p->hd : att_pad(p->hd, tsz);
    g->vld = mma ? att_pad(p->hd_v, tsz) : p->hd_v;
    /* the largest cmax whose layout fits: from the bytes per position, then down */
    const size_t budget = mma ? ATT_MMA_SHM : ATT_SHM;
    const size_t per_pos = (size_t)(g->kld + g->vld) * tsz + (size_t)g->gb * 4 + (mma ? 2 * 16 * tsz : 0);
    int64_t cmax = (int64_t)(budget / per_pos);
    size_t shm = 0;
    while (cmax > 0 && (shm = att_layout(p, tsz, cmax, g)) > budget) cmax--;
    if (cmax < 1) return ZMLX_ERR_UNSUPPORTED; /* FMA paths: head dims past ~5000 */
    g->shm = shm;
    /* att_chunk gives at most min(span/ATT_MINC, ATT_NCH) chunks while n/ATT_NCH
       fits in cmax, and n/cmax <= span/cmax past that */
    int64_t few = (span + ATT_MINC - 1) / ATT_MINC;
    if (few > ATT_NCH) few = ATT_NCH;
    const int64_t many = (span + cmax - 1) / cmax;
    g->nch = few > many ? few : many;
    g->stride = (p->hd_v + 2 + 3) / 4 * 4;
    return ZMLX_OK;
}

/* The tensor-core path where T and the head dims allow it and a 16-row tile
 * of q fits beside a chunk (head dims up to ~1000), else an FMA path. */
static zmlx_status att_split(const zmlx_attn_params *p, size_t tsz, att_geom *g) {
    if (tsz == 2 && p->hd % 16 == 0 && p->hd_v % 16 == 0 && att_geometry(p, tsz, ATT_MMA, g) == ZMLX_OK)
        return ZMLX_OK;
    return att_geometry(p, tsz, (size_t)p->hd * tsz % 16 == 0 && p->hd_v % 4 == 0 ? ATT_FAST : ATT_PLAIN, g);
}

/* Features d..d+3 of the ATT_JU rows jb.. of a [len, n] block in shared
 * memory (rows past len read row len - 1: loaded, never used). */
template <bool V4, typename TT>
__device__ __forceinline__ void ld_rows(const TT *rows, int n, int jb, int len, int d, float (&v)[ATT_JU][4]) {
#pragma unroll
    for (int u = 0; u < ATT_JU; u++) ld_run<4, V4>(rows + min(jb + u, len - 1) * n, d, n, v[u]); /* V4: 4 | n, aligned rows, d < n */
}

/* rows consecutive rows of n elements from global src to shared dst, whose
 * rows are ld elements apart, by the block's threads: 16-byte cp.async copies
 * when both ends and the row sizes allow, else element by element. The caller
 * waits (cp.async.wait_all) and syncs. */
template <typename TT>
__device__ __forceinline__ void att_stage(TT *dst, int64_t ld, const TT *src, int64_t n, int rows) {
    const unsigned row_b = (unsigned)(n * (int64_t)sizeof(TT)), ld_b = (unsigned)(ld * (int64_t)sizeof(TT));
    if ((((uintptr_t)dst | (uintptr_t)src | row_b | ld_b) & 15) == 0) {
        const unsigned d0 = smem_u32(dst), runs = row_b / 16;
        for (unsigned i = threadIdx.x; i < (unsigned)rows * runs; i += blockDim.x) {
            const unsigned r = i / runs, o = (i - r * runs) * 16;
            cp_async16(d0 + r * ld_b + o, (const char *)src + (size_t)r * row_b + o);
        }
    } else {
        for (int64_t i = threadIdx.x; i < (int64_t)rows * n; i += blockDim.x) dst[i / n * ld + i % n] = src[i];
    }
}

/* A head's softmax statistics over its scores s[0, len), by one warp: m =
 * max s (lane-strided, then a butterfly), e_j = exp(s_j - m) handed to
 * put(j, e) for j < kp (e = 0 for j >= len: padding), l = Σ_{j<len} e_j
 * (lane-strided, then a butterfly). Both chunk paths call it, so they sum
 * alike. Returns (m, l). */
template <typename F>
__device__ __forceinline__ float2 att_softmax(const float *s, int len, int kp, F put) {
    const int lane = threadIdx.x & 31;
    float m = -INFINITY;
    for (int j = lane; j < len; j += 32) m = nmax(m, s[j]);
    m = wmax(m);
    float l = 0.0f;
    for (int j = lane; j < kp; j += 32) {
        const float e = j < len ? expf(__fsub_rn(s[j], m)) : 0.0f;
        if (j < len) l = __fadd_rn(l, e);
        put(j, e);
    }
    return make_float2(m, wsum(l));
}

/* One chunk of len positions on the FMA paths, warp = its query head: qs
 * the head's scale·q (f32), sc its score row, pc its partial (o, m, l).
 * Lane l scores positions j = l, l + 32, .. of the chunk by four FMA sums
 * a_e of (scale·q_d)·k_jd over the features d = e mod 4 in ascending order,
 * s_j = (a_0 + a_1) + (a_2 + a_3) (no shuffles: a butterfly per position made
 * the scores ~30% of a block's time at 512 positions); m and l over the chunk
 * (lane-strided, then a butterfly); o_d = Σ_j e_j·v_jd (FMA) with j
 * ascending, lane l owning features 4l + 128r + i of v. FAST: the same
 * values from 16-byte K and 8-byte V loads without bounds checks. */
template <bool FAST, typename TT>
__device__ __forceinline__ void att_chunk_fma(const zmlx_attn_params &p, const att_geom &ag, const TT *ks,
                                              const TT *vs, const float *qs, float *sc, int len, float *pc) {
    const int lane = threadIdx.x & 31;
    for (int j = lane; j < len; j += 32) {
        const TT *kr = ks + j * ag.kld;
        float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (FAST) {
            constexpr int N = 16 / (int)sizeof(TT); /* features per 16-byte load */
#pragma unroll 2
            for (int d = 0; d < p.hd; d += N) {
                float kv[N];
                ld_run<N, true>(kr, d, p.hd, kv);
#pragma unroll
                for (int e = 0; e < N; e += 4) {
                    const float4 qv = *(const float4 *)(qs + d + e);
                    a[0] = __fmaf_rn(qv.x, kv[e], a[0]);
                    a[1] = __fmaf_rn(qv.y, kv[e + 1], a[1]);
                    a[2] = __fmaf_rn(qv.z, kv[e + 2], a[2]);
                    a[3] = __fmaf_rn(qv.w, kv[e + 3], a[3]);
                }
            }
        } else {
            for (int d = 0; d < p.hd; d += 4)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (d + e < p.hd) a[e] = __fmaf_rn(qs[d + e], zcu_ld(kr, d + e), a[e]);
        }
        sc[j] = __fadd_rn(__fadd_rn(a[0], a[1]), __fadd_rn(a[2], a[3]));
    }
    __syncwarp();
    const float2 ml = att_softmax(sc, len, len, [&](int j, float e) { sc[j] = e; });
    __syncwarp();
    for (int d = 4 * lane; d < p.hd_v; d += 128) {
        float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int jb = 0; jb < len; jb += ATT_JU) {
            float vv[ATT_JU][4];
            ld_rows<FAST>(vs, p.hd_v, jb, len, d, vv);
#pragma unroll
            for (int u = 0; u < ATT_JU; u++)
                if (jb + u < len) {
                    const float e = sc[jb + u];
#pragma unroll
                    for (int i = 0; i < 4; i++) a[i] = __fmaf_rn(e, vv[u][i], a[i]);
                }
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (FAST || d + i < p.hd_v) pc[d + i] = a[i];
    }
    if (lane == 0) pc[p.hd_v] = ml.x, pc[p.hd_v + 1] = ml.y;
}

__device__ __forceinline__ uint32_t ld_pair(const void *p) { return *(const uint32_t *)p; }

/* ldmatrix x4 at a lane's row address a: four 8x8 b16 tiles (TRANS: each
 * transposed) */
template <bool TRANS> __device__ __forceinline__ void ldsm_x4(const void *a, uint32_t (&r)[4]) {
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_u32(a)));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(smem_u32(a)));
}

/* The B fragments of two 8-column tiles (columns c, c + 8) over rows r..r+15
 * of a row-major [rows, ld] T block in shared memory, by ldmatrix.trans:
 * b[0], b[1] of the first tile, b[2], b[3] of the second. */
template <typename TT>
__device__ __forceinline__ void ld_b_trans(const TT *m, int ld, int r, int c, uint32_t (&b)[4]) {
    const int lane = threadIdx.x & 31;
    ldsm_x4<true>(m + (r + (lane & 7) + (lane & 8)) * ld + c + (lane >> 4) * 8, b);
}

/* One chunk of len positions on the tensor cores (ATT_MMA): the block's gb
 * query heads are the 16 rows of m16n8k16 tiles (qs: T rows kld apart, rows
 * past gb zero). Scores S = Q·Kᵀ (q and k exact in T, products exact, f32
 * sums in the mma's fixed order): warp w takes the 8-position tiles 4w..4w+3,
 * then 4·ATT_MMA_W on, over hd/16 k-steps; s = scale·S into the score rows sc (cmax
 * apart). Each head's m = max s, e_j = exp(s_j - m) and l = Σ e_j
 * (att_softmax, as on the FMA path) on warp hh mod ATT_MMA_W;
 * e_j enters P·V as two T pieces, hi = round_T(e_j) and lo = round_T(e_j -
 * hi) (as the MMV kernels split weights: ~16 more bits than one T value),
 * zero past len, in P (ph: the hi rows, then the lo rows, pld apart; rows
 * past gb stay zero). O = P_hi·V + P_lo·V over 16-position k-steps, warp w
 * the 16-feature columns 16w, then 16·ATT_MMA_W on; V rows past len are zero (0·x
 * must not meet a stale NaN). Partials as the FMA path's: pc0 + hh·hstep is
 * head hh's (o, m, l). */
template <typename TT>
__device__ __forceinline__ void att_chunk_mma(const zmlx_attn_params &p, const att_geom &ag, const TT *ks,
                                              const TT *vs, const TT *qs, float *sc, TT *ph, int len, float *pc0,
                                              int64_t hstep) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int gb = ag.gb, kld = (int)ag.kld, pld = (int)ag.pld;
    const int ntile = (len + 7) / 8, kp = (len + 15) / 16 * 16;
    for (int t0 = 4 * warp; t0 < ntile; t0 += 4 * ATT_MMA_W) {
        float acc[4][4] = {};
        for (int k0 = 0; k0 < p.hd; k0 += 16) {
            const TT *qa = qs + gq * kld + k0 + 2 * tq;
            const uint32_t a[4] = {ld_pair(qa), ld_pair(qa + 8 * kld), ld_pair(qa + 8), ld_pair(qa + 8 * kld + 8)};
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (t0 + u < ntile) {
                    const TT *kr = ks + ((t0 + u) * 8 + gq) * kld + k0 + 2 * tq;
                    mma_op<TT>::run(acc[u], a, ld_pair(kr), ld_pair(kr + 8));
                }
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int hh = gq + (e >> 1) * 8, j = (t0 + u) * 8 + 2 * tq + (e & 1);
                if (hh < gb && j < len) sc[hh * ag.cmax + j] = __fmul_rn(p.scale, acc[u][e]);
            }
    }
    __syncthreads();
    for (int hh = warp; hh < gb; hh += ATT_MMA_W) {
        TT *hi = ph + hh * pld, *lo = ph + (16 + hh) * pld;
        const float2 ml = att_softmax(sc + hh * ag.cmax, len, kp, [&](int j, float e) {
            const float eh = zcu_round(hi, e);
            zcu_st(hi, j, eh);
            zcu_st(lo, j, __fsub_rn(e, eh));
        });
        if (lane == 0) pc0[hh * hstep + p.hd_v] = ml.x, pc0[hh * hstep + p.hd_v + 1] = ml.y;
    }
    __syncthreads();
    for (int c0 = 16 * warp; c0 < p.hd_v; c0 += 16 * ATT_MMA_W) {
        float acc[2][4] = {};
        for (int k0 = 0; k0 < kp; k0 += 16) {
            const TT *ha = ph + gq * pld + k0 + 2 * tq, *la = ha + 16 * pld;
            const uint32_t ah[4] = {ld_pair(ha), ld_pair(ha + 8 * pld), ld_pair(ha + 8), ld_pair(ha + 8 * pld + 8)};
            const uint32_t al[4] = {ld_pair(la), ld_pair(la + 8 * pld), ld_pair(la + 8), ld_pair(la + 8 * pld + 8)};
            uint32_t b[4];
            ld_b_trans(vs, (int)ag.vld, k0, c0, b);
#pragma unroll
            for (int nt = 0; nt < 2; nt++) {
                mma_op<TT>::run(acc[nt], ah, b[2 * nt], b[2 * nt + 1]);
                mma_op<TT>::run(acc[nt], al, b[2 * nt], b[2 * nt + 1]);
            }
        }
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int hh = gq + 8 * r;
                if (hh < gb)
                    *(float2 *)(pc0 + hh * hstep + c0 + 8 * nt + 2 * tq) =
                        make_float2(acc[nt][2 * r], acc[nt][2 * r + 1]);
            }
    }
}

/* Grid (kv head x head block, chunk, token), ag.warps warps: the block's gb
 * query heads hb0.. share kv head g. Token t's context is base + t + 1
 * positions, base = pos[0] (device; 0 without pos) + pos0; q row of token t
 * at q + t·q_stride. part: [tokens, Hq, nch, stride] f32 (o, m, l);
 * cnt: [tokens, gridDim.x] zeroed counters. The chunk is the slower grid
 * dimension, so the blocks of chunks a short context does not reach (up to the
 * cache's span) are dispatched after every block that works, and only exit.
 * The block stages the chunk's K and V rows in shared memory (all copies in
 * flight at once) and its q rows, then computes the chunk by att_chunk_fma
 * (a warp per head) or att_chunk_mma. */
template <typename TT, int MODE>
__global__ void __launch_bounds__((ATT_GB > ATT_MMA_W ? ATT_GB : ATT_MMA_W) * 32)
k_attn(zmlx_attn_params p, const TT *q, int64_t q_stride, const TT *kc, const TT *vc, int64_t n_tok,
       const int32_t *pos, int64_t pos0, att_geom ag, float *part, unsigned *cnt, int early, TT *out) {
    if (!early) zcu_pdl_entry();
    extern __shared__ __align__(16) unsigned char att_shm[];
    __shared__ int last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5, c = blockIdx.y;
    const int64_t nch = ag.nch, t = blockIdx.z, base = (pos ? (int64_t)pos[0] : 0) + pos0;
    const int64_t n_ctx = base + t + 1, lo = p.window > 0 && n_ctx > p.window ? n_ctx - p.window : 0;
    const int64_t n = n_ctx - lo, C = att_chunk(n, ag.cmax), nact = (n + C - 1) / C;
    if (base < 0 || base > p.cap - n_tok || c >= nact) { /* out of range: attention_step's prep flagged it */
        if (early) zcu_pdl_entry();
        return;
    }
    const int bpg = p.Hq / p.Hkv / ag.gb;
    const int64_t g = blockIdx.x / bpg, nblk = min((int64_t)gridDim.y, nact);
    const int64_t hb0 = g * (p.Hq / p.Hkv) + (int64_t)(blockIdx.x % bpg) * ag.gb, hstep = nch * ag.stride;
    TT *ks = (TT *)att_shm, *vs = (TT *)(att_shm + ag.k_bytes);
    float *sc = (float *)(att_shm + ag.s_off);
    /* early: the first chunk's rows before the step's first position (written
       by earlier steps, complete before the prep kernel began) are copied
       before the wait, overlapping the prep; the rest after it */
    int r_old = 0;
    if (early) {
        const int64_t j0 = lo + c * C, len = min(C, n - c * C);
        r_old = (int)max((int64_t)0, min(len, base - j0));
        att_stage(ks, ag.kld, kc + (g * p.cap + j0) * p.hd, p.hd, r_old);
        att_stage(vs, ag.vld, vc + (g * p.cap + j0) * p.hd_v, p.hd_v, r_old);
        zcu_pdl_entry();
    }
    /* chunks c, c + gridDim.y, ..: a context longer than the grid's chunks
       (ATT_GRID) takes several rounds per block; the partials and their
       combine are those of one block per chunk */
    for (int64_t ci = c; ci < nact; ci += gridDim.y) {
        if (ci != c) __syncthreads(); /* every warp is done with the previous chunk's rows */
        const int len = (int)min(C, n - ci * C);
        const int64_t j0 = lo + ci * C;
        const int r0 = ci == c ? r_old : 0, nr = len - r0;
        att_stage(ks + r0 * ag.kld, ag.kld, kc + (g * p.cap + j0 + r0) * p.hd, p.hd, nr);
        att_stage(vs + r0 * ag.vld, ag.vld, vc + (g * p.cap + j0 + r0) * p.hd_v, p.hd_v, nr);
        const TT *qt = q + t * q_stride;
        float *pc0 = part + ((t * p.Hq + hb0) * nch + ci) * ag.stride;
        if constexpr (MODE == ATT_MMA) {
            TT *qs = (TT *)(att_shm + ag.kv_bytes), *ph = (TT *)(att_shm + ag.p_off);
            if (ci == c) { /* once: the q rows copied with the chunk's; q's and P's rows past gb zero */
                att_stage(qs, ag.kld, qt + hb0 * p.hd, p.hd, ag.gb);
                for (int64_t i = (int64_t)ag.gb * ag.kld + threadIdx.x; i < 16 * ag.kld; i += blockDim.x)
                    zcu_st(qs, i, 0.0f);
                for (int64_t i = (int64_t)ag.gb * ag.pld + threadIdx.x; i < 16 * ag.pld; i += blockDim.x)
                    zcu_st(ph, i, 0.0f), zcu_st(ph + 16 * ag.pld, i, 0.0f);
            }
            for (int i = len * (int)ag.vld + threadIdx.x; i < (len + 15) / 16 * 16 * (int)ag.vld; i += blockDim.x)
                zcu_st(vs, i, 0.0f);
            asm volatile("cp.async.wait_all;\n" ::: "memory");
            __syncthreads();
            att_chunk_mma(p, ag, ks, vs, qs, sc, ph, len, pc0, hstep);
        } else {
            float *qs = (float *)(att_shm + ag.kv_bytes) + warp * p.hd;
            if (ci == c)
                for (int d = lane; d < p.hd; d += 32) qs[d] = __fmul_rn(p.scale, zcu_ld(qt, (hb0 + warp) * p.hd + d));
            asm volatile("cp.async.wait_all;\n" ::: "memory");
            __syncthreads();
            att_chunk_fma<MODE == ATT_FAST>(p, ag, ks, vs, qs, sc + warp * ag.cmax, len, pc0 + warp * hstep);
        }
    }
    zcu_trace_mark(1); /* warp 0's part of the chunks done */
    if (nblk > 1) {
        /* one release-acquire count by thread 0 between two barriers (the
           CUTLASS semaphore pattern): the first barrier puts the block's
           partial stores before the release, the second the others'
           partials, acquired, before this block's reads; the guarantee of a
           fence in every thread before and after, in fewer instructions */
        __syncthreads();
        if (threadIdx.x == 0) {
            const int64_t slot = t * gridDim.x + blockIdx.x;
            unsigned before;
            asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n" : "=r"(before) : "l"(cnt + slot) : "memory");
            last = before == (unsigned)(nblk - 1);
            if (last) cnt[slot] = 0;
        }
        __syncthreads();
        if (!last) return;
    } else {
        __syncthreads();
    }
    zcu_trace_mark(2); /* the combining block past the count */
    /* the combine, by the last block, warp w for its heads hb0 + w, + nw, ..
     * (other blocks' partials read from L2): M over the chunks lane-strided
     * then a butterfly, L likewise; lane l weighs chunks i0 + u by w_i =
     * exp(m_i - M) computed on lane u, for its features of o, chunks
     * ascending. Chunk l's m and l are read once, together, and kept (chunks
     * past 32, in long contexts only, are read again), and ATT_CB chunks' o
     * loads are in flight at once, the first ATT_CB issued with the m and l
     * loads (they do not depend on M): up to ATT_CB chunks the combine is
     * one round trip to L2. */
    for (int hh = warp; hh < ag.gb; hh += nw) {
        const int64_t h = hb0 + hh;
        const float *ph = part + (t * p.Hq + h) * hstep;
        const float sink = p.sinks ? p.sinks[h] : -INFINITY;
        /* features d.. of chunks i, i + 1, .. (fewer than nu: zeros) */
        const auto ld_o = [&](float4(&o)[ATT_CB], int64_t i, int nu, int d) {
#pragma unroll
            for (int u = 0; u < ATT_CB; u++)
                o[u] = u < nu && d < p.hd_v ? __ldcg((const float4 *)(ph + (i + u) * ag.stride + d))
                                            : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        };
        float4 o[ATT_CB];
        ld_o(o, 0, (int)min((int64_t)ATT_CB, nact), 4 * lane);
        const bool own = lane < nact;
        const float m_own = own ? __ldcg(ph + lane * ag.stride + p.hd_v) : 0.0f;
        const float l_own = own ? __ldcg(ph + lane * ag.stride + p.hd_v + 1) : 0.0f;
        float M = own ? nmax(sink, m_own) : sink;
        for (int64_t i = lane + 32; i < nact; i += 32) M = nmax(M, __ldcg(ph + i * ag.stride + p.hd_v));
        M = wmax(M);
        float L = own ? __fadd_rn(0.0f, __fmul_rn(l_own, expf(__fsub_rn(m_own, M)))) : 0.0f;
        for (int64_t i = lane + 32; i < nact; i += 32)
            L = __fadd_rn(L, __fmul_rn(__ldcg(ph + i * ag.stride + p.hd_v + 1),
                                       expf(__fsub_rn(__ldcg(ph + i * ag.stride + p.hd_v), M))));
        L = wsum(L);
        if (p.sinks) L = __fadd_rn(L, expf(__fsub_rn(sink, M)));
        const float inv = __fdiv_rn(1.0f, L);
        for (int d0 = 0; d0 < p.hd_v; d0 += 128) { /* every lane runs the loop: the shuffles need all 32 */
            const int d = d0 + 4 * lane;
            float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int64_t i0 = 0; i0 < nact; i0 += 32) {
                const float wi = i0 == 0 ? (own ? expf(__fsub_rn(m_own, M)) : 0.0f)
                                 : i0 + lane < nact ? expf(__fsub_rn(__ldcg(ph + (i0 + lane) * ag.stride + p.hd_v), M))
                                                    : 0.0f;
                const int nu = (int)min((int64_t)32, nact - i0);
                for (int u0 = 0; u0 < nu; u0 += ATT_CB) {
                    if (d0 > 0 || i0 > 0 || u0 > 0) ld_o(o, i0 + u0, nu - u0, d); /* else: loaded above */
#pragma unroll
                    for (int u = 0; u < ATT_CB; u++) {
                        const float w = __shfl_sync(0xffffffffu, wi, (u0 + u) & 31);
                        if (u0 + u < nu) {
                            a[0] = __fmaf_rn(o[u].x, w, a[0]);
                            a[1] = __fmaf_rn(o[u].y, w, a[1]);
                            a[2] = __fmaf_rn(o[u].z, w, a[2]);
                            a[3] = __fmaf_rn(o[u].w, w, a[3]);
                        }
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (d + i < p.hd_v) zcu_st(out, (t * p.Hq + h) * p.hd_v + d + i, __fmul_rn(a[i], inv));
        }
    }
    zcu_trace_mark(3); /* warp 0's heads combined */
}

/* k_attn for a mode (the tensor-core one exists for 16-bit T only) */
template <typename TT> static auto att_kernel(int mode) {
    if constexpr (sizeof(TT) == 2)
        if (mode == ATT_MMA) return k_attn<TT, ATT_MMA>;
    return mode == ATT_FAST ? k_attn<TT, ATT_FAST> : k_attn<TT, ATT_PLAIN>;
}

/* Bounds of one k_attn launch: tokens per launch so that the counters fit
 * their fixed buffer and the partials stay under ATT_PART_BYTES. */
static const size_t ATT_PART_BYTES = (size_t)64 << 20;

/* Attention of n_tok tokens whose q rows are q_stride apart, in geometry g
 * (att_split of p); base position pos[0] (device; 0 without pos) + pos0.
 * n_ctx0: the last token's context when the host knows it (launch only the
 * chunk blocks it needs; blocks loop over chunks, so any count gives the same
 * bits), else 0. */
template <typename TT>
static zmlx_status attn_run(zmlx_ctx *c, const zmlx_attn_params *p, const att_geom &g, const void *q,
                            int64_t q_stride, const void *kc, const void *vc, int64_t n_tok, const int32_t *pos,
                            int64_t pos0, int64_t n_ctx0, int early, void *out) {
    zcu_state *s = zcu_state_of(c);
    int64_t grid_nch = g.nch;
    if (n_ctx0 > 0) {
        const int64_t lo = p->window > 0 && n_ctx0 > p->window ? n_ctx0 - p->window : 0;
        const int64_t n = n_ctx0 - lo, ch = att_chunk(n, g.cmax);
        grid_nch = (n + ch - 1) / ch;
    }
    if (grid_nch > ATT_GRID) grid_nch = ATT_GRID;
    const size_t per_tok = (size_t)p->Hq * (size_t)g.nch * (size_t)g.stride * sizeof(float);
    int64_t tb = ZCU_ATT_COUNTERS / p->Hq;
    if ((size_t)tb * per_tok > ATT_PART_BYTES) tb = (int64_t)(ATT_PART_BYTES / per_tok);
    if (tb < 1) tb = 1;
    if (tb > n_tok) tb = n_tok;
    if (tb > 65535) tb = 65535;
    void *part;
    const zmlx_status st = zcu_scratch(c, 2, (size_t)tb * per_tok, &part);
    if (st != ZMLX_OK) return st;
    const dim3 grid((unsigned)(p->Hq / g.gb), (unsigned)grid_nch, 1);
    if (g.shm > ATT_SHM)
        ZCU_TRY(cudaFuncSetAttribute(att_kernel<TT>(g.mode), cudaFuncAttributeMaxDynamicSharedMemorySize, (int)g.shm));
    for (int64_t t0 = 0; t0 < n_tok; t0 += tb) {
        const int64_t nt = n_tok - t0 < tb ? n_tok - t0 : tb;
        /* tokens t0.. of this launch: q, out and the base position shift by t0 */
        zcu_launch(ZCU_PDL_ATTN, att_kernel<TT>(g.mode), dim3(grid.x, grid.y, (unsigned)nt), 32 * g.warps, g.shm,
                   s->stream, *p, (const TT *)q + t0 * q_stride, q_stride, (const TT *)kc,
                   (const TT *)vc, n_tok - t0, pos, pos0 + t0, g, (float *)part, s->att_counters, early,
                   (TT *)out + t0 * p->Hq * p->hd_v);
        ZCU_LAUNCHED();
    }
    return ZMLX_OK;
}

template <typename TT>
static zmlx_status decode_t(zmlx_ctx *c, const zmlx_attn_params *p, const void *q, const void *kc,
                            const void *vc, int64_t n_ctx, void *out) {
    att_geom g;
    const zmlx_status st = att_split(p, sizeof(TT), &g);
    if (st != ZMLX_OK) return st;
    return attn_run<TT>(c, p, g, q, 0, kc, vc, 1, NULL, n_ctx - 1, n_ctx, 0, out);
}

extern "C" zmlx_status zcu_attention_decode(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T,
                                            const void *q, const void *k_cache,
                                            const void *v_cache, int64_t n_ctx, void *out) {
    return ZCU_DISPATCH_T(T, decode_t, c, p, q, k_cache, v_cache, n_ctx, out);
}

/* ------------------------------------------- attention of many tokens */

/*
 * Prefill attention (FA2's scheme): a block takes FL_ROWS (token, query
 * head) rows of one kv head's group, row f = t·G + hh of the group (token t,
 * head g·G + hh; G = Hq/Hkv, so a tile mixes tokens and heads and any G
 * fills it), a warp 16 of them, and walks the K/V rows its rows attend in
 * tiles of FL_KT positions (staged by cp.async, two buffers), keeping per
 * row the running max m, sum l and output o in registers:
 *   S = scale·(Q·Kᵀ)     (mma, f32 sums; positions outside [lo_t, n_t) -> -inf)
 *   m' = max(m, max_j S), a = exp(m - m'), p_j = exp(S_j - m'),
 *   l = a·l + Σ p_j,     o = a·o + P_hi·V + P_lo·V
 * with P split in two T pieces as att_chunk_mma does (~16 more bits than one
 * T value; the S accumulators are P's A fragments, no shared memory), a sink
 * starting the row at m = sink, l = 1, and out = round_T(o · (1/l)). The
 * tiles and sums are fixed by the call's shape, so a call repeats bit for
 * bit; the rounding differs from the chunked kernel's (another split of the
 * same sums), which is why attention_prefill names the bits it gives.
 * Grid (row blocks of the group, Hkv), the last rows (the longest contexts)
 * first. base = pos[0] (device, or 0 without pos) + pos0 as k_attn's.
 */
enum {
    FL_ROWS = 64, /* (token, head) rows per block: FL_W warps x 16 */
    FL_W = 4,
    FL_KT = 64,   /* positions per K/V tile                        */
};
/* ZMLX_CUDA_FLASH_TOKENS: n_tok from which attention_prefill and
 * attention_step take k_attn_flash */
ENV_TOKENS_KNOB(flash_min_tokens, "ZMLX_CUDA_FLASH_TOKENS", 64)

template <int HD, int HDV> struct fl_shape {
    static constexpr int KLD = HD + 8, VLD = HDV + 8; /* rows of an odd number of 16-byte runs */
    static constexpr size_t Q_EL = (size_t)FL_ROWS * KLD, K_EL = (size_t)FL_KT * KLD, V_EL = (size_t)FL_KT * VLD;
    static constexpr size_t bytes(size_t tsz) { return (Q_EL + 2 * (K_EL + V_EL)) * tsz; }
};

template <typename TT, int HD, int HDV>
__global__ void __launch_bounds__(FL_W * 32)
k_attn_flash(zmlx_attn_params p, const TT *q, int64_t q_stride, const TT *kc, const TT *vc, int64_t n_tok,
             const int32_t *pos, int64_t pos0, TT *out) {
    using S = fl_shape<HD, HDV>;
    zcu_pdl_entry();
    extern __shared__ __align__(16) unsigned char att_shm[];
    TT *qs = (TT *)att_shm, *ks0 = qs + S::Q_EL, *vs0 = ks0 + 2 * S::K_EL;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
    const int G = p.Hq / p.Hkv, g = blockIdx.y;
    const int64_t base = (pos ? (int64_t)pos[0] : 0) + pos0;
    if (base < 0 || base > p.cap - n_tok) return; /* attention_step's prep flagged it */
    const int64_t nrows = n_tok * G, f0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * FL_ROWS;
    /* the block's positions: from the first row's window start to the last row's context */
    const int64_t t_first = f0 / G, t_last = (min(f0 + FL_ROWS, nrows) - 1) / G;
    const auto lo_of = [&](int64_t n) { return p.window > 0 && n > p.window ? n - p.window : (int64_t)0; };
    const int64_t j_end = base + t_last + 1, j_beg = lo_of(base + t_first + 1) / FL_KT * FL_KT;
    const int ntile = (int)((j_end - j_beg + FL_KT - 1) / FL_KT);

    /* this lane's two rows (gq, gq + 8 of the warp's 16): context [lo, n), n = 0 past the last row */
    int64_t rn[2], rlo[2], rt[2];
    int rh[2];
    float m[2], l[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int64_t f = f0 + warp * 16 + gq + 8 * i;
        rt[i] = f / G;
        rh[i] = g * G + (int)(f % G);
        rn[i] = f < nrows ? base + rt[i] + 1 : 0;
        rlo[i] = lo_of(rn[i]);
        const bool sink = p.sinks && f < nrows;
        m[i] = sink ? p.sinks[rh[i]] : -INFINITY;
        l[i] = sink && tq == 0 ? 1.0f : 0.0f; /* l is summed over the row's 4 lanes at the end */
    }
    /* the q rows by 16-byte copies (zero past the last row), then the first K/V tile */
    constexpr int RUN = 16 / (int)sizeof(TT), RUNS = HD / RUN; /* elements per copy, copies per row */
    for (int i = threadIdx.x; i < FL_ROWS * RUNS; i += blockDim.x) {
        const int r = i / RUNS, o = (i - r * RUNS) * RUN;
        const int64_t f = f0 + r;
        TT *dst = qs + r * S::KLD + o;
        if (f < nrows)
            cp_async16(smem_u32(dst), q + (f / G) * q_stride + (int64_t)(g * G + f % G) * HD + o);
        else
            *(uint4 *)dst = make_uint4(0, 0, 0, 0);
    }
    const auto stage_tile = [&](int it) {
        const int64_t j0 = j_beg + (int64_t)it * FL_KT;
        const int nr = (int)min((int64_t)FL_KT, j_end - j0);
        TT *ks = ks0 + (it & 1) * S::K_EL, *vs = vs0 + (it & 1) * S::V_EL;
        att_stage(ks, S::KLD, kc + ((int64_t)g * p.cap + j0) * HD, HD, nr);
        att_stage(vs, S::VLD, vc + ((int64_t)g * p.cap + j0) * HDV, HDV, nr);
        /* V rows past the context are zero: p = 0 must not meet a stale NaN (K's are masked) */
        for (int i = nr * S::VLD + threadIdx.x; i < FL_KT * S::VLD; i += blockDim.x) zcu_st(vs, i, 0.0f);
        cp_async_commit();
    };
    stage_tile(0);

    float o[HDV / 8][4];
#pragma unroll
    for (int i = 0; i < HDV / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    const TT *qw = qs + (warp * 16 + (lane & 15)) * S::KLD + (lane >> 4) * 8;
    for (int it = 0; it < ntile; it++) {
        if (it + 1 < ntile) {
            stage_tile(it + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const TT *ks = ks0 + (it & 1) * S::K_EL, *vs = vs0 + (it & 1) * S::V_EL;
        const int64_t j0 = j_beg + (int64_t)it * FL_KT;
        /* S = Q·Kᵀ for the warp's 16 rows x FL_KT positions: n-tile u = positions 8u.. */
        float s[FL_KT / 8][4];
#pragma unroll
        for (int u = 0; u < FL_KT / 8; u++) s[u][0] = s[u][1] = s[u][2] = s[u][3] = 0.0f;
#pragma unroll
        for (int k0 = 0; k0 < HD; k0 += 16) {
            uint32_t a[4];
            ldsm_x4<false>(qw + k0, a);
#pragma unroll
            for (int u = 0; u < FL_KT / 8; u += 2) {
                uint32_t b[4]; /* b[0], b[1]: positions 8u..; b[2], b[3]: 8u + 8.. */
                ldsm_x4<false>(ks + (8 * u + (lane & 7) + ((lane >> 4) << 3)) * S::KLD + k0 + ((lane >> 3) & 1) * 8, b);
                mma_op<TT>::run(s[u], a, b[0], b[1]);
                mma_op<TT>::run(s[u + 1], a, b[2], b[3]);
            }
        }
        /* scale, mask (the rows' [lo, n) as tile columns), and the rows' running max */
        float mt[2] = {m[0], m[1]};
        int c_lo[2], c_hi[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            c_lo[i] = (int)max(min(rlo[i] - j0, (int64_t)FL_KT), (int64_t)0);
            c_hi[i] = (int)max(min(rn[i] - j0, (int64_t)FL_KT), (int64_t)0);
        }
#pragma unroll
        for (int u = 0; u < FL_KT / 8; u++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i = e >> 1, cj = 8 * u + 2 * tq + (e & 1);
                s[u][e] = cj >= c_lo[i] && cj < c_hi[i] ? __fmul_rn(p.scale, s[u][e]) : -INFINITY;
                mt[i] = nmax(mt[i], s[u][e]);
            }
        float alpha[2], mu[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mt[i] = nmax(mt[i], __shfl_xor_sync(0xffffffffu, mt[i], 1));
            mt[i] = nmax(mt[i], __shfl_xor_sync(0xffffffffu, mt[i], 2));
            mu[i] = mt[i] == -INFINITY ? 0.0f : mt[i]; /* a row with nothing yet: p = 0, alpha = 0 */
            alpha[i] = expf(__fsub_rn(m[i], mu[i]));
            m[i] = mt[i];
            l[i] = __fmul_rn(l[i], alpha[i]);
        }
#pragma unroll
        for (int c = 0; c < HDV / 8; c++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[c][e] = __fmul_rn(o[c][e], alpha[e >> 1]);
        /* p = exp(S - m'), summed into l, and P·V by 16-position k-steps */
#pragma unroll
        for (int u = 0; u < FL_KT / 8; u++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[u][e] = expf(__fsub_rn(s[u][e], mu[e >> 1]));
                l[e >> 1] = __fadd_rn(l[e >> 1], s[u][e]);
            }
#pragma unroll
        for (int kk = 0; kk < FL_KT / 16; kk++) {
            const float *s0 = s[2 * kk], *s1 = s[2 * kk + 1];
            TT *tag = nullptr; /* for the T of pack2 / zcu_round */
            float h[8];
            const float pv[8] = {s0[0], s0[1], s0[2], s0[3], s1[0], s1[1], s1[2], s1[3]};
#pragma unroll
            for (int i = 0; i < 8; i++) h[i] = zcu_round(tag, pv[i]);
            const uint32_t ah[4] = {pack2(tag, h[0], h[1]), pack2(tag, h[2], h[3]), pack2(tag, h[4], h[5]),
                                    pack2(tag, h[6], h[7])};
            const uint32_t al[4] = {pack2(tag, __fsub_rn(pv[0], h[0]), __fsub_rn(pv[1], h[1])),
                                    pack2(tag, __fsub_rn(pv[2], h[2]), __fsub_rn(pv[3], h[3])),
                                    pack2(tag, __fsub_rn(pv[4], h[4]), __fsub_rn(pv[5], h[5])),
                                    pack2(tag, __fsub_rn(pv[6], h[6]), __fsub_rn(pv[7], h[7]))};
#pragma unroll
            for (int c0 = 0; c0 < HDV; c0 += 16) {
                uint32_t b[4];
                ld_b_trans(vs, S::VLD, 16 * kk, c0, b);
#pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    mma_op<TT>::run(o[c0 / 8 + nt], ah, b[2 * nt], b[2 * nt + 1]);
                    mma_op<TT>::run(o[c0 / 8 + nt], al, b[2 * nt], b[2 * nt + 1]);
                }
            }
        }
        __syncthreads(); /* every warp is done with this buffer before it is staged again */
    }
    /* l over the row's 4 lanes, then out = round_T(o / l) as T pairs */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] = __fadd_rn(l[i], __shfl_xor_sync(0xffffffffu, l[i], 1));
        l[i] = __fadd_rn(l[i], __shfl_xor_sync(0xffffffffu, l[i], 2));
        if (rn[i] == 0) continue;
        const float inv = __fdiv_rn(1.0f, l[i]);
        TT *orow = out + (rt[i] * p.Hq + rh[i]) * (int64_t)HDV;
#pragma unroll
        for (int c = 0; c < HDV / 8; c++)
            *(uint32_t *)(orow + 8 * c + 2 * tq) =
                pack2(orow, __fmul_rn(o[c][2 * i], inv), __fmul_rn(o[c][2 * i + 1], inv));
    }
}

template <typename TT>
using flash_fn = void (*)(zmlx_attn_params, const TT *, int64_t, const TT *, const TT *, int64_t, const int32_t *,
                          int64_t, TT *);

/* The flash kernel for n_tok tokens of p and its shared memory, or NULL where
 * the chunked kernel runs them (fewer than flash_min_tokens(); f32; head dims
 * other than 64 = 64 and 128 = 128; q rows, caches or out not aligned for
 * its 16-byte copies and 4-byte stores). attention_prefill and
 * attention_step both ask it, so they take the same kernel. */
template <typename TT>
static flash_fn<TT> flash_kernel(const zmlx_attn_params *p, int64_t n_tok, const void *q, int64_t q_stride,
                                 const void *kc, const void *vc, const void *out, size_t *shm) {
    if constexpr (sizeof(TT) == 2) {
        const uintptr_t al = (uintptr_t)q | (uintptr_t)kc | (uintptr_t)vc | (uintptr_t)(q_stride * 2);
        if (n_tok < flash_min_tokens() || p->hd != p->hd_v || (al & 15) != 0 || ((uintptr_t)out & 3) != 0)
            return nullptr;
        if (p->hd == 64) {
            *shm = fl_shape<64, 64>::bytes(2);
            return k_attn_flash<TT, 64, 64>;
        }
        if (p->hd == 128) {
            *shm = fl_shape<128, 128>::bytes(2);
            return k_attn_flash<TT, 128, 128>;
        }
    }
    return nullptr;
}

template <typename TT>
static zmlx_status flash_run(zmlx_ctx *c, const zmlx_attn_params *p, flash_fn<TT> k, size_t shm, const void *q,
                             int64_t q_stride, const void *kc, const void *vc, int64_t n_tok, const int32_t *pos,
                             int64_t pos0, void *out) {
    const int64_t blocks = (n_tok * (p->Hq / p->Hkv) + FL_ROWS - 1) / FL_ROWS;
    if (blocks > INT32_MAX || p->Hkv > 65535) return ZMLX_ERR_UNSUPPORTED;
    ZCU_TRY(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    zcu_launch(ZCU_PDL_ATTN, k, dim3((unsigned)blocks, (unsigned)p->Hkv), FL_W * 32, shm, zcu_state_of(c)->stream, *p,
               (const TT *)q, q_stride, (const TT *)kc, (const TT *)vc, n_tok, pos, pos0, (TT *)out);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

/* Attention of n_tok tokens (q rows q_stride apart) at base pos[0] + pos0:
 * the flash kernel where it applies, else k_attn's chunks (the bits of one
 * attention_decode per token). */
template <typename TT>
static zmlx_status attn_tokens(zmlx_ctx *c, const zmlx_attn_params *p, const att_geom &g, const void *q,
                               int64_t q_stride, const void *kc, const void *vc, int64_t n_tok, const int32_t *pos,
                               int64_t pos0, int early, void *out) {
    size_t shm = 0;
    const flash_fn<TT> k = flash_kernel<TT>(p, n_tok, q, q_stride, kc, vc, out, &shm);
    if (k) return flash_run<TT>(c, p, k, shm, q, q_stride, kc, vc, n_tok, pos, pos0, out);
    return attn_run<TT>(c, p, g, q, q_stride, kc, vc, n_tok, pos, pos0, pos ? 0 : pos0 + n_tok, early, out);
}

template <typename TT>
static zmlx_status prefill_t(zmlx_ctx *c, const zmlx_attn_params *p, const void *q, int64_t n_tok, int64_t pos,
                             const void *kc, const void *vc, void *out) {
    att_geom g;
    const zmlx_status st = att_split(p, sizeof(TT), &g);
    if (st != ZMLX_OK) return st;
    return attn_tokens<TT>(c, p, g, q, (int64_t)p->Hq * p->hd, kc, vc, n_tok, NULL, pos, 0, out);
}

extern "C" zmlx_status zcu_attention_prefill(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                             int64_t n_tok, int64_t pos, const void *k_cache, const void *v_cache,
                                             void *out) {
    return ZCU_DISPATCH_T(T, prefill_t, c, p, q, n_tok, pos, k_cache, v_cache, out);
}

/* ----------------------------------------------------- attention step */

/* Block per (head, token) over the q heads then the k heads of each token's
 * packed row: rms_row with the head's norm weight, rope at base + t (the
 * unfused rms_norm and rope kernels' own device functions, so the same
 * bits) on a copy in shared memory (through global memory each phase cost an
 * L2 round trip); the row is written back, and k-head blocks store it and the
 * matching v row into the caches. An out-of-range base flags the error and
 * touches nothing. */
template <typename TT>
__global__ void __launch_bounds__(RMS_T)
k_attn_prep(zmlx_attn_params p, const TT *q_norm, const TT *k_norm, float eps, zmlx_rope_params rp,
            int has_rope, TT *qkv, int64_t n_tok, const int32_t *pos, TT *kc, TT *vc, int *err) {
    zcu_pdl_entry();
    __shared__ float sh[33];
    extern __shared__ __align__(16) unsigned char prep_shm[];
    TT *xs = (TT *)prep_shm; /* the head row while it is normed and rotated */
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
    if (w)
        rms_row(x, (const TT *)NULL, w, p.hd, eps, (TT *)NULL, xs, sh);
    else
        for (int d = threadIdx.x; d < p.hd; d += blockDim.x) xs[d] = x[d];
    __syncthreads();
    zcu_trace_mark(1); /* normed */
    if (has_rope) {
        for (int i = threadIdx.x; i < rp.rot_dims / 2; i += blockDim.x) rope_pair(rp, xs, i, base + t);
        __syncthreads();
    }
    zcu_trace_mark(2); /* rotated */
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) x[d] = xs[d];
    if (!is_k) return;
    const TT *v = row + nq + nk + (int64_t)kv * p.hd_v;
    const int64_t at = (int64_t)kv * p.cap + base + t;
    for (int d = threadIdx.x; d < p.hd; d += blockDim.x) kc[at * p.hd + d] = xs[d];
    for (int d = threadIdx.x; d < p.hd_v; d += blockDim.x) vc[at * p.hd_v + d] = v[d];
}

/* The same per (head, token) by a warp each, 8 per block, for more than one
 * token and heads of <= 256 features (rms_row_warp gives rms_row's bits):
 * blocks of RMS_T per (head, token) and their three barriers made a
 * 2048-token chunk's prep 636 us (ncu, H200; 60 us this way), ~9% of the
 * chunk. The decode step's single token keeps k_attn_prep exactly as it
 * was: one kernel of both forms, and then the two sharing their last loops
 * as a helper, each made the step 15-20 us slower (same-run A/B, H200), so
 * those loops are written out in both (a helper written to match them
 * still changed k_attn_prep's PTX, hoisting loads, so it was not tried on
 * the device). */
template <typename TT>
__global__ void __launch_bounds__(RMS_T)
k_attn_prep_warps(zmlx_attn_params p, const TT *q_norm, const TT *k_norm, float eps, zmlx_rope_params rp,
                  int has_rope, TT *qkv, int64_t n_tok, const int32_t *pos, TT *kc, TT *vc, int *err) {
    zcu_pdl_entry();
    extern __shared__ __align__(16) unsigned char prep_shm[];
    const int64_t base = pos[0];
    if (base < 0 || base > p.cap - n_tok) {
        if (blockIdx.x == 0 && threadIdx.x == 0) *err = 1;
        return;
    }
    const unsigned nh = p.Hq + p.Hkv, unit = blockIdx.x * (RMS_T / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (unit >= nh * n_tok) return;
    TT *xs = (TT *)prep_shm + (threadIdx.x / 32) * p.hd; /* this warp's head row */
    const int hb = (int)(unit % nh);
    const int64_t t = unit / nh, nq = (int64_t)p.Hq * p.hd, nk = (int64_t)p.Hkv * p.hd;
    TT *row = qkv + t * (nq + nk + (int64_t)p.Hkv * p.hd_v);
    const bool is_k = hb >= p.Hq;
    const int kv = hb - p.Hq;
    TT *x = is_k ? row + nq + (int64_t)kv * p.hd : row + (int64_t)hb * p.hd;
    const TT *w = is_k ? k_norm : q_norm;
    if (w)
        rms_row_warp(x, w, p.hd, eps, xs);
    else
        for (int d = lane; d < p.hd; d += 32) xs[d] = x[d];
    __syncwarp();
    if (has_rope) {
        for (int i = lane; i < rp.rot_dims / 2; i += 32) rope_pair(rp, xs, i, base + t);
        __syncwarp();
    }
    for (int d = lane; d < p.hd; d += 32) x[d] = xs[d];
    if (!is_k) return;
    const TT *v = row + nq + nk + (int64_t)kv * p.hd_v;
    const int64_t at = (int64_t)kv * p.cap + base + t;
    for (int d = lane; d < p.hd; d += 32) kc[at * p.hd + d] = xs[d];
    for (int d = lane; d < p.hd_v; d += 32) vc[at * p.hd_v + d] = v[d];
}

/* With sp->proj, the projection and the prep as one kernel (zcu_qkv_step),
 * or the projection part by part (zcu_qkv_parts) and the prep, or
 * ZMLX_ERR_UNSUPPORTED (ops.c then runs gather_qmm and this without it). */
template <typename TT>
static zmlx_status step_t(zmlx_ctx *c, zmlx_dtype T, const zmlx_attn_step_params *sp, void *qkv, int64_t n_tok,
                          const int32_t *pos, void *kc, void *vc, void *out) {
    zcu_state *s = zcu_state_of(c);
    const zmlx_attn_params *p = &sp->attn;
    zmlx_rope_params rp;
    memset(&rp, 0, sizeof rp);
    if (sp->rope) rp = *sp->rope;
    const int64_t units = (int64_t)(p->Hq + p->Hkv) * n_tok; /* (head, token) pairs */
    att_geom g; /* split before the prep writes the caches (it also bounds prep's hd-element row) */
    if (units > INT32_MAX || att_split(p, sizeof(TT), &g) != ZMLX_OK) return ZMLX_ERR_UNSUPPORTED;
    bool prepped = false; /* by the one-kernel projection */
    if (sp->proj) {
        zmlx_status st = zcu_qkv_step(c, T, sp, qkv, n_tok, pos, kc, vc);
        prepped = st == ZMLX_OK;
        if (st == ZMLX_ERR_UNSUPPORTED) st = zcu_qkv_parts(c, T, sp, qkv, n_tok);
        if (st != ZMLX_OK) return st;
    }
    if (prepped) {
        /* nothing left before the attention */
    } else if (n_tok > 1 && p->hd <= 256) {
        const int upb = RMS_T / 32;
        zcu_launch(ZCU_PDL_ATTN, k_attn_prep_warps<TT>, (unsigned)((units + upb - 1) / upb), RMS_T,
                   (size_t)(upb * p->hd) * sizeof(TT), s->stream, *p, (const TT *)sp->q_norm, (const TT *)sp->k_norm,
                   sp->eps, rp, (int)(sp->rope != NULL), (TT *)qkv, n_tok, pos, (TT *)kc, (TT *)vc, s->err_flag);
    } else {
        zcu_launch(ZCU_PDL_ATTN, k_attn_prep<TT>, (unsigned)units, RMS_T, (size_t)p->hd * sizeof(TT), s->stream, *p,
                   (const TT *)sp->q_norm, (const TT *)sp->k_norm, sp->eps, rp, (int)(sp->rope != NULL), (TT *)qkv,
                   n_tok, pos, (TT *)kc, (TT *)vc, s->err_flag);
    }
    ZCU_LAUNCHED();
    const int64_t row = (int64_t)(p->Hq + p->Hkv) * p->hd + (int64_t)p->Hkv * p->hd_v;
    return attn_tokens<TT>(c, p, g, qkv, row, kc, vc, n_tok, pos, 0, zcu_pdl_enabled(ZCU_PDL_ATTN), out);
}

extern "C" zmlx_status zcu_attention_step(zmlx_ctx *c, const zmlx_attn_step_params *p, zmlx_dtype T,
                                          void *qkv, int64_t n_tok, const int32_t *pos, void *k_cache,
                                          void *v_cache, void *out) {
    return ZCU_DISPATCH_T(T, step_t, c, T, p, qkv, n_tok, pos, k_cache, v_cache, out);
}
