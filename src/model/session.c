/*
 * session.c — the patch plan (parse / print) and the decoding session: its
 * lifetime, the one-time placement of weights (device copies on CUDA, norm
 * weights converted to the activation dtype), the KV cache and the scratch
 * rows, the short-conv states, and the public prefill / step / logits entries
 * around the forward of forward.c.
 */
#include "model/runtime.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------------ patch plan */

static const char *const patch_names[ZMLX_PATCH_COUNT_] = {"swiglu", "combine", "add_rms_norm", "router",
                                                            "attention", "lm_head"};

const char *zmlx_patch_switch_name(int i) {
    return i >= 0 && i < ZMLX_PATCH_COUNT_ ? patch_names[i] : NULL;
}

zmlx_status zmlx_patch_parse(const char *s, zmlx_patch_plan *out, int *is_auto, char *err,
                             size_t errlen) {
    if (!s || !out) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "zmlx_patch_parse: NULL argument");
    *out = ZMLX_PATCH_NONE;
    if (is_auto) *is_auto = 0;
    if (!strcmp(s, "none")) return ZMLX_OK;
    if (!strcmp(s, "all") || !strcmp(s, "exact")) {
        *out = s[0] == 'a' ? ZMLX_PATCH_ALL : ZMLX_PATCH_EXACT;
        return ZMLX_OK;
    }
    if (!strcmp(s, "auto")) {
        if (!is_auto) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "patch plan 'auto' is not accepted here");
        *is_auto = 1;
        return ZMLX_OK;
    }
    zmlx_patch_plan p = 0;
    const char *c = s;
    for (;;) {
        size_t len = strcspn(c, ",");
        int found = -1;
        for (int i = 0; i < ZMLX_PATCH_COUNT_ && found < 0; i++)
            if (len == strlen(patch_names[i]) && !strncmp(c, patch_names[i], len)) found = i;
        if (found < 0)
            return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG,
                          "unknown patch '%.*s' in '%s' (known: none, exact, all, auto or a comma list of "
                          "swiglu, combine, add_rms_norm, router, attention, lm_head)",
                          (int)len, c, s);
        p |= 1u << found;
        if (!c[len]) break;
        c += len + 1;
    }
    *out = p;
    return ZMLX_OK;
}

const char *zmlx_patch_to_string(zmlx_patch_plan p, char *buf, size_t len) {
    if (!buf || !len) return buf;
    p &= ZMLX_PATCH_ALL;
    if (p == ZMLX_PATCH_NONE || p == ZMLX_PATCH_ALL) {
        snprintf(buf, len, "%s", p ? "all" : "none");
        return buf;
    }
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < ZMLX_PATCH_COUNT_ && o < len; i++)
        if (p & (1u << i)) o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "," : "", patch_names[i]);
    return buf;
}

/* --------------------------------------------------------------- session */

void zmlx_session_opts_default(zmlx_session_opts *o) {
    if (o) memset(o, 0, sizeof *o);
}

/* Backend memory is carved by a cursor: a first pass with base == NULL only
 * sums the sizes, a second places (and fills) for real. */
typedef struct placer {
    zmlx_session *s;
    char *base;
    size_t off;
    zmlx_status st;
} placer;

static void *carve(placer *p, size_t bytes) {
    size_t at = p->off;
    p->off += (bytes + 255) & ~(size_t)255; /* 256-byte aligned pieces */
    return p->base ? p->base + at : NULL;
}

/* Copy host bytes into a fresh piece (second pass) and return it. */
static const void *place_bytes(placer *p, const void *src, size_t bytes) {
    void *dst = carve(p, bytes);
    if (dst && p->st == ZMLX_OK) p->st = zmlx_mem_upload(p->s->ctx, dst, src, bytes);
    return dst;
}

/* Bytes of a quantized weight's packed codes and of its scales (biases:
 * the same again when present), over its stored rows (all experts) of cols
 * quantized elements. */
static int64_t q_rows(const zmlx_qweight *w) { return w->E * (w->transpose ? w->N : w->K); }
static int64_t q_cols(const zmlx_qweight *w) { return w->transpose ? w->K : w->N; }
static size_t q_code_bytes(const zmlx_qweight *w) { return zmlx_quant_packed_bytes(w->bits, q_rows(w), q_cols(w)); }
static size_t q_scale_bytes(const zmlx_qweight *w) {
    return zmlx_quant_scales_count(w->group_size, q_rows(w), q_cols(w)) * zmlx_dtype_size(w->scale_dtype);
}

