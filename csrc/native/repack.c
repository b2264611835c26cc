/* GGUF blocks -> row-interleaved groups (layouts in rz.h), and back to floats for the tests.
 *
 * Repacking only moves bits: the same f16 scales, the same quants. Q8_0 stores q + 128 (a bijection) and
 * Q4_K stores its 6-bit scales and minimums one per byte (4 bytes a row more per 256 columns). rz_dequant_row
 * computes each value with the float operations of the `gguf` package's numpy dequantization, in its order,
 * so the two agree bit for bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rz.h"

int rz_block_cols(int type) {
    switch (type) {
    case RZ_Q4_K: case RZ_Q6_K: return 256;
    case RZ_Q4_0: case RZ_Q4_1: case RZ_Q5_0: case RZ_Q8_0: case RZ_F16: case RZ_BF16: case RZ_F32: return 32;
    default: return 0;
    }
}

int rz_type_supported(int type) { return rz_block_cols(type) != 0; }

const char *rz_type_name(int type) {
    switch (type) {
    case RZ_F32: return "F32"; case RZ_F16: return "F16"; case RZ_BF16: return "BF16";
    case RZ_Q4_0: return "Q4_0"; case RZ_Q4_1: return "Q4_1"; case RZ_Q5_0: return "Q5_0";
    case RZ_Q8_0: return "Q8_0"; case RZ_Q4_K: return "Q4_K"; case RZ_Q6_K: return "Q6_K";
    default: return "?";
    }
}

size_t rz_chunk_bytes(int type) {
    switch (type) {
    case RZ_Q4_0: return sizeof(rp_q4_0);
    case RZ_Q4_1: return sizeof(rp_q4_1);
    case RZ_Q5_0: return sizeof(rp_q5_0);
    case RZ_Q8_0: return sizeof(rp_q8_0);
    case RZ_Q4_K: return sizeof(rp_q4_k);
    case RZ_Q6_K: return sizeof(rp_q6_k);
    case RZ_F16: case RZ_BF16: return sizeof(rp_f16);
    case RZ_F32: return sizeof(rp_f32);
    default: return 0;
    }
}

static size_t src_block_bytes(int type) {
    switch (type) {
    case RZ_Q4_0: return sizeof(gg_q4_0);
    case RZ_Q4_1: return sizeof(gg_q4_1);
    case RZ_Q5_0: return sizeof(gg_q5_0);
    case RZ_Q8_0: return sizeof(gg_q8_0);
    case RZ_Q4_K: return sizeof(gg_q4_k);
    case RZ_Q6_K: return sizeof(gg_q6_k);
    case RZ_F16: case RZ_BF16: return 64;
    case RZ_F32: return 128;
    default: return 0;
    }
}

size_t rz_src_row_bytes(int type, int cols) {
    int bc = rz_block_cols(type);
    return bc ? (size_t)(cols / bc) * src_block_bytes(type) : 0;
}

/* position of column k (0..31 within a 32-column span) of row r in a nibble span: byte, and shift 0 or 4 */
static inline int nib_byte(int r, int k) { return (k >> 3) * 64 + r * 4 + (k & 3); }
static inline int nib_shift(int k) { return (k & 4) ? 4 : 0; }

/* the 32 4-bit values v[0..31] of row r into a nibble span (16 byte writes) */
static inline void put_span(uint8_t *span, int r, const uint8_t *v) {
    for (int j = 0; j < 4; j++)
        for (int t = 0; t < 4; t++) span[j * 64 + r * 4 + t] = (uint8_t)((v[8 * j + t] & 15) | (v[8 * j + 4 + t] << 4));
}

/* GGUF's 32 nibbles of a Q4_0 / Q4_1 / Q5_0 block: element k < 16 is the low nibble of qs[k], else the high
 * nibble of qs[k - 16] */
static inline void split_qs16(const uint8_t *qs, uint8_t *v) {
    for (int k = 0; k < 16; k++) {
        v[k] = qs[k] & 15;
        v[k + 16] = qs[k] >> 4;
    }
}

static inline int get_nib(const uint8_t *span, int r, int k) {
    return (span[nib_byte(r, k)] >> nib_shift(k)) & 15;
}

static int f16_finite(uint16_t h) { return (h & 0x7c00) != 0x7c00; }

