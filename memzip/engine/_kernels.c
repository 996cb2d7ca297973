/* Fused elementwise kernels of memzip's exact engine: the same IEEE operations, in the same order, as
 * the PyTorch reference in memzip/engine/arith.py and forward.py, so both give the same bits.
 *
 * Every float operation here is one correctly rounded IEEE-754 double operation (+, -, *, /), an exact
 * rounding to an integer (half to even, or floor), frexp, ldexp, comparisons, or a conversion of an
 * exact integer. Integer sums are exact (int32/int64 within range). Build with -ffp-contract=off:
 * no multiply-add may be fused into one rounding. No libm function other than fabs, frexp and ldexp
 * is used, and those are exact.
 *
 * Arrays are passed as addresses of contiguous tensors; the Python side (memzip/engine/fast.py) checks
 * shapes, dtypes and contiguity before calling.
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

/* Exact rounding without library calls (which baseline x86-64 does not inline): for |x| < 2**52,
 * (|x| + 2**52) - 2**52 rounds |x| to an integer half to even in the default rounding mode (IEEE
 * addition), which is nearbyint(x); truncation to int64 is exact, and floor follows from it. Larger
 * values are integers already. */
#define TWO52 4503599627370496.0
static inline double round_even(double x) {
    double a = fabs(x);
    if (!(a < TWO52)) return x;
    double r = (a + TWO52) - TWO52;
    return x < 0 ? -r : r;
}
static inline double floor_exact(double x) {
    if (!(fabs(x) < TWO52)) return x;
    double t = (double)(int64_t)x;
    return t > x ? t - 1.0 : t;
}

/* x [k] -> xq (optional), int8 halves hi/lo, unit. Mirrors arith.quantize_activations. */
static double quantize_row(const double *x, Py_ssize_t k, int8_t *hi, int8_t *lo, double *xq) {
    double amax = 0.0;
    for (Py_ssize_t i = 0; i < k; i++) {
        double a = fabs(x[i]);
        if (a > amax) amax = a;
    }
    double f = ACT_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (Py_ssize_t i = 0; i < k; i++) {
        double q = round_even(x[i] * f);
        if (q < -ACT_LEVELS) q = -ACT_LEVELS;
        if (q > ACT_LEVELS) q = ACT_LEVELS;
        if (xq) xq[i] = q;
        if (hi) {
            double h = floor_exact((q + 128.0) * 0.00390625);
            double l = q - h * 256.0;
            hi[i] = (int8_t)h;
            lo[i] = (int8_t)l;
        }
    }
    return amax / ACT_LEVELS;
}

/* Mirrors arith.sqrt: Newton steps from 2**ceil(e/2), v = f * 2**e (frexp and ldexp are exact). */
#define SQRT_STEPS 7
static double det_sqrt(double v) {
    int e;
    frexp(v, &e);
    int half_e = (int)floor_exact(((double)e + 1.0) / 2.0);
    double y = ldexp(1.0, half_e);
    for (int i = 0; i < SQRT_STEPS; i++) y = (y + v / y) * 0.5;
    return y;
}

/* Mirrors arith.normalize for one row; tmp holds k doubles. Returns the row factor. */
static double normalize_row(const double *x, const double *gain, Py_ssize_t k, double eps, int8_t *hi, int8_t *lo,
                            double *tmp) {
    double unit = quantize_row(x, k, NULL, NULL, tmp);
    double ss = 0.0;
    for (Py_ssize_t i = 0; i < k; i++) ss += tmp[i] * tmp[i]; /* integers: exact */
    double ms = (ss / (double)k) * (unit * unit);
    double inverse_rms = 1.0 / det_sqrt(ms + eps);
    for (Py_ssize_t i = 0; i < k; i++) tmp[i] = x[i] * gain[i];
    double gained_unit = quantize_row(tmp, k, hi, lo, NULL);
    return gained_unit * inverse_rms;
}

/* acc2 int32 [2m, n] (hi rows then lo rows) -> (acc * scale[j]) * factor[r]. Mirrors arith.linear. */
static inline double linear_value(const int32_t *acc2, Py_ssize_t m, Py_ssize_t n, Py_ssize_t r, Py_ssize_t j,
                                  const double *scale, double factor) {
    double acc = (double)acc2[r * n + j] * 256.0 + (double)acc2[(m + r) * n + j];
    return (acc * scale[j]) * factor;
}

