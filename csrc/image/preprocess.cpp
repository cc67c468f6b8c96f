#include "image/preprocess.h"

#include "common/thread_pool.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace mmserve::image {

void resize_crop_nearest(const Image8& src, const ResizeCrop& g, const MutableImage8& dst) {
  // Pillow's ImagingScaleAffine: positions accumulate by repeated addition in
  // double, starting half a step in, and truncate; reproduced step by step.
  // Palette and 1-bit PNGs only: always decoded whole, no box or window.
  const double step_x = static_cast<double>(src.width) / g.resize_width;
  const double step_y = static_cast<double>(src.height) / g.resize_height;
  std::vector<int> columns(g.crop_width);
  double xo = 0.0 + step_x * 0.5;
  for (int x = 0; x < g.crop_x + g.crop_width; ++x, xo += step_x) {
    if (x >= g.crop_x) columns[x - g.crop_x] = std::min(std::max(static_cast<int>(xo), 0), src.width - 1);
  }
  double yo = 0.0 + step_y * 0.5;
  const int ch = src.channels;
  for (int y = 0; y < g.crop_y + g.crop_height; ++y, yo += step_y) {
    if (y < g.crop_y) continue;
    const int sy = std::min(std::max(static_cast<int>(yo), 0), src.height - 1);
    const uint8_t* in = src.data + sy * src.stride;
    uint8_t* out = dst.data + (y - g.crop_y) * dst.stride;
    for (int x = 0; x < g.crop_width; ++x) std::memcpy(out + x * ch, in + columns[x] * ch, ch);
  }
}

void preprocess_into(const uint8_t* data, size_t size, const PreprocessOptions& options, uint8_t* out,
                     std::ptrdiff_t stride) {
  if (options.resize_shortest_edge <= 0 || options.crop <= 0 || options.crop > options.resize_shortest_edge)
    throw std::invalid_argument("need 0 < crop <= resize_shortest_edge");
  const bool squashed = options.mode == ResizeMode::Squash;
  if (squashed && options.crop != options.resize_shortest_edge)
    throw std::invalid_argument("a squash resize has no crop: need crop == resize_shortest_edge");
  DecodeOptions decoding = options.decode;
  if (!options.exact) decoding.fast_path_target = options.resize_shortest_edge;
  // The reference geometry of the stored size (for a squash too, the DCT fast path keeps the short side at
  // least the target, so neither axis is upsampled); a DCT-scaled decode resizes the
  // region of its frame that the image covers, so both paths sample the same
  // points. A JPEG is decoded only where the resize reads (the crop's window).
  auto geometry = [&](const Decoded& image) {
    ResizeCrop g = squashed ? squash(image.full_width, image.full_height, options.crop)
                            : shortest_side_center_crop(image.full_width, image.full_height,
                                                        options.resize_shortest_edge, options.crop);
    g.box_x0 = image.box_x0, g.box_y0 = image.box_y0, g.box_x1 = image.box_x1, g.box_y1 = image.box_y1;
    g.frame_width = image.frame_width, g.frame_height = image.frame_height;
    g.offset_x = image.offset_x, g.offset_y = image.offset_y;
    return g;
  };
  decoding.needed = [&](const Decoded& whole) { return source_window(geometry(whole), options.filter); };
  const Decoded image = decode(data, size, decoding);
  const ResizeCrop g = geometry(image);
  const Image8 src{image.pixels.data(), image.width, image.height, image.channels,
                   static_cast<std::ptrdiff_t>(image.width) * image.channels};

  auto resize_into = [&](const MutableImage8& target) {
    if (image.resample == Resample::Nearest) resize_crop_nearest(src, g, target);
    else resize_crop(src, g, options.filter, target);
  };
  if (image.channels == 3) {
    resize_into(MutableImage8{out, options.crop, options.crop, 3, stride});
    return;
  }
  PixelBuffer cropped(static_cast<size_t>(options.crop) * options.crop * image.channels);
  const std::ptrdiff_t cropped_stride = static_cast<std::ptrdiff_t>(options.crop) * image.channels;
  resize_into(MutableImage8{cropped.data(), options.crop, options.crop, image.channels, cropped_stride});
  for (int y = 0; y < options.crop; ++y) {
    const uint8_t* in = cropped.data() + y * cropped_stride;
    uint8_t* row = out + y * stride;
    if (image.cmyk) {
      cmyk_to_rgb(in, row, options.crop);
    } else {  // gray
      for (int x = 0; x < options.crop; ++x) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = in[x];
    }
  }
}

std::vector<std::optional<ItemFailure>> preprocess_batch(const std::vector<EncodedImage>& images,
                                                         const PreprocessOptions& options, uint8_t* out,
                                                         int threads) {
  const size_t slot = static_cast<size_t>(options.crop) * options.crop * 3;
  std::vector<std::optional<ItemFailure>> failures(images.size());
  mmserve::threads::parallel_for(images.size(), threads, [&](size_t i) {
    uint8_t* target = out + i * slot;
    try {
      preprocess_into(images[i].data, images[i].size, options, target, static_cast<std::ptrdiff_t>(options.crop) * 3);
    } catch (const DecodeError& error) {
      failures[i] = ItemFailure{failure_code(error.failure), error.what()};
      std::memset(target, 0, slot);
    } catch (const std::exception& error) {
      failures[i] = ItemFailure{"internal", error.what()[0] ? error.what() : "unknown error"};
      std::memset(target, 0, slot);
    }
  });
  return failures;
}

}  // namespace mmserve::image
