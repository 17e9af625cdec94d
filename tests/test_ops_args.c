/*
 * test_ops_args.c — the error paths of every public primitive entry
 * (src/ops.c) with the specific status each must return, on each host
 * context (NULL = reference, a CPU_REF ctx, a CPU ctx); plus the context
 * calls, zmlx_mem_* on the host, zmlx_cuda_available() and the argument
 * checks of zmlx_rope_yarn_freqs (which validates itself).
 *
 * Valid calls here use n = 0 tokens/rows where the entry returns before any
 * kernel runs, except where a small real call shows the valid neighbour of an
 * error case is accepted.
 */
#include "harness.h"
#include "zmlx.h"

enum { INV = ZMLX_ERR_INVALID_ARG, RNG = ZMLX_ERR_RANGE };

/* A valid affine 4-bit gs32 weight: E=2 experts, N=4 out, K=32 in. */
static uint32_t g_w[2 * 4 * 4];
static float g_s[2 * 4], g_b[2 * 4];
static zmlx_qweight qw(int64_t E) {
    zmlx_qweight w = {ZMLX_QMODE_AFFINE, 4, 32, 1, E, 4, 32, g_w, g_s, g_b, ZMLX_F32, 0.0f, 0};
    return w;
}

static void test_ctx(void) {
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    CHECK_EQ_INT(o.backend, ZMLX_BACKEND_CPU);
    CHECK_EQ_INT(o.n_threads, 0);
    zmlx_ctx_opts_default(NULL);
    char err[128];
    zmlx_ctx *c = (zmlx_ctx *)&o; /* non-NULL: must be cleared on failure */
    CHECK_EQ_INT(zmlx_ctx_create(NULL, NULL, err, sizeof err), INV);
    o.n_threads = -1;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &c, err, sizeof err), INV);
    CHECK(c == NULL);
    zmlx_ctx_opts_default(&o);
    o.backend = (zmlx_backend_kind)77;
    err[0] = 0;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &c, err, sizeof err), INV);
    CHECK(c == NULL && err[0] != 0);
    o.backend = (zmlx_backend_kind)-1;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &c, NULL, 0), INV);
#ifndef ZMLX_HAVE_CUDA
    CHECK_EQ_INT(zmlx_cuda_available(), 0);
    o.backend = ZMLX_BACKEND_CUDA;
    err[0] = 0;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &c, err, sizeof err), ZMLX_ERR_NO_DEVICE);
    CHECK(c == NULL && err[0] != 0);
#else
    CHECK(zmlx_cuda_available() == 0 || zmlx_cuda_available() == 1);
#endif
    /* defaults (opts NULL) give the CPU backend */
    CHECK_EQ_INT(zmlx_ctx_create(NULL, &c, NULL, 0), ZMLX_OK);
    CHECK_EQ_INT(zmlx_ctx_backend(c), ZMLX_BACKEND_CPU);
    CHECK_EQ_INT(zmlx_ctx_sync(c), ZMLX_OK);
    zmlx_ctx_free(c);
    CHECK_EQ_INT(zmlx_ctx_backend(NULL), ZMLX_BACKEND_CPU_REF);
    zmlx_ctx_free(NULL);
}

