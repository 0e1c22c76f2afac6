// The tiny llama of examples/tiny_llama: every layer's backward and the whole model's gradient against central
// finite differences in double, RoPE's relative-position property and its rotate_half layout, the causal mask,
// and the errors of bad input.
#include "tiny_llama/model.hpp"

#include "test_support.hpp"

#include <catch2/catch.hpp>

namespace lorakit_test_tiny_llama_model {

namespace {

using lorakit::testing::finite_difference_gradient;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;
using namespace tiny_llama;
using Mat = Matrix<double>;
using Vec = Vector<double>;

/// A scalar objective sum(out .* R) with a fixed random R, so that d objective / d out = R.
double weighted_sum(const Mat& out, const Mat& R) { return out.cwiseProduct(R).sum(); }

/// The model of the tests: small enough for a finite-difference check of every weight.
Config tiny_config() {
  Config c;
  c.vocab = 16;
  c.dim = 8;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.hidden = 12;
  c.context = 6;
  return c;
}

std::vector<std::uint8_t> random_tokens(std::size_t n, Index vocab, std::uint64_t seed) {
  lorakit::Rng rng(seed, 5);
  std::vector<std::uint8_t> out(n);
  for (auto& t : out) t = static_cast<std::uint8_t>(rng.next_u32() % static_cast<std::uint32_t>(vocab));
  return out;
}

/// Weights with non-trivial norms (a check at w = 1 would miss a wrong weight gradient's scaling).
Weights<double> tiny_weights(std::uint64_t seed) {
  lorakit::Rng rng(seed, 1);
  Weights<double> w = Weights<double>::random(tiny_config(), rng);
  // Larger projections than the 0.02 of a fresh model, so that attention is far from uniform.
  for (auto& block : w.blocks) {
    for (auto& W : block.proj) W *= 20;
    block.attn_norm += random_matrix<double>(8, 1, seed + 1, 0.3).col(0);
    block.mlp_norm += random_matrix<double>(8, 1, seed + 2, 0.3).col(0);
  }
  w.embed *= 30;
  w.lm_head *= 30;
  w.norm += random_matrix<double>(8, 1, seed + 3, 0.3).col(0);
  return w;
}

TEST_CASE("tiny_llama RMSNorm backward matches finite differences", "[tiny_llama]") {
  Mat x = random_matrix<double>(5, 8, 1);
  RmsNorm<double> norm(random_matrix<double>(8, 1, 2).col(0), 1e-5, true);
  const Mat R = random_matrix<double>(5, 8, 3);
  Mat y, dx;
  Vec r;
  norm.forward(x, y, r);
  norm.backward(x, r, R, dx);
  const auto f = [&] {
    Mat out;
    Vec rr;
    norm.forward(x, out, rr);
    return weighted_sum(out, R);
  };
  CHECK(relative_error(dx, finite_difference_gradient<double>(x, f)) < 1e-7);
  const Vec analytic = norm.grad_weight;
  CHECK(relative_error(analytic, finite_difference_gradient<double>(norm.weight, f)) < 1e-7);
  // The closed form: y = w * x / sqrt(mean(x^2) + eps).
  const double rms = std::sqrt(x.row(2).squaredNorm() / 8 + 1e-5);
  CHECK(relative_error(y.row(2), x.row(2).cwiseProduct(norm.weight.transpose()) / rms) < 1e-14);
}

TEST_CASE("tiny_llama RoPE: rotate_half layout, relative positions, and its backward is the transpose", "[tiny_llama]") {
  const Index L = 5, head_dim = 4;
  Rope<double> rope(L, head_dim, 10000.0);
  SECTION("closed form at position 1, head size 4: pairs (0, 2) and (1, 3)") {
    Mat x = random_matrix<double>(2, head_dim, 4);
    const Mat original = x;
    rope.forward(x, 2);  // row 1 is at position 1
    const double a0 = 1.0, a1 = std::pow(10000.0, -0.5);  // angles p * base^(-2i/h), i = 0, 1
    CHECK(x.row(0).isApprox(original.row(0)));               // position 0: no rotation
    CHECK(x(1, 0) == Approx(original(1, 0) * std::cos(a0) - original(1, 2) * std::sin(a0)).epsilon(1e-14));
    CHECK(x(1, 2) == Approx(original(1, 2) * std::cos(a0) + original(1, 0) * std::sin(a0)).epsilon(1e-14));
    CHECK(x(1, 1) == Approx(original(1, 1) * std::cos(a1) - original(1, 3) * std::sin(a1)).epsilon(1e-14));
    CHECK(x(1, 3) == Approx(original(1, 3) * std::cos(a1) + original(1, 1) * std::sin(a1)).epsilon(1e-14));
  }
  SECTION("q.k after rotation depends only on the distance between positions") {
    const Mat q = random_matrix<double>(1, head_dim, 5), k = random_matrix<double>(1, head_dim, 6);
    const auto score = [&](Index pq, Index pk) {
      Mat Q = Mat::Zero(L, head_dim), K = Mat::Zero(L, head_dim);
      Q.row(pq) = q;
      K.row(pk) = k;
      rope.forward(Q, L);
      rope.forward(K, L);
      return Q.row(pq).dot(K.row(pk));
    };
    CHECK(score(3, 1) == Approx(score(4, 2)).epsilon(1e-12));
    CHECK(score(2, 0) == Approx(score(4, 2)).epsilon(1e-12));
    CHECK(std::abs(score(3, 1) - score(3, 2)) > 1e-6);  // a different distance gives a different score
  }
  SECTION("backward is the transpose: <R x, y> = <x, R^T y>") {
    Mat x = random_matrix<double>(2 * L, 2 * head_dim, 7), y = random_matrix<double>(2 * L, 2 * head_dim, 8);
    Mat rx = x, rty = y;
    rope.forward(rx, L);
    rope.backward(rty, L);
    CHECK(rx.cwiseProduct(y).sum() == Approx(x.cwiseProduct(rty).sum()).epsilon(1e-13));
  }
}

TEST_CASE("tiny_llama grouped causal attention backward matches finite differences", "[tiny_llama]") {
  const Index batch = 2, L = 4, heads = 4, kv_heads = 2, hd = 3;
  Attention<double> attention(heads, kv_heads, hd);
  Mat q = random_matrix<double>(batch * L, heads * hd, 10);
  Mat k = random_matrix<double>(batch * L, kv_heads * hd, 11);
  Mat v = random_matrix<double>(batch * L, kv_heads * hd, 12);
  const Mat R = random_matrix<double>(batch * L, heads * hd, 13);
  Mat out, dq, dk, dv;
  attention.forward(q, k, v, L, out);
  attention.backward(q, k, v, R, L, dq, dk, dv);
  const auto f = [&] {
    Mat o;
    Attention<double> a(heads, kv_heads, hd);
    a.forward(q, k, v, L, o);
    return weighted_sum(o, R);
  };
  CHECK(relative_error(dq, finite_difference_gradient<double>(q, f)) < 1e-7);
  CHECK(relative_error(dk, finite_difference_gradient<double>(k, f)) < 1e-7);
  CHECK(relative_error(dv, finite_difference_gradient<double>(v, f)) < 1e-7);

  // Closed form for sequence 1, query head 3 (key/value head 1), position 2: softmax over positions 0..2.
  Eigen::RowVectorXd scores(3);
  for (Index s = 0; s < 3; ++s) scores(s) = q.row(L + 2).segment(3 * hd, hd).dot(k.row(L + s).segment(hd, hd)) / std::sqrt(3.0);
  const Eigen::RowVectorXd p = (scores.array() - scores.maxCoeff()).exp().matrix() / (scores.array() - scores.maxCoeff()).exp().sum();
  Eigen::RowVectorXd expected = Eigen::RowVectorXd::Zero(hd);
  for (Index s = 0; s < 3; ++s) expected += p(s) * v.row(L + s).segment(hd, hd);
  CHECK(relative_error(out.row(L + 2).segment(3 * hd, hd), expected) < 1e-14);
}

TEST_CASE("tiny_llama SwiGLU and cross-entropy backward match finite differences", "[tiny_llama]") {
  Mat g = random_matrix<double>(4, 6, 20, 2.0), u = random_matrix<double>(4, 6, 21);
  const Mat R = random_matrix<double>(4, 6, 22);
  Mat h, dg, du;
  SwiGlu<double>::backward(g, u, R, dg, du);
  const auto f = [&] {
    SwiGlu<double>::forward(g, u, h);
    return weighted_sum(h, R);
  };
  CHECK(relative_error(dg, finite_difference_gradient<double>(g, f)) < 1e-7);
  CHECK(relative_error(du, finite_difference_gradient<double>(u, f)) < 1e-7);

  Mat logits = random_matrix<double>(5, 16, 23, 3.0);
  const std::vector<std::uint8_t> targets = {0, 15, 3, 3, 9};
  Mat dlogits;
  const double loss = cross_entropy(logits, targets, &dlogits);
  const auto ce = [&] { return cross_entropy<double>(logits, targets, nullptr); };
  CHECK(relative_error(dlogits, finite_difference_gradient<double>(logits, ce)) < 1e-7);
  // Closed form of the first row's share: log sum exp - logit of the target.
  double expected = 0;
  for (Index i = 0; i < 5; ++i) {
    expected += std::log(logits.row(i).array().exp().sum()) - logits(i, targets[static_cast<std::size_t>(i)]);
  }
  CHECK(loss == Approx(expected / 5).epsilon(1e-13));
}

TEST_CASE("tiny_llama whole-model gradient of every weight matches finite differences", "[tiny_llama]") {
  const Weights<double> w = tiny_weights(30);
  Model<double, Dense<double>> model(w, dense_projections<double>(true), Trainable::all());
  const Index L = 5;
  const auto tokens = random_tokens(2 * L, 16, 31), targets = random_tokens(2 * L, 16, 32);
  auto params = projection_parameters(model);
  for (auto& p : model.other_parameters()) params.push_back(p);
  REQUIRE(params.size() == 2 * 7 + 1 + 2 * 2 + 1 + 1);
  for (auto& p : params) p.grad.setZero();
  model.forward(tokens, L);
  const double loss = model.backward(targets);
  CHECK(loss > 0.5);  // far from a trivial model
  const auto f = [&] { return model.loss(tokens, targets, L); };
  for (auto& p : params) {
    INFO(p.name);
    const Vec analytic = p.grad;
    CHECK(relative_error(analytic, finite_difference_gradient<double>(p.value, f)) < 1e-6);
  }
}

TEST_CASE("tiny_llama with LoRA adapters from an AdapterSet: gradients of A and B, base weights untouched",
          "[tiny_llama]") {
  const Weights<double> w = tiny_weights(40);
  lorakit::AdapterSet<lorakit::Lora<double>> set;
  lorakit::LoraConfig config;
  config.rank = 2;
  config.alpha = 4;
  for (const auto& shape : projection_shapes(w.config)) {
    config.seed = static_cast<std::uint64_t>(set.size()) + 1;
    auto& adapter = set.add(shape.name, lorakit::Lora<double>(shape.in, shape.out, config));
    adapter.B() = random_matrix<double>(shape.out, 2, 100 + static_cast<std::uint64_t>(set.size()), 0.5);
  }
  REQUIRE(set.contains("model.layers.1.mlp.down_proj"));
  REQUIRE(set.contains("model.layers.0.self_attn.k_proj"));
  Model<double, lorakit::AdaptedLinear<double, lorakit::AdapterRef<lorakit::Lora<double>>>> model(
      w, adapted_projections<double>(set));
  CHECK(model.other_parameters().empty());
  const Index L = 5;
  const auto tokens = random_tokens(2 * L, 16, 41), targets = random_tokens(2 * L, 16, 42);
  set.zero_grad();
  model.forward(tokens, L);
  model.backward(targets);
  const auto f = [&] { return model.loss(tokens, targets, L); };
  for (auto& p : set.parameters()) {
    INFO(p.name);
    const Vec analytic = p.grad;
    CHECK(relative_error(analytic, finite_difference_gradient<double>(p.value, f)) < 1e-6);
  }
  // The adapters act through the model: merged into dense weights, the same logits come out.
  Weights<double> merged = w;
  for (const auto& shape : projection_shapes(w.config)) {
    set.at(shape.name).merge_into(merged.blocks[static_cast<std::size_t>(shape.layer)].proj[static_cast<std::size_t>(shape.kind)]);
  }
  Model<double, Dense<double>> dense(merged, dense_projections<double>(false));
  const Mat adapted_logits = model.forward(tokens, L);
  CHECK(relative_error(dense.forward(tokens, L), adapted_logits) < 1e-12);
  CHECK((model.blocks[0][Projection::q].weight() == w.projection(0, Projection::q)));
}

TEST_CASE("tiny_llama causal mask: a later token never changes an earlier logit", "[tiny_llama]") {
  const Weights<double> w = tiny_weights(50);
  Model<double, Dense<double>> model(w, dense_projections<double>(false));
  const Index L = 6;
  auto tokens = random_tokens(2 * L, 16, 51);
  const Mat before = model.forward(tokens, L);
  tokens[3] = static_cast<std::uint8_t>((tokens[3] + 7) % 16);  // sequence 0, position 3
  const Mat after = model.forward(tokens, L);
  CHECK((after.topRows(3) == before.topRows(3)));                          // positions 0..2 of sequence 0
  CHECK((after.bottomRows(L) == before.bottomRows(L)));                    // sequence 1 is independent
  for (Index t = 3; t < L; ++t) CHECK((after.row(t) - before.row(t)).norm() > 1e-6);  // positions 3..5 see it
}

TEST_CASE("tiny_llama rejects bad input with lorakit errors", "[tiny_llama]") {
  Config bad = tiny_config();
  bad.kv_heads = 3;
  CHECK_THROWS_AS(bad.validate(), lorakit::ValueError);
  bad = tiny_config();
  bad.dim = 12;  // head size 3 is odd
  CHECK_THROWS_AS(bad.validate(), lorakit::ValueError);
  Model<double, Dense<double>> model(tiny_weights(60), dense_projections<double>(false));
  CHECK_THROWS_AS(model.forward(random_tokens(10, 16, 1), 7), lorakit::ShapeError);  // longer than the context
  CHECK_THROWS_AS(model.forward(random_tokens(10, 16, 1), 4), lorakit::ShapeError);  // 10 is not a multiple of 4
  CHECK_THROWS_AS(model.forward({1, 2, 200, 3}, 4), lorakit::ValueError);            // token outside the vocabulary
  model.forward(random_tokens(10, 16, 1), 5);
  CHECK_THROWS_AS(model.backward(random_tokens(5, 16, 2)), lorakit::ShapeError);
  CHECK_THROWS_WITH(model.forward({}, 5), Catch::Contains("Model::forward") && Catch::Contains("tokens"));
}

}  // namespace

}  // namespace lorakit_test_tiny_llama_model
