// pybind11 entry point of mkefast._C: CPU kernels. Tensors arrive as raw pointers plus sizes, every argument by
// keyword; the Python side (mkefast.backends.cpu) allocates every buffer and checks shapes, dtypes and
// contiguity.
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include "bindings/soft_pu_params.h"
#include "cpu/isa.h"
#include "cpu/ops.h"

#ifdef MKEFAST_WITH_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
#ifdef MKEFAST_WITH_OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<int>(_OPENMP);
  info["max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = 0;
  info["max_threads"] = 1;
#endif
  info["compiler"] = MKEFAST_CXX_COMPILER;
  const auto& isa = mkefast::cpu::isa_choice();
  info["isa"] = isa.kernels->isa;
  info["isas_built"] = isa.compiled;
  info["isas_supported"] = isa.supported;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  // A bad MKEFAST_CPU_ISA fails the import, with the reason, which mkefast reports as why the cpu backend is
  // missing: a benchmark or test that asks for a variant must not silently get another one.
  if (!mkefast::cpu::isa_choice().error.empty()) throw py::import_error(mkefast::cpu::isa_choice().error);
  m.doc() = "mkefast CPU kernels (C++/OpenMP); raw-pointer interface, no libtorch";
  m.def("build_info", &build_info, "How this module was compiled.");
  mkefast::bind_soft_pu_params(m);
  mkefast::cpu::register_ops(m);
}