static void test_mem(zmlx_ctx *c) {
    void *p = (void *)&p;
    CHECK_EQ_INT(zmlx_mem_alloc(c, 0, &p), INV);
    CHECK_EQ_INT(zmlx_mem_alloc(c, 16, NULL), INV);
    CHECK_EQ_INT(zmlx_mem_alloc(c, 1000, &p), ZMLX_OK);
    CHECK(p != NULL && ((uintptr_t)p & 63) == 0);
    unsigned char src[1000], back[1000];
    for (int i = 0; i < 1000; i++) src[i] = (unsigned char)(i * 7 + 3);
    memset(back, 0, sizeof back);
    CHECK_EQ_INT(zmlx_mem_upload(c, p, src, 1000), ZMLX_OK);
    CHECK_EQ_INT(zmlx_mem_download(c, back, p, 1000), ZMLX_OK);
    CHECK(memcmp(src, back, 1000) == 0);
    CHECK_EQ_INT(zmlx_mem_upload(c, NULL, src, 1), INV);
    CHECK_EQ_INT(zmlx_mem_upload(c, p, NULL, 1), INV);
    CHECK_EQ_INT(zmlx_mem_download(c, NULL, p, 1), INV);
    CHECK_EQ_INT(zmlx_mem_download(c, back, NULL, 1), INV);
    CHECK_EQ_INT(zmlx_mem_upload(c, NULL, NULL, 0), ZMLX_OK);
    CHECK_EQ_INT(zmlx_mem_download(c, NULL, NULL, 0), ZMLX_OK);
    zmlx_mem_free(c, p);
    zmlx_mem_free(c, NULL);
    CHECK_EQ_INT(zmlx_ctx_sync(c), ZMLX_OK);
    CHECK_EQ_INT(zmlx_measure_bandwidth(c, 1 << 20, NULL), INV);
}

static void test_gather(zmlx_ctx *c) {
    float x[2 * 2 * 32] = {0}, y[2 * 2 * 4], wt[4] = {0.5f, 0.5f, 0.5f, 0.5f}, h[2 * 2 * 4];
    zmlx_qweight W = qw(2), W1 = qw(1);
    int32_t ok[4] = {0, 1, 1, 0}, neg[4] = {0, -1, 1, 0}, big[4] = {0, 1, 2, 0};
    /* gather_qmm */
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_U8, x, 2, 0, &W, ok, 2, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, NULL, 2, 0, &W, ok, 2, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &W, ok, 2, NULL), INV);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, NULL, ok, 2, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, -1, 0, &W, ok, 2, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &W, ok, 0, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &W, NULL, 1, y), INV); /* E=2 needs idx */
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &W1, NULL, 2, y), INV); /* plain: k=1 */
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 1, 0, &W, ok, 3, y), RNG);   /* k > E */
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &W, neg, 2, y), RNG);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &W, big, 2, y), RNG);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 0, 0, &W, neg, 2, y), ZMLX_OK); /* no tokens */
    zmlx_qweight bad = W;
    bad.bits = 7;
    CHECK(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &bad, ok, 2, y) != ZMLX_OK);
    bad = W;
    bad.on_device = 1; /* device memory on a host context */
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, x, 2, 0, &bad, ok, 2, y), INV);
    /* gather_qmm_swiglu */
    zmlx_qweight Wu = qw(2), Wo = qw(2);
    Wo.bits = 8;
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 2, &W, &Wu, ok, 2, ZMLX_ACT_COUNT_, h), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 2, &W, &Wu, ok, 2, (zmlx_act)-1, h), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 2, &W, NULL, ok, 2, ZMLX_ACT_SWIGLU, h), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 2, &W, &Wu, ok, 2, ZMLX_ACT_SWIGLU, NULL), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_BF16, x, 2, &W, &Wo, ok, 2, ZMLX_ACT_SWIGLU, h), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 2, &W, &Wu, neg, 2, ZMLX_ACT_SWIGLU, h), RNG);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 2, &W, &Wu, big, 2, ZMLX_ACT_SWIGLU, h), RNG);
    CHECK_EQ_INT(zmlx_gather_qmm_swiglu(c, ZMLX_F32, x, 1, &W, &Wu, ok, 3, ZMLX_ACT_SWIGLU, h), RNG);
    /* gather_qmm_combine */
    CHECK_EQ_INT(zmlx_gather_qmm_combine(c, ZMLX_F32, h, 2, &W, ok, 2, NULL, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(c, ZMLX_F32, NULL, 2, &W, ok, 2, wt, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(c, (zmlx_dtype)99, h, 2, &W, ok, 2, wt, y), INV);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(c, ZMLX_F32, h, 2, &W, neg, 2, wt, y), RNG);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(c, ZMLX_F32, h, 2, &W, big, 2, wt, y), RNG);
    CHECK_EQ_INT(zmlx_gather_qmm_combine(c, ZMLX_F32, h, 1, &W, ok, 3, wt, y), RNG);
    /* embed_lookup: table E=1, N=4 rows */
    int32_t ids_ok[2] = {0, 3}, ids_neg[2] = {0, -1}, ids_big[2] = {4, 0};
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1, ids_neg, 2, y), RNG);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1, ids_big, 2, y), RNG);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W, ids_ok, 2, y), INV); /* E != 1 */
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, NULL, ids_ok, 2, y), INV);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1, NULL, 2, y), INV);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1, ids_ok, 2, NULL), INV);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1, ids_ok, -1, y), INV);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_I32, &W1, ids_ok, 2, y), INV);
    zmlx_qweight W1t = W1;
    W1t.transpose = 0, W1t.N = 32, W1t.K = 4; /* a valid [1, K, N] view, not a table */
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1t, ids_ok, 2, y), INV);
    CHECK_EQ_INT(zmlx_embed_lookup(c, ZMLX_F32, &W1, ids_ok, 0, y), ZMLX_OK);
    /* qmm_argmax: one matrix (E = 1), all of x, y, idx */
    int32_t am[2] = {-1, -1}, want[2];
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 2, &W, y, am), INV); /* E != 1 */
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 2, NULL, y, am), INV);
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, NULL, 2, &W1, y, am), INV);
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 2, &W1, NULL, am), INV);
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 2, &W1, y, NULL), INV);
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, -1, &W1, y, am), INV);
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_U8, x, 2, &W1, y, am), INV);
    bad = W1;
    bad.on_device = 1;
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 2, &bad, y, am), INV);
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 0, &W1, y, am), ZMLX_OK);
    CHECK(am[0] == -1); /* no tokens: nothing written */
    CHECK_EQ_INT(zmlx_qmm_argmax(c, ZMLX_F32, x, 2, &W1, y, am), ZMLX_OK);
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_F32, y, 2, W1.N, want), ZMLX_OK);
    CHECK(am[0] == want[0] && am[1] == want[1]);
}

