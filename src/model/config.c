/*
 * config.c — config.json / generation_config.json for the supported
 * architectures (qwen3_moe: FORMATS.md §C.1, lfm2_moe: §C.3) and the quantization block
 * (FORMATS.md §D): global group_size/bits/mode plus per-module overrides, and
 * the per-module resolution rule (override, else presence of `<path>.scales`).
 */
#include "model/model.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>

void zm_config_free(zm_config *c) {
    if (!c) return;
    free(c->mlp_only);
    free(c->attn);
    for (size_t i = 0; i < c->n_over; i++) free(c->over[i].path);
    free(c->over);
    memset(c, 0, sizeof *c);
}

int zm_layer_is_moe(const zm_config *c, int64_t layer) {
    if (c->arch == ZM_ARCH_LFM2_MOE) return layer >= c->n_dense;
    for (size_t i = 0; i < c->n_mlp_only; i++)
        if (c->mlp_only[i] == layer) return 0;
    return c->n_experts > 0 && (layer + 1) % c->sparse_step == 0;
}

int zm_layer_is_attn(const zm_config *c, int64_t layer) { return c->arch != ZM_ARCH_LFM2_MOE || c->attn[layer]; }

/* A required integer key in [lo, hi]. */
static zmlx_status get_int(const zj_value *root, const char *what, const char *key, int64_t lo, int64_t hi,
                           int64_t *out, char *err, size_t errlen) {
    const zj_value *v = zj_get(root, key);
    if (!v) return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: missing required key \"%s\"", what, key);
    if (!zj_as_int64(v, out) || *out < lo || *out > hi)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"%s\" must be an integer in [%lld, %lld]", what, key,
                      (long long)lo, (long long)hi);
    return ZMLX_OK;
}

static zmlx_status get_pos_double(const zj_value *root, const char *what, const char *key, double *out,
                                  char *err, size_t errlen) {
    const zj_value *v = zj_get(root, key);
    if (!v) return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: missing required key \"%s\"", what, key);
    if (!zj_as_double(v, out) || !(*out > 0))
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"%s\" must be a positive number", what, key);
    return ZMLX_OK;
}

static zmlx_status get_bool(const zj_value *root, const char *what, const char *key, int *out, char *err,
                            size_t errlen) {
    const zj_value *v = zj_get(root, key);
    if (!v) return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: missing required key \"%s\"", what, key);
    if (!zj_as_bool(v, out)) return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"%s\" must be true or false", what, key);
    return ZMLX_OK;
}

/* eos_token_id: an integer or a list of integers. */
static zmlx_status parse_eos(const zj_value *v, const char *what, zm_config *c, char *err, size_t errlen) {
    int64_t id;
    if (zj_as_int64(v, &id) && id >= 0 && id <= INT32_MAX) {
        c->n_eos = 1;
        c->eos[0] = (int32_t)id;
        return ZMLX_OK;
    }
    if (v->type != ZJ_ARRAY || v->u.arr.n > ZMLX_MAX_EOS)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"eos_token_id\" must be an id or a list of at most %d ids",
                      what, ZMLX_MAX_EOS);
    for (size_t i = 0; i < v->u.arr.n; i++) {
        if (!zj_as_int64(zj_at(v, i), &id) || id < 0 || id > INT32_MAX)
            return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"eos_token_id\"[%zu] is not a token id", what, i);
        c->eos[i] = (int32_t)id;
    }
    c->n_eos = (int)v->u.arr.n;
    return ZMLX_OK;
}

/* MLX's rules (FORMATS.md A.1). */
static int qspec_valid(zmlx_qmode mode, int bits, int group) {
    switch (mode) {
    case ZMLX_QMODE_AFFINE:
        return (group == 32 || group == 64 || group == 128) && bits >= 2 && bits <= 8 && bits != 7;
    case ZMLX_QMODE_MXFP4: return group == 32 && bits == 4;
    case ZMLX_QMODE_MXFP8: return group == 32 && bits == 8;
    case ZMLX_QMODE_NVFP4: return group == 16 && bits == 4;
    default: return 0;
    }
}

/* group_size / bits / mode of one quantization dict; absent keys keep *q's
 * values (the defaults). */
