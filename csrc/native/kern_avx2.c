/* AVX2 kernels (Haswell and later, with FMA and F16C): a repacked group's 16 rows as two halves of 8 int32
 * lanes. Without VNNI the 4-byte dot products are vpmaddubsw (u8 x s8 -> pairs summed to s16) then
 * vpmaddwd with ones; every weight type keeps its pair sums within int16 (Q8_0 goes through the signed
 * |w| x sign(a, w) form so that 128 x 127 x 2 still fits). Row tiles of up to 4 rows (16 ymm registers).
 * Float steps are kern_ref.c's, in its order: bit-identical results.
 */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "rz.h"

#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")
#define TILE2 4

INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

INLINE __m256 load_d16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* sum of u8 x s8 over each lane's 4 bytes (pair sums stay within int16 for u8 <= 127) */
INLINE __m256i dot4(__m256i s, __m256i u, __m256i q) {
    return _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1)));
}

INLINE void store_cols(const rz_tensor *w, int g, int half, float *dst, __m256 v) {
    int rem = w->rows - g * RZ_GROUP - 8 * half;
    if (rem >= 8) {
        _mm256_storeu_ps(dst, v);
    } else if (rem > 0) {
        float tmp[8];
        _mm256_storeu_ps(tmp, v);
        for (int i = 0; i < rem; i++) dst[i] = tmp[i];
    }
}

/* half of a nibble span (lanes 8h..8h+7) -> 8 vectors of 8 rows x 4 columns */
INLINE void unpack_nib(const uint8_t *span, int half, __m256i v[8]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    UNROLL for (int j = 0; j < 4; j++) {
        __m256i z = _mm256_loadu_si256((const __m256i *)(span + 64 * j + 32 * half));
        v[2 * j] = _mm256_and_si256(z, m4);
        v[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(z, 4), m4);
    }
}

/* 32 mask bits -> 32 bytes of 0x10 where set */
INLINE __m256i bits_to_0x10(uint32_t m) {
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), sel);
    x = _mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit);
    return _mm256_and_si256(x, _mm256_set1_epi8(0x10));
}

enum { T_Q8_0, T_Q4_0, T_Q5_0, T_Q4_1 };

/* rows S0..S0+NS-1 (NS <= 4) of a tile of NT rows, one half (8 lanes) of group g */
#define SUB_ARGS const rz_tensor *w, int g, int half, const rz_act *a, int tile, const int NT, const int S0, const int NS, float *out, int ldo
#define ROW0 (a->tile_r0[tile] + S0)

INLINE void tile32(const int T, SUB_ARGS) {
    const int K = w->cols, nb = w->blocks, r0 = a->tile_r0[tile];
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    const int8_t *qt = a->q32 + (size_t)r0 * K;
    const float *dt = a->d32 + (size_t)r0 * nb;
    const int32_t *st = a->s32 + (size_t)r0 * nb;
    __m256 acc[TILE2];
    UNROLL for (int r = 0; r < NS; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *chunk = wg + b * w->chunk_bytes;
        __m256i v[8];
        __m256 dw, mw = _mm256_setzero_ps();
        int off = 0;
        if (T == T_Q8_0) {
            const rp_q8_0 *c = (const rp_q8_0 *)chunk;
            UNROLL for (int j = 0; j < 8; j++)  /* back to signed q */
                v[j] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(c->qs[j] + 32 * half)), _mm256_set1_epi8((char)0x80));
            dw = load_d16(c->d + 8 * half);
        } else if (T == T_Q4_0) {
            const rp_q4_0 *c = (const rp_q4_0 *)chunk;
            unpack_nib(&c->qs[0][0], half, v);
            dw = load_d16(c->d + 8 * half);
            off = 8;
        } else if (T == T_Q5_0) {
            const rp_q5_0 *c = (const rp_q5_0 *)chunk;
            unpack_nib(&c->qs[0][0], half, v);
            UNROLL for (int j = 0; j < 4; j++) {
                v[2 * j] = _mm256_or_si256(v[2 * j], bits_to_0x10((uint32_t)(c->qh[j][0] >> (32 * half))));
                v[2 * j + 1] = _mm256_or_si256(v[2 * j + 1], bits_to_0x10((uint32_t)(c->qh[j][1] >> (32 * half))));
            }
            dw = load_d16(c->d + 8 * half);
            off = 16;
        } else {
            const rp_q4_1 *c = (const rp_q4_1 *)chunk;
            unpack_nib(&c->qs[0][0], half, v);
            dw = load_d16(c->d + 8 * half);
            mw = load_d16(c->m + 8 * half);
        }
        const int8_t *qb = qt + (size_t)b * 8 * NT * 4;
        UNROLL for (int r = 0; r < NS; r++) {
            const int rt = S0 + r;  /* row within the tile */
            __m256i s = _mm256_setzero_si256();
            if (T == T_Q8_0) {
                UNROLL for (int j = 0; j < 8; j++)
                    s = dot4(s, _mm256_abs_epi8(v[j]), _mm256_sign_epi8(bcast4(qb + (j * NT + rt) * 4), v[j]));
            } else {
                UNROLL for (int j = 0; j < 8; j++) s = dot4(s, v[j], bcast4(qb + (j * NT + rt) * 4));
                if (off) s = _mm256_sub_epi32(s, _mm256_set1_epi32(off * st[b * NT + rt]));
            }
            const float da = dt[b * NT + rt];
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(da)), acc[r]);
            if (T == T_Q4_1) acc[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(da * (float)st[b * NT + rt]), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NS; r++)
        store_cols(w, g, half, out + (size_t)(ROW0 + r) * ldo + g * RZ_GROUP + 8 * half, acc[r]);
}

