// Host launchers of the CUDA kernels in this folder. Plain C++ declarations (no pybind11, no CUDA
// headers needed to include them) so that csrc/bindings/cuda_module.cpp, compiled by the host compiler,
// can bind them. Every launcher takes raw device pointers, sizes and the stream, and returns the
// cudaError_t of the launch as an int (0 = success).
#pragma once

#include <cstdint>

namespace mkefast::cuda {

// Declarations are added here by each kernels/cuda/<op>.cu file.

}  // namespace mkefast::cuda
