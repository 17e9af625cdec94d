/*
 * backend_cuda.cu — the CUDA backend's table and everything in it that is not
 * a kernel: init/destroy (stream, device properties, scratch), device memory,
 * host<->device copies, the KV-cache append, sync (which also reports data errors that kernels
 * flagged, e.g. NaN router logits), the copy-bandwidth probe and CUDA graph
 * capture on the context's stream. Also zmlx_cuda_available().
 */
#include "cuda/cuda_internal.cuh"

#include <stdlib.h>
#ifdef ZMLX_CUDA_TRACE
#include <cxxabi.h>
#include <stdio.h>
#include <algorithm>
#include <vector>
#endif

struct zmlx_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
#ifdef ZMLX_CUDA_TRACE
    int id, replays;
    int n_kern;           /* kernel nodes in dependency order: */
    char **kname;         /* their demangled names (template arguments kept) */
    unsigned long long *kblocks;
#endif
};

#ifdef ZMLX_CUDA_TRACE
/* ------------------------------------------------------------- trace
 * (cmake -DZMLX_CUDA_TRACE=ON; cuda_internal.cuh). With ZMLX_CUDA_TRACE=path
 * in the environment every graph replay is followed by a sync, and its
 * timeline is appended to path: a line per kernel in dependency order with
 * its block count and, relative to the replay's first wait, its first block's
 * arrival at the wait and its first and last blocks' release from it, in us.
 * A kernel's release is when the one before it had completed, so the gap
 * between two kernels' first releases is what the first cost the chain.
 * Blocks are matched to kernels by sorting all stamps by release (kernel
 * i + 1's blocks all pass their wait after every block of kernel i has).
 * After a kernel's line, "m id count p50 max" for each mark id its blocks
 * reached (zcu_trace_mark), us after the kernel's first release. */
struct trace_tu {
    const void *on, *n, *buf;
};
static trace_tu trace_tus[32];
static int trace_ntu;
int zcu_trace_register(const void *on, const void *n, const void *buf) {
    if (trace_ntu < 32) trace_tus[trace_ntu++] = {on, n, buf};
    return trace_ntu;
}
static void trace_set(int on) {
    const unsigned zero = 0;
    for (int t = 0; t < trace_ntu; t++) {
        cudaMemcpyToSymbol(trace_tus[t].on, &on, sizeof on);
        if (on) cudaMemcpyToSymbol(trace_tus[t].n, &zero, sizeof zero);
    }
}
/* g's kernel nodes in dependency order (Kahn's order over its edges) */
static void trace_kernels(zmlx_graph *zg) {
    size_t nn = 0, ne = 0;
    cudaGraphGetNodes(zg->graph, NULL, &nn);
    cudaGraphGetEdges(zg->graph, NULL, NULL, NULL, &ne);
    std::vector<cudaGraphNode_t> nodes(nn), from(ne), to(ne);
    std::vector<cudaGraphEdgeData> ed(ne);
    cudaGraphGetNodes(zg->graph, nodes.data(), &nn);
    if (ne) cudaGraphGetEdges(zg->graph, from.data(), to.data(), ed.data(), &ne);
    /* each edge's endpoints as node indices, found once */
    auto at = [&](cudaGraphNode_t x) { return (int)(std::find(nodes.begin(), nodes.end(), x) - nodes.begin()); };
    std::vector<int> fi(ne), ti(ne), indeg(nn, 0), order;
    for (size_t e = 0; e < ne; e++) fi[e] = at(from[e]), ti[e] = at(to[e]), indeg[ti[e]]++;
    for (size_t i = 0; i < nn; i++)
        if (!indeg[i]) order.push_back((int)i);
    for (size_t q = 0; q < order.size(); q++) /* order grows as nodes become ready */
        for (size_t e = 0; e < ne; e++)
            if (fi[e] == order[q] && --indeg[ti[e]] == 0) order.push_back(ti[e]);
    zg->kname = (char **)calloc(nn + 1, sizeof(char *));
    zg->kblocks = (unsigned long long *)calloc(nn + 1, sizeof(unsigned long long));
    if (!zg->kname || !zg->kblocks) return; /* no timeline (n_kern 0: every stamp a mismatch) */
    for (int i : order) {
        cudaGraphNodeType ty;
        cudaKernelNodeParams kp;
        if (cudaGraphNodeGetType(nodes[i], &ty) != cudaSuccess || ty != cudaGraphNodeTypeKernel ||
            cudaGraphKernelNodeGetParams(nodes[i], &kp) != cudaSuccess)
            continue;
        const char *mangled = "?";
        cudaFuncGetName(&mangled, kp.func);
        int st = 0;
        char *dem = abi::__cxa_demangle(mangled, NULL, NULL, &st);
        zg->kname[zg->n_kern] = dem ? dem : strdup(mangled);
        zg->kblocks[zg->n_kern++] = (unsigned long long)kp.gridDim.x * kp.gridDim.y * kp.gridDim.z;
    }
    (void)cudaGetLastError();
}
/* after a replay of g: the stamps back, matched to its kernels, appended to
   the file named by ZMLX_CUDA_TRACE */