static zmlx_status parse_qdict(const zj_value *d, const char *what, const char *where, zm_qspec *q, char *err,
                               size_t errlen) {
    const zj_value *v;
    int64_t x;
    if ((v = zj_get(d, "mode"))) {
        const char *m = zj_as_string(v);
        if (!m || zmlx_qmode_parse(m, &q->mode) != ZMLX_OK)
            return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: %s: unknown quantization \"mode\" %s%.32s%s", what,
                          where, m ? "\"" : "", m ? m : "(not a string)", m ? "\"" : "");
        /* a mode without explicit sizes takes that mode's defaults */
        if (q->mode != ZMLX_QMODE_AFFINE) {
            q->group_size = q->mode == ZMLX_QMODE_NVFP4 ? 16 : 32;
            q->bits = q->mode == ZMLX_QMODE_MXFP8 ? 8 : 4;
        }
    }
    if ((v = zj_get(d, "group_size"))) {
        if (!zj_as_int64(v, &x) || x < 1 || x > 1024)
            return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: %s: \"group_size\" is not a valid integer", what, where);
        q->group_size = (int)x;
    }
    if ((v = zj_get(d, "bits"))) {
        if (!zj_as_int64(v, &x) || x < 1 || x > 32)
            return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: %s: \"bits\" is not a valid integer", what, where);
        q->bits = (int)x;
    }
    if (!qspec_valid(q->mode, q->bits, q->group_size))
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: %s: %s with bits %d and group_size %d is not a valid format",
                      what, where, zmlx_qmode_name(q->mode), q->bits, q->group_size);
    return ZMLX_OK;
}

static int cmp_over(const void *a, const void *b) {
    return strcmp(((const zm_qoverride *)a)->path, ((const zm_qoverride *)b)->path);
}

static zmlx_status parse_quant(const zj_value *root, const char *what, zm_config *c, char *err, size_t errlen) {
    const char *key = "quantization";
    const zj_value *qb = zj_get(root, key);
    if (!qb) {
        key = "quantization_config";
        qb = zj_get(root, key);
        if (!qb) return ZMLX_OK;
        /* HF-style blocks (awq, gptq, compressed-tensors ...) carry a quant_method
           and no MLX group_size/bits: those need a conversion we do not do */
        const char *qm = zj_as_string(zj_get(qb, "quant_method"));
        if (qm && !zj_get(qb, "bits") && !zj_get(qb, "group_size"))
            return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED,
                          "%s: quantization_config with quant_method \"%.32s\" is not an MLX quantization", what, qm);
    }
    if (qb->type != ZJ_OBJECT)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"%s\" is not an object", what, key);
    c->has_quant = 1;
    c->qglobal = (zm_qspec){1, ZMLX_QMODE_AFFINE, 4, 64};
    zmlx_status s = parse_qdict(qb, what, key, &c->qglobal, err, errlen);
    if (s != ZMLX_OK) return s;

    size_t n = 0;
    for (size_t i = 0; i < qb->u.obj.n; i++) {
        zj_type t = qb->u.obj.members[i].value.type;
        n += t == ZJ_OBJECT || t == ZJ_TRUE || t == ZJ_FALSE;
    }
    c->over = calloc(n ? n : 1, sizeof *c->over);
    if (!c->over) return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", what);
    for (size_t i = 0; i < qb->u.obj.n; i++) {
        const zj_member *m = &qb->u.obj.members[i];
        if (m->value.type != ZJ_OBJECT && m->value.type != ZJ_TRUE && m->value.type != ZJ_FALSE) {
            /* the global keys; anything else scalar is a malformed entry */
            if (!strcmp(m->key, "group_size") || !strcmp(m->key, "bits") || !strcmp(m->key, "mode") ||
                !strcmp(m->key, "quant_method"))
                continue;
            return zc_err(err, errlen, ZMLX_ERR_FORMAT,
                          "%s: %s entry \"%s\" must be an object or a boolean", what, key, m->key);
        }
        zm_qoverride *o = &c->over[c->n_over];
        /* true = the global format; a dict replaces it entirely (mlx's
           nn.quantize passes the dict as to_quantized's arguments, so a key it
           lacks takes to_quantized's default: mode affine, 64, 4) */
        o->spec = c->qglobal;
        if (m->value.type == ZJ_FALSE) o->spec.quantized = 0;
        if (m->value.type == ZJ_OBJECT) o->spec = (zm_qspec){1, ZMLX_QMODE_AFFINE, 4, 64};
        if (m->value.type == ZJ_OBJECT) {
            char where[200];
            snprintf(where, sizeof where, "%s entry \"%.150s\"", key, m->key);
            s = parse_qdict(&m->value, what, where, &o->spec, err, errlen);
            if (s != ZMLX_OK) return s;
        }
        if (!(o->path = strdup(m->key))) return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", what);
        c->n_over++;
    }
    qsort(c->over, c->n_over, sizeof *c->over, cmp_over);
    return ZMLX_OK;
}

