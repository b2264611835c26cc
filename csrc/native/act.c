/* Activation buffers: int8 rows with per-block float scales, the other operand of every quantized kernel.
 *
 * Per 32 columns (for Q4_0, Q4_1, Q5_0 and Q8_0 weights) or per 256 (for Q4_K and Q6_K, whose scales are
 * per 256 too), plus the block sums of q the weight offsets and minimums need. The quantizer itself is
 * ops_impl.h's, compiled per instruction set, identical on all. Each row is quantized alone: a row's values
 * never depend on its neighbours.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rz.h"

void rz_act_init(rz_act *a) { memset(a, 0, sizeof *a); }

void rz_act_free(rz_act *a) {
    free(a->q32);
    free(a->q256);
    free(a->d32);
    free(a->s32);
    free(a->d256);
    free(a->h16);
    free(a->h32);
    rz_act_init(a);
}

static void *alloc64(size_t bytes) { return aligned_alloc(RZ_ALIGN, (bytes + RZ_ALIGN - 1) / RZ_ALIGN * RZ_ALIGN + RZ_ALIGN); }

int rz_act_reserve(rz_act *a, int n, int K) {
    if (n > RZ_MAX_ROWS) return -1;
    if (n <= a->cap_n && K <= a->cap_K) return 0;
    int cn = n > a->cap_n ? n : a->cap_n, cK = K > a->cap_K ? K : a->cap_K;
    rz_act_free(a);
    size_t nk = (size_t)cn * cK;
    a->q32 = alloc64(nk);
    a->q256 = alloc64(nk);
    a->d32 = alloc64(nk / 32 * sizeof(float) + 64);
    a->s32 = alloc64(nk / 32 * sizeof(int32_t) + 64);
    a->d256 = alloc64(nk / 256 * sizeof(float) + 64);
    a->h16 = alloc64(nk / 16 * sizeof(int16_t) + 64);
    a->h32 = alloc64(nk / 32 * sizeof(int16_t) + 64);
    if (!a->q32 || !a->q256 || !a->d32 || !a->s32 || !a->d256 || !a->h16 || !a->h32) {
        rz_act_free(a);
        return -1;
    }
    a->cap_n = cn;
    a->cap_K = cK;
    return 0;
}

void rz_act_set(rz_act *a, const float *x, int n, int K) {
    a->x = x;
    a->n = n;
    a->K = K;
    a->have32 = a->have256 = 0;
    a->tiles = (n + RZ_TILE - 1) / RZ_TILE;
    a->tile_r0[0] = 0;
    for (int t = 0; t < a->tiles; t++) {
        a->tile_nr[t] = n / a->tiles + (t < n % a->tiles);
        a->tile_r0[t + 1] = a->tile_r0[t] + a->tile_nr[t];
    }
}

void rz_act_need(rz_act *a, int type, const rz_isa *isa) {
    const int bc = rz_block_cols(type);
    if (rz_types[type].act == RZ_ACT_F32) return;  /* float kernels read x */
    int *have = bc == 32 ? &a->have32 : &a->have256;
    if (*have) return;
    for (int r = 0; r < a->n; r++) isa->quant(a, bc, r, 0, a->K / bc);
    *have = 1;
}
