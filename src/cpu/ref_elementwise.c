/*
 * ref_elementwise.c — elementwise reference kernels.
 */
#include "cpu/ref.h"

/* out = round_T(a + b), the add that add_rms_norm fuses. */
zmlx_status zr_add(zmlx_ctx *c, zmlx_dtype T, const void *a, const void *b, int64_t n, void *out) {
    (void)c;
    for (int64_t i = 0; i < n; i++) zc_store(T, out, i, zc_load(T, a, i) + zc_load(T, b, i));
    return ZMLX_OK;
}

/* The comparison every argmax uses: v beats the best so far when it is a
 * number larger than it (NaN never wins; equal values keep the lower index). */
zmlx_status zr_argmax(zmlx_ctx *c, zmlx_dtype T, const void *x, int64_t n_rows, int64_t n, int32_t *idx) {
    (void)c;
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t best = -1;
        float bv = 0.0f;
        for (int64_t i = 0; i < n; i++) {
            float v = zc_load(T, x, r * n + i);
            if (v == v && (best < 0 || v > bv)) best = i, bv = v;
        }
        idx[r] = best < 0 ? 0 : (int32_t)best;
    }
    return ZMLX_OK;
}

zmlx_status zr_i32_add(zmlx_ctx *c, int32_t *x, int64_t n, int32_t delta) {
    (void)c;
    for (int64_t i = 0; i < n; i++) x[i] = (int32_t)((uint32_t)x[i] + (uint32_t)delta);
    return ZMLX_OK;
}
