/* Portable C kernels: the reference every SIMD kernel must equal bit for bit.
 *
 * For output (row r, column c) of a weight type with K-blocks b = 0, 1, ...:
 *   Q8_0, Q4_0, Q5_0:  i = sum q_w * q_a - off * sum q_a;     acc = fma((float)i, d_w * d_a, acc)
 *                      (q_w stored unsigned: off = 128, 8, 16)
 *   Q4_1:              i = sum q_w * q_a;                      acc = fma((float)i, d_w * d_a, acc);
 *                                                              acc = fma(m_w, d_a * (float)sum q_a, acc)
 *   Q4_K (256):        i = sum_j sc_j * sum_32 q_w * q_a;      m = sum_j min_j * sum_32 q_a
 *                      acc = fma((float)i, d_w * d_a, acc);    acc = fma((float)m, -(dmin_w * d_a), acc)
 *   Q6_K (256):        i = sum_j sc_j * (sum_16 q_w * q_a) - 32 * sum_j sc_j * sum_16 q_a
 *                      acc = fma((float)i, d_w * d_a, acc)
 *   F16, BF16, F32:    acc = fma(w_k, x_k, acc) for k = 0, 1, ... (activations not quantized)
 * Integer sums are exact (no intermediate can overflow int32), so only the float steps' order matters, and
 * it is the same here, in every SIMD kernel, and for every row count.
 */
#include <math.h>

#include "layout.h"
#include "rz.h"

#define GROUP_LOOP(...)                                                                           \
    for (int g = g0; g < g1; g++) {                                                               \
        const uint8_t *wg = w->data + (size_t)g * w->group_bytes;                                 \
        for (int lane = 0; lane < RZ_GROUP; lane++) {                                             \
            int col = g * RZ_GROUP + lane;                                                        \
            if (col >= w->rows) break;                                                            \
            for (int r = a->tile_r0[tile]; r < a->tile_r0[tile + 1]; r++) {                       \
                float acc = 0.0f;                                                                 \
                __VA_ARGS__                                                                       \
                out[(size_t)r * ldo + col] = acc;                                                 \
            }                                                                                     \
        }                                                                                         \
    }

