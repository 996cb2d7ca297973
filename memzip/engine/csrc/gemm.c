/* Products of unsigned 8-bit activations with packed int8 weights: exact int32 sums.
 *
 * Four variants compute the same integers (any order, any blocking: integer sums are exact):
 * baseline C; AVX2 (vpmaddubsw: a pair of u8 x s8 products is summed in int16, which cannot saturate
 * because the weights are within -63..63: 2 * 255 * 63 < 2^15); AVX-512 VNNI (vpdpbusd: four products
 * into int32); AMX (tdpbusd: 16 x 16 tiles of int32 sums over 64 inputs). No sum can overflow int32
 * for kp < 133,000 (255 * 63 * kp < 2^31).
 *
 * Weights are packed [np / 16][kp / 4][16][4] (engine.h): a 64-byte block holds 4 consecutive inputs of
 * 16 consecutive outputs, which is the operand layout of vpdpbusd with broadcast activations and of an
 * AMX B tile (16 rows of 64 bytes: inputs / 4 x (16 outputs x 4 inputs)).
 */
#include "engine.h"

#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define AMX_MIN_ROWS 4
#define BLOCK_BYTES(W) ((size_t)((W)->kp / 4) * 64) /* bytes of one 16-output block */

void gemm_baseline(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    int kq = W->kp / 4;
    for (int b = j0 / 16; b < j1 / 16; b++) {
        const int8_t *wb = W->w + (size_t)b * BLOCK_BYTES(W);
        for (int r = 0; r < rows; r++) {
            const uint8_t *a = A + (size_t)r * W->kp;
            int32_t acc[16] = {0};
            for (int t = 0; t < kq; t++) {
                const int8_t *w = wb + (size_t)t * 64;
                for (int m = 0; m < 16; m++)
                    for (int u = 0; u < 4; u++) acc[m] += (int32_t)a[4 * t + u] * (int32_t)w[4 * m + u];
            }
            memcpy(C + (size_t)r * ldc + 16 * b, acc, sizeof acc);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)

/* ---- AVX2 ------------------------------------------------------------------------------------------ */
#define AVX2 __attribute__((target("avx2")))

#define DEF_AVX2(NR)                                                                                       \
    AVX2 static void avx2_##NR(const int8_t *wb, const uint8_t *A, int kp, int kq, int32_t *C, int ldc) {  \
        __m256i acc[NR][2];                                                                                \
        const __m256i ones = _mm256_set1_epi16(1);                                                          \
        for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();                       \
        for (int t = 0; t < kq; t++) {                                                                     \
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)t * 64));                       \
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(wb + (size_t)t * 64 + 32));                  \
            for (int r = 0; r < NR; r++) {                                                                 \
                int32_t four;                                                                              \
                memcpy(&four, A + (size_t)r * kp + 4 * t, 4);                                              \
                __m256i a = _mm256_set1_epi32(four);                                                       \
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w0), ones)); \
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, w1), ones)); \
            }                                                                                              \
        }                                                                                                  \
        for (int r = 0; r < NR; r++) {                                                                     \
            _mm256_storeu_si256((__m256i *)(C + (size_t)r * ldc), acc[r][0]);                              \
            _mm256_storeu_si256((__m256i *)(C + (size_t)r * ldc + 8), acc[r][1]);                          \
        }                                                                                                  \
    }
DEF_AVX2(1)
DEF_AVX2(2)
DEF_AVX2(3)
DEF_AVX2(4)

AVX2 void gemm_avx2(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    int kq = W->kp / 4;
    for (int b = j0 / 16; b < j1 / 16; b++) {
        const int8_t *wb = W->w + (size_t)b * BLOCK_BYTES(W);
        for (int r = 0; r < rows; r += 4) {
            const uint8_t *a = A + (size_t)r * W->kp;
            int32_t *c = C + (size_t)r * ldc + 16 * b;
            switch (rows - r < 4 ? rows - r : 4) {
            case 1: avx2_1(wb, a, W->kp, kq, c, ldc); break;
            case 2: avx2_2(wb, a, W->kp, kq, c, ldc); break;
            case 3: avx2_3(wb, a, W->kp, kq, c, ldc); break;
            default: avx2_4(wb, a, W->kp, kq, c, ldc); break;
            }
        }
    }
}

