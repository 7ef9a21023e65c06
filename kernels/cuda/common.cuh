// Device helpers shared by the CUDA kernels of this folder: element types, 16-byte vector loads and
// warp / block reductions. Header-only, device code only (included by the .cu files, never by the bindings).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mkefast::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Conversions between a storage type T and its accumulation type Acc: float for fp32 / fp16 / bf16,
// double for fp64.
template <typename T>
struct Elem {
  using Acc = float;
  __device__ static float load(T x) { return static_cast<float>(x); }
  __device__ static T store(float x) { return static_cast<T>(x); }
};

template <>
struct Elem<double> {
  using Acc = double;
  __device__ static double load(double x) { return x; }
  __device__ static double store(double x) { return x; }
};

template <>
struct Elem<__half> {
  using Acc = float;
  __device__ static float load(__half x) { return __half2float(x); }
  __device__ static __half store(float x) { return __float2half_rn(x); }
};

template <>
struct Elem<__nv_bfloat16> {
  using Acc = float;
  __device__ static float load(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
};

// 16 bytes of T, loaded and stored with one 128-bit instruction (8 × fp16/bf16, 4 × fp32, 2 × fp64).
// Callers guarantee 16-byte alignment of the address.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];

  __device__ static Vec16 load(const T* p) {
    Vec16 out;
    *reinterpret_cast<uint4*>(&out) = __ldg(reinterpret_cast<const uint4*>(p));
    return out;
  }
  __device__ void store(T* p) const { *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(this); }
};

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sums N values over the whole block; every thread gets the totals. blockDim.x must be a multiple of 32.
// Ends with a barrier, so that the shared scratch can be reused by the next call.
template <typename A, int N>
__device__ void block_sum(A (&v)[N]) {
  __shared__ A partial[N][kWarpSize];
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int num_warps = static_cast<int>(blockDim.x) / kWarpSize;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    v[i] = warp_sum(v[i]);
    if (lane == 0) partial[i][warp] = v[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = warp_sum(lane < num_warps ? partial[i][lane] : A(0));
  __syncthreads();
}

}  // namespace mkefast::cuda
