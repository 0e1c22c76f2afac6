// adapter/dora.hpp: Dora<T> in AdaptedLinear against the dense formula of PEFT's DoraLinearLayer (the row norm
// held constant), central finite differences, merge and unmerge, dropout as PEFT applies it, and its errors.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/adapter/adapter_set.hpp>
#include <lorakit/adapter/dora.hpp>
#include <lorakit/rank/dora_to_lora.hpp>

#include <cmath>
#include <limits>

namespace lorakit_test_dora {

using namespace lorakit;
using lorakit::testing::finite_difference_gradient;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

LoraConfig dora_config(Index rank, double alpha, double dropout = 0) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.dropout = dropout;
  c.seed = 3;
  return c;
}

template <class T>
using DoraLayer = AdaptedLinear<T, Dora<T>>;

/// A layer over W [out x in] with random (non-zero) A, B and a magnitude away from the row norms, so that every
/// path of the gradient is exercised.
template <class T>
DoraLayer<T> random_layer(const Matrix<T>& W, Index rank, double alpha, double dropout = 0,
                          WeightLayout layout = WeightLayout::out_by_in) {
  const Matrix<T> W_out_by_in = layout == WeightLayout::out_by_in ? W : Matrix<T>(W.transpose());
  Dora<T> dora(W_out_by_in, dora_config(rank, alpha, dropout));
  dora.A() = random_matrix<T>(rank, W_out_by_in.cols(), 11, 0.3);
  dora.B() = random_matrix<T>(W_out_by_in.rows(), rank, 12, 0.3);
  dora.magnitude() = dora.magnitude().cwiseProduct(
      (Vector<T>::Ones(W_out_by_in.rows()) + T(0.2) * random_matrix<T>(W_out_by_in.rows(), 1, 13)));
  return DoraLayer<T>::owning(W, std::move(dora), layout);
}

/// ||W + s B A|| per row, densely in double.
Vector<double> dense_norm(const Matrix<double>& W, const Matrix<double>& A, const Matrix<double>& B, double s) {
  return (W + s * B * A).rowwise().norm();
}

/// PEFT's DoRA output without bias, in double: y = x W^T + (c - 1) ⊙ (xd W^T) + c ⊙ s xd A^T B^T with
/// c = m / n (n given, a constant), xd the dropped input (x itself without dropout).
Matrix<double> dora_output(const Matrix<double>& x, const Matrix<double>& xd, const Matrix<double>& W,
                           const Matrix<double>& A, const Matrix<double>& B, const Vector<double>& m,
                           const Vector<double>& n, double s) {
  const Vector<double> c = m.cwiseQuotient(n);
  const Matrix<double> base = xd * W.transpose();
  const Matrix<double> lora = s * (xd * A.transpose()) * B.transpose();
  return x * W.transpose() + base * (c.array() - 1).matrix().asDiagonal() + lora * c.asDiagonal();
}

template <class T>
Matrix<double> d(const Matrix<T>& m) {
  return m.template cast<double>();
}
template <class T>
Vector<double> d(const Vector<T>& v) {
  return v.template cast<double>();
}

/// The layer's base weight as [out x in], in double.
template <class T>
Matrix<double> weight_out_by_in(const DoraLayer<T>& layer) {
  const Matrix<double> W = layer.weight().template cast<double>();
  return layer.layout() == WeightLayout::out_by_in ? W : Matrix<double>(W.transpose());
}

}  // namespace

