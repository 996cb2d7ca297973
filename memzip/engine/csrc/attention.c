/* Attention (docs/ENGINE.md, *A layer*, step 4): integer dot products, float32 scores, table
 * exponentials on integer gaps, 15-bit integer weights, exact integer value sums.
 *
 * For each query row (int8 q, gap factor cq) over keys j < visible:
 *   dot_j = sum_i q_i k_ji                      exact int32
 *   s_j   = f32(dot_j) * ks_j                   float32
 *   top   = max_j s_j
 *   G_j   = trunc(min((top - s_j) * cq, 5679))  float32, then an integer 0..5679
 *   e_j   = T[G_j],  S = sum_j e_j              integers (T: 32768 exp(-i / 512), rounded)
 *   u_j   = f32(e_j) * vs_j,  f = 32767 / max_j u_j (1 if that max is 0)
 *   w_j   = min(rnd(u_j * f), 32767)            integers 0..32767
 *   o_i   = f64(sum_j w_j v_ji) / (f64(f) * f64(S))
 * Every variant computes these same values: the sums are exact in any order, the float operations
 * are the same single IEEE operations, element by element.
 *
 * A call takes up to ATT_ROWS query rows that read one kv head's cache: the query heads of a group at
 * one position, or (AMX) a few positions. The cache holds keys in blocks of 16 positions
 * ([d / 4][16][4] bytes: the operand of vpdpbusd with a broadcast query, and an AMX B tile) and values
 * in groups of 4 positions ([d][4] bytes: vpdpbusd with broadcast weights; 16 groups x 16 dims are an
 * AMX B tile with a row stride of 4d).
 */
#include "engine.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define GAP_MAX ((float)(ATT_POINTS - 1))
#define PREFETCH_BLOCKS 8 /* key blocks of 16 positions read ahead by AMX attention */

static inline int8_t key_at(const HeadCache *c, int d, int j, int i) {
    return c->k[(size_t)(j / 16) * 16 * d + (i / 4) * 64 + (j % 16) * 4 + i % 4];
}
static inline int8_t value_at(const HeadCache *c, int d, int j, int i) {
    return c->v[(size_t)(j / 4) * 4 * d + i * 4 + j % 4];
}

void cache_put(const HeadCache *c, int d, int pos, const int8_t *k8, float ks, const int8_t *v8, float vs) {
    int32_t sum = 0;
    for (int i = 0; i < d; i++) {
        c->k[(size_t)(pos / 16) * 16 * d + (i / 4) * 64 + (pos % 16) * 4 + i % 4] = k8[i];
        c->v[(size_t)(pos / 4) * 4 * d + i * 4 + pos % 4] = v8[i];
        sum += k8[i];
    }
    c->ksum[pos] = sum;
    c->ks[pos] = ks;
    c->vs[pos] = vs;
}

static inline int round64(int n) { return (n + 63) / 64 * 64; }

static int longest(int R, const QueryRow *rows) {
    int n = 0;
    for (int r = 0; r < R; r++) n = rows[r].visible > n ? rows[r].visible : n;
    return n;
}

/* work: scores [R][vis64] float | weights [2R][vis64] bytes | queries [R][d] bytes | tile sums */
typedef struct {
    float *s;
    uint8_t *w; /* rows 0..R-1 the weights' high bytes (or int16 weights, AVX2), R..2R-1 the low bytes */
    uint8_t *uq;
    int32_t *sums;
    int stride; /* vis64 */
} Work;

static Work split_work(void *work, int visible, int R) {
    Work w;
    w.stride = round64(visible);
    char *p = (char *)work;
    w.s = (float *)p;
    p += (size_t)R * w.stride * sizeof(float);
    w.w = (uint8_t *)p;
    p += (size_t)2 * R * w.stride * 2; /* room for int16 weights too */
    w.uq = (uint8_t *)p;
    p += (size_t)R * 1024;
    w.sums = (int32_t *)p;
    return w;
}

size_t attention_work(int visible, int R) {
    return (size_t)R * round64(visible) * (sizeof(float) + 4) + (size_t)R * 1024 + (size_t)2 * R * 1024 * 4 + 256;
}


static inline void finish(int d, int R, const QueryRow *rows, const int64_t *acc, const float *f, const int64_t *S) {
    for (int r = 0; r < R; r++) {
        double den = (double)f[r] * (double)S[r]; /* exact: 24-bit times at most 28-bit */
        for (int i = 0; i < d; i++) rows[r].out[i] = (double)acc[(size_t)r * d + i] / den;
    }
}

