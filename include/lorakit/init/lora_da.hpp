// LoRA-DA: data-aware initialization of a LoRA adapter from Fisher statistics of its layer (Zhang et al.,
// "LoRA-DA: Data-Aware Initialization for Low-Rank Adaptation via Asymptotic Analysis", arXiv 2510.24561).
//
// FisherStatistics collects, over a calibration pass, the Kronecker-factored Fisher of one linear layer and the
// mean per-sample gradient of its weight; lora_da_initialize turns them into A (the r eigenvectors of the
// guidance matrix with the smallest eigenvalues) and B = D A (not zero). See docs/lora-da.md.
#pragma once

#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/lowrank_products.hpp"
#include "lorakit/kernel/symmetric_eigen.hpp"
#include "lorakit/kernel/symmetric_products.hpp"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>

namespace lorakit {

/// How lora_da_initialize finds the r smallest eigenvectors of the guidance matrix.
enum class LoraDaSolver {
  automatic,  ///< dense when in_features <= LoraDaConfig::dense_max_features, else iterative (dense if it fails)
  dense,      ///< Eigen's SelfAdjointEigenSolver on the formed guidance matrix, O(in^3)
  iterative,  ///< matrix-free block Lanczos (smallest_eigenpairs); dense if it does not converge
};

/// Hyper-parameters of LoRA-DA, named after the paper's symbols where it has them.
struct LoraDaConfig {
  double bias_weight = 1.0;         ///< alpha_b: weight of the bias term -D^T D
  double variance_weight = 0.03;    ///< beta: weight of the variance term (Fisher inverse); 0 drops it
  double num_train_samples = 1e5;   ///< N: samples of the fine-tuning set (the variance term scales as 1/N)
  double damping = 1e-6;            ///< lambda: added to Z's diagonal and to Ybar
  double gamma = 1024;              ///< A = A0^T / sqrt(gamma), B = D A0 / sqrt(gamma)
  /// true: D is the natural gradient -diag(Yinv) G Z^-1 (LoRA-DA). false: D is the raw gradient -G
  /// (the paper's ablation; with variance_weight = 0, A is the top-r right singular vectors of G and B comes from
  /// the same triplets. This is not LoRA-GA, which takes B from the next r triplets and changes W:
  /// init/lora_ga.hpp).
  bool use_natural_gradient = true;
  LoraDaSolver solver = LoraDaSolver::automatic;
  /// Largest in_features for which `automatic` uses the dense eigen-solver (see docs/performance.md).
  Index dense_max_features = 256;
  /// Stopping tolerance of the iterative solver (relative residual of each eigenpair).
  double tolerance = 1e-10;
};

/// What lora_da_initialize computed besides the factors.
struct LoraDaReport {
  double sigma = 0;                ///< largest singular value of the unnormalized D
  Eigen::VectorXd eigenvalues;     ///< the r smallest eigenvalues of Omega, ascending
  bool iterative = false;          ///< the iterative solver produced the result
  bool fell_back_to_dense = false; ///< the iterative solver did not converge and the dense one was used
  Index operator_columns = 0;      ///< vectors the iterative solver applied Omega (and D^T D) to
};

/// Fisher statistics of one linear layer y = W x, accumulated in double over any number of batches:
/// \f[ \textstyle\sum_t x_t x_t^\top\ (in \times in),\qquad \sum_t dy_t \odot dy_t\ (out),\qquad
///     \sum_t dy_t\, x_t^\top\ (out \times in), \f]
/// with the counts of tokens T and samples S, from which LoRA-DA reads the K-FAC factors
/// \f$Z = \frac1T\sum x x^\top + \lambda I\f$, \f$\bar Y = \frac1T \sum dy \odot dy\f$ (diagonal) and the mean
/// per-sample gradient \f$G = \frac1S \sum dy\, x^\top\f$. Two statistics over disjoint data merge into the
/// statistics of their union.
template <class T>
class FisherStatistics {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;

  /// Empty statistics of a layer with `in_features` inputs and `out_features` outputs.
  FisherStatistics(Index in_features, Index out_features) : in_(in_features), out_(out_features) {
    constexpr const char* where = "FisherStatistics::FisherStatistics";
    if (in_features < 1) detail::fail<ValueError>(where, "in_features is ", in_features, ", expected >= 1");
    if (out_features < 1) detail::fail<ValueError>(where, "out_features is ", out_features, ", expected >= 1");
    input_moment_.setZero(in_, in_);
    output_square_.setZero(out_);
    gradient_.setZero(out_, in_);
  }

