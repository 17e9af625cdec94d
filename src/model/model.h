/*
 * model.h — the model runtime's loading side: safetensors sets (safetensors.c),
 * config.json parsing and per-module quantization resolution (config.c),
 * architecture weight binding and model open/free (bind.c) and the checkpoint writer used
 * by `zmlx make-tiny` (writer.c).
 *
 * The public API is in include/zmlx.h (section "model"); this header is
 * internal to src/model/.
 */
#ifndef ZMLX_MODEL_H
#define ZMLX_MODEL_H

#include "zmlx.h"
#include "core/json.h"

/* =================================================================== internal */

/* ------------------------------------------------------------ safetensors */

#define ZST_MAX_DIMS 8

typedef struct zst_tensor {
    const char *name;     /* NUL-terminated, owned by the set/header          */
    int file;             /* index of the file in the set                     */
    const char *tag;      /* safetensors dtype tag ("BF16", "U32", ...)        */
    int dtype;            /* zmlx_dtype, or -1 for tags zmlx has no type for  */
    int esize;            /* element size in bytes                            */
    int ndim;
    int64_t shape[ZST_MAX_DIMS];
    uint64_t begin, end;  /* byte offsets inside the file's data region       */
    const void *data;     /* begin's address, NULL when parsed from a buffer  */
} zst_tensor;

typedef struct zst_header {
    zst_tensor *t;        /* in header order                                  */
    size_t n;
    char format[32];      /* __metadata__.format ("" if absent)               */
    uint64_t header_len;  /* JSON bytes                                       */
    uint64_t data_start;  /* 8 + header_len                                   */
    zj_doc *doc;          /* owns the tensor names                            */
} zst_header;

/*
 * Parse and validate one safetensors file held in buf[0..size) (the whole
 * file, or at least the header when data_size_known == 0 — then offsets are
 * checked only for consistency, not against the file end). `fname` names the
 * file in messages; file_index is stored in each tensor.
 * Checks: header length within the file, JSON object, dtype tags, shapes,
 * begin <= end, end within the data region, end-begin == numel*esize, no two
 * tensors overlapping, names unique, __metadata__ values strings.
 */
zmlx_status zst_parse(const uint8_t *buf, size_t size, int data_size_known, const char *fname,
                      int file_index, zst_header *out, char *err, size_t errlen);
void zst_header_free(zst_header *h);

typedef struct zst_file {
    char *path;           /* full path                                        */
    const char *name;     /* base name inside path                            */
    void *map;            /* mmap of the whole file                           */
    size_t size;
    void *copy;           /* aligned copy of the data region, or NULL         */
    zst_header h;
} zst_file;

typedef struct zst_set {
    zst_file *files;
    int n_files;
    const zst_tensor **by_name; /* every tensor of every file, sorted by name */
    size_t n;
    uint64_t copied_bytes;
    double t_mmap, t_parse;
} zst_set;

/* Map and validate every model*.safetensors of dir (sorted), then cross-check
 * model.safetensors.index.json if present. */
zmlx_status zst_open_dir(const char *dir, zst_set *s, char *err, size_t errlen);
void zst_close(zst_set *s);
const zst_tensor *zst_find(const zst_set *s, const char *name);
static inline const char *zst_file_name(const zst_set *s, const zst_tensor *t) {
    return s->files[t->file].name;
}
/* Read every mapped page once; returns seconds spent. */
double zst_prefault(const zst_set *s);

/* Read a whole (small) file into a malloc'd NUL-terminated buffer. ZMLX_ERR_IO
 * if it cannot be opened (absent = *missing set to 1 when missing != NULL). */
zmlx_status zm_read_file(const char *path, char **text, size_t *len, int *missing, char *err,
                         size_t errlen);

/* ------------------------------------------------------------------ config */

typedef struct zm_qspec {
    int quantized;        /* 0: float module                                  */
    zmlx_qmode mode;
    int bits, group_size; /* 0 = unknown (infer from shapes)                  */
} zm_qspec;

typedef struct zm_qoverride {
    char *path;           /* module path, e.g. "model.layers.0.mlp.gate"      */
    zm_qspec spec;
} zm_qoverride;