/* A quantized weight as the backend reads it: the host view itself on CPU,
 * a device copy on CUDA. */
static void place_q(placer *p, const zmlx_qweight *src, zmlx_qweight *dst) {
    *dst = *src;
    if (!p->s->on_device) return;
    size_t wb = q_code_bytes(src), sb = q_scale_bytes(src);
    dst->w = place_bytes(p, src->w, wb);
    dst->scales = place_bytes(p, src->scales, sb);
    dst->biases = src->biases ? place_bytes(p, src->biases, sb) : NULL;
    dst->on_device = 1;
}

/* A float tensor (a norm or conv weight, a selection bias) in dtype t: the
 * mapped tensor itself when it already is host t, else a converted copy. */
static const void *place_float(placer *p, const zm_fview *f, zmlx_dtype t) {
    zmlx_session *s = p->s;
    int64_t n = 1;
    for (int d = 0; d < f->ndim; d++) n *= f->shape[d];
    if (!s->on_device && f->dtype == t) return f->data;
    size_t bytes = (size_t)n * zmlx_dtype_size(t);
    if (!p->base) return carve(p, bytes);
    void *tmp = malloc(bytes);
    if (!tmp) {
        p->st = ZMLX_ERR_OOM;
        return carve(p, bytes);
    }
    zmlx_status c = zmlx_convert(t, tmp, f->dtype, f->data, (size_t)n);
    if (c != ZMLX_OK && p->st == ZMLX_OK) p->st = c;
    const void *r = place_bytes(p, tmp, bytes);
    free(tmp);
    return r;
}
static const void *place_norm(placer *p, const zm_fview *f) { return place_float(p, f, p->s->T); }

/* Rows [r0, r0 + n) of a single-expert x·Wᵀ weight, as a weight of its own. */
static zmlx_qweight row_view(const zmlx_qweight *w, int64_t r0, int64_t n) {
    zmlx_qweight v = *w;
    v.N = n;
    const size_t cb = q_code_bytes(w) / (size_t)w->N, sb = q_scale_bytes(w) / (size_t)w->N;
    v.w = (const char *)w->w + (size_t)r0 * cb;
    v.scales = (const char *)w->scales + (size_t)r0 * sb;
    if (w->biases) v.biases = (const char *)w->biases + (size_t)r0 * sb;
    return v;
}

/* q, k and v stacked into one matrix in the session's memory (x·Wᵀ weights
 * of one expert stack by rows: codes, scales and biases alike), and q, k, v
 * as row views of it, so the packed and the separate projections read the
 * same bytes. Weights of different formats stay apart (has_qkv = 0). */
static void place_qkv(placer *p, const zm_layer *ml, zr_layer *L) {
    const zmlx_qweight *src[3] = {&ml->q.q, &ml->k.q, &ml->v.q};
    int same = 1;
    for (int i = 0; i < 3; i++)
        same &= src[i]->E == 1 && src[i]->transpose && src[i]->mode == src[0]->mode &&
                src[i]->bits == src[0]->bits && src[i]->group_size == src[0]->group_size &&
                src[i]->scale_dtype == src[0]->scale_dtype && !src[i]->biases == !src[0]->biases &&
                src[i]->K == src[0]->K && src[i]->global_scale == src[0]->global_scale;
    L->has_qkv = same;
    if (!same) {
        place_q(p, src[0], &L->q);
        place_q(p, src[1], &L->k);
        place_q(p, src[2], &L->v);
        return;
    }
    zmlx_qweight *pk = &L->qkv;
    *pk = *src[0];
    pk->N = src[0]->N + src[1]->N + src[2]->N;
    pk->on_device = p->s->on_device;
    size_t cb = 0, sb = 0;
    for (int i = 0; i < 3; i++) cb += q_code_bytes(src[i]), sb += q_scale_bytes(src[i]);
    char *w = carve(p, cb), *sc = carve(p, sb), *bi = src[0]->biases ? carve(p, sb) : NULL;
    pk->w = w;
    pk->scales = sc;
    pk->biases = bi;
    for (int i = 0; i < 3 && w && p->st == ZMLX_OK; i++) {
        const size_t c = q_code_bytes(src[i]), s = q_scale_bytes(src[i]);
        p->st = zmlx_mem_upload(p->s->ctx, w, src[i]->w, c);
        if (p->st == ZMLX_OK) p->st = zmlx_mem_upload(p->s->ctx, sc, src[i]->scales, s);
        if (p->st == ZMLX_OK && bi) p->st = zmlx_mem_upload(p->s->ctx, bi, src[i]->biases, s);
        w += c, sc += s;
        if (bi) bi += s;
    }
    L->q = row_view(pk, 0, src[0]->N);
    L->k = row_view(pk, src[0]->N, src[1]->N);
    L->v = row_view(pk, src[0]->N + src[1]->N, src[2]->N);
}

