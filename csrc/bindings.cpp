// The one place that registers the C++ code in the private module mmserve._C.
// Python code uses the thin wrappers in mmserve/, never _C directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>

#include "common/thread_pool.h"
#include "cpu/cpu_features.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "image/resample.h"
#include "simd/similarity.h"
#include "tokenizer/clip_tokenizer.h"

namespace py = pybind11;

namespace {

using U8Array = py::array_t<uint8_t, py::array::forcecast>;

mmserve::isa::Isa isa_from_name(const std::string& name) {
  try {
    return mmserve::isa::from_name(name);
  } catch (const std::invalid_argument& error) {
    throw py::value_error(error.what());
  }
}

// An image array [H, W] or [H, W, C] with contiguous pixels (rows may be strided).
mmserve::image::Image8 image_view(const py::array& array) {
  if (array.dtype().kind() != 'u' || array.itemsize() != 1) throw py::type_error("image must be uint8");
  if (array.ndim() != 2 && array.ndim() != 3) throw py::value_error("image must be [H, W] or [H, W, C]");
  const int channels = array.ndim() == 3 ? static_cast<int>(array.shape(2)) : 1;
  if (channels < 1 || channels > 4) throw py::value_error("image must have 1 to 4 channels");
  if ((array.ndim() == 3 && array.strides(2) != 1) || array.strides(1) != channels)
    throw py::value_error("image pixels must be contiguous within a row");
  return {static_cast<const uint8_t*>(array.data()), static_cast<int>(array.shape(1)),
          static_cast<int>(array.shape(0)), channels, array.strides(0)};
}

py::array resize_crop(const py::array& src, std::pair<int, int> resize, std::tuple<int, int, int, int> crop,
                      const std::string& filter, const std::string& kernel, std::optional<py::array> out,
                      std::optional<std::tuple<float, float, float, float>> box) {
  namespace im = mmserve::image;
  const im::Image8 in = image_view(src);
  im::ResizeCrop g;
  g.resize_width = resize.first;
  g.resize_height = resize.second;
  std::tie(g.crop_x, g.crop_y, g.crop_width, g.crop_height) = crop;
  if (box) std::tie(g.box_x0, g.box_y0, g.box_x1, g.box_y1) = *box;
  py::array result;
  if (out) {
    result = *out;
    if (!result.writeable()) throw py::value_error("out must be writeable");
  } else {
    std::vector<py::ssize_t> shape{g.crop_height, g.crop_width};
    if (src.ndim() == 3) shape.push_back(in.channels);
    result = py::array(py::dtype::of<uint8_t>(), shape);
  }
  const im::Image8 view = image_view(result);
  if (view.width != g.crop_width || view.height != g.crop_height || view.channels != in.channels)
    throw py::value_error("out must be [crop_height, crop_width(, channels)] like the input's channels");
  const im::MutableImage8 dst{static_cast<uint8_t*>(result.mutable_data()), view.width, view.height,
                              view.channels, view.stride};
  const im::Filter f = im::filter_from_name(filter);
  const mmserve::isa::Isa isa = isa_from_name(kernel);
  {
    py::gil_scoped_release release;
    im::resize_crop(in, g, f, dst, isa);
  }
  return result;
}

mmserve::image::PreprocessOptions preprocess_options(int size, int crop, const std::string& filter,
                                                    const std::string& resize_mode, bool exact,
                                                    size_t max_bytes, uint64_t max_pixels,
                                                    std::array<uint8_t, 3> background, bool exif) {
  mmserve::image::PreprocessOptions options;
  options.resize_shortest_edge = size;
  options.crop = crop;
  if (resize_mode == "squash") {
    options.mode = mmserve::image::ResizeMode::Squash;
    if (size != crop) throw py::value_error("resize_mode 'squash' has no crop: need size == crop");
  } else if (resize_mode != "crop") {
    throw py::value_error("resize_mode must be 'crop' or 'squash', got '" + resize_mode + "'");
  }
  options.filter = mmserve::image::filter_from_name(filter);
  options.exact = exact;
  options.decode.limits.max_encoded_bytes = max_bytes;
  options.decode.limits.max_pixels = max_pixels;
  std::copy(background.begin(), background.end(), options.decode.limits.background);
  options.decode.apply_exif_orientation = exif;
  if (size <= 0 || crop <= 0 || crop > size) throw py::value_error("need 0 < crop <= size");
  return options;
}

// Borrow the bytes of a bytes-like object (bytes, bytearray, memoryview, uint8 array).
py::buffer_info borrow_bytes(const py::handle& item, size_t index) {
  if (!py::isinstance<py::buffer>(item))
    throw py::type_error("image " + std::to_string(index) + ": expected bytes-like data, got " +
                         std::string(py::str(py::type::of(item).attr("__name__"))));
  py::buffer_info info = py::reinterpret_borrow<py::buffer>(item).request();
  if (info.itemsize != 1 || info.ndim != 1 || (info.ndim == 1 && info.strides[0] != 1))
    throw py::type_error("image " + std::to_string(index) + ": expected contiguous bytes");
  return info;
}

py::tuple preprocess_batch(const py::sequence& images, int size, int crop, const std::string& filter,
                           const std::string& resize_mode, bool exact, size_t max_bytes, uint64_t max_pixels,
                           std::array<uint8_t, 3> background, bool exif, int threads, std::optional<py::array> out) {
  const auto options =
      preprocess_options(size, crop, filter, resize_mode, exact, max_bytes, max_pixels, background, exif);
  const size_t count = py::len(images);
  // Own the inputs (buffer views keep the objects alive) before the GIL is released.
  std::vector<py::buffer_info> buffers;
  std::vector<mmserve::image::EncodedImage> encoded;
  buffers.reserve(count);
  encoded.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    buffers.push_back(borrow_bytes(images[i], i));
    encoded.push_back({static_cast<const uint8_t*>(buffers.back().ptr), static_cast<size_t>(buffers.back().size)});
  }
  py::array batch;
  if (out) {
    batch = *out;
    const bool ok = batch.dtype().kind() == 'u' && batch.itemsize() == 1 && batch.ndim() == 4 &&
                    static_cast<size_t>(batch.shape(0)) == count && batch.shape(1) == crop &&
                    batch.shape(2) == crop && batch.shape(3) == 3 &&
                    (batch.flags() & py::array::c_style) && batch.writeable();
    if (!ok) throw py::value_error("out must be a writeable C-contiguous uint8 array [N, crop, crop, 3]");
  } else {
    batch = py::array(py::dtype::of<uint8_t>(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(count), crop, crop, 3});
  }
  auto* target = static_cast<uint8_t*>(batch.mutable_data());
  std::vector<std::optional<mmserve::image::ItemFailure>> failures;
  {
    py::gil_scoped_release release;
    failures = mmserve::image::preprocess_batch(encoded, options, target, threads);
  }
  py::list errors;
  for (const auto& f : failures)
    errors.append(f ? py::object(py::make_tuple(f->code, f->message)) : py::object(py::none()));
  return py::make_tuple(batch, errors);
}

