/* AVX-512 VNNI kernels (Zen 4/5, Ice Lake and later): 16 output columns per zmm register, one int32 lane per
 * weight row of a repacked group; vpdpbusd multiplies 4 unsigned weight bytes of each of the 16 rows by 4
 * signed activation bytes broadcast from memory. A weight chunk is loaded and unpacked once and then
 * applied to every activation row of the tile (up to RZ_TILE = 8 rows, accumulators in registers): the
 * weights cross the memory bus once per forward whatever the row count, so one row is bandwidth-bound
 * and more rows add only the dot products.
 *
 * Float steps per output are those of kern_ref.c, in its order (fmadd/fnmadd are single-rounding, like
 * fmaf), so every kernel here equals the reference bit for bit.
 */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma,avx2")
#include <immintrin.h>

#include "rz.h"

#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

INLINE __m512i bcast4(const int8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Software prefetch of the weights PF_AHEAD bytes ahead, by the first tile only (later tiles find the
 * work unit in cache): the hardware prefetcher alone let the dot products and the memory reads take
 * turns instead of overlapping once a call has several rows to compute. Into L2 (T1), not L1 (T0): the
 * L1 prefetches competed with the activation rows and the kernel's own loads, and at n = 8 on the 1.5B
 * a forward took ~35% less time with T1 (A/B of the two builds, interleaved, 2026-12-02 and 2026-12-06). */
#ifndef PF_AHEAD /* PF_AHEAD, PF_HINT (and model.c's WORK_BYTES) can be set by CFLAGS for A/B builds */
#define PF_AHEAD 4096
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T1
#endif
INLINE void prefetch_chunk(const uint8_t *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + PF_AHEAD + o, PF_HINT);
}

INLINE __m512 load_d16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

INLINE void store_cols(const rz_tensor *w, int g, float *dst, __m512 v) {
    int rem = w->rows - g * RZ_GROUP;
    if (rem >= RZ_GROUP)
        _mm512_storeu_ps(dst, v);
    else
        _mm512_mask_storeu_ps(dst, (__mmask16)((1u << rem) - 1), v);
}

/* 4-bit nibble span of 32 columns (4 x 64 bytes) -> 8 vectors of 16 rows x 4 columns, in column order */
INLINE void unpack_nib(const uint8_t *span, __m512i v[8]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    UNROLL for (int j = 0; j < 4; j++) {
        __m512i z = _mm512_loadu_si512(span + 64 * j);
        v[2 * j] = _mm512_and_si512(z, m4);
        v[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
    }
}

/* Activation pointers of one tile (layouts in rz.h): NR rows side by side per 4 columns and per block. */
#define TILE_PTRS(Q, D)                                                                       \
    const int r0 = a->tile_r0[tile];                                                          \
    const int8_t *qt = a->Q + (size_t)r0 * K;                                                 \
    const float *dt = a->D + (size_t)r0 * nb;

/* ---- 32-column block types ---------------------------------------------------------------------------- */
enum { T_Q8_0, T_Q4_0, T_Q5_0, T_Q4_1 };

/* Per block: the 8 weight vectors once, then for each of them every row's dot product (rows innermost, so
 * the NR accumulator chains interleave); with few rows two chains a row keep the VNNI unit busy. */
INLINE void tile32(const int T, const rz_tensor *w, int g, const rz_act *a, int tile, const int NR, float *out, int ldo) {
    const int K = w->cols, nb = w->blocks;
    const size_t cb = w->chunk_bytes;
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    TILE_PTRS(q32, d32)
    const int32_t *st = a->s32 + (size_t)r0 * nb;
    const int SPLIT = NR <= 3 ? 2 : 1;
    __m512 acc[RZ_TILE];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *chunk = wg + b * cb;
        if (tile == 0) prefetch_chunk(chunk, cb);
        __m512i v[8];
        __m512 dw, mw = _mm512_setzero_ps();
        int off = 0;
        if (T == T_Q8_0) {
            const rp_q8_0 *c = (const rp_q8_0 *)chunk;
            UNROLL for (int j = 0; j < 8; j++) v[j] = _mm512_loadu_si512(c->qs[j]);
            dw = load_d16(c->d);
            off = 128;
        } else if (T == T_Q4_0) {
            const rp_q4_0 *c = (const rp_q4_0 *)chunk;
            unpack_nib(&c->qs[0][0], v);
            dw = load_d16(c->d);
            off = 8;
        } else if (T == T_Q5_0) {
            const rp_q5_0 *c = (const rp_q5_0 *)chunk;
            unpack_nib(&c->qs[0][0], v);
            const __m512i b4 = _mm512_set1_epi8(0x10);
            UNROLL for (int j = 0; j < 4; j++) {
                v[2 * j] = _mm512_mask_add_epi8(v[2 * j], _cvtu64_mask64(c->qh[j][0]), v[2 * j], b4);
                v[2 * j + 1] = _mm512_mask_add_epi8(v[2 * j + 1], _cvtu64_mask64(c->qh[j][1]), v[2 * j + 1], b4);
            }
            dw = load_d16(c->d);
            off = 16;
        } else {
            const rp_q4_1 *c = (const rp_q4_1 *)chunk;
            unpack_nib(&c->qs[0][0], v);
            dw = load_d16(c->d);
            mw = load_d16(c->m);
        }
        const int8_t *qb = qt + (size_t)b * 8 * NR * 4;
        __m512i s[2][RZ_TILE];
        UNROLL for (int h = 0; h < SPLIT; h++) UNROLL for (int r = 0; r < NR; r++) s[h][r] = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < 8; j++) UNROLL for (int r = 0; r < NR; r++) {
            const int h = SPLIT == 2 ? (j & 1) : 0;
            s[h][r] = _mm512_dpbusd_epi32(s[h][r], v[j], bcast4(qb + (j * NR + r) * 4));
        }
        UNROLL for (int r = 0; r < NR; r++) {
            __m512i sr = SPLIT == 2 ? _mm512_add_epi32(s[0][r], s[1][r]) : s[0][r];
            const float da = dt[b * NR + r];
            const int32_t sa = st[b * NR + r];
            if (off) sr = _mm512_sub_epi32(sr, _mm512_set1_epi32(off * sa));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sr), _mm512_mul_ps(dw, _mm512_set1_ps(da)), acc[r]);
            if (T == T_Q4_1) acc[r] = _mm512_fmadd_ps(mw, _mm512_set1_ps(da * (float)sa), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NR; r++) store_cols(w, g, out + (size_t)(r0 + r) * ldo + g * RZ_GROUP, acc[r]);
}