void attention_baseline(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    Work W = split_work(work, longest(R, rows), R);
    float *s = W.s;
    float f[ATT_ROWS];
    int64_t S[ATT_ROWS], acc[ATT_ROWS * 1024];
    for (int r = 0; r < R; r++) {
        const int8_t *q = rows[r].q;
        int visible = rows[r].visible;
        float top = -INFINITY;
        for (int j = 0; j < visible; j++) {
            int32_t dot = 0;
            for (int i = 0; i < d; i++) dot += (int32_t)q[i] * key_at(c, d, j, i);
            s[j] = (float)dot * c->ks[j];
            top = s[j] > top ? s[j] : top;
        }
        int64_t total = 0;
        float umax = 0.0f;
        for (int j = 0; j < visible; j++) {
            float g = (top - s[j]) * rows[r].cq;
            g = g < GAP_MAX ? g : GAP_MAX;
            int32_t e = table[(int)g];
            total += e;
            float u = (float)e * c->vs[j];
            s[j] = u;
            umax = u > umax ? u : umax;
        }
        f[r] = (float)ATT_WEIGHT / (umax > 0.0f ? umax : 1.0f);
        S[r] = total;
        int64_t *a = acc + (size_t)r * d;
        for (int i = 0; i < d; i++) a[i] = 0;
        for (int j = 0; j < visible; j++) {
            float rounded = round_even_f(s[j] * f[r]);
            int32_t w = rounded > (float)ATT_WEIGHT ? (int32_t)ATT_WEIGHT : (int32_t)rounded;
            for (int i = 0; i < d; i++) a[i] += (int64_t)w * value_at(c, d, j, i);
        }
    }
    finish(d, R, rows, acc, f, S);
}

#if defined(__x86_64__) && defined(__GNUC__)

/* ---- AVX-512 --------------------------------------------------------------------------------------- */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq")))
#define INLINE static inline __attribute__((always_inline))

static inline __mmask16 lanes_below(int visible, int j0) {
    int left = visible - j0;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

/* From a row's scores s[0..visible): gaps, exponentials, weights; the weights' high and low bytes go to
 * wh and wl (zero up to `stride`); returns f and S. */
INLINE AVX512 void softmax512(const HeadCache *c, int visible, int stride, float *s, float top, float cq,
                              const int32_t *table, uint8_t *wh, uint8_t *wl, float *f_out, int64_t *S_out) {
    const __m512 gap_max = _mm512_set1_ps(GAP_MAX), tv = _mm512_set1_ps(top), cv = _mm512_set1_ps(cq);
    __m512i total = _mm512_setzero_si512();
    __m512 um = _mm512_setzero_ps();
    int blocks = (visible + 15) / 16;
    for (int b = 0; b < blocks; b++) {
        __mmask16 valid = lanes_below(visible, 16 * b);
        __m512 g = _mm512_min_ps(_mm512_mul_ps(_mm512_sub_ps(tv, _mm512_loadu_ps(s + 16 * b)), cv), gap_max);
        __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, _mm512_cvttps_epi32(g), table, 4);
        total = _mm512_add_epi32(total, e);
        __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(e), _mm512_loadu_ps(c->vs + 16 * b));
        _mm512_storeu_ps(s + 16 * b, u);
        um = _mm512_max_ps(um, u);
    }
    *S_out = _mm512_reduce_add_epi32(total); /* at most 32768 * 8192: int32 */
    float umax = _mm512_reduce_max_ps(um);
    float f = (float)ATT_WEIGHT / (umax > 0.0f ? umax : 1.0f);
    *f_out = f;
    const __m512 fv = _mm512_set1_ps(f);
    const __m512i weight_max = _mm512_set1_epi32((int32_t)ATT_WEIGHT), low = _mm512_set1_epi32(255);
    for (int b = 0; b < blocks; b++) {
        __m512i w = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(s + 16 * b), fv),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        w = _mm512_min_epi32(w, weight_max);
        _mm_storeu_si128((__m128i *)(wh + 16 * b), _mm512_cvtepi32_epi8(_mm512_srli_epi32(w, 8)));
        _mm_storeu_si128((__m128i *)(wl + 16 * b), _mm512_cvtepi32_epi8(_mm512_and_si512(w, low)));
    }
    memset(wh + 16 * blocks, 0, (size_t)(stride - 16 * blocks));
    memset(wl + 16 * blocks, 0, (size_t)(stride - 16 * blocks));
}

