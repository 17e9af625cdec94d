// probe-chain.cu — what one node of a PDL kernel chain costs when it does next
// to nothing: the hand-off, a dependent load of what the previous kernel
// wrote, a store. Not part of the build; src/cuda/NOTES.md (v19) reads it.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/probe-chain scripts/probe-chain.cu
//   /tmp/probe-chain
//
// Each variant is a graph of N kernels captured from one stream with the
// programmatic-serialisation attribute (as zcu_launch), replayed 25 times;
// us per node is the median replay's host time / N.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <chrono>
#include <utility>
#include <cuda_runtime.h>

#include "probe.cuh"

enum {
    V_EMPTY,       // wait only
    V_STORE,       // a store
    V_PREV,        // load what the previous node stored, store
    V_OLD,         // load a word written at setup (L2-hot), store
    V_PREV_CG,     // V_PREV by ld.global.cg
    V_PREV_NOST,   // load only
    V_ROW,         // 256 threads: a 4 KB row from the previous node, stored
    V_WIDE,        // 132 blocks x 32 threads, each V_PREV on its own word
    V_WIDE_ROW,    // 132 blocks x 256 threads, each a 4 KB row
    V_PREV_EARLY,  // V_PREV with launch_dependents before the wait
    V_PREV2,       // two dependent loads in a row (pointer chase of depth 2)
    V_COUNT
};
static const char *names[V_COUNT] = {"empty", "store", "prev", "old", "prev_cg", "prev_nostore", "row4k",
                                     "wide132", "wide132_row4k", "prev_early_ld", "prev_chase2"};

__device__ __forceinline__ void pdl_wait(bool early) {
    if (early) asm volatile("griddepcontrol.launch_dependents;\n\tgriddepcontrol.wait;" ::: "memory");
    else asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ unsigned ld_cg(const unsigned *p) {
    unsigned v;
    asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

template <int V>
__global__ void k_node(int i, unsigned *buf, const unsigned *old, uint4 *rows) {
    pdl_wait(V == V_PREV_EARLY);
    const int t = threadIdx.x, b = blockIdx.x;
    if (V == V_EMPTY) return;
    if (V == V_ROW || V == V_WIDE_ROW) {
        const size_t row = (size_t)(i & 1) * gridDim.x + b, prev = (size_t)((i + 1) & 1) * gridDim.x + b;
        uint4 v = rows[prev * 256 + t];
        v.x += 1;
        rows[row * 256 + t] = v;
        return;
    }
    if (t != 0) return;
    const size_t slot = (size_t)b * 2;
    unsigned *cur = buf + slot + (i & 1), *prev = buf + slot + ((i + 1) & 1);
    if (V == V_STORE) { *cur = i; return; }
    unsigned v;
    if (V == V_OLD) v = old[i & 63];
    else if (V == V_PREV_CG) v = ld_cg(prev);
    else if (V == V_PREV2) v = old[*(volatile unsigned *)prev & 63];
    else v = *(volatile unsigned *)prev;
    if (V != V_PREV_NOST || v == 0xdeadbeefu) *cur = v + 1;
}

__device__ __forceinline__ unsigned long long gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
    return t;
}
// T: one block of 256 threads; row (i&1) of 264 4 KB rows <- row ((i+1)&1)
__global__ void k_pair_t(int i, uint4 *rows, long long *lat) {
    pdl_wait(false);
    const unsigned long long t0 = gtimer();
    uint4 v;
    asm volatile("ld.global.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(rows + (size_t)((i + 1) & 1) * 256 + threadIdx.x) : "memory");
    unsigned s = v.x + v.y;
    asm volatile("add.u32 %0, %0, 1;" : "+r"(s)::"memory");
    const unsigned long long t1 = gtimer();
    v.x = s;
    rows[(size_t)(i & 1) * 256 + threadIdx.x] = v;
    if (threadIdx.x == 0) lat[i] = (long long)(t1 - t0);
}
// W: 320 blocks x 128 threads; before the wait, MODE 1/3: each thread U uint4
// loads of this pair's region; MODE 2: the same bytes by prefetch.global.L2
template <int MODE>
__global__ void k_pair_w(int i, const uint4 *rows, const uint4 *w, unsigned *sink) {
    constexpr int U = MODE == 3 ? 16 : 9; // 9 x 16 B x 128 x 320 = 5.9 MB
    const uint4 *p = w + ((size_t)(i % 48) * 320 + blockIdx.x) * 2048 + threadIdx.x;
    uint4 a[U];
    if (MODE == 1 || MODE == 3) {
#pragma unroll
        for (int j = 0; j < U; j++) a[j] = __ldcg(p + j * 128);
    } else if (MODE == 2) {
#pragma unroll
        for (int j = 0; j < U; j++) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + j * 128));
    }
    pdl_wait(false);
    const uint4 r = rows[(size_t)(i & 1) * 256 + (threadIdx.x & 255)];
    unsigned x = r.x;
    if (MODE == 1 || MODE == 3) {
#pragma unroll
        for (int j = 0; j < U; j++) x ^= a[j].x ^ a[j].w;
    }
    if (x == 0x12345678u) sink[blockIdx.x] = x;
}

// a launch of grid g x blk on st with the programmatic-serialisation attribute
struct pdl_cfg {
    cudaLaunchAttribute at;
    cudaLaunchConfig_t cfg;
    pdl_cfg(dim3 g, dim3 blk, cudaStream_t st) : at{}, cfg{} {
        at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at.val.programmaticStreamSerializationAllowed = 1;
        cfg.gridDim = g;
        cfg.blockDim = blk;
        cfg.stream = st;
        cfg.attrs = &at;
        cfg.numAttrs = 1;
    }
};

