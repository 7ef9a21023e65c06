// Fused cosine reconstruction loss (docs/math.md, "Cosine reconstruction loss") on the GPU: one warp per row.
//
//   per_row = 1 - c²,   c = <a, b> / den,   den = max(|a| |b|, 1e-8)
//
// Scale-free: the rows are multiplied by the inverses ia, ib of their largest magnitudes before any product,
// and the floor with them, so that no norm overflows or underflows in the accumulation type whatever the
// inputs' scale (1e20 or 1e-20 in float):
//   â = a ia,  b̂ = b ib,  c = <â, b̂> / n̂,  n̂ = max(|â| |b̂|, 1e-8 ia ib)
// Gradients (g = upstream gradient of the row), from dc/dâ = b̂ / n̂ - c â / |â|² and dâ/da = ia:
//   unclamped:  d(per_row)/da = s ia (b̂ - (<â, b̂> / |â|²) â),   s = -2 c g / n̂   (c n̂ = <â, b̂>)
//   clamped:    the floor is a constant and the norm term vanishes: d/da = s ia b̂
//   and the same for b with the roles swapped.
//
// A warp owns a row: a first read finds the two scales (warp max), a second accumulates <â, b̂>, |â|² and |b̂|²
// over each lane's strided slice in fp32 (fp64 for float64 inputs) and a shuffle tree sums the lanes; the
// second read hits L1/L2. When the rows are 16-byte aligned and d is a multiple of the vector width, each
// lane reads 16 bytes per step (8 bf16/fp16, 4 fp32, 2 fp64), so a warp moves 512 bytes per instruction. The
// backward reads the row a third time for the gradients. Row offsets are int64: N·d passes 2^31 at 256k rows
// × 8k features. A NaN input skips the max (NaN fails the compare) and then makes the sums NaN.
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
__device__ __forceinline__ float acc_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double acc_abs(double x) { return fabs(x); }

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const A o = __shfl_xor_sync(kFullMask, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

// Calls f(x, y) on the lane's elements of a row pair, converted to the accumulation type.
template <typename T, bool kVec, typename F>
__device__ __forceinline__ void for_lane(const T* __restrict__ a, const T* __restrict__ b, std::int64_t d, int lane,
                                         F&& f) {
  if constexpr (kVec) {
    constexpr int V = Vec16<T>::kSize;
    for (std::int64_t t = static_cast<std::int64_t>(lane) * V; t < d; t += kWarpSize * V) {
      const Vec16<T> va = Vec16<T>::load(a + t);
      const Vec16<T> vb = Vec16<T>::load(b + t);
#pragma unroll
      for (int e = 0; e < V; ++e) f(Elem<T>::load(va.v[e]), Elem<T>::load(vb.v[e]));
    }
  } else {
    for (std::int64_t t = lane; t < d; t += kWarpSize) f(Elem<T>::load(a[t]), Elem<T>::load(b[t]));
  }
}

// The largest magnitude is floored so that its inverse stays finite: a row of subnormals then scales to
// values below 1, still far from underflow.
template <typename A>
struct MinScale;
template <>
struct MinScale<float> {
  static constexpr float value = 0x1p-100f;
};
template <>
struct MinScale<double> {
  static constexpr double value = 0x1p-1000;
};

template <typename A>
__device__ __forceinline__ A inv_scale(A max_abs) {
  return max_abs > A(0) ? A(1) / (max_abs > MinScale<A>::value ? max_abs : MinScale<A>::value) : A(1);
}

template <typename A>
struct RowStats {
  A ia, ib;       // the inverse scales (1 for an all-zero row)
  A dot, aa, bb;  // <â, b̂>, |â|², |b̂|²
  A den;          // max(|â| |b̂|, 1e-8 ia ib)
  bool clamped;
};

// The scaled statistics of one row pair, summed over the warp (every lane gets them).
template <typename T, bool kVec>
__device__ RowStats<typename Elem<T>::Acc> row_stats(const T* __restrict__ a, const T* __restrict__ b,
                                                     std::int64_t d, int lane) {
  using A = typename Elem<T>::Acc;
  A ma = A(0), mb = A(0);
  for_lane<T, kVec>(a, b, d, lane, [&](A x, A y) {
    ma = acc_abs(x) > ma ? acc_abs(x) : ma;
    mb = acc_abs(y) > mb ? acc_abs(y) : mb;
  });
  RowStats<A> s;
  s.ia = inv_scale(warp_max(ma));
  s.ib = inv_scale(warp_max(mb));
  A dot = A(0), aa = A(0), bb = A(0);
  for_lane<T, kVec>(a, b, d, lane, [&](A x, A y) {
    x *= s.ia;
    y *= s.ib;
    dot += x * y;
    aa += x * x;
    bb += y * y;
  });
  s.dot = warp_sum(dot);
  s.aa = warp_sum(aa);
  s.bb = warp_sum(bb);
  const A prod = acc_sqrt(s.aa) * acc_sqrt(s.bb);
  const A floor = A(1e-8) * s.ia * s.ib;
  s.clamped = !(prod > floor);  // a NaN norm goes the clamped way; dot (NaN) keeps c NaN
  // den = 0 only where the floor underflowed and a row is all zero (then <â, b̂> = 0): any positive den then
  // gives the true c = 0 instead of 0/0.
  s.den = s.clamped ? (floor > A(0) ? floor : A(1)) : prod;
  return s;
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
    const A c = s.dot / s.den;
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
  // -2 c g, times ia/den: both factors stay normal where their product is already subnormal (1e-20 inputs).
  const A cg = A(-2) * (s.dot / s.den) * grad_loss[i];
  const A scale_a = cg * (s.ia / s.den);
  const A scale_b = cg * (s.ib / s.den);
  // Under the clamp the denominator is a constant and the norm terms vanish.
  const A ka = s.clamped ? A(0) : s.dot / s.aa;
  const A kb = s.clamped ? A(0) : s.dot / s.bb;
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
        const A x = Elem<T>::load(va.v[e]) * s.ia;
        const A y = Elem<T>::load(vb.v[e]) * s.ib;
        oa.v[e] = Elem<T>::store(scale_a * (y - ka * x));
        ob.v[e] = Elem<T>::store(scale_b * (x - kb * y));
      }
      if (ga != nullptr) oa.store(ga + t);
      if (gb != nullptr) ob.store(gb + t);
    }
  } else {
    for (std::int64_t t = lane; t < d; t += kWarpSize) {
      const A x = Elem<T>::load(ai[t]) * s.ia;
      const A y = Elem<T>::load(bi[t]) * s.ib;
      if (ga != nullptr) ga[t] = Elem<T>::store(scale_a * (y - ka * x));
      if (gb != nullptr) gb[t] = Elem<T>::store(scale_b * (x - kb * y));
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
