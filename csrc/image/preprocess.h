// Encoded image -> the image tower's uint8 RGB input, one image or a batch.
//
// decode (JPEG/PNG, limits, EXIF orientation, alpha over the background)
//   -> optional DCT-domain downscale for large JPEGs (the fast path)
//   -> Pillow-exact resize in the file's own mode: shortest side + centre crop
//      (CLIP), or both sides to the target, aspect ratio not kept (SigLIP)
//   -> RGB (gray replicated, inverted CMYK through Pillow's cmyk2rgb)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <optional>
#include <string>
#include <vector>

#include "image/decode.h"
#include "image/resample.h"

namespace mmserve::image {

enum class ResizeMode {
  ShortestSideCrop,  // shortest side to resize_shortest_edge, then a centred crop x crop window
  Squash,            // the whole image to crop x crop (resize_shortest_edge must equal crop)
};

struct PreprocessOptions {
  int resize_shortest_edge = 224;
  int crop = 224;
  ResizeMode mode = ResizeMode::ShortestSideCrop;
  Filter filter = Filter::Bicubic;
  // false: JPEGs whose short side is at least twice the target decode at 1/2,
  // 1/4 or 1/8 scale (the largest that keeps the short side >= the target).
  bool exact = false;
  DecodeOptions decode;
};

// Writes crop x crop x 3 bytes at `out` (rows `stride` bytes apart).
// Throws DecodeError (bad data) or std::invalid_argument (bad options).
void preprocess_into(const uint8_t* data, size_t size, const PreprocessOptions& options, uint8_t* out,
                     std::ptrdiff_t stride);

struct EncodedImage {
  const uint8_t* data;
  size_t size;
};

// Why one image of a batch failed: its failure_code() ("internal" for anything but a DecodeError) and message.
struct ItemFailure {
  std::string code;
  std::string message;
};

// Preprocess every image into out[i] (a [B, crop, crop, 3] buffer) on up to
// `threads` threads (0: the thread budget). Returns, per image, nothing for
// success or why it failed (its slot is zero-filled).
std::vector<std::optional<ItemFailure>> preprocess_batch(const std::vector<EncodedImage>& images,
                                                         const PreprocessOptions& options, uint8_t* out,
                                                         int threads);

// Nearest-neighbour resize + crop exactly as Pillow's resize(NEAREST) + crop.
void resize_crop_nearest(const Image8& src, const ResizeCrop& geometry, const MutableImage8& dst);

}  // namespace mmserve::image
