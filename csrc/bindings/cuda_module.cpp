// pybind11 entry point of mkefast._C_cuda: CUDA kernels launched on the stream that Python passes in
// (torch.cuda.current_stream().cuda_stream). Static cudart, no libtorch.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include "launchers.h"

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
  info["cuda_version"] = CUDART_VERSION;
  info["archs"] = MKEFAST_CUDA_ARCHS;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "mkefast CUDA kernels; raw-pointer interface, no libtorch";
  m.def("build_info", &build_info, "How this module was compiled.");
}
