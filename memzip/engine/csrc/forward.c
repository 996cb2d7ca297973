/* The forward pass of the exact engine in C: every layer, for any rows and positions, as a few
 * parallel phases per layer (docs/ENGINE.md, *A layer*). Mirrors memzip/engine/reference.py.
 *
 * Products run in one of two ways, which give the same numbers (each output is its own exact sum):
 * with few positions (decoding) the threads split the output columns and each streams its share of
 * the weights; with many (prefill) they split the positions and each multiplies whole rows.
 */
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#define COLUMN_MODE_ROWS 64 /* at most this many positions: split columns */
#define CHUNK 64            /* positions per product chunk in row mode */

static size_t grow(void **p, size_t *have, size_t want) {
    if (want > *have) {
        free(*p);
        *p = aligned_alloc(64, (want + 63) / 64 * 64);
        *have = *p ? want : 0;
    }
    return *have;
}

int scratch_reserve(Model *M, int m) {
    const Config *c = &M->config;
    int T = pool_threads();
    Scratch *s = &M->scratch;
    size_t wide = (size_t)c->width_p;
    int ok = 1;
    ok &= grow((void **)&s->act, &s->act_size, (size_t)2 * m * wide) != 0;
    ok &= grow((void **)&s->factor, &s->factor_size, (size_t)m * sizeof(double)) != 0;
    ok &= grow((void **)&s->qkv, &s->qkv_size, (size_t)m * c->qkv * sizeof(double)) != 0;
    ok &= grow((void **)&s->q8, &s->q8_size, (size_t)m * c->heads * c->head_dim) != 0;
    ok &= grow((void **)&s->cq, &s->cq_size, (size_t)m * c->heads * sizeof(float)) != 0;
    ok &= grow((void **)&s->o, &s->o_size, (size_t)m * c->heads * c->head_dim * sizeof(double)) != 0;
    ok &= grow((void **)&s->gu, &s->gu_size, (size_t)m * 2 * c->ffn * sizeof(double)) != 0;
    int rows = m < CHUNK ? m : CHUNK;
    size_t per_thread = (size_t)2 * rows * c->np_max * sizeof(int32_t)   /* product sums */
                        + (size_t)2 * (m <= COLUMN_MODE_ROWS ? m : 0) * wide /* own activations */
                        + (size_t)(m <= COLUMN_MODE_ROWS ? m : rows) * c->ffn * sizeof(double) /* mid */
                        + (size_t)c->width * sizeof(double)                 /* norm temp */
                        + attention_work(c->capacity_max, ATT_ROWS) + 4 * 64;
    for (int t = 0; t < T; t++) ok &= grow(&s->thread[t], &s->thread_size[t], per_thread) != 0;
    s->per_thread = per_thread;
    return ok;
}

typedef struct {
    Model *M;
    Cache *cache;
    double *x;
    int rows, n, start, m, layer;
    const Matrix *W;
    int accumulate; /* the product's output: added into x (out, down) or written to y */
    double *y;
    int ystride;
    int kind; /* what makes the activations: 0 norm (gain), 1 quantize o, 2 silu(gu) */
    const double *gain;
    uint8_t *final;
    double *final_factor;
} Phase;

/* per-thread scratch: [sums][own activations][mid][norm temp][attention work] */
static void thread_parts(Model *M, int t, int m, int32_t **sums, uint8_t **act, double **mid, double **tmp,
                         void **work) {
    const Config *c = &M->config;
    int rows = m < CHUNK ? m : CHUNK;
    char *p = (char *)M->scratch.thread[t];
    *sums = (int32_t *)p;
    p += (size_t)2 * rows * c->np_max * sizeof(int32_t);
    *act = (uint8_t *)p;
    p += (size_t)2 * (m <= COLUMN_MODE_ROWS ? m : 0) * c->width_p;
    p = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    *mid = (double *)p;
    p += (size_t)(m <= COLUMN_MODE_ROWS ? m : rows) * c->ffn * sizeof(double);
    *tmp = (double *)p;
    p += (size_t)c->width * sizeof(double);
    p = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    *work = p;
}

