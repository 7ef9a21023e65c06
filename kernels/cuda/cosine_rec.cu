// Fused cosine reconstruction loss (SPEC §2) on the GPU: one warp per row, one read of each input row.
//
//   per_row = 1 - c²,   c = <a, b> / den,   den = max(|a| |b|, 1e-8)
//
// Gradients (g = upstream gradient of the row):
//   den > 1e-8:  dc/da = b / den - c a / |a|²      dc/db = a / den - c b / |b|²
//   den = 1e-8:  dc/da = b / den                   dc/db = a / den       (the clamp is constant)
//   d(per_row)/da = -2 c g dc/da = s (b - (<a, b> / |a|²) a)   with s = -2 c g / den, since c den = <a, b>;
//   the same for b with the roles swapped.
//
// A warp owns a row: each lane accumulates <a, b>, |a|² and |b|² over a strided slice in fp32 (fp64 for
// float64 inputs), a shuffle tree sums the lanes. When the rows are 16-byte aligned and d is a multiple of the
// vector width, each lane reads 16 bytes per step (8 bf16/fp16, 4 fp32, 2 fp64), so a warp moves 512 bytes
// per instruction. The backward reads the row a second time for the gradients (mostly from L1/L2). Row offsets
// are int64: N·d passes 2^31 at 256k rows × 8k features.
#include <initializer_list>
#include <limits>

#include "common.cuh"
#include "launchers.h"

namespace mkefast::cuda {
namespace {

constexpr int kRowsPerBlock = 8;
constexpr int kThreads = kRowsPerBlock * kWarpSize;

__device__ __forceinline__ float acc_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double acc_sqrt(double x) { return sqrt(x); }

template <typename A>
struct RowStats {
  A dot, aa, bb;
};

// <a, b>, |a|², |b|² of one row, summed over the warp (every lane gets the totals).
template <typename T, bool kVec>
__device__ RowStats<typename Elem<T>::Acc> row_stats(const T* __restrict__ a, const T* __restrict__ b,
                                                     std::int64_t d, int lane) {
  using A = typename Elem<T>::Acc;
  A dot = A(0), aa = A(0), bb = A(0);
  if constexpr (kVec) {
    constexpr int V = Vec16<T>::kSize;
    for (std::int64_t t = static_cast<std::int64_t>(lane) * V; t < d; t += kWarpSize * V) {
      const Vec16<T> va = Vec16<T>::load(a + t);
      const Vec16<T> vb = Vec16<T>::load(b + t);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A x = Elem<T>::load(va.v[e]);
        const A y = Elem<T>::load(vb.v[e]);
        dot += x * y;
        aa += x * x;
        bb += y * y;
      }
    }
  } else {
    for (std::int64_t t = lane; t < d; t += kWarpSize) {
      const A x = Elem<T>::load(a[t]);
      const A y = Elem<T>::load(b[t]);
      dot += x * y;
      aa += x * x;
      bb += y * y;
    }
  }
  return {warp_sum(dot), warp_sum(aa), warp_sum(bb)};
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) cosine_rec_fwd_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                                 typename Elem<T>::Acc* __restrict__ loss,
                                                                 std::int64_t n, std::int64_t d) {
  using A = typename Elem<T>::Acc;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (i >= n) return;  // whole warps leave together: the shuffles below stay convergent
  const RowStats<A> s = row_stats<T, kVec>(a + i * d, b + i * d, d, lane);
  if (lane == 0) {
    const A prod = acc_sqrt(s.aa) * acc_sqrt(s.bb);
    const A den = prod > A(1e-8) ? prod : A(1e-8);  // a NaN norm leaves dot NaN, so c stays NaN
    const A c = s.dot / den;
    loss[i] = A(1) - c * c;
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads) cosine_rec_bwd_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                                 const typename Elem<T>::Acc* __restrict__ grad_loss,
                                                                 T* __restrict__ grad_a, T* __restrict__ grad_b,
                                                                 std::int64_t n, std::int64_t d) {
  using A = typename Elem<T>::Acc;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (i >= n) return;
  const T* ai = a + i * d;
  const T* bi = b + i * d;
  const RowStats<A> s = row_stats<T, kVec>(ai, bi, d, lane);
  const A prod = acc_sqrt(s.aa) * acc_sqrt(s.bb);
  const bool clamped = !(prod > A(1e-8));
  const A den = clamped ? A(1e-8) : prod;
  const A c = s.dot / den;
  const A scale = A(-2) * c * grad_loss[i] / den;
  // Under the clamp the denominator is a constant and the norm terms vanish.
  const A ka = clamped ? A(0) : s.dot / s.aa;
  const A kb = clamped ? A(0) : s.dot / s.bb;
  T* ga = grad_a != nullptr ? grad_a + i * d : nullptr;
  T* gb = grad_b != nullptr ? grad_b + i * d : nullptr;
  if constexpr (kVec) {
    constexpr int V = Vec16<T>::kSize;
    for (std::int64_t t = static_cast<std::int64_t>(lane) * V; t < d; t += kWarpSize * V) {
      const Vec16<T> va = Vec16<T>::load(ai + t);
      const Vec16<T> vb = Vec16<T>::load(bi + t);
      Vec16<T> oa, ob;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A x = Elem<T>::load(va.v[e]);
        const A y = Elem<T>::load(vb.v[e]);
        oa.v[e] = Elem<T>::store(scale * (y - ka * x));
        ob.v[e] = Elem<T>::store(scale * (x - kb * y));
      }
      if (ga != nullptr) oa.store(ga + t);
      if (gb != nullptr) ob.store(gb + t);
    }
  } else {
    for (std::int64_t t = lane; t < d; t += kWarpSize) {
      const A x = Elem<T>::load(ai[t]);
      const A y = Elem<T>::load(bi[t]);
      if (ga != nullptr) ga[t] = Elem<T>::store(scale * (y - ka * x));
      if (gb != nullptr) gb[t] = Elem<T>::store(scale * (x - kb * y));
    }
  }
}

