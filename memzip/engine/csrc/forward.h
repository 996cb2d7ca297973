/* The model, its KV cache and the forward pass (forward.c) and output head (head.c). */
#ifndef MEMZIP_FORWARD_H
#define MEMZIP_FORWARD_H

#include "engine.h"

typedef struct {
    int layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
    int qkv;            /* (heads + 2 kv_heads) * head_dim */
    int hidden_p;       /* hidden padded to 64 */
    int width, width_p; /* widest activation row (hidden, ffn, heads * head_dim) and padded */
    int np_max;         /* widest product output, padded to 16 (the head excluded) */
    int capacity_max;   /* positions per row */
    double eps, inv_sqrt_d;
} Config;

typedef struct {
    Matrix qkv, out, gate_up, down;
    const double *attn_gain, *ffn_gain;
} LayerWeights;

#define MAX_THREADS POOL_MAX_THREADS

typedef struct {
    uint8_t *act;
    size_t act_size;
    double *factor;
    size_t factor_size;
    double *qkv;
    size_t qkv_size;
    int8_t *q8;
    size_t q8_size;
    float *cq;
    size_t cq_size;
    double *o;
    size_t o_size;
    double *gu;
    size_t gu_size;
    void *thread[MAX_THREADS];
    size_t thread_size[MAX_THREADS];
    size_t per_thread;
    void *head[4]; /* the output head's buffers (head.c) */
    size_t head_size[4];
} Scratch;

typedef struct {
    Config config;
    LayerWeights *layer;
    Matrix head;
    const double *final_gain;
    const double *cos, *sin;         /* [positions][head_dim / 2] */
    const double *sig, *sig_steps;   /* SiLU table */
    const double *code, *code_steps; /* token distribution table */
    const int32_t *att_table;        /* attention exponentials */
    Scratch scratch;
} Model;

typedef struct {
    Config config;
    int rows, capacity, cap64, length;
    size_t head_bytes;
    char *memory; /* layers x rows x kv_heads head caches (forward.c: head_cache) */
} Cache;

size_t cache_head_bytes(int cap64, int d);
void cache_copy_row(const Cache *src, int sr, Cache *dst, int dr);
int scratch_reserve(Model *M, int m);
void scratch_free(Scratch *s);
/* x: rows * n positions of hidden doubles (the residual stream, updated in place); final: 2m rows of
 * hidden_p bytes (the final norm's product activations), final_factor: m row factors */
void model_forward(Model *M, Cache *cache, double *x, int rows, int n, uint8_t *final, double *final_factor);

/* head.c: the output head on k positions' final activations (rows `pos` of final/factor, m rows);
 * each returns 0, or -1 when a buffer could not be allocated (its outputs are then not made) */
int head_logits(Model *M, const uint8_t *final, const double *factor, int m, const int64_t *pos, int k, double *out);
int head_frequencies(Model *M, const uint8_t *final, const double *factor, int m, const int64_t *pos, int k,
                     int32_t *freq, int64_t *total);
int head_intervals(Model *M, const uint8_t *final, const double *factor, int m, const int64_t *pos, int k,
                    const int64_t *tokens, int64_t *lo, int64_t *hi, int64_t *total);
void find_tokens(const int32_t *freq, int v, int k, const int64_t *target, int64_t *token, int64_t *lo, int64_t *hi);

#endif
