// Pillow-exact separable resampling of 8-bit images, restricted to a crop window.
//
// Reproduces Pillow's libImaging/Resample.c for 8 bits per channel: double
// coefficients normalised per output pixel, converted to 22-bit fixed point,
// int32 accumulation starting at one half, horizontal pass first, then vertical.
// Integer addition is associative, so the SIMD kernels give the same bits as the
// scalar one and as Pillow. Only the output pixels inside the crop window are
// computed; each depends only on its own coefficients, so the result equals
// Pillow's resize followed by a crop.
#pragma once

#include "common/isa.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mmserve::image {

enum class Filter { Nearest, Box, Bilinear, Hamming, Bicubic, Lanczos };

// Parses Pillow's names ("bicubic", ...); throws std::invalid_argument.
Filter filter_from_name(const std::string& name);

struct ResizeCrop {
  int resize_width = 0;   // the full resized image (before the crop)
  int resize_height = 0;
  int crop_x = 0;         // crop window inside the resized image
  int crop_y = 0;
  int crop_width = 0;
  int crop_height = 0;
  // The source region resized to resize_* (Pillow's `box`, in source pixels,
  // single precision as Pillow keeps it); box_x1 == 0 means the whole source.
  float box_x0 = 0, box_y0 = 0, box_x1 = 0, box_y1 = 0;
  // The source may be a window of a larger frame (a JPEG decoded only where
  // the resize reads): box and kernels refer to the frame (frame_width == 0:
  // the source itself), whose pixel (offset_x, offset_y) is the source's first.
  int frame_width = 0, frame_height = 0;
  int offset_x = 0, offset_y = 0;
};

// Pixels [x0, x1) x [y0, y1).
struct Window {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// The frame pixels resize_crop reads for this geometry (frame_* must be set).
Window source_window(const ResizeCrop& geometry, Filter filter);

// The reference geometry: shortest side to `size` (long side truncated, as
// torchvision and Hugging Face compute it), then a centred `crop` x `crop`
// window with offsets rounded half to even (Python's round()).
ResizeCrop shortest_side_center_crop(int width, int height, int size, int crop);

// Both sides to `size` (aspect ratio not kept), no crop: SigLIP's resize.
ResizeCrop squash(int width, int height, int size);

struct Image8 {
  const uint8_t* data;
  int width;
  int height;
  int channels;         // 1 to 4, interleaved
  std::ptrdiff_t stride;  // bytes between rows
};

struct MutableImage8 {
  uint8_t* data;
  int width;
  int height;
  int channels;
  std::ptrdiff_t stride;
};

using Isa = mmserve::isa::Isa;

// Resample `src` to geometry.resize_* and write the crop window into `dst`
// (dst.width == crop_width, dst.height == crop_height, same channels).
// `isa` forces a kernel (tests); Auto picks the best one this CPU supports.
void resize_crop(const Image8& src, const ResizeCrop& geometry, Filter filter, const MutableImage8& dst,
                 Isa isa = Isa::Auto);

// The kernel set Auto resolves to on this CPU ("avx512", "avx2" or "scalar").
const char* active_resample_kernel();

}  // namespace mmserve::image
