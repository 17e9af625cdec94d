/*
 * writer.c — writing MLX-format checkpoints: the generic sharded safetensors
 * writer (zw_write) and the synthetic qwen3_moe / lfm2_moe generator behind
 * `zmlx make-tiny` (zw_make_tiny).
 *
 * Byte layout follows MLX's save_safetensors (mlx/io/safetensors.cpp): a
 * compact JSON header whose keys are sorted (nlohmann::json's std::map),
 * "__metadata__" {"format":"mlx"}, each entry {"data_offsets","dtype","shape"}.
 * Two deliberate choices where MLX's output is not reproducible or not
 * aligned: (1) MLX writes tensor data in std::unordered_map iteration (hash)
 * order; we write it in mlx-lm's tree_flatten order (module definition
 * order), which is also the order make_shards assigns shards in; (2) the
 * header is padded with spaces to a multiple of 8 bytes (as the safetensors
 * reference writer does; readers ignore JSON whitespace) so every tensor is
 * aligned and the loader never has to copy. Sharding, file names and the
 * index follow mlx-lm's save_model (FORMATS.md §D).
 *
 * Generation streams tensor by tensor: at most one module's packed bytes,
 * scales and biases and one row-chunk of floats per thread are held.
 */
#include "model/model.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ------------------------------------------------------------ text output */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}
static void sb_str(sbuf *b, const char *s) { /* JSON string (names are plain ASCII) */
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') sb_put(b, "\\", 1);
        sb_put(b, s, 1);
    }
    sb_put(b, "\"", 1);
}

static zmlx_status write_text(const char *dir, const char *name, const sbuf *b, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (b->oom) return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", name);
    FILE *f = fopen(path, "wb");
    if (!f) return zc_err(err, errlen, ZMLX_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = fwrite(b->p, 1, b->n, f) == b->n;
    ok &= fclose(f) == 0;
    return ok ? ZMLX_OK : zc_err(err, errlen, ZMLX_ERR_IO, "%s: write failed", path);
}

/* -------------------------------------------------------- safetensors out */

static const zw_tensor *g_sort_base; /* qsort has no context argument */
static int cmp_idx_name(const void *a, const void *b) {
    return strcmp(g_sort_base[*(const size_t *)a].name, g_sort_base[*(const size_t *)b].name);
}

static void shard_name(char *buf, size_t len, int i, int n) {
    if (n == 1) snprintf(buf, len, "model.safetensors");
    else snprintf(buf, len, "model-%05d-of-%05d.safetensors", i + 1, n);
}

static zmlx_status write_shard(const char *dir, zw_tensor *t, const size_t *idx, size_t m, int shard, int n_shards,
                               zw_fill_fn fill, void *ctx, char *err, size_t errlen) {
    char name[64], path[4096];
    shard_name(name, sizeof name, shard, n_shards);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* offsets in data (given) order */
    uint64_t off = 0, maxb = 0;
    for (size_t j = 0; j < m; j++) {
        t[idx[j]].offset = off;
        off += t[idx[j]].nbytes;
        if (t[idx[j]].nbytes > maxb) maxb = t[idx[j]].nbytes;
    }
    /* header in sorted key order; "__metadata__" sorts before any tensor name
       of ours (model.*, lm_head.*), as in nlohmann's map */
    size_t *sorted = malloc((m ? m : 1) * sizeof *sorted);
    if (!sorted) return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", name);
    memcpy(sorted, idx, m * sizeof *sorted);
    g_sort_base = t;
    qsort(sorted, m, sizeof *sorted, cmp_idx_name);
    sbuf h = {0};
    sb_printf(&h, "{\"__metadata__\":{\"format\":\"mlx\"}");
    for (size_t j = 0; j < m; j++) {
        const zw_tensor *x = &t[sorted[j]];
        sb_put(&h, ",", 1);
        sb_str(&h, x->name);
        sb_printf(&h, ":{\"data_offsets\":[%llu,%llu],\"dtype\":\"%s\",\"shape\":[", (unsigned long long)x->offset,
                  (unsigned long long)(x->offset + x->nbytes), zst_dtype_tag(x->dtype));
        for (int d = 0; d < x->ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)x->shape[d]);
        sb_put(&h, "]}", 2);
    }
    sb_put(&h, "}", 1);
    free(sorted);
    while (!h.oom && h.n % 8) sb_put(&h, " ", 1);
    if (h.oom) return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", name);

    zmlx_status s = ZMLX_OK;
    void *buf = zc_alloc_aligned(maxb ? maxb : 64, 64);
    FILE *f = buf ? fopen(path, "wb") : NULL;
    if (!buf) s = zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory (%llu bytes)", name, (unsigned long long)maxb);
    else if (!f) s = zc_err(err, errlen, ZMLX_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (s == ZMLX_OK) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
        if (fwrite(len8, 1, 8, f) != 8 || fwrite(h.p, 1, h.n, f) != h.n)
            s = zc_err(err, errlen, ZMLX_ERR_IO, "%s: write failed", path);
    }
    for (size_t j = 0; j < m && s == ZMLX_OK; j++) {
        const zw_tensor *x = &t[idx[j]];
        s = fill(ctx, idx[j], x, buf, err, errlen);
        if (s == ZMLX_OK && fwrite(buf, 1, x->nbytes, f) != x->nbytes)
            s = zc_err(err, errlen, ZMLX_ERR_IO, "%s: write failed (tensor '%s')", path, x->name);
    }
    if (f && fclose(f) != 0 && s == ZMLX_OK) s = zc_err(err, errlen, ZMLX_ERR_IO, "%s: write failed", path);
    zc_free_aligned(buf);
    free(h.p);
    return s;
}

