// lorakit::Vera: the VeRA adapter (Kopiczko, Blankevoort, Asano, "VeRA: Vector-based Random Matrix
// Adaptation", ICLR 2024): frozen random projections shared by every layer and regenerable from a seed,
// and two trainable scaling vectors per layer, with PEFT's initialization, dropout and merge semantics.
#pragma once

#include "lorakit/adapter/detail/branch.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/lowrank_products.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace lorakit {

/// Hyper-parameters of one VeRA adapter, named as in PEFT's VeraConfig.
struct VeraConfig {
  Index rank = 256;                   ///< r, the shared projections' rank (must equal theirs)
  double d_initial = 0.1;             ///< every entry of lambda_d starts here (lambda_b starts at 0)
  double dropout = 0;                 ///< vera_dropout: inverted dropout on the adapter branch's input
  /// projection_prng_key: the seed the shared projections were drawn from. The projections are the truth: a `Vera`
  /// sets its config's copy to `projections->seed()`, so a saved adapter always names the seed it used.
  std::uint64_t projection_seed = 0;
  std::uint64_t seed = 0;             ///< seeds this layer's dropout masks (stream 1), as LoraConfig::seed
};

/// The frozen random projections of VeRA, one pair for a whole model: A [r x max_in], B [max_out x r].
/// A layer with in_features = in and out_features = out uses the leading blocks A[:, :in] and B[:out, :],
/// as PEFT does, so one pair serves layers of every shape up to (max_in, max_out).
///
/// **Regeneration.** The values are a fixed function of (rank, max_in, max_out, seed), the same on every platform
/// and compiler, so a saved adapter need not carry them: one generator `Rng(seed, 0)` (Philox4x32-10,
/// see core/random.hpp) fills first A, then B, each in row-major order, with `uniform<T>(-bound, bound)`, where
/// \f[ \mathrm{bound} = \sqrt{6 / \mathrm{fan\_in}},\qquad \mathrm{fan\_in}(A) = \mathrm{max\_in},\quad
///     \mathrm{fan\_in}(B) = r, \f]
/// PEFT's `_kaiming_init` (PyTorch's kaiming_uniform_ with gain sqrt(2)). float and double draw their own
/// precisions (24 and 53 random bits per value), so the two are not roundings of one another.
template <class T>
class VeraProjections {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;

  /// Draws A [rank x max_in_features] and B [max_out_features x rank] from `seed`. Errors: a size < 1.
  VeraProjections(Index rank, Index max_in_features, Index max_out_features, std::uint64_t seed) : seed_(seed) {
    constexpr const char* where = "VeraProjections::VeraProjections";
    if (rank < 1) detail::fail<ValueError>(where, "rank is ", rank, ", expected >= 1");
    if (max_in_features < 1) detail::fail<ValueError>(where, "max_in_features is ", max_in_features, ", expected >= 1");
    if (max_out_features < 1) {
      detail::fail<ValueError>(where, "max_out_features is ", max_out_features, ", expected >= 1");
    }
    A_.resize(rank, max_in_features);
    B_.resize(max_out_features, rank);
    Rng rng(seed, 0);
    const T bound_A = kaiming_bound(max_in_features), bound_B = kaiming_bound(rank);
    rng.fill_uniform(A_, -bound_A, bound_A);
    rng.fill_uniform(B_, -bound_B, bound_B);
  }

