#include "simd/similarity.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>

#include "common/thread_pool.h"
#include "cpu/cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
// GCC 12's AVX-512 headers set off -Wuninitialized on their own _mm512_undefined_*()
// placeholders once inlined (GCC PR 105593, fixed in GCC 13). The pragmas cover
// only the header's lines: warnings about this file's code still fire.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define MMSERVE_X86 1
#define MMSERVE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MMSERVE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace mmserve::simd {
namespace {

// A dot kernel scores `query_count` (1 to kMaxQueries) queries against
// `row_count` consecutive rows: scores[q * row_count + r]. One kernel per
// storage type and ISA, named dot_<storage>_<isa>.
using DotKernel = void (*)(const float* queries, std::ptrdiff_t query_stride, int query_count, const void* rows,
                           std::ptrdiff_t row_stride, int64_t row_count, int64_t dim, float* scores);

constexpr int kMaxQueries = 4;

template <class T>
inline const T* at(const void* base, std::ptrdiff_t stride, int64_t i) {
  return reinterpret_cast<const T*>(static_cast<const char*>(base) + stride * i);
}

// Scores kQ queries against every row: kR rows per tile, then the remaining
// rows one at a time. A tile keeps kQ x kR accumulators in registers, so each
// row chunk loaded (and widened) once serves kQ queries. Every (query, row)
// pair runs the same chain of additions whatever the tile shape, so a row's
// score never depends on its position. Tiles prefetch the rows one tile ahead
// (the next rows in memory, also across calls when blocks follow each other).
template <template <class, int, int> class Tile, class T, int kQ, int kR>
void dot_rows(const float* queries, std::ptrdiff_t query_stride, const void* rows, std::ptrdiff_t row_stride,
              int64_t row_count, int64_t dim, float* scores) {
  const float* q[kQ];
  for (int a = 0; a < kQ; ++a) q[a] = at<float>(queries, query_stride, a);
  int64_t r = 0;
  for (; r + kR <= row_count; r += kR) {
    const T* p[kR];
    for (int b = 0; b < kR; ++b) p[b] = at<T>(rows, row_stride, r + b);
    Tile<T, kQ, kR>::run(q, p, dim, kR * row_stride, scores + r, row_count);
  }
  for (; r < row_count; ++r) {
    const T* p[1] = {at<T>(rows, row_stride, r)};
    Tile<T, kQ, 1>::run(q, p, dim, row_stride, scores + r, row_count);
  }
}

// One ISA's dot kernel for storage T. A single query is memory-bound: more rows
// per tile keep more loads in flight. Batches reuse each row for up to four
// queries; kBatchRows is sized to the ISA's register file.
template <template <class, int, int> class Tile, class T, int kSingleRows, int kBatchRows>
void dot(const float* queries, std::ptrdiff_t query_stride, int query_count, const void* rows,
         std::ptrdiff_t row_stride, int64_t row_count, int64_t dim, float* scores) {
  switch (query_count) {
    case 1: return dot_rows<Tile, T, 1, kSingleRows>(queries, query_stride, rows, row_stride, row_count, dim, scores);
    case 2: return dot_rows<Tile, T, 2, kBatchRows>(queries, query_stride, rows, row_stride, row_count, dim, scores);
    case 3: return dot_rows<Tile, T, 3, kBatchRows>(queries, query_stride, rows, row_stride, row_count, dim, scores);
    default: return dot_rows<Tile, T, 4, kBatchRows>(queries, query_stride, rows, row_stride, row_count, dim, scores);
  }
}

// ---- scalar ----

// IEEE binary16 bits to float (exact: every half is a float).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf, NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal half: a normal float once the leading one is shifted into place
    uint32_t e = 113;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return half_to_float(x); }
inline float widen(int8_t x) { return static_cast<float>(x); }

// Eight interleaved partial sums, the way an 8-lane vector would add them: more
// independent additions in flight, and a smaller rounding error than one chain.
template <class T, int kQ, int kR>
struct TileScalar {
  static void run(const float* const* q, const T* const* r, int64_t dim, std::ptrdiff_t /*prefetch_ahead*/,
                  float* scores, int64_t score_stride) {
    constexpr int kLanes = 8;
    for (int b = 0; b < kR; ++b) {
      for (int a = 0; a < kQ; ++a) {
        float acc[kLanes] = {};
        for (int64_t i = 0; i < dim; ++i) acc[i % kLanes] += q[a][i] * widen(r[b][i]);
        float sum = 0.0f;
        for (float lane : acc) sum += lane;
        scores[a * score_stride + b] = sum;
      }
    }
  }
};

