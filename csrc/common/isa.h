// One table of instruction-set levels for every kernel family (resampling, similarity): what each level needs
// from the CPU, whether this build has it, and the one dispatch rule. Levels are picked once at run time from
// the CPU's flags, never from how the wheel was built.
#pragma once

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace mmserve::isa {

enum class Isa { Auto, Scalar, Avx2, Avx512, Neon };

// A level was asked for that this CPU, this build or this kernel family cannot run (Python: LookupError).
class UnsupportedIsa : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "auto", "scalar", "avx2", "avx512" or "neon"; throws std::invalid_argument otherwise.
Isa from_name(const std::string& name);
const char* name(Isa isa);

// The CPU flags the level needs that this CPU lacks ("" when it has them all).
std::string missing_features(Isa isa);
// The level's kernels are compiled into this build (x86-64 levels on x86-64, NEON on arm64).
bool compiled_in(Isa isa);
bool runnable(Isa isa);

// The level a family uses: Auto becomes the best runnable level among those it implements; a forced level
// must be runnable and implemented, or UnsupportedIsa says why.
Isa resolve(Isa requested, const char* family, std::initializer_list<Isa> implemented);

// The runnable levels among `implemented`, "scalar" first.
std::vector<std::string> available(std::initializer_list<Isa> implemented);

}  // namespace mmserve::isa