static void place_weights(placer *p) {
    zmlx_session *s = p->s;
    const zmlx_model *m = s->m;
    place_q(p, &m->embed.q, &s->embed);
    if (m->lm_head.present) place_q(p, &m->lm_head.q, &s->head);
    else s->head = s->embed; /* tied: the embedding table as a linear */
    s->final_norm = place_norm(p, &m->norm);
    for (int64_t l = 0; l < s->d.L; l++) {
        const zm_layer *ml = &m->layers[l];
        zr_layer *L = &s->layers[l];
        L->is_attn = ml->is_attn;
        if (ml->is_attn) {
            place_qkv(p, ml, L);
            place_q(p, &ml->o.q, &L->o);
            L->q_norm = place_norm(p, &ml->q_norm);
            L->k_norm = place_norm(p, &ml->k_norm);
        } else {
            place_q(p, &ml->conv_in.q, &L->conv_in);
            place_q(p, &ml->conv_out.q, &L->conv_out);
            L->conv_w = place_norm(p, &ml->conv_w);
        }
        L->is_moe = ml->is_moe;
        if (ml->is_moe) {
            if (ml->expert_bias.data) L->expert_bias = place_float(p, &ml->expert_bias, ZMLX_F32);
            place_q(p, &ml->router.q, &L->router);
            place_q(p, &ml->ex_gate.q, &L->gate);
            place_q(p, &ml->ex_up.q, &L->up);
            place_q(p, &ml->ex_down.q, &L->down);
        } else {
            place_q(p, &ml->mlp_gate.q, &L->gate);
            place_q(p, &ml->mlp_up.q, &L->up);
            place_q(p, &ml->mlp_down.q, &L->down);
        }
        L->in_norm = place_norm(p, &ml->in_norm);
        L->post_norm = place_norm(p, &ml->post_norm);
    }
}

static void place_scratch(placer *p) {
    zmlx_session *s = p->s;
    const zr_dims *d = &s->d;
    size_t es = zmlx_dtype_size(s->T), nb = (size_t)s->nb, kk = (size_t)(d->E ? d->k : 1);
    size_t imax = (size_t)(d->I > d->Idense ? d->I : d->Idense);
    zr_scratch *c = &s->sc;
    c->x = carve(p, nb * (size_t)d->D * es);
    c->a = carve(p, nb * (size_t)d->D * es);
    c->q = carve(p, nb * (size_t)(d->H * d->hd) * es);
    c->k = carve(p, nb * (size_t)(d->Hkv * d->hd) * es);
    c->v = carve(p, nb * (size_t)(d->Hkv * d->hd) * es);
    c->att = carve(p, nb * (size_t)(d->H * d->hd) * es);
    c->o = carve(p, nb * (size_t)d->D * es);
    c->y = carve(p, nb * (size_t)d->D * es);
    c->rl = carve(p, nb * (size_t)(d->E ? d->E : 1) * es);
    c->idx = carve(p, nb * kk * sizeof(int32_t));
    c->w = carve(p, nb * kk * sizeof(float));
    c->g = carve(p, nb * kk * imax * es);
    c->u = carve(p, nb * kk * imax * es);
    c->h = carve(p, nb * kk * imax * es);
    c->yk = carve(p, nb * kk * (size_t)d->D * es);
    c->xl = carve(p, (size_t)d->D * es);
    c->logits = carve(p, (size_t)d->V * es);
    c->ids = carve(p, nb * sizeof(int32_t));
    c->qkv = carve(p, nb * (size_t)((d->H + 2 * d->Hkv) * d->hd) * es);
    c->pos = carve(p, sizeof(int32_t));
    c->tok = carve(p, sizeof(int32_t));
    if (d->conv_L) {
        c->bcx = carve(p, nb * (size_t)(3 * d->D) * es);
        c->cy = carve(p, nb * (size_t)d->D * es);
    }
}

