// adapter/vera.hpp and adapter/adapter_memory.hpp: VeRA against dense math, central finite differences,
// its regeneration rule, and a teacher-student fit.
#include <catch2/catch.hpp>

#include "adapter_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/adapter/adapted_linear.hpp>
#include <lorakit/adapter/adapter_memory.hpp>
#include <lorakit/adapter/adapter_set.hpp>
#include <lorakit/adapter/vera.hpp>
#include <lorakit/optim/adamw.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace lorakit_test_vera {

using namespace lorakit;
using lorakit::testing::finite_difference_gradient;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

VeraConfig vera_config(Index rank, double dropout = 0, std::uint64_t seed = 1) {
  VeraConfig c;
  c.rank = rank;
  c.dropout = dropout;
  c.seed = seed;
  return c;
}

/// A Vera whose lambda_b and lambda_d are random (not the initial 0 and 0.1), so every gradient path is exercised.
template <class T>
Vera<T> random_vera(std::shared_ptr<const VeraProjections<T>> projections, Index in, Index out, double dropout = 0) {
  Vera<T> vera(projections, in, out, vera_config(projections->rank(), dropout));
  vera.lambda_b() = random_matrix<T>(out, 1, 61, 0.7);
  vera.lambda_d() = random_matrix<T>(projections->rank(), 1, 62, 0.7);
  return vera;
}

/// The layer's blocks of the projections, in double.
template <class T>
std::pair<Matrix<double>, Matrix<double>> dense_blocks(const Vera<T>& vera) {
  const auto& p = *vera.projections();
  return {p.A().leftCols(vera.in_features()).template cast<double>(),
          p.B().topRows(vera.out_features()).template cast<double>()};
}

/// diag(b) B_l diag(d) A_l computed densely in double, from explicit diagonal matrices.
template <class T>
Matrix<double> dense_delta(const Vera<T>& vera) {
  const auto [A, B] = dense_blocks(vera);
  const Matrix<double> Db = vera.lambda_b().template cast<double>().asDiagonal();
  const Matrix<double> Dd = vera.lambda_d().template cast<double>().asDiagonal();
  return Db * B * Dd * A;
}

template <class T>
double tol10() {
  return lorakit::testing::tolerance<T>() * 10;
}

}  // namespace

TEMPLATE_TEST_CASE("VeraProjections are regenerated from the seed by the documented rule", "[vera]", float, double) {
  using T = TestType;
  const Index r = 4, max_in = 6, max_out = 5;
  const VeraProjections<T> p(r, max_in, max_out, 42);
  REQUIRE(p.rank() == r);
  REQUIRE(p.max_in_features() == max_in);
  REQUIRE(p.max_out_features() == max_out);
  CHECK(p.bytes() == static_cast<std::size_t>(r * max_in + max_out * r) * sizeof(T));

  // Same seed, same values (bit for bit); another seed, other values.
  const VeraProjections<T> again(r, max_in, max_out, 42);
  CHECK(again.A() == p.A());
  CHECK(again.B() == p.B());
  CHECK(VeraProjections<T>(r, max_in, max_out, 43).A() != p.A());

  // The rule: one Rng(seed, 0) fills A then B in row-major order, U(-sqrt(6/max_in), .) then U(-sqrt(6/r), .).
  Rng rng(42, 0);
  Matrix<T> A(r, max_in), B(max_out, r);
  const T bound_A = static_cast<T>(std::sqrt(6.0 / max_in)), bound_B = static_cast<T>(std::sqrt(6.0 / r));
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < max_in; ++j) A(i, j) = rng.uniform<T>(-bound_A, bound_A);
  for (Index i = 0; i < max_out; ++i)
    for (Index j = 0; j < r; ++j) B(i, j) = rng.uniform<T>(-bound_B, bound_B);
  CHECK(p.A() == A);
  CHECK(p.B() == B);

  // Pinned values: a change of the generator or of the rule breaks every saved VeRA adapter.
  if constexpr (std::is_same_v<T, float>) {
    CHECK(p.A()(0, 0) == 0x1.ceafp-3f);
    CHECK(p.A()(0, 1) == -0x1.0156ep-4f);
    CHECK(p.A()(3, 5) == -0x1.d66b3p-1f);
    CHECK(p.B()(0, 0) == -0x1.58489ap-1f);
    CHECK(p.B()(4, 3) == 0x1.739ff8p-2f);
  } else {
    CHECK(p.A()(0, 0) == -0x1.0156d88c62a2p-4);
    CHECK(p.A()(0, 1) == -0x1.45ea61476a058p-2);
    CHECK(p.A()(3, 5) == -0x1.db295af7b308p-4);
    CHECK(p.B()(0, 0) == -0x1.9a3bf17e2c265p-1);
    CHECK(p.B()(4, 3) == -0x1.6156906958ad5p-1);
  }
}