/* ---- AVX-512 VNNI ---------------------------------------------------------------------------------- */
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* NB blocks of 16 outputs x NR activation rows: NB * NR accumulators */
#define DEF_512(NB, NR)                                                                                    \
    AVX512 static void k512_##NB##_##NR(const int8_t *wb, size_t bstride, const uint8_t *A, int kp, int kq, \
                                        int32_t *C, int ldc) {                                             \
        __m512i acc[NB][NR];                                                                               \
        for (int b = 0; b < NB; b++)                                                                       \
            for (int r = 0; r < NR; r++) acc[b][r] = _mm512_setzero_si512();                               \
        for (int t = 0; t < kq; t++) {                                                                     \
            __m512i a[NR];                                                                                 \
            for (int r = 0; r < NR; r++) {                                                                 \
                int32_t four;                                                                              \
                memcpy(&four, A + (size_t)r * kp + 4 * t, 4);                                              \
                a[r] = _mm512_set1_epi32(four);                                                            \
            }                                                                                              \
            for (int b = 0; b < NB; b++) {                                                                 \
                __m512i w = _mm512_loadu_si512(wb + b * bstride + (size_t)t * 64);                         \
                for (int r = 0; r < NR; r++) acc[b][r] = _mm512_dpbusd_epi32(acc[b][r], a[r], w);          \
            }                                                                                              \
        }                                                                                                  \
        for (int b = 0; b < NB; b++)                                                                       \
            for (int r = 0; r < NR; r++) _mm512_storeu_si512(C + (size_t)r * ldc + 16 * b, acc[b][r]);     \
    }
DEF_512(4, 1)
DEF_512(4, 2)
DEF_512(4, 3)
DEF_512(4, 4)
DEF_512(1, 1)
DEF_512(1, 2)
DEF_512(1, 3)
DEF_512(1, 4)

AVX512 void gemm_avx512(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    int kq = W->kp / 4;
    size_t bstride = BLOCK_BYTES(W);
    /* rows in chunks that keep their activations in L2 while every block passes over them */
    for (int r0 = 0; r0 < rows; r0 += 256) {
        int r1 = r0 + 256 < rows ? r0 + 256 : rows;
        for (int b = j0 / 16; b < j1 / 16;) {
            int nb = j1 / 16 - b >= 4 ? 4 : 1;
            const int8_t *wb = W->w + (size_t)b * bstride;
            for (int r = r0; r < r1; r += 4) {
                const uint8_t *a = A + (size_t)r * W->kp;
                int32_t *c = C + (size_t)r * ldc + 16 * b;
                int nr = r1 - r < 4 ? r1 - r : 4;
                if (nb == 4) {
                    switch (nr) {
                    case 1: k512_4_1(wb, bstride, a, W->kp, kq, c, ldc); break;
                    case 2: k512_4_2(wb, bstride, a, W->kp, kq, c, ldc); break;
                    case 3: k512_4_3(wb, bstride, a, W->kp, kq, c, ldc); break;
                    default: k512_4_4(wb, bstride, a, W->kp, kq, c, ldc); break;
                    }
                } else {
                    switch (nr) {
                    case 1: k512_1_1(wb, bstride, a, W->kp, kq, c, ldc); break;
                    case 2: k512_1_2(wb, bstride, a, W->kp, kq, c, ldc); break;
                    case 3: k512_1_3(wb, bstride, a, W->kp, kq, c, ldc); break;
                    default: k512_1_4(wb, bstride, a, W->kp, kq, c, ldc); break;
                    }
                }
            }
            b += nb;
        }
    }
}

/* ---- AMX ------------------------------------------------------------------------------------------- */
#include <sys/syscall.h>
#include <unistd.h>

#define AMX __attribute__((target("amx-tile,amx-int8,avx512f")))
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int amx_enable(void) {
    /* Linux hands out the tile state only to processes that ask for it */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) TileConfig;

/* tiles 0-3: C (int32, 16 columns), 4-5: A (64 bytes per row), 6-7: B (16 rows x 64 bytes); the A and C
 * tiles of the first row tile have `top` rows, those of the second `bottom` (0: unused) */
AMX static void amx_configure(int top, int bottom) {
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    int rows[8] = {top, top, bottom, bottom, top, bottom, 16, 16};
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = rows[i] ? 64 : 0;
        cfg.rows[i] = (uint8_t)rows[i];
    }
    _tile_loadconfig(&cfg);
}

