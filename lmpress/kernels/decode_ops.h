/* One decoding step of Llama-style blocks, in C so that a token costs one call
 * instead of thousands of torch ops: the small float32 operations (RMSNorm, rotary
 * embedding, attention over the KV cache, SiLU gating) and the step through every
 * block, which runs its linear layers through linear.h. All arrays are contiguous
 * float32; shapes are in the comments of decode_ops.c. */
#ifndef LMPRESS_DECODE_OPS_H
#define LMPRESS_DECODE_OPS_H

#include <stdint.h>

#include "linear.h"

void lmp_rmsnorm(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps);
void lmp_rope(float *x, const float *cos, const float *sin, int64_t heads, int64_t hd);
/* 0 on success, -1 out of memory (out is then not written). */
int lmp_attend(const float *q, const float *k, const float *v, float *out, int64_t n_head,
               int64_t n_kv, int64_t hd, int64_t t, int64_t t_stride, float scale);
void lmp_silu_mul(const float *gu, float *out, int64_t n);
/* 0: the scalar paths only (tests compare them with the vector ones); 1: the default */
void lmp_decode_set_vector(int on);

/* One Llama-style block: pre-norm attention with grouped KV heads, then a SiLU-gated
 * MLP, each added to the residual stream. */
typedef struct {
    const float *ln1, *ln2;                /* [hidden] the norms ahead of attention and MLP */
    const LmpLinear *qkv, *o, *gu, *down;  /* q|k|v, attention out, gate|up, down */
    float *kcache, *vcache;                /* [n_kv, max_len, hd] */
    const float *qnorm, *knorm;            /* [hd] per-head RMSNorm before rotary (Qwen3), or NULL */
} LmpBlock;

typedef struct {
    int64_t hidden, n_head, n_kv, hd, inter, max_len;
} LmpDecodeDims;

/* Work buffers of a step, float32: h [hidden], qkv [(n_head + 2 n_kv) hd],
 * att [n_head hd], gu [2 inter], act [inter]. */
typedef struct {
    float *h, *qkv, *att, *gu, *act;
} LmpDecodeScratch;

/* x [hidden] (the token's embedding) through every block at position pos, in place;
 * writes k and v at pos into each block's caches. cos, sin [hd]: the rotary tables
 * at pos; scale: the attention's 1/sqrt(hd). The caller checks 0 <= pos < max_len
 * and n_head % n_kv == 0. 0 on success, -1 out of memory. Runs without the GIL. */
int lmp_decode_step(const LmpBlock *blocks, int64_t n_blocks, float *x, int64_t pos,
                    const float *cos, const float *sin, const LmpDecodeScratch *s,
                    const LmpDecodeDims *d, float eps, float scale, int nthreads);

#endif
