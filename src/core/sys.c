/*
 * sys.c — aligned allocation, the monotonic clock, hardware and build facts
 * for benchmark capsules.
 */
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "zmlx_git_commit.h" /* ZMLX_GIT_COMMIT, generated at build time */

void *zc_alloc_aligned(size_t size, size_t alignment) {
    if (size == 0 || alignment < sizeof(void *) || (alignment & (alignment - 1))) return NULL;
    /* round up so that aligned_alloc's size rule (multiple of alignment) holds */
    size_t rounded = (size + alignment - 1) & ~(alignment - 1);
    if (rounded < size) return NULL;
    return aligned_alloc(alignment, rounded);
}

void zc_free_aligned(void *p) { free(p); }

int zc_mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

double zc_now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *zc_git_commit(void) { return ZMLX_GIT_COMMIT; }

void zc_hwinfo_get(zc_hwinfo *h) {
    memset(h, 0, sizeof *h);
    snprintf(h->cpu, sizeof h->cpu, "unknown");
    h->cores = zc_online_cores();
#if defined(__clang__)
    snprintf(h->compiler, sizeof h->compiler, "clang %s", __clang_version__);
#elif defined(__GNUC__)
    snprintf(h->compiler, sizeof h->compiler, "gcc %s", __VERSION__);
#endif
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[4096];
    int have_name = 0, have_flags = 0;
    while (fgets(line, sizeof line, f) && !(have_name && have_flags)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *val = colon + 1;
        while (*val == ' ' || *val == '\t') val++;
        val[strcspn(val, "\n")] = 0;
        if (!have_name && strncmp(line, "model name", 10) == 0) {
            snprintf(h->cpu, sizeof h->cpu, "%s", val);
            have_name = 1;
        } else if (!have_flags && strncmp(line, "flags", 5) == 0) {
            static const char *const wanted[] = {"avx2", "fma", "f16c", "avx512f", "avx512bw",
                                                 "avx512_vnni", "avx512_bf16", "avx_vnni"};
            size_t used = 0;
            for (size_t i = 0; i < sizeof wanted / sizeof *wanted; i++) {
                char pat[32];
                snprintf(pat, sizeof pat, " %s ", wanted[i]);
                char padded[4100];
                snprintf(padded, sizeof padded, " %s ", val);
                if (strstr(padded, pat) && used + strlen(wanted[i]) + 2 < sizeof h->cpu_flags)
                    used += (size_t)snprintf(h->cpu_flags + used, sizeof h->cpu_flags - used, "%s%s",
                                             used ? " " : "", wanted[i]);
            }
            have_flags = 1;
        }
    }
    fclose(f);
}
