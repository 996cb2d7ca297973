/* Fused elementwise kernels of memzip's exact engine: the same IEEE operations, in the same order, as
 * the PyTorch reference in memzip/engine/arith.py and forward.py, so both give the same bits.
 *
 * Every float operation here is one correctly rounded IEEE-754 double operation (+, -, *, /), an exact
 * rounding to an integer (half to even, or floor), frexp, ldexp, comparisons, selections, or a
 * conversion of an exact integer. Integer sums are exact (int32/int64 within range); the one float sum
 * (a sum of squares of integers) stays below 2**53, so it is exact in any order. Build with
 * -ffp-contract=off: no multiply-add may be fused into one rounding. No libm function other than
 * fabs, copysign, frexp and ldexp is used, and those are exact.
 *
 * The row functions are compiled for several x86-64 levels and chosen at run time (target_clones): the
 * vector instructions they may use (add, sub, mul, div, compare, blend, integer max) are IEEE-exact
 * elementwise, and without fast-math the compiler neither reassociates nor contracts, so every variant
 * gives the same bits.
 *
 * Arrays are passed as addresses of contiguous tensors; the Python side (memzip/engine/forward.py)
 * checks shapes and dtypes, and may run disjoint row ranges on several threads (rows are independent).
 * Quantized activations are written as two int8 planes: hi (256 * hi + lo) and lo.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ACT_LEVELS 32639.0
#define QK_LEVELS 127.0
#define WEIGHT_LEVELS 65535.0
#define EXP_RANGE 32.0
#define EXP_STEP 256.0
#define SIG_RANGE 16.0
#define SIG_STEP 64.0
#define SQRT_STEPS 7

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define PTR(type, v) ((type *)(uintptr_t)(v))

/* Exact rounding without library calls: for |x| < 2**52, (|x| + 2**52) - 2**52 is |x| rounded to an
 * integer, half to even (IEEE addition in the default rounding mode); larger values are integers
 * already. The sign is kept, as nearbyint and torch.round keep it (also for zero). floor follows. */
#define TWO52 4503599627370496.0
static inline double round_even(double x) {
    double a = fabs(x);
    double r = (a + TWO52) - TWO52;
    r = a < TWO52 ? r : a;
    return copysign(r, x);
}
static inline double floor_exact(double x) {
    double r = round_even(x);
    return r > x ? r - 1.0 : r;
}

/* max |x_i|: the bit patterns of non-negative doubles order like the numbers (an integer maximum) */
static inline double amax_abs(const double *x, Py_ssize_t k) {
    uint64_t best = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        uint64_t b;
        memcpy(&b, &x[i], 8);
        b &= 0x7fffffffffffffffULL;
        best = b > best ? b : best;
    }
    double out;
    memcpy(&out, &best, 8);
    return out;
}

static inline double quantized(double x, double f) {
    double q = round_even(x * f);
    q = q < -ACT_LEVELS ? -ACT_LEVELS : q;
    return q > ACT_LEVELS ? ACT_LEVELS : q;
}

/* Mirrors arith.quantize_activations for one row: the integers xq; returns unit. */
CLONES static double quantize_values(const double *x, Py_ssize_t k, double *xq) {
    double amax = amax_abs(x, k);
    double f = ACT_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (Py_ssize_t i = 0; i < k; i++) xq[i] = quantized(x[i], f);
    return amax / ACT_LEVELS;
}

/* The same, as int8 halves hi/lo (xq = 256 hi + lo); returns unit. */
CLONES static double quantize_row(const double *x, Py_ssize_t k, int8_t *hi, int8_t *lo) {
    double amax = amax_abs(x, k);
    double f = ACT_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (Py_ssize_t i = 0; i < k; i++) {
        double q = quantized(x[i], f);
        double h = floor_exact((q + 128.0) * 0.00390625);
        double l = q - h * 256.0;
        hi[i] = (int8_t)(int32_t)h;
        lo[i] = (int8_t)(int32_t)l;
    }
    return amax / ACT_LEVELS;
}

