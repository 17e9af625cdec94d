/*
 * test_cuda_model.c — the qwen3_moe session on CUDA against the CPU backend,
 * on tiny checkpoints made at test time (zw_make_tiny; three variants: the
 * default affine 4-bit gs64, an odd tied 3-bit gs32 top-3-of-6 one, and
 * mxfp4):
 *  - CPU vs CUDA, 64 generated tokens after a 13-token prompt (prefill), both
 *    fed the CPU's greedy token: every step's CUDA argmax equals the CPU's
 *    (so the free-running greedy sequences agree), except at a genuine near
 *    tie — the CPU's top-2 gap below the step's largest logit difference —
 *    of which at most 2 are allowed; and every step's logits agree within a
 *    relative L2 error (‖g − c‖₂ / ‖c‖₂) of REL_L2_TOL. The backends differ only in
 *    reduction order: with bf16 activations (8 significant bits, relative step
 *    2^-8 ≈ 0.4%) each is ~0.7% from an f64 oracle on these models
 *    (test_model_forward), so 3% leaves room for the cache to carry small
 *    differences across steps without hiding a wrong kernel (those give O(1)).
 *    Up to 2 isolated steps may sit between REL_L2_TOL and SPIKE_TOL when the
 *    next step is back under REL_L2_TOL: an expert choice at a routing near
 *    tie, taken on one side only (see cpu_vs_cuda).
 *    A third session on the scalar reference backend (CPU_REF) runs alongside:
 *    a failure message names each backend's worst error against it, so it
 *    says which side is off.
 *    On failure the per-step errors of both against CPU_REF are printed.
 *  - the models' own linears (plain and gathered) and embedding tables on CUDA
 *    against an f64 oracle of their dequantized weights, at M = 1 and 13.
 *  - CUDA, unpatched (ZMLX_PATCH_NONE: eager, separate projections) vs the
 *    bit-exact fused plan (ZMLX_PATCH_EXACT: packed q/k/v, attention_step,
 *    each step one replayed graph): identical greedy tokens and
 *    memcmp-identical logits for 500 generated tokens, with a decode profile
 *    (replays) taken half-way through on the patched session.
 * Without a usable GPU (or a build without CUDA) it exits 77.
 */
#include "harness.h"
#include "model/model.h"

#include <dirent.h>
#include <unistd.h>

#define REL_L2_TOL 0.03
#define SPIKE_TOL 0.15
#define N_CMP 64
#define N_EXACT 500

static char g_root[256];

static const int32_t g_prompt[] = {254, 17, 3, 99, 180, 42, 7, 7, 128, 250, 1, 0, 77};
#define PROMPT_N ((int64_t)(sizeof g_prompt / sizeof g_prompt[0]))

static zmlx_ctx *new_ctx(zmlx_backend_kind k) {
    zmlx_ctx_opts o;
    zmlx_ctx_opts_default(&o);
    o.backend = k;
    o.n_threads = 2;
    zmlx_ctx *c = NULL;
    char err[512] = "";
    zmlx_status s = zmlx_ctx_create(&o, &c, err, sizeof err);
    CHECKF(s == ZMLX_OK, "context %d: %s", (int)k, err);
    return c;
}

static zmlx_session *new_session(const zmlx_model *m, zmlx_ctx *ctx, zmlx_patch_plan p, int64_t cap) {
    zmlx_session_opts o;
    zmlx_session_opts_default(&o);
    o.max_ctx = cap;
    o.patch = p;
    zmlx_session *s = NULL;
    char err[512] = "";
    zmlx_status st = zmlx_session_new(m, ctx, &o, &s, err, sizeof err);
    CHECKF(st == ZMLX_OK, "session: %s", err);
    return s;
}

/* A copy of the session's logits, so a poisoned buffer shows an unwritten read. */
static void grab(zmlx_session *s, float *dst, int64_t V) {
    h_poison(dst, (size_t)V * 4);
    const float *l = zmlx_session_logits(s);
    if (l) memcpy(dst, l, (size_t)V * 4);
}

static int feed(zmlx_session *s, const int32_t *ids, int64_t n) {
    char err[512] = "";
    zmlx_status st = n > 1 ? zmlx_session_prefill(s, ids, n, err, sizeof err) : zmlx_session_step(s, ids[0], err, sizeof err);
    CHECKF(st == ZMLX_OK, "feeding %lld token(s): %s", (long long)n, err);
    return st == ZMLX_OK;
}