/* The forward needs every linear quantized (it has only quantized matmuls). */
static zmlx_status check_supported(const zmlx_model *m, char *err, size_t errlen) {
    const zm_config *c = &m->cfg;
    if (c->arch != ZM_ARCH_QWEN3_MOE && c->arch != ZM_ARCH_LFM2_MOE)
        return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED, "no forward pass for model_type '%s' yet", c->model_type);
    if (!m->embed.quantized)
        return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED,
                      "model.embed_tokens is a float table (%s); only quantized embeddings are supported",
                      zmlx_dtype_name(m->embed.f.dtype));
    if (m->lm_head.present && !m->lm_head.quantized)
        return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED, "lm_head is float; only quantized linears are supported");
    for (int64_t l = 0; l < c->n_layers; l++) {
        const zm_layer *L = &m->layers[l];
        const zm_linear *lin[] = {&L->q,       &L->k,        &L->v,       &L->o,      &L->router,
                                  &L->ex_gate, &L->ex_up,    &L->ex_down, &L->mlp_gate, &L->mlp_up,
                                  &L->mlp_down, &L->conv_in, &L->conv_out};
        static const char *const nm[] = {"q_proj",   "k_proj",        "v_proj",      "o_proj",
                                         "router",   "gate_proj",     "up_proj",     "down_proj",
                                         "dense gate_proj", "dense up_proj", "dense down_proj",
                                         "conv.in_proj", "conv.out_proj"};
        for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
            if (lin[i]->present && !lin[i]->quantized)
                return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED,
                              "layer %lld %s is float; only quantized linears are supported", (long long)l, nm[i]);
    }
    return ZMLX_OK;
}

/* Allocate backend memory for the pieces a placement pass sized. */
static zmlx_status alloc_pass(zmlx_session *s, void (*pass)(placer *), void **mem, char *err, size_t errlen,
                              const char *what) {
    placer p = {s, NULL, 0, ZMLX_OK};
    pass(&p);
    if (p.off == 0) return ZMLX_OK;
    zmlx_status st = zmlx_mem_alloc(s->ctx, p.off, mem);
    if (st != ZMLX_OK)
        return zc_err(err, errlen, st, "cannot allocate %.1f MiB of %s memory for the session's %s",
                      (double)p.off / (1 << 20), s->on_device ? "device" : "host", what);
    s->mem_bytes += p.off;
    p = (placer){s, *mem, 0, ZMLX_OK};
    pass(&p);
    if (p.st != ZMLX_OK)
        return zc_err(err, errlen, p.st, "placing the session's %s failed: %s", what, zmlx_status_str(p.st));
    return ZMLX_OK;
}

/* K and V of every attention layer ([Hkv, cap, hd] each), then the state of
 * every short-conv layer ([conv_L - 1, D]), zeroed before the first feed. */
static zmlx_status alloc_caches(zmlx_session *s, char *err, size_t errlen) {
    const zr_dims *d = &s->d;
    const size_t es = zmlx_dtype_size(s->T), per = (size_t)(d->Hkv * d->hd) * (size_t)s->cap * es;
    const size_t conv = d->conv_L ? (size_t)((d->conv_L - 1) * d->D) * es : 0;
    size_t n_attn = 0, kv_bytes, total;
    for (int64_t l = 0; l < d->L; l++) n_attn += (size_t)s->layers[l].is_attn;
    zmlx_status st = ZMLX_OK;
    if (!zc_mul_size(per, 2 * n_attn, &kv_bytes) || !zc_mul_size(conv, (size_t)d->L - n_attn, &s->conv_bytes) ||
        (total = kv_bytes + s->conv_bytes) < kv_bytes)
        st = ZMLX_ERR_OOM;
    else if (total) st = zmlx_mem_alloc(s->ctx, total, &s->kv);
    if (st != ZMLX_OK)
        return zc_err(err, errlen, st, "cannot allocate the KV cache (%lld positions, %.1f MiB)", (long long)s->cap,
                      (double)per * 2.0 * (double)n_attn / (1 << 20));
    s->mem_bytes += total;
    char *at = s->kv;
    for (int64_t l = 0; l < d->L; l++)
        if (s->layers[l].is_attn) {
            s->layers[l].kc = at;
            s->layers[l].vc = at + per;
            at += 2 * per;
        }
    s->conv_states = at;
    for (int64_t l = 0; l < d->L; l++)
        if (!s->layers[l].is_attn) {
            s->layers[l].conv_state = at;
            at += conv;
        }
    s->conv_stale = 1;
    return ZMLX_OK;
}

