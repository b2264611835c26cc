/* Scalar stand-ins for the AVX-512 intrinsics that csrc/native/kern_avx512.c uses, so that its logic runs on a
 * CPU without AVX-512 (this machine, CI) and can be held to kern_ref.c bit for bit: check_avx512.c beside
 * this file, built and run by tests/test_native_emulated.py. kern_avx512.c built with -DRZ_EMULATE_AVX512
 * drops its `#pragma GCC target`, and `-I tests/native_emu` makes its `#include <immintrin.h>` find this file
 * instead of the compiler's. Nothing here is ever part of the extension.
 *
 * Each stand-in does what Intel's Intrinsics Guide documents for the instruction, lane by lane (the
 * operation's pseudocode, element widths, signedness, wrap-around, masks and shift counts past the width);
 * the float ones round once as the instruction does: _mm512_fmadd_ps / _mm512_fnmadd_ps are fmaf (one
 * rounding of a * b + c), the others one IEEE float operation each (the build uses -ffp-contract=off, so the
 * compiler fuses nothing). Only the intrinsics the file uses are here: a new one in kern_avx512.c fails
 * this build (no declaration, no definition) until its stand-in is added.
 *
 * The vector types are GCC vectors of the real sizes, as in the compiler's own header, so the casts to and
 * from ops_impl.h's v16f compile; the lanes are read and written through the union emu512.
 */
#ifndef RZ_EMU_IMMINTRIN_H
#define RZ_EMU_IMMINTRIN_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float __m512 __attribute__((vector_size(64), may_alias));
typedef long long __m512i __attribute__((vector_size(64), may_alias));
typedef long long __m256i __attribute__((vector_size(32), may_alias));
typedef long long __m128i __attribute__((vector_size(16), may_alias));
typedef uint16_t __mmask16;
typedef uint64_t __mmask64;

typedef union { __m512i i; __m512 f; uint8_t u8[64]; int8_t i8[64]; uint16_t u16[32]; int16_t i16[32];
                uint32_t u32[16]; int32_t i32[16]; float f32[16]; } emu512;
typedef union { __m256i i; uint8_t u8[32]; int8_t i8[32]; uint16_t u16[16]; } emu256;
typedef union { __m128i i; uint8_t u8[16]; } emu128;

#define EMU static inline
#define LANES(n) for (int i = 0; i < (n); i++)

/* ---- loads, stores, constants, casts, prefetch ---- */
#define _MM_HINT_T1 2
#define _MM_HINT_T0 3
EMU void _mm_prefetch(const void *p, int hint) { (void)p, (void)hint; }  /* a hint: no architectural effect */
EMU __m512i _mm512_loadu_si512(const void *p) { emu512 r; memcpy(&r, p, 64); return r.i; }
EMU __m256i _mm256_loadu_si256(const void *p) { emu256 r; memcpy(&r, p, 32); return r.i; }
EMU __m128i _mm_loadu_si128(const void *p) { emu128 r; memcpy(&r, p, 16); return r.i; }
EMU __m512 _mm512_loadu_ps(const void *p) { emu512 r; memcpy(&r, p, 64); return r.f; }
EMU void _mm512_storeu_ps(void *p, __m512 v) { memcpy(p, &v, 64); }
EMU void _mm512_mask_storeu_ps(void *p, __mmask16 k, __m512 v) {  /* lanes whose mask bit is clear: untouched */
    emu512 a = {.f = v};
    LANES(16) if ((k >> i) & 1) memcpy((char *)p + 4 * i, &a.f32[i], 4);
}
EMU __m512i _mm512_set1_epi32(int x) { emu512 r; LANES(16) r.i32[i] = x; return r.i; }
EMU __m512i _mm512_set1_epi16(short x) { emu512 r; LANES(32) r.i16[i] = x; return r.i; }
EMU __m512i _mm512_set1_epi8(char x) { emu512 r; LANES(64) r.i8[i] = (int8_t)x; return r.i; }
EMU __m512 _mm512_set1_ps(float x) { emu512 r; LANES(16) r.f32[i] = x; return r.f; }
EMU __m512i _mm512_setzero_si512(void) { emu512 r; memset(&r, 0, 64); return r.i; }
EMU __m512 _mm512_setzero_ps(void) { emu512 r; memset(&r, 0, 64); return r.f; }
EMU __m512 _mm512_castsi512_ps(__m512i v) { emu512 r = {.i = v}; return r.f; }  /* the same bits */
EMU __mmask64 _cvtu64_mask64(uint64_t m) { return m; }