static double rel_l2(const float *a, const float *ref, int64_t V) {
    double num = 0, den = 0;
    for (int64_t j = 0; j < V; j++) {
        double d = (double)a[j] - ref[j];
        num += d * d;
        den += (double)ref[j] * ref[j];
    }
    return den > 0 ? sqrt(num / den) : INFINITY;
}

static void cpu_vs_cuda(const char *dir, zmlx_model *m, zmlx_ctx *ref, zmlx_ctx *cpu, zmlx_ctx *gpu, int64_t V) {
    zmlx_session *sr = new_session(m, ref, ZMLX_PATCH_EXACT, PROMPT_N + N_CMP);
    zmlx_session *sc = new_session(m, cpu, ZMLX_PATCH_EXACT, PROMPT_N + N_CMP);
    zmlx_session *sg = new_session(m, gpu, ZMLX_PATCH_EXACT, PROMPT_N + N_CMP);
    float *lc = h_alloc((size_t)V * 4), *lg = h_alloc((size_t)V * 4), *lr = h_alloc((size_t)V * 4);
    int ties = 0, bad_tok = -1, bad_rel = -1, spikes = 0;
    double worst = 0, worst_c = 0, worst_g = 0; /* CPU vs CUDA; CPU, CUDA vs CPU_REF */
    double step_c[N_CMP] = {0}, step_g[N_CMP] = {0}, step_r[N_CMP] = {0};
    int ok = sr && sc && sg && feed(sr, g_prompt, PROMPT_N) && feed(sc, g_prompt, PROMPT_N) &&
             feed(sg, g_prompt, PROMPT_N);
    for (int i = 0; ok && i < N_CMP; i++) {
        grab(sr, lr, V);
        grab(sc, lc, V);
        grab(sg, lg, V);
        step_c[i] = rel_l2(lc, lr, V);
        step_g[i] = rel_l2(lg, lr, V);
        worst_c = fmax(worst_c, step_c[i]);
        worst_g = fmax(worst_g, step_g[i]);
        double maxd = 0;
        int32_t ac = 0, ag = 0, second = -1;
        for (int64_t j = 0; j < V; j++) {
            maxd = fmax(maxd, fabs((double)lg[j] - lc[j]));
            if (lc[j] > lc[ac]) ac = (int32_t)j;
            if (lg[j] > lg[ag]) ag = (int32_t)j;
        }
        for (int64_t j = 0; j < V; j++)
            if (j != ac && (second < 0 || lc[j] > lc[second])) second = (int32_t)j;
        double rel = rel_l2(lg, lc, V);
        step_r[i] = rel;
        worst = fmax(worst, rel);
        CHECKF(ac == zmlx_session_argmax(sc) && ag == zmlx_session_argmax(sg), "%s: argmax of the logits", dir);
        if (ac != ag) {
            if ((double)lc[ac] - lc[second] < maxd) ties++;
            else if (bad_tok < 0) bad_tok = i;
        }
        ok = i + 1 == N_CMP || (feed(sr, &ac, 1) && feed(sc, &ac, 1) && feed(sg, &ac, 1));
    }
    /* A step above the tolerance (but under SPIKE_TOL) whose successor is back
       under it is one token's forward crossing a routing near tie: an expert
       chosen on one side only, the cache barely moved. The tied 3-bit model
       has one at step 23, where a 1-ulp difference in a few attention outputs
       (both backends within rounding of an f64 oracle) flips a choice:
       src/cuda/NOTES.md v15. At most 2, as token near ties; a wrong kernel
       stays off (O(1)) step after step. */
    for (int i = 0; i < N_CMP; i++)
        if (!(step_r[i] <= REL_L2_TOL)) {
            if (step_r[i] <= SPIKE_TOL && i + 1 < N_CMP && step_r[i + 1] <= REL_L2_TOL) spikes++;
            else if (bad_rel < 0) bad_rel = i;
        }
    CHECKF(spikes <= 2, "%s: %d isolated steps above the logits tolerance in %d steps", dir, spikes, N_CMP);
    CHECKF(bad_tok < 0, "%s: CUDA's greedy token differs from the CPU's at step %d (not a near tie); worst rel. L2 "
           "vs cpu-ref: cpu %.4f, cuda %.4f", dir, bad_tok, worst_c, worst_g);
    CHECKF(ties <= 2, "%s: %d near-tie token differences in %d steps", dir, ties, N_CMP);
    CHECKF(bad_rel < 0, "%s: CPU vs CUDA logits relative L2 error above %.3f from step %d (worst %.4f); worst vs "
           "cpu-ref: cpu %.4f, cuda %.4f", dir, REL_L2_TOL, bad_rel, worst, worst_c, worst_g);
    if (bad_rel >= 0 || bad_tok >= 0) { /* which side drifts, step by step */
        fprintf(stderr, "  step: rel. L2 vs cpu-ref of cpu / cuda\n");
        for (int i = 0; i < N_CMP; i++) fprintf(stderr, "  %2d: %.4f / %.4f\n", i, step_c[i], step_g[i]);
    }
    free(lc);
    free(lg);
    free(lr);
    zmlx_session_free(sr);
    zmlx_session_free(sc);
    zmlx_session_free(sg);
}

