/* The output head: logits of chosen positions, and the integer token distributions made from them
 * (docs/FORMAT.md, *Token distribution*): what decoding needs (every frequency of a few positions)
 * and what coding needs (one token's interval at each of many positions, without keeping the
 * frequencies). */
#include "forward.h"

#include <stdlib.h>
#include <string.h>

#define HEAD_CHUNK 16 /* positions per product in row mode */
#define SPARE(v) ((int64_t)(1 << 24) - (v))

typedef struct {
    Model *M;
    const uint8_t *final;
    const double *factor;
    int m, k;
    const int64_t *pos;
    double *logits;     /* [k][vocab] (logits, frequencies) */
    int32_t *freq;      /* [k][vocab] (frequencies) */
    int64_t *total;     /* [k] */
    const int64_t *tokens;
    int64_t *lo, *hi;   /* intervals */
    uint8_t *act;       /* [2k][hidden_p] gathered rows (column mode) */
    int32_t *sums;      /* [2k][np] (column mode) */
    volatile int failed; /* a buffer could not be allocated: the call's outputs are not made */
} Head;

static void *thread_buffer(Model *M, int t, size_t bytes) {
    /* the forward's per-thread scratch is free while the head runs */
    Scratch *s = &M->scratch;
    if (bytes > s->thread_size[t]) {
        free(s->thread[t]);
        s->thread[t] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        s->thread_size[t] = s->thread[t] ? bytes : 0;
    }
    return s->thread[t];
}

/* a buffer kept by the model between calls (decoding asks for the same sizes at every step: no
 * allocation, no page faults per step); slot 0..HEAD_BUFFERS-1 */
static void *kept(Model *M, int slot, size_t bytes) {
    Scratch *s = &M->scratch;
    if (bytes > s->head_size[slot]) {
        free(s->head[slot]);
        s->head[slot] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        s->head_size[slot] = s->head[slot] ? bytes : 0;
    }
    return s->head[slot];
}

static void gather(const Head *H, int i0, int i1, uint8_t *act) {
    int kp = H->M->config.hidden_p, n = i1 - i0;
    for (int i = i0; i < i1; i++) {
        memcpy(act + (size_t)(i - i0) * kp, H->final + (size_t)H->pos[i] * kp, kp);
        memcpy(act + (size_t)(n + i - i0) * kp, H->final + (size_t)(H->m + H->pos[i]) * kp, kp);
    }
}

/* column mode: each thread its columns of every position's logits */
static void logits_columns(void *ctx, int t, int T) {
    Head *H = (Head *)ctx;
    const Matrix *W = &H->M->head;
    int j0, j1;
    split_range(W->n, t, T, 16, &j0, &j1);
    if (j0 >= j1) return;
    gemm(W, H->act, 2 * H->k, j0, (j1 + 15) / 16 * 16, H->sums, W->np);
    for (int i = 0; i < H->k; i++)
        linear_row(W, H->sums + (size_t)i * W->np, H->sums + (size_t)(H->k + i) * W->np, j0, j1, H->factor[H->pos[i]],
                   H->logits + (size_t)i * W->n, 0);
}

/* row mode: each thread whole positions, HEAD_CHUNK at a time; per position `each(H, i, logits, t)` */
typedef void (*per_position)(Head *H, int i, double *logits, void *scratch);

typedef struct {
    Head *H;
    per_position each;
    size_t extra; /* per-position scratch bytes for `each` */
} Rows;

static void logits_rows(void *ctx, int t, int T) {
    Rows *R = (Rows *)ctx;
    Head *H = R->H;
    Model *M = H->M;
    const Matrix *W = &M->head;
    int kp = M->config.hidden_p;
    size_t act_bytes = (size_t)2 * HEAD_CHUNK * kp, sum_bytes = (size_t)2 * HEAD_CHUNK * W->np * 4;
    size_t logit_bytes = (size_t)W->n * sizeof(double);
    char *buf = thread_buffer(M, t, act_bytes + sum_bytes + logit_bytes + R->extra + 256);
    if (!buf) {
        H->failed = 1;
        return;
    }
    uint8_t *act = (uint8_t *)buf;
    int32_t *sums = (int32_t *)(buf + (act_bytes + 63) / 64 * 64);
    double *logits = (double *)((char *)sums + sum_bytes);
    void *extra = (char *)logits + logit_bytes;
    int i0, i1;
    split_range(H->k, t, T, 1, &i0, &i1);
    for (int a = i0; a < i1; a += HEAD_CHUNK) {
        int b = a + HEAD_CHUNK < i1 ? a + HEAD_CHUNK : i1, n = b - a;
        gather(H, a, b, act);
        gemm(W, act, 2 * n, 0, W->np, sums, W->np);
        for (int i = a; i < b; i++) {
            double *l = H->logits ? H->logits + (size_t)i * W->n : logits;
            linear_row(W, sums + (size_t)(i - a) * W->np, sums + (size_t)(n + i - a) * W->np, 0, W->n,
                       H->factor[H->pos[i]], l, 0);
            if (R->each) R->each(H, i, l, extra);
        }
    }
}

static void run_logits(Head *H, per_position each, size_t extra) {
    Model *M = H->M;
    if (H->k <= HEAD_CHUNK && !each) {
        size_t kp = M->config.hidden_p;
        H->act = kept(M, 0, 2 * H->k * kp);
        H->sums = kept(M, 1, (size_t)2 * H->k * M->head.np * 4);
        if (H->act && H->sums) {
            gather(H, 0, H->k, H->act);
            pool_run(logits_columns, H);
        } else {
            H->failed = 1;
        }
        return;
    }
    Rows R = {H, each, extra};
    pool_run(logits_rows, &R);
}

