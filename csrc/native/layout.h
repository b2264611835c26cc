/* Where a value sits in a repacked chunk (the structs rp_* in rz.h): the layout arithmetic in one place.
 *
 * repack.c writes with these, kern_ref.c and rz_dequant_row read with them element by element, and the
 * SIMD kernels take from them the constants of their vector unpacking (which vector holds a column, which
 * shift brings its bits down), so the four cannot disagree. k is a column within the span named, r a row
 * (lane) of the 16-row group. All are constant-folded where k is a compile-time constant.
 */
#ifndef RZ_LAYOUT_H
#define RZ_LAYOUT_H

#include <stdint.h>

/* One 64-byte vector holds 4 consecutive columns of each of the 16 rows: row r's 32-bit lane */
static inline int rz_lane_byte(int r, int k) { return 4 * r + (k & 3); }

/* ---- nibble spans: 32 columns of 4-bit values as 4 vectors of 64 bytes --------------------------------
 * column k (0..31) of row r: vector k / 8, lane byte rz_lane_byte(r, k), low nibble for k % 8 < 4 */
static inline int rz_nib_vec(int k) { return k >> 3; }
static inline int rz_nib_shift(int k) { return (k & 4) ? 4 : 0; }
static inline int rz_nib_byte(int r, int k) { return 64 * rz_nib_vec(k) + rz_lane_byte(r, k); }
static inline int rz_nib_get(const uint8_t *span, int r, int k) { return (span[rz_nib_byte(r, k)] >> rz_nib_shift(k)) & 15; }
static inline void rz_nib_put(uint8_t *span, int r, int k, int v) { span[rz_nib_byte(r, k)] |= (uint8_t)((v & 15) << rz_nib_shift(k)); }

/* ---- Q8_0: q + 128 as bytes; column k (0..31) in vector k / 4 ------------------------------------------ */
static inline int rz_q8_vec(int k) { return k >> 2; }

/* ---- Q5_0: the 5th bits, one 64-bit mask per 4 columns (a nibble vector's half): qh word k / 4 (of the
 * 8 words of qh[4][2], in order), bit 4r + k % 4 */
static inline int rz_q5_qh_word(int k) { return k >> 2; }
static inline int rz_q5_qh_bit(int r, int k) { return rz_lane_byte(r, k); }

/* ---- Q4_K: column k (0..255) in sub-block k / 32, a nibble span of its own (qs + 256 * sub-block);
 * sub-block j's scale sc[j][r], its minimum m[j / 2][r][j % 2] */
static inline int rz_q4k_sub(int k) { return k >> 5; }
static inline int rz_q4k_span(int j) { return 256 * j; }
static inline int rz_q4k_min_pair(int j) { return j >> 1; }
static inline int rz_q4k_min_slot(int j) { return j & 1; }

/* ---- Q6_K: column k (0..255): low 4 bits in nibble span k / 32 (ql + 256 * (k / 32)) at column k % 32;
 * high 2 bits in qh[k / 16], lane byte rz_lane_byte(r, k), bits rz_q6k_qh_shift(k) and up. Sub-block
 * j = k / 16 has the scale sc[j / 2][r][j % 2]. */
static inline int rz_q6k_span(int k) { return 256 * (k >> 5); }
static inline int rz_q6k_qh_vec(int k) { return k >> 4; }
static inline int rz_q6k_qh_shift(int k) { return 2 * ((k >> 2) & 3); }
static inline int rz_q6k_sc_pair(int j) { return j >> 1; }
static inline int rz_q6k_sc_slot(int j) { return j & 1; }

#endif
