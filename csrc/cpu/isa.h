// The instruction set of the CPU module's soft-PU kernels, chosen once, when the module is imported.
#pragma once

#include <string>
#include <vector>

#include "cpu/soft_pu_kernels.h"

namespace mkefast::cpu {

struct IsaChoice {
  const SoftPUKernels* kernels = nullptr;  // null when `error` is set
  std::vector<std::string> compiled;       // the variants in this build, baseline first
  std::vector<std::string> supported;      // those this processor can run
  std::string error;                       // a bad MKEFAST_CPU_ISA, else empty
};

// The widest variant this processor supports, or the one named by the environment variable MKEFAST_CPU_ISA
// (for tests and benchmarks; it must be compiled and supported). Decided on the first call.
const IsaChoice& isa_choice();

}  // namespace mkefast::cpu