TEMPLATE_TEST_CASE("VeraProjections follow PEFT's Kaiming-uniform bounds, and for_layers takes the largest shape",
                   "[vera]", float, double) {
  using T = TestType;
  const Index r = 64;
  auto p = VeraProjections<T>::for_layers(r, {{300, 200}, {500, 100}, {120, 400}}, 7);
  REQUIRE(p->max_in_features() == 500);
  REQUIRE(p->max_out_features() == 400);
  const double bound_A = std::sqrt(6.0 / 500), bound_B = std::sqrt(6.0 / r);
  CHECK(p->A().cwiseAbs().maxCoeff() <= static_cast<T>(bound_A));
  CHECK(p->B().cwiseAbs().maxCoeff() <= static_cast<T>(bound_B));
  // U(-b, b) has mean 0 and variance b^2 / 3 (32000 and 25600 draws).
  CHECK(p->A().template cast<double>().array().square().mean() == Approx(bound_A * bound_A / 3).epsilon(0.03));
  CHECK(p->B().template cast<double>().array().square().mean() == Approx(bound_B * bound_B / 3).epsilon(0.03));
  CHECK(std::abs(p->A().template cast<double>().mean()) < 0.02 * bound_A);

  CHECK_THROWS_WITH(VeraProjections<T>::for_layers(r, {}, 7),
                    "VeraProjections::for_layers: shapes is empty, expected at least one (in, out) layer shape");
  CHECK_THROWS_WITH(VeraProjections<T>::for_layers(r, {{4, 4}, {0, 3}}, 7),
                    "VeraProjections::for_layers: shapes[1] is (0, 3), expected in >= 1 and out >= 1");
  CHECK_THROWS_WITH(VeraProjections<T>(0, 4, 4, 1), "VeraProjections::VeraProjections: rank is 0, expected >= 1");
}

TEMPLATE_TEST_CASE("VeraProjections::from_matrices holds given projections (not regenerable)", "[vera]", float,
                   double) {
  using T = TestType;
  const Matrix<T> A = testing::random_matrix<T>(6, 20, 1), B = testing::random_matrix<T>(15, 6, 2);
  const auto p = VeraProjections<T>::from_matrices(A, B, 9);
  CHECK(p->A() == A);
  CHECK(p->B() == B);
  CHECK(p->rank() == 6);
  CHECK(p->max_in_features() == 20);
  CHECK(p->max_out_features() == 15);
  CHECK(p->seed() == 9);
  CHECK_FALSE(p->regenerable());
  CHECK(VeraProjections<T>(6, 20, 15, 9).regenerable());
  // A layer reads the leading blocks of the given matrices.
  VeraConfig c;
  c.rank = 6;
  Vera<T> layer(p, 12, 10, c);
  layer.lambda_b() = testing::random_matrix<T>(10, 1, 3).col(0);
  const Matrix<double> expected = layer.lambda_b().template cast<double>().asDiagonal() *
                                  B.template cast<double>().topRows(10) *
                                  layer.lambda_d().template cast<double>().asDiagonal() *
                                  A.template cast<double>().leftCols(12);
  CHECK(testing::relative_error(layer.delta_weight().template cast<double>(), expected) < 1e-6);

  CHECK_THROWS_WITH(VeraProjections<T>::from_matrices(A, testing::random_matrix<T>(15, 5, 2), 9),
                    "VeraProjections::from_matrices: B has 5 columns, expected rank = A.rows() = 6");
  CHECK_THROWS_AS(VeraProjections<T>::from_matrices(Matrix<T>(0, 4), B, 9), ShapeError);
  Matrix<T> bad = A;
  bad(2, 3) = std::numeric_limits<T>::infinity();
  CHECK_THROWS_WITH(VeraProjections<T>::from_matrices(bad, B, 9), Catch::Contains("A[2, 3] is inf"));
}