/* Zero the short-conv states (a sequence starts): one upload of zeros. */
static zmlx_status zero_conv_states(zmlx_session *s, char *err, size_t errlen) {
    if (!s->conv_bytes) return ZMLX_OK;
    void *z = calloc(1, s->conv_bytes);
    if (!z) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    zmlx_status st = zmlx_mem_upload(s->ctx, s->conv_states, z, s->conv_bytes);
    free(z);
    if (st != ZMLX_OK) return zc_err(err, errlen, st, "zeroing the conv states: %s", zmlx_status_str(st));
    s->conv_stale = 0;
    return ZMLX_OK;
}

zmlx_status zmlx_session_new(const zmlx_model *m, zmlx_ctx *ctx, const zmlx_session_opts *opts,
                             zmlx_session **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    if (!m || !ctx || !out) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "zmlx_session_new: NULL argument");
    zmlx_session_opts o;
    zmlx_session_opts_default(&o);
    if (opts) o = *opts;
    if (o.max_ctx < 0 || o.max_batch < 0 || (o.patch & ~(zmlx_patch_plan)ZMLX_PATCH_ALL))
        return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "session options: negative size or unknown patch bits");
    zmlx_status st = check_supported(m, err, errlen);
    if (st != ZMLX_OK) return st;

    zmlx_session *s = calloc(1, sizeof *s);
    if (!s) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    const zm_config *c = &m->cfg;
    s->m = m;
    s->ctx = ctx;
    s->on_device = zmlx_ctx_backend(ctx) == ZMLX_BACKEND_CUDA;
    s->T = zmlx_dtype_is_float(m->embed.q.scale_dtype) ? m->embed.q.scale_dtype : ZMLX_BF16;
    s->patch = o.patch;
    s->d = (zr_dims){.L = c->n_layers, .D = c->hidden, .H = c->n_heads, .Hkv = c->n_kv_heads,
                     .hd = c->head_dim, .E = c->n_experts, .k = c->top_k, .I = c->moe_inter,
                     .Idense = c->inter, .V = c->vocab, .eps = (float)c->rms_eps,
                     .theta = (float)c->rope_theta, .attn_scale = (float)pow((double)c->head_dim, -0.5),
                     .norm_topk = c->norm_topk, .sigmoid_router = c->arch == ZM_ARCH_LFM2_MOE,
                     .route_scale = (float)c->route_scale, .conv_L = c->conv_L};
    s->cap = o.max_ctx ? o.max_ctx : (c->max_pos > 0 && c->max_pos < 4096 ? c->max_pos : 4096);
    /* 2048: larger chunks prefill faster (H200, a 512 / 2048 / 4000-token prompt: 4703 / 4521 / 3992 tok/s in
       chunks of 128, 5123 / 5871 / 5073 in chunks of up to 2048; src/cuda/NOTES.md v22) for ~115 KB of
       scratch per token (Qwen3-30B) */
    s->nb = o.max_batch ? o.max_batch : 2048;
    if (s->nb > s->cap) s->nb = s->cap;
    s->argmax = -1;
    s->use_graph = s->on_device && !getenv("ZMLX_NO_GRAPH");
    s->layers = calloc((size_t)s->d.L, sizeof *s->layers);
    s->logits = malloc((size_t)s->d.V * sizeof(float));
    s->logits_T_host = malloc((size_t)s->d.V * zmlx_dtype_size(s->T));
    if (!s->layers || !s->logits || !s->logits_T_host) {
        zmlx_session_free(s);
        return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    }
    st = alloc_pass(s, place_weights, &s->arena, err, errlen, "weights");
    if (st == ZMLX_OK) st = alloc_pass(s, place_scratch, &s->scr_mem, err, errlen, "scratch");
    if (st == ZMLX_OK) st = alloc_caches(s, err, errlen);
    if (st != ZMLX_OK) {
        zmlx_session_free(s);
        return st;
    }
    *out = s;
    return ZMLX_OK;
}

void zmlx_session_free(zmlx_session *s) {
    if (!s) return;
    zmlx_graph_free(s->ctx, s->graph);
    zmlx_mem_free(s->ctx, s->kv);
    zmlx_mem_free(s->ctx, s->scr_mem);
    zmlx_mem_free(s->ctx, s->arena);
    free(s->layers);
    free(s->logits);
    free(s->logits_T_host);
    free(s);
}

