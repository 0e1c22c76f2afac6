// lorakit::AdaptedLinear: a frozen linear layer (base weight and optional bias) with an adapter on it.
#pragma once

#include "lorakit/adapter/adapter_concept.hpp"
#include "lorakit/adapter/detail/branch.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"

#include <optional>
#include <utility>

namespace lorakit {

namespace detail {
/// W += sign ΔW for the adapter's ΔW [out x in] and a weight stored in `layout` (transposed for in_by_out).
/// Errors: W of the wrong shape (ShapeError); a non-finite result (ValueError; W is then left unchanged).
template <class Adapter>
void add_update(const char* where, const Adapter& adapter, MatrixRef<typename Adapter::Scalar> W, WeightLayout layout,
                typename Adapter::Scalar sign) {
  using T = typename Adapter::Scalar;
  if (layout == WeightLayout::out_by_in) {
    if (sign > T(0)) {
      adapter.merge_into(W);
    } else {
      adapter.unmerge_from(W);
    }
    return;
  }
  detail::check_shape(where, "W", W.rows(), W.cols(), adapter.in_features(), adapter.out_features());
  const Matrix<T> delta = adapter.delta_weight();
  detail::add_dense_update<T>(where, W, adapter.in_features(), adapter.out_features(), sign, delta.transpose(),
                              "the transposed update");
}
}  // namespace detail

/// W += ΔW for a weight stored in `layout` (merge_into, or its transpose for Conv1D-style weights).
template <class Adapter>
void merge_into(const Adapter& adapter, MatrixRef<typename Adapter::Scalar> W, WeightLayout layout) {
  detail::add_update("merge_into", adapter, W, layout, typename Adapter::Scalar(1));
}

/// W -= ΔW for a weight stored in `layout`.
template <class Adapter>
void unmerge_from(const Adapter& adapter, MatrixRef<typename Adapter::Scalar> W, WeightLayout layout) {
  detail::add_update("unmerge_from", adapter, W, layout, typename Adapter::Scalar(-1));
}

/// A frozen linear layer plus an adapter (`Lora<T>`, `Vera<T>`, `AdapterRef<...>` to an adapter of an
/// `AdapterSet`, or any type with the concept of adapter_concept.hpp):
/// \f[ y = x W^\top + b + \mathrm{adapter}(x),\qquad W \in \mathbb{R}^{out\times in}. \f]
/// The base weight is either owned or a view of the caller's memory (a libtorch tensor, a ggml buffer), stored
/// [out x in] or, with `WeightLayout::in_by_out`, [in x out] (GPT-2's Conv1D); it is never written except by
/// `merge()` / `unmerge()`, which fold \f$\Delta W\f$ into it and back. A merged layer's forward is the single
/// product \f$x (W + \Delta W)^\top + b\f$.
///
/// An adapter that needs the base weight (`Dora<T>`: `needs_base_weight`, adapter_concept.hpp) is handed this
/// layer's W, as stored, in every call: it computes what it derives from W once per step and no second copy of W
/// exists. Its forward receives x W^T and returns the adapted output (the bias is added after); its backward
/// writes the whole dx.
template <class T, class Adapter>
class AdaptedLinear {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  static_assert(needs_base_weight_v<Adapter> ? is_base_weight_adapter_v<Adapter> : is_adapter_v<Adapter>,
                "AdaptedLinear<T, Adapter>: Adapter must model the adapter concept (Scalar, in_features, out_features, "
                "forward, both backward overloads, merge_into, unmerge_from, delta_weight, parameters), or its form "
                "with the base weight when it declares needs_base_weight: see adapter_concept.hpp");
  static_assert(std::is_same_v<typename Adapter::Scalar, T>, "AdaptedLinear: the adapter's scalar type must be T");

 public:
  using WeightMap = Eigen::Map<Matrix<T>, 0, Eigen::OuterStride<>>;
  using ConstWeightMap = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;

  /// A layer that owns its base weight: W [out x in], or [in x out] with `WeightLayout::in_by_out`.
  /// Errors: a weight whose shape is not the adapter's (ShapeError), NaN or Inf in it (ValueError).
  static AdaptedLinear owning(Matrix<T> weight, Adapter adapter, WeightLayout layout = WeightLayout::out_by_in) {
    const Index rows = weight.rows(), cols = weight.cols();
    check_weight(rows, cols, adapter, layout);
    return AdaptedLinear(std::move(weight), nullptr, 0, std::move(adapter), rows, cols, layout);
  }

  /// A layer over the caller's W (as in `owning`); the memory must outlive the layer. Errors: as `owning`.
  static AdaptedLinear viewing(MatrixRef<T> weight, Adapter adapter, WeightLayout layout = WeightLayout::out_by_in) {
    check_weight(weight.rows(), weight.cols(), adapter, layout);
    return AdaptedLinear(Matrix<T>(), weight.data(), weight.outerStride(), std::move(adapter), weight.rows(),
                         weight.cols(), layout);
  }

  Index in_features() const { return adapter_.in_features(); }
  Index out_features() const { return adapter_.out_features(); }
  WeightLayout layout() const { return layout_; }

  /// The base weight as stored: [out x in], or [in x out] with `WeightLayout::in_by_out`.
  WeightMap weight() { return WeightMap(weight_data(), rows_, cols_, Eigen::OuterStride<>(stride())); }
  ConstWeightMap weight() const { return ConstWeightMap(weight_data(), rows_, cols_, Eigen::OuterStride<>(stride())); }