/* the activations of rows [r0, r1) for phase kind: into act (2 * total rows of kp bytes), factor */
static void make_activations(Phase *P, int r0, int r1, uint8_t *act, int total, int kp, double *factor, double *mid,
                             double *tmp) {
    const Config *c = &P->M->config;
    for (int r = r0; r < r1; r++) {
        uint8_t *hi = act + (size_t)r * kp, *lo = act + (size_t)(total + r) * kp;
        if (P->kind == 0) {
            factor[r] = normalize_row(P->x + (size_t)r * c->hidden, P->gain, c->hidden, kp, c->eps, hi, lo, tmp);
        } else if (P->kind == 1) {
            factor[r] = quantize_row(P->M->scratch.o + (size_t)r * c->heads * c->head_dim, c->heads * c->head_dim, kp,
                                     hi, lo);
        } else {
            const double *gu = P->M->scratch.gu + (size_t)r * 2 * c->ffn;
            double *row = mid + (size_t)(r - r0) * c->ffn;
            silu_row(gu, gu + c->ffn, c->ffn, P->M->sig, P->M->sig_steps, row);
            factor[r] = quantize_row(row, c->ffn, kp, hi, lo);
        }
    }
}

/* one product phase: activations (kind) times W, written to y or added into x */
static void product_task(void *ctx, int t, int T) {
    Phase *P = (Phase *)ctx;
    Model *M = P->M;
    const Matrix *W = P->W;
    int m = P->m, kp = W->kp;
    int32_t *sums;
    uint8_t *own;
    double *mid, *tmp;
    void *work;
    thread_parts(M, t, m, &sums, &own, &mid, &tmp, &work);
    double *out = P->accumulate ? P->x : P->y;
    int ostride = P->accumulate ? M->config.hidden : P->ystride;
    if (m <= COLUMN_MODE_ROWS) {
        /* every thread makes all rows' activations (cheap), then its own columns */
        double factor[COLUMN_MODE_ROWS];
        make_activations(P, 0, m, own, m, kp, factor, mid, tmp);
        int j0, j1;
        split_range(W->n, t, T, 16, &j0, &j1);
        if (j0 >= j1) return;
        int j1p = (j1 + 15) / 16 * 16;
        gemm(W, own, 2 * m, j0, j1p, sums, W->np);
        for (int r = 0; r < m; r++)
            linear_row(W, sums + (size_t)r * W->np, sums + (size_t)(m + r) * W->np, j0, j1, factor[r],
                       out + (size_t)r * ostride, P->accumulate);
        return;
    }
    int r0, r1;
    split_range(m, t, T, 1, &r0, &r1);
    uint8_t *act = M->scratch.act;
    double *factor = M->scratch.factor;
    for (int a = r0; a < r1; a += CHUNK) {
        int b = a + CHUNK < r1 ? a + CHUNK : r1, nr = b - a;
        make_activations(P, a, b, act, m, kp, factor, mid, tmp);
        gemm(W, act + (size_t)a * kp, nr, 0, W->np, sums, W->np);
        gemm(W, act + (size_t)(m + a) * kp, nr, 0, W->np, sums + (size_t)nr * W->np, W->np);
        for (int r = a; r < b; r++)
            linear_row(W, sums + (size_t)(r - a) * W->np, sums + (size_t)(nr + r - a) * W->np, 0, W->n, factor[r],
                       out + (size_t)r * ostride, P->accumulate);
    }
}

static HeadCache head_cache(const Cache *cache, int layer, int row, int g) {
    const Config *c = &cache->config;
    size_t index = ((size_t)layer * cache->rows + row) * c->kv_heads + g;
    size_t cap64 = (size_t)cache->cap64, d = (size_t)c->head_dim;
    char *base = cache->memory + index * cache->head_bytes;
    HeadCache h;
    h.k = (int8_t *)base;
    h.v = (int8_t *)(base + cap64 * d);
    h.ksum = (int32_t *)(base + 2 * cap64 * d);
    h.ks = (float *)(base + 2 * cap64 * d + 4 * cap64);
    h.vs = (float *)(base + 2 * cap64 * d + 8 * cap64);
    return h;
}

