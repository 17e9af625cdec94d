/* cpu_qmm_avx2.c — the x86 dot routines (cpu_qmm_x86.h) built for AVX2 + FMA + F16C. */
#define CQ_AVX512 0
#define CQ_PICK cq_pick_avx2
#include "cpu/cpu_qmm_x86.h"
