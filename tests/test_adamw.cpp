// optim/adamw.hpp: AdamW against torch.optim.AdamW's algorithm, and LoRA learning a planted update with it.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/adapter/adapted_linear.hpp>
#include <lorakit/adapter/adapter_set.hpp>
#include <lorakit/adapter/lora.hpp>
#include <lorakit/optim/adamw.hpp>
#include <lorakit/optim/loraplus.hpp>

#include <cmath>
#include <limits>

namespace lorakit_test_adamw {

using namespace lorakit;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;

namespace {

/// torch.optim.AdamW's single-tensor update (amsgrad off, maximize off), written out step by step in double.
struct ReferenceAdamW {
  AdamWConfig c;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - c.lr * c.weight_decay;
      m[i] += (g[i] - m[i]) * (1 - c.beta1);  // exp_avg.lerp_(grad, 1 - beta1)
      v[i] = v[i] * c.beta2 + (1 - c.beta2) * g[i] * g[i];
      const double bias_correction1 = 1 - std::pow(c.beta1, t);
      const double bias_correction2 = 1 - std::pow(c.beta2, t);
      const double denom = std::sqrt(v[i]) / std::sqrt(bias_correction2) + c.eps;
      p[i] -= c.lr / bias_correction1 * m[i] / denom;
    }
  }
};

}  // namespace

TEMPLATE_TEST_CASE("AdamW follows torch.optim.AdamW step for step", "[adamw]", float, double) {
  using T = TestType;
  AdamWConfig c;
  c.lr = 0.01;
  c.weight_decay = 0.1;
  Matrix<T> value = random_matrix<T>(3, 5, 1), grad(3, 5);
  AdamW<T> adamw({{"w", flat_view(value), flat_view(grad)}}, c);
  ReferenceAdamW reference{c, {}, {}, 0};
  std::vector<double> p(value.data(), value.data() + value.size());
  for (int step = 0; step < 25; ++step) {
    Rng(100 + static_cast<std::uint64_t>(step)).fill_normal(grad, T(0), T(1));  // in place: the view stays valid
    std::vector<double> g(grad.data(), grad.data() + grad.size());
    adamw.step();
    reference.step(p, g);
  }
  const Eigen::Map<Matrix<double>> expected(p.data(), 3, 5);
  CHECK(relative_error(value.template cast<double>(), expected) < (std::is_same_v<T, float> ? 1e-5 : 1e-13));
  CHECK(adamw.steps("w") == 25);
}

TEST_CASE("AdamW's first step moves each entry by lr against the gradient's sign", "[adamw]") {
  // Closed form: after one step m / sqrt(v) = g / |g| (bias-corrected), so p -= lr * sign(g) (eps aside).
  AdamWConfig c;
  c.lr = 0.05;
  c.weight_decay = 0;
  c.eps = 1e-12;
  Vector<double> value = Vector<double>::Zero(4), grad(4);
  grad << 3.0, -0.001, 250.0, -7.0;
  AdamW<double> adamw({{"p", flat_view(value), flat_view(grad)}}, c);
  adamw.step();
  for (Index i = 0; i < 4; ++i) CHECK(value[i] == Approx(grad[i] > 0 ? -0.05 : 0.05).epsilon(1e-8));
}

TEST_CASE("AdamW state is per parameter and can be reset or rebound", "[adamw]") {
  Matrix<double> a = Matrix<double>::Ones(2, 2), ga = Matrix<double>::Ones(2, 2);
  Matrix<double> b = Matrix<double>::Ones(3, 1), gb = Matrix<double>::Ones(3, 1);
  AdamW<double> adamw({{"a", flat_view(a), flat_view(ga)}, {"b", flat_view(b), flat_view(gb)}});
  adamw.step();
  adamw.step();
  CHECK(adamw.steps("a") == 2);
  adamw.reset_state("a");
  CHECK(adamw.steps("a") == 0);
  CHECK(adamw.first_moment("a").isZero(0));
  CHECK(adamw.steps("b") == 2);

  // A reallocated tensor of another size: rebind it and its state starts over at the new size.
  Matrix<double> b2 = Matrix<double>::Ones(5, 1), gb2 = Matrix<double>::Ones(5, 1);
  adamw.reset_state("b", {"b", flat_view(b2), flat_view(gb2)});
  CHECK(adamw.second_moment("b").size() == 5);
  adamw.step();
  CHECK(b2(0, 0) < 1.0);
  CHECK(adamw.steps("a") == 1);

  // rebind keeps the state of unchanged names and restarts the others.
  adamw.rebind({{"a", flat_view(a), flat_view(ga)}, {"b", flat_view(b), flat_view(gb)}});
  CHECK(adamw.steps("a") == 1);
  CHECK(adamw.steps("b") == 0);
  CHECK(adamw.second_moment("b").size() == 3);

  adamw.zero_grad();
  CHECK(ga.isZero(0));
  CHECK_THROWS_WITH(adamw.reset_state("c"), "AdamW::reset_state: no parameter named 'c'");
  AdamWConfig bad;
  bad.beta1 = 1.0;
  CHECK_THROWS_WITH(AdamW<double>({}, bad), "AdamW::AdamW: beta1 is 1, expected in [0, 1)");
  CHECK_THROWS_AS(adamw.rebind({{"a", flat_view(a), flat_view(ga)}, {"a", flat_view(b), flat_view(gb)}}), ValueError);
}

