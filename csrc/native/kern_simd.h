/* What the SIMD kernel files share (included by kern_avx2.c and kern_avx512.c after their target pragma):
 * the activation view of a tile, the weight prefetch, and the switch that makes a tile's row count a
 * compile-time constant for the tile driver. Each file then has one unpacker per quantized type and one
 * driver (layouts in rz.h and layout.h; the drivers' shape is described in each file).
 */
#ifndef RZ_KERN_SIMD_H
#define RZ_KERN_SIMD_H

#include <immintrin.h>

#include "layout.h"
#include "rz.h"

#ifdef RZ_EMULATE_AVX512
/* kern_avx512.c on tests/native_emu/'s scalar stand-ins (which <immintrin.h> then finds), run there for its
 * logic: forced inlining and unrolling change no result but made that build take 40 s instead of 1 */
#define INLINE static inline
#define UNROLL
#else
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")
#endif

typedef struct {  /* the activation numbers of one tile (rz.h): its rows side by side */
    const int8_t *q;
    const float *d;
    const int32_t *s;    /* 32-column types: sum of q per block */
    const int16_t *h;    /* 256-column types: int16 pair sums per 16 or 32 columns (the unpacker says which) */
} tile_act;

INLINE tile_act tile_act_of(const rz_act *a, int tile, int act, int hsums, int K, int nb) {
    const size_t r0 = (size_t)a->tile_r0[tile];
    if (act == RZ_ACT_Q32) return (tile_act){a->q32 + r0 * K, a->d32 + r0 * nb, a->s32 + r0 * nb, NULL};
    return (tile_act){a->q256 + r0 * K, a->d256 + r0 * nb, NULL, hsums == 16 ? a->h16 + r0 * (K / 16) : a->h32 + r0 * (K / 32)};
}

/* pair sums i (of a block's 16- or 32-column sums) of row r of a tile of NR rows, as one int32 */
INLINE int32_t act_pair(const tile_act *t, int i, int r, int NR) {
    int32_t pair;
    __builtin_memcpy(&pair, t->h + ((size_t)i * NR + r) * 2, 4);
    return pair;
}

/* Software prefetch of the weights PF_AHEAD bytes ahead, by the first tile only (later tiles find the
 * work unit in cache): the hardware prefetcher alone let the dot products and the memory reads take
 * turns instead of overlapping once a call has several rows to compute. Into L2 (T1), not L1 (T0): the
 * L1 prefetches competed with the activation rows and the kernel's own loads, and at n = 8 on the 1.5B
 * a forward took ~35% less time with T1 (AVX-512, A/B of the two builds, interleaved, 2026-12-02 and
 * 2026-12-06). PF_AHEAD=0 builds without it. */
#ifndef PF_AHEAD /* PF_AHEAD, PF_HINT (and model.c's WORK_BYTES) can be set by CFLAGS for A/B builds */
#define PF_AHEAD 4096
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T1
#endif
INLINE void prefetch_chunk(const uint8_t *p, size_t bytes) {
    if (PF_AHEAD)
        for (size_t o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + PF_AHEAD + o, PF_HINT);
}

/* an entry point: for each group, the tile's row count (1..RZ_TILE) made a constant for CALL(N) */
#define RZ_ENTRY(NAME, CALL)                                                                           \
    void NAME(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) {   \
        for (int g = g0; g < g1; g++) switch (a->tile_nr[tile]) {                                      \
            case 1: CALL(1); break;                                                                    \
            case 2: CALL(2); break;                                                                    \
            case 3: CALL(3); break;                                                                    \
            case 4: CALL(4); break;                                                                    \
            case 5: CALL(5); break;                                                                    \
            case 6: CALL(6); break;                                                                    \
            case 7: CALL(7); break;                                                                    \
            default: CALL(8); break;                                                                   \
            }                                                                                          \
    }

#endif