typedef enum zm_arch { ZM_ARCH_QWEN3_MOE = 0, ZM_ARCH_LFM2_MOE } zm_arch;

typedef struct zm_config {
    char model_type[64];
    zm_arch arch;
    int64_t hidden, n_layers, inter, n_heads, n_kv_heads, head_dim;
    int64_t n_experts, top_k, sparse_step, moe_inter, vocab, max_pos;
    int64_t *mlp_only;
    size_t n_mlp_only;
    double rms_eps, rope_theta;
    int tie, norm_topk;
    /* lfm2_moe: the first n_dense layers are dense; attn[l] marks the
       attention layers (the rest are short-conv blocks of kernel conv_L);
       the router adds a selection bias when expert_bias, and scales the
       weights by route_scale */
    int64_t n_dense, conv_L;
    uint8_t *attn;
    int expert_bias;
    double route_scale;
    int n_eos;
    int32_t eos[ZMLX_MAX_EOS];
    /* quantization: has_quant = the config has a quantization (or
       quantization_config) block; global defaults then per-module overrides */
    int has_quant;
    zm_qspec qglobal;
    zm_qoverride *over;
    size_t n_over;
} zm_config;

/* Parse config.json text (qwen3_moe, lfm2_moe; another model_type gives
 * ZMLX_ERR_UNSUPPORTED naming it). `what` names the file in messages. */
zmlx_status zm_config_parse(const char *text, size_t len, const char *what, zm_config *c,
                            char *err, size_t errlen);
/* Parse generation_config.json: its eos_token_id (int or list) replaces c's. */
zmlx_status zm_genconfig_parse(const char *text, size_t len, const char *what, zm_config *c,
                               char *err, size_t errlen);
void zm_config_free(zm_config *c);
int zm_layer_is_moe(const zm_config *c, int64_t layer);
int zm_layer_is_attn(const zm_config *c, int64_t layer); /* 0: a short-conv block (lfm2_moe) */

/* Where an architecture keeps a layer's modules (FORMATS.md C.1, C.3), under
 * model.layers.N (norms without their ".weight"; final_norm whole): the
 * binding (bind.c) and make-tiny's writer read the same table. */
typedef struct zm_arch_names {
    const char *in_norm, *post_norm, *q, *k, *v, *o, *q_norm, *k_norm, *ffn, *final_norm;
} zm_arch_names;
const zm_arch_names *zm_arch_names_of(zm_arch arch);

/* The configured quantization of module `path`: the override if any, else
 * quantized (global defaults) iff `<path>.scales` exists in s. */
zm_qspec zm_module_qspec(const zm_config *c, const zst_set *s, const char *path);

/* ----------------------------------------------------------------- binding */

/* A float tensor view into the mapping. */
typedef struct zm_fview {
    const void *data;
    zmlx_dtype dtype;
    int ndim;
    int64_t shape[3];
} zm_fview;

/* A linear (or stacked expert linears, or embedding table) of logical shape
 * [E, N, K]: quantized (q) or float (f, dtype f32/f16/bf16). */
typedef struct zm_linear {
    int present;
    int quantized;
    zmlx_qweight q;
    zm_fview f;
} zm_linear;

typedef struct zm_layer {
    zm_fview in_norm, post_norm, q_norm, k_norm;
    int is_attn;
    zm_linear q, k, v, o;                        /* attention layers */
    zm_linear conv_in, conv_out;                 /* short-conv layers (lfm2_moe) */
    zm_fview conv_w;                             /* [D, L, 1] */
    zm_fview expert_bias;                        /* [E] or absent (data NULL) */
    int is_moe;
    zm_linear router, ex_gate, ex_up, ex_down;   /* MoE layers   */
    zm_linear mlp_gate, mlp_up, mlp_down;        /* dense layers */
} zm_layer;

#define ZM_MAX_QKINDS 4
typedef struct zm_qkind {
    int quantized;
    zmlx_qmode mode;
    int bits, group_size;
    zmlx_dtype dtype; /* scale dtype (quantized) or weight dtype (float) */
    int count;
} zm_qkind;