void zmlx_session_reset(zmlx_session *s) {
    if (!s) return;
    s->pos = 0;
    s->have_logits = 0;
    s->argmax = -1;
    s->pos_synced = 0;
    s->tok_synced = 0;
    s->conv_stale = 1;
}

/* The captured step encodes the patch plan: a new plan drops it. */
void zmlx_session_set_patch(zmlx_session *s, zmlx_patch_plan p) {
    if (!s || s->patch == (p & ZMLX_PATCH_ALL)) return;
    s->patch = p & ZMLX_PATCH_ALL;
    zmlx_graph_free(s->ctx, s->graph);
    s->graph = NULL;
}
zmlx_patch_plan zmlx_session_patch(const zmlx_session *s) { return s ? s->patch : 0; }

/* Every attention layer must take the fused attention: the unfused one
 * passes the host's position as an argument, which a graph would freeze. */
int zmlx_session_uses_graph(const zmlx_session *s) {
    if (!s || !s->use_graph || !(s->patch & ZMLX_PATCH_ATTENTION)) return 0;
    for (int64_t l = 0; l < s->d.L; l++)
        if (s->layers[l].is_attn && !s->layers[l].has_qkv) return 0;
    return 1;
}

/* Record one decode step (input token sc.tok) as a graph. */
static zmlx_status capture_step(zmlx_session *s, unsigned sections, zmlx_graph **out, char *err,
                                size_t errlen) {
    zmlx_status st = zmlx_graph_capture_begin(s->ctx);
    if (st != ZMLX_OK) return zc_err(err, errlen, st, "cannot start a graph capture: %s", zmlx_status_str(st));
    st = zr_forward(s, s->sc.tok, 1, sections, err, errlen);
    zmlx_graph *g = NULL;
    zmlx_status end = zmlx_graph_capture_end(s->ctx, &g);
    if (st != ZMLX_OK) {
        zmlx_graph_free(s->ctx, g);
        return st;
    }
    if (end != ZMLX_OK) return zc_err(err, errlen, end, "graph capture failed: %s", zmlx_status_str(end));
    *out = g;
    return ZMLX_OK;
}

/* One chunk of n tokens (n <= nb) through the model, without host syncs. A
 * single token of a graph session replays the captured step, its input
 * already on the device when it is the previous argmax. */
static zmlx_status run_chunk(zmlx_session *s, const int32_t *ids, int64_t n, char *err, size_t errlen) {
    zr_scratch *c = &s->sc;
    zmlx_status st = ZMLX_OK;
    if (!s->pos_synced) {
        int32_t p32 = (int32_t)s->pos;
        if ((st = zmlx_mem_upload(s->ctx, c->pos, &p32, sizeof p32)) != ZMLX_OK)
            return zc_err(err, errlen, st, "uploading the position: %s", zmlx_status_str(st));
        s->pos_synced = 1;
    }
    if (n == 1 && zmlx_session_uses_graph(s)) {
        if (!(s->tok_synced && s->argmax == ids[0]) &&
            (st = zmlx_mem_upload(s->ctx, c->tok, ids, sizeof(int32_t))) != ZMLX_OK)
            return zc_err(err, errlen, st, "uploading the token: %s", zmlx_status_str(st));
        s->tok_synced = 0;
        if (!s->graph && (st = capture_step(s, ZR_SEC_ALL, &s->graph, err, errlen)) != ZMLX_OK) return st;
        if ((st = zmlx_graph_launch(s->ctx, s->graph)) != ZMLX_OK)
            return zc_err(err, errlen, st, "decode step (graph launch): %s", zmlx_status_str(st));
        return ZMLX_OK;
    }
    if ((st = zmlx_mem_upload(s->ctx, c->ids, ids, (size_t)n * sizeof(int32_t))) != ZMLX_OK)
        return zc_err(err, errlen, st, "uploading token ids: %s", zmlx_status_str(st));
    return zr_forward(s, c->ids, n, ZR_SEC_ALL, err, errlen);
}