static void exact_vs_unpatched(const char *dir, zmlx_model *m, zmlx_ctx *gpu, int64_t V) {
    zmlx_session *a = new_session(m, gpu, ZMLX_PATCH_NONE, PROMPT_N + N_EXACT);
    zmlx_session *b = new_session(m, gpu, ZMLX_PATCH_EXACT, PROMPT_N + N_EXACT);
    float *la = h_alloc((size_t)V * 4), *lb = h_alloc((size_t)V * 4);
    int first_diff = -1;
    int ok = a && b && feed(a, g_prompt, PROMPT_N) && feed(b, g_prompt, PROMPT_N);
    CHECKF(b && a && zmlx_session_uses_graph(b) && !zmlx_session_uses_graph(a), "%s: graph use", dir);
    for (int i = 0; ok && i < N_EXACT && first_diff < 0; i++) {
        if (i == 100) {
            /* profiling replays the step and its parts: the session must go on as if it had not */
            zmlx_decode_profile pr;
            char err[512] = "";
            zmlx_status st = zmlx_session_profile_decode(b, 3, &pr, err, sizeof err);
            CHECKF(st == ZMLX_OK && pr.step_us > 0 && pr.attn_us > 0 && pr.moe_us > 0 && pr.head_us > 0 &&
                       pr.bytes > 0, "%s: profile: %s", dir, err);
        }
        grab(a, la, V);
        grab(b, lb, V);
        int32_t ta = zmlx_session_argmax(a), tb = zmlx_session_argmax(b);
        if (ta != tb || memcmp(la, lb, (size_t)V * 4)) first_diff = i;
        ok = i + 1 == N_EXACT || (feed(a, &ta, 1) && feed(b, &tb, 1));
    }
    CHECKF(ok && first_diff < 0, "%s: CUDA patched vs unpatched logits differ at step %d", dir, first_diff);
    free(la);
    free(lb);
    zmlx_session_free(a);
    zmlx_session_free(b);
}

/* The model's own linears on CUDA against an f64 oracle of their
 * dequantized weights (relative L2 over the output), at M = 1 and M = 13
 * (the prompt length): every format, shape and real scale distribution the
 * forward meets, plain (idx NULL) and gathered; and the embedding rows. */
static void *dev_copy(zmlx_ctx *g, const void *src, size_t bytes) {
    void *d = NULL;
    CHECK(zmlx_mem_alloc(g, bytes, &d) == ZMLX_OK && zmlx_mem_upload(g, d, src, bytes) == ZMLX_OK);
    return d;
}

