// EVA's statistics: one observe step at 4096 features, 512 tokens per batch, rank 16, rho 2 (32 components),
// the case of ../shared/peer/eva_ipca.py; the streaming SVD update alone, to tell its cost apart from EVA's own
// bookkeeping; and the size of EVA's state after 10 and after 100 batches.
#include <benchmark/benchmark.h>

#include <lorakit/core/random.hpp>
#include <lorakit/init/eva.hpp>

#include <sys/resource.h>

#include <vector>

namespace {

using lorakit::Index;
using lorakit::Matrix;

constexpr Index kFeatures = 4096;
constexpr Index kTokens = 512;
constexpr Index kRank = 16;
constexpr double kRho = 2.0;
constexpr int kPool = 3;

/// Batches as the peer draws them: x = randn(tokens, features) @ mix, mix = randn(features, features) / sqrt(features).
template <class T>
const std::vector<Matrix<T>>& batches() {
  static const std::vector<Matrix<T>> pool = [] {
    Matrix<T> mix(kFeatures, kFeatures);
    lorakit::Rng rng(0);
    rng.fill_normal(mix, T(0), static_cast<T>(1.0 / std::sqrt(static_cast<double>(kFeatures))));
    std::vector<Matrix<T>> out;
    for (int b = 0; b < kPool; ++b) {
      Matrix<T> z(kTokens, kFeatures);
      rng.fill_normal(z, T(0), T(1));
      Matrix<T> x(kTokens, kFeatures);
      x.noalias() = z * mix;
      out.push_back(std::move(x));
    }
    return out;
  }();
  return pool;
}

template <class T>
lorakit::Eva<T> make_eva() {
  lorakit::EvaConfig config;
  config.rank = kRank;
  config.rho = kRho;
  config.tau = 2;  // never converges: every observe does the full update
  lorakit::Eva<T> eva(config);
  eva.add_layer("layer", kFeatures, kFeatures);
  return eva;
}

template <class T>
void BM_EvaObserve(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const auto& pool = batches<T>();
  auto eva = make_eva<T>();
  eva.observe("layer", pool[0]);  // the first batch (no previous components) is not the steady state
  std::size_t i = 1;
  for (auto _ : state) {
    eva.observe("layer", pool[i++ % pool.size()]);
    benchmark::ClobberMemory();
  }
  state.counters["components"] = static_cast<double>(eva.components("layer").rows());
}

template <class T>
void BM_StreamingSvdUpdate(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const auto& pool = batches<T>();
  lorakit::StreamingSvd<T> svd(kFeatures, static_cast<Index>(kRank * kRho));
  svd.update(pool[0]);
  std::size_t i = 1;
  for (auto _ : state) {
    svd.update(pool[i++ % pool.size()]);
    benchmark::ClobberMemory();
  }
}

long max_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

/// EVA's state after `batches` observe calls: its size must not grow with the number of batches.
void BM_EvaStateSize(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const auto& pool = batches<float>();
  const auto n = static_cast<std::size_t>(state.range(0));
  std::size_t bytes = 0;
  long rss_before = 0, rss_after = 0;
  for (auto _ : state) {
    auto eva = make_eva<float>();
    rss_before = max_rss_kib();
    for (std::size_t b = 0; b < n; ++b) eva.observe("layer", pool[b % pool.size()]);
    rss_after = max_rss_kib();
    bytes = eva.state_bytes();
  }
  state.counters["state_bytes"] = static_cast<double>(bytes);
  state.counters["max_rss_growth_KiB"] = static_cast<double>(rss_after - rss_before);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_EvaObserve, float)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_TEMPLATE(BM_StreamingSvdUpdate, float)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_TEMPLATE(BM_EvaObserve, double)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_EvaStateSize)->Arg(10)->Arg(100)->Iterations(1)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
