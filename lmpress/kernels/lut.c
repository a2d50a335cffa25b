/* Table-lookup GEMV for 1-4 bit codes (the T-MAC idea, Wei et al. 2024, in float32).
 *
 * A code q = sum_p 2^p b_p is split into bit planes. For every block of four
 * activations x[4j..4j+3] the 16 sums of its subsets are tabulated once per call;
 * the four bits of plane p of a row over those columns then index that table, so
 * one permute instruction (AVX-512 vpermps, 16-entry tables, 16 rows per lane
 * set) replaces four multiply-adds per plane:
 *
 *     sum_k q[n,k] x[k] = sum_p 2^p sum_j T_j[bits_p(n, 4j..4j+3)]
 *     y[n] = sum_g s[n,g] * (sum_{k in g} q[n,k] x[k] - z[n,g] * sum_{k in g} x[k])
 *
 * Unlike the unpack-and-FMA kernels the zero point enters through the group sum
 * of x, so the rounding error scales with sum |q||x| rather than sum |q - z||x|.
 *
 * Weight layout (built by lmpress.kernels.lut.lut_layout): rows in tiles of 16,
 * columns in octets; for tile t, octet c, plane p, 16 bytes (one per row): low
 * nibble = plane-p bits of columns 8c..8c+3, high nibble = columns 8c+4..8c+7.
 * Scales and zero points as float32 [tiles, G, 16].
 */
#include "lut.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LUT_AVX512 __attribute__((target("avx512f,avx512bw,fma")))
#ifndef LUT_PREFETCH
#define LUT_PREFETCH 4096 /* bytes ahead of the codes being read */
#endif

/* tables [K8/4][16]: entry idx of block j = sum of x[4j+i] over the set bits i of idx;
 * xs[g] = sum of x over group g. Sixteen entries at once: four masked adds of the
 * broadcast activations (mask bit idx set where bit i of idx is). */
LUT_AVX512 static void build_tables(const LutJob *j, float *tables, float *xs) {
    const __mmask16 bit[4] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00};
    for (int64_t b = 0; b < j->k8 / 4; b++) {
        __m512 t = _mm512_setzero_ps();
        for (int i = 0; i < 4; i++)
            if (4 * b + i < j->k)
                t = _mm512_mask_add_ps(t, bit[i], t, _mm512_set1_ps(j->x[4 * b + i]));
        _mm512_storeu_ps(tables + 16 * b, t);
    }
    for (int64_t g = 0; g < j->groups; g++) {
        int64_t k0 = g * j->group_len, k1 = k0 + j->group_len;
        if (k1 > j->k)
            k1 = j->k;
        __m512 acc = _mm512_setzero_ps();
        int64_t k = k0;
        for (; k + 16 <= k1; k += 16)
            acc = _mm512_add_ps(acc, _mm512_loadu_ps(j->x + k));
        float s = _mm512_reduce_add_ps(acc);
        for (; k < k1; k++)
            s += j->x[k];
        xs[g] = s;
    }
}

