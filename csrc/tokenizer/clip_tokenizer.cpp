#include "tokenizer/clip_tokenizer.h"

#include "common/thread_pool.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string_view>

namespace mmserve::tokenizer {
namespace {

struct CodeRange {
  uint32_t first, last;
};
struct LowerEntry {
  uint32_t code;
  const char* utf8;
};
struct FoldEntry {
  char letter;
  uint32_t code;
};
struct EntityEntry {
  const char* name;
  const char* utf8;
};
struct CharrefEntry {
  uint32_t code;
  const char* utf8;
};

#include "tokenizer/unicode_tables.inc"

template <size_t N>
bool in_ranges(char32_t c, const CodeRange (&table)[N]) {
  const auto* it = std::upper_bound(std::begin(table), std::end(table), static_cast<uint32_t>(c),
                                    [](uint32_t v, const CodeRange& r) { return v < r.first; });
  return it != std::begin(table) && c <= (it - 1)->last;
}

// ASCII answers from a table (most text), the rest by binary search of the ranges.
enum : uint8_t { kLetter = 1, kNumber = 2, kOther = 4, kStrSpace = 8 };

struct AsciiClasses {
  uint8_t bits[128] = {};
  AsciiClasses() {
    for (char32_t c = 0; c < 128; ++c) {
      bits[c] = static_cast<uint8_t>((in_ranges(c, kLetterRanges) ? kLetter : 0) |
                                     (in_ranges(c, kNumberRanges) ? kNumber : 0) |
                                     (in_ranges(c, kOtherRanges) ? kOther : 0) |
                                     (in_ranges(c, kStrSpaceRanges) ? kStrSpace : 0));
    }
  }
};

const AsciiClasses& ascii_classes() {
  static const AsciiClasses table;
  return table;
}

bool is_letter(char32_t c) { return c < 128 ? ascii_classes().bits[c] & kLetter : in_ranges(c, kLetterRanges); }
bool is_number(char32_t c) { return c < 128 ? ascii_classes().bits[c] & kNumber : in_ranges(c, kNumberRanges); }
// [^\s\p{L}\p{N}] as the regex module sees it under IGNORECASE.
bool is_other(char32_t c) { return c < 128 ? ascii_classes().bits[c] & kOther : in_ranges(c, kOtherRanges); }
bool is_str_space(char32_t c) {
  return c < 128 ? ascii_classes().bits[c] & kStrSpace : in_ranges(c, kStrSpaceRanges);
}

std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int extra;
    char32_t c;
    if (b0 < 0x80) { c = b0; extra = 0; }
    else if ((b0 & 0xE0) == 0xC0) { c = b0 & 0x1F; extra = 1; }
    else if ((b0 & 0xF0) == 0xE0) { c = b0 & 0x0F; extra = 2; }
    else if ((b0 & 0xF8) == 0xF0) { c = b0 & 0x07; extra = 3; }
    else throw std::invalid_argument("invalid UTF-8 at byte " + std::to_string(i));
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= s.size()) throw std::invalid_argument("truncated UTF-8 at byte " + std::to_string(i));
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) throw std::invalid_argument("invalid UTF-8 at byte " + std::to_string(i));
      c = (c << 6) | (b & 0x3F);
    }
    static const char32_t minimum[] = {0, 0x80, 0x800, 0x10000};
    if (c < minimum[extra] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
      throw std::invalid_argument("invalid UTF-8 at byte " + std::to_string(i));
    out.push_back(c);
    i += extra + 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

struct Tables {
  std::unordered_map<char32_t, std::u32string> lower;
  std::unordered_map<std::u32string, std::u32string> entities;
  std::unordered_map<uint32_t, std::u32string> invalid_charrefs;
  std::unordered_map<char32_t, char> fold;  // non-ASCII code point -> ASCII letter it matches
  Tables() {
    for (const auto& e : kLowercase) lower.emplace(e.code, decode_utf8(e.utf8));
    for (const auto& e : kHtml5Entities) entities.emplace(decode_utf8(e.name), decode_utf8(e.utf8));
    for (const auto& e : kInvalidCharrefs) invalid_charrefs.emplace(e.code, decode_utf8(e.utf8));
    for (const auto& e : kCaseFold) fold.emplace(e.code, e.letter);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

bool is_invalid_codepoint(uint32_t c) {
  return std::binary_search(std::begin(kInvalidCodepoints), std::end(kInvalidCodepoints), c);
}

// Python's html.unescape.
std::u32string html_unescape(const std::u32string& s) {
  if (s.find(U'&') == std::u32string::npos) return s;
  const Tables& t = tables();
  std::u32string out;
  size_t i = 0;
  auto is_digit = [](char32_t c) { return c >= U'0' && c <= U'9'; };
  auto is_hex = [&](char32_t c) { return is_digit(c) || (c >= U'a' && c <= U'f') || (c >= U'A' && c <= U'F'); };
  while (i < s.size()) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < s.size() && s[j] == U'#') {
      const bool hex = j + 1 < s.size() && (s[j + 1] == U'x' || s[j + 1] == U'X') && j + 2 < s.size() &&
                       is_hex(s[j + 2]);
      size_t k = hex ? j + 2 : j + 1;
      const size_t digits_start = k;
      while (k < s.size() && (hex ? is_hex(s[k]) : is_digit(s[k]))) ++k;
      if (k == digits_start) {  // no charref here
        out.push_back(s[i++]);
        continue;
      }
      uint64_t num = 0;
      for (size_t d = digits_start; d < k; ++d) {
        const char32_t c = s[d];
        const uint32_t v = is_digit(c) ? c - U'0' : (c | 0x20) - U'a' + 10;
        num = num * (hex ? 16 : 10) + v;
        if (num > 0x10FFFF) num = 0x110000;  // saturate: any larger value behaves the same
      }
      if (k < s.size() && s[k] == U';') ++k;
      auto invalid = t.invalid_charrefs.find(static_cast<uint32_t>(num));
      if (invalid != t.invalid_charrefs.end()) out += invalid->second;
      else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) out.push_back(U'\uFFFD');
      else if (!is_invalid_codepoint(static_cast<uint32_t>(num))) out.push_back(static_cast<char32_t>(num));
      i = k;
      continue;
    }
    size_t k = j;
    while (k < s.size() && k - j < 32) {
      const char32_t c = s[k];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' || c == U'#' || c == U';')
        break;
      ++k;
    }
    if (k == j) {
      out.push_back(s[i++]);
      continue;
    }
    if (k < s.size() && s[k] == U';') ++k;
    const std::u32string name = s.substr(j, k - j);
    auto hit = t.entities.find(name);
    if (hit != t.entities.end()) {
      out += hit->second;
    } else {
      bool found = false;
      for (size_t x = name.size() - 1; x >= 2 && x < name.size(); --x) {
        auto prefix = t.entities.find(name.substr(0, x));
        if (prefix != t.entities.end()) {
          out += prefix->second;
          out += name.substr(x);
          found = true;
          break;
        }
      }
      if (!found) {
        out.push_back(U'&');
        out += name;
      }
    }
    i = k;
  }
  return out;
}

