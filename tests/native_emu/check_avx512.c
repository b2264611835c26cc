/* The AVX-512 kernels against the portable reference, bit for bit, on a CPU without AVX-512.
 *
 * tests/test_native_backend.py holds every SIMD kernel to kern_ref.c, but only on a CPU that has the
 * instruction set; this machine and CI have AVX2 and no AVX-512. So tests/test_native_emulated.py builds
 * csrc/native/kern_avx512.c with -DRZ_EMULATE_AVX512 -I tests/native_emu (its intrinsics become the scalar
 * stand-ins of immintrin.h beside this file, each following the instruction's documented semantics), links
 * it with kern_ref.c, repack.c, act.c and types.c, and runs this program. It checks, on random inputs:
 *   - the matmul kernel of every weight type (6 quantized, F16, BF16, F32), 67 weight rows (4 full 16-row
 *     groups and a partial one) x 512 columns, at n = 1..24, 32, 40 and 64 activation rows;
 *   - the ops_impl.h functions compiled for AVX-512 (activation quantization per 32 and per 256, RMSNorm,
 *     SwiGLU, attention with grouped heads over several positions and row counts).
 * Each line printed is one check, "equal" or "DIFFER"; the exit status is the number of checks that differ.
 * What this cannot see: the compiler's own code for the real instructions (register allocation, a wrong
 * intrinsic header), only the kernels' logic; a CPU with AVX-512 VNNI runs the real thing in
 * test_native_backend.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rz.h"

extern const rz_isa rz_isa_avx512;  /* rz.h declares it on x86 only; the emulated build has it anywhere */

#if defined(__x86_64__) || defined(__i386__)
/* types.c's table names the AVX2 kernels too; this program never calls them, and building kern_avx2.c
 * would take longer than all the rest */
#define AVX2_STUB(t)                                                                                    \
    void rz_mm_##t##_avx2(const rz_tensor *w, int g0, int g1, const rz_act *a, int tile, float *out, int ldo) { \
        (void)w, (void)g0, (void)g1, (void)a, (void)tile, (void)out, (void)ldo;                                 \
        abort();                                                                                                \
    }
RZ_FOR_TYPES(AVX2_STUB)
#endif

static uint32_t rng = 12345;
static uint32_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() % 1000001) * 1e-6f; }
static uint16_t f16_scale(void) { return rz_f32_to_f16(0.001f + (float)(rnd() % 10000) * 1e-6f); }  /* [0.001, 0.011) */

static int differ = 0;
static void report(const char *what, int bad, int of) {
    if (of) printf("%-36s %s (%d of %d differ)\n", what, bad ? "DIFFER" : "equal", bad, of);
    else printf("%-36s %s\n", what, bad ? "DIFFER" : "equal");
    differ += bad != 0;
}

/* random GGUF blocks of `type`: random quants, small positive finite scales (and minimums) */
static uint8_t *random_weights(int type, int rows, int cols) {
    const rz_type *ty = rz_type_of(type);
    const size_t rb = rz_src_row_bytes(type, cols), nb = (size_t)cols / ty->block_cols;
    uint8_t *src = malloc(rb * rows);
    for (size_t i = 0; i < rb * rows; i++) src[i] = (uint8_t)rnd();
    for (int r = 0; r < rows; r++) for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = src + r * rb + b * ty->src_bytes;
        uint16_t h;
        if (type == RZ_Q6_K) {
            h = f16_scale(); memcpy(blk + 208, &h, 2);
        } else if (type == RZ_Q4_1 || type == RZ_Q4_K) {  /* d, then m / dmin */
            h = f16_scale(); memcpy(blk, &h, 2);
            h = f16_scale(); memcpy(blk + 2, &h, 2);
        } else if (type == RZ_F16 || type == RZ_BF16 || type == RZ_F32) {
            for (int k = 0; k < 32; k++) {
                float f = uniform(-1.0f, 1.0f);
                uint32_t u;
                memcpy(&u, &f, 4);
                if (type == RZ_F32) memcpy(blk + 4 * k, &f, 4);
                else { h = type == RZ_F16 ? rz_f32_to_f16(f) : (uint16_t)(u >> 16); memcpy(blk + 2 * k, &h, 2); }
            }
        } else {
            h = f16_scale(); memcpy(blk, &h, 2);
        }
    }
    return src;
}

