/* Float32 operations of one decoding step (see decode_ops.h). They follow the
 * arithmetic of transformers' Llama modules (RMSNorm in float32, rotate-half
 * rotary embedding, softmax attention with grouped KV heads, SiLU-gated MLP), so a
 * step agrees with the model's own forward to float32 rounding. */
#include "decode_ops.h"
#include "simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
static void attend_scalar(const float *q, const float *k, const float *v, float *out,
                          int64_t n_head, int64_t n_kv, int64_t hd, int64_t t, int64_t t_stride,
                          float scale, float *p) {
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
}

static void silu_mul_scalar(const float *gu, float *out, int64_t i, int64_t n) {
    for (; i < n; i++) {
        const float g = gu[i];
        out[i] = g / (1.f + expf(-g)) * gu[n + i];
    }
}

/* ---------------------------------------------------------------- AVX2 */
/* The attention dot products and the exponentials of softmax and SiLU, 8 lanes at a
 * time: as scalar C (a serial sum per key, expf per element) they cost more than a
 * block's four matrix products at a few hundred positions. Sums are reassociated,
 * so results differ from the scalar path by float32 rounding only. */
static int vector_allowed = 1;

void lmp_decode_set_vector(int on) { vector_allowed = on; }

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define V8 __attribute__((target("avx2,fma")))
#define V8_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

static int use_avx2(void) {
    static int cached = -1;
    if (!vector_allowed)
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

/* e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln(2) / 2 (ln 2 split in two parts
 * so that r is exact), e^r by its Taylor polynomial of degree 7 (truncation < 6e-9
 * relative); x is clamped to where 2^n is a normal float. */
V8_INLINE __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 e = _mm256_set1_ps(1.f / 5040.f);
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 720.f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 120.f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 24.f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f / 6.f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(0.5f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f));
    e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(1.f));
    const __m256i pow2 =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(e, _mm256_castsi256_ps(pow2));
}

V8 static void attend_avx2(const float *q, const float *k, const float *v, float *out,
                           int64_t n_head, int64_t n_kv, int64_t hd, int64_t t, int64_t t_stride,
                           float scale, float *p) {
    const int64_t group = n_head / n_kv;
    for (int64_t h = 0; h < n_head; h++) {
        const float *qh = q + h * hd;
        const float *kh = k + (h / group) * t_stride * hd;
        const float *vh = v + (h / group) * t_stride * hd;
        __m256 mx8 = _mm256_set1_ps(-INFINITY);
        int64_t j = 0;
        if (hd % 8 == 0)
            for (; j + 8 <= t; j += 8) { /* eight keys at once: one load of q per eight */
                __m256 a[8];
                for (int r = 0; r < 8; r++)
                    a[r] = _mm256_setzero_ps();
                for (int64_t i = 0; i < hd; i += 8) {
                    const __m256 qv = _mm256_loadu_ps(qh + i);
                    for (int r = 0; r < 8; r++)
                        a[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kh + (j + r) * hd + i), a[r]);
                }
                const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
                const __m256 w = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
                const __m256 sc = _mm256_mul_ps(_mm256_add_ps(_mm256_permute2f128_ps(u, w, 0x20),
                                                              _mm256_permute2f128_ps(u, w, 0x31)),
                                                _mm256_set1_ps(scale));
                _mm256_storeu_ps(p + j, sc);
                mx8 = _mm256_max_ps(mx8, sc);
            }
        float lanes[8], m = -INFINITY;
        _mm256_storeu_ps(lanes, mx8);
        for (int r = 0; r < 8; r++)
            m = fmaxf(m, lanes[r]);
        for (; j < t; j++) {
            const float *kj = kh + j * hd;
            float s = 0.f;
            for (int64_t i = 0; i < hd; i++)
                s += qh[i] * kj[i];
            p[j] = s * scale;
            m = fmaxf(m, p[j]);
        }
        const __m256 mx = _mm256_set1_ps(m);
        __m256 sum = _mm256_setzero_ps();
        float tail = 0.f;
        for (j = 0; j + 8 <= t; j += 8) {
            const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p + j), mx));
            _mm256_storeu_ps(p + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        for (; j < t; j++) {
            p[j] = expf(p[j] - m);
            tail += p[j];
        }
        const float inv = 1.f / (lmp_hsum256(sum) + tail);
        float *o = out + h * hd;
        const __m256 vinv = _mm256_set1_ps(inv);
        int64_t i = 0;
        for (; i + 32 <= hd; i += 32) { /* four independent chains over the positions */
            __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
            for (j = 0; j < t; j++) {
                const __m256 pj = _mm256_set1_ps(p[j]);
                const float *vj = vh + j * hd + i;
                c0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), c0);
                c1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), c1);
                c2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), c2);
                c3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), c3);
            }
            _mm256_storeu_ps(o + i, _mm256_mul_ps(c0, vinv));
            _mm256_storeu_ps(o + i + 8, _mm256_mul_ps(c1, vinv));
            _mm256_storeu_ps(o + i + 16, _mm256_mul_ps(c2, vinv));
            _mm256_storeu_ps(o + i + 24, _mm256_mul_ps(c3, vinv));
        }
        for (; i + 8 <= hd; i += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (j = 0; j < t; j++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(vh + j * hd + i), acc);
            _mm256_storeu_ps(o + i, _mm256_mul_ps(acc, vinv));
        }
        for (; i < hd; i++) {
            float acc = 0.f;
            for (j = 0; j < t; j++)
                acc += p[j] * vh[j * hd + i];
            o[i] = acc * inv;
        }
    }
}

