// The one place that registers the C++ code in the private module mmserve._C.
// Python code uses the thin wrappers in mmserve/, never _C directly.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cpu/cpu_features.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "mmserve compiled core (private; use the mmserve package API)";
  m.attr("__version__") = MMSERVE_VERSION;

  m.def(
      "cpu_features", [] { return mmserve::cpu::feature_names(mmserve::cpu::features()); },
      "Instruction-set extensions usable on this CPU (checked with CPUID and the OS's XCR0).");

  m.def(
      "build_info",
      [] {
        py::dict info;
        info["compiler"] =
#if defined(__clang__)
            "clang " __clang_version__;
#elif defined(__GNUC__)
            "gcc " __VERSION__;
#else
            "unknown";
#endif
        info["cplusplus"] = static_cast<long>(__cplusplus);
#if defined(__AVX2__) || defined(__AVX512F__)
        info["baseline_isa_beyond_default"] = true;
#else
        info["baseline_isa_beyond_default"] = false;
#endif
        return info;
      },
      "How the extension was compiled (baseline_isa_beyond_default is False for portable wheels).");
}
