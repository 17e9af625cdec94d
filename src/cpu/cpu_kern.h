/*
 * cpu_kern.h — internal interface of the optimised CPU kernels (cpu_*.c,
 * cpu_qmm_x86.h): the per-format quantized dot routine that gather_qmm,
 * gather_qmm_swiglu and gather_qmm_combine all share, the activation-row
 * preparation it expects, and the run-time ISA choice.
 *
 * Fidelity by construction: for a given weight format the three qmm entries
 * pick the same cq_kernel and call its `dot` on the same row blocks with the
 * same prepared x, so an output row's f32 value does not depend on which op,
 * how many tokens or how many threads produced it.
 */
#ifndef ZMLX_CPU_KERN_H
#define ZMLX_CPU_KERN_H

#include "backend.h"
#include "quant/quant.h"

/* Instruction sets the CPU kernels know, best last. AVX2 includes FMA, F16C
 * and BMI2; AVX512 is AVX2 plus AVX-512 F, DQ, BW, VL and VNNI (the same
 * results as AVX2 bit for bit, except the affine integer dots' 512-bit steps:
 * cpu_qmm_x86.h); AVX512_BF16 is AVX512 plus AVX512_BF16, for the bf16 dots
 * (T = bf16; the AVX-512 build, whose results it gives wherever they are
 * not taken). */
typedef enum cq_isa { CQ_ISA_SCALAR = 0, CQ_ISA_AVX2 = 1, CQ_ISA_AVX512 = 2, CQ_ISA_AVX512_BF16 = 3 } cq_isa;

/* The ISA the kernels use: by default the best this CPU supports, except
 * AVX512_BF16 on CPUs not made by AMD (AVX512 there: the bf16 dots measured
 * slower on a Sapphire Rapids, src/cpu/NOTES.md); the environment's
 * ZMLX_CPU_ISA (scalar, avx2, avx512 or avx512bf16; read once) names the
 * level to use instead, where the CPU has it, and caps what cq_isa_force
 * can reach (tests run every path with it, up to the best supported).
 * cq_isa_force returns the ISA now in effect, which is below the one asked
 * for where the CPU (or ZMLX_CPU_ISA) does not allow it. */
cq_isa cq_isa_active(void);
cq_isa cq_isa_force(cq_isa isa);
const char *cq_isa_name(cq_isa isa);

/* Integer-dot use (affine 4/8-bit and mxfp4, transpose = 1, AVX2): AUTO takes it for
 * T = bf16/f16 and keeps the f32 kernels for T = f32 (at CQ_ISA_AVX512_BF16,
 * T = bf16 takes the bf16 dots where cq_pick has them instead of either);
 * OFF never, ALL also for f32 (tests force each). cq_xint_force returns the
 * previous setting.
 * Pieces: each activation is held as one int16 (x ≈ sx·xi, error <= ~2^-16
 * of its group's max |x|) or two (x ≈ sx·(xi + 2^-15·xl), error <= ~2^-31 of
 * the group's max: below the f32 kernels' own rounding). The default is AUTO
 * with two pieces; the environment's ZMLX_CPU_INT_DOT=1 picks one piece
 * (faster, ~100x the x error), ZMLX_CPU_INT_DOT=0 the f32 kernels (OFF).
 * cq_xpieces_force returns the previous piece count. */
typedef enum cq_xint { CQ_XINT_AUTO = 0, CQ_XINT_OFF = 1, CQ_XINT_ALL = 2 } cq_xint;
cq_xint cq_xint_force(cq_xint mode);
cq_xint cq_xint_mode(void);
int cq_xpieces_force(int pieces);
int cq_xpieces(void);

