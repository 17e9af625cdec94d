/*
 * test_model_load.c — checkpoint loading: make-tiny output opens and binds
 * (single file and sharded give the same bytes), values decode into the
 * generator's range, and every bad input gives its specific status with a
 * message naming the file and the tensor or key. Fixtures are written at test
 * time into a temp dir (zw_make_tiny, then corrupted copies).
 */
#include "harness.h"
#include "model/model.h"

#include <dirent.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[256];

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = h_alloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    b[*n] = 0;
    fclose(f);
    return b;
}
static void spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); exit(2); }
    fwrite(b, 1, n, f);
    fclose(f);
}

/* copy every file of src into a fresh dir */
static void copy_dir(const char *src, const char *dst) {
    mkdir(dst, 0777);
    DIR *d = opendir(src);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/%s", src, e->d_name);
        snprintf(b, sizeof b, "%s/%s", dst, e->d_name);
        size_t n;
        char *buf = slurp(a, &n);
        spit(b, buf, n);
        free(buf);
    }
    closedir(d);
}

/* Replace the first `find` after `anchor` (or from the start when anchor is
 * NULL) in a text file. Returns 1 if replaced. */
static int edit_text(const char *path, const char *anchor, const char *find, const char *repl) {
    size_t n;
    char *s = slurp(path, &n);
    char *from = anchor ? strstr(s, anchor) : s;
    char *at = from ? strstr(from, find) : NULL;
    if (!at) { free(s); return 0; }
    size_t fl = strlen(find), rl = strlen(repl);
    char *o = h_alloc(n - fl + rl + 1);
    size_t pre = (size_t)(at - s);
    memcpy(o, s, pre);
    memcpy(o + pre, repl, rl);
    memcpy(o + pre + rl, at + fl, n - pre - fl);
    spit(path, o, n - fl + rl);
    free(s);
    free(o);
    return 1;
}

/* The same edit inside a safetensors header (the length prefix is rewritten,
 * the data region kept). */