/* ---- Q4_K: 256 columns, 8 sub-blocks of 32 with integer scales and minimums ------------------------------ */
INLINE void tile_q4_k(const rz_tensor *w, int g, const rz_act *a, int tile, const int NR, float *out, int ldo) {
    const int K = w->cols, nb = w->blocks;
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    TILE_PTRS(q256, d256)
    const int16_t *ht = a->h32 + (size_t)r0 * (K / 32);
    const int SPLIT = NR <= 3 ? 2 : 1;
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[RZ_TILE];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const rp_q4_k *c = (const rp_q4_k *)(wg + b * sizeof(rp_q4_k));
        if (tile == 0) prefetch_chunk((const uint8_t *)c, sizeof *c);
        __m512i is[RZ_TILE];
        UNROLL for (int r = 0; r < NR; r++) is[r] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c->sc[j]));
            const int8_t *qb = qt + (size_t)(64 * b + 8 * j) * NR * 4;
            __m512i p[2][RZ_TILE];
            UNROLL for (int h = 0; h < SPLIT; h++) UNROLL for (int r = 0; r < NR; r++) p[h][r] = _mm512_setzero_si512();
            UNROLL for (int half = 0; half < 2; half++) {
                const __m512i z0 = _mm512_loadu_si512(c->qs[4 * j + 2 * half]);
                const __m512i z1 = _mm512_loadu_si512(c->qs[4 * j + 2 * half + 1]);
                const __m512i v[4] = {_mm512_and_si512(z0, m4), _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4),
                                      _mm512_and_si512(z1, m4), _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4)};
                UNROLL for (int t = 0; t < 4; t++) UNROLL for (int r = 0; r < NR; r++) {
                    const int h = SPLIT == 2 ? (t & 1) : 0;
                    p[h][r] = _mm512_dpbusd_epi32(p[h][r], v[t], bcast4(qb + ((4 * half + t) * NR + r) * 4));
                }
            }
            UNROLL for (int r = 0; r < NR; r++) {
                const __m512i pr = SPLIT == 2 ? _mm512_add_epi32(p[0][r], p[1][r]) : p[0][r];
                is[r] = _mm512_add_epi32(is[r], _mm512_mullo_epi32(pr, sc));
            }
        }
        __m512i mp[4];
        UNROLL for (int i = 0; i < 4; i++) mp[i] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)c->m[i]));
        const __m512 dw = load_d16(c->d), dmw = load_d16(c->dmin);
        UNROLL for (int r = 0; r < NR; r++) {
            __m512i m = _mm512_setzero_si512();
            UNROLL for (int i = 0; i < 4; i++) {
                int32_t pair;
                __builtin_memcpy(&pair, ht + ((size_t)(4 * b + i) * NR + r) * 2, 4);
                m = _mm512_dpwssd_epi32(m, mp[i], _mm512_set1_epi32(pair));
            }
            const __m512 da = _mm512_set1_ps(dt[b * NR + r]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r]), _mm512_mul_ps(dw, da), acc[r]);
            acc[r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(dmw, da), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NR; r++) store_cols(w, g, out + (size_t)(r0 + r) * ldo + g * RZ_GROUP, acc[r]);
}

