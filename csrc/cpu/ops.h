// Declarations of the CPU ops exported by mkefast._C.
#pragma once

#include <pybind11/pybind11.h>

namespace mkefast::cpu {

// Adds every CPU op of csrc/cpu/*.cpp to the module.
void register_ops(pybind11::module_& m);

}  // namespace mkefast::cpu
