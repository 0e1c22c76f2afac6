// Checks that every adapter type (Lora, Vera: the same duck-typed concept) must pass, written once over the
// concept: gradients accumulate across backward calls until zero_grad, with or without dx; a refused call changes
// nothing.
#pragma once

#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/core/error.hpp>

#include <limits>

namespace lorakit::testing {

/// One forward and backward of (x, G) with dx accumulated into a random start; returns what was added to dx.
/// Then checks, through `parameters()`, that a second step (without dx) doubles every gradient and that
/// `zero_grad()` clears them; the adapter's gradients are left as after the first step.
template <class Adapter>
Matrix<typename Adapter::Scalar> check_step_and_accumulation(Adapter& adapter, const Matrix<typename Adapter::Scalar>& x,
                                                            const Matrix<typename Adapter::Scalar>& G) {
  using T = typename Adapter::Scalar;
  Matrix<T> y = Matrix<T>::Zero(x.rows(), adapter.out_features());
  const Matrix<T> dx0 = random_matrix<T>(x.rows(), adapter.in_features(), 23);
  Matrix<T> dx = dx0;
  adapter.forward(x, y);
  adapter.backward(x, G, dx);
  std::vector<Vector<T>> once;
  for (auto& parameter : adapter.parameters()) once.emplace_back(parameter.grad);

  adapter.forward(x, y);
  adapter.backward(x, G);
  auto parameters = adapter.parameters();
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    INFO("parameter " << parameters[i].name);
    CHECK(relative_error(parameters[i].grad, Vector<T>(2 * once[i])) < 1e-6);
  }
  adapter.zero_grad();
  for (std::size_t i = 0; i < parameters.size(); ++i) {
    CHECK(parameters[i].grad.isZero(0));
    parameters[i].grad = once[i];
  }
  return dx - dx0;
}

/// The promise "a refused call changes nothing", over the adapter concept: `adapter` (in training mode, with
/// dropout if it has any) takes one good step, then every bad call (NaN or Inf in x or dy, a NaN x in a backward
/// after a finite forward, wrong shapes, an empty batch, a backward of another batch) must throw a lorakit::Error.
/// A copy taken before the bad calls and the adapter then take the same good step: outputs, dx, gradients and
/// dropout masks (so the generator's position too) must be bit-identical.
template <class Adapter>
void check_refused_calls_change_nothing(Adapter& adapter, const Matrix<typename Adapter::Scalar>& x,
                                        const Matrix<typename Adapter::Scalar>& dy) {
  using T = typename Adapter::Scalar;
  const Index n = x.rows(), in = adapter.in_features(), out = adapter.out_features();
  Matrix<T> y = Matrix<T>::Zero(n, out), dx = Matrix<T>::Zero(n, in);
  adapter.forward(x, y);
  adapter.backward(x, dy, dx);
  Adapter untouched = adapter;

  Matrix<T> nan_x = x, inf_dy = dy, wide_x(n, in + 1), empty_x(0, in), empty_y(0, out);
  nan_x(n - 1, in / 2) = std::numeric_limits<T>::quiet_NaN();
  inf_dy(0, out - 1) = std::numeric_limits<T>::infinity();
  wide_x.setOnes();
  Matrix<T> y_bad = Matrix<T>::Zero(n, out), dx_bad = Matrix<T>::Zero(n, in);
  CHECK_THROWS_AS(adapter.forward(nan_x, y_bad), Error);
  CHECK_THROWS_AS(adapter.forward(wide_x, y_bad), Error);
  CHECK_THROWS_AS(adapter.forward(empty_x, empty_y), Error);
  CHECK_THROWS_AS(adapter.backward(x, inf_dy, dx_bad), Error);
  CHECK_THROWS_AS(adapter.backward(nan_x, dy, dx_bad), Error);  // NaN x after a finite forward
  CHECK_THROWS_AS(adapter.backward(x, inf_dy), Error);
  CHECK_THROWS_AS(adapter.backward(x.topRows(n - 1), dy.topRows(n - 1)), Error);  // not the forward's batch
  CHECK((dx_bad.array() == T(0)).all());

  Matrix<T> y1 = Matrix<T>::Zero(n, out), y2 = Matrix<T>::Zero(n, out);
  Matrix<T> dx1 = Matrix<T>::Zero(n, in), dx2 = Matrix<T>::Zero(n, in);
  adapter.forward(x, y1);
  untouched.forward(x, y2);
  CHECK(y1 == y2);
  CHECK(adapter.dropout_mask() == untouched.dropout_mask());
  adapter.backward(x, dy, dx1);
  untouched.backward(x, dy, dx2);
  CHECK(dx1 == dx2);
  auto got = adapter.parameters(), expected = untouched.parameters();
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("parameter " << got[i].name);
    CHECK(got[i].value == expected[i].value);
    CHECK(got[i].grad == expected[i].grad);
  }
}

}  // namespace lorakit::testing