INLINE void tile_q4_k(SUB_ARGS) {
    const int K = w->cols, nb = w->blocks, r0 = a->tile_r0[tile];
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    const int8_t *qt = a->q256 + (size_t)r0 * K;
    const float *dt = a->d256 + (size_t)r0 * nb;
    const int16_t *ht = a->h32 + (size_t)r0 * (K / 32);
    __m256 acc[TILE2];
    UNROLL for (int r = 0; r < NS; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const rp_q4_k *c = (const rp_q4_k *)(wg + b * sizeof(rp_q4_k));
        __m256i is[TILE2];
        UNROLL for (int r = 0; r < NS; r++) is[r] = _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            __m256i v[8];
            unpack_nib(&c->qs[4 * j][0], half, v);
            const __m256i sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c->sc[j] + 8 * half)));
            const int8_t *qb = qt + (size_t)(64 * b + 8 * j) * NT * 4;
            UNROLL for (int r = 0; r < NS; r++) {
                __m256i p = _mm256_setzero_si256();
                UNROLL for (int t = 0; t < 8; t++) p = dot4(p, v[t], bcast4(qb + (t * NT + S0 + r) * 4));
                is[r] = _mm256_add_epi32(is[r], _mm256_mullo_epi32(p, sc));
            }
        }
        const __m256 dw = load_d16(c->d + 8 * half), dmw = load_d16(c->dmin + 8 * half);
        UNROLL for (int r = 0; r < NS; r++) {
            __m256i m = _mm256_setzero_si256();
            UNROLL for (int i = 0; i < 4; i++) {
                int32_t pair;
                __builtin_memcpy(&pair, ht + ((size_t)(4 * b + i) * NT + S0 + r) * 2, 4);
                const __m256i mp = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(c->m[i][8 * half])));
                m = _mm256_add_epi32(m, _mm256_madd_epi16(mp, _mm256_set1_epi32(pair)));
            }
            const __m256 da = _mm256_set1_ps(dt[b * NT + S0 + r]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[r]), _mm256_mul_ps(dw, da), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(dmw, da), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NS; r++)
        store_cols(w, g, half, out + (size_t)(ROW0 + r) * ldo + g * RZ_GROUP + 8 * half, acc[r]);
}

