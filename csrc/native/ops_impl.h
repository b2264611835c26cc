/* The transformer's non-matmul pieces, written once with GCC vector extensions and included by each
 * instruction set's file (kern_ref.c, kern_avx2.c, kern_avx512.c) with RZ_OPS_SUFFIX set.
 *
 * Every lane operation is one IEEE operation (the files build with -ffp-contract=off, so nothing fuses
 * unless written as RZ_FMA16, which is a single-rounding fused multiply-add on every instruction set),
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

/* a * b + c with one rounding: the FMA instruction where the ISA has one (RZ_FMA16), else fmaf per lane
 * (libm's correctly rounded fused multiply-add): the same bits either way */
#ifndef RZ_FMA16
static inline v16f RZ_FN(fma)(v16f a, v16f b, v16f c) {
    v16f r;
    for (int i = 0; i < 16; i++) r[i] = fmaf(a[i], b[i], c[i]);
    return r;
}
#define RZ_FMA16 RZ_FN(fma)
#endif

/* lane-wise max (no NaN reaches it): vmaxps where the ISA has it (RZ_VMAX16), else compare and select */
#ifndef RZ_VMAX16
static inline v16f RZ_FN(vmax)(v16f a, v16f b) {
    v16f r;
    for (int i = 0; i < 16; i++) r[i] = a[i] > b[i] ? a[i] : b[i];
    return r;
}
#define RZ_VMAX16 RZ_FN(vmax)
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

/* the largest lane (exact in any order): a tree of lane-wise maxima */
static inline float RZ_FN(hmax)(v16f v) {
    typedef float v8f __attribute__((vector_size(32)));
    typedef float v4f __attribute__((vector_size(16)));
    v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v8f m8 = a;
    for (int i = 0; i < 8; i++) m8[i] = b[i] > a[i] ? b[i] : a[i];
    v4f c = __builtin_shufflevector(m8, m8, 0, 1, 2, 3), d = __builtin_shufflevector(m8, m8, 4, 5, 6, 7);
    float m = c[0] > d[0] ? c[0] : d[0];
    for (int i = 1; i < 4; i++) {
        float e = c[i] > d[i] ? c[i] : d[i];
        m = e > m ? e : m;
    }
    return m;
}

/* sum of the 16 int32 lanes (exact in any order) */
static inline int32_t RZ_FN(hsum_i)(v16i v) {
    typedef int32_t v8i __attribute__((vector_size(32)));
    typedef int32_t v4i __attribute__((vector_size(16)));
    v8i a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4i b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return b[0] + b[1] + b[2] + b[3];
}

