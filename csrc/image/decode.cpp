#include "image/decode.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>

// jpeglib.h needs size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

namespace mmserve::image {
namespace {

// ---------------------------------------------------------------- EXIF --------

uint32_t read_u16(const uint8_t* p, bool little) {
  return little ? (p[0] | p[1] << 8) : (p[0] << 8 | p[1]);
}

uint32_t read_u32(const uint8_t* p, bool little) {
  return little ? (p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24)
                : (static_cast<uint32_t>(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]);
}

// Orientation (tag 0x0112) from a TIFF structure ("II*\0" / "MM\0*"), or 1.
int orientation_from_tiff(const uint8_t* tiff, size_t size) {
  if (size < 8) return 1;
  bool little;
  if (tiff[0] == 'I' && tiff[1] == 'I') little = true;
  else if (tiff[0] == 'M' && tiff[1] == 'M') little = false;
  else return 1;
  const uint32_t ifd = read_u32(tiff + 4, little);
  if (ifd > size - 2) return 1;
  const uint32_t entries = read_u16(tiff + ifd, little);
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t at = ifd + 2 + static_cast<size_t>(i) * 12;
    if (at + 12 > size) return 1;
    if (read_u16(tiff + at, little) == 0x0112 && read_u16(tiff + at + 2, little) == 3) {
      const uint32_t value = read_u16(tiff + at + 8, little);
      return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
    }
  }
  return 1;
}

// Where a rectangle [x0, x1) x [y0, y1) of a w x h stored frame lands after an
// EXIF orientation, and back.
struct Orientation {
  bool mirror_x, mirror_y, swap;  // stored x (y) runs backwards; axes exchange
  explicit Orientation(int o)
      : mirror_x(o == 2 || o == 3 || o == 7 || o == 8),
        mirror_y(o == 3 || o == 4 || o == 6 || o == 7),
        swap(o >= 5) {}

  template <typename T>
  void forward(int w, int h, T& x0, T& y0, T& x1, T& y1) const {
    if (mirror_x) std::tie(x0, x1) = std::make_pair(w - x1, w - x0);
    if (mirror_y) std::tie(y0, y1) = std::make_pair(h - y1, h - y0);
    if (swap) std::swap(x0, y0), std::swap(x1, y1);
  }
  // w x h is the stored frame here too.
  template <typename T>
  void backward(int w, int h, T& x0, T& y0, T& x1, T& y1) const {
    if (swap) std::swap(x0, y0), std::swap(x1, y1);
    if (mirror_x) std::tie(x0, x1) = std::make_pair(w - x1, w - x0);
    if (mirror_y) std::tie(y0, y1) = std::make_pair(h - y1, h - y0);
  }
};

// Everything but the pixels follows an EXIF orientation: the size, and the
// covered box and the window's place, whose mirrored axes measure from the
// frame's other edge before x and y swap.
void orient_geometry(Decoded& image) {
  const Orientation turn(image.orientation);
  turn.forward(image.frame_width, image.frame_height, image.box_x0, image.box_y0, image.box_x1, image.box_y1);
  int x0 = image.offset_x, y0 = image.offset_y, x1 = x0 + image.width, y1 = y0 + image.height;
  turn.forward(image.frame_width, image.frame_height, x0, y0, x1, y1);
  image.offset_x = x0, image.offset_y = y0;
  if (turn.swap) {
    std::swap(image.width, image.height);
    std::swap(image.full_width, image.full_height);
    std::swap(image.frame_width, image.frame_height);
  }
}

// Pillow's ImageOps.exif_transpose, on interleaved pixels.
void apply_orientation(Decoded& image) {
  const int o = image.orientation;
  if (o <= 1 || o > 8) return;
  const int w = image.width, h = image.height, c = image.channels;
  const bool swap = o >= 5;
  const int ow = swap ? h : w, oh = swap ? w : h;
  PixelBuffer out(image.pixels.size());
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2: sx = w - 1 - x; break;                     // mirror
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;     // rotate 180
        case 4: sy = h - 1 - y; break;                     // flip
        case 5: sx = y; sy = x; break;                     // transpose
        case 6: sx = y; sy = h - 1 - x; break;             // rotate 90 clockwise
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;     // transverse
        case 8: sx = w - 1 - y; sy = x; break;             // rotate 90 counter-clockwise
      }
      std::memcpy(&out[(static_cast<size_t>(y) * ow + x) * c],
                  &image.pixels[(static_cast<size_t>(sy) * w + sx) * c], c);
    }
  }
  image.pixels.swap(out);
  orient_geometry(image);
}