static double quantize_head(const double *t, Py_ssize_t d, int8_t *out) {
    double amax = 0.0;
    for (Py_ssize_t i = 0; i < d; i++) {
        double a = fabs(t[i]);
        if (a > amax) amax = a;
    }
    double f = QK_LEVELS / (amax > 0.0 ? amax : 1.0);
    for (Py_ssize_t i = 0; i < d; i++) out[i] = (int8_t)round_even(t[i] * f);
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

static inline double interpolate(const double *table, const double *steps, double position) {
    double index = floor_exact(position);
    double frac = position - index;
    Py_ssize_t i = (Py_ssize_t)index;
    return table[i] + steps[i] * frac;
}

#define PTR(type, v) ((type *)(uintptr_t)(v))

/* Integer inner loops, compiled for several instruction sets and chosen at run time (their results are
 * exact integers, the same on every variant). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

CLONES static int32_t dot_i8(const int8_t *a, const int8_t *b, Py_ssize_t d) {
    int32_t s = 0;
    for (Py_ssize_t i = 0; i < d; i++) s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

/* acc[i] += w * v[i] for int32 accumulators (the caller flushes them before they could overflow) */
CLONES static void axpy_i8(int32_t *acc, int32_t w, const int8_t *v, Py_ssize_t d) {
    for (Py_ssize_t i = 0; i < d; i++) acc[i] += w * (int32_t)v[i];
}

/* normalize(x, gain, m, k, eps, halves, factor) */
static PyObject *py_normalize(PyObject *self, PyObject *args) {
    unsigned long long x, gain, halves, factor;
    Py_ssize_t m, k;
    double eps;
    if (!PyArg_ParseTuple(args, "KKnndKK", &x, &gain, &m, &k, &eps, &halves, &factor)) return NULL;
    double *tmp = malloc(sizeof(double) * (size_t)k);
    if (!tmp) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++)
        PTR(double, factor)[r] = normalize_row(PTR(double, x) + r * k, PTR(double, gain), k, eps,
                                               PTR(int8_t, halves) + r * k, PTR(int8_t, halves) + (m + r) * k, tmp);
    Py_END_ALLOW_THREADS
    free(tmp);
    Py_RETURN_NONE;
}

/* quantize(x, m, k, halves, unit) */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    unsigned long long x, halves, unit;
    Py_ssize_t m, k;
    if (!PyArg_ParseTuple(args, "KnnKK", &x, &m, &k, &halves, &unit)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++)
        PTR(double, unit)[r] = quantize_row(PTR(double, x) + r * k, k, PTR(int8_t, halves) + r * k,
                                            PTR(int8_t, halves) + (m + r) * k, NULL);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* linear(acc2, m, n, scale, factor, out, accumulate): out = value, or out = out + value */
