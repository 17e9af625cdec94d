/*
 * ops_cuda.cu — the non-matmul, non-attention primitives on the GPU: add,
 * rms_norm, add_rms_norm, softmax, the MoE router, argmax, LFM2's short
 * convolution and the int32 counter add (rope and attention: attn_cuda.cu).
 * Formulas and rounding points follow the reference kernels
 * (src/cpu/ref_norm.c, ref_router.c, ref_elementwise.c, ref_kv.c); reductions run
 * in fixed shuffle trees instead of index order, so results agree with the
 * CPU within rounding and are bit-identical from run to run.
 *
 * Data errors found on the device (non-finite router logits) cannot be
 * returned by the asynchronous call: the kernel sets the state's error flag
 * and the next zmlx_ctx_sync returns ZMLX_ERR_RANGE.
 */
#include "cuda/rows.cuh"

static unsigned nblocks(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

/* --------------------------------------------------------- add, norms */

template <typename TT>
__global__ void k_add(const TT *a, const TT *b, int64_t n, TT *out) {
    zcu_pdl_entry();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) zcu_st(out, i, __fadd_rn(zcu_ld(a, i), zcu_ld(b, i)));
}

template <typename TT>
static zmlx_status add_t(cudaStream_t st, const void *a, const void *b, int64_t n, void *out) {
    zcu_launch(ZCU_PDL_OPS, k_add<TT>, nblocks(n, 256), 256, 0, st, (const TT *)a, (const TT *)b, n, (TT *)out);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_add(zmlx_ctx *c, zmlx_dtype T, const void *a, const void *b, int64_t n,
                               void *out) {
    return ZCU_DISPATCH_T(T, add_t, zcu_state_of(c)->stream, a, b, n, out);
}

template <typename TT>
__global__ void __launch_bounds__(RMS_T)
k_rms(const TT *x, const TT *x2, const TT *weight, int64_t D, float eps, TT *r, TT *y) {
    /* the norm weight is cold (one per layer): pulled into L2 while the
       previous kernel runs (it is read after the wait) */
    if (weight) zcu_prefetch_l2(weight, D * (int64_t)sizeof(TT), threadIdx.x, blockDim.x);
    zcu_pdl_entry();
    __shared__ float sh[33];
    const int64_t base = (int64_t)blockIdx.x * D;
    rms_row(x + base, x2 ? x2 + base : x2, weight, D, eps, x2 ? r + base : r, y + base, sh);
    zcu_trace_mark(1); /* stored */
}

template <typename TT>
static zmlx_status rms_t(cudaStream_t st, const void *x, const void *x2, const void *weight,
                         int64_t n_rows, int64_t D, float eps, void *r, void *y) {
    zcu_launch(ZCU_PDL_OPS, k_rms<TT>, (unsigned)n_rows, RMS_T, 0, st, (const TT *)x, (const TT *)x2, (const TT *)weight,
               D, eps, (TT *)r, (TT *)y);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_add_rms_norm(zmlx_ctx *c, zmlx_dtype T, const void *x,
                                        const void *residual, const void *weight, int64_t n_rows,
                                        int64_t D, float eps, void *r_out, void *y_out) {
    return ZCU_DISPATCH_T(T, rms_t, zcu_state_of(c)->stream, x, residual, weight, n_rows, D, eps,
                          r_out, y_out);
}

extern "C" zmlx_status zcu_rms_norm(zmlx_ctx *c, zmlx_dtype T, const void *x, const void *weight,
                                    int64_t n_rows, int64_t D, float eps, void *y) {
    return ZCU_DISPATCH_T(T, rms_t, zcu_state_of(c)->stream, x, (const void *)NULL, weight, n_rows,
                          D, eps, (void *)NULL, y);
}

/* ------------------------------------------------------------ softmax */

/* Block per row: m = max (NaN wins), sum of expf(v - m), out = e * (1/sum).
 * expf is recomputed in the last pass rather than stored (y may alias x). */
template <typename TT>
__global__ void __launch_bounds__(256) k_softmax(const TT *x, int64_t n, TT *y) {
    zcu_pdl_entry();
    __shared__ float sh[33];
    const TT *xr = x + (int64_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = nmax(m, zcu_ld(xr, i));
    m = block_reduce<true>(m, sh);
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s = __fadd_rn(s, expf(__fsub_rn(zcu_ld(xr, i), m)));
    s = block_reduce<false>(s, sh);
    const float inv = __fdiv_rn(1.0f, s);
    TT *yr = y + (int64_t)blockIdx.x * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        zcu_st(yr, i, __fmul_rn(expf(__fsub_rn(zcu_ld(xr, i), m)), inv));
}

template <typename TT>
static zmlx_status softmax_t(cudaStream_t st, const void *x, int64_t n_rows, int64_t n, void *y) {
    zcu_launch(ZCU_PDL_OPS, k_softmax<TT>, (unsigned)n_rows, 256, 0, st, (const TT *)x, n, (TT *)y);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_softmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_rows,
                                   int64_t n, void *y) {
    return ZCU_DISPATCH_T(T, softmax_t, zcu_state_of(c)->stream, x, n_rows, n, y);
}

/* ------------------------------------------------------------- router */

/* Top-k selection in rounds, one warp (the grouped kind's choice of groups;
 * k_route ranks the experts instead): every score becomes an unsigned key (okey) whose
 * order is the float order (-0 folded into +0, so equal scores give equal keys);
 * key 0 marks a taken entry (no finite or infinite score maps to 0). Lane l
 * owns entries e = l + 32i and keeps the best of its untaken ones, (bk, bi)
 * (the first, i.e. lowest, index among equal keys). A selection round is two
 * warp reductions (max key, then min index among the lanes holding it: ties
 * go to the lower index) and a rescan by the one lane that lost its best. */
__device__ __forceinline__ void lane_best(const uint32_t *key, int n, uint32_t &bk, int &bi) {
    bk = 0;
    bi = -1;
    for (int e = threadIdx.x & 31; e < n; e += 32)
        if (key[e] > bk) { bk = key[e]; bi = e; }
}
/* Take the best untaken entry of key[0..n) and return its index (0 when none
 * is left with a key above 0: only with NaN scores, flagged by the caller). */
__device__ __forceinline__ int warp_take(uint32_t *key, int n, uint32_t &bk, int &bi) {
    const uint32_t mk = __reduce_max_sync(0xffffffffu, bk);
    const uint32_t wi = __reduce_min_sync(0xffffffffu, bk == mk && bi >= 0 ? (uint32_t)bi : 0xffffffffu);
    if (wi == 0xffffffffu) return 0;
    if ((int)(wi & 31) == (threadIdx.x & 31)) {
        key[wi] = 0;
        lane_best(key, n, bk, bi);
    }
    return (int)wi;
}

/* the kinds that score by sigmoid (bias, norm_eps and scale apply to them) */
__device__ __forceinline__ bool route_sigmoid(const zmlx_router_params &p) {
    return p.kind == ZMLX_ROUTER_SIGMOID_TOPK || p.kind == ZMLX_ROUTER_SIGMOID_GROUPED_TOPK;
}

/* Warp 0 of k_route: selection scores of one token's logits row into
 * score[] (the weights' source) and the unsigned keys of the selection values
 * into key (= sel) — for the grouped kind only the kept groups' entries keep
 * their value, the others select as 0. Non-finite logits or bias set *err. */
template <typename TT>
__device__ void route_keys(const zmlx_router_params &p, const TT *logits, float *score, float *sel, float *gsc,
                           unsigned char *keep, int *err) {
    const int E = p.E, lane = threadIdx.x & 31;
    uint32_t *key = (uint32_t *)sel, *gkey = (uint32_t *)gsc;
    const bool sigmoid = route_sigmoid(p);
    bool bad = false;
    float m = -INFINITY;
    for (int e = lane; e < E; e += 32) {
        const float v = zcu_ld(logits, e);
        if (!isfinite(v) || (p.bias && !isfinite(p.bias[e]))) bad = true;
        score[e] = v;
        m = nmax(m, v);
    }
    if (__any_sync(0xffffffffu, bad) && lane == 0) atomicOr(err, 1);
    zcu_trace_mark(1); /* the logits in */
    if (p.kind == ZMLX_ROUTER_SOFTMAX_TOPK) {
        m = wmax(m);
        float s = 0.0f;
        for (int e = lane; e < E; e += 32) {
            score[e] = expf(__fsub_rn(score[e], m));
            s = __fadd_rn(s, score[e]);
        }
        const float inv = __fdiv_rn(1.0f, wsum(s));
        for (int e = lane; e < E; e += 32) score[e] = __fmul_rn(score[e], inv);
    }
    for (int e = lane; e < E; e += 32) {
        if (sigmoid) score[e] = zcu_sigmoid(score[e]);
        sel[e] = sigmoid && p.bias ? __fadd_rn(score[e], p.bias[e]) : score[e];
    }
    __syncwarp();
    uint32_t bk;
    int bi;
    if (p.kind == ZMLX_ROUTER_SIGMOID_GROUPED_TOPK) {
        const int G = p.n_group, per = E / G;
        for (int g = lane; g < G; g += 32) {
            /* sum of the group's top 2 (ties to the lower index) */
            const float *s = sel + g * per;
            int b0 = 0;
            for (int e = 1; e < per; e++) if (s[e] > s[b0]) b0 = e;
            int b1 = -1;
            for (int e = 0; e < per; e++) if (e != b0 && (b1 < 0 || s[e] > s[b1])) b1 = e;
            gkey[g] = okey(b1 < 0 ? s[b0] : __fadd_rn(s[b0], s[b1]));
            keep[g] = 0;
        }
        __syncwarp();
        lane_best(gkey, G, bk, bi);
        for (int j = 0; j < p.topk_group; j++) {
            const int g = warp_take(gkey, G, bk, bi);
            if (lane == 0) keep[g] = 1;
        }
        __syncwarp();
        for (int e = lane; e < E; e += 32)
            if (!keep[e / per]) sel[e] = 0.0f;
        __syncwarp();
    }
    for (int e = lane; e < E; e += 32) key[e] = okey(sel[e]);
}

/* The weight of a selected entry with score v, for every kind but
 * TOPK_SOFTMAX: renormalised by wsum (the selected scores summed in slot
 * order; + norm_eps for the sigmoid kinds) when norm_topk, times scale for
 * the sigmoid kinds. Both route kernels call it, so they round alike. */
__device__ __forceinline__ float route_weight(const zmlx_router_params &p, float v, float wsum) {
    const bool sigmoid = route_sigmoid(p);
    if (p.norm_topk) v = __fdiv_rn(v, sigmoid ? __fadd_rn(wsum, p.norm_eps) : wsum);
    if (sigmoid) v = __fmul_rn(v, p.scale != 0.0f ? p.scale : 1.0f);
    return v;
}

/* The other shapes (the grouped kind, E > 32 ROUTE_RB, k > 32): a block of
 * ROUTE_T threads per token: warp 0 computes the scores and keys;
 * then a quad of threads ranks each entry e = tid/4, tid/4 + ROUTE_T/4, ...
 * (lane q of the quad counts over j = q, q+4, ...; two shuffles add the four
 * counts): rank(e) = #{j : key_j > key_e, or key_j == key_e and j < e}, the
 * slot warp_take's rounds would give it (largest key first, ties to the lower
 * index), with no chain of warp-wide rounds. An entry of rank < k lands in
 * slot order together with its weight source score[e], so warp 0 then sums
 * the weights in slot order without a dependent lookup per slot. A quad per
 * entry (not a thread) cuts the serial count from E to E/4 compares (with a
 * thread per entry: ~2000 dependent instructions on warp 0, ncu 5.7 us at
 * E = 128; the quads gained 0.5 us per layer in the decode step, NOTES.md
 * "Decode v4"). Shared: score[E], sel[E] (then its keys), gsc[E] (group
 * scores, then their keys, then the k selected weights), slot[E] ints,
 * keep[E] bytes. */
enum { ROUTE_T = 512, ROUTE_Q = 4 };
template <typename TT>
__global__ void __launch_bounds__(ROUTE_T)
k_route(zmlx_router_params p, const TT *logits, int32_t *idx_out, float *w_out, int *err) {
    zcu_pdl_entry();
    extern __shared__ float rsh[];
    const int E = p.E, k = p.k, lane = threadIdx.x & 31;
    float *score = rsh, *sel = rsh + E, *gsc = rsh + 2 * E;
    const uint32_t *key = (const uint32_t *)sel;
    int *slot = (int *)(rsh + 3 * E);
    unsigned char *keep = (unsigned char *)(rsh + 4 * E);
    float *wsel = gsc;
    const int64_t t = blockIdx.x;
    if (threadIdx.x < 32) route_keys(p, logits + t * E, score, sel, gsc, keep, err);
    __syncthreads();
    const int q = threadIdx.x % ROUTE_Q;
    const unsigned qmask = 0xfu << (lane & ~(ROUTE_Q - 1)); /* the quad's lanes: same e, same trip count */
    for (int e = threadIdx.x / ROUTE_Q; e < E; e += ROUTE_T / ROUTE_Q) {
        const uint32_t ke = key[e];
        int r = 0;
#pragma unroll 4
        for (int j = q; j < E; j += ROUTE_Q) {
            const uint32_t kj = key[j];
            r += kj > ke || (kj == ke && j < e);
        }
        r += __shfl_xor_sync(qmask, r, 1);
        r += __shfl_xor_sync(qmask, r, 2);
        if (q == 0 && r < k) {
            slot[r] = e;
            wsel[r] = score[e];
        }
    }
    __syncthreads();
    if (threadIdx.x >= 32) return;
    int32_t *idx = idx_out + t * k;
    float *w = w_out + t * k;
    /* the weight sum (norm_topk) and max (topk_softmax) run in slot order, as
       the reference's: every lane accumulates the same values */
    float wsum_ = 0.0f, wmax_ = -INFINITY;
    for (int j = 0; j < k; j++) {
        const float wj = wsel[j];
        wsum_ = __fadd_rn(wsum_, wj);
        wmax_ = nmax(wmax_, wj);
    }
    for (int j = lane; j < k; j += 32) idx[j] = slot[j];
    __syncwarp();
    if (p.kind == ZMLX_ROUTER_TOPK_SOFTMAX) {
        for (int j = lane; j < k; j += 32) wsel[j] = expf(__fsub_rn(wsel[j], wmax_));
        __syncwarp();
        float s = 0.0f;
        for (int j = 0; j < k; j++) s = __fadd_rn(s, wsel[j]);
        const float inv = __fdiv_rn(1.0f, s);
        for (int j = lane; j < k; j += 32) w[j] = __fmul_rn(wsel[j], inv);
        return;
    }
    for (int j = lane; j < k; j += 32) w[j] = route_weight(p, wsel[j], wsum_);
}

/* One warp per token for the common shapes (route_warp_ok: not the grouped
 * kind, E <= 32 ROUTE_RB, k <= 32), all in registers: lane l holds entries
 * l + 32i, i < RB = route_rb(E), loaded at once (the loops only as long as E
 * needs: entries past E are skipped at any RB, so RB leaves the bits alone;
 * RB = 8 for every E cost Qwen3's decode step ~26 us, NOTES.md v29); the
 * scores and keys as route_keys computes them (same per-lane order, same
 * shuffle trees); k rounds of two warp reductions
 * (max key, then min index among the lanes holding it: ties to the lower
 * index) picking the slots as warp_take's rounds and k_route's ranks do, the
 * winner's score broadcast and summed in slot order; lane j < k then holds
 * slot j and computes its weight as k_route's warp 0 does. No shared memory
 * and no block barrier on the route's serial path (k_route: logits into
 * shared memory, two barriers around the ranks; ~0.7 us less per call in
 * the decode step, NOTES.md "v8"). The same formulas in the same order as
 * k_route, so the same ids and weights by construction. */
enum { ROUTE_RB = 8 };
static bool route_warp_ok(const zmlx_router_params *p) {
    return p->kind != ZMLX_ROUTER_SIGMOID_GROUPED_TOPK && p->E <= 32 * ROUTE_RB && p->k <= 32;
}
/* entries per lane for E experts: the least of 1, 2, 4, 8 with 32·RB >= E */
static int route_rb(int E) {
    return E <= 32 ? 1 : E <= 64 ? 2 : E <= 128 ? 4 : ROUTE_RB;
}
template <typename TT, int RB>
__global__ void __launch_bounds__(32)
k_route_warp(zmlx_router_params p, const TT *logits, int32_t *idx_out, float *w_out, int *err) {
    zcu_pdl_entry();
    const int E = p.E, k = p.k, lane = threadIdx.x;
    const int64_t t = blockIdx.x;
    const TT *row = logits + t * E;
    const bool sigmoid = route_sigmoid(p);
    float sc[RB], bias[RB];
#pragma unroll
    for (int i = 0; i < RB; i++) {
        const int e = lane + 32 * i;
        sc[i] = e < E ? zcu_ld(row, e) : 0.0f;
        bias[i] = e < E && p.bias ? p.bias[e] : 0.0f;
    }
    bool bad = false;
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < RB; i++)
        if (lane + 32 * i < E) {
            if (!isfinite(sc[i]) || !isfinite(bias[i])) bad = true;
            m = nmax(m, sc[i]);
        }
    if (__any_sync(0xffffffffu, bad) && lane == 0) atomicOr(err, 1);
    zcu_trace_mark(1); /* the logits in */
    if (p.kind == ZMLX_ROUTER_SOFTMAX_TOPK) {
        m = wmax(m);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < RB; i++)
            if (lane + 32 * i < E) {
                sc[i] = expf(__fsub_rn(sc[i], m));
                s = __fadd_rn(s, sc[i]);
            }
        const float inv = __fdiv_rn(1.0f, wsum(s));
#pragma unroll
        for (int i = 0; i < RB; i++) sc[i] = __fmul_rn(sc[i], inv);
    }
    uint32_t key[RB];
#pragma unroll
    for (int i = 0; i < RB; i++) {
        if (sigmoid) sc[i] = zcu_sigmoid(sc[i]);
        key[i] = lane + 32 * i < E ? okey(sigmoid && p.bias ? __fadd_rn(sc[i], bias[i]) : sc[i]) : 0u;
    }
    int slot = 0;
    float wsel = 0.0f, wsum_ = 0.0f, wmax_ = -INFINITY;
    for (int j = 0; j < k; j++) {
        uint32_t bk = 0;
        int bi = -1;
#pragma unroll
        for (int i = 0; i < RB; i++)
            if (key[i] > bk) { bk = key[i]; bi = lane + 32 * i; }
        const uint32_t mk = __reduce_max_sync(0xffffffffu, bk);
        const uint32_t wi = __reduce_min_sync(0xffffffffu, bk == mk && bi >= 0 ? (uint32_t)bi : 0xffffffffu);
        const int e = wi == 0xffffffffu ? 0 : (int)wi; /* none left: NaN scores, flagged above */
        float se = 0.0f;
#pragma unroll
        for (int i = 0; i < RB; i++)
            if (lane + 32 * i == e) { se = sc[i]; key[i] = 0; }
        se = __shfl_sync(0xffffffffu, se, e & 31);
        wsum_ = __fadd_rn(wsum_, se);
        wmax_ = nmax(wmax_, se);
        if (lane == j) { slot = e; wsel = se; }
    }
    zcu_trace_mark(2); /* the k rounds done */
    int32_t *idx = idx_out + t * k;
    float *w = w_out + t * k;
    if (lane < k) idx[lane] = slot;
    if (p.kind == ZMLX_ROUTER_TOPK_SOFTMAX) {
        const float ex = lane < k ? expf(__fsub_rn(wsel, wmax_)) : 0.0f;
        float s = 0.0f;
        for (int j = 0; j < k; j++) s = __fadd_rn(s, __shfl_sync(0xffffffffu, ex, j));
        const float inv = __fdiv_rn(1.0f, s);
        if (lane < k) w[lane] = __fmul_rn(ex, inv);
        return;
    }
    if (lane < k) w[lane] = route_weight(p, wsel, wsum_);
}

template <typename TT>
static zmlx_status route_t(zcu_state *s, const zmlx_router_params *p, const void *logits,
                           int64_t n_tok, int32_t *idx, float *w) {
    if (route_warp_ok(p)) {
        const int rb = route_rb(p->E);
        auto kern = rb == 1 ? k_route_warp<TT, 1> : rb == 2 ? k_route_warp<TT, 2> : rb == 4 ? k_route_warp<TT, 4>
                                                                                         : k_route_warp<TT, ROUTE_RB>;
        zcu_launch(ZCU_PDL_OPS, kern, (unsigned)n_tok, 32, 0, s->stream, *p, (const TT *)logits, idx, w, s->err_flag);
        ZCU_LAUNCHED();
        return ZMLX_OK;
    }
    const size_t shm = (size_t)p->E * (4 * sizeof(float) + 1);
    if (shm > 200 * 1024) return ZMLX_ERR_UNSUPPORTED;
    if (shm > 48 * 1024)
        ZCU_TRY(cudaFuncSetAttribute(k_route<TT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm));
    zcu_launch(ZCU_PDL_OPS, k_route<TT>, (unsigned)n_tok, ROUTE_T, shm, s->stream, *p, (const TT *)logits, idx, w,
               s->err_flag);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_moe_route(zmlx_ctx *c, const zmlx_router_params *p, zmlx_dtype T,
                                     const void *logits, int64_t n_tok, int32_t *idx_out,
                                     float *w_out) {
    return ZCU_DISPATCH_T(T, route_t, zcu_state_of(c), p, logits, n_tok, idx_out, w_out);
}


/* ------------------------------------------------------------- argmax */

/* Block per row. Thread i scans the 8-element runs i, i + blockDim, ... (four
 * runs' loads in flight before the first compare) keeping its largest
 * amax_word, then the block takes the largest of those: ties to the lower
 * index, NaN ignored, as zr_argmax. */
enum { AMAX_RUNS = 4 };
template <typename TT>
__global__ void __launch_bounds__(1024) k_argmax(const TT *x, int64_t n, int32_t *idx) {
    zcu_pdl_entry();
    __shared__ unsigned long long sh[32];
    const TT *xr = x + (int64_t)blockIdx.x * n;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int64_t run = 8 * (int64_t)blockDim.x;
    unsigned long long best = 0;
    for (int64_t b = 8 * (int64_t)threadIdx.x; b < n; b += AMAX_RUNS * run) {
        float v[AMAX_RUNS][8];
#pragma unroll
        for (int u = 0; u < AMAX_RUNS; u++) ld_run<8>(xr, b + u * run, n, v[u]);
#pragma unroll
        for (int u = 0; u < AMAX_RUNS; u++)
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const int64_t i = b + u * run + e;
                if (i < n) best = amax_max(best, amax_word(v[u][e], (uint32_t)i));
            }
    }
    best = amax_warp(best);
    if (lane == 0) sh[w] = best;
    __syncthreads();
    if (w == 0) {
        best = amax_warp(lane < nw ? sh[lane] : 0ull);
        if (lane == 0) idx[blockIdx.x] = amax_index(best);
    }
}

template <typename TT>
static zmlx_status argmax_t(cudaStream_t st, const void *x, int64_t n_rows, int64_t n, int32_t *idx) {
    zcu_launch(ZCU_PDL_OPS, k_argmax<TT>, (unsigned)n_rows, 1024, 0, st, (const TT *)x, n, idx);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_argmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                                  int32_t *idx) {
    return ZCU_DISPATCH_T(T, argmax_t, zcu_state_of(c)->stream, x, n_rows, n, idx);
}

/* ------------------------------------------------------- short conv */

/* zmlx_short_conv: a thread per channel walks the tokens in order with its
 * window of the last L-1 Bx values, exactly as zr_short_conv (the same
 * roundings and FMA chain, so the same bits). bcx [n, 3D], w [D, L],
 * state [L-1, D], y [n, D]. */
template <typename TT>
__global__ void k_short_conv(const TT *bcx, int64_t n, int64_t D, int L, const TT *w, TT *state, TT *y) {
    const int64_t d = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float win[ZMLX_SHORT_CONV_MAX_L], wt[ZMLX_SHORT_CONV_MAX_L];
    if (d < D)
        for (int j = 0; j < L; j++) wt[j] = zcu_ld(w, d * L + j); /* weights: readable before the wait */
    zcu_pdl_entry();
    if (d >= D) return;
    for (int j = 0; j < L - 1; j++) win[j] = zcu_ld(state, (int64_t)j * D + d);
    for (int64_t t = 0; t < n; t++) {
        const TT *row = bcx + t * 3 * D;
        win[L - 1] = zcu_round(row, __fmul_rn(zcu_ld(row, d), zcu_ld(row, 2 * D + d)));
        float acc = 0.0f;
        for (int j = 0; j < L; j++) acc = __fmaf_rn(wt[j], win[j], acc);
        zcu_st(y, t * D + d, __fmul_rn(zcu_ld(row, D + d), zcu_round(row, acc)));
        for (int j = 0; j < L - 1; j++) win[j] = win[j + 1];
    }
    for (int j = 0; j < L - 1; j++) zcu_st(state, (int64_t)j * D + d, win[j]);
}

template <typename TT>
static zmlx_status short_conv_t(cudaStream_t st, const void *bcx, int64_t n, int64_t D, int L, const void *w,
                                void *state, void *y) {
    zcu_launch(ZCU_PDL_OPS, k_short_conv<TT>, nblocks(D, 128), 128, 0, st, (const TT *)bcx, n, D, L, (const TT *)w,
               (TT *)state, (TT *)y);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}

extern "C" zmlx_status zcu_short_conv(zmlx_ctx *c, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                                      const void *w, void *state, void *y) {
    return ZCU_DISPATCH_T(T, short_conv_t, zcu_state_of(c)->stream, bcx, n_tok, D, L, w, state, y);
}

__global__ void k_i32_add(int32_t *x, int64_t n, int32_t delta) {
    zcu_pdl_entry();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = (int32_t)((uint32_t)x[i] + (uint32_t)delta);
}

extern "C" zmlx_status zcu_i32_add(zmlx_ctx *c, int32_t *x, int64_t n, int32_t delta) {
    zcu_launch(ZCU_PDL_OPS, k_i32_add, nblocks(n, 256), 256, 0, zcu_state_of(c)->stream, x, n, delta);
    ZCU_LAUNCHED();
    return ZMLX_OK;
}