/* |x| lane-wise (clear the sign bit) */
static inline v16f RZ_FN(vabs)(v16f x) {
    v16i b;
    memcpy(&b, &x, sizeof b);
    b &= 0x7fffffff;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* lane m of the result = the sum of v[m]'s 16 lanes, for m < 16: a transposing tree of lane shuffles and
 * additions (exact: integers): 30 shuffles for 16 sums, where a horizontal sum each took 8 steps and a
 * round trip through memory (the B = 256 quantization ran 23% faster for it, 2026-12-07) */
static inline v16i RZ_FN(sum16x16)(const v16i v[16]) {
    v16i x[8], y[4], z[2];
    for (int j = 0; j < 8; j++)
        x[j] = __builtin_shufflevector(v[2 * j], v[2 * j + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               __builtin_shufflevector(v[2 * j], v[2 * j + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; i++)
        y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               __builtin_shufflevector(x[2 * i], x[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int h = 0; h < 2; h++)
        z[h] = __builtin_shufflevector(y[2 * h], y[2 * h + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
               __builtin_shufflevector(y[2 * h], y[2 * h + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return __builtin_shufflevector(z[0], z[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           __builtin_shufflevector(z[0], z[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* Quantize blocks [b0, b1) (of B = 32 or 256 columns) of activation row r into a's tile layout (rz.h):
 * d = max|x| / 127, q = round-to-nearest-even(x * (127 / max|x|)), and the block sums. The max is exact
 * in any order, the sums are integers and every other step is lane-wise, so each instruction set writes the
 * same bytes. */
static void RZ_FN(quant)(rz_act *a, int B, int r, int b0, int b1) {
    typedef int8_t v16c __attribute__((vector_size(16)));
    typedef int32_t v4i __attribute__((vector_size(16)));
    const int K = a->K, nb = K / B, t = rz_act_tile(a, r), r0 = a->tile_r0[t], nr = a->tile_nr[t], lr = r - r0;
    const float *x = a->x + (size_t)r * K;
    int8_t *qt = (B == 32 ? a->q32 : a->q256) + (size_t)r0 * K + (size_t)lr * 4;
    float *d = (B == 32 ? a->d32 : a->d256) + (size_t)r0 * nb + lr;        /* block b at d[b * nr] */
    int32_t *s32 = a->s32 + (size_t)r0 * nb + lr;
    int16_t *h16 = a->h16 + (size_t)r0 * (K / 16) + (size_t)lr * 2;        /* sub-block j: (j / 2) * 2nr + j % 2 */
    int16_t *h32 = a->h32 + (size_t)r0 * (K / 32) + (size_t)lr * 2;
    const v16f magic = RZ_FN(splat)(12582912.0f), hi = RZ_FN(splat)(127.0f), lo = RZ_FN(splat)(-127.0f);
    const size_t step = (size_t)nr * 4;  /* bytes between 4-column groups of this row */
    for (int b = b0; b < b1; b++) {
        const float *xb = x + (size_t)b * B;
        v16f m0 = RZ_FN(vabs)(RZ_FN(loadu)(xb)), m1 = RZ_FN(vabs)(RZ_FN(loadu)(xb + 16));
        for (int i = 32; i < B; i += 32) {  /* two chains: the max is exact in any order */
            m0 = RZ_VMAX16(m0, RZ_FN(vabs)(RZ_FN(loadu)(xb + i)));
            m1 = RZ_VMAX16(m1, RZ_FN(vabs)(RZ_FN(loadu)(xb + i + 16)));
        }
        const float amax = RZ_FN(hmax)(RZ_VMAX16(m0, m1));
        const v16f id = RZ_FN(splat)(amax == 0.0f ? 0.0f : 127.0f / amax);
        v16i qv[16];
        int8_t *dst = qt + (size_t)b * (B / 4) * step;
        for (int i = 0; i < B; i += 16) {
            /* |x * id| <= 127 (+ rounding): adding 1.5 * 2^23 rounds to nearest even in the default mode */
            v16f y = (RZ_FN(loadu)(xb + i) * id + magic) - magic;
            y = RZ_FN(vsel)(y > hi, hi, y);
            y = RZ_FN(vsel)(y < lo, lo, y);
            const v16i qi = __builtin_convertvector(y, v16i);
            const v4i qw = (v4i)__builtin_convertvector(qi, v16c);
            qv[i / 16] = qi;
            for (int g = 0; g < 4; g++) {
                const int32_t word = qw[g];
                memcpy(dst, &word, 4);
                dst += step;
            }
        }
        d[(size_t)b * nr] = amax / 127.0f;
        if (B == 32) {
            s32[(size_t)b * nr] = RZ_FN(hsum_i)(qv[0] + qv[1]);
        } else {
            const v16i s16 = RZ_FN(sum16x16)(qv);  /* lane j: the sum of 16-column sub-block j */
            const v16i s32v = s16 + __builtin_shufflevector(s16, s16, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
            for (int p = 0; p < 8; p++) {  /* sub-blocks 2p, 2p + 1 side by side */
                int16_t *hp = h16 + (size_t)(8 * b + p) * nr * 2;
                hp[0] = (int16_t)s16[2 * p];
                hp[1] = (int16_t)s16[2 * p + 1];
            }
            for (int p = 0; p < 4; p++) {
                int16_t *hp = h32 + (size_t)(4 * b + p) * nr * 2;
                hp[0] = (int16_t)s32v[4 * p];
                hp[1] = (int16_t)s32v[4 * p + 2];
            }
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
        ss = RZ_FMA16(v, v, ss);
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

/* Attention of query rows r0..r1-1 (row i at position pos0 + i, seeing keys 0..pos0+i) for every query head
 * that reads kv head `hk`. The (head, row) pairs go in chunks of up to 4 that share each key and value
 * vector once it is converted from f16 (chunks of 8 were no faster: 6% less attention time at 16 rows,
 * 14% more at one row, 2026-12-07); every pair's arithmetic is the one it would get alone:
 *   score(t) = sum over d = 0, 1, ... of q[d] * k[d][t] (fused multiply-adds in that order), times scale;
 *   softmax over t < T (max, exponentials, their sum in a fixed order, normalisation);
 *   out[d] = sum over t = 0, 1, ..., T-1 of p[t] * v[t][d] (fused, in that order; no term for t >= T).
 * Keys are stored transposed ([head][d][position]) so 16 positions are one vector; 2 vectors x 4 pairs keep
 * 8 accumulator chains in flight. scratch: 4 x (pos0 + r1 rounded up to 64) floats. */
#define RZ_APAIRS 4
static inline __attribute__((always_inline)) void RZ_FN(attn_chunk)(const rz_attn *a, int hk, int r0, int p0, const int NP,
                                                                 float *scratch) {
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv, kv_stride = a->n_head_kv * hd;
    const size_t ks = (size_t)a->kt_stride;
    const uint16_t *kh = a->k + (size_t)hk * hd * ks, *vh = a->v + (size_t)hk * hd;
    const v16f zero = RZ_FN(splat)(0.0f), sc = RZ_FN(splat)(a->scale);
    const float *q[RZ_APAIRS];
    float *o[RZ_APAIRS], *sh[RZ_APAIRS];
    int T[RZ_APAIRS], tmin = 1 << 30, tmax = 0;
    size_t TS = 0;
    for (int j = 0; j < NP; j++) {
        const int pj = p0 + j, row = r0 + pj / group;
        T[j] = a->pos0 + row + 1;
        tmin = T[j] < tmin ? T[j] : tmin;
        tmax = T[j] > tmax ? T[j] : tmax;
    }
    TS = (size_t)((tmax + 63) & ~63);
    for (int j = 0; j < NP; j++) {
        const int pj = p0 + j, row = r0 + pj / group, h = hk * group + pj % group;
        q[j] = a->q + (size_t)row * a->q_stride + (size_t)h * hd;
        o[j] = a->out + (size_t)row * a->q_stride + (size_t)h * hd;
        sh[j] = scratch + (size_t)j * TS;
    }
    const int T16 = (tmax + 15) & ~15;
    /* scores: lanes past a pair's T are computed and never used */
    int t = 0;
    for (; t + 32 <= T16; t += 32) {
        v16f c0[RZ_APAIRS], c1[RZ_APAIRS];
        for (int j = 0; j < NP; j++) c0[j] = c1[j] = zero;
        for (int d = 0; d < hd; d++) {
            const uint16_t *kr = kh + (size_t)d * ks + t;
            const v16f k0 = RZ_LOAD_F16X16(kr), k1 = RZ_LOAD_F16X16(kr + 16);
            for (int j = 0; j < NP; j++) {
                const v16f qd = RZ_FN(splat)(q[j][d]);
                c0[j] = RZ_FMA16(qd, k0, c0[j]);
                c1[j] = RZ_FMA16(qd, k1, c1[j]);
            }
        }
        for (int j = 0; j < NP; j++) {
            RZ_FN(storeu)(sh[j] + t, c0[j] * sc);
            RZ_FN(storeu)(sh[j] + t + 16, c1[j] * sc);
        }
    }
    for (; t < T16; t += 16) {
        v16f c0[RZ_APAIRS];
        for (int j = 0; j < NP; j++) c0[j] = zero;
        for (int d = 0; d < hd; d++) {
            const v16f k0 = RZ_LOAD_F16X16(kh + (size_t)d * ks + t);
            for (int j = 0; j < NP; j++) c0[j] = RZ_FMA16(RZ_FN(splat)(q[j][d]), k0, c0[j]);
        }
        for (int j = 0; j < NP; j++) RZ_FN(storeu)(sh[j] + t, c0[j] * sc);
    }
    /* softmax, 16 positions a step: the lanes past T are set to -inf before the max and to 0 after the
     * exponentials, so whole vectors serve every step; the sum runs per lane in position order, then over
     * the lanes by hsum's fixed tree (scalar loops of dependent maxima and additions had cost 10-12% of the
     * attention time at 8 and 16 rows, 2026-12-07) */
    for (int j = 0; j < NP; j++) {
        float *s = sh[j];
        const int Tj = T[j], Tv = (Tj + 15) & ~15;
        for (int u = Tj; u < Tv; u++) s[u] = -INFINITY;
        v16f mx = RZ_FN(loadu)(s);
        for (int u = 16; u < Tv; u += 16) mx = RZ_VMAX16(mx, RZ_FN(loadu)(s + u));
        const v16f mv = RZ_FN(splat)(RZ_FN(hmax)(mx));
        v16f acc = RZ_FN(splat)(0.0f);
        for (int u = 0; u < Tv; u += 16) {
            v16f e = RZ_FN(vexp)(RZ_FN(loadu)(s + u) - mv);
            if (u + 16 > Tj) {  /* the last vector: lanes past T contribute nothing */
                for (int l = Tj - u; l < 16; l++) e[l] = 0.0f;
            }
            RZ_FN(storeu)(s + u, e);
            acc = acc + e;
        }
        const v16f inv = RZ_FN(splat)(1.0f / RZ_FN(hsum)(acc));
        for (int u = 0; u < Tv; u += 16) RZ_FN(storeu)(s + u, RZ_FN(loadu)(s + u) * inv);
    }
    /* values: all pairs over t < tmin, then each pair alone up to its own T */
    for (int d = 0; d < hd; d += 32) {
        const int two = d + 32 <= hd;
        v16f c0[RZ_APAIRS], c1[RZ_APAIRS];
        for (int j = 0; j < NP; j++) c0[j] = c1[j] = zero;
        for (t = 0; t < tmin; t++) {
            const uint16_t *vr = vh + (size_t)t * kv_stride + d;
            const v16f v0 = RZ_LOAD_F16X16(vr), v1 = two ? RZ_LOAD_F16X16(vr + 16) : zero;
            for (int j = 0; j < NP; j++) {
                const v16f p = RZ_FN(splat)(sh[j][t]);
                c0[j] = RZ_FMA16(p, v0, c0[j]);
                c1[j] = RZ_FMA16(p, v1, c1[j]);
            }
        }
        for (int j = 0; j < NP; j++) {
            for (int u = tmin; u < T[j]; u++) {
                const uint16_t *vr = vh + (size_t)u * kv_stride + d;
                const v16f p = RZ_FN(splat)(sh[j][u]);
                c0[j] = RZ_FMA16(p, RZ_LOAD_F16X16(vr), c0[j]);
                if (two) c1[j] = RZ_FMA16(p, RZ_LOAD_F16X16(vr + 16), c1[j]);
            }
            RZ_FN(storeu)(o[j] + d, c0[j]);
            if (two) RZ_FN(storeu)(o[j] + d + 16, c1[j]);
        }
    }
}

static void RZ_FN(attention)(const rz_attn *a, int hk, int r0, int r1, float *scratch) {
    const int pairs = (a->n_head / a->n_head_kv) * (r1 - r0);
    const int chunks = (pairs + RZ_APAIRS - 1) / RZ_APAIRS;  /* near-equal chunks: 6 pairs -> 3 + 3 */
    for (int c = 0, p0 = 0; c < chunks; c++) {
        const int np = pairs / chunks + (c < pairs % chunks);
        switch (np) {
        case 1: RZ_FN(attn_chunk)(a, hk, r0, p0, 1, scratch); break;
        case 2: RZ_FN(attn_chunk)(a, hk, r0, p0, 2, scratch); break;
        case 3: RZ_FN(attn_chunk)(a, hk, r0, p0, 3, scratch); break;
        default: RZ_FN(attn_chunk)(a, hk, r0, p0, 4, scratch); break;
        }
        p0 += np;
    }
}
