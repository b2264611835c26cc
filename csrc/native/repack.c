/* GGUF blocks -> row-interleaved groups (layouts in rz.h, positions in layout.h), and back to floats for the
 * tests: each type's pack and dequant function, named in its row of types.c.
 *
 * Repacking only moves bits: the same f16 scales, the same quants. Q8_0 stores q + 128 (a bijection) and
 * Q4_K stores its 6-bit scales and minimums one per byte (4 bytes a row more per 256 columns). rz_dequant_row
 * computes each value with the float operations of the `gguf` package's numpy dequantization, in its order,
 * so the two agree bit for bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "rz.h"

static int f16_finite(uint16_t h) { return (h & 0x7c00) != 0x7c00; }

/* the 32 4-bit values v[0..31] of row r into a nibble span (the chunk is zeroed before packing) */
static inline void put_span(uint8_t *span, int r, const uint8_t *v) {
    for (int k = 0; k < 32; k++) rz_nib_put(span, r, k, v[k]);
}

/* GGUF's 32 nibbles of a Q4_0 / Q4_1 / Q5_0 block: element k < 16 is the low nibble of qs[k], else the high
 * nibble of qs[k - 16] */
static inline void split_qs16(const uint8_t *qs, uint8_t *v) {
    for (int k = 0; k < 16; k++) {
        v[k] = qs[k] & 15;
        v[k + 16] = qs[k] >> 4;
    }
}

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

/* ---- pack: one source block of one row into lane r of a chunk ------------------------------------------ */
int rz_pack_q8_0(const uint8_t *src, uint8_t *chunk, int r) {
    const gg_q8_0 *b = (const gg_q8_0 *)src;
    rp_q8_0 *c = (rp_q8_0 *)chunk;
    c->d[r] = b->d;
    for (int k = 0; k < 32; k++) c->qs[rz_q8_vec(k)][rz_lane_byte(r, k)] = (uint8_t)(b->qs[k] + 128);
    return f16_finite(b->d);
}

int rz_pack_q4_0(const uint8_t *src, uint8_t *chunk, int r) {
    const gg_q4_0 *b = (const gg_q4_0 *)src;
    rp_q4_0 *c = (rp_q4_0 *)chunk;
    c->d[r] = b->d;
    uint8_t v[32];
    split_qs16(b->qs, v);
    put_span(&c->qs[0][0], r, v);
    return f16_finite(b->d);
}

int rz_pack_q4_1(const uint8_t *src, uint8_t *chunk, int r) {
    const gg_q4_1 *b = (const gg_q4_1 *)src;
    rp_q4_1 *c = (rp_q4_1 *)chunk;
    c->d[r] = b->d;
    c->m[r] = b->m;
    uint8_t v[32];
    split_qs16(b->qs, v);
    put_span(&c->qs[0][0], r, v);
    return f16_finite(b->d) && f16_finite(b->m);
}

int rz_pack_q5_0(const uint8_t *src, uint8_t *chunk, int r) {
    const gg_q5_0 *b = (const gg_q5_0 *)src;
    rp_q5_0 *c = (rp_q5_0 *)chunk;
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    c->d[r] = b->d;
    uint8_t v[32];
    split_qs16(b->qs, v);
    put_span(&c->qs[0][0], r, v);
    for (int k = 0; k < 32; k++)
        if ((qh >> k) & 1) (&c->qh[0][0])[rz_q5_qh_word(k)] |= 1ull << rz_q5_qh_bit(r, k);
    return f16_finite(b->d);
}

int rz_pack_q4_k(const uint8_t *src, uint8_t *chunk, int r) {
    const gg_q4_k *b = (const gg_q4_k *)src;
    rp_q4_k *c = (rp_q4_k *)chunk;
    c->d[r] = b->d;
    c->dmin[r] = b->dmin;
    for (int j = 0; j < 8; j++) {
        int sc, m;
        q4k_scale_min(b->scales, j, &sc, &m);
        c->sc[j][r] = (uint8_t)sc;
        c->m[rz_q4k_min_pair(j)][r][rz_q4k_min_slot(j)] = (uint8_t)m;
    }
    for (int j = 0; j < 8; j++) {  /* GGUF bytes 32c..32c+31: low nibbles column 64c + i, high 64c + 32 + i */
        uint8_t v[32];
        const uint8_t *q = b->qs + 32 * (j >> 1);
        for (int i = 0; i < 32; i++) v[i] = (j & 1) ? q[i] >> 4 : q[i] & 15;
        put_span(&c->qs[0][0] + rz_q4k_span(j), r, v);
    }
    return f16_finite(b->d) && f16_finite(b->dmin);
}

