/*
 * ref_kv.c — the per-sequence caches, used as they are by every host
 * backend: the KV-cache append (rows [n_tok, H, hd] of a k/v projection
 * scattered into the per-head cache [H, cap, hd] at positions pos.., a plain
 * copy) and LFM2's short convolution with its state of the last Bx rows.
 */
#include "cpu/ref.h"

#include <math.h>

zmlx_status zr_kv_append(zmlx_ctx *c, zmlx_dtype T, const void *rows, int64_t n_tok, int H, int hd,
                         void *cache, int64_t cap, int64_t pos) {
    (void)c;
    const size_t es = zmlx_dtype_size(T), row = (size_t)hd * es;
    const char *src = rows;
    char *dst = cache;
    for (int64_t t = 0; t < n_tok; t++)
        for (int h = 0; h < H; h++)
            memcpy(dst + ((size_t)h * (size_t)cap + (size_t)(pos + t)) * row,
                   src + ((size_t)t * (size_t)H + (size_t)h) * row, row);
    return ZMLX_OK;
}

/* One channel at a time: its window of the last L-1 Bx values (from state),
 * then the tokens in order, so a call over a piece of a sequence leaves the
 * window the next piece needs. */
zmlx_status zr_short_conv(zmlx_ctx *c, zmlx_dtype T, const void *bcx, int64_t n_tok, int64_t D, int L,
                          const void *w, void *state, void *y) {
    (void)c;
    for (int64_t d = 0; d < D; d++) {
        float win[ZMLX_SHORT_CONV_MAX_L], wt[ZMLX_SHORT_CONV_MAX_L];
        for (int j = 0; j < L - 1; j++) win[j] = zc_load(T, state, (int64_t)j * D + d);
        for (int j = 0; j < L; j++) wt[j] = zc_load(T, w, d * L + j);
        for (int64_t t = 0; t < n_tok; t++) {
            const int64_t row = t * 3 * D;
            win[L - 1] = zc_round(T, zc_load(T, bcx, row + d) * zc_load(T, bcx, row + 2 * D + d));
            float acc = 0.0f;
            for (int j = 0; j < L; j++) acc = fmaf(wt[j], win[j], acc);
            zc_store(T, y, t * D + d, zc_load(T, bcx, row + D + d) * zc_round(T, acc));
            for (int j = 0; j < L - 1; j++) win[j] = win[j + 1];
        }
        for (int j = 0; j < L - 1; j++) zc_store(T, state, (int64_t)j * D + d, win[j]);
    }
    return ZMLX_OK;
}