zmlx_status zw_write(const char *dir, zw_tensor *t, size_t n, uint64_t shard_limit, uint64_t total_params,
                     zw_fill_fn fill, void *ctx, char *err, size_t errlen) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return zc_err(err, errlen, ZMLX_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    /* make_shards: a new shard when the next tensor would pass the limit */
    int n_shards = 0;
    uint64_t cur = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!zst_dtype_tag(t[i].dtype)) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "'%s': bad dtype", t[i].name);
        if (n_shards == 0 || (cur > 0 && cur + t[i].nbytes > shard_limit)) {
            n_shards++;
            cur = 0;
        }
        t[i].shard = n_shards - 1;
        cur += t[i].nbytes;
        total += t[i].nbytes;
    }
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    zmlx_status s = ZMLX_OK;
    for (int sh = 0; sh < n_shards && s == ZMLX_OK; sh++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (t[i].shard == sh) idx[m++] = i;
        s = write_shard(dir, t, idx, m, sh, n_shards, fill, ctx, err, errlen);
    }
    if (s == ZMLX_OK && n_shards > 1) {
        /* the index as Python's json.dump(indent=4) writes it, weight_map sorted */
        for (size_t i = 0; i < n; i++) idx[i] = i;
        g_sort_base = t;
        qsort(idx, n, sizeof *idx, cmp_idx_name);
        sbuf b = {0};
        sb_printf(&b, "{\n    \"metadata\": {\n        \"total_size\": %llu,\n        \"total_parameters\": %llu\n"
                      "    },\n    \"weight_map\": {",
                  (unsigned long long)total, (unsigned long long)total_params);
        for (size_t i = 0; i < n; i++) {
            char fn[64];
            shard_name(fn, sizeof fn, t[idx[i]].shard, n_shards);
            sb_printf(&b, "%s\n        ", i ? "," : "");
            sb_str(&b, t[idx[i]].name);
            sb_printf(&b, ": \"%s\"", fn);
        }
        sb_printf(&b, "\n    }\n}");
        s = write_text(dir, "model.safetensors.index.json", &b, err, errlen);
        free(b.p);
    }
    free(idx);
    return s;
}

/* -------------------------------------------------------- make-tiny model */

void zw_tiny_defaults(zw_tiny_opts *o) {
    *o = (zw_tiny_opts){.layers = 2, .hidden = 64, .heads = 4, .kv_heads = 2, .head_dim = 16, .experts = 8,
                        .top_k = 2, .moe_inter = 64, .dense_inter = 96, .vocab = 256, .bits = 4, .group_size = 64,
                        .mode = ZMLX_QMODE_AFFINE, .tie = 0, .seed = 1, .shard_limit = (uint64_t)5 << 30,
                        .init = ZW_INIT_QUANTIZE, .max_pos = 40960, .rope_theta = 1e6, .rms_eps = 1e-6,
                        .bos = 254, .n_eos = 1, .eos = {255}, .n_threads = 0};
}

static void preset_qwen3_30b(zw_tiny_opts *o) {
    zw_tiny_defaults(o);
    o->layers = 48;
    o->hidden = 2048;
    o->heads = 32;
    o->kv_heads = 4;
    o->head_dim = 128;
    o->experts = 128;
    o->top_k = 8;
    o->moe_inter = 768;
    o->dense_inter = 6144;
    o->vocab = 151936;
    o->init = ZW_INIT_CODES;
    o->bos = 151643;
    o->n_eos = 2;
    o->eos[0] = 151645;
    o->eos[1] = 151643;
}

/* lfm2_moe: 4 layers (attention at 1 and 3), the first dense */
void zw_tiny_lfm2(zw_tiny_opts *o) {
    zw_tiny_defaults(o);
    o->arch = ZM_ARCH_LFM2_MOE;
    o->layers = 4;
    o->n_attn = 2;
    o->attn_idx[0] = 1;
    o->attn_idx[1] = 3;
    o->conv_L = 3;
    o->dense_layers = 1;
    o->dense_inter = 128;
    o->rms_eps = 1e-5;
}

