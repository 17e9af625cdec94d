/*
 * test_quant_args.c — argument validation of the quantization API: mode
 * names, zmlx_qweight_check, the size helpers, zmlx_quantize and
 * zmlx_dequantize. Each bad input must give its specific status (see the
 * conventions in src/quant/quantize.c) and touch no output.
 */
#include "harness.h"
#include "zmlx.h"

static void test_names(void) {
    static const char *names[] = {"affine", "mxfp4", "mxfp8", "nvfp4"};
    for (int m = 0; m < ZMLX_QMODE_COUNT_; m++) {
        zmlx_qmode got = ZMLX_QMODE_COUNT_;
        CHECK(!strcmp(zmlx_qmode_name((zmlx_qmode)m), names[m]));
        CHECK_EQ_INT(zmlx_qmode_parse(names[m], &got), ZMLX_OK);
        CHECK_EQ_INT(got, m);
    }
    zmlx_qmode got = ZMLX_QMODE_AFFINE;
    CHECK(!strcmp(zmlx_qmode_name(ZMLX_QMODE_COUNT_), "?"));
    CHECK_EQ_INT(zmlx_qmode_parse("Affine", &got), ZMLX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(zmlx_qmode_parse("fp8", &got), ZMLX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(zmlx_qmode_parse("", &got), ZMLX_ERR_UNSUPPORTED);
    CHECK_EQ_INT(zmlx_qmode_parse(NULL, &got), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_qmode_parse("affine", NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(got, ZMLX_QMODE_AFFINE);
}

static void test_sizes(void) {
    CHECK_EQ_INT(zmlx_quant_packed_bytes(4, 3, 64), 3 * 32);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(3, 2, 32), 2 * 12);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(5, 1, 128), 80);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(6, 1, 32), 24);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(7, 1, 32), 0);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(1, 1, 32), 0);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(4, 0, 32), 0);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(4, 1, -32), 0);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(3, 1, 16), 0); /* 48 bits: not whole words */
    CHECK_EQ_INT(zmlx_quant_packed_bytes(8, INT64_C(1) << 40, INT64_C(1) << 40), 0);
    CHECK_EQ_INT(zmlx_quant_packed_bytes(8, 1, INT64_MAX), 0);
    CHECK_EQ_INT(zmlx_quant_scales_count(32, INT64_MAX, 64), 0);
    CHECK_EQ_INT(zmlx_quant_scales_count(64, 3, 128), 6);
    CHECK_EQ_INT(zmlx_quant_scales_count(16, 1, 32), 2);
    CHECK_EQ_INT(zmlx_quant_scales_count(48, 1, 96), 0);
    CHECK_EQ_INT(zmlx_quant_scales_count(32, 1, 48), 0);
    CHECK_EQ_INT(zmlx_quant_scales_count(32, 0, 32), 0);
}

/* a valid 4-bit gs32 affine view [E=2, N=3, K=64] over real buffers */
static _Alignas(16) uint8_t g_w[2 * 3 * 32];
static _Alignas(16) uint16_t g_s[2 * 3 * 2], g_b[2 * 3 * 2];
static zmlx_qweight valid_affine(void) {
    zmlx_qweight q = {ZMLX_QMODE_AFFINE, 4, 32, 1, 2, 3, 64, g_w, g_s, g_b, ZMLX_BF16, 0.0f, 0};
    return q;
}
static zmlx_qweight valid_fp(zmlx_qmode m) {
    zmlx_qweight q = {m, m == ZMLX_QMODE_MXFP8 ? 8 : 4, m == ZMLX_QMODE_NVFP4 ? 16 : 32, 1, 2, 3, 64,
                      g_w, g_s, NULL, ZMLX_U8, 0.0f, 0};
    return q;
}

