/*
 * quantize.c — the public quantization API: mode names, validation of weight
 * views (FORMATS.md §A.1-A.2), storage sizes, zmlx_quantize (dispatching to
 * affine.c / fp.c row by row) and zmlx_dequantize (host, via decode.c).
 *
 * Status conventions of this file:
 *   ZMLX_ERR_INVALID_ARG  NULL pointer, bad enum, a bits/group_size/mode
 *                         combination MLX does not define, biases given for an
 *                         fp mode or missing for affine, a global scale outside
 *                         nvfp4 (or negative / non-finite), a device view given
 *                         to zmlx_dequantize
 *   ZMLX_ERR_SHAPE        E/N/K/rows/cols < 1, quantized dimension not a
 *                         multiple of group_size, sizes overflowing, a scale or
 *                         src/dst dtype wrong for its role
 *   ZMLX_ERR_UNSUPPORTED  zmlx_qmode_parse of a name that is not one of ours
 *   ZMLX_ERR_RANGE        zmlx_dequantize expert out of [0, E); zmlx_quantize
 *                         (affine) of a group holding NaN/Inf or whose range
 *                         overflows f32 — MLX would store garbage. The rows
 *                         before the offending one are written, the rest of
 *                         the outputs are unspecified. fp modes encode NaN/Inf
 *                         as MLX does (FORMATS.md §A.6) and never fail on data.
 */
#include "quant/quant.h"

#include <stdlib.h>

static const char *const qmode_names[ZMLX_QMODE_COUNT_] = {"affine", "mxfp4", "mxfp8", "nvfp4"};

const char *zmlx_qmode_name(zmlx_qmode m) {
    return (unsigned)m < ZMLX_QMODE_COUNT_ ? qmode_names[m] : "?";
}

zmlx_status zmlx_qmode_parse(const char *name, zmlx_qmode *out) {
    if (!name || !out) return ZMLX_ERR_INVALID_ARG;
    for (int m = 0; m < ZMLX_QMODE_COUNT_; m++)
        if (!strcmp(name, qmode_names[m])) {
            *out = (zmlx_qmode)m;
            return ZMLX_OK;
        }
    return ZMLX_ERR_UNSUPPORTED;
}

static int valid_bits(int bits) { return bits >= 2 && bits <= 8 && bits != 7; }

/* Mode, bits, group size, scale dtype, bias presence and global scale — what
 * zmlx_qweight_check and zmlx_quantize share. */
static zmlx_status check_format(zmlx_qmode mode, int bits, int group_size, zmlx_dtype scale_t,
                                int has_biases, float global_scale, char *err, size_t errlen) {
    if ((unsigned)mode >= ZMLX_QMODE_COUNT_)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "quantization mode %d is not defined", (int)mode);
    const char *name = qmode_names[mode];
    if (mode == ZMLX_QMODE_AFFINE) {
        if (!valid_bits(bits))
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "affine bits %d not in {2,3,4,5,6,8}", bits);
        if (group_size != 32 && group_size != 64 && group_size != 128)
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "affine group_size %d not in {32,64,128}",
                          group_size);
        if (!zmlx_dtype_is_float(scale_t))
            return zc_err(err, errlen, ZMLX_ERR_SHAPE, "affine scales must be f32/f16/bf16, not %s",
                          zmlx_dtype_name(scale_t));
        if (!has_biases) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "affine weight without biases");
    } else {
        int want_bits = mode == ZMLX_QMODE_MXFP8 ? 8 : 4, want_gs = mode == ZMLX_QMODE_NVFP4 ? 16 : 32;
        if (bits != want_bits)
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "%s needs bits %d, got %d", name, want_bits, bits);
        if (group_size != want_gs)
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "%s needs group_size %d, got %d", name, want_gs,
                          group_size);
        if (scale_t != ZMLX_U8)
            return zc_err(err, errlen, ZMLX_ERR_SHAPE, "%s scales must be u8, not %s", name,
                          zmlx_dtype_name(scale_t));
        if (has_biases) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "%s takes no biases", name);
    }
    if (mode != ZMLX_QMODE_NVFP4 && global_scale != 0.0f)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "global_scale is only defined for nvfp4, not %s", name);
    if (!(isfinite(global_scale) && global_scale >= 0.0f))
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "global_scale %g must be finite and >= 0",
                      (double)global_scale);
    return ZMLX_OK;
}

/* n_mat matrices of rows x cols codes: cols a multiple of group_size (then
 * cols*bits is whole uint32 words, as group_size >= 16) and every size
 * representable. Assumes check_format passed. */
static zmlx_status check_dims(int64_t n_mat, int64_t rows, int64_t cols, int group_size, char *err,
                              size_t errlen) {
    if (n_mat < 1 || rows < 1 || cols < 1)
        return zc_err(err, errlen, ZMLX_ERR_SHAPE, "dimensions must be >= 1 (got %lld x %lld x %lld)",
                      (long long)n_mat, (long long)rows, (long long)cols);
    if (cols % group_size)
        return zc_err(err, errlen, ZMLX_ERR_SHAPE, "quantized dimension %lld is not a multiple of group_size %d",
                      (long long)cols, group_size);
    /* bound every element count by 2^62 / 8 so byte and bit offsets fit int64 */
    const int64_t lim = INT64_C(1) << 58;
    if (cols > lim || rows > lim / cols || n_mat > lim / (rows * cols))
        return zc_err(err, errlen, ZMLX_ERR_SHAPE, "quantized weight of %lld x %lld x %lld is too large",
                      (long long)n_mat, (long long)rows, (long long)cols);
    return ZMLX_OK;
}

