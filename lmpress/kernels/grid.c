/* Table-lookup products for grid formats: codes index a table of values, scaled per
 * group (FP8, NVFP4, MX, FP4, NF4 and the learned or searched grids; see
 * lmpress.formats.grid.GridFormat.kernel_tables for how a format becomes tables).
 *
 *     y[m, n] = sum_g s[n, g] * sum_{k in g} T_{i(n, g)}[q[n, k]] * x[m, k]  (+ bias[n])
 *
 * Sums are taken over the tables' unscaled values and multiplied by the group's scale
 * after them, as the integer kernel does with (q - z): scaling a table costs a
 * table's worth of multiplies per group, which for 16 entries and groups of 16
 * (NVFP4) is as much as the lookups themselves.
 *
 * Vector paths (AVX2/FMA and AVX-512, chosen at run time; the file itself is compiled
 * for the baseline ISA). AVX2, by table size:
 *   - 16 entries (every 4-bit format), groups of whole blocks of 16 codes: byte
 *     shuffles (lookup_bytes). The table is split into four 16-byte tables, one per
 *     byte of its float32 entries; one vpshufb looks up one byte of 32 values, and two
 *     rounds of unpacking assemble the floats, x being permuted to the order they come
 *     out in. vpshufb and the unpacks are in-lane shuffles, which issue at twice the
 *     rate of the cross-lane vpermps a 16-entry float lookup otherwise takes two of
 *     per eight codes (and a blend). Tables of bfloat16 values (E2M1) skip the two
 *     lookups of their zero low bytes.
 *   - up to 8 entries (lut3 and below), or 16 in other groups: eight codes to int32
 *     lanes, then one vpermps (which reads the low 3 bits of a lane; 2- and 1-bit
 *     tables are stored repeated to 8 entries, so that the bits of the next codes
 *     above a code select the same value), or two and a blend on bit 3;
 *   - 64 or 256 entries (MXFP6, FP8, MXFP8): a gather from the table.
 * On AVX-512, 16-entry tables take the word-plane path of the integer kernel instead
 * (see the AVX-512 section below).
 * A tile computes 4 weight rows against one activation row (or 2 against two) so that
 * each activation vector is loaded once for several rows and the FMA chains overlap.
 * Groups must be whole runs of 8 codes for it (G == 1 or group_len % 8 == 0); other
 * weights take the portable scalar path. Rows are split over OpenMP threads.
 *
 * The codes are in the integer kernel's layout (tile_rows rows interleaved in pieces
 * of 128 codes), so that a tile reads one stream of memory.
 */
#include "grid.h"
#include "simd.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define GRID_MAX_M 64
/* Padded activation copies up to this many floats live on the stack: a decode step's
 * products are small, and a heap round trip would be a visible part of them. */
#define GRID_STACK_X 4096
/* Bytes ahead of the codes being read that the vector path prefetches: the integer
 * kernel's distance (see prefetch_dist in _cpu.c), for the same code layout. */
#define GRID_PREFETCH 4096

/* A job and what its loops derive from it once. */
typedef struct {
    const LmpGridJob *j;
    const float *x;  /* [M, xs]: j->x, or a copy zero-padded to whole runs of 8 */
    int64_t xs;      /* row stride of x */
    int64_t piece;   /* bytes of 128 codes */
    int64_t cstride; /* bytes from one piece of a row to its next */
    int64_t last_col, tail_bytes, tile_bytes;
    int bytes; /* the byte-table path, x permuted to match (pad_x): 1; with steps of 64: 2 */
    int64_t k8; /* codes of a row with its padding to a whole run: K rounded up to 8 */
} Run;

static void run_init(Run *u, const LmpGridJob *j) {
    const int64_t T = j->tile_rows ? j->tile_rows : 1;
    u->j = j;
    u->x = j->x;
    u->xs = j->K;
    u->piece = 16 * (int64_t)j->bits;
    u->cstride = T * u->piece;
    u->last_col = (j->row_bytes - 1) / u->piece;
    u->tail_bytes = j->row_bytes - u->last_col * u->piece;
    u->tile_bytes = T * j->row_bytes;
    u->bytes = 0;
    u->k8 = (j->K + 7) & ~(int64_t)7;
}

/* Where the pieces of rows n0 .. n0 + R - 1 start (rows) and their last, possibly
 * shorter, pieces (tails); the layout of _cpu.c's row_starts. */
static inline void row_starts(const Run *u, int64_t n0, int R, const uint8_t **rows,
                              const uint8_t **tails) {
    const int64_t T = u->j->tile_rows ? u->j->tile_rows : 1;
    int64_t i = n0 % T;
    const uint8_t *tile = u->j->codes + (n0 / T) * u->tile_bytes;
    for (int r = 0; r < R; r++, i++) {
        if (i == T) {
            tile += u->tile_bytes;
            i = 0;
        }
        rows[r] = tile + i * u->piece;
        tails[r] = tile + u->last_col * T * u->piece + i * u->tail_bytes;
    }
}

/* The run of 8 codes holding code k of a row (row_starts). */
static inline const uint8_t *run_at(const Run *u, const uint8_t *row, const uint8_t *tail,
                                    int64_t k) {
    const int64_t c = k >> 7;
    return (c == u->last_col ? tail : row + c * u->cstride) + ((k & 127) >> 3) * u->j->bits;
}

static inline uint32_t get_code(const Run *u, const uint8_t *row, const uint8_t *tail,
                                int64_t k) {
    const int bits = u->j->bits;
    const uint8_t *run = run_at(u, row, tail, k);
    const int off = (int)(k & 7) * bits, byte = off >> 3, sh = off & 7;
    uint32_t v = run[byte];
    if (sh + bits > 8) /* the code straddles two bytes, both inside this run */
        v |= (uint32_t)run[byte + 1] << 8;
    return (v >> sh) & ((1u << bits) - 1u);
}

static inline const float *table_of(const LmpGridJob *j, int64_t n, int64_t g) {
    const int64_t t = j->index ? j->index[n * j->p_stride + g] : 0;
    return j->tables + t * j->tstride;
}

/* The scale at offset o of the [P, G] parameters. */
static inline float scale_at(const LmpGridJob *j, int64_t o) {
    return j->scale_codes ? j->scale_table[j->scale_codes[o]] : j->scales[o];
}

static inline float scale_of(const LmpGridJob *j, int64_t n, int64_t g) {
    return scale_at(j, n * j->p_stride + g);
}

