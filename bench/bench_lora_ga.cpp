// The cost of LoRA-GA's initialization next to PiSSA's, on one square float layer of size d with rank 8: both
// take an SVD of an [d x d] matrix (the gradient, the weight) and write W -= s B A. Exact (BDCSVD in double) and
// PEFT's randomized path (4 power iterations; LoRA-GA sketches min(4r, d) columns, PiSSA exactly r), and the
// gradient accumulator's cost per calibration batch (512 tokens).
#include <benchmark/benchmark.h>
#include <lorakit/init/lora_ga.hpp>
#include <lorakit/init/pissa.hpp>

namespace {

constexpr lorakit::Index rank = 8;

lorakit::Matrix<float> normal_matrix(lorakit::Index rows, lorakit::Index cols, std::uint64_t seed) {
  lorakit::Matrix<float> m(rows, cols);
  lorakit::Rng(seed).fill_normal(m, 0.0f, 1.0f);
  return m;
}

lorakit::LoraConfig bench_config() {
  lorakit::LoraConfig config;
  config.rank = rank;
  config.alpha = 16;
  return config;
}

/// Times `init(lora, W)` on a fresh copy of the weight each iteration (the copy is not timed).
template <class Init>
void time_initialization(benchmark::State& state, Init init) {
  Eigen::setNbThreads(2);
  const lorakit::Index d = state.range(0);
  const lorakit::Matrix<float> original = normal_matrix(d, d, 1);
  lorakit::Matrix<float> W = original;
  lorakit::Lora<float> lora(d, d, bench_config());
  for (auto _ : state) {
    state.PauseTiming();
    W = original;
    state.ResumeTiming();
    init(lora, W);
    benchmark::DoNotOptimize(lora.B().data());
  }
}

void lora_ga_init(benchmark::State& state, int power_iterations) {
  const lorakit::Index d = state.range(0);
  const lorakit::Matrix<double> gradient = normal_matrix(d, d, 2).cast<double>();
  lorakit::LoraGaConfig config;
  config.power_iterations = power_iterations;
  time_initialization(state, [&](lorakit::Lora<float>& lora, lorakit::Matrix<float>& W) {
    lorakit::lora_ga_initialize(lora, W, gradient, config);
  });
}

void pissa_init(benchmark::State& state, int power_iterations) {
  time_initialization(state, [&](lorakit::Lora<float>& lora, lorakit::Matrix<float>& W) {
    lorakit::pissa_initialize(lora, W, power_iterations);
  });
}

void lora_ga_observe(benchmark::State& state) {
  Eigen::setNbThreads(2);
  const lorakit::Index d = state.range(0), tokens = 512;
  const lorakit::Matrix<float> x = normal_matrix(tokens, d, 3), dy = normal_matrix(tokens, d, 4);
  lorakit::LoraGaGradient<float> gradient(d, d);
  for (auto _ : state) {
    gradient.observe(x, dy);
    benchmark::DoNotOptimize(gradient.sum().data());
  }
}

}  // namespace

BENCHMARK_CAPTURE(lora_ga_init, exact, -1)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(pissa_init, exact, -1)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(lora_ga_init, niter_4, 4)->Arg(512)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(pissa_init, niter_4, 4)->Arg(512)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);
BENCHMARK(lora_ga_observe)->Arg(1024)->Arg(4096)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