/* every position of row `sr` of src into row `dr` of dst (dst holds at least src->length positions) */
void cache_copy_row(const Cache *src, int sr, Cache *dst, int dr) {
    const Config *c = &src->config;
    int n = src->length, d = c->head_dim;
    for (int layer = 0; layer < c->layers; layer++)
        for (int g = 0; g < c->kv_heads; g++) {
            HeadCache a = head_cache(src, layer, sr, g), b = head_cache(dst, layer, dr, g);
            memcpy(b.k, a.k, (size_t)(n + 15) / 16 * 16 * d);
            memcpy(b.v, a.v, (size_t)(n + 3) / 4 * 4 * d);
            memcpy(b.ksum, a.ksum, (size_t)n * sizeof(int32_t));
            memcpy(b.ks, a.ks, (size_t)n * sizeof(float));
            memcpy(b.vs, a.vs, (size_t)n * sizeof(float));
        }
}

size_t cache_head_bytes(int cap64, int d) { return (size_t)cap64 * (2 * (size_t)d + 12); }

/* RoPE, int8 q/k/v per head, k and v into the cache at their positions */
static void rotate_task(void *ctx, int t, int T) {
    Phase *P = (Phase *)ctx;
    Model *M = P->M;
    const Config *c = &M->config;
    int d = c->head_dim, half = d / 2;
    int8_t k8[1024], v8[1024];
    int i0, i1;
    split_range(P->m, t, T, 1, &i0, &i1);
    for (int i = i0; i < i1; i++) {
        int row = i / P->n, pos = P->start + i % P->n;
        double *q = M->scratch.qkv + (size_t)i * c->qkv;
        const double *cs = M->cos + (size_t)pos * half, *sn = M->sin + (size_t)pos * half;
        for (int h = 0; h < c->heads; h++) {
            rope(q + h * d, d, cs, sn);
            double sq = quantize_head(q + h * d, d, M->scratch.q8 + ((size_t)i * c->heads + h) * d);
            M->scratch.cq[(size_t)i * c->heads + h] = (float)((sq * c->inv_sqrt_d) * ATT_STEP);
        }
        for (int g = 0; g < c->kv_heads; g++) {
            double *k = q + (size_t)(c->heads + g) * d, *v = q + (size_t)(c->heads + c->kv_heads + g) * d;
            rope(k, d, cs, sn);
            float ks = (float)quantize_head(k, d, k8), vs = (float)quantize_head(v, d, v8);
            HeadCache hc = head_cache(P->cache, P->layer, row, g);
            cache_put(&hc, d, pos, k8, ks, v8, vs);
        }
    }
}

/* Items: (row, kv head, a block of consecutive positions, a part of the kv head's G query heads), each
 * the query rows of those heads at those positions (at most ATT_ROWS rows), weighed by the keys they
 * read times their heads; the threads take consecutive items of about equal weight. The heads are split
 * into parts only when there are too few items to keep every thread busy (decoding one or two rows). */
static long long item_cost(const Phase *P, int t0, int t1) { return (long long)(t1 - t0) * (P->start + t1); }

