// pybind11 class `SoftPUParams` of both compiled modules (mkefast._C and mkefast._C_cuda): the one object
// that carries the targets and options of a soft-PU call to every epilogue launch. Built once per call by
// mkefast.backends._chunked.soft_pu_params, keyword arguments only.
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>

#include "common/soft_pu_params.h"

namespace mkefast {

inline void bind_soft_pu_params(pybind11::module_& m) {
  namespace py = pybind11;
  using std::uintptr_t;
  // module_local: both modules bind the one C++ type, and pybind11 registers a global type only once.
  py::class_<SoftPUParams>(m, "SoftPUParams", py::module_local(),
                           "Targets (pointers to the arrays of SoftPUTargets) and options (SoftPUOptions) of one "
                           "direction of the soft-PU op; the arrays must outlive every launch that reads it.")
      .def(py::init([](uintptr_t cls, uintptr_t labeled, uintptr_t anchor_cls, uintptr_t anchor_labeled,
                       uintptr_t n11, uintptr_t n10, std::int64_t diag_offset, bool exclude_diagonal, double inv_tau,
                       double inv_sigma, double log_sigma, bool rbf, bool phi) {
             if (!(inv_tau > 0.0) || !std::isfinite(inv_tau)) {
               throw py::value_error("inv_tau: expected a positive finite 1/temperature");
             }
             if (diag_offset < 0) throw py::value_error("diag_offset: expected an offset >= 0");
             SoftPUParams p;
             p.cls = reinterpret_cast<const std::int32_t*>(cls);
             p.labeled = reinterpret_cast<const std::uint8_t*>(labeled);
             p.anchor_cls = reinterpret_cast<const std::int32_t*>(anchor_cls);
             p.anchor_labeled = reinterpret_cast<const std::uint8_t*>(anchor_labeled);
             p.n11 = reinterpret_cast<const float*>(n11);
             p.n10 = reinterpret_cast<const float*>(n10);
             p.diag_offset = diag_offset;
             p.exclude_diagonal = exclude_diagonal;
             p.inv_tau = inv_tau;
             p.inv_sigma = inv_sigma;
             p.log_sigma = log_sigma;
             p.rbf = rbf;
             p.phi = phi;
             return p;
           }),
           py::kw_only(), py::arg("cls"), py::arg("labeled"), py::arg("anchor_cls"), py::arg("anchor_labeled"),
           py::arg("n11"), py::arg("n10"), py::arg("diag_offset"), py::arg("exclude_diagonal"), py::arg("inv_tau"),
           py::arg("inv_sigma"), py::arg("log_sigma"), py::arg("rbf"), py::arg("phi"))
      .def_readonly("diag_offset", &SoftPUParams::diag_offset)
      .def_readonly("exclude_diagonal", &SoftPUParams::exclude_diagonal)
      .def_readonly("inv_tau", &SoftPUParams::inv_tau)
      .def_readonly("inv_sigma", &SoftPUParams::inv_sigma)
      .def_readonly("log_sigma", &SoftPUParams::log_sigma)
      .def_readonly("rbf", &SoftPUParams::rbf)
      .def_readonly("phi", &SoftPUParams::phi);
}

}  // namespace mkefast
