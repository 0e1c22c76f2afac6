// Weight-driven initializations that move the principal part of W into the adapter: PiSSA (Meng, Wang, Zhang,
// "PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large Language Models", NeurIPS 2024) and
// OLoRA (Büyükakyüz, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models", 2024), as PEFT's
// `init_lora_weights = "pissa" | "pissa_niter_N" | "olora"` (src/peft/tuners/lora/layer.py: pissa_init,
// olora_init), and PEFT's conversion of such an adapter back to a plain LoRA on the original weight.
#pragma once

#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/randomized_svd.hpp"
#include "lorakit/kernel/svd.hpp"
#include "lorakit/rank/squeeze.hpp"

#include <Eigen/QR>
#include <Eigen/SVD>

#include <cmath>

namespace lorakit {

namespace detail {
/// Keeps a parameter out of template argument deduction (std::type_identity of C++20), so that a `Matrix<T>` binds
/// to an `Eigen::Ref<Matrix<T>>` argument with T deduced from the adapter alone.
template <class U>
struct non_deduced {
  using type = U;
};
template <class U>
using non_deduced_t = typename non_deduced<U>::type;

/// The checks both initializations share, before anything changes: W is the adapter's [out x in] and finite, the
/// rank fits min(in, out), the scaling is positive.
template <class T>
void check_weight_initialization(const char* where, const Lora<T>& adapter, const ConstMatrixRef<T>& W) {
  check_shape(where, "W", W.rows(), W.cols(), adapter.out_features(), adapter.in_features());
  check_finite(where, "W", W);
  const Index limit = std::min(adapter.in_features(), adapter.out_features());
  if (adapter.rank() > limit) {
    fail<ValueError>(where, "the adapter's rank is ", adapter.rank(), ", expected at most min(in, out) = ", limit,
                     " (W has only that many principal directions)");
  }
  if (!(adapter.scaling() > T(0))) {
    fail<ValueError>(where, "the adapter's scaling is ", static_cast<double>(adapter.scaling()), ", expected > 0");
  }
}

/// Writes A, B into the adapter (in place: Parameter views stay valid) and W -= s B A, once all are finite.
template <class T>
void install_weight_split(const char* where, Lora<T>& adapter, const Matrix<T>& A, const Matrix<T>& B,
                          MatrixRef<T> W) {
  Matrix<T> residual = W;
  residual.noalias() -= (adapter.scaling() * B) * A;
  check_finite(where, "A", A);
  check_finite(where, "B", B);
  check_finite(where, "the residual W - s B A", residual);
  adapter.A() = A;
  adapter.B() = B;
  W = residual;
}
}  // namespace detail

/// PiSSA: the top-r singular triplets of W [out x in] become the adapter, the rest stays in W:
/// \f[ W = U \Sigma V^\top,\quad A = \mathrm{diag}\big(\sqrt{\Sigma_r / s}\big) V_r^\top,\quad
///     B = U_r\, \mathrm{diag}\big(\sqrt{\Sigma_r / s}\big),\quad W \leftarrow W - s B A, \f]
/// with s the adapter's scaling, exactly as PEFT's `pissa_init` (the singular values divided by the scaling, their
/// square roots on both sides). W + s B A is unchanged, so the layer's output is unchanged at step 0 (up to
/// rounding). `power_iterations` = -1: the exact SVD (Eigen's BDCSVD, in double); N >= 0: PEFT's
/// `"pissa_niter_N"`, a randomized SVD with N power iterations and a sketch of exactly r columns
/// (`torch.svd_lowrank(W, r, niter=N)`; `randomized_svd` with no oversampling).
///
/// W is the base weight as the layer holds it [out x in] (for a Conv1D-style [in x out] weight pass its transpose
/// view). It is not deduced: `pissa_initialize(lora, W)` compiles with a plain `Matrix<T>`.
/// Errors (nothing changes): W not [out x in] (ShapeError); NaN or Inf in W, a rank above min(in, out), a scaling
/// <= 0, power_iterations < -1 (ValueError).
template <class T>
void pissa_initialize(Lora<T>& adapter, detail::non_deduced_t<Eigen::Ref<Matrix<T>>> W, int power_iterations = -1) {
  constexpr const char* where = "pissa_initialize";
  detail::check_weight_initialization<T>(where, adapter, W);
  if (power_iterations < -1) {
    detail::fail<ValueError>(where, "power_iterations is ", power_iterations, ", expected -1 (exact SVD) or >= 0");
  }
  const Index r = adapter.rank();
  Svd<T> svd;
  if (power_iterations < 0) {
    const Eigen::MatrixXd dense = W.template cast<double>();
    const Eigen::BDCSVD<Eigen::MatrixXd> exact(dense, Eigen::ComputeThinU | Eigen::ComputeThinV);
    svd = detail::make_svd<T>(exact.matrixU().template cast<T>(), exact.singularValues().template cast<T>(),
                                      exact.matrixV().template cast<T>(), r);
  } else {
    svd = randomized_svd<T>(W, r, RsvdOptions{0, power_iterations, 0});
  }
  const Vector<T> root = (svd.S / adapter.scaling()).cwiseSqrt();
  const Matrix<T> A = root.asDiagonal() * svd.V.transpose();
  const Matrix<T> B = svd.U * root.asDiagonal();
  detail::install_weight_split<T>(where, adapter, A, B, W);
}

/// OLoRA: the thin QR of W [out x in] (Householder, in double), W = Q R, gives
/// \f[ B = Q_{:, :r},\quad A = R_{:r, :},\quad W \leftarrow W - s B A, \f]
/// exactly as PEFT's `olora_init` (no division by the scaling: B has orthonormal columns, A is the leading rows of
/// an upper-trapezoidal R). W + s B A is unchanged. Errors: as `pissa_initialize`.
template <class T>
void olora_initialize(Lora<T>& adapter, detail::non_deduced_t<Eigen::Ref<Matrix<T>>> W) {
  constexpr const char* where = "olora_initialize";
  detail::check_weight_initialization<T>(where, adapter, W);
  const Index r = adapter.rank();
  const Eigen::MatrixXd dense = W.template cast<double>();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(dense);
  const Eigen::MatrixXd Q = qr.householderQ() * Eigen::MatrixXd::Identity(W.rows(), r);
  const Matrix<T> A = qr.matrixQR().topRows(r).template triangularView<Eigen::Upper>().toDenseMatrix().template cast<T>();
  const Matrix<T> B = Q.cast<T>();
  detail::install_weight_split<T>(where, adapter, A, B, W);
}

/// PEFT's conversion of a trained PiSSA or OLoRA adapter into a plain LoRA on the *original* weight
/// (`save_pretrained(path_initial_model_for_weight_conversion=...)`): with the adapter as initialized (A0, B0) and as
/// trained (A, B), the residual weight satisfies \f$W_{res} + s B_0 A_0 = W\f$, so
/// \f[ W_{res} + s B A = W + s\,(B A - B_0 A_0) = W + s\,[B,\ -B_0]\,[A;\ A_0], \f]
/// a LoRA of rank 2r with A' = [A; A0], B' = [B, -B0] and the same scaling: alpha doubles (times sqrt(2) with
/// rsLoRA), as PEFT writes it. Errors: the two adapters differ in shape, rank or scaling config (ValueError).
template <class T>
Lora<T> pissa_to_lora(const Lora<T>& trained, const Lora<T>& initial) {
  constexpr const char* where = "pissa_to_lora";
  if (trained.in_features() != initial.in_features() || trained.out_features() != initial.out_features() ||
      trained.rank() != initial.rank() || trained.config().alpha != initial.config().alpha ||
      trained.config().use_rslora != initial.config().use_rslora) {
    detail::fail<ValueError>(where, "trained is [", trained.out_features(), " x ", trained.in_features(), "] rank ",
                             trained.rank(), " alpha ", trained.config().alpha, ", initial is [", initial.out_features(),
                             " x ", initial.in_features(), "] rank ", initial.rank(), " alpha ", initial.config().alpha,
                             ", expected the same adapter before and after training");
  }
  const Index r = trained.rank();
  Matrix<T> A(2 * r, trained.in_features()), B(trained.out_features(), 2 * r);
  A << trained.A(), initial.A();
  B << trained.B(), -initial.B();
  LoraConfig config = trained.config();
  config.rank = 2 * r;
  config.alpha = alpha_for_scaling(lora_scaling(trained.config().alpha, r, config.use_rslora), 2 * r, config.use_rslora);
  return Lora<T>::from_factors(std::move(A), std::move(B), config);
}

/// lorakit's compressed conversion: the rank-2r LoRA of `pissa_to_lora` squeezed to `rank` by the exact factored
/// SVD (`squeeze`: Eckart-Young, the best rank-`rank` approximation of the update), and the share of the update's
/// energy \f$\sum_{j \le k}\sigma_j^2 / \sum_j \sigma_j^2\f$ that it keeps.
template <class T>
struct CompressedLora {
  Lora<T> adapter;
  double kept_energy;
};

/// Errors: those of `pissa_to_lora`; rank outside [1, 2r] (ValueError).
template <class T>
CompressedLora<T> pissa_to_lora(const Lora<T>& trained, const Lora<T>& initial, Index rank) {
  const Lora<T> full = pissa_to_lora(trained, initial);
  Lora<T> compressed = squeeze(full, rank);
  const Vector<double> squares = update_singular_values(full).template cast<double>().array().square();
  const double total = squares.sum();
  return {std::move(compressed), total > 0 ? squares.head(rank).sum() / total : 1.0};
}

}  // namespace lorakit
