/* memzip.engine._native: the exact engine's C implementation as a Python module.
 *
 * Arrays cross the boundary through the buffer protocol (numpy arrays): every argument's element
 * kind, size and length is checked here, so a wrong call raises TypeError/ValueError instead of
 * reading the wrong memory. memzip/engine/native.py is the typed Python side.
 *
 *   Model(config, arrays)            the weights (packed by native.py) and tables, kept referenced
 *   Model.cache(rows, capacity)      a KV cache
 *   Model.forward(x, cache, rows, n, final, factor)
 *   Model.logits(final, factor, m, positions, out)
 *   Model.frequencies(final, factor, m, positions, freq, total)
 *   Model.intervals(final, factor, m, positions, tokens, lo, hi, total)
 *   find(freq, vocab, targets, tokens, lo, hi)
 *   set_threads(n), threads(), isa(), available_isa(), set_isa(name), read_bandwidth(bytes, rounds)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "forward.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

int isa_level = ISA_BASELINE;
static int isa_best = -1;
static const char *ISA_NAMES[] = {"baseline", "avx2", "avx512", "amx"};

int isa_available(void) {
    if (isa_best >= 0) return isa_best;
    int best = ISA_BASELINE;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) best = ISA_AVX2;
    if (best == ISA_AVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni"))
        best = ISA_AVX512;
    unsigned a, b, c, d;
    if (best == ISA_AVX512 && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 24)) && (d & (1u << 25)) &&
        amx_enable())
        best = ISA_AMX;
#endif
    isa_best = best;
    return best;
}

/* ---- buffers ----------------------------------------------------------------------------------- */

typedef struct {
    char kind; /* 'i' signed integer, 'u' unsigned, 'f' float */
    int size;
} Element;

static const Element I8 = {'i', 1}, U8 = {'u', 1}, I32 = {'i', 4}, I64 = {'i', 8}, F64 = {'f', 8};

static int element_matches(const Py_buffer *view, Element want) {
    const char *f = view->format ? view->format : "B";
    while (*f == '<' || *f == '=' || *f == '@' || *f == '!') f++;
    if (f[0] == 0 || f[1] != 0 || view->itemsize != want.size) return 0;
    switch (want.kind) {
    case 'i': return strchr("bhilq", f[0]) != NULL;
    case 'u': return strchr("BHILQ", f[0]) != NULL;
    default: return strchr("efd", f[0]) != NULL;
    }
}

