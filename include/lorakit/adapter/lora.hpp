// lorakit::Lora: the LoRA adapter of one weight matrix (Hu et al., "LoRA: Low-Rank Adaptation of Large
// Language Models", ICLR 2022), with PEFT's initializations, scaling, dropout and merge semantics.
#pragma once

#include "lorakit/adapter/detail/branch.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/lowrank_products.hpp"

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace lorakit {

/// How `Lora` initializes A (B starts at zero in every case, so the adapted layer starts as the base layer).
enum class LoraInit {
  kaiming_uniform,  ///< A ~ U(-1/sqrt(in), 1/sqrt(in)): PyTorch's kaiming_uniform_(a = sqrt(5)), PEFT's default.
  gaussian,         ///< A ~ N(0, (1/r)^2): PEFT's `init_lora_weights="gaussian"`.
  zeros,            ///< A = 0 (for loading factors, or initializers that overwrite them).
};

/// Hyper-parameters of one LoRA adapter, named as in PEFT's LoraConfig.
struct LoraConfig {
  Index rank = 8;             ///< r
  double alpha = 8;           ///< lora_alpha
  bool use_rslora = false;    ///< scaling alpha / sqrt(r) instead of alpha / r (Kalajdzievski, 2023)
  double dropout = 0;         ///< lora_dropout: inverted dropout on the adapter branch's input
  LoraInit init = LoraInit::kaiming_uniform;
  std::uint64_t seed = 0;     ///< seeds A's initialization (stream 0) and the dropout masks (stream 1)
};

/// The scaling of a LoRA update: \f$s = \alpha / r\f$, or \f$s = \alpha / \sqrt{r}\f$ with rsLoRA.
inline double lora_scaling(double alpha, Index rank, bool use_rslora) {
  const double r = static_cast<double>(rank);
  return use_rslora ? alpha / std::sqrt(r) : alpha / r;
}

/// The alpha that gives scaling s at rank r: \f$\alpha = s\,r\f$, or \f$s\sqrt r\f$ with rsLoRA (the inverse of
/// `lora_scaling`; what a rank change uses to keep a layer's scaling).
inline double alpha_for_scaling(double scaling, Index rank, bool use_rslora) {
  const double r = static_cast<double>(rank);
  return use_rslora ? scaling * std::sqrt(r) : scaling * r;
}

/// LoRA adapter of a weight W [out x in]:
/// \f[ \Delta W = s\,B A,\qquad y \mathrel{+}= s\,(x A^\top) B^\top,\qquad A \in \mathbb{R}^{r\times in},\ B \in \mathbb{R}^{out\times r}. \f]
/// With dropout p in training mode, the branch reads \f$\tilde x = x \odot M\f$ with an inverted-dropout mask M
/// (entries 0 or 1/(1-p)), as PEFT's `lora_B(lora_A(dropout(x))) * scaling`.
///
/// Backward, for a loss L with \f$G = \partial L / \partial y\f$ [n x out] and \f$U = \tilde x A^\top\f$ [n x r]:
/// \f[ \partial L/\partial B = s\,G^\top U,\qquad \partial L/\partial A = s\,(G B)^\top \tilde x,\qquad
///     \partial L/\partial x \mathrel{+}= (s\,G B A) \odot M. \f]
/// Gradients accumulate until `zero_grad()`. Workspaces are sized on the first step and reused, so a
/// steady-state step allocates nothing. What every adapter shares (checks, dropout, the forward/backward
/// bookkeeping, merge and unmerge) is `detail::AdapterBranch`; a refused call changes nothing.
template <class T>
class Lora : public detail::AdapterBranch<Lora<T>, T> {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  using Branch = detail::AdapterBranch<Lora<T>, T>;
  friend Branch;

 public:
  using Scalar = T;

  /// A fresh adapter initialized as `config.init` says. Errors (ValueError): in or out < 1, rank < 1, alpha not
  /// finite or a scaling that overflows T, dropout outside [0, 1). A rank above min(in, out) is accepted, as PEFT
  /// accepts it (the update's rank is still at most min(in, out)).
  Lora(Index in_features, Index out_features, const LoraConfig& config)
      : Branch("Lora::Lora", in_features, out_features, config.seed, config.dropout),
        config_(config),
        scaling_(checked_scaling("Lora::Lora", config)) {
    A_.setZero(config.rank, in_features);
    B_.setZero(out_features, config.rank);
    grad_A_.setZero(config.rank, in_features);
    grad_B_.setZero(out_features, config.rank);
    Rng rng(config.seed, 0);
    switch (config.init) {
      case LoraInit::kaiming_uniform: {
        const T bound = static_cast<T>(1.0 / std::sqrt(static_cast<double>(in_features)));
        rng.fill_uniform(A_, -bound, bound);
        break;
      }
      case LoraInit::gaussian:
        rng.fill_normal(A_, T(0), static_cast<T>(1.0 / static_cast<double>(config.rank)));
        break;
      case LoraInit::zeros:
        break;
    }
  }

  /// An adapter with given factors A [r x in] and B [out x r]; `config.rank` must equal r (its `init` is ignored).
  /// Errors: factors of other shapes (ShapeError), NaN or Inf in them (ValueError), and the constructor's.
  static Lora from_factors(Matrix<T> A, Matrix<T> B, const LoraConfig& config) {
    constexpr const char* where = "Lora::from_factors";
    detail::check_rows(where, "A", A.rows(), config.rank, "config.rank");
    detail::check_cols(where, "B", B.cols(), config.rank, "config.rank");
    detail::check_finite(where, "A", A);
    detail::check_finite(where, "B", B);
    LoraConfig zero_init = config;
    zero_init.init = LoraInit::zeros;
    Lora lora(A.cols(), B.rows(), zero_init);
    lora.config_.init = config.init;
    lora.A_ = std::move(A);
    lora.B_ = std::move(B);
    return lora;
  }

  Index rank() const { return config_.rank; }
  /// s = alpha / r (alpha / sqrt(r) with rsLoRA).
  T scaling() const { return scaling_; }
  const LoraConfig& config() const { return config_; }

  Matrix<T>& A() { return A_; }
  Matrix<T>& B() { return B_; }
  const Matrix<T>& A() const { return A_; }
  const Matrix<T>& B() const { return B_; }
  const Matrix<T>& grad_A() const { return grad_A_; }
  const Matrix<T>& grad_B() const { return grad_B_; }

  void zero_grad() {
    grad_A_.setZero();
    grad_B_.setZero();
  }

  /// Trainable scalars: r (in + out).
  Index num_parameters() const { return A_.size() + B_.size(); }

  /// {"A", A, grad_A}, {"B", B, grad_B}: what an optimizer walks.
  std::vector<Parameter<T>> parameters() {
    return {{"A", flat_view(A_), flat_view(grad_A_)}, {"B", flat_view(B_), flat_view(grad_B_)}};
  }

 private:
  static constexpr const char* forward_name = "Lora::forward";
  static constexpr const char* backward_name = "Lora::backward";
  static constexpr const char* merge_name = "Lora::merge_into";
  static constexpr const char* unmerge_name = "Lora::unmerge_from";
  static constexpr const char* delta_name = "s B A";

  /// The scaling in T, after the config's own checks: rank >= 1, alpha finite, s finite in T.
  static T checked_scaling(const char* where, const LoraConfig& config) {
    if (config.rank < 1) detail::fail<ValueError>(where, "rank is ", config.rank, ", expected >= 1");
    detail::check_finite_scalar(where, "alpha", config.alpha);
    const T s = static_cast<T>(lora_scaling(config.alpha, config.rank, config.use_rslora));
    if (!std::isfinite(s)) {
      detail::fail<ValueError>(where, "alpha is ", config.alpha, ": the scaling alpha / ",
                               config.use_rslora ? "sqrt(r)" : "r", " overflows the scalar type");
    }
    return s;
  }

  // The branch's math (detail::AdapterBranch calls these after its checks).
  bool stage_forward(const ConstMatrixRef<T>& input) {
    lowrank_project<T>(input, A_, staged_);
    // A non-finite entry of the input always makes its row of x A^T non-finite, so the small [n x r] product
    // also finds an overflow at O(n r) cost.
    return detail::all_finite(staged_);
  }
  void commit_forward() { detail::swap_in(xa_, staged_); }
  void add_forward(MatrixRef<T> y) const { lowrank_expand_add<T>(xa_, B_, scaling_, y); }

  bool stage_backward(const ConstMatrixRef<T>& dy) {
    lowrank_project_back<T>(dy, B_, scaling_, staged_);
    return detail::all_finite(staged_);
  }
  void commit_backward(const ConstMatrixRef<T>& dy, const ConstMatrixRef<T>& input) {
    detail::swap_in(t_, staged_);
    accumulate_factor_gradient<T>(dy, xa_, scaling_, grad_B_);
    accumulate_factor_gradient<T>(t_, input, T(1), grad_A_);
  }
  auto input_gradient() const { return t_ * A_; }

  auto delta() const { return (scaling_ * B_) * A_; }

  void check_parameters_finite(const char* where) const {
    detail::check_finite(where, "A", A_);
    detail::check_finite(where, "B", B_);
  }

  LoraConfig config_;
  T scaling_;
  Matrix<T> A_, B_, grad_A_, grad_B_;
  // Workspaces of the last step, sized on first use.
  Matrix<T> xa_;      // [n x r] x~ A^T
  Matrix<T> t_;       // [n x r] s dy B
  Matrix<T> staged_;  // [n x r] the next x~ A^T or s dy B, until its checks pass
};

}  // namespace lorakit