int rz_pack_q6_k(const uint8_t *src, uint8_t *chunk, int r) {
    const gg_q6_k *b = (const gg_q6_k *)src;
    rp_q6_k *c = (rp_q6_k *)chunk;
    c->d[r] = b->d;
    for (int j = 0; j < 16; j++) c->sc[rz_q6k_sc_pair(j)][r][rz_q6k_sc_slot(j)] = b->scales[j];
    for (int k = 0; k < 256; k++) {  /* GGUF: halves of 128 columns, ql 64 bytes and qh 32 bytes each */
        int h = k >> 7, e = k & 127;
        int lo = e < 64 ? b->ql[64 * h + e] & 15 : b->ql[64 * h + e - 64] >> 4;
        int hi = (b->qh[32 * h + (e & 31)] >> (2 * (e >> 5))) & 3;
        rz_nib_put(&c->ql[0][0] + rz_q6k_span(k), r, k & 31, lo);
        c->qh[rz_q6k_qh_vec(k)][rz_lane_byte(r, k)] |= (uint8_t)(hi << rz_q6k_qh_shift(k));
    }
    return f16_finite(b->d);
}

static int pack_half(const uint8_t *src, uint8_t *chunk, int r, int bf16) {
    rp_f16 *c = (rp_f16 *)chunk;
    int ok = 1;
    for (int k = 0; k < 32; k++) {
        uint16_t v;
        memcpy(&v, src + 2 * k, 2);
        c->w[k][r] = v;
        ok &= bf16 ? ((v & 0x7f80) != 0x7f80) : f16_finite(v);
    }
    return ok;
}
int rz_pack_f16(const uint8_t *src, uint8_t *chunk, int r) { return pack_half(src, chunk, r, 0); }
int rz_pack_bf16(const uint8_t *src, uint8_t *chunk, int r) { return pack_half(src, chunk, r, 1); }

int rz_pack_f32(const uint8_t *src, uint8_t *chunk, int r) {
    rp_f32 *c = (rp_f32 *)chunk;
    int ok = 1;
    for (int k = 0; k < 32; k++) {
        memcpy(&c->w[k][r], src + 4 * k, 4);
        ok &= isfinite(c->w[k][r]) != 0;
    }
    return ok;
}