static zmlx_status feed(zmlx_session *s, const int32_t *ids, int64_t n, char *err, size_t errlen) {
    if (!s || !ids || n < 1) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "session: NULL argument or no tokens");
    if (n > s->cap - s->pos)
        return zc_err(err, errlen, ZMLX_ERR_RANGE,
                      "%lld tokens do not fit: %lld of the context's %lld positions are used (raise max_ctx)",
                      (long long)n, (long long)s->pos, (long long)s->cap);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->d.V)
            return zc_err(err, errlen, ZMLX_ERR_RANGE, "token id %d (at %lld) is outside the vocabulary [0, %lld)",
                          (int)ids[i], (long long)i, (long long)s->d.V);
    s->have_logits = 0;
    zmlx_status zs = s->conv_stale ? zero_conv_states(s, err, errlen) : ZMLX_OK;
    if (zs != ZMLX_OK) return zs;
    for (int64_t done = 0; done < n;) {
        int64_t c = n - done < s->nb ? n - done : s->nb;
        zmlx_status st = run_chunk(s, ids + done, c, err, errlen);
        /* the argmax comes back every chunk: it is the one host sync, and
         * device-side data errors surface here */
        if (st == ZMLX_OK && (st = zmlx_mem_download(s->ctx, &s->argmax, s->sc.tok, sizeof(int32_t))) != ZMLX_OK)
            zc_err(err, errlen, st, "reading the argmax back: %s", zmlx_status_str(st));
        if (st == ZMLX_OK && (st = zmlx_ctx_sync(s->ctx)) != ZMLX_OK)
            zc_err(err, errlen, st, "the forward at position %lld failed on the device: %s", (long long)s->pos,
                   zmlx_status_str(st));
        if (st != ZMLX_OK) {
            /* the device position and token may be anywhere now */
            s->pos_synced = s->tok_synced = 0;
            s->argmax = -1;
            return st;
        }
        s->pos += c;
        done += c;
    }
    s->have_logits = 1;
    s->logits_fetched = 0;
    s->tok_synced = 1;
    return ZMLX_OK;
}

zmlx_status zmlx_session_prefill(zmlx_session *s, const int32_t *ids, int64_t n, char *err, size_t errlen) {
    return feed(s, ids, n, err, errlen);
}

zmlx_status zmlx_session_step(zmlx_session *s, int32_t id, char *err, size_t errlen) {
    return feed(s, &id, 1, err, errlen);
}

const float *zmlx_session_logits(zmlx_session *s) {
    if (!s || !s->have_logits) return NULL;
    if (s->logits_fetched) return s->logits;
    const int64_t V = s->d.V;
    const void *src = s->sc.logits;
    if (s->on_device) {
        if (zmlx_mem_download(s->ctx, s->logits_T_host, src, (size_t)V * zmlx_dtype_size(s->T)) != ZMLX_OK)
            return NULL;
        src = s->logits_T_host;
    }
    if (zmlx_convert(ZMLX_F32, s->logits, s->T, src, (size_t)V) != ZMLX_OK) return NULL;
    s->logits_fetched = 1;
    return s->logits;
}

int32_t zmlx_session_argmax(const zmlx_session *s) { return s && s->have_logits ? s->argmax : -1; }
int64_t zmlx_session_pos(const zmlx_session *s) { return s ? s->pos : 0; }
int64_t zmlx_session_capacity(const zmlx_session *s) { return s ? s->cap : 0; }
int64_t zmlx_session_max_batch(const zmlx_session *s) { return s ? s->nb : 0; }
size_t zmlx_session_mem_bytes(const zmlx_session *s) { return s ? s->mem_bytes : 0; }

/* ------------------------------------------------------------- profile */

static double q_bytes(const zmlx_qweight *w) {
    return (double)q_code_bytes(w) + (double)q_scale_bytes(w) * (w->biases ? 2.0 : 1.0);
}

/* What one decode step at position pos reads: one embedding row, every
 * attention and dense weight, the router and k of E experts per MoE layer,
 * the LM head, and pos + 1 cached positions of K and V per layer. */
static double step_bytes(const zmlx_session *s) {
    const zr_dims *d = &s->d;
    double b = q_bytes(&s->embed) / (double)s->embed.N + q_bytes(&s->head);
    const double es = (double)zmlx_dtype_size(s->T);
    for (int64_t l = 0; l < d->L; l++) {
        const zr_layer *L = &s->layers[l];
        if (L->is_attn) {
            b += q_bytes(&L->q) + q_bytes(&L->k) + q_bytes(&L->v) + q_bytes(&L->o);
            b += 2.0 * (double)(d->Hkv * d->hd) * es * (double)(s->pos + 1);
        } else {
            b += q_bytes(&L->conv_in) + q_bytes(&L->conv_out) + (double)(2 * d->conv_L - 1) * (double)d->D * es;
        }
        double mlp = q_bytes(&L->gate) + q_bytes(&L->up) + q_bytes(&L->down);
        b += L->is_moe ? q_bytes(&L->router) + mlp * (double)d->k / (double)d->E : mlp;
    }
    return b;
}