/* TT consecutive tiles (16 rows each) share every table load. */
__attribute__((target("avx512f,avx512bw,fma"), always_inline)) static inline void
lut_tile_group(const LutJob *j, const float *tables, const float *xs, int64_t t, const int TT) {
    const int B = j->bits;
    const int64_t C = j->k8 / 8, L8 = j->group_len / 8;
    __m512 racc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t g = 0; g < j->groups; g++) {
        int64_t c0 = g * L8, c1 = c0 + L8;
        if (c1 > C)
            c1 = C;
        __m512 acc[2][4];
        for (int u = 0; u < TT; u++)
            for (int p = 0; p < 4; p++)
                acc[u][p] = _mm512_setzero_ps();
        for (int64_t c = c0; c < c1; c++) {
            const __m512 tlo = _mm512_loadu_ps(tables + 32 * c);
            const __m512 thi = _mm512_loadu_ps(tables + 32 * c + 16);
            for (int u = 0; u < TT; u++) {
                const uint8_t *src = j->codes + (((t + u) * C + c) * B) * 16;
                /* Hardware prefetchers lag behind two interleaved streams; ask ahead. */
                _mm_prefetch((const char *)(src + LUT_PREFETCH), _MM_HINT_T0);
                for (int p = 0; p < B; p++) {
                    const __m512i v =
                        _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + 16 * p)));
                    /* vpermps reads the low 4 bits of each index lane */
                    acc[u][p] = _mm512_add_ps(acc[u][p], _mm512_permutexvar_ps(v, tlo));
                    acc[u][p] = _mm512_add_ps(
                        acc[u][p], _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), thi));
                }
            }
        }
        const __m512 xg = _mm512_set1_ps(xs[g]);
        for (int u = 0; u < TT; u++) {
            __m512 q = acc[u][0];
            for (int p = 1; p < B; p++)
                q = _mm512_fmadd_ps(acc[u][p], _mm512_set1_ps((float)(1 << p)), q);
            const int64_t off = ((t + u) * j->groups + g) * 16;
            q = _mm512_fnmadd_ps(_mm512_loadu_ps(j->zeros + off), xg, q);
            racc[u] = _mm512_fmadd_ps(_mm512_loadu_ps(j->scales + off), q, racc[u]);
        }
    }
    for (int u = 0; u < TT; u++) {
        float out[16];
        _mm512_storeu_ps(out, racc[u]);
        const int64_t n0 = (t + u) * 16;
        for (int r = 0; r < 16 && n0 + r < j->n; r++)
            j->y[n0 + r] = out[r] + (j->bias ? j->bias[n0 + r] : 0.f);
    }
}

LUT_AVX512 static void lut_tiles(const LutJob *j, const float *tables, const float *xs,
                                 int64_t t0, int64_t t1) {
    int64_t t = t0;
    for (; t + 2 <= t1; t += 2)
        lut_tile_group(j, tables, xs, t, 2);
    for (; t < t1; t++)
        lut_tile_group(j, tables, xs, t, 1);
}

int lmp_lut_gemv(const LutJob *j, int nthreads) {
    float *tables = (float *)malloc((size_t)(j->k8 / 4 * 16) * sizeof(float));
    float *xs = (float *)malloc((size_t)j->groups * sizeof(float));
    if (!tables || !xs) {
        free(tables);
        free(xs);
        return -1;
    }
    build_tables(j, tables, xs);
    const int64_t tiles0 = (j->n + 15) / 16;
    const int64_t code_bytes = tiles0 * (j->k8 / 8) * j->bits * 16;
    if (code_bytes <= 128 * 1024) {
        /* A small layer is bound by memory latency, not bandwidth: ask for all of it
         * at once so the misses overlap instead of queueing behind one stream. */
        for (int64_t off = 0; off < code_bytes; off += 64)
            _mm_prefetch((const char *)(j->codes + off), _MM_HINT_T0);
        const int64_t pbytes = tiles0 * j->groups * 16 * (int64_t)sizeof(float);
        for (int64_t off = 0; off < pbytes; off += 64) {
            _mm_prefetch((const char *)j->scales + off, _MM_HINT_T0);
            _mm_prefetch((const char *)j->zeros + off, _MM_HINT_T0);
        }
    }
    const int64_t tiles = (j->n + 15) / 16;
    const int par = nthreads > 1 && j->n * j->k > 262144;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (par)
#endif
    for (int64_t b = 0; b < (tiles + 3) / 4; b++) {
        const int64_t t0 = 4 * b, t1 = t0 + 4 < tiles ? t0 + 4 : tiles;
        lut_tiles(j, tables, xs, t0, t1);
    }
    (void)par;
    free(tables);
    free(xs);
    return 0;
}
#else
int lmp_lut_gemv(const LutJob *j, int nthreads) {
    (void)j;
    (void)nthreads;
    return -2;
}
#endif
