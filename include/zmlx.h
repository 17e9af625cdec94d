/*
 * zmlx.h — the one public header of zmlx.
 *
 * zmlx runs quantized Mixture-of-Experts models stored in MLX format on x86-64
 * CPUs and NVIDIA GPUs. This header declares status codes, dtypes, the
 * quantized-weight view, quantization, the primitives (fused and unfused MoE
 * pieces plus what a decode step needs) and the execution context.
 *
 * Conventions
 * - Every fallible call returns zmlx_status; zmlx_status_str() names it.
 *   Calls that parse user files also take `char *err, size_t errlen` and
 *   write a sentence naming the file / tensor / key and what was wrong.
 * - The library never exits, aborts or prints for recoverable errors.
 * - Every _free/_close accepts NULL.
 * - "T" is the activation dtype (ZMLX_F32, ZMLX_F16 or ZMLX_BF16). Activations
 *   are passed as `void *` in T; accumulation is always f32. round_T is
 *   round-to-nearest-even into T.
 * - Shapes are written row-major, innermost last: x[n_tok, K] means n_tok
 *   contiguous rows of K elements.
 */
#ifndef ZMLX_H
#define ZMLX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZMLX_VERSION_MAJOR 0
#define ZMLX_VERSION_MINOR 1
#define ZMLX_VERSION_PATCH 0
#define ZMLX_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------ status */

typedef enum zmlx_status {
    ZMLX_OK = 0,
    ZMLX_ERR_INVALID_ARG,  /* NULL pointer, bad enum, inconsistent sizes     */
    ZMLX_ERR_UNSUPPORTED,  /* valid request this build/backend cannot do     */
    ZMLX_ERR_OOM,          /* an allocation failed                           */
    ZMLX_ERR_IO,           /* open/read/mmap failed                          */
    ZMLX_ERR_FORMAT,       /* malformed file or text (JSON, safetensors ...) */
    ZMLX_ERR_SHAPE,        /* tensor shape or dtype does not match           */
    ZMLX_ERR_RANGE,        /* index or value out of range (k > E, id >= V)   */
    ZMLX_ERR_DEVICE,       /* a CUDA call failed                             */
    ZMLX_ERR_NO_DEVICE,    /* no usable GPU (or built without CUDA)          */
    ZMLX_STATUS_COUNT_
} zmlx_status;

/* A static string naming the status ("ok", "invalid argument", ...). Never NULL. */
const char *zmlx_status_str(zmlx_status s);

const char *zmlx_version(void);

/* ------------------------------------------------------------------- dtypes */

typedef enum zmlx_dtype {
    ZMLX_F32 = 0,
    ZMLX_F16,
    ZMLX_BF16,
    ZMLX_U8,
    ZMLX_U32,
    ZMLX_I32,
    ZMLX_I64,
    ZMLX_DTYPE_COUNT_
} zmlx_dtype;

/* Bytes per element; 0 for an invalid dtype. */
size_t zmlx_dtype_size(zmlx_dtype t);
/* "f32", "f16", "bf16", "u8", "u32", "i32", "i64"; "?" for an invalid one. */
const char *zmlx_dtype_name(zmlx_dtype t);
/* 1 for f32/f16/bf16 (valid activation dtypes T). */
int zmlx_dtype_is_float(zmlx_dtype t);

/* Scalar conversions, round-to-nearest-even; NaN stays NaN (quiet), Inf and
 * subnormals are exact where representable. */
uint16_t zmlx_f32_to_bf16(float f);
float    zmlx_bf16_to_f32(uint16_t h);
uint16_t zmlx_f32_to_f16(float f);
float    zmlx_f16_to_f32(uint16_t h);

/* Bulk conversion between float dtypes (f32/f16/bf16) of n elements. */
zmlx_status zmlx_convert(zmlx_dtype dst_t, void *dst, zmlx_dtype src_t,
                         const void *src, size_t n);

/* ------------------------------------------------------------ quantization */

typedef enum zmlx_qmode {
    ZMLX_QMODE_AFFINE = 0, /* bits 2,3,4,5,6,8; group 32,64,128; float scale+bias */
    ZMLX_QMODE_MXFP4,      /* bits 4, group 32, E8M0 uint8 scales, FP4 E2M1     */
    ZMLX_QMODE_MXFP8,      /* bits 8, group 32, E8M0 uint8 scales, FP8 E4M3     */
    ZMLX_QMODE_NVFP4,      /* bits 4, group 16, E4M3 uint8 scales (+global)     */
    ZMLX_QMODE_COUNT_
} zmlx_qmode;

/* "affine", "mxfp4", "mxfp8", "nvfp4" and back. */
const char *zmlx_qmode_name(zmlx_qmode m);
zmlx_status zmlx_qmode_parse(const char *name, zmlx_qmode *out);

/*
 * A quantized weight: a view, it owns nothing.
 *
 * Logical matrix per expert e: out-features N by in-features K.
 *  transpose = 1 (the nn.Linear layout, what MoE experts use):
 *      stored [E, N, K] and quantized along K (groups run along K);
 *      w      : uint32 words, [E, N, K*bits/32]
 *      scales : [E, N, K/group_size] in scale_dtype
 *  transpose = 0: stored [E, K, N] and quantized along N;
 *      w [E, K, N*bits/32], scales [E, K, N/group_size].
 * biases: same shape and dtype as scales, affine only (NULL for fp modes).
 * Packing: each stored row is a little-endian LSB-first bit stream; element j
 * occupies bits [j*bits, j*bits+bits) of its row (FORMATS.md A.5).
 * global_scale: nvfp4 only; 0 means "none" (factor 1).
 * on_device: 0 = host memory, 1 = CUDA device memory. Device weights are
 * constants to the calls that read them: the CUDA backend may start reading
 * them before the previous call on the context has finished (write them by
 * upload, or sync the context after writing them with a kernel).
 */
