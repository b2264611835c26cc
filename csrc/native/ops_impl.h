/* The transformer's non-matmul pieces, written once with GCC vector extensions and included by each
 * instruction set's file (kern_ref.c, kern_avx2.c, kern_avx512.c) with RZ_OPS_SUFFIX set.
 *
 * Every lane operation is one IEEE operation (the files build with -ffp-contract=off, so nothing fuses),
 * reductions run in one fixed order, and f16 <-> f32 conversion is exact, so the three compilations give
 * bit-identical results; and each query row is computed alone, so a row's result does not depend on how
 * many rows share the forward. Dimensions (head_dim, model width) must be multiples of 16.
 */
#include <math.h>
#include <string.h>

#define RZ_CAT2(a, b) a##_##b
#define RZ_CAT(a, b) RZ_CAT2(a, b)
#define RZ_FN(name) RZ_CAT(name, RZ_OPS_SUFFIX)

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#ifndef RZ_LOAD_F16X16
static inline v16f RZ_FN(load_f16x16)(const uint16_t *p) {
    v16f r;
    for (int i = 0; i < 16; i++) r[i] = rz_f16_to_f32(p[i]);
    return r;
}
#define RZ_LOAD_F16X16 RZ_FN(load_f16x16)
#endif

static inline v16f RZ_FN(loadu)(const float *p) {
    v16f r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline void RZ_FN(storeu)(float *p, v16f v) { memcpy(p, &v, sizeof v); }

static inline v16f RZ_FN(splat)(float x) {
    v16f r = {x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
    return r;
}

/* lanes summed as ((0+8)+(4+12)) + ((2+10)+(6+14)) + ...: one fixed tree */
static inline float RZ_FN(hsum)(v16f v) {
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) s8[i] = v[i] + v[i + 8];
    for (int i = 0; i < 4; i++) s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++) s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}

/* lane-wise m ? a : b for a comparison mask m */
static inline v16f RZ_FN(vsel)(v16i m, v16f a, v16f b) {
    v16i ai, bi;
    memcpy(&ai, &a, sizeof ai);
    memcpy(&bi, &b, sizeof bi);
    v16i r = (m & ai) | (~m & bi);
    v16f out;
    memcpy(&out, &r, sizeof out);
    return out;
}