void rz_mm_q8_0_c(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {
    int nb = w->blocks;
    GROUP_LOOP(
        for (int b = 0; b < nb; b++) {
            const rp_q8_0 *c = (const rp_q8_0 *)(wg + b * sizeof(rp_q8_0));
            int32_t s = 0;
            for (int k = 0; k < 32; k++) s += c->qs[rz_q8_vec(k)][rz_lane_byte(lane, k)] * a->q32[rz_act_qi(a, r, 32 * b + k)];
            s -= 128 * a->s32[rz_act_bi(a, r, b, nb)];
            acc = fmaf((float)s, rz_f16_to_f32(c->d[lane]) * a->d32[rz_act_bi(a, r, b, nb)], acc);
        })
}

void rz_mm_q4_0_c(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {
    int nb = w->blocks;
    GROUP_LOOP(
        for (int b = 0; b < nb; b++) {
            const rp_q4_0 *c = (const rp_q4_0 *)(wg + b * sizeof(rp_q4_0));
            int32_t s = 0;
            for (int k = 0; k < 32; k++) s += rz_nib_get(&c->qs[0][0], lane, k) * a->q32[rz_act_qi(a, r, 32 * b + k)];
            s -= 8 * a->s32[rz_act_bi(a, r, b, nb)];
            acc = fmaf((float)s, rz_f16_to_f32(c->d[lane]) * a->d32[rz_act_bi(a, r, b, nb)], acc);
        })
}

void rz_mm_q4_1_c(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {
    int nb = w->blocks;
    GROUP_LOOP(
        for (int b = 0; b < nb; b++) {
            const rp_q4_1 *c = (const rp_q4_1 *)(wg + b * sizeof(rp_q4_1));
            int32_t s = 0;
            for (int k = 0; k < 32; k++) s += rz_nib_get(&c->qs[0][0], lane, k) * a->q32[rz_act_qi(a, r, 32 * b + k)];
            float da = a->d32[rz_act_bi(a, r, b, nb)];
            acc = fmaf((float)s, rz_f16_to_f32(c->d[lane]) * da, acc);
            acc = fmaf(rz_f16_to_f32(c->m[lane]), da * (float)a->s32[rz_act_bi(a, r, b, nb)], acc);
        })
}

void rz_mm_q5_0_c(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {
    int nb = w->blocks;
    GROUP_LOOP(
        for (int b = 0; b < nb; b++) {
            const rp_q5_0 *c = (const rp_q5_0 *)(wg + b * sizeof(rp_q5_0));
            int32_t s = 0;
            for (int k = 0; k < 32; k++) {
                int hi = ((&c->qh[0][0])[rz_q5_qh_word(k)] >> rz_q5_qh_bit(lane, k)) & 1;
                s += (rz_nib_get(&c->qs[0][0], lane, k) | hi << 4) * a->q32[rz_act_qi(a, r, 32 * b + k)];
            }
            s -= 16 * a->s32[rz_act_bi(a, r, b, nb)];
            acc = fmaf((float)s, rz_f16_to_f32(c->d[lane]) * a->d32[rz_act_bi(a, r, b, nb)], acc);
        })
}

void rz_mm_q4_k_c(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {
    int nb = w->blocks;
    GROUP_LOOP(
        for (int b = 0; b < nb; b++) {
            const rp_q4_k *c = (const rp_q4_k *)(wg + b * sizeof(rp_q4_k));
            int32_t s = 0, m = 0;
            for (int j = 0; j < 8; j++) {
                int32_t p = 0;
                for (int k = 0; k < 32; k++) p += rz_nib_get(&c->qs[0][0] + rz_q4k_span(j), lane, k) * a->q256[rz_act_qi(a, r, 256 * b + 32 * j + k)];
                s += c->sc[j][lane] * p;
                m += c->m[rz_q4k_min_pair(j)][lane][rz_q4k_min_slot(j)] * a->h32[rz_act_pi(a, r, 8 * b + j, w->cols / 32)];
            }
            float da = a->d256[rz_act_bi(a, r, b, nb)];
            acc = fmaf((float)s, rz_f16_to_f32(c->d[lane]) * da, acc);
            acc = fmaf((float)m, -(rz_f16_to_f32(c->dmin[lane]) * da), acc);
        })
}

void rz_mm_q6_k_c(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {
    int nb = w->blocks;
    GROUP_LOOP(
        for (int b = 0; b < nb; b++) {
            const rp_q6_k *c = (const rp_q6_k *)(wg + b * sizeof(rp_q6_k));
            int32_t s = 0, o = 0;
            for (int j = 0; j < 16; j++) {
                int32_t p = 0;
                for (int kk = 0; kk < 16; kk++) {
                    int k = 16 * j + kk;
                    int lo = rz_nib_get(&c->ql[0][0] + rz_q6k_span(k), lane, k & 31);
                    int hi = (c->qh[rz_q6k_qh_vec(k)][rz_lane_byte(lane, k)] >> rz_q6k_qh_shift(k)) & 3;
                    p += (lo | hi << 4) * a->q256[rz_act_qi(a, r, 256 * b + k)];
                }
                int sc = c->sc[rz_q6k_sc_pair(j)][lane][rz_q6k_sc_slot(j)];
                s += sc * p;
                o += sc * a->h16[rz_act_pi(a, r, 16 * b + j, w->cols / 16)];
            }
            s -= 32 * o;
            acc = fmaf((float)s, rz_f16_to_f32(c->d[lane]) * a->d256[rz_act_bi(a, r, b, nb)], acc);
        })
}

#define FLOAT_KERNEL(NAME, T, CONV)                                                                   \
    void NAME(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) { \
        int K = w->cols, nb = w->blocks;                                                              \
        GROUP_LOOP(                                                                                   \
            const float *x = a->x + (size_t)r * K;                                                    \
            for (int b = 0; b < nb; b++) {                                                            \
                const T *c = (const T *)(wg + b * sizeof(T));                                         \
                for (int k = 0; k < 32; k++) acc = fmaf(CONV(c->w[k][lane]), x[32 * b + k], acc);     \
            })                                                                                        \
    }

static inline float id_f32(float v) { return v; }
FLOAT_KERNEL(rz_mm_f16_c, rp_f16, rz_f16_to_f32)
FLOAT_KERNEL(rz_mm_bf16_c, rp_f16, rz_bf16_to_f32)
FLOAT_KERNEL(rz_mm_f32_c, rp_f32, id_f32)

#define RZ_OPS_SUFFIX ref
#include "ops_impl.h"

const rz_isa rz_isa_ref = {
    "c", RZ_ISA_C,
    attention_ref, rmsnorm_ref, swiglu_ref, quant_ref,
};