/* Q4_K's packed 6-bit scale and minimum of sub-block j, as the gguf package unpacks them */
static void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* one source block of one row into lane r of a chunk; returns 0 if a scale is not finite */
static int pack_block(int type, const uint8_t *src, uint8_t *chunk, int r) {
    switch (type) {
    case RZ_Q8_0: {
        const gg_q8_0 *b = (const gg_q8_0 *)src;
        rp_q8_0 *c = (rp_q8_0 *)chunk;
        c->d[r] = b->d;
        for (int k = 0; k < 32; k++) c->qs[k >> 2][r * 4 + (k & 3)] = (uint8_t)(b->qs[k] + 128);
        return f16_finite(b->d);
    }
    case RZ_Q4_0: {
        const gg_q4_0 *b = (const gg_q4_0 *)src;
        rp_q4_0 *c = (rp_q4_0 *)chunk;
        c->d[r] = b->d;
        uint8_t v[32];
        split_qs16(b->qs, v);
        put_span(&c->qs[0][0], r, v);
        return f16_finite(b->d);
    }
    case RZ_Q4_1: {
        const gg_q4_1 *b = (const gg_q4_1 *)src;
        rp_q4_1 *c = (rp_q4_1 *)chunk;
        c->d[r] = b->d;
        c->m[r] = b->m;
        uint8_t v[32];
        split_qs16(b->qs, v);
        put_span(&c->qs[0][0], r, v);
        return f16_finite(b->d) && f16_finite(b->m);
    }
    case RZ_Q5_0: {
        const gg_q5_0 *b = (const gg_q5_0 *)src;
        rp_q5_0 *c = (rp_q5_0 *)chunk;
        uint32_t qh;
        memcpy(&qh, b->qh, 4);
        c->d[r] = b->d;
        uint8_t v[32];
        split_qs16(b->qs, v);
        put_span(&c->qs[0][0], r, v);
        for (int k = 0; k < 32; k++)
            if ((qh >> k) & 1) c->qh[k >> 3][(k >> 2) & 1] |= 1ull << (r * 4 + (k & 3));
        return f16_finite(b->d);
    }
    case RZ_Q4_K: {
        const gg_q4_k *b = (const gg_q4_k *)src;
        rp_q4_k *c = (rp_q4_k *)chunk;
        c->d[r] = b->d;
        c->dmin[r] = b->dmin;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            q4k_scale_min(b->scales, j, &sc, &m);
            c->sc[j][r] = (uint8_t)sc;
            c->m[j >> 1][r][j & 1] = (uint8_t)m;
        }
        for (int j = 0; j < 8; j++) {  /* bytes 32c..32c+31: low nibbles column 64c + i, high 64c + 32 + i */
            uint8_t v[32];
            const uint8_t *q = b->qs + 32 * (j >> 1);
            for (int i = 0; i < 32; i++) v[i] = (j & 1) ? q[i] >> 4 : q[i] & 15;
            put_span(&c->qs[0][0] + j * 256, r, v);
        }
        return f16_finite(b->d) && f16_finite(b->dmin);
    }
    case RZ_Q6_K: {
        const gg_q6_k *b = (const gg_q6_k *)src;
        rp_q6_k *c = (rp_q6_k *)chunk;
        c->d[r] = b->d;
        for (int j = 0; j < 16; j++) c->sc[j >> 1][r][j & 1] = b->scales[j];
        uint8_t lo[256], hi[256];
        for (int k = 0; k < 256; k++) {
            int h = k >> 7, e = k & 127;
            lo[k] = e < 64 ? b->ql[64 * h + e] & 15 : b->ql[64 * h + e - 64] >> 4;
            hi[k] = (b->qh[32 * h + (e & 31)] >> (2 * (e >> 5))) & 3;
        }
        for (int j = 0; j < 8; j++) put_span(&c->ql[0][0] + j * 256, r, lo + 32 * j);
        for (int i = 0; i < 16; i++)  /* sub-block i: byte t holds columns t, 4 + t, 8 + t, 12 + t */
            for (int t = 0; t < 4; t++) {
                const uint8_t *h2 = hi + 16 * i + t;
                c->qh[i][r * 4 + t] = (uint8_t)(h2[0] | h2[4] << 2 | h2[8] << 4 | h2[12] << 6);
            }
        return f16_finite(b->d);
    }
    case RZ_F16: case RZ_BF16: {
        rp_f16 *c = (rp_f16 *)chunk;
        int ok = 1;
        for (int k = 0; k < 32; k++) {
            uint16_t v;
            memcpy(&v, src + 2 * k, 2);
            c->w[k][r] = v;
            ok &= type == RZ_F16 ? f16_finite(v) : ((v & 0x7f80) != 0x7f80);
        }
        return ok;
    }
    case RZ_F32: {
        rp_f32 *c = (rp_f32 *)chunk;
        int ok = 1;
        for (int k = 0; k < 32; k++) {
            memcpy(&c->w[k][r], src + 4 * k, 4);
            ok &= isfinite(c->w[k][r]) != 0;
        }
        return ok;
    }
    }
    return 0;
}