/* What the attention and the router need of any architecture's sizes. */
static zmlx_status check_heads(const zm_config *c, const char *what, char *err, size_t errlen) {
    if (c->n_heads % c->n_kv_heads)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: num_attention_heads %lld is not a multiple of "
                      "num_key_value_heads %lld", what, (long long)c->n_heads, (long long)c->n_kv_heads);
    if (c->head_dim % 2)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: head_dim %lld is odd (RoPE needs pairs)", what,
                      (long long)c->head_dim);
    if (c->n_experts > 0 && c->top_k > c->n_experts)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: num_experts_per_tok %lld > num_experts %lld", what,
                      (long long)c->top_k, (long long)c->n_experts);
    return ZMLX_OK;
}

/* A required integer key of the parsers below (their r, what, s, err, errlen). */
#define INT_KEY(k, lo, hi, dst) \
    if ((s = get_int(r, what, k, lo, hi, dst, err, errlen)) != ZMLX_OK) return s

static zmlx_status parse_qwen3_moe(const zj_value *r, const char *what, zm_config *c, char *err, size_t errlen) {
    const int64_t BIG = (int64_t)1 << 30;
    zmlx_status s;
    INT_KEY("hidden_size", 1, BIG, &c->hidden);
    INT_KEY("num_hidden_layers", 1, 4096, &c->n_layers);
    INT_KEY("intermediate_size", 1, BIG, &c->inter);
    INT_KEY("num_attention_heads", 1, 4096, &c->n_heads);
    INT_KEY("num_key_value_heads", 1, 4096, &c->n_kv_heads);
    INT_KEY("head_dim", 2, 4096, &c->head_dim);
    INT_KEY("num_experts", 0, 65536, &c->n_experts);
    INT_KEY("num_experts_per_tok", 1, 65536, &c->top_k);
    INT_KEY("decoder_sparse_step", 1, 4096, &c->sparse_step);
    INT_KEY("moe_intermediate_size", 1, BIG, &c->moe_inter);
    INT_KEY("vocab_size", 1, INT32_MAX, &c->vocab);
    INT_KEY("max_position_embeddings", 1, INT64_MAX, &c->max_pos);
    if ((s = get_pos_double(r, what, "rms_norm_eps", &c->rms_eps, err, errlen)) != ZMLX_OK) return s;
    if ((s = get_pos_double(r, what, "rope_theta", &c->rope_theta, err, errlen)) != ZMLX_OK) return s;
    if ((s = get_bool(r, what, "tie_word_embeddings", &c->tie, err, errlen)) != ZMLX_OK) return s;
    if ((s = get_bool(r, what, "norm_topk_prob", &c->norm_topk, err, errlen)) != ZMLX_OK) return s;

    const zj_value *mol = zj_get(r, "mlp_only_layers");
    if (!mol) return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: missing required key \"mlp_only_layers\"", what);
    if (mol->type != ZJ_ARRAY) return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"mlp_only_layers\" is not a list", what);
    c->mlp_only = malloc((mol->u.arr.n ? mol->u.arr.n : 1) * sizeof *c->mlp_only);
    if (!c->mlp_only) return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", what);
    for (size_t i = 0; i < mol->u.arr.n; i++) {
        int64_t l;
        if (!zj_as_int64(zj_at(mol, i), &l) || l < 0 || l >= c->n_layers)
            return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"mlp_only_layers\"[%zu] is not a layer index", what, i);
        c->mlp_only[c->n_mlp_only++] = l;
    }
    const zj_value *rs = zj_get(r, "rope_scaling"); /* read but unused, as in mlx-lm */
    if (rs && rs->type != ZJ_NULL && rs->type != ZJ_OBJECT)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"rope_scaling\" must be null or an object", what);

    return check_heads(c, what, err, errlen);
}