static void trace_write(zmlx_graph *g, const char *path) {
    std::vector<zcu_trace_rec> rec;
    for (int t = 0; t < trace_ntu; t++) {
        unsigned n = 0;
        cudaMemcpyFromSymbol(&n, trace_tus[t].n, sizeof n);
        if (n > ZCU_TRACE_MAX) n = ZCU_TRACE_MAX;
        const size_t at = rec.size();
        rec.resize(at + n);
        if (n) cudaMemcpyFromSymbol(rec.data() + at, trace_tus[t].buf, n * sizeof(zcu_trace_rec));
    }
    std::sort(rec.begin(), rec.end(), [](const zcu_trace_rec &a, const zcu_trace_rec &b) { return a.wait < b.wait; });
    FILE *f = fopen(path, "a");
    if (!f) return;
    unsigned long long want = 0;
    for (int k = 0; k < g->n_kern; k++) want += g->kblocks[k];
    fprintf(f, "# graph %d replay %d: %d kernels, %llu blocks, %zu stamps%s\n", g->id, g->replays, g->n_kern, want,
            rec.size(), want == rec.size() ? "" : " (MISMATCH: not every block stamped; no timeline)");
    if (want == rec.size() && !rec.empty()) {
        const unsigned long long t0 = rec[0].wait;
        size_t r = 0;
        for (int k = 0; k < g->n_kern; k++) {
            unsigned long long arrive = ~0ull, first = ~0ull, last = 0;
            std::vector<unsigned long long> mk[ZCU_TRACE_MARKS];
            for (unsigned long long b = 0; b < g->kblocks[k]; b++, r++) {
                arrive = std::min(arrive, rec[r].entry), first = std::min(first, rec[r].wait);
                last = std::max(last, rec[r].wait);
                for (int m = 0; m < ZCU_TRACE_MARKS; m++)
                    if (rec[r].mark[m]) mk[m].push_back(rec[r].mark[m]);
            }
            fprintf(f, "%d %llu %.3f %.3f %.3f %s\n", k, g->kblocks[k], ((double)arrive - (double)t0) * 1e-3,
                    ((double)first - (double)t0) * 1e-3, ((double)last - (double)t0) * 1e-3, g->kname[k]);
            for (int m = 0; m < ZCU_TRACE_MARKS; m++) {
                if (mk[m].empty()) continue;
                std::sort(mk[m].begin(), mk[m].end());
                fprintf(f, "m %d %zu %.3f %.3f\n", m + 1, mk[m].size(),
                        ((double)mk[m][mk[m].size() / 2] - (double)first) * 1e-3,
                        ((double)mk[m].back() - (double)first) * 1e-3);
            }
        }
    }
    fclose(f);
}
#endif

zmlx_status zcu_scratch(zmlx_ctx *c, int i, size_t bytes, void **out) {
    zcu_buf *b = &zcu_state_of(c)->scratch[i];
    if (b->bytes < bytes) {
        /* keep the old buffer alive (a captured graph may reference it) */
        zcu_buf *old = (zcu_buf *)malloc(sizeof *old);
        if (!old) return ZMLX_ERR_OOM;
        *old = *b;
        void *p = NULL;
        size_t want = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes + bytes / 4;
        cudaError_t e = cudaMalloc(&p, want);
        if (e != cudaSuccess) {
            free(old);
            return zcu_status(e);
        }
        b->p = p;
        b->bytes = want;
        b->older = old;
    }
    *out = b->p;
    return ZMLX_OK;
}

