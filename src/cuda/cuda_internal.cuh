/*
 * cuda_internal.cuh — what every .cu file of src/cuda shares: the backend state
 * hung on ctx->backend_state, the CUDA-error-to-status plumbing, activation
 * loads/stores in T, the device activation (mirror of zr_act) and the packed
 * quantized-chunk decoder used by every weight-reading kernel.
 *
 * Quantized rows are read in chunks of CH (32, or 16 for nvfp4 rows whose
 * length is not a multiple of 32) consecutive elements: CH*bits/32 whole
 * uint32 words, so a chunk never straddles a word boundary and all modes and
 * bit widths share one decoder.
 */
#ifndef ZMLX_CUDA_INTERNAL_CUH
#define ZMLX_CUDA_INTERNAL_CUH

/* core.h is C: pull the C++-sensitive system headers in first so that the
 * extern "C" block below only re-includes them as no-ops. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "backend.h"
#include "quant/quant.h"
}
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

/* ------------------------------------------------------------ state */

/* A device buffer that only grows. Buffers replaced by a larger one are kept
 * until destroy: a captured graph may still point at them. */
typedef struct zcu_buf {
    void *p;
    size_t bytes;
    struct zcu_buf *older;
} zcu_buf;

enum { ZCU_ATT_COUNTERS = 1 << 16 };
/* The fused argmax of qmm_argmax: up to ZCU_AMAX_TOK tokens, each with
 * ZCU_AMAX_SLOTS words its blocks' candidates spread over (one warp reduces
 * them), then a block count: ZCU_AMAX_WORDS zeroed words in all. */
enum { ZCU_AMAX_TOK = 8, ZCU_AMAX_SLOTS = 32, ZCU_AMAX_WORDS = ZCU_AMAX_TOK * ZCU_AMAX_SLOTS + 1 };

enum { ZCU_SCRATCH = 4 };
typedef struct zcu_state {
    int device;
    cudaStream_t stream;
    int sm_count;
    size_t l2_bytes;
    int capturing;
    int *err_flag;      /* device int: set by kernels that detect bad data (NaN logits) */
    zcu_buf scratch[ZCU_SCRATCH]; /* [0]: expert sort lists, [1]: y of the large-M combine, [2]: attention
                                     partials, [3]: a q/k/v part (run_qkv_parts) */
    unsigned *att_counters; /* ZCU_ATT_COUNTERS zeroed ints: attention chunk counters (each
                               returns to 0 when its last block is done) */
    unsigned long long *amax; /* ZCU_AMAX_WORDS zeroed words (back to 0 after each qmm_argmax) */
} zcu_state;

static inline zcu_state *zcu_state_of(zmlx_ctx *c) { return (zcu_state *)c->backend_state; }

/* A failed CUDA call as a status (allocation failures are OOM). */
static inline zmlx_status zcu_status(cudaError_t e) {
    if (e == cudaSuccess) return ZMLX_OK;
    return e == cudaErrorMemoryAllocation ? ZMLX_ERR_OOM : ZMLX_ERR_DEVICE;
}
#define ZCU_TRY(call) \
    do { cudaError_t e_ = (call); if (e_ != cudaSuccess) return zcu_status(e_); } while (0)
/* after a kernel launch */
#define ZCU_LAUNCHED() ZCU_TRY(cudaGetLastError())

/* ------------------------------------ programmatic dependent launch */

#ifdef ZMLX_CUDA_TRACE
/* The trace build (cmake -DZMLX_CUDA_TRACE=ON): thread 0 of every block
 * stamps %globaltimer when it reaches zcu_pdl_entry and when its wait
 * returns (the previous kernel has completed), one record per block, while
 * tracing is on; the record's slot (an atomic, taken after the release is
 * read) is kept in shared memory, so the kernel's phase marks
 * (zcu_trace_mark) are plain stores into it. Without relocatable device code
 * every translation unit has its own buffer (static), each registered with
 * backend_cuda.cu at load, which turns tracing on and off around a graph
 * replay and reads them back. */