/* ---- Q6_K: 256 columns, 16 sub-blocks of 16 with int8 scales; q - 32 via the activation sums ------------ */
INLINE void tile_q6_k(const rz_tensor *w, int g, const rz_act *a, int tile, const int NR, float *out, int ldo) {
    const int K = w->cols, nb = w->blocks;
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    TILE_PTRS(q256, d256)
    const int16_t *ht = a->h16 + (size_t)r0 * (K / 16);
    const int SPLIT = NR <= 3 ? 2 : 1;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    __m512 acc[RZ_TILE];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const rp_q6_k *c = (const rp_q6_k *)(wg + b * sizeof(rp_q6_k));
        if (tile == 0) prefetch_chunk((const uint8_t *)c, sizeof *c);
        __m512i is[RZ_TILE];
        UNROLL for (int r = 0; r < NR; r++) is[r] = _mm512_setzero_si512();
        for (int i = 0; i < 8; i++) {
            const __m512i scp = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)c->sc[i]));
            UNROLL for (int half = 0; half < 2; half++) {
                const int j = 2 * i + half;
                const __m512i scj = half ? _mm512_srai_epi32(scp, 16) : _mm512_srai_epi32(_mm512_slli_epi32(scp, 16), 16);
                const __m512i z0 = _mm512_loadu_si512(c->ql[2 * j]), z1 = _mm512_loadu_si512(c->ql[2 * j + 1]);
                const __m512i hb = _mm512_loadu_si512(c->qh[j]);
                __m512i u[4];
                /* 0xf8: a | (b & c) */
                u[0] = _mm512_ternarylogic_epi32(_mm512_and_si512(z0, m4), _mm512_slli_epi16(hb, 4), m30, 0xf8);
                u[1] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(z0, 4), m4), _mm512_slli_epi16(hb, 2), m30, 0xf8);
                u[2] = _mm512_ternarylogic_epi32(_mm512_and_si512(z1, m4), hb, m30, 0xf8);
                u[3] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(z1, 4), m4), _mm512_srli_epi16(hb, 2), m30, 0xf8);
                const int8_t *qb = qt + (size_t)(64 * b + 4 * j) * NR * 4;
                __m512i p[2][RZ_TILE];
                UNROLL for (int h = 0; h < SPLIT; h++) UNROLL for (int r = 0; r < NR; r++) p[h][r] = _mm512_setzero_si512();
                UNROLL for (int t = 0; t < 4; t++) UNROLL for (int r = 0; r < NR; r++) {
                    const int h = SPLIT == 2 ? (t & 1) : 0;
                    p[h][r] = _mm512_dpbusd_epi32(p[h][r], u[t], bcast4(qb + (t * NR + r) * 4));
                }
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m512i pr = SPLIT == 2 ? _mm512_add_epi32(p[0][r], p[1][r]) : p[0][r];
                    is[r] = _mm512_add_epi32(is[r], _mm512_mullo_epi32(pr, scj));
                }
            }
            /* -32 * (sc_2i * sum16_2i + sc_2i+1 * sum16_2i+1), as int16 pairs: |sc * 32| <= 4096 */
            const __m512i scn = _mm512_mullo_epi16(scp, _mm512_set1_epi16(-32));
            UNROLL for (int r = 0; r < NR; r++) {
                int32_t pair;
                __builtin_memcpy(&pair, ht + ((size_t)(8 * b + i) * NR + r) * 2, 4);
                is[r] = _mm512_dpwssd_epi32(is[r], scn, _mm512_set1_epi32(pair));
            }
        }
        const __m512 dw = load_d16(c->d);
        UNROLL for (int r = 0; r < NR; r++) {
            const __m512 da = _mm512_set1_ps(dt[b * NR + r]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[r]), _mm512_mul_ps(dw, da), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NR; r++) store_cols(w, g, out + (size_t)(r0 + r) * ldo + g * RZ_GROUP, acc[r]);
}