  /// Statistics from sums computed elsewhere (e.g. by hooks in another framework): `input_moment_sum` =
  /// sum x x^T [in x in] (symmetric), `output_square_sum` = sum dy ⊙ dy [out], `gradient_sum` = sum dy x^T
  /// [out x in], over `tokens` tokens of `samples` samples.
  static FisherStatistics from_sums(Matrix<double> input_moment_sum, Vector<double> output_square_sum,
                                    Matrix<double> gradient_sum, Index tokens, Index samples) {
    constexpr const char* where = "FisherStatistics::from_sums";
    FisherStatistics stats(gradient_sum.cols(), gradient_sum.rows());
    detail::check_shape(where, "input_moment_sum", input_moment_sum.rows(), input_moment_sum.cols(), stats.in_,
                        stats.in_);
    detail::check_rows(where, "output_square_sum", output_square_sum.rows(), stats.out_, "gradient_sum.rows()");
    detail::check_finite(where, "input_moment_sum", input_moment_sum);
    detail::check_finite(where, "output_square_sum", output_square_sum);
    detail::check_finite(where, "gradient_sum", gradient_sum);
    if (tokens < 1) detail::fail<ValueError>(where, "tokens is ", tokens, ", expected >= 1");
    if (samples < 1) detail::fail<ValueError>(where, "samples is ", samples, ", expected >= 1");
    stats.input_moment_ = std::move(input_moment_sum);
    stats.output_square_ = std::move(output_square_sum);
    stats.gradient_ = std::move(gradient_sum);
    stats.tokens_ = tokens;
    stats.samples_ = samples;
    return stats;
  }

  /// Adds one batch: x [tokens x in] are the layer's inputs, dy [tokens x out] the gradients of the loss with
  /// respect to the layer's outputs for those tokens, where the loss is each sample's own loss (not a batch
  /// mean: with a mean over B samples, pass dy * B); `samples` is how many samples the tokens belong to.
  /// Errors: shapes, samples < 1, a non-finite entry (nothing is added then).
  void observe(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, Index samples) {
    constexpr const char* where = "FisherStatistics::observe";
    detail::check_cols(where, "x", x.cols(), in_, "in_features");
    detail::check_cols(where, "dy", dy.cols(), out_, "out_features");
    detail::check_rows(where, "dy", dy.rows(), x.rows(), "x.rows()");
    if (x.rows() < 1) detail::fail<ShapeError>(where, "x has 0 rows, expected a non-empty batch");
    if (samples < 1) detail::fail<ValueError>(where, "samples is ", samples, ", expected >= 1");
    detail::check_finite(where, "x", x);
    detail::check_finite(where, "dy", dy);
    if constexpr (std::is_same_v<T, double>) {
      accumulate(x, dy);
    } else {
      x_double_ = x.template cast<double>();
      dy_double_ = dy.template cast<double>();
      accumulate(x_double_, dy_double_);
    }
    tokens_ += x.rows();
    samples_ += samples;
  }

  /// Adds the statistics of `other` (the same layer, other data). Errors: different layer shapes.
  void merge(const FisherStatistics& other) {
    constexpr const char* where = "FisherStatistics::merge";
    detail::check_shape(where, "other", other.out_, other.in_, out_, in_);
    input_moment_ += other.input_moment_;
    output_square_ += other.output_square_;
    gradient_ += other.gradient_;
    tokens_ += other.tokens_;
    samples_ += other.samples_;
  }

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }
  /// Tokens T observed.
  Index tokens() const { return tokens_; }
  /// Samples S observed.
  Index samples() const { return samples_; }

  /// sum x x^T [in x in].
  const Matrix<double>& input_moment_sum() const { return input_moment_; }
  /// sum dy ⊙ dy [out].
  const Vector<double>& output_square_sum() const { return output_square_; }
  /// sum dy x^T [out x in].
  const Matrix<double>& gradient_sum() const { return gradient_; }

 private:
  template <class X, class DY>
  void accumulate(const X& x, const DY& dy) {
    input_moment_.noalias() += x.transpose() * x;
    add_column_sums_of_product<double>(dy, dy, output_square_);
    gradient_.noalias() += dy.transpose() * x;
  }

  Index in_, out_;
  Index tokens_ = 0, samples_ = 0;
  Matrix<double> input_moment_;   // sum x x^T
  Vector<double> output_square_;  // sum dy^2
  Matrix<double> gradient_;       // sum dy x^T
  Matrix<double> x_double_, dy_double_;  // float input converted to double, sized on first use
};