/* How a kernel wants its activation rows prepared (cq_prep_x). */
typedef enum cq_xform {
    CQ_X_F32 = 0, /* f32 [K], natural order                                   */
    CQ_X_F32_L4,  /* f32 [K], AVX2 u32-lane order for 4-bit codes (see prep)  */
    CQ_X_F32_L8,  /* same for 8-bit codes                                     */
    CQ_X_I16_4,   /* int16 [K] + per-group scale; per 32 elements the 16 even
                     ones then the 16 odd ones (the nibble-unpack order)      */
    CQ_X_I16_8,   /* int16 [K] + per-group scale, natural order               */
    CQ_X_I16_4W,  /* as CQ_X_I16_4 per 64 elements: the 32 even, the 32 odd
                     (32 bytes of 4-bit codes in one 512-bit unpack)          */
    CQ_X_BF16_4Q  /* bf16 [K], x's own bits (T = bf16); per 128 elements
                     (a row's last 64 when K % 128 = 64) every fourth from
                     0, then from 1, 2, 3 (the 4-bit words' unpack order)   */
} cq_xform;

/* One prepared activation row. x ≈ xsc[g]·xi within group g for the I16
 * forms (|xi| <= 32767, |error| <= ~2^-16 of the group's max |x|), and
 * x ≈ xsc[g]·(xi + 2^-15·xl) with the second piece (|xl| <= ~16400, |error|
 * <= ~2^-31 of the max), stored right after xi (xl[i] = xi[K + i], the
 * layout cq_prep_x writes). xsc and xs have cq_gpad(K/gs) entries, zero past
 * K/gs (kernels read 8 at a time). */
typedef struct cq_xrow {
    const void *x;    /* f32 [K], int16 [K] (two pieces: [2K], xi then xl) or bf16 [K], in the kernel's order */
    const float *xsc; /* I16 forms: scale of each group's int16 values         */
    const float *xs;  /* affine transpose = 1: Σx of each group of the ORIGINAL row */
} cq_xrow;

/* groups rounded up to a multiple of 8 */
static inline int64_t cq_gpad(int64_t G) { return (G + 7) & ~(int64_t)7; }

/* Most activation rows one dot call takes (tokens sharing one weight decode). */
enum { CQ_MAXT = 4 };

/*
 * A dot routine computes, for rows [r0, r0+nr) of expert e of W and each of
 * the nx <= CQ_MAXT prepared rows x[t], the f32 value of x[t] · deq(row) into
 * out[t*nr + i]. nr <= block. For transpose = 1 a "row" is a stored row (an
 * output feature n); for transpose = 0 it is an output column. The value for
 * (t, i) does not depend on nx, nr or which other rows share the call.
 */
typedef void (*cq_dot_fn)(const zmlx_qweight *W, int64_t e, int64_t r0, int nr,
                          const cq_xrow *x, int nx, float *out);

typedef struct cq_kernel {
    cq_dot_fn dot;
    int block;      /* rows per dot call (a task is TASK_ROWS, cpu_qmm.c) */
    cq_xform xform; /* activation row preparation */
    int pieces;     /* I16 forms: int16 pieces per activation (1 or 2); else 0 */
} cq_kernel;

/* The kernel for W's format, activation dtype T and the active ISA / integer
 * mode (never NULL), for every run of a call alike: a slot's value never
 * depends on whether another slot of its call shares its expert, so a chunk
 * of tokens gives the bits of the same tokens one at a time; nor on the
 * thread count, or on the op (fused or unfused). (Shared runs once took the
 * f32 dots below the bf16 level, ~1.3-1.7x the integer dots' rate at 2-4
 * slots, at that price: src/cpu/NOTES.md.) */
const cq_kernel *cq_pick(const zmlx_qweight *W, zmlx_dtype T);

/* The x86 kernels (cpu_qmm_x86.h) of each build: NULL when the format/shape
 * has none; the two builds choose alike (same forms, same blocks). */
const cq_kernel *cq_pick_avx2(const zmlx_qweight *W, zmlx_dtype T);
const cq_kernel *cq_pick_avx512(const zmlx_qweight *W, zmlx_dtype T);

/* Whether activation form f is int16 per group (the integer dots: group
 * scales xsc, one or two pieces). */