static void preset_lfm2_8b(zw_tiny_opts *o) {
    zw_tiny_lfm2(o);
    static const int attn[6] = {2, 6, 10, 14, 18, 21};
    o->layers = 24;
    o->n_attn = 6;
    memcpy(o->attn_idx, attn, sizeof attn);
    o->dense_layers = 2;
    o->hidden = 2048;
    o->heads = 32;
    o->kv_heads = 8;
    o->head_dim = 64;
    o->experts = 32;
    o->top_k = 4;
    o->moe_inter = 1792;
    o->dense_inter = 7168;
    o->vocab = 65536;
    o->max_pos = 128000;
    o->init = ZW_INIT_CODES;
    o->bos = 1;
    o->eos[0] = 7;
}

int zw_tiny_preset(const char *name, zw_tiny_opts *o) {
    if (!strcmp(name, "qwen3-30b-a3b")) preset_qwen3_30b(o);
    else if (!strcmp(name, "lfm2-8b-a1b")) preset_lfm2_8b(o);
    else return 0;
    return 1;
}

static int tiny_is_attn(const zw_tiny_opts *o, int l) {
    if (o->arch != ZM_ARCH_LFM2_MOE) return 1;
    for (int i = 0; i < o->n_attn; i++)
        if (o->attn_idx[i] == l) return 1;
    return 0;
}

enum { PART_W, PART_S, PART_B, PART_NORM, PART_CONV, PART_EBIAS };

typedef struct tmod {       /* one quantized module: logical [E, N, K] */
    int64_t E, N, K;
    int bits, group_size;
    zmlx_qmode mode;
    void *scales, *biases;  /* stashed between the .weight and .scales/.biases writes */
} tmod;

typedef struct tgen {
    const zw_tiny_opts *o;
    tmod *mods;
    size_t n_mods;
    int *part, *mod;        /* per tensor */
    zc_pool *pool;
} tgen;

/* deterministic per (seed, module, chunk) stream */
static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint64_t rng_next(uint64_t *s) { return mix(*s += 0x9e3779b97f4a7c15ull); }
static inline float rng_unit(uint64_t *s) { return (float)(rng_next(s) >> 40) * 0x1p-24f * 2.0f - 1.0f; } /* [-1,1) */

#define CHUNK_ROWS 64

typedef struct chunk_job {
    const tgen *g;
    const tmod *md;
    size_t mod_id;
    uint8_t *w;
    zmlx_status status; /* first failure (written by any thread; any one is fine) */
} chunk_job;

static void gen_chunks(void *arg, int64_t c0, int64_t c1, int thread) {
    (void)thread;
    chunk_job *j = arg;
    const tmod *md = j->md;
    const int64_t rows = md->E * md->N, K = md->K;
    const int64_t wrow = K * md->bits / 8, srow = K / md->group_size;
    const int affine = md->mode == ZMLX_QMODE_AFFINE;
    const zmlx_dtype st = affine ? ZMLX_BF16 : ZMLX_U8;
    const size_t ssz = zmlx_dtype_size(st);
    float *f = NULL;
    if (j->g->o->init == ZW_INIT_QUANTIZE) {
        f = malloc((size_t)(CHUNK_ROWS * K) * sizeof *f);
        if (!f) { j->status = ZMLX_ERR_OOM; return; }
    }
    /* weights ~ U(-a, a) with a = 1/sqrt(K): unit-scale activations stay O(1) */
    const float a = 1.0f / sqrtf((float)K);
    for (int64_t c = c0; c < c1; c++) {
        int64_t r0 = c * CHUNK_ROWS, nr = rows - r0 < CHUNK_ROWS ? rows - r0 : CHUNK_ROWS;
        uint64_t s = mix(j->g->o->seed * 0x100000001b3ull ^ mix(j->mod_id + 1) ^ (uint64_t)c * 0x9e3779b97f4a7c15ull);
        uint8_t *w = j->w + r0 * wrow;
        uint8_t *sc = (uint8_t *)md->scales + (size_t)(r0 * srow) * ssz;
        uint8_t *bi = affine ? (uint8_t *)md->biases + (size_t)(r0 * srow) * ssz : NULL;
        if (f) {
            for (int64_t i = 0; i < nr * K; i++) f[i] = zc_round(ZMLX_BF16, a * rng_unit(&s));
            zmlx_status q = zmlx_quantize(md->mode, md->bits, md->group_size, ZMLX_F32, f, nr, K, st, w, sc, bi, NULL);
            if (q != ZMLX_OK) j->status = q;
            continue;
        }
        /* random codes, scales and biases written directly (the fast path) */
        for (int64_t i = 0; i < nr * wrow; i += 8) {
            uint64_t v = rng_next(&s);
            int64_t n = nr * wrow - i < 8 ? nr * wrow - i : 8;
            memcpy(w + i, &v, (size_t)n);
        }
        int levels = (1 << md->bits) - 1;
        for (int64_t i = 0; i < nr * srow; i++) {
            if (affine) {
                /* the group spans [-a, a]-ish: scale = range/levels, bias = -a */
                float scale = 2.0f * a * (0.75f + 0.25f * rng_unit(&s)) / (float)levels;
                ((uint16_t *)sc)[i] = zc_f32_to_bf16(scale);
                ((uint16_t *)bi)[i] = zc_f32_to_bf16(-0.5f * scale * (float)levels);
            } else {
                /* E8M0 / E4M3 scale bytes near a/6 */
                sc[i] = md->mode == ZMLX_QMODE_NVFP4 ? (uint8_t)(0x20 + (rng_next(&s) & 7))
                                                     : (uint8_t)(127 + (int)floorf(log2f(a / 6.0f)) + (int)(rng_next(&s) % 2));
            }
        }
    }
    free(f);
}