static void test_elementwise(zmlx_ctx *c) {
    float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 1, 1, 1, 1, 1, 1, 1}, o[8], o2[8], w[2] = {1, 1};
    /* glu_act */
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_U32, ZMLX_ACT_SWIGLU, a, b, 8, o), INV);
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_F32, ZMLX_ACT_COUNT_, a, b, 8, o), INV);
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_F32, ZMLX_ACT_SWIGLU, NULL, b, 8, o), INV);
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_F32, ZMLX_ACT_SWIGLU, a, NULL, 8, o), INV);
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_F32, ZMLX_ACT_SWIGLU, a, b, 8, NULL), INV);
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_F32, ZMLX_ACT_SWIGLU, a, b, -1, o), INV);
    CHECK_EQ_INT(zmlx_glu_act(c, ZMLX_F32, ZMLX_ACT_SWIGLU, a, b, 0, o), ZMLX_OK);
    /* moe_combine: y [n_tok, k, D] */
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, NULL, w, 2, 2, 2, o), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, a, NULL, 2, 2, 2, o), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, a, w, 2, 2, 2, NULL), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_U8, a, w, 2, 2, 2, o), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, a, w, -1, 2, 2, o), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, a, w, 2, 0, 2, o), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, a, w, 2, 2, 0, o), INV);
    CHECK_EQ_INT(zmlx_moe_combine(c, ZMLX_F32, a, w, 0, 2, 2, o), ZMLX_OK);
    /* add_rms_norm: [2 rows, 4] */
    float wn[4] = {1, 1, 1, 1};
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_I64, a, b, wn, 2, 4, 1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, NULL, b, wn, 2, 4, 1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, NULL, wn, 2, 4, 1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, NULL, 2, 4, 1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, 2, 4, 1e-5f, NULL, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, 2, 4, 1e-5f, o, NULL), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, -1, 4, 1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, 2, 0, 1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, 2, 4, -1e-5f, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, 2, 4, NAN, o, o2), INV);
    CHECK_EQ_INT(zmlx_add_rms_norm(c, ZMLX_F32, a, b, wn, 2, 4, 0.0f, o, o2), ZMLX_OK);
    /* rms_norm (weight may be NULL) */
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_U8, a, wn, 2, 4, 1e-5f, o), INV);
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_F32, NULL, wn, 2, 4, 1e-5f, o), INV);
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_F32, a, wn, 2, 4, 1e-5f, NULL), INV);
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_F32, a, wn, -2, 4, 1e-5f, o), INV);
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_F32, a, wn, 2, 0, 1e-5f, o), INV);
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_F32, a, wn, 2, 4, -1.0f, o), INV);
    CHECK_EQ_INT(zmlx_rms_norm(c, ZMLX_F32, a, NULL, 2, 4, 1e-5f, o), ZMLX_OK);
    /* softmax */
    CHECK_EQ_INT(zmlx_softmax(c, ZMLX_I32, a, 2, 4, o), INV);
    CHECK_EQ_INT(zmlx_softmax(c, ZMLX_F32, NULL, 2, 4, o), INV);
    CHECK_EQ_INT(zmlx_softmax(c, ZMLX_F32, a, 2, 4, NULL), INV);
    CHECK_EQ_INT(zmlx_softmax(c, ZMLX_F32, a, -1, 4, o), INV);
    CHECK_EQ_INT(zmlx_softmax(c, ZMLX_F32, a, 2, 0, o), INV);
    CHECK_EQ_INT(zmlx_softmax(c, ZMLX_F32, a, 0, 4, o), ZMLX_OK);
}

