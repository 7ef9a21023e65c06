// Runtime dispatch of the soft-PU kernels (csrc/cpu/isa/soft_pu_rows.cpp, one translation unit per
// instruction set): the wheel is built for baseline x86-64 (SSE2), and the processor's CPUID picks the widest
// variant it runs, once.
#include "cpu/isa.h"

#include <cstdlib>
#include <string>
#include <vector>

namespace mkefast::cpu {
namespace {

struct Variant {
  const SoftPUKernels& (*table)();
  bool (*runs_here)();
};

bool always() { return true; }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
// __builtin_cpu_supports also checks that the operating system saves the wider registers (XGETBV).
[[maybe_unused]] bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
[[maybe_unused]] bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}
#endif

// Narrowest first.
std::vector<Variant> variants() {
  std::vector<Variant> out{{&baseline::soft_pu_kernels, &always}};
#ifdef MKEFAST_ISA_AVX2
  out.push_back({&avx2::soft_pu_kernels, &has_avx2});
#endif
#ifdef MKEFAST_ISA_AVX512
  out.push_back({&avx512::soft_pu_kernels, &has_avx512});
#endif
  return out;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

IsaChoice choose() {
  IsaChoice choice;
  std::vector<const SoftPUKernels*> runnable;
  for (const Variant& v : variants()) {
    choice.compiled.emplace_back(v.table().isa);
    if (v.runs_here()) {
      choice.supported.emplace_back(v.table().isa);
      runnable.push_back(&v.table());
    }
  }
  const char* env = std::getenv("MKEFAST_CPU_ISA");
  const std::string wanted = env == nullptr ? "" : env;
  if (wanted.empty() || wanted == "auto") {
    choice.kernels = runnable.back();
    return choice;
  }
  for (const SoftPUKernels* k : runnable) {
    if (wanted == k->isa) {
      choice.kernels = k;
      return choice;
    }
  }
  const auto listed = [&](const std::vector<std::string>& names) {
    for (const auto& n : names) {
      if (n == wanted) return true;
    }
    return false;
  };
  const std::string why = listed(choice.compiled) ? "this processor does not support it"
                          : (wanted == "sse2" || wanted == "avx2" || wanted == "avx512" || wanted == "generic" || wanted == "native")
                              ? "this build does not include it"
                              : "no such instruction set";
  choice.error = "MKEFAST_CPU_ISA: expected 'auto' or one of " + joined(choice.supported) +
                 " (the instruction sets this build has and this processor runs; built: " + joined(choice.compiled) +
                 "), got '" + wanted + "': " + why;
  return choice;
}

}  // namespace

const IsaChoice& isa_choice() {
  static const IsaChoice choice = choose();
  return choice;
}

}  // namespace mkefast::cpu
