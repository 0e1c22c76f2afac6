// Benchmarks of the SVD kernels against Eigen's BDCSVD, at the shapes of the targets:
// randomized_svd 4096 x 4096 k = 64 (peer: ../shared/peer/rsvd.py), product_svd 4096 x 4096 r = 64,
// StreamingSvd::update at 4096 features, 512 rows, 32 components (peer: ../shared/peer/eva_ipca.py).
// Float, two threads (Eigen over OpenMP), like the PyTorch peers. Dense SVDs above 2048 take minutes: they are
// timed at 1024 and 2048 and extrapolated to 4096 by the O(n^3) law (see docs/performance.md).
#include <benchmark/benchmark.h>

#include <lorakit/core/random.hpp>
#include <lorakit/kernel/product_svd.hpp>
#include <lorakit/kernel/randomized_svd.hpp>
#include <lorakit/kernel/streaming_svd.hpp>

#include <Eigen/Dense>

#include <map>
#include <vector>

using namespace lorakit;
using ColMatrixF = Eigen::MatrixXf;

namespace {

Matrix<float> gaussian(Index rows, Index cols, std::uint64_t seed, float stddev = 1.0f) {
  Matrix<float> m(rows, cols);
  Rng rng(seed, 7);
  rng.fill_normal(m, 0.0f, stddev);
  return m;
}

ColMatrixF orthonormal(Index n, std::uint64_t seed) {
  Eigen::HouseholderQR<ColMatrixF> qr(ColMatrixF(gaussian(n, n, seed)));
  return qr.householderQ();
}

/// As rsvd.py: U diag(1/i) V^T with Haar-like U, V; cached per size (the QRs take seconds at 4096).
const Matrix<float>& spectrum_matrix(Index n, Eigen::VectorXf* spectrum = nullptr) {
  static std::map<Index, Matrix<float>> cache;
  Eigen::VectorXf s(n);
  for (Index i = 0; i < n; ++i) s(i) = 1.0f / static_cast<float>(i + 1);
  if (spectrum) *spectrum = s;
  auto it = cache.find(n);
  if (it == cache.end()) {
    const ColMatrixF u = orthonormal(n, 1), v = orthonormal(n, 2);
    it = cache.emplace(n, Matrix<float>(u * s.asDiagonal() * v.transpose())).first;
  }
  return it->second;
}

void BM_randomized_svd(benchmark::State& state) {
  const Index n = state.range(0), k = state.range(1);
  RsvdOptions options;
  options.oversamples = 10;
  options.power_iterations = state.range(2);
  Eigen::VectorXf s;
  const Matrix<float>& a = spectrum_matrix(n, &s);
  Svd<float> svd;
  for (auto _ : state) {
    svd = randomized_svd<float>(a, k, options);
    benchmark::DoNotOptimize(svd.S.data());
  }
  // In double: a float sum of 16M squares is off by about a percent.
  const Eigen::MatrixXd approx = (svd.U * svd.S.asDiagonal() * svd.V.transpose()).cast<double>();
  state.counters["error/optimal"] = (a.cast<double>() - approx).norm() / s.cast<double>().tail(n - k).norm();
}
BENCHMARK(BM_randomized_svd)
    ->ArgNames({"n", "k", "iters"})
    ->Args({1024, 64, 2})
    ->Args({4096, 64, 2})
    ->Args({4096, 64, 1})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(5)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

/// The full SVD BDCSVD computes (thin U and V), the baseline of randomized_svd.
void BM_bdcsvd_dense(benchmark::State& state) {
  const Index n = state.range(0);
  const ColMatrixF a = spectrum_matrix(n);
  for (auto _ : state) {
    Eigen::BDCSVD<ColMatrixF> svd(a, Eigen::ComputeThinU | Eigen::ComputeThinV);
    benchmark::DoNotOptimize(svd.singularValues().data());
  }
}
BENCHMARK(BM_bdcsvd_dense)->ArgName("n")->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->Iterations(1);

void BM_product_svd(benchmark::State& state) {
  const Index n = state.range(0), r = state.range(1);
  const Matrix<float> b = gaussian(n, r, 3), a = gaussian(r, n, 4);
  for (auto _ : state) {
    Svd<float> svd = product_svd<float>(b, a, r);
    benchmark::DoNotOptimize(svd.S.data());
  }
}
BENCHMARK(BM_product_svd)
    ->ArgNames({"n", "r"})
    ->Args({4096, 64})
    ->Args({4096, 16})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(20)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

/// The dense route product_svd avoids: form B A and take its SVD.
void BM_dense_product_svd(benchmark::State& state) {
  const Index n = state.range(0), r = state.range(1);
  const Matrix<float> b = gaussian(n, r, 3), a = gaussian(r, n, 4);
  for (auto _ : state) {
    const ColMatrixF dense = b * a;
    Eigen::BDCSVD<ColMatrixF> svd(dense, Eigen::ComputeThinU | Eigen::ComputeThinV);
    benchmark::DoNotOptimize(svd.singularValues().data());
  }
}
BENCHMARK(BM_dense_product_svd)
    ->ArgNames({"n", "r"})
    ->Args({1024, 64})
    ->Args({2048, 64})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

/// One StreamingSvd update in steady state, on data drawn as in eva_ipca.py: x = randn(tokens, features) mix,
/// mix = randn(features, features) / sqrt(features).
void BM_streaming_svd_update(benchmark::State& state) {
  const Index features = state.range(0), tokens = state.range(1), k = state.range(2);
  const Matrix<float> mix = gaussian(features, features, 5, 1.0f / std::sqrt(static_cast<float>(features)));
  std::vector<Matrix<float>> batches;
  for (std::uint64_t i = 0; i < 4; ++i) batches.push_back(gaussian(tokens, features, 10 + i) * mix);
  StreamingSvd<float> stream(features, k);
  stream.update(batches[0]);
  std::size_t next = 1;
  for (auto _ : state) {
    stream.update(batches[next]);
    next = (next + 1) % batches.size();
  }
  state.counters["explained"] = stream.explained_variance_ratio().sum();
}
BENCHMARK(BM_streaming_svd_update)
    ->ArgNames({"features", "tokens", "k"})
    ->Args({4096, 512, 32})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(8)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true);

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(2);  // the peers run PyTorch with two threads
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