static void test_route(zmlx_ctx *c) {
    float l[2 * 8] = {1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1};
    int32_t idx[16];
    float w[16];
    zmlx_router_params p = {0}, q;
    p.kind = ZMLX_ROUTER_SOFTMAX_TOPK, p.E = 8, p.k = 2;
    CHECK_EQ_INT(zmlx_moe_route(c, NULL, ZMLX_F32, l, 2, idx, w), INV);
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_U8, l, 2, idx, w), INV);
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_F32, NULL, 2, idx, w), INV);
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_F32, l, 2, NULL, w), INV);
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_F32, l, 2, idx, NULL), INV);
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_F32, l, -1, idx, w), INV);
    q = p, q.kind = ZMLX_ROUTER_COUNT_;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = p, q.kind = (zmlx_router_kind)-1;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = p, q.E = 0;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = p, q.k = 0;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = p, q.k = 9;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), RNG);
    q = p, q.norm_eps = -1e-6f;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = p, q.k = 8;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), ZMLX_OK); /* k = E */
    /* grouped: E=8 */
    zmlx_router_params g = p;
    g.kind = ZMLX_ROUTER_SIGMOID_GROUPED_TOPK, g.n_group = 4, g.topk_group = 2, g.k = 4;
    CHECK_EQ_INT(zmlx_moe_route(c, &g, ZMLX_F32, l, 2, idx, w), ZMLX_OK);
    q = g, q.n_group = 0;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = g, q.n_group = 3; /* 8 % 3 */
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = g, q.topk_group = 0;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = g, q.topk_group = 5;
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = g, q.n_group = 8, q.topk_group = 4, q.k = 2; /* groups of 1 have no top 2 */
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), INV);
    q = g, q.topk_group = 1, q.k = 3; /* kept groups hold 2 experts < k */
    CHECK_EQ_INT(zmlx_moe_route(c, &q, ZMLX_F32, l, 2, idx, w), RNG);
    /* NaN logits (checked by the kernel) */
    float ln[8] = {1, 2, NAN, 4, 5, 6, 7, 8};
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_F32, ln, 1, idx, w), RNG);
    CHECK_EQ_INT(zmlx_moe_route(c, &p, ZMLX_F32, ln, 0, idx, w), ZMLX_OK);
}

