// lorakit::Dora: the DoRA adapter of one weight matrix (Liu et al., "DoRA: Weight-Decomposed Low-Rank
// Adaptation", ICML 2024), with HuggingFace PEFT's semantics (src/peft/tuners/lora/dora.py, DoraLinearLayer, and
// variants.py, DoraLinearVariant): a LoRA update of the direction, a trainable magnitude per output row, the row
// norm held constant in the backward pass, PEFT's dropout, merge and unmerge.
#pragma once

#include "lorakit/adapter/adapted_linear.hpp"
#include "lorakit/adapter/detail/branch.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/lowrank_products.hpp"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace lorakit {

/// DoRA adapter of a base weight W [out x in]: A [r x in] and B [out x r] as in `Lora` (same initialization and
/// scaling s), plus a trainable magnitude m [out], initialized to the row norms of W. The adapted weight is
/// \f[ W' = \frac{m}{\lVert W + s B A \rVert_{row}} \odot (W + s B A), \f]
/// each output row j scaled by \f$c_j = m_j / n_j\f$, \f$n_j = \lVert W_j + s B_j A \rVert_2\f$.
///
/// **Forward** (PEFT's `DoraLinearLayer.forward`), x [n x in], y = the adapted output without bias:
/// - without dropout (or in evaluation mode): \f$y = (x W^\top + s\,x A^\top B^\top) \odot c\f$;
/// - with dropout p in training mode, PEFT drops the input of the DoRA term only: with \f$\tilde x = x \odot M\f$,
///   \f$y = x W^\top + (c - 1) \odot (\tilde x W^\top) + c \odot s\,\tilde x A^\top B^\top\f$ (one more product
///   with W, as in PEFT).
///
/// **Backward**: n is a constant (DoRA's section 4.3; PEFT detaches it), so with \f$G = \partial L/\partial y\f$,
/// \f$G_c = G \odot c\f$ (columns scaled), \f$U = \tilde x A^\top\f$ and \f$P = \tilde x W^\top + s\,U B^\top\f$
/// (what c multiplies in the forward):
/// \f[ \partial L/\partial m_j = \tfrac{1}{n_j}\textstyle\sum_i G_{ij} P_{ij},\quad
///     \partial L/\partial B = s\,G_c^\top U,\quad \partial L/\partial A = s\,(G_c B)^\top \tilde x, \f]
/// \f$\partial L/\partial x = G_c W + s\,G_c B A\f$ without dropout, and
/// \f$G W + ((G \odot (c-1)) W + s\,G_c B A) \odot M\f$ with it.
///
/// **The base weight.** Dora keeps no copy of W: it is used as `AdaptedLinear<T, Dora<T>>`, which hands it its W
/// (`needs_base_weight`, adapter_concept.hpp) and gives it x W^T, so the forward adds only the norm and the
/// low-rank products. The norm is computed once per forward (kept for the backward) without forming W + s B A:
/// \f$n_j^2 = \lVert W_j\rVert^2 + 2s\,B_j (A W_j^\top) + s^2 B_j (A A^\top) B_j^\top\f$, combined in double,
/// at the cost of one [out x in] x [in x r] product; a row where that sum cancels (n_j^2 under half of
/// \f$\lVert W_j\rVert^2 + s^2\lVert B_j A\rVert^2\f$) is recomputed from \f$W_j + s B_j A\f$ itself.
///
/// **Merge** (PEFT's `DoraLinearVariant.merge_safe`): W becomes W', and the norm used is kept, so that
/// **unmerge** restores \f$W = W' \odot n / m - s B A\f$ (up to rounding). Gradients accumulate until
/// `zero_grad()`. Every call validates its arguments before changing anything.
template <class T>
class Dora {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;
  /// Dora's output depends on the base weight: `AdaptedLinear` passes it in (adapter_concept.hpp).
  static constexpr bool needs_base_weight = true;

