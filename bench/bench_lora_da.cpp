// LoRA-DA initialization of one layer from given statistics, as ../shared/peer/lora_da.py times it:
// in = out = d, T = 4 d tokens and S = 256 samples of N(0, 1) inputs and output gradients, r = 8, float64.
#include <benchmark/benchmark.h>
#include <lorakit/init/lora_da.hpp>

namespace {

lorakit::FisherStatistics<double> peer_statistics(lorakit::Index d) {
  const lorakit::Index tokens = 4 * d;
  lorakit::Matrix<double> x(tokens, d), dy(tokens, d);
  lorakit::Rng rng(0);
  rng.fill_normal(x, 0.0, 1.0);
  rng.fill_normal(dy, 0.0, 1.0);
  lorakit::Matrix<double> moment = x.transpose() * x;
  lorakit::Vector<double> square = dy.array().square().colwise().sum().transpose();
  lorakit::Matrix<double> gradient = dy.transpose() * x;
  return lorakit::FisherStatistics<double>::from_sums(std::move(moment), std::move(square), std::move(gradient),
                                                      tokens, 256);
}

void lora_da_init(benchmark::State& state, lorakit::LoraDaSolver solver) {
  Eigen::setNbThreads(2);
  const lorakit::Index d = state.range(0);
  const auto stats = peer_statistics(d);
  lorakit::LoraConfig config;
  config.rank = 8;
  lorakit::Lora<double> lora(d, d, config);
  lorakit::LoraDaConfig da;
  da.solver = solver;
  lorakit::LoraDaReport report;
  for (auto _ : state) {
    report = lorakit::lora_da_initialize(lora, stats, da);
    benchmark::DoNotOptimize(lora.B().data());
  }
  state.counters["iterative"] = report.iterative ? 1 : 0;
  state.counters["operator_columns"] = static_cast<double>(report.operator_columns);
}

}  // namespace

BENCHMARK_CAPTURE(lora_da_init, automatic, lorakit::LoraDaSolver::automatic)
    ->Arg(1024)
    ->Arg(2048)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->Repetitions(3)
    ->ReportAggregatesOnly(false);
// The dense eigen-solver path, for the record (several seconds at 2048).
BENCHMARK_CAPTURE(lora_da_init, dense, lorakit::LoraDaSolver::dense)
    ->Arg(1024)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

BENCHMARK_MAIN();