static PyObject *py_linear(PyObject *self, PyObject *args) {
    unsigned long long acc2, scale, factor, out;
    Py_ssize_t m, n;
    int accumulate;
    if (!PyArg_ParseTuple(args, "KnnKKKp", &acc2, &m, &n, &scale, &factor, &out, &accumulate)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        double f = PTR(double, factor)[r];
        double *o = PTR(double, out) + r * n;
        for (Py_ssize_t j = 0; j < n; j++) {
            double v = linear_value(PTR(int32_t, acc2), m, n, r, j, PTR(double, scale), f);
            o[j] = accumulate ? o[j] + v : v;
        }
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* mlp(acc2, m, ffn, scale, factor, sig, sig_steps, halves, unit): gate/up product -> silu(gate) * up,
 * quantized for the down projection. Mirrors forward.py (_sigmoid, mid) and arith.quantize_activations. */
static PyObject *py_mlp(PyObject *self, PyObject *args) {
    unsigned long long acc2, scale, factor, sig, steps, halves, unit;
    Py_ssize_t m, f;
    if (!PyArg_ParseTuple(args, "KnnKKKKKK", &acc2, &m, &f, &scale, &factor, &sig, &steps, &halves, &unit)) return NULL;
    double *mid = malloc(sizeof(double) * (size_t)f);
    if (!mid) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        double fr = PTR(double, factor)[r];
        for (Py_ssize_t j = 0; j < f; j++) {
            double gate = linear_value(PTR(int32_t, acc2), m, 2 * f, r, j, PTR(double, scale), fr);
            double up = linear_value(PTR(int32_t, acc2), m, 2 * f, r, f + j, PTR(double, scale), fr);
            double g = gate < -SIG_RANGE ? -SIG_RANGE : (gate > SIG_RANGE ? SIG_RANGE : gate);
            double s = interpolate(PTR(double, sig), PTR(double, steps), (g + SIG_RANGE) * SIG_STEP);
            mid[j] = (gate * s) * up;
        }
        PTR(double, unit)[r] = quantize_row(mid, f, PTR(int8_t, halves) + r * f, PTR(int8_t, halves) + (m + r) * f, NULL);
    }
    Py_END_ALLOW_THREADS
    free(mid);
    Py_RETURN_NONE;
}

/* attention(acc2, rows, n, heads, kv_heads, d, scale, factor, cos, sin, start,
 *           keys, values, key_scale, value_scale, capacity, exp, exp_steps, inv_sqrt_d, halves, unit)
 * The q/k/v product of rows*n positions (row-major: row, then position) -> RoPE, int8 q/k/v, k/v appended
 * to this layer's cache at positions start..start+n-1, causal attention over the cache, and the output
 * quantized for the next product. Mirrors forward.Engine._attention and _rope. */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    unsigned long long acc2, scale, factor, cosp, sinp, keys, values, kscale, vscale, expt, exps, halves, unit;
    Py_ssize_t rows, n, heads, kvh, d, start, cap;
    double inv_sqrt_d;
    if (!PyArg_ParseTuple(args, "KnnnnnKKKKnKKKKnKKdKK", &acc2, &rows, &n, &heads, &kvh, &d, &scale, &factor, &cosp,
                          &sinp, &start, &keys, &values, &kscale, &vscale, &cap, &expt, &exps, &inv_sqrt_d, &halves,
                          &unit))
        return NULL;
    Py_ssize_t m = rows * n, width = (heads + 2 * kvh) * d, group = heads / kvh, span = start + n;
    Py_ssize_t half = d / 2;
    double *row = malloc(sizeof(double) * (size_t)width);
    int8_t *q8 = malloc((size_t)(n * heads * d));
    double *qs = malloc(sizeof(double) * (size_t)(n * heads));
    double *u = malloc(sizeof(double) * (size_t)span);
    double *o = malloc(sizeof(double) * (size_t)(n * heads * d));
    int64_t *acc = malloc(sizeof(int64_t) * (size_t)d);
    int32_t *part = malloc(sizeof(int32_t) * (size_t)d);
    if (!row || !q8 || !qs || !u || !o || !acc || !part) {
        free(row); free(q8); free(qs); free(u); free(o); free(acc); free(part);
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
            double fr = PTR(double, factor)[r];
            for (Py_ssize_t j = 0; j < width; j++) row[j] = linear_value(PTR(int32_t, acc2), m, width, r, j, PTR(double, scale), fr);
            const double *c = PTR(double, cosp) + pos * half, *s = PTR(double, sinp) + pos * half;
            for (Py_ssize_t h = 0; h < heads; h++) {
                rope(row + h * d, d, c, s);
                qs[t * heads + h] = quantize_head(row + h * d, d, q8 + (t * heads + h) * d);
            }
            for (Py_ssize_t g = 0; g < kvh; g++) {
                double *kr = row + heads * d + g * d, *vr = row + (heads + kvh) * d + g * d;
                rope(kr, d, c, s);
                KS[g * cap + pos] = quantize_head(kr, d, K + (g * cap + pos) * d);
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
                double top = -INFINITY;
                for (Py_ssize_t j = 0; j < visible; j++) {
                    int32_t dot = dot_i8(qv, Kg + j * d, d);
                    double score = ((double)dot * qsc) * ks[j];
                    u[j] = score;
                    if (score > top) top = score;
                }
                double total = 0.0, umax = 0.0;
                for (Py_ssize_t j = 0; j < visible; j++) {
                    double gap = top - u[j];
                    if (gap > EXP_RANGE) gap = EXP_RANGE;
                    double e = round_even(interpolate(E, ES, gap * EXP_STEP));
                    total += e; /* integers: exact */
                    u[j] = e * vs[j];
                    if (u[j] > umax) umax = u[j];
                }
                double wscale = WEIGHT_LEVELS / (umax > 0.0 ? umax : 1.0);
                /* sum of w * v: int32 partial sums over at most 256 keys (|w * v| < 2**23), then int64 */
                for (Py_ssize_t i = 0; i < d; i++) acc[i] = 0;
                for (Py_ssize_t j0 = 0; j0 < visible; j0 += 256) {
                    Py_ssize_t j1 = j0 + 256 < visible ? j0 + 256 : visible;
                    for (Py_ssize_t i = 0; i < d; i++) part[i] = 0;
                    for (Py_ssize_t j = j0; j < j1; j++) {
                        int32_t w = (int32_t)round_even(u[j] * wscale);
                        if (w) axpy_i8(part, w, Vg + j * d, d);
                    }
                    for (Py_ssize_t i = 0; i < d; i++) acc[i] += part[i];
                }
                double den = wscale * total;
                double *oh = o + (t * heads + h) * d;
                for (Py_ssize_t i = 0; i < d; i++) oh[i] = (double)acc[i] / den;
            }
            Py_ssize_t r = b * n + t;
            PTR(double, unit)[r] = quantize_row(o + t * heads * d, heads * d, PTR(int8_t, halves) + r * heads * d,
                                                PTR(int8_t, halves) + (m + r) * heads * d, NULL);
        }
    }
    Py_END_ALLOW_THREADS
    free(row); free(q8); free(qs); free(u); free(o); free(acc); free(part);
    Py_RETURN_NONE;
}

