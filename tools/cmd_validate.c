/*
 * cmd_validate.c — `zmlx validate`: greedy decoding with the baseline (patch
 * none) and the patched plan in one process and one session (weights loaded
 * and uploaded once), every run of one compared with the same run of the
 * other: token fidelity, whether every step's logits were bit-identical, and
 * median prompt / decode speeds, peak memory and speedup (DESIGN.md §6).
 * `--patch auto` first times each bit-exact switch on the loaded model and
 * keeps those faster by more than the measured noise. Exit 1 on FAIL.
 */
#include "cli_run.h"

#include "core/core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

CLI_COMMAND(validate, "greedy fidelity and speed of a patch plan vs the unpatched baseline")

static void usage(FILE *f) {
    fprintf(f,
            "usage: zmlx validate MODEL [--patch P] [--max-tokens N] [--runs R] [--prompt-ids \"1 2 3\"]\n"
            "                      [--backend cpu|cpu-ref|cuda|auto] [--threads N] [--ignore-eos] [--json FILE]\n"
            "  --patch P        none | exact (default: swiglu,combine,add_rms_norm,attention,lm_head, the\n"
            "                   bit-exact switches) | all (exact + router) | auto | a comma list of switches.\n"
            "                   auto times each bit-exact switch and keeps those faster by more\n"
            "                   than the measured noise.\n"
            "  --max-tokens N   tokens generated per run (default 200); stops early at EOS\n"
            "                   unless --ignore-eos\n"
            "  --runs R         runs per plan (default 3); run r of the patched plan is compared\n"
            "                   with run r of the baseline, for every r\n"
            "  --prompt-ids S   prompt token ids (default: a fixed 85-token prompt, ids < 256)\n"
            "  --backend B      auto (default: cuda if a GPU is usable, else cpu)\n"
            "  --threads N      CPU threads (default: all cores)\n"
            "  --json FILE      write a repro capsule\n");
}

typedef struct run_result {
    int32_t *tok;
    uint64_t *hash; /* per generated token: hash of the logits it was chosen from */
    int64_t n;
    double prefill_tps, decode_tps;
} run_result;

typedef struct phase {
    zmlx_patch_plan plan;
    run_result *runs;
    double peak_bytes;
    double med_prefill, med_decode;
} phase;

