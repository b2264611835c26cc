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
#if defined(__x86_64__) || defined(RZ_EMULATE_AVX512)
#ifndef RZ_EMULATE_AVX512  /* set by tests/test_native_emulated.py: scalar stand-ins for the intrinsics */
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c,fma,avx2")
#endif
#include "kern_simd.h"

INLINE __m512i bcast4(const int8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

INLINE __m512 load_d16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

INLINE void store_cols(const rz_tensor *w, int g, float *dst, __m512 v) {
    int rem = w->rows - g * RZ_GROUP;
    if (rem >= RZ_GROUP)
        _mm512_storeu_ps(dst, v);
    else
        _mm512_mask_storeu_ps(dst, (__mmask16)((1u << rem) - 1), v);
}

/* ---- the quantized types: one unpacker each, one tile driver -------------------------------------------
 * An unpacker says what the driver needs of a chunk (one K-block of a 16-row group, layouts in rz.h and
 * layout.h). The driver walks a chunk in steps of 32 columns, each of 2 parts of 16 columns:
 *   steps, groups  32-column steps per chunk; integer scales per step: 0 (the step's integer sum is the
 *                  block's, scaled in floats only), 1 (Q4_K), 2 (Q6_K: one per 16 columns)
 *   unpack         part p of step s: 4 vectors of 16 rows x 4 columns (columns 32s + 16p + 4t, t = 0..3),
 *                  unsigned bytes as vpdpbusd takes them
 *   scale          the int32 scale of group gr of step s, per row
 *   step_end       a row's last integer term of a step (Q6_K's -32 offset through the activation sums)
 *   fold           a row's float steps of the block into its accumulator, those of kern_ref.c in its order
 * The hooks are passed as a constant struct to the always-inline driver, which the compiler specializes for
 * each type and row count (the C11 form of ik_llama.cpp's dequantizer structs and templated driver).
 */
typedef struct {
    size_t bytes;
    int act, hsums;      /* RZ_ACT_Q32 or RZ_ACT_Q256; 16 or 32: which pair sums the hooks read */
    int steps, groups;
    void (*unpack)(const uint8_t *c, int s, int p, __m512i v[4]);
    __m512i (*scale)(const uint8_t *c, int s, int gr);
    __m512i (*step_end)(const uint8_t *c, int s, __m512i is, const tile_act *t, int b, int r, int NR);
    __m512 (*fold)(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR);
} unpacker;

/* part p of a nibble span: the 4 vectors of columns 16p .. 16p + 15 */
INLINE void nib4(const uint8_t *span, int p, __m512i v[4]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    UNROLL for (int t = 0; t < 4; t++) {
        const int k = 16 * p + 4 * t;
        const __m512i z = _mm512_loadu_si512(span + 64 * rz_nib_vec(k));
        v[t] = rz_nib_shift(k) ? _mm512_and_si512(_mm512_srli_epi16(z, 4), m4) : _mm512_and_si512(z, m4);
    }
}

INLINE __m512i no_scale(const uint8_t *c, int s, int gr) { (void)c, (void)s, (void)gr; return _mm512_setzero_si512(); }
INLINE __m512i no_step_end(const uint8_t *c, int s, __m512i is, const tile_act *t, int b, int r, int NR) {
    (void)c, (void)s, (void)t, (void)b, (void)r, (void)NR;
    return is;
}

/* 32-column types: acc += (float)(sum - off * sum_a) * (d_w * d_a) [+ m_w * (d_a * sum_a)] */
INLINE __m512 fold32(const uint16_t *d, const uint16_t *m, int off, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    const float da = t->d[b * NR + r];
    const int32_t sa = t->s[b * NR + r];
    if (off) is = _mm512_sub_epi32(is, _mm512_slli_epi32(_mm512_set1_epi32(sa), __builtin_ctz(off)));  /* off: 8, 16, 128 */
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(load_d16(d), _mm512_set1_ps(da)), acc);
    if (m) acc = _mm512_fmadd_ps(load_d16(m), _mm512_set1_ps(da * (float)sa), acc);
    return acc;
}

/* Q8_0: q + 128 already unsigned */
INLINE void q8_0_unpack(const uint8_t *c, int s, int p, __m512i v[4]) {
    (void)s;
    UNROLL for (int t = 0; t < 4; t++) v[t] = _mm512_loadu_si512(((const rp_q8_0 *)c)->qs[rz_q8_vec(16 * p + 4 * t)]);
}
INLINE __m512 q8_0_fold(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    return fold32(((const rp_q8_0 *)c)->d, NULL, 128, is, acc, t, b, r, NR);
}

/* Q4_0: q - 8 */
INLINE void q4_0_unpack(const uint8_t *c, int s, int p, __m512i v[4]) { (void)s; nib4(&((const rp_q4_0 *)c)->qs[0][0], p, v); }
INLINE __m512 q4_0_fold(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    return fold32(((const rp_q4_0 *)c)->d, NULL, 8, is, acc, t, b, r, NR);
}

