// adapter/adapted_linear.hpp and adapter/adapter_set.hpp: a frozen layer with an adapter, and named sets.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/adapter/adapted_linear.hpp>
#include <lorakit/adapter/adapter_ref.hpp>
#include <lorakit/adapter/adapter_set.hpp>
#include <lorakit/adapter/lora.hpp>

namespace lorakit_test_layers {

using namespace lorakit;
using lorakit::testing::finite_difference_gradient;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

template <class T>
Lora<T> random_lora(Index in, Index out, Index rank) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = 2.0 * static_cast<double>(rank);
  Lora<T> lora(in, out, c);
  lora.B() = random_matrix<T>(out, rank, 5, 0.2);
  return lora;
}

}  // namespace

TEMPLATE_TEST_CASE("AdaptedLinear computes x W^T + b + adapter(x) and its gradients", "[adapted_linear]", float, double) {
  using T = TestType;
  const Index in = 12, out = 9, n = 4;
  const Matrix<double> W = random_matrix<double>(out, in, 1);
  const Vector<double> b = random_matrix<double>(out, 1, 2);
  const Matrix<double> G = random_matrix<double>(n, out, 3);
  Matrix<double> x = random_matrix<double>(n, in, 4);

  auto layer = AdaptedLinear<T, Lora<T>>::owning(W.cast<T>(), random_lora<T>(in, out, 3));
  layer.set_bias(b.cast<T>());
  const Matrix<double> delta = static_cast<double>(layer.adapter().scaling()) *
                               layer.adapter().B().template cast<double>() * layer.adapter().A().template cast<double>();
  Matrix<T> y(n, out);
  layer.forward(x.cast<T>(), y);
  const Matrix<double> expected = (x * (W + delta).transpose()).rowwise() + b.transpose();
  CHECK(relative_error(y.template cast<double>(), expected) < lorakit::testing::tolerance<T>() * 10);

  // dx of L = sum(G ⊙ y) by central differences on the dense double layer.
  auto loss = [&] { return ((x * (W + delta).transpose()).array() * G.array()).sum(); };
  const Matrix<double> fd_x = finite_difference_gradient<double>(x, loss);
  Matrix<T> dx = Matrix<T>::Constant(n, in, T(7));  // overwritten, not accumulated
  layer.backward(x.cast<T>(), G.cast<T>(), dx);
  CHECK(relative_error(dx.template cast<double>(), fd_x) < (std::is_same_v<T, float> ? 1e-4 : 1e-7));
  CHECK(layer.adapter().grad_B().norm() > 0);
  CHECK(layer.weight() == W.cast<T>());  // backward never touches W
}

TEMPLATE_TEST_CASE("AdaptedLinear merge folds the adapter into W and back", "[adapted_linear]", float, double) {
  using T = TestType;
  const Index in = 10, out = 8, n = 3;
  const Matrix<T> W = random_matrix<T>(out, in, 7);
  auto layer = AdaptedLinear<T, Lora<T>>::owning(W, random_lora<T>(in, out, 2));
  const Matrix<T> x = random_matrix<T>(n, in, 8);
  Matrix<T> unmerged(n, out), merged(n, out);
  layer.forward(x, unmerged);
  layer.merge();
  CHECK(layer.merged());
  CHECK(relative_error(layer.weight(), Matrix<T>(W + layer.adapter().delta_weight())) < 1e-6);
  layer.forward(x, merged);
  CHECK(relative_error(merged, unmerged) < lorakit::testing::tolerance<T>() * 10);
  Matrix<T> dx(n, in);
  CHECK_THROWS_AS(layer.backward(x, merged, dx), StateError);
  CHECK_THROWS_WITH(layer.merge(), "AdaptedLinear::merge: the adapter is already merged");
  layer.unmerge();
  CHECK(relative_error(layer.weight(), W) < lorakit::testing::tolerance<T>() * 10);
  CHECK_THROWS_AS(layer.unmerge(), StateError);
}