void check_size(uint64_t width, uint64_t height, const Limits& limits) {
  if (width == 0 || height == 0)
    throw DecodeError(Failure::Invalid, "image has zero width or height (" + std::to_string(width) + "x" + std::to_string(height) +
                      ")");
  if (width > static_cast<uint64_t>(limits.max_side) || height > static_cast<uint64_t>(limits.max_side))
    throw DecodeError(Failure::TooManyPixels, "absurd dimensions " + std::to_string(width) + "x" + std::to_string(height) +
                      " (maximum side " + std::to_string(limits.max_side) + ")");
  if (width * height > limits.max_pixels)
    throw DecodeError(Failure::TooManyPixels, "decompression bomb: " + std::to_string(width) + "x" + std::to_string(height) + " = " +
                      std::to_string(width * height) + " pixels exceeds the limit of " +
                      std::to_string(limits.max_pixels));
}

// Composite interleaved RGBA over `bg` into RGB (in place, shrinking the buffer).
void composite_rgba(PixelBuffer& pixels, size_t count, const uint8_t bg[3]) {
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* in = &pixels[i * 4];
    const int a = in[3];
    uint8_t* out = &pixels[i * 3];  // out never overtakes in: 3i <= 4i
    const uint8_t r = in[0], g = in[1], b = in[2];
    out[0] = static_cast<uint8_t>((r * a + bg[0] * (255 - a) + 127) / 255);
    out[1] = static_cast<uint8_t>((g * a + bg[1] * (255 - a) + 127) / 255);
    out[2] = static_cast<uint8_t>((b * a + bg[2] * (255 - a) + 127) / 255);
  }
  pixels.resize(count * 3);
}

// ---------------------------------------------------------------- JPEG --------

struct JpegError {
  jpeg_error_mgr manager;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  longjmp(error->jump, 1);
}

void jpeg_warn(j_common_ptr cinfo, int level) {
  // Data ending early is an error here (libjpeg would pad with gray); other
  // corrupt-data warnings are common in real files and tolerated, like Pillow.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
    auto* error = reinterpret_cast<JpegError*>(cinfo->err);
    std::snprintf(error->message, sizeof error->message, "truncated JPEG data");
    longjmp(error->jump, 1);
  }
}

// The libjpeg calls live in functions without C++ objects, so longjmp skips no destructors.
struct JpegState {
  jpeg_decompress_struct cinfo;
  JpegError error;
  bool created = false;
};

bool jpeg_header(JpegState* s, const uint8_t* data, size_t size) {
  s->cinfo.err = jpeg_std_error(&s->error.manager);
  s->error.manager.error_exit = jpeg_fail;
  s->error.manager.emit_message = jpeg_warn;
  s->error.message[0] = 0;
  if (setjmp(s->error.jump)) return false;
  jpeg_create_decompress(&s->cinfo);
  s->created = true;
  jpeg_mem_src(&s->cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&s->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&s->cinfo, TRUE);
  return true;
}

bool jpeg_start(JpegState* s, int denominator, J_COLOR_SPACE out_space) {
  if (setjmp(s->error.jump)) return false;
  s->cinfo.scale_num = 1;
  s->cinfo.scale_denom = static_cast<unsigned>(denominator);
  s->cinfo.out_color_space = out_space;
  jpeg_start_decompress(&s->cinfo);
  return true;
}