/* ---------------------------------------------------------------- scalar path */

static void rows_scalar(const Run *u, int64_t n0, int64_t n1) {
    const LmpGridJob *j = u->j;
    float acc[GRID_MAX_M], racc[GRID_MAX_M];
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *row, *tail;
        row_starts(u, n, 1, &row, &tail);
        for (int64_t m = 0; m < j->M; m++)
            racc[m] = 0.f;
        for (int64_t g = 0; g < j->G; g++) {
            int64_t k0 = g * j->group_len, k1 = k0 + j->group_len;
            if (k1 > j->K)
                k1 = j->K;
            const float *tp = table_of(j, n, g);
            for (int64_t m = 0; m < j->M; m++)
                acc[m] = 0.f;
            for (int64_t k = k0; k < k1; k++) {
                const float w = tp[get_code(u, row, tail, k)];
                for (int64_t m = 0; m < j->M; m++)
                    acc[m] += w * u->x[m * u->xs + k];
            }
            const float s = scale_of(j, n, g);
            for (int64_t m = 0; m < j->M; m++)
                racc[m] += s * acc[m];
        }
        for (int64_t m = 0; m < j->M; m++)
            j->y[m * j->N + n] = racc[m] + (j->bias ? j->bias[n] : 0.f);
    }
}

/* ------------------------------------------------------------------ AVX2 path */
static int grid_simd = 2;

void lmp_grid_set_simd(int level) { grid_simd = level; }

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GRID_AVX2 __attribute__((target("avx2,fma")))
#define GRID_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

static int grid_avx2(void) {
    static int cached = -1;
    if (grid_simd < 1)
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

/* Eight codes starting at a multiple of 8, as int32 lanes in order. For B <= 4 the
 * lanes keep the bits of the codes above them: the lookups read only the low B bits
 * (see lookup8). B is a compile-time constant after inlining. */
GRID_AVX2_INLINE __m256i codes8(const uint8_t *run, const int B) {
    if (B == 8)
        return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)run));
    if (B <= 4) {
        /* one 4-byte load (the buffer has tail padding): a B-byte copy would be put
         * together on the stack and stall the load that follows */
        uint32_t v;
        memcpy(&v, run, 4);
        const __m256i sh = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B);
        return _mm256_srlv_epi32(_mm256_set1_epi32((int)v), sh);
    }
    uint64_t v;
    memcpy(&v, run, 8);
    const __m256i sh = _mm256_setr_epi32(0, B, 2 * B, 3 * B, 0, B, 2 * B, 3 * B);
    const __m256i q = _mm256_set_m128i(_mm_set1_epi32((int)(uint32_t)(v >> (4 * B))),
                                       _mm_set1_epi32((int)(uint32_t)v));
    return _mm256_and_si256(_mm256_srlv_epi32(q, sh), _mm256_set1_epi32((1 << B) - 1));
}

/* The table values of eight codes (codes8 lanes) from table tp. */
GRID_AVX2_INLINE __m256 lookup8(__m256i q, const float *tp, const int B) {
    if (B <= 3)
        return _mm256_permutevar8x32_ps(_mm256_loadu_ps(tp), q);
    if (B == 4) {
        const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tp), q);
        const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(tp + 8), q);
        /* bit 3 of the code to the sign bit, which blendv reads; the bits above it
         * (the next codes) shift out */
        return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(q, 28)));
    }
    return _mm256_i32gather_ps(tp, q, 4);
}

/* A 16-entry table as four byte tables (tb[b]: byte b of each entry's float32, in both
 * 128-bit lanes), from its planes (LmpGridJob.planes: 4 x 16 bytes). */
GRID_AVX2_INLINE void byte_tables(const uint8_t *planes, __m256i *tb) {
    for (int b = 0; b < 4; b++)
        tb[b] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(planes + 16 * b)));
}

/* The byte-table lookup of 16 or 32 four-bit codes (the bytes at c): each byte table
 * gives one byte of 32 values in one vpshufb (16 entries per 128-bit lane, a cheap
 * in-lane shuffle), and two rounds of unpacking put the four bytes of each value
 * together. Of eight codes 8v..8v+7, float lane p of f[v] holds code 8v + 2(p % 4) +
 * p / 4 (the low nibbles give the even codes, the high ones the odd), which x is
 * permuted to match (pad_x). Looking values up by cross-lane permutes instead takes two
 * of them and a blend per eight codes, and those permutes issue at half the rate. */
