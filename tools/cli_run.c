/*
 * cli_run.c — helpers of the model-running subcommands (see cli_run.h).
 */
#include "cli_run.h"

#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t cli_parse_ids(const char *s, int32_t **out) {
    *out = NULL;
    if (!s) return -1;
    size_t cap = strlen(s) / 2 + 1, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && !strchr(" ,\t\n", *end)) || n == cap) {
            free(ids);
            return -1;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    if (!n) {
        free(ids);
        return -1;
    }
    *out = ids;
    return (int64_t)n;
}

int64_t cli_default_prompt(int32_t **out) {
    static const char text[] = "Explain the key differences between TCP and UDP protocols, "
                               "including their use cases.";
    size_t n = sizeof text - 1;
    *out = malloc(n * sizeof **out);
    if (!*out) return -1;
    for (size_t i = 0; i < n; i++) (*out)[i] = text[i] == ' ' ? 220 : (int32_t)text[i] - 33;
    return (int64_t)n;
}

int cli_parse_backend(const char *s, zmlx_backend_kind *out, int *is_auto) {
    *is_auto = 0;
    if (!strcmp(s, "cpu")) *out = ZMLX_BACKEND_CPU;
    else if (!strcmp(s, "cpu-ref")) *out = ZMLX_BACKEND_CPU_REF;
    else if (!strcmp(s, "cuda")) *out = ZMLX_BACKEND_CUDA;
    else if (!strcmp(s, "auto")) {
        *is_auto = 1;
        *out = zmlx_cuda_available() ? ZMLX_BACKEND_CUDA : ZMLX_BACKEND_CPU;
    } else return 0;
    return 1;
}

const char *cli_backend_name(zmlx_backend_kind k) {
    return k == ZMLX_BACKEND_CUDA ? "cuda" : k == ZMLX_BACKEND_CPU_REF ? "cpu-ref" : "cpu";
}

int cli_run_open(cli_run *r, const char *who, const char *dir, zmlx_backend_kind backend, int threads,
                 const zmlx_session_opts *opts) {
    memset(r, 0, sizeof *r);
    r->backend = backend;
    char err[512] = "";
    zmlx_status s = zmlx_model_open(dir, NULL, &r->model, err, sizeof err);
    if (s != ZMLX_OK) {
        fprintf(stderr, "%s: cannot open model %s: %s\n", who, dir, err);
        return 0;
    }
    zmlx_model_get_info(r->model, &r->info);
    zmlx_ctx_opts co;
    zmlx_ctx_opts_default(&co);
    co.backend = backend;
    co.n_threads = threads;
    if ((s = zmlx_ctx_create(&co, &r->ctx, err, sizeof err)) != ZMLX_OK) {
        fprintf(stderr, "%s: cannot create the %s backend: %s\n", who, cli_backend_name(backend), err);
        cli_run_close(r);
        return 0;
    }
    r->threads = threads ? threads : zc_online_cores();
    if ((s = zmlx_session_new(r->model, r->ctx, opts, &r->sess, err, sizeof err)) != ZMLX_OK) {
        fprintf(stderr, "%s: cannot start a session: %s\n", who, err);
        cli_run_close(r);
        return 0;
    }
    return 1;
}

void cli_run_close(cli_run *r) {
    zmlx_session_free(r->sess);
    zmlx_ctx_free(r->ctx);
    zmlx_model_free(r->model);
    memset(r, 0, sizeof *r);
}

int cli_is_eos(const zmlx_model_info *info, int32_t id) {
    for (int i = 0; i < info->n_eos; i++)
        if (info->eos[i] == id) return 1;
    return 0;
}

void cli_peak_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return;
    fputs("5", f); /* 5: reset the peak RSS to the current RSS */
    fclose(f);
}

double cli_peak_rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtod(line + 6, NULL);
    fclose(f);
    return kb * 1024.0;
}

static void read_trimmed(const char *path, const char *key, char *out, size_t len) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, key);
        if (!p) continue;
        p += strlen(key);
        while (*p == ' ' || *p == '\t' || *p == ':') p++;
        p[strcspn(p, "\n")] = 0;
        snprintf(out, len, "%s", p);
        break;
    }
    fclose(f);
}

void cli_gpu_info(char *gpu, size_t glen, char *driver, size_t dlen) {
    snprintf(gpu, glen, "unknown");
    snprintf(driver, dlen, "unknown");
    DIR *d = opendir("/proc/driver/nvidia/gpus");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') {
                char p[512];
                snprintf(p, sizeof p, "/proc/driver/nvidia/gpus/%s/information", e->d_name);
                read_trimmed(p, "Model", gpu, glen);
                break;
            }
        closedir(d);
    }
    /* "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ...":
       the first word made of digits and dots (with at least one dot) */
    char line[512] = "";
    read_trimmed("/proc/driver/nvidia/version", "NVRM version", line, sizeof line);
    for (char *w = strtok(line, " \t"); w; w = strtok(NULL, " \t"))
        if (strspn(w, "0123456789.") == strlen(w) && strchr(w, '.') && w[0] != '.') {
            snprintf(driver, dlen, "%s", w);
            break;
        }
}

void cli_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void cli_capsule_head(FILE *f, const char *kind, int on_gpu) {
    zc_hwinfo hw;
    zc_hwinfo_get(&hw);
    char gpu[128] = "none", drv[64] = "none", date[32];
    if (on_gpu) cli_gpu_info(gpu, sizeof gpu, drv, sizeof drv);
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(f, "{\n  \"kind\": \"%s\",\n  \"zmlx_commit\": \"%s\",\n  \"date\": \"%s\",\n", kind, zc_git_commit(),
            date);
    fprintf(f, "  \"hardware\": {\"cpu\": ");
    cli_json_str(f, hw.cpu);
    fprintf(f, ", \"cpu_flags\": \"%s\", \"cores\": %d, \"gpu\": ", hw.cpu_flags, hw.cores);
    cli_json_str(f, gpu);
    fprintf(f, ", \"driver\": ");
    cli_json_str(f, drv);
    fprintf(f, ", \"compiler\": ");
    cli_json_str(f, hw.compiler);
    fprintf(f, "},\n");
}