int rz_tensor_init(rz_tensor *t, int type, int rows, int cols, const uint8_t *src, size_t src_row_bytes, int *bad) {
    memset(t, 0, sizeof *t);
    const rz_type *ty = rz_type_of(type);
    int bc = ty ? ty->block_cols : 0;
    if (!bc || cols % bc || rows <= 0) return -2;
    t->type = type;
    t->rows = rows;
    t->cols = cols;
    t->groups = (rows + RZ_GROUP - 1) / RZ_GROUP;
    t->blocks = cols / bc;
    t->chunk_bytes = ty->chunk_bytes;
    t->group_bytes = t->chunk_bytes * (size_t)t->blocks;
    size_t total = t->group_bytes * (size_t)t->groups;
    t->data = aligned_alloc(RZ_ALIGN, (total + RZ_ALIGN - 1) / RZ_ALIGN * RZ_ALIGN);
    if (!t->data) return -3;
    memset(t->data, 0, total);
    size_t sb = ty->src_bytes;
    *bad = -1;
    for (int row = 0; row < rows; row++) {
        uint8_t *g = t->data + (size_t)(row / RZ_GROUP) * t->group_bytes;
        const uint8_t *s = src + (size_t)row * src_row_bytes;
        for (int b = 0; b < t->blocks; b++)
            if (!ty->pack(s + b * sb, g + b * t->chunk_bytes, row % RZ_GROUP) && *bad < 0) *bad = row;
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

/* ---- dequant: lane r of a chunk, with the float operations of the gguf package, in its order -----------
 * (-ffp-contract=off keeps them separate) */
void rz_dequant_q8_0(const uint8_t *chunk, int r, float *y) {
    const rp_q8_0 *c = (const rp_q8_0 *)chunk;
    float d = rz_f16_to_f32(c->d[r]);
    for (int k = 0; k < 32; k++) y[k] = (float)(c->qs[rz_q8_vec(k)][rz_lane_byte(r, k)] - 128) * d;
}

void rz_dequant_q4_0(const uint8_t *chunk, int r, float *y) {
    const rp_q4_0 *c = (const rp_q4_0 *)chunk;
    float d = rz_f16_to_f32(c->d[r]);
    for (int k = 0; k < 32; k++) y[k] = d * (float)(rz_nib_get(&c->qs[0][0], r, k) - 8);
}

void rz_dequant_q4_1(const uint8_t *chunk, int r, float *y) {
    const rp_q4_1 *c = (const rp_q4_1 *)chunk;
    float d = rz_f16_to_f32(c->d[r]), m = rz_f16_to_f32(c->m[r]);
    for (int k = 0; k < 32; k++) y[k] = d * (float)rz_nib_get(&c->qs[0][0], r, k) + m;
}

void rz_dequant_q5_0(const uint8_t *chunk, int r, float *y) {
    const rp_q5_0 *c = (const rp_q5_0 *)chunk;
    float d = rz_f16_to_f32(c->d[r]);
    for (int k = 0; k < 32; k++) {
        int hi = ((&c->qh[0][0])[rz_q5_qh_word(k)] >> rz_q5_qh_bit(r, k)) & 1;
        y[k] = d * (float)((rz_nib_get(&c->qs[0][0], r, k) | hi << 4) - 16);
    }
}

void rz_dequant_q4_k(const uint8_t *chunk, int r, float *y) {
    const rp_q4_k *c = (const rp_q4_k *)chunk;
    float d = rz_f16_to_f32(c->d[r]), dmin = rz_f16_to_f32(c->dmin[r]);
    for (int j = 0; j < 8; j++) {
        float ds = d * (float)c->sc[j][r], dm = dmin * (float)c->m[rz_q4k_min_pair(j)][r][rz_q4k_min_slot(j)];
        for (int k = 0; k < 32; k++) y[32 * j + k] = ds * (float)rz_nib_get(&c->qs[0][0] + rz_q4k_span(j), r, k) - dm;
    }
}

void rz_dequant_q6_k(const uint8_t *chunk, int r, float *y) {
    const rp_q6_k *c = (const rp_q6_k *)chunk;
    float d = rz_f16_to_f32(c->d[r]);
    for (int k = 0; k < 256; k++) {
        const int j = k >> 4;
        float ds = d * (float)c->sc[rz_q6k_sc_pair(j)][r][rz_q6k_sc_slot(j)];
        int lo = rz_nib_get(&c->ql[0][0] + rz_q6k_span(k), r, k & 31);
        int hi = (c->qh[rz_q6k_qh_vec(k)][rz_lane_byte(r, k)] >> rz_q6k_qh_shift(k)) & 3;
        y[k] = ds * (float)((lo | hi << 4) - 32);
    }
}

void rz_dequant_f16(const uint8_t *chunk, int r, float *y) {
    for (int k = 0; k < 32; k++) y[k] = rz_f16_to_f32(((const rp_f16 *)chunk)->w[k][r]);
}
void rz_dequant_bf16(const uint8_t *chunk, int r, float *y) {
    for (int k = 0; k < 32; k++) y[k] = rz_bf16_to_f32(((const rp_f16 *)chunk)->w[k][r]);
}
void rz_dequant_f32(const uint8_t *chunk, int r, float *y) {
    for (int k = 0; k < 32; k++) y[k] = ((const rp_f32 *)chunk)->w[k][r];
}

void rz_dequant_row(const rz_tensor *t, int row, float *out) {
    const rz_type *ty = &rz_types[t->type];
    const uint8_t *g = t->data + (size_t)(row / RZ_GROUP) * t->group_bytes;
    for (int b = 0; b < t->blocks; b++) ty->dequant(g + b * t->chunk_bytes, row % RZ_GROUP, out + b * ty->block_cols);
}