/* scores from int32 dots already in s (as int32): dot - 128 ksum, times ks; returns the row's top */
INLINE AVX512 float scale_scores512(const HeadCache *c, int visible, float *s) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int b = 0; b < (visible + 15) / 16; b++) {
        __m512i dot = _mm512_sub_epi32(_mm512_loadu_si512(s + 16 * b),
                                       _mm512_slli_epi32(_mm512_loadu_si512(c->ksum + 16 * b), 7));
        __m512 sv = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_loadu_ps(c->ks + 16 * b));
        _mm512_storeu_ps(s + 16 * b, sv);
        mx = _mm512_mask_max_ps(mx, lanes_below(visible, 16 * b), mx, sv);
    }
    return _mm512_reduce_max_ps(mx);
}

/* int32 dots of R query rows (queries offset by 128, as bytes uq) with every key block up to `blocks` */
INLINE AVX512 void dots512(const HeadCache *c, int d, int blocks, int R, const uint8_t *uq, float *s, int stride) {
    for (int b = 0; b < blocks; b++) {
        const int8_t *kb = c->k + (size_t)b * 16 * d;
        __m512i acc[ATT_ROWS];
        for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
        for (int i4 = 0; i4 < d / 4; i4++) {
            __m512i kv = _mm512_loadu_si512(kb + i4 * 64);
            for (int r = 0; r < R; r++) {
                int32_t four;
                memcpy(&four, uq + r * d + 4 * i4, 4);
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(four), kv);
            }
        }
        for (int r = 0; r < R; r++) _mm512_storeu_si512(s + (size_t)r * stride + 16 * b, acc[r]);
    }
}