TEMPLATE_TEST_CASE("Dora starts as the base layer: m = the row norms of W, A as Lora's, B = 0", "[dora]", float, double) {
  using T = TestType;
  const Index in = 24, out = 16, n = 10;
  const Matrix<T> W = random_matrix<T>(out, in, 1);
  const LoraConfig config = dora_config(4, 8);
  Dora<T> dora(W, config);
  CHECK(relative_error(d(dora.magnitude()), Vector<double>(d(W).rowwise().norm())) < lorakit::testing::tolerance<T>());
  CHECK(dora.A() == Lora<T>(in, out, config).A());
  CHECK(dora.B().isZero(0));
  CHECK(dora.num_parameters() == 4 * (in + out) + out);
  CHECK(dora.scaling() == T(2));

  auto layer = DoraLayer<T>::owning(W, dora);
  const Vector<T> bias = random_matrix<T>(out, 1, 2);
  layer.set_bias(bias);
  const Matrix<T> x = random_matrix<T>(n, in, 3);
  Matrix<T> y(n, out);
  layer.forward(x, y);
  const Matrix<double> expected = (d(x) * d(W).transpose()).rowwise() + d(bias).transpose();
  CHECK(relative_error(d(y), expected) < 10 * lorakit::testing::tolerance<T>());
}

TEMPLATE_TEST_CASE("Dora forward is (m / ||W + s B A||) ⊙ (x W^T + s x A^T B^T) + b, in both weight layouts", "[dora]",
                   float, double) {
  using T = TestType;
  const Index in = 20, out = 12, r = 3, n = 7;
  const Matrix<T> W = random_matrix<T>(out, in, 4);
  const Matrix<T> x = random_matrix<T>(n, in, 5);
  const Vector<T> bias = random_matrix<T>(out, 1, 6);
  for (const WeightLayout layout : {WeightLayout::out_by_in, WeightLayout::in_by_out}) {
    INFO("layout " << static_cast<int>(layout));
    auto layer = random_layer<T>(layout == WeightLayout::out_by_in ? W : Matrix<T>(W.transpose()), r, 6.0, 0, layout);
    layer.set_bias(bias);
    const Dora<T>& dora = layer.adapter();
    const Vector<double> norm = dense_norm(d(W), d(dora.A()), d(dora.B()), dora.scaling());
    // The closed form of the paper: y = x W'^T + b, W' = m ⊙ (W + s B A) / ||W + s B A||.
    const Matrix<double> W_adapted =
        d(dora.magnitude()).cwiseQuotient(norm).asDiagonal() * (d(W) + dora.scaling() * d(dora.B()) * d(dora.A()));
    Matrix<T> y(n, out);
    layer.forward(x, y);
    const Matrix<double> expected = (d(x) * W_adapted.transpose()).rowwise() + d(bias).transpose();
    CHECK(relative_error(d(y), expected) < 10 * lorakit::testing::tolerance<T>());
    CHECK(relative_error(d(layer.adapter().weight_norm()), norm) < 10 * lorakit::testing::tolerance<T>());
    CHECK(relative_error(d(dora.weight_norm(layer.weight(), layout)), norm) < 10 * lorakit::testing::tolerance<T>());
    CHECK(relative_error(d(dora.delta_weight(layer.weight(), layout)), Matrix<double>(W_adapted - d(W))) <
          10 * lorakit::testing::tolerance<T>());
  }
}

TEST_CASE("Dora's row norm stays exact where W + s B A nearly cancels W", "[dora]") {
  const Index in = 6, out = 3, r = 1;
  Matrix<double> W = random_matrix<double>(out, in, 7);
  Dora<double> dora(W, dora_config(r, 1));
  // Row 1 of s B A is -(1 - 1e-7) W_1: W_1 + s B_1 A = 1e-7 W_1, far below ||W_1||^2 + ||s B_1 A||^2.
  dora.A() = W.row(1);
  dora.B().setZero();
  dora.B()(1, 0) = -(1 - 1e-7);
  dora.B()(2, 0) = 0.5;
  const Vector<double> expected = dense_norm(W, dora.A(), dora.B(), 1.0);
  const Vector<double> got = dora.weight_norm(W, WeightLayout::out_by_in);
  CHECK(std::abs(got(1) - expected(1)) / expected(1) < 1e-8);
  CHECK(relative_error(got, expected) < 1e-12);
}