/* Q4_1: d q + m */
INLINE void q4_1_unpack(const uint8_t *c, int s, int p, __m512i v[4]) { (void)s; nib4(&((const rp_q4_1 *)c)->qs[0][0], p, v); }
INLINE __m512 q4_1_fold(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    return fold32(((const rp_q4_1 *)c)->d, ((const rp_q4_1 *)c)->m, 0, is, acc, t, b, r, NR);
}

/* Q5_0: the nibbles plus 16 where the column's mask bit is set; q - 16 */
INLINE void q5_0_unpack(const uint8_t *c, int s, int p, __m512i v[4]) {
    (void)s;
    const rp_q5_0 *q = (const rp_q5_0 *)c;
    nib4(&q->qs[0][0], p, v);
    UNROLL for (int t = 0; t < 4; t++)
        v[t] = _mm512_mask_add_epi8(v[t], _cvtu64_mask64((&q->qh[0][0])[rz_q5_qh_word(16 * p + 4 * t)]), v[t], _mm512_set1_epi8(0x10));
}
INLINE __m512 q5_0_fold(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    return fold32(((const rp_q5_0 *)c)->d, NULL, 16, is, acc, t, b, r, NR);
}

/* Q4_K: 8 sub-blocks of 32 (one a step) with 6-bit scales and minimums; the minimums at the block's end */
INLINE void q4_k_unpack(const uint8_t *c, int s, int p, __m512i v[4]) { nib4(&((const rp_q4_k *)c)->qs[0][0] + rz_q4k_span(s), p, v); }
INLINE __m512i q4_k_scale(const uint8_t *c, int s, int gr) {
    (void)gr;
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)((const rp_q4_k *)c)->sc[s]));
}
INLINE __m512 q4_k_fold(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    const rp_q4_k *q = (const rp_q4_k *)c;
    __m512i m = _mm512_setzero_si512();
    UNROLL for (int i = 0; i < 4; i++)  /* minimums of sub-blocks 2i, 2i + 1 against the pair sums */
        m = _mm512_dpwssd_epi32(m, _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)q->m[i])),
                                _mm512_set1_epi32(act_pair(t, 4 * b + i, r, NR)));
    const __m512 da = _mm512_set1_ps(t->d[b * NR + r]);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(load_d16(q->d), da), acc);
    return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(load_d16(q->dmin), da), acc);
}

/* Q6_K: 16 sub-blocks of 16 (two a step) with int8 scales; 6-bit q unsigned, the -32 through the sums */
INLINE void q6_k_unpack(const uint8_t *c, int s, int p, __m512i v[4]) {
    const rp_q6_k *q = (const rp_q6_k *)c;  /* the layout repeats every 32 columns: step s is 32 s further */
    const __m512i m30 = _mm512_set1_epi8(0x30);
    nib4(&q->ql[0][0] + s * rz_q6k_span(32), p, v);
    const __m512i hb = _mm512_loadu_si512(q->qh[s * rz_q6k_qh_vec(32) + rz_q6k_qh_vec(16 * p)]);
    UNROLL for (int t = 0; t < 4; t++) {  /* the high bits to bits 4-5; 0xf8: a | (b & c) */
        const int sh = rz_q6k_qh_shift(16 * p + 4 * t);
        const __m512i h = sh < 4 ? _mm512_slli_epi16(hb, 4 - sh) : sh > 4 ? _mm512_srli_epi16(hb, sh - 4) : hb;
        v[t] = _mm512_ternarylogic_epi32(v[t], h, m30, 0xf8);
    }
}
INLINE __m512i q6_k_scales(const uint8_t *c, int s) {  /* int16 pairs: sub-blocks 2s, 2s + 1 */
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)((const rp_q6_k *)c)->sc[s * rz_q6k_sc_pair(2)]));
}
INLINE __m512i q6_k_scale(const uint8_t *c, int s, int gr) {
    const __m512i scp = q6_k_scales(c, s);
    return rz_q6k_sc_slot(gr) ? _mm512_srai_epi32(scp, 16) : _mm512_srai_epi32(_mm512_slli_epi32(scp, 16), 16);
}
/* -32 * (sc_2s * sum16_2s + sc_2s+1 * sum16_2s+1), as int16 pairs: |sc * 32| <= 4096 */
INLINE __m512i q6_k_step_end(const uint8_t *c, int s, __m512i is, const tile_act *t, int b, int r, int NR) {
    const __m512i scn = _mm512_mullo_epi16(q6_k_scales(c, s), _mm512_set1_epi16(-32));
    return _mm512_dpwssd_epi32(is, scn, _mm512_set1_epi32(act_pair(t, 8 * b + s, r, NR)));
}
INLINE __m512 q6_k_fold(const uint8_t *c, __m512i is, __m512 acc, const tile_act *t, int b, int r, int NR) {
    const __m512 da = _mm512_set1_ps(t->d[b * NR + r]);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(load_d16(((const rp_q6_k *)c)->d), da), acc);
}

#define UNPACKER32(t) {sizeof(rp_##t), RZ_ACT_Q32, 0, 1, 0, t##_unpack, no_scale, no_step_end, t##_fold}
static const unpacker U_Q8_0 = UNPACKER32(q8_0), U_Q4_0 = UNPACKER32(q4_0), U_Q4_1 = UNPACKER32(q4_1),
                      U_Q5_0 = UNPACKER32(q5_0);