static void test_rope_attn(zmlx_ctx *c) {
    float x[2 * 2 * 8] = {0};
    zmlx_rope_params p = {0}, q;
    p.head_dim = 8, p.rot_dims = 8, p.base = 10000.0f;
    CHECK_EQ_INT(zmlx_rope(c, NULL, ZMLX_F32, x, 2, 2, NULL, 0), INV);
    CHECK_EQ_INT(zmlx_rope(c, &p, ZMLX_U32, x, 2, 2, NULL, 0), INV);
    CHECK_EQ_INT(zmlx_rope(c, &p, ZMLX_F32, NULL, 2, 2, NULL, 0), INV);
    CHECK_EQ_INT(zmlx_rope(c, &p, ZMLX_F32, x, -1, 2, NULL, 0), INV);
    CHECK_EQ_INT(zmlx_rope(c, &p, ZMLX_F32, x, 2, 0, NULL, 0), INV);
    q = p, q.rot_dims = 7; /* odd */
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), INV);
    q = p, q.rot_dims = 10; /* > head_dim */
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), INV);
    q = p, q.rot_dims = 0;
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), INV);
    q = p, q.head_dim = 1, q.rot_dims = 0;
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), INV);
    q = p, q.base = 0.0f; /* no base and no custom frequencies */
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), INV);
    float inv[4] = {1, 0.5f, 0.25f, 0.125f};
    q.inv_freq = inv;
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), ZMLX_OK);
    q = p, q.rot_dims = 6; /* partial */
    CHECK_EQ_INT(zmlx_rope(c, &q, ZMLX_F32, x, 2, 2, NULL, 0), ZMLX_OK);

    /* attention: Hq 4, Hkv 2, hd 4, cap 3 */
    float qv[16] = {0}, kc[2 * 3 * 4] = {0}, vc[2 * 3 * 4] = {0}, o[16];
    zmlx_attn_params a = {4, 2, 4, 4, 3, 0.5f, 0, NULL}, b;
    CHECK_EQ_INT(zmlx_attention_decode(c, NULL, ZMLX_F32, qv, kc, vc, 1, o), INV);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_U8, qv, kc, vc, 1, o), INV);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, NULL, kc, vc, 1, o), INV);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, NULL, vc, 1, o), INV);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, kc, NULL, 1, o), INV);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, kc, vc, 1, NULL), INV);
    b = a, b.Hkv = 3; /* 4 % 3 */
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    b = a, b.Hq = 0;
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    b = a, b.Hkv = 0;
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    b = a, b.hd = 0;
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    b = a, b.hd_v = 0;
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    b = a, b.cap = 0;
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    b = a, b.window = -1;
    CHECK_EQ_INT(zmlx_attention_decode(c, &b, ZMLX_F32, qv, kc, vc, 1, o), INV);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, kc, vc, 0, o), RNG);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, kc, vc, -1, o), RNG);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, kc, vc, 4, o), RNG);
    CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, qv, kc, vc, 3, o), ZMLX_OK);

    /* attention_prefill: tokens at pos.. over the same cache; per token attention_decode's bits here */
    float q2[2 * 16], op[2 * 16], od[16];
    for (int i = 0; i < 32; i++) q2[i] = 0.1f * (float)(i % 7) - 0.3f;
    for (int i = 0; i < 24; i++) kc[i] = 0.05f * (float)(i % 5), vc[i] = 0.2f - 0.03f * (float)i;
    CHECK_EQ_INT(zmlx_attention_prefill(c, NULL, ZMLX_F32, q2, 2, 1, kc, vc, op), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_U8, q2, 2, 1, kc, vc, op), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, NULL, 2, 1, kc, vc, op), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 2, 1, NULL, vc, op), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 2, 1, kc, NULL, op), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 2, 1, kc, vc, NULL), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, -1, 1, kc, vc, op), INV);
    b = a, b.Hkv = 3;
    CHECK_EQ_INT(zmlx_attention_prefill(c, &b, ZMLX_F32, q2, 2, 1, kc, vc, op), INV);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 2, 2, kc, vc, op), RNG); /* 2 + 2 > cap 3 */
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 1, -1, kc, vc, op), RNG);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 0, 3, kc, vc, op), ZMLX_OK);
    CHECK_EQ_INT(zmlx_attention_prefill(c, &a, ZMLX_F32, q2, 2, 1, kc, vc, op), ZMLX_OK);
    for (int t = 0; t < 2; t++) {
        CHECK_EQ_INT(zmlx_attention_decode(c, &a, ZMLX_F32, q2 + 16 * t, kc, vc, 2 + t, od), ZMLX_OK);
        CHECKF(!memcmp(od, op + 16 * t, sizeof od), "attention_prefill token %d != attention_decode", t);
    }

    /* attention_step: packed rows of (4 + 2 + 2) heads of 4; position from memory */
    float qkv[2 * 32] = {0}, o2[2 * 16];
    int32_t pos = 1;
    zmlx_rope_params r4 = p;
    r4.head_dim = 4, r4.rot_dims = 4;
    zmlx_attn_step_params sp = {a, &r4, NULL, NULL, 1e-6f, NULL, NULL}, sq;
    CHECK_EQ_INT(zmlx_attention_step(c, NULL, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_U8, qkv, 2, &pos, kc, vc, o2), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, NULL, 2, &pos, kc, vc, o2), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 2, NULL, kc, vc, o2), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 2, &pos, NULL, vc, o2), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 2, &pos, kc, vc, NULL), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, -1, &pos, kc, vc, o2), INV);
    sq = sp, sq.attn.Hkv = 3;
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    sq = sp, sq.eps = -1.0f;
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    zmlx_rope_params r8 = p; /* head_dim 8 != hd 4 */
    sq = sp, sq.rope = &r8;
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 4, &pos, kc, vc, o2), RNG); /* > cap */
    pos = 2; /* 2 + 2 > cap 3 */
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), RNG);
    pos = -1;
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 1, &pos, kc, vc, o2), RNG);
    pos = 1;
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 0, &pos, kc, vc, o2), ZMLX_OK);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), ZMLX_OK);

    /* ... with the projection folded in (x [2, 32], N = the 32-wide row): checked, then
       the same bits as gather_qmm and the step without it */
    static uint32_t pw[32 * 4];
    static float ps[32], pb[32];
    float xin[2 * 32], qkv2[2 * 32], kc2[24], vc2[24], o3[2 * 16];
    for (int i = 0; i < 32 * 4; i++) pw[i] = 0x9e3779b9u * (uint32_t)(i + 1);
    for (int i = 0; i < 32; i++) ps[i] = 0.01f * (float)(i % 5 + 1), pb[i] = -0.02f * (float)(i % 3);
    for (int i = 0; i < 64; i++) xin[i] = 0.05f * (float)(i % 9) - 0.2f;
    const zmlx_qweight P = {ZMLX_QMODE_AFFINE, 4, 32, 1, 1, 32, 32, pw, ps, pb, ZMLX_F32, 0.0f, 0}, P4 = qw(1);
    sq = sp, sq.proj = &P; /* no x */
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    sq = sp, sq.x = xin; /* no proj */
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    sq.proj = &P4; /* N 4 != 32 */
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    sq.proj = &P, sq.x = qkv + 8; /* x overlaps qkv */
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), INV);
    sq.x = xin;
    memcpy(kc2, kc, sizeof kc2), memcpy(vc2, vc, sizeof vc2);
    CHECK_EQ_INT(zmlx_attention_step(c, &sq, ZMLX_F32, qkv, 2, &pos, kc, vc, o2), ZMLX_OK);
    CHECK_EQ_INT(zmlx_gather_qmm(c, ZMLX_F32, xin, 2, 0, &P, NULL, 1, qkv2), ZMLX_OK);
    CHECK_EQ_INT(zmlx_attention_step(c, &sp, ZMLX_F32, qkv2, 2, &pos, kc2, vc2, o3), ZMLX_OK);
    CHECKF(!memcmp(qkv, qkv2, sizeof qkv2) && !memcmp(kc, kc2, sizeof kc2) && !memcmp(vc, vc2, sizeof vc2) &&
               !memcmp(o2, o3, sizeof o3),
           "attention_step with proj != gather_qmm + attention_step");

    /* argmax, i32_add */
    int32_t idx[2] = {0};
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_F32, x, 2, 0, idx), INV);
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_F32, x, -1, 4, idx), INV);
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_U8, x, 2, 4, idx), INV);
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_F32, NULL, 2, 4, idx), INV);
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_F32, x, 2, 4, NULL), INV);
    CHECK_EQ_INT(zmlx_argmax(c, ZMLX_F32, x, 2, 4, idx), ZMLX_OK);
    CHECK_EQ_INT(zmlx_i32_add(c, NULL, 1, 1), INV);
    CHECK_EQ_INT(zmlx_i32_add(c, idx, -1, 1), INV);
    CHECK_EQ_INT(zmlx_i32_add(c, idx, 2, 3), ZMLX_OK);
    CHECK(idx[0] == 3 && idx[1] == 3);
}

