/* AVX2 kernels (Haswell and later, with FMA and F16C): a repacked group's 16 rows as two halves of 8 int32
 * lanes. Without VNNI the 4-byte dot products are vpmaddubsw (u8 x s8 -> pairs summed to s16) then
 * vpmaddwd with ones; every weight type keeps its pair sums within int16 (Q8_0 goes through the signed
 * |w| x sign(a, w) form so that 128 x 127 x 2 still fits). Row tiles of up to 4 rows (16 ymm registers).
 * Float steps are kern_ref.c's, in its order: bit-identical results.
 */
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include "kern_simd.h"

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

/* 32 mask bits -> 32 bytes of 0x10 where set */
INLINE __m256i bits_to_0x10(uint32_t m) {
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)m), sel);
    x = _mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit);
    return _mm256_and_si256(x, _mm256_set1_epi8(0x10));
}

/* rows S0..S0+NS-1 (NS <= 4) of a tile of NT rows, one half (8 lanes) of group g */
#define SUB_ARGS const rz_tensor *w, int g, int half, const rz_act *a, int tile, const int NT, const int S0, const int NS, float *out, int ldo
#define ROW0 (a->tile_r0[tile] + S0)

/* ---- the quantized types: one unpacker each, one tile driver -------------------------------------------
 * The unpacker of a type says what the driver needs of a chunk, for one half h of its 16 rows (lanes
 * 8h .. 8h + 7, bytes 32h .. 32h + 31 of each 64-byte vector); the driver walks a chunk in steps of 32
 * columns, each of 2 parts of 16 columns:
 *   steps, groups  32-column steps per chunk; integer scales per step: 0 (the step's integer sum is the
 *                  block's, scaled in floats only), 1 (Q4_K), 2 (Q6_K: one per 16 columns)
 *   sign           the unpacked bytes are signed (Q8_0), so the dot goes through |w| x sign(a, w)
 *   unpack         part p of step s: 4 vectors of 8 rows x 4 columns (columns 32s + 16p + 4t, t = 0..3)
 *   scale          the int32 scale of group gr of step s, per row
 *   step_end       a row's last integer term of a step (Q6_K's -32 offset through the activation sums)
 *   fold           a row's float steps of the block into its accumulator, those of kern_ref.c in its order
 * As in kern_avx512.c, the hooks reach the always-inline driver as a constant struct and are inlined.
 */
typedef struct {
    size_t bytes;
    int act, hsums;      /* RZ_ACT_Q32 or RZ_ACT_Q256; 16 or 32: which pair sums the hooks read */
    int steps, groups, sign;
    void (*unpack)(const uint8_t *c, int h, int s, int p, __m256i v[4]);
    __m256i (*scale)(const uint8_t *c, int h, int s, int gr);
    __m256i (*step_end)(const uint8_t *c, int h, int s, __m256i is, const tile_act *t, int b, int r, int NT);
    __m256 (*fold)(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT);
} unpacker;

/* part p of a nibble span, lanes of half h: the 4 vectors of columns 16p .. 16p + 15 */
INLINE void nib4(const uint8_t *span, int h, int p, __m256i v[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    UNROLL for (int t = 0; t < 4; t++) {
        const int k = 16 * p + 4 * t;
        const __m256i z = _mm256_loadu_si256((const __m256i *)(span + 64 * rz_nib_vec(k) + 32 * h));
        v[t] = rz_nib_shift(k) ? _mm256_and_si256(_mm256_srli_epi16(z, 4), m4) : _mm256_and_si256(z, m4);
    }
}

INLINE __m256i no_scale(const uint8_t *c, int h, int s, int gr) { (void)c, (void)h, (void)s, (void)gr; return _mm256_setzero_si256(); }
INLINE __m256i no_step_end(const uint8_t *c, int h, int s, __m256i is, const tile_act *t, int b, int r, int NT) {
    (void)c, (void)h, (void)s, (void)t, (void)b, (void)r, (void)NT;
    return is;
}

/* 32-column types: acc += (float)(sum - off * sum_a) * (d_w * d_a) [+ m_w * (d_a * sum_a)] */
INLINE __m256 fold32(const uint16_t *d, const uint16_t *m, int off, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    const float da = t->d[b * NT + r];
    if (off) is = _mm256_sub_epi32(is, _mm256_set1_epi32(off * t->s[b * NT + r]));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(load_d16(d), _mm256_set1_ps(da)), acc);
    if (m) acc = _mm256_fmadd_ps(load_d16(m), _mm256_set1_ps(da * (float)t->s[b * NT + r]), acc);
    return acc;
}