namespace detail {

/// LoRA-DA's matrices in double, formed once: with Z = L L^T (Cholesky),
/// D = -diag(Yinv) G Z^-1 [out x in] (or -G), the Gram matrix D^T D and Omega' = sigma^2 Omega =
/// -alpha_b D^T D + beta c Z^-1 [in x in], c = sum Yinv / N.
class LoraDaProblem {
 public:
  template <class T>
  LoraDaProblem(const FisherStatistics<T>& stats, const LoraDaConfig& config) {
    constexpr const char* where = "lora_da_initialize";
    const double tokens = static_cast<double>(stats.tokens());
    const double lambda = config.damping;
    const Index n = stats.in_features();
    const Eigen::VectorXd yinv = (stats.output_square_sum().array() / tokens + lambda).inverse().matrix();
    for (Index j = 0; j < yinv.size(); ++j) {
      if (!std::isfinite(yinv(j))) {
        fail<ValueError>(where, "output ", j, " has a zero gradient second moment Ybar and damping is ", lambda,
                         ", so Yinv = 1 / (Ybar + damping) is infinite; expected damping > 0");
      }
    }
    const double c = yinv.sum() / config.num_train_samples;
    const bool needs_z = config.use_natural_gradient || config.variance_weight != 0;
    Eigen::MatrixXd z_inverse;
    if (needs_z) {
      Eigen::MatrixXd Z = stats.input_moment_sum() / tokens;
      Z.diagonal().array() += lambda;
      const Eigen::LLT<Eigen::MatrixXd> llt(Z);
      if (llt.info() != Eigen::Success) {
        fail<ValueError>(where, "the input second moment Z = (1/T) sum x x^T + damping I is not positive definite "
                                "(damping = ", lambda, ", T = ", stats.tokens(), ", in_features = ", n,
                         "); expected a larger damping or more tokens than input features");
      }
      // Z^-1 once (blocked, from the Cholesky factor); D = -diag(Yinv) G Z^-1 is then one product.
      z_inverse = cholesky_inverse(llt);
    }
    // G = (1/S) sum dy x^T: the 1/S is folded into the row scaling of D.
    const double per_sample = 1.0 / static_cast<double>(stats.samples());
    if (config.use_natural_gradient) {
      D_.noalias() = stats.gradient_sum() * z_inverse;
      D_ = (-per_sample * yinv).asDiagonal() * D_;
    } else {
      D_ = -per_sample * stats.gradient_sum();
    }
    gram_of_rows(D_.transpose(), gram_);  // D^T D
    omega_ = -config.bias_weight * gram_;
    if (config.variance_weight != 0) omega_ += (config.variance_weight * c) * z_inverse;
  }
  /// D [out x in] (not normalized).
  const Eigen::MatrixXd& D() const { return D_; }
  /// D^T D [in x in].
  const Eigen::MatrixXd& gram() const { return gram_; }
  /// Omega' = sigma^2 Omega [in x in], symmetric.
  const Eigen::MatrixXd& omega() const { return omega_; }

 private:
  Eigen::MatrixXd D_, gram_, omega_;
};

inline void validate_lora_da_config(const char* where, const LoraDaConfig& c) {
  auto finite_at_least = [&](const char* name, double value, double lo, bool strict) {
    if (!std::isfinite(value) || (strict ? !(value > lo) : !(value >= lo))) {
      fail<ValueError>(where, "config.", name, " is ", value, ", expected a finite value ", strict ? "> " : ">= ", lo);
    }
  };
  finite_at_least("bias_weight", c.bias_weight, 0, false);
  finite_at_least("variance_weight", c.variance_weight, 0, false);
  finite_at_least("num_train_samples", c.num_train_samples, 0, true);
  finite_at_least("damping", c.damping, 0, false);
  finite_at_least("gamma", c.gamma, 0, true);
  finite_at_least("tolerance", c.tolerance, 0, true);
  if (c.bias_weight == 0 && c.variance_weight == 0) {
    fail<ValueError>(where, "config.bias_weight and config.variance_weight are both 0, expected at least one > 0");
  }
}

}  // namespace detail