TEMPLATE_TEST_CASE("LoRA with AdamW learns a planted rank-r update (teacher-student)", "[adamw][training]", float, double) {
  using T = TestType;
  const Index in = 48, out = 40, r = 4, n = 64;
  const Matrix<T> W = random_matrix<T>(out, in, 1, 0.1);
  const Matrix<T> planted = random_matrix<T>(out, r, 2, 0.3) * random_matrix<T>(r, in, 3, 0.3);
  const Matrix<T> teacher = W + planted;
  LoraConfig c;
  c.rank = r;
  c.alpha = 2 * r;
  c.seed = 4;
  auto layer = AdaptedLinear<T, Lora<T>>::owning(W, Lora<T>(in, out, c));
  AdamWConfig opt;
  opt.lr = 1e-2;
  opt.weight_decay = 0;
  AdamW<T> adamw(layer.adapter().parameters(), opt);
  Rng rng(5);
  Matrix<T> x(n, in), y(n, out), dy(n, out), dx(n, in);
  for (int step = 0; step < 1500; ++step) {
    if (step == 1000) adamw.set_lr(1e-3);
    rng.fill_normal(x, T(0), T(1));
    layer.forward(x, y);
    dy = (y - x * teacher.transpose()) * (T(2) / static_cast<T>(y.size()));
    adamw.zero_grad();
    layer.backward(x, dy, dx);
    adamw.step();
  }
  CHECK(relative_error(layer.adapter().delta_weight(), planted) < 1e-3);
}

TEST_CASE("AdamW skips a step with a non-finite gradient without touching anything, and counts it", "[adamw]") {
  Vector<double> a = Vector<double>::Constant(5, 1.0), ga = Vector<double>::Constant(5, 0.5);
  Vector<double> b = Vector<double>::Constant(3, -2.0), gb = Vector<double>::Constant(3, 0.25);
  std::vector<Parameter<double>> params = {{"a", flat_view(a), flat_view(ga)}, {"b", flat_view(b), flat_view(gb)}};
  AdamW<double> optimizer(params, {0.1});
  REQUIRE(optimizer.step());
  const Vector<double> a1 = a, b1 = b;
  const Vector<double> m_a = optimizer.first_moment("a"), v_b = optimizer.second_moment("b");

  for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    gb(2) = bad;  // only b's gradient is bad: a must not move either
    CHECK_FALSE(optimizer.step());
    CHECK(a == a1);
    CHECK(b == b1);
    CHECK(optimizer.first_moment("a") == m_a);
    CHECK(optimizer.second_moment("b") == v_b);
    CHECK(optimizer.steps("a") == 1);
    CHECK(optimizer.last_non_finite() == "b");
  }
  CHECK(optimizer.skipped_steps() == 2);
  gb(2) = 0.25;
  CHECK(optimizer.step());
  CHECK(optimizer.steps("b") == 2);
  CHECK(a != a1);
  CHECK(optimizer.skipped_steps() == 2);
}

TEMPLATE_TEST_CASE("LoRA+ equals two plain AdamW runs: A at lr, B at lr x ratio", "[adamw][loraplus]", float, double) {
  using T = TestType;
  AdapterSet<Lora<T>> set, reference;
  LoraConfig c;
  c.rank = 3;
  c.alpha = 6;
  for (const char* name : {"q_proj", "v_proj"}) {
    set.add(name, Lora<T>(10, 7, c));
    reference.add(name, Lora<T>(10, 7, c));
  }
  AdamWConfig config;
  config.lr = 2e-3;
  config.weight_decay = 0.05;
  AdamW<T> plus(set.parameters(), config);
  apply_loraplus(plus, {16});
  CHECK(plus.lr_multiplier("q_proj.A") == 1.0);
  CHECK(plus.lr_multiplier("v_proj.B") == 16.0);

  // The reference: one AdamW over every A at lr, another over every B at 16 lr.
  std::vector<Parameter<T>> As, Bs;
  for (auto& p : reference.parameters()) (p.name.back() == 'A' ? As : Bs).push_back(p);
  AdamWConfig fast = config;
  fast.lr = 16 * config.lr;
  AdamW<T> slow_A(As, config), fast_B(Bs, fast);

  for (int step = 0; step < 6; ++step) {
    auto mine = set.parameters(), theirs = reference.parameters();
    for (std::size_t i = 0; i < mine.size(); ++i) {
      mine[i].grad = random_matrix<T>(mine[i].grad.size(), 1, 100 + static_cast<std::uint64_t>(10 * step + i));
      theirs[i].grad = mine[i].grad;
    }
    plus.step();
    slow_A.step();
    fast_B.step();
  }
  auto mine = set.parameters(), theirs = reference.parameters();
  for (std::size_t i = 0; i < mine.size(); ++i) {
    INFO(mine[i].name);
    CHECK(mine[i].value == theirs[i].value);  // bit for bit: the same update in the same order
  }
  CHECK_THROWS_WITH(apply_loraplus(plus, {0.0}), "apply_loraplus: lr_ratio is 0, expected a finite value > 0");
  CHECK_THROWS_AS(plus.set_group("nope", 2.0), ValueError);
}

}  // namespace lorakit_test_adamw