  /// Shared projections sized for a list of layer shapes (in_features, out_features): max_in and max_out are
  /// the largest in and out of the list. Errors: an empty list, a size < 1.
  static std::shared_ptr<const VeraProjections> for_layers(Index rank, const std::vector<std::pair<Index, Index>>& shapes,
                                                           std::uint64_t seed) {
    constexpr const char* where = "VeraProjections::for_layers";
    if (shapes.empty()) detail::fail<ValueError>(where, "shapes is empty, expected at least one (in, out) layer shape");
    Index max_in = 0, max_out = 0;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      if (shapes[i].first < 1 || shapes[i].second < 1) {
        detail::fail<ValueError>(where, "shapes[", i, "] is (", shapes[i].first, ", ", shapes[i].second,
                                 "), expected in >= 1 and out >= 1");
      }
      max_in = std::max(max_in, shapes[i].first);
      max_out = std::max(max_out, shapes[i].second);
    }
    return std::make_shared<const VeraProjections>(rank, max_in, max_out, seed);
  }

  /// Projections given as matrices: A [rank x max_in], B [max_out x rank], for instance those PEFT drew with torch's
  /// generator and stored in a checkpoint (`save_projection`). `seed` is kept as the projection_prng_key they came
  /// from, but lorakit cannot draw them from it: `regenerable()` is false, and a checkpoint of adapters over them
  /// must store them. Errors: an empty matrix or ranks that differ (ShapeError); NaN or Inf (ValueError).
  static std::shared_ptr<const VeraProjections> from_matrices(Matrix<T> A, Matrix<T> B, std::uint64_t seed) {
    constexpr const char* where = "VeraProjections::from_matrices";
    if (A.size() == 0 || B.size() == 0) {
      detail::fail<ShapeError>(where, "A is [", A.rows(), " x ", A.cols(), "] and B [", B.rows(), " x ", B.cols(),
                               "], expected non-empty matrices");
    }
    if (B.cols() != A.rows()) {
      detail::fail<ShapeError>(where, "B has ", B.cols(), " columns, expected rank = A.rows() = ", A.rows());
    }
    detail::check_finite(where, "A", A);
    detail::check_finite(where, "B", B);
    return std::shared_ptr<const VeraProjections>(new VeraProjections(std::move(A), std::move(B), seed));
  }

  /// sqrt(6 / fan_in), the half-width of the uniform draws.
  static T kaiming_bound(Index fan_in) { return static_cast<T>(std::sqrt(6.0 / static_cast<double>(fan_in))); }

  Index rank() const { return A_.rows(); }
  Index max_in_features() const { return A_.cols(); }
  Index max_out_features() const { return B_.rows(); }
  std::uint64_t seed() const { return seed_; }
  /// True when A and B are lorakit's draws from seed() (the constructor), false for `from_matrices`.
  bool regenerable() const { return regenerable_; }

  /// A [r x max_in] and B [max_out x r].
  const Matrix<T>& A() const { return A_; }
  const Matrix<T>& B() const { return B_; }

  /// Bytes of A and B: what a model holds once for all its VeRA layers.
  std::size_t bytes() const { return static_cast<std::size_t>(A_.size() + B_.size()) * sizeof(T); }

 private:
  VeraProjections(Matrix<T> A, Matrix<T> B, std::uint64_t seed)
      : seed_(seed), regenerable_(false), A_(std::move(A)), B_(std::move(B)) {}

  std::uint64_t seed_;
  bool regenerable_ = true;
  Matrix<T> A_, B_;
};

/// VeRA adapter of a weight W [out x in] over shared projections (A_l = A[:, :in], B_l = B[:out, :]):
/// \f[ \Delta W = \Lambda_b B_l \Lambda_d A_l,\qquad \Lambda_b = \mathrm{diag}(\lambda_b) \in \mathbb{R}^{out\times out},\quad
///     \Lambda_d = \mathrm{diag}(\lambda_d) \in \mathbb{R}^{r\times r}, \f]
/// (Kopiczko et al., ICLR 2024, eq. 2), with \f$\lambda_b = 0\f$ and \f$\lambda_d = d_{initial}\f$ at start, so the
/// adapted layer starts as the base layer. The rank may exceed in or out (VeRA uses r = 256 to 1024).
/// Forward, for x [n x in] (with dropout in training, \f$\tilde x = x \odot M\f$ as in `Lora`):
/// \f[ U = \tilde x A_l^\top,\quad W_d = U \Lambda_d,\quad Z = W_d B_l^\top,\quad y \mathrel{+}= Z \Lambda_b. \f]
/// Backward, for \f$G = \partial L/\partial y\f$ [n x out] and \f$H = (G \Lambda_b) B_l\f$ [n x r]:
/// \f[ \partial L/\partial\lambda_b = \textstyle\sum_n (G \odot Z)_{n,:},\qquad
///     \partial L/\partial\lambda_d = \textstyle\sum_n (H \odot U)_{n,:},\qquad
///     \partial L/\partial x \mathrel{+}= (H \Lambda_d A_l) \odot M. \f]
/// The diagonal scalings are elementwise passes over reused workspaces (U, W_d, Z, G Λ_b, H), never dense
/// diagonal matrices. Gradients accumulate until `zero_grad()`. The projections are shared (never copied per
/// layer or per copy of the adapter) and read-only.
template <class T>
class Vera : public detail::AdapterBranch<Vera<T>, T> {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  using Branch = detail::AdapterBranch<Vera<T>, T>;
  friend Branch;

