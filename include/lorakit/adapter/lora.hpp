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

/// LoRA adapter of a weight W [out x in]:
/// \f[ \Delta W = s\,B A,\qquad y \mathrel{+}= s\,(x A^\top) B^\top,\qquad A \in \mathbb{R}^{r\times in},\ B \in \mathbb{R}^{out\times r}. \f]
/// With dropout p in training mode, the branch reads \f$\tilde x = x \odot M\f$ with an inverted-dropout mask M
/// (entries 0 or 1/(1-p)), as PEFT's `lora_B(lora_A(dropout(x))) * scaling`.
///
/// Backward, for a loss L with \f$G = \partial L / \partial y\f$ [n x out] and \f$U = \tilde x A^\top\f$ [n x r]:
/// \f[ \partial L/\partial B = s\,G^\top U,\qquad \partial L/\partial A = s\,(G B)^\top \tilde x,\qquad
///     \partial L/\partial x \mathrel{+}= (s\,G B A) \odot M. \f]
/// Gradients accumulate until `zero_grad()`. Workspaces are sized on the first step and reused, so a
/// steady-state step allocates nothing.
template <class T>
class Lora {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;

  /// A fresh adapter initialized as `config.init` says. Errors: in or out < 1, rank outside [1, min(in, out)],
  /// alpha not finite, dropout outside [0, 1).
  Lora(Index in_features, Index out_features, const LoraConfig& config)
      : in_(in_features), out_(out_features), config_(config), dropout_(config.seed, config.dropout) {
    validate("Lora::Lora", in_features, out_features, config);
    scaling_ = static_cast<T>(lora_scaling(config.alpha, config.rank, config.use_rslora));
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

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }
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

  /// Training mode draws a fresh dropout mask on every forward; evaluation mode uses none.
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }
  /// The mask of the last training forward with dropout ([n x in], entries 0 or 1/(1-p)).
  const Matrix<T>& dropout_mask() const { return dropout_.mask(); }

  /// y += s (x~ A^T) B^T for x [n x in], y [n x out]. Keeps x~ A^T for the backward.
  void forward(const ConstMatrixRef<T>& x, MatrixRef<T> y) {
    constexpr const char* where = "Lora::forward";
    detail::check_batch<T>(where, x, in_);
    detail::check_shape(where, "y", y.rows(), y.cols(), x.rows(), out_);
    if (uses_dropout()) {
      kernel::project<T>(dropout_.apply(x), A_, xa_);
    } else {
      kernel::project<T>(x, A_, xa_);
    }
    // A non-finite entry of x always makes its row of x A^T non-finite, so checking the small [n x r]
    // product finds bad input at O(n r) cost, before y is touched.
    if (!detail::all_finite(xa_)) report_non_finite(where, "x", x);
    kernel::expand_add<T>(xa_, B_, scaling_, y);
    forward_rows_ = x.rows();
    forward_used_dropout_ = uses_dropout();
  }

  /// Accumulates grad_A, grad_B and dx += s (dy B A) ⊙ M. Needs the forward of the same x just before.
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx) {
    constexpr const char* where = "Lora::backward";
    detail::check_shape(where, "dx", dx.rows(), dx.cols(), x.rows(), in_);
    backward_impl(where, x, dy);
    if (forward_used_dropout_) {
      dropout_.add_masked(t_ * A_, dx);  // the dropped input is no longer needed: its storage is reused
    } else {
      dx.noalias() += t_ * A_;
    }
  }

  /// Accumulates grad_A and grad_B only (no gradient for x is wanted).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) { backward_impl("Lora::backward", x, dy); }

  void zero_grad() {
    grad_A_.setZero();
    grad_B_.setZero();
  }

  /// s B A [out x in].
  Matrix<T> delta_weight() const { return (scaling_ * B_) * A_; }

  /// W += s B A. Errors: W not [out x in]; a non-finite result (W is then left unchanged).
  void merge_into(MatrixRef<T> W) const { apply_delta("Lora::merge_into", W, T(1)); }
  /// W -= s B A, with the same checks as merge_into.
  void unmerge_from(MatrixRef<T> W) const { apply_delta("Lora::unmerge_from", W, T(-1)); }

  /// Trainable scalars: r (in + out).
  Index num_parameters() const { return A_.size() + B_.size(); }

  /// {"A", A, grad_A}, {"B", B, grad_B}: what an optimizer walks.
  std::vector<Parameter<T>> parameters() {
    return {{"A", flat_view(A_), flat_view(grad_A_)}, {"B", flat_view(B_), flat_view(grad_B_)}};
  }

 private:
  static void validate(const char* where, Index in, Index out, const LoraConfig& config) {
    detail::check_features(where, in, out);
    if (config.rank < 1 || config.rank > std::min(in, out)) {
      detail::fail<ValueError>(where, "rank is ", config.rank, ", expected 1 <= rank <= min(in_features, out_features) = ",
                               std::min(in, out));
    }
    detail::check_finite_scalar(where, "alpha", config.alpha);
    detail::check_dropout(where, config.dropout);
  }

  bool uses_dropout() const { return training_ && config_.dropout > 0; }

  void backward_impl(const char* where, const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    detail::check_backward_batch<T>(where, x, dy, in_, out_, forward_rows_);
    kernel::project_back<T>(dy, B_, scaling_, t_);
    if (!detail::all_finite(t_)) report_non_finite(where, "dy", dy);  // as in forward: bad dy shows in dy B
    kernel::accumulate_outer<T>(dy, xa_, scaling_, grad_B_);
    if (forward_used_dropout_) {
      kernel::accumulate_outer<T>(t_, dropout_.dropped(), T(1), grad_A_);
    } else {
      kernel::accumulate_outer<T>(t_, x, T(1), grad_A_);
    }
  }

  [[noreturn]] void report_non_finite(const char* where, const char* name, const ConstMatrixRef<T>& m) const {
    detail::check_finite(where, name, m);
    detail::check_finite(where, "A", A_);
    detail::check_finite(where, "B", B_);
    detail::fail<ValueError>(where, "the adapter branch overflowed for finite ", name,
                             " (its entries are too large for the scalar type)");
  }

  void apply_delta(const char* where, MatrixRef<T> W, T sign) const {
    detail::add_dense_update<T>(where, W, out_, in_, sign, (scaling_ * B_) * A_, "s B A");
  }

  Index in_;
  Index out_;
  LoraConfig config_;
  T scaling_ = T(0);
  Matrix<T> A_, B_, grad_A_, grad_B_;
  bool training_ = true;
  detail::InputDropout<T> dropout_;  // mask and dropped input [n x in] (the latter reused for s dy B A in backward)
  // Workspaces of the last step, sized on first use.
  Matrix<T> xa_;       // [n x r] x~ A^T
  Matrix<T> t_;        // [n x r] s dy B
  Index forward_rows_ = -1;
  bool forward_used_dropout_ = false;
};

}  // namespace lorakit
