// The one place that registers the C++ code in the private module mmserve._C.
// Python code uses the thin wrappers in mmserve/, never _C directly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "cpu/cpu_features.h"
#include "image/resample.h"

namespace py = pybind11;

namespace {

using U8Array = py::array_t<uint8_t, py::array::forcecast>;

mmserve::image::Isa isa_from_name(const std::string& name) {
  using mmserve::image::Isa;
  if (name == "auto") return Isa::Auto;
  if (name == "scalar") return Isa::Scalar;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  throw py::value_error("unknown kernel '" + name + "': use auto, scalar, avx2 or avx512");
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
                      const std::string& filter, const std::string& kernel, std::optional<py::array> out) {
  namespace im = mmserve::image;
  const im::Image8 in = image_view(src);
  im::ResizeCrop g;
  g.resize_width = resize.first;
  g.resize_height = resize.second;
  std::tie(g.crop_x, g.crop_y, g.crop_width, g.crop_height) = crop;
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
  const im::Isa isa = isa_from_name(kernel);
  {
    py::gil_scoped_release release;
    im::resize_crop(in, g, f, dst, isa);
  }
  return result;
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
        "Pillow-exact resize of a uint8 image to `resize` (w, h), keeping only the `crop` window "
        "(x, y, w, h); written into `out` when given.");
  m.def(
      "shortest_side_center_crop",
      [](int width, int height, int size, int crop) {
        const auto g = mmserve::image::shortest_side_center_crop(width, height, size, crop);
        return py::make_tuple(py::make_tuple(g.resize_width, g.resize_height),
                              py::make_tuple(g.crop_x, g.crop_y, g.crop_width, g.crop_height));
      },
      py::arg("width"), py::arg("height"), py::arg("size"), py::arg("crop"),
      "((resize_w, resize_h), (crop_x, crop_y, crop_w, crop_h)) of the reference geometry.");
  m.def("active_resample_kernel", &mmserve::image::active_resample_kernel,
        "The resampling kernel set chosen for this CPU: avx512, avx2 or scalar.");
}