bool is_cased(char32_t c) { return in_ranges(c, kCasedRanges); }
bool is_case_ignorable(char32_t c) { return in_ranges(c, kCaseIgnorableRanges); }

// str.lower, including CPython's Final_Sigma handling of U+03A3.
std::u32string python_lower(const std::u32string& s) {
  const Tables& t = tables();
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == U'\u03A3') {
      size_t j = i;
      bool final_sigma = false;
      while (j > 0 && is_case_ignorable(s[j - 1])) --j;
      final_sigma = j > 0 && is_cased(s[j - 1]);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < s.size() && is_case_ignorable(s[k])) ++k;
        final_sigma = k == s.size() || !is_cased(s[k]);
      }
      out.push_back(final_sigma ? U'\u03C2' : U'\u03C3');
      continue;
    }
    if (c < 128) {
      out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
      continue;
    }
    auto it = t.lower.find(c);
    if (it == t.lower.end()) out.push_back(c);
    else out += it->second;
  }
  return out;
}

// Does s[pos..] start with the ASCII `literal` under the pattern's IGNORECASE?
size_t match_literal(const std::u32string& s, size_t pos, std::string_view literal) {
  const Tables& t = tables();
  if (pos + literal.size() > s.size()) return 0;
  for (size_t k = 0; k < literal.size(); ++k) {
    const char32_t c = s[pos + k];
    const char want = literal[k];
    if (c == static_cast<char32_t>(want)) continue;
    if (want >= 'a' && want <= 'z') {
      if (c == static_cast<char32_t>(want - 'a' + 'A')) continue;
      auto f = t.fold.find(c);
      if (f != t.fold.end() && f->second == want) continue;
    }
    return 0;
  }
  return literal.size();
}

}  // namespace