TEST_CASE("AdaptedLinear can view the caller's weight memory", "[adapted_linear]") {
  Matrix<float> storage = random_matrix<float>(8, 20, 9);  // the layer uses the left 8 x 12 block
  auto block = storage.leftCols(12);
  const Matrix<float> before = storage;
  auto layer = AdaptedLinear<float, Lora<float>>::viewing(block, random_lora<float>(12, 8, 2));
  CHECK(layer.weight().data() == storage.data());
  layer.merge();
  CHECK(relative_error(Matrix<float>(storage.leftCols(12)),
                       Matrix<float>(before.leftCols(12) + layer.adapter().delta_weight())) < 1e-6);
  CHECK(storage.rightCols(8) == before.rightCols(8));  // nothing outside the view is written
  layer.unmerge();
  CHECK(relative_error(storage, before) < 1e-6);

  auto copy = layer;  // a copy of a viewing layer views the same memory
  CHECK(copy.weight().data() == storage.data());
  CHECK_THROWS_WITH((AdaptedLinear<float, Lora<float>>::owning(Matrix<float>(8, 13), random_lora<float>(12, 8, 2))),
                    "AdaptedLinear: weight is [8 x 13], but the adapter is for [8 x 12]");
  Matrix<float> x(2, 11), y(2, 8);
  CHECK_THROWS_WITH(layer.forward(x, y), "AdaptedLinear::forward: x has 11 columns, expected in_features = 12");
  CHECK_THROWS_AS(layer.set_bias(Vector<float>::Zero(7)), ShapeError);
}

TEST_CASE("AdapterSet keeps named adapters in order with stable parameter views", "[adapter_set]") {
  AdapterSet<Lora<double>> set;
  const std::vector<std::string> names = {"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn", "score"};
  for (std::size_t i = 0; i < names.size(); ++i) {
    set.add(names[i], random_lora<double>(16 + static_cast<Index>(i), 8, 2));
  }
  auto params = set.parameters();
  // Adding more adapters never moves the earlier ones: old views stay valid.
  for (int i = 0; i < 40; ++i) set.add("extra." + std::to_string(i), random_lora<double>(4, 4, 1));
  params[0].value[0] = 42.0;
  CHECK(set.at(names[0]).A()(0, 0) == 42.0);

  CHECK(set.size() == 43);
  CHECK(set.contains("score"));
  CHECK_FALSE(set.contains("nope"));
  CHECK(set.names()[1] == names[1]);
  REQUIRE(params.size() == 6);
  CHECK(params[0].name == "transformer.h.0.attn.c_attn.A");
  CHECK(params[5].name == "score.B");
  Index expected = 0, seen = 0;
  for (auto& [name, adapter] : set) {
    CHECK(name == set.names()[static_cast<std::size_t>(seen++)]);
    expected += adapter.num_parameters();
  }
  CHECK(set.num_parameters() == expected);
  CHECK(set.num_parameters() == 2 * (16 + 8) + 2 * (17 + 8) + 2 * (18 + 8) + 40 * 8);
  CHECK_THROWS_WITH(set.add("score", random_lora<double>(4, 4, 1)), "AdapterSet::add: name 'score' is already in the set");
  CHECK_THROWS_WITH(set.at("missing"), "AdapterSet::at: no adapter named 'missing' in the set");
  CHECK_THROWS_AS(set.add("", random_lora<double>(4, 4, 1)), ValueError);
}

