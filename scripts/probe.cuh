// probe.cuh — what the stand-alone probes in scripts/ share: CK(call) exits
// with the CUDA error and the line when a runtime call fails.
#ifndef ZMLX_SCRIPTS_PROBE_CUH
#define ZMLX_SCRIPTS_PROBE_CUH
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CK(x)                                                                 \
    do {                                                                      \
        cudaError_t e_ = (x);                                                 \
        if (e_ != cudaSuccess) {                                              \
            printf("CUDA %s at line %d\n", cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#endif
