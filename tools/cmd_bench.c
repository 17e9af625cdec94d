/*
 * cmd_bench.c — `zmlx bench moe-layer`: times one MoE block (add_rms_norm →
 * router logits → moe_route → gate/up/act → down/combine) fused and unfused
 * over L distinct layer copies of random weights, on any backend, and reports
 * µs/layer, effective GB/s over the bytes the block must read, the bandwidth
 * measured in the same run (at the start, and around each token count's
 * timing: the ratio uses the latter) and the fused/unfused speedup, fused and
 * unfused timed in alternating passes (DESIGN.md §8).
 * `zmlx bench decode` is in cmd_bench_decode.c.
 */
#include "cli.h"
#include "cli_run.h"
#include "core/core.h"
#include "cpu/cpu_kern.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int64_t D, E, I;
    int k;
    zmlx_router_kind router;
    float norm_eps, route_eps, route_scale;
    int use_bias;
    zmlx_act act;
    zmlx_qmode mode; /* default expert format */
} moe_shape;

static const moe_shape shapes[] = {
    {"qwen3-30b-a3b", 2048, 128, 768, 8, ZMLX_ROUTER_SOFTMAX_TOPK, 1e-6f, 0.0f, 1.0f, 0,
     ZMLX_ACT_SWIGLU, ZMLX_QMODE_AFFINE},
    {"glm-4.7-flash", 2048, 64, 1536, 4, ZMLX_ROUTER_SIGMOID_TOPK, 1e-5f, 1e-20f, 1.8f, 1,
     ZMLX_ACT_SWIGLU, ZMLX_QMODE_AFFINE},
    {"lfm2-8b-a1b", 2048, 32, 1792, 4, ZMLX_ROUTER_SIGMOID_TOPK, 1e-5f, 1e-6f, 1.0f, 1,
     ZMLX_ACT_SWIGLU, ZMLX_QMODE_AFFINE},
    {"gpt-oss-20b", 2880, 32, 2880, 4, ZMLX_ROUTER_TOPK_SOFTMAX, 1e-5f, 0.0f, 1.0f, 0,
     ZMLX_ACT_SWIGLU_OAI, ZMLX_QMODE_MXFP4},
};

/* ------------------------------------------------------ random weights */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_unit(uint64_t *s) { return (float)(rng_next(s) >> 40) * 0x1p-24f; }

static void fill_float(zmlx_dtype t, void *p, size_t n, float lo, float hi, uint64_t *s) {
    for (size_t i = 0; i < n; i++) {
        float v = lo + (hi - lo) * rng_unit(s);
        if (t == ZMLX_F32) ((float *)p)[i] = v;
        else if (t == ZMLX_BF16) ((uint16_t *)p)[i] = zmlx_f32_to_bf16(v);
        else ((uint16_t *)p)[i] = zmlx_f32_to_f16(v);
    }
}

typedef struct {
    void *stage;
    size_t stage_bytes;
    zmlx_ctx *ctx;
    uint64_t seed;
} filler;

/* allocate `bytes` on the backend and fill: kind 0 random bits, 1 floats in
 * [lo,hi) of dtype t, 2 bytes in [lo,hi] (E8M0 scales) */
static zmlx_status fill_buf(filler *f, void **out, size_t bytes, int kind, zmlx_dtype t, float lo,
                            float hi) {
    zmlx_status s = zmlx_mem_alloc(f->ctx, bytes, out);
    if (s != ZMLX_OK) return s;
    if (bytes > f->stage_bytes) {
        free(f->stage);
        f->stage = malloc(bytes);
        f->stage_bytes = f->stage ? bytes : 0;
        if (!f->stage) return ZMLX_ERR_OOM;
    }
    if (kind == 0) {
        uint64_t *w = f->stage;
        for (size_t i = 0; i < bytes / 8; i++) w[i] = rng_next(&f->seed);
    } else if (kind == 1) {
        fill_float(t, f->stage, bytes / zmlx_dtype_size(t), lo, hi, &f->seed);
    } else {
        uint8_t *b = f->stage;
        for (size_t i = 0; i < bytes; i++) b[i] = (uint8_t)(lo + rng_next(&f->seed) % (uint64_t)(hi - lo + 1));
    }
    return zmlx_mem_upload(f->ctx, *out, f->stage, bytes);
}

