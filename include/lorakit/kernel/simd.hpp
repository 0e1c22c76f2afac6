// SIMD kernels (xsimd) for the operations of the adapters that are memory-bound or skinny: the rank-r
// projection x A^T (r <= 64) and AdamW's elementwise update, with runtime dispatch over the instruction sets the
// translation unit was compiled for.
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

/// out[i, j] = sum_p x[i, p] a[j, p] for i in [i0, i0 + MR), j in [j0, j0 + NR): MR x NR dot products of length `in`,
/// each kept in one SIMD accumulator and reduced once at the end.
template <Index MR, Index NR, class Arch, class T>
void dot_block(const T* x, Index ldx, const T* a, Index lda, T* out, Index ldo, Index in) {
  using Batch = xsimd::batch<T, Arch>;
  constexpr Index width = static_cast<Index>(Batch::size);
  Batch acc[MR][NR];
  for (Index i = 0; i < MR; ++i)
    for (Index j = 0; j < NR; ++j) acc[i][j] = Batch(T(0));
  const Index vector_end = in - in % width;
  for (Index p = 0; p < vector_end; p += width) {
    Batch xs[MR];
    for (Index i = 0; i < MR; ++i) xs[i] = Batch::load_unaligned(x + i * ldx + p);
    for (Index j = 0; j < NR; ++j) {
      const Batch aj = Batch::load_unaligned(a + j * lda + p);
      for (Index i = 0; i < MR; ++i) acc[i][j] = xsimd::fma(xs[i], aj, acc[i][j]);
    }
  }
  // Horizontal sums through memory rather than xsimd::hadd: GCC 12 warns (-Wuninitialized, a false positive in
  // avx512fintrin.h) on the AVX-512 double hadd, and one reduction per output entry costs nothing here.
  alignas(64) T lanes[width];
  for (Index i = 0; i < MR; ++i) {
    for (Index j = 0; j < NR; ++j) {
      acc[i][j].store_aligned(lanes);
      T sum = 0;
      for (Index l = 0; l < width; ++l) sum += lanes[l];
      for (Index p = vector_end; p < in; ++p) sum += x[i * ldx + p] * a[j * lda + p];
      out[i * ldo + j] = sum;
    }
  }
}

/// Rows [i0, i0 + MR) of out = x a^T, all columns: NR-wide column blocks, then single columns.
template <Index MR, Index NR, class Arch, class T>
void dot_rows(const T* x, Index ldx, const T* a, Index lda, T* out, Index ldo, Index r, Index in) {
  Index j = 0;
  for (; j + NR <= r; j += NR) dot_block<MR, NR, Arch>(x, ldx, a + j * lda, lda, out + j, ldo, in);
  for (; j < r; ++j) dot_block<MR, 1, Arch>(x, ldx, a + j * lda, lda, out + j, ldo, in);
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

/// out = x a^T for row-major x [n x in] and a [r x in] (out [n x r], row-major, leading dimensions given):
/// the rank-r projection of a LoRA branch computed as n r dot products over contiguous rows, 4 x 4 (AVX-512) or
/// 2 x 4 blocks of them in registers. Meant for skinny a (r <= 64); see docs/performance.md for where it beats
/// Eigen's GEMM.
template <class T>
void project_dot(const T* x, Index ldx, const T* a, Index lda, T* out, Index ldo, Index n, Index r, Index in) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  simd_detail::dispatch([&](auto arch) {
    using Arch = decltype(arch);
    if constexpr (std::is_same_v<Arch, xsimd::unavailable>) {
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < r; ++j) {
          T sum = 0;
          for (Index p = 0; p < in; ++p) sum += x[i * ldx + p] * a[j * lda + p];
          out[i * ldo + j] = sum;
        }
    } else {
      constexpr Index MR = sizeof(xsimd::batch<T, Arch>) >= 64 ? 4 : 2;
      Index i = 0;
      for (; i + MR <= n; i += MR) {
        simd_detail::dot_rows<MR, 4, Arch>(x + i * ldx, ldx, a, lda, out + i * ldo, ldo, r, in);
      }
      for (; i < n; ++i) simd_detail::dot_rows<1, 4, Arch>(x + i * ldx, ldx, a, lda, out + i * ldo, ldo, r, in);
    }
  });
}

}  // namespace lorakit::kernel