ClipTokenizer::ClipTokenizer(std::unordered_map<std::string, int32_t> vocabulary,
                             const std::vector<std::pair<std::string, std::string>>& merges, int32_t start_id,
                             int32_t end_id)
    : vocabulary_(std::move(vocabulary)), start_id_(start_id), end_id_(end_id) {
  for (size_t i = 0; i < merges.size(); ++i)
    ranks_.emplace(merges[i].first + " " + merges[i].second, static_cast<int32_t>(i));
  // bytes_to_unicode: printable bytes map to themselves, the rest to 256, 257, ...
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    std::string utf8;
    append_utf8(utf8, printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++));
    byte_encoder_[b] = utf8;
  }
}

std::u32string ClipTokenizer::clean(const std::string& text) const {
  const std::u32string unescaped = html_unescape(html_unescape(decode_utf8(text)));
  std::u32string collapsed;  // " ".join(text.split()) also strips
  size_t i = 0;
  while (i < unescaped.size()) {
    while (i < unescaped.size() && is_str_space(unescaped[i])) ++i;
    if (i == unescaped.size()) break;
    if (!collapsed.empty()) collapsed.push_back(U' ');
    while (i < unescaped.size() && !is_str_space(unescaped[i])) collapsed.push_back(unescaped[i++]);
  }
  return python_lower(collapsed);
}

namespace {
// Pieces of more symbols than this take the heap-based merge; shorter ones the reference's simple loop.
constexpr size_t kLongPiece = 48;
// The memo of piece -> ids is dropped when it reaches this many entries, so unique words cannot grow it
// without bound; long pieces are never memoised.
constexpr size_t kMaxCachedPieces = 1 << 16;
}  // namespace

std::vector<int32_t> ClipTokenizer::bpe(const std::string& token) const {
  const bool cacheable = token.size() <= 4 * kLongPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto hit = cache_.find(token);
    if (hit != cache_.end()) return hit->second;
  }
  // Split into byte-unicode symbols (each one UTF-8 character).
  std::vector<std::string> word;
  for (size_t i = 0; i < token.size();) {
    const auto b = static_cast<unsigned char>(token[i]);
    const size_t n = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : 4;
    word.push_back(token.substr(i, n));
    i += n;
  }
  word.back() += "</w>";
  if (word.size() > kLongPiece) word = merge_long(std::move(word));
  while (word.size() > 1) {
    int32_t best = INT32_MAX;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto r = ranks_.find(word[i] + " " + word[i + 1]);
      if (r != ranks_.end() && r->second < best) {
        best = r->second;
        best_at = i;
      }
    }
    if (best == INT32_MAX) break;
    const std::string first = word[best_at], second = word[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word.swap(merged);
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  for (const auto& symbol : word) {
    auto it = vocabulary_.find(symbol);
    if (it == vocabulary_.end()) throw std::runtime_error("BPE symbol missing from the vocabulary: " + symbol);
    ids.push_back(it->second);
  }
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCachedPieces) cache_.clear();
    cache_.emplace(token, ids);
  }
  return ids;
}

