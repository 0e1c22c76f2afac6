// What data-parallel training and statistics move between ranks, and what they cost (dist/mpi.hpp):
// - AllreduceGradients: one step's gradient exchange for LoRA adapters on L layers [out x in], with the bytes
//   each rank sends (`bytes_per_step`) against the base weights' size (`base_bytes`);
// - EvaMerge: one merge of every rank's EVA statistics (`state_bytes` per rank) against what gathering each
//   batch's activations would move (`activation_bytes`, tokens x features x layers per batch and rank, as PEFT's
//   distributed EVA does);
// - EvaStatisticsPass: a whole EVA statistics pass over a fixed data set (each rank observes its share of every
//   batch, then one merge); EvaStatisticsPassWholeBatches: the same data with whole batches dealt to the ranks
//   round-robin. Run them once with `mpirun -np 1` and once with `-np 2`: the ratio of the two times is the
//   speed-up.
//
// Every rank runs the same benchmarks with a fixed number of iterations (collective calls must match across
// ranks); rank 0 reports. One thread per rank:
//   OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe -np 2 build/bench/mpi/bench_mpi
#include <benchmark/benchmark.h>

#include <lorakit/adapter/adapter_set.hpp>
#include <lorakit/adapter/lora.hpp>
#include <lorakit/core/random.hpp>
#include <lorakit/dist/mpi.hpp>

#include <string>
#include <vector>

namespace {

using lorakit::Index;
using lorakit::Matrix;
const MPI_Comm world = MPI_COMM_WORLD;

void BM_AllreduceGradients(benchmark::State& state) {
  const Index layers = state.range(0), features = state.range(1), rank = state.range(2);
  lorakit::AdapterSet<lorakit::Lora<float>> adapters;
  for (Index l = 0; l < layers; ++l) {
    adapters.add("layer" + std::to_string(l), lorakit::Lora<float>(features, features, lorakit::LoraConfig{rank, 16.0}));
  }
  auto parameters = adapters.parameters();
  for (auto& p : parameters) p.grad.setConstant(1.0f);
  for (auto _ : state) lorakit::dist::allreduce_gradients(world, parameters);
  const double scalars = static_cast<double>(adapters.num_parameters());
  state.counters["bytes_per_step"] = 4 * scalars;
  state.counters["base_bytes"] = 4.0 * static_cast<double>(layers * features * features);
  state.counters["ratio"] = scalars / static_cast<double>(layers * features * features);
}
BENCHMARK(BM_AllreduceGradients)
    ->Args({4, 1024, 8})
    ->Args({4, 4096, 16})
    ->Iterations(20)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

constexpr Index kTokens = 256;

/// Batch b of layer l: tokens x features, a low-rank signal plus noise (the same on every rank; each takes its share).
Matrix<float> batch(Index features, int layer, int b) {
  Matrix<float> z(kTokens, 32), mix(32, features), x(kTokens, features);
  lorakit::Rng(static_cast<std::uint64_t>(layer), 1).fill_normal(mix, 0.0f, 1.0f);
  lorakit::Rng(static_cast<std::uint64_t>(1000 * layer + b), 2).fill_normal(z, 0.0f, 1.0f);
  lorakit::Rng(static_cast<std::uint64_t>(1000 * layer + b), 3).fill_normal(x, 0.0f, 0.1f);
  x.noalias() += z * mix;
  return x;
}

lorakit::Eva<float> make_eva(Index layers, Index features) {
  lorakit::Eva<float> eva(lorakit::EvaConfig{16, 2.0, 2.0});  // 32 components; tau > 1: every batch counts
  for (Index l = 0; l < layers; ++l) eva.add_layer("layer" + std::to_string(l), features, features);
  return eva;
}

void BM_EvaMerge(benchmark::State& state) {
  const Index layers = state.range(0), features = state.range(1);
  auto eva = make_eva(layers, features);
  const auto share = lorakit::dist::shard_rows(world, kTokens);
  for (Index l = 0; l < layers; ++l) {
    eva.observe("layer" + std::to_string(l), batch(features, static_cast<int>(l), 0).middleRows(share.begin, share.count));
  }
  for (auto _ : state) benchmark::DoNotOptimize(lorakit::dist::merged(world, eva));
  state.counters["state_bytes"] = static_cast<double>(lorakit::io::state_to_bytes(eva).size());
  state.counters["activation_bytes"] = 4.0 * static_cast<double>(share.count * features * layers);
}
BENCHMARK(BM_EvaMerge)->Args({4, 1024})->Iterations(5)->Unit(benchmark::kMillisecond)->UseRealTime();

/// How a statistics pass spreads its batches over the ranks.
enum class Split {
  rows,     ///< every rank observes its share of the rows of every batch (dist::shard_rows)
  batches,  ///< every rank observes whole batches, dealt round-robin (batch b to rank b mod P)
};

void eva_statistics_pass(benchmark::State& state, Split split) {
  const Index layers = 2, features = state.range(0);
  const int batches = static_cast<int>(state.range(1));
  const int ranks = lorakit::dist::size(world), me = lorakit::dist::rank(world);
  std::vector<std::vector<Matrix<float>>> data(static_cast<std::size_t>(layers));
  const auto share = lorakit::dist::shard_rows(world, kTokens);
  for (Index l = 0; l < layers; ++l) {
    for (int b = 0; b < batches; ++b) {
      if (split == Split::rows) {
        data[static_cast<std::size_t>(l)].push_back(
            batch(features, static_cast<int>(l), b).middleRows(share.begin, share.count));
      } else if (b % ranks == me) {
        data[static_cast<std::size_t>(l)].push_back(batch(features, static_cast<int>(l), b));
      }
    }
  }
  for (auto _ : state) {
    auto eva = make_eva(layers, features);
    for (std::size_t b = 0; b < data[0].size(); ++b) {
      for (Index l = 0; l < layers; ++l) eva.observe("layer" + std::to_string(l), data[static_cast<std::size_t>(l)][b]);
    }
    lorakit::dist::allreduce(world, eva);
    benchmark::DoNotOptimize(eva);
  }
  state.counters["ranks"] = ranks;
}
void BM_EvaStatisticsPass(benchmark::State& state) { eva_statistics_pass(state, Split::rows); }
void BM_EvaStatisticsPassWholeBatches(benchmark::State& state) { eva_statistics_pass(state, Split::batches); }
BENCHMARK(BM_EvaStatisticsPass)->Args({1024, 8})->Iterations(3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EvaStatisticsPassWholeBatches)
    ->Args({1024, 8})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  lorakit::dist::Environment mpi(argc, argv);
  Eigen::setNbThreads(1);
  benchmark::Initialize(&argc, argv);
  if (lorakit::dist::rank(world) == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    NullReporter quiet;
    benchmark::RunSpecifiedBenchmarks(&quiet);
  }
  benchmark::Shutdown();
}