static int edit_header(const char *path, const char *anchor, const char *find, const char *repl) {
    size_t n;
    uint8_t *b = (uint8_t *)slurp(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    char *h = h_alloc(hl + 1);
    memcpy(h, b + 8, hl);
    h[hl] = 0;
    char *from = anchor ? strstr(h, anchor) : h;
    char *at = from ? strstr(from, find) : NULL;
    int ok = at != NULL;
    if (ok) {
        size_t fl = strlen(find), rl = strlen(repl), pre = (size_t)(at - h);
        uint64_t nhl = hl - fl + rl;
        uint8_t *o = h_alloc(8 + nhl + (n - 8 - hl));
        for (int i = 0; i < 8; i++) o[i] = (uint8_t)(nhl >> (8 * i));
        memcpy(o + 8, h, pre);
        memcpy(o + 8 + pre, repl, rl);
        memcpy(o + 8 + pre + rl, at + fl, hl - pre - fl);
        memcpy(o + 8 + nhl, b + 8 + hl, n - 8 - hl);
        spit(path, o, 8 + nhl + (n - 8 - hl));
        free(o);
    }
    free(h);
    free(b);
    return ok;
}

static void path_of(char *buf, size_t len, const char *dir, const char *name) {
    snprintf(buf, len, "%s/%s", dir, name);
}

/* Open dir expecting status want; the message must contain every given needle. */
static void expect_open(const char *dir, zmlx_status want, int n_needles, ...) {
    zmlx_model *m = (zmlx_model *)0x1;
    char err[512] = "";
    zmlx_status s = zmlx_model_open(dir, NULL, &m, err, sizeof err);
    CHECKF(s == want, "%s: got %s (%s), want %s", dir, zmlx_status_str(s), err, zmlx_status_str(want));
    CHECK(m == NULL || s == ZMLX_OK);
    va_list ap;
    va_start(ap, n_needles);
    for (int i = 0; i < n_needles; i++) {
        const char *needle = va_arg(ap, const char *);
        CHECKF(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
    }
    va_end(ap);
    if (s == ZMLX_OK) zmlx_model_free(m);
}

static char g_tiny[512], g_shard[512], g_lfm2[512];

static void make_fixtures(void) {
    zw_tiny_opts o;
    zw_tiny_defaults(&o);
    o.n_threads = 2;
    char err[512];
    snprintf(g_tiny, sizeof g_tiny, "%s/tiny", g_root);
    zmlx_status s = zw_make_tiny(g_tiny, &o, err, sizeof err);
    CHECKF(s == ZMLX_OK, "%s", err);
    o.shard_limit = 20000; /* several shards */
    snprintf(g_shard, sizeof g_shard, "%s/shard", g_root);
    s = zw_make_tiny(g_shard, &o, err, sizeof err);
    CHECKF(s == ZMLX_OK, "%s", err);
    zw_tiny_lfm2(&o); /* conv, attention, conv, attention; layer 0 dense */
    o.n_threads = 2;
    snprintf(g_lfm2, sizeof g_lfm2, "%s/lfm2", g_root);
    s = zw_make_tiny(g_lfm2, &o, err, sizeof err);
    CHECKF(s == ZMLX_OK, "%s", err);
}

/* Opens, dims and categories right, every view consistent. */
static void test_tiny_opens(void) {
    zmlx_model *m = NULL;
    char err[512] = "";
    zmlx_status s = zmlx_model_open(g_tiny, NULL, &m, err, sizeof err);
    CHECKF(s == ZMLX_OK, "%s", err);
    if (s != ZMLX_OK) return;
    zmlx_model_info in;
    zmlx_model_get_info(m, &in);
    CHECK(!strcmp(in.arch, "qwen3_moe"));
    CHECK_EQ_INT(in.n_layers, 2);
    CHECK_EQ_INT(in.hidden, 64);
    CHECK_EQ_INT(in.n_heads, 4);
    CHECK_EQ_INT(in.n_kv_heads, 2);
    CHECK_EQ_INT(in.head_dim, 16);
    CHECK_EQ_INT(in.n_experts, 8);
    CHECK_EQ_INT(in.top_k, 2);
    CHECK_EQ_INT(in.n_moe_layers, 2);
    CHECK_EQ_INT(in.vocab, 256);
    CHECK_EQ_INT(in.n_files, 1);
    CHECK_EQ_INT(in.n_eos, 1);
    CHECK_EQ_INT(in.eos[0], 255);
    CHECK_EQ_INT(in.copied_bytes, 0);
    /* tensors: embed 3 + per layer (4 attn*3 + 4 norms + router 3 + experts 9) + norm + lm_head 3 */
    CHECK_EQ_INT(in.n_tensors, 3 + 2 * (12 + 4 + 3 + 9) + 1 + 3);
    /* bytes by category, computed from the dims: 4-bit gs64 bf16 = K/2 + 4*K/64 bytes per row */
#define QB(rows, K, bits) ((uint64_t)(rows) * ((K) * (bits) / 8 + 4 * ((K) / 64)))
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_EMBED], QB(256, 64, 4));
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_LM_HEAD], QB(256, 64, 4));
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_ATTN], 2 * (QB(64, 64, 4) + 2 * QB(32, 64, 4) + QB(64, 64, 4)));
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_ROUTER], 2 * QB(8, 64, 8));
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_EXPERTS], 2 * 3 * QB(8 * 64, 64, 4));
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_NORM], 2 * (2 * 64 + 2 * 16) * 2 + 64 * 2);
    CHECK_EQ_INT(in.bytes[ZMLX_WCAT_DENSE_MLP], 0);
    char q[256];
    zmlx_model_quant_summary(m, ZMLX_WCAT_EXPERTS, q, sizeof q);
    CHECKF(!strcmp(q, "affine 4-bit gs64 (bf16 scales)"), "%s", q);
    zmlx_model_quant_summary(m, ZMLX_WCAT_ROUTER, q, sizeof q);
    CHECKF(!strcmp(q, "affine 8-bit gs64 (bf16 scales)"), "%s", q);
    zmlx_model_quant_summary(m, ZMLX_WCAT_NORM, q, sizeof q);
    CHECKF(!strcmp(q, "bf16 (float)"), "%s", q);

    const zm_layer *L = &m->layers[1];
    CHECK(L->is_moe && L->ex_down.quantized);
    CHECK_EQ_INT(L->ex_down.q.E, 8);
    CHECK_EQ_INT(L->ex_down.q.N, 64);
    CHECK_EQ_INT(L->ex_down.q.K, 64);
    CHECK_EQ_INT(L->router.q.bits, 8);
    CHECK_EQ_INT(L->q.q.N, 64);
    CHECK_EQ_INT(L->k.q.N, 32);
    /* views point into the mapping, aligned */
    CHECK(((uintptr_t)L->ex_gate.q.scales & 1) == 0 && ((uintptr_t)L->ex_gate.q.w & 3) == 0);

    /* decoded weights lie in the generator's range U(-1/sqrt(K), 1/sqrt(K)),
       widened by half a quantization step and bf16 rounding of scale/bias */
    float *row = h_alloc(256 * 64 * sizeof(float)); /* the largest: embed [256, 64] */
    const zmlx_qweight *ws[] = {&m->embed.q, &L->ex_up.q, &L->router.q, &L->o.q};
    for (size_t w = 0; w < 4; w++) {
        h_poison(row, 256 * 64 * sizeof(float));
        int64_t e = ws[w]->E - 1;
        CHECK(zmlx_dequantize(ws[w], e, ZMLX_F32, row) == ZMLX_OK);
        double a = 1.0 / sqrt((double)ws[w]->K), lim = a * (1.0 + 1.0 / ((1 << ws[w]->bits) - 1)) * 1.02;
        double mx = 0, sum2 = 0;
        int64_t n = (ws[w]->N < 64 ? ws[w]->N : 64) * ws[w]->K;
        int finite = 1;
        for (int64_t i = 0; i < n; i++) {
            finite &= isfinite(row[i]);
            if (fabs(row[i]) > mx) mx = fabs(row[i]);
            sum2 += (double)row[i] * row[i];
        }
        CHECKF(finite && mx <= lim, "weight %zu: max %g > %g", w, mx, lim);
        /* U(-a,a) has rms a/sqrt(3); quantization noise keeps it within 20% */
        double rms = sqrt(sum2 / (double)n);
        CHECKF(fabs(rms - a / sqrt(3.0)) < 0.2 * a / sqrt(3.0), "weight %zu: rms %g vs %g", w, rms, a / sqrt(3.0));
    }
    /* norms near 1 */
    for (int i = 0; i < 64; i++) {
        float v = zmlx_bf16_to_f32(((const uint16_t *)m->norm.data)[i]);
        CHECK(v > 0.89f && v < 1.11f);
    }
    free(row);
    zmlx_model_free(m);
}