static zmlx_status gen_module(tgen *g, size_t mid, uint8_t *w, char *err, size_t errlen) {
    tmod *md = &g->mods[mid];
    int affine = md->mode == ZMLX_QMODE_AFFINE;
    size_t nsc = (size_t)(md->E * md->N * (md->K / md->group_size)) * (affine ? 2 : 1);
    md->scales = malloc(nsc);
    md->biases = affine ? malloc(nsc) : NULL;
    if (!md->scales || (affine && !md->biases))
        return zc_err(err, errlen, ZMLX_ERR_OOM, "make-tiny: out of memory (%zu bytes of scales)", nsc);
    chunk_job j = {g, md, mid, w, ZMLX_OK};
    int64_t n_chunks = (md->E * md->N + CHUNK_ROWS - 1) / CHUNK_ROWS;
    zc_pool_run(g->pool, n_chunks, 1, gen_chunks, &j);
    if (j.status != ZMLX_OK)
        return zc_err(err, errlen, j.status, "make-tiny: quantizing a %lldx%lld module failed: %s",
                      (long long)(md->E * md->N), (long long)md->K, zmlx_status_str(j.status));
    return ZMLX_OK;
}

static zmlx_status tiny_fill(void *ctx, size_t i, const zw_tensor *t, void *buf, char *err, size_t errlen) {
    tgen *g = ctx;
    tmod *md = g->part[i] >= PART_NORM ? NULL : &g->mods[g->mod[i]];
    switch (g->part[i]) {
    case PART_W:
        return gen_module(g, (size_t)g->mod[i], buf, err, errlen);
    case PART_S:
        memcpy(buf, md->scales, t->nbytes);
        free(md->scales);
        md->scales = NULL;
        return ZMLX_OK;
    case PART_B:
        memcpy(buf, md->biases, t->nbytes);
        free(md->biases);
        md->biases = NULL;
        return ZMLX_OK;
    default: {
        /* RMSNorm weights near 1, conv kernels in [-0.5, 0.5), f32 selection biases in [-0.05, 0.05) */
        uint64_t s = mix(g->o->seed ^ mix(0xabcdefull + i));
        const int64_t n = (int64_t)(t->nbytes / zmlx_dtype_size(t->dtype));
        for (int64_t k = 0; k < n; k++) {
            float u = rng_unit(&s);
            if (g->part[i] == PART_EBIAS) ((float *)buf)[k] = 0.05f * u;
            else ((uint16_t *)buf)[k] = zc_f32_to_bf16(g->part[i] == PART_CONV ? 0.5f * u : 1.0f + 0.1f * u);
        }
        return ZMLX_OK;
    }
    }
}

typedef struct tlist {
    zw_tensor *t;
    int *part, *mod;
    size_t n, cap;
    tmod *mods;
    size_t n_mods, cap_mods;
    uint64_t params;
    int oom;
} tlist;

static void tl_push(tlist *L, const char *name, zmlx_dtype dt, int ndim, const int64_t *shape, int part, int mod) {
    if (L->oom) return;
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 256;
        zw_tensor *t = realloc(L->t, cap * sizeof *t);
        if (t) L->t = t;
        int *p = realloc(L->part, cap * sizeof *p);
        if (p) L->part = p;
        int *m = realloc(L->mod, cap * sizeof *m);
        if (m) L->mod = m;
        if (!t || !p || !m) { L->oom = 1; return; }
        L->cap = cap;
    }
    zw_tensor *x = &L->t[L->n];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->dtype = dt;
    x->ndim = ndim;
    uint64_t ne = 1;
    for (int d = 0; d < ndim; d++) ne *= (uint64_t)(x->shape[d] = shape[d]);
    x->nbytes = ne * zmlx_dtype_size(dt);
    L->part[L->n] = part;
    L->mod[L->n] = mod;
    L->n++;
}

