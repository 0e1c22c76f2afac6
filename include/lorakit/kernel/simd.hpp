// SIMD kernels (xsimd) for the operations of the adapters that are memory-bound: AdamW's elementwise update here,
// the adapter bank's gathered products in kernel/gathered_products.hpp, with runtime dispatch over the instruction
// sets the translation unit was compiled for.
//
// Dispatch. xsimd 8.1 defines a batch type for an architecture only when the compiler targets it (e.g.
// AVX-512 needs -mavx512bw or -march=native), so a header-only library cannot carry AVX-512 code into a
// translation unit built without those flags. The kernels are therefore written once over
// `xsimd::batch<T, Arch>` and dispatched at run time (`xsimd::dispatch`, which reads the CPU's features) over
// those of avx512bw, fma3<avx2>, sse2 (x86-64) and neon64 (AArch64, where it is always compiled in) that the
// translation unit was compiled for, with a scalar loop where none is (32-bit ARM, whose NEON has no double
// lanes, and other targets). A build without -march gets sse2 on x86-64; -march=native gets the best the
// machine has.
#pragma once

#include "lorakit/core/types.hpp"

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace lorakit::kernel {

namespace simd_detail {

/// The architectures of `Candidates...` (most capable first, as xsimd's dispatch wants them) that the translation
/// unit was compiled for (`Arch::supported()`, xsimd's public trait), appended to `Kept`.
template <class Kept, class... Candidates>
struct compiled_in {
  using type = Kept;
};
template <class... Kept, class Arch, class... Rest>
struct compiled_in<xsimd::arch_list<Kept...>, Arch, Rest...>
    : compiled_in<std::conditional_t<Arch::supported(), xsimd::arch_list<Kept..., Arch>, xsimd::arch_list<Kept...>>,
                  Rest...> {};

/// avx512bw, fma3<avx2>, sse2 (x86-64) and neon64 (AArch64): those compiled in, most capable first. Only one
/// family is ever compiled in, so the list stays sorted as xsimd requires.
using Architectures = typename compiled_in<xsimd::arch_list<>, xsimd::avx512bw, xsimd::fma3<xsimd::avx2>, xsimd::sse2,
                                           xsimd::neon64>::type;

template <class List>
struct is_empty_list : std::false_type {};
template <>
struct is_empty_list<xsimd::arch_list<>> : std::true_type {};

/// True when at least one SIMD architecture is compiled in.
inline constexpr bool has_simd = !is_empty_list<Architectures>::value;

/// Calls functor(Arch{}) for the best compiled-in architecture the CPU supports, or functor(xsimd::unavailable{})
/// (the scalar path) when none is compiled in.
template <class F>
void dispatch(F&& functor) {
  if constexpr (has_simd) {
    xsimd::dispatch<Architectures>(std::forward<F>(functor))();
  } else {
    functor(xsimd::unavailable{});
  }
}

/// Scalar AdamW on [begin, end): the reference and the tail of the SIMD loop.
template <class T>
void adamw_scalar(T* p, T* m, T* v, const T* g, Index begin, Index end, T decay, T beta1, T one_minus_beta1, T beta2,
                  T one_minus_beta2, T step_size, T inv_sqrt_bc2, T eps) {
  for (Index i = begin; i < end; ++i) {
    const T gi = g[i];
    const T pi = p[i] * decay;
    const T mi = beta1 * m[i] + one_minus_beta1 * gi;
    const T vi = beta2 * v[i] + one_minus_beta2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * (mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps));
  }
}

}  // namespace simd_detail

/// Hyper-parameters of one AdamW step, as in `torch.optim.AdamW` (t counts from 1).
struct AdamWStep {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  std::int64_t step = 1;
};

/// AdamW's elementwise update of n entries (Loshchilov & Hutter, ICLR 2019; PyTorch's `torch.optim.AdamW`):
/// \f[ p \leftarrow p(1 - \eta\lambda),\quad m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
///     v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
///     p \leftarrow p - \frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}. \f]
/// The scalar coefficients are computed in double and rounded to T once; the elementwise work is in T, SIMD.
/// p, m, v are updated in place; g is read. The arrays must not overlap. No checks (hot loop): the caller
/// validates the hyper-parameters and the sizes.
template <class T>
void adamw_update(T* p, T* m, T* v, const T* g, Index n, const AdamWStep& step) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  const double t = static_cast<double>(step.step);
  const T decay = static_cast<T>(1.0 - step.lr * step.weight_decay);
  const T beta1 = static_cast<T>(step.beta1), one_minus_beta1 = static_cast<T>(1.0 - step.beta1);
  const T beta2 = static_cast<T>(step.beta2), one_minus_beta2 = static_cast<T>(1.0 - step.beta2);
  const T step_size = static_cast<T>(step.lr / (1.0 - std::pow(step.beta1, t)));
  const T inv_sqrt_bc2 = static_cast<T>(1.0 / std::sqrt(1.0 - std::pow(step.beta2, t)));
  const T eps = static_cast<T>(step.eps);
  simd_detail::dispatch([&](auto arch) {
    using Arch = decltype(arch);
    Index i = 0;
    if constexpr (!std::is_same_v<Arch, xsimd::unavailable>) {
      using Batch = xsimd::batch<T, Arch>;
      constexpr Index width = static_cast<Index>(Batch::size);
      const Batch b1(beta1), c1(one_minus_beta1), b2(beta2), c2(one_minus_beta2), dec(decay), lr(step_size),
          ib(inv_sqrt_bc2), ep(eps);
      for (; i + width <= n; i += width) {
        const Batch gi = Batch::load_unaligned(g + i);
        const Batch pi = Batch::load_unaligned(p + i) * dec;
        const Batch mi = xsimd::fma(b1, Batch::load_unaligned(m + i), c1 * gi);
        const Batch vi = xsimd::fma(b2, Batch::load_unaligned(v + i), c2 * (gi * gi));
        mi.store_unaligned(m + i);
        vi.store_unaligned(v + i);
        xsimd::fnma(lr, mi / xsimd::fma(xsimd::sqrt(vi), ib, ep), pi).store_unaligned(p + i);
      }
    }
    simd_detail::adamw_scalar(p, m, v, g, i, n, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                              inv_sqrt_bc2, eps);
  });
}

}  // namespace lorakit::kernel