py::tuple decode_image(const py::handle& data, int scale, bool exif, std::array<uint8_t, 3> background,
                       size_t max_bytes, uint64_t max_pixels, std::optional<std::tuple<int, int, int, int>> window) {
  namespace im = mmserve::image;
  py::buffer_info buffer = borrow_bytes(data, 0);
  im::DecodeOptions options;
  options.scale_denominator = scale;
  if (window) {
    const auto [x0, y0, x1, y1] = *window;
    options.needed = [=](const im::Decoded&) { return im::Window{x0, y0, x1, y1}; };
  }
  options.apply_exif_orientation = exif;
  options.limits.max_encoded_bytes = max_bytes;
  options.limits.max_pixels = max_pixels;
  std::copy(background.begin(), background.end(), options.limits.background);
  im::Decoded image;
  {
    py::gil_scoped_release release;
    image = im::decode(static_cast<const uint8_t*>(buffer.ptr), static_cast<size_t>(buffer.size), options);
  }
  std::vector<py::ssize_t> shape{image.height, image.width};
  if (image.channels > 1) shape.push_back(image.channels);
  py::array pixels(py::dtype::of<uint8_t>(), shape);
  std::memcpy(pixels.mutable_data(), image.pixels.data(), image.pixels.size());
  py::dict info;
  info["cmyk"] = image.cmyk;
  info["nearest"] = image.resample == im::Resample::Nearest;
  info["orientation"] = image.orientation;
  info["offset"] = py::make_tuple(image.offset_x, image.offset_y);
  info["frame"] = py::make_tuple(image.frame_width, image.frame_height);
  return py::make_tuple(pixels, info);
}

