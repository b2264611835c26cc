/* The weight types: one row each, everything a type is to the rest of the backend (as ggml-cpu's
 * type_traits_cpu[] is to ggml): its block, its chunk, its repacker and dequantizer, the activation form its
 * kernels read, and its kernel for each instruction set. Dispatch is a look-up in this table.
 */
#include "rz.h"

#if defined(__x86_64__)
#define KERNELS(t) {rz_mm_##t##_c, rz_mm_##t##_avx2, rz_mm_##t##_avx512}
#else
#define KERNELS(t) {rz_mm_##t##_c, NULL, NULL}
#endif
#define FNS(t) rz_pack_##t, rz_dequant_##t, KERNELS(t)

const rz_type rz_types[RZ_TYPE_COUNT] = {
    /*            name     cols  activations  GGUF block        chunk            functions */
    [RZ_Q4_0] = {"Q4_0",   32,  RZ_ACT_Q32,  sizeof(gg_q4_0),  sizeof(rp_q4_0), FNS(q4_0)},
    [RZ_Q4_1] = {"Q4_1",   32,  RZ_ACT_Q32,  sizeof(gg_q4_1),  sizeof(rp_q4_1), FNS(q4_1)},
    [RZ_Q5_0] = {"Q5_0",   32,  RZ_ACT_Q32,  sizeof(gg_q5_0),  sizeof(rp_q5_0), FNS(q5_0)},
    [RZ_Q8_0] = {"Q8_0",   32,  RZ_ACT_Q32,  sizeof(gg_q8_0),  sizeof(rp_q8_0), FNS(q8_0)},
    [RZ_Q4_K] = {"Q4_K",   256, RZ_ACT_Q256, sizeof(gg_q4_k),  sizeof(rp_q4_k), FNS(q4_k)},
    [RZ_Q6_K] = {"Q6_K",   256, RZ_ACT_Q256, sizeof(gg_q6_k),  sizeof(rp_q6_k), FNS(q6_k)},
    [RZ_F16]  = {"F16",    32,  RZ_ACT_F32,  32 * 2,           sizeof(rp_f16),  FNS(f16)},
    [RZ_BF16] = {"BF16",   32,  RZ_ACT_F32,  32 * 2,           sizeof(rp_f16),  FNS(bf16)},
    [RZ_F32]  = {"F32",    32,  RZ_ACT_F32,  32 * 4,           sizeof(rp_f32),  FNS(f32)},
};

const rz_type *rz_type_of(int type) {
    return type >= 0 && type < RZ_TYPE_COUNT && rz_types[type].block_cols ? &rz_types[type] : NULL;
}

int rz_block_cols(int type) { return rz_type_of(type) ? rz_types[type].block_cols : 0; }
int rz_type_supported(int type) { return rz_type_of(type) != NULL; }
const char *rz_type_name(int type) { return rz_type_of(type) ? rz_types[type].name : "?"; }
size_t rz_chunk_bytes(int type) { return rz_type_of(type) ? rz_types[type].chunk_bytes : 0; }

size_t rz_src_row_bytes(int type, int cols) {
    const rz_type *t = rz_type_of(type);
    return t ? (size_t)(cols / t->block_cols) * t->src_bytes : 0;
}

rz_kernel rz_kernel_for(const rz_isa *isa, int type) {
    const rz_type *t = rz_type_of(type);
    return t ? t->kernel[isa->id] : NULL;
}
