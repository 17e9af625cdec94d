/*
 * cpu_attn.c — the CPU backend's single-token attention (attention_decode):
 * the reference's arithmetic (ref_attn.c) operation for operation, so the
 * same bits, made fast three ways:
 * - T is a compile-time constant (the reference converts every element
 *   through a switch on T);
 * - the scores of ATT_POS positions are computed together: ATT_POS
 *   independent chains over d, each in index order as the reference's one
 *   chain, whose additions otherwise wait on each other;
 * - the query heads are spread over the context's thread pool (each head is
 *   computed by one thread, so the thread count does not change the bits).
 * Scratch: per thread one f32 array of the attended positions (+1 for the
 * sink) and one of hd (the scaled query), allocated per call.
 */
#include "cpu/cpu_kern.h"
#include "cpu/ref.h"

#include <stdlib.h>

enum { ATT_POS = 8, ATT_DV = 64 }; /* positions per score block, output elements per pass over v */

typedef struct {
    const zmlx_attn_params *p;
    zmlx_dtype T;
    const void *q, *k, *v;
    int64_t lo, n; /* attended positions [lo, lo + n) */
    float *scratch;
    size_t per_thread; /* floats of scratch per thread: n + 1 + hd */
    void *out;
} attn_job;

/* out[o + e] = round_T(Σ_j p[j]·v[v0 + j·hd_v + e]) for e < nd, j in order
 * (nd a constant in the full passes, so the loop over e is vectorized) */
static inline __attribute__((always_inline)) void attn_pv(zmlx_dtype T, const attn_job *j, const float *pr,
                                                          int64_t v0, int nd, int64_t o) {
    float acc[ATT_DV];
    for (int e = 0; e < nd; e++) acc[e] = 0.0f;
    for (int64_t i = 0; i < j->n; i++) {
        const float pi = pr[i];
        for (int e = 0; e < nd; e++) acc[e] += pi * zc_load(T, j->v, v0 + i * j->p->hd_v + e);
    }
    for (int e = 0; e < nd; e++) zc_store(T, j->out, o + e, acc[e]);
}

/* sc[i + l] = Σ_d qs[d]·k[kb + (i + l)·hd + d] for l < np, each in d order
 * (np independent chains: a constant ATT_POS in the full blocks) */
static inline __attribute__((always_inline)) void attn_scores(zmlx_dtype T, const attn_job *j, const float *qs,
                                                              int64_t kb, int64_t i, int np, float *sc) {
    const int64_t hd = j->p->hd;
    float s[ATT_POS] = {0};
    for (int64_t d = 0; d < hd; d++)
        for (int l = 0; l < np; l++) s[l] += qs[d] * zc_load(T, j->k, kb + (i + l) * hd + d);
    for (int l = 0; l < np; l++) sc[i + l] = s[l];
}

/* Head h, as ref_attn.c: qs = scale·q; s_j = Σ_d qs[d]·k[j, d] in d order;
 * p = softmax([sink, s]); out[d] = round_T(Σ_j p_j·v[j, d]) in j order. */
static inline __attribute__((always_inline)) void attn_head(zmlx_dtype T, const attn_job *j, int h, float *sc) {
    const zmlx_attn_params *p = j->p;
    const int64_t n = j->n, off = p->sinks ? 1 : 0, hd = p->hd, hdv = p->hd_v;
    const int64_t g = h / (p->Hq / p->Hkv);
    float *qs = sc + n + 1;
    for (int64_t d = 0; d < hd; d++) qs[d] = p->scale * zc_load(T, j->q, h * hd + d);
    if (p->sinks) sc[0] = p->sinks[h];
    const int64_t kb = (g * p->cap + j->lo) * hd;
    int64_t i = 0;
    for (; i + ATT_POS <= n; i += ATT_POS) attn_scores(T, j, qs, kb, i, ATT_POS, sc + off);
    for (; i < n; i++) attn_scores(T, j, qs, kb, i, 1, sc + off);
    zr_softmax_f32(sc, n + off);
    /* ATT_DV output elements per pass: each takes the positions in order over
       one contiguous piece of every v row */
    const int64_t vb = (g * p->cap + j->lo) * hdv;
    for (int64_t d0 = 0; d0 < hdv; d0 += ATT_DV) {
        if (hdv - d0 >= ATT_DV)
            attn_pv(T, j, sc + off, vb + d0, ATT_DV, h * hdv + d0);
        else
            attn_pv(T, j, sc + off, vb + d0, (int)(hdv - d0), h * hdv + d0);
    }
}

/* query heads [b, e) on thread t's scratch */
static void attn_task(void *arg, int64_t b, int64_t e, int t) {
    attn_job *j = arg;
    float *sc = j->scratch + (size_t)t * j->per_thread;
    for (int64_t h = b; h < e; h++) switch (j->T) {
        case ZMLX_F32: attn_head(ZMLX_F32, j, (int)h, sc); break;
        case ZMLX_BF16: attn_head(ZMLX_BF16, j, (int)h, sc); break;
        default: attn_head(ZMLX_F16, j, (int)h, sc); break;
        }
}

zmlx_status zcpu_attention_decode(zmlx_ctx *c, const zmlx_attn_params *p, zmlx_dtype T, const void *q,
                                  const void *k_cache, const void *v_cache, int64_t n_ctx, void *out) {
    zc_pool *pool = c ? c->pool : NULL;
    const int64_t lo = zr_attn_first(p, n_ctx);
    attn_job j = {p, T, q, k_cache, v_cache, lo, n_ctx - lo, NULL, (size_t)(n_ctx - lo + 1 + p->hd), out};
    j.scratch = malloc(sizeof(float) * j.per_thread * (size_t)zc_pool_size(pool));
    if (!j.scratch) return ZMLX_ERR_OOM;
    zc_pool_run(pool, p->Hq, 1, attn_task, &j);
    free(j.scratch);
    return ZMLX_OK;
}
