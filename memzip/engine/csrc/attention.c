/* Attention of one query position, for the G query heads that share one kv head (docs/ENGINE.md,
 * *Attention*): integer dot products, float32 scores, table exponentials on integer gaps, 15-bit
 * integer weights, exact integer value sums.
 *
 * For keys j < visible, per head h with int8 query q and gap factor cq:
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
 * The cache of one (layer, row, kv head) holds keys in blocks of 16 positions ([d / 4][16][4] bytes:
 * the operand of vpdpbusd with a broadcast query) and values in groups of 4 positions ([d][4] bytes:
 * vpdpbusd with broadcast weights).
 */
#include "engine.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define GAP_MAX ((float)(ATT_POINTS - 1))

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

static inline int round16(int n) { return (n + 15) / 16 * 16; }

size_t attention_work(int visible, int G) {
    size_t n = (size_t)round16(visible);
    return (size_t)G * n * (sizeof(float) + 2) + 128;
}

static inline void finish(int d, int G, const int64_t *acc, const float *f, const int64_t *S, double *out,
                          int ostride) {
    for (int h = 0; h < G; h++) {
        double den = (double)f[h] * (double)S[h]; /* exact: 24-bit times at most 28-bit */
        for (int i = 0; i < d; i++) out[(size_t)h * ostride + i] = (double)acc[(size_t)h * d + i] / den;
    }
}

void attention_baseline(const HeadCache *c, int d, int visible, int G, const int8_t *q, const float *cq,
                        const int32_t *table, double *out, int ostride, void *work) {
    float *s = (float *)work;
    float f[8];
    int64_t S[8], acc[8 * 256];
    for (int h = 0; h < G; h++) {
        const int8_t *qh = q + (size_t)h * d;
        float top = -INFINITY;
        for (int j = 0; j < visible; j++) {
            int32_t dot = 0;
            for (int i = 0; i < d; i++) dot += (int32_t)qh[i] * key_at(c, d, j, i);
            s[j] = (float)dot * c->ks[j];
            top = s[j] > top ? s[j] : top;
        }
        int64_t total = 0;
        float umax = 0.0f;
        for (int j = 0; j < visible; j++) {
            float g = (top - s[j]) * cq[h];
            g = g < GAP_MAX ? g : GAP_MAX;
            int32_t e = table[(int)g];
            total += e;
            float u = (float)e * c->vs[j];
            s[j] = u;
            umax = u > umax ? u : umax;
        }
        f[h] = (float)ATT_WEIGHT / (umax > 0.0f ? umax : 1.0f);
        S[h] = total;
        int64_t *a = acc + (size_t)h * d;
        for (int i = 0; i < d; i++) a[i] = 0;
        for (int j = 0; j < visible; j++) {
            float r = round_even_f(s[j] * f[h]);
            int32_t w = r > (float)ATT_WEIGHT ? (int32_t)ATT_WEIGHT : (int32_t)r;
            for (int i = 0; i < d; i++) a[i] += (int64_t)w * value_at(c, d, j, i);
        }
    }
    finish(d, G, acc, f, S, out, ostride);
}

#if defined(__x86_64__) && defined(__GNUC__)

/* ---- AVX-512 VNNI ---------------------------------------------------------------------------------- */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq")))
#define INLINE static inline __attribute__((always_inline))

static inline __mmask16 tail_mask(int b, int blocks, int visible) {
    int left = visible - 16 * b;
    return b < blocks - 1 || left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

/* scores of G heads over every block of 16 keys: s[h][j] and the running max per head */
INLINE AVX512 void scores512(const HeadCache *c, int d, int blocks, int visible, int G, const uint8_t *uq, float *s,
                             int stride, __m512 *mx) {
    for (int h = 0; h < G; h++) mx[h] = _mm512_set1_ps(-INFINITY);
    for (int b = 0; b < blocks; b++) {
        const int8_t *kb = c->k + (size_t)b * 16 * d;
        __m512i acc[8];
        for (int h = 0; h < G; h++) acc[h] = _mm512_setzero_si512();
        for (int i4 = 0; i4 < d / 4; i4++) {
            __m512i kv = _mm512_loadu_si512(kb + i4 * 64);
            for (int h = 0; h < G; h++) {
                int32_t four;
                memcpy(&four, uq + h * d + 4 * i4, 4);
                acc[h] = _mm512_dpbusd_epi32(acc[h], _mm512_set1_epi32(four), kv);
            }
        }
        /* the queries were offset by 128: dot = sum (q + 128) k - 128 sum k */
        __m512i bias = _mm512_slli_epi32(_mm512_loadu_si512(c->ksum + 16 * b), 7);
        __m512 ks = _mm512_loadu_ps(c->ks + 16 * b);
        __mmask16 valid = tail_mask(b, blocks, visible);
        for (int h = 0; h < G; h++) {
            __m512 sv = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[h], bias)), ks);
            _mm512_storeu_ps(s + (size_t)h * stride + 16 * b, sv);
            mx[h] = _mm512_mask_max_ps(mx[h], valid, mx[h], sv);
        }
    }
}

