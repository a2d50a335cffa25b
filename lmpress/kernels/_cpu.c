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
 *          folded into a sum of x) so that the rounding is that of a float32
 *          dot product with the dequantized weight, without cancellation.
 * dequant: w[n, k] = (q[n,k] - z[n,g]) * s[n,g] in float32, bit-identical to
 *          lmpress.formats.affine.dequantize_codes.
 *
 * An AVX2/FMA path is chosen at run time where the CPU has it (the file itself is
 * compiled for the baseline ISA), with a portable scalar path otherwise; rows are
 * split over OpenMP threads when the build has OpenMP.
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

#define MAX_M 64 /* activation rows per gemm call; larger batches dequantize instead */

typedef struct {
    const float *x; /* [M, Kp], rows padded with zeros to Kp = ceil(K/8)*8 */
    float *y;       /* [M, N] */
    int64_t M, K, Kp, N;
    const uint8_t *codes; /* [N, row_bytes], followed by >= 8 readable bytes */
    int64_t row_bytes;
    int bits;
    const uint16_t *scales; /* raw fp16/bf16 bits, [P, G] */
    int scale_kind;         /* 0 fp16, 1 bf16 */
    int64_t p_stride;       /* G, or 0 when one parameter row serves every row (per tensor) */
    const void *zeros;      /* see zero_kind */
    int zero_kind;          /* 0 constant `mid`, 1 uint8 [P, G], 2 fp16 [P, G] */
    float mid;
    int64_t group_len, G;
    const float *bias; /* [N] or NULL */
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

static inline uint32_t get_code(const uint8_t *row, int64_t k, int bits) {
    const uint8_t *chunk = row + (k >> 3) * bits;
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
        const uint8_t *row = j->codes + n * j->row_bytes;
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
                float w = (float)get_code(row, k, j->bits) - z;
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

AVX2_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_INLINE float scale_f16c(const Job *j, int64_t n, int64_t g) {
    uint16_t h = j->scales[n * j->p_stride + g];
    return j->scale_kind ? bf16_to_float(h) : _cvtsh_ss(h);
}

AVX2_INLINE float zero_f16c(const Job *j, int64_t n, int64_t g) {
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

/* One weight row against MT activation rows starting at m0 (MT, B constants). */
AVX2_INLINE void row_tile(const Job *j, int64_t n, int64_t m0, float *out, const int MT,
                          const int B) {
    const uint8_t *row = j->codes + n * j->row_bytes;
    const float *xb = j->x + m0 * j->Kp;
    const int64_t Kp = j->Kp, L = j->group_len;
    __m256 racc[4], acc[4];
    for (int m = 0; m < MT; m++)
        racc[m] = _mm256_setzero_ps();
    for (int64_t g = 0; g < j->G; g++) {
        int64_t k0 = g * L, k1 = k0 + L;
        if (k1 > Kp)
            k1 = Kp;
        const __m256 zv = _mm256_set1_ps(zero_f16c(j, n, g));
        for (int m = 0; m < MT; m++)
            acc[m] = _mm256_setzero_ps();
        for (int64_t k = k0; k < k1; k += 8) {
            __m256 w = _mm256_sub_ps(_mm256_cvtepi32_ps(codes8(row + (k >> 3) * B, B)), zv);
            for (int m = 0; m < MT; m++)
                acc[m] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xb + m * Kp + k), acc[m]);
        }
        const __m256 sv = _mm256_set1_ps(scale_f16c(j, n, g));
        for (int m = 0; m < MT; m++)
            racc[m] = _mm256_fmadd_ps(acc[m], sv, racc[m]);
    }
    for (int m = 0; m < MT; m++)
        out[m] = hsum256(racc[m]);
}

AVX2_INLINE void rows_avx2_b(const Job *j, int64_t n0, int64_t n1, const int B) {
    float out[4];
    for (int64_t n = n0; n < n1; n++) {
        const float b = j->bias ? j->bias[n] : 0.f;
        int64_t m = 0;
        for (; m + 4 <= j->M; m += 4) {
            row_tile(j, n, m, out, 4, B);
            for (int t = 0; t < 4; t++)
                j->y[(m + t) * j->N + n] = out[t] + b;
        }
        int rest = (int)(j->M - m);
        if (rest == 3)
            row_tile(j, n, m, out, 3, B);
        else if (rest == 2)
            row_tile(j, n, m, out, 2, B);
        else if (rest == 1)
            row_tile(j, n, m, out, 1, B);
        for (int t = 0; t < rest; t++)
            j->y[(m + t) * j->N + n] = out[t] + b;
    }
}

AVX2 static void rows_avx2(const Job *j, int64_t n0, int64_t n1) {
    switch (j->bits) {
    case 1: rows_avx2_b(j, n0, n1, 1); break;
    case 2: rows_avx2_b(j, n0, n1, 2); break;
    case 3: rows_avx2_b(j, n0, n1, 3); break;
    case 4: rows_avx2_b(j, n0, n1, 4); break;
    case 5: rows_avx2_b(j, n0, n1, 5); break;
    case 6: rows_avx2_b(j, n0, n1, 6); break;
    case 7: rows_avx2_b(j, n0, n1, 7); break;
    default: rows_avx2_b(j, n0, n1, 8); break;
    }
}

static int simd_allowed = 1; /* tests switch the vector path off to check the scalar one */

static int have_avx2(void) {
    static int cached = -1;
    if (!simd_allowed)
        return 0;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __builtin_cpu_supports("f16c");
    }
    return cached;
}
#else
static int simd_allowed = 1;
static int have_avx2(void) { return 0; }
#endif