/* FORMATS.md C.3. */
static zmlx_status parse_lfm2_moe(const zj_value *r, const char *what, zm_config *c, char *err, size_t errlen) {
    const int64_t BIG = (int64_t)1 << 30;
    zmlx_status s;
    INT_KEY("hidden_size", 1, BIG, &c->hidden);
    INT_KEY("num_hidden_layers", 1, 4096, &c->n_layers);
    INT_KEY("intermediate_size", 1, BIG, &c->inter);
    INT_KEY("moe_intermediate_size", 1, BIG, &c->moe_inter);
    INT_KEY("num_attention_heads", 1, 4096, &c->n_heads);
    INT_KEY("num_key_value_heads", 1, 4096, &c->n_kv_heads);
    INT_KEY("num_experts", 1, 65536, &c->n_experts);
    INT_KEY("num_experts_per_tok", 1, 65536, &c->top_k);
    INT_KEY("num_dense_layers", 0, c->n_layers, &c->n_dense);
    INT_KEY("conv_L_cache", 2, ZMLX_SHORT_CONV_MAX_L, &c->conv_L);
    INT_KEY("vocab_size", 1, INT32_MAX, &c->vocab);
    INT_KEY("max_position_embeddings", 1, INT64_MAX, &c->max_pos);
#undef INT_KEY
    int conv_bias;
    if ((s = get_pos_double(r, what, "norm_eps", &c->rms_eps, err, errlen)) != ZMLX_OK) return s;
    if ((s = get_bool(r, what, "norm_topk_prob", &c->norm_topk, err, errlen)) != ZMLX_OK) return s;
    if ((s = get_bool(r, what, "use_expert_bias", &c->expert_bias, err, errlen)) != ZMLX_OK) return s;
    if ((s = get_bool(r, what, "conv_bias", &conv_bias, err, errlen)) != ZMLX_OK) return s;
    if (conv_bias)
        return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED,
                      "%s: conv_bias true (in_proj / out_proj with biases) is not supported", what);
    /* optional: rope_theta (rope_parameters' wins), routed_scaling_factor */
    c->rope_theta = 1e6;
    c->route_scale = 1.0;
    const zj_value *rp = zj_get(r, "rope_parameters");
    if (zj_get(r, "rope_theta") && (s = get_pos_double(r, what, "rope_theta", &c->rope_theta, err, errlen)) != ZMLX_OK)
        return s;
    if (rp && rp->type == ZJ_OBJECT && zj_get(rp, "rope_theta") &&
        (s = get_pos_double(rp, what, "rope_theta", &c->rope_theta, err, errlen)) != ZMLX_OK)
        return s;
    if (zj_get(r, "routed_scaling_factor") &&
        (s = get_pos_double(r, what, "routed_scaling_factor", &c->route_scale, err, errlen)) != ZMLX_OK)
        return s;
    if (c->hidden % c->n_heads)
        return zc_err(err, errlen, ZMLX_ERR_FORMAT,
                      "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", what,
                      (long long)c->hidden, (long long)c->n_heads);
    c->head_dim = c->hidden / c->n_heads;
    c->tie = 1; /* no lm_head: logits = embed_tokens.as_linear(h) */
    c->sparse_step = 1;
    /* the attention layers: full_attn_idxs, else layer_types' "full_attention" entries */
    if (!(c->attn = calloc((size_t)c->n_layers, 1)))
        return zc_err(err, errlen, ZMLX_ERR_OOM, "%s: out of memory", what);
    const zj_value *fa = zj_get(r, "full_attn_idxs"), *lt = zj_get(r, "layer_types");
    if (fa && fa->type == ZJ_ARRAY) {
        for (size_t i = 0; i < fa->u.arr.n; i++) {
            int64_t l;
            if (!zj_as_int64(zj_at(fa, i), &l) || l < 0 || l >= c->n_layers)
                return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"full_attn_idxs\"[%zu] is not a layer index", what,
                              i);
            c->attn[l] = 1;
        }
    } else if (lt && lt->type == ZJ_ARRAY) {
        if ((int64_t)lt->u.arr.n != c->n_layers)
            return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: \"layer_types\" has %zu entries for %lld layers", what,
                          lt->u.arr.n, (long long)c->n_layers);
        for (size_t i = 0; i < lt->u.arr.n; i++) {
            const char *t = zj_as_string(zj_at(lt, i));
            if (!t || (strcmp(t, "full_attention") && strcmp(t, "conv")))
                return zc_err(err, errlen, ZMLX_ERR_FORMAT,
                              "%s: \"layer_types\"[%zu] is not \"full_attention\" or \"conv\"", what, i);
            c->attn[i] = t[0] == 'f';
        }
    } else {
        return zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: missing \"full_attn_idxs\" or \"layer_types\" (a list)",
                      what);
    }
    return check_heads(c, what, err, errlen);
}
#undef INT_KEY