static inline int cq_xform_int16(cq_xform f) { return f == CQ_X_I16_4 || f == CQ_X_I16_8 || f == CQ_X_I16_4W; }

/* Whether activation form f is x's own bf16 values (the bf16 dots). */
static inline int cq_xform_bf16(cq_xform f) { return f == CQ_X_BF16_4Q; }

/* Whether kernels of activation form f use Σx per group (cq_xrow.xs) for the
 * affine bias term: the integer, bf16 and portable dots; the x86 f32 dots
 * fold the bias into the dequantized weight. */
static inline int cq_xform_uses_xs(cq_xform f) { return f == CQ_X_F32 || cq_xform_int16(f) || cq_xform_bf16(f); }

/* Prepare one activation row of K elements in T into xbuf (K f32, K int16
 * and for two pieces K more: the second pieces, or K bf16; by kern->xform and
 * kern->pieces), xsc[K/gs] for the I16 forms, and, when xs != NULL,
 * xs[K/gs] = Σ x over each group (index order, from the original values). */
void cq_prep_x(const cq_kernel *kern, zmlx_dtype T, const void *x, int64_t K, int gs, void *xbuf,
               float *xsc, float *xs);

/* h[i] = act(g[i], u[i]) for the optimised CPU kernels' GLU (the fused
 * SwiGLU and glu_act both call it, so they give the same bits): SwiGLU and
 * SwiGLU-OAI in 8-lane vectors where the CPU has AVX2 (cq_act_avx2: zr_act's
 * operations with an exp of its own, within ~2 ulp; each lane's value
 * depends on its inputs alone), else and for GeGLU zr_act. */
void zcpu_act_f32(zmlx_act act, const float *g, const float *u, int64_t n, float *h);
void cq_act_avx2(zmlx_act act, const float *g, const float *u, int64_t n, float *h);

/* The CPU kernels (cpu_qmm.c, cpu_elementwise.c, cpu_attn.c) named in the table. */
zmlx_status zcpu_gather_qmm(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                            int x_per_slot, const zmlx_qweight *W, const int32_t *idx, int k,
                            void *y);
zmlx_status zcpu_gather_qmm_swiglu(zmlx_ctx *, zmlx_dtype T, const void *x, int64_t n_tok,
                                   const zmlx_qweight *Wg, const zmlx_qweight *Wu,
                                   const int32_t *idx, int k, zmlx_act act, void *h);
zmlx_status zcpu_gather_qmm_combine(zmlx_ctx *, zmlx_dtype T, const void *h, int64_t n_tok,
                                    const zmlx_qweight *Wd, const int32_t *idx, int k,
                                    const float *w, void *out);
zmlx_status zcpu_glu_act(zmlx_ctx *, zmlx_dtype T, zmlx_act act, const void *g, const void *u,
                         int64_t n, void *h);
zmlx_status zcpu_moe_combine(zmlx_ctx *, zmlx_dtype T, const void *y, const float *w,
                             int64_t n_tok, int k, int64_t D, void *out);
zmlx_status zcpu_add_rms_norm(zmlx_ctx *, zmlx_dtype T, const void *x, const void *residual,
                              const void *weight, int64_t n_rows, int64_t D, float eps,
                              void *r_out, void *y_out);
zmlx_status zcpu_add(zmlx_ctx *, zmlx_dtype T, const void *a, const void *b, int64_t n,
                     void *out);
zmlx_status zcpu_rms_norm(zmlx_ctx *, zmlx_dtype T, const void *x, const void *weight,
                          int64_t n_rows, int64_t D, float eps, void *y);
zmlx_status zcpu_attention_decode(zmlx_ctx *, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                  const void *k_cache, const void *v_cache, int64_t n_ctx, void *out);
zmlx_status zcpu_moe_route(zmlx_ctx *, const zmlx_router_params *p, zmlx_dtype T,
                           const void *logits, int64_t n_tok, int32_t *idx_out, float *w_out);

#endif
