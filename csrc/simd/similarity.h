// Exact inner-product top-k of float32 queries against a database of vectors
// stored as float32, float16 or int8 with a per-row float32 scale.
//
// Scores are accumulated in float32 whatever the storage: float16 and int8
// elements are widened to float32 before each fused multiply-add, so the only
// difference between kernels is the order of the float32 additions. Within one
// kernel a row's score does not depend on where the row lies in the database or
// on the thread count, which keeps tie-breaking (lower row index first) exact.
#pragma once

#include "common/isa.h"

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mmserve::simd {

enum class Storage { F32, F16, I8 };

using Isa = mmserve::isa::Isa;

struct Database {
  const void* data = nullptr;  // F16 elements are IEEE binary16 bit patterns (numpy float16)
  int64_t rows = 0;
  int64_t dim = 0;
  std::ptrdiff_t row_stride = 0;   // bytes; the elements of a row are contiguous
  Storage storage = Storage::F32;
  const float* scales = nullptr;   // I8 only: score = dot(query, row) * scales[row]
  std::ptrdiff_t scale_stride = sizeof(float);  // bytes
};

struct Queries {
  const float* data = nullptr;  // count x dim, contiguous within a query
  int64_t count = 0;
  std::ptrdiff_t row_stride = 0;  // bytes
};

// count x result_count(k, rows) each; rows contiguous, `*_stride` bytes apart.
struct TopKOutput {
  float* scores = nullptr;
  std::ptrdiff_t score_stride = 0;
  int64_t* indices = nullptr;
  std::ptrdiff_t index_stride = 0;
};

// Results per query: k, or every row when the database has fewer than k.
inline int64_t result_count(int64_t k, int64_t rows) { return k < rows ? k : rows; }

// For each query, the result_count(k, rows) best rows by descending score, ties
// (and NaN scores, which rank last) broken by the lower row index. Rows are
// split across at most `threads` threads (0: one per core; fewer when the work
// is too small to pay for a thread). Throws isa::UnsupportedIsa when `isa` names
// kernels this CPU lacks, std::invalid_argument on inconsistent sizes.
void top_k(const Queries& queries, const Database& database, int64_t k, const TopKOutput& out, int threads,
           Isa isa = Isa::Auto);

// The kernel set Auto resolves to on this CPU: "avx512", "avx2", "neon" or "scalar".
const char* active_similarity_kernel();

// Every kernel set this CPU can run, "scalar" first.
std::vector<std::string> available_similarity_kernels();

}  // namespace mmserve::simd
