// What every adapter branch (Lora, Vera, ...) shares, written once: the argument checks of forward and backward,
// inverted dropout on the branch input, the checked dense update of a base weight (merge / unmerge), and the
// AdapterBranch base that puts them together with the bookkeeping between a forward and its backward.
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

/// Makes `staged` the current workspace: swaps the two (no copy) and gives the spare the same shape, so that once
/// sized (the first step), staging and swapping never allocate again while the batch size stays the same.
template <class T>
void swap_in(Matrix<T>& current, Matrix<T>& staged) {
  current.swap(staged);
  staged.resize(current.rows(), current.cols());
}

/// Inverted dropout on an adapter branch's input, as PEFT's `nn.Dropout(p)` in training mode:
/// \f$\tilde x = x \odot M\f$ with \f$M_{ij} = 1/(1-p)\f$ with probability \f$1-p\f$, else 0, drawn from
/// `Rng(seed, 1)` (stream 1 of the adapter's seed), one fresh mask per training forward.
///
/// A mask is first *staged* (drawn into spare storage from a copy of the generator) and becomes the current one
/// only by `commit()`, so a forward that is refused after the draw leaves the mask, the dropped input and the
/// generator's position as they were. The mask and the dropped input live in workspaces sized on first use and
/// reused (two of each: current and staged).
template <class T>
class InputDropout {
 public:
  InputDropout(std::uint64_t seed, double p) : p_(p), rng_(seed, 1), staged_rng_(rng_) {}

  double probability() const { return p_; }
  /// Whether a forward in this mode drops anything.
  bool active(bool training) const { return training && p_ > 0; }

  /// Draws a fresh mask M [n x in] into the staged storage and returns x ⊙ M (staged until `commit`).
  const Matrix<T>& stage(const ConstMatrixRef<T>& x) {
    staged_rng_ = rng_;
    staged_mask_.resize(x.rows(), x.cols());
    staged_rng_.fill_dropout_mask(staged_mask_, p_);
    staged_dropped_.resize(x.rows(), x.cols());
    staged_dropped_.noalias() = x.cwiseProduct(staged_mask_);
    return staged_dropped_;
  }

  /// The staged mask and dropped input become the current ones, and the generator moves past the draw.
  void commit() {
    swap_in(mask_, staged_mask_);
    swap_in(dropped_, staged_dropped_);
    rng_ = staged_rng_;
  }

  /// The mask of the last committed forward ([n x in], entries 0 or 1/(1-p)).
  const Matrix<T>& mask() const { return mask_; }
  /// x ⊙ M of the last committed forward.
  const Matrix<T>& dropped() const { return dropped_; }

  /// dx += product ⊙ M, where product [n x in] is evaluated into the staged storage (free between calls).
  template <class Product>
  void add_masked(const Product& product, MatrixRef<T> dx) {
    staged_dropped_.resize(mask_.rows(), mask_.cols());
    staged_dropped_.noalias() = product;
    dx.noalias() += staged_dropped_.cwiseProduct(mask_);
  }

 private:
  double p_;
  Rng rng_;
  Rng staged_rng_;
  Matrix<T> mask_, dropped_;                // [n x in], current
  Matrix<T> staged_mask_, staged_dropped_;  // [n x in], staged (or scratch)
};