/* one quantized weight [E, N, K] (transpose = 1) */
static zmlx_status make_weight(filler *f, zmlx_qweight *q, zmlx_qmode mode, int bits, int gs,
                               int64_t E, int64_t N, int64_t K, zmlx_dtype sdt, int on_device) {
    void *w = NULL, *sc = NULL, *bi = NULL;
    *q = (zmlx_qweight){.mode = mode, .bits = bits, .group_size = gs, .transpose = 1, .E = E,
                        .N = N, .K = K, .scale_dtype = mode == ZMLX_QMODE_AFFINE ? sdt : ZMLX_U8,
                        .on_device = on_device};
    size_t wb = zmlx_quant_packed_bytes(bits, E * N, K), ns = zmlx_quant_scales_count(gs, E * N, K);
    zmlx_status s = fill_buf(f, &w, wb, 0, ZMLX_U8, 0, 0);
    if (s == ZMLX_OK && mode == ZMLX_QMODE_AFFINE) {
        /* non-zero weights of a plausible size: q in [0, 2^bits), w = s*q + b */
        float smax = 0.08f / (float)(1 << bits);
        s = fill_buf(f, &sc, ns * zmlx_dtype_size(sdt), 1, sdt, 0.25f * smax, smax);
        if (s == ZMLX_OK)
            s = fill_buf(f, &bi, ns * zmlx_dtype_size(sdt), 1, sdt, -0.05f, -0.03f);
    } else if (s == ZMLX_OK) {
        s = fill_buf(f, &sc, ns, 2, ZMLX_U8, 118, 122);
    }
    q->w = w;
    q->scales = sc;
    q->biases = bi;
    return s;
}

static size_t weight_bytes_per_expert(const zmlx_qweight *q) {
    size_t ns = zmlx_quant_scales_count(q->group_size, q->N, q->K);
    size_t ss = q->mode == ZMLX_QMODE_AFFINE ? 2 * zmlx_dtype_size(q->scale_dtype) : 1;
    return zmlx_quant_packed_bytes(q->bits, q->N, q->K) + ns * ss;
}

static void free_weight(zmlx_ctx *c, zmlx_qweight *q) {
    zmlx_mem_free(c, (void *)q->w);
    zmlx_mem_free(c, (void *)q->scales);
    zmlx_mem_free(c, (void *)q->biases);
}

/* ------------------------------------------------------------ the block */

typedef struct {
    zmlx_qweight wg, wu, wd, wr;
    void *norm_w;
    float *rbias;
} layer;

typedef struct {
    const moe_shape *sh;
    zmlx_ctx *ctx;
    zmlx_dtype T;
    zmlx_router_params rp;
    /* activations, sized for the largest M */
    void *x, *res, *r, *yn, *logits, *g, *u, *h, *ys, *out;
    int32_t *idx;
    float *w;
} bench;

#define TRY(call) do { zmlx_status s_ = (call); if (s_ != ZMLX_OK) return s_; } while (0)