static uint64_t fnv64(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct vcfg {
    const int32_t *prompt;
    int64_t np, max_tokens;
    int ignore_eos;
} vcfg;

/* One greedy run from a reset session. */
static int one_run(cli_run *r, const vcfg *c, run_result *out) {
    zmlx_session *s = r->sess;
    char err[512] = "";
    const size_t lbytes = (size_t)r->info.vocab * sizeof(float);
    zmlx_session_reset(s);
    double t0 = zc_now_sec();
    if (zmlx_session_prefill(s, c->prompt, c->np, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx validate: prefill: %s\n", err);
        return 0;
    }
    double t1 = zc_now_sec();
    out->n = 0;
    for (;;) {
        int32_t t = zmlx_session_argmax(s);
        out->tok[out->n] = t;
        out->hash[out->n++] = fnv64(zmlx_session_logits(s), lbytes);
        if (out->n == c->max_tokens || (!c->ignore_eos && cli_is_eos(&r->info, t))) break;
        if (zmlx_session_step(s, t, err, sizeof err) != ZMLX_OK) {
            fprintf(stderr, "zmlx validate: decode step %lld: %s\n", (long long)out->n, err);
            return 0;
        }
    }
    double t2 = zc_now_sec();
    out->prefill_tps = (double)c->np / (t1 - t0);
    out->decode_tps = out->n > 1 ? (double)(out->n - 1) / (t2 - t1) : 0.0;
    return 1;
}

static int run_phase(cli_run *r, const vcfg *c, int runs, phase *ph) {
    zmlx_session_set_patch(r->sess, ph->plan);
    cli_peak_reset();
    double *pf = malloc((size_t)runs * sizeof *pf), *dc = malloc((size_t)runs * sizeof *dc);
    int ok = pf && dc;
    for (int i = 0; ok && i < runs; i++) {
        ok = one_run(r, c, &ph->runs[i]);
        if (ok) {
            pf[i] = ph->runs[i].prefill_tps;
            dc[i] = ph->runs[i].decode_tps;
        }
    }
    if (ok) {
        ph->med_prefill = median(pf, runs);
        ph->med_decode = median(dc, runs);
        /* device memory is the session's; host memory the process's high-water mark */
        ph->peak_bytes = r->backend == ZMLX_BACKEND_CUDA ? (double)zmlx_session_mem_bytes(r->sess)
                                                          : cli_peak_rss_bytes();
    }
    free(pf);
    free(dc);
    return ok;
}

/* Seconds per decode step of `plan`: prefill the prompt, then time `steps` steps. */
static double time_plan(cli_run *r, const vcfg *c, zmlx_patch_plan plan, int64_t steps) {
    char err[512];
    zmlx_session *s = r->sess;
    zmlx_session_set_patch(s, plan);
    zmlx_session_reset(s);
    if (zmlx_session_prefill(s, c->prompt, c->np, err, sizeof err) != ZMLX_OK) return -1;
    double t0 = zc_now_sec();
    for (int64_t i = 0; i < steps; i++)
        if (zmlx_session_step(s, zmlx_session_argmax(s), err, sizeof err) != ZMLX_OK) return -1;
    return (zc_now_sec() - t0) / (double)steps;
}

/* --patch auto: for each bit-exact switch in turn, alternate timings of the
 * plan kept so far with and without it; keep it when its median is faster by
 * more than the noise (the larger relative half-spread of the two samples). */
static int auto_plan(cli_run *r, const vcfg *c, zmlx_patch_plan *out, char *why, size_t wlen) {
    enum { REPS = 7 };
    int64_t steps = c->max_tokens < 16 ? c->max_tokens : 16;
    zmlx_patch_plan kept = 0;
    size_t o = 0;
    why[0] = 0;
    if (time_plan(r, c, 0, steps) < 0) return 0; /* warm-up */
    for (int i = 0; i < ZMLX_PATCH_COUNT_; i++) {
        zmlx_patch_plan bit = 1u << i;
        if (!(bit & ZMLX_PATCH_EXACT)) continue;
        double a[REPS], b[REPS];
        for (int k = 0; k < REPS; k++) {
            a[k] = time_plan(r, c, kept, steps);
            b[k] = time_plan(r, c, kept | bit, steps);
            if (a[k] < 0 || b[k] < 0) return 0;
        }
        double ma = median(a, REPS), mb = median(b, REPS); /* sorts a and b */
        double noise = fmax((a[REPS - 1] - a[0]) / (2 * ma), (b[REPS - 1] - b[0]) / (2 * mb));
        int keep = mb < ma * (1.0 - noise);
        if (keep) kept |= bit;
        printf("auto: %-12s off %8.3f ms/tok  on %8.3f ms/tok  (%+.1f%%, noise ±%.1f%%) -> %s\n",
               zmlx_patch_switch_name(i), ma * 1e3, mb * 1e3, 100.0 * (ma / mb - 1.0), 100.0 * noise,
               keep ? "kept" : "dropped");
        if (o < wlen)
            o += (size_t)snprintf(why + o, wlen - o, "%s%s: %+.1f%% vs noise %.1f%% (%s)", o ? "; " : "",
                                  zmlx_patch_switch_name(i), 100.0 * (ma / mb - 1.0), 100.0 * noise,
                                  keep ? "kept" : "dropped");
    }
    *out = kept;
    return 1;
}

/* Fidelity over every run: matched / total tokens, the first divergence, and
 * whether every compared step's logits hashed the same. */
typedef struct fidelity {
    int64_t matched, total;
    int first_run;
    int64_t first_idx;
    int logits_identical;
    int baseline_deterministic;
} fidelity;

static fidelity compare(const phase *b, const phase *p, int runs) {
    fidelity f = {0, 0, -1, -1, 1, 1};
    for (int r = 0; r < runs; r++) {
        const run_result *x = &b->runs[r], *y = &p->runs[r];
        int64_t mn = x->n < y->n ? x->n : y->n, mx = x->n > y->n ? x->n : y->n;
        f.total += mx;
        for (int64_t i = 0; i < mn; i++) {
            if (x->tok[i] == y->tok[i]) f.matched++;
            else if (f.first_run < 0) f.first_run = r, f.first_idx = i;
            if (x->hash[i] != y->hash[i]) f.logits_identical = 0;
        }
        if (x->n != y->n) {
            f.logits_identical = 0;
            if (f.first_run < 0) f.first_run = r, f.first_idx = mn;
        }
        const run_result *z = &b->runs[0];
        f.baseline_deterministic &= x->n == z->n && !memcmp(x->tok, z->tok, (size_t)x->n * 4) &&
                                    !memcmp(x->hash, z->hash, (size_t)x->n * 8);
    }
    return f;
}

static void write_phase_json(FILE *f, const char *name, const phase *ph, int runs, int last) {
    fprintf(f, "  \"%s\": {\"plan\": ", name);
    char buf[96];
    cli_json_str(f, zmlx_patch_to_string(ph->plan, buf, sizeof buf));
    fprintf(f, ", \"prefill_tok_s\": [");
    for (int r = 0; r < runs; r++) fprintf(f, "%s%.3f", r ? ", " : "", ph->runs[r].prefill_tps);
    fprintf(f, "], \"decode_tok_s\": [");
    for (int r = 0; r < runs; r++) fprintf(f, "%s%.3f", r ? ", " : "", ph->runs[r].decode_tps);
    fprintf(f, "], \"gen_tokens\": [");
    for (int r = 0; r < runs; r++) fprintf(f, "%s%lld", r ? ", " : "", (long long)ph->runs[r].n);
    fprintf(f, "], \"median_prefill_tok_s\": %.3f, \"median_decode_tok_s\": %.3f, \"peak_mem_gb\": %.4f}%s\n",
            ph->med_prefill, ph->med_decode, ph->peak_bytes / 1e9, last ? "" : ",");
}

static int write_json(const char *path, const cli_run *r, const char *model_dir, const char *patch_arg,
                      const char *auto_why, const vcfg *c, int runs, const phase *b, const phase *p,
                      const fidelity *fd, double speedup) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "zmlx validate: cannot write %s\n", path);
        return 0;
    }
    char buf[96];
    cli_capsule_head(f, "validate", r->backend == ZMLX_BACKEND_CUDA);
    fprintf(f, "  \"backend\": \"%s\",\n  \"threads\": %d,\n  \"model\": ", cli_backend_name(r->backend),
            r->backend == ZMLX_BACKEND_CUDA ? 0 : r->threads);
    cli_json_str(f, model_dir);
    fprintf(f, ",\n  \"arch\": ");
    cli_json_str(f, r->info.arch);
    fprintf(f, ",\n  \"patch\": ");
    cli_json_str(f, zmlx_patch_to_string(p->plan, buf, sizeof buf));
    fprintf(f, ",\n  \"patch_arg\": ");
    cli_json_str(f, patch_arg);
    if (auto_why[0]) {
        fprintf(f, ",\n  \"auto\": ");
        cli_json_str(f, auto_why);
    }
    fprintf(f, ",\n  \"runs\": %d,\n  \"max_tokens\": %lld,\n  \"prompt_tokens\": %lld,\n", runs,
            (long long)c->max_tokens, (long long)c->np);
    fprintf(f, "  \"fidelity\": {\"matched\": %lld, \"total\": %lld, \"verdict\": \"%s\", \"first_divergence\": ",
            (long long)fd->matched, (long long)fd->total, fd->matched == fd->total && fd->total ? "PASS" : "FAIL");
    if (fd->first_run >= 0) fprintf(f, "{\"run\": %d, \"index\": %lld}", fd->first_run + 1, (long long)fd->first_idx);
    else fprintf(f, "null");
    fprintf(f, ", \"logits_bit_identical\": %s, \"baseline_deterministic\": %s},\n",
            fd->logits_identical ? "true" : "false", fd->baseline_deterministic ? "true" : "false");
    write_phase_json(f, "baseline", b, runs, 0);
    write_phase_json(f, "patched", p, runs, 0);
    fprintf(f, "  \"speedup\": %.4f\n}\n", speedup);
    int ok = !ferror(f);
    if (fclose(f) || !ok) {
        fprintf(stderr, "zmlx validate: error writing %s\n", path);
        return 0;
    }
    return 1;
}

