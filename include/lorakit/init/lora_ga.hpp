// LoRA-GA: an adapter initialized from the SVD of its layer's first-step gradient, so that the first LoRA step
// moves the weight along the full fine-tuning step (Wang, Yu, Li, "LoRA-GA: Low-Rank Adaptation with Gradient
// Approximation", NeurIPS 2024, arXiv 2407.05000), as PEFT's `init_lora_weights = "lora_ga"` defines it
// (src/peft/tuners/lora/layer.py: LoraLayer.lora_ga_init; src/peft/tuners/lora/loraga.py: estimate_gradients;
// LoraGAConfig in config.py), with the authors' reference form (github.com/Outsider565/LoRA-GA) as an option.
//
// LoraGaGradient averages the layer's weight gradient over the calibration batches; lora_ga_initialize splits its
// top 2r singular triplets between A and B and moves s B A out of W, so the layer's output is unchanged at step 0.
// See docs/lora-ga.md.
#pragma once

#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/init/pissa.hpp"
#include "lorakit/kernel/randomized_svd.hpp"
#include "lorakit/kernel/svd.hpp"

#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace lorakit {

/// Which of the gradient's top 2r singular triplets (0-based, descending) become A's rows and B's columns
/// (PEFT's `LoraGAConfig.direction`).
enum class LoraGaDirection {
  arb2r,   ///< "ArB2r" (the default): A the triplets [0, r), B the triplets [r, 2r)
  a2rbr,   ///< "A2rBr": A the triplets [r, 2r), B the triplets [0, r)
  arbr,    ///< "ArBr": A the odd triplets 1, 3, ..., 2r-1; B the even ones 0, 2, ..., 2r-2
  random,  ///< "random": drawn from `LoraGaConfig::seed` (see LoraGaVariant for how each form draws them)
};

/// How the factors are scaled after the split (PEFT's `LoraGAConfig.scale`; the reference's names in brackets).
enum class LoraGaScale {
  stable,      ///< "stable": by out^(1/4) / sqrt(stable_gamma)
  weight_svd,  ///< "weight_svd" ["weightS"]: by the base weight's singular values
  gd,          ///< "gd_scale" ["gd"]: A and B divided by the scaling s
  unit,        ///< "unit": no scaling
};

/// Which definition of the factors: PEFT's (what `init_lora_weights = "lora_ga"` produces) or the authors'
/// reference implementation's (the paper's Theorem: orthonormal factors).
enum class LoraGaVariant {
  /// PEFT's `lora_ga_init`: A = V_a^T, B = U_b diag(S_b) (B carries the gradient's singular values);
  /// "stable" scales B only, by out^(1/4)/sqrt(gamma); "weight_svd" scales B by sigma_1(W) / S_b[0];
  /// "random" takes the same r indices (the first r of a permutation of 0..2r-1) for A and B.
  peft,
  /// The reference implementation: A = V_a^T, B = U_b (orthonormal); "stable" scales both by
  /// out^(1/4)/sqrt(gamma); "weightS" scales both by mean_{i<r} sqrt(sigma_i(W) / s); "random" gives A the first r
  /// and B the last r indices of a permutation of 0..2r-1.
  reference,
};

/// Settings of lora_ga_initialize, PEFT's `LoraGAConfig` defaults.
struct LoraGaConfig {
  LoraGaDirection direction = LoraGaDirection::arb2r;
  LoraGaScale scale = LoraGaScale::stable;
  double stable_gamma = 16;  ///< gamma of the "stable" scale (> 0)
  LoraGaVariant variant = LoraGaVariant::peft;
  /// -1: the exact SVD of the gradient (Eigen's BDCSVD, in double) and, for "weight_svd", the exact singular values
  /// of W. N >= 0: randomized SVDs as PEFT's `torch.svd_lowrank(grad, q = min(4r, min(out, in)), niter = N)`
  /// (PEFT uses N = 4) and `torch.svd_lowrank(W, q, niter = N)` with q = r (PEFT) or min(4r, min(out, in))
  /// (reference).
  int power_iterations = -1;
  /// Seeds the randomized SVDs' test matrices (`lorakit::Rng`, stream 0) and the "random" direction (stream 1).
  std::uint64_t seed = 0;
};

/// What lora_ga_initialize used besides the factors.
struct LoraGaReport {
  Eigen::VectorXd singular_values;  ///< the gradient's top 2r singular values, descending
  std::vector<Index> a_indices;     ///< the triplets whose right singular vectors are A's rows, in row order
  std::vector<Index> b_indices;     ///< the triplets whose left singular vectors are B's columns, in column order
  double a_factor = 1;              ///< what A was multiplied by after the split
  double b_factor = 1;              ///< what B was multiplied by after the split (and, in PEFT's form, diag(S_b))
};