/// LoRA-DA initialization (Zhang et al., arXiv 2510.24561) of `adapter` from the statistics of its layer.
/// In double, with T tokens, S samples, damping \f$\lambda\f$:
/// \f[ Z = \tfrac1T \textstyle\sum x x^\top + \lambda I,\quad Y^{-1} = 1 / (\tfrac1T \sum dy \odot dy + \lambda),\quad
///     G = \tfrac1S \sum dy\, x^\top, \f]
/// 1. \f$D = -\mathrm{diag}(Y^{-1})\, G\, Z^{-1}\f$ (the natural gradient, by a Cholesky solve; with
///    `use_natural_gradient = false`, \f$D = -G\f$);
/// 2. \f$\sigma = \|D\|_2\f$, \f$D \leftarrow D/\sigma\f$;
/// 3. \f$\Omega = -\alpha_b D^\top D + \beta\, (\sum_i Y^{-1}_i / N) / \sigma^2\, Z^{-1}\f$;
/// 4. \f$A_0\f$ = the r eigenvectors of \f$\Omega\f$ with the smallest eigenvalues;
/// 5. \f$A = A_0^\top / \sqrt\gamma\f$, \f$B = D A_0 / \sqrt\gamma\f$. The base weight is not changed.
///
/// Formed once, in double: \f$Z^{-1}\f$ from the Cholesky factor (`cholesky_inverse`, n^3/3 + n^3/3
/// operations by blocked GEMMs), D (one GEMM), \f$D^\top D\f$ (`gram_of_rows`) and
/// \f$\sigma^2 \Omega\f$. On the iterative path (above `dense_max_features`), \f$\sigma^2\f$ is the largest
/// eigenvalue of \f$D^\top D\f$ and \f$A_0\f$ the smallest eigenvectors of \f$\sigma^2 \Omega\f$, both by block
/// Lanczos (`smallest_eigenpairs`) with products of those dense matrices and blocks of vectors: every
/// Lanczos product is then one GEMM, where a matrix-free operator (triangular solves for \f$Z^{-1} X\f$, products
/// with G and G^T) would cost three per block and, over the hundreds of vectors Lanczos applies, more than forming.
/// Errors: the adapter's shape differs from the statistics', no tokens seen, a bad config value, Z not
/// positive definite, a zero G. The adapter is written only after everything succeeded, in place (its A and B keep
/// their storage, so `parameters()` views and an optimizer built on them stay valid).
template <class T>
LoraDaReport lora_da_initialize(Lora<T>& adapter, const FisherStatistics<T>& stats, const LoraDaConfig& config = {}) {
  constexpr const char* where = "lora_da_initialize";
  detail::check_shape(where, "the adapter", adapter.out_features(), adapter.in_features(), stats.out_features(),
                      stats.in_features());
  if (stats.tokens() < 1) detail::fail<StateError>(where, "the statistics have seen 0 tokens, expected >= 1 (call observe)");
  detail::validate_lora_da_config(where, config);
  const Index r = adapter.rank();
  const Index n = stats.in_features();
  const detail::LoraDaProblem problem(stats, config);

  LoraDaReport report;
  Eigen::MatrixXd A0;
  double sigma2 = 0;
  const bool iterative = config.solver == LoraDaSolver::iterative ||
                         (config.solver == LoraDaSolver::automatic && n > config.dense_max_features);
  if (iterative) {
    SymmetricEigenOptions options;
    options.tolerance = config.tolerance;
    // sigma^2 = the largest eigenvalue of D^T D = minus the smallest of -D^T D.
    const auto gram = smallest_eigenpairs(
        [&](const Eigen::Ref<const Eigen::MatrixXd>& X, Eigen::Ref<Eigen::MatrixXd> Y) {
          Y.noalias() = -(problem.gram() * X);
        },
        n, 1, options);
    const auto guidance = smallest_eigenpairs(
        [&](const Eigen::Ref<const Eigen::MatrixXd>& X, Eigen::Ref<Eigen::MatrixXd> Y) {
          Y.noalias() = problem.omega() * X;
        },
        n, r, options);
    report.operator_columns = gram.applied_columns + guidance.applied_columns;
    if (gram.converged && guidance.converged) {
      report.iterative = true;
      sigma2 = -gram.values(0);
      A0 = guidance.vectors;
      report.eigenvalues = guidance.values;
    } else {
      report.fell_back_to_dense = true;
    }
  }
  if (!report.iterative) {
    const Eigen::VectorXd singular = Eigen::BDCSVD<Eigen::MatrixXd>(problem.D()).singularValues();
    sigma2 = singular.size() > 0 ? singular(0) * singular(0) : 0.0;
    const auto guidance = smallest_eigenpairs_dense(problem.omega(), r);
    A0 = guidance.vectors;
    report.eigenvalues = guidance.values;
  }
  if (!(sigma2 > 0) || !std::isfinite(sigma2)) {
    detail::fail<ValueError>(where, "the gradient statistics give D = 0 (sigma = ", std::sqrt(std::max(sigma2, 0.0)),
                             "), expected a nonzero mean gradient G");
  }
  report.sigma = std::sqrt(sigma2);
  report.eigenvalues /= sigma2;
  const double scale = 1.0 / std::sqrt(config.gamma);
  Matrix<T> A = (A0.transpose() * scale).template cast<T>();
  Matrix<T> B = (problem.D() * A0 * (scale / report.sigma)).template cast<T>();
  detail::check_finite(where, "A", A);
  detail::check_finite(where, "B", B);
  adapter.A() = A;  // copied into the adapter's own storage (same shapes): Parameter views stay valid
  adapter.B() = B;
  return report;
}

}  // namespace lorakit
