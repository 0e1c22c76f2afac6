// dist/mpi.hpp under mpirun (2 and 3 ranks; every test case is collective and runs on every rank in the same
// order). Data-parallel AdamW training equals one process on the whole batch; the ranks' adapters and AdamW moments
// are bit-identical; EVA over shards equals EVA over all the data; reduced Fisher statistics equal the
// single-process sums; failures on one rank reach every rank.
#include <catch2/catch.hpp>

#include "catch_session.hpp"

#include <lorakit/adapter/adapter_set.hpp>
#include <lorakit/adapter/lora.hpp>
#include <lorakit/core/random.hpp>
#include <lorakit/dist/mpi.hpp>
#include <lorakit/optim/adamw.hpp>

#include <Eigen/QR>
#include <Eigen/SVD>

#include <cmath>
#include <cstring>
#include <string>

using namespace lorakit;

namespace {

const MPI_Comm world = MPI_COMM_WORLD;

template <class T>
Matrix<T> gaussian(Index rows, Index cols, std::uint64_t seed, double stddev = 1.0) {
  Matrix<T> m(rows, cols);
  Rng(seed, 3).fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

/// True on every rank when the `bytes` bytes at `data` are the same on every rank (collective).
bool same_on_all_ranks(const void* data, std::size_t bytes) {
  std::vector<char> root(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
  MPI_Bcast(root.data(), static_cast<int>(bytes), MPI_BYTE, 0, world);
  int same = std::memcmp(root.data(), data, bytes) == 0 ? 1 : 0, all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, world);
  return all == 1;
}

template <class M>
bool same_on_all_ranks(const M& m) {
  return same_on_all_ranks(m.data(), sizeof(typename M::Scalar) * static_cast<std::size_t>(m.size()));
}

bool same_on_all_ranks(const std::vector<std::uint8_t>& bytes) {
  std::uint64_t n = bytes.size(), least = 0, most = 0;
  MPI_Allreduce(&n, &least, 1, MPI_UINT64_T, MPI_MIN, world);
  MPI_Allreduce(&n, &most, 1, MPI_UINT64_T, MPI_MAX, world);
  return least == most && same_on_all_ranks(bytes.data(), bytes.size());
}

/// A two-layer linear model x -> h = x Wa^T + a(x) -> y = h Wb^T + b(h) with LoRA adapters a, b, trained on
/// L = sum over rows of ||y - t||^2 / (2 * divisor).
template <class T>
struct TwoLayerModel {
  Matrix<T> Wa = gaussian<T>(6, 8, 11, 0.3), Wb = gaussian<T>(4, 6, 12, 0.3);
  AdapterSet<Lora<T>> adapters;

  explicit TwoLayerModel(std::uint64_t seed) {
    LoraConfig config{3, 6.0};
    config.seed = seed;
    adapters.add("a", Lora<T>(8, 6, config));
    config.seed = seed + 1;
    adapters.add("b", Lora<T>(6, 4, config));
    // B = 0 would leave A's first gradients at zero: start from a non-zero B so both factors move at once.
    adapters.at("a").B() = gaussian<T>(6, 3, seed + 2, 0.1);
    adapters.at("b").B() = gaussian<T>(4, 3, seed + 3, 0.1);
  }

  /// Gradients of the loss over rows x [n x 8], targets t [n x 4], accumulated into the adapters' grads.
  void backward(const Matrix<T>& x, const Matrix<T>& t, double divisor) {
    Matrix<T> h = x * Wa.transpose();
    adapters.at("a").forward(x, h);
    Matrix<T> y = h * Wb.transpose();
    adapters.at("b").forward(h, y);
    const Matrix<T> dy = (y - t) / static_cast<T>(divisor);
    Matrix<T> dh = dy * Wb;
    adapters.at("b").backward(h, dy, dh);
    adapters.at("a").backward(x, dh);
  }
};

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

template <class DA, class DB>
double relative_error(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  return static_cast<double>((a - b).norm()) / std::max(static_cast<double>(b.norm()), 1e-300);
}

/// Trains `steps` AdamW steps on batches of `rows` rows: every rank takes its share (dist::shard_rows) and the
/// gradients are averaged with weights = rows of the share; `ranks` = 1 is the single-process reference.
template <class T>
void train(TwoLayerModel<T>& model, AdamW<T>& optimizer, Index rows, int steps, bool distributed) {
  auto parameters = model.adapters.parameters();
  for (int step = 0; step < steps; ++step) {
    const Matrix<T> x = gaussian<T>(rows, 8, 100 + step), t = gaussian<T>(rows, 4, 200 + step);
    optimizer.zero_grad();
    if (distributed) {
      const dist::RowRange share = dist::shard_rows(world, rows);
      model.backward(x.middleRows(share.begin, share.count), t.middleRows(share.begin, share.count),
                     static_cast<double>(share.count));
      dist::allreduce_gradients(world, parameters, static_cast<double>(share.count));
    } else {
      model.backward(x, t, static_cast<double>(rows));
    }
    optimizer.step();
  }
}

/// An orthonormal basis [d x f] (rows).
Eigen::MatrixXd orthonormal_rows(Index d, Index f, std::uint64_t seed) {
  const Eigen::MatrixXd g = gaussian<double>(f, d, seed);
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return (qr.householderQ() * Eigen::MatrixXd::Identity(f, d)).transpose();
}

/// rows samples z diag(scales) basis + noise, z standard normal.
template <class T>
Matrix<T> planted(Index rows, const Eigen::MatrixXd& basis, const Eigen::VectorXd& scales, double noise,
                  std::uint64_t seed) {
  const Eigen::MatrixXd z = gaussian<double>(rows, basis.rows(), seed);
  const Eigen::MatrixXd x = z * scales.asDiagonal() * basis + gaussian<double>(rows, basis.cols(), seed + 7, noise);
  return x.cast<T>();
}

/// The largest principal angle between the row spaces of a and b (orthonormal rows), in radians.
template <class DA, class DB>
double largest_angle(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  const Eigen::MatrixXd product = a.template cast<double>() * b.template cast<double>().transpose();
  const double smallest_cosine = Eigen::JacobiSVD<Eigen::MatrixXd>(product).singularValues().minCoeff();
  return std::acos(std::min(1.0, smallest_cosine));
}

}  // namespace

TEMPLATE_TEST_CASE("data-parallel AdamW training equals one process on the whole batch", "[mpi]", float, double) {
  using T = TestType;
  const int me = dist::rank(world);
  // Every rank starts from its own random adapters; broadcast_values makes them rank 0's.
  TwoLayerModel<T> model(1000 + static_cast<std::uint64_t>(me) * 17);
  auto parameters = model.adapters.parameters();
  for (auto& p : parameters) p.grad.setConstant(static_cast<T>(me + 1));
  dist::broadcast_values(world, parameters);
  for (auto& p : parameters) CHECK((p.grad.array() == static_cast<T>(me + 1)).all());  // gradients untouched
  TwoLayerModel<T> reference(1000);  // rank 0's seed
  CHECK(model.adapters.at("a").A() == reference.adapters.at("a").A());
  CHECK(model.adapters.at("b").B() == reference.adapters.at("b").B());

  AdamW<T> optimizer(parameters, AdamWConfig{0.01});
  AdamW<T> reference_optimizer(reference.adapters.parameters(), AdamWConfig{0.01});
  // 12 rows split evenly over 2 and 3 ranks, 13 unevenly (the weights make it the whole batch's mean).
  for (Index rows : {Index{12}, Index{13}}) {
    train(model, optimizer, rows, 4, true);
    train(reference, reference_optimizer, rows, 4, false);
  }
  for (const char* name : {"a", "b"}) {
    const Lora<T>& mine = model.adapters.at(name);
    const Lora<T>& single = reference.adapters.at(name);
    CHECK(relative_error(mine.A(), single.A()) < tolerance<T>());
    CHECK(relative_error(mine.B(), single.B()) < tolerance<T>());
    CHECK(relative_error(mine.A(), TwoLayerModel<T>(1000).adapters.at(name).A()) > 1e-3);  // it did train
    // Every rank holds the same bits: adapters, gradients and AdamW's moments and step counts.
    CHECK(same_on_all_ranks(mine.A()));
    CHECK(same_on_all_ranks(mine.B()));
    CHECK(same_on_all_ranks(mine.grad_A()));
    for (const char* factor : {".A", ".B"}) {
      const std::string parameter = std::string(name) + factor;
      CHECK(optimizer.steps(parameter) == 8);
      CHECK(same_on_all_ranks(optimizer.first_moment(parameter)));
      CHECK(same_on_all_ranks(optimizer.second_moment(parameter)));
    }
  }
}

TEST_CASE("allreduce_gradients: the plain mean, and the fused buffer is reused", "[mpi]") {
  const int me = dist::rank(world), ranks = dist::size(world);
  Matrix<double> g1(2, 3), g2(1, 5), v1 = Matrix<double>::Constant(2, 3, 7.0), v2 = Matrix<double>::Zero(1, 5);
  std::vector<Parameter<double>> parameters{{"p1", flat_view(v1), flat_view(g1)}, {"p2", flat_view(v2), flat_view(g2)}};
  for (Index i = 0; i < g1.size(); ++i) g1.data()[i] = static_cast<double>(me * 10 + i);
  g2.setConstant(static_cast<double>(me));
  dist::allreduce_gradients(world, parameters);
  // mean over r of (10 r + i) = 10 (P - 1) / 2 + i, exact in double.
  for (Index i = 0; i < g1.size(); ++i) CHECK(g1.data()[i] == 10.0 * (ranks - 1) / 2.0 + static_cast<double>(i));
  CHECK((g2.array() == (ranks - 1) / 2.0).all());
  CHECK((v1.array() == 7.0).all());  // values untouched
  const double* buffer = dist::detail::fused_buffer<double>().data();
  dist::allreduce_gradients(world, parameters);
  CHECK(dist::detail::fused_buffer<double>().data() == buffer);
}

TEST_CASE("collective calls with mismatched inputs throw on every rank instead of hanging", "[mpi]") {
  const int me = dist::rank(world);
  // Different parameter sizes on the last rank.
  const Index n = me == dist::size(world) - 1 ? 4 : 3;
  Matrix<float> value = Matrix<float>::Zero(1, n), grad = Matrix<float>::Zero(1, n);
  std::vector<Parameter<float>> parameters{{"p", flat_view(value), flat_view(grad)}};
  CHECK_THROWS_WITH(dist::allreduce_gradients(world, parameters),
                    Catch::Contains("the ranks hold different parameters"));
  CHECK_THROWS_AS(dist::broadcast_values(world, parameters), ShapeError);
  // A negative weight on rank 0 only.
  Matrix<float> same_value = Matrix<float>::Zero(1, 3), same_grad = Matrix<float>::Ones(1, 3);
  std::vector<Parameter<float>> same{{"p", flat_view(same_value), flat_view(same_grad)}};
  CHECK_THROWS_AS(dist::allreduce_gradients(world, same, me == 0 ? -1.0 : 1.0), ValueError);

  // Eva with other layers on rank 1: the merge fails at rank 0 and every rank learns it.
  Eva<double> eva(EvaConfig{2, 1.0, 2.0});
  eva.add_layer(me == 1 ? "other" : "layer", 6, 4);
  eva.observe(me == 1 ? "other" : "layer", gaussian<double>(5, 6, 40 + static_cast<std::uint64_t>(me)));
  const auto before = io::state_to_bytes(eva);
  CHECK_THROWS_WITH(dist::allreduce(world, eva), Catch::Contains("rank 1's statistics do not merge"));
  CHECK(io::state_to_bytes(eva) == before);

  // A batch with a NaN on rank 1 only, observed inside dist::collectively: the ValueError reaches every rank.
  Eva<double> good(EvaConfig{2, 1.0, 2.0});
  good.add_layer("layer", 6, 4);
  Matrix<double> batch = gaussian<double>(5, 6, 50);
  if (me == 1) batch(2, 3) = std::nan("");
  try {
    dist::collectively(world, [&] { good.observe("layer", batch); });
    FAIL("no exception on rank " << me);
  } catch (const ValueError& e) {
    const std::string expected = me == 1 ? "Eva::observe: inputs[2, 3] is nan" : "rank 1 failed: Eva::observe";
    CHECK(std::string(e.what()).find(expected) != std::string::npos);
  }
  CHECK_NOTHROW(dist::collectively(world, [] {}));
}

TEMPLATE_TEST_CASE("EVA over shards equals EVA over all the data, bit-identical on every rank", "[mpi]", float,
                   double) {
  using T = TestType;
  const Index f = 16;
  const Eigen::MatrixXd basis_a = orthonormal_rows(4, f, 60), basis_b = orthonormal_rows(3, f, 61);
  const Eigen::VectorXd scales_a = (Eigen::VectorXd(4) << 6, 4, 3, 2).finished();
  const Eigen::VectorXd scales_b = (Eigen::VectorXd(3) << 2, 1, 0.5).finished();
  EvaConfig config{3, 2.0, 2.0};  // k = 6 components; tau > 1: every batch counts
  auto make = [&] {
    Eva<T> eva(config);
    eva.add_layer("a", f, 12);
    eva.add_layer("b", f, 10);
    return eva;
  };
  Eva<T> local = make(), single = make();
  for (int batch = 0; batch < 5; ++batch) {
    const Matrix<T> xa = planted<T>(30, basis_a, scales_a, 1e-3, 300 + batch);
    const Matrix<T> xb = planted<T>(30, basis_b, scales_b, 1e-3, 400 + batch);
    const dist::RowRange share = dist::shard_rows(world, 30);
    local.observe("a", xa.middleRows(share.begin, share.count));
    local.observe("b", xb.middleRows(share.begin, share.count));
    single.observe("a", xa);
    single.observe("b", xb);
  }
  const Eva<T> global = dist::merged(world, local);
  CHECK(same_on_all_ranks(io::state_to_bytes(global)));
  CHECK(global.samples_seen("a") == 150);
  CHECK(global.ranks() == single.ranks());
  for (const char* layer : {"a", "b"}) {
    const Index r = single.ranks().at(layer);
    REQUIRE(r > 0);
    CHECK(largest_angle(global.components(layer).topRows(r), single.components(layer).topRows(r)) < 1e-3);
    CHECK(relative_error(global.singular_values(layer).head(r), single.singular_values(layer).head(r)) < 1e-4);
  }
  // allreduce replaces the local state by the same merge.
  dist::allreduce(world, local);
  CHECK(io::state_to_bytes(local) == io::state_to_bytes(global));
  const auto adapters = local.make_adapters(LoraConfig{3, 6.0});
  CHECK(same_on_all_ranks(adapters.at("a").A()));
}

TEMPLATE_TEST_CASE("reduced Fisher statistics equal the single-process sums", "[mpi]", float, double) {
  using T = TestType;
  // Entries that are multiples of 1/4 in [-2, 2]: every product and partial sum is exact in double, so the sums
  // do not depend on the order of addition and must be equal, not just close.
  auto quarters = [](Index rows, Index cols, std::uint64_t seed) {
    Matrix<T> m = gaussian<T>(rows, cols, seed);
    return Matrix<T>((m.array() * T(4)).round().cwiseMax(T(-8)).cwiseMin(T(8)) / T(4));
  };
  FisherStatistics<T> local(5, 3), single(5, 3);
  for (int batch = 0; batch < 4; ++batch) {
    const Matrix<T> x = quarters(9, 5, 500 + batch), dy = quarters(9, 3, 600 + batch);
    const dist::RowRange share = dist::shard_rows(world, 9);
    if (share.count > 0) local.observe(x.middleRows(share.begin, share.count), dy.middleRows(share.begin, share.count), 1);
    single.observe(x, dy, 1);
  }
  dist::allreduce(world, local);
  CHECK(local.tokens() == single.tokens());
  CHECK(local.samples() == 4 * dist::size(world));  // each rank counted one sample per batch
  CHECK(local.input_moment_sum() == single.input_moment_sum());
  CHECK(local.output_square_sum() == single.output_square_sum());
  CHECK(local.gradient_sum() == single.gradient_sum());
  CHECK(same_on_all_ranks(io::state_to_bytes(local)));
}

TEST_CASE("shard_rows splits rows contiguously in rank order", "[mpi]") {
  Index next = 0;
  for (int r = 0; r < 3; ++r) {
    const dist::RowRange share = dist::shard_rows(10, 3, r);
    CHECK(share.begin == next);
    CHECK(share.count == (r == 0 ? 4 : 3));
    next += share.count;
  }
  CHECK(dist::shard_rows(2, 3, 2).count == 0);
  CHECK_THROWS_AS(dist::shard_rows(5, 2, 2), ValueError);
}

int main(int argc, char** argv) {
  lorakit::dist::Environment mpi(argc, argv);
  return lorakit::testing::run_catch(argc, argv);
}
