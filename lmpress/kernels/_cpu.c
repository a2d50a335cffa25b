/*
 * lmpress CPU kernels: matrix products straight from bit-packed group-wise codes.
 *
 * Layout (lmpress/packing): a weight [N, K] is stored row by row; every 8 codes of
 * a row take `bits` bytes, code i of a run of 8 at bits [bits*i, bits*i + bits) of
 * that little-endian word; rows are padded to a multiple of 8 codes. Group g of row
 * n has scale s[n, g] (fp16 or bf16 bits) and zero point z[n, g] (none: the
 * format's midpoint; uint8; or fp16), and code q decodes to (q - z) * s.
 *
 * gemm:    y[m, n] = sum_g s[n,g] * sum_{k in g} (q[n,k] - z[n,g]) * x[m,k] (+ bias[n])
 *          The zero point is subtracted from each code before the product (not
 *          folded into a group sum of x, which is one instruction cheaper but
 *          cancels badly when most codes sit at the zero point), so the rounding
 *          is that of a float32 dot product with the dequantized weight.
 * dequant: w[n, k] = (q[n,k] - z[n,g]) * s[n,g] in float32, bit-identical to
 *          lmpress.formats.affine.dequantize_codes.
 *
 * An AVX2/FMA path is chosen at run time where the CPU has it (the file itself is
 * compiled for the baseline ISA), with a portable scalar path otherwise; rows are
 * split over OpenMP threads when the build has OpenMP.
 *
 * This file holds the products (packed-code GEMM/GEMV, dense GEMV, dequant), the
 * prepared linear layers the decode step runs (linear.h), and the Python module
 * glue of the whole extension. The decode step itself and its small float32 ops
 * are in decode_ops.c, the table-lookup GEMV in lut.c, the products of grid formats
 * (codes indexing tables of values) in grid.c.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define LMP_X86 1
#include <immintrin.h>
#endif

#include "decode_ops.h"
#include "grid.h"
#include "linear.h"
#include "lut.h"
#include "simd.h"

#define MAX_M 64
#define PTR(p) ((float *)(uintptr_t)(p)) /* activation rows per gemm call; larger batches dequantize instead */

typedef struct {
    const float *x; /* [M, Kp], rows padded with zeros to Kp = ceil(K/64)*64 */
    float *y;       /* [M, N] */
    int64_t M, K, Kp, N;
    const uint8_t *codes; /* see tile_rows; followed by >= 16 readable bytes */
    int64_t row_bytes;
    int bits;
    int tile_rows;   /* 0: row-major [N, row_bytes]; T: tiled, see row_starts */
    int64_t cstride; /* bytes from one piece (16 * bits bytes, 128 codes) of a row to its next */
    int64_t last_col;   /* index of a row's last piece (see row_starts) */
    int64_t tail_bytes; /* bytes of a row's last piece: row_bytes - last_col * 16 * bits */
    int64_t tile_bytes; /* bytes of one tile of tile_rows rows (row-major: of one row) */
    const uint16_t *scales; /* raw fp16/bf16 bits, [P, G] */
    int scale_kind;         /* 0 fp16, 1 bf16 */
    int64_t p_stride;       /* G, or 0 when one parameter row serves every row (per tensor) */
    const void *zeros;      /* see zero_kind */
    int zero_kind;          /* 0 constant `mid`, 1 uint8 [P, G], 2 fp16 [P, G] */
    float mid;
    int64_t group_len, G;
    const float *bias; /* [N] or NULL */
    int xp_planes;     /* x has been permuted for a plane path (permute_planes) */
    int64_t far;       /* bytes ahead of the stream prefetched into L2 (0 none) */
} Job;

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, f;
    if (exp == 0) {
        float v = ldexpf((float)mant, -24); /* zero or subnormal */
        memcpy(&f, &v, 4);
        f |= sign;
    } else if (exp == 31) {
        f = sign | 0x7f800000u | (mant << 13);
    } else {
        f = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float out;
    memcpy(&out, &f, 4);
    return out;
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t f = (uint32_t)h << 16;
    float out;
    memcpy(&out, &f, 4);
    return out;
}

static inline float job_scale(const Job *j, int64_t n, int64_t g) {
    uint16_t h = j->scales[n * j->p_stride + g];
    return j->scale_kind ? bf16_to_float(h) : half_to_float(h);
}

static inline float job_zero(const Job *j, int64_t n, int64_t g) {
    switch (j->zero_kind) {
    case 1:
        return (float)((const uint8_t *)j->zeros)[n * j->p_stride + g];
    case 2:
        return half_to_float(((const uint16_t *)j->zeros)[n * j->p_stride + g]);
    default:
        return j->mid;
    }
}

/* Code layout. A row's codes are pieces of 128 codes (16 * bits bytes), the last
 * one possibly shorter (tail_bytes). Row-major (tile_rows 0): a row's pieces follow
 * each other, rows follow each other. Tiled (tile_rows T): rows in tiles of T; piece
 * c of the T rows of a tile in turn, then piece c + 1, so that a kernel working on T
 * rows at once reads one sequential stream rather than T strided ones (which memory
 * serves more slowly); the last pieces of the T rows are packed tail_bytes apart,
 * so that a partial one (576 = 4 x 128 + 64 codes) is not read with its padding.
 * row_starts: where the pieces of rows n0 .. n0 + R - 1 start (rows) and where their
 * last pieces start (tails). */
static inline void row_starts(const Job *j, int64_t n0, int R, const uint8_t **rows,
                              const uint8_t **tails) {
    /* Row-major is the tiled layout with tiles of one row (tile_bytes = row_bytes). One
     * division for the R rows, not one per row: this runs for every tile, and integer
     * division is slow next to a small product's arithmetic. */
    const int64_t T = j->tile_rows ? j->tile_rows : 1, piece = 16 * j->bits;
    int64_t i = n0 % T;
    const uint8_t *tile = j->codes + (n0 / T) * j->tile_bytes;
    for (int r = 0; r < R; r++, i++) {
        if (i == T) {
            tile += j->tile_bytes;
            i = 0;
        }
        rows[r] = tile + i * piece;
        tails[r] = tile + j->last_col * T * piece + i * j->tail_bytes;
    }
}

/* The run of 8 codes holding code k of the row whose pieces start at `row` and whose
 * last piece starts at `tail` (row_starts). */
static inline const uint8_t *run_at(const Job *j, const uint8_t *row, const uint8_t *tail,
                                    int64_t k) {
    const int64_t c = k >> 7;
    return (c == j->last_col ? tail : row + c * j->cstride) + ((k & 127) >> 3) * j->bits;
}

/* Bytes ahead of the codes being read that the vector paths ask for (0: none). A
 * tile reads one sequential stream, yet hardware prefetchers can fall behind it and
 * leave the kernel waiting on memory; asking 2 KiB ahead keeps the stream fed
 * (measured by scripts/bench_kernels.py, BENCHMARKS.md). Settable through
 * _cpu.set_prefetch. */
static int64_t prefetch_dist = 2048;

/* Bytes ahead of the codes being read that the vector paths also ask for into L2 (0:
 * none; -1: not yet chosen, see far_prefetch). L1 requests alone can leave a core's
 * one stream bound by the L1's miss buffers (its hardware prefetch restarts at every
 * 4 KiB page); L2 requests 16 KiB ahead, in addition, lift that on Intel cores. In a
 * small weight they mostly run past its end and cost more than they give, hence
 * FAR_MIN_BYTES. Off on other vendors, where they have not been shown to help
 * (measured by scripts/bench_kernels.py, BENCHMARKS.md). */
static int64_t prefetch_far = -1;
#define FAR_MIN_BYTES (1 << 20) /* codes in a weight below which there is no far prefetch */

static int64_t far_prefetch(void) {
    if (prefetch_far < 0) {
#ifdef LMP_X86
        __builtin_cpu_init();
        prefetch_far = __builtin_cpu_is("intel") ? 16384 : 0;
#else
        prefetch_far = 0;
#endif
    }
    return prefetch_far;
}

/* At the first code of each piece (128 codes), the piece of the tile's stream
 * prefetch_dist bytes ahead (and j->far bytes ahead into L2): about one request per
 * cache line read. */
static inline void prefetch_ahead(const Job *j, const uint8_t *row, int64_t k) {
    if (k & 127)
        return;
    const uint8_t *p = row + (k >> 7) * j->cstride;
    if (prefetch_dist)
        for (int64_t l = 0; l < j->cstride; l += 64)
            __builtin_prefetch(p + prefetch_dist + l, 0, 3);
    if (j->far)
        for (int64_t l = 0; l < j->cstride; l += 64)
            __builtin_prefetch(p + j->far + l, 0, 2);
}

static inline uint32_t get_code(const Job *j, const uint8_t *row, const uint8_t *tail,
                                int64_t k) {
    const int bits = j->bits;
    const uint8_t *chunk = run_at(j, row, tail, k);
    int off = (int)(k & 7) * bits, byte = off >> 3, sh = off & 7;
    uint32_t v = chunk[byte];
    if (sh + bits > 8) /* the code straddles two bytes, both inside this chunk */
        v |= (uint32_t)chunk[byte + 1] << 8;
    return (v >> sh) & ((1u << bits) - 1u);
}