INLINE void tile_q6_k(SUB_ARGS) {
    const int K = w->cols, nb = w->blocks, r0 = a->tile_r0[tile];
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    const int8_t *qt = a->q256 + (size_t)r0 * K;
    const float *dt = a->d256 + (size_t)r0 * nb;
    const int16_t *ht = a->h16 + (size_t)r0 * (K / 16);
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[TILE2];
    UNROLL for (int r = 0; r < NS; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const rp_q6_k *c = (const rp_q6_k *)(wg + b * sizeof(rp_q6_k));
        __m256i is[TILE2];
        UNROLL for (int r = 0; r < NS; r++) is[r] = _mm256_setzero_si256();
        for (int i = 0; i < 8; i++) {
            const __m256i scp = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c->sc[i][8 * half])));
            UNROLL for (int hh = 0; hh < 2; hh++) {
                const int j = 2 * i + hh;
                const __m256i scj = hh ? _mm256_srai_epi32(scp, 16) : _mm256_srai_epi32(_mm256_slli_epi32(scp, 16), 16);
                const __m256i z0 = _mm256_loadu_si256((const __m256i *)(c->ql[2 * j] + 32 * half));
                const __m256i z1 = _mm256_loadu_si256((const __m256i *)(c->ql[2 * j + 1] + 32 * half));
                const __m256i h = _mm256_loadu_si256((const __m256i *)(c->qh[j] + 32 * half));
                __m256i u[4];
                u[0] = _mm256_or_si256(_mm256_and_si256(z0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
                u[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(z0, 4), m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
                u[2] = _mm256_or_si256(_mm256_and_si256(z1, m4), _mm256_and_si256(h, m30));
                u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(z1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
                const int8_t *qb = qt + (size_t)(64 * b + 4 * j) * NT * 4;
                UNROLL for (int r = 0; r < NS; r++) {
                    __m256i p = _mm256_setzero_si256();
                    UNROLL for (int t = 0; t < 4; t++) p = dot4(p, u[t], bcast4(qb + (t * NT + S0 + r) * 4));
                    is[r] = _mm256_add_epi32(is[r], _mm256_mullo_epi32(p, scj));
                }
            }
            const __m256i scn = _mm256_mullo_epi16(scp, _mm256_set1_epi16(-32));
            UNROLL for (int r = 0; r < NS; r++) {
                int32_t pair;
                __builtin_memcpy(&pair, ht + ((size_t)(8 * b + i) * NT + S0 + r) * 2, 4);
                is[r] = _mm256_add_epi32(is[r], _mm256_madd_epi16(scn, _mm256_set1_epi32(pair)));
            }
        }
        const __m256 dw = load_d16(c->d + 8 * half);
        UNROLL for (int r = 0; r < NS; r++) {
            const __m256 da = _mm256_set1_ps(dt[b * NT + S0 + r]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is[r]), _mm256_mul_ps(dw, da), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NS; r++)
        store_cols(w, g, half, out + (size_t)(ROW0 + r) * ldo + g * RZ_GROUP + 8 * half, acc[r]);
}

enum { T_F16, T_BF16, T_F32 };

INLINE void tile_float(const int T, SUB_ARGS) {
    const int K = w->cols, nb = w->blocks;
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    __m256 acc[TILE2];
    UNROLL for (int r = 0; r < NS; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *chunk = wg + b * w->chunk_bytes;
        for (int k = 0; k < 32; k++) {
            __m256 wv;
            if (T == T_F32) {
                wv = _mm256_loadu_ps(((const rp_f32 *)chunk)->w[k] + 8 * half);
            } else {
                const __m128i h = _mm_loadu_si128((const __m128i *)(((const rp_f16 *)chunk)->w[k] + 8 * half));
                wv = T == T_F16 ? _mm256_cvtph_ps(h)
                                : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
            }
            UNROLL for (int r = 0; r < NS; r++)
                acc[r] = _mm256_fmadd_ps(wv, _mm256_set1_ps(a->x[(size_t)(ROW0 + r) * K + 32 * b + k]), acc[r]);
        }
    }
    UNROLL for (int r = 0; r < NS; r++)
        store_cols(w, g, half, out + (size_t)(ROW0 + r) * ldo + g * RZ_GROUP + 8 * half, acc[r]);
}

/* a tile of NT rows: sub-tiles of up to 4 rows, both halves of each group */
#define TILE_NT(FN, NT)                                                                  \
    do {                                                                                 \
        FN(NT, 0, (NT) < 4 ? (NT) : 4);                                                  \
        if ((NT) > 4) FN(NT, 4, (NT) > 4 ? (NT) - 4 : 1);                                \
    } while (0)

#define DISPATCH(FN)                                                                     \
    for (int g = g0; g < g1; g++)                                                        \
        for (int half = 0; half < 2; half++) switch (a->tile_nr[tile]) {                 \
            case 1: TILE_NT(FN, 1); break;                                               \
            case 2: TILE_NT(FN, 2); break;                                               \
            case 3: TILE_NT(FN, 3); break;                                               \
            case 4: TILE_NT(FN, 4); break;                                               \
            case 5: TILE_NT(FN, 5); break;                                               \
            case 6: TILE_NT(FN, 6); break;                                               \
            case 7: TILE_NT(FN, 7); break;                                               \
            default: TILE_NT(FN, 8); break;                                              \
            }

#define C_Q8_0(NT, S0, NS) tile32(T_Q8_0, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_Q4_0(NT, S0, NS) tile32(T_Q4_0, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_Q5_0(NT, S0, NS) tile32(T_Q5_0, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_Q4_1(NT, S0, NS) tile32(T_Q4_1, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_Q4K(NT, S0, NS) tile_q4_k(w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_Q6K(NT, S0, NS) tile_q6_k(w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_F16(NT, S0, NS) tile_float(T_F16, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_BF16(NT, S0, NS) tile_float(T_BF16, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_F32(NT, S0, NS) tile_float(T_F32, w, g, half, a, tile, NT, S0, NS, out, ldo)

#define ENTRY(NAME, CALL) \
    void NAME(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) { DISPATCH(CALL) }
ENTRY(rz_mm_q8_0_avx2, C_Q8_0)
ENTRY(rz_mm_q4_0_avx2, C_Q4_0)
ENTRY(rz_mm_q5_0_avx2, C_Q5_0)
ENTRY(rz_mm_q4_1_avx2, C_Q4_1)
ENTRY(rz_mm_q4_k_avx2, C_Q4K)
ENTRY(rz_mm_q6_k_avx2, C_Q6K)
ENTRY(rz_mm_f16_avx2, C_F16)
ENTRY(rz_mm_bf16_avx2, C_BF16)
ENTRY(rz_mm_f32_avx2, C_F32)

#define RZ_LOAD_F16X16(p)                                                                          \
    ({                                                                                             \
        v16f r_;                                                                                   \
        __m256 lo_ = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)));                       \
        __m256 hi_ = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((p) + 8)));                 \
        __builtin_memcpy(&r_, &lo_, 32);                                                           \
        __builtin_memcpy((char *)&r_ + 32, &hi_, 32);                                              \
        r_;                                                                                        \
    })
