/*
 * cmd_generate.c — `zmlx generate`: greedy decoding. The prompt is text
 * (encoded with MODEL/tokenizer.json, optionally through the model's chat
 * template) or token ids; text prompts stream the generated text through the
 * tokenizer's streaming decoder (an unfinished UTF-8 character is held back
 * until its bytes are complete), id prompts print the generated ids.
 * Generation stops at max tokens or at an EOS id (the model's
 * config/generation_config ids plus the tokenizer's); the EOS token itself is
 * not printed. Speeds go to stderr at the end.
 */
#include "cli_run.h"

#include "core/core.h"
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

CLI_COMMAND(generate, "greedy generation from a text or token-id prompt, streamed")

static void usage(FILE *f) {
    fprintf(f,
            "usage: zmlx generate MODEL (--prompt TEXT | --prompt-ids \"1 2 3\") [--chat] [--system S]\n"
            "                      [--no-think] [--max-tokens N] [--patch P] [--backend cpu|cpu-ref|cuda|auto]\n"
            "                      [--threads N] [--ignore-eos] [--print-prompt]\n"
            "  --prompt TEXT    text prompt, encoded with MODEL/tokenizer.json; the output is text\n"
            "  --prompt-ids S   prompt token ids, separated by spaces or commas; the output is ids\n"
            "                   (neither: a fixed byte-level prompt)\n"
            "  --chat           wrap the prompt in the model's chat template (a user turn)\n"
            "  --system S       with --chat: a system message first\n"
            "  --no-think       with --chat: disable thinking (Qwen3: an empty think block)\n"
            "  --print-prompt   print the prompt text exactly as it is encoded, then exit\n"
            "  --max-tokens N   tokens to generate (default 100); stops at EOS unless --ignore-eos\n"
            "  --patch P        none | exact (default) | all | a comma list of swiglu, combine,\n"
            "                   add_rms_norm, router, attention, lm_head\n"
            "  --backend B      auto (default: cuda if a GPU is usable, else cpu)\n");
}

typedef struct gen_args {
    const char *dir, *patch, *ids, *prompt, *system;
    long long max_tokens, threads;
    int ignore_eos, chat, no_think, print_prompt;
    zmlx_backend_kind backend;
} gen_args;

/* 0 on success, else prints why and returns 2. */
static int parse_args(int argc, char **argv, gen_args *g) {
    memset(g, 0, sizeof *g);
    g->patch = "exact";
    g->max_tokens = 100;
    int backend_auto = 1;
    cli_parse_backend("auto", &g->backend, &backend_auto);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1, takes = 0;
        struct { const char *name; int *dst; } flags[] = {
            {"--ignore-eos", &g->ignore_eos}, {"--chat", &g->chat}, {"--no-think", &g->no_think},
            {"--print-prompt", &g->print_prompt},
        };
        int is_flag = 0;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
            if (!strcmp(a, flags[k].name)) *flags[k].dst = is_flag = 1;
        if (is_flag) continue;
        if (a[0] != '-') {
            ok = !g->dir;
            g->dir = a;
        } else if (!v) {
            ok = 0;
        } else {
            takes = 1;
            if (!strcmp(a, "--prompt-ids")) g->ids = v;
            else if (!strcmp(a, "--prompt")) g->prompt = v;
            else if (!strcmp(a, "--system")) g->system = v;
            else if (!strcmp(a, "--max-tokens"))
                ok = cli_parse_int(v, &g->max_tokens) && g->max_tokens >= 1 && g->max_tokens <= 100000000;
            else if (!strcmp(a, "--patch")) g->patch = v;
            else if (!strcmp(a, "--backend")) ok = cli_parse_backend(v, &g->backend, &backend_auto);
            else if (!strcmp(a, "--threads")) ok = cli_parse_int(v, &g->threads) && g->threads >= 0 && g->threads <= 1024;
            else ok = 0;
        }
        if (!ok) {
            fprintf(stderr, "zmlx generate: bad option or value '%s%s%s'\n", a, takes ? " " : "", takes ? v : "");
            usage(stderr);
            return 2;
        }
        i += takes;
    }
    const char *why = !g->dir                                 ? "no MODEL directory given"
                      : g->prompt && g->ids                   ? "--prompt and --prompt-ids exclude each other"
                      : !g->prompt && (g->chat || g->print_prompt) ? "--chat and --print-prompt need --prompt"
                      : !g->chat && (g->system || g->no_think) ? "--system and --no-think need --chat"
                                                                : NULL;
    if (why) {
        fprintf(stderr, "zmlx generate: %s\n", why);
        usage(stderr);
        return 2;
    }
    return 0;
}

