// Run-time CPU feature detection. Kernels compiled for newer instruction sets
// are selected once, from these flags, never from how the wheel was built.
#pragma once

#include <string>
#include <vector>

namespace mmserve::cpu {

struct Features {
  bool sse42 = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  bool avx512fp16 = false;
  bool avxvnni = false;
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
  bool neon = false;
};

// Detected once and cached; includes the OS check (XCR0) that the wider
// register state is actually saved on context switches.
const Features& features();

// Names of the flags that are set, in a fixed order (for logs and tests).
std::vector<std::string> feature_names(const Features& f);

}  // namespace mmserve::cpu