bool jpeg_crop(JpegState* s, JDIMENSION* xoffset, JDIMENSION* width) {
  if (setjmp(s->error.jump)) return false;
  jpeg_crop_scanline(&s->cinfo, xoffset, width);
  return true;
}

// Rows [first, last) into `out`; the rows before are skipped (entropy-decoded
// only), the rows after are never read.
bool jpeg_rows(JpegState* s, uint8_t* out, size_t stride, JDIMENSION first, JDIMENSION last) {
  if (setjmp(s->error.jump)) return false;
  while (s->cinfo.output_scanline < first) {
    if (jpeg_skip_scanlines(&s->cinfo, first - s->cinfo.output_scanline) == 0) {
      std::snprintf(s->error.message, sizeof s->error.message, "no rows left to skip to row %u", first);
      return false;
    }
  }
  while (s->cinfo.output_scanline < last) {
    JSAMPROW row = out + static_cast<size_t>(s->cinfo.output_scanline - first) * stride;
    jpeg_read_scanlines(&s->cinfo, &row, 1);
  }
  if (last == s->cinfo.output_height) jpeg_finish_decompress(&s->cinfo);
  return true;
}

struct JpegGuard {
  JpegState* state;
  ~JpegGuard() {
    if (state->created) jpeg_destroy_decompress(&state->cinfo);
  }
};

int jpeg_exif_orientation(const jpeg_decompress_struct& cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0)
      return orientation_from_tiff(m->data + 6, m->data_length - 6);
  }
  return 1;
}

// The caller's window (oriented frame) in the stored frame, widened by two
// iMCUs: fancy chroma upsampling reads one neighbour across a cut.
Window stored_window(const Decoded& image, const std::function<Window(const Decoded&)>& needed, int d,
                     const jpeg_decompress_struct& cinfo) {
  Decoded oriented = image;  // the whole frame, no pixels yet
  oriented.width = image.frame_width;
  oriented.height = image.frame_height;
  orient_geometry(oriented);
  Window w = needed(oriented);
  Orientation(image.orientation).backward(image.frame_width, image.frame_height, w.x0, w.y0, w.x1, w.y1);
  const int margin_x = 2 * (8 * cinfo.max_h_samp_factor + d - 1) / d;
  const int margin_y = 2 * (8 * cinfo.max_v_samp_factor + d - 1) / d;
  w = {std::max(0, w.x0 - margin_x), std::max(0, w.y0 - margin_y), std::min(image.frame_width, w.x1 + margin_x),
       std::min(image.frame_height, w.y1 + margin_y)};
  if (w.x0 >= w.x1 || w.y0 >= w.y1) return {0, 0, image.frame_width, image.frame_height};
  return w;
}