py::tuple tokenize_batch(const mmserve::tokenizer::ClipTokenizer& tokenizer, const py::sequence& texts,
                         int context, int threads) {
  if (context < 2) throw py::value_error("context length must be at least 2");
  std::vector<std::string> owned;
  owned.reserve(py::len(texts));
  for (size_t i = 0; i < py::len(texts); ++i) {
    py::handle item = texts[i];
    if (py::isinstance<py::str>(item)) owned.push_back(item.cast<std::string>());
    else if (py::isinstance<py::bytes>(item)) owned.push_back(std::string(py::reinterpret_borrow<py::bytes>(item)));
    else throw py::type_error("text " + std::to_string(i) + ": expected str or bytes");
  }
  py::array_t<int32_t> ids({static_cast<py::ssize_t>(owned.size()), static_cast<py::ssize_t>(context)});
  py::array_t<int32_t> lengths(static_cast<py::ssize_t>(owned.size()));
  int32_t* ids_ptr = ids.mutable_data();
  int32_t* lengths_ptr = lengths.mutable_data();
  std::vector<std::string> errors;
  {
    py::gil_scoped_release release;
    errors = tokenizer.encode_batch(owned, context, ids_ptr, lengths_ptr, threads);
  }
  for (size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty()) throw py::value_error("text " + std::to_string(i) + ": " + errors[i]);
  return py::make_tuple(ids, lengths);
}

bool has_dtype(const py::array& array, const char* name) { return array.dtype().equal(py::dtype(name)); }

std::string dtype_name(const py::array& array) { return py::str(array.dtype()); }

bool aligned(const py::array& array) { return array.attr("flags").attr("aligned").cast<bool>(); }

// A 2-D array whose rows may lie any number of bytes apart, with contiguous elements in a row.
void check_matrix(const py::array& array, const std::string& what) {
  if (array.ndim() != 2)
    throw py::value_error(what + " must be 2-D, got " + std::to_string(array.ndim()) + "-D");
  // Empty arrays may report zero strides; they have no elements to lay out.
  if (array.shape(0) > 0 && array.shape(1) > 1 && array.strides(1) != array.itemsize())
    throw py::value_error(what + " must have contiguous elements within a row (rows may be strided)");
  if (!aligned(array)) throw py::value_error(what + " must be aligned to its element size");
}

// An output [queries, k] of `dtype`, written in place.
void check_output(const py::array& array, const char* dtype, const std::string& what, int64_t rows, int64_t cols) {
  if (!has_dtype(array, dtype)) throw py::type_error(what + " must be " + dtype + ", got " + dtype_name(array));
  check_matrix(array, what);
  if (array.shape(0) != rows || array.shape(1) != cols)
    throw py::value_error(what + " must be [" + std::to_string(rows) + ", " + std::to_string(cols) + "], got [" +
                          std::to_string(array.shape(0)) + ", " + std::to_string(array.shape(1)) + "]");
  if (!array.writeable()) throw py::value_error(what + " must be writeable");
}