/* The prompt text as it is encoded: the chat rendering with --chat, else the
 * text itself. 0 on success, else prints why and returns 2. */
static int render_prompt(const gen_args *g, const zmlx_tokenizer *tok, zmlx_buf *out) {
    if (!g->chat) {
        if (zt_buf_appendz(out, g->prompt) == ZMLX_OK) return 0;
        fprintf(stderr, "zmlx generate: out of memory\n");
        return 2;
    }
    zmlx_chat_msg msgs[2];
    size_t n = 0;
    if (g->system) msgs[n++] = (zmlx_chat_msg){"system", g->system, NULL};
    msgs[n++] = (zmlx_chat_msg){"user", g->prompt, NULL};
    zmlx_chat_opts co = {.add_generation_prompt = 1, .enable_thinking = !g->no_think, .reasoning_effort = NULL};
    zmlx_status s = zmlx_chat_render(tok, msgs, n, &co, out);
    if (s == ZMLX_ERR_UNSUPPORTED)
        fprintf(stderr, "zmlx generate: --chat: %s has no chat template zmlx knows\n", g->dir);
    else if (s != ZMLX_OK)
        fprintf(stderr, "zmlx generate: --chat: rendering the template failed (%s)\n", zmlx_status_str(s));
    return s == ZMLX_OK ? 0 : 2;
}

/* The ids to stop at: the model's EOS ids, plus the tokenizer's when there is one. */
typedef struct stop_set { int n; int32_t ids[2 * ZMLX_MAX_EOS]; } stop_set;

static void stop_add(stop_set *st, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) {
        int dup = 0;
        for (int k = 0; k < st->n; k++) dup |= st->ids[k] == ids[i];
        if (!dup && st->n < (int)(sizeof st->ids / sizeof st->ids[0])) st->ids[st->n++] = ids[i];
    }
}
static int stop_has(const stop_set *st, int32_t id) {
    for (int k = 0; k < st->n; k++)
        if (st->ids[k] == id) return 1;
    return 0;
}

/* Open MODEL's tokenizer. required: a text prompt needs it (failure → message,
 * NULL); otherwise it only adds EOS ids and is skipped when absent. */
static zmlx_tokenizer *open_tokenizer(const char *dir, int required) {
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (required) fprintf(stderr, "zmlx generate: --prompt needs a tokenizer, but %s cannot be read\n", path);
        return NULL;
    }
    fclose(f);
    zmlx_tokenizer *tok = NULL;
    zmlx_status s = zmlx_tokenizer_open(dir, &tok, err, sizeof err);
    if (s != ZMLX_OK)
        fprintf(stderr, "zmlx generate: %s tokenizer %s: %s (%s)\n", required ? "cannot open the" : "ignoring the",
                path, err, zmlx_status_str(s));
    return tok;
}

/* Write the text that the streaming decoder completed for id (ids the
 * tokenizer has no token for, e.g. the padding rows of a model's vocab, print
 * nothing; the first one is reported). */
static void emit_text(zmlx_tok_stream *ts, int32_t id, int *warned) {
    zmlx_buf b = {0};
    zmlx_status s = id < 0 ? zmlx_tok_stream_flush(ts, &b) : zmlx_tok_stream_put(ts, id, &b);
    if (s == ZMLX_ERR_RANGE && !*warned) {
        fprintf(stderr, "\nzmlx generate: token %d has no text in the tokenizer (not printed)\n", (int)id);
        *warned = 1;
    }
    if (b.len) fwrite(b.data, 1, b.len, stdout);
    fflush(stdout);
    zmlx_buf_free(&b);
}

