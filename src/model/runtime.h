/*
 * runtime.h — the model runtime's running side: the patch plan (which fused
 * primitives a session uses), the session (KV cache, scratch, device copies of
 * the weights) and the forward pass (forward.c: qwen3_moe and lfm2_moe).
 *
 * The public API is in include/zmlx.h (section "session"); this header is
 * internal to src/model/.
 */
#ifndef ZMLX_RUNTIME_H
#define ZMLX_RUNTIME_H

#include "model/model.h"

/* =================================================================== internal */

/* One layer's weights as the forward uses them (host views, or device copies
 * on CUDA). An attention layer has q/k/v/o and the caches, a short-conv one
 * (lfm2_moe) conv_in/conv_out, conv_w and its state. gate/up/down are the
 * routed experts of a MoE layer or the dense MLP of a dense one; router is
 * unused (E = 0) in dense layers. Norm and conv weights are in the
 * activation dtype T. */
typedef struct zr_layer {
    int is_attn;
    zmlx_qweight q, k, v, o, router, gate, up, down;
    zmlx_qweight conv_in, conv_out; /* [3D, D], [D, D]                     */
    const void *conv_w;             /* [D, conv_L] in T                     */
    void *conv_state;               /* [conv_L - 1, D] in T                 */
    const float *expert_bias;       /* [E] f32 selection bias, or NULL      */
    /* q, k and v stacked into one [Hq·hd + 2·Hkv·hd, D] matrix (has_qkv: the
     * three share a format); q, k and v are then row views into it */
    zmlx_qweight qkv;
    int has_qkv;
    const void *in_norm, *post_norm, *q_norm, *k_norm;
    int is_moe;
    void *kc, *vc; /* [Hkv, cap, hd] in T */
} zr_layer;

/* Dimensions and constants of the forward. */
typedef struct zr_dims {
    int64_t L, D, H, Hkv, hd, E, k, I, Idense, V;
    float eps, theta, attn_scale;
    int norm_topk;
    int sigmoid_router; /* lfm2_moe: sigmoid scores, selection bias, route_scale */
    float route_scale;
    int64_t conv_L;     /* lfm2_moe: the short conv's kernel length; 0 otherwise */
} zr_dims;

/* Scratch rows for up to max_batch tokens, all in backend memory. */
typedef struct zr_scratch {
    void *x;        /* [nb, D]        residual stream                        */
    void *a;        /* [nb, D]        normed input of attention / MLP        */
    void *q;        /* [nb, H*hd]                                            */
    void *k, *v;    /* [nb, Hkv*hd]                                          */
    void *att;      /* [nb, H*hd]     attention output                       */
    void *o;        /* [nb, D]        o_proj output (pending residual add)   */
    void *y;        /* [nb, D]        MLP output (pending residual add)      */
    void *rl;       /* [nb, E]        router logits                          */
    int32_t *idx;   /* [nb, k]                                               */
    float *w;       /* [nb, k]                                               */
    void *g, *u;    /* [nb, k, Imax]  unfused gate/up projections            */
    void *h;        /* [nb, k, Imax]  activation                             */
    void *yk;       /* [nb, k, D]     unfused per-expert down projections    */
    void *xl;       /* [D]            final normed last row                  */
    void *logits;   /* [V]            in T                                   */
    int32_t *ids;   /* [nb]           token ids (device copy on CUDA)        */
    void *qkv;      /* [nb, (H + 2·Hkv)·hd] packed projection                */
    int32_t *pos;   /* [1]            position of the next token (the forward
                                      advances it: graph replays need no upload) */
    int32_t *tok;   /* [1]            argmax of the last logits, and the input
                                      token of a graph step                   */
    void *bcx;      /* [nb, 3·D]      short-conv in_proj output (conv models) */
    void *cy;       /* [nb, D]        short-conv output                       */
} zr_scratch;

/* Parts of the forward (zr_forward's mask; profiling replays parts). */
enum {
    ZR_SEC_ATTN = 1,  /* per layer: input norm, attention or short conv, o_proj */
    ZR_SEC_MLP = 2,   /* per layer: post-attention norm, router, experts / MLP  */
    ZR_SEC_HEAD = 4,  /* final norm, LM head, argmax                            */
    ZR_SEC_REST = 8,  /* embedding, position advance                            */
    ZR_SEC_ALL = 15,
};

struct zmlx_session {
    const zmlx_model *m;
    zmlx_ctx *ctx;
    int on_device;      /* ctx memory is CUDA device memory                 */
    zmlx_dtype T;       /* activation dtype (the embedding's scale dtype)   */
    zmlx_patch_plan patch;
    zr_dims d;
    int64_t cap, nb, pos;
    zmlx_qweight embed, head;
    const void *final_norm;
    zr_layer *layers;
    void *arena;        /* backend memory: weight copies (CUDA), converted norms */
    void *kv;           /* backend memory: the attention layers' K and V
                           caches, then the conv layers' states             */
    void *conv_states;  /* inside kv: every conv layer's state, contiguous  */
    size_t conv_bytes;
    int conv_stale;     /* the states must be zeroed before the next feed   */
    void *scr_mem;      /* backend memory: zr_scratch                       */
    size_t mem_bytes;
    zr_scratch sc;
    void *logits_T_host; /* [V] in T (CUDA: download target)                */
    float *logits;       /* [V] f32 host                                     */
    int have_logits;     /* the last forward succeeded: sc.logits/tok are its */
    int logits_fetched;  /* s->logits holds them                              */
    int32_t argmax;
    int pos_synced;      /* sc.pos == s->pos                                 */
    int tok_synced;      /* sc.tok == argmax                                 */
    int use_graph;       /* steps replay `graph` (CUDA, attention switch)    */
    zmlx_graph *graph;   /* one decode step, captured at the first graph step */
};

/* Issue the ops of n (1..nb) tokens whose ids are in backend memory at
 * positions sc.pos[0].. through the model (forward.c): afterwards
 * sc.logits holds the last token's logits, sc.tok their argmax and sc.pos has
 * advanced by n. Only the parts in `sections` (ZR_SEC_*) are issued. Nothing
 * is copied to or from the host, so the whole call can be captured as a
 * graph. */
zmlx_status zr_forward(zmlx_session *s, const int32_t *ids, int64_t n, unsigned sections,
                       char *err, size_t errlen);

#endif /* ZMLX_RUNTIME_H */
