// Benchmarks of the SIMD kernels (kernel/simd.hpp) against Eigen at the adapters' shapes: the rank-r projection
// x A^T (n = 128..512 tokens, in = 512..4096, r = 8..64) and AdamW's elementwise update. A kernel replaces
// Eigen in kernel/lowrank_products.hpp only where this table shows it faster (docs/performance.md).
#include <benchmark/benchmark.h>

#include <lorakit/core/random.hpp>
#include <lorakit/kernel/simd.hpp>

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
void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

template <class T>
void BM_project_eigen(benchmark::State& state) {
  const Index n = state.range(0), in = state.range(1), r = state.range(2);
  const Matrix<T> x = gaussian<T>(n, in, 1), a = gaussian<T>(r, in, 2);
  Matrix<T> out(n, r);
  for (auto _ : state) {
    out.noalias() = x * a.transpose();
    benchmark::DoNotOptimize(out.data());
  }
  set_flops<T>(state, 2.0 * n * in * r);
}

template <class T>
void BM_project_simd(benchmark::State& state) {
  const Index n = state.range(0), in = state.range(1), r = state.range(2);
  const Matrix<T> x = gaussian<T>(n, in, 1), a = gaussian<T>(r, in, 2);
  Matrix<T> out(n, r);
  for (auto _ : state) {
    kernel::project_dot(x.data(), in, a.data(), in, out.data(), r, n, r, in);
    benchmark::DoNotOptimize(out.data());
  }
  set_flops<T>(state, 2.0 * n * in * r);
}

void project_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "in", "r"});
  for (Index n : {128, 512})
    for (Index in : {512, 4096})
      for (Index r : {8, 16, 64}) b->Args({n, in, r});
}
BENCHMARK_TEMPLATE(BM_project_eigen, float)->Apply(project_shapes);
BENCHMARK_TEMPLATE(BM_project_simd, float)->Apply(project_shapes);
BENCHMARK_TEMPLATE(BM_project_eigen, double)->Apply(project_shapes);
BENCHMARK_TEMPLATE(BM_project_simd, double)->Apply(project_shapes);

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
  kernel::AdamWStep step;
  step.step = 10;
  for (auto _ : state) {
    kernel::adamw_update(p.data(), m.data(), v.data(), g.data(), n, step);
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