typedef struct zmlx_qweight {
    zmlx_qmode mode;
    int bits;
    int group_size;
    int transpose;
    int64_t E;
    int64_t N;
    int64_t K;
    const void *w;
    const void *scales;
    const void *biases;
    zmlx_dtype scale_dtype;
    float global_scale;
    int on_device;
} zmlx_qweight;

/* Checks mode/bits/group/dtype/shape rules (FORMATS.md A.1-A.2), non-NULL
 * pointers and their alignment (w: 4 bytes, as MLX's uint32 words; scales and
 * biases: their dtype's size). Returns ZMLX_OK or a status; fills err if given. */
zmlx_status zmlx_qweight_check(const zmlx_qweight *w, char *err, size_t errlen);

/* Byte sizes of one stored matrix with `rows` rows of `cols` quantized
 * elements: packed words, and scales (= biases) array. 0 on bad arguments. */
size_t zmlx_quant_packed_bytes(int bits, int64_t rows, int64_t cols);
size_t zmlx_quant_scales_count(int group_size, int64_t rows, int64_t cols);

/* Which MLX affine quantizer to follow (FORMATS.md A.3). They differ only in
 * the group max (GPU: max(0, max(group))) and the rounding of ties. */
typedef enum zmlx_affine_variant {
    ZMLX_AFFINE_GPU = 0, /* Metal/CUDA kernels: wmax starts at 0, round half away (default;
                            published mlx-community files were made this way) */
    ZMLX_AFFINE_CPU      /* MLX CPU / graph fallback: true max, ties to even */
} zmlx_affine_variant;

typedef struct zmlx_quant_opts {
    zmlx_affine_variant affine_variant; /* default ZMLX_AFFINE_GPU       */
    float global_scale;                 /* nvfp4 only; 0 = none          */
} zmlx_quant_opts;

/*
 * Quantize src[rows, cols] (src_t ∈ f32/f16/bf16) along cols.
 * w_out     : uint32 [rows, cols*bits/32]
 * scales_out: [rows, cols/group_size], scale_t (affine: a float dtype, usually
 *             src_t; fp modes: must be ZMLX_U8)
 * biases_out: same as scales (affine), must be NULL for fp modes.
 * opts may be NULL (defaults).
 * Non-finite input: affine returns ZMLX_ERR_RANGE for a group holding NaN/Inf
 * (or whose range overflows f32; earlier rows are written, the rest of the
 * output is unspecified); fp modes never fail on data (NaN elements encode as
 * E2M1 code 7, an mx group with NaN gets scale byte 255, E4M3 saturates to
 * ±448 = 0x7E).
 */
zmlx_status zmlx_quantize(zmlx_qmode mode, int bits, int group_size,
                          zmlx_dtype src_t, const void *src, int64_t rows, int64_t cols,
                          zmlx_dtype scale_t, void *w_out, void *scales_out, void *biases_out,
                          const zmlx_quant_opts *opts);

/* Dequantize every stored row of expert e of w into dst [rows, cols] in dst_t
 * (host memory only). For transpose=1 that is [N, K]; for 0, [K, N]. */
zmlx_status zmlx_dequantize(const zmlx_qweight *w, int64_t e, zmlx_dtype dst_t, void *dst);

/* -------------------------------------------------------------- context */

typedef enum zmlx_backend_kind {
    ZMLX_BACKEND_CPU_REF = 0, /* scalar reference kernels, one thread          */
    ZMLX_BACKEND_CPU,         /* optimised CPU kernels (falls back to the ref) */
    ZMLX_BACKEND_CUDA
} zmlx_backend_kind;

typedef struct zmlx_ctx zmlx_ctx;

typedef struct zmlx_ctx_opts {
    zmlx_backend_kind backend; /* default ZMLX_BACKEND_CPU                    */
    int n_threads;             /* CPU threads, 0 = all online cores           */
    int device;                /* CUDA device ordinal                         */
} zmlx_ctx_opts;

void zmlx_ctx_opts_default(zmlx_ctx_opts *o);
/* opts may be NULL (defaults). */
zmlx_status zmlx_ctx_create(const zmlx_ctx_opts *opts, zmlx_ctx **out, char *err, size_t errlen);
void zmlx_ctx_free(zmlx_ctx *ctx);
zmlx_backend_kind zmlx_ctx_backend(const zmlx_ctx *ctx);
/* 1 if this build has the CUDA backend and a GPU is visible. */
int zmlx_cuda_available(void);

/* Memory of the context's backend: host memory (64-byte aligned) for the CPU
 * backends, device memory for CUDA. ctx may be NULL (host). */
zmlx_status zmlx_mem_alloc(zmlx_ctx *ctx, size_t bytes, void **out);
void zmlx_mem_free(zmlx_ctx *ctx, void *p);
/* Copies between host memory and the context's memory (a memcpy on CPU). */
zmlx_status zmlx_mem_upload(zmlx_ctx *ctx, void *dst, const void *host_src, size_t bytes);
zmlx_status zmlx_mem_download(zmlx_ctx *ctx, void *host_dst, const void *src, size_t bytes);
/* Wait until all work queued on the context is done (no-op on CPU). */
zmlx_status zmlx_ctx_sync(zmlx_ctx *ctx);

/* Measured memory bandwidth of the context's backend, in GB/s (1e9 B/s), over
 * buffers of `bytes` (0 = a default several times the last-level cache):
 * CPU: a STREAM-style read of the buffer by all worker threads (bytes read);
 * CUDA: a device-to-device copy (bytes read + bytes written). */
zmlx_status zmlx_measure_bandwidth(zmlx_ctx *ctx, size_t bytes, double *gbps);

/* Graphs: record the primitives issued on ctx between capture_begin and
 * capture_end (no work runs while capturing), then replay them with
 * graph_launch — the same pointers, the same arguments. CUDA only (CUDA
 * graphs); other backends return ZMLX_ERR_UNSUPPORTED from capture_begin. */
typedef struct zmlx_graph zmlx_graph;
zmlx_status zmlx_graph_capture_begin(zmlx_ctx *ctx);
zmlx_status zmlx_graph_capture_end(zmlx_ctx *ctx, zmlx_graph **out);
zmlx_status zmlx_graph_launch(zmlx_ctx *ctx, zmlx_graph *g);
void zmlx_graph_free(zmlx_ctx *ctx, zmlx_graph *g);

