/* Small AVX2 / AVX-512 helpers shared by the C files of lmpress's kernels (x86 only). */
#ifndef LMPRESS_SIMD_H
#define LMPRESS_SIMD_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Sum of the eight lanes of v. */
__attribute__((target("avx2,fma"), always_inline)) static inline float lmp_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 16 bytes (lmp_load16_u8) or 16 16-bit values (lmp_load16_u16) at p, of which the
 * first n (1..16) exist, the rest read as 0. A plain load where all 16 are there, a
 * masked load of just their bytes otherwise: a masked load whose masked-out part
 * straddles a page costs a microcode assist on some CPUs (AMD Zen 5). */
#define LMP_LOAD16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) static inline
LMP_LOAD16_TARGET __m128i lmp_load16_u8(const void *p, int n) {
    return n == 16 ? _mm_loadu_si128((const __m128i *)p)
                   : _mm_maskz_loadu_epi8((__mmask16)((1u << n) - 1), p);
}
LMP_LOAD16_TARGET __m256i lmp_load16_u16(const void *p, int n) {
    return n == 16 ? _mm256_loadu_si256((const __m256i *)p)
                   : _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), p);
}
#endif

#endif