 public:
  using Scalar = T;
  using Projections = VeraProjections<T>;

  /// A fresh adapter (lambda_b = 0, lambda_d = d_initial) over `projections`. Errors: no projections, in or out < 1,
  /// in or out larger than the projections, config.rank not the projections' rank, d_initial not finite,
  /// dropout outside [0, 1).
  Vera(std::shared_ptr<const Projections> projections, Index in_features, Index out_features, const VeraConfig& config)
      : Branch("Vera::Vera", in_features, out_features, config.seed, config.dropout),
        projections_(std::move(projections)),
        config_(config) {
    validate("Vera::Vera", projections_.get(), in_features, out_features, config);
    config_.projection_seed = projections_->seed();
    lambda_b_.setZero(out_features);
    lambda_d_.setConstant(config.rank, static_cast<T>(config.d_initial));
    grad_b_.setZero(out_features);
    grad_d_.setZero(config.rank);
  }

  Index rank() const { return config_.rank; }
  const VeraConfig& config() const { return config_; }
  /// The shared projections (the same object for every layer built on them).
  const std::shared_ptr<const Projections>& projections() const { return projections_; }

  Vector<T>& lambda_b() { return lambda_b_; }
  Vector<T>& lambda_d() { return lambda_d_; }
  const Vector<T>& lambda_b() const { return lambda_b_; }
  const Vector<T>& lambda_d() const { return lambda_d_; }
  const Vector<T>& grad_lambda_b() const { return grad_b_; }
  const Vector<T>& grad_lambda_d() const { return grad_d_; }

  /// A_l = A[:, :in] [r x in] and B_l = B[:out, :] [out x r]: this layer's views of the projections.
  auto A() const { return projections_->A().leftCols(this->in_features()); }
  auto B() const { return projections_->B().topRows(this->out_features()); }

  void zero_grad() {
    grad_b_.setZero();
    grad_d_.setZero();
  }

  /// Trainable scalars: out + r (the projections are frozen and shared).
  Index num_parameters() const { return lambda_b_.size() + lambda_d_.size(); }

  /// {"lambda_b", lambda_b, grad}, {"lambda_d", lambda_d, grad}: what an optimizer walks.
  std::vector<Parameter<T>> parameters() {
    return {{"lambda_b", flat_view(lambda_b_), flat_view(grad_b_)}, {"lambda_d", flat_view(lambda_d_), flat_view(grad_d_)}};
  }

 private:
  static constexpr const char* forward_name = "Vera::forward";
  static constexpr const char* backward_name = "Vera::backward";
  static constexpr const char* merge_name = "Vera::merge_into";
  static constexpr const char* unmerge_name = "Vera::unmerge_from";
  static constexpr const char* delta_name = "diag(lambda_b) B diag(lambda_d) A";

