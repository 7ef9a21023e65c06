// The targets and options of one direction of the soft-PU op (docs/math.md, "The general op"), as the
// row-chunked epilogues of both compiled modules read them: _C (host pointers) and _C_cuda (device
// pointers; the struct is passed by value to the kernels). Torch-free plain data.
#pragma once

#include <cstdint>

namespace mkefast {

struct SoftPUParams {
  const std::int32_t* cls = nullptr;             // [B_c] dense class id of each candidate, -1 for none
  const std::uint8_t* labeled = nullptr;         // [B_c] bool
  const std::int32_t* anchor_cls = nullptr;      // [B_a] dense class id of each anchor, -1 for none
  const std::uint8_t* anchor_labeled = nullptr;  // [B_a] bool
  const float* n11 = nullptr;                    // [B_a] |P11(j)| after the exclusion of the partner
  const float* n10 = nullptr;                    // [B_a] |P10(j)| after the exclusion of the partner
  std::int64_t diag_offset = 0;                  // anchor j's partner is candidate j + diag_offset (if < B_c)
  bool exclude_diagonal = false;                 // the partner leaves the denominator, P11 and P10
  double inv_tau = 1.0;                          // 1/τ
  double inv_sigma = 0.0;                        // 1/σ ("logit" weights)
  double log_sigma = 0.0;                        // log σ ("phi" weights, in log form)
  bool rbf = false;                              // false: σ = inf, every weight is exactly 1
  bool phi = false;                              // rbf_space == "phi"
};

}  // namespace mkefast