/* Q8_0: back to signed q (the |w| x sign(a, w) dot keeps the pair sums within int16) */
INLINE void q8_0_unpack(const uint8_t *c, int h, int s, int p, __m256i v[4]) {
    (void)s;
    UNROLL for (int t = 0; t < 4; t++)
        v[t] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(((const rp_q8_0 *)c)->qs[rz_q8_vec(16 * p + 4 * t)] + 32 * h)),
                                _mm256_set1_epi8((char)0x80));
}
INLINE __m256 q8_0_fold(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    return fold32(((const rp_q8_0 *)c)->d + 8 * h, NULL, 0, is, acc, t, b, r, NT);
}

/* Q4_0: q - 8 */
INLINE void q4_0_unpack(const uint8_t *c, int h, int s, int p, __m256i v[4]) { (void)s; nib4(&((const rp_q4_0 *)c)->qs[0][0], h, p, v); }
INLINE __m256 q4_0_fold(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    return fold32(((const rp_q4_0 *)c)->d + 8 * h, NULL, 8, is, acc, t, b, r, NT);
}

/* Q4_1: d q + m */
INLINE void q4_1_unpack(const uint8_t *c, int h, int s, int p, __m256i v[4]) { (void)s; nib4(&((const rp_q4_1 *)c)->qs[0][0], h, p, v); }
INLINE __m256 q4_1_fold(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    return fold32(((const rp_q4_1 *)c)->d + 8 * h, ((const rp_q4_1 *)c)->m + 8 * h, 0, is, acc, t, b, r, NT);
}

/* Q5_0: the nibbles or 16 where the column's mask bit is set; q - 16 */
INLINE void q5_0_unpack(const uint8_t *c, int h, int s, int p, __m256i v[4]) {
    (void)s;
    const rp_q5_0 *q = (const rp_q5_0 *)c;
    nib4(&q->qs[0][0], h, p, v);
    UNROLL for (int t = 0; t < 4; t++)
        v[t] = _mm256_or_si256(v[t], bits_to_0x10((uint32_t)((&q->qh[0][0])[rz_q5_qh_word(16 * p + 4 * t)] >> (32 * h))));
}
INLINE __m256 q5_0_fold(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    return fold32(((const rp_q5_0 *)c)->d + 8 * h, NULL, 16, is, acc, t, b, r, NT);
}

/* Q4_K: 8 sub-blocks of 32 (one a step) with 6-bit scales and minimums; the minimums at the block's end */
INLINE void q4_k_unpack(const uint8_t *c, int h, int s, int p, __m256i v[4]) {
    nib4(&((const rp_q4_k *)c)->qs[0][0] + rz_q4k_span(s), h, p, v);
}
INLINE __m256i q4_k_scale(const uint8_t *c, int h, int s, int gr) {
    (void)gr;
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(((const rp_q4_k *)c)->sc[s] + 8 * h)));
}
INLINE __m256 q4_k_fold(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    const rp_q4_k *q = (const rp_q4_k *)c;
    __m256i m = _mm256_setzero_si256();
    UNROLL for (int i = 0; i < 4; i++) {  /* minimums of sub-blocks 2i, 2i + 1 against the pair sums */
        const __m256i mp = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(q->m[i][8 * h])));
        m = _mm256_add_epi32(m, _mm256_madd_epi16(mp, _mm256_set1_epi32(act_pair(t, 4 * b + i, r, NT))));
    }
    const __m256 da = _mm256_set1_ps(t->d[b * NT + r]);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(load_d16(q->d + 8 * h), da), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(load_d16(q->dmin + 8 * h), da), acc);
}

