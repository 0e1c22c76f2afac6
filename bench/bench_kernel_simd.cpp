// Benchmarks of the SIMD kernels (kernel/simd.hpp) against Eigen: AdamW's elementwise update (docs/performance.md).
// The adapter bank's gathered products are measured in bench_bank.cpp.
#include <benchmark/benchmark.h>

#include <lorakit/core/random.hpp>
#include <lorakit/kernel/simd.hpp>
#include <lorakit/optim/adamw.hpp>

#include <Eigen/Core>

using namespace lorakit;

namespace {

template <class T>
Matrix<T> gaussian(Index rows, Index cols, std::uint64_t seed) {
  Matrix<T> m(rows, cols);
  Rng rng(seed, 3);
  rng.fill_normal(m, T(0), T(1));
  return m;
}

template <class T>
void BM_adamw_eigen(benchmark::State& state) {
  const Index n = state.range(0);
  Vector<T> p = gaussian<T>(n, 1, 1), g = gaussian<T>(n, 1, 2), m = Vector<T>::Zero(n), v = Vector<T>::Zero(n);
  const T decay = T(1 - 1e-3 * 1e-2), b1 = T(0.9), b2 = T(0.999), lr = T(1e-2), ib = T(30), eps = T(1e-8);
  for (auto _ : state) {
    p *= decay;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g.cwiseProduct(g);
    p.array() -= lr * m.array() / (v.array().sqrt() * ib + eps);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<Index>(sizeof(T)) * 7);
}

template <class T>
void BM_adamw_simd(benchmark::State& state) {
  const Index n = state.range(0);
  Vector<T> p = gaussian<T>(n, 1, 1), g = gaussian<T>(n, 1, 2), m = Vector<T>::Zero(n), v = Vector<T>::Zero(n);
  const AdamWStepCoefficients step = adamw_step_coefficients(AdamWConfig{}, 10);
  for (auto _ : state) {
    adamw_update(p.data(), m.data(), v.data(), g.data(), n, step);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(state.iterations() * n * static_cast<Index>(sizeof(T)) * 7);
}
BENCHMARK_TEMPLATE(BM_adamw_eigen, float)->Arg(4096 * 16)->Arg(1 << 20);
BENCHMARK_TEMPLATE(BM_adamw_simd, float)->Arg(4096 * 16)->Arg(1 << 20);

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(2);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
