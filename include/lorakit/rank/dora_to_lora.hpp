// DoRA adapters as plain LoRA adapters with the same update, for formats and runtimes that know only LoRA
// (llama.cpp's GGUF adapters cannot apply DoRA's magnitude): exact, at a rank that grows with the rows whose
// magnitude differs from their norm.
#pragma once

#include "lorakit/adapter/adapted_linear.hpp"
#include "lorakit/adapter/dora.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"

#include <cmath>
#include <vector>

namespace lorakit {

/// The LoRA adapter whose update equals DoRA's merged update on the base weight W (stored in `layout`):
/// \f[ \Delta W = c \odot (W + s B A) - W = s\,(c \odot B) A + \mathrm{diag}(c - 1)\, W,\qquad c = m / \lVert W + s B A\rVert, \f]
/// written as \f$s\,B' A'\f$ with \f$A' = [A;\ W_K]\f$ and \f$B' = [c \odot B,\ E_K \mathrm{diag}((c_K - 1)/s)]\f$,
/// where K are the rows with \f$|c_j - 1| > \f$ `tolerance` and \f$E_K\f$ their unit columns: a LoRA of rank
/// r + |K| with DoRA's scaling s (alpha recomputed for the new rank). It is exact (up to rounding) with
/// `tolerance` = 0; it has DoRA's rank r exactly when every magnitude equals its row norm (c = 1: a fresh
/// adapter, or one whose magnitude was never trained), and then B' = B (in float the magnitudes are the norms
/// rounded to float: pass a tolerance of a few float epsilons). When most rows changed, |K| approaches
/// out and merging (`AdaptedLinear::merge`) is the better export. A tolerance > 0 drops the rows with
/// \f$|c_j - 1| \le\f$ tolerance, an error of \f$|c_j - 1|\,\lVert W_j + s B_j A\rVert\f$ in their row.
/// Errors: W of the wrong shape (ShapeError); a row of W + s B A with norm 0, a negative or non-finite
/// tolerance (ValueError).
template <class T>
Lora<T> dora_as_lora(const Dora<T>& dora, const ConstMatrixRef<typename Dora<T>::Scalar>& W,
                     WeightLayout layout = WeightLayout::out_by_in,
                     double tolerance = 0) {
  constexpr const char* where = "dora_as_lora";
  if (!(tolerance >= 0 && std::isfinite(tolerance))) {
    detail::fail<ValueError>(where, "tolerance is ", tolerance, ", expected a finite value >= 0");
  }
  const Index in = dora.in_features(), out = dora.out_features(), r = dora.rank();
  const bool transposed = layout == WeightLayout::in_by_out;
  detail::check_shape(where, "W", W.rows(), W.cols(), transposed ? in : out, transposed ? out : in);
  const Matrix<T> Wo = transposed ? Matrix<T>(W.transpose()) : Matrix<T>(W);
  const double s = static_cast<double>(dora.scaling());
  const Matrix<double> sum = Wo.template cast<double>() + s * dora.B().template cast<double>() * dora.A().template cast<double>();
  const Vector<double> norm = sum.rowwise().norm();
  std::vector<Index> changed;
  Vector<double> c(out);
  for (Index j = 0; j < out; ++j) {
    if (!(norm(j) > 0)) detail::fail<ValueError>(where, "row ", j, " of W + s B A has norm ", norm(j));
    c(j) = static_cast<double>(dora.magnitude()(j)) / norm(j);
    if (std::abs(c(j) - 1) > tolerance) changed.push_back(j);
  }
  const Index k = static_cast<Index>(changed.size());
  Matrix<T> A(r + k, in), B = Matrix<T>::Zero(out, r + k);
  A.topRows(r) = dora.A();
  B.leftCols(r) = (c.asDiagonal() * dora.B().template cast<double>()).template cast<T>();
  for (Index i = 0; i < k; ++i) {
    const Index j = changed[static_cast<std::size_t>(i)];
    A.row(r + i) = Wo.row(j);
    B(j, r + i) = static_cast<T>((c(j) - 1) / s);
  }
  LoraConfig config = dora.config();
  config.rank = r + k;
  config.alpha = alpha_for_scaling(s, r + k, config.use_rslora);
  config.init = LoraInit::zeros;
  return Lora<T>::from_factors(std::move(A), std::move(B), config);
}

}  // namespace lorakit