static void attend_task(void *ctx, int t, int T) {
    Phase *P = (Phase *)ctx;
    Model *M = P->M;
    const Config *c = &M->config;
    int G = c->heads / c->kv_heads, d = c->head_dim;
    int npos = ATT_ROWS / G > 0 ? ATT_ROWS / G : 1;
    int blocks = (P->n + npos - 1) / npos, pairs = P->rows * c->kv_heads;
    int parts = (long long)pairs * blocks >= 2 * T ? 1 : (2 * T + pairs * blocks - 1) / (pairs * blocks);
    parts = parts < G ? parts : G;
    int32_t *sums;
    uint8_t *own;
    double *mid, *tmp;
    void *work;
    thread_parts(M, t, P->m, &sums, &own, &mid, &tmp, &work);
    long long per_pair = 0; /* the weight of one (row, kv head): every block of positions, every head */
    for (int t0 = 0; t0 < P->n; t0 += npos) per_pair += item_cost(P, t0, t0 + npos < P->n ? t0 + npos : P->n) * G;
    long long total = per_pair * pairs, lo = total * t / T, hi = total * (t + 1) / T;
    long long before = 0;
    for (int pair = 0; pair < pairs; pair++) {
        if (before + per_pair <= lo) { /* every item of this pair belongs to earlier threads */
            before += per_pair;
            continue;
        }
        if (before >= hi) break;
        int row = pair / c->kv_heads, g = pair % c->kv_heads;
        HeadCache hc = head_cache(P->cache, P->layer, row, g);
        for (int t0 = 0; t0 < P->n; t0 += npos) {
            int t1 = t0 + npos < P->n ? t0 + npos : P->n;
            for (int part = 0; part < parts; part++) {
                int h0 = g * G + G * part / parts, h1 = g * G + G * (part + 1) / parts;
                long long cost = item_cost(P, t0, t1) * (h1 - h0);
                long long last = before + cost - 1; /* an item belongs to the thread whose share holds its last unit */
                before += cost;
                if (last < lo || last >= hi) continue;
                QueryRow q[ATT_ROWS];
                int R = 0;
                for (int k = t0; k < t1; k++) {
                    size_t i = (size_t)row * P->n + k;
                    for (int h = h0; h < h1; h++, R++) {
                        q[R].q = M->scratch.q8 + (i * c->heads + h) * d;
                        q[R].cq = M->scratch.cq[i * c->heads + h];
                        q[R].visible = P->start + k + 1;
                        q[R].out = M->scratch.o + i * c->heads * d + (size_t)h * d;
                    }
                }
                attention(&hc, d, R, q, M->att_table, work);
            }
        }
    }
}

static void final_task(void *ctx, int t, int T) {
    Phase *P = (Phase *)ctx;
    Model *M = P->M;
    const Config *c = &M->config;
    int32_t *sums;
    uint8_t *own;
    double *mid, *tmp;
    void *work;
    thread_parts(M, t, P->m, &sums, &own, &mid, &tmp, &work);
    int r0, r1;
    split_range(P->m, t, T, 1, &r0, &r1);
    for (int r = r0; r < r1; r++)
        P->final_factor[r] = normalize_row(P->x + (size_t)r * c->hidden, M->final_gain, c->hidden, c->hidden_p, c->eps,
                                           P->final + (size_t)r * c->hidden_p,
                                           P->final + (size_t)(P->m + r) * c->hidden_p, tmp);
}

void model_forward(Model *M, Cache *cache, double *x, int rows, int n, uint8_t *final, double *final_factor) {
    const Config *c = &M->config;
    Phase P;
    memset(&P, 0, sizeof P);
    P.M = M;
    P.cache = cache;
    P.x = x;
    P.rows = rows;
    P.n = n;
    P.start = cache->length;
    P.m = rows * n;
    for (int layer = 0; layer < c->layers; layer++) {
        const LayerWeights *L = &M->layer[layer];
        P.layer = layer;
        /* q, k, v = N(x, g_attn) W_qkv */
        P.kind = 0;
        P.gain = L->attn_gain;
        P.W = &L->qkv;
        P.accumulate = 0;
        P.y = M->scratch.qkv;
        P.ystride = c->qkv;
        pool_run(product_task, &P);
        pool_run(rotate_task, &P);
        pool_run(attend_task, &P);
        /* x += Q(o) W_out */
        P.kind = 1;
        P.W = &L->out;
        P.accumulate = 1;
        pool_run(product_task, &P);
        /* gate, up = N(x, g_ffn) W_gate_up */
        P.kind = 0;
        P.gain = L->ffn_gain;
        P.W = &L->gate_up;
        P.accumulate = 0;
        P.y = M->scratch.gu;
        P.ystride = 2 * c->ffn;
        pool_run(product_task, &P);
        /* x += Q(silu(gate) * up) W_down */
        P.kind = 2;
        P.W = &L->down;
        P.accumulate = 1;
        pool_run(product_task, &P);
    }
    cache->length += n;
    P.final = final;
    P.final_factor = final_factor;
    pool_run(final_task, &P);
}