/* ---- integer lane operations (wrap-around where the instruction wraps) ---- */
EMU __m512i _mm512_and_si512(__m512i a, __m512i b) {
    emu512 x = {.i = a}, y = {.i = b};
    LANES(64) x.u8[i] &= y.u8[i];
    return x.i;
}
/* shifts by an immediate: a count past the element width gives 0 (logical) or the sign (arithmetic) */
EMU __m512i _mm512_srli_epi16(__m512i a, unsigned n) {
    emu512 x = {.i = a};
    LANES(32) x.u16[i] = n > 15 ? 0 : (uint16_t)(x.u16[i] >> n);
    return x.i;
}
EMU __m512i _mm512_slli_epi16(__m512i a, unsigned n) {
    emu512 x = {.i = a};
    LANES(32) x.u16[i] = n > 15 ? 0 : (uint16_t)(x.u16[i] << n);
    return x.i;
}
EMU __m512i _mm512_slli_epi32(__m512i a, unsigned n) {
    emu512 x = {.i = a};
    LANES(16) x.u32[i] = n > 31 ? 0 : x.u32[i] << n;
    return x.i;
}
EMU __m512i _mm512_srai_epi32(__m512i a, unsigned n) {
    emu512 x = {.i = a};
    LANES(16) x.i32[i] = x.i32[i] >> (n > 31 ? 31 : n);  /* GCC: >> of a negative int is arithmetic */
    return x.i;
}
EMU __m512i _mm512_add_epi32(__m512i a, __m512i b) {
    emu512 x = {.i = a}, y = {.i = b};
    LANES(16) x.u32[i] += y.u32[i];
    return x.i;
}
EMU __m512i _mm512_sub_epi32(__m512i a, __m512i b) {
    emu512 x = {.i = a}, y = {.i = b};
    LANES(16) x.u32[i] -= y.u32[i];
    return x.i;
}
/* the low 32 / 16 bits of the product */
EMU __m512i _mm512_mullo_epi32(__m512i a, __m512i b) {
    emu512 x = {.i = a}, y = {.i = b};
    LANES(16) x.u32[i] *= y.u32[i];
    return x.i;
}
EMU __m512i _mm512_mullo_epi16(__m512i a, __m512i b) {
    emu512 x = {.i = a}, y = {.i = b};
    LANES(32) x.u16[i] = (uint16_t)((int32_t)x.i16[i] * y.i16[i]);
    return x.i;
}
/* vpaddb under a write mask, lanes with a clear bit from src */
EMU __m512i _mm512_mask_add_epi8(__m512i src, __mmask64 k, __m512i a, __m512i b) {
    emu512 r = {.i = src}, x = {.i = a}, y = {.i = b};
    LANES(64) if ((k >> i) & 1) r.u8[i] = (uint8_t)(x.u8[i] + y.u8[i]);
    return r.i;
}
/* vpternlogd: bit j of the result is bit (a_j << 2 | b_j << 1 | c_j) of imm (per bit, so per byte here) */
EMU __m512i _mm512_ternarylogic_epi32(__m512i a, __m512i b, __m512i c, int imm) {
    emu512 x = {.i = a}, y = {.i = b}, z = {.i = c};
    LANES(64) {
        uint8_t r = 0;
        for (int j = 0; j < 8; j++) {
            const int idx = ((x.u8[i] >> j) & 1) << 2 | ((y.u8[i] >> j) & 1) << 1 | ((z.u8[i] >> j) & 1);
            r |= (uint8_t)(((imm >> idx) & 1) << j);
        }
        x.u8[i] = r;
    }
    return x.i;
}