/* -------------------------------------------------------------- primitives
 *
 * ctx may be NULL: then the scalar reference kernels run on the calling
 * thread. All pointers address memory of the ctx's backend (host for CPU).
 * Expert ids idx are int32 and must lie in [0, E). Output buffers must not
 * alias inputs unless stated.
 */

typedef enum zmlx_act {
    ZMLX_ACT_SWIGLU = 0,    /* h = silu(g) * u                                  */
    ZMLX_ACT_GEGLU,         /* h = gelu_tanh(g) * u                             */
    ZMLX_ACT_SWIGLU_OAI,    /* GPT-OSS: g=min(g,7), u=clamp(u,-7,7),
                               h = g*sigmoid(1.702 g)*(u+1)                     */
    ZMLX_ACT_COUNT_
} zmlx_act;

/*
 * gather_qmm: y[t, j, :] = round_T( xrow(t,j) · deq(W[idx[t,j]])ᵀ )
 *   x      : [n_tok, K]     when x_per_slot == 0 (each token's row feeds its k slots)
 *            [n_tok, k, K]  when x_per_slot == 1 (one row per slot, e.g. down proj)
 *   idx    : int32 [n_tok, k]; NULL means the plain qmm: W->E must be 1, k must be 1
 *   y      : [n_tok, k, N]
 * W->transpose selects x·Wᵀ (stored [E,N,K]) or x·W (stored [E,K,N]).
 */
zmlx_status zmlx_gather_qmm(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_tok,
                            int x_per_slot, const zmlx_qweight *W, const int32_t *idx, int k,
                            void *y);

/*
 * gather_qmm_swiglu: for slot (t,j), e = idx[t,j]:
 *   g = round_T(x[t]·deq(Wg[e])ᵀ), u = round_T(x[t]·deq(Wu[e])ᵀ), h = round_T(act(g,u))
 *   x [n_tok, K], h [n_tok, k, N]. Wg and Wu must have equal shapes and formats.
 * Bit-identical to gather_qmm(Wg), gather_qmm(Wu) then zmlx_glu_act.
 */
zmlx_status zmlx_gather_qmm_swiglu(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_tok,
                                   const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                   const int32_t *idx, int k, zmlx_act act, void *h);

/* The unfused activation: h[i] = round_T(act(g[i], u[i])) for n elements. */
zmlx_status zmlx_glu_act(zmlx_ctx *ctx, zmlx_dtype T, zmlx_act act, const void *g,
                         const void *u, int64_t n, void *h);

/*
 * gather_qmm_combine:
 *   y_j = round_T(h[t,j]·deq(Wd[idx[t,j]])ᵀ)  (D = Wd->N outputs)
 *   out[t] = round_T( Σ_{j=0..k-1} w[t,j]·f32(y_j) )   in order j = 0..k-1,
 *            each product rounded to f32 before the add (no FMA).
 *   h [n_tok, k, N_in], w f32 [n_tok, k], out [n_tok, D].
 * Bit-identical to gather_qmm(x_per_slot=1) then zmlx_moe_combine.
 */
zmlx_status zmlx_gather_qmm_combine(zmlx_ctx *ctx, zmlx_dtype T, const void *h, int64_t n_tok,
                                    const zmlx_qweight *Wd, const int32_t *idx, int k,
                                    const float *w, void *out);

/* The unfused combine: out[t,:] = round_T(Σ_j w[t,j]·f32(y[t,j,:])), no FMA.
 * y [n_tok, k, D]. */
zmlx_status zmlx_moe_combine(zmlx_ctx *ctx, zmlx_dtype T, const void *y, const float *w,
                             int64_t n_tok, int k, int64_t D, void *out);

/*
 * add_rms_norm over rows of D:
 *   r = round_T(x + residual)
 *   y = round_T( weight · round_T( r · rsqrt(mean(r²) + eps) ) )
 * x, residual, r_out, y_out: [n_rows, D] in T; weight [D] in T.
 * r_out may alias x or residual.
 */
zmlx_status zmlx_add_rms_norm(zmlx_ctx *ctx, zmlx_dtype T, const void *x, const void *residual,
                              const void *weight, int64_t n_rows, int64_t D, float eps,
                              void *r_out, void *y_out);

/* Elementwise out[i] = round_T(a[i] + b[i]) for n elements — the unfused
 * half of add_rms_norm (then zmlx_rms_norm on out is bit-identical to
 * add_rms_norm's y). out may alias a or b. */
zmlx_status zmlx_add(zmlx_ctx *ctx, zmlx_dtype T, const void *a, const void *b, int64_t n,
                     void *out);

/* rms_norm: y = round_T(weight · round_T(x · rsqrt(mean(x²)+eps))); weight may
 * be NULL (no weight). y may alias x. */
zmlx_status zmlx_rms_norm(zmlx_ctx *ctx, zmlx_dtype T, const void *x, const void *weight,
                          int64_t n_rows, int64_t D, float eps, void *y);

/* Row softmax in f32 ("precise"), result rounded to T. y may alias x. */
zmlx_status zmlx_softmax(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_rows,
                         int64_t n, void *y);

/* --------------------------------------------------------------- routers */

typedef enum zmlx_router_kind {
    /* Qwen3: p = softmax_f32(logits); top-k of p; w = p[sel];
       if norm_topk: w /= Σw. */
    ZMLX_ROUTER_SOFTMAX_TOPK = 0,
    /* GLM-4.7 / LFM2: s = sigmoid_f32(logits); choose top-k of s + bias
       (bias may be NULL); w = s[sel]; if norm_topk: w /= (Σw + norm_eps);
       w *= scale. */
    ZMLX_ROUTER_SIGMOID_TOPK,
    /* DeepSeek-V3: as SIGMOID_TOPK, but experts are split into n_group groups;
       a group's score is the sum of its top-2 (s + bias); the topk_group best
       groups are kept and every expert of a dropped group gets selection score 0. */
    ZMLX_ROUTER_SIGMOID_GROUPED_TOPK,
    /* GPT-OSS: top-k of raw logits, then w = softmax_f32 over the k logits. */
    ZMLX_ROUTER_TOPK_SOFTMAX,
    ZMLX_ROUTER_COUNT_
} zmlx_router_kind;

