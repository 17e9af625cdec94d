/*
 * cli_run.h — what the model-running subcommands (validate, generate) share:
 * option parsing for token-id lists and backends, opening model + context +
 * session, peak-memory readings and the GPU description for capsules
 * (cli_run.c).
 */
#ifndef ZMLX_CLI_RUN_H
#define ZMLX_CLI_RUN_H

#include "cli.h"
#include "model/runtime.h"

#include <stdio.h>

/* Parse token ids separated by spaces and/or commas ("1 2 3", "1,2,3") into
 * a malloc'd array; returns the count (>= 1) or -1 on a malformed list. */
int64_t cli_parse_ids(const char *s, int32_t **out);

/* The default prompt: ZMLX validate's prompt sentence spelled byte by byte in
 * the byte-level BPE ids of Qwen tokenizers (printable byte b -> b-33, space
 * -> 220); every id is < 256. Returns the count; *out is malloc'd. */
int64_t cli_default_prompt(int32_t **out);

/* "cpu" | "cpu-ref" | "cuda" | "auto" (CUDA when available, else CPU). 1 on success. */
int cli_parse_backend(const char *s, zmlx_backend_kind *out, int *is_auto);
const char *cli_backend_name(zmlx_backend_kind k);

/* Everything a run needs, opened by cli_run_open and closed by cli_run_close. */
typedef struct cli_run {
    zmlx_model *model;
    zmlx_ctx *ctx;
    zmlx_session *sess;
    zmlx_model_info info;
    zmlx_backend_kind backend;
    int threads;
} cli_run;

/* Open dir, create the context and a session (opts may be NULL). Prints the
 * reason to stderr (prefixed with `who`) and returns 0 on failure. */
int cli_run_open(cli_run *r, const char *who, const char *dir, zmlx_backend_kind backend, int threads,
                 const zmlx_session_opts *opts);
void cli_run_close(cli_run *r);

/* 1 if id is one of the model's EOS ids. */
int cli_is_eos(const zmlx_model_info *info, int32_t id);

/* Peak memory in bytes since the last cli_peak_reset: host RSS high-water mark
 * (VmHWM); the reset clears it through /proc/self/clear_refs where allowed. */
void cli_peak_reset(void);
double cli_peak_rss_bytes(void);

/* GPU model and driver version from /proc/driver/nvidia ("unknown" if absent). */
void cli_gpu_info(char *gpu, size_t glen, char *driver, size_t dlen);

/* `zmlx bench decode` (cmd_bench_decode.c), called by `zmlx bench`. */
int bench_decode(int argc, char **argv);

/* Open a capsule object: kind, commit, date and the hardware (the GPU and
 * driver when on_gpu), each line ending in a comma. */
void cli_capsule_head(FILE *f, const char *kind, int on_gpu);

/* Write s as a JSON string literal (quotes and escapes). */
void cli_json_str(FILE *f, const char *s);

#endif
