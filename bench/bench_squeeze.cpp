// LoRA-Squeeze: cutting one 4096 x 4096 adapter from rank 64 to 16 with `squeeze` (product_svd of the factors),
// against the dense route it replaces: form the update s B A and take its full SVD (Eigen's BDCSVD, thin U and V),
// then keep 16 triplets. The dense SVD runs at n = 1024 and 2048 (at 4096 it takes minutes; docs/performance.md
// extrapolates it as n^3). Also `squeeze_dense` (randomized SVD) of the dense 4096 x 4096 update.
//
// The counter `diff_vs_dense` is ||squeeze(a, 16).delta_weight() - truncation of BDCSVD(a.delta_weight())||_F
// relative to the latter, measured once outside the timed loop: both routes give the same adapter update.
#include <benchmark/benchmark.h>

#include <lorakit/core/random.hpp>
#include <lorakit/rank/squeeze.hpp>

#include <Eigen/SVD>

namespace {

using lorakit::Index;
using lorakit::Lora;
using lorakit::Matrix;

constexpr Index kSourceRank = 64;
constexpr Index kTargetRank = 16;

/// A rank-64 adapter of an n x n layer with Gaussian factors (alpha = 128, s = 2).
template <class T>
Lora<T> trained_adapter(Index n) {
  lorakit::Rng rng(11);
  Matrix<T> A(kSourceRank, n), B(n, kSourceRank);
  rng.fill_normal(A, T(0), static_cast<T>(0.05));
  rng.fill_normal(B, T(0), static_cast<T>(0.05));
  lorakit::LoraConfig config;
  config.rank = kSourceRank;
  config.alpha = 128;
  return Lora<T>::from_factors(std::move(A), std::move(B), config);
}

/// The dense route: SVD of s B A, truncated to the target rank.
template <class T>
Matrix<T> dense_truncation(const Lora<T>& adapter) {
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> dense = adapter.delta_weight();
  Eigen::BDCSVD<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> svd(dense, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return svd.matrixU().leftCols(kTargetRank) * svd.singularValues().head(kTargetRank).asDiagonal() *
         svd.matrixV().leftCols(kTargetRank).transpose();
}

template <class T>
void BM_squeeze(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const Index n = state.range(0);
  const Lora<T> adapter = trained_adapter<T>(n);
  for (auto _ : state) {
    Lora<T> squeezed = lorakit::squeeze(adapter, kTargetRank);
    benchmark::DoNotOptimize(squeezed.A().data());
  }
  if (n <= 2048) {
    const Matrix<double> reference = dense_truncation(adapter).template cast<double>();
    const Matrix<double> ours = lorakit::squeeze(adapter, kTargetRank).delta_weight().template cast<double>();
    state.counters["diff_vs_dense"] = (ours - reference).norm() / reference.norm();
  }
}
BENCHMARK_TEMPLATE(BM_squeeze, float)->ArgName("n")->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)
    ->Repetitions(3)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_squeeze, double)->ArgName("n")->Arg(1024)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)
    ->Repetitions(3)->ReportAggregatesOnly(true);

template <class T>
void BM_dense_svd_truncation(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const Index n = state.range(0);
  const Lora<T> adapter = trained_adapter<T>(n);
  for (auto _ : state) {
    Matrix<T> truncation = dense_truncation(adapter);
    benchmark::DoNotOptimize(truncation.data());
  }
}
BENCHMARK_TEMPLATE(BM_dense_svd_truncation, float)->ArgName("n")->Arg(1024)->Arg(2048)
    ->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK_TEMPLATE(BM_dense_svd_truncation, double)->ArgName("n")->Arg(1024)->Arg(2048)
    ->Unit(benchmark::kMillisecond)->Iterations(1);

/// squeeze_dense: randomized SVD (16 + 10 columns, two power iterations) of the dense 4096 x 4096 update.
template <class T>
void BM_squeeze_dense(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const Index n = state.range(0);
  const Matrix<T> dense = trained_adapter<T>(n).delta_weight();
  lorakit::LoraConfig config;
  config.alpha = 32;
  for (auto _ : state) {
    Lora<T> squeezed = lorakit::squeeze_dense<T>(dense, kTargetRank, config);
    benchmark::DoNotOptimize(squeezed.A().data());
  }
}
BENCHMARK_TEMPLATE(BM_squeeze_dense, float)->ArgName("n")->Arg(4096)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