// The 16-byte path needs every row start aligned: aligned base pointers and d·sizeof(T) a multiple of 16.
template <typename T>
bool vectorizable(std::int64_t d, std::initializer_list<const void*> ptrs) {
  if (d % Vec16<T>::kSize != 0) return false;
  for (const void* p : ptrs) {
    if (p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

unsigned num_blocks(std::int64_t n) { return static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock); }

template <typename T>
int cosine_rec_fwd(const void* a, const void* b, void* loss, std::int64_t n, std::int64_t d, cudaStream_t stream) {
  using A = typename Elem<T>::Acc;
  const T* ta = static_cast<const T*>(a);
  const T* tb = static_cast<const T*>(b);
  A* out = static_cast<A*>(loss);
  if (vectorizable<T>(d, {a, b})) {
    cosine_rec_fwd_kernel<T, true><<<num_blocks(n), kThreads, 0, stream>>>(ta, tb, out, n, d);
  } else {
    cosine_rec_fwd_kernel<T, false><<<num_blocks(n), kThreads, 0, stream>>>(ta, tb, out, n, d);
  }
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int cosine_rec_bwd(const void* a, const void* b, const void* grad_loss, void* grad_a, void* grad_b, std::int64_t n,
                   std::int64_t d, cudaStream_t stream) {
  using A = typename Elem<T>::Acc;
  const T* ta = static_cast<const T*>(a);
  const T* tb = static_cast<const T*>(b);
  const A* g = static_cast<const A*>(grad_loss);
  T* ga = static_cast<T*>(grad_a);
  T* gb = static_cast<T*>(grad_b);
  if (vectorizable<T>(d, {a, b, grad_a, grad_b})) {
    cosine_rec_bwd_kernel<T, true><<<num_blocks(n), kThreads, 0, stream>>>(ta, tb, g, ga, gb, n, d);
  } else {
    cosine_rec_bwd_kernel<T, false><<<num_blocks(n), kThreads, 0, stream>>>(ta, tb, g, ga, gb, n, d);
  }
  return static_cast<int>(cudaGetLastError());
}

// Rows beyond what a 1-D grid of kRowsPerBlock-row blocks can address.
bool too_many_rows(std::int64_t n) {
  return (n + kRowsPerBlock - 1) / kRowsPerBlock > std::numeric_limits<int>::max();
}

}  // namespace

int launch_cosine_rec_fwd(const void* a, const void* b, void* loss, std::int64_t n, std::int64_t d, DType dtype,
                          cudaStream_t stream) {
  if (n <= 0) return static_cast<int>(cudaSuccess);
  if (too_many_rows(n)) return static_cast<int>(cudaErrorInvalidConfiguration);
  switch (dtype) {
    case DType::f32:
      return cosine_rec_fwd<float>(a, b, loss, n, d, stream);
    case DType::f64:
      return cosine_rec_fwd<double>(a, b, loss, n, d, stream);
    case DType::f16:
      return cosine_rec_fwd<__half>(a, b, loss, n, d, stream);
    case DType::bf16:
      return cosine_rec_fwd<__nv_bfloat16>(a, b, loss, n, d, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int launch_cosine_rec_bwd(const void* a, const void* b, const void* grad_loss, void* grad_a, void* grad_b,
                          std::int64_t n, std::int64_t d, DType dtype, cudaStream_t stream) {
  if (n <= 0 || (grad_a == nullptr && grad_b == nullptr)) return static_cast<int>(cudaSuccess);
  if (too_many_rows(n)) return static_cast<int>(cudaErrorInvalidConfiguration);
  switch (dtype) {
    case DType::f32:
      return cosine_rec_bwd<float>(a, b, grad_loss, grad_a, grad_b, n, d, stream);
    case DType::f64:
      return cosine_rec_bwd<double>(a, b, grad_loss, grad_a, grad_b, n, d, stream);
    case DType::f16:
      return cosine_rec_bwd<__half>(a, b, grad_loss, grad_a, grad_b, n, d, stream);
    case DType::bf16:
      return cosine_rec_bwd<__nv_bfloat16>(a, b, grad_loss, grad_a, grad_b, n, d, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace mkefast::cuda
