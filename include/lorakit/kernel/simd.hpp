// SIMD kernels (xsimd) for the operations of the adapters that are memory-bound: AdamW's elementwise update here,
// the adapter bank's gathered products in kernel/gathered_products.hpp, with runtime dispatch over the instruction
// sets the translation unit was compiled for.
//
// The kernels are written once over `xsimd::batch<T, Arch>` and dispatched at run time over the architectures the
// translation unit was compiled for (xsimd only defines the batch types the compiler targets: docs/kernel.md,
// "Dispatch"), with a scalar loop where none is.
#pragma once

#include "lorakit/core/types.hpp"

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <type_traits>
#include <utility>

namespace lorakit {

namespace detail {

/// The architectures of `Candidates...` (most capable first, as xsimd's dispatch wants them) that the translation
/// unit was compiled for (`Arch::supported()`, xsimd's public trait), appended to `Kept`.
template <class Kept, class... Candidates>
struct compiled_in_architectures {
  using type = Kept;
};
template <class... Kept, class Arch, class... Rest>
struct compiled_in_architectures<xsimd::arch_list<Kept...>, Arch, Rest...>
    : compiled_in_architectures<
          std::conditional_t<Arch::supported(), xsimd::arch_list<Kept..., Arch>, xsimd::arch_list<Kept...>>, Rest...> {};

/// avx512bw, fma3<avx2>, sse2 (x86-64) and neon64 (AArch64): those compiled in, most capable first. Only one
/// family is ever compiled in, so the list stays sorted as xsimd requires.
using SimdArchitectures = typename compiled_in_architectures<xsimd::arch_list<>, xsimd::avx512bw,
                                                            xsimd::fma3<xsimd::avx2>, xsimd::sse2, xsimd::neon64>::type;

template <class List>
struct is_empty_arch_list : std::false_type {};
template <>
struct is_empty_arch_list<xsimd::arch_list<>> : std::true_type {};

/// True when at least one SIMD architecture is compiled in.
inline constexpr bool has_simd = !is_empty_arch_list<SimdArchitectures>::value;

/// Calls functor(Arch{}) for the best compiled-in architecture the CPU supports, or functor(xsimd::unavailable{})
/// (the scalar path) when none is compiled in.
template <class F>
void simd_dispatch(F&& functor) {
  if constexpr (has_simd) {
    xsimd::dispatch<SimdArchitectures>(std::forward<F>(functor))();
  } else {
    functor(xsimd::unavailable{});
  }
}

/// Scalar AdamW on [begin, end): the reference and the tail of the SIMD loop.
template <class T>
void adamw_update_scalar(T* p, T* m, T* v, const T* g, Index begin, Index end, T decay, T beta1, T one_minus_beta1,
                         T beta2, T one_minus_beta2, T step_size, T inv_sqrt_bc2, T eps) {
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

}  // namespace detail

/// The scalars of one AdamW step of one parameter: what the elementwise update needs, computed in double by the
/// optimizer (`AdamW`, from its `AdamWConfig`, the parameter's group and its step count t) and rounded to T once by
/// `adamw_update`.
struct AdamWStepCoefficients {
  double decay;                     ///< \f$1 - \eta\lambda\f$: the decoupled weight decay
  double beta1;                     ///< \f$\beta_1\f$
  double beta2;                     ///< \f$\beta_2\f$
  double step_size;                 ///< \f$\eta / (1 - \beta_1^t)\f$: the learning rate, first bias correction
  double inverse_sqrt_correction2;  ///< \f$1 / \sqrt{1 - \beta_2^t}\f$: the second bias correction
  double eps;                       ///< \f$\epsilon\f$
};

/// AdamW's elementwise update of n entries (Loshchilov & Hutter, ICLR 2019; PyTorch's `torch.optim.AdamW`), with
/// the coefficients c of this step (`AdamWStepCoefficients`):
/// \f[ p \leftarrow p\,c_\mathrm{decay},\quad m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
///     v \leftarrow \beta_2 v + (1-\beta_2) g^2,\quad
///     p \leftarrow p - c_\mathrm{step}\,\frac{m}{\sqrt{v}\,c_\mathrm{corr2} + \epsilon}, \f]
/// which is \f$p \leftarrow p(1 - \eta\lambda)\f$ then \f$p \leftarrow p - \frac{\eta}{1-\beta_1^t}\,
/// \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}\f$ for the coefficients `AdamW` computes. Each coefficient is
/// rounded to T once; the elementwise work is in T, SIMD. p, m, v are updated in place; g is read. The arrays must
/// not overlap. No checks (hot loop): the caller validates the hyper-parameters and the sizes.
template <class T>
void adamw_update(T* p, T* m, T* v, const T* g, Index n, const AdamWStepCoefficients& step) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  const T decay = static_cast<T>(step.decay);
  const T beta1 = static_cast<T>(step.beta1), one_minus_beta1 = static_cast<T>(1.0 - step.beta1);
  const T beta2 = static_cast<T>(step.beta2), one_minus_beta2 = static_cast<T>(1.0 - step.beta2);
  const T step_size = static_cast<T>(step.step_size);
  const T inv_sqrt_bc2 = static_cast<T>(step.inverse_sqrt_correction2);
  const T eps = static_cast<T>(step.eps);
  detail::simd_dispatch([&](auto arch) {
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
    detail::adamw_update_scalar(p, m, v, g, i, n, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
                                step_size, inv_sqrt_bc2, eps);
  });
}

}  // namespace lorakit
