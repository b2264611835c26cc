/* Ryzanstein native CPU backend: shared types, block layouts and the kernel dispatch table.
 *
 * Weights are read from GGUF blocks and repacked once into row-interleaved groups of RZ_GROUP = 16 output
 * rows: for each K-block (32 or 256 input columns) a group stores the 16 rows' scales side by side, then
 * the quants arranged so that one 64-byte load holds 4 consecutive K values of each of the 16 rows (one
 * 32-bit lane per row). A VNNI dot-product instruction then multiplies 16 rows x 4 K by one broadcast group
 * of 4 activation bytes, and the same weight register serves every activation row of the call. The values
 * are the GGUF's own (same scales, same quants, bits only moved): rz_dequant_row reproduces the `gguf`
 * package's dequantization exactly.
 *
 * Activations are quantized per row to int8 with one float scale per 32 columns (for Q4_0, Q4_1, Q5_0, Q8_0
 * weights) or per 256 (for the K-quants), plus the block sums the weight offsets and minimums need. Every
 * kernel computes each output (row r, column c) with integer block dot products, exact, then the same float
 * operations in the same order whatever the number of rows in the call, the tile it sits in, the thread that
 * runs it or the instruction set: outputs are bit-identical across all of these.
 */
#ifndef RZ_H
#define RZ_H

#include <stddef.h>
#include <stdint.h>

#define RZ_GROUP 16   /* weight rows interleaved per group */
#define RZ_TILE 8     /* activation rows a kernel call holds in registers */
#define RZ_ALIGN 64

/* GGML type ids, as stored in GGUF files */
enum {
    RZ_F32 = 0, RZ_F16 = 1, RZ_Q4_0 = 2, RZ_Q4_1 = 3, RZ_Q5_0 = 6, RZ_Q8_0 = 8,
    RZ_Q4_K = 12, RZ_Q6_K = 14, RZ_BF16 = 30,
};