static inline float RZ_FN(hmax)(v16f v) {
    float m = v[0];
    for (int i = 1; i < 16; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* |x| lane-wise (clear the sign bit) */
static inline v16f RZ_FN(vabs)(v16f x) {
    v16i b;
    memcpy(&b, &x, sizeof b);
    b &= 0x7fffffff;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* Quantize blocks [b0, b1) (of B = 32 or 256 columns) of activation row r into a's tile layout (rz.h):
 * d = max|x| / 127, q = round-to-nearest-even(x * (127 / max|x|)), and the block sums. The max is exact
 * in any order and every other step is lane-wise, so each instruction set writes the same bytes. */
static void RZ_FN(quant)(rz_act *a, int B, int r, int b0, int b1) {
    typedef int8_t v16c __attribute__((vector_size(16)));
    const int K = a->K, nb = K / B, t = rz_act_tile(a, r), r0 = a->tile_r0[t], nr = a->tile_nr[t];
    const float *x = a->x + (size_t)r * K;
    int8_t *qt = (B == 32 ? a->q32 : a->q256) + (size_t)r0 * K + (size_t)(r - r0) * 4;
    float *d = B == 32 ? a->d32 : a->d256;
    const v16f magic = RZ_FN(splat)(12582912.0f), hi = RZ_FN(splat)(127.0f), lo = RZ_FN(splat)(-127.0f);
    for (int b = b0; b < b1; b++) {
        const float *xb = x + (size_t)b * B;
        v16f m = RZ_FN(splat)(0.0f);
        for (int i = 0; i < B; i += 16) {
            v16f v = RZ_FN(vabs)(RZ_FN(loadu)(xb + i));
            m = RZ_FN(vsel)(v > m, v, m);
        }
        const float amax = RZ_FN(hmax)(m);
        const v16f id = RZ_FN(splat)(amax == 0.0f ? 0.0f : 127.0f / amax);
        int32_t sum16[16];
        for (int i = 0; i < B; i += 16) {
            /* |x * id| <= 127 (+ rounding): adding 1.5 * 2^23 rounds to nearest even in the default mode */
            v16f y = (RZ_FN(loadu)(xb + i) * id + magic) - magic;
            y = RZ_FN(vsel)(y > hi, hi, y);
            y = RZ_FN(vsel)(y < lo, lo, y);
            const v16i qi = __builtin_convertvector(y, v16i);
            const v16c qc = __builtin_convertvector(qi, v16c);
            int s = 0;
            for (int l = 0; l < 16; l++) s += qi[l];
            sum16[i / 16] = s;
            const int k = b * B + i;
            for (int g = 0; g < 4; g++) memcpy(qt + (size_t)((k >> 2) + g) * nr * 4, (const int8_t *)&qc + 4 * g, 4);
        }
        d[(size_t)r0 * nb + (size_t)b * nr + (r - r0)] = amax / 127.0f;
        if (B == 32) {
            a->s32[(size_t)r0 * nb + (size_t)b * nr + (r - r0)] = sum16[0] + sum16[1];
        } else {
            for (int j = 0; j < 16; j++) a->h16[rz_act_pi(a, r, 16 * b + j, K / 16)] = (int16_t)sum16[j];
            for (int j = 0; j < 8; j++)
                a->h32[rz_act_pi(a, r, 8 * b + j, K / 32)] = (int16_t)(sum16[2 * j] + sum16[2 * j + 1]);
        }
    }
}

/* e^x, Cephes' expf polynomial with range reduction; about 1 ulp; x clamped to [-87.3, 88.7] */
static inline v16f RZ_FN(vexp)(v16f x) {
    const v16f hi = RZ_FN(splat)(88.72283f), lo = RZ_FN(splat)(-87.33654f);
    x = RZ_FN(vsel)(x > hi, hi, x);
    x = RZ_FN(vsel)(x < lo, lo, x);
    const v16f magic = RZ_FN(splat)(12582912.0f);  /* 1.5 * 2^23: adding it rounds to an integer */
    v16f n = (x * RZ_FN(splat)(1.44269504088896341f) + magic) - magic;
    v16f r = x - n * RZ_FN(splat)(0.693359375f);
    r = r - n * RZ_FN(splat)(-2.12194440e-4f);
    v16f p = RZ_FN(splat)(1.9875691500e-4f);
    p = p * r + RZ_FN(splat)(1.3981999507e-3f);
    p = p * r + RZ_FN(splat)(8.3334519073e-3f);
    p = p * r + RZ_FN(splat)(4.1665795894e-2f);
    p = p * r + RZ_FN(splat)(1.6666665459e-1f);
    p = p * r + RZ_FN(splat)(5.0000001201e-1f);
    v16f e = p * (r * r) + r + RZ_FN(splat)(1.0f);
    v16i ni = __builtin_convertvector(n, v16i);
    v16i bits;
    memcpy(&bits, &e, sizeof bits);
    bits += ni << 23;
    memcpy(&e, &bits, sizeof e);
    return e;
}

static void RZ_FN(rmsnorm)(const float *x, const float *w, float eps, int dim, float *out) {
    v16f ss = RZ_FN(splat)(0.0f);
    for (int i = 0; i < dim; i += 16) {
        v16f v = RZ_FN(loadu)(x + i);
        ss = ss + v * v;
    }
    float mean = RZ_FN(hsum)(ss) / (float)dim;
    v16f inv = RZ_FN(splat)(1.0f / sqrtf(mean + eps));
    for (int i = 0; i < dim; i += 16) RZ_FN(storeu)(out + i, (RZ_FN(loadu)(x + i) * inv) * RZ_FN(loadu)(w + i));
}

/* out = silu(g) * u = g / (1 + e^-g) * u */
static void RZ_FN(swiglu)(const float *g, const float *u, int n, float *out) {
    const v16f one = RZ_FN(splat)(1.0f);
    for (int i = 0; i < n; i += 16) {
        v16f gv = RZ_FN(loadu)(g + i);
        v16f s = gv / (one + RZ_FN(vexp)(-gv));
        RZ_FN(storeu)(out + i, s * RZ_FN(loadu)(u + i));
    }
}

/* One query row (`row`, at position pos0 + row) of every query head that reads kv head `hk`: softmax over
 * keys 0..pos0+row of q.k * scale, then the weighted sum of the values. Keys are stored transposed
 * ([head][d][position]): 16 scores are one vector accumulated over d = 0, 1, ...; each output lane is one
 * value dimension accumulated over positions 0, 1, ...; 4 accumulators run side by side (4 x 16 positions,
 * or 4 x 16 dimensions), a tail one by one, each lane's sequence of operations the same either way.
 * The max, the exponentials and their sum run over positions in order.
 * scratch: group x (T rounded up to 64) floats. */
static void RZ_FN(attention)(const rz_attn *a, int hk, int row, float *scratch) {
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv, T = a->pos0 + row + 1;
    const int kv_stride = a->n_head_kv * hd, T16 = (T + 15) & ~15, TS = (T + 63) & ~63;
    const size_t ks = (size_t)a->kt_stride;
    const float *q0 = a->q + (size_t)row * a->q_stride + (size_t)hk * group * hd;
    float *o0 = a->out + (size_t)row * a->q_stride + (size_t)hk * group * hd;
    const uint16_t *kh = a->k + (size_t)hk * hd * ks;
    const uint16_t *vh = a->v + (size_t)hk * hd;
    const v16f zero = RZ_FN(splat)(0.0f), sc = RZ_FN(splat)(a->scale);
    for (int h = 0; h < group; h++) {
        const float *q = q0 + h * hd;
        float *sh = scratch + (size_t)h * TS;
        int t = 0;
        for (; t + 64 <= T16; t += 64) {
            v16f c0 = zero, c1 = zero, c2 = zero, c3 = zero;
            for (int d = 0; d < hd; d++) {
                const uint16_t *kr = kh + (size_t)d * ks + t;
                const v16f qd = RZ_FN(splat)(q[d]);
                c0 = c0 + qd * RZ_LOAD_F16X16(kr);
                c1 = c1 + qd * RZ_LOAD_F16X16(kr + 16);
                c2 = c2 + qd * RZ_LOAD_F16X16(kr + 32);
                c3 = c3 + qd * RZ_LOAD_F16X16(kr + 48);
            }
            RZ_FN(storeu)(sh + t, c0 * sc);
            RZ_FN(storeu)(sh + t + 16, c1 * sc);
            RZ_FN(storeu)(sh + t + 32, c2 * sc);
            RZ_FN(storeu)(sh + t + 48, c3 * sc);
        }
        for (; t < T16; t += 16) {
            v16f c0 = zero;
            for (int d = 0; d < hd; d++) c0 = c0 + RZ_FN(splat)(q[d]) * RZ_LOAD_F16X16(kh + (size_t)d * ks + t);
            RZ_FN(storeu)(sh + t, c0 * sc);
        }
        float m = sh[0];
        for (t = 1; t < T; t++) m = sh[t] > m ? sh[t] : m;
        const v16f mv = RZ_FN(splat)(m);
        for (t = 0; t < T16; t += 16) RZ_FN(storeu)(sh + t, RZ_FN(vexp)(RZ_FN(loadu)(sh + t) - mv));
        float sum = 0.0f;
        for (t = 0; t < T; t++) sum += sh[t];
        const float inv = 1.0f / sum;
        for (t = 0; t < T; t++) sh[t] *= inv;
        float *o = o0 + h * hd;
        int d = 0;
        for (; d + 64 <= hd; d += 64) {
            v16f c0 = zero, c1 = zero, c2 = zero, c3 = zero;
            for (t = 0; t < T; t++) {
                const uint16_t *vr = vh + (size_t)t * kv_stride + d;
                const v16f p = RZ_FN(splat)(sh[t]);
                c0 = c0 + p * RZ_LOAD_F16X16(vr);
                c1 = c1 + p * RZ_LOAD_F16X16(vr + 16);
                c2 = c2 + p * RZ_LOAD_F16X16(vr + 32);
                c3 = c3 + p * RZ_LOAD_F16X16(vr + 48);
            }
            RZ_FN(storeu)(o + d, c0);
            RZ_FN(storeu)(o + d + 16, c1);
            RZ_FN(storeu)(o + d + 32, c2);
            RZ_FN(storeu)(o + d + 48, c3);
        }
        for (; d < hd; d += 16) {
            v16f c0 = zero;
            for (t = 0; t < T; t++) c0 = c0 + RZ_FN(splat)(sh[t]) * RZ_LOAD_F16X16(vh + (size_t)t * kv_stride + d);
            RZ_FN(storeu)(o + d, c0);
        }
    }
}