constexpr DotKernel dot_f32_scalar = dot<TileScalar, float, 1, 1>;
constexpr DotKernel dot_f16_scalar = dot<TileScalar, uint16_t, 1, 1>;
constexpr DotKernel dot_i8_scalar = dot<TileScalar, int8_t, 1, 1>;

// Zero-padded copies of the last `dim - from` (< Width) elements of each query
// and row, for the SIMD tiles' tail step: ISAs without masked narrow loads
// then read nothing past the end of a row (possibly the end of the buffer).
template <int Width, class T, int kQ, int kR>
struct PaddedTail {
  T row_copies[kR][Width] = {};
  float query_copies[kQ][Width] = {};
  const T* rows[kR];
  const float* queries[kQ];

  PaddedTail(const float* const* q, const T* const* r, int64_t from, int64_t dim) {
    const size_t tail = static_cast<size_t>(dim - from);
    for (int b = 0; b < kR; ++b) {
      std::memcpy(row_copies[b], r[b] + from, tail * sizeof(T));
      rows[b] = row_copies[b];
    }
    for (int a = 0; a < kQ; ++a) {
      std::memcpy(query_copies[a], q[a] + from, tail * sizeof(float));
      queries[a] = query_copies[a];
    }
  }
};

#ifdef MMSERVE_X86

// ---- AVX2 + FMA + F16C: 8 float lanes ----