/* Output head, from the int8 product acc2 [2m, vocab] of m rows: logit_j = (acc_j * scale_j) * factor
 * (arith.linear). A token's rank counts the logits above its own, plus equal ones with lower ids. */
static void head_row(const int32_t *acc2, Py_ssize_t m, Py_ssize_t v, Py_ssize_t r, const double *scale, double f,
                     double *out) {
    for (Py_ssize_t j = 0; j < v; j++) out[j] = linear_value(acc2, m, v, r, j, scale, f);
}

/* ranks(acc2, m, vocab, scale, factor, tokens int64 [m], out int64 [m]) */
static PyObject *py_ranks(PyObject *self, PyObject *args) {
    unsigned long long acc2, scale, factor, tokens, out;
    Py_ssize_t m, v;
    if (!PyArg_ParseTuple(args, "KnnKKKK", &acc2, &m, &v, &scale, &factor, &tokens, &out)) return NULL;
    double *l = malloc(sizeof(double) * (size_t)v);
    if (!l) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        head_row(PTR(int32_t, acc2), m, v, r, PTR(double, scale), PTR(double, factor)[r], l);
        int64_t t = PTR(int64_t, tokens)[r], rank = 0;
        double lt = l[t];
        for (Py_ssize_t j = 0; j < v; j++) rank += (l[j] > lt) | ((l[j] == lt) & (j < t));
        PTR(int64_t, out)[r] = rank;
    }
    Py_END_ALLOW_THREADS
    free(l);
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

/* select(acc2, m, vocab, scale, factor, ranks int64 [m], out int64 [m]) */
static PyObject *py_select(PyObject *self, PyObject *args) {
    unsigned long long acc2, scale, factor, ranks, out;
    Py_ssize_t m, v;
    if (!PyArg_ParseTuple(args, "KnnKKKK", &acc2, &m, &v, &scale, &factor, &ranks, &out)) return NULL;
    double *l = malloc(sizeof(double) * (size_t)v);
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)v);
    if (!l || !idx) { free(l); free(idx); return PyErr_NoMemory(); }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < m; r++) {
        head_row(PTR(int32_t, acc2), m, v, r, PTR(double, scale), PTR(double, factor)[r], l);
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