typedef struct zmlx_router_params {
    zmlx_router_kind kind;
    int E;              /* experts                                  */
    int k;              /* selected per token, 1 <= k <= E          */
    int norm_topk;      /* renormalise selected weights             */
    float norm_eps;     /* added to Σw when renormalising (sigmoid kinds) */
    float scale;        /* multiplies final weights (sigmoid kinds; 0 means 1) */
    const float *bias;  /* [E] f32 selection-only bias, or NULL     */
    int n_group;        /* grouped kind only                        */
    int topk_group;     /* grouped kind only                        */
} zmlx_router_params;

/*
 * Route n_tok tokens: logits [n_tok, E] in T (f32 math) →
 *   idx_out int32 [n_tok, k], w_out f32 [n_tok, k].
 * Selected experts are listed by descending selection score; ties go to the
 * lower expert index. NaN logits give ZMLX_ERR_RANGE.
 */
zmlx_status zmlx_moe_route(zmlx_ctx *ctx, const zmlx_router_params *p, zmlx_dtype T,
                           const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out);

/* ------------------------------------------------------------------ rope */

typedef struct zmlx_rope_params {
    int head_dim;          /* features per head                                 */
    int rot_dims;          /* leading features that rotate (even, <= head_dim)  */
    int traditional;       /* 1: pairs (2i,2i+1); 0: pairs (i, i+rot_dims/2)    */
    float base;            /* theta                                             */
    float pos_scale;       /* position multiplier (linear scaling), 0 means 1   */
    const float *inv_freq; /* [rot_dims/2] custom inverse frequencies or NULL   */
    float mscale;          /* multiplies the rotated slice (YaRN), 0 means 1    */
} zmlx_rope_params;

/*
 * Rotate x [n_tok, n_heads, head_dim] in place; token t sits at position
 * pos[t] (if pos != NULL) else pos0 + t. Angles and rotation in f32, stored as T.
 */
zmlx_status zmlx_rope(zmlx_ctx *ctx, const zmlx_rope_params *p, zmlx_dtype T, void *x,
                      int64_t n_tok, int n_heads, const int32_t *pos, int64_t pos0);

typedef struct zmlx_yarn_params {
    int rot_dims;
    float base;
    float factor;
    int64_t original_max_pos;
    float beta_fast;      /* default 32 */
    float beta_slow;      /* default 1  */
    float mscale;         /* default 1  */
    float mscale_all_dim; /* default 0  */
} zmlx_yarn_params;

/* YaRN inverse frequencies [rot_dims/2] and the attention mscale factor
 * (mlx-lm YarnRoPE semantics), computed in double and rounded once to f32.
 * beta_fast, beta_slow and mscale of 0 mean their defaults (32, 1, 1);
 * mscale_all_dim is taken as given. */
zmlx_status zmlx_rope_yarn_freqs(const zmlx_yarn_params *p, float *inv_freq_out,
                                 float *mscale_out);

/* -------------------------------------------------------------- attention */

/*
 * One decode step of attention for a single query token.
 *   q      : [Hq, hd] in T (already normed/rotated)
 *   k_cache: [Hkv, cap, hd] in T;  v_cache: [Hkv, cap, hd_v] in T
 *   n_ctx  : valid cache positions 0..n_ctx-1 (the new token's k/v included)
 *   window : if > 0 only the last `window` positions are attended
 *   sinks  : [Hq] f32 per-head sink logits (an extra softmax column), or NULL
 *   out    : [Hq, hd_v] in T
 * Query head h uses kv head h / (Hq/Hkv). scores = scale·q·k in f32, softmax
 * in f32, output Σ p·v in f32, rounded to T.
 */
typedef struct zmlx_attn_params {
    int Hq, Hkv, hd, hd_v;
    int64_t cap;
    float scale;
    int64_t window;
    const float *sinks;
} zmlx_attn_params;

zmlx_status zmlx_attention_decode(zmlx_ctx *ctx, const zmlx_attn_params *p, zmlx_dtype T,
                                  const void *q, const void *k_cache, const void *v_cache,
                                  int64_t n_ctx, void *out);

/*
 * Attention of n_tok consecutive query tokens (a prefill chunk) over the
 * cache, which already holds their k and v:
 *   q   : [n_tok, Hq, hd] in T; token t sits at position pos + t and attends
 *         positions up to pos + t (the last `window` of them if window > 0)
 *   out : [n_tok, Hq, hd_v] in T, not overlapping q
 * pos < 0 or pos + n_tok > cap -> ZMLX_ERR_RANGE. The bits: per token those
 * of attention_decode with n_ctx = pos + t + 1, except where a backend
 * computes the tokens together: CUDA from 64 tokens (ZMLX_CUDA_FLASH_TOKENS
 * overrides the count) for 16-bit T with head dims 64 or 128 (hd == hd_v;
 * 16-byte aligned q and caches), one pass over
 * each row's positions with a running softmax (the same math, rounded
 * elsewhere, within the same tolerance of the exact result). Either way a
 * call repeats bit for bit, and attention_step gives the same bits.
 */
zmlx_status zmlx_attention_prefill(zmlx_ctx *ctx, const zmlx_attn_params *p, zmlx_dtype T,
                                   const void *q, int64_t n_tok, int64_t pos, const void *k_cache,
                                   const void *v_cache, void *out);

/*
 * Append n_tok tokens to one layer's K or V cache:
 *   rows  : [n_tok, H, hd] in T (the layout a k/v projection produces)
 *   cache : [H, cap, hd] in T (the layout zmlx_attention_decode reads)
 *   cache[h, pos + t, :] = rows[t, h, :]  for t < n_tok, h < H (a copy: bits unchanged).
 * pos < 0 or pos + n_tok > cap → ZMLX_ERR_RANGE. rows must not alias cache.
 */