static const unpacker U_Q4_K = {sizeof(rp_q4_k), RZ_ACT_Q256, 32, 8, 1, q4_k_unpack, q4_k_scale, no_step_end, q4_k_fold};
static const unpacker U_Q6_K = {sizeof(rp_q6_k), RZ_ACT_Q256, 16, 8, 2, q6_k_unpack, q6_k_scale, q6_k_step_end, q6_k_fold};

/* The tile driver: NR activation rows (a compile-time constant) x the 16 rows of group g. Per step each
 * part's 4 weight vectors are unpacked once and then applied to every row (rows innermost, so the NR
 * accumulator chains interleave; with few rows two chains a row keep the VNNI unit busy). */
INLINE void drive(const unpacker U, const rz_tensor *w, int g, const rz_act *a, int tile, const int NR, float *out, int ldo) {
    const int K = w->cols, nb = w->blocks, r0 = a->tile_r0[tile];
    const uint8_t *wg = w->data + (size_t)g * w->group_bytes;
    const tile_act t = tile_act_of(a, tile, U.act, U.hsums, K, nb);
    const int SPLIT = NR <= 3 ? 2 : 1, G = U.groups ? U.groups : 1;
    __m512 acc[RZ_TILE];
    UNROLL for (int r = 0; r < NR; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *c = wg + b * U.bytes;
        if (tile == 0) prefetch_chunk(c, U.bytes);
        __m512i is[RZ_TILE];
        UNROLL for (int r = 0; r < NR; r++) is[r] = _mm512_setzero_si512();
        const int8_t *qs = t.q + (size_t)b * U.steps * 8 * NR * 4;
        for (int s = 0; s < U.steps; s++, qs += 8 * NR * 4) {
            UNROLL for (int gr = 0; gr < G; gr++) {
                const __m512i sc = U.scale(c, s, gr);
                __m512i p[2][RZ_TILE];
                UNROLL for (int h = 0; h < SPLIT; h++) UNROLL for (int r = 0; r < NR; r++) p[h][r] = _mm512_setzero_si512();
                UNROLL for (int part = gr * 2 / G; part < (gr + 1) * 2 / G; part++) {
                    __m512i v[4];
                    U.unpack(c, s, part, v);
                    UNROLL for (int j = 0; j < 4; j++) UNROLL for (int r = 0; r < NR; r++) {
                        const int h = SPLIT == 2 ? (j & 1) : 0;
                        p[h][r] = _mm512_dpbusd_epi32(p[h][r], v[j], bcast4(qs + ((4 * part + j) * NR + r) * 4));
                    }
                }
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m512i pr = SPLIT == 2 ? _mm512_add_epi32(p[0][r], p[1][r]) : p[0][r];
                    is[r] = U.groups ? _mm512_add_epi32(is[r], _mm512_mullo_epi32(pr, sc)) : pr;
                }
            }
            UNROLL for (int r = 0; r < NR; r++) is[r] = U.step_end(c, s, is[r], &t, b, r, NR);
        }
        UNROLL for (int r = 0; r < NR; r++) acc[r] = U.fold(c, is[r], acc[r], &t, b, r, NR);
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

/* ---- entry points: one per type ------------------------------------------------------------------- */
#define CALLF_T_F16(N) tile_float(T_F16, w, g, a, tile, N, out, ldo)
#define CALLF_T_BF16(N) tile_float(T_BF16, w, g, a, tile, N, out, ldo)
#define CALLF_T_F32(N) tile_float(T_F32, w, g, a, tile, N, out, ldo)
#define CALL_Q8_0(N) drive(U_Q8_0, w, g, a, tile, N, out, ldo)
#define CALL_Q4_0(N) drive(U_Q4_0, w, g, a, tile, N, out, ldo)
#define CALL_Q4_1(N) drive(U_Q4_1, w, g, a, tile, N, out, ldo)
#define CALL_Q5_0(N) drive(U_Q5_0, w, g, a, tile, N, out, ldo)
#define CALL_Q4_K(N) drive(U_Q4_K, w, g, a, tile, N, out, ldo)
#define CALL_Q6_K(N) drive(U_Q6_K, w, g, a, tile, N, out, ldo)

RZ_ENTRY(rz_mm_q8_0_avx512, CALL_Q8_0)
RZ_ENTRY(rz_mm_q4_0_avx512, CALL_Q4_0)
RZ_ENTRY(rz_mm_q5_0_avx512, CALL_Q5_0)
RZ_ENTRY(rz_mm_q4_1_avx512, CALL_Q4_1)
RZ_ENTRY(rz_mm_q4_k_avx512, CALL_Q4_K)
RZ_ENTRY(rz_mm_q6_k_avx512, CALL_Q6_K)
RZ_ENTRY(rz_mm_f16_avx512, CALLF_T_F16)
RZ_ENTRY(rz_mm_bf16_avx512, CALLF_T_BF16)
RZ_ENTRY(rz_mm_f32_avx512, CALLF_T_F32)

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