/* ---- GGUF blocks (the source) ---------------------------------------------------------------------- */
typedef struct { uint16_t d; uint8_t qs[16]; } gg_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } gg_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } gg_q5_0;
typedef struct { uint16_t d; int8_t qs[32]; } gg_q8_0;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } gg_q4_k;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } gg_q6_k;
_Static_assert(sizeof(gg_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(gg_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(gg_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(gg_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(gg_q4_k) == 144, "q4_K block");
_Static_assert(sizeof(gg_q6_k) == 210, "q6_K block");

/* ---- repacked chunks: one K-block of one 16-row group ------------------------------------------------
 * "nibbles": 4-bit values of a 32-column span as 4 vectors of 64 bytes; vector j, lane r (bytes 4r..4r+3),
 * byte t: low nibble = column 8j + t, high nibble = column 8j + 4 + t.
 * Q8_0: 8 vectors, vector j lane r byte t = q(r, 4j + t) + 128 (unsigned, so VNNI's u8 x s8 applies). */
typedef struct { uint16_t d[16]; uint8_t qs[8][64]; } rp_q8_0;                        /* 32 columns */
typedef struct { uint16_t d[16]; uint8_t qs[4][64]; } rp_q4_0;                        /* 32 columns */
typedef struct { uint16_t d[16], m[16]; uint8_t qs[4][64]; } rp_q4_1;                 /* 32 columns */
/* Q5_0: qh[j][h] bit (4r + t) = 5th bit of column 8j + 4h + t of row r: one mask per nibble half-vector */
typedef struct { uint16_t d[16]; uint64_t qh[4][2]; uint8_t qs[4][64]; } rp_q5_0;     /* 32 columns */
/* Q4_K: 8 sub-blocks of 32; sc[s][r] the 6-bit scale; m[i][r][t] the 6-bit min of sub-block 2i + t */
typedef struct { uint16_t d[16], dmin[16]; uint8_t sc[8][16]; uint8_t m[4][16][2]; uint8_t qs[32][64]; } rp_q4_k;
/* Q6_K: 16 sub-blocks of 16; sc[i][r][t] scale of sub-block 2i + t; ql the low 4 bits as nibbles; qh[i]
 * the high 2 bits of nibble vectors 2i and 2i+1: byte (lane r, t): bits 0-1 column 16i + t, 2-3 16i + 4 + t,
 * 4-5 16i + 8 + t, 6-7 16i + 12 + t. */
typedef struct { uint16_t d[16]; uint8_t pad[32]; int8_t sc[8][16][2]; uint8_t ql[32][64]; uint8_t qh[16][64]; } rp_q6_k;
/* F16 / BF16 / F32: 32 columns, w[k][r] */
typedef struct { uint16_t w[32][16]; } rp_f16;
typedef struct { float w[32][16]; } rp_f32;
_Static_assert(sizeof(rp_q8_0) == 16 * 34, "repacked q8_0 keeps the size");
_Static_assert(sizeof(rp_q4_0) == 16 * 18, "repacked q4_0 keeps the size");
_Static_assert(sizeof(rp_q4_1) == 16 * 20, "repacked q4_1 keeps the size");
_Static_assert(sizeof(rp_q5_0) == 16 * 22, "repacked q5_0 keeps the size");
_Static_assert(sizeof(rp_q4_k) == 16 * 148, "repacked q4_K: 4 bytes a row more (scales unpacked)");
_Static_assert(sizeof(rp_q6_k) == 16 * 210 + 32, "repacked q6_K: 2 bytes a row more, so that its quants start on a cache line");

/* A repacked weight matrix: rows = output features, cols = input features (K). */
typedef struct {
    int type;              /* RZ_* of the source */
    int rows, cols;        /* logical shape */
    int groups;            /* ceil(rows / 16); padded rows are zero */
    int blocks;            /* K-blocks per row: cols / block_cols */
    size_t chunk_bytes;    /* one K-block of one group */
    size_t group_bytes;    /* blocks * chunk_bytes */
    uint8_t *data;         /* groups * group_bytes, 64-byte aligned */
} rz_tensor;

/* repack `rows` GGUF rows of `cols` columns (row stride src_row_bytes); returns 0, or -1 with *bad the first
 * row whose scales are not finite (a corrupt file) */
int rz_tensor_init(rz_tensor *t, int type, int rows, int cols, const uint8_t *src, size_t src_row_bytes, int *bad);
void rz_tensor_free(rz_tensor *t);
void rz_dequant_row(const rz_tensor *t, int row, float *out);  /* the gguf package's values, exactly */

/* ---- activations ------------------------------------------------------------------------------------
 * The n rows are split into tiles of near-equal size (at most RZ_TILE rows: 9 rows -> 5 + 4); a kernel call
 * takes one tile. Inside a tile the quantized rows are interleaved so that the tile's rows sit side by side
 * for each group of 4 columns: byte (row r, column k) of tile t is at
 *     q + r0(t) * K + (k / 4) * nr(t) * 4 + (r - r0(t)) * 4 + k % 4
 * and the per-block numbers likewise: block b of row r at  base + r0(t) * blocks + b * nr(t) + (r - r0(t)),
 * the 16- and 32-column sums as int16 pairs (blocks 2i, 2i+1 of a row side by side):
 *     base + r0(t) * blocks + (b / 2) * nr(t) * 2 + (r - r0(t)) * 2 + b % 2.
 * So one pointer per tile serves all its rows at constant offsets. The f32 rows `x` stay row-major. */
typedef struct {
    int n, K, cap_n, cap_K;
    int tiles;
    int tile_r0[RZ_TILE + 1], tile_nr[RZ_TILE];  /* up to RZ_TILE * RZ_TILE = 64 rows */
    const float *x;        /* n x K f32, row stride K */
    int8_t *q32;           /* per-32 format */
    float *d32;            /* K/32 per row */
    int32_t *s32;          /* K/32 per row: sum of q per 32 */
    int8_t *q256;          /* per-256 format */
    float *d256;           /* K/256 per row */
    int16_t *h16;          /* K/16 per row: sum of q per 16 (per-256 format), pairs */
    int16_t *h32;          /* K/32 per row: sum of q per 32 (per-256 format), pairs */
    int have32, have256;
} rz_act;

#define RZ_MAX_ROWS (RZ_TILE * RZ_TILE)

/* the tile holding row r */
static inline int rz_act_tile(const rz_act *a, int r) {
    int t = 0;
    while (r >= a->tile_r0[t + 1]) t++;
    return t;
}
/* index of (row r, block b) in a per-block array of `blocks` entries per row */
static inline size_t rz_act_bi(const rz_act *a, int r, int b, int blocks) {
    int t = rz_act_tile(a, r), r0 = a->tile_r0[t], nr = a->tile_nr[t];
    return (size_t)r0 * blocks + (size_t)b * nr + (r - r0);
}
/* index of (row r, block b) in a pair array (int16 sums) */
static inline size_t rz_act_pi(const rz_act *a, int r, int b, int blocks) {
    int t = rz_act_tile(a, r), r0 = a->tile_r0[t], nr = a->tile_nr[t];
    return (size_t)r0 * blocks + (size_t)(b >> 1) * nr * 2 + (size_t)(r - r0) * 2 + (b & 1);
}
/* index of (row r, column k) in q32 / q256 */
static inline size_t rz_act_qi(const rz_act *a, int r, int k) {
    int t = rz_act_tile(a, r), r0 = a->tile_r0[t], nr = a->tile_nr[t];
    return (size_t)r0 * a->K + (size_t)(k >> 2) * nr * 4 + (size_t)(r - r0) * 4 + (k & 3);
}

void rz_act_init(rz_act *a);
int rz_act_reserve(rz_act *a, int n, int K);
void rz_act_free(rz_act *a);
void rz_act_set(rz_act *a, const float *x, int n, int K);     /* forget the quantized forms */
struct rz_isa;
/* quantize (once) for weights of `type`, on this thread; rz_act_need_par (model.h) splits it over a pool */
void rz_act_need(rz_act *a, int type, const struct rz_isa *isa);

/* ---- attention of one query row over the KV cache ------------------------------------------------------ */
typedef struct rz_attn {
    const float *q;        /* n x q_stride: queries after RoPE */
    int q_stride;          /* n_head * head_dim */
    int pos0;              /* position of query row 0; row i sees keys 0..pos0 + i */
    const uint16_t *k;     /* this layer's keys, f16, transposed: [kv head][d][position], row stride kt_stride */
    const uint16_t *v;     /* this layer's values, f16: [position][n_head_kv * head_dim] */
    int kt_stride;         /* positions per key row: n_ctx rounded up to 16 (lanes past T are never used) */
    int head_dim, n_head, n_head_kv;
    float scale;
    float *out;            /* n x q_stride */
} rz_attn;

/* ---- kernels ---------------------------------------------------------------------------------------- */
/* out[r * ldo + c] for the rows of activation tile `tile` and the columns of groups g0..g1-1 */
typedef void rz_kernel_fn(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo);
typedef rz_kernel_fn *rz_kernel;

enum { RZ_ISA_C, RZ_ISA_AVX2, RZ_ISA_AVX512, RZ_ISA_COUNT };

typedef struct rz_isa {
    const char *name;
    int id;                /* RZ_ISA_*: the column of rz_type.kernel */
    /* transformer pieces (ops_impl.h), compiled per instruction set from one source, equal on all */
    void (*attention)(const struct rz_attn *a, int kv_head, int row0, int row1, float *scratch);
    void (*rmsnorm)(const float *x, const float *w, float eps, int dim, float *out);
    void (*swiglu)(const float *g, const float *u, int n, float *out);
    void (*quant)(rz_act *a, int block_cols, int row, int b0, int b1);  /* activation blocks b0..b1-1 */
} rz_isa;

extern const rz_isa rz_isa_ref;
#if defined(__x86_64__) || defined(__i386__)
extern const rz_isa rz_isa_avx2;
extern const rz_isa rz_isa_avx512;
#endif
const rz_isa *rz_isa_best(void);
const rz_isa *rz_isa_by_name(const char *name);  /* NULL if unknown or this CPU lacks it */
int rz_isa_supported(const rz_isa *isa);

/* ---- the weight types: one row each in types.c --------------------------------------------------------
 * What the repacker, the tests' dequantization, the activation quantizer and the matmul dispatch need to
 * know of a type, in one place (the shape of ggml-cpu's type_traits_cpu). A new type is a row there, its
 * rp_* chunk with accessors in layout.h, a pack and a dequant function in repack.c, its reference kernel
 * in kern_ref.c and one unpacker per SIMD instruction set under that set's tile driver. */
enum { RZ_ACT_F32, RZ_ACT_Q32, RZ_ACT_Q256 };  /* activation form the kernels read: x, or int8 per 32 / 256 */

typedef int rz_pack_fn(const uint8_t *src, uint8_t *chunk, int r);  /* a GGUF block into lane r; 0: scale not finite */
typedef void rz_dequant_fn(const uint8_t *chunk, int r, float *y);  /* lane r of a chunk: block_cols floats */

typedef struct {
    const char *name;
    int block_cols;        /* columns per block (0: an unsupported type) */
    int act;               /* RZ_ACT_* */
    size_t src_bytes;      /* one GGUF block */
    size_t chunk_bytes;    /* one repacked block of a 16-row group */
    rz_pack_fn *pack;
    rz_dequant_fn *dequant;
    rz_kernel kernel[RZ_ISA_COUNT];  /* by rz_isa.id; NULL where this build has no such instruction set */
} rz_type;

#define RZ_TYPE_COUNT 31   /* GGML ids 0..30 */
extern const rz_type rz_types[RZ_TYPE_COUNT];

/* the functions of every type, named by it: rz_pack_<t>, rz_dequant_<t>, rz_mm_<t>_<instruction set> */
#define RZ_FOR_TYPES(X) X(q4_0) X(q4_1) X(q5_0) X(q8_0) X(q4_k) X(q6_k) X(f16) X(bf16) X(f32)
#define RZ_DECLARE_TYPE(t) rz_pack_fn rz_pack_##t; rz_dequant_fn rz_dequant_##t; \
    rz_kernel_fn rz_mm_##t##_c, rz_mm_##t##_avx2, rz_mm_##t##_avx512;
RZ_FOR_TYPES(RZ_DECLARE_TYPE)

const rz_type *rz_type_of(int type);      /* NULL if unsupported */
int rz_block_cols(int type);              /* 32 or 256; 0 if unsupported */
size_t rz_chunk_bytes(int type);
size_t rz_src_row_bytes(int type, int cols);
int rz_type_supported(int type);
const char *rz_type_name(int type);
rz_kernel rz_kernel_for(const rz_isa *isa, int type);

/* ---- half precision --------------------------------------------------------------------------------- */
static inline float rz_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  /* subnormal: normalise */
        int e = -1;
        do { e++; man <<= 1; } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    union { uint32_t u; float f; } v = {bits};
    return v.f;
}

/* round to nearest even, as F16C's vcvtps2ph does */
static inline uint16_t rz_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t x = v.u, sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);                 /* rounds to >= 65520: inf */
    if (ax < 0x38800000) {                                                    /* subnormal or zero */
        if (ax < 0x33000000) return (uint16_t)sign;                           /* < 2^-25: zero */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000, shift = 126 - e;  /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = ((ax - 0x38000000) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

static inline float rz_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

#endif