#define RZ_FMA16(a, b, c)                                                                          \
    ({                                                                                             \
        v16f a_ = (a), b_ = (b), c_ = (c), r_;                                                     \
        __m256 x0, x1, y0, y1, z0, z1;                                                             \
        __builtin_memcpy(&x0, &a_, 32); __builtin_memcpy(&x1, (char *)&a_ + 32, 32);               \
        __builtin_memcpy(&y0, &b_, 32); __builtin_memcpy(&y1, (char *)&b_ + 32, 32);               \
        __builtin_memcpy(&z0, &c_, 32); __builtin_memcpy(&z1, (char *)&c_ + 32, 32);               \
        z0 = _mm256_fmadd_ps(x0, y0, z0); z1 = _mm256_fmadd_ps(x1, y1, z1);                        \
        __builtin_memcpy(&r_, &z0, 32); __builtin_memcpy((char *)&r_ + 32, &z1, 32);               \
        r_;                                                                                        \
    })
#define RZ_VMAX16(a, b)                                                                            \
    ({                                                                                             \
        v16f a_ = (a), b_ = (b), r_;                                                               \
        __m256 x0, x1, y0, y1;                                                                     \
        __builtin_memcpy(&x0, &a_, 32); __builtin_memcpy(&x1, (char *)&a_ + 32, 32);               \
        __builtin_memcpy(&y0, &b_, 32); __builtin_memcpy(&y1, (char *)&b_ + 32, 32);               \
        x0 = _mm256_max_ps(x0, y0); x1 = _mm256_max_ps(x1, y1);                                    \
        __builtin_memcpy(&r_, &x0, 32); __builtin_memcpy((char *)&r_ + 32, &x1, 32);               \
        r_;                                                                                        \
    })
#define RZ_OPS_SUFFIX avx2
#include "ops_impl.h"

const rz_isa rz_isa_avx2 = {
    "avx2", RZ_ISA_AVX2,
    attention_avx2, rmsnorm_avx2, swiglu_avx2, quant_avx2,
};
#endif