zmlx_status zm_config_parse(const char *text, size_t len, const char *what, zm_config *c, char *err,
                            size_t errlen) {
    memset(c, 0, sizeof *c);
    zj_doc *doc = NULL;
    zmlx_status s = zj_parse(text, len, what, &doc, err, errlen);
    if (s != ZMLX_OK) return s;
    const zj_value *r = zj_root(doc);
    const char *mt = zj_as_string(zj_get(r, "model_type"));
    if (r->type != ZJ_OBJECT) {
        s = zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: not a JSON object", what);
    } else if (!mt) {
        s = zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: missing required key \"model_type\" (a string)", what);
    } else if (strcmp(mt, "qwen3_moe") && strcmp(mt, "lfm2_moe")) {
        s = zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED,
                   "%s: model_type \"%.60s\" is not supported (supported: qwen3_moe, lfm2_moe)", what, mt);
    } else {
        snprintf(c->model_type, sizeof c->model_type, "%s", mt);
        c->arch = mt[0] == 'l' ? ZM_ARCH_LFM2_MOE : ZM_ARCH_QWEN3_MOE;
        s = c->arch == ZM_ARCH_LFM2_MOE ? parse_lfm2_moe(r, what, c, err, errlen)
                                        : parse_qwen3_moe(r, what, c, err, errlen);
        const zj_value *eos = zj_get(r, "eos_token_id");
        if (s == ZMLX_OK && eos && eos->type != ZJ_NULL) s = parse_eos(eos, what, c, err, errlen);
        if (s == ZMLX_OK) s = parse_quant(r, what, c, err, errlen);
    }
    zj_free(doc);
    if (s != ZMLX_OK) zm_config_free(c);
    return s;
}

zmlx_status zm_genconfig_parse(const char *text, size_t len, const char *what, zm_config *c, char *err,
                               size_t errlen) {
    zj_doc *doc = NULL;
    zmlx_status s = zj_parse(text, len, what, &doc, err, errlen);
    if (s != ZMLX_OK) return s;
    const zj_value *r = zj_root(doc);
    if (r->type != ZJ_OBJECT) s = zc_err(err, errlen, ZMLX_ERR_FORMAT, "%s: not a JSON object", what);
    const zj_value *eos = zj_get(r, "eos_token_id");
    if (s == ZMLX_OK && eos && eos->type != ZJ_NULL) s = parse_eos(eos, what, c, err, errlen);
    zj_free(doc);
    return s;
}

zm_qspec zm_module_qspec(const zm_config *c, const zst_set *s, const char *path) {
    zm_qoverride key = {(char *)path, {0, 0, 0, 0}};
    const zm_qoverride *o = c->n_over ? bsearch(&key, c->over, c->n_over, sizeof *c->over, cmp_over) : NULL;
    if (o) return o->spec;
    char name[256];
    snprintf(name, sizeof name, "%s.scales", path);
    zm_qspec q = {0, ZMLX_QMODE_AFFINE, 0, 0};
    if (!zst_find(s, name)) return q;
    if (c->has_quant) return c->qglobal;
    q.quantized = 1; /* scales without a config block: sizes come from the shapes */
    return q;
}
