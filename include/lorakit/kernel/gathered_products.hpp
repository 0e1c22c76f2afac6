// Gathered products of a low-rank branch: the shrink x_i A^T and the expand y_i += t_i B^T applied to a list of
// rows picked out of a batch, in place, without copying them into a contiguous block first. These are the CPU
// counterparts of vLLM's `bgmv_shrink` / `bgmv_expand` (Punica: one adapter index per row), used by the adapter
// bank (serve/adapter_bank.hpp), where Eigen's GEMM on a gathered block pays for the copy of the rows in and of
// the result out (the measured crossover is in docs/kernel.md).
//
// Both products are one operation, out_j += sum_p a_j[p] b[p, :] over listed rows, with b = A^T for the shrink
// (a_j = x_{rows[j]}, out_j = t_j) and b = B^T for the expand (a_j = t_j, out_j = y_{rows[j]}): a GEMM
// micro-kernel without packing, blocked so that the panel of b in use stays in cache while every listed row
// passes over it.
#pragma once

#include "lorakit/core/types.hpp"
#include "lorakit/kernel/simd.hpp"

#include <algorithm>
#include <type_traits>

namespace lorakit {

namespace detail {

/// Rows updated together (each loaded vector of b serves all of them) and vectors per row in registers: 4 x 2
/// accumulators, two vectors of b and a broadcast fit the 16 vector registers of SSE2 and AVX2.
inline constexpr Index kGatheredRowBlock = 4;
inline constexpr Index kGatheredColumnVectors = 2;
/// Entries of the panel of b kept in cache while every listed row passes over it (128 KiB in float).
inline constexpr Index kGatheredPanelEntries = 32768;
/// Widest panel, in columns: the expand's out is cut into blocks of this many columns, the shrink's in into
/// blocks of kGatheredPanelEntries / r rows.
inline constexpr Index kGatheredPanelColumns = 512;

/// out[i][c, c + NC w) += sum_{p in [p0, p1)} a[i][p] b[p, c, ...) for MR rows: the MR x NC accumulators stay in
/// registers while rows p0..p1 of b stream past once for all MR rows.
template <Index MR, Index NC, class Arch, class T>
void gathered_axpy_block(const T* const* a, Index p0, Index p1, const T* b, Index ldb, Index c, T* const* out) {
  using Batch = xsimd::batch<T, Arch>;
  constexpr Index width = static_cast<Index>(Batch::size);
  Batch acc[MR][NC];
  for (Index i = 0; i < MR; ++i)
    for (Index u = 0; u < NC; ++u) acc[i][u] = Batch::load_unaligned(out[i] + c + u * width);
  for (Index p = p0; p < p1; ++p) {
    Batch bv[NC];
    for (Index u = 0; u < NC; ++u) bv[u] = Batch::load_unaligned(b + p * ldb + c + u * width);
    for (Index i = 0; i < MR; ++i) {
      const Batch ai(a[i][p]);
      for (Index u = 0; u < NC; ++u) acc[i][u] = xsimd::fma(ai, bv[u], acc[i][u]);
    }
  }
  for (Index i = 0; i < MR; ++i)
    for (Index u = 0; u < NC; ++u) acc[i][u].store_unaligned(out[i] + c + u * width);
}

/// The same for mr rows and columns [c0, c1), by scalar loops (the reference, and the tail past the last vector).
template <class T>
void gathered_axpy_scalar(const T* const* a, Index mr, Index p0, Index p1, const T* b, Index ldb, Index c0,
                          Index c1, T* const* out) {
  for (Index i = 0; i < mr; ++i) {
    for (Index c = c0; c < c1; ++c) {
      T sum = out[i][c];
      for (Index p = p0; p < p1; ++p) sum += a[i][p] * b[p * ldb + c];
      out[i][c] = sum;
    }
  }
}

/// Columns [c0, c1) of MR rows: blocks of kGatheredColumnVectors vectors, then single vectors, then the scalar
/// tail.
template <Index MR, class Arch, class T>
void gathered_axpy_rows(const T* const* a, Index p0, Index p1, const T* b, Index ldb, Index c0, Index c1,
                        T* const* out) {
  constexpr Index width = static_cast<Index>(xsimd::batch<T, Arch>::size);
  Index c = c0;
  for (; c + kGatheredColumnVectors * width <= c1; c += kGatheredColumnVectors * width)
    gathered_axpy_block<MR, kGatheredColumnVectors, Arch>(a, p0, p1, b, ldb, c, out);
  for (; c + width <= c1; c += width) gathered_axpy_block<MR, 1, Arch>(a, p0, p1, b, ldb, c, out);
  gathered_axpy_scalar(a, MR, p0, p1, b, ldb, c, c1, out);
}

/// out_j[0, cols) += sum_{p < depth} a_j[p] b[p, 0, cols) for j < count, with a_j = a_row(j), out_j = out_row(j):
/// panels of b of at most kGatheredPanelEntries entries (kGatheredPanelColumns columns wide), each swept by every
/// row, kGatheredRowBlock rows at a time.
template <class T, class ARow, class OutRow>
void gathered_axpy(ARow a_row, OutRow out_row, Index count, Index depth, const T* b, Index ldb, Index cols) {
  const Index panel_cols = std::min(cols, kGatheredPanelColumns);
  const Index panel_depth = std::max(Index(1), kGatheredPanelEntries / std::max(panel_cols, Index(1)));
  simd_dispatch([&](auto arch) {
    using Arch = decltype(arch);
    for (Index c0 = 0; c0 < cols; c0 += panel_cols) {
      const Index c1 = std::min(cols, c0 + panel_cols);
      for (Index p0 = 0; p0 < depth; p0 += panel_depth) {
        const Index p1 = std::min(depth, p0 + panel_depth);
        Index j = 0;
        const T* a[kGatheredRowBlock] = {};
        T* out[kGatheredRowBlock] = {};
        if constexpr (!std::is_same_v<Arch, xsimd::unavailable>) {
          for (; j + kGatheredRowBlock <= count; j += kGatheredRowBlock) {
            for (Index i = 0; i < kGatheredRowBlock; ++i) {
              a[i] = a_row(j + i);
              out[i] = out_row(j + i);
            }
            gathered_axpy_rows<kGatheredRowBlock, Arch>(a, p0, p1, b, ldb, c0, c1, out);
          }
        }
        for (; j < count; ++j) {
          a[0] = a_row(j);
          out[0] = out_row(j);
          if constexpr (std::is_same_v<Arch, xsimd::unavailable>) {
            gathered_axpy_scalar(a, Index(1), p0, p1, b, ldb, c0, c1, out);
          } else {
            gathered_axpy_rows<1, Arch>(a, p0, p1, b, ldb, c0, c1, out);
          }
        }
      }
    }
  });
}

}  // namespace detail

/// Shrink of listed rows: \f$t_j = x_{\mathrm{rows}[j]} A^\top\f$ for j < count, with x row-major (leading
/// dimension ldx), at = A^T [in x cols] row-major (ld_at), t [count x cols] row-major (ldt, overwritten). A caller
/// may pad A^T with zero columns up to a multiple of 16, so that no scalar tail runs (the padded columns of t come
/// out zero). The listed rows may repeat. No checks (hot loop).
template <class T>
void gathered_project(const T* x, Index ldx, const Index* rows, Index count, const T* at, Index ld_at, Index in,
                      Index cols, T* t, Index ldt) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  for (Index j = 0; j < count; ++j) std::fill(t + j * ldt, t + j * ldt + cols, T(0));
  detail::gathered_axpy<T>([&](Index j) { return x + rows[j] * ldx; }, [&](Index j) { return t + j * ldt; }, count,
                           in, at, ld_at, cols);
}

/// Expand of listed rows: \f$y_{\mathrm{rows}[j]} \mathrel{+}= t_j\,B^\top = \sum_p t_{jp}\,(B^\top)_{p,:}\f$ for
/// j < count, with t [count x r] (ldt), bt = B^T [r x out] row-major (ldb), y row-major (ldy). The scaling of the
/// branch is folded into t by the caller. The listed rows must be distinct. No checks (hot loop).
template <class T>
void gathered_expand_add(const T* t, Index ldt, const Index* rows, Index count, const T* bt, Index ldb, Index r,
                         Index out, T* y, Index ldy) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  detail::gathered_axpy<T>([&](Index j) { return t + j * ldt; }, [&](Index j) { return y + rows[j] * ldy; }, count,
                           r, bt, ldb, out);
}

}  // namespace lorakit