GRID_AVX2_INLINE void lookup_bytes(const uint8_t *c, const __m256i *tb, __m256 *f,
                                   const int N32, const int H) {
    const __m128i nib = _mm_set1_epi8(15);
    const __m128i raw = N32 ? _mm_loadu_si128((const __m128i *)c) : _mm_loadl_epi64((const __m128i *)c);
    const __m256i idx = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), nib),
                                         _mm_and_si128(raw, nib));
    /* H: every entry's low two bytes are 0 (bfloat16 values: E2M1), two lookups fewer */
    const __m256i p0 = H ? _mm256_setzero_si256() : _mm256_shuffle_epi8(tb[0], idx);
    const __m256i p1 = H ? _mm256_setzero_si256() : _mm256_shuffle_epi8(tb[1], idx);
    const __m256i p2 = _mm256_shuffle_epi8(tb[2], idx), p3 = _mm256_shuffle_epi8(tb[3], idx);
    const __m256i l01 = _mm256_unpacklo_epi8(p0, p1), l23 = _mm256_unpacklo_epi8(p2, p3);
    f[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
    f[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
    if (N32) {
        const __m256i h01 = _mm256_unpackhi_epi8(p0, p1), h23 = _mm256_unpackhi_epi8(p2, p3);
        f[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
        f[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
    }
}

/* At the first code of each piece (128 codes), the tile's stream GRID_PREFETCH bytes
 * ahead: about one request per cache line read. */
static inline void prefetch_ahead(const Run *u, const uint8_t *row, int64_t k) {
    if (k & 127)
        return;
    const uint8_t *p = row + (k >> 7) * u->cstride + GRID_PREFETCH;
    for (int64_t l = 0; l < u->cstride; l += 64)
        __builtin_prefetch(p + l, 0, 3);
}

/* The bytes of 16, 32 or 64 codes from code k (a multiple of 16) of the rows whose pieces
 * start at rows[r] and last pieces at tails[r] (row_starts), for the R rows. */
GRID_AVX2_INLINE void code_ptrs(const Run *u, const uint8_t **rows, const uint8_t **tails,
                                int64_t k, const uint8_t **p, const int R) {
    const int64_t c = k >> 7, o = ((k & 127) >> 3) * 4, off = c * u->cstride + o;
    const int tail = c == u->last_col;
    for (int r = 0; r < R; r++)
        p[r] = tail ? tails[r] + o : rows[r] + off;
}

/* acc[m] += the products of 32 (S = 2) or 16 (S = 1) codes at c, looked up in tb, with
 * activation rows xb + m * xs from column k (the byte-table path). */
GRID_AVX2_INLINE void bytes_fma(const uint8_t *c, const __m256i *tb, const float *xb,
                                int64_t xs, int64_t k, __m256 *acc, const int MT, const int S,
                                const int H) {
    __m256 f[4];
    lookup_bytes(c, tb, f, S == 2, H);
    for (int m = 0; m < MT; m++)
        for (int v = 0; v < 2 * S; v++)
            acc[m] = _mm256_fmadd_ps(f[v], _mm256_loadu_ps(xb + m * xs + k + 8 * v), acc[m]);
}

/* lookup_bytes for 64 codes (the 32 bytes at c): the low and the high nibbles are
 * each a vector of 32 indices without lane crossing, which saves the insert and two
 * masks of two lookups of 32. Lane p of f[w] holds code 32 (p / 4) + 8 (w % 4) +
 * 2 (p % 4) + w / 4 (pad_x). */
GRID_AVX2_INLINE void lookup_bytes64(const uint8_t *c, const __m256i *tb, __m256 *f,
                                     const int H) {
    const __m256i nib = _mm256_set1_epi8(15);
    const __m256i v = _mm256_loadu_si256((const __m256i *)c);
    const __m256i idx[2] = {_mm256_and_si256(v, nib),
                            _mm256_and_si256(_mm256_srli_epi16(v, 4), nib)};
    for (int h = 0; h < 2; h++) {
        const __m256i p0 = H ? _mm256_setzero_si256() : _mm256_shuffle_epi8(tb[0], idx[h]);
        const __m256i p1 = H ? _mm256_setzero_si256() : _mm256_shuffle_epi8(tb[1], idx[h]);
        const __m256i p2 = _mm256_shuffle_epi8(tb[2], idx[h]);
        const __m256i p3 = _mm256_shuffle_epi8(tb[3], idx[h]);
        const __m256i l01 = _mm256_unpacklo_epi8(p0, p1), l23 = _mm256_unpacklo_epi8(p2, p3);
        const __m256i h01 = _mm256_unpackhi_epi8(p0, p1), h23 = _mm256_unpackhi_epi8(p2, p3);
        f[4 * h] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
        f[4 * h + 1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
        f[4 * h + 2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
        f[4 * h + 3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
    }
}

GRID_AVX2_INLINE void bytes_fma64(const uint8_t *c, const __m256i *tb, const float *xb,
                                  int64_t xs, int64_t k, __m256 *acc, const int MT, const int H) {
    __m256 f[8];
    lookup_bytes64(c, tb, f, H);
    for (int m = 0; m < MT; m++)
        for (int v = 0; v < 8; v++)
            acc[m] = _mm256_fmadd_ps(f[v], _mm256_loadu_ps(xb + m * xs + k + 8 * v), acc[m]);
}

/* The byte-table path (B = 4, groups of whole blocks of 16 codes): as tile. A group's
 * sums are kept in acc and added, scaled, into the row sums at its end, which stay in
 * memory (racc): they change once per group, and the registers are wanted for the
 * tables and accumulators of the inner loop. SH, flags: 1 one table for every group,
 * held in registers (otherwise each row's table is loaded at each step, from L1); 2
 * tables of bfloat16 values (lookup_bytes' H); 4 steps of 64 codes where they fit. */
GRID_AVX2_INLINE void tile_bytes(const Run *u, int64_t n0, int64_t m0, float *out, const int R,
                                 const int MT, const int SH) {
    const LmpGridJob *j = u->j;
    const int64_t xs = u->xs, L = j->group_len, G = j->G;
    const int64_t kend = (j->K + 15) & ~(int64_t)15; /* x is zero-padded to here */
    const float *xb = u->x + m0 * xs;
    const uint8_t *rows[4], *tails[4], *p[4];
    float racc[4][2][8];
    __m256i shared[4];
    if (SH & 1)
        byte_tables(j->planes, shared);
    row_starts(u, n0, R, rows, tails);
    memset(racc, 0, sizeof racc);
    for (int64_t g = 0; g < G; g++) {
        const int64_t k0 = g * L, k1 = k0 + L < kend ? k0 + L : kend;
        const uint8_t *tpl[4];
        __m256 acc[4][2];
        for (int r = 0; r < R; r++) {
            if (!(SH & 1))
                tpl[r] = j->planes + 64 * (int64_t)j->index[(n0 + r) * j->p_stride + g];
            for (int m = 0; m < MT; m++)
                acc[r][m] = _mm256_setzero_ps();
        }
        /* steps of 32 (64) codes start at multiples of 32 (64), so that their bytes never
         * straddle two pieces of 128 codes (which the tiled layout keeps apart); a group
         * starting or ending between them takes a step of 16 there. Steps of 64 (SH & 4)
         * take whole runs of the row's codes only, as pad_x permutes x. */
        const int64_t k64 = k1 < u->k8 ? k1 : u->k8;
        for (int64_t k = k0; k < k1;) {
            const int S = (SH & 4) && (k & 63) == 0 && k + 64 <= k64 ? 4
                          : (k & 31) == 0 && k + 32 <= k1             ? 2
                                                                       : 1;
            prefetch_ahead(u, rows[0], k);
            code_ptrs(u, rows, tails, k, p, R);
            for (int r = 0; r < R; r++) {
                __m256i own[4];
                if (!(SH & 1))
                    byte_tables(tpl[r], own);
                if (S == 4)
                    bytes_fma64(p[r], (SH & 1) ? shared : own, xb, xs, k, acc[r], MT, SH & 2);
                else if (S == 2)
                    bytes_fma(p[r], (SH & 1) ? shared : own, xb, xs, k, acc[r], MT, 2, SH & 2);
                else
                    bytes_fma(p[r], (SH & 1) ? shared : own, xb, xs, k, acc[r], MT, 1, SH & 2);
            }
            k += 16 * S;
        }
        for (int r = 0; r < R; r++) {
            const __m256 sv = _mm256_set1_ps(scale_of(j, n0 + r, g));
            for (int m = 0; m < MT; m++)
                _mm256_storeu_ps(racc[r][m],
                                 _mm256_fmadd_ps(acc[r][m], sv, _mm256_loadu_ps(racc[r][m])));
        }
    }
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            out[r * MT + m] = lmp_hsum256(_mm256_loadu_ps(racc[r][m]));
}

/* tile_bytes for groups of whole steps of 32 codes (GS = 1: MXFP4, NF4 in groups of 64,
 * ...) or of 16 codes sharing one table (GS = 2: NVFP4): each step's sum is scaled into
 * the row sums at once, so that no group sum outlives its step and the row sums stay
 * in registers. tile_bytes keeps a group's sum across its steps, which leaves too few
 * registers for the row sums, spending a store and a load on each per group, and
 * would take NVFP4's groups of 16 one at a time, by lookups of 16 codes (two thirds of
 * the work of 32 each). */
GRID_AVX2_INLINE void tile_bytes_small(const Run *u, int64_t n0, int64_t m0, float *out,
                                       const int R, const int MT, const int SH, const int GS,
                                       const int ONE) {
    const LmpGridJob *j = u->j;
    const int64_t xs = u->xs, G = j->G, L = ONE ? 32 / GS : j->group_len;
    const int64_t kpad = (j->K + 15) & ~(int64_t)15; /* x is zero-padded to here */
    /* W: steps of 64 codes (SH & 4, groups of whole steps of 64), over whole runs of
     * the row's codes only, as pad_x permutes x */
    const int W = !ONE && (SH & 4);
    const int64_t spg = ONE ? 1 : L / (W ? 64 : 32); /* steps per GS groups */
    const int64_t kfull = W ? u->k8 : kpad;
    const float *xb = u->x + m0 * xs;
    const uint8_t *rows[4], *tails[4], *p[4];
    __m256 racc[4][2];
    __m256i shared[4];
    if (SH & 1)
        byte_tables(j->planes, shared);
    row_starts(u, n0, R, rows, tails);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            racc[r][m] = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + GS <= G && (g + GS) * L <= kfull; g += GS) {
        for (int64_t st = 0; st < spg; st++) {
            const int64_t k = g * L + (W ? 64 : 32) * st;
            prefetch_ahead(u, rows[0], k);
            code_ptrs(u, rows, tails, k, p, R);
            for (int r = 0; r < R; r++) {
                /* parameters reloaded at every step (from L1), not held: the registers
                 * are wanted for the row sums */
                const int64_t o = (n0 + r) * j->p_stride + g;
                __m256i own[4];
                if (!(SH & 1))
                    byte_tables(j->planes + 64 * (int64_t)j->index[o], own);
                const __m256 s0 = _mm256_set1_ps(scale_at(j, o));
                const __m256 s1 = _mm256_set1_ps(scale_at(j, o + GS - 1));
                if (W) {
                    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
                    bytes_fma64(p[r], (SH & 1) ? shared : own, xb, xs, k, acc, MT, SH & 2);
                    for (int m = 0; m < MT; m++)
                        racc[r][m] = _mm256_fmadd_ps(acc[m], s0, racc[r][m]);
                    continue;
                }
                __m256 f[4];
                lookup_bytes(p[r], (SH & 1) ? shared : own, f, 1, SH & 2);
                for (int m = 0; m < MT; m++) {
                    const float *x = xb + m * xs + k;
                    __m256 t0 = _mm256_mul_ps(f[0], _mm256_loadu_ps(x));
                    __m256 t1 = _mm256_mul_ps(f[2], _mm256_loadu_ps(x + 16));
                    t0 = _mm256_fmadd_ps(f[1], _mm256_loadu_ps(x + 8), t0);
                    t1 = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(x + 24), t1);
                    racc[r][m] = _mm256_fmadd_ps(t0, s0, racc[r][m]);
                    racc[r][m] = _mm256_fmadd_ps(t1, s1, racc[r][m]);
                }
            }
        }
    }
    /* the groups the row ends in (or NVFP4's odd last one), in steps of 16 or 32 */
    for (; g < G; g++) {
        const int64_t k0 = g * L, k1 = k0 + L < kpad ? k0 + L : kpad;
        __m256 acc[4][2];
        for (int r = 0; r < R; r++)
            for (int m = 0; m < MT; m++)
                acc[r][m] = _mm256_setzero_ps();
        const int64_t k64 = k1 < u->k8 ? k1 : u->k8;
        for (int64_t k = k0; k < k1;) {
            const int S = W && (k & 63) == 0 && k + 64 <= k64 ? 4
                          : (k & 31) == 0 && k + 32 <= k1    ? 2
                                                              : 1;
            code_ptrs(u, rows, tails, k, p, R);
            for (int r = 0; r < R; r++) {
                __m256i own[4];
                if (!(SH & 1))
                    byte_tables(j->planes + 64 * (int64_t)j->index[(n0 + r) * j->p_stride + g],
                                own);
                if (S == 4)
                    bytes_fma64(p[r], (SH & 1) ? shared : own, xb, xs, k, acc[r], MT, SH & 2);
                else if (S == 2)
                    bytes_fma(p[r], (SH & 1) ? shared : own, xb, xs, k, acc[r], MT, 2, SH & 2);
                else
                    bytes_fma(p[r], (SH & 1) ? shared : own, xb, xs, k, acc[r], MT, 1, SH & 2);
            }
            k += 16 * S;
        }
        for (int r = 0; r < R; r++) {
            const __m256 sv = _mm256_set1_ps(scale_of(j, n0 + r, g));
            for (int m = 0; m < MT; m++)
                racc[r][m] = _mm256_fmadd_ps(acc[r][m], sv, racc[r][m]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            out[r * MT + m] = lmp_hsum256(racc[r][m]);
}

/* R weight rows (n0..) against MT activation rows (m0..) into out [R * MT], eight
 * codes a step. R, MT, B and SH are compile-time constants after inlining. SH: one
 * table for every group (index NULL). */
GRID_AVX2_INLINE void tile(const Run *u, int64_t n0, int64_t m0, float *out, const int R,
                           const int MT, const int B, const int SH) {
    const LmpGridJob *j = u->j;
    const float *xb = u->x + m0 * u->xs;
    const int64_t L = j->group_len, G = j->G;
    const int64_t kend = (j->K + 7) / 8 * 8; /* x is zero-padded to here */
    const uint8_t *rows[4], *tails[4];
    __m256 racc[4][2], acc[4][2];
    row_starts(u, n0, R, rows, tails);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            racc[r][m] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; g++) {
        int64_t k0 = g * L, k1 = k0 + L;
        if (k1 > kend)
            k1 = kend;
        const float *tp[4];
        for (int r = 0; r < R; r++) {
            tp[r] = SH ? j->tables : table_of(j, n0 + r, g);
            for (int m = 0; m < MT; m++)
                acc[r][m] = _mm256_setzero_ps();
        }
        for (int64_t k = k0; k < k1; k += 8) {
            prefetch_ahead(u, rows[0], k);
            __m256 xv[2];
            for (int m = 0; m < MT; m++)
                xv[m] = _mm256_loadu_ps(xb + m * u->xs + k);
            for (int r = 0; r < R; r++) {
                const __m256 w = lookup8(codes8(run_at(u, rows[r], tails[r], k), B), tp[r], B);
                for (int m = 0; m < MT; m++)
                    acc[r][m] = _mm256_fmadd_ps(w, xv[m], acc[r][m]);
            }
        }
        for (int r = 0; r < R; r++) {
            const __m256 sv = _mm256_set1_ps(scale_of(j, n0 + r, g));
            for (int m = 0; m < MT; m++)
                racc[r][m] = _mm256_fmadd_ps(acc[r][m], sv, racc[r][m]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            out[r * MT + m] = lmp_hsum256(racc[r][m]);
}

/* The tile of the path PB (0: tile; 1: tile_bytes; tile_bytes_small for groups of 16
 * (2), of 32 (3), of whole steps of 32 (4)); compile-time constants pick the code. */
GRID_AVX2_INLINE void tile_of(const Run *u, int64_t n0, int64_t m0, float *out, const int R,
                              const int MT, const int B, const int PB, const int SH) {
    if (PB == 2)
        tile_bytes_small(u, n0, m0, out, R, MT, SH, 2, 1);
    else if (PB == 3)
        tile_bytes_small(u, n0, m0, out, R, MT, SH, 1, 1);
    else if (PB == 4)
        tile_bytes_small(u, n0, m0, out, R, MT, SH, 1, 0);
    else if (PB == 1)
        tile_bytes(u, n0, m0, out, R, MT, SH);
    else
        tile(u, n0, m0, out, R, MT, B, SH);
}

static inline void store_tile(const LmpGridJob *j, int64_t n0, int64_t m0, const float *out,
                              int R, int MT) {
    for (int r = 0; r < R; r++) {
        const float b = j->bias ? j->bias[n0 + r] : 0.f;
        for (int m = 0; m < MT; m++)
            j->y[(m0 + m) * j->N + n0 + r] = out[r * MT + m] + b;
    }
}

/* Rows n0..n1 for every activation row: tiles of 4 weight rows against one activation
 * row, of 2 against two (the registers hold no more), then single rows. */
GRID_AVX2_INLINE void rows_avx2_b(const Run *u, int64_t n0, int64_t n1, const int B,
                                  const int PB, const int SH) {
    float out[8];
    const LmpGridJob *j = u->j;
    for (int64_t m = 0; m < j->M;) {
        int64_t n = n0;
        if (j->M - m >= 2) {
            for (; n + 2 <= n1; n += 2) {
                tile_of(u, n, m, out, 2, 2, B, PB, SH);
                store_tile(j, n, m, out, 2, 2);
            }
            for (; n < n1; n++) {
                tile_of(u, n, m, out, 1, 2, B, PB, SH);
                store_tile(j, n, m, out, 1, 2);
            }
            m += 2;
        } else {
            for (; n + 4 <= n1; n += 4) {
                tile_of(u, n, m, out, 4, 1, B, PB, SH);
                store_tile(j, n, m, out, 4, 1);
            }
            for (; n < n1; n++) {
                tile_of(u, n, m, out, 1, 1, B, PB, SH);
                store_tile(j, n, m, out, 1, 1);
            }
            m += 1;
        }
    }
}

/* Whether the byte-table path applies: 4 bits with byte tables, groups of whole blocks
 * of 16 codes. */
static int use_bytes(const LmpGridJob *j) {
    return j->bits == 4 && j->planes && (j->G == 1 || j->group_len % 16 == 0);
}

#define GRID_CASE(b, pl)                                                                   \
    case b:                                                                                \
        if (u->j->index)                                                                   \
            rows_avx2_b(u, n0, n1, b, pl, 0);                                              \
        else                                                                               \
            rows_avx2_b(u, n0, n1, b, pl, 1);                                              \
        break;

GRID_AVX2 static void rows_avx2(const Run *u, int64_t n0, int64_t n1) {
    if (u->bytes) {
        /* SH for the byte paths: bit 0 one shared table, bit 1 tables of bfloat16 values,
         * bit 2 steps of 64 codes */
        const int sh = (u->j->index ? 0 : 1) | (u->j->hi16 ? 2 : 0) | (u->bytes == 2 ? 4 : 0);
        const int g1 = u->j->G == 1;
        const int64_t L = u->j->group_len;
#define GRID_BYTES(pb)                                                                     \
    switch (sh) {                                                                          \
    case 0:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 0);                                                  \
        break;                                                                             \
    case 1:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 1);                                                  \
        break;                                                                             \
    case 2:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 2);                                                  \
        break;                                                                             \
    case 3:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 3);                                                  \
        break;                                                                             \
    case 4:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 4);                                                  \
        break;                                                                             \
    case 5:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 5);                                                  \
        break;                                                                             \
    case 6:                                                                                \
        rows_avx2_b(u, n0, n1, 4, pb, 6);                                                  \
        break;                                                                             \
    default:                                                                               \
        rows_avx2_b(u, n0, n1, 4, pb, 7);                                                  \
    }
        if (!g1 && L == 32) {
            GRID_BYTES(3)
        } else if (!g1 && L % 32 == 0) {
            GRID_BYTES(4)
        } else if (!g1 && L == 16 && (sh & 1)) {
            GRID_BYTES(2)
        } else {
            GRID_BYTES(1)
        }
#undef GRID_BYTES
        return;
    }
    switch (u->j->bits) {
        GRID_CASE(1, 0)
        GRID_CASE(2, 0)
        GRID_CASE(3, 0)
        GRID_CASE(4, 0)
        GRID_CASE(5, 0)
        GRID_CASE(6, 0)
        GRID_CASE(7, 0)
    default:
        GRID_CASE(8, 0)
    }
}

/* --------------------------------------------------------------- AVX-512 path */
/* 16-entry tables (every 4-bit format) on AVX-512, as the integer kernel's word-plane
 * path: one zmm holds a whole float32 table and vpermps reads the low 4 bits of each
 * lane, so one 64-byte load of a row's piece of 128 codes (lane i: codes 8i..8i+7)
 * gives eight planes of 16 codes (plane p: codes 8i + p) by a shift and a permute each,
 * x being permuted to match (pad_x mode 3). A piece inside one group (groups of 128 or
 * more, or one group per row) multiplies the group's scale into its table, so that each
 * weight is the product the reference dequantizes to. Groups of 16, 32 or 64 sharing one
 * table put 8, 4 or 2 groups in a piece, lane i of every plane lying in group
 * 8i / group_len of it: a piece's sums are scaled lane by lane by a vector of those
 * groups' scales, spread by one permute from the row's scales converted ahead
 * (scale_chunk). A row's partial last piece is read in steps of 32 codes, the low
 * nibbles of 16 bytes giving the even codes and the high ones the odd. */
#define GRID_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))
#define GRID_AVX512_INLINE                                                                 \
    __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c"), always_inline)) static inline

static int grid_avx512(void) {
    static int cached = -1;
    if (grid_simd < 2)
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    }
    return cached;
}

/* The group length the AVX-512 path works with (0: every piece inside one group) or -1
 * where it does not apply: 4 bits, one group per row or groups of whole pieces, or
 * groups of 16, 32 or 64 sharing one table. */
static int avx512_groups(const LmpGridJob *j) {
    if (j->bits != 4)
        return -1;
    if (j->G == 1 || j->group_len % 128 == 0)
        return 0;
    if (!j->index && (j->group_len == 16 || j->group_len == 32 || j->group_len == 64))
        return (int)j->group_len;
    return -1;
}

/* Groups whose scales a tile converts to float32 at once (scale_chunk). */
#define GRID_GC 128

/* The scales of groups g0 .. g0 + GRID_GC - 1 of R rows into sg as float32, 0 past the
 * row's last group (groups past the chunk's last 16 beyond it are left alone: no piece
 * reads them), 16 groups at a time: float32 scales by a masked load, scale codes
 * by computing their table's entries (scale_rule) or by scalar lookups. Converting a
 * chunk ahead keeps the conversions off the pieces' dependency chains. The 16 entries
 * past the chunk, which a piece's load reads but its permute never selects, are zeroed
 * by the tile once. */
GRID_AVX512_INLINE void scale_chunk(const LmpGridJob *j, int64_t n0, const int R, int64_t g0,
                                    float (*sg)[GRID_GC + 16]) {
    const int64_t left = j->G - g0;
    for (int r = 0; r < R; r++) {
        const int64_t o = (n0 + r) * j->p_stride + g0;
        /* through the block holding group `left` (read as 0 by a last step of 32) */
        for (int b = 0; b < GRID_GC && b <= left; b += 16) {
            const int64_t cnt = left - b > 16 ? 16 : left - b < 0 ? 0 : left - b;
            const __mmask16 m = (__mmask16)((1u << cnt) - 1);
            __m512 v;
            if (j->scale_codes && j->scale_rule) {
                const __m128i c8 = lmp_load16_u8(j->scale_codes + o + b, (int)cnt);
                if (j->scale_rule == 1) { /* E8M0: the code is the float's exponent field */
                    const __m512i c = _mm512_cvtepu8_epi32(c8);
                    __m512i f = _mm512_slli_epi32(c, 23);
                    f = _mm512_mask_mov_epi32(f, _mm512_cmpeq_epi32_mask(c, _mm512_setzero_si512()),
                                              _mm512_set1_epi32(0x00400000)); /* 2^-127 */
                    v = _mm512_maskz_mov_ps(m, _mm512_castsi512_ps(f));
                } else { /* E4M3 (positive) bits shifted into float16's: its value times
                          * 2^-8, subnormals included; the tile multiplies its sums by
                          * 2^8 / scale_div at the end (post_scale) */
                    const __m256i c = _mm256_cvtepu8_epi16(c8);
                    v = _mm512_maskz_mov_ps(m, _mm512_cvtph_ps(_mm256_slli_epi16(c, 7)));
                }
            } else if (j->scale_codes) {
                /* scalar lookups: a 16-lane gather costs more than 16 of them here */
                for (int64_t i = 0; i < cnt; i++)
                    sg[r][b + i] = j->scale_table[j->scale_codes[o + b + i]];
                for (int64_t i = cnt; i < 16; i++)
                    sg[r][b + i] = 0.f;
                continue;
            } else {
                v = _mm512_maskz_loadu_ps(m, j->scales + o + b);
            }
            _mm512_storeu_ps(sg[r] + b, v);
        }
    }
}

/* The scales a chunk ahead of a piece's groups g .. g + per - 1, for each of the R rows
 * from n0 (past a row's end: the same place in the row R further on, which the next
 * tile reads first). Each row's scales are a stream of their own that the hardware
 * prefetcher does not follow from the codes' one, and without this every chunk of a
 * tile (scale_chunk) starts with a cache miss per row. The last of the piece's bytes is
 * prefetched, which reaches every line the chunk's scales touch. */
GRID_AVX512_INLINE void prefetch_scales(const LmpGridJob *j, int64_t n0, const int R, int64_t g,
                                        const int per) {
    if (!j->p_stride)
        return;
    int64_t t = g + GRID_GC + per - 1, row = n0;
    if (t >= j->G) {
        t -= j->G;
        row += R;
    }
    for (int r = 0; r < R && row + r < j->N; r++) {
        const int64_t o = (row + r) * j->p_stride + (t < j->G ? t : j->G - 1);
        _mm_prefetch(j->scale_codes ? (const char *)(j->scale_codes + o)
                                    : (const char *)(j->scales + o),
                     _MM_HINT_T0);
    }
}

/* What a tile's sums are multiplied by at the end: scale_chunk leaves E4M3 scales
 * without their divisor and 2^8. */
static inline float post_scale(const LmpGridJob *j) {
    return j->scale_codes && j->scale_rule == 2 ? 256.f / j->scale_div : 1.f;
}

/* R weight rows against MT activation rows (compile-time constants after inlining), LL
 * as avx512_groups, SH one table for every row and group (index NULL). */
GRID_AVX512_INLINE void tile512(const Run *u, int64_t n0, int64_t m0, float *out, const int R,
                                const int MT, const int LL, const int SH) {
    const LmpGridJob *j = u->j;
    const int64_t xs = u->xs, L = j->G == 1 ? xs : j->group_len;
    const int64_t kfull = j->K / 128 * 128, kend = xs; /* x is zero-padded to kend */
    const float *xb = u->x + m0 * xs;
    const uint8_t *rows[8], *tails[8], *p[8];
    float sg[8][GRID_GC + 16];
    int64_t g0 = -GRID_GC;
    __m512 racc[8][2];
    for (int r = 0; r < R; r++)
        _mm512_storeu_ps(sg[r] + GRID_GC, _mm512_setzero_ps());
    const __m512 shared = SH ? _mm512_loadu_ps(j->tables) : _mm512_setzero_ps();
    /* lane i of a plane lies in group 8i / LL of its piece */
    const __m512i lanes = _mm512_srli_epi32(
        _mm512_slli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                          3),
        LL == 16 ? 4 : LL == 32 ? 5 : 6);
    row_starts(u, n0, R, rows, tails);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            racc[r][m] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k < kfull; k += 128) {
        const int64_t g = k / L;
        if (g >= g0 + GRID_GC) {
            g0 = g - g % GRID_GC;
            scale_chunk(j, n0, R, g0, sg);
        }
        prefetch_ahead(u, rows[0], k);
        if (LL)
            prefetch_scales(j, n0, R, g, 128 / LL);
        if (LL == 0) {
            __m512i v[8];
            for (int r = 0; r < R; r++)
                v[r] = _mm512_loadu_si512((const void *)(rows[r] + (k >> 7) * u->cstride));
            __m512 tb[8];
            for (int r = 0; r < R; r++)
                tb[r] = _mm512_mul_ps(SH ? shared : _mm512_loadu_ps(table_of(j, n0 + r, g)),
                                      _mm512_set1_ps(sg[r][g - g0]));
#pragma GCC unroll 8
            for (int pl = 0; pl < 8; pl++) {
                __m512 xv[2];
                for (int m = 0; m < MT; m++)
                    xv[m] = _mm512_loadu_ps(xb + m * xs + k + 16 * pl);
                for (int r = 0; r < R; r++) {
                    const __m512i t = pl ? _mm512_srli_epi32(v[r], 4 * pl) : v[r];
                    const __m512 w = _mm512_permutexvar_ps(t, tb[r]);
                    for (int m = 0; m < MT; m++)
                        racc[r][m] = _mm512_fmadd_ps(w, xv[m], racc[r][m]);
                }
            }
        } else {
            /* four rows at a time: eight rows' codes and piece sums beside the row sums
             * take more registers than there are, and the spills cost more than loading
             * the activations twice */
#pragma GCC unroll 2
            for (int h = 0; h < R; h += 4) {
                const int RH = R - h < 4 ? R - h : 4;
                __m512i v[4];
                __m512 acc[4][2];
                for (int r = 0; r < RH; r++)
                    v[r] = _mm512_loadu_si512((const void *)(rows[h + r] + (k >> 7) * u->cstride));
#pragma GCC unroll 8
                for (int pl = 0; pl < 8; pl++) {
                    __m512 xv[2];
                    for (int m = 0; m < MT; m++)
                        xv[m] = _mm512_loadu_ps(xb + m * xs + k + 16 * pl);
                    for (int r = 0; r < RH; r++) {
                        const __m512i t = pl ? _mm512_srli_epi32(v[r], 4 * pl) : v[r];
                        const __m512 w = _mm512_permutexvar_ps(t, shared);
                        for (int m = 0; m < MT; m++)
                            acc[r][m] = pl ? _mm512_fmadd_ps(w, xv[m], acc[r][m])
                                           : _mm512_mul_ps(w, xv[m]);
                    }
                }
                for (int r = 0; r < RH; r++) {
                    const __m512 s =
                        _mm512_permutexvar_ps(lanes, _mm512_loadu_ps(sg[h + r] + (g - g0)));
                    for (int m = 0; m < MT; m++)
                        racc[h + r][m] = _mm512_fmadd_ps(acc[r][m], s, racc[h + r][m]);
                }
            }
        }
    }
    /* the partial last piece: even codes in lanes 0-15 of a step's first plane, odd in
     * its second; groups of 16 split the lanes at 8, longer groups hold a whole step */
    for (; k < kend; k += 32) {
        const int64_t g = k / L;
        if (g >= g0 + GRID_GC) {
            g0 = g - g % GRID_GC;
            scale_chunk(j, n0, R, g0, sg);
        }
        code_ptrs(u, rows, tails, k, p, R);
        __m512 xe[2], xo[2];
        for (int m = 0; m < MT; m++) {
            xe[m] = _mm512_loadu_ps(xb + m * xs + k);
            xo[m] = _mm512_loadu_ps(xb + m * xs + k + 16);
        }
        for (int r = 0; r < R; r++) {
            const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p[r]));
            const __m512 tb = SH ? shared : _mm512_loadu_ps(table_of(j, n0 + r, g));
            const __m512 we = _mm512_permutexvar_ps(v, tb);
            const __m512 wo = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tb);
            const __m512 s = LL == 16 ? _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(sg[r][g - g0]),
                                                             _mm512_set1_ps(sg[r][g - g0 + 1]))
                                      : _mm512_set1_ps(sg[r][g - g0]);
            for (int m = 0; m < MT; m++)
                racc[r][m] = _mm512_fmadd_ps(
                    _mm512_fmadd_ps(wo, xo[m], _mm512_mul_ps(we, xe[m])), s, racc[r][m]);
        }
    }
    const float post = post_scale(j);
    for (int r = 0; r < R; r++)
        for (int m = 0; m < MT; m++)
            out[r * MT + m] = _mm512_reduce_add_ps(racc[r][m]) * post;
}