Decoded decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& options) {
  JpegState state{};
  JpegGuard guard{&state};
  if (!jpeg_header(&state, data, size)) throw DecodeError(Failure::Invalid, std::string("invalid JPEG: ") + state.error.message);
  jpeg_decompress_struct& cinfo = state.cinfo;
  check_size(cinfo.image_width, cinfo.image_height, options.limits);

  Decoded image;
  // Saved markers live in libjpeg's image pool, freed by jpeg_finish_decompress: read them now.
  if (options.apply_exif_orientation) image.orientation = jpeg_exif_orientation(cinfo);
  J_COLOR_SPACE out_space = JCS_RGB;
  image.channels = 3;
  if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
    out_space = JCS_GRAYSCALE;
    image.channels = 1;
  } else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    out_space = JCS_CMYK;
    image.channels = 4;
    image.cmyk = true;
  }
  const int d = options.fast_path_target > 0
                    ? fast_path_denominator(static_cast<int>(cinfo.image_width), static_cast<int>(cinfo.image_height),
                                            options.fast_path_target)
                    : options.scale_denominator;
  if (d != 1 && d != 2 && d != 4 && d != 8) throw DecodeError(Failure::Internal, "JPEG scale must be 1, 2, 4 or 8");
  if (!jpeg_start(&state, d, out_space)) throw DecodeError(Failure::Invalid, std::string("invalid JPEG: ") + state.error.message);
  if (cinfo.output_components != image.channels) throw DecodeError(Failure::Invalid, "unexpected JPEG component count");
  image.frame_width = static_cast<int>(cinfo.output_width);
  image.frame_height = static_cast<int>(cinfo.output_height);
  image.full_width = static_cast<int>(cinfo.image_width);
  image.full_height = static_cast<int>(cinfo.image_height);
  image.box_x1 = static_cast<float>(image.full_width) / d;  // exact: a power-of-two divisor
  image.box_y1 = static_cast<float>(image.full_height) / d;
  const Window window = options.needed ? stored_window(image, options.needed, d, cinfo)
                                       : Window{0, 0, image.frame_width, image.frame_height};
  JDIMENSION xoffset = static_cast<JDIMENSION>(window.x0), width = static_cast<JDIMENSION>(window.x1 - window.x0);
  // libjpeg widens the columns to whole iMCUs (and reports where they start).
  if (width < cinfo.output_width && !jpeg_crop(&state, &xoffset, &width))
    throw DecodeError(Failure::Invalid, std::string("invalid JPEG: ") + state.error.message);
  image.offset_x = static_cast<int>(xoffset);
  image.offset_y = window.y0;
  image.width = static_cast<int>(cinfo.output_width);
  image.height = window.y1 - window.y0;
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  image.pixels.resize(stride * image.height);
  if (!jpeg_rows(&state, image.pixels.data(), stride, static_cast<JDIMENSION>(window.y0),
                 static_cast<JDIMENSION>(window.y1)))
    throw DecodeError(Failure::Corrupt, std::string("corrupt JPEG: ") + state.error.message);
  if (image.cmyk) {
    // Pillow reads every CMYK JPEG with Adobe's inverted polarity ("CMYK;I").
    for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(255 - v);
  }
  return image;
}

// ----------------------------------------------------------------- PNG --------

struct PngReader {
  const uint8_t* data;
  size_t size;
  size_t offset;
};

struct PngMessage {
  char text[200];
};

void png_read_bytes(png_structp png, png_bytep out, png_size_t length) {
  auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
  if (length > reader->size - reader->offset) png_error(png, "truncated PNG data");
  std::memcpy(out, reader->data + reader->offset, length);
  reader->offset += length;
}

void png_fail(png_structp png, png_const_charp message) {
  auto* m = static_cast<PngMessage*>(png_get_error_ptr(png));
  std::snprintf(m->text, sizeof m->text, "%s", message);
  png_longjmp(png, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  PngReader reader{};
  PngMessage message{};
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  bool has_trns = false;
};

bool png_header(PngState* s, int max_side) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_read_fn(s->png, &s->reader, png_read_bytes);
  png_set_user_limits(s->png, static_cast<png_uint_32>(max_side), static_cast<png_uint_32>(max_side));
  png_read_info(s->png, s->info);
  png_get_IHDR(s->png, s->info, &s->width, &s->height, &s->bit_depth, &s->color_type, &s->interlace, nullptr,
               nullptr);
  s->has_trns = png_get_valid(s->png, s->info, PNG_INFO_tRNS) != 0;
  return true;
}

bool png_configure(PngState* s, bool alpha, size_t* rowbytes, int* channels) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  if (s->color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s->png);
  if (s->color_type == PNG_COLOR_TYPE_GRAY && s->bit_depth < 8) png_set_expand_gray_1_2_4_to_8(s->png);
  if (s->has_trns) png_set_tRNS_to_alpha(s->png);
  // 16 -> 8 bits keeps the high byte, as Pillow's "RGB;16B" unpacker does.
  if (s->bit_depth == 16) png_set_strip_16(s->png);
  if (alpha && (s->color_type == PNG_COLOR_TYPE_GRAY || s->color_type == PNG_COLOR_TYPE_GRAY_ALPHA))
    png_set_gray_to_rgb(s->png);
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  *rowbytes = png_get_rowbytes(s->png, s->info);
  *channels = png_get_channels(s->png, s->info);
  return true;
}