/* Mirrors arith.sqrt: Newton steps from 2**ceil(e/2), v = f * 2**e (frexp and ldexp are exact). */
static double det_sqrt(double v) {
    int e;
    frexp(v, &e);
    int half_e = (int)floor_exact(((double)e + 1.0) / 2.0);
    double y = ldexp(1.0, half_e);
    for (int i = 0; i < SQRT_STEPS; i++) y = (y + v / y) * 0.5;
    return y;
}

/* sum of squares of integer-valued doubles below 2**15: exact int64 */
CLONES static int64_t sum_squares(const double *xq, Py_ssize_t k) {
    int64_t s = 0;
    for (Py_ssize_t i = 0; i < k; i++) {
        int32_t v = (int32_t)xq[i];
        s += (int64_t)(v * v);
    }
    return s;
}

CLONES static void times(const double *x, const double *g, double *out, Py_ssize_t k) {
    for (Py_ssize_t i = 0; i < k; i++) out[i] = x[i] * g[i];
}

/* Mirrors arith.normalize for one row; tmp holds k doubles. Returns the row factor. */
static double normalize_row(const double *x, const double *gain, Py_ssize_t k, double eps, int8_t *hi, int8_t *lo,
                            double *tmp) {
    double unit = quantize_values(x, k, tmp);
    double ss = (double)sum_squares(tmp, k); /* < 2**53: exact */
    double ms = (ss / (double)k) * (unit * unit);
    double inverse_rms = 1.0 / det_sqrt(ms + eps);
    times(x, gain, tmp, k);
    double gained_unit = quantize_row(tmp, k, hi, lo);
    return gained_unit * inverse_rms;
}

/* Mirrors arith.linear for one row: (acc * scale[j]) * factor, acc = 256 * hi_acc + lo_acc (exact). */
CLONES static void linear_row(const int32_t *ah, const int32_t *al, Py_ssize_t n, const double *scale, double factor,
                              double *out, int accumulate) {
    if (accumulate) {
        for (Py_ssize_t j = 0; j < n; j++) {
            double acc = (double)ah[j] * 256.0 + (double)al[j];
            out[j] = out[j] + (acc * scale[j]) * factor;
        }
    } else {
        for (Py_ssize_t j = 0; j < n; j++) {
            double acc = (double)ah[j] * 256.0 + (double)al[j];
            out[j] = (acc * scale[j]) * factor;
        }
    }
}

static inline double interpolate(const double *table, const double *steps, double position) {
    double index = floor_exact(position);
    double frac = position - index;
    Py_ssize_t i = (Py_ssize_t)index;
    return table[i] + steps[i] * frac;
}

/* table positions: index = floor(position), frac = position - index (vectorizable); then the table
 * reads (plain loads); then t[i] + s[i] * frac (vectorizable): interpolate() in three passes */
CLONES static void positions(double *pos, Py_ssize_t n, int32_t *index) {
    for (Py_ssize_t j = 0; j < n; j++) {
        double i = floor_exact(pos[j]);
        pos[j] = pos[j] - i;
        index[j] = (int32_t)i;
    }
}

static void lookup(const double *table, const double *steps, const int32_t *index, Py_ssize_t n, double *t, double *s) {
    for (Py_ssize_t j = 0; j < n; j++) {
        t[j] = table[index[j]];
        s[j] = steps[index[j]];
    }
}

/* silu(gate) * up for one row (forward.py: _sigmoid and mid); work holds 3 f doubles and f int32 */
CLONES static void silu_row(const double *gate, const double *up, Py_ssize_t f, const double *sig, const double *steps,
                            double *mid, double *work) {
    double *frac = work, *t = work + f, *s = work + 2 * f;
    int32_t *index = (int32_t *)(work + 3 * f);
    for (Py_ssize_t j = 0; j < f; j++) {
        double g = gate[j];
        g = g < -SIG_RANGE ? -SIG_RANGE : g;
        g = g > SIG_RANGE ? SIG_RANGE : g;
        frac[j] = (g + SIG_RANGE) * SIG_STEP;
    }
    positions(frac, f, index);
    lookup(sig, steps, index, f, t, s);
    for (Py_ssize_t j = 0; j < f; j++) mid[j] = (gate[j] * (t[j] + s[j] * frac[j])) * up[j];
}

