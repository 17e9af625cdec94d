/*
 * cmd_quant.c — `zmlx quant`: quantize random data in one of the MLX formats,
 * dequantize it again and report the error (bits/weight, max/RMS/relative
 * error, SNR, exact zeros kept) and the quantizer's speed.
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: zmlx quant [options]\n"
            "Quantize random data and print the round-trip error.\n\n"
            "  --mode M          affine | mxfp4 | mxfp8 | nvfp4       (affine)\n"
            "  --bits B          affine: 2,3,4,5,6,8; fp modes: fixed (4; mxfp8 8)\n"
            "  --group-size G    affine: 32,64,128 (64); mx: 32; nvfp4: 16\n"
            "  --variant V       affine quantizer: gpu | cpu          (gpu)\n"
            "  --dtype T         data and affine scale dtype: f32 | f16 | bf16 (bf16)\n"
            "  --rows R          rows                                  (256)\n"
            "  --cols C          columns, a multiple of the group size (2048)\n"
            "  --dist D          normal | uniform (in [-1,1))          (normal)\n"
            "  --zeros F         fraction of entries set to exactly 0  (0.05)\n"
            "  --global-scale S  nvfp4 global scale, 0 = none          (0)\n"
            "  --seed S          random seed                           (1)\n"
            "  --help            this text\n");
}

/* splitmix64 and Box-Muller: deterministic data for a given seed */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; } /* [0, 1) */
static double rng_normal(uint64_t *s) {
    double u = 1.0 - rng_unit(s), v = rng_unit(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bad_arg(const char *opt, const char *val) {
    fprintf(stderr, "zmlx quant: bad value '%s' for %s (see --help)\n", val ? val : "", opt);
    return 2;
}

int cmd_quant(int argc, char **argv) {
    zmlx_qmode mode = ZMLX_QMODE_AFFINE;
    zmlx_affine_variant variant = ZMLX_AFFINE_GPU;
    zmlx_dtype dtype = ZMLX_BF16;
    long long bits = 0, gs = 0, rows = 256, cols = 2048, seed = 1;
    double zeros = 0.05, global = 0.0;
    int uniform = 0;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            return 0;
        }
        if (strncmp(opt, "--", 2) || i + 1 >= argc) {
            fprintf(stderr, "zmlx quant: %s '%s' (see --help)\n",
                    strncmp(opt, "--", 2) ? "unexpected argument" : "missing value for", opt);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(opt, "--mode")) {
            if (zmlx_qmode_parse(v, &mode) != ZMLX_OK) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--variant")) {
            if (!strcmp(v, "gpu")) variant = ZMLX_AFFINE_GPU;
            else if (!strcmp(v, "cpu")) variant = ZMLX_AFFINE_CPU;
            else return bad_arg(opt, v);
        } else if (!strcmp(opt, "--dtype")) {
            if (!cli_parse_dtype(v, &dtype)) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--dist")) {
            if (!strcmp(v, "normal")) uniform = 0;
            else if (!strcmp(v, "uniform")) uniform = 1;
            else return bad_arg(opt, v);
        } else if (!strcmp(opt, "--bits")) {
            if (!cli_parse_int(v, &bits) || bits < 1 || bits > 32) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--group-size")) {
            if (!cli_parse_int(v, &gs) || gs < 1 || gs > 1024) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--rows")) {
            if (!cli_parse_int(v, &rows) || rows < 1 || rows > (1 << 20)) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--cols")) {
            if (!cli_parse_int(v, &cols) || cols < 1 || cols > (1 << 20)) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--seed")) {
            if (!cli_parse_int(v, &seed)) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--zeros")) {
            if (!cli_parse_float(v, &zeros) || !(zeros >= 0.0 && zeros <= 1.0)) return bad_arg(opt, v);
        } else if (!strcmp(opt, "--global-scale")) {
            if (!cli_parse_float(v, &global) || !(global >= 0.0 && global < 1e30)) return bad_arg(opt, v);
        } else {
            fprintf(stderr, "zmlx quant: unknown option '%s' (see --help)\n", opt);
            return 2;
        }
    }
    const int affine = mode == ZMLX_QMODE_AFFINE;
    if (!bits) bits = mode == ZMLX_QMODE_MXFP8 ? 8 : 4;
    if (!gs) gs = affine ? 64 : mode == ZMLX_QMODE_NVFP4 ? 16 : 32;
    const zmlx_dtype scale_t = affine ? dtype : ZMLX_U8;
    /* the library's own rules decide what is valid; report them as usage errors */
    char err[160];
    uint32_t probe; /* a pointer aligned as the check requires */
    zmlx_qweight view = {mode, (int)bits, (int)gs, 1, 1, rows, cols, &probe, &probe, affine ? &probe : NULL,
                         scale_t, (float)global, 0};
    if (zmlx_qweight_check(&view, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx quant: %s\n", err);
        return 2;
    }

    const size_t n = (size_t)rows * (size_t)cols, groups = zmlx_quant_scales_count((int)gs, rows, cols);
    const size_t esz = zmlx_dtype_size(dtype), ssz = zmlx_dtype_size(scale_t);
    void *src = malloc(n * esz), *scales = malloc(groups * ssz), *biases = affine ? malloc(groups * ssz) : NULL;
    void *w = malloc(zmlx_quant_packed_bytes((int)bits, rows, cols));
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    int rc = 1;
    if (!src || !scales || (affine && !biases) || !w || !x || !y) {
        fprintf(stderr, "zmlx quant: out of memory\n");
        goto done;
    }
    uint64_t st = (uint64_t)seed;
    for (size_t i = 0; i < n; i++) {
        double r = rng_unit(&st) < zeros ? 0.0 : uniform ? 2.0 * rng_unit(&st) - 1.0 : rng_normal(&st);
        x[i] = (float)r;
    }
    /* the data in its dtype, and x = exactly what the quantizer sees */
    zmlx_convert(dtype, src, ZMLX_F32, x, n);
    zmlx_convert(ZMLX_F32, x, dtype, src, n);

    zmlx_quant_opts o = {variant, (float)global};
    double t0 = now_sec();
    zmlx_status s = zmlx_quantize(mode, (int)bits, (int)gs, dtype, src, rows, cols, scale_t, w, scales, biases, &o);
    double t_q = now_sec() - t0;
    if (s == ZMLX_OK) {
        view.w = w;
        view.scales = scales;
        view.biases = biases;
        s = zmlx_dequantize(&view, 0, ZMLX_F32, y);
    }
    if (s != ZMLX_OK) {
        fprintf(stderr, "zmlx quant: %s\n", zmlx_status_str(s));
        goto done;
    }

    double max_err = 0.0, se = 0.0, sw = 0.0;
    size_t n_zero = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)y[i] - (double)x[i];
        max_err = fmax(max_err, fabs(e));
        se += e * e;
        sw += (double)x[i] * x[i];
        if (x[i] == 0.0f) {
            n_zero++;
            kept += y[i] == 0.0f;
        }
    }
    const double bpw = (double)bits + (double)((affine ? 2 : 1) * ssz * 8) / (double)gs;
    const double rel = sw > 0 ? sqrt(se / sw) : 0.0;
    printf("quant %s bits=%lld group=%lld%s%s dtype=%s rows=%lld cols=%lld dist=%s seed=%lld\n",
           zmlx_qmode_name(mode), bits, gs, affine ? " variant=" : "",
           affine ? (variant == ZMLX_AFFINE_GPU ? "gpu" : "cpu") : "", zmlx_dtype_name(dtype), rows, cols,
           uniform ? "uniform" : "normal", seed);
    printf("  bits/weight  %.4f (codes %lld + scales%s)\n", bpw, bits, affine ? "/biases" : "");
    printf("  max |err|    %.6g\n", max_err);
    printf("  rms err      %.6g\n", sqrt(se / (double)n));
    printf("  rel rms err  %.6g (|err|/|w|)\n", rel);
    if (se > 0) printf("  snr          %.2f dB\n", -20.0 * log10(rel));
    else printf("  snr          inf (exact)\n");
    if (n_zero)
        printf("  zeros kept   %.2f%% (%zu of %zu exact zeros decode to 0)\n", 100.0 * (double)kept / (double)n_zero,
               kept, n_zero);
    else printf("  zeros kept   n/a (no exact zeros in the data)\n");
    printf("  quantize     %.2f ms (%.1f M weights/s, one thread)\n", t_q * 1e3, t_q > 0 ? (double)n / t_q * 1e-6 : 0.0);
    rc = 0;
done:
    free(src);
    free(scales);
    free(biases);
    free(w);
    free(x);
    free(y);
    return rc;
}

CLI_COMMAND(quant, "quantize random data in an MLX format and report the round-trip error")