int cmd_validate(int argc, char **argv) {
    const char *dir = NULL, *patch_arg = "exact", *json = NULL, *ids_arg = NULL;
    long long max_tokens = 200, runs = 3, threads = 0;
    int ignore_eos = 0, backend_auto = 1;
    zmlx_backend_kind bk = ZMLX_BACKEND_CPU;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1, takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = 1;
            takes = 0;
        } else if (a[0] != '-') {
            ok = !dir;
            dir = a;
            takes = 0;
        } else if (!v) {
            ok = 0;
        } else if (!strcmp(a, "--patch")) {
            patch_arg = v;
        } else if (!strcmp(a, "--max-tokens")) {
            ok = cli_parse_int(v, &max_tokens) && max_tokens >= 1 && max_tokens <= 1000000;
        } else if (!strcmp(a, "--runs")) {
            ok = cli_parse_int(v, &runs) && runs >= 1 && runs <= 1000;
        } else if (!strcmp(a, "--prompt-ids")) {
            ids_arg = v;
        } else if (!strcmp(a, "--backend")) {
            ok = cli_parse_backend(v, &bk, &backend_auto);
        } else if (!strcmp(a, "--threads")) {
            ok = cli_parse_int(v, &threads) && threads >= 0 && threads <= 1024;
        } else if (!strcmp(a, "--json")) {
            json = v;
        } else {
            ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "zmlx validate: bad option or value '%s%s%s'\n", a, takes && v ? " " : "",
                    takes && v ? v : "");
            usage(stderr);
            return 2;
        }
        i += takes;
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    if (backend_auto) bk = zmlx_cuda_available() ? ZMLX_BACKEND_CUDA : ZMLX_BACKEND_CPU;
    zmlx_patch_plan plan = 0;
    int is_auto = 0;
    char err[512];
    if (zmlx_patch_parse(patch_arg, &plan, &is_auto, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx validate: %s\n", err);
        return 2;
    }
    int32_t *prompt = NULL;
    int64_t np = ids_arg ? cli_parse_ids(ids_arg, &prompt) : cli_default_prompt(&prompt);
    if (np < 1) {
        fprintf(stderr, "zmlx validate: bad --prompt-ids '%s' (token ids separated by spaces or commas)\n",
                ids_arg ? ids_arg : "");
        return 2;
    }

    zmlx_session_opts so;
    zmlx_session_opts_default(&so);
    so.max_ctx = np + max_tokens;
    cli_run r;
    if (!cli_run_open(&r, "zmlx validate", dir, bk, (int)threads, &so)) {
        free(prompt);
        return 1;
    }
    vcfg c = {prompt, np, max_tokens, ignore_eos};
    phase ph[2] = {{.plan = ZMLX_PATCH_NONE}, {.plan = plan}};
    int rc = 1;
    char why[512] = "";
    for (int k = 0; k < 2; k++) {
        ph[k].runs = calloc((size_t)runs, sizeof *ph[k].runs);
        for (long long i = 0; ph[k].runs && i < runs; i++) {
            ph[k].runs[i].tok = malloc((size_t)max_tokens * sizeof(int32_t));
            ph[k].runs[i].hash = malloc((size_t)max_tokens * sizeof(uint64_t));
            if (!ph[k].runs[i].tok || !ph[k].runs[i].hash) {
                fprintf(stderr, "zmlx validate: out of memory\n");
                goto out;
            }
        }
        if (!ph[k].runs) goto out;
    }
    printf("validate: %s (%s, %d layers, %d experts top-%d, vocab %d) on %s", dir, r.info.arch, r.info.n_layers,
           r.info.n_experts, r.info.top_k, r.info.vocab, cli_backend_name(bk));
    if (bk != ZMLX_BACKEND_CUDA) printf(" (%d threads)", r.threads);
    printf("\n");
    fflush(stdout);
    if (is_auto) {
        if (!auto_plan(&r, &c, &ph[1].plan, why, sizeof why)) {
            fprintf(stderr, "zmlx validate: timing the patch switches failed\n");
            goto out;
        }
    }
    /* warm-up (two short generations, like ZMLX's) with the plan under test */
    {
        vcfg w = {prompt, np < 8 ? np : 8, max_tokens < 5 ? max_tokens : 5, 1};
        zmlx_session_set_patch(r.sess, ph[1].plan);
        for (int k = 0; k < 2; k++)
            if (!one_run(&r, &w, &ph[0].runs[0])) goto out;
    }
    if (!run_phase(&r, &c, (int)runs, &ph[0]) || !run_phase(&r, &c, (int)runs, &ph[1])) goto out;

    fidelity fd = compare(&ph[0], &ph[1], (int)runs);
    int pass = fd.total > 0 && fd.matched == fd.total;
    double speedup = ph[0].med_decode > 0 ? ph[1].med_decode / ph[0].med_decode : 0.0;
    char pbuf[96];
    printf("==================================================================\n");
    printf("VALIDATION REPORT\n");
    printf("  model:    %s\n", dir);
    printf("  patch:    %s%s\n", zmlx_patch_to_string(ph[1].plan, pbuf, sizeof pbuf), is_auto ? " (auto)" : "");
    if (why[0]) printf("  auto:     %s\n", why);
    printf("  tokens:   prompt %lld, up to %lld generated, %lld runs per plan\n", (long long)np, max_tokens, runs);
    printf("==================================================================\n");
    printf("FIDELITY: %lld/%lld tokens identical %s\n", (long long)fd.matched, (long long)fd.total,
           pass ? "PASS" : "FAIL");
    if (fd.first_run >= 0)
        printf("  first divergence: run %d, token %lld\n", fd.first_run + 1, (long long)fd.first_idx);
    printf("  logits:   %s\n", fd.logits_identical ? "bit-identical at every step of every run"
                                                   : "NOT bit-identical (tokens compared above)");
    printf("  baseline: %s\n", fd.baseline_deterministic ? "every run identical (deterministic)"
                                                         : "runs differ from each other");
    printf("\n%-10s %16s %16s %16s\n", "", "prompt tok/s", "decode tok/s", "peak mem (GB)");
    for (int k = 0; k < 2; k++)
        printf("%-10s %16.1f %16.1f %16.3f\n", k ? "Patched" : "Baseline", ph[k].med_prefill, ph[k].med_decode,
               ph[k].peak_bytes / 1e9);
    printf("\nSpeedup: %.3fx (median decode, patched / baseline)%s\n", speedup,
           bk == ZMLX_BACKEND_CUDA ? "; peak mem = the session's device memory" : "; peak mem = process RSS high-water mark");
    rc = pass ? 0 : 1;
    if (json && !write_json(json, &r, dir, patch_arg, why, &c, (int)runs, &ph[0], &ph[1], &fd, speedup)) rc = 1;
out:
    for (int k = 0; k < 2; k++) {
        for (long long i = 0; ph[k].runs && i < runs; i++) {
            free(ph[k].runs[i].tok);
            free(ph[k].runs[i].hash);
        }
        free(ph[k].runs);
    }
    cli_run_close(&r);
    free(prompt);
    return rc;
}