/* Rows n0..n1 for every activation row: tiles of 8 weight rows against one activation
 * row (the integer kernel's tile), of 4 against two, then single rows. */
GRID_AVX512_INLINE void rows_avx512_b(const Run *u, int64_t n0, int64_t n1, const int LL,
                                      const int SH) {
    float out[8];
    const LmpGridJob *j = u->j;
    for (int64_t m = 0; m < j->M;) {
        int64_t n = n0;
        const int mt = j->M - m >= 2 ? 2 : 1;
        if (mt == 2) {
            for (; n + 4 <= n1; n += 4) {
                tile512(u, n, m, out, 4, 2, LL, SH);
                store_tile(j, n, m, out, 4, 2);
            }
            for (; n < n1; n++) {
                tile512(u, n, m, out, 1, 2, LL, SH);
                store_tile(j, n, m, out, 1, 2);
            }
        } else {
            for (; n + 8 <= n1; n += 8) {
                tile512(u, n, m, out, 8, 1, LL, SH);
                store_tile(j, n, m, out, 8, 1);
            }
            for (; n < n1; n++) {
                tile512(u, n, m, out, 1, 1, LL, SH);
                store_tile(j, n, m, out, 1, 1);
            }
        }
        m += mt;
    }
}

GRID_AVX512 static void rows_avx512(const Run *u, int64_t n0, int64_t n1) {
    switch (avx512_groups(u->j)) {
    case 16:
        rows_avx512_b(u, n0, n1, 16, 1);
        break;
    case 32:
        rows_avx512_b(u, n0, n1, 32, 1);
        break;
    case 64:
        rows_avx512_b(u, n0, n1, 64, 1);
        break;
    default:
        if (u->j->index)
            rows_avx512_b(u, n0, n1, 0, 0);
        else
            rows_avx512_b(u, n0, n1, 0, 1);
    }
}
#else
static int grid_avx2(void) { return 0; }
static int grid_avx512(void) { return 0; }
static int avx512_groups(const LmpGridJob *j) { (void)j; return -1; }
#endif