zmlx_status zmlx_kv_append(zmlx_ctx *ctx, zmlx_dtype T, const void *rows, int64_t n_tok, int H,
                           int hd, void *cache, int64_t cap, int64_t pos);

/*
 * LFM2's short convolution (the core of its conv block, FORMATS.md C.3
 * steps 2-4) over n_tok consecutive tokens of one sequence:
 *   bcx   : [n_tok, 3·D] in T, the in_proj output: per token B, C, then xx
 *   w     : [D, L] in T, the depthwise kernel (MLX's [D, L, 1])
 *   state : [L-1, D] in T: Bx of the L-1 tokens before these (zeros at the
 *           start of a sequence); left holding the last L-1 rows of Bx
 *   y     : [n_tok, D] in T
 *   Bx[t]   = round_T(B[t] ⊙ xx[t])                   (Bx[t < 0]: state)
 *   c[t, d] = round_T(Σ_{j<L} w[d, j] · Bx[t - L + 1 + j, d])
 *             (f32, one FMA per j in increasing j from 0)
 *   y[t]    = round_T(C[t] ⊙ c[t])
 * Calls over consecutive pieces of a sequence give the bits of one call over
 * all of it. 2 <= L <= ZMLX_SHORT_CONV_MAX_L; y must not overlap bcx or state.
 */
#define ZMLX_SHORT_CONV_MAX_L 8
zmlx_status zmlx_short_conv(zmlx_ctx *ctx, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                            const void *w, void *state, void *y);

/*
 * The attention block of a decode step fused into one call, for n_tok
 * consecutive tokens whose first position is read from memory when the op
 * executes (so a captured graph replays at the current position):
 *   qkv    : [n_tok, Hq·hd + Hkv·hd + Hkv·hd_v] in T: per token the q heads,
 *            the k heads, then the v heads (one packed q/k/v projection).
 *            Modified in place (q and k normed and rotated).
 *   pos    : one int32 in the ctx's memory (device memory on CUDA): token t
 *            sits at position pos[0] + t.
 *   p->q_norm, p->k_norm : [hd] in T, per-head RMS norm weights (eps), or NULL
 *            for no norm; p->rope : the rotation of q and k, or NULL for none.
 *   caches : [Hkv, cap, hd] / [Hkv, cap, hd_v] in T; token t's k and v land
 *            at pos[0] + t.
 *   out    : [n_tok, Hq·hd_v] in T.
 *   p->proj, p->x : optional, the packed projection folded in. With proj
 *            (E = 1, transpose = 1, N = the qkv row above) qkv is output
 *            only: qkv = gather_qmm(x [n_tok, proj->K] in T, proj) first,
 *            the same bits as that call (the CUDA backend runs a decode
 *            step's projection and the norms, rope and cache append in one
 *            kernel). x must not overlap qkv.
 * The result is the same bits as, per token, rms_norm of its q heads and k
 * heads, rope at its position and kv_append of k and v, then
 * attention_prefill of the n_tok tokens at pos[0] (for one token:
 * attention_decode with n_ctx = pos[0] + 1), on the same ctx.
 * A position outside [0, cap - n_tok] gives ZMLX_ERR_RANGE (on CUDA at the
 * next zmlx_ctx_sync, with the caches untouched).
 */
typedef struct zmlx_attn_step_params {
    zmlx_attn_params attn;
    const zmlx_rope_params *rope;
    const void *q_norm, *k_norm;
    float eps;
    const zmlx_qweight *proj;
    const void *x;
} zmlx_attn_step_params;

zmlx_status zmlx_attention_step(zmlx_ctx *ctx, const zmlx_attn_step_params *p, zmlx_dtype T,
                                void *qkv, int64_t n_tok, const int32_t *pos, void *k_cache,
                                void *v_cache, void *out);

/* idx[r] = the index of the largest value of row r of x [n_rows, n] in T;
 * ties go to the lower index, NaN entries are ignored (a row of NaN gives 0).
 * idx is int32 in the ctx's memory. */
zmlx_status zmlx_argmax(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n,
                        int32_t *idx);

/* An output projection and the argmax of its rows in one call (the LM head
 * of a greedy decode): y = x·Wᵀ as zmlx_gather_qmm(ctx, T, x, n_tok, 0, W,
 * NULL, 1, y), and idx[t] = the argmax of row t of y as zmlx_argmax(ctx, T,
 * y, n_tok, W->N, idx). The same bits as those two calls; y is written too.
 * W: one matrix (E = 1), W->N <= INT32_MAX. */
zmlx_status zmlx_qmm_argmax(zmlx_ctx *ctx, zmlx_dtype T, const void *x, int64_t n_tok,
                            const zmlx_qweight *W, void *y, int32_t *idx);

/* x[i] += delta for i < n, int32 in the ctx's memory: a position counter a
 * captured graph advances by itself. */
zmlx_status zmlx_i32_add(zmlx_ctx *ctx, int32_t *x, int64_t n, int32_t delta);

/* ------------------------------------------------------------- embedding */

/* out[i, :] = round_T(deq(table row ids[i])) ; table: E=1, transpose=1,
 * N = vocab rows, K = hidden. out [n, K]. ids outside [0, N) → ZMLX_ERR_RANGE. */
zmlx_status zmlx_embed_lookup(zmlx_ctx *ctx, zmlx_dtype T, const zmlx_qweight *table,
                              const int32_t *ids, int64_t n, void *out);

/* ------------------------------------------------------------------ model */

typedef struct zmlx_model zmlx_model;

typedef struct zmlx_model_opts {
    int prefault; /* 1: read every mapped page once at open (first-touch cost paid
                     up front and measured in info.t_touch) */
} zmlx_model_opts;

void zmlx_model_opts_default(zmlx_model_opts *o);