/* Mirrors arith.quantize_heads for one vector: int8 values, returns the scale. */
static double quantize_head(const double *t, Py_ssize_t d, int8_t *out) {
    double amax = amax_abs(t, d);
    double f = QK_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (Py_ssize_t i = 0; i < d; i++) out[i] = (int8_t)(int32_t)round_even(t[i] * f);
    return amax / QK_LEVELS;
}

static void rope(double *t, Py_ssize_t d, const double *cos, const double *sin) {
    for (Py_ssize_t i = 0; i < d / 2; i++) {
        double a = t[2 * i], b = t[2 * i + 1];
        double first = a * cos[i] - b * sin[i];
        double second = a * sin[i] + b * cos[i];
        t[2 * i] = first;
        t[2 * i + 1] = second;
    }
}

/* scores of one query against `visible` keys stored transposed (K[i * cap + j]): ((q . k_j) * qsc) * ks_j;
 * dot holds `visible` int32 (exact: |sum| <= d * 127**2) */
CLONES static void scores(const int8_t *q, const int8_t *K, Py_ssize_t cap, Py_ssize_t visible, Py_ssize_t d,
                          double qsc, const double *ks, int32_t *dot, double *u) {
    for (Py_ssize_t j = 0; j < visible; j++) dot[j] = 0;
    for (Py_ssize_t i = 0; i < d; i++) {
        int32_t qi = q[i];
        const int8_t *ki = K + i * cap;
        for (Py_ssize_t j = 0; j < visible; j++) dot[j] += qi * (int32_t)ki[j];
    }
    for (Py_ssize_t j = 0; j < visible; j++) u[j] = ((double)dot[j] * qsc) * ks[j];
}

/* acc[i] = sum_j round(u_j * wscale) * v_j[i], exactly: int32 partial sums over at most 256 keys
 * (|w * v| < 2**23), added into int64 */
CLONES static void weighted_sum(const double *u, double wscale, const int8_t *V, Py_ssize_t visible, Py_ssize_t d,
                                int32_t *part, int64_t *acc) {
    for (Py_ssize_t i = 0; i < d; i++) acc[i] = 0;
    for (Py_ssize_t j0 = 0; j0 < visible; j0 += 256) {
        Py_ssize_t j1 = j0 + 256 < visible ? j0 + 256 : visible;
        for (Py_ssize_t i = 0; i < d; i++) part[i] = 0;
        for (Py_ssize_t j = j0; j < j1; j++) {
            int32_t w = (int32_t)round_even(u[j] * wscale);
            const int8_t *vj = V + j * d;
            for (Py_ssize_t i = 0; i < d; i++) part[i] += w * (int32_t)vj[i];
        }
        for (Py_ssize_t i = 0; i < d; i++) acc[i] += part[i];
    }
}

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

CLONES static double max_of(const double *u, Py_ssize_t n) {
    uint64_t best = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        uint64_t k = order_key(u[j]);
        best = k > best ? k : best;
    }
    return from_key(best);
}

/* gap to the top score, clamped, as exp-table positions */
CLONES static void gaps(double *u, Py_ssize_t n, double top) {
    for (Py_ssize_t j = 0; j < n; j++) {
        double gap = top - u[j];
        gap = gap > EXP_RANGE ? EXP_RANGE : gap;
        u[j] = gap * EXP_STEP;
    }
}

/* e = round(t + s * frac) (integers 0..65536), u = e * vs; returns the sum of e (exact) */
CLONES static int64_t weights(double *u, const double *t, const double *s, const double *vs, Py_ssize_t n) {
    int64_t total = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        double e = round_even(t[j] + s[j] * u[j]);
        total += (int64_t)(int32_t)e;
        u[j] = e * vs[j];
    }
    return total;
}

