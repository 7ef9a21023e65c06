// Collects the CPU ops of this folder into mkefast._C.
#include "cpu/ops.h"

namespace mkefast::cpu {

void register_cosine_rec(pybind11::module_& m);
void register_soft_pu(pybind11::module_& m);

void register_ops(pybind11::module_& m) {
  register_cosine_rec(m);
  register_soft_pu(m);
}

}  // namespace mkefast::cpu
