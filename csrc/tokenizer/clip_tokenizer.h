// CLIP BPE tokenizer reproducing open_clip's SimpleTokenizer (without ftfy):
// html.unescape twice, strip, whitespace collapse (str.split), str.lower (with
// its Final_Sigma rule), the CLIP split pattern as the `regex` module applies it
// with IGNORECASE, byte-to-unicode, rank-ordered BPE with "</w>", start/end
// tokens, zero padding, truncation that keeps the end-of-text token.
#pragma once

#include <cstdint>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mmserve::tokenizer {

class ClipTokenizer {
 public:
  // `vocabulary`: token (byte-unicode string, UTF-8) -> id; `merges` in rank order.
  ClipTokenizer(std::unordered_map<std::string, int32_t> vocabulary,
                const std::vector<std::pair<std::string, std::string>>& merges, int32_t start_id, int32_t end_id);

  // BPE ids of one UTF-8 text (no start/end); throws std::invalid_argument on invalid UTF-8. Stops once it
  // has `max_ids` ids (the ids before are the same: pieces are encoded left to right, independently).
  std::vector<int32_t> encode(const std::string& text, size_t max_ids = SIZE_MAX) const;

  // The text after html unescape, strip, whitespace collapse and lowercase (for tests).
  std::u32string clean(const std::string& text) const;

  // Rows of `context` ids (start, ids, end, zeros; truncated keeping end) into out[N x context];
  // lengths[i] = ids up to and including end-of-text. Errors per text: empty = ok.
  std::vector<std::string> encode_batch(const std::vector<std::string>& texts, int context, int32_t* out,
                                        int32_t* lengths, int threads) const;

 private:
  std::vector<int32_t> bpe(const std::string& token) const;
  // The same merges in O(n log n) for long pieces (the reference's loop is quadratic: a 30,000-letter word
  // took 3.6 s); equal to it because a merge's result only ever takes part in merges of higher rank.
  std::vector<std::string> merge_long(std::vector<std::string> word) const;

  std::unordered_map<std::string, int32_t> vocabulary_;
  std::unordered_map<std::string, int32_t> ranks_;  // "first second" -> rank
  std::string byte_encoder_[256];
  int32_t start_id_, end_id_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace mmserve::tokenizer
