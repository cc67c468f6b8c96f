// Decoding encoded images (JPEG, PNG) into interleaved 8-bit pixels, with limits.
//
// The decoded layout follows what the reference pipeline (Pillow, OpenAI order:
// resize in the file's own mode, crop, then convert to RGB) resizes:
//   - gray JPEG/PNG: 1 channel;  colour: 3 channels (RGB);
//   - CMYK/YCCK JPEG: 4 channels of inverted CMYK (Pillow's Adobe convention),
//     converted to RGB after the resize with Pillow's cmyk2rgb;
//   - palette and 1-bit PNGs: expanded to gray/RGB and resized with nearest
//     neighbour, as Pillow does for modes "P" and "1";
//   - alpha (RGBA, gray+alpha, tRNS): composited over `Limits::background`
//     before the resize (the reference drops alpha instead; see README).
// Every failure throws DecodeError with a message naming the problem; sizes are
// checked against the limits before any large allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "image/resample.h"

namespace mmserve::image {

// A byte vector whose resize() leaves new bytes uninitialised: decoders and
// resamplers overwrite every byte, and zero-filling megabytes costs a pass.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using PixelBuffer = std::vector<uint8_t, UninitializedAllocator<uint8_t>>;

// Why an image could not be decoded: the machine-readable part of a DecodeError (its code, see failure_code).
enum class Failure { Empty, TooLarge, UnsupportedFormat, Invalid, Corrupt, TooManyPixels, Internal };

class DecodeError : public std::runtime_error {
 public:
  DecodeError(Failure failure, const std::string& message) : std::runtime_error(message), failure(failure) {}
  Failure failure;
};

// "empty", "too_large", "unsupported_format", "invalid", "corrupt", "too_many_pixels", "internal".
const char* failure_code(Failure failure);

enum class Format { Unknown, Jpeg, Png };

// From the leading bytes, never from a file name.
Format detect_format(const uint8_t* data, size_t size);
const char* format_name(Format format);

struct Limits {
  size_t max_encoded_bytes = 64u << 20;  // 64 MiB
  uint64_t max_pixels = 100'000'000;     // decoded width x height (Pillow warns at 89 M)
  int max_side = 65'535;                 // JPEG's own maximum
  uint8_t background[3] = {255, 255, 255};  // alpha is composited over this (white)
};

enum class Resample { Convolution, Nearest };

struct Decoded {
  int width = 0;
  int height = 0;
  int channels = 0;  // 1 (gray), 3 (RGB) or 4 (inverted CMYK)
  bool cmyk = false;
  Resample resample = Resample::Convolution;
  int orientation = 1;  // EXIF orientation tag (1..8); already applied to `pixels`
  // The stored size after orientation, before any DCT scaling, and the region
  // of the decoded frame it covers: a JPEG decoded at 1/d is ceil(full_width / d)
  // columns of which full_width / d are image (libjpeg pads the last one;
  // orientation may move it first). The resize maps that region (Pillow's `box`).
  int full_width = 0;
  int full_height = 0;
  float box_x0 = 0, box_y0 = 0, box_x1 = 0, box_y1 = 0;
  // `pixels` may be a window of that frame (DecodeOptions::needed): it starts
  // at (offset_x, offset_y) of the frame_width x frame_height frame.
  int frame_width = 0, frame_height = 0;
  int offset_x = 0, offset_y = 0;
  PixelBuffer pixels;  // height x width x channels
};

struct DecodeOptions {
  Limits limits;
  // JPEG only: decode at 1/scale_denominator size in the DCT domain (1, 2, 4, 8).
  int scale_denominator = 1;
  // JPEG only, when > 0: choose the scale from the stored size instead, with
  // fast_path_denominator(width, height, fast_path_target).
  int fast_path_target = 0;
  bool apply_exif_orientation = true;
  // JPEG only: the part of the oriented, scaled frame the caller will read,
  // given the image's geometry as decode() will return it for the whole frame
  // (sizes, frame, box; no pixels yet). Columns and rows beyond it (and a
  // margin of two iMCUs) are not decoded; rows after it are not even
  // entropy-decoded. Unset: the whole frame.
  std::function<Window(const Decoded& geometry)> needed;
};

// Header only: (width, height) of the stored image, before scaling/orientation.
struct Header {
  Format format = Format::Unknown;
  int width = 0;
  int height = 0;
};
Header read_header(const uint8_t* data, size_t size, const Limits& limits);

Decoded decode(const uint8_t* data, size_t size, const DecodeOptions& options);

// The DCT scale denominator for a JPEG of this size (1 = none): the largest of
// 2, 4, 8 that keeps the short side at least the target (no upsampling).
int fast_path_denominator(int width, int height, int target);

// Pillow's CMYK -> RGB (Convert.c cmyk2rgb) on inverted-CMYK pixels.
void cmyk_to_rgb(const uint8_t* cmyk, uint8_t* rgb, size_t pixels);

}  // namespace mmserve::image