int cmd_generate(int argc, char **argv) {
    gen_args g;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    if (parse_args(argc, argv, &g)) return 2;
    char err[512];
    zmlx_session_opts so;
    zmlx_session_opts_default(&so);
    if (zmlx_patch_parse(g.patch, &so.patch, NULL, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx generate: %s\n", err);
        return 2;
    }

    /* the prompt ids */
    int rc = 2;
    zmlx_tokenizer *tok = open_tokenizer(g.dir, g.prompt != NULL);
    zmlx_tok_stream *ts = NULL;
    zmlx_ids prompt = {0};
    zmlx_buf text = {0};
    cli_run r = {0};
    if (g.prompt) {
        if (!tok || render_prompt(&g, tok, &text)) goto done;
        if (g.print_prompt) {
            fwrite(text.data, 1, text.len, stdout);
            rc = 0;
            goto done;
        }
        /* a chat rendering carries its own special tokens; plain text gets what
           the tokenizer adds by default (add_special_tokens=True) */
        zmlx_status s = zmlx_tokenizer_encode(tok, text.data ? text.data : "", text.len,
                                              g.chat ? 0 : ZMLX_TOK_ADD_SPECIAL, &prompt);
        if (s == ZMLX_OK) s = zmlx_tok_stream_new(tok, 0, &ts);
        if (s != ZMLX_OK || prompt.n == 0) {
            fprintf(stderr, "zmlx generate: %s\n", s != ZMLX_OK ? zmlx_status_str(s) : "the prompt encodes to no tokens");
            rc = s == ZMLX_OK ? 2 : 1;
            goto done;
        }
    } else {
        int32_t *ids = NULL;
        int64_t np = g.ids ? cli_parse_ids(g.ids, &ids) : cli_default_prompt(&ids);
        if (np < 1) {
            fprintf(stderr, "zmlx generate: bad --prompt-ids '%s' (token ids separated by spaces or commas)\n",
                    g.ids ? g.ids : "");
            goto done;
        }
        prompt.ids = ids;
        prompt.n = prompt.cap = (size_t)np;
    }

    so.max_ctx = (int64_t)prompt.n + g.max_tokens;
    rc = 1;
    if (!cli_run_open(&r, "zmlx generate", g.dir, g.backend, (int)g.threads, &so)) goto done;
    stop_set stops = {0};
    stop_add(&stops, r.info.eos, r.info.n_eos);
    if (tok) {
        zmlx_tok_info ti;
        zmlx_tokenizer_info(tok, &ti);
        stop_add(&stops, ti.eos, ti.n_eos);
    }

    int64_t n = 0, printed = 0;
    int at_eos = 0, warned = 0, failed = 0;
    double t0 = zc_now_sec(), t1;
    if (zmlx_session_prefill(r.sess, prompt.ids, (int64_t)prompt.n, err, sizeof err) != ZMLX_OK) {
        fprintf(stderr, "zmlx generate: prefill: %s\n", err);
        failed = 1;
    }
    t1 = zc_now_sec();
    while (!failed) {
        int32_t t = zmlx_session_argmax(r.sess);
        n++;
        if (!g.ignore_eos && stop_has(&stops, t)) {
            at_eos = 1;
            break;
        }
        if (ts) emit_text(ts, t, &warned);
        else {
            printf("%s%d", printed ? " " : "", (int)t);
            fflush(stdout);
        }
        printed++;
        if (n == g.max_tokens) break;
        if (zmlx_session_step(r.sess, t, err, sizeof err) != ZMLX_OK) {
            fprintf(stderr, "\nzmlx generate: step %lld: %s\n", (long long)n, err);
            failed = 1;
        }
    }
    double t2 = zc_now_sec();
    if (ts) emit_text(ts, -1, &warned);
    printf("\n");
    fflush(stdout);
    if (!failed) {
        fprintf(stderr,
                "generate: %s, prompt %zu tokens at %.1f tok/s, %lld generated at %.1f tok/s, stop: %s\n",
                cli_backend_name(g.backend), prompt.n, (double)prompt.n / (t1 - t0), (long long)n,
                n > 1 ? (double)(n - 1) / (t2 - t1) : 0.0, at_eos ? "eos" : "max-tokens");
        rc = 0;
    }
done:
    cli_run_close(&r);
    zmlx_tok_stream_free(ts);
    zmlx_tokenizer_free(tok);
    zmlx_ids_free(&prompt);
    zmlx_buf_free(&text);
    return rc;
}