/* A quantized linear (stacked: [E, N, K]) in mlx-lm's weight, scales, biases order. */
static void tl_qlinear(tlist *L, const char *path, int stacked, int64_t E, int64_t N, int64_t K, int bits, int gs,
                       zmlx_qmode mode) {
    if (L->oom) return;
    if (L->n_mods == L->cap_mods) {
        size_t cap = L->cap_mods ? 2 * L->cap_mods : 64;
        tmod *m = realloc(L->mods, cap * sizeof *m);
        if (!m) { L->oom = 1; return; }
        L->mods = m;
        L->cap_mods = cap;
    }
    int mid = (int)L->n_mods++;
    L->mods[mid] = (tmod){E, N, K, bits, gs, mode, NULL, NULL};
    L->params += (uint64_t)(E * N * K);
    char name[160];
    int nd = stacked ? 3 : 2;
    int64_t sh[3] = {E, N, 0}, *s = stacked ? sh : sh + 1;
    sh[2] = K * bits / 32;
    snprintf(name, sizeof name, "%s.weight", path);
    tl_push(L, name, ZMLX_U32, nd, s, PART_W, mid);
    sh[2] = K / gs;
    snprintf(name, sizeof name, "%s.scales", path);
    tl_push(L, name, mode == ZMLX_QMODE_AFFINE ? ZMLX_BF16 : ZMLX_U8, nd, s, PART_S, mid);
    if (mode == ZMLX_QMODE_AFFINE) {
        snprintf(name, sizeof name, "%s.biases", path);
        tl_push(L, name, ZMLX_BF16, nd, s, PART_B, mid);
    }
}

/* A float tensor: a norm weight (bf16), a conv kernel (bf16) or a selection
 * bias (f32); `part` says how tiny_fill draws it. */
static void tl_float(tlist *L, const char *name, zmlx_dtype dt, int ndim, const int64_t *shape, int part) {
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (uint64_t)shape[d];
    L->params += n;
    tl_push(L, name, dt, ndim, shape, part, -1);
}

static void tl_norm(tlist *L, const char *name, int64_t D) { tl_float(L, name, ZMLX_BF16, 1, &D, PART_NORM); }