/* Sharded output: several files + index, same tensors with identical bytes. */
static void test_sharded_same(void) {
    zmlx_model *a = NULL, *b = NULL;
    char err[512] = "";
    CHECKF(zmlx_model_open(g_tiny, NULL, &a, err, sizeof err) == ZMLX_OK, "%s", err);
    CHECKF(zmlx_model_open(g_shard, NULL, &b, err, sizeof err) == ZMLX_OK, "%s", err);
    if (!a || !b) { zmlx_model_free(a); zmlx_model_free(b); return; }
    CHECK(b->st.n_files > 2);
    CHECK_EQ_INT(a->st.n, b->st.n);
    char p[1024];
    path_of(p, sizeof p, g_shard, "model.safetensors.index.json");
    CHECK(access(p, R_OK) == 0);
    /* file names as mlx-lm writes them */
    char want[64];
    snprintf(want, sizeof want, "model-00001-of-%05d.safetensors", b->st.n_files);
    CHECKF(!strcmp(b->st.files[0].name, want), "%s", b->st.files[0].name);
    for (size_t i = 0; i < a->st.n && i < b->st.n; i++) {
        const zst_tensor *x = a->st.by_name[i], *y = b->st.by_name[i];
        CHECK(!strcmp(x->name, y->name));
        CHECK(x->end - x->begin == y->end - y->begin);
        CHECKF(!memcmp(x->data, y->data, x->end - x->begin), "tensor %s differs", x->name);
    }
    /* shard sizes respect the limit unless one tensor alone is bigger */
    for (int f = 0; f < b->st.n_files; f++) {
        const zst_file *F = &b->st.files[f];
        uint64_t data = F->size - F->h.data_start;
        CHECKF(data <= 20000 || F->h.n == 1, "%s holds %llu bytes in %zu tensors", F->name,
               (unsigned long long)data, F->h.n);
        CHECK(!strcmp(F->h.format, "mlx"));
        CHECK(F->h.data_start % 8 == 0);
    }
    zmlx_model_free(a);
    zmlx_model_free(b);
}

static int g_case;
/* a fresh corrupted copy of src */
static const char *fresh(const char *src) {
    static char d[512];
    snprintf(d, sizeof d, "%s/case%d", g_root, g_case++);
    copy_dir(src, d);
    return d;
}

