/* cpu_qmm_avx512.c — the x86 dot routines (cpu_qmm_x86.h) built for AVX-512
 * F/DQ/BW/VL + VNNI: bit-identical to the AVX2 build, fewer instructions. */
#define CQ_AVX512 1
#define CQ_PICK cq_pick_avx512
#include "cpu/cpu_qmm_x86.h"
