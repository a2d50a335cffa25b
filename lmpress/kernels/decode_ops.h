/* Small float32 operations of one decoding step of a Llama-style block, in C so
 * that a token costs a few hundred calls instead of thousands of torch ops.
 * All arrays are contiguous float32; shapes are in the comments of decode_ops.c. */
#ifndef LMPRESS_DECODE_OPS_H
#define LMPRESS_DECODE_OPS_H

#include <stdint.h>

void lmp_rmsnorm(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps);
void lmp_rope(float *x, const float *cos, const float *sin, int64_t heads, int64_t hd);
void lmp_attend(const float *q, const float *k, const float *v, float *out, int64_t n_head,
                int64_t n_kv, int64_t hd, int64_t t, int64_t t_stride, float scale);
void lmp_silu_mul(const float *gu, float *out, int64_t n);
/* 0: the scalar paths only (tests compare them with the vector ones); 1: the default */
void lmp_decode_set_vector(int on);

#endif
