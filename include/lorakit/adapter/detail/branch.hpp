// Pieces that every adapter branch (Lora, Vera) shares: the argument checks of forward and backward,
// inverted dropout on the branch input, and the checked dense update of a base weight (merge / unmerge).
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"

#include <cstdint>

namespace lorakit::detail {

/// in_features and out_features must be >= 1.
inline void check_features(const char* where, Index in, Index out) {
  if (in < 1) fail<ValueError>(where, "in_features is ", in, ", expected >= 1");
  if (out < 1) fail<ValueError>(where, "out_features is ", out, ", expected >= 1");
}

/// A dropout probability must lie in [0, 1).
inline void check_dropout(const char* where, double p) {
  if (!(p >= 0 && p < 1)) fail<ValueError>(where, "dropout is ", p, ", expected 0 <= dropout < 1");
}

/// x must be a non-empty batch [n x in_features].
template <class T>
void check_batch(const char* where, const ConstMatrixRef<T>& x, Index in_features) {
  if (x.rows() == 0) fail<ShapeError>(where, "x has 0 rows, expected a non-empty batch");
  check_cols(where, "x", x.cols(), in_features, "in_features");
}

/// The arguments of a backward: x a batch, dy [n x out_features], and a forward of the same batch just before.
template <class T>
void check_backward_batch(const char* where, const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy,
                          Index in_features, Index out_features, Index forward_rows) {
  check_batch(where, x, in_features);
  check_shape(where, "dy", dy.rows(), dy.cols(), x.rows(), out_features);
  if (forward_rows != x.rows()) {
    fail<StateError>(where, "x has ", x.rows(), " rows but the last forward saw ", forward_rows,
                     " (call forward on the same batch first)");
  }
}

/// W += sign * delta for a dense [out x in] update `delta` (an Eigen expression), or nothing at all if the
/// result would have non-finite entries (then a ValueError says "W is left unchanged").
template <class T, class Delta>
void add_dense_update(const char* where, MatrixRef<T> W, Index out, Index in, T sign, const Delta& delta,
                      const char* delta_name) {
  check_shape(where, "W", W.rows(), W.cols(), out, in);
  Matrix<T> result = W;
  result.noalias() += sign * delta;
  if (!all_finite(result)) {
    fail<ValueError>(where, "W + (", static_cast<double>(sign), ") * ", delta_name,
                     " has non-finite entries; W is left unchanged");
  }
  W = result;
}

/// Inverted dropout on an adapter branch's input, as PEFT's `nn.Dropout(p)` in training mode:
/// \f$\tilde x = x \odot M\f$ with \f$M_{ij} = 1/(1-p)\f$ with probability \f$1-p\f$, else 0, drawn from
/// `Rng(seed, 1)` (stream 1 of the adapter's seed), one fresh mask per training forward.
/// The mask and the dropped input live in workspaces sized on first use and reused.
template <class T>
class InputDropout {
 public:
  InputDropout(std::uint64_t seed, double p) : p_(p), rng_(seed, 1) {}

  double probability() const { return p_; }
  /// Whether a forward in this mode drops anything.
  bool active(bool training) const { return training && p_ > 0; }

  /// Draws a fresh mask M [n x in] and returns x ⊙ M.
  const Matrix<T>& apply(const ConstMatrixRef<T>& x) {
    mask_.resize(x.rows(), x.cols());
    rng_.fill_dropout_mask(mask_, p_);
    dropped_.resize(x.rows(), x.cols());
    dropped_.noalias() = x.cwiseProduct(mask_);
    return dropped_;
  }

  /// The mask of the last `apply` ([n x in], entries 0 or 1/(1-p)).
  const Matrix<T>& mask() const { return mask_; }
  /// x ⊙ M of the last `apply`, until `add_masked` reuses its storage.
  const Matrix<T>& dropped() const { return dropped_; }

  /// dx += product ⊙ M, where product [n x in] is evaluated into the dropped input's storage
  /// (so the dropped input is gone afterwards).
  template <class Product>
  void add_masked(const Product& product, MatrixRef<T> dx) {
    dropped_.noalias() = product;
    dx.noalias() += dropped_.cwiseProduct(mask_);
  }

 private:
  double p_;
  Rng rng_;
  Matrix<T> mask_;     // [n x in]
  Matrix<T> dropped_;  // [n x in]
};

}  // namespace lorakit::detail