/* value sums of up to 3 heads over 16 * NV dims starting at dim dc */
INLINE AVX512 void values512(const HeadCache *c, int d, int dc, int nv, int groups, int G, const uint8_t *wh,
                             const uint8_t *wl, int stride, int64_t *acc) {
    __m512i hi[3][4], lo[3][4];
    for (int h = 0; h < G; h++)
        for (int k = 0; k < nv; k++) hi[h][k] = lo[h][k] = _mm512_setzero_si512();
    for (int j4 = 0; j4 < groups; j4++) {
        const int8_t *vb = c->v + (size_t)j4 * 4 * d + dc * 4;
        __m512i vv[4];
        for (int k = 0; k < nv; k++) vv[k] = _mm512_loadu_si512(vb + 64 * k);
        for (int h = 0; h < G; h++) {
            int32_t bh, bl;
            memcpy(&bh, wh + (size_t)h * stride + 4 * j4, 4);
            memcpy(&bl, wl + (size_t)h * stride + 4 * j4, 4);
            __m512i vh = _mm512_set1_epi32(bh), vl = _mm512_set1_epi32(bl);
            for (int k = 0; k < nv; k++) {
                hi[h][k] = _mm512_dpbusd_epi32(hi[h][k], vh, vv[k]);
                lo[h][k] = _mm512_dpbusd_epi32(lo[h][k], vl, vv[k]);
            }
        }
    }
    for (int h = 0; h < G; h++)
        for (int k = 0; k < nv; k++) {
            int32_t a[16], b[16];
            _mm512_storeu_si512(a, hi[h][k]);
            _mm512_storeu_si512(b, lo[h][k]);
            for (int m = 0; m < 16; m++) acc[(size_t)h * d + dc + 16 * k + m] = (int64_t)a[m] * 256 + b[m];
        }
}