TEMPLATE_TEST_CASE("Vera forward, backward and merge match dense diag(b) B diag(d) A", "[vera]", float, double) {
  using T = TestType;
  // rank 12 exceeds in = 9 and out = 7; the projections are larger than the layer, so it uses their blocks.
  const Index in = 9, out = 7, r = 12, n = 5;
  auto projections = std::make_shared<const VeraProjections<T>>(r, 11, 10, 3);
  auto vera = random_vera<T>(projections, in, out);
  CHECK(vera.num_parameters() == out + r);
  const Matrix<double> delta = dense_delta(vera);

  const Matrix<T> x = random_matrix<T>(n, in, 1);
  const Matrix<T> y0 = random_matrix<T>(n, out, 2);
  Matrix<T> y = y0;
  vera.forward(x, y);
  CHECK(relative_error(y.template cast<double>(),
                       Matrix<double>(y0.template cast<double>() + x.template cast<double>() * delta.transpose())) <
        tol10<T>());
  CHECK(relative_error(vera.delta_weight().template cast<double>(), delta) < tol10<T>());

  const Matrix<T> W0 = random_matrix<T>(out, in, 4);
  Matrix<T> W = W0;
  vera.merge_into(W);
  CHECK(relative_error(W.template cast<double>(), Matrix<double>(W0.template cast<double>() + delta)) < tol10<T>());
  vera.unmerge_from(W);
  CHECK(relative_error(W, W0) < tol10<T>());

  // The adapter on a frozen layer: the merged forward equals the unmerged one.
  auto layer = AdaptedLinear<T, Vera<T>>::owning(W0, vera);
  Matrix<T> unmerged(n, out), merged(n, out);
  layer.forward(x, unmerged);
  layer.merge();
  layer.forward(x, merged);
  CHECK(relative_error(merged, unmerged) < tol10<T>());
}

TEMPLATE_TEST_CASE("Vera gradients match central finite differences at random lambda_b, lambda_d", "[vera]", float,
                   double) {
  using T = TestType;
  const Index in = 9, out = 7, r = 12, n = 5;
  auto projections = std::make_shared<const VeraProjections<T>>(r, 10, 8, 5);
  auto vera = random_vera<T>(projections, in, out);
  const auto blocks = dense_blocks(vera);  // named, not a structured binding: the lambda below reads them
  const Matrix<double>& A = blocks.first;
  const Matrix<double>& B = blocks.second;

  // L(b, d, x) = sum(G ⊙ (x A^T diag(d) B^T diag(b))), in double, written out independently of Vera.
  Vector<double> b = vera.lambda_b().template cast<double>(), d = vera.lambda_d().template cast<double>();
  Matrix<double> x = random_matrix<double>(n, in, 21);
  const Matrix<double> G = random_matrix<double>(n, out, 22);
  auto loss = [&] {
    const Matrix<double> y = x * A.transpose() * d.asDiagonal() * B.transpose() * b.asDiagonal();
    return (y.array() * G.array()).sum();
  };
  const Matrix<double> fd_b = finite_difference_gradient<double>(b, loss);
  const Matrix<double> fd_d = finite_difference_gradient<double>(d, loss);
  const Matrix<double> fd_x = finite_difference_gradient<double>(x, loss);

  // The analytic gradients, in T; they also accumulate over calls until zero_grad.
  const Matrix<T> xt = x.template cast<T>(), Gt = G.template cast<T>();
  const Matrix<T> dx_added = lorakit::testing::check_step_and_accumulation(vera, xt, Gt);
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-7;
  CHECK(relative_error(vera.grad_lambda_b().template cast<double>(), fd_b) < tol);
  CHECK(relative_error(vera.grad_lambda_d().template cast<double>(), fd_d) < tol);
  CHECK(relative_error(dx_added.template cast<double>(), fd_x) < tol);

  // At initialization (lambda_b = 0) only lambda_b gets a gradient: the family starts at the base layer.
  Vera<T> fresh(projections, in, out, vera_config(r));
  CHECK(fresh.lambda_b().isZero(0));
  CHECK((fresh.lambda_d().array() == static_cast<T>(0.1)).all());
  Matrix<T> y = Matrix<T>::Zero(n, out);
  fresh.forward(xt, y);
  fresh.backward(xt, Gt);
  CHECK(fresh.grad_lambda_b().norm() > 0);
  CHECK(fresh.grad_lambda_d().isZero(0));
}