TEST_CASE("A layer over AdapterSet::ref trains the set's adapter and sees its replacement", "[adapter_set][adapter_ref]") {
  using T = double;
  static_assert(is_adapter_v<Lora<T>>);
  static_assert(is_adapter_v<AdapterRef<Lora<T>>>);
  static_assert(!is_adapter_v<Matrix<T>>);
  static_assert(!is_adapter_v<int>);

  AdapterSet<Lora<T>> set;
  set.add("fc", random_lora<T>(10, 6, 3));
  const Matrix<T> W = random_matrix<T>(6, 10, 11, 0.5);
  auto layer = AdaptedLinear<T, AdapterRef<Lora<T>>>::owning(W, set.ref("fc"));
  const Matrix<T> x = random_matrix<T>(5, 10, 12, 1.0);
  const Matrix<T> dy = random_matrix<T>(5, 6, 13, 1.0);

  // The layer's forward and backward are the set's adapter's, and its gradients land in the set.
  Matrix<T> y(5, 6), dx(5, 10);
  layer.forward(x, y);
  Matrix<T> expected = x * W.transpose() + x * set.at("fc").delta_weight().transpose();
  CHECK((y - expected).norm() <= 1e-12 * expected.norm());
  layer.backward(x, dy, dx);
  const Matrix<T> grad_B = set.at("fc").scaling() * dy.transpose() * (x * set.at("fc").A().transpose());
  CHECK((set.at("fc").grad_B() - grad_B).norm() <= 1e-12 * grad_B.norm());
  CHECK(set.parameters()[1].grad.norm() == Approx(grad_B.norm()));

  // Replacing the set's adapter in place (as a squeeze does) is seen by the layer at once.
  set.at("fc") = random_lora<T>(10, 6, 2);
  CHECK(layer.adapter()->rank() == 2);
  layer.forward(x, y);
  expected = x * W.transpose() + x * set.at("fc").delta_weight().transpose();
  CHECK((y - expected).norm() <= 1e-12 * expected.norm());
  layer.merge();
  CHECK((layer.weight() - (W + set.at("fc").delta_weight())).norm() <= 1e-12 * W.norm());
  CHECK_THROWS_WITH(set.ref("missing"), "AdapterSet::at: no adapter named 'missing' in the set");
}

TEST_CASE("AdaptedLinear over a Conv1D-style weight [in x out] equals the same layer over W [out x in]",
          "[adapted_linear]") {
  using T = double;
  const Matrix<T> W = random_matrix<T>(6, 9, 21, 0.5);  // [out x in]
  const Matrix<T> x = random_matrix<T>(4, 9, 22, 1.0), dy = random_matrix<T>(4, 6, 23, 1.0);
  auto linear = AdaptedLinear<T, Lora<T>>::owning(W, random_lora<T>(9, 6, 2));
  auto conv1d = AdaptedLinear<T, Lora<T>>::owning(W.transpose(), random_lora<T>(9, 6, 2), WeightLayout::in_by_out);
  CHECK(conv1d.layout() == WeightLayout::in_by_out);
  Matrix<T> y1(4, 6), y2(4, 6), dx1(4, 9), dx2(4, 9);
  linear.forward(x, y1);
  conv1d.forward(x, y2);
  CHECK((y1 - y2).norm() <= 1e-13 * y1.norm());
  linear.backward(x, dy, dx1);
  conv1d.backward(x, dy, dx2);
  CHECK((dx1 - dx2).norm() <= 1e-13 * dx1.norm());
  CHECK(linear.adapter().grad_A() == conv1d.adapter().grad_A());

  conv1d.merge();  // W^T += (s B A)^T
  CHECK((conv1d.weight() - (W + linear.adapter().delta_weight()).transpose()).norm() <= 1e-13 * W.norm());
  conv1d.unmerge();
  CHECK((conv1d.weight() - W.transpose()).norm() <= 1e-13 * W.norm());

  using Layer = AdaptedLinear<T, Lora<T>>;
  CHECK_THROWS_WITH(Layer::owning(W, random_lora<T>(9, 6, 2), WeightLayout::in_by_out),
                    "AdaptedLinear: weight is [6 x 9], but the adapter is for [9 x 6] (in_by_out layout)");
}

TEST_CASE("AdaptedLinear refuses an empty weight view with a ShapeError", "[adapted_linear]") {
  using Layer = AdaptedLinear<float, Lora<float>>;
  Matrix<float> empty(0, 0);
  CHECK_THROWS_AS(Layer::viewing(empty, random_lora<float>(4, 3, 1)), ShapeError);
  CHECK_THROWS_WITH(Layer::viewing(empty, random_lora<float>(4, 3, 1)),
                    "AdaptedLinear: weight is [0 x 0], but the adapter is for [3 x 4]");
}

}  // namespace lorakit_test_layers
