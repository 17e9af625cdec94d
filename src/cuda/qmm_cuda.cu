/*
 * qmm_cuda.cu — the backend entries of the expert matmuls (gather_qmm,
 * gather_qmm_swiglu, glu_act, gather_qmm_combine, moe_combine,
 * embed_lookup, qmm_argmax; attention_step's projection with its prep,
 * qkv_step): each packs its arguments into a zcu_qcall and hands it to
 * the runner of its activation type (qmm_f32.cu / qmm_f16.cu / qmm_bf16.cu).
 */
#include "cuda/cuda_internal.cuh"

static zmlx_status run(zmlx_ctx *c, const zcu_qcall &q) {
    switch (q.T) {
    case ZMLX_F32: return zcu_qmm_run_f32(c, q);
    case ZMLX_F16: return zcu_qmm_run_f16(c, q);
    default: return zcu_qmm_run_bf16(c, q);
    }
}

static zcu_qcall call(zcu_op op, zmlx_dtype T) {
    zcu_qcall q;
    memset(&q, 0, sizeof q);
    q.op = op;
    q.T = T;
    return q;
}

extern "C" zmlx_status zcu_gather_qmm(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_tok,
                                      int x_per_slot, const zmlx_qweight *W, const int32_t *idx,
                                      int k, void *y) {
    zcu_qcall q = call(ZCU_OP_QMM, T);
    q.x = x; q.n_tok = n_tok; q.x_per_slot = x_per_slot; q.Wa = W; q.idx = idx; q.k = k; q.y = y;
    return run(c, q);
}

extern "C" zmlx_status zcu_gather_qmm_swiglu(zmlx_ctx *c, zmlx_dtype T, const void *x,
                                             int64_t n_tok, const zmlx_qweight *Wg,
                                             const zmlx_qweight *Wu, const int32_t *idx, int k,
                                             zmlx_act act, void *h) {
    zcu_qcall q = call(ZCU_OP_SWIGLU, T);
    q.x = x; q.n_tok = n_tok; q.Wa = Wg; q.Wb = Wu; q.idx = idx; q.k = k; q.act = (int)act; q.y = h;
    return run(c, q);
}

extern "C" zmlx_status zcu_glu_act(zmlx_ctx *c, zmlx_dtype T, zmlx_act act, const void *g,
                                   const void *u, int64_t n, void *h) {
    zcu_qcall q = call(ZCU_OP_GLU, T);
    q.act = (int)act; q.x = g; q.u = u; q.n_tok = n; q.y = h;
    return run(c, q);
}

extern "C" zmlx_status zcu_gather_qmm_combine(zmlx_ctx *c, zmlx_dtype T, const void *h,
                                              int64_t n_tok, const zmlx_qweight *Wd,
                                              const int32_t *idx, int k, const float *w,
                                              void *out) {
    zcu_qcall q = call(ZCU_OP_QMM_COMBINE, T);
    q.x = h; q.n_tok = n_tok; q.Wa = Wd; q.idx = idx; q.k = k; q.w = w; q.y = out;
    return run(c, q);
}

extern "C" zmlx_status zcu_moe_combine(zmlx_ctx *c, zmlx_dtype T, const void *y, const float *w,
                                       int64_t n_tok, int k, int64_t D, void *out) {
    zcu_qcall q = call(ZCU_OP_COMBINE, T);
    q.x = y; q.w = w; q.n_tok = n_tok; q.k = k; q.D = D; q.y = out;
    return run(c, q);
}

extern "C" zmlx_status zcu_embed_lookup(zmlx_ctx *c, zmlx_dtype T, const zmlx_qweight *table,
                                        const int32_t *ids, int64_t n, void *out) {
    zcu_qcall q = call(ZCU_OP_EMBED, T);
    q.Wa = table; q.idx = ids; q.n_tok = n; q.y = out;
    return run(c, q);
}

extern "C" zmlx_status zcu_qmm_argmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_tok,
                                      const zmlx_qweight *W, void *y, int32_t *idx) {
    zcu_qcall q = call(ZCU_OP_QMM_ARGMAX, T);
    q.x = x; q.n_tok = n_tok; q.Wa = W; q.y = y; q.idx_out = idx;
    return run(c, q);
}

extern "C" zmlx_status zcu_qkv_parts(zmlx_ctx *c, zmlx_dtype T, const zmlx_attn_step_params *p, void *qkv,
                                     int64_t n_tok) {
    zcu_qcall q = call(ZCU_OP_QKV_PARTS, T);
    q.x = p->x; q.n_tok = n_tok; q.Wa = p->proj; q.y = qkv; q.sp = p;
    return run(c, q);
}

extern "C" zmlx_status zcu_qkv_step(zmlx_ctx *c, zmlx_dtype T, const zmlx_attn_step_params *p, void *qkv,
                                    int64_t n_tok, const int32_t *pos, void *k_cache, void *v_cache) {
    zcu_qcall q = call(ZCU_OP_QKV_STEP, T);
    q.x = p->x; q.n_tok = n_tok; q.Wa = p->proj; q.y = qkv; q.sp = p; q.pos = pos; q.kc = k_cache; q.vc = v_cache;
    return run(c, q);
}