/* Q6_K: 16 sub-blocks of 16 (two a step) with int8 scales; 6-bit q unsigned, the -32 through the sums */
INLINE void q6_k_unpack(const uint8_t *c, int h, int s, int p, __m256i v[4]) {
    const rp_q6_k *q = (const rp_q6_k *)c;  /* the layout repeats every 32 columns: step s is 32 s further */
    const __m256i m30 = _mm256_set1_epi8(0x30);
    nib4(&q->ql[0][0] + s * rz_q6k_span(32), h, p, v);
    const __m256i hb = _mm256_loadu_si256((const __m256i *)(q->qh[s * rz_q6k_qh_vec(32) + rz_q6k_qh_vec(16 * p)] + 32 * h));
    UNROLL for (int t = 0; t < 4; t++) {  /* the high bits to bits 4-5 */
        const int sh = rz_q6k_qh_shift(16 * p + 4 * t);
        const __m256i hi = sh < 4 ? _mm256_slli_epi16(hb, 4 - sh) : sh > 4 ? _mm256_srli_epi16(hb, sh - 4) : hb;
        v[t] = _mm256_or_si256(v[t], _mm256_and_si256(hi, m30));
    }
}
INLINE __m256i q6_k_scales(const uint8_t *c, int h, int s) {  /* int16 pairs: sub-blocks 2s, 2s + 1 */
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(((const rp_q6_k *)c)->sc[s * rz_q6k_sc_pair(2)][8 * h])));
}
INLINE __m256i q6_k_scale(const uint8_t *c, int h, int s, int gr) {
    const __m256i scp = q6_k_scales(c, h, s);
    return rz_q6k_sc_slot(gr) ? _mm256_srai_epi32(scp, 16) : _mm256_srai_epi32(_mm256_slli_epi32(scp, 16), 16);
}
/* -32 * (sc_2s * sum16_2s + sc_2s+1 * sum16_2s+1), as int16 pairs: |sc * 32| <= 4096 */
INLINE __m256i q6_k_step_end(const uint8_t *c, int h, int s, __m256i is, const tile_act *t, int b, int r, int NT) {
    const __m256i scn = _mm256_mullo_epi16(q6_k_scales(c, h, s), _mm256_set1_epi16(-32));
    return _mm256_add_epi32(is, _mm256_madd_epi16(scn, _mm256_set1_epi32(act_pair(t, 8 * b + s, r, NT))));
}
INLINE __m256 q6_k_fold(const uint8_t *c, int h, __m256i is, __m256 acc, const tile_act *t, int b, int r, int NT) {
    const __m256 da = _mm256_set1_ps(t->d[b * NT + r]);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(load_d16(((const rp_q6_k *)c)->d + 8 * h), da), acc);
}

#define UNPACKER32(t, sign) {sizeof(rp_##t), RZ_ACT_Q32, 0, 1, 0, sign, t##_unpack, no_scale, no_step_end, t##_fold}
static const unpacker U_Q8_0 = UNPACKER32(q8_0, 1), U_Q4_0 = UNPACKER32(q4_0, 0), U_Q4_1 = UNPACKER32(q4_1, 0),
                      U_Q5_0 = UNPACKER32(q5_0, 0);
static const unpacker U_Q4_K = {sizeof(rp_q4_k), RZ_ACT_Q256, 32, 8, 1, 0, q4_k_unpack, q4_k_scale, no_step_end, q4_k_fold};
static const unpacker U_Q6_K = {sizeof(rp_q6_k), RZ_ACT_Q256, 16, 8, 2, 0, q6_k_unpack, q6_k_scale, q6_k_step_end, q6_k_fold};

/* The tile driver: rows S0 .. S0 + NS - 1 (NS <= 4, with NT, compile-time constants) of a tile of NT rows x
 * half h of group g. Per scale group of a step its weight vectors are unpacked once, then each row takes
 * its dot products in turn (one accumulator chain a row; 16 ymm registers allow no more); types of one
 * step a block fold each row as soon as its sum is complete, which keeps fewer registers live. */