/* Python repr of a float as json.dump writes it (1e-06, 1000000.0, 0.02). */
static void py_float(char *buf, size_t len, double v) {
    if (v == floor(v) && fabs(v) < 1e16) {
        snprintf(buf, len, "%.1f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, len, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
}

typedef struct kv { const char *key; char *val; } kv;
static int cmp_kv(const void *a, const void *b) { return strcmp(((const kv *)a)->key, ((const kv *)b)->key); }

/* The quantization block (value text at indent level 1). */
static void quant_block(sbuf *b, const zw_tiny_opts *o) {
    sb_printf(b, "{\n        \"group_size\": %d,\n        \"bits\": %d,\n        \"mode\": \"%s\"", o->group_size,
              o->bits, zmlx_qmode_name(o->mode));
    for (int l = o->dense_layers; l < o->layers; l++) /* the routers of the MoE layers */
        sb_printf(b, ",\n        \"model.layers.%d.%s.gate\": {\n            \"group_size\": 64,\n"
                     "            \"bits\": 8\n        }", l, zm_arch_names_of(o->arch)->ffn);
    sb_printf(b, "\n    }");
}

static zmlx_status write_configs(const char *dir, const zw_tiny_opts *o, char *err, size_t errlen) {
    char eps[32], theta[32];
    py_float(eps, sizeof eps, o->rms_eps);
    py_float(theta, sizeof theta, o->rope_theta);
    sbuf q = {0};
    quant_block(&q, o);
    if (q.oom) return zc_err(err, errlen, ZMLX_ERR_OOM, "make-tiny: out of memory");
    char eos[128];
    if (o->n_eos == 1) snprintf(eos, sizeof eos, "%d", o->eos[0]);
    else {
        size_t n = (size_t)snprintf(eos, sizeof eos, "[");
        for (int i = 0; i < o->n_eos && n < sizeof eos; i++)
            n += (size_t)snprintf(eos + n, sizeof eos - n, "%s\n        %d", i ? "," : "", o->eos[i]);
        if (n < sizeof eos) snprintf(eos + n, sizeof eos - n, "\n    ]");
    }
    /* mlp_only_layers: [0, 1, ..., dense_layers-1] in mlx-lm's json layout */
    char mlp_only[512];
    size_t mo = (size_t)snprintf(mlp_only, sizeof mlp_only, "[");
    for (int l = 0; l < o->dense_layers && mo < sizeof mlp_only; l++)
        mo += (size_t)snprintf(mlp_only + mo, sizeof mlp_only - mo, "%s\n        %d", l ? "," : "", l);
    if (mo < sizeof mlp_only) snprintf(mlp_only + mo, sizeof mlp_only - mo, o->dense_layers ? "\n    ]" : "]");
    /* each NUM owns its buffer: initializer elements are evaluated in no fixed order (the two
       arrays share the indices of equal values) */
    char num[16][24];
#define NUM(i, v) (snprintf(num[i], sizeof num[i], "%lld", (long long)(v)), num[i])
    /* lfm2_moe: layer_types as HF writes them */
    sbuf lt = {0};
    sb_printf(&lt, "[");
    for (int l = 0; l < o->layers; l++)
        sb_printf(&lt, "%s\n        \"%s\"", l ? "," : "", tiny_is_attn(o, l) ? "full_attention" : "conv");
    sb_printf(&lt, "\n    ]");
    kv lfm2[] = {
        {"architectures", "[\n        \"Lfm2MoeForCausalLM\"\n    ]"},
        {"bos_token_id", NUM(0, o->bos)},
        {"conv_L_cache", NUM(13, o->conv_L)},
        {"conv_bias", "false"},
        {"eos_token_id", eos},
        {"hidden_size", NUM(2, o->hidden)},
        {"intermediate_size", NUM(3, o->dense_inter)},
        {"layer_types", lt.p ? lt.p : ""},
        {"max_position_embeddings", NUM(4, o->max_pos)},
        {"model_type", "\"lfm2_moe\""},
        {"moe_intermediate_size", NUM(6, o->moe_inter)},
        {"norm_eps", eps},
        {"norm_topk_prob", "true"},
        {"num_attention_heads", NUM(7, o->heads)},
        {"num_dense_layers", NUM(14, o->dense_layers)},
        {"num_experts", NUM(8, o->experts)},
        {"num_experts_per_tok", NUM(9, o->top_k)},
        {"num_hidden_layers", NUM(10, o->layers)},
        {"num_key_value_heads", NUM(11, o->kv_heads)},
        {"quantization", q.p},
        {"quantization_config", q.p},
        {"rope_theta", theta},
        {"routed_scaling_factor", "1.0"},
        {"tie_embedding", "true"},
        {"torch_dtype", "\"bfloat16\""},
        {"use_expert_bias", "true"},
        {"vocab_size", NUM(12, o->vocab)},
    };
    kv qwen3[] = {
        {"architectures", "[\n        \"Qwen3MoeForCausalLM\"\n    ]"},
        {"attention_bias", "false"},
        {"attention_dropout", "0.0"},
        {"bos_token_id", NUM(0, o->bos)},
        {"decoder_sparse_step", "1"},
        {"eos_token_id", eos},
        {"head_dim", NUM(1, o->head_dim)},
        {"hidden_act", "\"silu\""},
        {"hidden_size", NUM(2, o->hidden)},
        {"initializer_range", "0.02"},
        {"intermediate_size", NUM(3, o->dense_inter)},
        {"max_position_embeddings", NUM(4, o->max_pos)},
        {"max_window_layers", NUM(5, o->layers)},
        {"mlp_only_layers", mlp_only},
        {"model_type", "\"qwen3_moe\""},
        {"moe_intermediate_size", NUM(6, o->moe_inter)},
        {"norm_topk_prob", "true"},
        {"num_attention_heads", NUM(7, o->heads)},
        {"num_experts", NUM(8, o->experts)},
        {"num_experts_per_tok", NUM(9, o->top_k)},
        {"num_hidden_layers", NUM(10, o->layers)},
        {"num_key_value_heads", NUM(11, o->kv_heads)},
        {"output_router_logits", "false"},
        {"quantization", q.p},
        {"quantization_config", q.p},
        {"rms_norm_eps", eps},
        {"rope_scaling", "null"},
        {"rope_theta", theta},
        {"router_aux_loss_coef", "0.001"},
        {"sliding_window", "null"},
        {"tie_word_embeddings", o->tie ? "true" : "false"},
        {"torch_dtype", "\"bfloat16\""},
        {"transformers_version", "\"4.51.0\""},
        {"use_cache", "true"},
        {"use_sliding_window", "false"},
        {"vocab_size", NUM(12, o->vocab)},
    };
#undef NUM
    const int is_lfm2 = o->arch == ZM_ARCH_LFM2_MOE;
    kv *keys = is_lfm2 ? lfm2 : qwen3;
    size_t nk = is_lfm2 ? sizeof lfm2 / sizeof lfm2[0] : sizeof qwen3 / sizeof qwen3[0];
    qsort(keys, nk, sizeof keys[0], cmp_kv); /* mlx-lm save_config sorts the top level */
    sbuf b = {0};
    sb_printf(&b, "{");
    for (size_t i = 0; i < nk; i++) {
        sb_printf(&b, "%s\n    \"%s\": ", i ? "," : "", keys[i].key);
        sb_put(&b, keys[i].val, strlen(keys[i].val));
    }
    sb_printf(&b, "\n}");
    zmlx_status s = lt.oom || b.oom ? zc_err(err, errlen, ZMLX_ERR_OOM, "make-tiny: out of memory")
                                     : write_text(dir, "config.json", &b, err, errlen);
    free(b.p);
    free(q.p);
    free(lt.p);
    if (s != ZMLX_OK) return s;

    /* generation_config.json as transformers writes it (indent 2, sorted, newline) */
    sbuf gcb = {0};
    sb_printf(&gcb, "{\n  \"bos_token_id\": %d,\n  \"do_sample\": true,\n  \"eos_token_id\": ", o->bos);
    if (o->n_eos == 1) sb_printf(&gcb, "%d", o->eos[0]);
    else {
        sb_printf(&gcb, "[");
        for (int i = 0; i < o->n_eos; i++) sb_printf(&gcb, "%s\n    %d", i ? "," : "", o->eos[i]);
        sb_printf(&gcb, "\n  ]");
    }
    sb_printf(&gcb, ",\n  \"pad_token_id\": %d,\n  \"temperature\": 0.6,\n  \"top_k\": 20,\n  \"top_p\": 0.95,\n"
                    "  \"transformers_version\": \"4.51.0\"\n}\n", o->bos);
    s = write_text(dir, "generation_config.json", &gcb, err, errlen);
    free(gcb.p);
    return s;
}

static zmlx_status check_opts(const zw_tiny_opts *o, char *err, size_t errlen) {
    if (o->layers < 1 || o->hidden < 1 || o->heads < 1 || o->kv_heads < 1 || o->head_dim < 2 || o->experts < 1 ||
        o->top_k < 1 || o->top_k > o->experts || o->moe_inter < 1 || o->dense_inter < 1 || o->vocab < 1 ||
        o->heads % o->kv_heads || o->head_dim % 2 || o->shard_limit == 0 || o->n_eos < 1 || o->n_eos > ZMLX_MAX_EOS)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "make-tiny: inconsistent dimensions");
    if (o->arch == ZM_ARCH_LFM2_MOE) {
        int bad = o->hidden != o->heads * o->head_dim || o->conv_L < 2 || o->conv_L > ZMLX_SHORT_CONV_MAX_L ||
                  o->n_attn < 0 || o->n_attn > ZW_MAX_ATTN;
        for (int i = 0; i < o->n_attn && !bad; i++) bad = o->attn_idx[i] < 0 || o->attn_idx[i] >= o->layers;
        if (bad)
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG,
                          "make-tiny: lfm2_moe needs hidden = heads x head_dim, conv_L in [2, %d] and attention "
                          "layers that exist", ZMLX_SHORT_CONV_MAX_L);
    }
    if (o->dense_layers < 0 || o->dense_layers > o->layers)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "make-tiny: dense layers %d not in [0, layers %d]",
                      o->dense_layers, o->layers);
    if (o->dense_layers && (o->dense_inter % o->group_size || ((int64_t)o->dense_inter * o->bits) % 32))
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG,
                      "make-tiny: dense intermediate size %d is not a multiple of group size %d", o->dense_inter,
                      o->group_size);
    /* every quantized input dim must hold whole groups, also at the 8-bit gs64 router */
    int64_t ks[] = {o->hidden, (int64_t)o->heads * o->head_dim, o->moe_inter};
    for (int i = 0; i < 3; i++)
        if (ks[i] % o->group_size || ks[i] % 64 || (ks[i] * o->bits) % 32)
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG,
                          "make-tiny: input size %lld is not a multiple of group size %d (and 64 for the router)",
                          (long long)ks[i], o->group_size);
    return ZMLX_OK;
}

