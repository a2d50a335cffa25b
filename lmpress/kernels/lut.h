/* Table-lookup GEMV for 1-4 bit codes (see lut.c). */
#ifndef LMPRESS_LUT_H
#define LMPRESS_LUT_H

#include <stdint.h>

typedef struct {
    const float *x;       /* [k] activations */
    float *y;             /* [n] */
    const float *bias;    /* [n] or NULL */
    const uint8_t *codes; /* [tiles, k8/8, bits, 16] bit-plane nibbles */
    const float *scales;  /* [tiles, groups, 16] */
    const float *zeros;   /* [tiles, groups, 16] */
    int64_t n, k, k8, group_len, groups;
    int bits;
} LutJob;

/* 0 on success, -1 out of memory, -2 not built for this CPU family. The caller
 * checks that the CPU has AVX-512 (lmpress.kernels.cpu.build_info). */
int lmp_lut_gemv(const LutJob *j, int nthreads);

#endif