int zcu_pdl_enabled(unsigned fam) {
    static const unsigned mask = getenv("ZMLX_NO_PDL") ? 0u
                                 : getenv("ZMLX_PDL") ? (unsigned)strtoul(getenv("ZMLX_PDL"), NULL, 0)
                                                     : (unsigned)(ZCU_PDL_QMM | ZCU_PDL_OPS | ZCU_PDL_ATTN);
    return (mask & fam) != 0;
}

/* ------------------------------------------------------------ memory */

static zmlx_status cu_mem_alloc(zmlx_ctx *c, size_t bytes, void **out) {
    (void)c;
    ZCU_TRY(cudaMalloc(out, bytes));
    return ZMLX_OK;
}

static void cu_mem_free(zmlx_ctx *c, void *p) {
    /* free must not run while the stream still uses p */
    cudaStreamSynchronize(zcu_state_of(c)->stream);
    cudaFree(p);
}

static zmlx_status cu_upload(zmlx_ctx *c, void *dst, const void *src, size_t bytes) {
    zcu_state *s = zcu_state_of(c);
    ZCU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s->stream));
    ZCU_TRY(cudaStreamSynchronize(s->stream));
    return ZMLX_OK;
}

static zmlx_status cu_download(zmlx_ctx *c, void *dst, const void *src, size_t bytes) {
    zcu_state *s = zcu_state_of(c);
    ZCU_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s->stream));
    ZCU_TRY(cudaStreamSynchronize(s->stream));
    return ZMLX_OK;
}

/* Waits for the stream, then reports (and clears) a data error a kernel
 * flagged since the last sync: ZMLX_ERR_RANGE for non-finite router logits. */
static zmlx_status cu_sync(zmlx_ctx *c) {
    zcu_state *s = zcu_state_of(c);
    ZCU_TRY(cudaStreamSynchronize(s->stream));
    int flag = 0;
    ZCU_TRY(cudaMemcpy(&flag, s->err_flag, sizeof flag, cudaMemcpyDeviceToHost));
    if (flag) {
        ZCU_TRY(cudaMemset(s->err_flag, 0, sizeof(int)));
        return ZMLX_ERR_RANGE;
    }
    return ZMLX_OK;
}

/* Device-to-device copy of `bytes`, median of 9 after a warm-up, counted as
 * bytes read + bytes written. */
static zmlx_status cu_measure_bandwidth(zmlx_ctx *c, size_t bytes, double *gbps) {
    zcu_state *s = zcu_state_of(c);
    if (bytes == 0) bytes = (size_t)1 << 30;
    if (bytes < 4096) return ZMLX_ERR_INVALID_ARG;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    enum { REPS = 9 };
    float ms[REPS];
    zmlx_status st = ZMLX_OK;
#define BW_TRY(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { st = zcu_status(e_); goto out; } } while (0)
    BW_TRY(cudaMalloc(&a, bytes));
    BW_TRY(cudaMalloc(&b, bytes));
    BW_TRY(cudaMemsetAsync(a, 0x5a, bytes, s->stream));
    BW_TRY(cudaEventCreate(&e0));
    BW_TRY(cudaEventCreate(&e1));
    BW_TRY(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s->stream));
    for (int r = 0; r < REPS; r++) {
        BW_TRY(cudaEventRecord(e0, s->stream));
        BW_TRY(cudaMemcpyAsync(r & 1 ? a : b, r & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice, s->stream));
        BW_TRY(cudaEventRecord(e1, s->stream));
        BW_TRY(cudaEventSynchronize(e1));
        BW_TRY(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    for (int i = 1; i < REPS; i++)
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            float t = ms[j]; ms[j] = ms[j - 1]; ms[j - 1] = t;
        }
    *gbps = 2.0 * (double)bytes / ((double)ms[REPS / 2] * 1e-3) / 1e9;
#undef BW_TRY
out:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return st;
}

