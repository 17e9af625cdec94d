/* probe-ops-chain.c — what zmlx's own small ops cost per node in a captured
 * chain of one op kind (or a short repeating pattern), to set against
 * probe-chain.cu's bare kernels (~0.4-0.8 us a node) and against what the
 * same kernels cost inside the decode step (src/cuda/NOTES.md v18: 3-9 us).
 * Not part of the build; NOTES.md v19 reads it. Against a CUDA build's
 * libraries (BUILD = its folder):
 *
 *   gcc -O2 -std=c11 -Iinclude scripts/probe-ops-chain.c $BUILD/libzmlx_ops.a $BUILD/libzmlx_quant.a \
 *       $BUILD/libzmlx_core.a -L/usr/local/cuda/lib64 -lcudart_static -lstdc++ -lm -lpthread -ldl -lrt \
 *       -o /tmp/probe-ops-chain && /tmp/probe-ops-chain
 *
 * Qwen3-30B-A3B shapes, bf16, one token: the norm (D 2048), the router
 * (8-bit gs64, 128 x 2048), the route (E 128, k 8), q/k/v (4-bit gs64,
 * 5120 x 2048, NW distinct copies so the weights come from DRAM). Each
 * pattern is captured as one graph of about N nodes and replayed R times;
 * us per node is the median replay's host time / nodes.
 */
#define _POSIX_C_SOURCE 199309L
#include "zmlx.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { D = 2048, E = 128, K = 8, QKV = 5120, N = 240, R = 15, NW = 48 };

static zmlx_ctx *ctx;

static void ck(zmlx_status s, const char *what) {
    if (s != ZMLX_OK) {
        fprintf(stderr, "%s: status %d\n", what, (int)s);
        exit(1);
    }
}
static void *dev_alloc(size_t bytes) {
    void *d;
    ck(zmlx_mem_alloc(ctx, bytes, &d), "alloc");
    return d;
}
/* a value in [-1, 1] in steps of 0.001 */
static float rand_unit(void) { return (float)(rand() % 2001 - 1000) / 1000.0f; }
static void *dev_rand(size_t n_bf16) {
    uint16_t *h = malloc(n_bf16 * 2);
    for (size_t i = 0; i < n_bf16; i++) h[i] = zmlx_f32_to_bf16(rand_unit());
    void *d = dev_alloc(n_bf16 * 2);
    ck(zmlx_mem_upload(ctx, d, h, n_bf16 * 2), "upload");
    free(h);
    return d;
}
/* a quantized rows x cols matrix on the device, copies distinct copies */
static void qmat(int bits, int64_t rows, int64_t cols, int copies, zmlx_qweight *out) {
    float *src = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) src[i] = rand_unit();
    const size_t wb = zmlx_quant_packed_bytes(bits, rows, cols), sb = zmlx_quant_scales_count(64, rows, cols) * 2;
    void *hw = malloc(wb), *hs = malloc(sb), *hb = malloc(sb);
    zmlx_quant_opts qo = {ZMLX_AFFINE_GPU, 0.0f};
    ck(zmlx_quantize(ZMLX_QMODE_AFFINE, bits, 64, ZMLX_F32, src, rows, cols, ZMLX_BF16, hw, hs, hb, &qo),
       "quantize");
    for (int c = 0; c < copies; c++) {
        zmlx_qweight q = {ZMLX_QMODE_AFFINE, bits, 64, 1, 1, rows, cols, NULL, NULL, NULL, ZMLX_BF16, 0.0f, 1};
        void *dw = dev_alloc(wb), *ds = dev_alloc(sb), *db = dev_alloc(sb);
        ck(zmlx_mem_upload(ctx, dw, hw, wb), "upload");
        ck(zmlx_mem_upload(ctx, ds, hs, sb), "upload");
        ck(zmlx_mem_upload(ctx, db, hb, sb), "upload");
        q.w = dw;
        q.scales = ds;
        q.biases = db;
        out[c] = q;
    }
    free(src); free(hw); free(hs); free(hb);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}
static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* the buffers every pattern uses */
static void *x[2], *r[2], *normw, *logits, *qkv_out;
static zmlx_qweight router, qkv[NW];
static int32_t *idx;
static float *wts;
static const zmlx_router_params rp = {ZMLX_ROUTER_SOFTMAX_TOPK, E, K, 1, 0.0f, 0.0f, NULL, 0, 0};

static void op_norm(int i) {
    ck(zmlx_add_rms_norm(ctx, ZMLX_BF16, x[(i + 1) & 1], r[(i + 1) & 1], normw, 1, D, 1e-6f, r[i & 1], x[i & 1]),
       "norm");
}
static void op_router(int i) {
    ck(zmlx_gather_qmm(ctx, ZMLX_BF16, x[i & 1], 1, 0, &router, NULL, 1, logits), "router");
}
static void op_route(int i) {
    (void)i;
    ck(zmlx_moe_route(ctx, &rp, ZMLX_BF16, logits, 1, idx, wts), "route");
}
static void op_qkv(int i) {
    ck(zmlx_gather_qmm(ctx, ZMLX_BF16, x[i & 1], 1, 0, &qkv[i % NW], NULL, 1, qkv_out), "qkv");
}

typedef void (*op_fn)(int);
/* the pattern ops[0..n) repeated to about N nodes: us per node */
static double chain(const op_fn *ops, int n) {
    const int reps = N / n;
    zmlx_graph *g;
    ck(zmlx_graph_capture_begin(ctx), "capture");
    for (int i = 0; i < reps; i++)
        for (int j = 0; j < n; j++) ops[j](i);
    ck(zmlx_graph_capture_end(ctx, &g), "capture end");
    double t[R + 2];
    for (int k = 0; k < R + 2; k++) {
        ck(zmlx_ctx_sync(ctx), "sync");
        const double t0 = now_us();
        ck(zmlx_graph_launch(ctx, g), "launch");
        ck(zmlx_ctx_sync(ctx), "sync");
        t[k] = (now_us() - t0) / (reps * n);
    }
    zmlx_graph_free(ctx, g);
    qsort(t + 2, R, sizeof(double), cmp_d);
    return t[2 + R / 2];
}

int main(void) {
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = ZMLX_BACKEND_CUDA;
    char err[256];
    if (zmlx_ctx_create(&o, &ctx, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "no CUDA context: %s\n", err);
        return 77;
    }
    for (int i = 0; i < 2; i++) x[i] = dev_rand(D), r[i] = dev_rand(D);
    normw = dev_rand(D);
    logits = dev_rand(E);
    qkv_out = dev_alloc(QKV * 2);
    idx = dev_alloc(K * 4);
    wts = dev_alloc(K * 4);
    qmat(8, E, D, 1, &router);
    qmat(4, QKV, D, NW, qkv);
    static const struct {
        const char *name;
        op_fn ops[4];
        int n;
    } pats[] = {
        {"add_rms_norm", {op_norm}, 1},
        {"router gemv (8-bit 128x2048)", {op_router}, 1},
        {"moe_route", {op_route}, 1},
        {"norm > router > route", {op_norm, op_router, op_route}, 3},
        {"qkv mmv (5.9 MB, cold)", {op_qkv}, 1},
        {"norm > qkv", {op_norm, op_qkv}, 2},
    };
    printf("%-32s %10s\n", "chain of", "us/node");
    for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++)
        printf("%-32s %10.3f\n", pats[p].name, chain(pats[p].ops, pats[p].n));
    zmlx_ctx_free(ctx);
    return 0;
}
