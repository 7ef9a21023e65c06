// pybind11 entry point of mkefast._C_cuda: CUDA kernels launched on the stream that Python passes in
// (torch.cuda.current_stream().cuda_stream). Static cudart, no libtorch.
//
// Every op is bound once per element type, with the dtype as a name suffix (`_f32`, `_f64`, `_f16`, `_bf16`),
// as in mkefast._C, and takes keyword arguments only. Tensors arrive as raw device pointers (uintptr_t) plus
// sizes; `device` is the CUDA device index of the tensors, made current before the launch (this module's
// runtime keeps its own current device, which torch's torch.cuda.set_device does not change). A failed launch
// raises RuntimeError with the CUDA error string. The kernels run asynchronously: errors inside a kernel
// surface at the next synchronization.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings/soft_pu_params.h"
#include "launchers.h"

namespace py = pybind11;
namespace mc = mkefast::cuda;

namespace {

using std::int64_t;
using std::uintptr_t;

py::dict build_info() {
  py::dict info;
  info["cuda_version"] = CUDART_VERSION;
  info["archs"] = MKEFAST_CUDA_ARCHS;
  return info;
}

template <typename P>
P* as_ptr(uintptr_t address) {
  return reinterpret_cast<P*>(address);
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

void check(int status, const char* op) {
  if (status != static_cast<int>(cudaSuccess)) {
    throw std::runtime_error(std::string("mkefast._C_cuda.") + op + ": " +
                             cudaGetErrorString(static_cast<cudaError_t>(status)));
  }
}

void use_device(int device, const char* op) { check(static_cast<int>(cudaSetDevice(device)), op); }

void bind_soft_pu(py::module_& m, const char* suffix, mc::DType dtype) {
  const std::string fwd = std::string("soft_pu_fwd_") + suffix;
  const std::string bwd = std::string("soft_pu_bwd_") + suffix;
  m.def(
      fwd.c_str(),
      [dtype, fwd](const mkefast::SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t ld,
                   int64_t first_anchor, uintptr_t lb, uintptr_t ulb, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb,
                   int device, uintptr_t stream) {
        use_device(device, fwd.c_str());
        check(mc::launch_soft_pu_fwd(params, as_ptr<const void>(dots), as_ptr<void>(lb), as_ptr<void>(ulb),
                                     as_ptr<void>(lse), as_ptr<double>(ref), as_ptr<void>(a_ulb), rows, cols, ld,
                                     first_anchor, dtype, as_stream(stream)),
              fwd.c_str());
      },
      "Forward epilogue of one [rows, cols] chunk of dot products (anchors first_anchor...): lb, ulb, lse, a_ulb "
      "(this dtype) and ref (float64) of its rows.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("ld"),
      py::arg("first_anchor"), py::arg("lb"), py::arg("ulb"), py::arg("lse"), py::arg("ref"), py::arg("a_ulb"),
      py::arg("device"), py::arg("stream"));
  m.def(
      bwd.c_str(),
      [dtype, bwd](const mkefast::SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t ld,
                   int64_t first_anchor, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb, uintptr_t grad_lb,
                   uintptr_t grad_ulb, uintptr_t grad_temperature, int device, uintptr_t stream) {
        use_device(device, bwd.c_str());
        check(mc::launch_soft_pu_bwd(params, as_ptr<void>(dots), as_ptr<const void>(lse), as_ptr<const double>(ref),
                                     as_ptr<const void>(a_ulb), as_ptr<const void>(grad_lb),
                                     as_ptr<const void>(grad_ulb), as_ptr<void>(grad_temperature), rows, cols, ld,
                                     first_anchor, dtype, as_stream(stream)),
              bwd.c_str());
      },
      "Backward epilogue: overwrites a [rows, cols] chunk of dot products with dL/d(dots) = G / tau; "
      "grad_temperature (0: not needed) receives the rows' shares of dL/dtau.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("ld"),
      py::arg("first_anchor"), py::arg("lse"), py::arg("ref"), py::arg("a_ulb"), py::arg("grad_lb"),
      py::arg("grad_ulb"), py::arg("grad_temperature"), py::arg("device"), py::arg("stream"));
}

void bind_cosine_rec(py::module_& m, const char* suffix, mc::DType dtype) {
  const std::string fwd = std::string("cosine_rec_fwd_") + suffix;
  const std::string bwd = std::string("cosine_rec_bwd_") + suffix;
  m.def(
      fwd.c_str(),
      [dtype, fwd](uintptr_t a, uintptr_t b, uintptr_t loss, int64_t n, int64_t d, int device, uintptr_t stream) {
        use_device(device, fwd.c_str());
        check(mc::launch_cosine_rec_fwd(as_ptr<const void>(a), as_ptr<const void>(b), as_ptr<void>(loss), n, d,
                                        dtype, as_stream(stream)),
              fwd.c_str());
      },
      "Per-row 1 - cos^2 of two contiguous [N, d] tensors into loss [N] (accumulation dtype).", py::kw_only(),
      py::arg("a"),
      py::arg("b"), py::arg("loss"), py::arg("n"), py::arg("d"), py::arg("device"), py::arg("stream"));
  m.def(
      bwd.c_str(),
      [dtype, bwd](uintptr_t a, uintptr_t b, uintptr_t grad_loss, uintptr_t grad_a, uintptr_t grad_b, int64_t n,
                   int64_t d, int device, uintptr_t stream) {
        use_device(device, bwd.c_str());
        check(mc::launch_cosine_rec_bwd(as_ptr<const void>(a), as_ptr<const void>(b), as_ptr<const void>(grad_loss),
                                        as_ptr<void>(grad_a), as_ptr<void>(grad_b), n, d, dtype, as_stream(stream)),
              bwd.c_str());
      },
      "Both gradients of the per-row loss (grad_a / grad_b = 0 to skip one), in the inputs' dtype.",
      py::kw_only(), py::arg("a"),
      py::arg("b"), py::arg("grad_loss"), py::arg("grad_a"), py::arg("grad_b"), py::arg("n"), py::arg("d"),
      py::arg("device"), py::arg("stream"));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "mkefast CUDA kernels; raw-pointer interface, no libtorch";
  m.def("build_info", &build_info, "How this module was compiled.");
  mkefast::bind_soft_pu_params(m);
  bind_soft_pu(m, "f32", mc::DType::f32);
  bind_soft_pu(m, "f64", mc::DType::f64);
  bind_cosine_rec(m, "f32", mc::DType::f32);
  bind_cosine_rec(m, "f64", mc::DType::f64);
  bind_cosine_rec(m, "f16", mc::DType::f16);
  bind_cosine_rec(m, "bf16", mc::DType::bf16);
}