/* the softmax weights of one query over `visible` keys, in u[] (scores in, e * vs out); returns the sum
 * of e and sets the largest e * vs. work holds 2 n doubles and n int32. Mirrors forward._attention. */
static double softmax_weights(double *u, Py_ssize_t n, const double *vs, const double *E, const double *ES,
                              double *umax, double *work) {
    double *t = work, *s = work + n;
    int32_t *index = (int32_t *)(work + 2 * n);
    gaps(u, n, max_of(u, n));
    positions(u, n, index);
    lookup(E, ES, index, n, t, s);
    double total = (double)weights(u, t, s, vs, n);
    *umax = amax_abs(u, n); /* e * vs >= 0 */
    return total;
}

/* normalize(x, gain, m, k, eps, hi, lo, factor) */
static PyObject *py_normalize(PyObject *self, PyObject *args) {
    unsigned long long x, gain, hi, lo, factor;
    Py_ssize_t m, k;
    double eps;
    if (!PyArg_ParseTuple(args, "KKnndKKK", &x, &gain, &m, &k, &eps, &hi, &lo, &factor)) return NULL;
    double *tmp = malloc(sizeof(double) * (size_t)k);
    if (!tmp) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++)
        PTR(double, factor)[r] = normalize_row(PTR(double, x) + r * k, PTR(double, gain), k, eps,
                                               PTR(int8_t, hi) + r * k, PTR(int8_t, lo) + r * k, tmp);
    Py_END_ALLOW_THREADS
    free(tmp);
    Py_RETURN_NONE;
}

/* quantize(x, m, k, hi, lo, unit) */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    unsigned long long x, hi, lo, unit;
    Py_ssize_t m, k;
    if (!PyArg_ParseTuple(args, "KnnKKK", &x, &m, &k, &hi, &lo, &unit)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++)
        PTR(double, unit)[r] = quantize_row(PTR(double, x) + r * k, k, PTR(int8_t, hi) + r * k, PTR(int8_t, lo) + r * k);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* linear(acc_hi, acc_lo, m, n, scale, factor, out, accumulate): out = value, or out = out + value */
static PyObject *py_linear(PyObject *self, PyObject *args) {
    unsigned long long ah, al, scale, factor, out;
    Py_ssize_t m, n;
    int accumulate;
    if (!PyArg_ParseTuple(args, "KKnnKKKp", &ah, &al, &m, &n, &scale, &factor, &out, &accumulate)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++)
        linear_row(PTR(int32_t, ah) + r * n, PTR(int32_t, al) + r * n, n, PTR(double, scale), PTR(double, factor)[r],
                   PTR(double, out) + r * n, accumulate);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* mlp(acc_hi, acc_lo, m, ffn, scale, factor, sig, sig_steps, hi, lo, unit): the gate/up product (rows of
 * 2 ffn) -> silu(gate) * up, quantized for the down projection. */
static PyObject *py_mlp(PyObject *self, PyObject *args) {
    unsigned long long ah, al, scale, factor, sig, steps, hi, lo, unit;
    Py_ssize_t m, f;
    if (!PyArg_ParseTuple(args, "KKnnKKKKKKK", &ah, &al, &m, &f, &scale, &factor, &sig, &steps, &hi, &lo, &unit))
        return NULL;
    double *gu = malloc(sizeof(double) * (size_t)(7 * f));
    if (!gu) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        linear_row(PTR(int32_t, ah) + r * 2 * f, PTR(int32_t, al) + r * 2 * f, 2 * f, PTR(double, scale),
                   PTR(double, factor)[r], gu, 0);
        silu_row(gu, gu + f, f, PTR(double, sig), PTR(double, steps), gu + 2 * f, gu + 3 * f);
        PTR(double, unit)[r] = quantize_row(gu + 2 * f, f, PTR(int8_t, hi) + r * f, PTR(int8_t, lo) + r * f);
    }
    Py_END_ALLOW_THREADS
    free(gu);
    Py_RETURN_NONE;
}