/// The mean weight gradient of one linear layer y = x W^T over calibration batches, accumulated in double:
/// \f[ G = \frac{1}{n_b} \sum_{b=1}^{n_b} dy_b^\top x_b \quad [out \times in], \f]
/// one term per backward pass, as PEFT's `estimate_gradients` averages `weight.grad` over the backward passes of
/// its `train_step` (so with a batch-mean loss, dy already carries the 1/batch factor). Two accumulators over
/// disjoint batches merge into the accumulator of their union.
template <class T>
class LoraGaGradient {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;

  /// An empty accumulator of a layer with `in_features` inputs and `out_features` outputs. Errors (ValueError):
  /// either < 1.
  LoraGaGradient(Index in_features, Index out_features) : in_(in_features), out_(out_features) {
    constexpr const char* where = "LoraGaGradient::LoraGaGradient";
    if (in_features < 1) detail::fail<ValueError>(where, "in_features is ", in_features, ", expected >= 1");
    if (out_features < 1) detail::fail<ValueError>(where, "out_features is ", out_features, ", expected >= 1");
    sum_.setZero(out_, in_);
  }

  /// An accumulator from a sum computed elsewhere (hooks in another framework, a cache file): `gradient_sum` =
  /// sum_b dy_b^T x_b [out x in] over `batches` backward passes. Errors: an empty or non-finite sum, batches < 1
  /// (ShapeError, ValueError).
  static LoraGaGradient from_sum(Matrix<double> gradient_sum, Index batches) {
    constexpr const char* where = "LoraGaGradient::from_sum";
    if (gradient_sum.size() == 0) {
      detail::fail<ShapeError>(where, "gradient_sum is [", gradient_sum.rows(), " x ", gradient_sum.cols(),
                               "], expected a non-empty [out x in] matrix");
    }
    detail::check_finite(where, "gradient_sum", gradient_sum);
    if (batches < 1) detail::fail<ValueError>(where, "batches is ", batches, ", expected >= 1");
    LoraGaGradient out(gradient_sum.cols(), gradient_sum.rows());
    out.sum_ = std::move(gradient_sum);
    out.batches_ = batches;
    return out;
  }

  /// Adds one backward pass: x [tokens x in] are the layer's inputs, dy [tokens x out] the gradient of the loss
  /// with respect to its outputs. Errors: shapes, an empty batch (ShapeError), a non-finite entry (ValueError);
  /// nothing is added then.
  void observe(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    constexpr const char* where = "LoraGaGradient::observe";
    detail::check_cols(where, "x", x.cols(), in_, "in_features");
    detail::check_cols(where, "dy", dy.cols(), out_, "out_features");
    detail::check_rows(where, "dy", dy.rows(), x.rows(), "x.rows()");
    if (x.rows() < 1) detail::fail<ShapeError>(where, "x has 0 rows, expected a non-empty batch");
    detail::check_finite(where, "x", x);
    detail::check_finite(where, "dy", dy);
    if constexpr (std::is_same_v<T, double>) {
      sum_.noalias() += dy.transpose() * x;
    } else {
      sum_.noalias() += dy.template cast<double>().transpose() * x.template cast<double>();
    }
    ++batches_;
  }

  /// Adds the batches of `other` (the same layer, other data). Errors (ShapeError): another layer shape.
  void merge(const LoraGaGradient& other) {
    detail::check_shape("LoraGaGradient::merge", "other", other.out_, other.in_, out_, in_);
    sum_ += other.sum_;
    batches_ += other.batches_;
  }

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }
  /// Backward passes observed.
  Index batches() const { return batches_; }
  /// sum_b dy_b^T x_b [out x in].
  const Matrix<double>& sum() const { return sum_; }
  /// G = sum / batches. Errors (StateError): no batch observed.
  Matrix<double> mean() const {
    if (batches_ < 1) {
      detail::fail<StateError>("LoraGaGradient::mean", "no batch observed, expected >= 1 (call observe)");
    }
    return sum_ / static_cast<double>(batches_);
  }

 private:
  Index in_, out_;
  Index batches_ = 0;
  Matrix<double> sum_;
};