MMSERVE_TARGET_AVX2 inline __m256 widen8_avx2(const float* p) { return _mm256_loadu_ps(p); }
MMSERVE_TARGET_AVX2 inline __m256 widen8_avx2(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
MMSERVE_TARGET_AVX2 inline __m256 widen8_avx2(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

MMSERVE_TARGET_AVX2 inline float reduce_add_avx2(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

template <class T, int kQ, int kR>
struct TileAvx2 {
  // One prefetch per 64-byte line of each row: the hardware prefetcher alone does
  // not run far enough ahead of kR interleaved row streams to keep memory busy.
  static constexpr int kChunksPerLine = 64 / (8 * sizeof(T));

  MMSERVE_TARGET_AVX2 static void run(const float* const* q, const T* const* r, int64_t dim,
                                      std::ptrdiff_t prefetch_ahead, float* scores, int64_t score_stride) {
    __m256 acc[kQ][kR];
    for (int a = 0; a < kQ; ++a)
      for (int b = 0; b < kR; ++b) acc[a][b] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 * kChunksPerLine <= dim; i += 8 * kChunksPerLine) {
      for (int b = 0; b < kR; ++b)
        _mm_prefetch(reinterpret_cast<const char*>(r[b] + i) + prefetch_ahead, _MM_HINT_T0);
      for (int c = 0; c < kChunksPerLine; ++c) accumulate(acc, q, r, i + 8 * c);
    }
    for (; i + 8 <= dim; i += 8) accumulate(acc, q, r, i);
    if (i < dim) {  // AVX2 has no masked narrow loads
      const PaddedTail<8, T, kQ, kR> tail(q, r, i, dim);
      accumulate(acc, tail.queries, tail.rows, 0);
    }
    for (int a = 0; a < kQ; ++a)
      for (int b = 0; b < kR; ++b) scores[a * score_stride + b] = reduce_add_avx2(acc[a][b]);
  }

 private:
  MMSERVE_TARGET_AVX2 static inline void accumulate(__m256 (&acc)[kQ][kR], const float* const* q, const T* const* r,
                                                    int64_t i) {
    __m256 row[kR];
    for (int b = 0; b < kR; ++b) row[b] = widen8_avx2(r[b] + i);
    for (int a = 0; a < kQ; ++a) {
      const __m256 query = _mm256_loadu_ps(q[a] + i);
      for (int b = 0; b < kR; ++b) acc[a][b] = _mm256_fmadd_ps(query, row[b], acc[a][b]);
    }
  }
};

// 16 ymm registers: 4 x 2 accumulators + 2 rows + 1 query.
constexpr DotKernel dot_f32_avx2 = dot<TileAvx2, float, 4, 2>;
constexpr DotKernel dot_f16_avx2 = dot<TileAvx2, uint16_t, 4, 2>;
constexpr DotKernel dot_i8_avx2 = dot<TileAvx2, int8_t, 4, 2>;

// ---- AVX-512 (F, BW, VL): 16 float lanes, masked tails ----
// float16 rows are widened with vcvtph2ps and multiplied in float32; AVX512-FP16
// arithmetic would accumulate in half precision, which loses the ranking.

MMSERVE_TARGET_AVX512 inline __m512 widen16_avx512(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
MMSERVE_TARGET_AVX512 inline __m512 widen16_avx512(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
MMSERVE_TARGET_AVX512 inline __m512 widen16_avx512(const int8_t* p, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}
MMSERVE_TARGET_AVX512 inline __m512 widen16_avx512(const float* p) { return _mm512_loadu_ps(p); }
MMSERVE_TARGET_AVX512 inline __m512 widen16_avx512(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
MMSERVE_TARGET_AVX512 inline __m512 widen16_avx512(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <class T, int kQ, int kR>
struct TileAvx512 {
  // One prefetch per 64-byte line of each row: the hardware prefetcher alone does
  // not run far enough ahead of kR interleaved row streams to keep memory busy.
  static constexpr int kChunksPerLine = 64 / (16 * sizeof(T));

  MMSERVE_TARGET_AVX512 static void run(const float* const* q, const T* const* r, int64_t dim,
                                        std::ptrdiff_t prefetch_ahead, float* scores, int64_t score_stride) {
    __m512 acc[kQ][kR];
    for (int a = 0; a < kQ; ++a)
      for (int b = 0; b < kR; ++b) acc[a][b] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 * kChunksPerLine <= dim; i += 16 * kChunksPerLine) {
      for (int b = 0; b < kR; ++b)
        _mm_prefetch(reinterpret_cast<const char*>(r[b] + i) + prefetch_ahead, _MM_HINT_T0);
      for (int c = 0; c < kChunksPerLine; ++c) accumulate(acc, q, r, i + 16 * c, static_cast<__mmask16>(0xFFFF));
    }
    for (; i + 16 <= dim; i += 16) accumulate(acc, q, r, i, static_cast<__mmask16>(0xFFFF));
    if (i < dim) accumulate(acc, q, r, i, static_cast<__mmask16>((1u << (dim - i)) - 1));
    for (int a = 0; a < kQ; ++a)
      for (int b = 0; b < kR; ++b) scores[a * score_stride + b] = _mm512_reduce_add_ps(acc[a][b]);
  }

 private:
  // Masked loads never touch memory past a row's end; with the full mask the
  // compiler drops the masking.
  MMSERVE_TARGET_AVX512 static inline void accumulate(__m512 (&acc)[kQ][kR], const float* const* q,
                                                      const T* const* r, int64_t i, __mmask16 m) {
    __m512 row[kR];
    for (int b = 0; b < kR; ++b) row[b] = widen16_avx512(r[b] + i, m);
    for (int a = 0; a < kQ; ++a) {
      const __m512 query = _mm512_maskz_loadu_ps(m, q[a] + i);
      for (int b = 0; b < kR; ++b) acc[a][b] = _mm512_fmadd_ps(query, row[b], acc[a][b]);
    }
  }
};

// 32 zmm registers: 4 x 4 accumulators + 4 rows + 1 query; one query gets 8 rows.
// GCC 12 at -O3 also stores the 4 x 4 accumulators to the stack every iteration
// (at -O2 it does not); 4 x 4 still measured faster than the 4 x 2 and 4 x 3
// shapes it compiles cleanly, so the shape stays.
constexpr DotKernel dot_f32_avx512 = dot<TileAvx512, float, 8, 4>;
constexpr DotKernel dot_f16_avx512 = dot<TileAvx512, uint16_t, 8, 4>;
constexpr DotKernel dot_i8_avx512 = dot<TileAvx512, int8_t, 8, 4>;

#endif  // MMSERVE_X86

#if defined(__aarch64__)

// ---- NEON: 4 float lanes. Baseline in AArch64, so no target attribute. ----
// Built and run only on arm64; the x86-64 test machines never compile it.

inline float32x4_t widen4_neon(const float* p) { return vld1q_f32(p); }
inline float32x4_t widen4_neon(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
inline float32x4_t widen4_neon(const int8_t* p) {
  int32_t packed;
  std::memcpy(&packed, p, sizeof packed);  // four int8 lanes; NEON has no 32-bit-wide int8 load
  const int16x8_t wide = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(packed)));
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide)));
}

template <class T, int kQ, int kR>
struct TileNeon {
  // One prefetch per 64-byte line of each row, as in the x86 tiles.
  static constexpr int kChunksPerLine = 64 / (4 * sizeof(T));

  static void run(const float* const* q, const T* const* r, int64_t dim, std::ptrdiff_t prefetch_ahead,
                  float* scores, int64_t score_stride) {
    float32x4_t acc[kQ][kR];
    for (int a = 0; a < kQ; ++a)
      for (int b = 0; b < kR; ++b) acc[a][b] = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 * kChunksPerLine <= dim; i += 4 * kChunksPerLine) {
      for (int b = 0; b < kR; ++b) __builtin_prefetch(reinterpret_cast<const char*>(r[b] + i) + prefetch_ahead);
      for (int c = 0; c < kChunksPerLine; ++c) accumulate(acc, q, r, i + 4 * c);
    }
    for (; i + 4 <= dim; i += 4) accumulate(acc, q, r, i);
    if (i < dim) {
      const PaddedTail<4, T, kQ, kR> tail(q, r, i, dim);
      accumulate(acc, tail.queries, tail.rows, 0);
    }
    for (int a = 0; a < kQ; ++a)
      for (int b = 0; b < kR; ++b) scores[a * score_stride + b] = vaddvq_f32(acc[a][b]);
  }

 private:
  static inline void accumulate(float32x4_t (&acc)[kQ][kR], const float* const* q, const T* const* r, int64_t i) {
    float32x4_t row[kR];
    for (int b = 0; b < kR; ++b) row[b] = widen4_neon(r[b] + i);
    for (int a = 0; a < kQ; ++a) {
      const float32x4_t query = vld1q_f32(q[a] + i);
      for (int b = 0; b < kR; ++b) acc[a][b] = vfmaq_f32(acc[a][b], query, row[b]);
    }
  }
};