zmlx_status zw_make_tiny(const char *dir, const zw_tiny_opts *o, char *err, size_t errlen) {
    zmlx_status s = check_opts(o, err, errlen);
    if (s != ZMLX_OK) return s;
    /* probe the format once (rejects bad bits/group/mode combinations) */
    zmlx_qweight probe = {.mode = o->mode, .bits = o->bits, .group_size = o->group_size, .transpose = 1, .E = 1,
                          .N = 1, .K = o->hidden, .w = o, .scales = o,
                          .biases = o->mode == ZMLX_QMODE_AFFINE ? o : NULL,
                          .scale_dtype = o->mode == ZMLX_QMODE_AFFINE ? ZMLX_BF16 : ZMLX_U8};
    char why[160];
    if (zmlx_qweight_check(&probe, why, sizeof why) != ZMLX_OK)
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "make-tiny: %s", why);

    const int64_t D = o->hidden, hd = o->head_dim, Hq = o->heads, Hkv = o->kv_heads, E = o->experts;
    const int b = o->bits, gs = o->group_size;
    tlist L = {0};
    char p[160];
    /* mlx-lm tree_flatten order: embed_tokens, layers[i] (self_attn, input_layernorm,
       post_attention_layernorm, mlp), norm, lm_head */
    tl_qlinear(&L, "model.embed_tokens", 0, 1, o->vocab, D, b, gs, o->mode);
    const int lfm2 = o->arch == ZM_ARCH_LFM2_MOE;
    const zm_arch_names *an = zm_arch_names_of(o->arch);
    char p2[96];
    for (int l = 0; l < o->layers; l++) {
#define P(s) (snprintf(p, sizeof p, "model.layers.%d.%s", l, s), p)
#define F(s) (snprintf(p2, sizeof p2, "%s.%s", an->ffn, s), P(p2))
#define NORM_W(s) (snprintf(p2, sizeof p2, "%s.weight", s), P(p2))
        if (tiny_is_attn(o, l)) {
            tl_qlinear(&L, P(an->q), 0, 1, Hq * hd, D, b, gs, o->mode);
            tl_qlinear(&L, P(an->k), 0, 1, Hkv * hd, D, b, gs, o->mode);
            tl_qlinear(&L, P(an->v), 0, 1, Hkv * hd, D, b, gs, o->mode);
            tl_qlinear(&L, P(an->o), 0, 1, D, Hq * hd, b, gs, o->mode);
            tl_norm(&L, NORM_W(an->q_norm), hd);
            tl_norm(&L, NORM_W(an->k_norm), hd);
        } else { /* LFM2's short-conv block */
            const int64_t cw[3] = {D, o->conv_L, 1};
            tl_qlinear(&L, P("conv.in_proj"), 0, 1, 3 * D, D, b, gs, o->mode);
            tl_qlinear(&L, P("conv.out_proj"), 0, 1, D, D, b, gs, o->mode);
            tl_float(&L, P("conv.conv.weight"), ZMLX_BF16, 3, cw, PART_CONV);
        }
        tl_norm(&L, NORM_W(an->in_norm), D);
        tl_norm(&L, NORM_W(an->post_norm), D);
        if (l < o->dense_layers) { /* mlx-lm's MLP: gate_proj, down_proj, up_proj */
            tl_qlinear(&L, F("gate_proj"), 0, 1, o->dense_inter, D, b, gs, o->mode);
            tl_qlinear(&L, F("down_proj"), 0, 1, D, o->dense_inter, b, gs, o->mode);
            tl_qlinear(&L, F("up_proj"), 0, 1, o->dense_inter, D, b, gs, o->mode);
            continue;
        }
        tl_qlinear(&L, F("gate"), 0, 1, E, D, 8, 64, ZMLX_QMODE_AFFINE); /* mlx-lm quant_predicate */
        if (lfm2) tl_float(&L, F("expert_bias"), ZMLX_F32, 1, &E, PART_EBIAS);
        tl_qlinear(&L, F("switch_mlp.gate_proj"), 1, E, o->moe_inter, D, b, gs, o->mode);
        tl_qlinear(&L, F("switch_mlp.up_proj"), 1, E, o->moe_inter, D, b, gs, o->mode);
        tl_qlinear(&L, F("switch_mlp.down_proj"), 1, E, D, o->moe_inter, b, gs, o->mode);
#undef NORM_W
#undef F
#undef P
    }
    tl_norm(&L, an->final_norm, D);
    if (!o->tie && !lfm2) tl_qlinear(&L, "lm_head", 0, 1, o->vocab, D, b, gs, o->mode);

    tgen g = {o, L.mods, L.n_mods, L.part, L.mod, NULL};
    if (L.oom) s = zc_err(err, errlen, ZMLX_ERR_OOM, "make-tiny: out of memory");
    if (s == ZMLX_OK && zc_pool_create(o->n_threads, &g.pool) != ZMLX_OK)
        s = zc_err(err, errlen, ZMLX_ERR_OOM, "make-tiny: cannot start threads");
    if (s == ZMLX_OK) s = zw_write(dir, L.t, L.n, o->shard_limit, L.params, tiny_fill, &g, err, errlen);
    if (s == ZMLX_OK) s = write_configs(dir, o, err, errlen);
    zc_pool_free(g.pool);
    for (size_t i = 0; i < L.n_mods; i++) {
        free(L.mods[i].scales);
        free(L.mods[i].biases);
    }
    free(L.mods);
    free(L.t);
    free(L.part);
    free(L.mod);
    return s;
}