AVX512 void attention_avx512(const HeadCache *c, int d, int visible, int G, const int8_t *q, const float *cq,
                             const int32_t *table, double *out, int ostride, void *work) {
    int blocks = (visible + 15) / 16, stride = blocks * 16, groups = (visible + 3) / 4;
    float *s = (float *)work;
    uint8_t *wh = (uint8_t *)(s + (size_t)G * stride), *wl = wh + (size_t)G * stride;
    uint8_t uq[8 * 256];
    for (int i = 0; i < G * d; i++) uq[i] = (uint8_t)(q[i] + 128);
    __m512 mx[8];
    switch (G) { /* constant G: the loops over heads unroll and the accumulators stay in registers */
    case 1: scores512(c, d, blocks, visible, 1, uq, s, stride, mx); break;
    case 2: scores512(c, d, blocks, visible, 2, uq, s, stride, mx); break;
    case 3: scores512(c, d, blocks, visible, 3, uq, s, stride, mx); break;
    case 4: scores512(c, d, blocks, visible, 4, uq, s, stride, mx); break;
    default: scores512(c, d, blocks, visible, G, uq, s, stride, mx); break;
    }
    float f[8];
    int64_t S[8], acc[8 * 256];
    const __m512 gap_max = _mm512_set1_ps(GAP_MAX);
    const __m512i weight_max = _mm512_set1_epi32((int32_t)ATT_WEIGHT), low = _mm512_set1_epi32(255);
    for (int h = 0; h < G; h++) {
        float *sh = s + (size_t)h * stride;
        __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(mx[h])), cv = _mm512_set1_ps(cq[h]);
        __m512i total = _mm512_setzero_si512();
        __m512 um = _mm512_setzero_ps();
        for (int b = 0; b < blocks; b++) {
            __mmask16 valid = tail_mask(b, blocks, visible);
            __m512 g = _mm512_min_ps(_mm512_mul_ps(_mm512_sub_ps(top, _mm512_loadu_ps(sh + 16 * b)), cv), gap_max);
            __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, _mm512_cvttps_epi32(g), table, 4);
            total = _mm512_add_epi32(total, e);
            __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(e), _mm512_loadu_ps(c->vs + 16 * b));
            _mm512_storeu_ps(sh + 16 * b, u);
            um = _mm512_max_ps(um, u);
        }
        S[h] = _mm512_reduce_add_epi32(total); /* at most 32768 * 8192: int32 */
        float umax = _mm512_reduce_max_ps(um);
        f[h] = (float)ATT_WEIGHT / (umax > 0.0f ? umax : 1.0f);
        __m512 fv = _mm512_set1_ps(f[h]);
        for (int b = 0; b < blocks; b++) {
            __m512i w = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(sh + 16 * b), fv),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            w = _mm512_min_epi32(w, weight_max);
            _mm_storeu_si128((__m128i *)(wh + (size_t)h * stride + 16 * b), _mm512_cvtepi32_epi8(_mm512_srli_epi32(w, 8)));
            _mm_storeu_si128((__m128i *)(wl + (size_t)h * stride + 16 * b), _mm512_cvtepi32_epi8(_mm512_and_si512(w, low)));
        }
    }
    for (int h0 = 0; h0 < G; h0 += 3) {
        int g = G - h0 < 3 ? G - h0 : 3;
        for (int dc = 0; dc < d; dc += 64) {
            int nv = (d - dc < 64 ? d - dc : 64) / 16;
            const uint8_t *h8 = wh + (size_t)h0 * stride, *l8 = wl + (size_t)h0 * stride;
            int64_t *a = acc + (size_t)h0 * d;
            if (g == 3 && nv == 4) values512(c, d, dc, 4, groups, 3, h8, l8, stride, a);
            else if (g == 3) values512(c, d, dc, nv, groups, 3, h8, l8, stride, a);
            else if (g == 2) values512(c, d, dc, nv, groups, 2, h8, l8, stride, a);
            else values512(c, d, dc, nv, groups, 1, h8, l8, stride, a);
        }
    }
    finish(d, G, acc, f, S, out, ostride);
}

/* ---- AVX2 ------------------------------------------------------------------------------------------ */
#define AVX2 __attribute__((target("avx2")))

static inline int tail_left(int b, int blocks, int visible) {
    int left = visible - 8 * b;
    return b < blocks - 1 || left >= 8 ? 8 : left;
}