/* value sums of up to 3 rows over 16 * nv dims starting at dim dc */
INLINE AVX512 void values512(const HeadCache *c, int d, int dc, int nv, int groups, int R, const uint8_t *wh,
                             const uint8_t *wl, int stride, int64_t *acc) {
    __m512i hi[3][4], lo[3][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < nv; k++) hi[r][k] = lo[r][k] = _mm512_setzero_si512();
    for (int j4 = 0; j4 < groups; j4++) {
        const int8_t *vb = c->v + (size_t)j4 * 4 * d + dc * 4;
        __m512i vv[4];
        for (int k = 0; k < nv; k++) vv[k] = _mm512_loadu_si512(vb + 64 * k);
        for (int r = 0; r < R; r++) {
            int32_t bh, bl;
            memcpy(&bh, wh + (size_t)r * stride + 4 * j4, 4);
            memcpy(&bl, wl + (size_t)r * stride + 4 * j4, 4);
            __m512i vh = _mm512_set1_epi32(bh), vl = _mm512_set1_epi32(bl);
            for (int k = 0; k < nv; k++) {
                hi[r][k] = _mm512_dpbusd_epi32(hi[r][k], vh, vv[k]);
                lo[r][k] = _mm512_dpbusd_epi32(lo[r][k], vl, vv[k]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int k = 0; k < nv; k++) {
            int32_t a[16], b[16];
            _mm512_storeu_si512(a, hi[r][k]);
            _mm512_storeu_si512(b, lo[r][k]);
            for (int m = 0; m < 16; m++) acc[(size_t)r * d + dc + 16 * k + m] = (int64_t)a[m] * 256 + b[m];
        }
}

AVX512 void attention_avx512(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table,
                             void *work) {
    int visible = longest(R, rows);
    Work W = split_work(work, visible, R);
    int blocks = (visible + 15) / 16, groups = (visible + 3) / 4, stride = W.stride;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < d; i++) W.uq[r * d + i] = (uint8_t)(rows[r].q[i] + 128);
    switch (R) { /* constant R: the loops over rows unroll and the accumulators stay in registers */
    case 1: dots512(c, d, blocks, 1, W.uq, W.s, stride); break;
    case 2: dots512(c, d, blocks, 2, W.uq, W.s, stride); break;
    case 3: dots512(c, d, blocks, 3, W.uq, W.s, stride); break;
    case 4: dots512(c, d, blocks, 4, W.uq, W.s, stride); break;
    default: dots512(c, d, blocks, R, W.uq, W.s, stride); break;
    }
    float f[ATT_ROWS];
    int64_t S[ATT_ROWS], acc[ATT_ROWS * 1024];
    uint8_t *wh = W.w, *wl = W.w + (size_t)R * stride;
    for (int r = 0; r < R; r++) {
        float *s = W.s + (size_t)r * stride;
        float top = scale_scores512(c, rows[r].visible, s);
        softmax512(c, rows[r].visible, stride, s, top, rows[r].cq, table, wh + (size_t)r * stride,
                   wl + (size_t)r * stride, &f[r], &S[r]);
    }
    for (int r0 = 0; r0 < R; r0 += 3) {
        int g = R - r0 < 3 ? R - r0 : 3;
        for (int dc = 0; dc < d; dc += 64) {
            int nv = (d - dc < 64 ? d - dc : 64) / 16;
            const uint8_t *h8 = wh + (size_t)r0 * stride, *l8 = wl + (size_t)r0 * stride;
            int64_t *a = acc + (size_t)r0 * d;
            if (g == 3 && nv == 4) values512(c, d, dc, 4, groups, 3, h8, l8, stride, a);
            else if (g == 3) values512(c, d, dc, nv, groups, 3, h8, l8, stride, a);
            else if (g == 2) values512(c, d, dc, nv, groups, 2, h8, l8, stride, a);
            else values512(c, d, dc, nv, groups, 1, h8, l8, stride, a);
        }
    }
    finish(d, R, rows, acc, f, S);
}

/* ---- AMX: dots and value sums as tile products ----------------------------------------------------- */
#define AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx512dq")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) TileShape;

/* tiles 0-3: value sums (2R rows x 16 int32), 4: weights (2R rows x 64 keys), 5: a cache tile (16 x 64
 * bytes), 6: dots (R rows x 16 int32), 7: queries (R rows x 64 dims) */
AMX static void amx_shape(int R) {
    TileShape t;
    memset(&t, 0, sizeof t);
    t.palette = 1;
    int rows[8] = {2 * R, 2 * R, 2 * R, 2 * R, 2 * R, 16, R, R};
    for (int i = 0; i < 8; i++) {
        t.rows[i] = (uint8_t)rows[i];
        t.colsb[i] = 64;
    }
    _tile_loadconfig(&t);
}

AMX void attention_amx(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    int visible = longest(R, rows);
    Work W = split_work(work, visible, R);
    int blocks = (visible + 15) / 16, stride = W.stride;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < d; i++) W.uq[r * d + i] = (uint8_t)(rows[r].q[i] + 128);
    amx_shape(R);
    /* dots: queries [R x 64 dims] x a key block [16 rows of (16 keys x 4 dims)], per 64 dims */
    for (int b = 0; b < blocks; b++) {
        /* tile loads are not prefetched by the hardware as streams are: ask for blocks ahead */
        if (b + PREFETCH_BLOCKS < blocks) {
            const char *next = (const char *)(c->k + (size_t)(b + PREFETCH_BLOCKS) * 16 * d);
            for (int line = 0; line < 16 * d; line += 64) _mm_prefetch(next + line, _MM_HINT_T0);
        }
        _tile_zero(6);
        for (int dc = 0; dc < d; dc += 64) {
            if (d > 64 || b == 0) _tile_loadd(7, W.uq + dc, d); /* one chunk of 64 dims: loaded once */
            _tile_loadd(5, c->k + (size_t)b * 16 * d + (size_t)dc * 16, 64);
            _tile_dpbusd(6, 7, 5);
        }
        _tile_stored(6, W.s + 16 * b, stride * 4);
    }
    float f[ATT_ROWS];
    int64_t S[ATT_ROWS], acc[ATT_ROWS * 1024];
    for (int r = 0; r < R; r++) {
        float *s = W.s + (size_t)r * stride;
        float top = scale_scores512(c, rows[r].visible, s);
        softmax512(c, rows[r].visible, stride, s, top, rows[r].cq, table, W.w + (size_t)r * stride,
                   W.w + (size_t)(R + r) * stride, &f[r], &S[r]);
    }
    /* value sums: weights [2R rows (high bytes, then low) x 64 keys] x values [16 groups of 4 keys x
     * (16 dims x 4 keys)], four 16-dim tiles at a time */
    for (int d0 = 0; d0 < d; d0 += 64) {
        int tiles = (d - d0) / 16 < 4 ? (d - d0) / 16 : 4;
        _tile_zero(0); /* unused tiles are zeroed too: tile numbers are immediates */
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int k0 = 0; k0 < stride; k0 += 64) {
            _tile_loadd(4, W.w + k0, stride);
            const int8_t *vb = c->v + (size_t)(k0 / 4) * 4 * d + (size_t)d0 * 4;
            if (k0 + 2 * 64 < stride) /* the same 16 groups of 4 keys, two chunks ahead */
                for (int g = 0; g < 16; g++)
                    for (int line = 0; line < 4 * tiles * 16; line += 64)
                        _mm_prefetch((const char *)(vb + (size_t)(32 + g) * 4 * d + line), _MM_HINT_T0);
            for (int t = 0; t < tiles; t++) {
                _tile_loadd(5, vb + 64 * t, 4 * d);
                switch (t) { /* tile numbers are immediates */
                case 0: _tile_dpbusd(0, 4, 5); break;
                case 1: _tile_dpbusd(1, 4, 5); break;
                case 2: _tile_dpbusd(2, 4, 5); break;
                default: _tile_dpbusd(3, 4, 5); break;
                }
            }
        }
        for (int t = 0; t < tiles; t++) {
            int32_t *out = W.sums + 16 * t;
            switch (t) {
            case 0: _tile_stored(0, out, 64 * 4); break;
            case 1: _tile_stored(1, out, 64 * 4); break;
            case 2: _tile_stored(2, out, 64 * 4); break;
            default: _tile_stored(3, out, 64 * 4); break;
            }
        }
        for (int r = 0; r < R; r++)
            for (int i = 0; i < 16 * tiles; i++)
                acc[(size_t)r * d + d0 + i] = (int64_t)W.sums[r * 64 + i] * 256 + W.sums[(R + r) * 64 + i];
    }
    _tile_release();
    finish(d, R, rows, acc, f, S);
}