struct zmlx_model {
    zst_set st;
    zm_config cfg;
    zm_linear embed, lm_head; /* lm_head.present == 0 when tied */
    zm_fview norm;
    zm_layer *layers;
    uint64_t bytes[ZMLX_WCAT_COUNT_];
    zm_qkind kinds[ZMLX_WCAT_COUNT_][ZM_MAX_QKINDS];
    int n_kinds[ZMLX_WCAT_COUNT_];
    double t_bind, t_touch;
};

/* Check and bind every tensor of m->st per m->cfg (its architecture). */
zmlx_status zm_bind(zmlx_model *m, char *err, size_t errlen);

/* ------------------------------------------------------------------ writer */

/* One tensor to write: name, dtype, shape; data comes from a fill callback. */
typedef struct zw_tensor {
    char name[128];
    zmlx_dtype dtype;
    int ndim;
    int64_t shape[4];
    uint64_t nbytes;
    /* assigned by zw_write */
    int shard;
    uint64_t offset;
} zw_tensor;

/* Write bytes of tensor i (t->nbytes of them) into buf. */
typedef zmlx_status (*zw_fill_fn)(void *ctx, size_t i, const zw_tensor *t, void *buf, char *err,
                                  size_t errlen);

/*
 * Write tensors (in the given order: it decides shard membership and data
 * order) into dir as model.safetensors, or model-0000i-of-0000N.safetensors +
 * model.safetensors.index.json when the next tensor would push a shard past
 * shard_limit bytes (mlx-lm's make_shards rule; a tensor bigger than the limit
 * gets a shard of its own). total_params goes to the index metadata.
 */
zmlx_status zw_write(const char *dir, zw_tensor *t, size_t n, uint64_t shard_limit,
                     uint64_t total_params, zw_fill_fn fill, void *ctx, char *err, size_t errlen);

/* Safetensors dtype tag of a zmlx dtype ("F32", "BF16", "U32", ...). */
const char *zst_dtype_tag(zmlx_dtype t);

/* make-tiny: the synthetic qwen3_moe checkpoint generator (writer.c). */
typedef enum zw_init {
    ZW_INIT_QUANTIZE = 0, /* random floats quantized with zmlx_quantize        */
    ZW_INIT_CODES         /* random codes and scales written directly (fast)   */
} zw_init;

#define ZW_MAX_ATTN 64
typedef struct zw_tiny_opts {
    zm_arch arch;          /* qwen3_moe (default) or lfm2_moe                   */
    int n_attn;            /* lfm2_moe: the attention layers (the rest are
                              short-conv blocks of kernel conv_L); head_dim must
                              be hidden / heads                                */
    int attn_idx[ZW_MAX_ATTN];
    int conv_L;
    int layers, hidden, heads, kv_heads, head_dim, experts, top_k, moe_inter, dense_inter;
    int dense_layers;      /* the first dense_layers layers are dense SwiGLU MLPs of
                              dense_inter (config mlp_only_layers); the rest MoE   */
    int vocab;
    int bits, group_size;
    zmlx_qmode mode;
    int tie;
    uint64_t seed;
    uint64_t shard_limit;  /* bytes; default 5 GiB                              */
    zw_init init;
    int64_t max_pos;
    double rope_theta, rms_eps;
    int bos, n_eos;
    int32_t eos[ZMLX_MAX_EOS];
    int n_threads;         /* for quantization / generation; 0 = all cores      */
} zw_tiny_opts;

void zw_tiny_defaults(zw_tiny_opts *o); /* the small test model           */
void zw_tiny_lfm2(zw_tiny_opts *o);     /* the small lfm2_moe test model   */
/* The full-size dims of preset `name` (one of ZW_TINY_PRESETS: Qwen3-30B-A3B,
 * LFM2-8B-A1B) into o; 0 (o untouched) for another name. */
#define ZW_TINY_PRESETS "qwen3-30b-a3b, lfm2-8b-a1b"
int zw_tiny_preset(const char *name, zw_tiny_opts *o);
zmlx_status zw_make_tiny(const char *dir, const zw_tiny_opts *o, char *err, size_t errlen);

#endif /* ZMLX_MODEL_H */