V8 static int64_t silu_mul_avx2(const float *gu, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gu + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(gu + n + i)));
    }
    return i;
}
#else
static int use_avx2(void) { return 0; }
#endif

int lmp_attend(const float *q, const float *k, const float *v, float *out, int64_t n_head,
               int64_t n_kv, int64_t hd, int64_t t, int64_t t_stride, float scale) {
    float *p = (float *)malloc((size_t)(t + 8) * sizeof(float));
    if (!p)
        return -1;
#if defined(__x86_64__) || defined(__i386__)
    if (use_avx2())
        attend_avx2(q, k, v, out, n_head, n_kv, hd, t, t_stride, scale, p);
    else
#endif
        attend_scalar(q, k, v, out, n_head, n_kv, hd, t, t_stride, scale, p);
    free(p);
    return 0;
}

/* gu [2n] = [gate, up]; out [n] = silu(gate) * up. */
void lmp_silu_mul(const float *gu, float *out, int64_t n) {
    int64_t i = 0;
#if defined(__x86_64__) || defined(__i386__)
    if (use_avx2())
        i = silu_mul_avx2(gu, out, n);
#endif
    silu_mul_scalar(gu, out, i, n);
}

/* ------------------------------------------------------------ decode step */

int lmp_decode_step(const LmpBlock *blocks, int64_t n_blocks, float *x, int64_t pos,
                    const float *cos, const float *sin, const LmpDecodeScratch *s,
                    const LmpDecodeDims *d, float eps, float scale, int nthreads) {
    const int64_t hidden = d->hidden, n_head = d->n_head, n_kv = d->n_kv, hd = d->hd,
                  max_len = d->max_len;
    const int64_t qn = n_head * hd, kn = n_kv * hd;
    int rc = 0;
    for (int64_t i = 0; i < n_blocks && !rc; i++) {
        const LmpBlock *b = &blocks[i];
        lmp_rmsnorm(x, b->ln1, s->h, 1, hidden, eps);
        rc |= lmp_linear_run(b->qkv, s->h, s->qkv, NULL, nthreads);
        float *q = s->qkv, *k = s->qkv + qn, *v = s->qkv + qn + kn;
        if (b->qnorm) /* row by row, so in place is safe */
            lmp_rmsnorm(q, b->qnorm, q, n_head, hd, eps);
        if (b->knorm)
            lmp_rmsnorm(k, b->knorm, k, n_kv, hd, eps);
        lmp_rope(q, cos, sin, n_head, hd);
        lmp_rope(k, cos, sin, n_kv, hd);
        for (int64_t g = 0; g < n_kv; g++) {
            memcpy(b->kcache + (g * max_len + pos) * hd, k + g * hd, (size_t)hd * sizeof(float));
            memcpy(b->vcache + (g * max_len + pos) * hd, v + g * hd, (size_t)hd * sizeof(float));
        }
        rc |= lmp_attend(q, b->kcache, b->vcache, s->att, n_head, n_kv, hd, pos + 1, max_len,
                         scale);
        rc |= lmp_linear_run(b->o, s->att, x, x, nthreads);
        lmp_rmsnorm(x, b->ln2, s->h, 1, hidden, eps);
        rc |= lmp_linear_run(b->gu, s->h, s->gu, NULL, nthreads);
        lmp_silu_mul(s->gu, s->act, d->inter);
        rc |= lmp_linear_run(b->down, s->act, x, x, nthreads);
    }
    return rc ? -1 : 0;
}