/* ---------------------------------------------------------------- scalar path */

static void rows_scalar(const Job *j, int64_t n0, int64_t n1) {
    float acc[MAX_M], racc[MAX_M];
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row, *tail;
        row_starts(j, n, 1, &row, &tail);
        for (int64_t m = 0; m < j->M; m++)
            racc[m] = 0.f;
        for (int64_t g = 0; g < j->G; g++) {
            int64_t k0 = g * j->group_len, k1 = k0 + j->group_len;
            if (k1 > j->K)
                k1 = j->K;
            float s = job_scale(j, n, g), z = job_zero(j, n, g);
            for (int64_t m = 0; m < j->M; m++)
                acc[m] = 0.f;
            for (int64_t k = k0; k < k1; k++) {
                float w = (float)get_code(j, row, tail, k) - z;
                for (int64_t m = 0; m < j->M; m++)
                    acc[m] += w * j->x[m * j->Kp + k];
            }
            for (int64_t m = 0; m < j->M; m++)
                racc[m] += s * acc[m];
        }
        for (int64_t m = 0; m < j->M; m++)
            j->y[m * j->N + n] = racc[m] + (j->bias ? j->bias[n] : 0.f);
    }
}

/* ------------------------------------------------------------------ AVX2 path */
#ifdef LMP_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

/* Scale and zero point of row n, group g (F16C conversions; shared by both vector paths). */
#define F16C_INLINE __attribute__((target("f16c"), always_inline)) static inline

F16C_INLINE float scale_f16c(const Job *j, int64_t n, int64_t g) {
    uint16_t h = j->scales[n * j->p_stride + g];
    return j->scale_kind ? bf16_to_float(h) : _cvtsh_ss(h);
}

F16C_INLINE float zero_f16c(const Job *j, int64_t n, int64_t g) {
    switch (j->zero_kind) {
    case 1:
        return (float)((const uint8_t *)j->zeros)[n * j->p_stride + g];
    case 2:
        return _cvtsh_ss(((const uint16_t *)j->zeros)[n * j->p_stride + g]);
    default:
        return j->mid;
    }
}

/* Eight codes starting at a multiple of 8, as int32 lanes in order. B is a
 * compile-time constant after inlining, so the loads and shifts specialise. */
AVX2_INLINE __m256i codes8(const uint8_t *chunk, const int B) {
    if (B == 8)
        return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)chunk));
    const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
    if (B <= 4) {
        /* One unaligned load of 4 bytes (the code buffer has 8 bytes of tail padding);
         * a B-byte copy would be assembled on the stack and stall store forwarding. */
        uint32_t v;
        memcpy(&v, chunk, 4);
        const __m256i sh = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
        return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)v), sh), mask);
    }
    uint64_t v;
    memcpy(&v, chunk, 8);
    const __m256i sh = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 0, B, 2 * B, 3 * B);
    __m256i q = _mm256_set_m128i(_mm_set1_epi32((int)(uint32_t)(v >> (4 * B))),
                                 _mm_set1_epi32((int)(uint32_t)v));
    return _mm256_and_si256(_mm256_srlv_epi32(q, sh), mask);
}

/* Integer lanes t (each < 2^23) -> float t - z. Integer zero points use the bits
 * 0x4B000000 | t, the float 2^23 + t, so that one subtraction of 2^23 + z (zm)
 * gives t - z exactly without a conversion; float zero points (FZ) convert and
 * subtract z itself (zm = z), which rounds as the reference does. */
#define LMP_MAGIC 0x4B000000
#define LMP_TWO23 8388608.0f

AVX2_INLINE __m256 minus_zero8(__m256i t, __m256 zm, const int FZ) {
    if (FZ)
        return _mm256_sub_ps(_mm256_cvtepi32_ps(t), zm);
    return _mm256_sub_ps(_mm256_castsi256_ps(_mm256_or_si256(t, _mm256_set1_epi32(LMP_MAGIC))),
                         zm);
}

/* R weight rows (n0..n0+R-1) against MT activation rows (m0..): R*MT independent
 * accumulator chains, so the FMA latency is hidden and each x vector is loaded once
 * for R rows. R, MT, B, PL and FZ are compile-time constants after inlining.
 * PL: the plane path for B = 2 or 4. Eight bytes of codes zero-extend to eight
 * lanes of one byte each; plane p of them (bits [Bp, Bp + B) of every byte) is
 * eight codes at stride 8/B, matched by x permuted the same way (permute_planes),
 * so a plane costs a shift and a mask instead of a variable shift per 8 codes. */
AVX2_INLINE void tile(const Job *j, int64_t n0, int64_t m0, float *out, const int R,
                      const int MT, const int B, const int PL, const int FZ) {
    const float *xb = j->x + m0 * j->Kp;
    const int64_t Kp = j->Kp, L = j->group_len, G = j->G;
    const int P = PL ? 8 / B : 1;
    const int64_t step = 8 * P;
    /* never read codes past the row's last run (plane path: past its last 8 bytes) */
    const int64_t kend = (j->K + step - 1) / step * step;
    const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
    const uint8_t *rows[4], *tails[4];
    __m256 racc[4][2], acc[4][2];
    row_starts(j, n0, R, rows, tails);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            racc[r][m] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        int64_t k0 = g * L, k1 = k0 + L;
        if (k1 > kend)
            k1 = kend;
        __m256 zm[4];
        for (int r = 0; r < R; r++) {
            const float z = zero_f16c(j, n0 + r, g);
            zm[r] = _mm256_set1_ps(FZ || !PL ? z : LMP_TWO23 + z);
            for (int m = 0; m < MT; m++)
                acc[r][m] = _mm256_setzero_ps();
        }
        for (int64_t k = k0; k < k1; k += step) {
            prefetch_ahead(j, rows[0], k);
            __m256 xv[2][4];
            for (int m = 0; m < MT; m++)
                for (int p = 0; p < P; p++)
                    xv[m][p] = _mm256_loadu_ps(xb + m * Kp + k + 8 * p);
            for (int r = 0; r < R; r++) {
                const uint8_t *c = run_at(j, rows[r], tails[r], k);
                if (PL) {
                    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
                    for (int p = 0; p < P; p++) {
                        __m256i t = p ? _mm256_srli_epi32(v, B * p) : v;
                        if (p < P - 1) /* the top plane has nothing above it */
                            t = _mm256_and_si256(t, mask);
                        const __m256 w = minus_zero8(t, zm[r], FZ);
                        for (int m = 0; m < MT; m++)
                            acc[r][m] = _mm256_fmadd_ps(w, xv[m][p], acc[r][m]);
                    }
                } else {
                    /* a conversion, not the magic bits: the faster of the two here */
                    const __m256 w = minus_zero8(codes8(c, B), zm[r], 1);
                    for (int m = 0; m < MT; m++)
                        acc[r][m] = _mm256_fmadd_ps(w, xv[m][0], acc[r][m]);
                }
            }
        }
        for (int r = 0; r < R; r++) {
            const __m256 sv = _mm256_set1_ps(scale_f16c(j, n0 + r, g));
            for (int m = 0; m < MT; m++)
                racc[r][m] = _mm256_fmadd_ps(acc[r][m], sv, racc[r][m]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            out[r * MT + m] = lmp_hsum256(racc[r][m]);
}

/* Tile results (+ bias) into y; plain C, shared by the vector paths. */
static inline void store_tile(const Job *j, int64_t n0, int64_t m0, const float *out, int R,
                              int MT) {
    for (int r = 0; r < R; r++) {
        const float b = j->bias ? j->bias[n0 + r] : 0.f;
        for (int m = 0; m < MT; m++)
            j->y[(m0 + m) * j->N + n0 + r] = out[r * MT + m] + b;
    }
}

/* A vector path's rows n0..n1 for every activation row: tiles of RW weight rows
 * against one activation row, of RW2 rows against two, then single rows; ATTR and
 * TILE name the path's target attributes and tile function (RW * 1, RW2 * 2 <= 16). */
#define LMP_ROWS_FN(NAME, ATTR, TILE, RW, RW2)                                             \
    ATTR void NAME(const Job *j, int64_t n0, int64_t n1, const int B, const int PL,        \
                   const int FZ) {                                                         \
        float out[16];                                                                     \
        for (int64_t m = 0; m < j->M;) {                                                   \
            const int mt = j->M - m >= 2 ? 2 : 1;                                          \
            int64_t n = n0;                                                                \
            if (mt == 1) {                                                                 \
                for (; n + RW <= n1; n += RW) {                                            \
                    TILE(j, n, m, out, RW, 1, B, PL, FZ);                                  \
                    store_tile(j, n, m, out, RW, 1);                                       \
                }                                                                          \
                for (; n < n1; n++) {                                                      \
                    TILE(j, n, m, out, 1, 1, B, PL, FZ);                                   \
                    store_tile(j, n, m, out, 1, 1);                                        \
                }                                                                          \
            } else {                                                                       \
                for (; n + RW2 <= n1; n += RW2) {                                          \
                    TILE(j, n, m, out, RW2, 2, B, PL, FZ);                                 \
                    store_tile(j, n, m, out, RW2, 2);                                      \
                }                                                                          \
                for (; n < n1; n++) {                                                      \
                    TILE(j, n, m, out, 1, 2, B, PL, FZ);                                   \
                    store_tile(j, n, m, out, 1, 2);                                        \
                }                                                                          \
            }                                                                              \
            m += mt;                                                                       \
        }                                                                                  \
    }

LMP_ROWS_FN(rows_avx2_b, AVX2_INLINE, tile, 4, 2)

/* A vector path's rows function for this job's planes / bit width / zero kind, as
 * compile-time constants of ROWS (one instantiation each); shared by the paths. */
#define LMP_ROWS_CASE(ROWS, b, pl)                                                         \
    case b:                                                                                \
        fz ? ROWS(j, n0, n1, b, pl, 1) : ROWS(j, n0, n1, b, pl, 0);                        \
        break;
#define LMP_DISPATCH(ROWS)                                                                 \
    const int fz = j->zero_kind == 2;                                                      \
    if (j->xp_planes) {                                                                    \
        switch (j->bits) {                                                                 \
            LMP_ROWS_CASE(ROWS, 2, 1)                                                      \
        default:                                                                           \
            LMP_ROWS_CASE(ROWS, 4, 1)                                                      \
        }                                                                                  \
        return;                                                                            \
    }                                                                                      \
    switch (j->bits) {                                                                     \
        LMP_ROWS_CASE(ROWS, 1, 0)                                                          \
        LMP_ROWS_CASE(ROWS, 2, 0)                                                          \
        LMP_ROWS_CASE(ROWS, 3, 0)                                                          \
        LMP_ROWS_CASE(ROWS, 4, 0)                                                          \
        LMP_ROWS_CASE(ROWS, 5, 0)                                                          \
        LMP_ROWS_CASE(ROWS, 6, 0)                                                          \
        LMP_ROWS_CASE(ROWS, 7, 0)                                                          \
    default:                                                                               \
        LMP_ROWS_CASE(ROWS, 8, 0)                                                          \
    }

AVX2 static void rows_avx2(const Job *j, int64_t n0, int64_t n1) { LMP_DISPATCH(rows_avx2_b) }

/* Highest vector path allowed: 2 AVX-512, 1 AVX2, 0 scalar (tests lower it). */
static int simd_level = 2;

static int have_avx2(void) {
    static int cached = -1;
    if (simd_level < 1)
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    }
    return cached;
}

/* ---------------------------------------------------------------- AVX-512 path */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))
#define AVX512_INLINE __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"), always_inline)) static inline

