/*
 * bind.c — zmlx_model_open and weight binding: every tensor an architecture
 * needs is looked up, its dtype and shape checked against the config (and
 * the module's quantization) before any compute, and turned into a view into
 * the mapped files: zmlx_qweight for quantized linears / expert stacks /
 * embeddings, zm_fview for float tensors. No weight bytes are copied.
 * Like mlx-lm's strict load, a tensor the architecture does not use is an
 * error (except lm_head.* of a tied model, which mlx-lm's sanitize drops).
 */
#include "model/model.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct binder {
    zmlx_model *m;
    uint8_t *used; /* per entry of m->st.by_name */
    char *err;
    size_t errlen;
} binder;

const char *zmlx_wcat_name(zmlx_wcat c) {
    static const char *const names[ZMLX_WCAT_COUNT_] = {"embedding", "attention", "experts", "dense mlp",
                                                        "router",    "norms",     "lm_head"};
    return (unsigned)c < ZMLX_WCAT_COUNT_ ? names[c] : "?";
}

static long find_index(const zst_set *s, const char *name) {
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->by_name[mid]->name, name);
        if (c == 0) return (long)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

/* Look up a tensor and mark it used; NULL (with the message) if absent. */
static const zst_tensor *need(binder *b, const char *name, zmlx_status *st) {
    long i = find_index(&b->m->st, name);
    if (i < 0) {
        *st = zc_err(b->err, b->errlen, ZMLX_ERR_FORMAT, "tensor '%s' is missing (not in any of the %d model*.safetensors files)",
                     name, b->m->st.n_files);
        return NULL;
    }
    b->used[i] = 1;
    return b->m->st.by_name[i];
}

static void fmt_shape(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* dtype must satisfy `ok` and shape must equal want[0..ndim). */
static zmlx_status check_tensor(binder *b, const zst_tensor *t, int dtype_ok, const char *dtype_want, int ndim,
                                const int64_t *want) {
    const char *fn = zst_file_name(&b->m->st, t);
    if (!dtype_ok)
        return zc_err(b->err, b->errlen, ZMLX_ERR_SHAPE, "%s: tensor '%s' has dtype %s, expected %s", fn, t->name,
                      t->tag, dtype_want);
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == want[d];
    if (!same) {
        char got[128], exp[128];
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        fmt_shape(exp, sizeof exp, ndim, want);
        return zc_err(b->err, b->errlen, ZMLX_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", fn, t->name, got,
                      exp);
    }
    return ZMLX_OK;
}

static int is_float_tensor(const zst_tensor *t) { return t->dtype >= 0 && zmlx_dtype_is_float((zmlx_dtype)t->dtype); }

static void add_kind(zmlx_model *m, zmlx_wcat c, const zm_qkind *k) {
    for (int i = 0; i < m->n_kinds[c]; i++) {
        zm_qkind *x = &m->kinds[c][i];
        if (x->quantized == k->quantized && x->mode == k->mode && x->bits == k->bits &&
            x->group_size == k->group_size && x->dtype == k->dtype) {
            x->count++;
            return;
        }
    }
    if (m->n_kinds[c] < ZM_MAX_QKINDS) {
        m->kinds[c][m->n_kinds[c]] = *k;
        m->kinds[c][m->n_kinds[c]++].count = 1;
    }
}

static uint64_t tbytes(const zst_tensor *t) { return t ? t->end - t->begin : 0; }

/* A float tensor of shape want[0..ndim). */
static zmlx_status bind_float(binder *b, const char *name, zmlx_wcat cat, int ndim, const int64_t *want,
                              zm_fview *out) {
    zmlx_status st = ZMLX_OK;
    const zst_tensor *t = need(b, name, &st);
    if (!t) return st;
    if ((st = check_tensor(b, t, is_float_tensor(t), "f32, f16 or bf16", ndim, want)) != ZMLX_OK) return st;
    out->data = t->data;
    out->dtype = (zmlx_dtype)t->dtype;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) out->shape[d] = want[d];
    b->m->bytes[cat] += tbytes(t);
    zm_qkind k = {0, ZMLX_QMODE_AFFINE, 0, 0, out->dtype, 0};
    add_kind(b->m, cat, &k);
    return ZMLX_OK;
}

