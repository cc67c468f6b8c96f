#include "cpu/cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <cstdint>
#endif

namespace mmserve::cpu {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
uint64_t read_xcr0() {
  uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

Features detect() {
  Features f;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  f.sse42 = ecx & (1u << 20);
  f.fma = ecx & (1u << 12);
  f.f16c = ecx & (1u << 29);
  const bool osxsave = ecx & (1u << 27);
  const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
  const bool ymm_state = (xcr0 & 0x6) == 0x6;            // SSE + AVX
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;          // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool amx_state = (xcr0 & 0x60000) == 0x60000;    // XTILECFG + XTILEDATA
  if (!ymm_state) {
    f.fma = f.f16c = false;
    return f;
  }
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  f.avx2 = ebx & (1u << 5);
  if (zmm_state) {
    f.avx512f = ebx & (1u << 16);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512vnni = ecx & (1u << 11);
    f.avx512fp16 = edx & (1u << 23);
  }
  if (amx_state) {
    f.amx_bf16 = edx & (1u << 22);
    f.amx_tile = edx & (1u << 24);
    f.amx_int8 = edx & (1u << 25);
  }
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  f.avxvnni = eax & (1u << 4);
  if (zmm_state) f.avx512bf16 = eax & (1u << 5);
  return f;
}
#elif defined(__aarch64__)
Features detect() {
  Features f;
  f.neon = true;  // mandatory in AArch64
  return f;
}
#else
Features detect() { return Features{}; }
#endif

}  // namespace

const Features& features() {
  static const Features cached = detect();
  return cached;
}

std::vector<std::string> feature_names(const Features& f) {
  std::vector<std::string> names;
  const std::pair<bool, const char*> table[] = {
      {f.sse42, "sse4.2"},         {f.avx2, "avx2"},           {f.fma, "fma"},
      {f.f16c, "f16c"},            {f.avx512f, "avx512f"},     {f.avx512bw, "avx512bw"},
      {f.avx512vl, "avx512vl"},    {f.avx512vnni, "avx512vnni"}, {f.avx512bf16, "avx512bf16"},
      {f.avx512fp16, "avx512fp16"}, {f.avxvnni, "avxvnni"},     {f.amx_tile, "amx-tile"},
      {f.amx_bf16, "amx-bf16"},    {f.amx_int8, "amx-int8"},   {f.neon, "neon"},
  };
  for (const auto& [on, name] : table)
    if (on) names.emplace_back(name);
  return names;
}

}  // namespace mmserve::cpu