/* Sixteen codes starting at a multiple of 16: the 2B bytes they occupy are broadcast
 * to every 128-bit lane, a byte shuffle puts the two bytes holding code i into lane
 * i, and a per-lane shift and mask leave the code. One path for every width. */
AVX512_INLINE __m512i codes16(const uint8_t *chunk, const int B) {
    if (B == 8)
        return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)chunk));
    const __m512i d = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)chunk));
    const __m512i shuf = _mm512_set_epi32(
#define LMP_LANE(i) (int)(0x80800000u | (uint32_t)(((B * (i)) >> 3) + 1) << 8 | (uint32_t)((B * (i)) >> 3))
        LMP_LANE(15), LMP_LANE(14), LMP_LANE(13), LMP_LANE(12), LMP_LANE(11), LMP_LANE(10),
        LMP_LANE(9), LMP_LANE(8), LMP_LANE(7), LMP_LANE(6), LMP_LANE(5), LMP_LANE(4), LMP_LANE(3),
        LMP_LANE(2), LMP_LANE(1), LMP_LANE(0));
#undef LMP_LANE
    const __m512i sh = _mm512_set_epi32(
        (B * 15) & 7, (B * 14) & 7, (B * 13) & 7, (B * 12) & 7, (B * 11) & 7, (B * 10) & 7,
        (B * 9) & 7, (B * 8) & 7, (B * 7) & 7, (B * 6) & 7, (B * 5) & 7, (B * 4) & 7,
        (B * 3) & 7, (B * 2) & 7, B & 7, 0);
    const __m512i v = _mm512_srlv_epi32(_mm512_shuffle_epi8(d, shuf), sh);
    /* Widths up to 4 feed a 16-entry table lookup (permutexvar reads the low 4 bits
     * of each lane), which makes the mask redundant. */
    return B <= 4 ? v : _mm512_and_si512(v, _mm512_set1_epi32((1 << B) - 1));
}

/* The 16 values q - z a group's codes can take, indexed by the low 4 bits of a lane
 * (entry i holds (i mod 2^B) - z, so higher bits of the index need no mask). One
 * permute then turns 16 codes into weights, where or + subtract + mask took three
 * operations: about a quarter fewer vector operations per weight at 4 bits. The
 * values are the same floats the subtraction gave, so results do not change. */
AVX512_INLINE __m512 level_table(float z, const int B) {
    const __m512 q = _mm512_set_ps(15 % (1 << B), 14 % (1 << B), 13 % (1 << B), 12 % (1 << B),
                                   11 % (1 << B), 10 % (1 << B), 9 % (1 << B), 8 % (1 << B),
                                   7 % (1 << B), 6 % (1 << B), 5 % (1 << B), 4 % (1 << B),
                                   3 % (1 << B), 2 % (1 << B), 1 % (1 << B), 0);
    return _mm512_sub_ps(q, _mm512_set1_ps(z));
}

/* As minus_zero8 (the 2^23 + q bits), 16 lanes; float zero points subtract 2^23
 * and z separately. */

AVX512_INLINE __m512 minus_zero(__m512i masked_or_magic, __m512 zm, const int FZ) {
    const __m512 f = _mm512_castsi512_ps(masked_or_magic);
    if (FZ)
        return _mm512_sub_ps(_mm512_sub_ps(f, _mm512_set1_ps(LMP_TWO23)), zm);
    return _mm512_sub_ps(f, zm);
}

/* Groups whose scales and zero points a tile converts at once (group_params). */
#define LMP_GC 32

/* Rows n0..n0+R-1, groups g0..g0+LMP_GC-1 (fewer at the row's end): scales into sg and
 * zero points into zg as float32, 16 groups per conversion, so that a group's table takes a
 * subtract and a multiply from memory broadcasts. Converting each row's scalars at
 * every group takes a load, a conversion and a broadcast each, two of them on the
 * shuffle port the table permutes need, so the inner loop would compete with itself.
 * The values are the same floats the scalar conversions gave. */
AVX512_INLINE void group_params(const Job *j, int64_t n0, const int R, int64_t g0,
                                float (*sg)[LMP_GC], float (*zg)[LMP_GC]) {
    const int gn = j->G - g0 < LMP_GC ? (int)(j->G - g0) : LMP_GC;
    for (int r = 0; r < R; r++) {
        const int64_t off = (n0 + r) * j->p_stride + g0;
        for (int b = 0; b < gn; b += 16) {
            const int cnt = gn - b < 16 ? gn - b : 16;
            const __m256i h = lmp_load16_u16(j->scales + off + b, cnt);
            _mm512_storeu_ps(sg[r] + b, j->scale_kind ? _mm512_castsi512_ps(_mm512_slli_epi32(
                                                            _mm512_cvtepu16_epi32(h), 16))
                                                      : _mm512_cvtph_ps(h));
            __m512 z;
            if (j->zero_kind == 1)
                z = _mm512_cvtepi32_ps(
                    _mm512_cvtepu8_epi32(lmp_load16_u8((const uint8_t *)j->zeros + off + b, cnt)));
            else if (j->zero_kind == 2)
                z = _mm512_cvtph_ps(lmp_load16_u16((const uint16_t *)j->zeros + off + b, cnt));
            else
                z = _mm512_set1_ps(j->mid);
            _mm512_storeu_ps(zg[r] + b, z);
        }
    }
}

/* The parts the AVX-512 tiles share around their inner loops: each row's code
 * pointers and zeroed accumulators; the row results. */
AVX512_INLINE void tile512_start(const Job *j, int64_t n0, const int R, const int MT,
                                 const uint8_t **rows, const uint8_t **tails,
                                 __m512 (*racc)[2]) {
    row_starts(j, n0, R, rows, tails);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            racc[r][m] = _mm512_setzero_ps();
}

AVX512_INLINE void tile512_finish(const int R, const int MT, __m512 (*racc)[2], float *out) {
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            out[r * MT + m] = _mm512_reduce_add_ps(racc[r][m]);
}

/* As the AVX2 tile, 16 lanes, up to 8 weight rows at once (32 vector registers).
 * PL: the plane path for B = 2 or 4 (16 bytes of codes give 8/B planes of 16 codes
 * each; x was permuted to match, see permute_planes); otherwise 16-code chunks. */