// 32 q registers: 4 x 4 accumulators + 4 rows + 1 query.
constexpr DotKernel dot_f32_neon = dot<TileNeon, float, 8, 4>;
constexpr DotKernel dot_f16_neon = dot<TileNeon, uint16_t, 8, 4>;
constexpr DotKernel dot_i8_neon = dot<TileNeon, int8_t, 8, 4>;

#endif  // __aarch64__

// ---- dispatch ----

struct KernelSet {
  const char* name;
  DotKernel f32;
  DotKernel f16;
  DotKernel i8;

  DotKernel for_storage(Storage s) const {
    switch (s) {
      case Storage::F16: return f16;
      case Storage::I8: return i8;
      case Storage::F32: break;
    }
    return f32;
  }
};

constexpr KernelSet kScalarKernels{"scalar", dot_f32_scalar, dot_f16_scalar, dot_i8_scalar};

constexpr std::initializer_list<Isa> kImplemented = {Isa::Avx512, Isa::Avx2, Isa::Neon};

KernelSet kernels_for(Isa requested) {
  switch (isa::resolve(requested, "similarity", kImplemented)) {
#ifdef MMSERVE_X86
    case Isa::Avx512: return {"avx512", dot_f32_avx512, dot_f16_avx512, dot_i8_avx512};
    case Isa::Avx2: return {"avx2", dot_f32_avx2, dot_f16_avx2, dot_i8_avx2};
#endif
#if defined(__aarch64__)
    case Isa::Neon: return {"neon", dot_f32_neon, dot_f16_neon, dot_i8_neon};
#endif
    default: return kScalarKernels;
  }
}

// ---- selection ----

struct Candidate {
  float score;
  int64_t index;
};

// The result order: higher score first, NaN after every number, ties to the lower row.
inline bool ranks_before(const Candidate& a, const Candidate& b) {
  const bool a_nan = std::isnan(a.score);
  const bool b_nan = std::isnan(b.score);
  if (a_nan || b_nan) return a_nan == b_nan ? a.index < b.index : b_nan;
  if (a.score != b.score) return a.score > b.score;
  return a.index < b.index;
}

// The k best candidates seen so far, as a heap whose front is the worst of them.
class Selection {
 public:
  explicit Selection(int64_t k) : k_(static_cast<size_t>(k)) { heap_.reserve(k_); }

  void offer(const float* scores, int64_t first_row, int64_t count) {
    for (int64_t j = 0; j < count; ++j) {
      // Once full, nearly every row fails this one comparison; equal scores and
      // NaN fall through to the exact order.
      if (scores[j] < threshold_) continue;
      push({scores[j], first_row + j});
    }
  }

  const std::vector<Candidate>& candidates() const { return heap_; }

 private:
  void push(const Candidate& c) {
    if (heap_.size() < k_) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    } else if (ranks_before(c, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
      heap_.back() = c;
      std::push_heap(heap_.begin(), heap_.end(), ranks_before);
    } else {
      return;
    }
    if (heap_.size() == k_) {
      const float worst = heap_.front().score;
      threshold_ = std::isnan(worst) ? -std::numeric_limits<float>::infinity() : worst;
    }
  }

  size_t k_;
  std::vector<Candidate> heap_;
  float threshold_ = -std::numeric_limits<float>::infinity();
};

size_t element_size(Storage s) {
  switch (s) {
    case Storage::F16: return 2;
    case Storage::I8: return 1;
    case Storage::F32: break;
  }
  return 4;
}