static void test_bad_files(void) {
    char p[1024];
    const char *d;

    /* truncated: the last tensors' data_offsets run past the end */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    size_t n;
    char *b = slurp(p, &n);
    spit(p, b, n - 1000);
    free(b);
    expect_open(d, ZMLX_ERR_FORMAT, 3, "model.safetensors", "tensor '", "past the data region");
    h_rm_tree(d);

    /* shorter than the length prefix */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    spit(p, "\x10\0\0", 3);
    expect_open(d, ZMLX_ERR_FORMAT, 2, "model.safetensors", "too short");
    h_rm_tree(d);

    /* header length past EOF */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    b = slurp(p, &n);
    b[5] = 0x7f;
    spit(p, b, n);
    free(b);
    expect_open(d, ZMLX_ERR_FORMAT, 2, "model.safetensors", "header length");
    h_rm_tree(d);

    /* header not JSON */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, NULL, "{\"__metadata__\"", "[\"__metadata__\""));
    expect_open(d, ZMLX_ERR_FORMAT, 1, "model.safetensors");
    h_rm_tree(d);

    /* offsets out of range */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, "\"model.norm.weight\"", "\"data_offsets\":[", "\"data_offsets\":[99999999"));
    expect_open(d, ZMLX_ERR_FORMAT, 2, "model.safetensors", "model.norm.weight");
    h_rm_tree(d);

    /* size mismatch: shape says 32 elements for 128 bytes */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, "\"model.norm.weight\"", "\"shape\":[64]", "\"shape\":[32]"));
    expect_open(d, ZMLX_ERR_FORMAT, 3, "model.safetensors", "model.norm.weight", "need 64");
    h_rm_tree(d);

    /* wrong dtype (a 2-byte integer type: same size, so only binding notices) */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, "\"model.norm.weight\"", "\"BF16\"", "\"I16\""));
    expect_open(d, ZMLX_ERR_SHAPE, 3, "model.safetensors", "model.norm.weight", "dtype I16");
    h_rm_tree(d);

    /* wrong shape, same element count */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, "\"model.norm.weight\"", "\"shape\":[64]", "\"shape\":[2,32]"));
    expect_open(d, ZMLX_ERR_SHAPE, 3, "model.safetensors", "model.norm.weight", "[2, 32]");
    h_rm_tree(d);

    /* packed weight of an expert stack with a wrong shape (one expert fewer, same bytes) */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, "\"model.layers.1.mlp.switch_mlp.up_proj.weight\"", "\"shape\":[8,64,8]",
                      "\"shape\":[4,128,8]"));
    expect_open(d, ZMLX_ERR_SHAPE, 2, "model.safetensors", "model.layers.1.mlp.switch_mlp.up_proj.weight");
    h_rm_tree(d);

    /* missing tensor (renamed: then also unexpected, but missing is reported) */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, NULL, "\"model.layers.0.self_attn.k_norm.weight\"", "\"model.layers.0.self_attn.k_norx.weight\""));
    expect_open(d, ZMLX_ERR_FORMAT, 2, "model.layers.0.self_attn.k_norm.weight", "missing");
    h_rm_tree(d);

    /* quantized module without its biases */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, NULL, "\"model.layers.0.mlp.gate.biases\"", "\"model.layers.0.mlp.gate.biasez\""));
    expect_open(d, ZMLX_ERR_FORMAT, 1, "model.layers.0.mlp.gate.biases");
    h_rm_tree(d);

    /* overlapping tensors: point the norm at the start of the data region */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    {
        size_t hn;
        char *h = slurp(p, &hn);
        char *at = strstr(h + 8, "\"model.norm.weight\":{\"data_offsets\":[");
        CHECK(at != NULL);
        long long b0 = 0, e0 = 0;
        if (at) sscanf(at + strlen("\"model.norm.weight\":{\"data_offsets\":["), "%lld,%lld", &b0, &e0);
        char find[64], repl[64];
        snprintf(find, sizeof find, "[%lld,%lld]", b0, e0);
        snprintf(repl, sizeof repl, "[%d,%lld]", 64, 64 + (e0 - b0));
        free(h);
        CHECK(edit_header(p, "\"model.norm.weight\"", find, repl));
    }
    expect_open(d, ZMLX_ERR_FORMAT, 3, "model.safetensors", "model.norm.weight", "overlap");
    h_rm_tree(d);

    /* metadata format other than mlx is accepted */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, NULL, "{\"format\":\"mlx\"}", "{\"format\":\"pt\"}"));
    expect_open(d, ZMLX_OK, 0);
    h_rm_tree(d);

    /* misaligned data region (MLX writes no padding): still opens, via a copy */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    CHECK(edit_header(p, NULL, "{\"format\":\"mlx\"}", "{\"format\":\"mlx\"} "));
    {
        zmlx_model *m = NULL;
        char err[512];
        CHECKF(zmlx_model_open(d, NULL, &m, err, sizeof err) == ZMLX_OK, "%s", err);
        zmlx_model_info in;
        zmlx_model_get_info(m, &in);
        CHECK(in.copied_bytes > 0);
        CHECK(m && ((uintptr_t)m->layers[0].ex_up.q.w & 3) == 0);
        zmlx_model_free(m);
    }
    h_rm_tree(d);
}