AVX512_INLINE void tile512(const Job *j, int64_t n0, int64_t m0, float *out, const int R,
                           const int MT, const int B, const int PL, const int FZ) {
    const float *xb = j->x + m0 * j->Kp;
    const int64_t Kp = j->Kp, L = j->group_len, G = j->G;
    const int P = PL ? 8 / B : 1;
    const int64_t step = 16 * P;
    const int64_t kend = (j->K + step - 1) / step * step; /* reads stay within 16 bytes */
    const __m512i magic = _mm512_set1_epi32(LMP_MAGIC);
    const uint8_t *rows[8], *tails[8];
    __m512 racc[8][2], acc[8][2];
    float sg[8][LMP_GC], zg[8][LMP_GC];
    tile512_start(j, n0, R, MT, rows, tails, racc);
    for (int64_t g = 0; g < G; g++) {
        int64_t k0 = g * L, k1 = k0 + L;
        if (k1 > kend)
            k1 = kend;
        const int gi = (int)(g % LMP_GC);
        if (!gi)
            group_params(j, n0, R, g, sg, zg);
        __m512 zm[8];
        for (int r = 0; r < R; r++) {
            const float z = zg[r][gi];
            zm[r] = B <= 4 ? level_table(z, B) : _mm512_set1_ps(FZ ? z : LMP_TWO23 + z);
            for (int m = 0; m < MT; m++)
                acc[r][m] = _mm512_setzero_ps();
        }
        for (int64_t k = k0; k < k1; k += step) {
            prefetch_ahead(j, rows[0], k);
            __m512 xv[2][4];
            for (int m = 0; m < MT; m++)
                for (int p = 0; p < P; p++)
                    xv[m][p] = _mm512_loadu_ps(xb + m * Kp + k + 16 * p);
            for (int r = 0; r < R; r++) {
                const uint8_t *c = run_at(j, rows[r], tails[r], k);
                if (PL) {
                    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c));
                    for (int p = 0; p < P; p++) {
                        const __m512i t = p ? _mm512_srli_epi32(v, B * p) : v;
                        const __m512 w = _mm512_permutexvar_ps(t, zm[r]);
                        for (int m = 0; m < MT; m++)
                            acc[r][m] = _mm512_fmadd_ps(w, xv[m][p], acc[r][m]);
                    }
                } else {
                    const __m512 w =
                        B <= 4 ? _mm512_permutexvar_ps(codes16(c, B), zm[r])
                               : minus_zero(_mm512_or_si512(codes16(c, B), magic), zm[r], FZ);
                    for (int m = 0; m < MT; m++)
                        acc[r][m] = _mm512_fmadd_ps(w, xv[m][0], acc[r][m]);
                }
            }
        }
        for (int r = 0; r < R; r++) {
            const __m512 sv = _mm512_set1_ps(sg[r][gi]);
            for (int m = 0; m < MT; m++)
                racc[r][m] = _mm512_fmadd_ps(acc[r][m], sv, racc[r][m]);
        }
    }
    tile512_finish(R, MT, racc, out);
}

/* Why the codes are tiled (row_starts): an 8-row tile over row-major codes reads 8
 * strided streams, which memory serves far more slowly than the cache does; software
 * prefetching does not make up for it, and one row at a time loses the shared x loads.
 * With the rows of a tile interleaved in 128-code pieces a tile reads one stream
 * (measured by scripts/bench_kernels.py, BENCHMARKS.md). */
LMP_ROWS_FN(rows_avx512_b, AVX512_INLINE, tile512, 8, 4)

/* The word-plane path for 4 bits (xp_planes 2): one 64-byte load is a whole piece of
 * 128 codes, lane i holding codes 8i..8i+7; plane p (codes 8i + p, x permuted to match)
 * is one shift and the table permute, which reads only the low 4 bits of a lane. Per 16
 * codes that is a shift, a permute and an FMA, where the 16-byte plane path also
 * zero-extends bytes to lanes, which is what it spends more on; arithmetic (shift,
 * mask, magic bits) in place of the permute is slower still. Eight rows: the tile's
 * whole piece is one 512-byte run of memory, read in order. */
AVX512_INLINE void tile512_w4(const Job *j, int64_t n0, int64_t m0, float *out, const int R,
                              const int MT, const int B, const int PL, const int FZ) {
    const float *xb = j->x + m0 * j->Kp;
    const int64_t Kp = j->Kp, L = j->group_len, G = j->G;
    const int64_t kfull = j->K / 128 * 128, kend = (j->K + 31) / 32 * 32;
    const uint8_t *rows[8], *tails[8];
    __m512 racc[8][2], tb[8];
    float sg[8][LMP_GC], zg[8][LMP_GC];
    (void)B, (void)PL, (void)FZ;
    tile512_start(j, n0, R, MT, rows, tails, racc);
    for (int64_t g = 0; g < G; g++) {
        const int64_t k0 = g * L, k1 = k0 + L < kend ? k0 + L : kend;
        const int gi = (int)(g % LMP_GC);
        if (!gi)
            group_params(j, n0, R, g, sg, zg);
        /* The group's 16 weights (q - z) * s, rounded as the reference dequantizes them,
         * accumulate straight into racc: per-group sums scaled at the group's end took a
         * zeroing and an FMA per row and group and 8 more zmm registers, which spilled;
         * that shows at small shapes (measured by scripts/bench_kernels.py, BENCHMARKS.md). */
        for (int r = 0; r < R; r++)
            tb[r] = _mm512_mul_ps(level_table(zg[r][gi], 4), _mm512_set1_ps(sg[r][gi]));
        int64_t k = k0;
        for (; k + 128 <= k1 && k < kfull; k += 128) {
            prefetch_ahead(j, rows[0], k);
            __m512i v[8];
            for (int r = 0; r < R; r++)
                v[r] = _mm512_loadu_si512((const void *)(rows[r] + (k >> 7) * j->cstride));
            /* unrolled, so that the shifts take immediates: shifts by a register count
             * would cost this path its lead over the 16-byte one */
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) {
                __m512 xv[2];
                for (int m = 0; m < MT; m++)
                    xv[m] = _mm512_loadu_ps(xb + m * Kp + k + 16 * p);
                for (int r = 0; r < R; r++) {
                    const __m512i t = p ? _mm512_srli_epi32(v[r], 4 * p) : v[r];
                    const __m512 w = _mm512_permutexvar_ps(t, tb[r]);
                    for (int m = 0; m < MT; m++)
                        racc[r][m] = _mm512_fmadd_ps(w, xv[m], racc[r][m]);
                }
            }
        }
        /* A partial last piece (576 = 4 x 128 + 64) in 32-code byte planes, as the
         * 16-byte path: a whole-piece load would spend the work of 128 codes on 64. */
        for (; k < k1; k += 32) {
            __m512 xv[2][2];
            for (int m = 0; m < MT; m++)
                for (int p = 0; p < 2; p++)
                    xv[m][p] = _mm512_loadu_ps(xb + m * Kp + k + 16 * p);
            for (int r = 0; r < R; r++) {
                const __m128i c = _mm_loadu_si128((const __m128i *)run_at(j, rows[r], tails[r], k));
                const __m512i v = _mm512_cvtepu8_epi32(c);
                for (int p = 0; p < 2; p++) {
                    const __m512i t = p ? _mm512_srli_epi32(v, 4) : v;
                    const __m512 w = _mm512_permutexvar_ps(t, tb[r]);
                    for (int m = 0; m < MT; m++)
                        racc[r][m] = _mm512_fmadd_ps(w, xv[m][p], racc[r][m]);
                }
            }
        }
    }
    tile512_finish(R, MT, racc, out);
}

LMP_ROWS_FN(rows_avx512_w4_b, AVX512_INLINE, tile512_w4, 8, 4)

AVX512 static void rows_avx512_w4(const Job *j, int64_t n0, int64_t n1) {
    rows_avx512_w4_b(j, n0, n1, 4, 0, 0);
}

/* Whether the word-plane path applies: 4 bits, a tiled layout (whole 64-byte pieces
 * are readable), groups made of whole pieces; set_word_planes(0) turns it off. */
static int word_planes = 1;
static int use_word_planes(const Job *j) {
    return word_planes && j->bits == 4 && j->tile_rows > 0 &&
           (j->G == 1 || j->group_len % 128 == 0);
}

/* Whether the plane path applies to a vector path of `lanes` float lanes: 2 or 4
 * bits, groups made of whole blocks of lanes * 8/B codes. */
static int use_planes(const Job *j, int lanes) {
    if (j->bits != 2 && j->bits != 4)
        return 0;
    const int64_t blk = lanes * (8 / j->bits);
    return j->G == 1 || j->group_len % blk == 0;
}

AVX512 static void rows_avx512(const Job *j, int64_t n0, int64_t n1) {
    LMP_DISPATCH(rows_avx512_b)
}

static int have_avx512(void) {
    static int cached = -1;
    if (simd_level < 2)
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    }
    return cached;
}
#else
static int simd_level = 0;
static int have_avx2(void) { return 0; }
static int have_avx512(void) { return 0; }
#endif

/* ----------------------------------------------------------------- dispatch */

/* x rows [M, Kp] reordered so that plane p of each block of lanes*P codes reads its
 * `lanes` activations contiguously: xp[blk + lanes*p + i] = x[blk + i*P + p]. P is the
 * codes a lane holds: 8/B for the byte planes, 32/B for the word planes. */
static void permute_block(const float *x, float *xp, int lanes, int P) {
    for (int p = 0; p < P; p++)
        for (int i = 0; i < lanes; i++)
            xp[lanes * p + i] = x[i * P + p];
}