/* ---- VNNI: 4 (u8 x s8) or 2 (s16 x s16) products per int32 lane, added to it without saturation ---- */
EMU __m512i _mm512_dpbusd_epi32(__m512i src, __m512i a, __m512i b) {
    emu512 s = {.i = src}, u = {.i = a}, q = {.i = b};
    LANES(16) {
        int32_t t = 0;
        for (int j = 0; j < 4; j++) t += (int32_t)u.u8[4 * i + j] * q.i8[4 * i + j];
        s.u32[i] += (uint32_t)t;
    }
    return s.i;
}
EMU __m512i _mm512_dpwssd_epi32(__m512i src, __m512i a, __m512i b) {
    emu512 s = {.i = src}, x = {.i = a}, y = {.i = b};
    LANES(16) {
        const int32_t p0 = (int32_t)x.i16[2 * i] * y.i16[2 * i], p1 = (int32_t)x.i16[2 * i + 1] * y.i16[2 * i + 1];
        s.u32[i] += (uint32_t)p0 + (uint32_t)p1;
    }
    return s.i;
}

/* ---- widening ---- */
EMU __m512i _mm512_cvtepu8_epi32(__m128i a) {
    emu128 x = {.i = a};
    emu512 r;
    LANES(16) r.i32[i] = x.u8[i];
    return r.i;
}
EMU __m512i _mm512_cvtepu8_epi16(__m256i a) {
    emu256 x = {.i = a};
    emu512 r;
    LANES(32) r.i16[i] = x.u8[i];
    return r.i;
}
EMU __m512i _mm512_cvtepi8_epi16(__m256i a) {
    emu256 x = {.i = a};
    emu512 r;
    LANES(32) r.i16[i] = x.i8[i];
    return r.i;
}
EMU __m512i _mm512_cvtepu16_epi32(__m256i a) {
    emu256 x = {.i = a};
    emu512 r;
    LANES(16) r.i32[i] = x.u16[i];
    return r.i;
}

/* ---- floats ---- */
/* vcvtph2ps: f16 -> f32 is exact (subnormal halves become normal floats; NaN payloads kept, quiet bit set) */
EMU float emu_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0);
    else if (exp) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (!man) bits = sign;
    else {
        int e = -1;
        do { e++; man <<= 1; } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
EMU __m512 _mm512_cvtph_ps(__m256i a) {
    emu256 x = {.i = a};
    emu512 r;
    LANES(16) r.f32[i] = emu_f16_to_f32(x.u16[i]);
    return r.f;
}
/* vcvtdq2ps: rounded in the current mode (nearest even), as the C conversion is */
EMU __m512 _mm512_cvtepi32_ps(__m512i a) {
    emu512 x = {.i = a};
    LANES(16) x.f32[i] = (float)x.i32[i];
    return x.f;
}
EMU __m512 _mm512_mul_ps(__m512 a, __m512 b) {
    emu512 x = {.f = a}, y = {.f = b};
    LANES(16) x.f32[i] = x.f32[i] * y.f32[i];
    return x.f;
}
/* vmaxps: a > b ? a : b, so b where either is NaN or both are zeros */
EMU __m512 _mm512_max_ps(__m512 a, __m512 b) {
    emu512 x = {.f = a}, y = {.f = b};
    LANES(16) x.f32[i] = x.f32[i] > y.f32[i] ? x.f32[i] : y.f32[i];
    return x.f;
}
/* a * b + c and -(a * b) + c, each rounded once */
EMU __m512 _mm512_fmadd_ps(__m512 a, __m512 b, __m512 c) {
    emu512 x = {.f = a}, y = {.f = b}, z = {.f = c};
    LANES(16) z.f32[i] = fmaf(x.f32[i], y.f32[i], z.f32[i]);
    return z.f;
}
EMU __m512 _mm512_fnmadd_ps(__m512 a, __m512 b, __m512 c) {
    emu512 x = {.f = a}, y = {.f = b}, z = {.f = c};
    LANES(16) z.f32[i] = fmaf(-x.f32[i], y.f32[i], z.f32[i]);
    return z.f;
}

#undef LANES
#undef EMU
#endif