/*
 * Open an MLX-format checkpoint directory: config.json (+ generation_config.json),
 * every `model*.safetensors` (sorted by name), model.safetensors.index.json when
 * present (cross-checked). Validates every tensor the architecture needs (dtype,
 * shape, quantization) before returning. Weights stay in the mapped files
 * (tensors whose bytes are misaligned for their dtype are the exception: their
 * file's data region is copied once into aligned memory, see info.copied_bytes).
 * opts may be NULL. Errors name the file and the tensor or key.
 */
zmlx_status zmlx_model_open(const char *dir, const zmlx_model_opts *opts, zmlx_model **out,
                            char *err, size_t errlen);
void zmlx_model_free(zmlx_model *m);

/* Weight categories for byte accounting and quantization summaries. */
typedef enum zmlx_wcat {
    ZMLX_WCAT_EMBED = 0,  /* token embedding                           */
    ZMLX_WCAT_ATTN,       /* q/k/v/o projections                       */
    ZMLX_WCAT_EXPERTS,    /* routed experts (switch_mlp)               */
    ZMLX_WCAT_DENSE_MLP,  /* dense SwiGLU MLP layers                   */
    ZMLX_WCAT_ROUTER,     /* MoE router (mlp.gate)                     */
    ZMLX_WCAT_NORM,       /* every RMSNorm weight                      */
    ZMLX_WCAT_LM_HEAD,    /* untied output projection                  */
    ZMLX_WCAT_COUNT_
} zmlx_wcat;
const char *zmlx_wcat_name(zmlx_wcat c); /* "embedding", "attention", ... */

#define ZMLX_MAX_EOS 8

typedef struct zmlx_model_info {
    const char *arch;          /* config model_type, e.g. "qwen3_moe"           */
    int n_layers, hidden;
    int n_heads, n_kv_heads, head_dim;
    int n_experts, top_k;      /* 0 experts: dense model                      */
    int moe_inter, dense_inter;
    int n_moe_layers;          /* layers with routed experts                   */
    int vocab;
    float rms_eps, rope_theta;
    int64_t max_pos;
    int tie_embeddings, norm_topk;
    int n_eos;
    int32_t eos[ZMLX_MAX_EOS];
    int n_files;
    int64_t n_tensors;
    uint64_t file_bytes;               /* sum of the safetensors file sizes       */
    uint64_t bytes[ZMLX_WCAT_COUNT_];  /* tensor bytes bound per category         */
    uint64_t copied_bytes;             /* bytes copied for alignment (0 normally) */
    double t_mmap, t_parse, t_bind;    /* open time split, seconds                */
    double t_touch;                    /* prefault time (opts.prefault), seconds  */
} zmlx_model_info;

void zmlx_model_get_info(const zmlx_model *m, zmlx_model_info *out);

/* One-line quantization summary of a category, e.g.
 * "affine 4-bit gs64 (bf16 scales)", "bf16 (float)", mixed formats joined by
 * ", " with counts. Writes "" for a category the model lacks. */
void zmlx_model_quant_summary(const zmlx_model *m, zmlx_wcat c, char *buf, size_t len);

/* ---------------------------------------------------------------- session */

/*
 * The patch plan: one switch per fused primitive. Off = the unfused
 * counterpart, built from the smaller public primitives.
 *   swiglu       gather_qmm_swiglu       vs gather_qmm(gate), gather_qmm(up), glu_act
 *   combine      gather_qmm_combine      vs gather_qmm(x_per_slot=1), moe_combine
 *   add_rms_norm add_rms_norm            vs add, rms_norm
 *   router       top-k of the logits, softmax over the k (ZMLX's fused top-k
 *                gating)                  vs softmax over all E, top-k, renormalise
 *   attention    one packed q/k/v projection and attention_step (a single
 *                CUDA graph per decode step on CUDA)
 *                                         vs q, k, v projections, rms_norm, rope,
 *                                            kv_append, attention_prefill
 *   lm_head      qmm_argmax              vs gather_qmm, argmax
 * swiglu, combine, add_rms_norm, attention and lm_head are bit-identical to their counterparts by
 * construction (DESIGN.md §4). router is equal in exact arithmetic (when the
 * model renormalises the top-k weights) but rounds differently: the routing
 * weights may differ in the last f32 bits. Models without norm_topk_prob
 * ignore the router switch.
 */
enum {
    ZMLX_PATCH_SWIGLU = 1u << 0,
    ZMLX_PATCH_COMBINE = 1u << 1,
    ZMLX_PATCH_ADD_RMS_NORM = 1u << 2,
    ZMLX_PATCH_ROUTER = 1u << 3,
    ZMLX_PATCH_ATTENTION = 1u << 4,
    ZMLX_PATCH_LM_HEAD = 1u << 5,
    ZMLX_PATCH_COUNT_ = 6,
    ZMLX_PATCH_NONE = 0,
    ZMLX_PATCH_ALL = (1u << ZMLX_PATCH_COUNT_) - 1,
    /* the switches that are bit-identical to their unfused counterparts */
    ZMLX_PATCH_EXACT = ZMLX_PATCH_SWIGLU | ZMLX_PATCH_COMBINE | ZMLX_PATCH_ADD_RMS_NORM | ZMLX_PATCH_ATTENTION |
                       ZMLX_PATCH_LM_HEAD,
};
typedef unsigned zmlx_patch_plan;

/* Name of switch i (0 <= i < ZMLX_PATCH_COUNT_): "swiglu", "combine",
 * "add_rms_norm", "router", "attention", "lm_head"; NULL otherwise. */
const char *zmlx_patch_switch_name(int i);

/*
 * Parse "none" | "exact" (ZMLX_PATCH_EXACT) | "all" | "auto" | a comma list of
 * switch names ("swiglu,combine"). "auto" sets *is_auto = 1 and *out = ZMLX_PATCH_NONE: the caller times the
 * switches (zmlx validate does); is_auto may be NULL only if "auto" is refused
 * then (ZMLX_ERR_INVALID_ARG). An unknown name gives ZMLX_ERR_INVALID_ARG with
 * a message that lists the known ones.
 */