static void test_bad_dirs(void) {
    char p[1024], q[1024];
    const char *d;

    /* no weights */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "model.safetensors");
    unlink(p);
    expect_open(d, ZMLX_ERR_IO, 1, "no model*.safetensors");
    h_rm_tree(d);

    /* no config */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "config.json");
    unlink(p);
    expect_open(d, ZMLX_ERR_IO, 1, "config.json");
    h_rm_tree(d);

    /* not a directory */
    expect_open("/nonexistent-zmlx-dir", ZMLX_ERR_IO, 1, "/nonexistent-zmlx-dir");

    /* index naming a tensor no shard has */
    d = fresh(g_shard);
    path_of(p, sizeof p, d, "model.safetensors.index.json");
    CHECK(edit_text(p, NULL, "\"model.norm.weight\"", "\"model.norm.bias\""));
    expect_open(d, ZMLX_ERR_FORMAT, 3, "model.safetensors.index.json", "model.norm.bias", "no shard");
    h_rm_tree(d);

    /* index naming the wrong shard */
    d = fresh(g_shard);
    path_of(p, sizeof p, d, "model.safetensors.index.json");
    CHECK(edit_text(p, "\"model.embed_tokens.weight\"", "model-00001-of", "model-00002-of"));
    expect_open(d, ZMLX_ERR_FORMAT, 2, "model.embed_tokens.weight", "model-00002-of");
    h_rm_tree(d);

    /* a tensor present in two shards */
    d = fresh(g_shard);
    {
        char s1[1024];
        zmlx_model *m = NULL;
        char err[512];
        /* find the real name of shard 1 (the count depends on sizes) */
        DIR *dd = opendir(d);
        struct dirent *e;
        s1[0] = 0;
        while ((e = readdir(dd)))
            if (!strncmp(e->d_name, "model-00001-of-", 15)) path_of(s1, sizeof s1, d, e->d_name);
        closedir(dd);
        path_of(q, sizeof q, d, "model-extra.safetensors");
        size_t n;
        char *b = slurp(s1, &n);
        spit(q, b, n);
        free(b);
        zmlx_status s = zmlx_model_open(d, NULL, &m, err, sizeof err);
        CHECK_EQ_INT(s, ZMLX_ERR_FORMAT);
        CHECKF(strstr(err, "in both") && strstr(err, "model-extra.safetensors"), "%s", err);
    }
    h_rm_tree(d);
}

/* lfm2_moe: the layer kinds, the tied head, the conv and bias views; its
 * config and tensor errors name what is wrong. */