static void module_check(const char *dir, const char *name, const zmlx_qweight *hw, zmlx_ctx *g, uint64_t seed) {
    const int64_t rows = hw->E * hw->N, K = hw->K, N = hw->N;
    const size_t wb = zmlx_quant_packed_bytes(hw->bits, rows, K);
    const size_t sb = zmlx_quant_scales_count(hw->group_size, rows, K) * zmlx_dtype_size(hw->scale_dtype);
    zmlx_qweight dw = *hw;
    dw.w = dev_copy(g, hw->w, wb);
    dw.scales = dev_copy(g, hw->scales, sb);
    dw.biases = hw->biases ? dev_copy(g, hw->biases, sb) : NULL;
    dw.on_device = 1;
    double **W = h_alloc(sizeof(double *) * (size_t)hw->E);
    for (int64_t e = 0; e < hw->E; e++) W[e] = h_deq64(hw, e);
    h_rng r = {seed};
    for (int64_t M = 1; M <= PROMPT_N; M += PROMPT_N - 1) {
        const int k = hw->E > 1 ? 2 : 1;
        uint16_t *hx = h_alloc((size_t)(M * K) * 2), *hy = h_alloc((size_t)(M * k * N) * 2);
        int32_t hidx[2 * PROMPT_N];
        for (int64_t i = 0; i < M * K; i++) hx[i] = zmlx_f32_to_bf16(h_nonzero(&r, -1.5f, 1.5f));
        for (int64_t t = 0; t < M; t++) {
            hidx[t * k] = (int32_t)h_int(&r, hw->E);
            if (k == 2) hidx[t * k + 1] = (int32_t)((hidx[t * k] + 1 + h_int(&r, hw->E - 1)) % hw->E);
        }
        void *x = dev_copy(g, hx, (size_t)(M * K) * 2), *y = NULL;
        int32_t *idx = k == 2 ? dev_copy(g, hidx, sizeof(int32_t) * (size_t)(M * k)) : NULL;
        h_poison(hy, (size_t)(M * k * N) * 2);
        CHECK(zmlx_mem_alloc(g, (size_t)(M * k * N) * 2, &y) == ZMLX_OK);
        zmlx_status st = zmlx_mem_upload(g, y, hy, (size_t)(M * k * N) * 2);
        if (st == ZMLX_OK) st = zmlx_gather_qmm(g, ZMLX_BF16, x, M, 0, &dw, idx, k, y);
        if (st == ZMLX_OK) st = zmlx_ctx_sync(g);
        if (st == ZMLX_OK) st = zmlx_mem_download(g, hy, y, (size_t)(M * k * N) * 2);
        CHECKF(st == ZMLX_OK, "%s %s M %lld: %s", dir, name, (long long)M, zmlx_status_str(st));
        double num = 0, den = 0;
        for (int64_t p = 0; p < M * k; p++) {
            const double *Wp = W[k == 2 ? hidx[p] : 0];
            for (int64_t n = 0; n < N; n++) {
                double a = 0;
                for (int64_t kk = 0; kk < K; kk++) a += zmlx_bf16_to_f32(hx[(p / k) * K + kk]) * Wp[n * K + kk];
                double d = zmlx_bf16_to_f32(hy[p * N + n]) - a;
                num += d * d;
                den += a * a;
            }
        }
        /* bf16 output rounding alone is ~2^-9 relative; 0.01 leaves room for
           the tensor-core paths but not for a wrong element */
        double rel = den > 0 ? sqrt(num / den) : INFINITY;
        CHECKF(rel < 0.01, "%s %s (%s %d-bit gs%d, E %lld N %lld K %lld) M %lld: rel. L2 %.4f vs f64 oracle", dir,
               name, zmlx_qmode_name(hw->mode), hw->bits, hw->group_size, (long long)hw->E, (long long)N,
               (long long)K, (long long)M, rel);
        free(hx); free(hy);
        zmlx_mem_free(g, x); zmlx_mem_free(g, y); zmlx_mem_free(g, idx);
    }
    if (hw->E == 1 && !strcmp(name, "embed")) { /* rows of the table, rounded to bf16 */
        int32_t ids[PROMPT_N];
        uint16_t out[PROMPT_N * 128];
        for (int i = 0; i < PROMPT_N; i++) ids[i] = g_prompt[i] % (int32_t)N;
        void *di = dev_copy(g, ids, sizeof ids), *o = NULL;
        CHECK(K <= 128 && zmlx_mem_alloc(g, (size_t)(PROMPT_N * K) * 2, &o) == ZMLX_OK);
        zmlx_status st = zmlx_embed_lookup(g, ZMLX_BF16, &dw, di, PROMPT_N, o);
        if (st == ZMLX_OK) st = zmlx_ctx_sync(g);
        if (st == ZMLX_OK) st = zmlx_mem_download(g, out, o, (size_t)(PROMPT_N * K) * 2);
        int bad = st != ZMLX_OK;
        for (int i = 0; i < PROMPT_N && !bad; i++)
            for (int64_t d = 0; d < K; d++) bad += out[i * K + d] != zmlx_f32_to_bf16((float)W[0][ids[i] * K + d]);
        CHECKF(bad == 0, "%s embed_lookup: %d elements differ from the dequantized rows", dir, bad);
        zmlx_mem_free(g, di); zmlx_mem_free(g, o);
    }
    for (int64_t e = 0; e < hw->E; e++) free(W[e]);
    free(W);
    zmlx_mem_free(g, (void *)dw.w); zmlx_mem_free(g, (void *)dw.scales); zmlx_mem_free(g, (void *)dw.biases);
}