/* ----------------------------------------------------------------- dispatch */

typedef void (*grid_rows_fn)(const Run *, int64_t, int64_t);

/* x [M, K] into xp [M, kp] zero-padded (kp >= K), for the byte-table path also
 * permuted within each run of 8 columns as lookup_bytes orders them. */
static void pad_x(const LmpGridJob *j, float *xp, int64_t kp, int bytes) {
    for (int64_t m = 0; m < j->M; m++) {
        const float *x = j->x + m * j->K;
        float *o = xp + m * kp;
        memset(o, 0, (size_t)kp * sizeof(float));
        if (!bytes) {
            memcpy(o, x, (size_t)j->K * sizeof(float));
            continue;
        }
        if (bytes == 3) {
            /* the AVX-512 path: in whole pieces of 128 codes, plane p (codes 8i + p) at
             * 16p + i; in the partial last piece, per 32 columns the even ones, then the
             * odd ones */
            const int64_t kfull = j->K / 128 * 128;
            for (int64_t k = 0; k < j->K; k++)
                o[k < kfull ? (k & ~(int64_t)127) + 16 * (k & 7) + ((k & 127) >> 3)
                            : (k & ~(int64_t)31) + 16 * (k & 1) + ((k & 31) >> 1)] = x[k];
            continue;
        }
        /* steps of 64 (lookup_bytes64) over the whole blocks of 64 of the padded row;
         * elsewhere code 8a + 2i + h sits in lane 4h + i of its run's vector
         * (lookup_bytes) */
        const int64_t k8 = (j->K + 7) & ~(int64_t)7, w64 = bytes == 2 ? k8 / 64 * 64 : 0;
        for (int64_t k = 0; k < j->K; k++) {
            const int64_t i = k & 63;
            o[k < w64 ? (k - i) + 8 * (4 * (i & 1) + ((i & 31) >> 3)) + 4 * (i >> 5) +
                            ((i & 7) >> 1)
                      : (k & ~(int64_t)7) + 4 * (k & 1) + ((k & 7) >> 1)] = x[k];
        }
    }
}

