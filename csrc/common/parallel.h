// Torch-free helpers shared by the CPU kernels.
#pragma once

#include <cstdint>

namespace mkefast {

// Raw pointers travel through pybind11 as integers (tensor.data_ptr()).
template <typename T>
inline T* as_ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Threads to use for `work` independent units, at most `max_threads` (the caller passes torch's
// get_num_threads(), so that torch.set_num_threads governs the kernels too): one thread for tiny problems,
// where waking the pool costs more than the work itself.
inline int threads_for(std::int64_t work, int max_threads, std::int64_t min_work_per_thread = 1 << 14) {
#ifdef MKEFAST_WITH_OPENMP
  const std::int64_t wanted = work / min_work_per_thread;
  if (wanted <= 1 || max_threads <= 1) return 1;
  return wanted < max_threads ? static_cast<int>(wanted) : max_threads;
#else
  (void)work;
  (void)max_threads;
  (void)min_work_per_thread;
  return 1;
#endif
}

}  // namespace mkefast