static void modules_vs_oracle(const char *dir, const zmlx_model *m, zmlx_ctx *g) {
    const zm_layer *L = &m->layers[0];
    const struct { const char *name; const zmlx_qweight *w; } mods[] = {
        {"embed", &m->embed.q}, {"lm_head", m->lm_head.present ? &m->lm_head.q : &m->embed.q}, {"q_proj", &L->q.q},
        {"k_proj", &L->k.q}, {"o_proj", &L->o.q}, {"router", &L->router.q}, {"gate_proj", &L->ex_gate.q},
        {"down_proj", &L->ex_down.q}};
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) module_check(dir, mods[i].name, mods[i].w, g, 900 + i);
}

static void test_variants(void) {
    zmlx_ctx *ref = new_ctx(ZMLX_BACKEND_CPU_REF), *cpu = new_ctx(ZMLX_BACKEND_CPU), *gpu = new_ctx(ZMLX_BACKEND_CUDA);
    for (int v = 0; v < 3 && ref && cpu && gpu; v++) {
        zw_tiny_opts o;
        zw_tiny_defaults(&o); /* 2 layers, D 64, 4/2 heads of 16, 8 experts top-2, vocab 256 */
        o.n_threads = 2;
        if (v == 1) { /* tied head, 3 layers, 6 q heads over 2 kv heads of 32, 3-bit gs32, top-3 of 6 */
            o.tie = 1, o.layers = 3, o.hidden = 128, o.heads = 6, o.kv_heads = 2, o.head_dim = 32;
            o.experts = 6, o.top_k = 3, o.moe_inter = 192, o.vocab = 300, o.bits = 3, o.group_size = 32, o.seed = 7;
        } else if (v == 2) {
            o.mode = ZMLX_QMODE_MXFP4, o.bits = 4, o.group_size = 32, o.seed = 5;
        }
        char dir[512], err[512] = "";
        snprintf(dir, sizeof dir, "%s/v%d", g_root, v);
        zmlx_status s = zw_make_tiny(dir, &o, err, sizeof err);
        CHECKF(s == ZMLX_OK, "make tiny %d: %s", v, err);
        zmlx_model *m = NULL;
        if (s == ZMLX_OK) {
            s = zmlx_model_open(dir, NULL, &m, err, sizeof err);
            CHECKF(s == ZMLX_OK, "%s: %s", dir, err);
        }
        if (m) {
            zmlx_model_info mi;
            zmlx_model_get_info(m, &mi);
            modules_vs_oracle(dir, m, gpu);
            cpu_vs_cuda(dir, m, ref, cpu, gpu, mi.vocab);
            exact_vs_unpatched(dir, m, gpu, mi.vocab);
        }
        zmlx_model_free(m);
        h_rm_tree(dir);
    }
    zmlx_ctx_free(gpu);
    zmlx_ctx_free(cpu);
    zmlx_ctx_free(ref);
}

int main(void) {
    if (!zmlx_cuda_available())
        return harness_skip("no usable CUDA device (or zmlx built without CUDA): CPU vs CUDA model test not run");
    snprintf(g_root, sizeof g_root, "/tmp/zmlx-cuda-model-XXXXXX");
    if (!mkdtemp(g_root)) return harness_skip("cannot create a temp dir");
    RUN(test_variants);
    h_rm_tree(g_root);
    return harness_done();
}
