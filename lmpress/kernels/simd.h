/* Small AVX2 helpers shared by the C files of lmpress's kernels (x86 only). */
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
#endif

#endif