int head_logits(Model *M, const uint8_t *final, const double *factor, int m, const int64_t *pos, int k, double *out) {
    Head H = {M, final, factor, m, k, pos, out};
    run_logits(&H, NULL, 0);
    return H.failed ? -1 : 0;
}

static void frequencies_of(Head *H, int i, double *l, void *scratch) {
    int v = H->M->config.vocab;
    int64_t *e = (int64_t *)scratch;
    int64_t sum = code_weights(l, v, H->M->code, H->M->code_steps, e);
    H->total[i] = code_frequencies(e, v, SPARE(v), sum, H->freq + (size_t)i * v, 0, NULL);
}

/* Few positions (decoding): the threads split the vocabulary in three phases (logits and their
 * maxima; weights e_j and their sums; frequencies), every reduction exact. */
#define MAX_PARTS POOL_MAX_THREADS
typedef struct {
    Head *H;
    double top[HEAD_CHUNK];
    int64_t part_sum[MAX_PARTS][HEAD_CHUNK], sum[HEAD_CHUNK];
} Freq;

static void weights_columns(void *ctx, int t, int T) {
    Freq *F = (Freq *)ctx;
    Head *H = F->H;
    int v = H->M->config.vocab, j0, j1;
    split_range(v, t, T, 16, &j0, &j1);
    for (int i = 0; i < H->k; i++) {
        double *l = H->logits + (size_t)i * v;
        /* e_j (int64) overwrites logit j (8 bytes each): every thread reads only its own columns */
        F->part_sum[t][i] = j0 < j1 ? code_round(l + j0, j1 - j0, F->top[i], H->M->code, H->M->code_steps,
                                                 (int64_t *)(l + j0))
                                    : 0;
    }
}

static void frequencies_columns(void *ctx, int t, int T) {
    Freq *F = (Freq *)ctx;
    Head *H = F->H;
    int v = H->M->config.vocab, j0, j1;
    split_range(v, t, T, 16, &j0, &j1);
    for (int i = 0; i < H->k; i++) {
        const int64_t *e = (const int64_t *)(H->logits + (size_t)i * v);
        F->part_sum[t][i] = j0 < j1 ? code_frequencies(e + j0, j1 - j0, SPARE(v), F->sum[i],
                                                       H->freq + (size_t)i * v + j0, 0, NULL)
                                    : 0;
    }
}

static void frequencies_rows(void *ctx, int t, int T) {
    Head *H = ((Freq *)ctx)->H;
    int v = H->M->config.vocab;
    int64_t *e = thread_buffer(H->M, t, (size_t)v * sizeof(int64_t));
    if (!e) {
        H->failed = 1;
        return;
    }
    int i0, i1;
    split_range(H->k, t, T, 1, &i0, &i1);
    for (int i = i0; i < i1; i++) frequencies_of(H, i, H->logits + (size_t)i * v, e);
}

int head_frequencies(Model *M, const uint8_t *final, const double *factor, int m, const int64_t *pos, int k,
                     int32_t *freq, int64_t *total) {
    int v = M->config.vocab;
    double *logits = kept(M, 2, (size_t)k * v * sizeof(double));
    Freq *F = kept(M, 3, sizeof(Freq));
    if (!logits || !F) return -1;
    Head H = {M, final, factor, m, k, pos, logits, freq, total};
    F->H = &H;
    run_logits(&H, NULL, 0);
    if (H.failed) return -1;
    int T = pool_threads();
    if (k <= HEAD_CHUNK && T > 1) {
        for (int i = 0; i < k; i++) F->top[i] = max_of(logits + (size_t)i * v, v);
        pool_run(weights_columns, F);
        for (int i = 0; i < k; i++) {
            F->sum[i] = 0;
            for (int t = 0; t < T; t++) F->sum[i] += F->part_sum[t][i];
        }
        pool_run(frequencies_columns, F);
        for (int i = 0; i < k; i++) {
            total[i] = 0;
            for (int t = 0; t < T; t++) total[i] += F->part_sum[t][i];
        }
    } else {
        pool_run(frequencies_rows, F);
    }
    return H.failed ? -1 : 0;
}

static void interval_of(Head *H, int i, double *l, void *scratch) {
    int v = H->M->config.vocab;
    int64_t *e = (int64_t *)scratch, token = H->tokens[i], below;
    int64_t sum = code_weights(l, v, H->M->code, H->M->code_steps, e);
    H->total[i] = code_frequencies(e, v, SPARE(v), sum, NULL, token, &below);
    H->lo[i] = below;
    H->hi[i] = below + 1 + e[token] * SPARE(v) / sum;
}

int head_intervals(Model *M, const uint8_t *final, const double *factor, int m, const int64_t *pos, int k,
                   const int64_t *tokens, int64_t *lo, int64_t *hi, int64_t *total) {
    Head H = {M, final, factor, m, k, pos, NULL, NULL, total, tokens, lo, hi};
    run_logits(&H, interval_of, (size_t)M->config.vocab * sizeof(int64_t));
    return H.failed ? -1 : 0;
}

void find_tokens(const int32_t *freq, int v, int k, const int64_t *target, int64_t *token, int64_t *lo, int64_t *hi) {
    for (int i = 0; i < k; i++) {
        const int32_t *f = freq + (size_t)i * v;
        int64_t cum = 0, want = target[i];
        int j = 0;
        while (j < v - 1 && cum + f[j] <= want) cum += f[j++];
        token[i] = j;
        lo[i] = cum;
        hi[i] = cum + f[j];
    }
}
