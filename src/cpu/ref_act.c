/*
 * ref_act.c — the GLU activations in scalar f32 (zr_act, zr_sigmoid) and the
 * unfused activation kernel zr_glu_act. Both reference paths (fused and
 * unfused) call zr_act, so they round identically; the optimised CPU kernels
 * share zcpu_act_f32 (cpu_elementwise.c, a vector form) the same way.
 * Each operation below is one f32 operation in the written order (the build
 * uses -ffp-contract=off, so nothing is fused into an FMA).
 */
#include "cpu/ref.h"

/* Stable logistic: exp is only ever taken of a non-positive argument, so it
 * cannot overflow, and for x < 0 the form e/(1+e) keeps small results exact
 * instead of computing 1 - (something close to 1). */
float zr_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

float zr_act(zmlx_act act, float g, float u) {
    switch (act) {
    case ZMLX_ACT_GEGLU: {
        /* gelu with the tanh approximation: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) */
        float g3 = g * g * g;
        float t = tanhf(0.7978845608f * (g + 0.044715f * g3));
        return 0.5f * g * (1.0f + t) * u;
    }
    case ZMLX_ACT_SWIGLU_OAI: {
        /* GPT-OSS: gate clamped above at 7, up clamped to [-7, 7] (NaN passes through) */
        if (g > 7.0f) g = 7.0f;
        if (u > 7.0f) u = 7.0f;
        if (u < -7.0f) u = -7.0f;
        return g * zr_sigmoid(1.702f * g) * (u + 1.0f);
    }
    default: /* ZMLX_ACT_SWIGLU: silu(g) * u */
        return g * zr_sigmoid(g) * u;
    }
}

/* h[i] = round_T(act(g[i], u[i])); g, u, h are [n] in T. */
zmlx_status zr_glu_act(zmlx_ctx *ctx, zmlx_dtype T, zmlx_act act, const void *g, const void *u,
                       int64_t n, void *h) {
    (void)ctx;
    for (int64_t i = 0; i < n; i++)
        zc_store(T, h, i, zr_act(act, zc_load(T, g, i), zc_load(T, u, i)));
    return ZMLX_OK;
}
