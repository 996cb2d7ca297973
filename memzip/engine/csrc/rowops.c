/* Work on one row at a time: quantizing, RMSNorm, the products' epilogue, SiLU, RoPE, the token
 * distribution. Plain C compiled for several x86-64 levels (target_clones): the vector instructions
 * the compiler may pick (add, sub, mul, div, compare, blend, integer max) are IEEE-exact elementwise
 * and, without fast-math and with -ffp-contract=off, nothing is reassociated or fused, so every
 * variant gives the same bits. Mirrors memzip/engine/reference.py.
 */
#include "engine.h"

#include <math.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* Exact rounding without library calls: for |x| < 2^52, (|x| + 2^52) - 2^52 is |x| rounded to an
 * integer, half to even (IEEE addition, rounding to nearest); larger values are integers already. The
 * sign is kept, as nearbyint and torch.round keep it. */
#define TWO52 4503599627370496.0
double round_even(double x) {
    double a = fabs(x);
    double r = (a + TWO52) - TWO52;
    r = a < TWO52 ? r : a;
    return copysign(r, x);
}
static inline double round_even_inline(double x) {
    double a = fabs(x);
    double r = (a + TWO52) - TWO52;
    r = a < TWO52 ? r : a;
    return copysign(r, x);
}
static inline double floor_exact(double x) {
    double r = round_even_inline(x);
    return r > x ? r - 1.0 : r;
}
#define TWO23 8388608.0f
float round_even_f(float x) {
    float a = fabsf(x);
    float r = (a + TWO23) - TWO23;
    r = a < TWO23 ? r : a;
    return copysignf(r, x);
}

/* max |x_i|: the bit patterns of non-negative doubles order like the numbers */
static inline double amax_abs(const double *x, int k) {
    uint64_t best = 0;
    for (int i = 0; i < k; i++) {
        uint64_t b;
        memcpy(&b, &x[i], 8);
        b &= 0x7fffffffffffffffULL;
        best = b > best ? b : best;
    }
    double out;
    memcpy(&out, &best, 8);
    return out;
}

static inline double clamp_levels(double q) {
    q = q < -ACT_LEVELS ? -ACT_LEVELS : q;
    return q > ACT_LEVELS ? ACT_LEVELS : q;
}

/* Q(x): xq = clamp(rnd(x * (ACT_LEVELS / M)), +-ACT_LEVELS); returns unit = M / ACT_LEVELS */
CLONES static double quantize_values(const double *x, int k, double *xq) {
    double amax = amax_abs(x, k);
    double f = ACT_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (int i = 0; i < k; i++) xq[i] = clamp_levels(round_even_inline(x[i] * f));
    return amax / ACT_LEVELS;
}

/* Q(x) as the product's two byte rows: u = xq + 32768 = 256 * hi + lo; padding bytes are 0 */
CLONES double quantize_row(const double *x, int k, int kp, uint8_t *hi, uint8_t *lo) {
    double amax = amax_abs(x, k);
    double f = ACT_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (int i = 0; i < k; i++) {
        int32_t u = (int32_t)clamp_levels(round_even_inline(x[i] * f)) + ACT_OFFSET;
        hi[i] = (uint8_t)(u >> 8);
        lo[i] = (uint8_t)(u & 255);
    }
    for (int i = k; i < kp; i++) hi[i] = lo[i] = 0;
    return amax / ACT_LEVELS;
}

/* sqrt by Newton steps from 2^ceil(e/2), v = f * 2^e (frexp and ldexp are exact) */
double det_sqrt(double v) {
    int e;
    frexp(v, &e);
    int half_e = (int)floor_exact(((double)e + 1.0) / 2.0);
    double y = ldexp(1.0, half_e);
    for (int i = 0; i < SQRT_STEPS; i++) y = (y + v / y) * 0.5;
    return y;
}

CLONES static int64_t sum_squares(const double *xq, int k) {
    int64_t s = 0;
    for (int i = 0; i < k; i++) {
        int32_t v = (int32_t)xq[i];
        s += (int64_t)(v * v);
    }
    return s;
}

CLONES static void times(const double *x, const double *g, double *out, int k) {
    for (int i = 0; i < k; i++) out[i] = x[i] * g[i];
}

/* N(x, g): the normed row as product bytes; returns the row factor. tmp holds k doubles. */
double normalize_row(const double *x, const double *gain, int k, int kp, double eps, uint8_t *hi, uint8_t *lo,
                     double *tmp) {
    double unit = quantize_values(x, k, tmp);
    double ss = (double)sum_squares(tmp, k); /* < 2^53: exact */
    double ms = (ss / (double)k) * (unit * unit);
    double inverse_rms = 1.0 / det_sqrt(ms + eps);
    times(x, gain, tmp, k);
    double gained_unit = quantize_row(tmp, k, kp, hi, lo);
    return gained_unit * inverse_rms;
}

/* acc_j = 256 * hi_j + lo_j - 32768 * sum_j (exact in int64); out_j = (acc_j * s_j) * factor */
CLONES void linear_row(const Matrix *W, const int32_t *chi, const int32_t *clo, int j0, int j1, double factor,
                       double *out, int accumulate) {
    const int32_t *sums = W->sums;
    const double *scale = W->scale;
    if (accumulate) {
        for (int j = j0; j < j1; j++) {
            int64_t acc = (int64_t)chi[j] * 256 + clo[j] - (int64_t)sums[j] * ACT_OFFSET;
            out[j] = out[j] + ((double)acc * scale[j]) * factor;
        }
    } else {
        for (int j = j0; j < j1; j++) {
            int64_t acc = (int64_t)chi[j] * 256 + clo[j] - (int64_t)sums[j] * ACT_OFFSET;
            out[j] = ((double)acc * scale[j]) * factor;
        }
    }
}