py::tuple similarity_top_k(const py::array& queries, const py::array& database, int64_t k,
                           std::optional<py::array> scales, const std::string& kernel, int threads,
                           std::optional<py::array> out_scores, std::optional<py::array> out_indices) {
  namespace sim = mmserve::simd;
  const mmserve::isa::Isa isa = isa_from_name(kernel);
  if (k < 1) throw py::value_error("k must be at least 1, got " + std::to_string(k));
  if (threads < 0) throw py::value_error("threads must be 0 (all cores) or positive");
  if (!has_dtype(queries, "float32")) throw py::type_error("queries must be float32, got " + dtype_name(queries));
  check_matrix(queries, "queries");

  sim::Database db;
  if (has_dtype(database, "float32")) db.storage = sim::Storage::F32;
  else if (has_dtype(database, "float16")) db.storage = sim::Storage::F16;
  else if (has_dtype(database, "int8")) db.storage = sim::Storage::I8;
  else throw py::type_error("database must be float32, float16 or int8, got " + dtype_name(database));
  check_matrix(database, "database");
  db.data = database.data();
  db.rows = database.shape(0);
  db.dim = database.shape(1);
  db.row_stride = database.strides(0);
  if (queries.shape(1) != db.dim)
    throw py::value_error("queries have " + std::to_string(queries.shape(1)) + " dimensions, database rows have " +
                          std::to_string(db.dim));
  if (db.dim < 1) throw py::value_error("vectors must have at least one dimension");

  if (db.storage == sim::Storage::I8) {
    if (!scales) throw py::value_error("an int8 database needs scales: float32 [N], one per row");
    if (!has_dtype(*scales, "float32")) throw py::type_error("scales must be float32, got " + dtype_name(*scales));
    if (scales->ndim() != 1 || scales->shape(0) != db.rows)
      throw py::value_error("scales must be [" + std::to_string(db.rows) + "], one per database row");
    if (!aligned(*scales)) throw py::value_error("scales must be aligned to its element size");
    db.scales = static_cast<const float*>(scales->data());
    db.scale_stride = scales->strides(0);
  } else if (scales) {
    throw py::value_error("scales apply only to an int8 database");
  }

  const sim::Queries q{static_cast<const float*>(queries.data()), queries.shape(0), queries.strides(0)};
  const int64_t kept = sim::result_count(k, db.rows);
  py::array scores = out_scores ? *out_scores : py::array_t<float>({q.count, kept});
  py::array indices = out_indices ? *out_indices : py::array_t<int64_t>({q.count, kept});
  check_output(scores, "float32", "out_scores", q.count, kept);
  check_output(indices, "int64", "out_indices", q.count, kept);
  const sim::TopKOutput out{static_cast<float*>(scores.mutable_data()), scores.strides(0),
                            static_cast<int64_t*>(indices.mutable_data()), indices.strides(0)};
  {
    py::gil_scoped_release release;
    sim::top_k(q, db, k, out, threads, isa);
  }
  return py::make_tuple(scores, indices);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mmserve compiled core (private; use the mmserve package API)";
  m.attr("__version__") = MMSERVE_VERSION;

  m.def(
      "cpu_features", [] { return mmserve::cpu::feature_names(mmserve::cpu::features()); },
      "Instruction-set extensions usable on this CPU (checked with CPUID and the OS's XCR0).");

  m.def(
      "build_info",
      [] {
        py::dict info;
        info["compiler"] =
#if defined(__clang__)
            "clang " __clang_version__;
#elif defined(__GNUC__)
            "gcc " __VERSION__;
#else
            "unknown";
#endif
        info["cplusplus"] = static_cast<long>(__cplusplus);
#if defined(__AVX2__) || defined(__AVX512F__)
        info["baseline_isa_beyond_default"] = true;
#else
        info["baseline_isa_beyond_default"] = false;
#endif
        return info;
      },
      "How the extension was compiled (baseline_isa_beyond_default is False for portable wheels).");

  m.def("resize_crop", &resize_crop, py::arg("image"), py::arg("resize"), py::arg("crop"),
        py::arg("filter") = "bicubic", py::arg("kernel") = "auto", py::arg("out") = py::none(),
        py::arg("box") = py::none(),
        "Pillow-exact resize of a uint8 image (or of its `box` region (x0, y0, x1, y1), as Pillow's "
        "resize(box=...)) to `resize` (w, h), keeping only the `crop` window (x, y, w, h); written into "
        "`out` when given.");
  m.def(
      "shortest_side_center_crop",
      [](int width, int height, int size, int crop) {
        const auto g = mmserve::image::shortest_side_center_crop(width, height, size, crop);
        return py::make_tuple(py::make_tuple(g.resize_width, g.resize_height),
                              py::make_tuple(g.crop_x, g.crop_y, g.crop_width, g.crop_height));
      },
      py::arg("width"), py::arg("height"), py::arg("size"), py::arg("crop"),
      "((resize_w, resize_h), (crop_x, crop_y, crop_w, crop_h)) of the reference geometry.");
  py::register_exception<mmserve::image::DecodeError>(m, "DecodeError", PyExc_ValueError);
  const mmserve::image::Limits defaults;
  const std::array<uint8_t, 3> white{255, 255, 255};
  m.attr("DEFAULT_MAX_ENCODED_BYTES") = defaults.max_encoded_bytes;
  m.attr("DEFAULT_MAX_PIXELS") = defaults.max_pixels;
  m.def("preprocess_batch", &preprocess_batch, py::arg("images"), py::arg("size"), py::arg("crop"),
        py::arg("filter") = "bicubic", py::arg("resize_mode") = "crop", py::arg("exact") = false,
        py::arg("max_encoded_bytes") = defaults.max_encoded_bytes, py::arg("max_pixels") = defaults.max_pixels,
        py::arg("background") = white, py::arg("exif_orientation") = true, py::arg("threads") = 0,
        py::arg("out") = py::none(),
        "Decode, resize and centre-crop (resize_mode 'crop') or resize to crop x crop ('squash') encoded images "
        "into uint8 [N, crop, crop, 3] on a thread pool "
        "(GIL released). Returns (batch, errors): errors[i] is None or why image i failed.");
  m.def("decode", &decode_image, py::arg("data"), py::arg("scale") = 1, py::arg("exif_orientation") = true,
        py::arg("background") = white, py::arg("max_encoded_bytes") = defaults.max_encoded_bytes,
        py::arg("max_pixels") = defaults.max_pixels, py::arg("window") = py::none(),
        "Decode one JPEG/PNG to uint8 [H, W(, C)] plus facts about it (cmyk, nearest, orientation, and "
        "offset/frame: where the pixels sit in the whole decoded frame). A JPEG given `window` (x0, y0, x1, y1 "
        "of the oriented, scaled frame) is decoded only around it: the result holds at least those pixels.");
  m.def("fast_path_denominator", &mmserve::image::fast_path_denominator, py::arg("width"), py::arg("height"),
        py::arg("target"), "The JPEG DCT scale denominator the fast path uses (1 = full decode).");
  py::class_<mmserve::tokenizer::ClipTokenizer>(m, "ClipTokenizer")
      .def(py::init<std::unordered_map<std::string, int32_t>, const std::vector<std::pair<std::string, std::string>>&,
                    int32_t, int32_t>(),
           py::arg("vocabulary"), py::arg("merges"), py::arg("start_id"), py::arg("end_id"))
      .def(
          "encode",
          [](const mmserve::tokenizer::ClipTokenizer& self, const std::string& text) { return self.encode(text); },
          py::arg("text"), py::call_guard<py::gil_scoped_release>(), "BPE ids of one text (no start/end tokens).")
      .def(
          "clean",
          [](const mmserve::tokenizer::ClipTokenizer& t, const std::string& text) {
            std::u32string cleaned = t.clean(text);
            return py::reinterpret_steal<py::str>(PyUnicode_FromKindAndData(
                PyUnicode_4BYTE_KIND, cleaned.data(), static_cast<py::ssize_t>(cleaned.size())));
          },
          py::arg("text"), "The text after html unescape, whitespace collapse and lowercase.")
      .def("encode_batch", &tokenize_batch, py::arg("texts"), py::arg("context_length"), py::arg("threads") = 0,
           "int32 ids [N, context_length] (start, ids, end, zeros; truncation keeps end) and each row's length "
           "up to and including end-of-text, on a thread pool with the GIL released.");
  m.def("active_resample_kernel", &mmserve::image::active_resample_kernel,
        "The resampling kernel set chosen for this CPU: avx512, avx2 or scalar.");

  m.def("thread_budget", &mmserve::threads::thread_budget,
        "Threads decode, tokenize and search use at most when asked for all (0).");
  m.def("set_thread_budget", &mmserve::threads::set_thread_budget, py::arg("threads"),
        "Set the thread budget (0: back to MMSERVE_NATIVE_THREADS, else the detected CPUs).");
  m.def("detected_cpus", &mmserve::threads::detected_cpus,
        "CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota.");
  m.def("cpus_from_cgroup_max", &mmserve::threads::cpus_from_cgroup_max, py::arg("text"),
        "CPUs a cgroup v2 cpu.max line allows, rounded up (0: unlimited).");
  py::register_exception<mmserve::isa::UnsupportedIsa>(m, "UnsupportedKernelError", PyExc_LookupError);
  m.def("top_k", &similarity_top_k, py::arg("queries"), py::arg("database"), py::arg("k"), py::kw_only(),
        py::arg("scales") = py::none(), py::arg("kernel") = "auto", py::arg("threads") = 0,
        py::arg("out_scores") = py::none(), py::arg("out_indices") = py::none(),
        "Exact inner-product top-k of float32 queries [Q, D] against a float32, float16 or int8 (times "
        "per-row scales) database [N, D]: (scores float32 [Q, min(k, N)], indices int64 [Q, min(k, N)]), "
        "best first, ties to the lower row. Threads over rows, GIL released.");
  m.def("active_similarity_kernel", &mmserve::simd::active_similarity_kernel,
        "The similarity kernel set chosen for this CPU: avx512, avx2, neon or scalar.");
  m.def("available_similarity_kernels", &mmserve::simd::available_similarity_kernels,
        "Every similarity kernel set this CPU can run, scalar first (each can be forced with kernel=).");
}