TEMPLATE_TEST_CASE("Dora backward matches finite differences of PEFT's output with the norm held constant", "[dora]",
                   double) {
  using T = TestType;
  const Index in = 9, out = 7, r = 3, n = 5;
  const Matrix<T> W = random_matrix<T>(out, in, 8);
  for (const double p : {0.0, 0.4}) {
    INFO("dropout " << p);
    auto layer = random_layer<T>(W, r, 6.0, p);
    Dora<T>& dora = layer.adapter();
    Matrix<T> x = random_matrix<T>(n, in, 9);
    const Matrix<T> G = random_matrix<T>(n, out, 10);
    Matrix<T> y(n, out), dx(n, in);
    layer.forward(x, y);
    const Matrix<double> mask = p > 0 ? d(dora.dropout_mask()) : Matrix<double>::Ones(n, in).eval();
    if (p > 0) CHECK((mask.array() == 0).any());
    layer.backward(x, G, dx);

    // The norm at this point, frozen: the truth is the gradient of sum(G ⊙ y) with n a constant.
    const double s = dora.scaling();
    const Vector<double> frozen = dense_norm(d(W), d(dora.A()), d(dora.B()), s);
    Matrix<T> A = dora.A(), B = dora.B();
    Vector<T> m = dora.magnitude();
    const auto loss = [&] {
      const Matrix<double> out_d =
          dora_output(d(x), d(x).cwiseProduct(mask), d(W), d(A), d(B), d(m), frozen, s);
      return (d(G).cwiseProduct(out_d)).sum();
    };
    CHECK(relative_error(d(y), dora_output(d(x), d(x).cwiseProduct(mask), d(W), d(A), d(B), d(m), frozen, s)) < 1e-12);
    CHECK(relative_error(d(dora.grad_A()), finite_difference_gradient<T>(A, loss)) < 1e-7);
    CHECK(relative_error(d(dora.grad_B()), finite_difference_gradient<T>(B, loss)) < 1e-7);
    CHECK(relative_error(d(dora.grad_magnitude()), finite_difference_gradient<T>(m, loss)) < 1e-7);
    CHECK(relative_error(d(dx), finite_difference_gradient<T>(x, loss)) < 1e-7);

    // Gradients accumulate across steps until zero_grad; the gradients-only backward gives the same ones.
    const Matrix<T> gA = dora.grad_A();
    const Vector<T> gm = dora.grad_magnitude();
    layer.adapter().set_training(false);
    layer.forward(x, y);
    layer.adapter().zero_grad();
    layer.backward(x, G);
    Matrix<T> dx_eval(n, in);
    const Matrix<T> gA_eval = dora.grad_A();
    layer.backward(x, G, dx_eval);
    CHECK(relative_error(d(dora.grad_A()), Matrix<double>(2 * d(gA_eval))) < 1e-12);
    if (p == 0) {
      CHECK(relative_error(d(gA_eval), d(gA)) < 1e-12);
      CHECK(relative_error(d(dx_eval), d(dx)) < 1e-12);
    }
    (void)gm;
  }
}

TEMPLATE_TEST_CASE("Dora dropout: PEFT drops the input of the DoRA term, the base product keeps x", "[dora]", float,
                   double) {
  using T = TestType;
  const Index in = 32, out = 10, r = 2, n = 40;
  const Matrix<T> W = random_matrix<T>(out, in, 14);
  auto layer = random_layer<T>(W, r, 4.0, 0.3);
  const Matrix<T> x = random_matrix<T>(n, in, 15);
  Matrix<T> y(n, out);
  layer.forward(x, y);
  const Dora<T>& dora = layer.adapter();
  const Matrix<T> mask = dora.dropout_mask();
  REQUIRE(mask.rows() == n);
  CHECK((mask.array() == T(0) || mask.array() == static_cast<T>(1 / 0.7)).all());
  const double kept = static_cast<double>((mask.array() != T(0)).count()) / static_cast<double>(mask.size());
  CHECK(std::abs(kept - 0.7) < 0.06);
  const double s = dora.scaling();
  const Vector<double> norm = dense_norm(d(W), d(dora.A()), d(dora.B()), s);
  const Matrix<double> expected =
      dora_output(d(x), d(x).cwiseProduct(d(mask)), d(W), d(dora.A()), d(dora.B()), d(dora.magnitude()), norm, s);
  CHECK(relative_error(d(y), expected) < 10 * lorakit::testing::tolerance<T>());
  // Not the same as dropping x everywhere, nor as no dropout at all.
  const Matrix<double> undropped = dora_output(d(x), d(x), d(W), d(dora.A()), d(dora.B()), d(dora.magnitude()), norm, s);
  CHECK(relative_error(d(y), undropped) > 1e-3);

  // A new step draws a new mask; evaluation mode uses none.
  layer.forward(x, y);
  CHECK(layer.adapter().dropout_mask() != mask);
  layer.adapter().set_training(false);
  layer.forward(x, y);
  CHECK(relative_error(d(y), undropped) < 10 * lorakit::testing::tolerance<T>());
}