enum { ZCU_TRACE_MAX = 1 << 17, ZCU_TRACE_MARKS = 6 };
struct zcu_trace_rec {
    unsigned long long entry, wait, mark[ZCU_TRACE_MARKS]; /* mark[id - 1]; 0: not reached */
};
static __device__ int zcu_trace_on;
static __device__ unsigned zcu_trace_n;
static __device__ zcu_trace_rec zcu_trace_buf[ZCU_TRACE_MAX];
static __shared__ unsigned zcu_trace_slot; /* the block's record; ZCU_TRACE_MAX: none (tracing off) */
int zcu_trace_register(const void *on, const void *n, const void *buf);
static const int zcu_trace_registered = zcu_trace_register(&zcu_trace_on, &zcu_trace_n, zcu_trace_buf);
/* the thread that stamps for its block */
__device__ __forceinline__ bool zcu_trace_thread0() { return threadIdx.x + threadIdx.y + threadIdx.z == 0; }
__device__ __forceinline__ unsigned long long zcu_globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory"); /* not moved past memory operations */
    return t;
}
#endif

/* Trace build: thread 0 of the block stamps the time as mark id (1 ..
 * ZCU_TRACE_MARKS: a phase's end inside a kernel, after its zcu_pdl_entry);
 * the timeline gives each mark's median and latest time over the kernel's
 * blocks. A no-op otherwise. */
__device__ __forceinline__ void zcu_trace_mark(unsigned id) {
#ifdef ZMLX_CUDA_TRACE
    if (zcu_trace_thread0() && zcu_trace_slot < ZCU_TRACE_MAX && id - 1u < (unsigned)ZCU_TRACE_MARKS)
        zcu_trace_buf[zcu_trace_slot].mark[id - 1] = zcu_globaltimer();
#else
    (void)id;
#endif
}

/* Kernels are launched with programmatic stream serialisation (Hopper's PDL):
 * the stream's next kernel (also inside a graph captured from the stream) is
 * launched while the current one runs, so its launch latency and block
 * scheduling overlap our work instead of following it. The price is
 * zcu_pdl_entry() in every kernel before its first read of anything an
 * earlier kernel may have written (only weight prefetches come before it):
 * it waits until the previous grid has completed and its writes are visible,
 * then lets the next grid launch. Every block of every kernel waits before it
 * can finish, so completion stays transitive (kernel n+2 never overtakes
 * kernel n) and at most one grid is launched ahead. Hence a kernel may read
 * before its wait what no kernel writes (weights: the dense MMV kernels load
 * their first batch so) and what the kernel two back or earlier wrote, as it
 * is launched only after its predecessor's blocks have passed their waits
 * (attention_step's k_attn copies the cache rows of earlier steps so).
 * For A/B runs: ZMLX_NO_PDL=1 launches everything plainly (the waits are then
 * no-ops), ZMLX_PDL=<mask> picks the families (ZCU_PDL_*; default all). */
__device__ __forceinline__ void zcu_pdl_entry() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifdef ZMLX_CUDA_TRACE
    const unsigned long long entry = zcu_globaltimer();
#endif
    asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory");
#ifdef ZMLX_CUDA_TRACE
    if (zcu_trace_thread0()) { /* the slot kept for the marks, so they need not read zcu_trace_on */
        unsigned i = ZCU_TRACE_MAX;
        if (zcu_trace_on) {
            const unsigned long long release = zcu_globaltimer(); /* before the slot's atomic, not after */
            i = atomicAdd(&zcu_trace_n, 1u);
            if (i < ZCU_TRACE_MAX) zcu_trace_buf[i] = {entry, release, {}};
        }
        zcu_trace_slot = i;
    }
#endif
#endif
}

/* Token-count thresholds set by measurement (src/cuda/NOTES.md) that the
 * environment may override, so a benchmark can sweep them (the knobs are
 * listed where they are used: qmm_impl.cuh, attn_cuda.cu). name's value (a
 * positive integer, else dflt), read into *v on the first call (-1: not read
 * yet). */
static inline int env_tokens(int *v, const char *name, int dflt) {
    if (*v < 0) {
        const char *s = getenv(name);
        const int x = s ? atoi(s) : 0;
        *v = x > 0 ? x : dflt;
    }
    return *v;
}
/* fn(): the threshold in environment variable name, read on the first call */
#define ENV_TOKENS_KNOB(fn, name, dflt) \
    static int fn(void) { \
        static int v = -1; \
        return env_tokens(&v, name, dflt); \
    }

enum { ZCU_PDL_QMM = 1, ZCU_PDL_OPS = 2, ZCU_PDL_ATTN = 4 }; /* kernel families */