namespace detail {

inline void validate_lora_ga_config(const char* where, const LoraGaConfig& config) {
  if (!std::isfinite(config.stable_gamma) || !(config.stable_gamma > 0)) {
    fail<ValueError>(where, "config.stable_gamma is ", config.stable_gamma, ", expected a finite value > 0");
  }
  if (config.power_iterations < -1) {
    fail<ValueError>(where, "config.power_iterations is ", config.power_iterations,
                     ", expected -1 (exact SVD) or >= 0");
  }
}

/// The top k singular triplets of a (in double): Eigen's BDCSVD, or the randomized SVD with a sketch of `sketch`
/// columns and N power iterations. Signs follow `Svd`'s convention.
template <class = void>  // a template: compiled only in the units that call it (docs/getting-started.md, "Build time")
Svd<double> top_triplets(const Matrix<double>& a, Index k, Index sketch, int power_iterations,
                         std::uint64_t seed) {
  if (power_iterations < 0) {
    const Eigen::BDCSVD<Eigen::MatrixXd> exact(a, Eigen::ComputeThinU | Eigen::ComputeThinV);
    return detail::make_svd<double>(exact.matrixU(), exact.singularValues(), exact.matrixV(), k);
  }
  return randomized_svd<double>(a, k, RsvdOptions{std::max<Index>(sketch - k, 0), power_iterations, seed});
}

/// The top k singular values of W (values only when exact).
template <class T>
Eigen::VectorXd top_singular_values(const ConstMatrixRef<T>& W, Index k, Index sketch, int power_iterations,
                                    std::uint64_t seed) {
  const Matrix<double> dense = W.template cast<double>();
  if (power_iterations < 0) return Eigen::BDCSVD<Eigen::MatrixXd>(dense).singularValues().head(k);
  return randomized_svd<double>(dense, k, RsvdOptions{std::max<Index>(sketch - k, 0), power_iterations, seed}).S;
}

/// A's and B's triplet indices for a direction (LoraGaDirection, LoraGaVariant).
inline std::pair<std::vector<Index>, std::vector<Index>> lora_ga_indices(const LoraGaConfig& config, Index r) {
  std::vector<Index> a(static_cast<std::size_t>(r)), b(static_cast<std::size_t>(r));
  for (Index j = 0; j < r; ++j) {
    const auto i = static_cast<std::size_t>(j);
    switch (config.direction) {
      case LoraGaDirection::arb2r: a[i] = j; b[i] = r + j; break;
      case LoraGaDirection::a2rbr: a[i] = r + j; b[i] = j; break;
      case LoraGaDirection::arbr: a[i] = 2 * j + 1; b[i] = 2 * j; break;
      case LoraGaDirection::random: break;
    }
  }
  if (config.direction == LoraGaDirection::random) {
    // A uniform permutation of 0..2r-1 (Fisher-Yates on lorakit's generator).
    std::vector<Index> order(static_cast<std::size_t>(2 * r));
    std::iota(order.begin(), order.end(), Index(0));
    Rng rng(config.seed, 1);
    for (Index i = 2 * r - 1; i > 0; --i) {
      const auto j = std::min<Index>(static_cast<Index>(rng.uniform<double>() * static_cast<double>(i + 1)), i);
      std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
    }
    const bool shared = config.variant == LoraGaVariant::peft;
    std::copy(order.begin(), order.begin() + r, a.begin());
    std::copy(order.begin() + (shared ? 0 : r), order.begin() + (shared ? r : 2 * r), b.begin());
  }
  return {std::move(a), std::move(b)};
}

}  // namespace detail