AVX2 void attention_avx2(const HeadCache *c, int d, int visible, int G, const int8_t *q, const float *cq,
                         const int32_t *table, double *out, int ostride, void *work) {
    int blocks8 = (visible + 7) / 8, stride = round16(visible), groups = (visible + 3) / 4;
    float *s = (float *)work;
    int16_t *w16 = (int16_t *)(s + (size_t)G * stride);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    float f[8], top[8];
    int64_t S[8], acc[8 * 256];
    for (int h = 0; h < G; h++) top[h] = -INFINITY;
    /* scores: |q| times k with q's sign (vpsignb), pairs summed in int16 (at most 2 * 127 * 127) */
    for (int b16 = 0; b16 < (visible + 15) / 16; b16++) {
        const int8_t *kb = c->k + (size_t)b16 * 16 * d;
        for (int h = 0; h < G; h++) {
            const int8_t *qh = q + (size_t)h * d;
            __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
            for (int i4 = 0; i4 < d / 4; i4++) {
                int32_t four;
                memcpy(&four, qh + 4 * i4, 4);
                __m256i sq = _mm256_set1_epi32(four), aq = _mm256_abs_epi8(sq);
                __m256i k0 = _mm256_loadu_si256((const __m256i *)(kb + i4 * 64));
                __m256i k1 = _mm256_loadu_si256((const __m256i *)(kb + i4 * 64 + 32));
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(k0, sq)), ones));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(k1, sq)), ones));
            }
            float *sh = s + (size_t)h * stride + 16 * b16;
            __m256 s0 = _mm256_mul_ps(_mm256_cvtepi32_ps(a0), _mm256_loadu_ps(c->ks + 16 * b16));
            __m256 s1 = _mm256_mul_ps(_mm256_cvtepi32_ps(a1), _mm256_loadu_ps(c->ks + 16 * b16 + 8));
            _mm256_storeu_ps(sh, s0);
            _mm256_storeu_ps(sh + 8, s1);
        }
    }
    for (int h = 0; h < G; h++) {
        float *sh = s + (size_t)h * stride;
        for (int j = 0; j < visible; j++) top[h] = sh[j] > top[h] ? sh[j] : top[h];
        __m256 tv = _mm256_set1_ps(top[h]), cv = _mm256_set1_ps(cq[h]), gm = _mm256_set1_ps(GAP_MAX);
        __m256i total = _mm256_setzero_si256();
        __m256 um = _mm256_setzero_ps();
        for (int b = 0; b < blocks8; b++) {
            __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail_left(b, blocks8, visible)), lane);
            __m256 g = _mm256_min_ps(_mm256_mul_ps(_mm256_sub_ps(tv, _mm256_loadu_ps(sh + 8 * b)), cv), gm);
            __m256i idx = _mm256_and_si256(_mm256_cvttps_epi32(g), valid);
            __m256i e = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)table, idx, valid, 4);
            total = _mm256_add_epi32(total, e);
            __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(e), _mm256_loadu_ps(c->vs + 8 * b));
            _mm256_storeu_ps(sh + 8 * b, u);
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
        S[h] = sum;
        f[h] = (float)ATT_WEIGHT / (umax > 0.0f ? umax : 1.0f);
        __m256 fv = _mm256_set1_ps(f[h]);
        __m256i wmax = _mm256_set1_epi32((int32_t)ATT_WEIGHT);
        int16_t *wh16 = w16 + (size_t)h * stride;
        for (int b = 0; b < blocks8; b++) {
            __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(sh + 8 * b), fv),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256i w = _mm256_min_epi32(_mm256_cvtps_epi32(r), wmax);
            __m256i packed = _mm256_packs_epi32(w, w); /* lanes 0-3 and 4-7 of each 128-bit half */
            int64_t lo64 = _mm256_extract_epi64(packed, 0), hi64 = _mm256_extract_epi64(packed, 2);
            memcpy(wh16 + 8 * b, &lo64, 8);
            memcpy(wh16 + 8 * b + 4, &hi64, 8);
        }
        for (int j = visible; j < blocks8 * 8; j++) wh16[j] = 0;
    }
    /* value sums: pairs of int16 weight x int16 value in int32, flushed to int64 every 256 groups */
    for (int h = 0; h < G; h++) {
        const int16_t *wh16 = w16 + (size_t)h * stride;
        int64_t *a = acc + (size_t)h * d;
        for (int i = 0; i < d; i++) a[i] = 0;
        for (int dc = 0; dc < d; dc += 16) {
            for (int j0 = 0; j0 < groups; j0 += 256) {
                int j1 = j0 + 256 < groups ? j0 + 256 : groups;
                __m256i p[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                                _mm256_setzero_si256()};
                for (int j4 = j0; j4 < j1; j4++) {
                    int64_t four;
                    memcpy(&four, wh16 + 4 * j4, 8);
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
    finish(d, G, acc, f, S, out, ostride);
}

#else
void attention_avx512(const HeadCache *c, int d, int visible, int G, const int8_t *q, const float *cq,
                      const int32_t *table, double *out, int ostride, void *work) {
    attention_baseline(c, d, visible, G, q, cq, table, out, ostride, work);
}
void attention_avx2(const HeadCache *c, int d, int visible, int G, const int8_t *q, const float *cq,
                    const int32_t *table, double *out, int ostride, void *work) {
    attention_baseline(c, d, visible, G, q, cq, table, out, ostride, work);
}
#endif

void attention(const HeadCache *c, int d, int visible, int G, const int8_t *q, const float *cq, const int32_t *table,
               double *out, int ostride, void *work) {
    int simd = d % 16 == 0 && d <= 256 && G <= 8;
    if (simd && isa_level >= ISA_AVX512) attention_avx512(c, d, visible, G, q, cq, table, out, ostride, work);
    else if (simd && isa_level >= ISA_AVX2) attention_avx2(c, d, visible, G, q, cq, table, out, ostride, work);
    else attention_baseline(c, d, visible, G, q, cq, table, out, ostride, work);
}
