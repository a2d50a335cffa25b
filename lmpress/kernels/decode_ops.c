/* Float32 operations of one decoding step (see decode_ops.h). They follow the
 * arithmetic of transformers' Llama modules (RMSNorm in float32, rotate-half
 * rotary embedding, softmax attention with grouped KV heads, SiLU-gated MLP), so a
 * step agrees with the model's own forward to float32 rounding. */
#include "decode_ops.h"

#include <math.h>
#include <stdlib.h>

/* out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w; x, out [rows, n], w [n]. */
void lmp_rmsnorm(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        float ss = 0.f;
        for (int64_t i = 0; i < n; i++)
            ss += xr[i] * xr[i];
        const float inv = 1.f / sqrtf(ss / (float)n + eps);
        for (int64_t i = 0; i < n; i++)
            o[i] = w[i] * (xr[i] * inv);
    }
}

/* In place on x [heads, hd]: x*cos + rotate_half(x)*sin, cos/sin [hd] for one position. */
void lmp_rope(float *x, const float *cos, const float *sin, int64_t heads, int64_t hd) {
    const int64_t half = hd / 2;
    for (int64_t h = 0; h < heads; h++) {
        float *v = x + h * hd;
        for (int64_t i = 0; i < half; i++) {
            const float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = b * cos[i + half] + a * sin[i + half];
        }
    }
}

/* One query position: q [n_head, hd]; k, v [n_kv, t_stride, hd] of which the first t
 * positions are filled; out [n_head, hd]. Query head h reads KV head h / (n_head/n_kv). */
void lmp_attend(const float *q, const float *k, const float *v, float *out, int64_t n_head,
                int64_t n_kv, int64_t hd, int64_t t, int64_t t_stride, float scale) {
    float *p = (float *)malloc((size_t)t * sizeof(float));
    if (!p)
        return;
    const int64_t group = n_head / n_kv;
    for (int64_t h = 0; h < n_head; h++) {
        const float *qh = q + h * hd;
        const float *kh = k + (h / group) * t_stride * hd;
        const float *vh = v + (h / group) * t_stride * hd;
        float mx = -INFINITY;
        for (int64_t j = 0; j < t; j++) {
            const float *kj = kh + j * hd;
            float s = 0.f;
            for (int64_t i = 0; i < hd; i++)
                s += qh[i] * kj[i];
            p[j] = s * scale;
            if (p[j] > mx)
                mx = p[j];
        }
        float sum = 0.f;
        for (int64_t j = 0; j < t; j++) {
            p[j] = expf(p[j] - mx);
            sum += p[j];
        }
        const float inv = 1.f / sum;
        float *o = out + h * hd;
        for (int64_t i = 0; i < hd; i++)
            o[i] = 0.f;
        for (int64_t j = 0; j < t; j++) {
            const float w = p[j] * inv;
            const float *vj = vh + j * hd;
            for (int64_t i = 0; i < hd; i++)
                o[i] += w * vj[i];
        }
    }
    free(p);
}

/* gu [2n] = [gate, up]; out [n] = silu(gate) * up. */
void lmp_silu_mul(const float *gu, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gu[i];
        out[i] = g / (1.f + expf(-g)) * gu[n + i];
    }
}