/* attention(acc_hi, acc_lo, rows, n, heads, kv_heads, d, scale, factor, cos, sin, start,
 *           keys, values, key_scale, value_scale, capacity, exp, exp_steps, inv_sqrt_d, hi, lo, unit)
 * The q/k/v product of rows*n positions (row-major: row, then position) -> RoPE, int8 q/k/v, k/v appended
 * to this layer's cache at positions start..start+n-1, causal attention over the cache, and the output
 * quantized for the next product. Mirrors forward.Engine._attention and _rope. */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    unsigned long long ah, al, scale, factor, cosp, sinp, keys, values, kscale, vscale, expt, exps, hi, lo, unit;
    Py_ssize_t rows, n, heads, kvh, d, start, cap;
    double inv_sqrt_d;
    if (!PyArg_ParseTuple(args, "KKnnnnnKKKKnKKKKnKKdKKK", &ah, &al, &rows, &n, &heads, &kvh, &d, &scale, &factor,
                          &cosp, &sinp, &start, &keys, &values, &kscale, &vscale, &cap, &expt, &exps, &inv_sqrt_d,
                          &hi, &lo, &unit))
        return NULL;
    Py_ssize_t width = (heads + 2 * kvh) * d, group = heads / kvh, span = start + n;
    Py_ssize_t half = d / 2;
    double *row = malloc(sizeof(double) * (size_t)width);
    int8_t *q8 = malloc((size_t)(n * heads * d));
    double *qs = malloc(sizeof(double) * (size_t)(n * heads));
    double *u = malloc(sizeof(double) * (size_t)span);
    double *work = malloc(sizeof(double) * (size_t)(3 * span));
    int32_t *dots = malloc(sizeof(int32_t) * (size_t)span);
    int8_t *k8 = malloc((size_t)d);
    double *o = malloc(sizeof(double) * (size_t)(heads * d));
    int64_t *acc = malloc(sizeof(int64_t) * (size_t)d);
    int32_t *part = malloc(sizeof(int32_t) * (size_t)d);
    if (!row || !q8 || !qs || !u || !work || !dots || !k8 || !o || !acc || !part) {
        free(row); free(q8); free(qs); free(u); free(work); free(dots); free(k8); free(o); free(acc); free(part);
        return PyErr_NoMemory();
    }
    const double *E = PTR(double, expt), *ES = PTR(double, exps);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t b = 0; b < rows; b++) {
        int8_t *K = PTR(int8_t, keys) + b * kvh * cap * d;
        int8_t *V = PTR(int8_t, values) + b * kvh * cap * d;
        double *KS = PTR(double, kscale) + b * kvh * cap;
        double *VS = PTR(double, vscale) + b * kvh * cap;
        for (Py_ssize_t t = 0; t < n; t++) {
            Py_ssize_t r = b * n + t, pos = start + t;
            linear_row(PTR(int32_t, ah) + r * width, PTR(int32_t, al) + r * width, width, PTR(double, scale),
                       PTR(double, factor)[r], row, 0);
            const double *c = PTR(double, cosp) + pos * half, *s = PTR(double, sinp) + pos * half;
            for (Py_ssize_t h = 0; h < heads; h++) {
                rope(row + h * d, d, c, s);
                qs[t * heads + h] = quantize_head(row + h * d, d, q8 + (t * heads + h) * d);
            }
            for (Py_ssize_t g = 0; g < kvh; g++) {
                double *kr = row + heads * d + g * d, *vr = row + (heads + kvh) * d + g * d;
                rope(kr, d, c, s);
                KS[g * cap + pos] = quantize_head(kr, d, k8);
                for (Py_ssize_t i = 0; i < d; i++) K[(g * d + i) * cap + pos] = k8[i];
                VS[g * cap + pos] = quantize_head(vr, d, V + (g * cap + pos) * d);
            }
        }
        for (Py_ssize_t t = 0; t < n; t++) {
            Py_ssize_t visible = start + t + 1;
            for (Py_ssize_t h = 0; h < heads; h++) {
                Py_ssize_t g = h / group;
                const int8_t *qv = q8 + (t * heads + h) * d, *Kg = K + g * cap * d, *Vg = V + g * cap * d;
                const double *ks = KS + g * cap, *vs = VS + g * cap;
                double qsc = qs[t * heads + h] * inv_sqrt_d;
                scores(qv, Kg, cap, visible, d, qsc, ks, dots, u);
                double umax;
                double total = softmax_weights(u, visible, vs, E, ES, &umax, work);
                double wscale = WEIGHT_LEVELS / (umax > 0.0 ? umax : 1.0);
                weighted_sum(u, wscale, Vg, visible, d, part, acc);
                double den = wscale * total;
                double *oh = o + h * d;
                for (Py_ssize_t i = 0; i < d; i++) oh[i] = (double)acc[i] / den;
            }
            Py_ssize_t r = b * n + t;
            PTR(double, unit)[r] = quantize_row(o, heads * d, PTR(int8_t, hi) + r * heads * d,
                                                PTR(int8_t, lo) + r * heads * d);
        }
    }
    Py_END_ALLOW_THREADS
    free(row); free(q8); free(qs); free(u); free(work); free(dots); free(k8); free(o); free(acc); free(part);
    Py_RETURN_NONE;
}