/* Pull bytes [0, bytes) at p into L2, the caller being thread i of n that
 * share the range (it takes 128-byte lines i, i + n, ...). Issued before
 * zcu_pdl_entry() for data no earlier kernel writes (weights), so the fetch
 * overlaps the previous kernel. A hint only: results never depend on it. */
__device__ __forceinline__ void zcu_prefetch_l2(const void *p, int64_t bytes, int64_t i, int64_t n) {
    for (int64_t off = i * 128; off < bytes; off += n * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)p + off));
}
int zcu_pdl_enabled(unsigned fam); /* whether family fam launches with PDL (env read once) */

/* k<<<grid, block, shm, st>>>(args...) with the PDL attribute, in thread-block
 * clusters of `cluster` blocks along x when cluster > 1; the launch error is
 * also left for ZCU_LAUNCHED(). */
template <typename... P, typename... A>
static inline cudaError_t zcu_launch_cluster(unsigned fam, unsigned cluster, void (*k)(P...), dim3 grid, dim3 block,
                                             size_t shm, cudaStream_t st, A... args) {
    cudaLaunchAttribute at[2];
    unsigned n = 0;
    if (zcu_pdl_enabled(fam)) {
        at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cluster > 1) {
        at[n].id = cudaLaunchAttributeClusterDimension;
        at[n].val.clusterDim.x = cluster;
        at[n].val.clusterDim.y = 1;
        at[n++].val.clusterDim.z = 1;
    }
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = shm;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = n;
    return cudaLaunchKernelEx(&cfg, k, args...);
}
template <typename... P, typename... A>
static inline cudaError_t zcu_launch(unsigned fam, void (*k)(P...), dim3 grid, dim3 block, size_t shm,
                                     cudaStream_t st, A... args) {
    return zcu_launch_cluster(fam, 1, k, grid, block, shm, st, args...);
}

/* Grow scratch slot i to at least `bytes`; *out gets the buffer. */
zmlx_status zcu_scratch(zmlx_ctx *c, int i, size_t bytes, void **out);

/* ------------------------------------------------------------ dtypes */

/* Activations in T (0 = f32, 1 = f16, 2 = bf16: the zmlx_dtype values). */
template <int T> struct tty;
template <> struct tty<ZMLX_F32> { typedef float t; };
template <> struct tty<ZMLX_F16> { typedef __half t; };
template <> struct tty<ZMLX_BF16> { typedef __nv_bfloat16 t; };