static void test_yarn_args(void) {
    float inv[64], ms;
    const zmlx_yarn_params ok = {64, 150000.0f, 32.0f, 4096, 32.0f, 1.0f, 1.0f, 0.0f};
    zmlx_yarn_params p;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&ok, inv, &ms), ZMLX_OK);
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(NULL, inv, &ms), INV);
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&ok, NULL, &ms), INV);
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&ok, inv, NULL), INV);
    p = ok, p.rot_dims = 63;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.rot_dims = 0;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.base = 1.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.base = -5.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.base = INFINITY;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.factor = 0.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.factor = NAN;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.original_max_pos = 0;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.beta_fast = -1.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.beta_slow = -1.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.mscale = NAN;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.mscale_all_dim = INFINITY;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    /* g(s, m) = 0.1·m·ln(s) + 1 must stay > 0: with s = e^10, m = -2 gives -1 */
    p = ok, p.factor = expf(10.0f), p.mscale_all_dim = -2.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
    p = ok, p.factor = expf(10.0f), p.mscale = -2.0f;
    CHECK_EQ_INT(zmlx_rope_yarn_freqs(&p, inv, &ms), INV);
}

int main(void) {
    RUN(test_ctx);
    zmlx_ctx *ctxs[3] = {NULL, NULL, NULL};
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = ZMLX_BACKEND_CPU_REF;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &ctxs[1], NULL, 0), ZMLX_OK);
    o.backend = ZMLX_BACKEND_CPU;
    o.n_threads = 2;
    CHECK_EQ_INT(zmlx_ctx_create(&o, &ctxs[2], NULL, 0), ZMLX_OK);
    for (int i = 0; i < 3; i++) {
        if (i && !ctxs[i]) continue;
        h_current = i == 0 ? "ctx NULL" : i == 1 ? "ctx cpu-ref" : "ctx cpu";
        test_mem(ctxs[i]);
        test_gather(ctxs[i]);
        test_elementwise(ctxs[i]);
        test_route(ctxs[i]);
        test_rope_attn(ctxs[i]);
    }
    RUN(test_yarn_args);
    zmlx_ctx_free(ctxs[1]);
    zmlx_ctx_free(ctxs[2]);
    return harness_done();
}