/* ---- AVX2 ------------------------------------------------------------------------------------------ */
#define AVX2 __attribute__((target("avx2")))

AVX2 void attention_avx2(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    int visible = longest(R, rows);
    Work W = split_work(work, visible, R);
    int stride = W.stride, groups = (visible + 3) / 4;
    const __m256i ones = _mm256_set1_epi16(1), lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    float f[ATT_ROWS];
    int64_t S[ATT_ROWS], acc[ATT_ROWS * 1024];
    int16_t *w16 = (int16_t *)W.w;
    for (int r = 0; r < R; r++) {
        const int8_t *q = rows[r].q;
        int vis = rows[r].visible, blocks8 = (vis + 7) / 8;
        float *s = W.s + (size_t)r * stride;
        /* scores: |q| times k with q's sign (vpsignb), pairs summed in int16 (at most 2 * 127 * 127) */
        for (int b16 = 0; b16 < (vis + 15) / 16; b16++) {
            const int8_t *kb = c->k + (size_t)b16 * 16 * d;
            __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
            for (int i4 = 0; i4 < d / 4; i4++) {
                int32_t four;
                memcpy(&four, q + 4 * i4, 4);
                __m256i sq = _mm256_set1_epi32(four), aq = _mm256_abs_epi8(sq);
                __m256i k0 = _mm256_loadu_si256((const __m256i *)(kb + i4 * 64));
                __m256i k1 = _mm256_loadu_si256((const __m256i *)(kb + i4 * 64 + 32));
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(k0, sq)), ones));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(k1, sq)), ones));
            }
            _mm256_storeu_ps(s + 16 * b16, _mm256_mul_ps(_mm256_cvtepi32_ps(a0), _mm256_loadu_ps(c->ks + 16 * b16)));
            _mm256_storeu_ps(s + 16 * b16 + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(a1), _mm256_loadu_ps(c->ks + 16 * b16 + 8)));
        }
        float top = -INFINITY;
        for (int j = 0; j < vis; j++) top = s[j] > top ? s[j] : top;
        __m256 tv = _mm256_set1_ps(top), cv = _mm256_set1_ps(rows[r].cq), gm = _mm256_set1_ps(GAP_MAX);
        __m256i total = _mm256_setzero_si256();
        __m256 um = _mm256_setzero_ps();
        for (int b = 0; b < blocks8; b++) {
            int left = vis - 8 * b < 8 ? vis - 8 * b : 8;
            __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane);
            __m256 g = _mm256_min_ps(_mm256_mul_ps(_mm256_sub_ps(tv, _mm256_loadu_ps(s + 8 * b)), cv), gm);
            __m256i idx = _mm256_and_si256(_mm256_cvttps_epi32(g), valid);
            __m256i e = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)table, idx, valid, 4);
            total = _mm256_add_epi32(total, e);
            __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(e), _mm256_loadu_ps(c->vs + 8 * b));
            _mm256_storeu_ps(s + 8 * b, u);
            um = _mm256_max_ps(um, u);
        }
        int32_t t8[8];
        float u8[8];
        _mm256_storeu_si256((__m256i *)t8, total);
        _mm256_storeu_ps(u8, um);
        int64_t sum = 0;
        float umax = 0.0f;
        for (int m = 0; m < 8; m++) {
            sum += t8[m];
            umax = u8[m] > umax ? u8[m] : umax;
        }
        S[r] = sum;
        f[r] = (float)ATT_WEIGHT / (umax > 0.0f ? umax : 1.0f);
        __m256 fv = _mm256_set1_ps(f[r]);
        __m256i wmax = _mm256_set1_epi32((int32_t)ATT_WEIGHT);
        int16_t *wr = w16 + (size_t)r * stride;
        for (int b = 0; b < blocks8; b++) {
            __m256 rr = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(s + 8 * b), fv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256i w = _mm256_min_epi32(_mm256_cvtps_epi32(rr), wmax);
            __m256i packed = _mm256_packs_epi32(w, w); /* lanes 0-3 and 4-7 of each 128-bit half */
            int64_t lo64 = _mm256_extract_epi64(packed, 0), hi64 = _mm256_extract_epi64(packed, 2);
            memcpy(wr + 8 * b, &lo64, 8);
            memcpy(wr + 8 * b + 4, &hi64, 8);
        }
        for (int j = vis; j < groups * 4 + 8; j++) wr[j] = 0;
    }
    /* value sums: pairs of int16 weight x int16 value in int32, flushed to int64 every 256 groups (each
     * lane gains at most 2 * 32767 * 127 per group) */
    for (int r = 0; r < R; r++) {
        const int16_t *wr = w16 + (size_t)r * stride;
        int64_t *a = acc + (size_t)r * d;
        int rg = (rows[r].visible + 3) / 4;
        for (int i = 0; i < d; i++) a[i] = 0;
        for (int dc = 0; dc < d; dc += 16) {
            for (int j0 = 0; j0 < rg; j0 += 256) {
                int j1 = j0 + 256 < rg ? j0 + 256 : rg;
                __m256i p[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                                _mm256_setzero_si256()};
                for (int j4 = j0; j4 < j1; j4++) {
                    int64_t four;
                    memcpy(&four, wr + 4 * j4, 8);
                    __m256i wv = _mm256_set1_epi64x(four);
                    const int8_t *vb = c->v + (size_t)j4 * 4 * d + dc * 4;
                    for (int k = 0; k < 4; k++) {
                        __m256i v16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(vb + 16 * k)));
                        p[k] = _mm256_add_epi32(p[k], _mm256_madd_epi16(v16, wv));
                    }
                }
                for (int k = 0; k < 4; k++) {
                    int32_t t[8];
                    _mm256_storeu_si256((__m256i *)t, p[k]);
                    for (int m = 0; m < 4; m++) a[dc + 4 * k + m] += (int64_t)t[2 * m] + t[2 * m + 1];
                }
            }
        }
    }
    finish(d, R, rows, acc, f, S);
}

#else
void attention_avx512(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    attention_baseline(c, d, R, rows, table, work);
}
void attention_avx2(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    attention_baseline(c, d, R, rows, table, work);
}
void attention_amx(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    attention_baseline(c, d, R, rows, table, work);
}
#endif

void attention(const HeadCache *c, int d, int R, const QueryRow *rows, const int32_t *table, void *work) {
    int simd = d % 16 == 0 && d <= 1024;
    if (isa_level >= ISA_AMX && d % 64 == 0) attention_amx(c, d, R, rows, table, work);
    else if (simd && isa_level >= ISA_AVX512) attention_avx512(c, d, R, rows, table, work);
    else if (simd && isa_level >= ISA_AVX2) attention_avx2(c, d, R, rows, table, work);
    else attention_baseline(c, d, R, rows, table, work);
}