  /// Sets the frozen bias b [out].
  void set_bias(const ConstVectorRef<T>& bias) {
    if (bias.size() != out_features()) {
      detail::fail<ShapeError>("AdaptedLinear::set_bias", "bias has ", bias.size(), " entries, expected out_features = ",
                               out_features());
    }
    detail::check_finite("AdaptedLinear::set_bias", "bias", bias);
    bias_ = bias;
  }
  const std::optional<Vector<T>>& bias() const { return bias_; }

  Adapter& adapter() { return adapter_; }
  const Adapter& adapter() const { return adapter_; }
  bool merged() const { return merged_; }

  /// y = x W^T + b + adapter(x): x [n x in], y [n x out] (overwritten; unspecified if an Error is thrown).
  void forward(const ConstMatrixRef<T>& x, MatrixRef<T> y) {
    constexpr const char* where = "AdaptedLinear::forward";
    detail::check_cols(where, "x", x.cols(), in_features(), "in_features");
    detail::check_shape(where, "y", y.rows(), y.cols(), x.rows(), out_features());
    if constexpr (needs_base_weight_v<Adapter>) {
      if (merged_) {
        base_forward(x, y);
        return;
      }
      base_product(x, y);
      adapter_.forward(x, weight(), layout_, y);  // y = x W^T on entry, the adapted output on return
      if (bias_) y.rowwise() += bias_->transpose();
    } else {
      base_forward(x, y);
      if (!merged_) adapter_.forward(x, y);  // accumulates into y
    }
  }

  /// dx = dy W (overwritten; unspecified if an Error is thrown) and the adapter's gradients (accumulated; left
  /// unchanged if an Error is thrown). W is never touched.
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx) {
    constexpr const char* where = "AdaptedLinear::backward";
    require_unmerged(where);
    detail::check_shape(where, "dx", dx.rows(), dx.cols(), x.rows(), in_features());
    detail::check_shape(where, "dy", dy.rows(), dy.cols(), x.rows(), out_features());
    if constexpr (needs_base_weight_v<Adapter>) {
      adapter_.backward(x, dy, weight(), layout_, dx);  // writes the whole dx, base path included
    } else {
      if (layout_ == WeightLayout::out_by_in) {
        dx.noalias() = dy * weight();
      } else {
        dx.noalias() = dy * weight().transpose();
      }
      adapter_.backward(x, dy, dx);  // accumulates into dx
    }
  }

  /// The adapter's gradients only (the first layer of a network needs no dx).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    require_unmerged("AdaptedLinear::backward");
    if constexpr (needs_base_weight_v<Adapter>) {
      adapter_.backward(x, dy, weight(), layout_);
    } else {
      adapter_.backward(x, dy);
    }
  }

  /// W += ΔW; the forward then skips the adapter path. Errors: already merged; a non-finite result.
  void merge() {
    if (merged_) detail::fail<StateError>("AdaptedLinear::merge", "the adapter is already merged");
    if constexpr (needs_base_weight_v<Adapter>) {
      adapter_.merge_into(weight(), layout_);
    } else {
      merge_into(adapter_, weight(), layout_);
    }
    merged_ = true;
  }

  /// W -= ΔW. Errors: not merged.
  void unmerge() {
    if (!merged_) detail::fail<StateError>("AdaptedLinear::unmerge", "the adapter is not merged");
    if constexpr (needs_base_weight_v<Adapter>) {
      adapter_.unmerge_from(weight(), layout_);
    } else {
      unmerge_from(adapter_, weight(), layout_);
    }
    merged_ = false;
  }

 private:
  AdaptedLinear(Matrix<T> owned, T* view, Index view_stride, Adapter adapter, Index rows, Index cols,
                WeightLayout layout)
      : owned_(std::move(owned)),
        view_(view),
        view_stride_(view_stride),
        rows_(rows),
        cols_(cols),
        layout_(layout),
        adapter_(std::move(adapter)) {
    detail::check_finite("AdaptedLinear", "weight", weight());
  }

  /// The weight's shape must be the adapter's, [out x in] (or [in x out] with in_by_out), checked before any
  /// element is touched (a 0 x 0 weight is a ShapeError like any other mismatch).
  static void check_weight(Index rows, Index cols, const Adapter& adapter, WeightLayout layout) {
    const bool transposed = layout == WeightLayout::in_by_out;
    const Index expected_rows = transposed ? adapter.in_features() : adapter.out_features();
    const Index expected_cols = transposed ? adapter.out_features() : adapter.in_features();
    if (rows != expected_rows || cols != expected_cols) {
      detail::fail<ShapeError>("AdaptedLinear", "weight is [", rows, " x ", cols, "], but the adapter is for [",
                               expected_rows, " x ", expected_cols, "]", transposed ? " (in_by_out layout)" : "");
    }
  }

  void base_forward(const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    base_product(x, y);
    if (bias_) y.rowwise() += bias_->transpose();
  }

  /// y = x W^T (no bias).
  void base_product(const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    if (layout_ == WeightLayout::out_by_in) {
      y.noalias() = x * weight().transpose();
    } else {
      y.noalias() = x * weight();
    }
  }

  void require_unmerged(const char* where) const {
    if (merged_) detail::fail<StateError>(where, "the adapter is merged into W; unmerge() before training");
  }

  T* weight_data() { return view_ ? view_ : owned_.data(); }
  const T* weight_data() const { return view_ ? view_ : owned_.data(); }
  Index stride() const { return view_ ? view_stride_ : cols_; }

  Matrix<T> owned_;
  T* view_ = nullptr;
  Index view_stride_ = 0;
  Index rows_ = 0, cols_ = 0;  // the weight as stored
  WeightLayout layout_ = WeightLayout::out_by_in;
  std::optional<Vector<T>> bias_;
  Adapter adapter_;
  bool merged_ = false;
};

}  // namespace lorakit