zmlx_status zmlx_qweight_check(const zmlx_qweight *w, char *err, size_t errlen) {
    if (!w) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "quantized weight view is NULL");
    zmlx_status s = check_format(w->mode, w->bits, w->group_size, w->scale_dtype, w->biases != NULL,
                                 w->global_scale, err, errlen);
    if (s != ZMLX_OK) return s;
    if (w->transpose != 0 && w->transpose != 1)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "transpose must be 0 or 1, got %d", w->transpose);
    if (w->on_device != 0 && w->on_device != 1)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "on_device must be 0 or 1, got %d", w->on_device);
    if (!w->w || !w->scales)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "quantized weight has a NULL %s pointer",
                      w->w ? "scales" : "w");
    /* MLX stores codes as uint32 words: the kernels load them as words (or
     * wider), and scales / biases as elements of their dtype. */
    const uintptr_t sa = (uintptr_t)zmlx_dtype_size(w->scale_dtype) - 1;
    if ((uintptr_t)w->w & 3)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "quantized weight's codes (w) are not 4-byte aligned");
    if (((uintptr_t)w->scales & sa) || ((uintptr_t)w->biases & sa))
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "quantized weight's %s are not aligned to their dtype",
                      (uintptr_t)w->scales & sa ? "scales" : "biases");
    return check_dims(w->E, zq_rows(w), zq_cols(w), w->group_size, err, errlen);
}

/* Both sizes share check_dims' bound: at most 2^58 elements. */
size_t zmlx_quant_packed_bytes(int bits, int64_t rows, int64_t cols) {
    if (!valid_bits(bits) || rows < 1 || cols < 1) return 0;
    if (cols > (INT64_C(1) << 58) || rows > (INT64_C(1) << 58) / cols || (cols * bits) % 32) return 0;
    return (size_t)(rows * (cols * bits / 8));
}

size_t zmlx_quant_scales_count(int group_size, int64_t rows, int64_t cols) {
    if ((group_size != 16 && group_size != 32 && group_size != 64 && group_size != 128) || rows < 1 ||
        cols < 1 || cols % group_size)
        return 0;
    if (cols > (INT64_C(1) << 58) || rows > (INT64_C(1) << 58) / cols) return 0;
    return (size_t)(rows * (cols / group_size));
}

zmlx_status zmlx_quantize(zmlx_qmode mode, int bits, int group_size, zmlx_dtype src_t, const void *src,
                          int64_t rows, int64_t cols, zmlx_dtype scale_t, void *w_out, void *scales_out,
                          void *biases_out, const zmlx_quant_opts *opts) {
    zmlx_quant_opts o = {ZMLX_AFFINE_GPU, 0.0f};
    if (opts) o = *opts;
    if (o.affine_variant != ZMLX_AFFINE_GPU && o.affine_variant != ZMLX_AFFINE_CPU) return ZMLX_ERR_INVALID_ARG;
    zmlx_status s = check_format(mode, bits, group_size, scale_t, biases_out != NULL, o.global_scale, NULL, 0);
    if (s != ZMLX_OK) return s;
    if (!src || !w_out || !scales_out) return ZMLX_ERR_INVALID_ARG;
    if (!zmlx_dtype_is_float(src_t)) return ZMLX_ERR_SHAPE;
    s = check_dims(1, rows, cols, group_size, NULL, 0);
    if (s != ZMLX_OK) return s;

    /* f32 rows are used in place; f16/bf16 rows are widened into one buffer */
    float *buf = NULL;
    if (src_t != ZMLX_F32) {
        buf = malloc((size_t)cols * sizeof(float));
        if (!buf) return ZMLX_ERR_OOM;
    }
    const int64_t row_bytes = cols * bits / 8, groups = cols / group_size;
    for (int64_t r = 0; r < rows && s == ZMLX_OK; r++) {
        const float *x = (const float *)src + r * cols;
        if (buf) {
            for (int64_t j = 0; j < cols; j++) buf[j] = zc_load(src_t, src, r * cols + j);
            x = buf;
        }
        uint8_t *row = (uint8_t *)w_out + r * row_bytes;
        if (mode == ZMLX_QMODE_AFFINE) {
            if (zq_affine_quantize_row(x, cols, bits, group_size, o.affine_variant, scale_t, scales_out,
                                       biases_out, r * groups, row))
                s = ZMLX_ERR_RANGE;
        } else {
            zq_fp_quantize_row(mode, x, cols, o.global_scale, scales_out, r * groups, row);
        }
    }
    free(buf);
    return s;
}

zmlx_status zmlx_dequantize(const zmlx_qweight *w, int64_t e, zmlx_dtype dst_t, void *dst) {
    zmlx_status s = zmlx_qweight_check(w, NULL, 0);
    if (s != ZMLX_OK) return s;
    if (w->on_device || !dst) return ZMLX_ERR_INVALID_ARG;
    if (!zmlx_dtype_is_float(dst_t)) return ZMLX_ERR_SHAPE;
    if (e < 0 || e >= w->E) return ZMLX_ERR_RANGE;

    const int64_t rows = zq_rows(w), cols = zq_cols(w);
    float *buf = NULL;
    if (dst_t != ZMLX_F32) {
        buf = malloc((size_t)cols * sizeof(float));
        if (!buf) return ZMLX_ERR_OOM;
    }
    for (int64_t r = 0; r < rows; r++) {
        float *out = buf ? buf : (float *)dst + r * cols;
        zq_dequant_row_f32(w, e, r, out);
        if (buf)
            for (int64_t j = 0; j < cols; j++) zc_store(dst_t, dst, r * cols + j, buf[j]);
    }
    free(buf);
    return ZMLX_OK;
}
