// Checks that every adapter type (Lora, Vera: the same duck-typed concept) must pass, written once over the
// concept: gradients accumulate across backward calls until zero_grad, with or without dx.
#pragma once

#include <catch2/catch.hpp>

#include "test_support.hpp"

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

}  // namespace lorakit::testing