static void permute_planes(const Job *j, const float *x, float *xp, int lanes, int P) {
    const int64_t blk = lanes * P;
    for (int64_t m = 0; m < j->M; m++)
        for (int64_t k0 = 0; k0 < j->Kp; k0 += blk)
            permute_block(x + m * j->Kp + k0, xp + m * j->Kp + k0, lanes, P);
}

/* As permute_planes for the word-plane path (tile512_w4): whole pieces of 128 codes in
 * 8 planes of 16, a partial last piece in blocks of 32 codes in 2 planes of 16. */
static void permute_word_planes(const Job *j, const float *x, float *xp) {
    for (int64_t m = 0; m < j->M; m++)
        for (int64_t k0 = 0; k0 < j->Kp; k0 += 128)
            for (int64_t b = k0; b < k0 + 128; b += k0 + 128 <= j->K ? 128 : 32)
                permute_block(x + m * j->Kp + b, xp + m * j->Kp + b, 16,
                              k0 + 128 <= j->K ? 8 : 2);
}


typedef void (*rows_fn)(const Job *, int64_t, int64_t);

static void run_rows(const Job *j, rows_fn fn, int nthreads) {
    const int64_t block = 16;
    const int64_t nblocks = (j->N + block - 1) / block;
    /* Below ~64k codes a thread hand-off costs more than it saves. */
    int par = nthreads > 1 && j->N * j->K * (j->M < 4 ? j->M : 4) > 65536;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (par)
#endif
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t n0 = b * block, n1 = n0 + block < j->N ? n0 + block : j->N;
        fn(j, n0, n1);
    }
    (void)par;
}

static int parse_job(PyObject *args, Job *j, unsigned long long *x_ptr, int *nthreads,
                     int with_x) {
    unsigned long long y, codes, scales, zeros, bias;
    long long M, K, N, row_bytes, p_stride, group_len, G;
    int bits, tile_rows, scale_kind, zero_kind;
    float mid;
    if (!PyArg_ParseTuple(args, "KKLLLKLiiKiLKifLLKi", x_ptr, &y, &M, &K, &N, &codes, &row_bytes,
                          &bits, &tile_rows, &scales, &scale_kind, &p_stride, &zeros, &zero_kind, &mid,
                          &group_len, &G, &bias, nthreads))
        return 0;
    if (bits < 1 || bits > 8 || M < 0 || K <= 0 || N <= 0 || row_bytes <= 0 || group_len <= 0 ||
        G <= 0 || M > MAX_M || (G - 1) * group_len >= K || tile_rows < 0 || tile_rows > 16) {
        PyErr_SetString(PyExc_ValueError, "lmpress kernel: invalid shape or bit width");
        return 0;
    }
    (void)with_x;
    j->y = (float *)(uintptr_t)y;
    j->M = M;
    j->K = K;
    j->Kp = (K + 63) / 64 * 64;
    j->N = N;
    j->codes = (const uint8_t *)(uintptr_t)codes;
    j->row_bytes = row_bytes;
    j->bits = bits;
    j->tile_rows = tile_rows;
    j->cstride = (int64_t)(tile_rows ? tile_rows : 1) * 16 * bits;
    j->last_col = (row_bytes - 1) / (16 * bits);
    j->tail_bytes = row_bytes - j->last_col * 16 * bits;
    j->tile_bytes = (int64_t)(tile_rows ? tile_rows : 1) * row_bytes;
    j->scales = (const uint16_t *)(uintptr_t)scales;
    j->scale_kind = scale_kind;
    j->p_stride = p_stride;
    j->zeros = (const void *)(uintptr_t)zeros;
    j->zero_kind = zero_kind;
    j->mid = mid;
    j->group_len = group_len;
    j->G = G;
    j->bias = bias ? (const float *)(uintptr_t)bias : NULL;
    j->xp_planes = 0;
    if (*nthreads < 1)
        *nthreads = 1;
    return 1;
}

/* gemm(x, y, M, K, N, codes, row_bytes, bits, tile_rows, scales, scale_kind, p_stride, zeros,
 *      zero_kind, mid, group_len, G, bias, nthreads); pointers are addresses of
 * contiguous tensors (x float32 [M, K], y float32 [M, N], bias float32 [N] or 0). */
/* Activation copies up to this many floats live on the stack: a decode step's
 * products are small, and two heap round trips would be a visible part of them. */
#define LMP_STACK_X 4096

/* y = x @ W.T (+ bias) for the job's M rows of x (j->x unpadded [M, K], j->y [M, N]);
 * pads / permutes x as the chosen path needs. 0 on success, -1 out of memory.
 * Runs without the GIL. */
static int packed_gemm(Job *j, int nthreads) {
    float stack_pad[LMP_STACK_X], stack_perm[LMP_STACK_X];
    float *pad = NULL, *perm = NULL, *heap_pad = NULL, *heap_perm = NULL;
    const float *x = j->x;
#ifdef LMP_X86
    const int fits16 = j->G == 1 || j->group_len % 16 == 0,
              fits8 = j->G == 1 || j->group_len % 8 == 0;
    const int avx512 = have_avx512() && fits16, avx2 = !avx512 && have_avx2() && fits8;
    const int words = avx512 && use_word_planes(j);
    const int lanes = avx512 ? 16 : 8, planes = (avx512 || avx2) && use_planes(j, lanes);
#else
    const int lanes = 0, planes = 0, words = 0;
#endif
    j->xp_planes = 0;
    j->far = j->N * j->row_bytes >= FAR_MIN_BYTES ? far_prefetch() : 0;
    if (words) /* whole pieces of 128 codes per load: x padded to match */
        j->Kp = (j->K + 127) / 128 * 128;
    const size_t n = (size_t)(j->M * j->Kp);
    if (j->Kp != j->K) {
        pad = n <= LMP_STACK_X ? stack_pad : (heap_pad = (float *)malloc(n * sizeof(float)));
        if (!pad)
            return -1;
        for (int64_t m = 0; m < j->M; m++) {
            memcpy(pad + m * j->Kp, x + m * j->K, (size_t)j->K * sizeof(float));
            memset(pad + m * j->Kp + j->K, 0, (size_t)(j->Kp - j->K) * sizeof(float));
        }
        j->x = pad;
    }
    if (planes || words) {
        perm = n <= LMP_STACK_X ? stack_perm : (heap_perm = (float *)malloc(n * sizeof(float)));
        if (perm) { /* without it the 16-code path below serves */
            if (words)
                permute_word_planes(j, j->x, perm);
            else
                permute_planes(j, j->x, perm, lanes, 8 / j->bits);
            j->x = perm;
            j->xp_planes = words ? 2 : 1;
        }
    }
#ifdef LMP_X86
    if (j->xp_planes == 2)
        run_rows(j, rows_avx512_w4, nthreads);
    else if (avx512)
        run_rows(j, rows_avx512, nthreads);
    else if (avx2)
        run_rows(j, rows_avx2, nthreads);
    else
        run_rows(j, rows_scalar, nthreads);
#else
    run_rows(j, rows_scalar, nthreads);
#endif
    j->x = x;
    free(heap_pad);
    free(heap_perm);
    return 0;
}