zmlx_status zmlx_patch_parse(const char *s, zmlx_patch_plan *out, int *is_auto, char *err,
                             size_t errlen);

/* "none", "all" or the comma list of the switches set, in switch order
 * (parseable back). Returns buf (always NUL-terminated when len > 0). */
const char *zmlx_patch_to_string(zmlx_patch_plan p, char *buf, size_t len);

typedef struct zmlx_session zmlx_session;

typedef struct zmlx_session_opts {
    int64_t max_ctx;       /* KV cache positions; 0 = min(max_position_embeddings, 4096) */
    int64_t max_batch;     /* tokens per prefill chunk (scratch rows); 0 = 2048          */
    zmlx_patch_plan patch; /* default ZMLX_PATCH_NONE                                     */
} zmlx_session_opts;

void zmlx_session_opts_default(zmlx_session_opts *o);

/*
 * A decoding session over an opened model on a context: owns the KV cache,
 * every scratch buffer (all allocated here: the per-token loop allocates
 * nothing) and, on a CUDA context, the device copy of every weight (uploaded
 * once here). The model and the context must outlive the session.
 * Errors: ZMLX_ERR_UNSUPPORTED for weights the forward cannot run yet (a float
 * embedding table or float linears), ZMLX_ERR_OOM, ZMLX_ERR_DEVICE.
 */
zmlx_status zmlx_session_new(const zmlx_model *m, zmlx_ctx *ctx, const zmlx_session_opts *opts,
                             zmlx_session **out, char *err, size_t errlen);
void zmlx_session_free(zmlx_session *s);

/* Forget every cached position (the next token is position 0). */
void zmlx_session_reset(zmlx_session *s);

/* Change the patch plan of a live session (takes effect at the next call;
 * the cache stays valid: fused and unfused paths compute the same thing). */
void zmlx_session_set_patch(zmlx_session *s, zmlx_patch_plan p);
zmlx_patch_plan zmlx_session_patch(const zmlx_session *s);

/*
 * Feed n prompt tokens (n >= 1) in chunks of max_batch through the multi-token
 * kernel paths; afterwards zmlx_session_logits holds the last token's logits.
 * Tokens past the cache capacity: ZMLX_ERR_RANGE (nothing is fed). Token ids
 * outside [0, vocab): ZMLX_ERR_RANGE.
 */
zmlx_status zmlx_session_prefill(zmlx_session *s, const int32_t *ids, int64_t n, char *err,
                                 size_t errlen);
/* Feed one token; afterwards zmlx_session_logits holds its logits. */
zmlx_status zmlx_session_step(zmlx_session *s, int32_t id, char *err, size_t errlen);

/* Logits (f32 [vocab], host memory, owned by the session) of the last token
 * fed; NULL when there are none: before the first token, after
 * zmlx_session_reset, and after a prefill/step whose forward pass failed.
 * Fetched from the backend on the first call after each token (a greedy loop
 * that only reads the argmax never copies them). */
const float *zmlx_session_logits(zmlx_session *s);
/* argmax of those logits (zmlx_argmax: ties to the lower id, NaN ignored),
 * computed on the backend; -1 when there are none. */
int32_t zmlx_session_argmax(const zmlx_session *s);
/* Positions cached so far, the capacity, and the prefill chunk (max_batch
 * as the session took it: its default, at most the capacity). */
int64_t zmlx_session_pos(const zmlx_session *s);
int64_t zmlx_session_capacity(const zmlx_session *s);
int64_t zmlx_session_max_batch(const zmlx_session *s);
/* Bytes of backend memory the session holds (weights copies, cache, scratch). */
size_t zmlx_session_mem_bytes(const zmlx_session *s);
/* 1 when zmlx_session_step runs as one replayed CUDA graph (a CUDA context
 * and the attention switch on, ZMLX_NO_GRAPH unset), else 0. */
int zmlx_session_uses_graph(const zmlx_session *s);

/*
 * Time the next decode step without taking it: the whole step and its parts,
 * each captured alone as a CUDA graph and replayed `reps` times at the
 * current position (mean time per replay, after one untimed replay). attn:
 * the attention blocks (norm, projections, attention_step, o_proj) of every
 * layer; moe: the MLP blocks (norm, router, experts); head: final norm, LM
 * head, argmax; rest = step - the three.
 * Parts replayed alone overlap nothing, so they are upper bounds.
 * bytes: what the step reads at the current position (weights actually
 * used, the k routed experts per MoE layer, and the KV cache).
 * CUDA sessions that use the graph only (else ZMLX_ERR_UNSUPPORTED). The
 * session's position and cache are unchanged; the logits are recomputed.
 */
typedef struct zmlx_decode_profile {
    double step_us, attn_us, moe_us, head_us, rest_us;
    double bytes;
} zmlx_decode_profile;
zmlx_status zmlx_session_profile_decode(zmlx_session *s, int reps, zmlx_decode_profile *out,
                                        char *err, size_t errlen);

/* -------------------------------------------------------------- tokenizer
 *
 *
 * Text is UTF-8. Input that is not valid UTF-8 is first repaired the way
 * Rust's String::from_utf8_lossy / TextDecoder do (each maximal ill-formed
 * subpart becomes U+FFFD): HF tokenizers only ever see Rust strings, so this
 * gives the ids HF gives for the lossily decoded text. Decoded text is always
 * valid UTF-8: ids whose bytes do not form complete characters decode to
 * U+FFFD, as HF's decode does.
 *
 * Buffers: encode and decode APPEND to caller-owned growable buffers that
 * start zeroed ({0}) and are released with zmlx_ids_free / zmlx_buf_free.
 * A zmlx_tokenizer is read-only after open except for an internal word cache
 * guarded by a try-lock, so one handle may be shared between threads.
 * ====================================================================== */

typedef struct zmlx_tokenizer zmlx_tokenizer;

