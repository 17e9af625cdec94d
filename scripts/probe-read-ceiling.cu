// probe-read-ceiling.cu — the GPU's ceiling for the bytes one Qwen3-30B-A3B
// MoE layer reads at one token (8 of 128 experts, 4-bit gs64 with bf16 scales
// and biases: gate + up 14.2 MB, + down 21.2 MB) when a kernel does nothing
// but read them. Not part of the build; the reference that src/cuda/NOTES.md
// (v17) measures the MMV kernels against.
//
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/probe scripts/probe-read-ceiling.cu
//   /tmp/probe
//
// 48 layers' distinct weights (16 GB), one kernel per layer in a graph of 48,
// caches flushed before each replay; median of 15 replays, us per layer. A
// block of 256 threads reads one chunk of one region (its table entry: one L2
// trip, as a kernel's tile lookup), each thread issuing U 16-byte loads before
// using any. TB/s(-e) takes off the empty-kernel chain's per-launch time.
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

#include "probe.cuh"

struct blk { const uint4 *p; int n; }; // chunk start, uint4s in chunk

template <int U>
__global__ void __launch_bounds__(256) k_read(const blk *tab, unsigned *sink) {
    const blk b = tab[blockIdx.x];
    uint4 v[U];
#pragma unroll
    for (int j = 0; j < U; j++) {
        const int i = j * 256 + threadIdx.x;
        v[j] = i < b.n ? __ldg(b.p + i) : make_uint4(0, 0, 0, 0);
    }
    unsigned x = 0;
#pragma unroll
    for (int j = 0; j < U; j++) x ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
    if (x == 0x12345678u) sink[0] = x;
}
__global__ void k_empty(unsigned *sink) { if (threadIdx.x == 999) sink[0] = 1; }
__global__ void k_flush(const uint4 *p, size_t n, unsigned *sink) {
    unsigned x = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x ^= p[i].x;
    if (x == 0x12345678u) sink[0] = x;
}

