// Exceptions of lorakit and the small helpers that build their messages.
//
// Every message has the form "Function::name: what was seen, what was expected", e.g.
// "Lora::forward: x has 300 columns, expected in_features = 256".
#pragma once

#include "lorakit/core/types.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace lorakit {

/// Base of every exception lorakit throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An argument has the wrong shape (rows, columns, length) for the call.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// An argument has a value outside its domain: a rank of 0, a NaN, a negative budget, ...
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A call made in the wrong state (backward before forward, training a merged layer, ...).
class StateError : public Error {
 public:
  using Error::Error;
};

/// Reading or writing a file failed, or a file is malformed.
class IoError : public Error {
 public:
  using Error::Error;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  out.precision(17);
  (out << ... << parts);
  return out.str();
}

/// Throws `E` with the message "where: what...".
template <class E = Error, class... Parts>
[[noreturn]] void fail(const char* where, const Parts&... what) {
  throw E(concat(where, ": ", what...));
}

/// `name` must have `expected` rows.
inline void check_rows(const char* where, const char* name, Index rows, Index expected, const char* expected_name) {
  if (rows != expected) {
    fail<ShapeError>(where, name, " has ", rows, " rows, expected ", expected_name, " = ", expected);
  }
}

/// `name` must have `expected` columns.
inline void check_cols(const char* where, const char* name, Index cols, Index expected, const char* expected_name) {
  if (cols != expected) {
    fail<ShapeError>(where, name, " has ", cols, " columns, expected ", expected_name, " = ", expected);
  }
}

/// `name` must be `rows x cols`.
inline void check_shape(const char* where, const char* name, Index rows, Index cols, Index expected_rows,
                        Index expected_cols) {
  if (rows != expected_rows || cols != expected_cols) {
    fail<ShapeError>(where, name, " is [", rows, " x ", cols, "], expected [", expected_rows, " x ", expected_cols,
                     "]");
  }
}

/// True when every entry of `m` is finite, in one vectorized pass: x - x is 0 for every finite x and NaN for an
/// infinity or a NaN, so the sum of x - x over the matrix is 0 exactly when all entries are finite (IEEE
/// arithmetic, which core/types.hpp enforces by refusing fast-math builds). Eigen's `allFinite()` tests the same
/// with a scalar, branching reduction that does not vectorize (docs/kernel.md).
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& m) {
  if (m.size() == 0) return true;
  const auto& values = m.derived().array();
  return (values - values).sum() == 0;
}

/// Throws ValueError naming the first non-finite entry of `m`, if there is one (the common case, every entry
/// finite, costs one pass of `all_finite`).
template <class Derived>
void check_finite(const char* where, const char* name, const Eigen::DenseBase<Derived>& m) {
  if (all_finite(m)) return;
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) {
      const auto v = m(i, j);
      if (!std::isfinite(static_cast<double>(v))) {
        fail<ValueError>(where, name, "[", i, ", ", j, "] is ", static_cast<double>(v), ", expected a finite value");
      }
    }
  }
}

/// Throws ValueError if a scalar argument is not finite.
inline void check_finite_scalar(const char* where, const char* name, double value) {
  if (!std::isfinite(value)) fail<ValueError>(where, name, " is ", value, ", expected a finite value");
}

}  // namespace detail
}  // namespace lorakit