int rz_tensor_init(rz_tensor *t, int type, int rows, int cols, const uint8_t *src, size_t src_row_bytes, int *bad) {
    memset(t, 0, sizeof *t);
    int bc = rz_block_cols(type);
    if (!bc || cols % bc || rows <= 0) return -2;
    t->type = type;
    t->rows = rows;
    t->cols = cols;
    t->groups = (rows + RZ_GROUP - 1) / RZ_GROUP;
    t->blocks = cols / bc;
    t->chunk_bytes = rz_chunk_bytes(type);
    t->group_bytes = t->chunk_bytes * (size_t)t->blocks;
    size_t total = t->group_bytes * (size_t)t->groups;
    t->data = aligned_alloc(RZ_ALIGN, (total + RZ_ALIGN - 1) / RZ_ALIGN * RZ_ALIGN);
    if (!t->data) return -3;
    memset(t->data, 0, total);
    size_t sb = src_block_bytes(type);
    *bad = -1;
    for (int row = 0; row < rows; row++) {
        uint8_t *g = t->data + (size_t)(row / RZ_GROUP) * t->group_bytes;
        const uint8_t *s = src + (size_t)row * src_row_bytes;
        for (int b = 0; b < t->blocks; b++)
            if (!pack_block(type, s + b * sb, g + b * t->chunk_bytes, row % RZ_GROUP) && *bad < 0) *bad = row;
    }
    if (*bad >= 0) {
        rz_tensor_free(t);
        return -1;
    }
    return 0;
}

void rz_tensor_free(rz_tensor *t) {
    free(t->data);
    t->data = NULL;
}

/* volatile-free float ops in the numpy order; -ffp-contract=off keeps them separate */
void rz_dequant_row(const rz_tensor *t, int row, float *out) {
    const uint8_t *g = t->data + (size_t)(row / RZ_GROUP) * t->group_bytes;
    int r = row % RZ_GROUP, bc = rz_block_cols(t->type);
    for (int b = 0; b < t->blocks; b++) {
        const uint8_t *chunk = g + b * t->chunk_bytes;
        float *y = out + b * bc;
        switch (t->type) {
        case RZ_Q8_0: {
            const rp_q8_0 *c = (const rp_q8_0 *)chunk;
            float d = rz_f16_to_f32(c->d[r]);
            for (int k = 0; k < 32; k++) y[k] = (float)(c->qs[k >> 2][r * 4 + (k & 3)] - 128) * d;
            break;
        }
        case RZ_Q4_0: {
            const rp_q4_0 *c = (const rp_q4_0 *)chunk;
            float d = rz_f16_to_f32(c->d[r]);
            for (int k = 0; k < 32; k++) y[k] = d * (float)(get_nib(&c->qs[0][0], r, k) - 8);
            break;
        }
        case RZ_Q4_1: {
            const rp_q4_1 *c = (const rp_q4_1 *)chunk;
            float d = rz_f16_to_f32(c->d[r]), m = rz_f16_to_f32(c->m[r]);
            for (int k = 0; k < 32; k++) y[k] = d * (float)get_nib(&c->qs[0][0], r, k) + m;
            break;
        }
        case RZ_Q5_0: {
            const rp_q5_0 *c = (const rp_q5_0 *)chunk;
            float d = rz_f16_to_f32(c->d[r]);
            for (int k = 0; k < 32; k++) {
                int hi = (c->qh[k >> 3][(k >> 2) & 1] >> (r * 4 + (k & 3))) & 1;
                y[k] = d * (float)((get_nib(&c->qs[0][0], r, k) | hi << 4) - 16);
            }
            break;
        }
        case RZ_Q4_K: {
            const rp_q4_k *c = (const rp_q4_k *)chunk;
            float d = rz_f16_to_f32(c->d[r]), dmin = rz_f16_to_f32(c->dmin[r]);
            for (int j = 0; j < 8; j++) {
                float ds = d * (float)c->sc[j][r], dm = dmin * (float)c->m[j >> 1][r][j & 1];
                for (int k = 0; k < 32; k++)
                    y[32 * j + k] = ds * (float)get_nib(&c->qs[0][0] + j * 256, r, k) - dm;
            }
            break;
        }
        case RZ_Q6_K: {
            const rp_q6_k *c = (const rp_q6_k *)chunk;
            float d = rz_f16_to_f32(c->d[r]);
            for (int j = 0; j < 16; j++) {
                float ds = d * (float)c->sc[j >> 1][r][j & 1];
                for (int kk = 0; kk < 16; kk++) {
                    int k = 16 * j + kk;
                    int lo = get_nib(&c->ql[0][0] + (k >> 5) * 256, r, k & 31);
                    int shift = 2 * (((kk >> 3) << 1) | ((kk >> 2) & 1));
                    int hi = (c->qh[j][r * 4 + (kk & 3)] >> shift) & 3;
                    y[k] = ds * (float)((lo | hi << 4) - 32);
                }
            }
            break;
        }
        case RZ_F16: case RZ_BF16: {
            const rp_f16 *c = (const rp_f16 *)chunk;
            for (int k = 0; k < 32; k++)
                y[k] = t->type == RZ_F16 ? rz_f16_to_f32(c->w[k][r]) : rz_bf16_to_f32(c->w[k][r]);
            break;
        }
        case RZ_F32: {
            const rp_f32 *c = (const rp_f32 *)chunk;
            for (int k = 0; k < 32; k++) y[k] = c->w[k][r];
            break;
        }
        }
    }
}