/* KV-cache append: per head one strided 2-D copy, rows[t, h, :] ->
 * cache[h, pos + t, :] (ops.c checked pos and the sizes). */
static zmlx_status cu_kv_append(zmlx_ctx *c, zmlx_dtype T, const void *rows, int64_t n_tok, int H,
                                int hd, void *cache, int64_t cap, int64_t pos) {
    const size_t row = (size_t)hd * zmlx_dtype_size(T);
    for (int h = 0; h < H; h++)
        ZCU_TRY(cudaMemcpy2DAsync((char *)cache + ((size_t)h * (size_t)cap + (size_t)pos) * row, row,
                                  (const char *)rows + (size_t)h * row, (size_t)H * row, row,
                                  (size_t)n_tok, cudaMemcpyDeviceToDevice, zcu_state_of(c)->stream));
    return ZMLX_OK;
}

/* ------------------------------------------------------------ graphs */

static zmlx_status cu_graph_begin(zmlx_ctx *c) {
    zcu_state *s = zcu_state_of(c);
    /* relaxed: scratch may grow (cudaMalloc) while a graph is recorded */
    ZCU_TRY(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeRelaxed));
    s->capturing = 1;
    return ZMLX_OK;
}

static zmlx_status cu_graph_end(zmlx_ctx *c, zmlx_graph **out) {
    zcu_state *s = zcu_state_of(c);
    cudaGraph_t g = NULL;
    s->capturing = 0;
    ZCU_TRY(cudaStreamEndCapture(s->stream, &g));
    zmlx_graph *zg = (zmlx_graph *)calloc(1, sizeof *zg);
    if (!zg) {
        cudaGraphDestroy(g);
        return ZMLX_ERR_OOM;
    }
    zg->graph = g;
    cudaError_t e = cudaGraphInstantiate(&zg->exec, g, 0);
    if (e != cudaSuccess) {
        cudaGraphDestroy(g);
        free(zg);
        return zcu_status(e);
    }
#ifdef ZMLX_CUDA_TRACE
    static int graphs;
    zg->id = graphs++;
    trace_kernels(zg);
#endif
    *out = zg;
    return ZMLX_OK;
}

static zmlx_status cu_graph_launch(zmlx_ctx *c, zmlx_graph *g) {
#ifdef ZMLX_CUDA_TRACE
    const char *path = getenv("ZMLX_CUDA_TRACE");
    if (path && *path) {
        ZCU_TRY(cudaStreamSynchronize(zcu_state_of(c)->stream));
        trace_set(1);
        ZCU_TRY(cudaGraphLaunch(g->exec, zcu_state_of(c)->stream));
        ZCU_TRY(cudaStreamSynchronize(zcu_state_of(c)->stream));
        trace_set(0);
        trace_write(g, path);
        g->replays++;
        return ZMLX_OK;
    }
#endif
    ZCU_TRY(cudaGraphLaunch(g->exec, zcu_state_of(c)->stream));
    return ZMLX_OK;
}

static void cu_graph_free(zmlx_ctx *c, zmlx_graph *g) {
    cudaStreamSynchronize(zcu_state_of(c)->stream);
    cudaGraphExecDestroy(g->exec);
    cudaGraphDestroy(g->graph);
#ifdef ZMLX_CUDA_TRACE
    for (int k = 0; k < g->n_kern; k++) free(g->kname[k]);
    free(g->kname);
    free(g->kblocks);
#endif
    free(g);
}

/* ------------------------------------------------------ init/destroy */

static void cu_destroy(zmlx_ctx *c) {
    zcu_state *s = zcu_state_of(c);
    if (!s) return;
    if (s->stream) cudaStreamSynchronize(s->stream);
    for (int i = 0; i < ZCU_SCRATCH; i++) {
        cudaFree(s->scratch[i].p);
        for (zcu_buf *b = s->scratch[i].older; b;) {
            zcu_buf *n = b->older;
            cudaFree(b->p);
            free(b);
            b = n;
        }
    }
    cudaFree(s->err_flag);
    cudaFree(s->att_counters);
    cudaFree(s->amax);
    if (s->stream) cudaStreamDestroy(s->stream);
    free(s);
    c->backend_state = NULL;
}

