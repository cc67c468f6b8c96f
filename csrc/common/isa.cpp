#include "common/isa.h"

#include <algorithm>

#include "cpu/cpu_features.h"

namespace mmserve::isa {
namespace {

// Best first.
constexpr Isa kPreference[] = {Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar};

bool implements(std::initializer_list<Isa> levels, Isa isa) {
  return isa == Isa::Scalar || std::find(levels.begin(), levels.end(), isa) != levels.end();
}

}  // namespace

Isa from_name(const std::string& text) {
  for (Isa isa : {Isa::Auto, Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon})
    if (text == name(isa)) return isa;
  throw std::invalid_argument("unknown kernel set '" + text + "': use auto, scalar, avx2, avx512 or neon");
}

const char* name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    case Isa::Neon: return "neon";
    case Isa::Scalar: return "scalar";
    case Isa::Auto: break;
  }
  return "auto";
}

std::string missing_features(Isa isa) {
  const auto& f = cpu::features();
  std::string missing;
  auto need = [&](bool present, const char* flag) {
    if (!present) missing += missing.empty() ? flag : std::string(", ") + flag;
  };
  switch (isa) {
    case Isa::Avx512:
      need(f.avx512f, "avx512f");
      need(f.avx512bw, "avx512bw");
      need(f.avx512vl, "avx512vl");
      break;
    case Isa::Avx2:
      need(f.avx2, "avx2");
      need(f.fma, "fma");
      need(f.f16c, "f16c");
      break;
    case Isa::Neon:
      need(f.neon, "neon");
      break;
    case Isa::Auto:
    case Isa::Scalar:
      break;
  }
  return missing;
}

bool compiled_in(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
    case Isa::Avx2:
#if defined(__x86_64__) || defined(_M_X64)
      return true;
#else
      return false;
#endif
    case Isa::Neon:
#if defined(__aarch64__)
      return true;
#else
      return false;
#endif
    case Isa::Auto:
    case Isa::Scalar:
      break;
  }
  return true;
}

bool runnable(Isa isa) { return compiled_in(isa) && missing_features(isa).empty(); }

Isa resolve(Isa requested, const char* family, std::initializer_list<Isa> implemented) {
  if (requested == Isa::Auto) {
    for (Isa isa : kPreference)
      if (implements(implemented, isa) && runnable(isa)) return isa;
    return Isa::Scalar;
  }
  if (!implements(implemented, requested))
    throw UnsupportedIsa(std::string("there are no ") + name(requested) + " " + family + " kernels");
  if (!compiled_in(requested))
    throw UnsupportedIsa(std::string("the ") + name(requested) + " " + family + " kernels are not part of this " +
#if defined(__x86_64__) || defined(_M_X64)
                         "x86-64 build"
#else
                         "build (not an x86-64 CPU)"
#endif
    );
  const std::string missing = missing_features(requested);
  if (!missing.empty())
    throw UnsupportedIsa(std::string("the ") + name(requested) + " " + family +
                         " kernels need CPU features this CPU lacks: " + missing);
  return requested;
}

std::vector<std::string> available(std::initializer_list<Isa> implemented) {
  std::vector<std::string> names;
  for (auto it = std::rbegin(kPreference); it != std::rend(kPreference); ++it)
    if (implements(implemented, *it) && runnable(*it)) names.emplace_back(name(*it));
  return names;
}

}  // namespace mmserve::isa
