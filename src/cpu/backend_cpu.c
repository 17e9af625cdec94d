/*
 * backend_cpu.c — the CPU backend table. The MoE-path entries are the
 * optimised kernels (cpu_qmm.c, cpu_elementwise.c), which pick their ISA
 * (AVX2 or portable) at run time per weight format, and the attention step
 * (cpu_attn.c, the reference's bits); the rest are the scalar reference
 * kernels.
 */
#include "cpu/cpu_kern.h"
#include "cpu/ref.h"

const zmlx_backend zmlx_backend_cpu = {
    .name = "cpu",
    .gather_qmm = zcpu_gather_qmm,
    .gather_qmm_swiglu = zcpu_gather_qmm_swiglu,
    .glu_act = zcpu_glu_act,
    .gather_qmm_combine = zcpu_gather_qmm_combine,
    .moe_combine = zcpu_moe_combine,
    .add_rms_norm = zcpu_add_rms_norm,
    .add = zcpu_add,
    .rms_norm = zcpu_rms_norm,
    .softmax = zr_softmax,
    .moe_route = zcpu_moe_route,
    .rope = zr_rope,
    .attention_decode = zcpu_attention_decode,
    .embed_lookup = zr_embed_lookup,
    .kv_append = zr_kv_append,
    .short_conv = zr_short_conv,
    .attention_step = zr_attention_step,
    .argmax = zr_argmax,
    .i32_add = zr_i32_add,
    .mem_alloc = zh_mem_alloc,
    .mem_free = zh_mem_free,
    .upload = zh_copy,
    .download = zh_copy,
    .sync = zh_sync,
    .measure_bandwidth = zh_measure_bandwidth,
    .destroy = NULL,
};