/* a C-contiguous buffer of `count` elements of `want` (count < 0: any count, returned in *count_out) */
static int get_buffer(PyObject *obj, Element want, Py_ssize_t count, int writable, const char *name, Py_buffer *view) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: a C-contiguous%s array is required", name, writable ? " writable" : "");
        return -1;
    }
    if (!element_matches(view, want)) {
        PyErr_Format(PyExc_TypeError, "%s: elements of kind '%c' and %d bytes are required (got format '%s', %zd bytes)",
                     name, want.kind, want.size, view->format ? view->format : "?", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (count >= 0 && view->len != count * want.size) {
        PyErr_Format(PyExc_ValueError, "%s: %zd elements are required, got %zd", name, count, view->len / want.size);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- Model ------------------------------------------------------------------------------------- */

#define MAX_VIEWS 64

typedef struct {
    PyObject_HEAD Model model;
    Py_buffer views[MAX_VIEWS];
    int nviews;
} ModelObject;

static PyTypeObject ModelType, CacheType;

static const void *take(ModelObject *self, PyObject *arrays, const char *name, Element want, Py_ssize_t count) {
    PyObject *obj = PyDict_GetItemString(arrays, name);
    if (!obj) {
        PyErr_Format(PyExc_KeyError, "array '%s' is missing", name);
        return NULL;
    }
    if (self->nviews >= MAX_VIEWS) {
        PyErr_SetString(PyExc_RuntimeError, "too many arrays");
        return NULL;
    }
    Py_buffer *view = &self->views[self->nviews];
    if (get_buffer(obj, want, count, 0, name, view) < 0) return NULL;
    self->nviews++;
    return view->buf;
}

static int take_matrix(ModelObject *self, PyObject *arrays, const char *name, int layers, int n, int k, Matrix *out) {
    char key[64];
    int np = (n + 15) / 16 * 16, kp = (k + 63) / 64 * 64;
    snprintf(key, sizeof key, "%s_packed", name);
    const int8_t *w = take(self, arrays, key, I8, (Py_ssize_t)layers * np * kp);
    snprintf(key, sizeof key, "%s_sums", name);
    const int32_t *sums = take(self, arrays, key, I32, (Py_ssize_t)layers * np);
    snprintf(key, sizeof key, "%s_scale", name);
    const double *scale = take(self, arrays, key, F64, (Py_ssize_t)layers * np);
    if (!w || !sums || !scale) return -1;
    for (int l = 0; l < layers; l++) {
        Matrix *M = &out[l];
        M->n = n;
        M->k = k;
        M->np = np;
        M->kp = kp;
        M->w = w + (size_t)l * np * kp;
        M->sums = sums + (size_t)l * np;
        M->scale = scale + (size_t)l * np;
    }
    return 0;
}

static void model_dealloc(ModelObject *self) {
    for (int i = 0; i < self->nviews; i++) PyBuffer_Release(&self->views[i]);
    Scratch *s = &self->model.scratch;
    free(s->act);
    free(s->factor);
    free(s->qkv);
    free(s->q8);
    free(s->cq);
    free(s->o);
    free(s->gu);
    for (int t = 0; t < MAX_THREADS; t++) free(s->thread[t]);
    for (int i = 0; i < 4; i++) free(s->head[i]);
    free(self->model.layer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int max3(int a, int b, int c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

static int model_init(ModelObject *self, PyObject *args, PyObject *kwds) {
    int layers, hidden, heads, kv, d, ffn, vocab, capacity;
    double eps, inv_sqrt_d;
    PyObject *arrays;
    if (!PyArg_ParseTuple(args, "(iiiiiiiddi)O!", &layers, &hidden, &heads, &kv, &d, &ffn, &vocab, &eps, &inv_sqrt_d,
                          &capacity, &PyDict_Type, &arrays))
        return -1;
    if (layers < 1 || hidden < 1 || heads < 1 || kv < 1 || heads % kv || d < 2 || d % 2 || d > 1024 || ffn < 1 ||
        vocab < 1 || capacity < 1 || heads / kv > 8) {
        PyErr_SetString(PyExc_ValueError, "model configuration out of the engine's range");
        return -1;
    }
    Config *c = &self->model.config;
    c->layers = layers;
    c->hidden = hidden;
    c->heads = heads;
    c->kv_heads = kv;
    c->head_dim = d;
    c->ffn = ffn;
    c->vocab = vocab;
    c->eps = eps;
    c->inv_sqrt_d = inv_sqrt_d;
    c->capacity_max = capacity;
    c->qkv = (heads + 2 * kv) * d;
    c->hidden_p = (hidden + 63) / 64 * 64;
    c->width = max3(hidden, ffn, heads * d);
    c->width_p = (c->width + 63) / 64 * 64;
    c->np_max = (max3(c->qkv, hidden, 2 * ffn) + 15) / 16 * 16;
    self->model.layer = calloc((size_t)layers, sizeof(LayerWeights));
    Matrix *qkv = calloc((size_t)layers, sizeof(Matrix)), *out = calloc((size_t)layers, sizeof(Matrix));
    Matrix *gu = calloc((size_t)layers, sizeof(Matrix)), *down = calloc((size_t)layers, sizeof(Matrix));
    int ok = self->model.layer && qkv && out && gu && down;
    if (!ok) PyErr_NoMemory();
    ok = ok && take_matrix(self, arrays, "qkv", layers, c->qkv, hidden, qkv) == 0 &&
         take_matrix(self, arrays, "out", layers, hidden, heads * d, out) == 0 &&
         take_matrix(self, arrays, "gate_up", layers, 2 * ffn, hidden, gu) == 0 &&
         take_matrix(self, arrays, "down", layers, hidden, ffn, down) == 0 &&
         take_matrix(self, arrays, "head", 1, vocab, hidden, &self->model.head) == 0;
    const double *attn = ok ? take(self, arrays, "attn_gain", F64, (Py_ssize_t)layers * hidden) : NULL;
    const double *ffn_gain = attn ? take(self, arrays, "ffn_gain", F64, (Py_ssize_t)layers * hidden) : NULL;
    if (ok && attn && ffn_gain) {
        for (int l = 0; l < layers; l++) {
            LayerWeights *L = &self->model.layer[l];
            L->qkv = qkv[l];
            L->out = out[l];
            L->gate_up = gu[l];
            L->down = down[l];
            L->attn_gain = attn + (size_t)l * hidden;
            L->ffn_gain = ffn_gain + (size_t)l * hidden;
        }
    }
    free(qkv);
    free(out);
    free(gu);
    free(down);
    if (!ok || !attn || !ffn_gain) return -1;
    Model *M = &self->model;
    if (!(M->final_gain = take(self, arrays, "final_gain", F64, hidden))) return -1;
    if (!(M->cos = take(self, arrays, "cos", F64, (Py_ssize_t)capacity * (d / 2)))) return -1;
    if (!(M->sin = take(self, arrays, "sin", F64, (Py_ssize_t)capacity * (d / 2)))) return -1;
    if (!(M->sig = take(self, arrays, "sig", F64, -1))) return -1;
    if (!(M->sig_steps = take(self, arrays, "sig_steps", F64, -1))) return -1;
    if (!(M->code = take(self, arrays, "code", F64, -1))) return -1;
    if (!(M->code_steps = take(self, arrays, "code_steps", F64, -1))) return -1;
    if (!(M->att_table = take(self, arrays, "att_table", I32, ATT_POINTS))) return -1;
    return 0;
}

/* ---- Cache ------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD Cache cache;
} CacheObject;

static void cache_dealloc(CacheObject *self) {
    free(self->cache.memory);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *model_cache(ModelObject *self, PyObject *args) {
    int rows, capacity;
    if (!PyArg_ParseTuple(args, "ii", &rows, &capacity)) return NULL;
    const Config *c = &self->model.config;
    if (rows < 1 || capacity < 1 || capacity > c->capacity_max) {
        PyErr_Format(PyExc_ValueError, "a cache holds 1..%d positions of at least one row", c->capacity_max);
        return NULL;
    }
    CacheObject *obj = PyObject_New(CacheObject, &CacheType);
    if (!obj) return NULL;
    Cache *cache = &obj->cache;
    cache->config = *c;
    cache->rows = rows;
    cache->capacity = capacity;
    cache->cap64 = (capacity + 63) / 64 * 64;
    cache->length = 0;
    cache->head_bytes = cache_head_bytes(cache->cap64, c->head_dim);
    size_t bytes = (size_t)c->layers * rows * c->kv_heads * cache->head_bytes;
    cache->memory = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!cache->memory) {
        Py_DECREF(obj);
        return PyErr_NoMemory();
    }
    memset(cache->memory, 0, bytes);
    return (PyObject *)obj;
}

/* copy_row(src, src_row, dst, dst_row): a row's positions into another cache's row; dst's length
 * becomes src's (every row of a cache holds the same number of positions) */
static PyObject *model_copy_row(ModelObject *self, PyObject *args) {
    PyObject *so, *dobj;
    int sr, dr;
    if (!PyArg_ParseTuple(args, "O!iO!i", &CacheType, &so, &sr, &CacheType, &dobj, &dr)) return NULL;
    Cache *src = &((CacheObject *)so)->cache, *dst = &((CacheObject *)dobj)->cache;
    if (sr < 0 || sr >= src->rows || dr < 0 || dr >= dst->rows || src->length > dst->capacity ||
        (dst->length != 0 && dst->length != src->length) || src->config.layers != dst->config.layers) {
        PyErr_SetString(PyExc_ValueError, "copy_row: rows out of range or caches that do not fit");
        return NULL;
    }
    cache_copy_row(src, sr, dst, dr);
    dst->length = src->length;
    Py_RETURN_NONE;
}

static PyObject *cache_length(CacheObject *self, void *closure) { return PyLong_FromLong(self->cache.length); }
static PyObject *cache_rows(CacheObject *self, void *closure) { return PyLong_FromLong(self->cache.rows); }
static PyObject *cache_capacity(CacheObject *self, void *closure) { return PyLong_FromLong(self->cache.capacity); }

static PyGetSetDef cache_getset[] = {
    {"length", (getter)cache_length, NULL, "positions filled (the same for every row)", NULL},
    {"rows", (getter)cache_rows, NULL, "rows", NULL},
    {"capacity", (getter)cache_capacity, NULL, "positions per row", NULL},
    {NULL},
};

/* ---- calls ------------------------------------------------------------------------------------- */

typedef struct {
    Py_buffer v[8];
    int n;
} Views;

static void release(Views *vs) {
    for (int i = 0; i < vs->n; i++) PyBuffer_Release(&vs->v[i]);
    vs->n = 0;
}

static void *arg(Views *vs, PyObject *obj, Element want, Py_ssize_t count, int writable, const char *name) {
    if (get_buffer(obj, want, count, writable, name, &vs->v[vs->n]) < 0) return NULL;
    return vs->v[vs->n++].buf;
}

static PyObject *model_forward_py(ModelObject *self, PyObject *args) {
    PyObject *xo, *co, *fo, *ffo;
    int rows, n;
    if (!PyArg_ParseTuple(args, "OO!iiOO", &xo, &CacheType, &co, &rows, &n, &fo, &ffo)) return NULL;
    Cache *cache = &((CacheObject *)co)->cache;
    const Config *c = &self->model.config;
    if (rows != cache->rows || n < 1 || cache->length + n > cache->capacity) {
        PyErr_SetString(PyExc_ValueError, "the cache does not fit these rows and positions");
        return NULL;
    }
    Py_ssize_t m = (Py_ssize_t)rows * n;
    Views vs = {.n = 0};
    double *x = arg(&vs, xo, F64, m * c->hidden, 1, "x");
    uint8_t *final = x ? arg(&vs, fo, U8, 2 * m * c->hidden_p, 1, "final") : NULL;
    double *factor = final ? arg(&vs, ffo, F64, m, 1, "factor") : NULL;
    if (!factor) {
        release(&vs);
        return NULL;
    }
    if (!scratch_reserve(&self->model, (int)m)) {
        release(&vs);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS model_forward(&self->model, cache, x, rows, n, final, factor);
    Py_END_ALLOW_THREADS release(&vs);
    Py_RETURN_NONE;
}

/* final, factor, m, positions: the common head arguments; checks positions < m */
static int head_args(ModelObject *self, Views *vs, PyObject *fo, PyObject *ffo, int m, PyObject *po, const uint8_t **final,
                     const double **factor, const int64_t **pos, Py_ssize_t *k) {
    const Config *c = &self->model.config;
    if (m < 1) {
        PyErr_SetString(PyExc_ValueError, "m must be positive");
        return -1;
    }
    *final = arg(vs, fo, U8, 2 * (Py_ssize_t)m * c->hidden_p, 0, "final");
    *factor = *final ? arg(vs, ffo, F64, m, 0, "factor") : NULL;
    *pos = *factor ? arg(vs, po, I64, -1, 0, "positions") : NULL;
    if (!*pos) return -1;
    *k = vs->v[vs->n - 1].len / 8;
    for (Py_ssize_t i = 0; i < *k; i++)
        if ((*pos)[i] < 0 || (*pos)[i] >= m) {
            PyErr_SetString(PyExc_ValueError, "a position is out of range");
            return -1;
        }
    return 0;
}

static PyObject *model_logits_py(ModelObject *self, PyObject *args) {
    PyObject *fo, *ffo, *po, *oo;
    int m;
    if (!PyArg_ParseTuple(args, "OOiOO", &fo, &ffo, &m, &po, &oo)) return NULL;
    Views vs = {.n = 0};
    const uint8_t *final;
    const double *factor;
    const int64_t *pos;
    Py_ssize_t k;
    double *out = NULL;
    if (head_args(self, &vs, fo, ffo, m, po, &final, &factor, &pos, &k) == 0)
        out = arg(&vs, oo, F64, k * self->model.config.vocab, 1, "out");
    if (!out) {
        release(&vs);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = head_logits(&self->model, final, factor, m, pos, (int)k, out);
    Py_END_ALLOW_THREADS release(&vs);
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *model_frequencies_py(ModelObject *self, PyObject *args) {
    PyObject *fo, *ffo, *po, *qo, *to;
    int m;
    if (!PyArg_ParseTuple(args, "OOiOOO", &fo, &ffo, &m, &po, &qo, &to)) return NULL;
    Views vs = {.n = 0};
    const uint8_t *final;
    const double *factor;
    const int64_t *pos;
    Py_ssize_t k;
    int32_t *freq = NULL;
    int64_t *total = NULL;
    if (head_args(self, &vs, fo, ffo, m, po, &final, &factor, &pos, &k) == 0) {
        freq = arg(&vs, qo, I32, k * self->model.config.vocab, 1, "freq");
        total = freq ? arg(&vs, to, I64, k, 1, "total") : NULL;
    }
    if (!total) {
        release(&vs);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = head_frequencies(&self->model, final, factor, m, pos, (int)k, freq, total);
    Py_END_ALLOW_THREADS release(&vs);
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *model_intervals_py(ModelObject *self, PyObject *args) {
    PyObject *fo, *ffo, *po, *tko, *loo, *hio, *to;
    int m;
    if (!PyArg_ParseTuple(args, "OOiOOOOO", &fo, &ffo, &m, &po, &tko, &loo, &hio, &to)) return NULL;
    Views vs = {.n = 0};
    const uint8_t *final;
    const double *factor;
    const int64_t *pos, *tokens = NULL;
    Py_ssize_t k;
    int64_t *lo = NULL, *hi = NULL, *total = NULL;
    if (head_args(self, &vs, fo, ffo, m, po, &final, &factor, &pos, &k) == 0) {
        tokens = arg(&vs, tko, I64, k, 0, "tokens");
        lo = tokens ? arg(&vs, loo, I64, k, 1, "lo") : NULL;
        hi = lo ? arg(&vs, hio, I64, k, 1, "hi") : NULL;
        total = hi ? arg(&vs, to, I64, k, 1, "total") : NULL;
    }
    if (total)
        for (Py_ssize_t i = 0; i < k; i++)
            if (tokens[i] < 0 || tokens[i] >= self->model.config.vocab) {
                PyErr_SetString(PyExc_ValueError, "a token is out of the vocabulary");
                total = NULL;
                break;
            }
    if (!total) {
        release(&vs);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = head_intervals(&self->model, final, factor, m, pos, (int)k, tokens, lo, hi, total);
    Py_END_ALLOW_THREADS release(&vs);
    if (status < 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *model_config(ModelObject *self, void *closure) {
    const Config *c = &self->model.config;
    return Py_BuildValue("{s:i,s:i,s:i}", "hidden_p", c->hidden_p, "vocab", c->vocab, "hidden", c->hidden);
}

static PyMethodDef model_methods[] = {
    {"cache", (PyCFunction)model_cache, METH_VARARGS, "cache(rows, capacity): an empty KV cache"},
    {"copy_row", (PyCFunction)model_copy_row, METH_VARARGS, "copy_row(src, src_row, dst, dst_row)"},
    {"forward", (PyCFunction)model_forward_py, METH_VARARGS, "forward(x, cache, rows, n, final, factor)"},
    {"logits", (PyCFunction)model_logits_py, METH_VARARGS, "logits(final, factor, m, positions, out)"},
    {"frequencies", (PyCFunction)model_frequencies_py, METH_VARARGS, "frequencies(final, factor, m, positions, freq, total)"},
    {"intervals", (PyCFunction)model_intervals_py, METH_VARARGS,
     "intervals(final, factor, m, positions, tokens, lo, hi, total)"},
    {NULL},
};

static PyGetSetDef model_getset[] = {
    {"config", (getter)model_config, NULL, "padded sizes", NULL},
    {NULL},
};

/* ---- module functions -------------------------------------------------------------------------- */

static PyObject *find_py(PyObject *mod, PyObject *args) {
    PyObject *qo, *to, *tko, *loo, *hio;
    int v;
    if (!PyArg_ParseTuple(args, "OiOOOO", &qo, &v, &to, &tko, &loo, &hio)) return NULL;
    Views vs = {.n = 0};
    if (v < 1) {
        PyErr_SetString(PyExc_ValueError, "vocab must be positive");
        return NULL;
    }
    const int64_t *target = arg(&vs, to, I64, -1, 0, "targets");
    Py_ssize_t k = target ? vs.v[0].len / 8 : 0;
    const int32_t *freq = target ? arg(&vs, qo, I32, k * v, 0, "freq") : NULL;
    int64_t *tok = freq ? arg(&vs, tko, I64, k, 1, "tokens") : NULL;
    int64_t *lo = tok ? arg(&vs, loo, I64, k, 1, "lo") : NULL;
    int64_t *hi = lo ? arg(&vs, hio, I64, k, 1, "hi") : NULL;
    if (!hi) {
        release(&vs);
        return NULL;
    }
    find_tokens(freq, v, (int)k, target, tok, lo, hi);
    release(&vs);
    Py_RETURN_NONE;
}

static PyObject *set_threads_py(PyObject *mod, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    int got;
    Py_BEGIN_ALLOW_THREADS got = pool_set_threads(n);
    Py_END_ALLOW_THREADS return PyLong_FromLong(got);
}

static PyObject *threads_py(PyObject *mod, PyObject *noargs) { return PyLong_FromLong(pool_threads()); }

static PyObject *isa_py(PyObject *mod, PyObject *noargs) { return PyUnicode_FromString(ISA_NAMES[isa_level]); }

static PyObject *available_isa_py(PyObject *mod, PyObject *noargs) {
    return PyUnicode_FromString(ISA_NAMES[isa_available()]);
}

static PyObject *set_isa_py(PyObject *mod, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    for (int i = 0; i < 4; i++)
        if (strcmp(name, ISA_NAMES[i]) == 0) {
            if (i > isa_available()) {
                PyErr_Format(PyExc_ValueError, "this CPU runs the engine's kernels up to '%s', not '%s'",
                             ISA_NAMES[isa_available()], name);
                return NULL;
            }
            isa_level = i;
            return PyUnicode_FromString(ISA_NAMES[isa_level]);
        }
    PyErr_Format(PyExc_ValueError, "unknown kernel level '%s' (baseline, avx2, avx512, amx)", name);
    return NULL;
}

/* ---- memory bandwidth: what a decoding step's weight reads are measured against ----------------- */
typedef struct {
    const uint8_t *p;
    size_t n;
    uint64_t sink[POOL_MAX_THREADS];
} ReadJob;

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(a, 0) ^ (uint64_t)_mm256_extract_epi64(a, 3);
}
#endif

static void read_task(void *ctx, int t, int T) {
    ReadJob *J = (ReadJob *)ctx;
    size_t lines = J->n / 128, a = lines * t / T * 128, b = lines * (t + 1) / T * 128;
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa_available() >= ISA_AVX2) {
        J->sink[t] = read_avx2(J->p + a, b - a);
        return;
    }
#endif
    uint64_t s = 0;
    for (size_t i = a; i < b; i += 8) {
        uint64_t w;
        memcpy(&w, J->p + i, 8);
        s ^= w;
    }
    J->sink[t] = s;
}

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static PyObject *read_bandwidth_py(PyObject *mod, PyObject *args) {
    Py_ssize_t bytes;
    int rounds;
    if (!PyArg_ParseTuple(args, "ni", &bytes, &rounds)) return NULL;
    if (bytes < 4096 || rounds < 1) {
        PyErr_SetString(PyExc_ValueError, "at least 4096 bytes and one round");
        return NULL;
    }
    ReadJob *J = calloc(1, sizeof(ReadJob));
    uint8_t *p = aligned_alloc(64, ((size_t)bytes + 63) / 64 * 64);
    if (!J || !p) {
        free(J);
        free(p);
        return PyErr_NoMemory();
    }
    memset(p, 1, (size_t)bytes);
    J->p = p;
    J->n = (size_t)bytes;
    double best = 1e30;
    Py_BEGIN_ALLOW_THREADS for (int r = 0; r < rounds; r++) {
        double s = seconds();
        pool_run(read_task, J);
        double e = seconds() - s;
        best = e < best ? e : best;
    }
    Py_END_ALLOW_THREADS free(p);
    free(J);
    return PyFloat_FromDouble((double)bytes / best);
}

static PyMethodDef module_methods[] = {
    {"find", find_py, METH_VARARGS, "find(freq, vocab, targets, tokens, lo, hi): the token whose interval holds each target"},
    {"set_threads", set_threads_py, METH_VARARGS, "set_threads(n): threads the engine uses; returns the count"},
    {"threads", threads_py, METH_NOARGS, "threads the engine uses"},
    {"isa", isa_py, METH_NOARGS, "the kernel level in use"},
    {"available_isa", available_isa_py, METH_NOARGS, "the best kernel level this CPU allows"},
    {"set_isa", set_isa_py, METH_VARARGS, "set_isa(name): use kernels up to this level (same bits at every level)"},
    {"read_bandwidth", read_bandwidth_py, METH_VARARGS, "read_bandwidth(bytes, rounds): best bytes/s reading a buffer"},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "memzip exact engine (C)", -1, module_methods};

PyMODINIT_FUNC PyInit__native(void) {
    ModelType.tp_name = "memzip.engine._native.Model";
    ModelType.tp_basicsize = sizeof(ModelObject);
    ModelType.tp_flags = Py_TPFLAGS_DEFAULT;
    ModelType.tp_new = PyType_GenericNew;
    ModelType.tp_init = (initproc)model_init;
    ModelType.tp_dealloc = (destructor)model_dealloc;
    ModelType.tp_methods = model_methods;
    ModelType.tp_getset = model_getset;
    ModelType.tp_doc = "Model(config, arrays): the engine's weights and tables";
    CacheType.tp_name = "memzip.engine._native.Cache";
    CacheType.tp_basicsize = sizeof(CacheObject);
    CacheType.tp_flags = Py_TPFLAGS_DEFAULT;
    CacheType.tp_dealloc = (destructor)cache_dealloc;
    CacheType.tp_getset = cache_getset;
    CacheType.tp_doc = "a KV cache (Model.cache)";
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&CacheType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    PyModule_AddObject(m, "Model", (PyObject *)&ModelType);
    Py_INCREF(&CacheType);
    PyModule_AddObject(m, "Cache", (PyObject *)&CacheType);
    PyModule_AddIntConstant(m, "ATT_POINTS", ATT_POINTS);
    isa_level = isa_available();
    const char *cap = getenv("MEMZIP_ISA");
    if (cap && *cap) {
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (strcmp(cap, ISA_NAMES[i]) == 0) {
                found = 1;
                if (i < isa_level) isa_level = i;
            }
        if (!found) {
            PyErr_Format(PyExc_ImportError, "MEMZIP_ISA must be baseline, avx2, avx512 or amx, not '%s'", cap);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