/* packed_gemm for a Python call: without the GIL, out of memory as MemoryError. */
static PyObject *gemm_call(Job *j, int nthreads) {
    int rc;
    if (j->M == 0)
        Py_RETURN_NONE;
    Py_BEGIN_ALLOW_THREADS;
    rc = packed_gemm(j, nthreads < 1 ? 1 : nthreads);
    Py_END_ALLOW_THREADS;
    if (rc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_gemm(PyObject *self, PyObject *args) {
    Job j;
    unsigned long long xp;
    int nthreads;
    (void)self;
    if (!parse_job(args, &j, &xp, &nthreads, 1))
        return NULL;
    j.x = (const float *)(uintptr_t)xp;
    return gemm_call(&j, nthreads);
}

/* ------------------------------------------------------------ dense GEMV */

/* y[n] = W[n, :] . x for W [N, K] (row-major) float32, or bfloat16 (BF: its raw 16-bit
 * words, half the bytes of a head that a bf16 checkpoint stored) and x [K] float32.
 * BLAS's single-row product runs well below memory bandwidth on some CPUs (measured
 * by scripts/bench_kernels.py, BENCHMARKS.md), and the tied output head of a small
 * model is its largest matrix; four rows per pass share every load of x. */
static inline float dense_at(const void *w, int64_t i, const int BF) {
    return BF ? bf16_to_float(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

static inline void dense_rows_scalar_t(const void *w, const float *x, float *y, int64_t n0,
                                       int64_t n1, int64_t k, const int BF) {
    for (int64_t n = n0; n < n1; n++) {
        float s = 0.f;
        for (int64_t i = 0; i < k; i++)
            s += dense_at(w, n * k + i, BF) * x[i];
        y[n] = s;
    }
}

#ifdef LMP_X86
AVX512_INLINE __m512 dense_load16(const void *w, int64_t i, const int BF) {
    if (BF) {
        const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_loadu_ps((const float *)w + i);
}

AVX512_INLINE void dense_rows_avx512_t(const void *w, const float *x, float *y, int64_t n0,
                                       int64_t n1, int64_t k, const int BF) {
    const int64_t k16 = k & ~(int64_t)15;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const int64_t o = n * k;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t i = 0; i < k16; i += 16) {
            const __m512 xv = _mm512_loadu_ps(x + i);
            a0 = _mm512_fmadd_ps(dense_load16(w, o + i, BF), xv, a0);
            a1 = _mm512_fmadd_ps(dense_load16(w, o + k + i, BF), xv, a1);
            a2 = _mm512_fmadd_ps(dense_load16(w, o + 2 * k + i, BF), xv, a2);
            a3 = _mm512_fmadd_ps(dense_load16(w, o + 3 * k + i, BF), xv, a3);
        }
        float s[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1),
                      _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(a3)};
        for (int r = 0; r < 4; r++) {
            for (int64_t i = k16; i < k; i++)
                s[r] += dense_at(w, o + r * k + i, BF) * x[i];
            y[n + r] = s[r];
        }
    }
    dense_rows_scalar_t(w, x, y, n, n1, k, BF);
}

AVX2_INLINE __m256 dense_load8(const void *w, int64_t i, const int BF) {
    if (BF) {
        const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps((const float *)w + i);
}

AVX2_INLINE void dense_rows_avx2_t(const void *w, const float *x, float *y, int64_t n0,
                                   int64_t n1, int64_t k, const int BF) {
    const int64_t k8 = k & ~(int64_t)7;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
        const int64_t o = n * k;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        for (int64_t i = 0; i < k8; i += 8) {
            const __m256 xv = _mm256_loadu_ps(x + i);
            for (int r = 0; r < 4; r++)
                acc[r] = _mm256_fmadd_ps(dense_load8(w, o + r * k + i, BF), xv, acc[r]);
        }
        for (int r = 0; r < 4; r++) {
            float t[8];
            _mm256_storeu_ps(t, acc[r]);
            float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
            for (int64_t i = k8; i < k; i++)
                s += dense_at(w, o + r * k + i, BF) * x[i];
            y[n + r] = s;
        }
    }
    dense_rows_scalar_t(w, x, y, n, n1, k, BF);
}

typedef void (*dense_rows_fn)(const void *, const float *, float *, int64_t, int64_t, int64_t);
#define LMP_DENSE_ROWS(NAME, ATTR, IMPL, BF)                                                \
    ATTR static void NAME(const void *w, const float *x, float *y, int64_t n0, int64_t n1,  \
                          int64_t k) {                                                      \
        IMPL(w, x, y, n0, n1, k, BF);                                                       \
    }
LMP_DENSE_ROWS(dense_rows_avx512_f32, AVX512, dense_rows_avx512_t, 0)
LMP_DENSE_ROWS(dense_rows_avx512_bf16, AVX512, dense_rows_avx512_t, 1)
LMP_DENSE_ROWS(dense_rows_avx2_f32, AVX2, dense_rows_avx2_t, 0)
LMP_DENSE_ROWS(dense_rows_avx2_bf16, AVX2, dense_rows_avx2_t, 1)
#else
typedef void (*dense_rows_fn)(const void *, const float *, float *, int64_t, int64_t, int64_t);
#endif
static void dense_rows_scalar_f32(const void *w, const float *x, float *y, int64_t n0,
                                  int64_t n1, int64_t k) {
    dense_rows_scalar_t(w, x, y, n0, n1, k, 0);
}
static void dense_rows_scalar_bf16(const void *w, const float *x, float *y, int64_t n0,
                                   int64_t n1, int64_t k) {
    dense_rows_scalar_t(w, x, y, n0, n1, k, 1);
}

static void dense_gemv(const void *w, int bf16, const float *x, float *y, int64_t N, int64_t K,
                       int nthreads) {
    dense_rows_fn rows = bf16 ? dense_rows_scalar_bf16 : dense_rows_scalar_f32;
#ifdef LMP_X86
    if (have_avx512())
        rows = bf16 ? dense_rows_avx512_bf16 : dense_rows_avx512_f32;
    else if (have_avx2())
        rows = bf16 ? dense_rows_avx2_bf16 : dense_rows_avx2_f32;
#endif
    const int64_t chunk = 64; /* rows per task: a multiple of 4, small enough to balance */
    const int64_t tasks = (N + chunk - 1) / chunk;
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && N * K > 65536)
#endif
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t n0 = t * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
        rows(w, x, y, n0, n1, K);
    }
}

/* dense_gemv(w, x, y, n, k, nthreads[, bf16]): y [n] = W [n, k] x [k]; W float32, or
 * bfloat16 words when bf16 is 1; x, y float32 */