int lmp_grid_gemm(const LmpGridJob *j, int nthreads) {
    Run u;
    run_init(&u, j);
    if (j->M <= 0)
        return 0;
    grid_rows_fn fn = rows_scalar;
    float stack_x[GRID_STACK_X], *heap_x = NULL;
#if defined(__x86_64__) || defined(__i386__)
    if (grid_avx512() && avx512_groups(j) >= 0) {
        fn = rows_avx512;
        const int64_t kp = (j->K + 31) / 32 * 32;
        const size_t n = (size_t)(j->M * kp);
        float *xp = n <= GRID_STACK_X ? stack_x : (heap_x = (float *)malloc(n * sizeof(float)));
        if (!xp)
            return -1;
        pad_x(j, xp, kp, 3);
        u.x = xp;
        u.xs = kp;
        u.bytes = 3;
    } else if (grid_avx2() && (j->G == 1 || j->group_len % 8 == 0)) {
        fn = rows_avx2;
        const int bytes = !use_bytes(j) ? 0 : j->G == 1 || j->group_len % 64 == 0 ? 2 : 1;
        const int64_t step = bytes ? 16 : 8, kp = (j->K + step - 1) / step * step;
        if (bytes || kp != j->K) { /* the loads read whole runs of activations */
            const size_t n = (size_t)(j->M * kp);
            float *xp = n <= GRID_STACK_X ? stack_x : (heap_x = (float *)malloc(n * sizeof(float)));
            if (!xp)
                return -1;
            pad_x(j, xp, kp, bytes);
            u.x = xp;
            u.xs = kp;
            u.bytes = bytes;
        }
    }
#endif
    const int64_t block = 16;
    const int64_t nblocks = (j->N + block - 1) / block;
    /* below ~64k codes a thread hand-off costs more than it saves */
    const int par = nthreads > 1 && j->N * j->K * (j->M < 4 ? j->M : 4) > 65536;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (par)
#endif
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t n0 = b * block, n1 = n0 + block < j->N ? n0 + block : j->N;
        fn(&u, n0, n1);
    }
    (void)par;
    (void)stack_x;
    free(heap_x);
    return 0;
}

void lmp_grid_dequant(const LmpGridJob *j, float *w, int nthreads) {
    Run u;
    run_init(&u, j);
    (void)nthreads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && j->N * j->K > 65536)
#endif
    for (int64_t n = 0; n < j->N; n++) {
        const uint8_t *row, *tail;
        row_starts(&u, n, 1, &row, &tail);
        float *out = w + n * j->K;
        for (int64_t g = 0; g < j->G; g++) {
            int64_t k0 = g * j->group_len, k1 = k0 + j->group_len;
            if (k1 > j->K)
                k1 = j->K;
            const float *tp = table_of(j, n, g);
            const float s = scale_of(j, n, g);
            for (int64_t k = k0; k < k1; k++)
                out[k] = tp[get_code(&u, row, tail, k)] * s;
        }
    }
}