TEMPLATE_TEST_CASE("Vera dropout is inverted dropout on the branch input, off in evaluation", "[vera]", float, double) {
  using T = TestType;
  const Index in = 40, out = 30, r = 48, n = 50;
  auto projections = std::make_shared<const VeraProjections<T>>(r, in, out, 9);
  auto vera = random_vera<T>(projections, in, out, 0.3);
  const Matrix<T> x = random_matrix<T>(n, in, 31), G = random_matrix<T>(n, out, 32);
  Matrix<T> y = Matrix<T>::Zero(n, out), dx = Matrix<T>::Zero(n, in);
  vera.forward(x, y);
  const Matrix<T> mask = vera.dropout_mask();
  REQUIRE(mask.rows() == n);
  CHECK((mask.array() == T(0) || mask.array() == static_cast<T>(1 / 0.7)).all());
  const double kept = static_cast<double>((mask.array() != T(0)).count()) / static_cast<double>(mask.size());
  CHECK(std::abs(kept - 0.7) < 0.05);

  // Dense truth with the mask as a constant.
  const auto [A, B] = dense_blocks(vera);
  const Matrix<double> xd = x.template cast<double>().cwiseProduct(mask.template cast<double>());
  const Vector<double> b = vera.lambda_b().template cast<double>(), d = vera.lambda_d().template cast<double>();
  const Matrix<double> Gd = G.template cast<double>();
  CHECK(relative_error(y.template cast<double>(), Matrix<double>(xd * dense_delta(vera).transpose())) < tol10<T>());
  vera.backward(x, G, dx);
  const Matrix<double> U = xd * A.transpose(), H = Gd * b.asDiagonal() * B;
  const Vector<double> gb = (Gd.array() * (U * d.asDiagonal() * B.transpose()).array()).colwise().sum().transpose();
  const Vector<double> gd = (H.array() * U.array()).colwise().sum().transpose();
  const Matrix<double> gx = (H * d.asDiagonal() * A).cwiseProduct(mask.template cast<double>());
  CHECK(relative_error(vera.grad_lambda_b().template cast<double>(), gb) < tol10<T>());
  CHECK(relative_error(vera.grad_lambda_d().template cast<double>(), gd) < tol10<T>());
  CHECK(relative_error(dx.template cast<double>(), gx) < tol10<T>());

  // A new step draws a new mask; an adapter with the same seed draws the same masks.
  vera.forward(x, y);
  CHECK(vera.dropout_mask() != mask);
  auto twin = random_vera<T>(projections, in, out, 0.3);
  twin.forward(x, y);
  CHECK(twin.dropout_mask() == mask);

  vera.set_training(false);
  Matrix<T> y_eval = Matrix<T>::Zero(n, out);
  vera.forward(x, y_eval);
  CHECK(relative_error(y_eval.template cast<double>(),
                       Matrix<double>(x.template cast<double>() * dense_delta(vera).transpose())) < tol10<T>());
}