/// What every adapter branch (`Lora`, `Vera`, ...) shares, written once: the shape, the training flag and the
/// input dropout, the argument checks of forward and backward, the bookkeeping between a forward and its
/// backward, the report of non-finite values, and merge / unmerge.
///
/// **Validate, then mutate.** Every check (shapes, a non-empty batch, finite x and dy, the forward a backward
/// belongs to, an overflow of the branch's products) runs before anything the object keeps changes: a call that
/// throws leaves the adapter bit-identical (parameters, gradients, workspaces, dropout mask, generator position).
/// The products are computed into staged workspaces that are swapped in (no copy, no allocation once sized) only
/// when they are finite.
///
/// `Derived` (CRTP) provides the adapter's own math:
/// - `static constexpr const char* forward_name, backward_name, merge_name, unmerge_name` (for messages);
/// - `bool stage_forward(const ConstMatrixRef<T>& input)`: the branch's projection of the (dropped) input into a
///   staged workspace; returns whether it is finite;
/// - `void commit_forward()`: the staged workspace becomes current;
/// - `void add_forward(MatrixRef<T> y)`: y += the branch's output, from the current workspaces;
/// - `bool stage_backward(const ConstMatrixRef<T>& dy)`: dy's image in the rank space, staged; returns finiteness;
/// - `void commit_backward(const ConstMatrixRef<T>& dy, const ConstMatrixRef<T>& input)`: swap it in and
///   accumulate the gradients (`input` is what the forward read: x, or x ⊙ M);
/// - `input_gradient()`: an expression of the gradient reaching the (dropped) input, [n x in];
/// - `delta()`: an expression of ΔW [out x in], and `static constexpr const char* delta_name`;
/// - `void check_parameters_finite(const char* where) const`.
template <class Derived, class T>
class AdapterBranch {
 public:
  using Scalar = T;

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }

  /// Training mode draws a fresh dropout mask on every forward; evaluation mode uses none.
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }
  /// The mask of the last training forward with dropout ([n x in], entries 0 or 1/(1-p)).
  const Matrix<T>& dropout_mask() const { return dropout_.mask(); }

  /// y += the branch's output for x [n x in], y [n x out]. Keeps what the backward needs.
  /// Errors (nothing changes): x empty or not [n x in], y not [n x out] (ShapeError); a NaN or Inf in x, or a
  /// product that overflows the scalar type (ValueError).
  void forward(const ConstMatrixRef<T>& x, MatrixRef<T> y) {
    constexpr const char* where = Derived::forward_name;
    check_batch<T>(where, x, in_);
    check_shape(where, "y", y.rows(), y.cols(), x.rows(), out_);
    check_finite(where, "x", x);
    const bool dropping = dropout_.active(training_);
    const bool finite = dropping ? derived().stage_forward(dropout_.stage(x)) : derived().stage_forward(x);
    if (!finite) report_overflow(where, "x");
    if (dropping) dropout_.commit();
    derived().commit_forward();
    forward_rows_ = x.rows();
    forward_used_dropout_ = dropping;
    derived().add_forward(y);
  }

  /// Accumulates the gradients and dx += the gradient reaching x (⊙ M with dropout). Needs the forward of the
  /// same x just before. Errors (nothing changes): shapes (ShapeError), no matching forward (StateError), a NaN or
  /// Inf in x or dy, or an overflow (ValueError).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx) {
    constexpr const char* where = Derived::backward_name;
    check_shape(where, "dx", dx.rows(), dx.cols(), x.rows(), in_);
    backward_gradients(where, x, dy);
    if (forward_used_dropout_) {
      dropout_.add_masked(derived().input_gradient(), dx);
    } else {
      dx.noalias() += derived().input_gradient();
    }
  }

  /// Accumulates the gradients only (no gradient for x is wanted).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    backward_gradients(Derived::backward_name, x, dy);
  }

  /// ΔW [out x in].
  Matrix<T> delta_weight() const { return derived().delta(); }

  /// W += ΔW. Errors: W not [out x in] (ShapeError); a non-finite result (ValueError; W is then left unchanged).
  void merge_into(MatrixRef<T> W) const {
    add_dense_update<T>(Derived::merge_name, W, out_, in_, T(1), derived().delta(), Derived::delta_name);
  }
  /// W -= ΔW, with the same checks as merge_into.
  void unmerge_from(MatrixRef<T> W) const {
    add_dense_update<T>(Derived::unmerge_name, W, out_, in_, T(-1), derived().delta(), Derived::delta_name);
  }

 protected:
  /// Validates the shape and the dropout probability. Errors: in or out < 1, dropout outside [0, 1) (ValueError).
  AdapterBranch(const char* where, Index in_features, Index out_features, std::uint64_t seed, double dropout)
      : in_(in_features), out_(out_features), dropout_(seed, dropout) {
    check_features(where, in_features, out_features);
    check_dropout(where, dropout);
  }

  bool forward_used_dropout() const { return forward_used_dropout_; }

 private:
  const Derived& derived() const { return static_cast<const Derived&>(*this); }
  Derived& derived() { return static_cast<Derived&>(*this); }

  void backward_gradients(const char* where, const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    check_backward_batch<T>(where, x, dy, in_, out_, forward_rows_);
    check_finite(where, "x", x);
    check_finite(where, "dy", dy);
    if (!derived().stage_backward(dy)) report_overflow(where, "dy");
    if (forward_used_dropout_) {
      derived().commit_backward(dy, dropout_.dropped());
    } else {
      derived().commit_backward(dy, x);
    }
  }

  /// A product of finite input overflowed: name the adapter's own non-finite parameters if there are any,
  /// otherwise say that the input's entries are too large for the scalar type.
  [[noreturn]] void report_overflow(const char* where, const char* name) const {
    derived().check_parameters_finite(where);
    fail<ValueError>(where, "the adapter branch overflowed for finite ", name,
                     " (its entries are too large for the scalar type)");
  }

  Index in_;
  Index out_;
  bool training_ = true;
  InputDropout<T> dropout_;
  Index forward_rows_ = -1;
  bool forward_used_dropout_ = false;
};

}  // namespace lorakit::detail