/// LoRA-GA (Wang et al., arXiv 2407.05000) of `adapter` from the mean gradient G [out x in] of its layer's weight
/// (W = the base weight [out x in], before any LoRA step), as PEFT's `lora_ga_init`. With the top 2r singular
/// triplets \f$G \approx U S V^\top\f$ (in double), a the r indices of A and b those of B (LoraGaDirection),
/// s the adapter's scaling and \f$\zeta = out^{1/4} / \sqrt{\gamma}\f$:
/// \f[ A = V_{:,a}^\top,\qquad B = U_{:,b}\,\mathrm{diag}(S_b)\ \text{(PEFT)}\ \text{or}\ B = U_{:,b}
///     \ \text{(reference)},\qquad W \leftarrow W - s\,B A, \f]
/// then the scale: "stable" B *= \f$\zeta\f$ (PEFT) or A, B *= \f$\zeta\f$ (reference); "weight_svd"
/// B *= \f$\sigma_1(W) / S_{b_0}\f$ when \f$S_{b_0} > 0\f$ (PEFT) or A, B *= \f$\frac1r \sum_{i<r}
/// \sqrt{\sigma_i(W)/s}\f$ (reference "weightS"); "gd" A, B /= s; "unit" nothing. W is changed after the scale,
/// by the factors as stored in T, so W + s B A, and the layer's output, is unchanged at step 0 (up to rounding).
///
/// Why (the paper's Theorem 3.1, exact in the reference form): one SGD step of rate \f$\eta\f$ on A and B moves
/// the effective weight by \f$-\eta s^2 (B B^\top G + G A^\top A) + O(\eta^2)\f$; with orthonormal A^T and B from
/// G's own singular vectors and the "gd" scale that is \f$-\eta\,G_{2r}\f$ (ArB2r, A2rBr, ArBr), the full
/// fine-tuning step restricted to G's best rank-2r approximation.
///
/// Errors, with nothing changed: W or G not [out x in] (ShapeError); NaN or Inf in W or G, a zero G, 2r above
/// min(in, out), a scaling <= 0, stable_gamma not finite and > 0, power_iterations < -1 (ValueError).
/// A and B are written in place (Parameter views stay valid).
template <class T>
LoraGaReport lora_ga_initialize(Lora<T>& adapter, detail::non_deduced_t<Eigen::Ref<Matrix<T>>> W,
                                const ConstMatrixRef<double>& gradient, const LoraGaConfig& config = {}) {
  constexpr const char* where = "lora_ga_initialize";
  detail::check_weight_initialization<T>(where, adapter, W);
  detail::check_shape(where, "gradient", gradient.rows(), gradient.cols(), adapter.out_features(),
                      adapter.in_features());
  detail::check_finite(where, "gradient", gradient);
  detail::validate_lora_ga_config(where, config);
  const Index r = adapter.rank(), out = adapter.out_features();
  const Index limit = std::min(adapter.in_features(), out);
  if (2 * r > limit) {
    detail::fail<ValueError>(where, "the adapter's rank is ", r, ", expected 2r <= min(in, out) = ", limit,
                             " (A and B take 2r distinct singular triplets of the gradient)");
  }
  if (gradient.isZero(0)) {
    detail::fail<ValueError>(where, "the gradient is zero, expected a nonzero mean gradient (observe batches with "
                                    "a nonzero loss gradient)");
  }
  const bool peft = config.variant == LoraGaVariant::peft;
  const Index sketch = std::min(4 * r, limit);
  const Svd<double> svd = detail::top_triplets(gradient, 2 * r, sketch, config.power_iterations, config.seed);

  LoraGaReport report;
  report.singular_values = svd.S;
  std::tie(report.a_indices, report.b_indices) = detail::lora_ga_indices(config, r);
  Matrix<double> A(r, adapter.in_features()), B(out, r);
  for (Index j = 0; j < r; ++j) {
    const Index a = report.a_indices[static_cast<std::size_t>(j)], b = report.b_indices[static_cast<std::size_t>(j)];
    A.row(j) = svd.V.col(a).transpose();
    B.col(j) = peft ? Eigen::VectorXd(svd.U.col(b) * svd.S(b)) : Eigen::VectorXd(svd.U.col(b));
  }
  const double s = static_cast<double>(adapter.scaling());
  switch (config.scale) {
    case LoraGaScale::stable: {
      const double zeta = std::pow(static_cast<double>(out), 0.25) / std::sqrt(config.stable_gamma);
      report.b_factor = zeta;
      report.a_factor = peft ? 1.0 : zeta;
      break;
    }
    case LoraGaScale::weight_svd: {
      const Index k = peft ? 1 : r;
      const Eigen::VectorXd sigma = detail::top_singular_values<T>(W, k, peft ? r : sketch, config.power_iterations,
                                                                   config.seed);
      if (peft) {
        const double first = svd.S(report.b_indices.front());
        if (first > 0) report.b_factor = sigma(0) / first;
      } else {
        const double mean_root = (sigma / s).cwiseMax(0.0).cwiseSqrt().mean();
        report.a_factor = report.b_factor = mean_root;
      }
      break;
    }
    case LoraGaScale::gd:
      report.a_factor = report.b_factor = 1.0 / s;
      break;
    case LoraGaScale::unit:
      break;
  }
  const Matrix<T> A_t = (A * report.a_factor).template cast<T>();
  const Matrix<T> B_t = (B * report.b_factor).template cast<T>();
  detail::install_weight_split<T>(where, adapter, A_t, B_t, W);
  return report;
}

/// LoRA-GA from an accumulated gradient: `lora_ga_initialize(adapter, W, gradient.mean(), config)`.
/// Errors: those of the overload above; the accumulator's shape differs from the adapter's (ShapeError); no batch
/// observed (StateError).
template <class T>
LoraGaReport lora_ga_initialize(Lora<T>& adapter, detail::non_deduced_t<Eigen::Ref<Matrix<T>>> W,
                                const LoraGaGradient<T>& gradient, const LoraGaConfig& config = {}) {
  detail::check_shape("lora_ga_initialize", "the gradient accumulator", gradient.out_features(),
                      gradient.in_features(), adapter.out_features(), adapter.in_features());
  return lora_ga_initialize(adapter, W, gradient.mean(), config);
}

}  // namespace lorakit