  static void validate(const char* where, const Projections* projections, Index in, Index out, const VeraConfig& config) {
    if (projections == nullptr) detail::fail<ValueError>(where, "projections is null, expected shared VeraProjections");
    if (in > projections->max_in_features()) {
      detail::fail<ShapeError>(where, "in_features is ", in, ", larger than the projections' max_in_features = ",
                               projections->max_in_features());
    }
    if (out > projections->max_out_features()) {
      detail::fail<ShapeError>(where, "out_features is ", out, ", larger than the projections' max_out_features = ",
                               projections->max_out_features());
    }
    if (config.rank != projections->rank()) {
      detail::fail<ValueError>(where, "config.rank is ", config.rank, ", but the projections' rank is ",
                               projections->rank());
    }
    detail::check_finite_scalar(where, "d_initial", config.d_initial);
    if (!std::isfinite(static_cast<T>(config.d_initial))) {
      detail::fail<ValueError>(where, "d_initial is ", config.d_initial, ", which overflows the scalar type");
    }
  }

  // The branch's math (detail::AdapterBranch calls these after its checks):
  // U = x~ A_l^T (staged), then W_d = U Λ_d, Z = W_d B_l^T, y += Z Λ_b.
  bool stage_forward(const ConstMatrixRef<T>& input) {
    staged_.resize(input.rows(), rank());
    staged_.noalias() = input * A().transpose();
    // A non-finite entry of the input makes its row of U non-finite (NaN or Inf times any finite projection entry,
    // zero included, is not finite), so the small [n x r] product also finds an overflow.
    return detail::all_finite(staged_);
  }
  void commit_forward() { detail::swap_in(u_, staged_); }
  void add_forward(MatrixRef<T> y) {
    ud_.resize(u_.rows(), rank());
    ud_.array() = u_.array().rowwise() * lambda_d_.transpose().array();
    z_.resize(u_.rows(), this->out_features());
    z_.noalias() = ud_ * B().transpose();
    y.noalias() += z_ * lambda_b_.asDiagonal();
  }

  // H = (G Λ_b) B_l (staged); the gradients are column sums of G ⊙ Z and H ⊙ U; dx gets (H Λ_d) A_l.
  bool stage_backward(const ConstMatrixRef<T>& dy) {
    dyb_.resize(dy.rows(), this->out_features());
    dyb_.array() = dy.array().rowwise() * lambda_b_.transpose().array();
    staged_.resize(dy.rows(), rank());
    staged_.noalias() = dyb_ * B();
    return detail::all_finite(staged_);
  }
  void commit_backward(const ConstMatrixRef<T>& dy, const ConstMatrixRef<T>& /*input*/) {
    detail::swap_in(h_, staged_);
    add_column_sums_of_product<T>(dy, z_, grad_b_);
    add_column_sums_of_product<T>(h_, u_, grad_d_);
  }
  auto input_gradient() {
    h_.array().rowwise() *= lambda_d_.transpose().array();  // H Λ_d, in place: H is not needed after this
    return h_ * A();
  }

  /// Λ_b B_l Λ_d A_l [out x in].
  auto delta() const { return (lambda_b_.asDiagonal() * B() * lambda_d_.asDiagonal()) * A(); }

  void check_parameters_finite(const char* where) const {
    detail::check_finite(where, "lambda_b", lambda_b_);
    detail::check_finite(where, "lambda_d", lambda_d_);
  }

  std::shared_ptr<const Projections> projections_;
  VeraConfig config_;
  Vector<T> lambda_b_, lambda_d_, grad_b_, grad_d_;
  // Workspaces of the last step, sized on first use.
  Matrix<T> u_;       // [n x r]   U = x~ A_l^T
  Matrix<T> ud_;      // [n x r]   U Λ_d
  Matrix<T> z_;       // [n x out] Z = U Λ_d B_l^T
  Matrix<T> dyb_;     // [n x out] G Λ_b
  Matrix<T> h_;       // [n x r]   H = G Λ_b B_l, then H Λ_d
  Matrix<T> staged_;  // [n x r]   the next U or H, until its checks pass
};

}  // namespace lorakit