static void check_matmul(void) {
    const int types[] = {RZ_Q4_0, RZ_Q4_1, RZ_Q5_0, RZ_Q8_0, RZ_Q4_K, RZ_Q6_K, RZ_F16, RZ_BF16, RZ_F32};
    int ns[40], count = 0;
    for (int n = 1; n <= 24; n++) ns[count++] = n;
    ns[count++] = 32, ns[count++] = 40, ns[count++] = RZ_MAX_ROWS;
    const int rows = 67, cols = 512;
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const int type = types[ti];
        const rz_type *ty = rz_type_of(type);
        uint8_t *src = random_weights(type, rows, cols);
        rz_tensor t;
        int badrow;
        if (rz_tensor_init(&t, type, rows, cols, src, rz_src_row_bytes(type, cols), &badrow)) {
            printf("%s: repacking failed at row %d\n", ty->name, badrow);
            exit(100);
        }
        int bad = 0;
        for (int i = 0; i < count; i++) {
            const int n = ns[i];
            float *x = malloc(sizeof(float) * n * cols), *o1 = calloc((size_t)n * rows, 4), *o2 = calloc((size_t)n * rows, 4);
            for (int k = 0; k < n * cols; k++) x[k] = uniform(-1.0f, 1.0f);
            rz_act a;
            rz_act_init(&a);
            rz_act_reserve(&a, n, cols);
            rz_act_set(&a, x, n, cols);
            rz_act_need(&a, type, &rz_isa_ref);
            for (int tile = 0; tile < a.tiles; tile++) {
                ty->kernel[RZ_ISA_C](&t, 0, t.groups, &a, tile, o1, rows);
                ty->kernel[RZ_ISA_AVX512](&t, 0, t.groups, &a, tile, o2, rows);
            }
            bad += memcmp(o1, o2, sizeof(float) * n * rows) != 0;
            rz_act_free(&a);
            free(x), free(o1), free(o2);
        }
        char what[64];
        snprintf(what, sizeof what, "matmul %s", ty->name);
        report(what, bad, count);
        rz_tensor_free(&t);
        free(src);
    }
}

/* activation quantization per 32 and per 256 columns: every byte of the quantized forms */
static void check_quant(void) {
    const int ns[] = {1, 3, 8, 13, 64}, K = 512;
    int bad = 0;
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
        const int n = ns[i];
        float *x = malloc(sizeof(float) * n * K);
        for (int k = 0; k < n * K; k++) x[k] = uniform(-3.0f, 3.0f) * (float)(1 + k % 7);
        for (int k = 0; k < 32; k++) x[k] = 0.0f;  /* a zero block (scale 0) */
        for (int k = 32; k < 64; k++) x[k] = (float)(k - 48) * 0.5f;  /* halves: ties to round to even */
        rz_act a, b;
        rz_act_init(&a), rz_act_init(&b);
        rz_act_reserve(&a, n, K), rz_act_reserve(&b, n, K);
        rz_act_set(&a, x, n, K), rz_act_set(&b, x, n, K);
        rz_act_need(&a, RZ_Q8_0, &rz_isa_ref), rz_act_need(&b, RZ_Q8_0, &rz_isa_avx512);
        rz_act_need(&a, RZ_Q4_K, &rz_isa_ref), rz_act_need(&b, RZ_Q4_K, &rz_isa_avx512);
        const size_t nk = (size_t)n * K;
        bad += memcmp(a.q32, b.q32, nk) || memcmp(a.d32, b.d32, nk / 32 * 4) || memcmp(a.s32, b.s32, nk / 32 * 4) ||
               memcmp(a.q256, b.q256, nk) || memcmp(a.d256, b.d256, nk / 256 * 4) ||
               memcmp(a.h16, b.h16, nk / 16 * 2) || memcmp(a.h32, b.h32, nk / 32 * 2);
        rz_act_free(&a), rz_act_free(&b);
        free(x);
    }
    report("activation quantization", bad, (int)(sizeof ns / sizeof *ns));
}