TEMPLATE_TEST_CASE("Dora merge gives m ⊙ (W + s B A) / ||W + s B A|| and unmerge restores W, in both layouts", "[dora]",
                   float, double) {
  using T = TestType;
  const Index in = 18, out = 11, r = 3, n = 6;
  const Matrix<T> W = random_matrix<T>(out, in, 16);
  const Matrix<T> x = random_matrix<T>(n, in, 17);
  for (const WeightLayout layout : {WeightLayout::out_by_in, WeightLayout::in_by_out}) {
    INFO("layout " << static_cast<int>(layout));
    const Matrix<T> stored = layout == WeightLayout::out_by_in ? W : Matrix<T>(W.transpose());
    auto layer = random_layer<T>(stored, r, 5.0, 0, layout);
    Matrix<T> y_adapter(n, out), y_merged(n, out);
    layer.forward(x, y_adapter);
    const Dora<T>& dora = layer.adapter();
    const Vector<double> norm = dense_norm(d(W), d(dora.A()), d(dora.B()), dora.scaling());
    const Matrix<double> W_adapted =
        d(dora.magnitude()).cwiseQuotient(norm).asDiagonal() * (d(W) + dora.scaling() * d(dora.B()) * d(dora.A()));
    layer.merge();
    CHECK(relative_error(weight_out_by_in(layer), W_adapted) < 10 * lorakit::testing::tolerance<T>());
    layer.forward(x, y_merged);
    CHECK(relative_error(d(y_merged), d(y_adapter)) < 20 * lorakit::testing::tolerance<T>());
    Matrix<T> dx(n, in);
    CHECK_THROWS_AS(layer.backward(x, y_merged, dx), StateError);
    layer.unmerge();
    CHECK(relative_error(d(Matrix<T>(layer.weight())), d(stored)) < 10 * lorakit::testing::tolerance<T>());
    CHECK_THROWS_AS(layer.unmerge(), StateError);
  }
}