static zmlx_status run_block(bench *b, layer *L, int64_t M, int fused) {
    const moe_shape *sh = b->sh;
    zmlx_ctx *c = b->ctx;
    zmlx_dtype T = b->T;
    zmlx_router_params rp = b->rp;
    rp.bias = L->rbias;
    if (fused) {
        TRY(zmlx_add_rms_norm(c, T, b->x, b->res, L->norm_w, M, sh->D, sh->norm_eps, b->r, b->yn));
    } else {
        TRY(zmlx_add(c, T, b->x, b->res, M * sh->D, b->r));
        TRY(zmlx_rms_norm(c, T, b->r, L->norm_w, M, sh->D, sh->norm_eps, b->yn));
    }
    TRY(zmlx_gather_qmm(c, T, b->yn, M, 0, &L->wr, NULL, 1, b->logits));
    TRY(zmlx_moe_route(c, &rp, T, b->logits, M, b->idx, b->w));
    if (fused) {
        TRY(zmlx_gather_qmm_swiglu(c, T, b->yn, M, &L->wg, &L->wu, b->idx, sh->k, sh->act, b->h));
        TRY(zmlx_gather_qmm_combine(c, T, b->h, M, &L->wd, b->idx, sh->k, b->w, b->out));
    } else {
        TRY(zmlx_gather_qmm(c, T, b->yn, M, 0, &L->wg, b->idx, sh->k, b->g));
        TRY(zmlx_gather_qmm(c, T, b->yn, M, 0, &L->wu, b->idx, sh->k, b->u));
        TRY(zmlx_glu_act(c, T, sh->act, b->g, b->u, M * sh->k * sh->I, b->h));
        TRY(zmlx_gather_qmm(c, T, b->h, M, 1, &L->wd, b->idx, sh->k, b->ys));
        TRY(zmlx_moe_combine(c, T, b->ys, b->w, M, sh->k, sh->D, b->out));
    }
    return ZMLX_OK;
}