bool png_pixels(PngState* s, png_bytepp rows) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_read_image(s->png, rows);
  png_read_end(s->png, nullptr);
  return true;
}

int png_exif_orientation(PngState* s) {
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 length = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(s->png, s->info, &length, &exif) && exif) return orientation_from_tiff(exif, length);
#endif
  (void)s;
  return 1;
}

struct PngGuard {
  PngState* state;
  ~PngGuard() {
    if (state->png) png_destroy_read_struct(&state->png, state->info ? &state->info : nullptr, nullptr);
  }
};

Decoded decode_png(const uint8_t* data, size_t size, const DecodeOptions& options) {
  PngState state;
  PngGuard guard{&state};
  state.reader = {data, size, 0};
  state.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state.message, png_fail, png_ignore_warning);
  if (!state.png) throw DecodeError(Failure::Internal, "out of memory creating the PNG reader");
  state.info = png_create_info_struct(state.png);
  if (!state.info) throw DecodeError(Failure::Internal, "out of memory creating the PNG reader");
  const int limit_side = options.limits.max_side;
  if (!png_header(&state, limit_side)) throw DecodeError(Failure::Invalid, std::string("invalid PNG: ") + state.message.text);
  check_size(state.width, state.height, options.limits);

  const bool alpha = state.has_trns || (state.color_type & PNG_COLOR_MASK_ALPHA);
  size_t rowbytes = 0;
  int channels = 0;
  if (!png_configure(&state, alpha, &rowbytes, &channels))
    throw DecodeError(Failure::Invalid, std::string("invalid PNG: ") + state.message.text);
  const int expected = alpha ? 4 : (state.color_type == PNG_COLOR_TYPE_GRAY ? 1 : 3);
  if (channels != expected || rowbytes != static_cast<size_t>(state.width) * channels)
    throw DecodeError(Failure::Invalid, "unexpected PNG pixel layout");

  Decoded image;
  image.width = static_cast<int>(state.width);
  image.height = static_cast<int>(state.height);
  image.pixels.resize(rowbytes * state.height);
  std::vector<png_bytep> rows(state.height);
  for (png_uint_32 y = 0; y < state.height; ++y) rows[y] = image.pixels.data() + y * rowbytes;
  if (!png_pixels(&state, rows.data())) throw DecodeError(Failure::Corrupt, std::string("corrupt PNG: ") + state.message.text);

  if (alpha) {
    composite_rgba(image.pixels, static_cast<size_t>(image.width) * image.height, options.limits.background);
    image.channels = 3;
  } else {
    image.channels = channels;
  }
  // Pillow resizes palette ("P") and 1-bit ("1") images with nearest neighbour.
  if (state.color_type == PNG_COLOR_TYPE_PALETTE ||
      (state.color_type == PNG_COLOR_TYPE_GRAY && state.bit_depth == 1))
    image.resample = Resample::Nearest;
  if (options.apply_exif_orientation) image.orientation = png_exif_orientation(&state);
  return image;
}

}  // namespace

Format detect_format(const uint8_t* data, size_t size) {
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return Format::Jpeg;
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return Format::Png;
  return Format::Unknown;
}

const char* format_name(Format format) {
  switch (format) {
    case Format::Jpeg: return "JPEG";
    case Format::Png: return "PNG";
    default: return "unknown";
  }
}

namespace {

void check_input(const uint8_t* data, size_t size, const Limits& limits, Format* format) {
  if (size == 0 || data == nullptr) throw DecodeError(Failure::Empty, "empty input (0 bytes)");
  if (size > limits.max_encoded_bytes)
    throw DecodeError(Failure::TooLarge, "encoded image of " + std::to_string(size) + " bytes exceeds the limit of " +
                      std::to_string(limits.max_encoded_bytes) + " bytes");
  *format = detect_format(data, size);
  if (*format == Format::Unknown) {
    if (size >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0)
      throw DecodeError(Failure::UnsupportedFormat, "unsupported format: WebP (supported: JPEG, PNG)");
    if (size >= 6 && std::memcmp(data, "GIF8", 4) == 0)
      throw DecodeError(Failure::UnsupportedFormat, "unsupported format: GIF (supported: JPEG, PNG)");
    throw DecodeError(Failure::UnsupportedFormat, "unsupported format: not a JPEG or PNG file");
  }
}

}  // namespace