/* Output head, from the int8 products of m rows: logit_j = (acc_j * scale_j) * factor (arith.linear). A
 * token's rank counts the logits above its own, plus equal ones with lower ids. */
CLONES static int64_t rank_in(const double *l, Py_ssize_t v, int64_t t) {
    double lt = l[t];
    int64_t rank = 0;
    for (Py_ssize_t j = 0; j < v; j++) rank += (l[j] > lt) | ((l[j] == lt) & (j < t));
    return rank;
}

/* ranks(acc_hi, acc_lo, m, vocab, scale, factor, tokens int64 [m], out int64 [m]) */
static PyObject *py_ranks(PyObject *self, PyObject *args) {
    unsigned long long ah, al, scale, factor, tokens, out;
    Py_ssize_t m, v;
    if (!PyArg_ParseTuple(args, "KKnnKKKK", &ah, &al, &m, &v, &scale, &factor, &tokens, &out)) return NULL;
    double *l = malloc(sizeof(double) * (size_t)v);
    if (!l) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        linear_row(PTR(int32_t, ah) + r * v, PTR(int32_t, al) + r * v, v, PTR(double, scale), PTR(double, factor)[r], l, 0);
        PTR(int64_t, out)[r] = rank_in(l, v, PTR(int64_t, tokens)[r]);
    }
    Py_END_ALLOW_THREADS
    free(l);
    Py_RETURN_NONE;
}

/* token frequencies of one row from its logits l (overwritten): mirrors forward.token_frequencies */
CLONES static void code_positions(double *l, Py_ssize_t v, double top) {
    for (Py_ssize_t j = 0; j < v; j++) {
        double g = (top - l[j]) * EXP_STEP;
        l[j] = g > EXP_RANGE * EXP_STEP ? EXP_RANGE * EXP_STEP : g;
    }
}

CLONES static int64_t code_round(double *pos, const double *t, const double *s, Py_ssize_t v, int64_t *e) {
    int64_t total = 0;
    for (Py_ssize_t j = 0; j < v; j++) {
        e[j] = (int64_t)round_even(t[j] + s[j] * pos[j]);
        total += e[j];
    }
    return total;
}

CLONES static void code_scale(int64_t *e, Py_ssize_t v, int64_t spare, int64_t total) {
    for (Py_ssize_t j = 0; j < v; j++) e[j] = 1 + (e[j] * spare) / total; /* non-negative: floor */
}