INLINE void drive(const unpacker U, const rz_tensor *w, int g, int h, const rz_act *a, int tile, const int NT, const int S0,
                  const int NS, float *out, int ldo) {
    const int K = w->cols, nb = w->blocks, G = U.groups ? U.groups : 1, VG = 8 / G;  /* vectors a group */
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    const tile_act t = tile_act_of(a, tile, U.act, U.hsums, K, nb);
    __m256 acc[TILE2];
    UNROLL for (int r = 0; r < NS; r++) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *c = wg + b * U.bytes;
        if (tile == 0 && h == 0 && S0 == 0) prefetch_chunk(c, U.bytes);
        __m256i is[TILE2];
        UNROLL for (int r = 0; r < NS; r++) is[r] = _mm256_setzero_si256();
        for (int s = 0; s < U.steps; s++) {
            const int8_t *qs = t.q + (size_t)(b * U.steps + s) * 8 * NT * 4;
            UNROLL for (int gr = 0; gr < G; gr++) {
                const __m256i sc = U.scale(c, h, s, gr);
                __m256i v[8];
                UNROLL for (int p = 0; p < VG / 4; p++) U.unpack(c, h, s, gr * VG / 4 + p, v + 4 * p);
                UNROLL for (int r = 0; r < NS; r++) {
                    const int8_t *qr = qs + (gr * VG * NT + S0 + r) * 4;
                    __m256i sum = _mm256_setzero_si256();
                    UNROLL for (int j = 0; j < VG; j++) {
                        const __m256i x = bcast4(qr + j * NT * 4);
                        sum = U.sign ? dot4(sum, _mm256_abs_epi8(v[j]), _mm256_sign_epi8(x, v[j])) : dot4(sum, v[j], x);
                    }
                    is[r] = U.groups ? _mm256_add_epi32(is[r], _mm256_mullo_epi32(sum, sc)) : sum;
                    if (U.steps == 1 && gr == G - 1)
                        acc[r] = U.fold(c, h, U.step_end(c, h, s, is[r], &t, b, S0 + r, NT), acc[r], &t, b, S0 + r, NT);
                }
            }
            if (U.steps > 1) UNROLL for (int r = 0; r < NS; r++) is[r] = U.step_end(c, h, s, is[r], &t, b, S0 + r, NT);
        }
        if (U.steps > 1) UNROLL for (int r = 0; r < NS; r++) acc[r] = U.fold(c, h, is[r], acc[r], &t, b, S0 + r, NT);
    }
    UNROLL for (int r = 0; r < NS; r++)
        store_cols(w, g, h, out + (size_t)(a->tile_r0[tile] + S0 + r) * ldo + g * RZ_GROUP + 8 * h, acc[r]);
}

/* ---- float weights: 8 columns per register, activations as f32 ---------------------------------------- */
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

/* ---- entry points: one per type; a tile of NT rows as sub-tiles of up to 4 rows, both halves of a group */
#define SUBTILES(FN, NT)                                                                 \
    for (int half = 0; half < 2; half++) {                                               \
        FN(NT, 0, (NT) < 4 ? (NT) : 4);                                                  \
        if ((NT) > 4) FN(NT, 4, (NT) > 4 ? (NT) - 4 : 1);                                \
    }
#define D_Q8_0(NT, S0, NS) drive(U_Q8_0, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_Q4_0(NT, S0, NS) drive(U_Q4_0, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_Q5_0(NT, S0, NS) drive(U_Q5_0, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_Q4_1(NT, S0, NS) drive(U_Q4_1, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_Q4_K(NT, S0, NS) drive(U_Q4_K, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_Q6_K(NT, S0, NS) drive(U_Q6_K, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_F16(NT, S0, NS) tile_float(T_F16, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_BF16(NT, S0, NS) tile_float(T_BF16, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define D_F32(NT, S0, NS) tile_float(T_F32, w, g, half, a, tile, NT, S0, NS, out, ldo)
#define C_Q8_0(NT) SUBTILES(D_Q8_0, NT)
#define C_Q4_0(NT) SUBTILES(D_Q4_0, NT)
#define C_Q5_0(NT) SUBTILES(D_Q5_0, NT)
#define C_Q4_1(NT) SUBTILES(D_Q4_1, NT)
#define C_Q4_K(NT) SUBTILES(D_Q4_K, NT)
#define C_Q6_K(NT) SUBTILES(D_Q6_K, NT)
#define C_F16(NT) SUBTILES(D_F16, NT)
#define C_BF16(NT) SUBTILES(D_BF16, NT)
#define C_F32(NT) SUBTILES(D_F32, NT)

RZ_ENTRY(rz_mm_q8_0_avx2, C_Q8_0)
RZ_ENTRY(rz_mm_q4_0_avx2, C_Q4_0)
RZ_ENTRY(rz_mm_q5_0_avx2, C_Q5_0)
RZ_ENTRY(rz_mm_q4_1_avx2, C_Q4_1)
RZ_ENTRY(rz_mm_q4_k_avx2, C_Q4_K)
RZ_ENTRY(rz_mm_q6_k_avx2, C_Q6_K)
RZ_ENTRY(rz_mm_f16_avx2, C_F16)
RZ_ENTRY(rz_mm_bf16_avx2, C_BF16)
RZ_ENTRY(rz_mm_f32_avx2, C_F32)

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