int main() {
    const int L = 48, E = 128, TOP = 8, H = 2048, I = 768;
    const size_t gate_codes = (size_t)I * H / 2, gate_sb = (size_t)I * (H / 64) * 2; // per expert, bytes
    const size_t down_codes = (size_t)H * I / 2, down_sb = (size_t)H * (I / 64) * 2;
    // per layer: gate, up, down codes [E][...], and 6 scale/bias arrays
    const size_t layer_bytes = E * (2 * gate_codes + down_codes + 4 * gate_sb + 2 * down_sb);
    uint8_t *base;
    CK(cudaMalloc(&base, layer_bytes * L));
    CK(cudaMemset(base, 0x5a, layer_bytes * L));
    unsigned *sink;
    CK(cudaMalloc(&sink, 64));
    uint4 *fl;
    const size_t fl_n = (256u << 20) / 16;
    CK(cudaMalloc(&fl, fl_n * 16));
    CK(cudaMemset(fl, 1, fl_n * 16));
    // region offsets within a layer
    size_t off = 0;
    const size_t o_gc = off; off += E * gate_codes;
    const size_t o_uc = off; off += E * gate_codes;
    const size_t o_dc = off; off += E * down_codes;
    const size_t o_gs = off; off += E * gate_sb;
    const size_t o_gb = off; off += E * gate_sb;
    const size_t o_us = off; off += E * gate_sb;
    const size_t o_ub = off; off += E * gate_sb;
    const size_t o_ds = off; off += E * down_sb;
    const size_t o_db = off; off += E * down_sb;
    srand(7);
    std::vector<std::vector<int>> ex(L);
    for (int l = 0; l < L; l++) {
        std::vector<int> all(E);
        for (int e = 0; e < E; e++) all[e] = e;
        for (int i = 0; i < TOP; i++) std::swap(all[i], all[i + rand() % (E - i)]);
        ex[l].assign(all.begin(), all.begin() + TOP);
    }
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));

    // a graph of the L launches launch(l), 15 timed replays each after a flush: median us per layer
    auto time_graph = [&](auto launch) {
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (int l = 0; l < L; l++) launch(l);
        CK(cudaStreamEndCapture(st, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        std::vector<float> t;
        for (int r = 0; r < 16; r++) {
            k_flush<<<1024, 256, 0, st>>>(fl, fl_n, sink);
            CK(cudaEventRecord(e0, st));
            CK(cudaGraphLaunch(ge, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float ms;
            CK(cudaEventElapsedTime(&ms, e0, e1));
            if (r) t.push_back(ms * 1000.0f / L);
        }
        std::sort(t.begin(), t.end());
        CK(cudaGraphExecDestroy(ge));
        CK(cudaGraphDestroy(g));
        return t[t.size() / 2];
    };
    // block tables: per layer, the chunks of its regions
    struct reg { size_t o, n; };
    auto build = [&](int U, bool down, bool contiguous, bool same_layer, std::vector<blk *> &tabs, std::vector<int> &nb,
                     double &mb) {
        tabs.assign(L, nullptr);
        nb.assign(L, 0);
        for (int l = 0; l < L; l++) {
            const int ll = same_layer ? 0 : l;
            uint8_t *lb = base + (size_t)ll * layer_bytes;
            std::vector<reg> rs;
            for (int i = 0; i < TOP; i++) {
                const size_t e = contiguous ? i : ex[ll][i];
                rs.push_back({o_gc + e * gate_codes, gate_codes});
                rs.push_back({o_uc + e * gate_codes, gate_codes});
                rs.push_back({o_gs + e * gate_sb, gate_sb});
                rs.push_back({o_gb + e * gate_sb, gate_sb});
                rs.push_back({o_us + e * gate_sb, gate_sb});
                rs.push_back({o_ub + e * gate_sb, gate_sb});
                if (down) {
                    rs.push_back({o_dc + e * down_codes, down_codes});
                    rs.push_back({o_ds + e * down_sb, down_sb});
                    rs.push_back({o_db + e * down_sb, down_sb});
                }
            }
            std::vector<blk> h;
            size_t bytes = 0;
            const size_t chunk = (size_t)256 * U; // uint4s
            for (auto &r : rs) {
                bytes += r.n;
                const size_t n4 = r.n / 16;
                for (size_t c = 0; c < n4; c += chunk)
                    h.push_back({(const uint4 *)(lb + r.o) + c, (int)std::min(chunk, n4 - c)});
            }
            mb = bytes / 1e6;
            CK(cudaMalloc(&tabs[l], h.size() * sizeof(blk)));
            CK(cudaMemcpy(tabs[l], h.data(), h.size() * sizeof(blk), cudaMemcpyHostToDevice));
            nb[l] = (int)h.size();
        }
    };
    // copy bandwidth, same run
    {
        const size_t n = (size_t)2 << 30;
        CK(cudaMemcpyAsync(base + n, base, n, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(e0, st));
        for (int r = 0; r < 5; r++) CK(cudaMemcpyAsync(base + n, base, n, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        printf("copy bandwidth (read+write) %.2f TB/s\n", 2.0 * n * 5 / (ms * 1e-3) / 1e12);
    }
    const float t_empty = time_graph([&](int) { k_empty<<<1, 32, 0, st>>>(sink); });
    printf("empty kernel chain: %.2f us per launch\n", t_empty);
    printf("%-34s %4s %6s %8s %8s %9s\n", "pattern", "U", "blocks", "MB", "us", "TB/s(-e)");
    for (int down = 0; down < 2; down++)
        for (int pat = 0; pat < 3; pat++) {
            const char *pn[3] = {"random experts, 48 layers", "experts 0..7, 48 layers", "random, one layer (L2-hot)"};
            for (int U : {1, 2, 4, 8, 16}) {
                std::vector<blk *> tabs;
                std::vector<int> nb;
                double mb;
                build(U, down, pat == 1, pat == 2, tabs, nb, mb);
                float t;
                switch (U) {
#define CASE(UU) case UU: t = time_graph([&](int l) { k_read<UU><<<nb[l], 256, 0, st>>>(tabs[l], sink); }); break;
                    CASE(1) CASE(2) CASE(4) CASE(8) CASE(16)
                }
                printf("%-26s %s %4d %6d %8.2f %8.2f %9.2f\n", pn[pat], down ? "g+u+d" : "g+u  ", U, nb[0], mb, t,
                       mb / 1e6 / ((t - t_empty) * 1e-6));
                for (auto p : tabs) CK(cudaFree(p));
            }
        }
    CK(cudaDeviceSynchronize());
    return 0;
}