static void launch(int v, dim3 g, dim3 blk, cudaStream_t st, int i, unsigned *buf, unsigned *old, uint4 *rows) {
    pdl_cfg c(g, blk, st);
    cudaLaunchConfig_t &cfg = c.cfg;
    switch (v) {
#define CASE(x) \
    case x: CK(cudaLaunchKernelEx(&cfg, k_node<x>, i, buf, (const unsigned *)old, rows)); break;
        CASE(V_EMPTY) CASE(V_STORE) CASE(V_PREV) CASE(V_OLD) CASE(V_PREV_CG) CASE(V_PREV_NOST) CASE(V_ROW)
        CASE(V_WIDE) CASE(V_WIDE_ROW) CASE(V_PREV_EARLY) CASE(V_PREV2)
#undef CASE
    }
}

static void launch_pair(cudaStream_t st, int i, int mode, uint4 *rows, const uint4 *w, long long *lat) {
    pdl_cfg c(dim3(1), dim3(256), st);
    cudaLaunchConfig_t &cfg = c.cfg;
    CK(cudaLaunchKernelEx(&cfg, k_pair_t, i, rows, lat));
    cfg.gridDim = dim3(320);
    cfg.blockDim = dim3(128);
    unsigned *sink = (unsigned *)(rows + 2 * 264 * 256 - 512);
    if (mode == 0) CK(cudaLaunchKernelEx(&cfg, k_pair_w<0>, i, (const uint4 *)rows, w, sink));
    if (mode == 1) CK(cudaLaunchKernelEx(&cfg, k_pair_w<1>, i, (const uint4 *)rows, w, sink));
    if (mode == 2) CK(cudaLaunchKernelEx(&cfg, k_pair_w<2>, i, (const uint4 *)rows, w, sink));
    if (mode == 3) CK(cudaLaunchKernelEx(&cfg, k_pair_w<3>, i, (const uint4 *)rows, w, sink));
}

// Capture what issue(st) launches as one graph of n nodes, replay it R + 3
// times (3 warm-ups): us per node, median and best.
template <typename F>
static std::pair<double, double> time_chain(cudaStream_t st, int n, int R, F issue) {
    cudaGraph_t graph;
    cudaGraphExec_t ex;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    issue(st);
    CK(cudaStreamEndCapture(st, &graph));
    CK(cudaGraphInstantiate(&ex, graph, 0));
    std::vector<double> us;
    for (int r = 0; r < R + 3; r++) {
        CK(cudaStreamSynchronize(st));
        auto t0 = std::chrono::steady_clock::now();
        CK(cudaGraphLaunch(ex, st));
        CK(cudaStreamSynchronize(st));
        auto t1 = std::chrono::steady_clock::now();
        if (r >= 3) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / n);
    }
    std::sort(us.begin(), us.end());
    CK(cudaGraphExecDestroy(ex));
    CK(cudaGraphDestroy(graph));
    return {us[R / 2], us[0]};
}

int main() {
    const int N = 480, R = 25;
    unsigned *buf, *old;
    uint4 *rows;
    long long *lat;
    CK(cudaMalloc(&buf, 4096 * 4));
    CK(cudaMalloc(&old, 64 * 4));
    CK(cudaMalloc(&rows, (size_t)2 * 264 * 4096));
    CK(cudaMalloc(&lat, N * 8));
    CK(cudaMemset(buf, 0, 4096 * 4));
    CK(cudaMemset(old, 0, 64 * 4));
    CK(cudaMemset(rows, 0, (size_t)2 * 264 * 4096));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    printf("%-16s %10s %10s\n", "variant", "us/node", "best");
    for (int v = 0; v < V_COUNT; v++) {
        dim3 g(v == V_WIDE || v == V_WIDE_ROW ? 132 : 1), blk(v == V_ROW || v == V_WIDE_ROW ? 256 : 32);
        const auto t = time_chain(st, N, R, [&](cudaStream_t s) {
            for (int i = 0; i < N; i++) launch(v, g, blk, s, i, buf, old, rows);
        });
        printf("%-16s %10.3f %10.3f\n", names[v], t.first, t.second);
    }

    // Pairs: a one-block node T (256 threads: a 4 KB row from the previous
    // W, stored) then a wide node W (320 blocks x 128 threads: before its wait
    // it takes part of a 48-layer "weight" buffer (mode), after it each block
    // reads T's row and stores a word). T's latency: globaltimer ns from its
    // release to its row being in, median over pairs.
    {
        const size_t wb = (size_t)48 * 320 * 32768;
        uint4 *w;
        CK(cudaMalloc(&w, wb));
        CK(cudaMemset(w, 1, wb));
        printf("%-16s %10s %10s %10s\n", "pair (T + W)", "us/pair", "best", "T_lat_ns");
        // mode 0: W takes nothing early; 1: 5.9 MB by loads; 2: 5.9 MB by prefetch.L2; 3: 10.5 MB by loads
        for (int mode = 0; mode < 4; mode++) {
            const int P = 96;
            const auto t = time_chain(st, P, R, [&](cudaStream_t s) {
                for (int i = 0; i < P; i++) launch_pair(s, i, mode, rows, w, lat);
            });
            std::vector<long long> l(P);
            CK(cudaMemcpy(l.data(), lat, P * 8, cudaMemcpyDeviceToHost));
            std::sort(l.begin(), l.end());
            static const char *mn[4] = {"none", "loads6MB", "prefetch6MB", "loads10MB"};
            printf("%-16s %10.3f %10.3f %10lld\n", mn[mode], t.first, t.second, l[P / 2]);
        }
    }
    return 0;
}