static PyObject *py_dense_gemv(PyObject *self, PyObject *args) {
    unsigned long long w, x, y;
    long long n, k;
    int nthreads, bf16 = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLLi|i", &w, &x, &y, &n, &k, &nthreads, &bf16))
        return NULL;
    Py_BEGIN_ALLOW_THREADS;
    dense_gemv((const void *)(uintptr_t)w, bf16, PTR(x), PTR(y), n, k, nthreads < 1 ? 1 : nthreads);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------- prepared linears */

/* One linear layer for the decode step (linear.h), held by a Python capsule: packed
 * codes, lookup tables, a dense float32 matrix or grid codes; y = W x + bias for one row. */
typedef struct LmpLinear {
    int kind; /* 0 packed, 1 lookup, 2 dense, 3 grid */
    Job job;  /* kind 0: every field but x, y, M, bias */
    LutJob lut;
    LmpGridJob grid; /* kind 3: every field but x, y, M, bias */
    const void *dense; /* kind 2: [n, k] float32, or bfloat16 words if dense_bf16 */
    int dense_bf16;
    int64_t n, k;
    const float *bias; /* [n] or NULL */
} Linear;

int lmp_linear_run(const Linear *L, const float *x, float *y_out, const float *residual,
                   int nthreads) {
    /* With a residual (which may alias y_out) the product goes to a temporary first. */
    float *y = residual ? (float *)malloc((size_t)L->n * sizeof(float)) : y_out;
    if (!y)
        return -1;
    if (L->kind == 1) {
        LutJob lj = L->lut;
        lj.x = x;
        lj.y = y;
        lj.bias = NULL;
        if (lmp_lut_gemv(&lj, nthreads)) {
            if (residual)
                free(y);
            return -1;
        }
    } else if (L->kind == 0) {
        Job j = L->job;
        j.x = x;
        j.y = y;
        j.M = 1;
        j.bias = NULL;
        if (packed_gemm(&j, nthreads)) {
            if (residual)
                free(y);
            return -1;
        }
    } else if (L->kind == 3) {
        LmpGridJob gj = L->grid;
        gj.x = x;
        gj.y = y;
        gj.M = 1;
        gj.bias = NULL;
        if (lmp_grid_gemm(&gj, nthreads)) {
            if (residual)
                free(y);
            return -1;
        }
    } else {
        dense_gemv(L->dense, L->dense_bf16, x, y, L->n, L->k, nthreads);
    }
    for (int64_t n = 0; n < L->n; n++)
        y_out[n] = y[n] + (L->bias ? L->bias[n] : 0.f) + (residual ? residual[n] : 0.f);
    if (residual)
        free(y);
    return 0;
}

static void free_capsule(PyObject *cap) { free(PyCapsule_GetPointer(cap, PyCapsule_GetName(cap))); }

static PyObject *new_linear(Linear *L) {
    Linear *p = (Linear *)malloc(sizeof(Linear));
    if (!p)
        return PyErr_NoMemory();
    *p = *L;
    return PyCapsule_New(p, "lmpress.linear", free_capsule);
}

/* packed_linear(<the gemm arguments with x=y=M=0>, bias): a capsule for decode_step */
static PyObject *py_packed_linear(PyObject *self, PyObject *args) {
    Linear L;
    unsigned long long unused;
    int nthreads;
    (void)self;
    memset(&L, 0, sizeof L);
    if (!parse_job(args, &L.job, &unused, &nthreads, 0))
        return NULL;
    L.kind = 0;
    L.n = L.job.N;
    L.k = L.job.K;
    L.bias = L.job.bias;
    L.job.bias = NULL;
    return new_linear(&L);
}

/* linear_gemm(linear, x, y, M, bias, nthreads): y = x @ W.T (+ bias) for M rows through a
 * packed_linear capsule, whose weight arguments were parsed once: a small layer's call
 * is bound by its overhead, and parsing gemm's 19 arguments is part of it. */
static PyObject *py_linear_gemm(PyObject *self, PyObject *args) {
    PyObject *cap;
    unsigned long long x, y, bias;
    long long M;
    int nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKKLKi", &cap, &x, &y, &M, &bias, &nthreads))
        return NULL;
    const Linear *L = (const Linear *)PyCapsule_GetPointer(cap, "lmpress.linear");
    if (!L)
        return NULL;
    if (L->kind != 0 || M < 0 || M > MAX_M) {
        PyErr_SetString(PyExc_ValueError, "lmpress linear_gemm: needs a packed_linear and 0 <= M <= max_m");
        return NULL;
    }
    Job j = L->job;
    j.x = PTR(x);
    j.y = (float *)(uintptr_t)y;
    j.M = M;
    j.bias = bias ? PTR(bias) : NULL;
    return gemm_call(&j, nthreads);
}

static PyObject *py_lut_linear(PyObject *self, PyObject *args) {
    Linear L;
    unsigned long long bias, codes, scales, zeros;
    long long n, k, k8, group_len, groups;
    int bits;
    (void)self;
    memset(&L, 0, sizeof L);
    if (!PyArg_ParseTuple(args, "KKKKLLLLLi", &bias, &codes, &scales, &zeros, &n, &k, &k8,
                          &group_len, &groups, &bits))
        return NULL;
    L.kind = 1;
    L.lut = (LutJob){NULL, NULL, NULL, (const uint8_t *)(uintptr_t)codes, PTR(scales), PTR(zeros),
                     n, k, k8, group_len, groups, bits};
    L.n = n;
    L.k = k;
    L.bias = bias ? PTR(bias) : NULL;
    return new_linear(&L);
}

static PyObject *py_dense_linear(PyObject *self, PyObject *args) {
    Linear L;
    unsigned long long w, bias;
    long long n, k;
    (void)self;
    memset(&L, 0, sizeof L);
    if (!PyArg_ParseTuple(args, "KLLK|i", &w, &n, &k, &bias, &L.dense_bf16))
        return NULL;
    L.kind = 2;
    L.dense = (const void *)(uintptr_t)w;
    L.n = n;
    L.k = k;
    L.bias = bias ? PTR(bias) : NULL;
    return new_linear(&L);
}

/* grid_linear(codes, row_bytes, bits, tile_rows, tables, tstride, planes, hi16, index, scales,
 *             scale_codes, scale_table, scale_rule, scale_div, p_stride, n, k, group_len,
 *             groups, bias): a
 * grid-format linear (grid.h) for decode_step, grid_gemm and grid_dequant; pointers are
 * addresses of contiguous tensors (planes 0: none; index 0: table 0 everywhere; scales 0
 * with scale_codes and scale_table, or scale_codes 0; bias float32 [n] or 0). */
static PyObject *py_grid_linear(PyObject *self, PyObject *args) {
    Linear L;
    unsigned long long codes, tables, planes, index, scales, scodes, stable, bias;
    long long row_bytes, tstride, p_stride, n, k, group_len, groups;
    int bits, tile_rows, hi16, scale_rule;
    float scale_div;
    (void)self;
    memset(&L, 0, sizeof L);
    if (!PyArg_ParseTuple(args, "KLiiKLKpKKKKifLLLLLK", &codes, &row_bytes, &bits, &tile_rows,
                          &tables, &tstride, &planes, &hi16, &index, &scales, &scodes, &stable,
                          &scale_rule, &scale_div, &p_stride, &n, &k, &group_len, &groups,
                          &bias))
        return NULL;
    /* the entries a table must hold for the lookups of this width (grid.h) */
    const long long need = bits < 1 || bits > 8 ? 0 : bits <= 3 ? 8 : 1LL << bits;
    if (!need || n <= 0 || k <= 0 || group_len <= 0 || groups <= 0 ||
        (groups - 1) * group_len >= k || row_bytes != (k + 7) / 8 * bits || tstride < need ||
        tile_rows < 0 || tile_rows > 16 || (p_stride != 0 && p_stride != groups) ||
        (planes && bits != 4) || !(scales ? !scodes : scodes && stable) || scale_rule < 0 ||
        scale_rule > 2 || (scale_rule && !scodes) || !(scale_div > 0.f)) {
        PyErr_SetString(PyExc_ValueError, "lmpress grid_linear: invalid shape, bit width or table");
        return NULL;
    }
    L.kind = 3;
    L.grid = (LmpGridJob){.K = k,
                          .N = n,
                          .codes = (const uint8_t *)(uintptr_t)codes,
                          .row_bytes = row_bytes,
                          .bits = bits,
                          .tile_rows = tile_rows,
                          .tables = PTR(tables),
                          .tstride = tstride,
                          .planes = (const uint8_t *)(uintptr_t)planes,
                          .hi16 = planes ? hi16 : 0,
                          .index = (const int32_t *)(uintptr_t)index,
                          .scales = scales ? PTR(scales) : NULL,
                          .scale_codes = (const uint8_t *)(uintptr_t)scodes,
                          .scale_table = scodes ? PTR(stable) : NULL,
                          .scale_rule = scale_rule,
                          .scale_div = scale_div,
                          .p_stride = p_stride,
                          .group_len = group_len,
                          .G = groups};
    L.n = n;
    L.k = k;
    L.bias = bias ? PTR(bias) : NULL;
    return new_linear(&L);
}

static const Linear *grid_capsule(PyObject *cap) {
    const Linear *L = (const Linear *)PyCapsule_GetPointer(cap, "lmpress.linear");
    if (L && L->kind != 3) {
        PyErr_SetString(PyExc_ValueError, "lmpress grid kernel: needs a grid_linear");
        return NULL;
    }
    return L;
}

/* grid_gemm(linear, x, y, M, bias, nthreads): y [M, n] = x [M, k] @ W.T (+ bias [n] or 0)
 * through a grid_linear capsule (float32, contiguous), 0 <= M <= max_m; the capsule's own
 * bias is not added. */
static PyObject *py_grid_gemm(PyObject *self, PyObject *args) {
    PyObject *cap;
    unsigned long long x, y, bias;
    long long M;
    int nthreads, rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKKLKi", &cap, &x, &y, &M, &bias, &nthreads))
        return NULL;
    const Linear *L = grid_capsule(cap);
    if (!L)
        return NULL;
    if (M < 0 || M > MAX_M) {
        PyErr_SetString(PyExc_ValueError, "lmpress grid_gemm: needs 0 <= M <= max_m");
        return NULL;
    }
    LmpGridJob j = L->grid;
    j.x = PTR(x);
    j.y = PTR(y);
    j.M = M;
    j.bias = bias ? PTR(bias) : NULL;
    Py_BEGIN_ALLOW_THREADS;
    rc = lmp_grid_gemm(&j, nthreads < 1 ? 1 : nthreads);
    Py_END_ALLOW_THREADS;
    if (rc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* grid_dequant(linear, w, nthreads): w float32 [n, k] from a grid_linear capsule. */
static PyObject *py_grid_dequant(PyObject *self, PyObject *args) {
    PyObject *cap;
    unsigned long long w;
    int nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "OKi", &cap, &w, &nthreads))
        return NULL;
    const Linear *L = grid_capsule(cap);
    if (!L)
        return NULL;
    Py_BEGIN_ALLOW_THREADS;
    lmp_grid_dequant(&L->grid, PTR(w), nthreads < 1 ? 1 : nthreads);
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

/* decode_step(blocks, x, pos, cos, sin, scratch, dims, eps, scale, nthreads): glue for
 * lmp_decode_step (decode_ops.c). blocks: tuple of (ln1, ln2, qkv, o, gu, down, kcache,
 * vcache[, qnorm, knorm]) with capsules for the linears and 0 for an absent per-head
 * norm; dims: (hidden, n_head, n_kv, hd, inter, max_len); scratch: (h, qkv, att, gu,
 * act) float32 buffers. Updates x [hidden] in place and the caches at pos. */
static PyObject *py_decode_step(PyObject *self, PyObject *args) {
    PyObject *blocks;
    unsigned long long x, cosp, sinp, h, qkvb, att, gub, act;
    long long pos, hidden, n_head, n_kv, hd, inter, max_len;
    float eps, scale;
    int nthreads, rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "O!KLKK(KKKKK)(LLLLLL)ffi", &PyTuple_Type, &blocks, &x, &pos,
                          &cosp, &sinp, &h, &qkvb, &att, &gub, &act, &hidden, &n_head, &n_kv,
                          &hd, &inter, &max_len, &eps, &scale, &nthreads))
        return NULL;
    if (pos < 0 || pos >= max_len || n_kv <= 0 || n_head % n_kv) {
        PyErr_SetString(PyExc_ValueError, "lmpress decode_step: bad position or head counts");
        return NULL;
    }
    const Py_ssize_t nb = PyTuple_GET_SIZE(blocks);
    LmpBlock *bl = (LmpBlock *)malloc((size_t)(nb ? nb : 1) * sizeof(LmpBlock));
    if (!bl)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *t = PyTuple_GET_ITEM(blocks, i);
        unsigned long long ln1, ln2, kc, vc, qn = 0, kn = 0;
        PyObject *c[4];
        if (!PyArg_ParseTuple(t, "KKOOOOKK|KK", &ln1, &ln2, &c[0], &c[1], &c[2], &c[3], &kc, &vc,
                              &qn, &kn)) {
            free(bl);
            return NULL;
        }
        const Linear *lin[4];
        for (int q = 0; q < 4; q++) {
            lin[q] = (const Linear *)PyCapsule_GetPointer(c[q], "lmpress.linear");
            if (!lin[q]) {
                free(bl);
                return NULL;
            }
        }
        bl[i] = (LmpBlock){PTR(ln1), PTR(ln2), lin[0], lin[1], lin[2], lin[3], PTR(kc), PTR(vc),
                           qn ? PTR(qn) : NULL, kn ? PTR(kn) : NULL};
    }
    const LmpDecodeScratch sc = {PTR(h), PTR(qkvb), PTR(att), PTR(gub), PTR(act)};
    const LmpDecodeDims dims = {hidden, n_head, n_kv, hd, inter, max_len};
    Py_BEGIN_ALLOW_THREADS;
    rc = lmp_decode_step(bl, nb, PTR(x), pos, PTR(cosp), PTR(sinp), &sc, &dims, eps, scale,
                         nthreads < 1 ? 1 : nthreads);
    Py_END_ALLOW_THREADS;
    free(bl);
    if (rc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* dequant(0, w, 0, K, N, ...same as gemm...): w float32 [N, K]. */
static PyObject *py_dequant(PyObject *self, PyObject *args) {
    Job j;
    unsigned long long unused;
    int nthreads;
    (void)self;
    if (!parse_job(args, &j, &unused, &nthreads, 0))
        return NULL;
    float *w = j.y;
    Py_BEGIN_ALLOW_THREADS;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && j.N * j.K > 65536)
#endif
    for (int64_t n = 0; n < j.N; n++) {
        const uint8_t *row, *tail;
        row_starts(&j, n, 1, &row, &tail);
        float *out = w + n * j.K;
        for (int64_t g = 0; g < j.G; g++) {
            int64_t k0 = g * j.group_len, k1 = k0 + j.group_len;
            if (k1 > j.K)
                k1 = j.K;
            float s = job_scale(&j, n, g), z = job_zero(&j, n, g);
            for (int64_t k = k0; k < k1; k++)
                out[k] = ((float)get_code(&j, row, tail, k) - z) * s;
        }
    }
    Py_END_ALLOW_THREADS;
    Py_RETURN_NONE;
}