static void test_lfm2(void) {
    zmlx_model *m = NULL;
    char err[512] = "", p[1024];
    CHECKF(zmlx_model_open(g_lfm2, NULL, &m, err, sizeof err) == ZMLX_OK, "%s", err);
    if (m) {
        CHECK(m->cfg.arch == ZM_ARCH_LFM2_MOE && m->cfg.tie && m->cfg.head_dim == 16 && m->cfg.conv_L == 3);
        for (int l = 0; l < 4; l++) {
            const zm_layer *L = &m->layers[l];
            CHECKF(L->is_attn == (l % 2) && L->is_moe == (l > 0), "layer %d kinds", l);
            CHECK(L->is_attn ? L->q.present && !L->conv_in.present : L->conv_in.present && !L->q.present);
            if (!L->is_attn) CHECK(L->conv_w.shape[0] == 64 && L->conv_w.shape[1] == 3 && L->conv_w.shape[2] == 1);
            if (L->is_moe) CHECK(L->expert_bias.data && L->expert_bias.dtype == ZMLX_F32);
        }
        CHECK(!m->lm_head.present);
    }
    zmlx_model_free(m);
    struct { const char *find, *repl; zmlx_status want; const char *needle; } cases[] = {
        {"\"conv_bias\": false", "\"conv_bias\": true", ZMLX_ERR_UNSUPPORTED, "conv_bias"},
        {"\"conv_L_cache\": 3", "\"conv_L_cache\": 9", ZMLX_ERR_FORMAT, "conv_L_cache"},
        {"\"num_dense_layers\": 1", "\"num_dense_layers\": 5", ZMLX_ERR_FORMAT, "num_dense_layers"},
        {"\"layer_types\"", "\"layer_kinds\"", ZMLX_ERR_FORMAT, "layer_types"},
        {"\"full_attention\",", "\"sliding_attention\",", ZMLX_ERR_FORMAT, "layer_types\"[1]"},
        {"\"conv\",", "", ZMLX_ERR_FORMAT, "3 entries for 4 layers"},
        {"\"num_attention_heads\": 4", "\"num_attention_heads\": 3", ZMLX_ERR_FORMAT, "hidden_size 64"},
        {"\"use_expert_bias\": true", "\"use_expert_bias\": 1", ZMLX_ERR_FORMAT, "use_expert_bias"},
        /* layer 0 made an attention layer: its projections are missing */
        {"\"conv\",", "\"full_attention\",", ZMLX_ERR_FORMAT, "self_attn.q_proj"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *d = fresh(g_lfm2);
        path_of(p, sizeof p, d, "config.json");
        CHECKF(edit_text(p, NULL, cases[i].find, cases[i].repl), "case %zu edit", i);
        expect_open(d, cases[i].want, 1, cases[i].needle);
        h_rm_tree(d);
    }
}

static void test_bad_config(void) {
    char p[1024];
    const char *d;
    struct { const char *anchor, *find, *repl; zmlx_status want; const char *needle; } cases[] = {
        {NULL, "\"qwen3_moe\"", "\"llama4\"", ZMLX_ERR_UNSUPPORTED, "llama4"},
        {NULL, "\"head_dim\"", "\"head_dimension\"", ZMLX_ERR_FORMAT, "\"head_dim\""},
        {NULL, "\"norm_topk_prob\"", "\"norm_topk\"", ZMLX_ERR_FORMAT, "norm_topk_prob"},
        {NULL, "\"mlp_only_layers\": []", "\"mlp_only_layers\": [7]", ZMLX_ERR_FORMAT, "mlp_only_layers"},
        {NULL, "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", ZMLX_ERR_FORMAT, "num_key_value_heads"},
        {NULL, "\"vocab_size\": 256", "\"vocab_size\": \"256\"", ZMLX_ERR_FORMAT, "vocab_size"},
        {NULL, "\"hidden_size\": 64,", "\"hidden_size\": 64", ZMLX_ERR_FORMAT, "config.json"},
        /* quantization block */
        {"\"quantization\"", "\"bits\": 4", "\"bits\": 7", ZMLX_ERR_FORMAT, "quantization"},
        {"\"quantization\"", "\"mode\": \"affine\"", "\"mode\": \"int4\"", ZMLX_ERR_FORMAT, "int4"},
        {"\"quantization\"", "\"group_size\": 64,", "\"group_size\": 48,", ZMLX_ERR_FORMAT, "group_size 48"},
        {"\"quantization\": {", "\"bits\": 8", "\"bits\": \"8\"", ZMLX_ERR_FORMAT, "model.layers.0.mlp.gate"},
        {"\"quantization\": {", "\"model.layers.0.mlp.gate\": {", "\"x\": 3, \"model.layers.0.mlp.gate\": {",
         ZMLX_ERR_FORMAT, "\"x\""},
        {NULL, "\"quantization\": {", "\"quantization\": 4, \"q\": {", ZMLX_ERR_FORMAT, "quantization"},
        /* config quantization disagrees with the tensors: global 8-bit vs 4-bit files */
        {"\"quantization\"", "\"bits\": 4", "\"bits\": 8", ZMLX_ERR_SHAPE, "model.embed_tokens.weight"},
        /* router override removed: global 4-bit vs 8-bit router tensors */
        {"\"quantization\": {", "\"model.layers.1.mlp.gate\"", "\"model.layers.9.mlp.gate\"", ZMLX_ERR_SHAPE,
         "model.layers.1.mlp.gate.weight"},
        /* override false: router must then be float, the file has u32 */
        {"\"quantization\": {", "\"model.layers.0.mlp.gate\": {\n            \"group_size\": 64,\n            \"bits\": 8\n        }",
         "\"model.layers.0.mlp.gate\": false", ZMLX_ERR_SHAPE, "dtype U32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        d = fresh(g_tiny);
        path_of(p, sizeof p, d, "config.json");
        CHECKF(edit_text(p, cases[i].anchor, cases[i].find, cases[i].repl), "case %zu edit", i);
        expect_open(d, cases[i].want, 1, cases[i].needle);
        h_rm_tree(d);
    }

    /* without a quantization block the bits/group come from the shapes; the
       quantization_config copy is used when "quantization" is absent */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "config.json");
    CHECK(edit_text(p, NULL, "\"quantization\":", "\"quantization_unused\":"));
    expect_open(d, ZMLX_OK, 0);
    CHECK(edit_text(p, NULL, "\"quantization_config\":", "\"quantization_config_unused\":"));
    {
        zmlx_model *m = NULL;
        char err[512];
        CHECKF(zmlx_model_open(d, NULL, &m, err, sizeof err) == ZMLX_OK, "%s", err);
        if (m) {
            CHECK_EQ_INT(m->layers[0].router.q.bits, 8);
            CHECK_EQ_INT(m->layers[0].ex_gate.q.bits, 4);
            CHECK_EQ_INT(m->layers[0].ex_gate.q.group_size, 64);
        }
        zmlx_model_free(m);
    }
    h_rm_tree(d);

    /* generation_config eos list replaces config's */
    d = fresh(g_tiny);
    path_of(p, sizeof p, d, "generation_config.json");
    CHECK(edit_text(p, NULL, "\"eos_token_id\": 255", "\"eos_token_id\": [255, 7]"));
    {
        zmlx_model *m = NULL;
        char err[512];
        CHECKF(zmlx_model_open(d, NULL, &m, err, sizeof err) == ZMLX_OK, "%s", err);
        zmlx_model_info in;
        zmlx_model_get_info(m, &in);
        CHECK(in.n_eos == 2 && in.eos[0] == 255 && in.eos[1] == 7);
        zmlx_model_free(m);
    }
    CHECK(edit_text(p, NULL, "[255, 7]", "[255, -7]"));
    expect_open(d, ZMLX_ERR_FORMAT, 2, "generation_config.json", "eos_token_id");
    h_rm_tree(d);
}

/* Hand-built headers through the from-memory parser. */
static size_t build(uint8_t *buf, const char *json, size_t data) {
    size_t hl = strlen(json);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, json, hl);
    for (size_t i = 0; i < data; i++) buf[8 + hl + i] = (uint8_t)(i * 7 + 1);
    return 8 + hl + data;
}