static void check_rmsnorm_swiglu(void) {
    const int dims[] = {16, 64, 576, 1536}, trials = 16;
    int bad_norm = 0, bad_glu = 0;
    for (size_t i = 0; i < trials * sizeof dims / sizeof *dims; i++) {
        const int d = dims[i % (sizeof dims / sizeof *dims)];
        float *x = malloc(4 * d), *w = malloc(4 * d), *o1 = malloc(4 * d), *o2 = malloc(4 * d);
        for (int k = 0; k < d; k++) x[k] = uniform(-4.0f, 4.0f), w[k] = uniform(-2.0f, 2.0f);
        rz_isa_ref.rmsnorm(x, w, 1e-6f, d, o1);
        rz_isa_avx512.rmsnorm(x, w, 1e-6f, d, o2);
        bad_norm += memcmp(o1, o2, 4 * d) != 0;
        for (int k = 0; k < d; k++) x[k] = uniform(-100.0f, 100.0f);  /* past the exponential's clamps */
        rz_isa_ref.swiglu(x, w, d, o1);
        rz_isa_avx512.swiglu(x, w, d, o2);
        bad_glu += memcmp(o1, o2, 4 * d) != 0;
        free(x), free(w), free(o1), free(o2);
    }
    report("rmsnorm", bad_norm, trials * (int)(sizeof dims / sizeof *dims));
    report("swiglu", bad_glu, trials * (int)(sizeof dims / sizeof *dims));
}

/* attention of n query rows at positions pos0.. over an f16 cache, every kv head */
static int attention_differs(int hd, int n_head, int n_head_kv, int pos0, int n) {
    const int T = pos0 + n, kts = (T + 15) & ~15, qs = n_head * hd;
    uint16_t *k = malloc(2 * (size_t)n_head_kv * hd * kts), *v = malloc(2 * (size_t)T * n_head_kv * hd);
    float *q = malloc(4 * (size_t)n * qs), *o1 = calloc((size_t)n * qs, 4), *o2 = calloc((size_t)n * qs, 4);
    float *scratch = malloc(4 * 4 * (size_t)((T + 63) & ~63));
    for (size_t i = 0; i < (size_t)n_head_kv * hd * kts; i++) k[i] = rz_f32_to_f16(uniform(-1.0f, 1.0f));
    for (size_t i = 0; i < (size_t)T * n_head_kv * hd; i++) v[i] = rz_f32_to_f16(uniform(-1.0f, 1.0f));
    for (size_t i = 0; i < (size_t)n * qs; i++) q[i] = uniform(-2.0f, 2.0f);
    rz_attn a = {q, qs, pos0, k, v, kts, hd, n_head, n_head_kv, 1.0f / sqrtf((float)hd), o1};
    for (int h = 0; h < n_head_kv; h++) rz_isa_ref.attention(&a, h, 0, n, scratch);
    a.out = o2;
    for (int h = 0; h < n_head_kv; h++) rz_isa_avx512.attention(&a, h, 0, n, scratch);
    const int bad = memcmp(o1, o2, 4 * (size_t)n * qs) != 0;
    free(k), free(v), free(q), free(o1), free(o2), free(scratch);
    return bad;
}

static void check_attention(void) {
    /* head_dim 64 (two 16-lane halves of 32) and 48 (a last half alone); 1, 3, 9 rows (1..4 pairs a chunk);
     * histories of 0, 5, 37 and 100 positions (one or several 32-position steps, a partial last vector) */
    const int hds[] = {64, 48}, ns[] = {1, 3, 9}, pos[] = {0, 5, 37, 100};
    int bad = 0, of = 0;
    for (int i = 0; i < 2; i++) for (int j = 0; j < 3; j++) for (int p = 0; p < 4; p++, of++)
        bad += attention_differs(hds[i], 6, 2, pos[p], ns[j]);
    report("attention", bad, of);
}

int main(void) {
    check_matmul();
    check_quant();
    check_rmsnorm_swiglu();
    check_attention();
    return differ;
}