static PyObject *py_info(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
#ifdef _OPENMP
    int omp = 1;
#else
    int omp = 0;
#endif
    /* the rows a batch-1 tile of the chosen vector path works on: the code layout's tile */
    const int tile_rows = have_avx512() ? 8 : have_avx2() ? 4 : 0;
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i}", "avx512", have_avx512(), "avx2", have_avx2(),
                         "openmp", omp, "max_m", MAX_M, "tile_rows", tile_rows);
}

static PyObject *py_rmsnorm(PyObject *self, PyObject *args) {
    unsigned long long x, w, out;
    long long rows, n;
    float eps;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLLf", &x, &w, &out, &rows, &n, &eps))
        return NULL;
    lmp_rmsnorm(PTR(x), PTR(w), PTR(out), rows, n, eps);
    Py_RETURN_NONE;
}

static PyObject *py_rope(PyObject *self, PyObject *args) {
    unsigned long long x, c, s;
    long long heads, hd;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLL", &x, &c, &s, &heads, &hd))
        return NULL;
    lmp_rope(PTR(x), PTR(c), PTR(s), heads, hd);
    Py_RETURN_NONE;
}

static PyObject *py_attend(PyObject *self, PyObject *args) {
    unsigned long long q, k, v, out;
    long long n_head, n_kv, hd, t, t_stride;
    float scale;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKLLLLLf", &q, &k, &v, &out, &n_head, &n_kv, &hd, &t,
                          &t_stride, &scale))
        return NULL;
    if (n_kv <= 0 || n_head % n_kv || t <= 0 || t > t_stride) {
        PyErr_SetString(PyExc_ValueError, "lmpress attend: invalid head counts or length");
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS;
    rc = lmp_attend(PTR(q), PTR(k), PTR(v), PTR(out), n_head, n_kv, hd, t, t_stride, scale);
    Py_END_ALLOW_THREADS;
    if (rc)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_silu_mul(PyObject *self, PyObject *args) {
    unsigned long long gu, out;
    long long n;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKL", &gu, &out, &n))
        return NULL;
    lmp_silu_mul(PTR(gu), PTR(out), n);
    Py_RETURN_NONE;
}

/* lut_gemv(x, y, bias, codes, scales, zeros, n, k, k8, group_len, groups, bits, nthreads) */
static PyObject *py_lut_gemv(PyObject *self, PyObject *args) {
    unsigned long long x, y, bias, codes, scales, zeros;
    long long n, k, k8, group_len, groups;
    int bits, nthreads, rc;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKKKKLLLLLii", &x, &y, &bias, &codes, &scales, &zeros, &n, &k,
                          &k8, &group_len, &groups, &bits, &nthreads))
        return NULL;
    if (bits < 1 || bits > 4 || k8 % 8 || group_len % 8 || groups < 1 || !have_avx512()) {
        PyErr_SetString(PyExc_ValueError, "lmpress lut_gemv: needs 1-4 bits, groups of 8k, AVX-512");
        return NULL;
    }
    LutJob j = {PTR(x), PTR(y), bias ? PTR(bias) : NULL, (const uint8_t *)(uintptr_t)codes,
                PTR(scales), PTR(zeros), n, k, k8, group_len, groups, bits};
    Py_BEGIN_ALLOW_THREADS;
    rc = lmp_lut_gemv(&j, nthreads < 1 ? 1 : nthreads);
    Py_END_ALLOW_THREADS;
    if (rc == -1)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* evict(ptr, nbytes): flush those bytes from every cache level, so that the next read
 * comes from memory as it does when decoding a model larger than the caches (the GEMV
 * path race times each candidate so). Without clflush (not x86) it does nothing. */
static PyObject *py_evict(PyObject *self, PyObject *args) {
    unsigned long long ptr;
    long long nbytes;
    (void)self;
    if (!PyArg_ParseTuple(args, "KL", &ptr, &nbytes))
        return NULL;
#ifdef LMP_X86
    const char *p = (const char *)(uintptr_t)ptr;
    for (long long off = 0; off < nbytes; off += 64)
        _mm_clflush(p + off);
    _mm_mfence();
#endif
    Py_RETURN_NONE;
}

static PyObject *py_set_prefetch(PyObject *self, PyObject *args) {
    long long bytes, far = 0;
    PyObject *far_arg = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "L|O", &bytes, &far_arg))
        return NULL;
    if (far_arg != Py_None && (far = PyLong_AsLongLong(far_arg)) == -1 && PyErr_Occurred())
        return NULL;
    PyObject *old = Py_BuildValue("(LL)", (long long)prefetch_dist, (long long)far_prefetch());
    if (!old)
        return NULL;
    prefetch_dist = bytes < 0 ? 0 : bytes;
    if (far_arg != Py_None)
        prefetch_far = far < 0 ? 0 : far;
    return old;
}

static PyObject *py_set_word_planes(PyObject *self, PyObject *args) {
    int on;
    (void)self;
    if (!PyArg_ParseTuple(args, "p", &on))
        return NULL;
#ifdef LMP_X86
    word_planes = on;
#endif
    Py_RETURN_NONE;
}

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    int level;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &level))
        return NULL;
    simd_level = level < 0 ? 0 : level > 2 ? 2 : level;
    lmp_decode_set_vector(simd_level > 0);
    lmp_grid_set_simd(simd_level);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_simd", py_set_simd, METH_VARARGS, "highest vector path: 2 AVX-512, 1 AVX2, 0 scalar"},
    {"evict", py_evict, METH_VARARGS, "flush a byte range from the caches (evict(ptr, nbytes))"},
    {"set_word_planes", py_set_word_planes, METH_VARARGS,
     "use the 4-bit word-plane path where it applies (1) or not (0)"},
    {"set_prefetch", py_set_prefetch, METH_VARARGS,
     "set_prefetch(near[, far]): bytes the vector GEMV paths prefetch ahead into L1 (and L2, far; 0 off); returns the old (near, far)"},
    {"gemm", py_gemm, METH_VARARGS, "y = x @ dequant(W).T (+ bias) from packed codes"},
    {"dequant", py_dequant, METH_VARARGS, "float32 weights from packed codes"},
    {"info", py_info, METH_NOARGS, "which paths this build and CPU have"},
    {"rmsnorm", py_rmsnorm, METH_VARARGS, "out = x * rsqrt(mean(x^2) + eps) * w"},
    {"rope", py_rope, METH_VARARGS, "rotate-half rotary embedding in place"},
    {"attend", py_attend, METH_VARARGS, "one query position against a KV cache"},
    {"silu_mul", py_silu_mul, METH_VARARGS, "silu(gate) * up"},
    {"lut_gemv", py_lut_gemv, METH_VARARGS, "table-lookup GEMV for 1-4 bit codes"},
    {"linear_gemm", py_linear_gemm, METH_VARARGS, "y = x @ W.T (+ bias) through a packed_linear"},
    {"packed_linear", py_packed_linear, METH_VARARGS, "a packed-code linear for decode_step"},
    {"lut_linear", py_lut_linear, METH_VARARGS, "a lookup-table linear for decode_step"},
    {"grid_linear", py_grid_linear, METH_VARARGS, "a grid-format (table lookup) linear"},
    {"grid_gemm", py_grid_gemm, METH_VARARGS, "y = x @ W.T (+ bias) through a grid_linear"},
    {"grid_dequant", py_grid_dequant, METH_VARARGS, "float32 weights of a grid_linear"},
    {"dense_linear", py_dense_linear, METH_VARARGS, "a float32 (or bfloat16) linear for decode_step"},
    {"dense_gemv", py_dense_gemv, METH_VARARGS, "y = W x for one float32 row (W float32 or bfloat16)"},
    {"decode_step", py_decode_step, METH_VARARGS, "one token through every block"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu(void) { return PyModule_Create(&module); }
