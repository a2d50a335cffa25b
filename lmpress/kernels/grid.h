/* Table-lookup products for grid formats (see grid.c). */
#ifndef LMPRESS_GRID_H
#define LMPRESS_GRID_H

#include <stdint.h>

typedef struct {
    const float *x;    /* [M, K] float32 activations, rows contiguous */
    float *y;          /* [M, N] float32 */
    const float *bias; /* [N] float32 or NULL */
    int64_t M, K, N;
    /* Packed codes (lmpress.packing.bits) in the layout of tile_rows, as the integer
     * kernel's (lmpress.kernels.cpu.tile_codes): 0 row-major [N, row_bytes]; T rows
     * interleaved in pieces of 128 codes. At least 16 readable bytes follow. */
    const uint8_t *codes;
    int64_t row_bytes;
    int bits; /* 1..8 */
    int tile_rows;
    /* Tables [T, tstride] float32: code q of a group reads entry q of its table. For
     * bits <= 3 a table holds 8 entries, entry i being value i mod 2^bits (the lookup
     * reads 3 bits of every lane); for 4 bits 16; for 5..8 bits 2^bits. */
    const float *tables;
    int64_t tstride;
    /* For 4 bits, the same tables as bytes [T, 4, 16]: byte b of the float32 entries
     * 0..15 (little-endian), which the vector lookup reads; NULL: the tables only. */
    const uint8_t *planes;
    int hi16; /* every entry's low 16 bits are 0 (bfloat16 values), which the lookup skips */
    const int32_t *index; /* [P, G] int32: the table of row n, group g; NULL: table 0 */
    const float *scales;  /* [P, G] float32, or NULL when scale_codes is given */
    /* Scales stored as bytes (E8M0, E4M3 over a tensor scale): scale_table [256] float32
     * indexed by scale_codes [P, G] uint8, a quarter of the bytes read; or NULL. */
    const uint8_t *scale_codes;
    const float *scale_table;
    /* What scale_table's entries are, for vector paths that compute them instead of
     * looking each up: 0 nothing known; 1 E8M0, entry c = 2^(c - 127); 2 positive E4M3
     * over a divisor, entry c = float32(e4m3(c)) / scale_div. Entries of codes in use
     * only. */
    int scale_rule;
    float scale_div;
    int64_t p_stride;     /* G, or 0 when one parameter row serves every row */
    int64_t group_len, G; /* columns per group (the last one may be partial), groups */
} LmpGridJob;

/* y[m, n] = sum_g scale[n, g] * sum_{k in g} table(n, g)[q[n, k]] * x[m, k] (+ bias[n])
 * for 0 <= M <= 64. 0 on success, -1 out of memory. Needs no Python; thread-safe. */
int lmp_grid_gemm(const LmpGridJob *j, int nthreads);

/* w [N, K] float32: w[n, k] = table(n, g)[q[n, k]] * scale[n, g], one float32 product
 * per weight, bit-identical to lmpress's PackedWeight.dequantize. x, y, M are unused. */
void lmp_grid_dequant(const LmpGridJob *j, float *w, int nthreads);

/* Highest vector path allowed: 0 the portable scalar path (tests compare it with the
 * vector one), >= 1 AVX2 where the CPU has it. */
void lmp_grid_set_simd(int level);

#endif