static zmlx_status run_pass(bench *b, layer *Ls, int nl, int64_t M, int fused) {
    for (int l = 0; l < nl; l++) TRY(run_block(b, &Ls[l], M, fused));
    return ZMLX_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median (and min, max) over reps of one pass over all layers, in µs per
 * layer, fused into st[0][], unfused into st[1][]. The two are timed in
 * alternating passes (the order swapped every rep), so a drift of the
 * machine's bandwidth (other tenants) hits both alike. pr: the paired
 * speedup, unfused / fused of the two passes of each rep (adjacent in time,
 * so a drift slower than a rep cancels): its median and a distribution-free
 * ~95% interval for that median (the sorted ratios' order statistics at
 * R/2 -+ 0.98·sqrt(R), R the reps: the binomial interval; few reps give
 * the min and max). CUDA: each pass is captured once as a graph and
 * replayed when the backend supports capture. */
static zmlx_status time_passes(bench *b, layer *Ls, int nl, int64_t M, int reps, double st[2][3],
                               double pr[3]) {
    zmlx_graph *graph[2] = {NULL, NULL};
    zmlx_status s = ZMLX_OK;
    for (int f = 0; f < 2 && s == ZMLX_OK; f++)
        if (zmlx_graph_capture_begin(b->ctx) == ZMLX_OK) {
            s = run_pass(b, Ls, nl, M, f == 0);
            zmlx_status e = zmlx_graph_capture_end(b->ctx, &graph[f]);
            if (s == ZMLX_OK) s = e;
        }
    double *t = malloc(sizeof(double) * 3 * (size_t)reps);
    if (!t && s == ZMLX_OK) s = ZMLX_ERR_OOM;
    for (int r = -1; r < reps && s == ZMLX_OK; r++) { /* r = -1: warm-up */
        fprintf(stderr, "\r  M=%-3lld rep %d/%d   ", (long long)M, r + 1, reps);
        for (int i = 0; i < 2 && s == ZMLX_OK; i++) {
            const int f = (r & 1) ? 1 - i : i; /* 0 fused, 1 unfused */
            double t0 = zc_now_sec();
            s = graph[f] ? zmlx_graph_launch(b->ctx, graph[f]) : run_pass(b, Ls, nl, M, f == 0);
            if (s == ZMLX_OK) s = zmlx_ctx_sync(b->ctx);
            if (r >= 0) t[f * reps + r] = (zc_now_sec() - t0) * 1e6 / nl;
        }
    }
    if (s == ZMLX_OK) {
        double *ratio = t + 2 * reps;
        for (int r = 0; r < reps; r++) ratio[r] = t[reps + r] / t[r];
        qsort(ratio, (size_t)reps, sizeof *ratio, cmp_double);
        const double half = 0.98 * sqrt((double)reps);
        const int lo = (int)floor(reps / 2.0 - half), hi = (int)ceil(reps / 2.0 + half) - 1;
        pr[0] = ratio[reps / 2];
        pr[1] = ratio[lo < 0 ? 0 : lo];
        pr[2] = ratio[hi >= reps ? reps - 1 : hi];
    }
    for (int f = 0; f < 2 && s == ZMLX_OK; f++) {
        double *tf = t + f * reps;
        qsort(tf, (size_t)reps, sizeof *tf, cmp_double);
        st[f][0] = tf[reps / 2];
        st[f][1] = tf[0];
        st[f][2] = tf[reps - 1];
    }
    free(t);
    for (int f = 0; f < 2; f++) zmlx_graph_free(b->ctx, graph[f]);
    return s;
}

/* ------------------------------------------------------------- command */

static void usage(FILE *f) {
    fprintf(f,
            "usage: zmlx bench moe-layer [options]\n"
            "  --shape S        qwen3-30b-a3b (default) | glm-4.7-flash | lfm2-8b-a1b | gpt-oss-20b\n"
            "  --tokens LIST    token counts M (default 1,4,16,32,64)\n"
            "  --layers L       distinct layer copies (default: enough that the weights\n"
            "                   touched at M=1 exceed 4x the last-level cache)\n"
            "  --mode M         affine | mxfp4 (default: the shape's; gpt-oss-20b mxfp4)\n"
            "  --bits B         affine bits (default 4)\n"
            "  --group-size G   affine group size (default 64)\n"
            "  --dtype T        bf16 (default) | f16 | f32\n"
            "  --threads N      CPU threads (default all cores)\n"
            "  --backend B      cpu (default) | cpu-ref | cuda\n"
            "  --reps R         timed passes per measurement (default 10)\n"
            "  --json FILE      write a result capsule\n");
}

static size_t llc_bytes(void) {
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    long v = 0;
    char unit = 0;
    if (f) {
        if (fscanf(f, "%ld%c", &v, &unit) < 1) v = 0;
        fclose(f);
    }
    if (v <= 0) return (size_t)32 << 20;
    return (size_t)v << (unit == 'M' ? 20 : unit == 'K' ? 10 : 0);
}

static int bench_moe_layer(int argc, char **argv) {
    const moe_shape *sh = &shapes[0];
    int tokens[16] = {1, 4, 16, 32, 64}, n_tokens = 5;
    long long layers = 0, bits = 4, gs = 64, threads = 0, reps = 10;
    int mode_set = 0;
    zmlx_qmode mode = ZMLX_QMODE_AFFINE;
    zmlx_dtype T = ZMLX_BF16;
    zmlx_backend_kind bk = ZMLX_BACKEND_CPU;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!v) {
            ok = 0;
        } else if (!strcmp(a, "--shape")) {
            sh = NULL;
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                if (!strcmp(v, shapes[s].name)) sh = &shapes[s];
            ok = sh != NULL;
        } else if (!strcmp(a, "--tokens")) {
            n_tokens = cli_parse_int_list(v, tokens, 16);
            ok = n_tokens > 0;
            for (int t = 0; ok && t < n_tokens; t++) ok = tokens[t] >= 1;
        } else if (!strcmp(a, "--layers")) {
            ok = cli_parse_int(v, &layers) && layers >= 1 && layers <= 4096;
        } else if (!strcmp(a, "--bits")) {
            ok = cli_parse_int(v, &bits);
        } else if (!strcmp(a, "--group-size")) {
            ok = cli_parse_int(v, &gs);
        } else if (!strcmp(a, "--mode")) {
            ok = zmlx_qmode_parse(v, &mode) == ZMLX_OK;
            mode_set = 1;
        } else if (!strcmp(a, "--dtype")) {
            ok = cli_parse_dtype(v, &T);
        } else if (!strcmp(a, "--threads")) {
            ok = cli_parse_int(v, &threads) && threads >= 0 && threads <= 1024;
        } else if (!strcmp(a, "--backend")) {
            int is_auto;
            ok = cli_parse_backend(v, &bk, &is_auto) && !is_auto; /* a benchmark names its backend */
        } else if (!strcmp(a, "--reps")) {
            ok = cli_parse_int(v, &reps) && reps >= 1 && reps <= 100000;
        } else if (!strcmp(a, "--json")) {
            json = v;
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "zmlx bench moe-layer: bad option or value '%s %s'\n", a, v ? v : "");
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!mode_set) mode = sh->mode;
    const char *bname = cli_backend_name(bk);
    if (mode == ZMLX_QMODE_MXFP4) {
        bits = 4;
        gs = 32;
    }

    char err[256] = "";
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = bk;
    o.n_threads = (int)threads;
    zmlx_ctx *ctx = NULL;
    if (zmlx_ctx_create(&o, &ctx, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx bench: cannot create the %s backend: %s\n", bname, err);
        return 1;
    }
    const int on_dev = bk == ZMLX_BACKEND_CUDA;
    const size_t ts = zmlx_dtype_size(T);
    int maxM = 1;
    for (int t = 0; t < n_tokens; t++) maxM = tokens[t] > maxM ? tokens[t] : maxM;

    /* bytes of one expert (gate + up + down) and of the router */
    zmlx_qweight probe = {.mode = mode, .bits = (int)bits, .group_size = (int)gs, .transpose = 1,
                          .E = sh->E, .N = sh->I, .K = sh->D, .scale_dtype = T};
    probe.w = probe.scales = probe.biases = (void *)&probe;
    if (mode != ZMLX_QMODE_AFFINE) probe.biases = NULL, probe.scale_dtype = ZMLX_U8;
    if (zmlx_qweight_check(&probe, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx bench: bad expert format: %s\n", err);
        zmlx_ctx_free(ctx);
        return 2;
    }
    size_t expert_bytes = 2 * weight_bytes_per_expert(&probe);
    probe.N = sh->D, probe.K = sh->I;
    expert_bytes += weight_bytes_per_expert(&probe);
    zmlx_qweight rprobe = {.mode = ZMLX_QMODE_AFFINE, .bits = 8, .group_size = 64, .E = 1,
                           .N = sh->E, .K = sh->D, .scale_dtype = T};
    const size_t router_bytes = weight_bytes_per_expert(&rprobe);
    if (layers == 0) {
        size_t touched = (size_t)sh->k * expert_bytes + router_bytes;
        size_t cache = on_dev ? (size_t)60 << 20 : llc_bytes();
        layers = (long long)((4 * cache + touched - 1) / touched);
        if (layers < 2) layers = 2;
    }

    /* bandwidth ceiling, measured now */
    double bw = 0;
    zmlx_status s = zmlx_measure_bandwidth(ctx, 0, &bw);
    if (s != ZMLX_OK) {
        fprintf(stderr, "zmlx bench: bandwidth probe failed: %s\n", zmlx_status_str(s));
        zmlx_ctx_free(ctx);
        return 1;
    }
    fprintf(stderr, "bench moe-layer: %s %s %d-bit gs%d %s, %lld layers (%.0f MB each), backend %s, "
            "measured bandwidth %.1f GB/s\n", sh->name, zmlx_qmode_name(mode), (int)bits, (int)gs,
            zmlx_dtype_name(T), layers, (double)(sh->E * expert_bytes) / 1e6, bname, bw);

    /* weights */
    filler f = {.ctx = ctx, .seed = 0x5eed};
    layer *Ls = calloc((size_t)layers, sizeof *Ls);
    bench b = {.sh = sh, .ctx = ctx, .T = T};
    if (!Ls) s = ZMLX_ERR_OOM;
    for (long long l = 0; l < layers && s == ZMLX_OK; l++) {
        fprintf(stderr, "\r  generating layer %lld/%lld", l + 1, layers);
        layer *L = &Ls[l];
        s = make_weight(&f, &L->wg, mode, (int)bits, (int)gs, sh->E, sh->I, sh->D, T, on_dev);
        if (s == ZMLX_OK) s = make_weight(&f, &L->wu, mode, (int)bits, (int)gs, sh->E, sh->I, sh->D, T, on_dev);
        if (s == ZMLX_OK) s = make_weight(&f, &L->wd, mode, (int)bits, (int)gs, sh->E, sh->D, sh->I, T, on_dev);
        if (s == ZMLX_OK) s = make_weight(&f, &L->wr, ZMLX_QMODE_AFFINE, 8, 64, 1, sh->E, sh->D, T, on_dev);
        if (s == ZMLX_OK) s = fill_buf(&f, &L->norm_w, (size_t)sh->D * ts, 1, T, 0.8f, 1.2f);
        if (s == ZMLX_OK && sh->use_bias)
            s = fill_buf(&f, (void **)&L->rbias, (size_t)sh->E * 4, 1, ZMLX_F32, -0.1f, 0.1f);
    }
    fprintf(stderr, "\n");
    /* activations (random x and residual, the rest outputs) */
    const size_t MD = (size_t)maxM * (size_t)sh->D, MKI = (size_t)maxM * sh->k * (size_t)sh->I;
    if (s == ZMLX_OK) s = fill_buf(&f, &b.x, MD * ts, 1, T, -1.0f, 1.0f);
    if (s == ZMLX_OK) s = fill_buf(&f, &b.res, MD * ts, 1, T, -1.0f, 1.0f);
    void **outs[] = {&b.r, &b.yn, &b.logits, &b.g, &b.u, &b.h, &b.ys, &b.out, (void **)&b.idx, (void **)&b.w};
    size_t out_bytes[] = {MD * ts, MD * ts, (size_t)maxM * sh->E * ts, MKI * ts, MKI * ts, MKI * ts,
                          (size_t)maxM * sh->k * sh->D * ts, MD * ts, (size_t)maxM * sh->k * 4,
                          (size_t)maxM * sh->k * 4};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0] && s == ZMLX_OK; i++)
        s = zmlx_mem_alloc(ctx, out_bytes[i], outs[i]);
    b.rp = (zmlx_router_params){.kind = sh->router, .E = (int)sh->E, .k = sh->k, .norm_topk = 1,
                                .norm_eps = sh->route_eps, .scale = sh->route_scale};

    /* results */
    /* st[0] fused, st[1] unfused; bw: the larger of the bandwidths probed just
       before and just after this row's timing (other tenants make it drift,
       so each row is compared with its own; the larger is the stricter) */
    typedef struct { int M; double st[2][3], pr[3], bytes, bw; } row;
    row *rows = calloc((size_t)n_tokens, sizeof *rows);
    unsigned char *h1 = malloc(MD * ts), *h2 = malloc(MD * ts), *r1 = malloc(MD * ts);
    int32_t *hidx = malloc((size_t)maxM * sh->k * 4);
    unsigned char *seen = malloc((size_t)sh->E);
    if (!rows || !h1 || !h2 || !r1 || !hidx || !seen) s = ZMLX_ERR_OOM;
    int rc = 0;
    for (int ti = 0; ti < n_tokens && s == ZMLX_OK && !rc; ti++) {
        const int64_t M = tokens[ti];
        const size_t md = (size_t)M * sh->D * ts;
        /* fidelity on the first layer, and the bytes every layer must read */
        s = run_block(&b, &Ls[0], M, 1);
        if (s == ZMLX_OK) s = zmlx_ctx_sync(ctx);
        if (s == ZMLX_OK) s = zmlx_mem_download(ctx, h1, b.out, md);
        if (s == ZMLX_OK) s = zmlx_mem_download(ctx, r1, b.r, md);
        if (s == ZMLX_OK) s = run_block(&b, &Ls[0], M, 0);
        if (s == ZMLX_OK) s = zmlx_ctx_sync(ctx);
        if (s == ZMLX_OK) s = zmlx_mem_download(ctx, h2, b.out, md);
        if (s != ZMLX_OK) break;
        if (memcmp(h1, h2, md) != 0) {
            fprintf(stderr, "zmlx bench: FIDELITY FAIL at M=%lld: fused MoE output differs from "
                    "the unfused one on layer 0\n", (long long)M);
            rc = 1;
            break;
        }
        if (zmlx_mem_download(ctx, h2, b.r, md) != ZMLX_OK || memcmp(r1, h2, md) != 0) {
            fprintf(stderr, "zmlx bench: FIDELITY FAIL at M=%lld: add_rms_norm residual differs "
                    "from zmlx_add\n", (long long)M);
            rc = 1;
            break;
        }
        double bytes = 0;
        for (long long l = 0; l < layers && s == ZMLX_OK; l++) {
            /* route layer l for real to count the experts it touches */
            s = run_block(&b, &Ls[l], M, 1);
            if (s == ZMLX_OK) s = zmlx_ctx_sync(ctx);
            if (s == ZMLX_OK) s = zmlx_mem_download(ctx, hidx, b.idx, (size_t)M * sh->k * 4);
            memset(seen, 0, (size_t)sh->E);
            int uniq = 0;
            for (int64_t i = 0; i < M * sh->k; i++) uniq += !seen[hidx[i]], seen[hidx[i]] = 1;
            bytes += (double)uniq * (double)expert_bytes + (double)router_bytes +
                     (double)(sh->D * ts) /* norm weight */ +
                     (double)M * (double)(2 * sh->D * ts + sh->k * sh->I * ts); /* x, res, h */
        }
        rows[ti].M = (int)M;
        rows[ti].bytes = bytes / (double)layers;
        double bw0 = 0, bw1 = 0;
        if (s == ZMLX_OK) s = zmlx_measure_bandwidth(ctx, 0, &bw0);
        if (s == ZMLX_OK) s = time_passes(&b, Ls, (int)layers, M, (int)reps, rows[ti].st, rows[ti].pr);
        if (s == ZMLX_OK) s = zmlx_measure_bandwidth(ctx, 0, &bw1);
        rows[ti].bw = bw0 > bw1 ? bw0 : bw1;
    }
    fprintf(stderr, "\r%60s\r", "");
    if (s != ZMLX_OK) {
        fprintf(stderr, "zmlx bench: %s\n", zmlx_status_str(s));
        rc = 1;
    }
    if (!rc) {
        printf("%s %s %d-bit gs%d %s, backend %s, %lld layers, bandwidth %.1f GB/s at start "
               "(per row: bw_GB/s, measured around it)\n",
               sh->name, zmlx_qmode_name(mode), (int)bits, (int)gs, zmlx_dtype_name(T), bname,
               layers, bw);
        printf("%5s %10s %10s %8s %21s %9s %8s %7s %8s %9s %10s\n", "M", "fused_us", "unfused_us", "speedup",
               "paired [95% interval]", "fused_GB/s", "bw_GB/s", "ratio", "MB/layer", "floor_us", "fused/floor");
        for (int ti = 0; ti < n_tokens; ti++) {
            const row *rw = &rows[ti];
            double gbps = rw->bytes / (rw->st[0][0] * 1e3), floor_us = rw->bytes / (rw->bw * 1e3);
            printf("%5d %10.1f %10.1f %8.3f %6.3f [%5.3f,%5.3f] %9.2f %8.2f %7.3f %8.2f %9.1f %10.2f\n", rw->M,
                   rw->st[0][0], rw->st[1][0], rw->st[1][0] / rw->st[0][0], rw->pr[0], rw->pr[1], rw->pr[2], gbps,
                   rw->bw, gbps / rw->bw, rw->bytes / 1e6, floor_us, rw->st[0][0] / floor_us);
        }
    }
    if (!rc && json) {
        FILE *jf = fopen(json, "w");
        if (!jf) {
            fprintf(stderr, "zmlx bench: cannot write %s\n", json);
            rc = 1;
        } else {
            /* the activation form of the CPU kernel of the experts' down
               projection (probe's shape now), as cq_pick chose it from
               ZMLX_CPU_INT_DOT, T and the ISA (src/cpu/NOTES.md), and that ISA */
            const char *cpu_xdot = "none";
            if (bk == ZMLX_BACKEND_CPU) {
                const cq_kernel *kern = cq_pick(&probe, T);
                cpu_xdot = cq_xform_bf16(kern->xform)    ? "bf16"
                           : !cq_xform_int16(kern->xform) ? "f32"
                           : kern->pieces == 2            ? "int16x2"
                                                          : "int16";
            }
            cli_capsule_head(jf, "moe-layer", on_dev);
            fprintf(jf, "  \"backend\": \"%s\",\n  \"shape\": \"%s\",\n  \"mode\": \"%s\",\n"
                    "  \"bits\": %d,\n  \"group_size\": %d,\n  \"dtype\": \"%s\",\n  \"layers\": %lld,\n"
                    "  \"threads\": %lld,\n  \"reps\": %lld,\n  \"cpu_isa\": \"%s\",\n  \"cpu_xdot\": \"%s\",\n"
                    "  \"bandwidth_gbps\": %.3f,\n  \"results\": [\n",
                    bname, sh->name, zmlx_qmode_name(mode), (int)bits, (int)gs, zmlx_dtype_name(T),
                    layers, threads, reps, bk == ZMLX_BACKEND_CPU ? cq_isa_name(cq_isa_active()) : "none",
                    cpu_xdot, bw);
            for (int ti = 0; ti < n_tokens; ti++) {
                const row *rw = &rows[ti];
                double gbps = rw->bytes / (rw->st[0][0] * 1e3), floor_us = rw->bytes / (rw->bw * 1e3);
                fprintf(jf, "    {\"tokens\": %d, \"bandwidth_gbps\": %.3f, \"fused_us\": %.2f, "
                        "\"unfused_us\": %.2f, "
                        "\"fused_gbps\": %.3f, \"fused_ratio\": %.4f, \"unfused_gbps\": %.3f, "
                        "\"speedup\": %.4f, \"speedup_paired\": %.4f, \"speedup_paired_lo\": %.4f, "
                        "\"speedup_paired_hi\": %.4f, \"bytes_per_layer\": %.0f, \"floor_us\": %.2f, "
                        "\"fused_us_min\": %.2f, \"fused_us_max\": %.2f, \"unfused_us_min\": %.2f, "
                        "\"unfused_us_max\": %.2f}%s\n",
                        rw->M, rw->bw, rw->st[0][0], rw->st[1][0], gbps, gbps / rw->bw,
                        rw->bytes / (rw->st[1][0] * 1e3), rw->st[1][0] / rw->st[0][0], rw->pr[0], rw->pr[1],
                        rw->pr[2], rw->bytes, floor_us,
                        rw->st[0][1], rw->st[0][2], rw->st[1][1], rw->st[1][2], ti + 1 < n_tokens ? "," : "");
            }
            fprintf(jf, "  ]\n}\n");
            fclose(jf);
        }
    }

    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) zmlx_mem_free(ctx, *outs[i]);
    zmlx_mem_free(ctx, b.x);
    zmlx_mem_free(ctx, b.res);
    for (long long l = 0; Ls && l < layers; l++) {
        free_weight(ctx, &Ls[l].wg);
        free_weight(ctx, &Ls[l].wu);
        free_weight(ctx, &Ls[l].wd);
        free_weight(ctx, &Ls[l].wr);
        zmlx_mem_free(ctx, Ls[l].norm_w);
        zmlx_mem_free(ctx, Ls[l].rbias);
    }
    free(Ls);
    free(rows);
    free(h1);
    free(h2);
    free(r1);
    free(hidx);
    free(seen);
    free(f.stage);
    zmlx_ctx_free(ctx);
    return rc;
}

CLI_COMMAND(bench, "benchmarks: bench moe-layer (MoE block fused vs unfused), bench decode (whole model)")

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: zmlx bench moe-layer|decode [options]   (--help for options)\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "moe-layer")) return bench_moe_layer(argc - 1, argv + 1);
    if (!strcmp(argv[1], "decode")) return bench_decode(argc - 1, argv + 1);
    fprintf(stderr, "zmlx bench: '%s' is not supported yet (available: moe-layer, decode)\n", argv[1]);
    return 2;
}