/* Replay graph g reps times from the session's position and argmax (after
 * one untimed replay) and return the mean wall time per replay in µs. */
static zmlx_status time_graph(zmlx_session *s, zmlx_graph *g, int reps, double *us) {
    zr_scratch *c = &s->sc;
    int32_t p32 = (int32_t)s->pos, tok = s->argmax;
    zmlx_status st = ZMLX_OK;
    for (int pass = 0; pass < 2 && st == ZMLX_OK; pass++) {
        if ((st = zmlx_mem_upload(s->ctx, c->pos, &p32, sizeof p32)) != ZMLX_OK) break;
        if ((st = zmlx_mem_upload(s->ctx, c->tok, &tok, sizeof tok)) != ZMLX_OK) break;
        const int n = pass ? reps : 1;
        double t0 = zc_now_sec();
        for (int r = 0; r < n && st == ZMLX_OK; r++) st = zmlx_graph_launch(s->ctx, g);
        if (st == ZMLX_OK) st = zmlx_ctx_sync(s->ctx);
        *us = (zc_now_sec() - t0) * 1e6 / n;
    }
    return st;
}

zmlx_status zmlx_session_profile_decode(zmlx_session *s, int reps, zmlx_decode_profile *out, char *err,
                                        size_t errlen) {
    if (!s || !out || reps < 1) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "profile: NULL argument or reps < 1");
    memset(out, 0, sizeof *out);
    if (!zmlx_session_uses_graph(s))
        return zc_err(err, errlen, ZMLX_ERR_UNSUPPORTED,
                      "profiling times graph replays: it needs a CUDA session with the attention switch");
    if (!s->have_logits) return zc_err(err, errlen, ZMLX_ERR_INVALID_ARG, "profile: feed at least one token first");
    if (s->pos + reps + 1 > s->cap)
        return zc_err(err, errlen, ZMLX_ERR_RANGE, "profile: %d replays from position %lld pass the capacity %lld",
                      reps, (long long)s->pos, (long long)s->cap);
    /* the replays overwrite the device logits: keep the session's on the host */
    if (!zmlx_session_logits(s)) return zc_err(err, errlen, ZMLX_ERR_DEVICE, "profile: cannot read the logits");
    out->bytes = step_bytes(s);
    /* ... and advance the conv states: keep the session's */
    void *conv = s->conv_bytes ? malloc(s->conv_bytes) : NULL;
    if (s->conv_bytes && !conv) return zc_err(err, errlen, ZMLX_ERR_OOM, "out of memory");
    zmlx_status st = conv ? zmlx_mem_download(s->ctx, conv, s->conv_states, s->conv_bytes) : ZMLX_OK;
    if (st != ZMLX_OK) { /* nothing replayed yet: the states stand; conv holds no copy to restore */
        free(conv);
        return zc_err(err, errlen, st, "profile: cannot save the conv states");
    }
    static const unsigned parts[4] = {ZR_SEC_ALL, ZR_SEC_ATTN, ZR_SEC_MLP, ZR_SEC_HEAD};
    double *dst[4] = {&out->step_us, &out->attn_us, &out->moe_us, &out->head_us};
    for (int i = 0; i < 4 && st == ZMLX_OK; i++) {
        zmlx_graph *g = i == 0 ? s->graph : NULL;
        if (!g && (st = capture_step(s, parts[i], &g, err, errlen)) != ZMLX_OK) break;
        if (i == 0) s->graph = g;
        st = time_graph(s, g, reps, dst[i]);
        if (i > 0) zmlx_graph_free(s->ctx, g);
        if (st != ZMLX_OK) zc_err(err, errlen, st, "profile replay failed: %s", zmlx_status_str(st));
    }
    out->rest_us = out->step_us - out->attn_us - out->moe_us - out->head_us;
    /* the replays moved the device position and token: re-sync at the next feed */
    s->pos_synced = s->tok_synced = 0;
    if (conv) {
        zmlx_status r = zmlx_mem_upload(s->ctx, s->conv_states, conv, s->conv_bytes);
        if (r != ZMLX_OK) { /* the states are lost: the sequence cannot go on */
            s->have_logits = 0;
            if (st == ZMLX_OK) st = zc_err(err, errlen, r, "profile: cannot restore the conv states");
        }
        free(conv);
    }
    return st;
}
