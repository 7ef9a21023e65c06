// pybind11 bindings of the soft-PU epilogues (csrc/cpu/isa/soft_pu_rows.cpp): every call goes to the variant
// chosen at import (csrc/cpu/isa.cpp). The Python side (mkefast.backends.cpu, through the chunk driver
// mkefast.backends._chunked) allocates every buffer; a chunk is [rows, modalities, cols] and every per-row
// array [M, B_a], passed as the pointer to its element [0, first_anchor] and the stride between modalities.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "common/parallel.h"
#include "cpu/isa.h"
#include "cpu/soft_pu_kernels.h"

namespace mkefast::cpu {
namespace {

namespace py = pybind11;
using std::int64_t;
using std::uintptr_t;

template <typename T>
const SoftPUKernelsOf<T>& kernels() {
  if constexpr (std::is_same_v<T, float>) {
    return isa_choice().kernels->f32;
  } else {
    return isa_choice().kernels->f64;
  }
}

template <typename T>
SoftPUChunk<T> chunk_of(uintptr_t dots, int64_t rows, int64_t cols, int64_t modalities, int64_t first_anchor,
                        int64_t stride) {
  if (rows < 0 || cols < 1 || modalities < 1 || first_anchor < 0 || stride < first_anchor + rows) {
    throw py::value_error("soft_pu: expected rows >= 0, cols >= 1, modalities >= 1, first_anchor >= 0 and "
                          "stride >= first_anchor + rows");
  }
  return {as_ptr<T>(dots), rows, cols, modalities, first_anchor, stride};
}

ClassIndex index_of(uintptr_t members, uintptr_t begin, int64_t max_size) {
  return {as_ptr<const std::int32_t>(members), as_ptr<const std::int64_t>(begin), max_size};
}

template <typename T>
int threads(const SoftPUChunk<T>& c, int num_threads) {
  return threads_for(c.rows * c.modalities * c.cols, num_threads);
}

template <typename T>
void bind_dtype(py::module_& m, const char* suffix) {
  const auto name = [suffix](const char* op) { return std::string(op) + "_" + suffix; };
  m.def(
      name("soft_pu_fwd").c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t modalities,
         int64_t first_anchor, int64_t stride, uintptr_t class_members, uintptr_t class_begin,
         int64_t max_class_size, uintptr_t lb, uintptr_t ulb, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb,
         int num_threads) {
        const SoftPUChunk<T> c = chunk_of<T>(dots, rows, cols, modalities, first_anchor, stride);
        SoftPURows<T> r;
        r.lb = as_ptr<T>(lb);
        r.ulb = as_ptr<T>(ulb);
        r.lse = as_ptr<T>(lse);
        r.ref = as_ptr<double>(ref);
        r.a_ulb = as_ptr<T>(a_ulb);
        py::gil_scoped_release release;
        kernels<T>().fwd(params, index_of(class_members, class_begin, max_class_size), c, r,
                         threads(c, num_threads));
      },
      "Forward epilogue over a [rows, modalities, cols] chunk of raw dot products (anchors first_anchor...): "
      "writes the statistics lb, ulb, lse, a_ulb (this dtype) and ref (float64) of its rows. The chunk is left "
      "as logits.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("modalities"),
      py::arg("first_anchor"), py::arg("stride"), py::arg("class_members"), py::arg("class_begin"),
      py::arg("max_class_size"), py::arg("lb"), py::arg("ulb"), py::arg("lse"), py::arg("ref"), py::arg("a_ulb"),
      py::arg("num_threads"));
  m.def(
      name("soft_pu_bwd").c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t modalities,
         int64_t first_anchor, int64_t stride, uintptr_t class_members, uintptr_t class_begin,
         int64_t max_class_size, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb, uintptr_t grad_lb,
         uintptr_t grad_ulb, uintptr_t grad_temperature, int num_threads) {
        const SoftPUChunk<T> c = chunk_of<T>(dots, rows, cols, modalities, first_anchor, stride);
        SoftPURows<T> r;
        r.lse = as_ptr<T>(lse);
        r.ref = as_ptr<double>(ref);
        r.a_ulb = as_ptr<T>(a_ulb);
        r.grad_lb = as_ptr<const T>(grad_lb);
        r.grad_ulb = as_ptr<const T>(grad_ulb);
        r.grad_temperature = as_ptr<T>(grad_temperature);
        py::gil_scoped_release release;
        kernels<T>().bwd(params, index_of(class_members, class_begin, max_class_size), c, r,
                         threads(c, num_threads));
      },
      "Backward epilogue: overwrites a [rows, modalities, cols] chunk of raw dot products with G / tau; "
      "grad_temperature (0: not needed) receives the rows' shares of dL/dtau.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("modalities"),
      py::arg("first_anchor"), py::arg("stride"), py::arg("class_members"), py::arg("class_begin"),
      py::arg("max_class_size"), py::arg("lse"), py::arg("ref"), py::arg("a_ulb"), py::arg("grad_lb"),
      py::arg("grad_ulb"), py::arg("grad_temperature"), py::arg("num_threads"));
  m.def(
      name("soft_pu_fwd_grad").c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t modalities,
         int64_t first_anchor, int64_t stride, uintptr_t class_members, uintptr_t class_begin,
         int64_t max_class_size, uintptr_t lb, uintptr_t ulb, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb,
         uintptr_t grad_temperature, int num_threads) {
        const SoftPUChunk<T> c = chunk_of<T>(dots, rows, cols, modalities, first_anchor, stride);
        SoftPURows<T> r;
        r.lb = as_ptr<T>(lb);
        r.ulb = as_ptr<T>(ulb);
        r.lse = as_ptr<T>(lse);
        r.ref = as_ptr<double>(ref);
        r.a_ulb = as_ptr<T>(a_ulb);
        r.grad_temperature = as_ptr<T>(grad_temperature);
        py::gil_scoped_release release;
        kernels<T>().fwd_grad(params, index_of(class_members, class_begin, max_class_size), c, r,
                              threads(c, num_threads));
      },
      "Forward epilogue and gradient of sum(lb + ulb) at once: writes the statistics as soft_pu_fwd does and "
      "overwrites the chunk of raw dot products with d(sum(lb + ulb))/d(dots); grad_temperature (0: not needed) "
      "receives the rows' shares of its derivative in tau.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("modalities"),
      py::arg("first_anchor"), py::arg("stride"), py::arg("class_members"), py::arg("class_begin"),
      py::arg("max_class_size"), py::arg("lb"), py::arg("ulb"), py::arg("lse"), py::arg("ref"), py::arg("a_ulb"),
      py::arg("grad_temperature"), py::arg("num_threads"));
  m.def(
      name("soft_pu_sym_fwd").c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t modalities,
         int64_t first_anchor, int64_t stride, uintptr_t class_members, uintptr_t class_begin,
         int64_t max_class_size, uintptr_t lb, uintptr_t ulb, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb,
         uintptr_t row_lse, bool bounded, double shift, uintptr_t col_max, uintptr_t col_sum, int num_threads) {
        const SoftPUChunk<T> c = chunk_of<T>(dots, rows, cols, modalities, first_anchor, stride);
        SoftPURows<T> r;
        r.lb = as_ptr<T>(lb);
        r.ulb = as_ptr<T>(ulb);
        r.lse = as_ptr<T>(lse);
        r.ref = as_ptr<double>(ref);
        r.a_ulb = as_ptr<T>(a_ulb);
        SoftPUSymmetric<T> sym;
        sym.bounded = bounded;
        sym.shift = static_cast<T>(shift);
        sym.row_lse = as_ptr<double>(row_lse);
        sym.col_max = as_ptr<T>(col_max);
        sym.col_sum = as_ptr<double>(col_sum);
        py::gil_scoped_release release;
        kernels<T>().sym_fwd(params, index_of(class_members, class_begin, max_class_size), c, r, sym,
                             threads(c, num_threads));
      },
      "Symmetric InfoNCE forward over a [rows, modalities, cols] chunk of raw dot products: the rows' statistics "
      "as soft_pu_fwd writes them and their lse in float64 (row_lse, addressed as they are), and the running "
      "column statistics col_max (this dtype, unused when bounded) and col_sum (float64), both "
      "[modalities, cols]. The chunk is left as scratch.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("modalities"),
      py::arg("first_anchor"), py::arg("stride"), py::arg("class_members"), py::arg("class_begin"),
      py::arg("max_class_size"), py::arg("lb"), py::arg("ulb"), py::arg("lse"), py::arg("ref"), py::arg("a_ulb"),
      py::arg("row_lse"), py::arg("bounded"), py::arg("shift"), py::arg("col_max"), py::arg("col_sum"),
      py::arg("num_threads"));
  m.def(
      name("soft_pu_sym_grad").c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t modalities,
         int64_t first_anchor, int64_t stride, uintptr_t class_members, uintptr_t class_begin,
         int64_t max_class_size, uintptr_t row_lse, uintptr_t grad_ulb, uintptr_t grad_temperature, bool bounded,
         double shift, uintptr_t lse_col_hi, uintptr_t lse_col_lo, uintptr_t grad_col, uintptr_t col_factor,
         int num_threads) {
        const SoftPUChunk<T> c = chunk_of<T>(dots, rows, cols, modalities, first_anchor, stride);
        SoftPURows<T> r;
        r.grad_ulb = as_ptr<const T>(grad_ulb);
        r.grad_temperature = as_ptr<T>(grad_temperature);
        SoftPUSymmetric<T> sym;
        sym.bounded = bounded;
        sym.shift = static_cast<T>(shift);
        sym.row_lse = as_ptr<double>(row_lse);
        sym.lse_col_hi = as_ptr<const T>(lse_col_hi);
        sym.lse_col_lo = as_ptr<const T>(lse_col_lo);
        sym.grad_col = as_ptr<const T>(grad_col);
        sym.col_factor = as_ptr<const T>(col_factor);
        py::gil_scoped_release release;
        kernels<T>().sym_grad(params, index_of(class_members, class_begin, max_class_size), c, r, sym,
                              threads(c, num_threads));
      },
      "Symmetric InfoNCE backward: overwrites a [rows, modalities, cols] chunk of raw dot products with the "
      "gradient of both directions' terms (rows: row_lse in float64, grad_ulb; columns: their lse as "
      "lse_col_hi + lse_col_lo, grad_col and, when bounded, col_factor = grad_col * exp(shift - lse_col), each "
      "[modalities, cols]); grad_temperature (0: not needed) receives the rows' shares of dL/dtau.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("modalities"),
      py::arg("first_anchor"), py::arg("stride"), py::arg("class_members"), py::arg("class_begin"),
      py::arg("max_class_size"), py::arg("row_lse"), py::arg("grad_ulb"), py::arg("grad_temperature"),
      py::arg("bounded"), py::arg("shift"), py::arg("lse_col_hi"), py::arg("lse_col_lo"), py::arg("grad_col"),
      py::arg("col_factor"), py::arg("num_threads"));
}

}  // namespace

void register_soft_pu(py::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace mkefast::cpu
