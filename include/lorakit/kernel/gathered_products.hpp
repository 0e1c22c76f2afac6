// Gathered products of a low-rank branch: the shrink x_i A^T and the expand y_i += t_i B^T applied to a list of
// rows picked out of a batch, in place, without copying them into a contiguous block first. These are the CPU
// counterparts of vLLM's `bgmv_shrink` / `bgmv_expand` (Punica: one adapter index per row), used by the adapter
// bank (serve/adapter_bank.hpp) for adapters that only a few rows of a batch use, where Eigen's GEMM on a
// gathered block pays more for the gather and the packing than it gains (the measured crossover is in
// docs/kernel.md).
#pragma once

#include "lorakit/core/types.hpp"
#include "lorakit/kernel/simd.hpp"

#include <algorithm>
#include <type_traits>

namespace lorakit::kernel {

/// Shrink of listed rows: \f$t_j = x_{\mathrm{rows}[j]} A^\top\f$ for j < count, with x row-major (leading
/// dimension ldx), A [r x in] row-major (lda), t [count x r] row-major (ldt). Each row is r dot products of
/// length in (`project_dot` on one row: the rows are not evenly spaced). No checks (hot loop).
template <class T>
void gathered_project(const T* x, Index ldx, const Index* rows, Index count, const T* a, Index lda, Index r, Index in,
                      T* t, Index ldt) {
  for (Index j = 0; j < count; ++j) project_dot(x + rows[j] * ldx, ldx, a, lda, t + j * ldt, ldt, Index(1), r, in);
}

namespace gathered_detail {

/// Rows of y updated together (each row of B^T is loaded once for all of them) and vectors per row in registers:
/// 4 x 2 accumulators plus two rows of B^T and a broadcast fit the 16 vector registers of SSE2 and AVX2.
inline constexpr Index kRowBlock = 4;
inline constexpr Index kColumnVectors = 2;
/// Entries of B^T kept hot in cache while every listed row passes over them (128 KiB in float).
inline constexpr Index kCacheEntries = 32768;

/// y_{rows[i]}[c, c + NC*width) += sum_p t_i[p] bt[p, c, ...) for MR listed rows: the MR x NC accumulators stay in
/// registers while the r rows of bt stream past once for all MR rows.
template <Index MR, Index NC, class Arch, class T>
void expand_block(const T* t, Index ldt, const Index* rows, const T* bt, Index ldb, Index r, Index c, T* y, Index ldy) {
  using Batch = xsimd::batch<T, Arch>;
  constexpr Index width = static_cast<Index>(Batch::size);
  Batch acc[MR][NC];
  for (Index i = 0; i < MR; ++i)
    for (Index u = 0; u < NC; ++u) acc[i][u] = Batch::load_unaligned(y + rows[i] * ldy + c + u * width);
  for (Index p = 0; p < r; ++p) {
    Batch b[NC];
    for (Index u = 0; u < NC; ++u) b[u] = Batch::load_unaligned(bt + p * ldb + c + u * width);
    for (Index i = 0; i < MR; ++i) {
      const Batch ti(t[i * ldt + p]);
      for (Index u = 0; u < NC; ++u) acc[i][u] = xsimd::fma(ti, b[u], acc[i][u]);
    }
  }
  for (Index i = 0; i < MR; ++i)
    for (Index u = 0; u < NC; ++u) acc[i][u].store_unaligned(y + rows[i] * ldy + c + u * width);
}

/// The scalar expand of columns [begin, end) of MR listed rows (the reference, and the tail past the last vector).
template <class T>
void expand_scalar(const T* t, Index ldt, const Index* rows, Index mr, const T* bt, Index ldb, Index r, Index begin,
                   Index end, T* y, Index ldy) {
  for (Index i = 0; i < mr; ++i) {
    T* yi = y + rows[i] * ldy;
    for (Index c = begin; c < end; ++c) {
      T sum = yi[c];
      for (Index p = 0; p < r; ++p) sum += t[i * ldt + p] * bt[p * ldb + c];
      yi[c] = sum;
    }
  }
}

/// Columns [begin, end) of MR listed rows: blocks of NC vectors, then single vectors, then the scalar tail.
template <Index MR, class Arch, class T>
void expand_rows(const T* t, Index ldt, const Index* rows, const T* bt, Index ldb, Index r, Index begin, Index end, T* y,
                 Index ldy) {
  constexpr Index width = static_cast<Index>(xsimd::batch<T, Arch>::size);
  Index c = begin;
  for (; c + kColumnVectors * width <= end; c += kColumnVectors * width)
    expand_block<MR, kColumnVectors, Arch>(t, ldt, rows, bt, ldb, r, c, y, ldy);
  for (; c + width <= end; c += width) expand_block<MR, 1, Arch>(t, ldt, rows, bt, ldb, r, c, y, ldy);
  expand_scalar(t, ldt, rows, MR, bt, ldb, r, c, end, y, ldy);
}

}  // namespace gathered_detail

/// Expand of listed rows: \f$y_{\mathrm{rows}[j]} \mathrel{+}= t_j\,B^\top = \sum_p t_{jp}\,(B^\top)_{p,:}\f$ for
/// j < count, with t [count x r] (ldt), bt = B^T [r x out] row-major (ldb), y row-major (ldy). The scaling of the
/// branch is folded into t by the caller. Blocked like a GEMM micro-kernel without packing: out is cut into column
/// blocks whose slice of B^T stays in cache (about kCacheEntries entries) while every listed row passes over it,
/// four rows at a time, so each loaded vector of B^T serves four rows and y is read and written once. The listed
/// rows must be distinct. No checks (hot loop).
template <class T>
void gathered_expand_add(const T* t, Index ldt, const Index* rows, Index count, const T* bt, Index ldb, Index r,
                         Index out, T* y, Index ldy) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  using namespace gathered_detail;
  simd_detail::dispatch([&](auto arch) {
    using Arch = decltype(arch);
    if constexpr (std::is_same_v<Arch, xsimd::unavailable>) {
      expand_scalar(t, ldt, rows, count, bt, ldb, r, Index(0), out, y, ldy);
    } else {
      constexpr Index step = kColumnVectors * static_cast<Index>(xsimd::batch<T, Arch>::size);
      const Index block = std::max(step, kCacheEntries / std::max(r, Index(1)) / step * step);
      for (Index begin = 0; begin < out; begin += block) {
        const Index end = std::min(out, begin + block);
        Index j = 0;
        for (; j + kRowBlock <= count; j += kRowBlock)
          expand_rows<kRowBlock, Arch>(t + j * ldt, ldt, rows + j, bt, ldb, r, begin, end, y, ldy);
        for (; j < count; ++j) expand_rows<1, Arch>(t + j * ldt, ldt, rows + j, bt, ldb, r, begin, end, y, ldy);
      }
    }
  });
}

}  // namespace lorakit::kernel