static zmlx_status bind_norm(binder *b, const char *name, int64_t D, zm_fview *out) {
    return bind_float(b, name, ZMLX_WCAT_NORM, 1, &D, out);
}

/*
 * The linear module at `path` of logical shape [E, N, K] (stacked = 1 for a
 * [E, ...] SwitchLinear stack; otherwise E must be 1 and tensors are 2-D).
 */
static zmlx_status bind_linear(binder *b, const char *path, zmlx_wcat cat, int stacked, int64_t E, int64_t N,
                               int64_t K, zm_linear *out) {
    zmlx_model *m = b->m;
    char wn[256], sn[256], bn[256];
    snprintf(wn, sizeof wn, "%s.weight", path);
    snprintf(sn, sizeof sn, "%s.scales", path);
    snprintf(bn, sizeof bn, "%s.biases", path);
    zm_qspec q = zm_module_qspec(&m->cfg, &m->st, path);
    zmlx_status st = ZMLX_OK;
    int nd = stacked ? 3 : 2;
    int64_t want[3];
    int64_t *last = &want[nd - 1];
    if (stacked) want[0] = E;
    want[nd - 2] = N;
    out->present = 1;
    if (!q.quantized) {
        *last = K;
        out->quantized = 0;
        return bind_float(b, wn, cat, nd, want, &out->f);
    }

    const zst_tensor *w = need(b, wn, &st), *sc = w ? need(b, sn, &st) : NULL;
    if (!w || !sc) {
        if (w && find_index(&m->st, sn) < 0)
            st = zc_err(b->err, b->errlen, ZMLX_ERR_FORMAT, "%s: tensor '%s' is quantized but '%s' is missing",
                        zst_file_name(&m->st, w), wn, sn);
        return st;
    }
    const char *wf = zst_file_name(&m->st, w);
    if (q.bits == 0) {
        /* no config block: infer from shapes (FORMATS.md A.2 corollary) */
        int64_t wl = w->ndim ? w->shape[w->ndim - 1] : 0, sl = sc->ndim ? sc->shape[sc->ndim - 1] : 0;
        if (wl <= 0 || sl <= 0 || (32 * wl) % K || K % sl)
            return zc_err(b->err, b->errlen, ZMLX_ERR_SHAPE,
                          "%s: cannot infer bits / group size of '%s' (K = %lld) from its shapes", wf, path,
                          (long long)K);
        q.bits = (int)(32 * wl / K);
        q.group_size = (int)(K / sl);
        q.mode = sc->dtype == ZMLX_U8 ? (q.group_size == 16 ? ZMLX_QMODE_NVFP4 : q.bits == 8 ? ZMLX_QMODE_MXFP8
                                                                                            : ZMLX_QMODE_MXFP4)
                                      : ZMLX_QMODE_AFFINE;
    }
    if ((K * q.bits) % 32 || K % q.group_size)
        return zc_err(b->err, b->errlen, ZMLX_ERR_SHAPE,
                      "%s: '%s' has input size %lld, not a multiple of its group size %d (or of 32/bits)", wf, path,
                      (long long)K, q.group_size);
    *last = K * q.bits / 32;
    if ((st = check_tensor(b, w, w->dtype == ZMLX_U32, "u32 (packed codes)", nd, want)) != ZMLX_OK) return st;
    *last = K / q.group_size;
    int affine = q.mode == ZMLX_QMODE_AFFINE;
    if ((st = check_tensor(b, sc, affine ? is_float_tensor(sc) : sc->dtype == ZMLX_U8,
                           affine ? "f32, f16 or bf16 (affine scales)" : "u8 (fp-mode scales)", nd, want)) != ZMLX_OK)
        return st;
    const zst_tensor *bi = NULL;
    if (affine) {
        if (!(bi = need(b, bn, &st))) return st;
        if ((st = check_tensor(b, bi, bi->dtype == sc->dtype, zmlx_dtype_name((zmlx_dtype)sc->dtype), nd, want)) !=
            ZMLX_OK)
            return st;
    } else if (find_index(&m->st, bn) >= 0) {
        return zc_err(b->err, b->errlen, ZMLX_ERR_SHAPE, "%s: tensor '%s' present but %s has no biases", wf, bn,
                      zmlx_qmode_name(q.mode));
    }
    out->quantized = 1;
    out->q = (zmlx_qweight){.mode = q.mode, .bits = q.bits, .group_size = q.group_size, .transpose = 1,
                            .E = E, .N = N, .K = K, .w = w->data, .scales = sc->data,
                            .biases = bi ? bi->data : NULL, .scale_dtype = (zmlx_dtype)sc->dtype};
    char why[200];
    if ((st = zmlx_qweight_check(&out->q, why, sizeof why)) != ZMLX_OK)
        return zc_err(b->err, b->errlen, ZMLX_ERR_SHAPE, "%s: '%s': %s", wf, path, why);
    m->bytes[cat] += tbytes(w) + tbytes(sc) + tbytes(bi);
    zm_qkind k = {1, q.mode, q.bits, q.group_size, (zmlx_dtype)sc->dtype, 0};
    add_kind(m, cat, &k);
    return ZMLX_OK;
}