/* mid = (gate * sigma(gate)) * up, sigma = interp(SIG, (clamp(gate, -16, 16) + 16) * 64) */
static void silu_plain(const double *gate, const double *up, int f, const double *sig, const double *steps,
                       double *mid) {
    for (int j = 0; j < f; j++) {
        double g = gate[j];
        g = g < -SIG_RANGE ? -SIG_RANGE : g;
        g = g > SIG_RANGE ? SIG_RANGE : g;
        double position = (g + SIG_RANGE) * SIG_STEP;
        double index = floor_exact(position);
        int i = (int)index;
        double s = sig[i] + steps[i] * (position - index);
        mid[j] = (gate[j] * s) * up[j];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* the same operations, eight at a time: roundscale toward -inf is an exact floor, the table read a gather */
__attribute__((target("avx512f"))) static void silu_avx512(const double *gate, const double *up, int f,
                                                          const double *sig, const double *steps, double *mid) {
    const __m512d lo = _mm512_set1_pd(-SIG_RANGE), hi = _mm512_set1_pd(SIG_RANGE), per = _mm512_set1_pd(SIG_STEP);
    int j = 0;
    for (; j + 8 <= f; j += 8) {
        __m512d gv = _mm512_loadu_pd(gate + j);
        __m512d g = _mm512_min_pd(_mm512_max_pd(gv, lo), hi);
        __m512d position = _mm512_mul_pd(_mm512_add_pd(g, hi), per);
        __m512d index = _mm512_roundscale_pd(position, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        __m256i i = _mm512_cvttpd_epi32(index);
        __m512d t = _mm512_i32gather_pd(i, sig, 8), st = _mm512_i32gather_pd(i, steps, 8);
        __m512d s = _mm512_add_pd(t, _mm512_mul_pd(st, _mm512_sub_pd(position, index)));
        _mm512_storeu_pd(mid + j, _mm512_mul_pd(_mm512_mul_pd(gv, s), _mm512_loadu_pd(up + j)));
    }
    silu_plain(gate + j, up + j, f - j, sig, steps, mid + j);
}
#endif

void silu_row(const double *gate, const double *up, int f, const double *sig, const double *steps, double *mid) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa_level >= ISA_AVX512) {
        silu_avx512(gate, up, f, sig, steps, mid);
        return;
    }
#endif
    silu_plain(gate, up, f, sig, steps, mid);
}

/* int8 codes of one head vector, rnd(t * (127 / M)); returns M / 127 */
double quantize_head(const double *t, int d, int8_t *out) {
    double amax = amax_abs(t, d);
    double f = QK_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (int i = 0; i < d; i++) out[i] = (int8_t)(int32_t)round_even_inline(t[i] * f);
    return amax / QK_LEVELS;
}

void rope(double *t, int d, const double *cos, const double *sin) {
    for (int i = 0; i < d / 2; i++) {
        double a = t[2 * i], b = t[2 * i + 1];
        double first = a * cos[i] - b * sin[i];
        double second = a * sin[i] + b * cos[i];
        t[2 * i] = first;
        t[2 * i + 1] = second;
    }
}

/* ---- the token distribution ---------------------------------------------------------------------- */
/* an unsigned key of a double that orders like the number (no NaN here) */
static inline uint64_t order_key(double x) {
    uint64_t b;
    memcpy(&b, &x, 8);
    return (b >> 63) ? ~b : (b | 0x8000000000000000ULL);
}
static inline double from_key(uint64_t k) {
    uint64_t b = (k >> 63) ? (k & 0x7fffffffffffffffULL) : ~k;
    double x;
    memcpy(&x, &b, 8);
    return x;
}

CLONES double max_of(const double *u, int n) {
    uint64_t best = 0;
    for (int j = 0; j < n; j++) {
        uint64_t k = order_key(u[j]);
        best = k > best ? k : best;
    }
    return from_key(best);
}

CLONES int64_t code_round(const double *l, int v, double top, const double *table, const double *steps, int64_t *e) {
    int64_t total = 0;
    for (int j = 0; j < v; j++) {
        double g = (top - l[j]) * CODE_STEP;
        g = g > CODE_RANGE ? CODE_RANGE : g;
        double index = floor_exact(g);
        int i = (int)index;
        e[j] = (int64_t)round_even_inline(table[i] + steps[i] * (g - index));
        total += e[j];
    }
    return total;
}

/* floor(e_j * spare / sum) + 1 for j < v: the token frequencies (docs/FORMAT.md). The quotient is at most
 * 2^24: a float64 estimate is within one of it, and one integer correction each way makes it exact
 * (e * spare < 2^56 in int64). Returns the sum of the frequencies of ids below `below` in *under and
 * of all of them. */
CLONES int64_t code_frequencies(const int64_t *e, int v, int64_t spare, int64_t sum, int32_t *f, int64_t below,
                                int64_t *under) {
    double s = (double)sum, sp = (double)spare;
    int64_t total = 0, low = 0;
    for (int j = 0; j < v; j++) {
        int64_t n = e[j] * spare;
        int64_t q = (int64_t)(((double)e[j] * sp) / s);
        int64_t r = n - q * sum;
        q = r < 0 ? q - 1 : q;
        q = r >= sum ? q + 1 : q;
        int32_t fj = (int32_t)(q + 1);
        if (f) f[j] = fj;
        total += fj;
        low += j < below ? fj : 0;
    }
    if (under) *under = low;
    return total;
}

/* e_j = rnd(interp(CODE, min((top - l_j) * 256, 8192))) and their sum (exact) */
int64_t code_weights(double *l, int v, const double *table, const double *steps, int64_t *e) {
    return code_round(l, v, max_of(l, v), table, steps, e);
}