TEST_CASE("Vera rejects bad projections, configurations and inputs with clear errors", "[vera]") {
  auto projections = std::make_shared<const VeraProjections<float>>(16, 1024, 512, 0);
  CHECK_THROWS_WITH(Vera<float>(projections, 2048, 256, vera_config(16)),
                    "Vera::Vera: in_features is 2048, larger than the projections' max_in_features = 1024");
  CHECK_THROWS_WITH(Vera<float>(projections, 256, 600, vera_config(16)),
                    "Vera::Vera: out_features is 600, larger than the projections' max_out_features = 512");
  CHECK_THROWS_WITH(Vera<float>(projections, 256, 256, vera_config(8)),
                    "Vera::Vera: config.rank is 8, but the projections' rank is 16");
  CHECK_THROWS_WITH(Vera<float>(nullptr, 256, 256, vera_config(16)),
                    "Vera::Vera: projections is null, expected shared VeraProjections");
  CHECK_THROWS_WITH(Vera<float>(projections, 0, 256, vera_config(16)), "Vera::Vera: in_features is 0, expected >= 1");
  CHECK_THROWS_WITH(Vera<float>(projections, 256, 256, vera_config(16, 1.5)),
                    "Vera::Vera: dropout is 1.5, expected 0 <= dropout < 1");
  VeraConfig bad_d = vera_config(16);
  bad_d.d_initial = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(Vera<float>(projections, 256, 256, bad_d), Catch::Contains("d_initial is inf"));

  Vera<float> vera(projections, 256, 128, vera_config(16));
  vera.lambda_b().setConstant(0.5f);
  Matrix<float> x(4, 300), y(4, 128), good_x = Matrix<float>::Ones(4, 256);
  CHECK_THROWS_WITH(vera.forward(x, y), "Vera::forward: x has 300 columns, expected in_features = 256");
  Matrix<float> bad_y(4, 100);
  CHECK_THROWS_WITH(vera.forward(good_x, bad_y), "Vera::forward: y is [4 x 100], expected [4 x 128]");
  Matrix<float> dy = Matrix<float>::Ones(4, 128);
  CHECK_THROWS_AS(vera.backward(good_x, dy), StateError);

  // NaN or Inf in x is found (naming the entry) before y is written; in dy before any gradient moves,
  // even where lambda_b is 0.
  Matrix<float> inf_x = good_x;
  inf_x(2, 17) = std::numeric_limits<float>::infinity();
  y.setConstant(5.0f);
  CHECK_THROWS_WITH(vera.forward(inf_x, y), "Vera::forward: x[2, 17] is inf, expected a finite value");
  CHECK((y.array() == 5.0f).all());
  vera.forward(good_x, y);
  vera.lambda_b()(3) = 0.0f;
  Matrix<float> nan_dy = dy;
  nan_dy(1, 3) = std::nanf("");
  CHECK_THROWS_WITH(vera.backward(good_x, nan_dy), Catch::Contains("Vera::backward: dy[1, 3] is nan"));
  CHECK(vera.grad_lambda_b().isZero(0));
  CHECK(vera.grad_lambda_d().isZero(0));
  Matrix<float> wrong_dy(4, 127), dx(4, 256);
  CHECK_THROWS_WITH(vera.backward(good_x, wrong_dy, dx), "Vera::backward: dy is [4 x 127], expected [4 x 128]");

  // A merge whose result overflows leaves W as it was.
  vera.lambda_b().setConstant(std::numeric_limits<float>::max());
  vera.lambda_d().setConstant(std::numeric_limits<float>::max());
  Matrix<float> W = Matrix<float>::Ones(128, 256);
  CHECK_THROWS_WITH(vera.merge_into(W), Catch::Contains("Vera::merge_into") && Catch::Contains("W is left unchanged"));
  CHECK((W.array() == 1.0f).all());
  Matrix<float> wrong_W(256, 128);
  CHECK_THROWS_WITH(vera.unmerge_from(wrong_W), "Vera::unmerge_from: W is [256 x 128], expected [128 x 256]");
}

TEMPLATE_TEST_CASE("Vera parameters are views of the vectors, and the projections are shared, never copied", "[vera]",
                   float, double) {
  using T = TestType;
  auto projections = std::make_shared<const VeraProjections<T>>(32, 20, 24, 1);
  Vera<T> vera(projections, 20, 24, vera_config(32));
  auto params = vera.parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].name == "lambda_b");
  CHECK(params[1].name == "lambda_d");
  CHECK(params[0].value.size() == 24);
  CHECK(params[1].grad.size() == 32);
  params[1].value[5] = T(3);
  CHECK(vera.lambda_d()(5) == T(3));
  CHECK(params[0].grad.data() == vera.grad_lambda_b().data());

  AdapterSet<Vera<T>> set;
  set.add("q", vera);
  set.add("v", Vera<T>(projections, 16, 24, vera_config(32)));
  CHECK(set.at("q").projections().get() == projections.get());
  CHECK(set.at("v").projections().get() == projections.get());
  CHECK(set.at("q").A().data() == projections->A().data());  // the layer reads the shared block in place
  CHECK(projections.use_count() == 4);                           // projections, vera, and the two in the set
}