const zm_arch_names *zm_arch_names_of(zm_arch arch) {
    static const zm_arch_names qwen3 = {"input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                                        "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "self_attn.q_norm", "self_attn.k_norm", "mlp", "model.norm.weight"};
    static const zm_arch_names lfm2 = {"operator_norm", "ffn_norm", "self_attn.q_proj", "self_attn.k_proj",
                                       "self_attn.v_proj", "self_attn.out_proj", "self_attn.q_layernorm",
                                       "self_attn.k_layernorm", "feed_forward", "model.embedding_norm.weight"};
    return arch == ZM_ARCH_LFM2_MOE ? &lfm2 : &qwen3;
}

zmlx_status zm_bind(zmlx_model *m, char *err, size_t errlen) {
    const zm_config *c = &m->cfg;
    binder b = {m, calloc(m->st.n ? m->st.n : 1, 1), err, errlen};
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!b.used || !m->layers) {
        free(b.used);
        return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory binding weights");
    }
    const int64_t D = c->hidden, hd = c->head_dim, H = c->n_heads, Hkv = c->n_kv_heads;
    const int64_t E = c->n_experts, I = c->moe_inter, V = c->vocab;
    const zm_arch_names *an = zm_arch_names_of(c->arch);
    zmlx_status st = bind_linear(&b, "model.embed_tokens", ZMLX_WCAT_EMBED, 0, 1, V, D, &m->embed);
    char p[192], p2[224], f[64];
    for (int64_t l = 0; l < c->n_layers && st == ZMLX_OK; l++) {
        zm_layer *L = &m->layers[l];
#define LIN(suffix, cat, stacked, e, n, k, dst) \
    if (st == ZMLX_OK) { \
        snprintf(p, sizeof p, "model.layers.%lld.%s", (long long)l, suffix); \
        st = bind_linear(&b, p, cat, stacked, e, n, k, dst); \
    }
#define NORM(suffix, d, dst) \
    if (st == ZMLX_OK) { \
        snprintf(p2, sizeof p2, "model.layers.%lld.%s.weight", (long long)l, suffix); \
        st = bind_norm(&b, p2, d, dst); \
    }
/* the feed-forward's module `s` (its path under an->ffn) */
#define FFN(s) (snprintf(f, sizeof f, "%s.%s", an->ffn, s), f)
        NORM(an->in_norm, D, &L->in_norm);
        NORM(an->post_norm, D, &L->post_norm);
        L->is_attn = zm_layer_is_attn(c, l);
        if (L->is_attn) {
            LIN(an->q, ZMLX_WCAT_ATTN, 0, 1, H * hd, D, &L->q);
            LIN(an->k, ZMLX_WCAT_ATTN, 0, 1, Hkv * hd, D, &L->k);
            LIN(an->v, ZMLX_WCAT_ATTN, 0, 1, Hkv * hd, D, &L->v);
            LIN(an->o, ZMLX_WCAT_ATTN, 0, 1, D, H * hd, &L->o);
            NORM(an->q_norm, hd, &L->q_norm);
            NORM(an->k_norm, hd, &L->k_norm);
        } else { /* LFM2's short-conv block */
            LIN("conv.in_proj", ZMLX_WCAT_ATTN, 0, 1, 3 * D, D, &L->conv_in);
            LIN("conv.out_proj", ZMLX_WCAT_ATTN, 0, 1, D, D, &L->conv_out);
            const int64_t cw[3] = {D, c->conv_L, 1};
            snprintf(p2, sizeof p2, "model.layers.%lld.conv.conv.weight", (long long)l);
            if (st == ZMLX_OK) st = bind_float(&b, p2, ZMLX_WCAT_ATTN, 3, cw, &L->conv_w);
        }
        L->is_moe = zm_layer_is_moe(c, l);
        if (L->is_moe) {
            LIN(FFN("gate"), ZMLX_WCAT_ROUTER, 0, 1, E, D, &L->router);
            LIN(FFN("switch_mlp.gate_proj"), ZMLX_WCAT_EXPERTS, 1, E, I, D, &L->ex_gate);
            LIN(FFN("switch_mlp.up_proj"), ZMLX_WCAT_EXPERTS, 1, E, I, D, &L->ex_up);
            LIN(FFN("switch_mlp.down_proj"), ZMLX_WCAT_EXPERTS, 1, E, D, I, &L->ex_down);
            if (c->expert_bias) {
                snprintf(p2, sizeof p2, "model.layers.%lld.%s.expert_bias", (long long)l, an->ffn);
                if (st == ZMLX_OK) st = bind_float(&b, p2, ZMLX_WCAT_ROUTER, 1, &E, &L->expert_bias);
            }
        } else {
            LIN(FFN("gate_proj"), ZMLX_WCAT_DENSE_MLP, 0, 1, c->inter, D, &L->mlp_gate);
            LIN(FFN("up_proj"), ZMLX_WCAT_DENSE_MLP, 0, 1, c->inter, D, &L->mlp_up);
            LIN(FFN("down_proj"), ZMLX_WCAT_DENSE_MLP, 0, 1, D, c->inter, &L->mlp_down);
        }
#undef FFN
#undef LIN
#undef NORM
    }
    if (st == ZMLX_OK) st = bind_norm(&b, an->final_norm, D, &m->norm);
    if (st == ZMLX_OK && !c->tie) st = bind_linear(&b, "lm_head", ZMLX_WCAT_LM_HEAD, 0, 1, V, D, &m->lm_head);
    for (size_t i = 0; i < m->st.n && st == ZMLX_OK; i++) {
        const zst_tensor *t = m->st.by_name[i];
        if (b.used[i] || (c->tie && !strncmp(t->name, "lm_head.", 8))) continue;
        st = zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: tensor '%s' is not used by %s (unexpected parameter)",
                    zst_file_name(&m->st, t), t->name, c->model_type);
    }
    free(b.used);
    return st;
}

