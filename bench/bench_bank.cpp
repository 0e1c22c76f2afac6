// The adapter bank (serve/adapter_bank.hpp) at serving shapes: 16 LoRA adapters of ranks 4, 8, ..., 64 over one
// base layer, a batch of requests that use different adapters.
//
// <shape>/bank_mixed          rows on random adapters (one slot per row), AdapterBank::forward (automatic products)
// <shape>/bank_mixed_grouped  the same with BankProducts::grouped (gathered copies, GEMMs, scatter-add)
// <shape>/bank_segments       the same rows sorted into one segment per adapter (forward over segments)
// <shape>/bank_segments_gathered  the same with BankProducts::gathered (the SIMD kernels on contiguous rows too)
// <shape>/bank_one_adapter    every row on one adapter of rank 32 (the mean rank is 34): the mixed batch's goal is
//                             at most 1.3x this
// <shape>/peft_loop           PEFT's mixed batches: for each adapter, copy its rows out, Lora::forward on them,
//                             add the result back (goal: the bank at least 3x faster)
// <shape>/base                y = x W^T alone, and base_plus_bank (the layer served with the bank)
// <shape>/merge_per_request   16 requests of equal size, each served by merging its adapter into a copy of W
// crossover/<products>/...    grouped GEMM against the gathered kernels for g rows on each of 16 adapters of rank
//                             r (rows interleaved, so never contiguous): decides BankProducts::automatic
#include <benchmark/benchmark.h>

#include <lorakit/serve/adapter_bank.hpp>

#include <string>
#include <vector>

