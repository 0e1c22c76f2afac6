// lorakit::AdapterRef: a non-owning handle to an adapter that lives elsewhere (usually in an AdapterSet), itself
// an adapter, so that a model's layers and its adapter set are the same adapters.
#pragma once

#include "lorakit/adapter/adapter_concept.hpp"
#include "lorakit/core/error.hpp"

#include <vector>

namespace lorakit {

/// A reference to an adapter owned by someone else, with the adapter concept (adapter_concept.hpp) forwarded.
///
/// The headline workflow builds the adapters as a set (`AdapterSet`: EVA and LoRA-DA initialize it, LoRA-Squeeze
/// replaces its adapters in place, AdamW walks its parameters, io/ saves it) and trains them through the model's
/// layers. A layer of type `AdaptedLinear<T, AdapterRef<Lora<T>>>` built over `set.ref(name)` sees the set's
/// adapter, including one that `set.at(name) = squeezed` replaced. The owner must outlive the handle (an
/// `AdapterSet` never moves its adapters).
template <class Adapter>
class AdapterRef {
  static_assert(is_adapter_v<Adapter> || is_base_weight_adapter_v<Adapter>,
                "AdapterRef: Adapter must model the adapter concept, or its form with the base weight (adapter_concept.hpp)");

 public:
  using Scalar = typename Adapter::Scalar;
  using Referenced = Adapter;
  /// As the referenced adapter's (`Dora<T>` needs the base weight; then the calls below that take W forward).
  static constexpr bool needs_base_weight = needs_base_weight_v<Adapter>;

  explicit AdapterRef(Adapter& adapter) : adapter_(&adapter) {}

  Adapter& get() const { return *adapter_; }
  Adapter* operator->() const { return adapter_; }
  Adapter& operator*() const { return *adapter_; }

  Index in_features() const { return adapter_->in_features(); }
  Index out_features() const { return adapter_->out_features(); }
  void forward(const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> y) { adapter_->forward(x, y); }
  void backward(const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& dy, MatrixRef<Scalar> dx) {
    adapter_->backward(x, dy, dx);
  }
  void backward(const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& dy) { adapter_->backward(x, dy); }
  void zero_grad() { adapter_->zero_grad(); }
  Matrix<Scalar> delta_weight() const { return adapter_->delta_weight(); }
  void merge_into(MatrixRef<Scalar> W) const { adapter_->merge_into(W); }
  void unmerge_from(MatrixRef<Scalar> W) const { adapter_->unmerge_from(W); }
  // The calls of an adapter that needs the base weight (instantiated only when used).
  void forward(const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& W, WeightLayout layout,
               MatrixRef<Scalar> y) {
    adapter_->forward(x, W, layout, y);
  }
  void backward(const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& dy, const ConstMatrixRef<Scalar>& W,
                WeightLayout layout, MatrixRef<Scalar> dx) {
    adapter_->backward(x, dy, W, layout, dx);
  }
  void backward(const ConstMatrixRef<Scalar>& x, const ConstMatrixRef<Scalar>& dy, const ConstMatrixRef<Scalar>& W,
                WeightLayout layout) {
    adapter_->backward(x, dy, W, layout);
  }
  void merge_into(MatrixRef<Scalar> W, WeightLayout layout) { adapter_->merge_into(W, layout); }
  void unmerge_from(MatrixRef<Scalar> W, WeightLayout layout) { adapter_->unmerge_from(W, layout); }
  Matrix<Scalar> delta_weight(const ConstMatrixRef<Scalar>& W, WeightLayout layout) const {
    return adapter_->delta_weight(W, layout);
  }
  Index num_parameters() const { return adapter_->num_parameters(); }
  std::vector<Parameter<Scalar>> parameters() { return adapter_->parameters(); }

 private:
  Adapter* adapter_;
};

}  // namespace lorakit