// Rows scored per kernel call: a block stays in L2 while every query group
// reads it, and the score buffer stays in L1.
constexpr size_t kBlockBytes = 128 * 1024;
// Below this many multiply-adds per thread, starting a thread costs more than it saves.
constexpr int64_t kMinWorkPerThread = int64_t{1} << 20;

}  // namespace

const char* active_similarity_kernel() { return kernels_for(Isa::Auto).name; }

std::vector<std::string> available_similarity_kernels() { return isa::available(kImplemented); }

void top_k(const Queries& queries, const Database& db, int64_t k, const TopKOutput& out, int threads, Isa isa) {
  const KernelSet kernels = kernels_for(isa);
  if (k < 1) throw std::invalid_argument("k must be at least 1");
  if (db.rows < 0 || queries.count < 0) throw std::invalid_argument("row and query counts must not be negative");
  if (db.dim < 1) throw std::invalid_argument("vectors must have at least one dimension");
  if (db.storage == Storage::I8 && db.scales == nullptr)
    throw std::invalid_argument("int8 rows need their per-row scales");
  if (threads < 0) throw std::invalid_argument("threads must be 0 (all cores) or positive");
  const int64_t kept = result_count(k, db.rows);
  if (queries.count == 0 || kept == 0) return;

  const DotKernel dot_kernel = kernels.for_storage(db.storage);
  const size_t row_bytes = static_cast<size_t>(db.dim) * element_size(db.storage);
  const int64_t block_rows = std::clamp<int64_t>(static_cast<int64_t>(kBlockBytes / row_bytes), 16, 4096);

  const int64_t budget = threads > 0 ? int64_t{threads} : int64_t{mmserve::threads::thread_budget()};
  const int64_t work = db.rows * queries.count * db.dim;
  const int64_t worth = std::max<int64_t>(1, work / kMinWorkPerThread);
  const int count = static_cast<int>(std::min({budget, worth, db.rows}));

  // Everything a worker touches is allocated here, so workers do not allocate.
  struct Worker {
    std::vector<Selection> selections;
    std::vector<float> scores;
  };
  std::vector<Worker> workers(count);
  for (auto& w : workers) {
    w.selections.reserve(static_cast<size_t>(queries.count));
    for (int64_t q = 0; q < queries.count; ++q) w.selections.emplace_back(kept);
    w.scores.resize(static_cast<size_t>(block_rows) * kMaxQueries);
  }

  auto scan = [&](int t) {
    Worker& w = workers[t];
    const int64_t begin = db.rows * t / count;
    const int64_t end = db.rows * (t + 1) / count;
    for (int64_t first = begin; first < end; first += block_rows) {
      const int64_t n = std::min(block_rows, end - first);
      const void* rows = at<char>(db.data, db.row_stride, first);
      for (int64_t q0 = 0; q0 < queries.count; q0 += kMaxQueries) {
        const int nq = static_cast<int>(std::min<int64_t>(kMaxQueries, queries.count - q0));
        dot_kernel(at<float>(queries.data, queries.row_stride, q0), queries.row_stride, nq, rows, db.row_stride, n,
                   db.dim, w.scores.data());
        for (int a = 0; a < nq; ++a) {
          float* s = w.scores.data() + a * n;
          if (db.storage == Storage::I8)
            for (int64_t j = 0; j < n; ++j) s[j] *= *at<float>(db.scales, db.scale_stride, first + j);
          w.selections[q0 + a].offer(s, first, n);
        }
      }
    }
  };

  // Each part of the rows is scanned by one task whatever the thread that runs it: the same results.
  mmserve::threads::parallel_for(static_cast<size_t>(count), count, [&](size_t t) { scan(static_cast<int>(t)); });

  // Each worker holds its own rows' best `kept`; the global best are among them.
  std::vector<Candidate> merged;
  for (int64_t q = 0; q < queries.count; ++q) {
    merged.clear();
    for (const auto& w : workers) {
      const auto& c = w.selections[q].candidates();
      merged.insert(merged.end(), c.begin(), c.end());
    }
    std::partial_sort(merged.begin(), merged.begin() + kept, merged.end(), ranks_before);
    auto* scores = reinterpret_cast<float*>(reinterpret_cast<char*>(out.scores) + out.score_stride * q);
    auto* indices = reinterpret_cast<int64_t*>(reinterpret_cast<char*>(out.indices) + out.index_stride * q);
    for (int64_t j = 0; j < kept; ++j) {
      scores[j] = merged[j].score;
      indices[j] = merged[j].index;
    }
  }
}

}  // namespace mmserve::simd