static void test_qweight_check(void) {
    char err[128];
    zmlx_qweight q = valid_affine();
    CHECK_EQ_INT(zmlx_qweight_check(&q, err, sizeof err), ZMLX_OK);
    for (int m = ZMLX_QMODE_MXFP4; m <= ZMLX_QMODE_NVFP4; m++) {
        q = valid_fp((zmlx_qmode)m);
        CHECK_EQ_INT(zmlx_qweight_check(&q, err, sizeof err), ZMLX_OK);
    }
    q = valid_fp(ZMLX_QMODE_NVFP4);
    q.global_scale = 2.5f;
    CHECK_EQ_INT(zmlx_qweight_check(&q, NULL, 0), ZMLX_OK);

    CHECK_EQ_INT(zmlx_qweight_check(NULL, err, sizeof err), ZMLX_ERR_INVALID_ARG);

    /* each case: one field broken, the status, a word the message names */
    struct { zmlx_qweight q; zmlx_status want; const char *word; } cases[40];
    int n = 0;
#define BAD(field_edit, status, msg_word) \
    do { cases[n].q = valid_affine(); { zmlx_qweight *p = &cases[n].q; field_edit; } \
         cases[n].want = status; cases[n].word = msg_word; n++; } while (0)
#define BADFP(mode, field_edit, status, msg_word) \
    do { cases[n].q = valid_fp(mode); { zmlx_qweight *p = &cases[n].q; field_edit; } \
         cases[n].want = status; cases[n].word = msg_word; n++; } while (0)
    BAD(p->mode = ZMLX_QMODE_COUNT_, ZMLX_ERR_INVALID_ARG, "mode");
    BAD(p->bits = 7, ZMLX_ERR_INVALID_ARG, "bits");
    BAD(p->bits = 1, ZMLX_ERR_INVALID_ARG, "bits");
    BAD(p->bits = 16, ZMLX_ERR_INVALID_ARG, "bits");
    BAD(p->group_size = 48, ZMLX_ERR_INVALID_ARG, "group_size");
    BAD(p->group_size = 16, ZMLX_ERR_INVALID_ARG, "group_size");
    BAD(p->K = 80, ZMLX_ERR_SHAPE, "multiple");
    BAD((p->transpose = 0, p->N = 48), ZMLX_ERR_SHAPE, "multiple"); /* transpose 0 quantizes along N */
    BAD(p->E = 0, ZMLX_ERR_SHAPE, ">= 1");
    BAD(p->N = -1, ZMLX_ERR_SHAPE, ">= 1");
    BAD(p->K = 0, ZMLX_ERR_SHAPE, ">= 1");
    BAD((p->E = INT64_C(1) << 30, p->N = INT64_C(1) << 30), ZMLX_ERR_SHAPE, "large");
    BAD(p->scale_dtype = ZMLX_U8, ZMLX_ERR_SHAPE, "u8");
    BAD(p->scale_dtype = ZMLX_I32, ZMLX_ERR_SHAPE, "i32");
    BAD(p->biases = NULL, ZMLX_ERR_INVALID_ARG, "biases");
    BAD(p->w = NULL, ZMLX_ERR_INVALID_ARG, "NULL");
    BAD(p->scales = NULL, ZMLX_ERR_INVALID_ARG, "NULL");
    BAD(p->w = g_w + 2, ZMLX_ERR_INVALID_ARG, "4-byte aligned");
    BAD(p->scales = (const char *)g_s + 1, ZMLX_ERR_INVALID_ARG, "scales are not aligned");
    BAD(p->biases = (const char *)g_b + 1, ZMLX_ERR_INVALID_ARG, "biases are not aligned");
    BAD(p->global_scale = 1.0f, ZMLX_ERR_INVALID_ARG, "global_scale");
    BAD(p->transpose = 2, ZMLX_ERR_INVALID_ARG, "transpose");
    BAD(p->on_device = -1, ZMLX_ERR_INVALID_ARG, "on_device");
    BADFP(ZMLX_QMODE_MXFP4, p->group_size = 64, ZMLX_ERR_INVALID_ARG, "group_size");
    BADFP(ZMLX_QMODE_MXFP4, p->bits = 8, ZMLX_ERR_INVALID_ARG, "bits");
    BADFP(ZMLX_QMODE_MXFP8, p->bits = 4, ZMLX_ERR_INVALID_ARG, "bits");
    BADFP(ZMLX_QMODE_NVFP4, p->group_size = 32, ZMLX_ERR_INVALID_ARG, "group_size");
    BADFP(ZMLX_QMODE_MXFP4, p->biases = g_b, ZMLX_ERR_INVALID_ARG, "biases");
    BADFP(ZMLX_QMODE_MXFP8, p->scale_dtype = ZMLX_BF16, ZMLX_ERR_SHAPE, "u8");
    BADFP(ZMLX_QMODE_MXFP4, p->global_scale = 2.0f, ZMLX_ERR_INVALID_ARG, "global_scale");
    BADFP(ZMLX_QMODE_NVFP4, p->global_scale = -1.0f, ZMLX_ERR_INVALID_ARG, "global_scale");
    BADFP(ZMLX_QMODE_NVFP4, p->global_scale = INFINITY, ZMLX_ERR_INVALID_ARG, "global_scale");
    BADFP(ZMLX_QMODE_NVFP4, p->K = 40, ZMLX_ERR_SHAPE, "multiple");
#undef BAD
#undef BADFP
    for (int i = 0; i < n; i++) {
        memset(err, 0, sizeof err);
        zmlx_status s = zmlx_qweight_check(&cases[i].q, err, sizeof err);
        CHECKF(s == cases[i].want, "case %d: status %s, want %s", i, zmlx_status_str(s),
               zmlx_status_str(cases[i].want));
        CHECKF(strstr(err, cases[i].word) != NULL, "case %d: message '%s'", i, err);
    }
    /* a tiny error buffer is truncated, never overrun */
    char small[4] = {1, 1, 1, 1};
    q = valid_affine();
    q.bits = 7;
    CHECK_EQ_INT(zmlx_qweight_check(&q, small, 3), ZMLX_ERR_INVALID_ARG);
    CHECK(small[2] == 0 && small[3] == 1);
}