std::vector<std::string> ClipTokenizer::merge_long(std::vector<std::string> word) const {
  // Symbols in a doubly linked list; candidate merges in a heap by (rank, position). The reference merges every
  // occurrence of the lowest-ranked pair left to right, then looks again; popping equal ranks leftmost first,
  // and skipping candidates whose symbols have changed since, applies the same merges in the same order.
  const int n = static_cast<int>(word.size());
  std::vector<int> prev(n), next(n), version(n, 0);
  std::vector<char> alive(n, 1);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int left, right, left_version, right_version;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::vector<Candidate> heap;
  auto push = [&](int left) {
    const int right = left < 0 ? -1 : next[left];
    if (right < 0) return;
    auto r = ranks_.find(word[left] + " " + word[right]);
    if (r == ranks_.end()) return;
    heap.push_back({r->second, left, right, version[left], version[right]});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || version[c.left] != c.left_version ||
        version[c.right] != c.right_version)
      continue;
    word[c.left] += word[c.right];
    ++version[c.left];
    alive[c.right] = 0;
    next[c.left] = next[c.right];
    if (next[c.left] >= 0) prev[next[c.left]] = c.left;
    push(prev[c.left]);
    push(c.left);
  }
  std::vector<std::string> merged;
  for (int i = 0; i >= 0 && i < n; i = next[i]) merged.push_back(std::move(word[i]));
  return merged;
}

std::vector<int32_t> ClipTokenizer::encode(const std::string& text, size_t max_ids) const {
  const std::u32string s = clean(text);
  std::vector<int32_t> ids;
  auto emit = [&](size_t begin, size_t end) {
    std::string bytes;
    for (size_t k = begin; k < end; ++k) append_utf8(bytes, s[k]);
    if (bytes == "<start_of_text>") { ids.push_back(start_id_); return; }
    if (bytes == "<end_of_text>") { ids.push_back(end_id_); return; }
    std::string mapped;
    for (unsigned char b : bytes) mapped += byte_encoder_[b];
    const auto piece = bpe(mapped);
    ids.insert(ids.end(), piece.begin(), piece.end());
  };
  static constexpr std::string_view kSpecials[] = {"<start_of_text>", "<end_of_text>"};
  static constexpr std::string_view kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  size_t pos = 0;
  while (pos < s.size()) {
    size_t length = 0;
    for (auto literal : kSpecials)
      if ((length = match_literal(s, pos, literal))) break;
    if (!length && s[pos] == U'\'')
      for (auto literal : kContractions)
        if ((length = match_literal(s, pos, literal))) break;
    if (!length && is_letter(s[pos])) {
      length = 1;
      while (pos + length < s.size() && is_letter(s[pos + length])) ++length;
    }
    if (!length && is_number(s[pos])) length = 1;
    if (!length && is_other(s[pos])) {
      length = 1;
      while (pos + length < s.size() && is_other(s[pos + length])) ++length;
    }
    if (!length) {  // whitespace, or a character no alternative matches (the reference skips both)
      ++pos;
      continue;
    }
    emit(pos, pos + length);
    pos += length;
    if (ids.size() >= max_ids) break;
  }
  return ids;
}

std::vector<std::string> ClipTokenizer::encode_batch(const std::vector<std::string>& texts, int context,
                                                     int32_t* out, int32_t* lengths, int threads) const {
  std::vector<std::string> errors(texts.size());
  mmserve::threads::parallel_for(texts.size(), threads, [&](size_t i) {
    int32_t* row = out + i * static_cast<size_t>(context);
    std::fill(row, row + context, 0);
    try {
      // Enough ids to fill the row and see that it is truncated; what follows cannot change them.
      std::vector<int32_t> ids = encode(texts[i], static_cast<size_t>(context));
      ids.insert(ids.begin(), start_id_);
      ids.push_back(end_id_);
      if (static_cast<int>(ids.size()) > context) {
        ids.resize(context);
        ids.back() = end_id_;
      }
      std::copy(ids.begin(), ids.end(), row);
      lengths[i] = static_cast<int32_t>(ids.size());
    } catch (const std::exception& error) {
      errors[i] = error.what();
      lengths[i] = 0;
    }
  });
  return errors;
}

}  // namespace mmserve::tokenizer