  /// A fresh adapter for the base weight W [out x in]: A as `Lora(in, out, config)` initializes it (the same
  /// values for the same config), B = 0, m = the row norms of W (= those of W + s B A, PEFT's initialization). For
  /// a weight stored [in x out] pass its transpose. Errors (ValueError): an empty W, NaN or Inf in W, a row of W
  /// that is all zeros (DoRA divides by the row norms), and the errors of `Lora`'s constructor (rank, alpha,
  /// dropout).
  Dora(const Eigen::Ref<const Matrix<T>>& W, const LoraConfig& config) : Dora(0, config, initial_lora(W, config)) {
    Vector<double> norms = W.template cast<double>().rowwise().norm();
    for (Index j = 0; j < norms.size(); ++j) {
      if (!(norms(j) > 0)) detail::fail<ValueError>("Dora::Dora", "row ", j, " of W is all zeros; DoRA divides by the row norms of W");
    }
    magnitude_ = norms.template cast<T>();
  }

  /// An adapter with given A [r x in], B [out x r] and magnitude [out] (e.g. read from a PEFT file); `config.rank`
  /// must equal r (its `init` is ignored). Errors: other shapes (ShapeError), NaN or Inf (ValueError), and the
  /// constructor's configuration errors.
  static Dora from_factors(Matrix<T> A, Matrix<T> B, Vector<T> magnitude, const LoraConfig& config) {
    constexpr const char* where = "Dora::from_factors";
    Lora<T> lora = Lora<T>::from_factors(std::move(A), std::move(B), config);
    if (magnitude.size() != lora.out_features()) {
      detail::fail<ShapeError>(where, "magnitude has ", magnitude.size(), " entries, expected out_features = ",
                               lora.out_features(), " (the rows of B)");
    }
    detail::check_finite(where, "magnitude", magnitude);
    Dora dora(0, config, std::move(lora));
    dora.magnitude_ = std::move(magnitude);
    return dora;
  }

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }
  Index rank() const { return config_.rank; }
  /// s = alpha / r (alpha / sqrt(r) with rsLoRA), as `Lora`.
  T scaling() const { return scaling_; }
  const LoraConfig& config() const { return config_; }

  Matrix<T>& A() { return A_; }
  Matrix<T>& B() { return B_; }
  Vector<T>& magnitude() { return magnitude_; }
  const Matrix<T>& A() const { return A_; }
  const Matrix<T>& B() const { return B_; }
  const Vector<T>& magnitude() const { return magnitude_; }
  const Matrix<T>& grad_A() const { return grad_A_; }
  const Matrix<T>& grad_B() const { return grad_B_; }
  const Vector<T>& grad_magnitude() const { return grad_magnitude_; }

  /// Training mode draws a fresh dropout mask on every forward; evaluation mode uses none.
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }
  /// The mask of the last training forward with dropout ([n x in], entries 0 or 1/(1-p)).
  const Matrix<T>& dropout_mask() const { return dropout_.mask(); }
  /// The row norms n = ||W + s B A|| of the last forward (held constant in its backward).
  const Vector<T>& weight_norm() const { return norm_; }

  void zero_grad() {
    grad_A_.setZero();
    grad_B_.setZero();
    grad_magnitude_.setZero();
  }

  /// Trainable scalars: r (in + out) + out.
  Index num_parameters() const { return A_.size() + B_.size() + magnitude_.size(); }

  /// {"A", A, grad_A}, {"B", B, grad_B}, {"magnitude", m, grad_magnitude}: what an optimizer walks.
  std::vector<Parameter<T>> parameters() {
    return {{"A", flat_view(A_), flat_view(grad_A_)},
            {"B", flat_view(B_), flat_view(grad_B_)},
            {"magnitude", flat_view(magnitude_), flat_view(grad_magnitude_)}};
  }

  /// The row norms \f$\lVert W + s B A\rVert\f$ [out] for W stored in `layout`, computed as the forward does.
  /// Errors: W of the wrong shape (ShapeError).
  Vector<T> weight_norm(const ConstMatrixRef<T>& W, WeightLayout layout) const {
    check_weight("Dora::weight_norm", W, layout);
    Vector<T> norm;
    Workspace scratch;
    with_weight(W, layout, [&](const auto& Wo) { row_norms(Wo, scratch, norm); });
    return norm;
  }

  /// y = the adapted output (bias excluded) for x [n x in], with W the base weight as stored in `layout` and y
  /// holding x W^T on entry (what `AdaptedLinear` passes). Keeps the norm and what the backward needs.
  /// Errors (nothing changes, y included): shapes (ShapeError); NaN or Inf in x; a row of W + s B A with norm 0; a
  /// product that overflows (ValueError).
  void forward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& W, WeightLayout layout, MatrixRef<T> y) {
    constexpr const char* where = "Dora::forward";
    detail::check_batch<T>(where, x, in_);
    detail::check_shape(where, "y", y.rows(), y.cols(), x.rows(), out_);
    check_weight(where, W, layout);
    detail::check_finite(where, "x", x);
    const bool dropping = dropout_.active(training_);
    const ConstMatrixRef<T> input = dropping ? ConstMatrixRef<T>(dropout_.stage(x)) : x;

    with_weight(W, layout, [&](const auto& Wo) {
      row_norms(Wo, work_, staged_norm_);
      lowrank_project<T>(input, A_, staged_xa_);
      staged_pre_.resize(x.rows(), out_);
      if (dropping) {
        staged_pre_.noalias() = input * Wo.transpose();  // x~ W^T: PEFT's second product with W
        staged_base_ = staged_pre_;
      } else {
        staged_pre_ = y;  // x W^T, from the layer
      }
    });
    lowrank_expand_add<T>(staged_xa_, B_, scaling_, staged_pre_);
    for (Index j = 0; j < out_; ++j) {
      if (!(staged_norm_(j) > 0)) {
        check_parameters_finite(where);
        detail::fail<ValueError>(where, "row ", j, " of W + s B A has norm ", staged_norm_(j),
                                 "; DoRA divides by it (nothing was changed)");
      }
    }
    staged_scale_ = magnitude_.cwiseQuotient(staged_norm_);
    if (!detail::all_finite(staged_scale_) || !detail::all_finite(staged_pre_)) {
      check_parameters_finite(where);
      detail::fail<ValueError>(where, "the DoRA branch overflowed for finite x (its entries are too large for the scalar type)");
    }

    if (dropping) dropout_.commit();
    detail::swap_in(xa_, staged_xa_);
    detail::swap_in(pre_, staged_pre_);
    swap_in(norm_, staged_norm_);
    swap_in(scale_, staged_scale_);
    forward_rows_ = x.rows();
    forward_used_dropout_ = dropping;
    if (dropping) {
      // y = x W^T + (c - 1) ⊙ (x~ W^T) + c ⊙ s x~ A^T B^T = y + c ⊙ P - x~ W^T
      y.noalias() += pre_ * scale_.asDiagonal();
      y -= staged_base_;
    } else {
      y.noalias() = pre_ * scale_.asDiagonal();
    }
  }

  /// Accumulates the gradients of A, B and m, and writes dx = the whole gradient reaching x (the base path
  /// included), with W as in the forward. Needs the forward of the same x just before. Errors (nothing changes,
  /// dx aside): shapes (ShapeError), no matching forward (StateError), NaN or Inf in x or dy, an overflow
  /// (ValueError).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, const ConstMatrixRef<T>& W, WeightLayout layout,
                MatrixRef<T> dx) {
    constexpr const char* where = "Dora::backward";
    detail::check_shape(where, "dx", dx.rows(), dx.cols(), x.rows(), in_);
    backward_gradients(where, x, dy, W, layout);
    with_weight(W, layout, [&](const auto& Wo) {
      if (forward_used_dropout_) {
        // dx = G W + ((G ⊙ (c - 1)) W + s G_c B A) ⊙ M
        dx.noalias() = dy * Wo;
        staged_pre_.noalias() = dy * (scale_.array() - T(1)).matrix().asDiagonal();
        dropout_.add_masked(staged_pre_ * Wo + t_ * A_, dx);
      } else {
        dx.noalias() = gc_ * Wo;  // G_c W + s G_c B A
        dx.noalias() += t_ * A_;
      }
    });
  }

  /// Accumulates the gradients only (no gradient for x is wanted).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, const ConstMatrixRef<T>& W, WeightLayout layout) {
    backward_gradients("Dora::backward", x, dy, W, layout);
  }

  /// The merged weight minus W, [out x in]: \f$c \odot (W + s B A) - W\f$ with W stored in `layout`.
  /// Errors: as merge_into.
  Matrix<T> delta_weight(const ConstMatrixRef<T>& W, WeightLayout layout) const {
    Matrix<T> merged;
    Vector<T> norm;
    merged_weight("Dora::delta_weight", W, layout, merged, norm);
    with_weight(W, layout, [&](const auto& Wo) { merged -= Wo; });
    return merged;
  }

  /// W = \f$\frac{m}{\lVert W + sBA\rVert} \odot (W + s B A)\f$ (transposed back for `in_by_out`), keeping the
  /// norm for unmerge_from. Errors (W is then unchanged): W of the wrong shape (ShapeError); a row of W + s B A
  /// with norm 0, a magnitude of 0 (the merge could not be undone), a non-finite result (ValueError).
  void merge_into(MatrixRef<T> W, WeightLayout layout) {
    Matrix<T> merged;
    Vector<T> norm;
    merged_weight("Dora::merge_into", W, layout, merged, norm);
    store(W, layout, merged);
    merge_norm_ = std::move(norm);
  }

  /// The inverse of merge_into: W = \f$W' \odot n / m - s B A\f$ with the norm n kept by the merge. Errors: no
  /// merge before (StateError); W of the wrong shape (ShapeError); a non-finite result (ValueError; W unchanged).
  void unmerge_from(MatrixRef<T> W, WeightLayout layout) {
    constexpr const char* where = "Dora::unmerge_from";
    check_weight(where, W, layout);
    if (merge_norm_.size() != out_) detail::fail<StateError>(where, "no merge_into before: the norm it used is unknown");
    const Vector<T> factor = merge_norm_.cwiseQuotient(magnitude_);
    Matrix<T> original(out_, in_);
    with_weight(ConstMatrixRef<T>(W), layout, [&](const auto& Wo) { original.noalias() = factor.asDiagonal() * Wo; });
    original.noalias() -= (scaling_ * B_) * A_;
    if (!detail::all_finite(original)) {
      detail::fail<ValueError>(where, "W n / m - s B A has non-finite entries (was the magnitude changed to 0 after the merge?); W is left unchanged");
    }
    store(W, layout, original);
    merge_norm_.resize(0);
  }

 private:
  /// Products sized on first use and reused by the norm.
  struct Workspace {
    Matrix<T> wa;    // [out x r] W A^T
    Matrix<T> gram;  // [r x r] A A^T
    Matrix<T> bg;    // [out x r] B A A^T
  };

  Dora(int /*private*/, const LoraConfig& config, Lora<T> lora)
      : in_(lora.in_features()),
        out_(lora.out_features()),
        config_(config),
        scaling_(lora.scaling()),
        A_(std::move(lora.A())),
        B_(std::move(lora.B())),
        dropout_(config.seed, config.dropout) {
    grad_A_.setZero(A_.rows(), A_.cols());
    grad_B_.setZero(B_.rows(), B_.cols());
    magnitude_.setZero(out_);
    grad_magnitude_.setZero(out_);
  }

  /// `staged` becomes current without a copy, and the spare keeps its size (no allocation in later steps).
  static void swap_in(Vector<T>& current, Vector<T>& staged) {
    current.swap(staged);
    staged.resize(current.size());
  }

  /// The constructor's checks of W (non-empty, finite), then the LoRA factors of `config` for its shape.
  static Lora<T> initial_lora(const Eigen::Ref<const Matrix<T>>& W, const LoraConfig& config) {
    detail::check_features("Dora::Dora", W.cols(), W.rows());
    detail::check_finite("Dora::Dora", "W", W);
    return Lora<T>(W.cols(), W.rows(), config);
  }

  /// f(W as [out x in]): W itself, or the transpose of a weight stored [in x out].
  template <class F>
  static void with_weight(const ConstMatrixRef<T>& W, WeightLayout layout, F&& f) {
    if (layout == WeightLayout::out_by_in) {
      f(W);
    } else {
      f(W.transpose());
    }
  }

  void check_weight(const char* where, const ConstMatrixRef<T>& W, WeightLayout layout) const {
    const bool transposed = layout == WeightLayout::in_by_out;
    detail::check_shape(where, "W", W.rows(), W.cols(), transposed ? in_ : out_, transposed ? out_ : in_);
  }

  /// norm_j = ||W_j + s B_j A|| from the factored expansion, combined in double (see the class comment).
  template <class WeightOutByIn>
  void row_norms(const WeightOutByIn& Wo, Workspace& work, Vector<T>& norm) const {
    work.wa.resize(out_, A_.rows());
    work.wa.noalias() = Wo * A_.transpose();
    work.gram.resize(A_.rows(), A_.rows());
    work.gram.noalias() = A_ * A_.transpose();
    work.bg.resize(out_, A_.rows());
    work.bg.noalias() = B_ * work.gram;
    const double s = static_cast<double>(scaling_);
    norm.resize(out_);
    for (Index j = 0; j < out_; ++j) {
      const double w2 = squared_norm(Wo.row(j));
      const double cross = B_.row(j).template cast<double>().dot(work.wa.row(j).template cast<double>());
      const double ba2 = B_.row(j).template cast<double>().dot(work.bg.row(j).template cast<double>());
      double n2 = w2 + 2 * s * cross + s * s * ba2;
      if (!(n2 >= 0.5 * (w2 + s * s * ba2))) {  // cancellation (or non-finite): the row itself
        const Eigen::Matrix<double, 1, Eigen::Dynamic> row =
            Wo.row(j).template cast<double>() + s * (B_.row(j).template cast<double>() * A_.template cast<double>());
        n2 = row.squaredNorm();
      }
      norm(j) = static_cast<T>(std::sqrt(n2));
    }
  }

  /// ||v||^2 accumulated in double over blocks of 256 entries, each summed by Eigen's vectorized squaredNorm in T
  /// (a float element-wise cast to double is not vectorized by Eigen 3.4: 20x slower at 4096 x 4096, more than
  /// the W A^T product itself; the blocks keep the error within about one rounding of T).
  template <class Row>
  static double squared_norm(const Row& v) {
    constexpr Index block = 256;
    double sum = 0;
    for (Index k = 0; k < v.size(); k += block) {
      sum += static_cast<double>(v.segment(k, std::min(block, v.size() - k)).squaredNorm());
    }
    return sum;
  }

  /// merged = c ⊙ (W + s B A) [out x in] and the norm used, computed from the dense sum (as PEFT's merge).
  void merged_weight(const char* where, const ConstMatrixRef<T>& W, WeightLayout layout, Matrix<T>& merged,
                     Vector<T>& norm) const {
    check_weight(where, W, layout);
    merged.resize(out_, in_);
    with_weight(W, layout, [&](const auto& Wo) { merged = Wo; });
    merged.noalias() += (scaling_ * B_) * A_;
    norm = merged.template cast<double>().rowwise().norm().template cast<T>();
    for (Index j = 0; j < out_; ++j) {
      if (!(norm(j) > 0)) detail::fail<ValueError>(where, "row ", j, " of W + s B A has norm ", norm(j), "; W is left unchanged");
      if (magnitude_(j) == T(0)) {
        detail::fail<ValueError>(where, "magnitude(", j, ") is 0: the merge would erase row ", j,
                                 " and could not be undone; W is left unchanged");
      }
    }
    merged = magnitude_.cwiseQuotient(norm).asDiagonal() * merged;
    if (!detail::all_finite(merged)) detail::fail<ValueError>(where, "the merged weight has non-finite entries; W is left unchanged");
  }

  /// W (as stored in `layout`) = value [out x in].
  static void store(MatrixRef<T> W, WeightLayout layout, const Matrix<T>& value) {
    if (layout == WeightLayout::out_by_in) {
      W = value;
    } else {
      W = value.transpose();
    }
  }

  void backward_gradients(const char* where, const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy,
                          const ConstMatrixRef<T>& W, WeightLayout layout) {
    detail::check_backward_batch<T>(where, x, dy, in_, out_, forward_rows_);
    check_weight(where, W, layout);
    detail::check_finite(where, "x", x);
    detail::check_finite(where, "dy", dy);
    staged_gc_.resize(dy.rows(), out_);
    staged_gc_.noalias() = dy * scale_.asDiagonal();
    lowrank_project_back<T>(staged_gc_, B_, scaling_, staged_t_);
    staged_dm_.setZero(out_);
    add_column_sums_of_product<T>(dy, pre_, staged_dm_);
    staged_dm_ = staged_dm_.cwiseQuotient(norm_);
    if (!detail::all_finite(staged_t_) || !detail::all_finite(staged_gc_) || !detail::all_finite(staged_dm_)) {
      check_parameters_finite(where);
      detail::fail<ValueError>(where, "the DoRA branch overflowed for finite dy (its entries are too large for the scalar type)");
    }
    detail::swap_in(gc_, staged_gc_);
    detail::swap_in(t_, staged_t_);
    const ConstMatrixRef<T> input = forward_used_dropout_ ? ConstMatrixRef<T>(dropout_.dropped()) : x;
    accumulate_factor_gradient<T>(gc_, xa_, scaling_, grad_B_);
    accumulate_factor_gradient<T>(t_, input, T(1), grad_A_);
    grad_magnitude_ += staged_dm_;
  }

  void check_parameters_finite(const char* where) const {
    detail::check_finite(where, "A", A_);
    detail::check_finite(where, "B", B_);
    detail::check_finite(where, "magnitude", magnitude_);
  }

  Index in_, out_;
  LoraConfig config_;
  T scaling_;
  Matrix<T> A_, B_, grad_A_, grad_B_;
  Vector<T> magnitude_, grad_magnitude_;
  bool training_ = true;
  detail::InputDropout<T> dropout_;
  Index forward_rows_ = -1;
  bool forward_used_dropout_ = false;
  Vector<T> merge_norm_;  // the norm the last merge used, until its unmerge
  // Workspaces of the last step (current and staged), sized on first use.
  Workspace work_;
  Vector<T> norm_, scale_, staged_norm_, staged_scale_;  // [out] n and c = m / n
  Matrix<T> xa_, staged_xa_;                            // [n x r] x~ A^T
  Matrix<T> pre_, staged_pre_;                          // [n x out] P = x~ W^T + s x~ A^T B^T
  Matrix<T> staged_base_;                               // [n x out] x~ W^T (with dropout)
  Matrix<T> gc_, staged_gc_;                            // [n x out] G ⊙ c
  Matrix<T> t_, staged_t_;                              // [n x r] s G_c B
  Vector<T> staged_dm_;                                 // [out] the magnitude's gradient of one backward
};

}  // namespace lorakit