static void test_quantize_args(void) {
    float src[2 * 64];
    for (int i = 0; i < 2 * 64; i++) src[i] = (float)(i % 7) - 3.0f;
    uint8_t w[64];
    uint16_t s[4], b[4];
    const uint8_t pw = 0xab;
    memset(w, pw, sizeof w);
    zmlx_quant_opts cpu = {ZMLX_AFFINE_CPU, 0.0f}, badv = {(zmlx_affine_variant)2, 0.0f}, glob = {ZMLX_AFFINE_GPU, 3.0f};
    const zmlx_qmode A = ZMLX_QMODE_AFFINE;
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 2, 64, ZMLX_BF16, w, s, b, &cpu), ZMLX_OK);
    memset(w, pw, sizeof w);
    /* K not a multiple of the group, bad bits, bad group sizes */
    CHECK_EQ_INT(zmlx_quantize(A, 4, 64, ZMLX_F32, src, 1, 96, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 48, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 7, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 1, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 48, ZMLX_F32, src, 1, 96, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(ZMLX_QMODE_MXFP4, 4, 64, ZMLX_F32, src, 1, 64, ZMLX_U8, w, s, NULL, NULL),
                 ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(ZMLX_QMODE_NVFP4, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_U8, w, s, NULL, NULL),
                 ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize((zmlx_qmode)9, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, s, b, NULL),
                 ZMLX_ERR_INVALID_ARG);
    /* NULLs, bias presence, dtypes */
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, NULL, 1, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, NULL, s, b, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, NULL, b, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, s, NULL, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(ZMLX_QMODE_MXFP4, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_U8, w, s, b, NULL),
                 ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_U8, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(ZMLX_QMODE_MXFP8, 8, 32, ZMLX_F32, src, 1, 64, ZMLX_F16, w, s, NULL, NULL),
                 ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_I32, src, 1, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_U8, src, 1, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    /* rows / cols <= 0 */
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 0, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, -1, 64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 0, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, -64, ZMLX_BF16, w, s, b, NULL), ZMLX_ERR_SHAPE);
    /* options */
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, s, b, &badv), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(A, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_BF16, w, s, b, &glob), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_quantize(ZMLX_QMODE_MXFP4, 4, 32, ZMLX_F32, src, 1, 64, ZMLX_U8, w, s, NULL, &glob),
                 ZMLX_ERR_INVALID_ARG);
    int untouched = 1;
    for (size_t i = 0; i < sizeof w; i++) untouched &= w[i] == pw;
    CHECK(untouched);
    CHECK_EQ_INT(zmlx_quantize(ZMLX_QMODE_NVFP4, 4, 16, ZMLX_F32, src, 1, 64, ZMLX_U8, w, s, NULL, &glob), ZMLX_OK);
}

static void test_dequantize_args(void) {
    float out[3 * 64];
    zmlx_qweight q = valid_affine();
    memset(g_s, 0, sizeof g_s);
    memset(g_b, 0, sizeof g_b);
    h_poison(out, sizeof out);
    CHECK_EQ_INT(zmlx_dequantize(&q, 1, ZMLX_F32, out), ZMLX_OK);
    CHECK(out[0] == 0.0f && out[3 * 64 - 1] == 0.0f);
    h_poison(out, sizeof out);
    CHECK_EQ_INT(zmlx_dequantize(&q, 2, ZMLX_F32, out), ZMLX_ERR_RANGE);
    CHECK_EQ_INT(zmlx_dequantize(&q, -1, ZMLX_F32, out), ZMLX_ERR_RANGE);
    CHECK_EQ_INT(zmlx_dequantize(&q, 0, ZMLX_U8, out), ZMLX_ERR_SHAPE);
    CHECK_EQ_INT(zmlx_dequantize(&q, 0, ZMLX_F32, NULL), ZMLX_ERR_INVALID_ARG);
    CHECK_EQ_INT(zmlx_dequantize(NULL, 0, ZMLX_F32, out), ZMLX_ERR_INVALID_ARG);
    q.on_device = 1;
    CHECK_EQ_INT(zmlx_dequantize(&q, 0, ZMLX_F32, out), ZMLX_ERR_INVALID_ARG);
    q = valid_affine();
    q.bits = 7;
    CHECK_EQ_INT(zmlx_dequantize(&q, 0, ZMLX_F32, out), ZMLX_ERR_INVALID_ARG);
    q = valid_affine();
    q.K = 40;
    CHECK_EQ_INT(zmlx_dequantize(&q, 0, ZMLX_F32, out), ZMLX_ERR_SHAPE);
    uint32_t bits;
    memcpy(&bits, &out[0], 4);
    CHECK(bits == 0xffffffffu); /* untouched by the failed calls */
}

int main(void) {
    RUN(test_names);
    RUN(test_sizes);
    RUN(test_qweight_check);
    RUN(test_quantize_args);
    RUN(test_dequantize_args);
    return harness_done();
}