/* ----------------------------------------------------------------- dispatch */

typedef void (*rows_fn)(const Job *, int64_t, int64_t);

static int use_vector(const Job *j) {
    /* The vector path reads whole runs of 8 codes inside one group. */
    return have_avx2() && (j->G == 1 || j->group_len % 8 == 0);
}

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
    int bits, scale_kind, zero_kind;
    float mid;
    if (!PyArg_ParseTuple(args, "KKLLLKLiKiLKifLLKi", x_ptr, &y, &M, &K, &N, &codes, &row_bytes,
                          &bits, &scales, &scale_kind, &p_stride, &zeros, &zero_kind, &mid,
                          &group_len, &G, &bias, nthreads))
        return 0;
    if (bits < 1 || bits > 8 || M < 0 || K <= 0 || N <= 0 || group_len <= 0 || G <= 0 ||
        M > MAX_M || (G - 1) * group_len >= K) {
        PyErr_SetString(PyExc_ValueError, "lmpress kernel: invalid shape or bit width");
        return 0;
    }
    (void)with_x;
    j->y = (float *)(uintptr_t)y;
    j->M = M;
    j->K = K;
    j->Kp = (K + 7) / 8 * 8;
    j->N = N;
    j->codes = (const uint8_t *)(uintptr_t)codes;
    j->row_bytes = row_bytes;
    j->bits = bits;
    j->scales = (const uint16_t *)(uintptr_t)scales;
    j->scale_kind = scale_kind;
    j->p_stride = p_stride;
    j->zeros = (const void *)(uintptr_t)zeros;
    j->zero_kind = zero_kind;
    j->mid = mid;
    j->group_len = group_len;
    j->G = G;
    j->bias = bias ? (const float *)(uintptr_t)bias : NULL;
    if (*nthreads < 1)
        *nthreads = 1;
    return 1;
}

/* gemm(x, y, M, K, N, codes, row_bytes, bits, scales, scale_kind, p_stride, zeros,
 *      zero_kind, mid, group_len, G, bias, nthreads); pointers are addresses of
 * contiguous tensors (x float32 [M, K], y float32 [M, N], bias float32 [N] or 0). */
static PyObject *py_gemm(PyObject *self, PyObject *args) {
    Job j;
    unsigned long long xp;
    int nthreads;
    (void)self;
    if (!parse_job(args, &j, &xp, &nthreads, 1))
        return NULL;
    if (j.M == 0)
        Py_RETURN_NONE;
    float *padded = NULL;
    const float *x = (const float *)(uintptr_t)xp;
    Py_BEGIN_ALLOW_THREADS;
    if (j.Kp != j.K) {
        padded = (float *)calloc((size_t)(j.M * j.Kp), sizeof(float));
        if (padded)
            for (int64_t m = 0; m < j.M; m++)
                memcpy(padded + m * j.Kp, x + m * j.K, (size_t)j.K * sizeof(float));
        j.x = padded;
    } else {
        j.x = x;
    }
    if (j.x) {
#ifdef LMP_X86
        run_rows(&j, use_vector(&j) ? rows_avx2 : rows_scalar, nthreads);
#else
        run_rows(&j, rows_scalar, nthreads);
#endif
    }
    Py_END_ALLOW_THREADS;
    if (j.Kp != j.K && !padded)
        return PyErr_NoMemory();
    free(padded);
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
        const uint8_t *row = j.codes + n * j.row_bytes;
        float *out = w + n * j.K;
        for (int64_t g = 0; g < j.G; g++) {
            int64_t k0 = g * j.group_len, k1 = k0 + j.group_len;
            if (k1 > j.K)
                k1 = j.K;
            float s = job_scale(&j, n, g), z = job_zero(&j, n, g);
            for (int64_t k = k0; k < k1; k++)
                out[k] = ((float)get_code(row, k, j.bits) - z) * s;
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
    return Py_BuildValue("{s:i,s:i,s:i}", "avx2", have_avx2(), "openmp", omp, "max_m", MAX_M);
}

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    int on;
    (void)self;
    if (!PyArg_ParseTuple(args, "p", &on))
        return NULL;
    simd_allowed = on;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_simd", py_set_simd, METH_VARARGS, "allow (True) or forbid the vector path"},
    {"gemm", py_gemm, METH_VARARGS, "y = x @ dequant(W).T (+ bias) from packed codes"},
    {"dequant", py_dequant, METH_VARARGS, "float32 weights from packed codes"},
    {"info", py_info, METH_NOARGS, "which paths this build and CPU have"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cpu(void) { return PyModule_Create(&module); }