/* ------------------------------------------------------------- open/free */

void zmlx_model_opts_default(zmlx_model_opts *o) { memset(o, 0, sizeof *o); }

void zmlx_model_free(zmlx_model *m) {
    if (!m) return;
    zst_close(&m->st);
    zm_config_free(&m->cfg);
    free(m->layers);
    free(m);
}

static zmlx_status read_config(const char *dir, zm_config *c, char *err, size_t errlen) {
    size_t dl = strlen(dir);
    char *path = malloc(dl + 32);
    if (!path) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    char *text = NULL;
    size_t len;
    int missing;
    snprintf(path, dl + 32, "%s/config.json", dir);
    zmlx_status s = zm_read_file(path, &text, &len, NULL, err, errlen);
    if (s == ZMLX_OK) s = zm_config_parse(text, len, "config.json", c, err, errlen);
    free(text);
    text = NULL;
    if (s == ZMLX_OK) {
        snprintf(path, dl + 32, "%s/generation_config.json", dir);
        s = zm_read_file(path, &text, &len, &missing, err, errlen);
        if (s == ZMLX_OK) s = zm_genconfig_parse(text, len, "generation_config.json", c, err, errlen);
        else if (missing) s = ZMLX_OK;
        free(text);
        if (s != ZMLX_OK) zm_config_free(c);
    }
    free(path);
    return s;
}