static void test_parse_memory(void) {
    static uint8_t buf[4096];
    zst_header h;
    char err[256];
    /* a valid two-tensor file: check every parsed field and the data address */
    size_t n = build(buf, "{\"b\":{\"dtype\":\"U32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
                          "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                          "\"__metadata__\":{\"format\":\"mlx\",\"x\":\"y\"}}", 32);
    CHECK(zst_parse(buf, n, 1, "f.safetensors", 3, &h, err, sizeof err) == ZMLX_OK);
    CHECK_EQ_INT(h.n, 2);
    CHECK(!strcmp(h.format, "mlx"));
    if (h.n == 2) {
        const zst_tensor *b = &h.t[0], *a = &h.t[1];
        CHECK(!strcmp(b->name, "b") && b->dtype == ZMLX_U32 && b->ndim == 2 && b->shape[0] == 2 && b->shape[1] == 3);
        CHECK(b->begin == 8 && b->end == 32 && b->file == 3);
        CHECK(a->dtype == ZMLX_BF16 && a->esize == 2);
        CHECK((const uint8_t *)b->data == buf + h.data_start + 8);
        CHECK(((const uint8_t *)b->data)[0] == (uint8_t)(8 * 7 + 1));
    }
    zst_header_free(&h);
    /* header only (data not known): offsets are not checked against the end */
    n = build(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1000],\"data_offsets\":[0,4000]}}", 0);
    CHECK(zst_parse(buf, n, 0, "f", 0, &h, err, sizeof err) == ZMLX_OK);
    CHECK(h.n == 1 && h.t[0].data == NULL);
    zst_header_free(&h);
    CHECK(zst_parse(buf, n, 1, "f", 0, &h, err, sizeof err) == ZMLX_ERR_FORMAT);

    struct { const char *json; size_t data; const char *needle; } bad[] = {
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[6,14]}}", 16, "overlap"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,0]}}", 16, "begin 8 > end 0"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,10]}}", 16, "need 8"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}", 16, "past the data region"},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,8]}}", 16, "unknown dtype"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[-4],\"data_offsets\":[0,8]}}", 16, "shape[0]"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":4,\"data_offsets\":[0,8]}}", 16, "shape"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0]}}", 16, "data_offsets"},
        {"{\"a\":{\"shape\":[4],\"data_offsets\":[0,8]}}", 16, "dtype"},
        {"{\"a\":[1]}", 16, "not an object"},
        {"[1,2]", 16, "not a JSON object"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}", 16, "twice"},
        {"{\"__metadata__\":{\"format\":1}}", 0, "__metadata__"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}", 16,
         "too large"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,2]}}", 16, "dimensions"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = build(buf, bad[i].json, bad[i].data);
        err[0] = 0;
        zmlx_status s = zst_parse(buf, n, 1, "bad.safetensors", 0, &h, err, sizeof err);
        CHECKF(s == ZMLX_ERR_FORMAT, "case %zu: %s", i, zmlx_status_str(s));
        CHECKF(strstr(err, "bad.safetensors") && strstr(err, bad[i].needle), "case %zu: '%s' lacks '%s'", i, err,
               bad[i].needle);
        CHECK(h.t == NULL && h.doc == NULL);
    }
    /* empty tensors (zero bytes) may share offsets */
    n = build(buf, "{\"a\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]},"
                   "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8);
    CHECK(zst_parse(buf, n, 1, "e", 0, &h, err, sizeof err) == ZMLX_OK);
    zst_header_free(&h);
}