namespace {

using T = float;
using lorakit::AdapterBank;
using lorakit::BankProducts;
using lorakit::BankSegment;
using lorakit::Index;
using lorakit::Lora;
using lorakit::Matrix;

constexpr Index kAdapters = 16;

struct Shape {
  const char* name;
  Index rows, features;
};
constexpr Shape kShapes[] = {{"small", 128, 512}, {"medium", 256, 1024}, {"large", 2048, 4096}};

Matrix<T> random(Index rows, Index cols, std::uint64_t seed, double stddev) {
  Matrix<T> m(rows, cols);
  lorakit::Rng(seed).fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

Lora<T> make_lora(Index features, Index rank, std::uint64_t seed) {
  lorakit::LoraConfig c;
  c.rank = rank;
  c.alpha = 2.0 * static_cast<double>(rank);
  return Lora<T>::from_factors(random(rank, features, seed, 0.02), random(features, rank, seed + 100, 0.01), c);
}

/// 16 adapters of ranks 4, 8, ..., 64 (or all of rank `rank` when given), loaded into slots 0..15.
struct Problem {
  Problem(Index rows, Index features, Index rank = 0)
      : bank(features, features, kAdapters, rank > 0 ? rank : 4 * kAdapters),
        x(random(rows, features, 1, 1.0)),
        y(Matrix<T>::Zero(rows, features)) {
    for (Index k = 0; k < kAdapters; ++k) {
      loras.push_back(make_lora(features, rank > 0 ? rank : 4 * (k + 1), 10 + static_cast<std::uint64_t>(k)));
      bank.load(k, loras.back());
    }
  }
  AdapterBank<T> bank;
  std::vector<Lora<T>> loras;
  Matrix<T> x, y;
};

/// A uniformly random adapter per row (reproducible).
std::vector<Index> random_slots(Index rows) {
  Matrix<double> u(1, rows);
  lorakit::Rng(7).fill_uniform(u, 0.0, static_cast<double>(kAdapters));
  std::vector<Index> slots(static_cast<std::size_t>(rows));
  for (Index i = 0; i < rows; ++i) slots[static_cast<std::size_t>(i)] = std::min(kAdapters - 1, static_cast<Index>(u(0, i)));
  return slots;
}

void set_rows_per_second(benchmark::State& state, Index rows) {
  state.counters["rows/s"] =
      benchmark::Counter(static_cast<double>(rows) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void bank_mixed(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  const std::vector<Index> slots = random_slots(s.rows);
  for (auto _ : state) {
    p.bank.forward(p.x, slots, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void bank_mixed_grouped(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  p.bank.set_products(BankProducts::grouped);
  const std::vector<Index> slots = random_slots(s.rows);
  for (auto _ : state) {
    p.bank.forward(p.x, slots, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void bank_segments_with(benchmark::State& state, Shape s, BankProducts products) {
  Problem p(s.rows, s.features);
  p.bank.set_products(products);
  std::vector<BankSegment> segments;
  for (Index k = 0; k < kAdapters; ++k) segments.push_back({s.rows / kAdapters, k});
  segments.back().rows += s.rows % kAdapters;
  for (auto _ : state) {
    p.bank.forward(p.x, segments, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void bank_segments(benchmark::State& state, Shape s) { bank_segments_with(state, s, BankProducts::automatic); }
void bank_segments_gathered(benchmark::State& state, Shape s) { bank_segments_with(state, s, BankProducts::gathered); }

void bank_one_adapter(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  const std::vector<Index> slots(static_cast<std::size_t>(s.rows), 7);  // rank 32
  for (auto _ : state) {
    p.bank.forward(p.x, slots, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void peft_loop(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  for (auto& lora : p.loras) lora.set_training(false);
  const std::vector<Index> slots = random_slots(s.rows);
  for (auto _ : state) {
    for (Index k = 0; k < kAdapters; ++k) {  // as PEFT's _mixed_batch_forward: x[idx], lora(sub), y[idx] += ...
      std::vector<Index> idx;
      for (Index i = 0; i < s.rows; ++i)
        if (slots[static_cast<std::size_t>(i)] == k) idx.push_back(i);
      if (idx.empty()) continue;
      Matrix<T> sub = p.x(idx, Eigen::all);
      Matrix<T> out = Matrix<T>::Zero(sub.rows(), s.features);
      p.loras[static_cast<std::size_t>(k)].forward(sub, out);
      p.y(idx, Eigen::all) += out;
    }
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void base(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  const Matrix<T> W = random(s.features, s.features, 3, 0.02);
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void base_plus_bank(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  const Matrix<T> W = random(s.features, s.features, 3, 0.02);
  const std::vector<Index> slots = random_slots(s.rows);
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    p.bank.forward(p.x, slots, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

void merge_per_request(benchmark::State& state, Shape s) {
  Problem p(s.rows, s.features);
  const Matrix<T> W = random(s.features, s.features, 3, 0.02);
  Matrix<T> merged(s.features, s.features);
  const Index per_request = s.rows / kAdapters;
  for (auto _ : state) {
    for (Index k = 0; k < kAdapters; ++k) {
      merged = W;
      p.loras[static_cast<std::size_t>(k)].merge_into(merged);
      p.y.middleRows(k * per_request, per_request).noalias() =
          p.x.middleRows(k * per_request, per_request) * merged.transpose();
    }
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, s.rows);
}

/// g rows on each of 16 adapters of rank r, interleaved (row i on adapter i mod 16).
void crossover(benchmark::State& state, BankProducts products) {
  const Index g = state.range(0), r = state.range(1), features = state.range(2);
  Problem p(g * kAdapters, features, r);
  p.bank.set_products(products);
  std::vector<Index> slots(static_cast<std::size_t>(g * kAdapters));
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i] = static_cast<Index>(i) % kAdapters;
  for (auto _ : state) {
    p.bank.forward(p.x, slots, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_rows_per_second(state, g * kAdapters);
}

void crossover_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"g", "r", "in"});
  for (Index in : {512, 4096})
    for (Index r : {8, 16, 64})
      for (Index g : {1, 2, 4, 8, 16, 32}) b->Args({g, r, in});
}

}  // namespace

int main(int argc, char** argv) {
  // One thread: the bank's kernels are single-threaded, and the crossover compares them with Eigen's GEMM on
  // equal terms (a server runs one bank per core, or splits the batch).
  Eigen::setNbThreads(1);
  for (const Shape& s : kShapes) {
    const std::string name = s.name;
    auto add = [&](const char* what, void (*function)(benchmark::State&, Shape)) {
      benchmark::RegisterBenchmark((name + "/" + what).c_str(), function, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    };
    add("bank_mixed", bank_mixed);
    add("bank_mixed_grouped", bank_mixed_grouped);
    add("bank_segments", bank_segments);
    add("bank_segments_gathered", bank_segments_gathered);
    add("bank_one_adapter", bank_one_adapter);
    add("peft_loop", peft_loop);
    add("base", base);
    add("base_plus_bank", base_plus_bank);
    add("merge_per_request", merge_per_request);
  }
  benchmark::RegisterBenchmark("crossover/grouped", crossover, BankProducts::grouped)
      ->Apply(crossover_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
  benchmark::RegisterBenchmark("crossover/gathered", crossover, BankProducts::gathered)
      ->Apply(crossover_shapes)->Unit(benchmark::kMicrosecond)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
