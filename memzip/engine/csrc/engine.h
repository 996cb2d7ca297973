/* memzip's exact engine in C: shared declarations.
 *
 * docs/ENGINE.md specifies the arithmetic; memzip/engine/reference.py computes the same numbers with
 * PyTorch operations. Every value here is an exact integer sum (in any order, any vector width), one
 * correctly rounded IEEE-754 operation, a truncation or rounding of a float to an integer, or a table
 * read, so every instruction-set variant (ISA_*) and every split of the work among threads gives the
 * same bits. Build with -ffp-contract=off: no multiply-add may be fused into one rounding.
 */
#ifndef MEMZIP_ENGINE_H
#define MEMZIP_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* ---- constants of the arithmetic (docs/ENGINE.md) ------------------------------------------------ */
#define ACT_LEVELS 32639.0      /* activations: integers in -32639..32639 */
#define ACT_OFFSET 32768        /* stored as xq + 32768 = 256 * high byte + low byte */
#define QK_LEVELS 127.0         /* q, k, v per head: int8 */
#define ATT_ONE 32768           /* exp(0) in attention-table units */
#define ATT_STEP 512.0          /* attention-table points per unit of score */
#define ATT_POINTS 5680         /* table length; the last point is 0 */
#define ATT_WEIGHT 32767.0      /* value weights: integers in 0..32767 */
#define SIG_RANGE 16.0
#define SIG_STEP 64.0
#define CODE_RANGE 8192.0       /* token distribution: table positions up to 8192 */
#define CODE_STEP 256.0
#define SQRT_STEPS 7

/* ---- instruction sets --------------------------------------------------------------------------- */
enum { ISA_BASELINE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AMX = 3 };
extern int isa_level;       /* the level in use (<= the best available) */
int isa_available(void);    /* the best level this CPU and OS allow */

/* ---- thread pool -------------------------------------------------------------------------------- */
#define POOL_MAX_THREADS 256
typedef void (*task_fn)(void *ctx, int thread, int threads);
void pool_run(task_fn fn, void *ctx);
int pool_set_threads(int n);
int pool_threads(void);
void split_range(int total, int t, int n, int align, int *begin, int *end);

/* ---- int8 matrices and their products ---------------------------------------------------------- */
/* A weight matrix of n outputs x k inputs, int8 codes in -63..63, packed for the products: blocks of
 * 16 outputs x 4 inputs (64 bytes), [np / 16][kp / 4][16][4], zero-padded to np (multiple of 16) and
 * kp (multiple of 64). sums[j] = sum of row j's codes; scale[j] its float64 scale. */
typedef struct {
    int n, k, np, kp;
    const int8_t *w;
    const int32_t *sums;
    const double *scale;
} Matrix;

/* Activations for a product: 2m rows of kp bytes, rows 0..m-1 the high and rows m..2m-1 the low bytes
 * of u = xq + ACT_OFFSET (so sum_i xq_i q_i = 256 sum hi q + sum lo q - 32768 sum q, exactly). */

/* C[r * ldc + j] = sum_i A[r * kp + i] * W_j[i] for r < rows and j0 <= j < j1 (j0, j1 multiples of 16;
 * j1 may be np). Exact int32 sums. */
void gemm(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc);
void gemm_baseline(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc);
void gemm_avx2(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc);
void gemm_avx512(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc);
int gemm_amx(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc); /* 0: not done */
int amx_enable(void);

/* ---- one row at a time ------------------------------------------------------------------------- */
double quantize_row(const double *x, int k, int kp, uint8_t *hi, uint8_t *lo);
double normalize_row(const double *x, const double *gain, int k, int kp, double eps, uint8_t *hi, uint8_t *lo,
                     double *tmp);
/* out[j] = (acc_j * scale_j) * factor, or out[j] + that; acc from the high and low products */
void linear_row(const Matrix *W, const int32_t *chi, const int32_t *clo, int j0, int j1, double factor, double *out,
                int accumulate);
void silu_row(const double *gate, const double *up, int f, const double *sig, const double *sig_steps, double *mid);
double quantize_head(const double *t, int d, int8_t *out);
void rope(double *t, int d, const double *cos, const double *sin);
double det_sqrt(double v);
double round_even(double x);
float round_even_f(float x);

/* ---- the KV cache of one (layer, row, kv head) --------------------------------------------------- */
typedef struct {
    int8_t *k;      /* [cap64 / 16][d / 4][16][4]: keys in blocks of 16 positions (cap64: capacity rounded up to 64) */
    int32_t *ksum;  /* [cap64]: sum of each key's codes */
    float *ks;      /* [cap64]: key scales */
    int8_t *v;      /* [cap64 / 4][d][4]: values in groups of 4 positions */
    float *vs;      /* [cap64]: value scales */
} HeadCache;

void cache_put(const HeadCache *c, int d, int pos, const int8_t *k8, float ks, const int8_t *v8, float vs);

/* Attention of query rows that share one kv head's cache: row r has int8 query q (d values), gap
 * factor cq, sees keys 0..visible-1, and writes d float64 to out. At most ATT_ROWS rows per call.
 * work: attention_work(longest visible, rows) bytes, 64-byte aligned. */
#define ATT_ROWS 8
typedef struct {
    const int8_t *q;
    float cq;
    int visible;
    double *out;
} QueryRow;

size_t attention_work(int visible, int rows);
void attention(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work);
void attention_baseline(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work);
void attention_avx2(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work);
void attention_avx512(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work);
void attention_amx(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work);

/* ---- the token distribution of one position ---------------------------------------------------- */
/* From logits l[vocab] (overwritten): e_j (int64) and its sum; then F_j = 1 + e_j * spare / sum */
int64_t code_weights(double *l, int v, const double *table, const double *steps, int64_t *e);
/* the same on a range of the vocabulary, given the row's top logit; and that top (an exact maximum) */
int64_t code_round(const double *l, int v, double top, const double *table, const double *steps, int64_t *e);
double max_of(const double *x, int n);
/* F_j = 1 + floor(e_j * spare / sum), exactly; returns their total, and in *under (if given) the total of
 * F_j for j < below; f may be NULL */
int64_t code_frequencies(const int64_t *e, int v, int64_t spare, int64_t sum, int32_t *f, int64_t below,
                         int64_t *under);

#endif