/* ---- float weights: 16 columns per register, activations as f32 -------------------------------------- */
enum { T_F16, T_BF16, T_F32 };

INLINE void tile_float(const int T, const rz_tensor *w, int g, const rz_act *a, int tile, const int NR, float *out, int ldo) {
    const int K = w->cols, nb = w->blocks, r0 = a->tile_r0[tile];
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    __m512 acc[RZ_TILE];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *chunk = wg + b * w->chunk_bytes;
        for (int k = 0; k < 32; k++) {
            __m512 wv;
            if (T == T_F32) {
                wv = _mm512_loadu_ps(((const rp_f32 *)chunk)->w[k]);
            } else {
                const __m256i hh = _mm256_loadu_si256((const __m256i *)((const rp_f16 *)chunk)->w[k]);
                wv = T == T_F16 ? _mm512_cvtph_ps(hh)
                                : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(hh), 16));
            }
            UNROLL for (int r = 0; r < NR; r++)
                acc[r] = _mm512_fmadd_ps(wv, _mm512_set1_ps(a->x[(size_t)(r0 + r) * K + 32 * b + k]), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NR; r++) store_cols(w, g, out + (size_t)(r0 + r) * ldo + g * RZ_GROUP, acc[r]);
}

/* ---- entry points: one per type, the tile's row count made a constant for the compiler --------------- */
#define DISPATCH(TILE_CALL)                                                   \
    for (int g = g0; g < g1; g++) switch (a->tile_nr[tile]) {                 \
        case 1: TILE_CALL(1); break;                                          \
        case 2: TILE_CALL(2); break;                                          \
        case 3: TILE_CALL(3); break;                                          \
        case 4: TILE_CALL(4); break;                                          \
        case 5: TILE_CALL(5); break;                                          \
        case 6: TILE_CALL(6); break;                                          \
        case 7: TILE_CALL(7); break;                                          \
        default: TILE_CALL(8); break;                                         \
        }

#define CALL32_T_Q8_0(N) tile32(T_Q8_0, w, g, a, tile, N, out, ldo)
#define CALL32_T_Q4_0(N) tile32(T_Q4_0, w, g, a, tile, N, out, ldo)
#define CALL32_T_Q5_0(N) tile32(T_Q5_0, w, g, a, tile, N, out, ldo)
#define CALL32_T_Q4_1(N) tile32(T_Q4_1, w, g, a, tile, N, out, ldo)
#define CALLF_T_F16(N) tile_float(T_F16, w, g, a, tile, N, out, ldo)
#define CALLF_T_BF16(N) tile_float(T_BF16, w, g, a, tile, N, out, ldo)
#define CALLF_T_F32(N) tile_float(T_F32, w, g, a, tile, N, out, ldo)
#define CALL_Q4K(N) tile_q4_k(w, g, a, tile, N, out, ldo)
#define CALL_Q6K(N) tile_q6_k(w, g, a, tile, N, out, ldo)

#define ENTRY(NAME, CALL) \
    void NAME(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) { DISPATCH(CALL) }
ENTRY(rz_mm_q8_0_avx512, CALL32_T_Q8_0)
ENTRY(rz_mm_q4_0_avx512, CALL32_T_Q4_0)
ENTRY(rz_mm_q5_0_avx512, CALL32_T_Q5_0)
ENTRY(rz_mm_q4_1_avx512, CALL32_T_Q4_1)
ENTRY(rz_mm_q4_k_avx512, CALL_Q4K)
ENTRY(rz_mm_q6_k_avx512, CALL_Q6K)
ENTRY(rz_mm_f16_avx512, CALLF_T_F16)
ENTRY(rz_mm_bf16_avx512, CALLF_T_BF16)
ENTRY(rz_mm_f32_avx512, CALLF_T_F32)

#define RZ_LOAD_F16X16(p) ((v16f)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p))))
#define RZ_FMA16(a, b, c) ((v16f)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define RZ_VMAX16(a, b) ((v16f)_mm512_max_ps((__m512)(a), (__m512)(b)))
#define RZ_OPS_SUFFIX avx512
#include "ops_impl.h"

const rz_isa rz_isa_avx512 = {
    "avx512-vnni", RZ_ISA_AVX512,
    attention_avx512, rmsnorm_avx512, swiglu_avx512, quant_avx512,
};
#endif