TEST_CASE("Dora refuses what it cannot compute, names it, and changes nothing", "[dora]") {
  const Index in = 8, out = 5, n = 4;
  const Matrix<double> W = random_matrix<double>(out, in, 18);
  Matrix<double> zero_row = W;
  zero_row.row(2).setZero();
  CHECK_THROWS_WITH(Dora<double>(zero_row, dora_config(2, 2)), Catch::Contains("Dora::Dora") && Catch::Contains("row 2"));
  Matrix<double> nan_w = W;
  nan_w(1, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(Dora<double>(nan_w, dora_config(2, 2)), ValueError);
  CHECK_THROWS_AS(Dora<double>(W, dora_config(0, 2)), ValueError);
  CHECK_THROWS_AS(Dora<double>(W, dora_config(2, 2, 1.0)), ValueError);
  CHECK_THROWS_AS(Dora<double>(Matrix<double>(0, 3), dora_config(2, 2)), ValueError);
  CHECK_THROWS_AS(Dora<double>::from_factors(Matrix<double>::Zero(2, in), Matrix<double>::Zero(out, 2),
                                             Vector<double>::Ones(out + 1), dora_config(2, 2)),
                  ShapeError);
  CHECK_THROWS_AS(Dora<double>::from_factors(Matrix<double>::Zero(2, in), Matrix<double>::Zero(out, 2),
                                             Vector<double>::Constant(out, std::nan("")), dora_config(2, 2)),
                  ValueError);
  const auto loaded = Dora<double>::from_factors(Matrix<double>::Ones(2, in), Matrix<double>::Ones(out, 2),
                                                 Vector<double>::Constant(out, 3), dora_config(2, 2));
  CHECK(loaded.magnitude() == Vector<double>::Constant(out, 3));
  CHECK(loaded.in_features() == in);

  auto layer = random_layer<double>(W, 2, 2.0, 0.25);
  const Matrix<double> x = random_matrix<double>(n, in, 19), G = random_matrix<double>(n, out, 20);
  Matrix<double> y(n, out), dx(n, in);
  layer.forward(x, y);
  layer.backward(x, G, dx);
  const Dora<double> untouched = layer.adapter();
  Dora<double>& dora = layer.adapter();

  Matrix<double> nan_x = x, inf_G = G, wide(n, in + 1);
  nan_x(1, 2) = std::numeric_limits<double>::quiet_NaN();
  inf_G(0, 0) = std::numeric_limits<double>::infinity();
  wide.setOnes();
  CHECK_THROWS_WITH(layer.forward(nan_x, y), Catch::Contains("Dora::forward") && Catch::Contains("x"));
  CHECK_THROWS_AS(layer.forward(wide, y), ShapeError);
  CHECK_THROWS_WITH(layer.backward(x, inf_G, dx), Catch::Contains("Dora::backward") && Catch::Contains("dy"));
  CHECK_THROWS_AS(layer.backward(x.topRows(n - 1), G.topRows(n - 1)), StateError);
  CHECK_THROWS_AS(dora.forward(x, W.transpose(), WeightLayout::out_by_in, y), ShapeError);
  // A row of W + s B A with norm 0: B A cancels row 0 of W exactly.
  {
    Dora<double> cancelling = untouched;
    cancelling.A().setZero();
    cancelling.A().row(0) = W.row(0);
    cancelling.B().setZero();
    cancelling.B()(0, 0) = -1 / cancelling.scaling();
    Matrix<double> y0 = x * W.transpose(), y0_before = y0;
    CHECK_THROWS_WITH(cancelling.forward(x, W, WeightLayout::out_by_in, y0), Catch::Contains("row 0 of W + s B A"));
    CHECK(y0 == y0_before);
  }
  // The merge of a zero magnitude could not be undone: refused, W unchanged.
  {
    Dora<double> zeroed = untouched;
    zeroed.magnitude()(3) = 0;
    Matrix<double> Wm = W;
    CHECK_THROWS_WITH(zeroed.merge_into(Wm, WeightLayout::out_by_in), Catch::Contains("magnitude(3) is 0"));
    CHECK(Wm == W);
    CHECK_THROWS_AS(zeroed.unmerge_from(Wm, WeightLayout::out_by_in), StateError);  // never merged
    CHECK(Wm == W);
  }

  // After the refused calls, the same good step as an untouched copy, bit for bit (the dropout stream included).
  Dora<double> twin = untouched;
  Matrix<double> y1 = x * W.transpose(), y2 = y1, dx1(n, in), dx2(n, in);
  dora.forward(x, W, WeightLayout::out_by_in, y1);
  twin.forward(x, W, WeightLayout::out_by_in, y2);
  CHECK(y1 == y2);
  CHECK(dora.dropout_mask() == twin.dropout_mask());
  dora.backward(x, G, W, WeightLayout::out_by_in, dx1);
  twin.backward(x, G, W, WeightLayout::out_by_in, dx2);
  CHECK(dx1 == dx2);
  CHECK(dora.grad_A() == twin.grad_A());
  CHECK(dora.grad_B() == twin.grad_B());
  CHECK(dora.grad_magnitude() == twin.grad_magnitude());
}

TEST_CASE("A layer over AdapterSet::ref trains the set's Dora adapter", "[dora]") {
  const Index in = 10, out = 6, n = 3;
  const Matrix<double> W = random_matrix<double>(out, in, 21);
  AdapterSet<Dora<double>> set;
  set.add("layer.q", Dora<double>(W, dora_config(2, 4)));
  set.at("layer.q").B() = random_matrix<double>(out, 2, 22);
  auto by_ref = AdaptedLinear<double, AdapterRef<Dora<double>>>::owning(W, set.ref("layer.q"));
  auto by_value = DoraLayer<double>::owning(W, set.at("layer.q"));
  const Matrix<double> x = random_matrix<double>(n, in, 23), G = random_matrix<double>(n, out, 24);
  Matrix<double> y1(n, out), y2(n, out), dx1(n, in), dx2(n, in);
  by_ref.forward(x, y1);
  by_value.forward(x, y2);
  CHECK(y1 == y2);
  by_ref.backward(x, G, dx1);
  by_value.backward(x, G, dx2);
  CHECK(dx1 == dx2);
  CHECK(set.at("layer.q").grad_magnitude() == by_value.adapter().grad_magnitude());
  CHECK(set.parameters().size() == 3);
  CHECK(set.parameters()[2].name == "layer.q.magnitude");
  by_ref.merge();
  by_ref.unmerge();
  CHECK(relative_error(by_ref.weight(), W) < 1e-13);
}

TEMPLATE_TEST_CASE("dora_as_lora is the exact LoRA of DoRA's update, of rank r + the rows whose magnitude moved",
                   "[dora]", float, double) {
  using T = TestType;
  const Index in = 14, out = 9, r = 2;
  const Matrix<T> W = random_matrix<T>(out, in, 25);
  for (const WeightLayout layout : {WeightLayout::out_by_in, WeightLayout::in_by_out}) {
    INFO("layout " << static_cast<int>(layout));
    const Matrix<T> stored = layout == WeightLayout::out_by_in ? W : Matrix<T>(W.transpose());
    auto layer = random_layer<T>(stored, r, 4.0, 0, layout);
    Dora<T>& dora = layer.adapter();
    const Matrix<double> expected = d(dora.delta_weight(layer.weight(), layout));

    // Every magnitude moved: rank r + out.
    const Lora<T> all = dora_as_lora(dora, layer.weight(), layout);
    CHECK(all.rank() == r + out);
    CHECK(relative_error(d(all.delta_weight()), expected) < 20 * lorakit::testing::tolerance<T>());
    CHECK(std::abs(static_cast<double>(all.scaling()) - static_cast<double>(dora.scaling())) <
          lorakit::testing::tolerance<T>());

    // Magnitudes equal to the row norms but in rows 1 and 4: rank r + 2, still exact.
    const Vector<double> norm = dense_norm(d(W), d(dora.A()), d(dora.B()), dora.scaling());
    dora.magnitude() = norm.template cast<T>();
    dora.magnitude()(1) *= T(1.5);
    dora.magnitude()(4) *= T(0.5);
    const Lora<T> two = dora_as_lora(dora, layer.weight(), layout, 1e-5);
    CHECK(two.rank() == r + 2);
    CHECK(relative_error(d(two.delta_weight()), d(dora.delta_weight(layer.weight(), layout))) <
          1e-5 + 20 * lorakit::testing::tolerance<T>());
  }
  // A fresh adapter (m = ||W|| rounded to T, B = 0): DoRA's rank, and no update.
  const Dora<T> fresh(W, dora_config(r, 4));
  const Lora<T> plain = dora_as_lora(fresh, W, WeightLayout::out_by_in, 4 * std::numeric_limits<T>::epsilon());
  CHECK(plain.rank() == r);
  CHECK(plain.B().isZero(0));
  CHECK_THROWS_AS(dora_as_lora(fresh, Matrix<T>(W.transpose())), ShapeError);
  CHECK_THROWS_AS(dora_as_lora(fresh, W, WeightLayout::out_by_in, -1.0), ValueError);
}

}  // namespace lorakit_test_dora
