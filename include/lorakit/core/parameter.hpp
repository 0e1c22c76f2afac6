// lorakit::Parameter: a trainable tensor seen flat, with its gradient, for optimizers and serializers.
#pragma once

#include "lorakit/core/types.hpp"

#include <string>

namespace lorakit {

/// A view of one trainable tensor and its gradient as flat vectors over the owner's memory (row-major order).
/// It stays valid while the owner (an adapter) is alive and does not reallocate the tensor. Note that
/// move-assigning a temporary to the owner's matrix (`lora.A() = some_function();`) hands the matrix the
/// temporary's storage: write in place (`lora.A().noalias() = ...`, `lora.A() = expression`) to keep views valid,
/// or take `parameters()` again. Eigen::Map members copy coefficients on assignment: rebind by constructing.
template <class T>
struct Parameter {
  std::string name;
  Eigen::Map<Vector<T>> value;
  Eigen::Map<Vector<T>> grad;
};

/// A flat view of a matrix (owned by the caller), as a Parameter's `value` or `grad`.
template <class T>
Eigen::Map<Vector<T>> flat_view(Matrix<T>& m) {
  return Eigen::Map<Vector<T>>(m.data(), m.size());
}

template <class T>
Eigen::Map<Vector<T>> flat_view(Vector<T>& v) {
  return Eigen::Map<Vector<T>>(v.data(), v.size());
}

/// The narrow view of an optimizer that a rank change needs (rank/squeeze.hpp), so that rank/ depends on no
/// concrete optimizer: whether it tracks a parameter, and rebinding a parameter to a new tensor with fresh state.
/// `AdamW` implements it; so can a user's own optimizer.
template <class T>
class ParameterTracker {
 public:
  virtual ~ParameterTracker() = default;
  /// Whether the optimizer holds a parameter named `name`.
  virtual bool tracks(const std::string& name) const = 0;
  /// Rebinds `name` to `parameter`'s views (a reallocated tensor, possibly of another size) and forgets its state.
  virtual void restart(const std::string& name, Parameter<T> parameter) = 0;

 protected:
  ParameterTracker() = default;
  ParameterTracker(const ParameterTracker&) = default;
  ParameterTracker& operator=(const ParameterTracker&) = default;
};

}  // namespace lorakit