typedef struct zmlx_ids { int32_t *ids; size_t n, cap; } zmlx_ids;
typedef struct zmlx_buf { char *data; size_t len, cap; } zmlx_buf; /* data NUL-terminated once non-empty */
void zmlx_ids_free(zmlx_ids *v);
void zmlx_buf_free(zmlx_buf *b);

/* path: a tokenizer.json file, or a model directory holding tokenizer.json
 * (and, read when present: tokenizer_config.json, config.json,
 * generation_config.json for BOS/EOS ids and the chat template kind).
 * Errors: ZMLX_ERR_IO (cannot read), ZMLX_ERR_FORMAT (malformed JSON or
 * fields), ZMLX_ERR_UNSUPPORTED (a model / normalizer / pre-tokenizer /
 * decoder type or option this implementation does not handle; err names it). */
zmlx_status zmlx_tokenizer_open(const char *path, zmlx_tokenizer **out, char *err, size_t errlen);
void zmlx_tokenizer_free(zmlx_tokenizer *tok);

enum {
    ZMLX_TOK_ADD_SPECIAL = 1,  /* encode: add BOS/EOS as HF add_special_tokens=True does */
    ZMLX_TOK_SKIP_SPECIAL = 2, /* decode: drop special tokens (skip_special_tokens)      */
};

/* Encode text[0..len) and append the ids to *out. Added tokens (special or
 * not) occurring in the text are recognised, as HF does by default. */
zmlx_status zmlx_tokenizer_encode(zmlx_tokenizer *tok, const char *text, size_t len, int flags,
                                  zmlx_ids *out);
/* Decode ids and append the text to *out. An id outside [0, n_vocab) or with
 * no token gives ZMLX_ERR_RANGE (and appends nothing). */
zmlx_status zmlx_tokenizer_decode(const zmlx_tokenizer *tok, const int32_t *ids, size_t n, int flags,
                                  zmlx_buf *out);

/* Streaming decode for generation: each put appends the text that became
 * complete; bytes of an unfinished UTF-8 character are held back until the
 * next ids complete it (or show it to be ill-formed: then U+FFFD). flush
 * appends whatever is held (as U+FFFD) and resets. The concatenation of all
 * output equals zmlx_tokenizer_decode of all ids. */
typedef struct zmlx_tok_stream zmlx_tok_stream;
zmlx_status zmlx_tok_stream_new(const zmlx_tokenizer *tok, int flags, zmlx_tok_stream **out);
zmlx_status zmlx_tok_stream_put(zmlx_tok_stream *s, int32_t id, zmlx_buf *out);
zmlx_status zmlx_tok_stream_flush(zmlx_tok_stream *s, zmlx_buf *out);
void zmlx_tok_stream_free(zmlx_tok_stream *s);

/* Lookups. n_vocab: one past the largest id (model vocab and added tokens). */
int32_t zmlx_tokenizer_n_vocab(const zmlx_tokenizer *tok);
/* The id of the token whose text is s[0..len) (e.g. "<|im_end|>", " the");
 * ZMLX_ERR_RANGE when there is none. */
zmlx_status zmlx_tokenizer_token_id(const zmlx_tokenizer *tok, const char *s, size_t len, int32_t *id);
/* The raw bytes of one token (possibly part of a UTF-8 character), not
 * NUL-terminated; ZMLX_ERR_RANGE for an unknown id. */
zmlx_status zmlx_tokenizer_token_bytes(const zmlx_tokenizer *tok, int32_t id, const char **p, size_t *len);
/* 1 if id is an added token flagged special, else 0. */
int zmlx_tokenizer_is_special(const zmlx_tokenizer *tok, int32_t id);

/* Chat templates. The kind comes from tokenizer_config.json's chat_template
 * (or chat_template.jinja) and config.json's model_type. */
typedef enum zmlx_chat_kind {
    ZMLX_CHAT_NONE = 0, /* no known template: zmlx_chat_render gives ZMLX_ERR_UNSUPPORTED */
    ZMLX_CHAT_QWEN3,    /* ChatML with <think> handling and enable_thinking       */
    ZMLX_CHAT_GLM4,     /* [gMASK]<sop><|system|>..<|user|>..<|assistant|>        */
    ZMLX_CHAT_LFM2,     /* <|startoftext|> + ChatML                               */
    ZMLX_CHAT_HARMONY,  /* GPT-OSS: <|start|>role<|channel|>..<|message|>..<|end|> */
} zmlx_chat_kind;

typedef struct zmlx_tok_info {
    int32_t bos, pad;      /* -1 when absent */
    int32_t eos[8];        /* every id that ends generation, deduplicated */
    int n_eos;
    zmlx_chat_kind chat;
} zmlx_tok_info;
void zmlx_tokenizer_info(const zmlx_tokenizer *tok, zmlx_tok_info *info);

typedef struct zmlx_chat_msg {
    const char *role;      /* "system", "user", "assistant", "tool" (harmony: also "developer") */
    const char *content;
    const char *reasoning; /* optional: assistant reasoning (thinking) text, or NULL */
} zmlx_chat_msg;

typedef struct zmlx_chat_opts {
    int add_generation_prompt; /* end with the opening of an assistant turn        */
    int enable_thinking;       /* Qwen3 / GLM: 0 appends an empty think block        */
    const char *reasoning_effort; /* harmony: "low" | "medium" | "high" (NULL: medium) */
    const char *date;          /* harmony: "Current date:" text, e.g. "2025-06-28" (NULL: today, local time) */
} zmlx_chat_opts;

/* Render msgs as the model's chat template does and append the text to *out
 * (encode it with flags 0: the template writes BOS-like tokens itself).
 * Messages the template refuses give ZMLX_ERR_INVALID_ARG and append nothing
 * (harmony: a "tool" message, which needs a tool call this API cannot carry,
 * or channel tags inside an assistant's content or reasoning). */
zmlx_status zmlx_chat_render(const zmlx_tokenizer *tok, const zmlx_chat_msg *msgs, size_t n,
                             const zmlx_chat_opts *opts, zmlx_buf *out);

#ifdef __cplusplus
}
#endif
#endif /* ZMLX_H */
