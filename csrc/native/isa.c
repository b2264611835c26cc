/* Runtime choice of the instruction set: the best this CPU (and its OS) supports, or one asked for by name. */
#include <string.h>

#include "rz.h"

#if defined(__x86_64__)
#include <cpuid.h>

static int os_saves(unsigned long long mask) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((((unsigned long long)hi << 32) | lo) & mask) == mask;
}

static int has_f16c_fma(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    return (c & (1u << 29)) && (c & (1u << 12));  /* F16C, FMA */
}

int rz_isa_supported(const rz_isa *isa) {
    __builtin_cpu_init();
    if (isa == &rz_isa_ref) return 1;
    if (isa == &rz_isa_avx2) return os_saves(0x6) && __builtin_cpu_supports("avx2") && has_f16c_fma();
    if (isa == &rz_isa_avx512)
        return os_saves(0xe6) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && has_f16c_fma();
    return 0;
}

static const rz_isa *const ALL[] = {&rz_isa_avx512, &rz_isa_avx2, &rz_isa_ref};
#else
int rz_isa_supported(const rz_isa *isa) { return isa == &rz_isa_ref; }
static const rz_isa *const ALL[] = {&rz_isa_ref};
#endif

const rz_isa *rz_isa_best(void) {
    for (size_t i = 0; i < sizeof ALL / sizeof ALL[0]; i++)
        if (rz_isa_supported(ALL[i])) return ALL[i];
    return &rz_isa_ref;
}

const rz_isa *rz_isa_by_name(const char *name) {
    for (size_t i = 0; i < sizeof ALL / sizeof ALL[0]; i++)
        if (strcmp(ALL[i]->name, name) == 0) return rz_isa_supported(ALL[i]) ? ALL[i] : NULL;
    return NULL;
}
