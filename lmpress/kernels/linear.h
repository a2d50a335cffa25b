/* A prepared linear layer for one activation row, as the decode step sees it.
 *
 * The layout behind it (packed codes, lookup tables or a dense float matrix) and the
 * products belong to the GEMM/GEMV side (_cpu.c, lut.c); the decode step
 * (decode_ops.c) only runs it, so the struct stays opaque here. */
#ifndef LMPRESS_LINEAR_H
#define LMPRESS_LINEAR_H

#include <stdint.h>

typedef struct LmpLinear LmpLinear;

/* y_out [n] = W x + bias (+ residual [n], which may alias y_out) for x [k] float32.
 * 0 on success, -1 out of memory. Runs without the GIL. */
int lmp_linear_run(const LmpLinear *L, const float *x, float *y_out, const float *residual,
                   int nthreads);

#endif