#define AMX_MICRO(NAME, TWO_ROWS, TWO_COLS)                                                                \
    AMX static void NAME(const int8_t *wb, size_t bstride, const uint8_t *A, int kp, int32_t *C, int ldc,   \
                         int top) {                                                                        \
        _tile_zero(0);                                                                                     \
        if (TWO_COLS) _tile_zero(1);                                                                       \
        if (TWO_ROWS) _tile_zero(2);                                                                       \
        if (TWO_ROWS && TWO_COLS) _tile_zero(3);                                                           \
        for (int t = 0; t < kp / 64; t++) {                                                                \
            _tile_loadd(4, A + 64 * t, kp);                                                                \
            _tile_loadd(6, wb + (size_t)t * 1024, 64);                                                     \
            _tile_dpbusd(0, 4, 6);                                                                         \
            if (TWO_COLS) {                                                                                \
                _tile_loadd(7, wb + bstride + (size_t)t * 1024, 64);                                       \
                _tile_dpbusd(1, 4, 7);                                                                     \
            }                                                                                              \
            if (TWO_ROWS) {                                                                                \
                _tile_loadd(5, A + (size_t)top * kp + 64 * t, kp);                                         \
                _tile_dpbusd(2, 5, 6);                                                                     \
                if (TWO_COLS) _tile_dpbusd(3, 5, 7);                                                       \
            }                                                                                              \
        }                                                                                                  \
        _tile_stored(0, C, ldc * 4);                                                                       \
        if (TWO_COLS) _tile_stored(1, C + 16, ldc * 4);                                                    \
        if (TWO_ROWS) _tile_stored(2, C + (size_t)top * ldc, ldc * 4);                                     \
        if (TWO_ROWS && TWO_COLS) _tile_stored(3, C + (size_t)top * ldc + 16, ldc * 4);                    \
    }
AMX_MICRO(amx_22, 1, 1)
AMX_MICRO(amx_21, 1, 0)
AMX_MICRO(amx_12, 0, 1)
AMX_MICRO(amx_11, 0, 0)

AMX int gemm_amx(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    size_t bstride = BLOCK_BYTES(W);
    int configured = -1;
    for (int r0 = 0; r0 < rows; r0 += 256) {
        int r1 = r0 + 256 < rows ? r0 + 256 : rows;
        for (int b = j0 / 16; b < j1 / 16; b += 2) {
            int two_cols = b + 1 < j1 / 16;
            const int8_t *wb = W->w + (size_t)b * bstride;
            for (int r = r0; r < r1; r += 32) {
                int group = r1 - r < 32 ? r1 - r : 32, top = group < 16 ? group : 16, bottom = group - top;
                if (configured != group) { /* tiles shaped for this many rows */
                    amx_configure(top, bottom);
                    configured = group;
                }
                const uint8_t *a = A + (size_t)r * W->kp;
                int32_t *c = C + (size_t)r * ldc + 16 * b;
                if (bottom && two_cols) amx_22(wb, bstride, a, W->kp, c, ldc, top);
                else if (bottom) amx_21(wb, bstride, a, W->kp, c, ldc, top);
                else if (two_cols) amx_12(wb, bstride, a, W->kp, c, ldc, top);
                else amx_11(wb, bstride, a, W->kp, c, ldc, top);
            }
        }
    }
    if (configured >= 0) _tile_release();
    return 1;
}

#else
void gemm_avx2(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    gemm_baseline(W, A, rows, j0, j1, C, ldc);
}
void gemm_avx512(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    gemm_baseline(W, A, rows, j0, j1, C, ldc);
}
int gemm_amx(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) { return 0; }
int amx_enable(void) { return 0; }
#endif

void gemm(const Matrix *W, const uint8_t *A, int rows, int j0, int j1, int32_t *C, int ldc) {
    switch (isa_level) {
    case ISA_AMX:
        /* AMX from two decoding rows (four activation rows) up; for one row the VNNI kernel's streaming
         * loads were as fast or faster (bench, alternating builds: 3.9-6.8 vs 5.1-7.1 ms per step) */
        if (rows >= AMX_MIN_ROWS) {
            gemm_amx(W, A, rows, j0, j1, C, ldc);
            return;
        }
        gemm_avx512(W, A, rows, j0, j1, C, ldc);
        return;
    case ISA_AVX512: gemm_avx512(W, A, rows, j0, j1, C, ldc); return;
    case ISA_AVX2: gemm_avx2(W, A, rows, j0, j1, C, ldc); return;
    default: gemm_baseline(W, A, rows, j0, j1, C, ldc);
    }
}