TEST_CASE("adapter_memory counts shared VeRA projections once: 24 layers x {q, v} at width 1024", "[vera]") {
  const Index layers = 24, width = 1024;
  AdapterSet<Vera<float>> vera_set;
  AdapterSet<Lora<float>> lora_set;
  auto projections = VeraProjections<float>::for_layers(256, {{width, width}}, 0);
  LoraConfig lora_config;
  lora_config.rank = 8;
  for (Index l = 0; l < layers; ++l) {
    for (const char* module : {"q_proj", "v_proj"}) {
      const std::string name = "layers." + std::to_string(l) + ".self_attn." + module;
      vera_set.add(name, Vera<float>(projections, width, width, vera_config(256)));
      lora_set.add(name, Lora<float>(width, width, lora_config));
    }
  }
  // Hand counts: VeRA trains out + r = 1280 per layer and shares A [256 x 1024] + B [1024 x 256];
  // LoRA trains r (in + out) = 16384 per layer.
  const AdapterMemory vera = adapter_memory(vera_set), lora = adapter_memory(lora_set);
  CHECK(vera.trainable_parameters == 48 * 1280);
  CHECK(vera.trainable_bytes == 48u * 1280u * 4u);
  CHECK(vera.shared_objects == 1);
  CHECK(vera.frozen_bytes == 2u * 256u * 1024u * 4u);
  CHECK(adapter_bytes(vera_set) == 245760u + 2097152u);
  CHECK(lora.trainable_parameters == 48 * 16384);
  CHECK(lora.frozen_bytes == 0u);
  CHECK(adapter_bytes(lora_set) == 48u * 16384u * 4u);
  CHECK(vera.training_bytes() == 4u * 245760u + 2097152u);
}

TEMPLATE_TEST_CASE("Vera fits a teacher update from its own family (teacher-student)", "[vera]", float, double) {
  using T = TestType;
  const Index in = 16, out = 12, r = 32, n = 96;
  auto projections = std::make_shared<const VeraProjections<T>>(r, in, out, 11);
  // The teacher's update lies in VeRA's family, diag(b*) B diag(d*) A, at a point training reaches from the
  // start (b = 0, d = 0.1): random b*, and d* spread around d_initial. (A d* of random signs can leave plain
  // gradient descent at a saddle of this bilinear problem, where a sign of d must cross zero.)
  Vera<T> teacher(projections, in, out, vera_config(r));
  teacher.lambda_b() = random_matrix<T>(out, 1, 61, 0.7);
  teacher.lambda_d() = random_matrix<T>(r, 1, 62, 0.05).array() + T(0.1);
  const Matrix<T> target = teacher.delta_weight();
  const Matrix<T> x = random_matrix<T>(n, in, 71), y_target = x * target.transpose();

  AdapterSet<Vera<T>> set;
  Vera<T>& student = set.add("layer", Vera<T>(projections, in, out, vera_config(r)));
  AdamWConfig opt;
  opt.lr = 0.02;
  opt.weight_decay = 0;
  AdamW<T> adamw(set.parameters(), opt);
  Matrix<T> y(n, out), G(n, out);
  auto mse = [&] { return (y - y_target).squaredNorm() / static_cast<T>(n * out); };
  y.setZero();
  student.forward(x, y);
  const double initial_loss = mse();
  for (int step = 0; step < 1000; ++step) {
    y.setZero();
    student.forward(x, y);
    G = (y - y_target) * static_cast<T>(2.0 / static_cast<double>(n * out));  // d mse / dy
    set.zero_grad();
    student.backward(x, G);
    adamw.step();
  }
  y.setZero();
  student.forward(x, y);
  CHECK(mse() < 1e-8 * initial_loss);
  CHECK(relative_error(student.delta_weight(), target) < 1e-3);
  // The fit generalizes: a fresh batch sees the same update.
  const Matrix<T> x_new = random_matrix<T>(8, in, 72);
  Matrix<T> y_new = Matrix<T>::Zero(8, out);
  student.forward(x_new, y_new);
  CHECK(relative_error(y_new, Matrix<T>(x_new * target.transpose())) < 1e-3);
}

TEMPLATE_TEST_CASE("A refused Vera call changes nothing (vectors, gradients, workspaces, dropout stream)", "[vera]",
                   float, double) {
  using T = TestType;
  auto projections = std::make_shared<const VeraProjections<T>>(6, 12, 9, 4);
  Vera<T> dropping = random_vera<T>(projections, 12, 7, 0.3);
  CHECK(dropping.config().projection_seed == 4u);  // the projections' seed, whatever the config said
  testing::check_refused_calls_change_nothing(dropping, random_matrix<T>(5, 12, 5), random_matrix<T>(5, 7, 6));
  Vera<T> plain = random_vera<T>(projections, 10, 9);
  testing::check_refused_calls_change_nothing(plain, random_matrix<T>(4, 10, 7), random_matrix<T>(4, 9, 8));
}

}  // namespace lorakit_test_vera