static zmlx_backend make_table(void) {
    zmlx_backend t;
    memset(&t, 0, sizeof t);
    t.name = "cuda";
    t.gather_qmm = zcu_gather_qmm;
    t.gather_qmm_swiglu = zcu_gather_qmm_swiglu;
    t.glu_act = zcu_glu_act;
    t.gather_qmm_combine = zcu_gather_qmm_combine;
    t.moe_combine = zcu_moe_combine;
    t.add_rms_norm = zcu_add_rms_norm;
    t.add = zcu_add;
    t.rms_norm = zcu_rms_norm;
    t.softmax = zcu_softmax;
    t.moe_route = zcu_moe_route;
    t.rope = zcu_rope;
    t.attention_decode = zcu_attention_decode;
    t.embed_lookup = zcu_embed_lookup;
    t.kv_append = cu_kv_append;
    t.attention_step = zcu_attention_step;
    t.attention_prefill = zcu_attention_prefill;
    t.argmax = zcu_argmax;
    t.i32_add = zcu_i32_add;
    t.short_conv = zcu_short_conv;
    t.qmm_argmax = zcu_qmm_argmax;
    t.mem_alloc = cu_mem_alloc;
    t.mem_free = cu_mem_free;
    t.upload = cu_upload;
    t.download = cu_download;
    t.sync = cu_sync;
    t.measure_bandwidth = cu_measure_bandwidth;
    t.graph_begin = cu_graph_begin;
    t.graph_end = cu_graph_end;
    t.graph_launch = cu_graph_launch;
    t.graph_free = cu_graph_free;
    t.destroy = cu_destroy;
    return t;
}

extern "C" zmlx_status zmlx_cuda_backend_init(zmlx_ctx *c, char *err, size_t errlen) {
    static const zmlx_backend table = make_table();
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return zc_err(err, errlen, ZMLX_ERR_NO_DEVICE, "no CUDA device is visible (%s)",
                      e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    int dev = c->opts.device;
    if (dev < 0 || dev >= n)
        return zc_err(err, errlen, ZMLX_ERR_NO_DEVICE, "CUDA device %d requested, %d visible", dev, n);
    zcu_state *s = (zcu_state *)calloc(1, sizeof *s);
    if (!s) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory creating the CUDA state");
    c->backend_state = s;
    c->be = &table; /* destroy now owns s, whatever fails below */
    s->device = dev;
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(dev)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
        return zc_err(err, errlen, ZMLX_ERR_NO_DEVICE, "CUDA device %d: %s", dev, cudaGetErrorString(e));
    if (prop.major < 9)
        return zc_err(err, errlen, ZMLX_ERR_NO_DEVICE,
                      "CUDA device %d (%s) has compute capability %d.%d; zmlx is built for 9.0 (Hopper)",
                      dev, prop.name, prop.major, prop.minor);
    s->sm_count = prop.multiProcessorCount;
    s->l2_bytes = (size_t)prop.l2CacheSize;
    if ((e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaMalloc((void **)&s->err_flag, sizeof(int))) != cudaSuccess ||
        (e = cudaMemset(s->err_flag, 0, sizeof(int))) != cudaSuccess ||
        (e = cudaMalloc((void **)&s->att_counters, ZCU_ATT_COUNTERS * sizeof(unsigned))) != cudaSuccess ||
        (e = cudaMemset(s->att_counters, 0, ZCU_ATT_COUNTERS * sizeof(unsigned))) != cudaSuccess ||
        (e = cudaMalloc((void **)&s->amax, ZCU_AMAX_WORDS * sizeof(unsigned long long))) != cudaSuccess ||
        (e = cudaMemset(s->amax, 0, ZCU_AMAX_WORDS * sizeof(unsigned long long))) != cudaSuccess)
        return zc_err(err, errlen, zcu_status(e), "CUDA setup on device %d: %s", dev, cudaGetErrorString(e));
    return ZMLX_OK;
}

extern "C" int zmlx_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return 0;
    cudaDeviceProp prop;
    for (int d = 0; d < n; d++)
        if (cudaGetDeviceProperties(&prop, d) == cudaSuccess && prop.major >= 9) return 1;
    return 0;
}
