// lorakit::AdaptedLinear: a frozen linear layer (base weight and optional bias) with an adapter on it.
#pragma once

#include "lorakit/adapter/adapter_concept.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"

#include <optional>
#include <utility>

namespace lorakit {

/// A frozen linear layer plus an adapter (`Lora<T>`, `Vera<T>`, `AdapterRef<...>` to an adapter of an
/// `AdapterSet`, or any type with the concept of adapter_concept.hpp):
/// \f[ y = x W^\top + b + \mathrm{adapter}(x),\qquad W \in \mathbb{R}^{out\times in}. \f]
/// The base weight is either owned or a view of the caller's memory (a libtorch tensor, a ggml buffer); it is
/// never written except by `merge()` / `unmerge()`, which fold \f$\Delta W\f$ into it and back. A merged layer's
/// forward is the single product \f$x (W + \Delta W)^\top + b\f$.
template <class T, class Adapter>
class AdaptedLinear {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  static_assert(is_adapter_v<Adapter>,
                "AdaptedLinear<T, Adapter>: Adapter must model the adapter concept (Scalar, in_features, out_features, "
                "forward, both backward overloads, merge_into, unmerge_from, parameters: see adapter_concept.hpp)");
  static_assert(std::is_same_v<typename Adapter::Scalar, T>, "AdaptedLinear: the adapter's scalar type must be T");

 public:
  using WeightMap = Eigen::Map<Matrix<T>, 0, Eigen::OuterStride<>>;
  using ConstWeightMap = Eigen::Map<const Matrix<T>, 0, Eigen::OuterStride<>>;

  /// A layer that owns its base weight W [out x in].
  static AdaptedLinear owning(Matrix<T> weight, Adapter adapter) {
    return AdaptedLinear(std::move(weight), nullptr, 0, std::move(adapter));
  }

  /// A layer over the caller's W [out x in]; the memory must outlive the layer.
  static AdaptedLinear viewing(MatrixRef<T> weight, Adapter adapter) {
    return AdaptedLinear(Matrix<T>(), &weight(0, 0), weight.outerStride(), std::move(adapter), weight.rows(),
                         weight.cols());
  }

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }

  WeightMap weight() { return WeightMap(weight_data(), out_, in_, Eigen::OuterStride<>(stride())); }
  ConstWeightMap weight() const { return ConstWeightMap(weight_data(), out_, in_, Eigen::OuterStride<>(stride())); }

  /// Sets the frozen bias b [out].
  void set_bias(const ConstVectorRef<T>& bias) {
    if (bias.size() != out_) {
      detail::fail<ShapeError>("AdaptedLinear::set_bias", "bias has ", bias.size(), " entries, expected out_features = ",
                               out_);
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
    detail::check_cols(where, "x", x.cols(), in_, "in_features");
    detail::check_shape(where, "y", y.rows(), y.cols(), x.rows(), out_);
    base_forward(x, y);
    if (!merged_) adapter_.forward(x, y);  // accumulates into y
  }

  /// dx = dy W (overwritten) and the adapter's gradients (accumulated). W is never touched.
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx) {
    constexpr const char* where = "AdaptedLinear::backward";
    require_unmerged(where);
    detail::check_shape(where, "dx", dx.rows(), dx.cols(), x.rows(), in_);
    detail::check_shape(where, "dy", dy.rows(), dy.cols(), x.rows(), out_);
    dx.noalias() = dy * weight();
    adapter_.backward(x, dy, dx);  // accumulates into dx
  }

  /// The adapter's gradients only (the first layer of a network needs no dx).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    require_unmerged("AdaptedLinear::backward");
    adapter_.backward(x, dy);
  }

  /// W += ΔW; the forward then skips the adapter path. Errors: already merged; a non-finite result.
  void merge() {
    if (merged_) detail::fail<StateError>("AdaptedLinear::merge", "the adapter is already merged");
    adapter_.merge_into(weight());
    merged_ = true;
  }

  /// W -= ΔW. Errors: not merged.
  void unmerge() {
    if (!merged_) detail::fail<StateError>("AdaptedLinear::unmerge", "the adapter is not merged");
    adapter_.unmerge_from(weight());
    merged_ = false;
  }

 private:
  AdaptedLinear(Matrix<T> owned, T* view, Index view_stride, Adapter adapter, Index rows = -1, Index cols = -1)
      : owned_(std::move(owned)), view_(view), view_stride_(view_stride), adapter_(std::move(adapter)) {
    out_ = view_ ? rows : owned_.rows();
    in_ = view_ ? cols : owned_.cols();
    constexpr const char* where = "AdaptedLinear";
    if (out_ != adapter_.out_features() || in_ != adapter_.in_features()) {
      detail::fail<ShapeError>(where, "weight is [", out_, " x ", in_, "], but the adapter is for [",
                               adapter_.out_features(), " x ", adapter_.in_features(), "]");
    }
    detail::check_finite(where, "weight", weight());
  }

  void base_forward(const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    y.noalias() = x * weight().transpose();
    if (bias_) y.rowwise() += bias_->transpose();
  }

  void require_unmerged(const char* where) const {
    if (merged_) detail::fail<StateError>(where, "the adapter is merged into W; unmerge() before training");
  }

  T* weight_data() { return view_ ? view_ : owned_.data(); }
  const T* weight_data() const { return view_ ? view_ : owned_.data(); }
  Index stride() const { return view_ ? view_stride_ : in_; }

  Matrix<T> owned_;
  T* view_ = nullptr;
  Index view_stride_ = 0;
  Index out_ = 0, in_ = 0;
  std::optional<Vector<T>> bias_;
  Adapter adapter_;
  bool merged_ = false;
};

}  // namespace lorakit