/* frequencies(acc_hi, acc_lo, m, vocab, scale, factor, table, steps, spare, out int64 [m, vocab]) */
static PyObject *py_frequencies(PyObject *self, PyObject *args) {
    unsigned long long ah, al, scale, factor, table, steps, out;
    Py_ssize_t m, v;
    long long spare;
    if (!PyArg_ParseTuple(args, "KKnnKKKKLK", &ah, &al, &m, &v, &scale, &factor, &table, &steps, &spare, &out))
        return NULL;
    double *l = malloc(sizeof(double) * (size_t)(3 * v));
    int32_t *index = malloc(sizeof(int32_t) * (size_t)v);
    if (!l || !index) { free(l); free(index); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        int64_t *e = PTR(int64_t, out) + r * v;
        linear_row(PTR(int32_t, ah) + r * v, PTR(int32_t, al) + r * v, v, PTR(double, scale), PTR(double, factor)[r], l, 0);
        code_positions(l, v, max_of(l, v));
        positions(l, v, index);
        lookup(PTR(double, table), PTR(double, steps), index, v, l + v, l + 2 * v);
        int64_t total = code_round(l, l + v, l + 2 * v, v, e);
        code_scale(e, v, (int64_t)spare, total);
    }
    Py_END_ALLOW_THREADS
    free(l); free(index);
    Py_RETURN_NONE;
}

/* order: decreasing logit, lower id first on ties (a total order on ids) */
static inline int before(const double *l, int64_t a, int64_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); }

/* the id at position k of that order (quickselect; the answer is unique whatever the pivots) */
static int64_t select_kth(const double *l, int64_t *idx, Py_ssize_t v, Py_ssize_t k) {
    for (Py_ssize_t j = 0; j < v; j++) idx[j] = j;
    Py_ssize_t lo = 0, hi = v - 1;
    while (lo < hi) {
        int64_t pivot = idx[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (before(l, idx[i], pivot)) i++;
            while (before(l, pivot, idx[j])) j--;
            if (i <= j) {
                int64_t t = idx[i]; idx[i] = idx[j]; idx[j] = t;
                i++; j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return idx[k];
}

/* select(acc_hi, acc_lo, m, vocab, scale, factor, ranks int64 [m], out int64 [m]) */
static PyObject *py_select(PyObject *self, PyObject *args) {
    unsigned long long ah, al, scale, factor, ranks, out;
    Py_ssize_t m, v;
    if (!PyArg_ParseTuple(args, "KKnnKKKK", &ah, &al, &m, &v, &scale, &factor, &ranks, &out)) return NULL;
    double *l = malloc(sizeof(double) * (size_t)v);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)v);
    if (!l || !idx) { free(l); free(idx); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        linear_row(PTR(int32_t, ah) + r * v, PTR(int32_t, al) + r * v, v, PTR(double, scale), PTR(double, factor)[r], l, 0);
        int64_t k = PTR(int64_t, ranks)[r], best = 0;
        if (k == 0) {
            for (Py_ssize_t j = 1; j < v; j++) if (l[j] > l[best]) best = j;
        } else {
            best = select_kth(l, idx, v, k);
        }
        PTR(int64_t, out)[r] = best;
    }
    Py_END_ALLOW_THREADS
    free(l); free(idx);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"ranks", py_ranks, METH_VARARGS, "Rank of each row's token under the head's logits."},
    {"frequencies", py_frequencies, METH_VARARGS, "Integer token distributions for coding."},
    {"select", py_select, METH_VARARGS, "Token at each row's rank under the head's logits."},
    {"normalize", py_normalize, METH_VARARGS, "RMSNorm rows, quantized as int8 halves; row factors."},
    {"quantize", py_quantize, METH_VARARGS, "Quantize rows as int8 halves; units."},
    {"linear", py_linear, METH_VARARGS, "Scale an int8 product (optionally added to out)."},
    {"mlp", py_mlp, METH_VARARGS, "silu(gate) * up from the gate/up product, quantized."},
    {"attention", py_attention, METH_VARARGS, "q/k/v product -> RoPE, cache, causal attention, quantized output."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "memzip exact engine kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