zmlx_status zmlx_model_open(const char *dir, const zmlx_model_opts *opts, zmlx_model **out, char *err,
                            size_t errlen) {
    if (!dir || !out) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "zmlx_model_open: NULL argument");
    *out = NULL;
    zmlx_model_opts o;
    zmlx_model_opts_default(&o);
    if (opts) o = *opts;
    zmlx_model *m = calloc(1, sizeof *m);
    if (!m) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    double t0 = zc_now_sec();
    zmlx_status s = read_config(dir, &m->cfg, err, errlen);
    double t_cfg = zc_now_sec() - t0;
    if (s == ZMLX_OK) s = zst_open_dir(dir, &m->st, err, errlen);
    if (s == ZMLX_OK) {
        m->st.t_parse += t_cfg;
        double t1 = zc_now_sec();
        s = zm_bind(m, err, errlen);
        m->t_bind = zc_now_sec() - t1;
    }
    if (s == ZMLX_OK && o.prefault) m->t_touch = zst_prefault(&m->st);
    if (s != ZMLX_OK) {
        zmlx_model_free(m);
        return s;
    }
    *out = m;
    return ZMLX_OK;
}

void zmlx_model_get_info(const zmlx_model *m, zmlx_model_info *o) {
    memset(o, 0, sizeof *o);
    if (!m) return;
    const zm_config *c = &m->cfg;
    o->arch = c->model_type;
    o->n_layers = (int)c->n_layers;
    o->hidden = (int)c->hidden;
    o->n_heads = (int)c->n_heads;
    o->n_kv_heads = (int)c->n_kv_heads;
    o->head_dim = (int)c->head_dim;
    o->n_experts = (int)c->n_experts;
    o->top_k = (int)c->top_k;
    o->moe_inter = (int)c->moe_inter;
    o->dense_inter = (int)c->inter;
    for (int64_t l = 0; l < c->n_layers; l++) o->n_moe_layers += m->layers[l].is_moe;
    o->vocab = (int)c->vocab;
    o->rms_eps = (float)c->rms_eps;
    o->rope_theta = (float)c->rope_theta;
    o->max_pos = c->max_pos;
    o->tie_embeddings = c->tie;
    o->norm_topk = c->norm_topk;
    o->n_eos = c->n_eos;
    memcpy(o->eos, c->eos, sizeof o->eos);
    o->n_files = m->st.n_files;
    o->n_tensors = (int64_t)m->st.n;
    for (int i = 0; i < m->st.n_files; i++) o->file_bytes += m->st.files[i].size;
    memcpy(o->bytes, m->bytes, sizeof o->bytes);
    o->copied_bytes = m->st.copied_bytes;
    o->t_mmap = m->st.t_mmap;
    o->t_parse = m->st.t_parse;
    o->t_bind = m->t_bind;
    o->t_touch = m->t_touch;
}

void zmlx_model_quant_summary(const zmlx_model *m, zmlx_wcat c, char *buf, size_t len) {
    if (!buf || !len) return;
    buf[0] = 0;
    if (!m || (unsigned)c >= ZMLX_WCAT_COUNT_) return;
    size_t o = 0;
    int n = m->n_kinds[c];
    for (int i = 0; i < n && o < len; i++) {
        const zm_qkind *k = &m->kinds[c][i];
        const char *sep = i ? ", " : "";
        if (k->quantized)
            o += (size_t)snprintf(buf + o, len - o, "%s%s %d-bit gs%d (%s scales)", sep, zmlx_qmode_name(k->mode),
                                  k->bits, k->group_size, zmlx_dtype_name(k->dtype));
        else
            o += (size_t)snprintf(buf + o, len - o, "%s%s (float)", sep, zmlx_dtype_name(k->dtype));
        if (n > 1 && o < len) o += (size_t)snprintf(buf + o, len - o, " x%d", k->count);
    }
}
