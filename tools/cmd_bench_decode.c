/*
 * cmd_bench_decode.c — `zmlx bench decode`: whole-model greedy decode speed on
 * a full-size random checkpoint (written by make-tiny's generator into a
 * temporary directory, or an existing one with --model). One session (the
 * weights uploaded once) runs the patched plan and then the baseline from the
 * same random prompt, each after an untimed warm-up pass: prefill tok/s,
 * decode tok/s and ms/token (every step end to end: the argmax read back
 * each token), whether the two greedy
 * sequences are identical, and for a graph session the decode-step profile
 * (attention / MoE / LM head / rest, zmlx_session_profile_decode) against
 * the bandwidth floor (bytes a step reads / bandwidth measured in this run).
 */
#include "cli_run.h"

#include "core/core.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: zmlx bench decode (--preset NAME | --model DIR) [options]\n"
            "  --preset NAME      qwen3-30b-a3b, lfm2-8b-a1b: a full-size random 4-bit gs64 checkpoint is\n"
            "                     written to a temporary directory (~17 / ~4.7 GB; $TMPDIR or /tmp) and\n"
            "                     removed after. glm-4.7-flash, gpt-oss-20b: not supported yet\n"
            "  --model DIR        an existing qwen3_moe or lfm2_moe checkpoint instead\n"
            "  --backend B        cuda | cpu | cpu-ref | auto (default auto)\n"
            "  --prompt-tokens P  random prompt length (default 512)\n"
            "  --tokens N         greedy tokens timed per plan (default 256)\n"
            "  --patch P          the patched plan (default exact); the baseline is none\n"
            "  --no-baseline      time the patched plan only\n"
            "  --reps R           profile replays (default 20)\n"
            "  --batch B          prompt tokens per prefill chunk (the session's max_batch,\n"
            "                     default 2048)\n"
            "  --ctx C            KV-cache capacity in positions (default: what the run needs,\n"
            "                     P + N + R + 2); a larger one times what a long generation sees\n"
            "  --threads N        CPU threads (default: all cores)\n"
            "  --json FILE        write a capsule\n");
}

typedef struct plan_result {
    zmlx_patch_plan plan;
    int graph;
    double prefill_s, decode_s;
    int32_t *tok;
    int64_t n;
} plan_result;

/* Prefill the prompt, then n greedy steps, timed end to end. An untimed
 * pass of the prompt and two steps comes first: it loads the plan's kernels
 * (CUDA loads modules at a kernel's first launch), captures its graph and
 * pages in the weights, costs that would otherwise fall on whichever plan
 * runs first (a 64-token fused prefill measured 1347 tok/s against the
 * unfused 1842 that way). */
static int time_plan(cli_run *r, const int32_t *prompt, int64_t np, int64_t n, plan_result *out) {
    char err[512] = "";
    zmlx_session *s = r->sess;
    zmlx_session_reset(s);
    int warm = zmlx_session_prefill(s, prompt, np, err, sizeof err) == ZMLX_OK;
    for (int i = 0; warm && i < 2; i++) warm = zmlx_session_step(s, zmlx_session_argmax(s), err, sizeof err) == ZMLX_OK;
    if (!warm) {
        fprintf(stderr, "zmlx bench decode: warm-up pass: %s\n", err);
        return 0;
    }
    zmlx_session_reset(s);
    out->graph = zmlx_session_uses_graph(s);
    double t0 = zc_now_sec();
    if (zmlx_session_prefill(s, prompt, np, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx bench decode: prefill: %s\n", err);
        return 0;
    }
    double t1 = zc_now_sec();
    for (int64_t i = 0; i < n; i++) {
        out->tok[i] = zmlx_session_argmax(s);
        if (zmlx_session_step(s, out->tok[i], err, sizeof err) != ZMLX_OK) {
            fprintf(stderr, "zmlx bench decode: step %lld: %s\n", (long long)i, err);
            return 0;
        }
        if (i % 64 == 63) fprintf(stderr, "\r  %s: %lld/%lld tokens", out->graph ? "graph" : "eager",
                                  (long long)i + 1, (long long)n);
    }
    fprintf(stderr, "\r%50s\r", "");
    out->prefill_s = t1 - t0;
    out->decode_s = zc_now_sec() - t1;
    out->n = n;
    return 1;
}

/* make-tiny writes a flat directory: its files, then the directory. */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(dir);
}