Header read_header(const uint8_t* data, size_t size, const Limits& limits) {
  Header header;
  check_input(data, size, limits, &header.format);
  if (header.format == Format::Jpeg) {
    JpegState state{};
    JpegGuard guard{&state};
    if (!jpeg_header(&state, data, size)) throw DecodeError(Failure::Invalid, std::string("invalid JPEG: ") + state.error.message);
    header.width = static_cast<int>(state.cinfo.image_width);
    header.height = static_cast<int>(state.cinfo.image_height);
  } else {
    if (size < 24 || std::memcmp(data + 12, "IHDR", 4) != 0) throw DecodeError(Failure::Invalid, "invalid PNG: no IHDR chunk");
    const uint32_t width = read_u32(data + 16, false), height = read_u32(data + 20, false);
    if (width > 0x7FFFFFFFu || height > 0x7FFFFFFFu) throw DecodeError(Failure::Invalid, "invalid PNG: dimensions out of range");
    header.width = static_cast<int>(width);
    header.height = static_cast<int>(height);
  }
  return header;
}

Decoded decode(const uint8_t* data, size_t size, const DecodeOptions& options) {
  Format format;
  check_input(data, size, options.limits, &format);
  if (format == Format::Png) {
    // Our own limits first, from the IHDR bytes, before libpng sees the image.
    const Header header = read_header(data, size, options.limits);
    check_size(static_cast<uint32_t>(header.width), static_cast<uint32_t>(header.height), options.limits);
  }
  Decoded image = format == Format::Jpeg ? decode_jpeg(data, size, options) : decode_png(data, size, options);
  if (image.full_width == 0) {  // decoded whole, at full size
    image.full_width = image.frame_width = image.width;
    image.full_height = image.frame_height = image.height;
    image.box_x1 = static_cast<float>(image.width);
    image.box_y1 = static_cast<float>(image.height);
  }
  apply_orientation(image);
  return image;
}

int fast_path_denominator(int width, int height, int target) {
  // The largest DCT scale whose image still covers the target on its short
  // side, so the bicubic resize only ever shrinks. With the resize mapping the
  // exact covered region (Decoded::box_*), embeddings stay within 0.998 cosine
  // of the full decode on photos even at the boundary (measured; see tests).
  const int64_t shortest = std::min(width, height);
  if (target <= 0) return 1;
  for (int d : {8, 4, 2}) {
    if (shortest >= static_cast<int64_t>(d) * target) return d;
  }
  return 1;
}

void cmyk_to_rgb(const uint8_t* cmyk, uint8_t* rgb, size_t pixels) {
  auto muldiv255 = [](int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  auto clip = [](int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); };
  for (size_t i = 0; i < pixels; ++i, cmyk += 4, rgb += 3) {
    const int nk = 255 - cmyk[3];
    rgb[0] = clip(nk - muldiv255(cmyk[0], nk));
    rgb[1] = clip(nk - muldiv255(cmyk[1], nk));
    rgb[2] = clip(nk - muldiv255(cmyk[2], nk));
  }
}

const char* failure_code(Failure failure) {
  switch (failure) {
    case Failure::Empty: return "empty";
    case Failure::TooLarge: return "too_large";
    case Failure::UnsupportedFormat: return "unsupported_format";
    case Failure::Invalid: return "invalid";
    case Failure::Corrupt: return "corrupt";
    case Failure::TooManyPixels: return "too_many_pixels";
    case Failure::Internal: break;
  }
  return "internal";
}

}  // namespace mmserve::image