/* make-tiny rejects impossible dimensions and formats. */
static void test_make_tiny_args(void) {
    zw_tiny_opts o;
    char err[256], d[512];
    snprintf(d, sizeof d, "%s/never", g_root);
    zw_tiny_defaults(&o);
    o.top_k = 9;
    CHECK_EQ_INT(zw_make_tiny(d, &o, err, sizeof err), ZMLX_ERR_INVALID_ARG);
    zw_tiny_defaults(&o);
    o.moe_inter = 48;
    CHECK_EQ_INT(zw_make_tiny(d, &o, err, sizeof err), ZMLX_ERR_INVALID_ARG);
    zw_tiny_defaults(&o);
    o.bits = 7;
    CHECK_EQ_INT(zw_make_tiny(d, &o, err, sizeof err), ZMLX_ERR_INVALID_ARG);
    CHECK(access(d, F_OK) != 0);
}

/* Other formats and the direct-codes generator also round-trip through open. */
static void test_variants(void) {
    struct { zmlx_qmode mode; int bits, gs; zw_init init; int tie; const char *summary; } v[] = {
        {ZMLX_QMODE_AFFINE, 3, 32, ZW_INIT_QUANTIZE, 1, "affine 3-bit gs32 (bf16 scales)"},
        {ZMLX_QMODE_AFFINE, 6, 128, ZW_INIT_CODES, 0, "affine 6-bit gs128 (bf16 scales)"},
        {ZMLX_QMODE_MXFP4, 4, 32, ZW_INIT_QUANTIZE, 0, "mxfp4 4-bit gs32 (u8 scales)"},
        {ZMLX_QMODE_NVFP4, 4, 16, ZW_INIT_CODES, 0, "nvfp4 4-bit gs16 (u8 scales)"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        zw_tiny_opts o;
        zw_tiny_defaults(&o);
        o.hidden = 128;
        o.moe_inter = 128;
        o.head_dim = 32;
        o.mode = v[i].mode;
        o.bits = v[i].bits;
        o.group_size = v[i].gs;
        o.init = v[i].init;
        o.tie = v[i].tie;
        o.seed = 100 + i;
        o.n_threads = 1;
        char d[512], err[512];
        snprintf(d, sizeof d, "%s/var%zu", g_root, i);
        zmlx_status s = zw_make_tiny(d, &o, err, sizeof err);
        CHECKF(s == ZMLX_OK, "variant %zu: %s", i, err);
        zmlx_model *m = NULL;
        s = zmlx_model_open(d, NULL, &m, err, sizeof err);
        CHECKF(s == ZMLX_OK, "variant %zu: %s", i, err);
        if (m) {
            char q[256];
            zmlx_model_quant_summary(m, ZMLX_WCAT_EXPERTS, q, sizeof q);
            CHECKF(!strcmp(q, v[i].summary), "variant %zu: %s", i, q);
            CHECK_EQ_INT(m->lm_head.present, !v[i].tie);
            CHECK_EQ_INT(m->bytes[ZMLX_WCAT_LM_HEAD] == 0, v[i].tie);
        }
        zmlx_model_free(m);
        h_rm_tree(d);
    }
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/zmlx-model-test-XXXXXX");
    if (!mkdtemp(g_root)) return harness_skip("cannot create a temp dir");
    RUN(make_fixtures);
    RUN(test_tiny_opens);
    RUN(test_sharded_same);
    RUN(test_bad_files);
    RUN(test_bad_dirs);
    RUN(test_bad_config);
    RUN(test_lfm2);
    RUN(test_parse_memory);
    RUN(test_make_tiny_args);
    RUN(test_variants);
    h_rm_tree(g_tiny);
    h_rm_tree(g_shard);
    h_rm_tree(g_lfm2);
    h_rm_tree(g_root);
    return harness_done();
}