int bench_decode(int argc, char **argv) {
    const char *preset = NULL, *model = NULL, *json = NULL, *patch_s = "exact";
    zmlx_backend_kind bk = ZMLX_BACKEND_CPU;
    int bk_auto = 1, baseline = 1;
    long long np = 512, n = 256, reps = 20, threads = 0, ctx = 0, batch = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        int ok = 1;
        if (!strcmp(a, "--no-baseline")) {
            baseline = 0;
            continue;
        }
        if (!v) ok = 0;
        else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--patch")) patch_s = v;
        else if (!strcmp(a, "--backend")) ok = cli_parse_backend(v, &bk, &bk_auto);
        else if (!strcmp(a, "--prompt-tokens")) ok = cli_parse_int(v, &np) && np >= 1;
        else if (!strcmp(a, "--tokens")) ok = cli_parse_int(v, &n) && n >= 1;
        else if (!strcmp(a, "--reps")) ok = cli_parse_int(v, &reps) && reps >= 1;
        else if (!strcmp(a, "--ctx")) ok = cli_parse_int(v, &ctx) && ctx >= 1;
        else if (!strcmp(a, "--batch")) ok = cli_parse_int(v, &batch) && batch >= 1;
        else if (!strcmp(a, "--threads")) ok = cli_parse_int(v, &threads) && threads >= 0;
        else ok = 0;
        if (!ok) {
            fprintf(stderr, "zmlx bench decode: bad option '%s'%s%s\n", a, v ? " " : "", v ? v : "");
            usage(stderr);
            return 2;
        }
        i++;
    }
    const long long need = np + n + reps + 2; /* prompt, tokens, profile replays */
    if (ctx && ctx < need) {
        fprintf(stderr, "zmlx bench decode: --ctx %lld is below the %lld positions this run needs\n", ctx, need);
        return 2;
    }
    if (!preset == !model) {
        fprintf(stderr, "zmlx bench decode: give one of --preset or --model\n");
        usage(stderr);
        return 2;
    }
    zw_tiny_opts o;
    if (preset && !zw_tiny_preset(preset, &o)) {
        if (!strcmp(preset, "glm-4.7-flash") || !strcmp(preset, "gpt-oss-20b")) {
            fprintf(stderr, "zmlx bench decode: preset %s: not supported yet (its architecture has no "
                    "forward pass in zmlx yet; " ZW_TINY_PRESETS " have)\n", preset);
            return 2;
        }
        fprintf(stderr, "zmlx bench decode: unknown preset '%s'\n", preset);
        return 2;
    }
    char err[512] = "";
    zmlx_patch_plan plan = 0;
    if (zmlx_patch_parse(patch_s, &plan, NULL, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx bench decode: %s\n", err);
        return 2;
    }
    if (bk_auto) bk = zmlx_cuda_available() ? ZMLX_BACKEND_CUDA : ZMLX_BACKEND_CPU;

    char tmp[4096] = "";
    if (preset) {
        const char *td = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/zmlx-bench-decode-XXXXXX", td && *td ? td : "/tmp");
        if (!mkdtemp(tmp)) {
            fprintf(stderr, "zmlx bench decode: cannot create a directory under %s\n", td && *td ? td : "/tmp");
            return 1;
        }
        fprintf(stderr, "bench decode: writing a full-size %s checkpoint to %s ...\n", preset, tmp);
        double t0 = zc_now_sec();
        if (zw_make_tiny(tmp, &o, err, sizeof err) != ZMLX_OK) {
            fprintf(stderr, "zmlx bench decode: make-tiny: %s\n", err);
            remove_flat_dir(tmp);
            return 1;
        }
        fprintf(stderr, "bench decode: written in %.1f s\n", zc_now_sec() - t0);
        model = tmp;
    }
    zmlx_session_opts so;
    zmlx_session_opts_default(&so);
    so.max_ctx = ctx ? ctx : need;
    so.max_batch = batch;
    so.patch = plan;
    cli_run r;
    int rc = 1;
    plan_result res[2];
    memset(res, 0, sizeof res);
    int32_t *prompt = NULL;
    zmlx_decode_profile prof;
    memset(&prof, 0, sizeof prof);
    int have_prof = 0;
    double bw = 0;
    if (!cli_run_open(&r, "zmlx bench decode", model, bk, (int)threads, &so)) goto out_dir;
    if (zmlx_measure_bandwidth(r.ctx, 0, &bw) != ZMLX_OK) bw = 0;
    prompt = malloc((size_t)np * sizeof *prompt);
    for (int k = 0; k < 2; k++) res[k].tok = malloc((size_t)n * sizeof(int32_t));
    if (!prompt || !res[0].tok || !res[1].tok) goto out;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (long long i = 0; i < np; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        prompt[i] = (int32_t)((seed >> 33) % (uint64_t)r.info.vocab);
    }
    fprintf(stderr, "bench decode: %s, backend %s, prompt %lld, %lld tokens, bandwidth %.1f GB/s\n", model,
            cli_backend_name(r.backend), np, n, bw);
    const int nplans = baseline ? 2 : 1;
    for (int k = 0; k < nplans; k++) {
        res[k].plan = k ? ZMLX_PATCH_NONE : plan;
        zmlx_session_set_patch(r.sess, res[k].plan);
        if (!time_plan(&r, prompt, np, n, &res[k])) goto out;
        if (k == 0 && res[0].graph) {
            if (zmlx_session_profile_decode(r.sess, (int)reps, &prof, err, sizeof err) != ZMLX_OK) {
                fprintf(stderr, "zmlx bench decode: profile: %s\n", err);
                goto out;
            }
            have_prof = 1;
        }
    }
    int same = -1;
    if (baseline) {
        same = 0;
        while (same < n && res[0].tok[same] == res[1].tok[same]) same++;
    }
    rc = 0;

    char ps[128];
    printf("%s, backend %s, prompt %lld tokens (prefill chunks of %lld), %lld decoded, bandwidth %.1f GB/s\n",
           preset ? preset : model, cli_backend_name(r.backend), np, (long long)zmlx_session_max_batch(r.sess), n, bw);
    printf("%-40s %8s %12s %12s %10s\n", "plan", "graph", "prefill t/s", "decode t/s", "ms/token");
    for (int k = 0; k < nplans; k++)
        printf("%-40s %8s %12.1f %12.1f %10.3f\n", zmlx_patch_to_string(res[k].plan, ps, sizeof ps),
               res[k].graph ? "yes" : "no", (double)np / res[k].prefill_s, (double)n / res[k].decode_s,
               res[k].decode_s * 1e3 / (double)n);
    if (baseline)
        printf("greedy tokens identical: %lld/%lld%s\n", (long long)same, n, same == n ? "" : "  (MISMATCH)");
    const double floor_ms = bw > 0 ? prof.bytes / (bw * 1e6) : 0;
    if (have_prof) {
        printf("decode step at position %lld (graph replays, %lld reps): step %.1f us = attention %.1f + MoE %.1f "
               "+ LM head %.1f + rest %.1f\n", (long long)zmlx_session_pos(r.sess), reps, prof.step_us, prof.attn_us,
               prof.moe_us, prof.head_us, prof.rest_us);
        printf("bytes per step %.1f MB; floor %.3f ms/token (%.0f tok/s) at %.1f GB/s; step/floor %.2f\n",
               prof.bytes / 1e6, floor_ms, floor_ms > 0 ? 1e3 / floor_ms : 0, bw,
               floor_ms > 0 ? prof.step_us / 1e3 / floor_ms : 0);
    }
    if (baseline && same != n) rc = 1;

    if (json) {
        FILE *jf = fopen(json, "w");
        if (!jf) {
            fprintf(stderr, "zmlx bench decode: cannot write %s\n", json);
            rc = 1;
            goto out;
        }
        cli_capsule_head(jf, "decode", r.backend == ZMLX_BACKEND_CUDA);
        fprintf(jf, "  \"model\": ");
        cli_json_str(jf, preset ? preset : model);
        fprintf(jf, ",\n  \"backend\": \"%s\",\n  \"prompt_tokens\": %lld,\n  \"tokens\": %lld,\n"
                "  \"kv_capacity\": %lld,\n  \"prefill_chunk\": %lld,\n  \"bandwidth_gbps\": %.3f,\n  \"plans\": [\n",
                cli_backend_name(r.backend), np, n, (long long)so.max_ctx, (long long)zmlx_session_max_batch(r.sess), bw);
        for (int k = 0; k < nplans; k++)
            fprintf(jf, "    {\"patch\": \"%s\", \"graph\": %s, \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, "
                    "\"ms_per_token\": %.4f}%s\n", zmlx_patch_to_string(res[k].plan, ps, sizeof ps),
                    res[k].graph ? "true" : "false", (double)np / res[k].prefill_s, (double)n / res[k].decode_s,
                    res[k].decode_s * 1e3 / (double)n, k + 1 < nplans ? "," : "");
        fprintf(jf, "  ],\n  \"tokens_identical\": %lld", (long long)same);
        if (have_prof)
            fprintf(jf, ",\n  \"profile\": {\"position\": %lld, \"reps\": %lld, \"step_us\": %.2f, \"attention_us\": "
                    "%.2f, \"moe_us\": %.2f, \"lm_head_us\": %.2f, \"rest_us\": %.2f, \"bytes\": %.0f, "
                    "\"floor_ms\": %.4f, \"step_over_floor\": %.3f}",
                    (long long)zmlx_session_pos(r.sess), reps, prof.step_us, prof.attn_us, prof.moe_us, prof.head_us,
                    prof.rest_us, prof.bytes, floor_ms, floor_ms > 0 ? prof.step_us / 1e3 / floor_ms : 0);
        fprintf(jf, "\n}\n");
        fclose(jf);
    }
out:
    free(prompt);
    free(res[0].tok);
    free(res[1].tok);
    cli_run_close(&r);
out_dir:
    if (tmp[0]) remove_flat_dir(tmp);
    return rc;
}