__device__ __forceinline__ float zcu_ld(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float zcu_ld(const __half *p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float zcu_ld(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
__device__ __forceinline__ void zcu_st(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void zcu_st(__half *p, int64_t i, float v) { p[i] = __float2half_rn(v); }
__device__ __forceinline__ void zcu_st(__nv_bfloat16 *p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}
/* round_T as an f32 value */
__device__ __forceinline__ float zcu_round(const float *, float v) { return v; }
__device__ __forceinline__ float zcu_round(const __half *, float v) {
    return __half2float(__float2half_rn(v));
}
__device__ __forceinline__ float zcu_round(const __nv_bfloat16 *, float v) {
    return __bfloat162float(__float2bfloat16_rn(v));
}

/* the shared-memory address of p, for the PTX instructions that take one */
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes from global src to the shared-memory address dst, in flight until
 * a wait; the copies issued since the last commit as one group; until at
 * most N of this thread's groups are in flight. */
__device__ __forceinline__ void cp_async16(unsigned dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* d += a·b on the tensor cores, one m16n8k16 tile of 16-bit T with f32
 * accumulation (a: the row-major 16x16 A fragment, b0/b1: the col-major B
 * fragment), and two f32 values packed as T pairs for such fragments. */
template <typename TT> struct mma_op;
template <> struct mma_op<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
template <> struct mma_op<__half> {
    static __device__ __forceinline__ void run(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

__device__ __forceinline__ uint32_t pack2(__nv_bfloat16 *, float a, float b) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *(uint32_t *)&v;
}
__device__ __forceinline__ uint32_t pack2(__half *, float a, float b) {
    __half2 v = __floats2half2_rn(a, b);
    return *(uint32_t *)&v;
}

/* Dispatch a runtime dtype T onto a template functor call F<TT>(args...). */
#define ZCU_DISPATCH_T(T, F, ...)                                           \
    ((T) == ZMLX_F32   ? F<float>(__VA_ARGS__)                               \
     : (T) == ZMLX_F16 ? F<__half>(__VA_ARGS__)                              \
                       : F<__nv_bfloat16>(__VA_ARGS__))

/* ------------------------------------------------------------ argmax */

/* Float order as unsigned order, -0 folded into +0 (equal values give equal
 * keys); no finite or infinite value maps to 0. */
__device__ __forceinline__ uint32_t okey(float v) {
    const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
/* An argmax candidate (value v at index i < 2^31) as one word: v's key (0
 * for NaN) above the complement of i. The largest word is then the lowest
 * index of the largest value, NaN never beats a number, and a row of NaN
 * gives index 0 (zr_argmax's rule); every candidate is > 0, and the max of
 * words does not depend on the order they are taken in. */
__device__ __forceinline__ unsigned long long amax_word(float v, uint32_t i) {
    return (unsigned long long)(v == v ? okey(v) : 0u) << 32 | (uint32_t)~i;
}
__device__ __forceinline__ int32_t amax_index(unsigned long long w) { return (int32_t)~(uint32_t)w; }
__device__ __forceinline__ unsigned long long amax_max(unsigned long long a, unsigned long long b) {
    return a > b ? a : b;
}
/* the warp's largest word, in every lane */
__device__ __forceinline__ unsigned long long amax_warp(unsigned long long v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = amax_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ------------------------------------------------------- activations */

/* zr_sigmoid and zr_act of src/cpu/ref_act.c, one f32 op at a time in the
 * same order (-fmad=false: nothing contracts). */
__device__ __forceinline__ float zcu_sigmoid(float x) {
    if (x >= 0.0f) return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
    float e = expf(x);
    return __fdiv_rn(e, __fadd_rn(1.0f, e));
}

__device__ __forceinline__ float zcu_act(int act, float g, float u) {
    if (act == ZMLX_ACT_GEGLU) {
        float g3 = __fmul_rn(__fmul_rn(g, g), g);
        float t = tanhf(__fmul_rn(0.7978845608f, __fadd_rn(g, __fmul_rn(0.044715f, g3))));
        return __fmul_rn(__fmul_rn(__fmul_rn(0.5f, g), __fadd_rn(1.0f, t)), u);
    }
    if (act == ZMLX_ACT_SWIGLU_OAI) {
        if (g > 7.0f) g = 7.0f;
        if (u > 7.0f) u = 7.0f;
        if (u < -7.0f) u = -7.0f;
        return __fmul_rn(__fmul_rn(g, zcu_sigmoid(__fmul_rn(1.702f, g))), __fadd_rn(u, 1.0f));
    }
    return __fmul_rn(__fmul_rn(g, zcu_sigmoid(g)), u);
}

/* The one combine step of every CUDA path: acc + w*y, product rounded first. */
__device__ __forceinline__ float zcu_combine_step(float acc, float w, float y) {
    return __fadd_rn(acc, __fmul_rn(w, y));
}

/* ------------------------------------------------- quantized decoding */

/* Everything a kernel needs to read one quantized matrix. Row r of expert e
 * starts at w + (e*rows + r)*row_bytes; its scales at (e*rows + r)*gpr. */
typedef struct zcu_qw {
    const uint8_t *w;
    const void *scales;
    const void *biases;
    int64_t E, rows, cols, row_bytes, gpr;
    int mode, bits, gs, scale_t;
    int gs_lg; /* log2(gs): group sizes are powers of two, and a shift is far
                  cheaper than the 64-bit division it replaces */
    float gfac; /* nvfp4 global factor global_scale/(448*6), or 1 */
} zcu_qw;

static inline zcu_qw zcu_qw_of(const zmlx_qweight *W) {
    zcu_qw q;
    q.w = (const uint8_t *)W->w;
    q.scales = W->scales;
    q.biases = W->biases;
    q.E = W->E;
    q.rows = W->transpose ? W->N : W->K;
    q.cols = W->transpose ? W->K : W->N;
    q.row_bytes = q.cols * W->bits / 8;
    q.gpr = q.cols / W->group_size;
    q.mode = (int)W->mode;
    q.bits = W->bits;
    q.gs = W->group_size;
    q.gs_lg = __builtin_ctz((unsigned)W->group_size);
    q.scale_t = (int)W->scale_dtype;
    q.gfac = (W->mode == ZMLX_QMODE_NVFP4 && W->global_scale != 0.0f)
                 ? W->global_scale / (448.0f * 6.0f) : 1.0f;
    return q;
}

/* expert id clamped into [0, E): ids are range-checked only on the host, so a
 * bad device id must not read out of bounds */
__device__ __forceinline__ int64_t zcu_expert(const int32_t *idx, int64_t i, int64_t E) {
    if (!idx) return 0;
    int64_t e = idx[i];
    return e < 0 ? 0 : (e >= E ? E - 1 : e);
}

__device__ __forceinline__ float zcu_e8m0(uint32_t b) {
    if (b == 0) return __int_as_float(0x00400000);
    if (b == 255) return __int_as_float(0x7f800000);
    return __int_as_float((int)(b << 23));
}
/* MLX's e4m3 decode: (b&0x7f)<<7 read as f16, times 256 (0x7f -> 480) */
__device__ __forceinline__ float zcu_e4m3(uint32_t b) {
    float v = __fmul_rn(__half2float(__ushort_as_half((unsigned short)((b & 0x7fu) << 7))), 256.0f);
    return (b & 0x80u) ? -v : v;
}
/* E2M1: (code&7)<<9 read as f16 is value * 2^-14 (normal and subnormal alike) */
__device__ __forceinline__ float zcu_fp4(uint32_t c) {
    float v = __fmul_rn(__half2float(__ushort_as_half((unsigned short)((c & 7u) << 9))), 16384.0f);
    return (c & 8u) ? -v : v;
}
/* exact small unsigned integer to float without the (slow) I2F: 2^23 + q */
__device__ __forceinline__ float zcu_u2f(uint32_t q) {
    return __fsub_rn(__uint_as_float(0x4b000000u | q), 8388608.0f);
}

/* Scale (and bias) of group g of matrix q (already including gfac). */
__device__ __forceinline__ float zcu_ldscale(const zcu_qw &q, const void *p, int64_t g) {
    switch (q.scale_t) {
    case ZMLX_F32: return ((const float *)p)[g];
    case ZMLX_F16: return __half2float(((const __half *)p)[g]);
    default: return __bfloat162float(((const __nv_bfloat16 *)p)[g]);
    }
}
__device__ __forceinline__ void zcu_group(const zcu_qw &q, int64_t g, float &s, float &b) {
    if (q.mode == ZMLX_QMODE_AFFINE) {
        s = zcu_ldscale(q, q.scales, g);
        b = zcu_ldscale(q, q.biases, g);
        return;
    }
    uint32_t byte = __ldg((const uint8_t *)q.scales + g);
    b = 0.0f;
    if (q.mode == ZMLX_QMODE_NVFP4) s = __fmul_rn(zcu_e4m3(byte), q.gfac);
    else s = zcu_e8m0(byte);
}

/* Load the NW words of one chunk (16-byte loads when aligned; weights are
 * streamed once, so they skip L1). */
template <int NW>
__device__ __forceinline__ void zcu_ldchunk(const uint8_t *p, uint32_t (&w)[NW]) {
    if (NW % 4 == 0 && ((uintptr_t)p & 15) == 0) {
#pragma unroll
        for (int i = 0; i < NW / 4; i++) {
            uint4 v = __ldg((const uint4 *)p + i);
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
    } else if (NW % 2 == 0 && ((uintptr_t)p & 7) == 0) {
#pragma unroll
        for (int i = 0; i < NW / 2; i++) {
            uint2 v = __ldg((const uint2 *)p + i);
            w[2 * i] = v.x; w[2 * i + 1] = v.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < NW; i++) w[i] = __ldg((const uint32_t *)p + i);
    }
}

/* Code of element j (compile-time after unrolling) of a chunk. */
template <int BITS, int NW>
__device__ __forceinline__ uint32_t zcu_code(const uint32_t (&w)[NW], int j) {
    const int bit = j * BITS, wi = bit >> 5, sh = bit & 31;
    uint32_t v = w[wi] >> sh;
    if (sh + BITS > 32) v |= w[wi + 1] << (32 - sh);
    return v & ((1u << BITS) - 1u);
}

/* Element value before scaling: affine q, fp4 / fp8 element. */
template <int MODE, int BITS>
__device__ __forceinline__ float zcu_elem(uint32_t c) {
    if (MODE == ZMLX_QMODE_AFFINE) return zcu_u2f(c);
    if (MODE == ZMLX_QMODE_MXFP8) return zcu_e4m3(c);
    return zcu_fp4(c);
}

/* Elements of a chunk that share one scale: a chunk lies inside one group,
 * except nvfp4 (groups of 16) where a 32-chunk holds two. */
#define ZCU_SUB(MODE, CH) ((MODE) == ZMLX_QMODE_NVFP4 ? 16 : (CH))

/* Dequantized values of one chunk of CH elements starting at column col0 of
 * row `row` (absolute row index e*rows + r): out[j] = s*q + b (affine, no
 * FMA) or elem*s. Used by the tensor-core tiles and the embedding lookup. */
template <int MODE, int BITS, int CH>
__device__ __forceinline__ void zcu_dequant_chunk(const zcu_qw &q, int64_t row, int64_t col0,
                                                  float (&out)[CH]) {
    constexpr int NW = CH * BITS / 32, SUB = ZCU_SUB(MODE, CH);
    uint32_t w[NW];
    zcu_ldchunk<NW>(q.w + row * q.row_bytes + col0 * BITS / 8, w);
#pragma unroll
    for (int g0 = 0; g0 < CH; g0 += SUB) {
        float s, b;
        zcu_group(q, row * q.gpr + ((col0 + g0) >> q.gs_lg), s, b);
#pragma unroll
        for (int j = g0; j < g0 + SUB; j++) {
            float v = zcu_elem<MODE, BITS>(zcu_code<BITS, NW>(w, j));
            out[j] = MODE == ZMLX_QMODE_AFFINE ? __fadd_rn(__fmul_rn(s, v), b) : __fmul_rn(v, s);
        }
    }
}

/* Dispatch (mode, bits) onto F<MODE, BITS>(args...) — every valid format. */
#define ZCU_DISPATCH_FMT(q, F, ...)                                                   \
    ((q).mode == ZMLX_QMODE_MXFP4   ? F<ZMLX_QMODE_MXFP4, 4>(__VA_ARGS__)              \
     : (q).mode == ZMLX_QMODE_NVFP4 ? F<ZMLX_QMODE_NVFP4, 4>(__VA_ARGS__)              \
     : (q).mode == ZMLX_QMODE_MXFP8 ? F<ZMLX_QMODE_MXFP8, 8>(__VA_ARGS__)              \
     : (q).bits == 2                ? F<ZMLX_QMODE_AFFINE, 2>(__VA_ARGS__)             \
     : (q).bits == 3                ? F<ZMLX_QMODE_AFFINE, 3>(__VA_ARGS__)             \
     : (q).bits == 4                ? F<ZMLX_QMODE_AFFINE, 4>(__VA_ARGS__)             \
     : (q).bits == 5                ? F<ZMLX_QMODE_AFFINE, 5>(__VA_ARGS__)             \
     : (q).bits == 6                ? F<ZMLX_QMODE_AFFINE, 6>(__VA_ARGS__)             \
                                    : F<ZMLX_QMODE_AFFINE, 8>(__VA_ARGS__))

/* ------------------------------------------------------ entry points */

/* One expert-matmul call (qmm_cuda.cu packs it; qmm_<type>.cu runs it).
 * x: the activation input (h for the combines, y for moe_combine, g for
 * glu_act); n_tok doubles as the element count of glu_act and the row count
 * of embed_lookup. */
typedef enum {
    ZCU_OP_QMM,
    ZCU_OP_SWIGLU,
    ZCU_OP_QMM_COMBINE,
    ZCU_OP_COMBINE,
    ZCU_OP_GLU,
    ZCU_OP_EMBED,
    ZCU_OP_QMM_ARGMAX,
    ZCU_OP_QKV_STEP,
    ZCU_OP_QKV_PARTS
} zcu_op;
typedef struct zcu_qcall {
    zcu_op op;
    zmlx_dtype T;
    const void *x, *u;
    int64_t n_tok, D;
    int x_per_slot, k, act;
    const zmlx_qweight *Wa, *Wb;
    const int32_t *idx;
    const float *w;
    void *y;
    int32_t *idx_out; /* qmm_argmax: the argmax of each row of y */
    /* qkv_step, qkv_parts: attention_step's y = x·Waᵀ (y: the packed q/k/v rows) */
    const zmlx_attn_step_params *sp;
    const int32_t *pos;
    void *kc, *vc;
} zcu_qcall;
zmlx_status zcu_qmm_run_f32(zmlx_ctx *, const zcu_qcall &);
zmlx_status zcu_qmm_run_f16(zmlx_ctx *, const zcu_qcall &);
zmlx_status zcu_qmm_run_bf16(zmlx_ctx *, const zcu_qcall &);

extern "C" {
zmlx_status zcu_gather_qmm(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                           int x_per_slot, const zmlx_qweight *W, const int32_t *idx, int k,
                           void *y);
zmlx_status zcu_gather_qmm_swiglu(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                                  const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                  const int32_t *idx, int k, zmlx_act act, void *h);
zmlx_status zcu_glu_act(zmlx_ctx *, zmlx_dtype T, zmlx_act act, const void *g, const void *u,
                        int64_t n, void *h);
zmlx_status zcu_gather_qmm_combine(zmlx_ctx *, zmlx_dtype T, const void *h, int64_t n_tok,
                                   const zmlx_qweight *Wd, const int32_t *idx, int k,
                                   const float *w, void *out);
zmlx_status zcu_moe_combine(zmlx_ctx *, zmlx_dtype T, const void *y, const float *w,
                            int64_t n_tok, int k, int64_t D, void *out);
zmlx_status zcu_embed_lookup(zmlx_ctx *, zmlx_dtype T, const zmlx_qweight *table,
                             const int32_t *ids, int64_t n, void *out);
zmlx_status zcu_add_rms_norm(zmlx_ctx *, zmlx_dtype T, const void *x, const void *residual,
                             const void *weight, int64_t n_rows, int64_t D, float eps,
                             void *r_out, void *y_out);
zmlx_status zcu_add(zmlx_ctx *, zmlx_dtype T, const void *a, const void *b, int64_t n, void *out);
zmlx_status zcu_rms_norm(zmlx_ctx *, zmlx_dtype T, const void *x, const void *weight,
                         int64_t n_rows, int64_t D, float eps, void *y);
zmlx_status zcu_softmax(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                        void *y);
zmlx_status zcu_moe_route(zmlx_ctx *, const zmlx_router_params *p, zmlx_dtype T,
                          const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out);
zmlx_status zcu_rope(zmlx_ctx *, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                     int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0);
zmlx_status zcu_attention_decode(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T,
                                 const void *q, const void *k_cache, const void *v_cache,
                                 int64_t n_ctx, void *out);
zmlx_status zcu_attention_prefill(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                  int64_t n_tok, int64_t pos, const void *k_cache, const void *v_cache,
                                  void *out);
zmlx_status zcu_attention_step(zmlx_ctx *, const zmlx_attn_step_params *p, zmlx_dtype T, void *qkv,
                               int64_t n_tok, const int32_t *pos, void *k_cache, void *v_cache,
                               void *out);
zmlx_status zcu_argmax(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                       int32_t *idx);
zmlx_status zcu_i32_add(zmlx_ctx *, int32_t *x, int64_t n, int32_t delta);
zmlx_status zcu_short_conv(zmlx_ctx *, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                           const void *w, void *state, void *y);
zmlx_status zcu_qmm_argmax(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok, const zmlx_qweight *W,
                           void *y, int32_t *idx);
/* attention_step's projection qkv = p->x·p->projᵀ and its prep (q/k norms,
 * rope, cache append) in one kernel where that kernel serves the call
 * (qmm_impl.cuh, k_mmv_qkv); else ZMLX_ERR_UNSUPPORTED with nothing
 * launched. */
zmlx_status zcu_qkv_step(zmlx_ctx *, zmlx_dtype T, const zmlx_attn_step_params *p, void *qkv, int64_t n_tok,
                         const int32_t *pos, void *k_cache, void *v_cache);
/* attention_step's projection alone, as one matmul per part (q, k, v rows)
 * where a part takes another kernel family than the packed matrix
 * (qmm_impl.cuh run_qkv_parts); else ZMLX_ERR_UNSUPPORTED with nothing
 * launched. */
zmlx_status zcu_qkv_parts(zmlx_ctx *, zmlx_dtype T, const zmlx_attn_step_params *p, void *qkv, int64_t n_tok);
}

#endif
