// DoRA training step next to LoRA's, at the shapes of bench_lora.cpp and bench/peer/dora_step.py (PyTorch, from
// PEFT's dora.py formulas).
//
// lora_step: AdaptedLinear<Lora> forward + zero_grad + backward with dx (as bench_lora.cpp).
// dora_step: AdaptedLinear<Dora> forward + zero_grad + backward with dx: the row norms of W + s B A (once per
//            step, factored: one [out x in] x [in x r] product), the column scaling, and the magnitude's gradient.
// The goal of the DoRA issue: dora_step at most 1.25x lora_step at the medium and large shapes.
#include <benchmark/benchmark.h>

#include <lorakit/lorakit.hpp>

namespace {

using T = float;
using lorakit::Index;
using lorakit::Matrix;

struct Shape {
  const char* name;
  Index tokens, in, out, rank;
};

constexpr Shape kShapes[] = {{"small", 128, 512, 512, 8}, {"medium", 256, 1024, 1024, 16}, {"large", 512, 4096, 4096, 16}};

Matrix<T> random(Index rows, Index cols, std::uint64_t seed, double stddev) {
  Matrix<T> m(rows, cols);
  lorakit::Rng(seed).fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

lorakit::LoraConfig config_of(const Shape& s) {
  lorakit::LoraConfig c;
  c.rank = s.rank;
  c.alpha = 2.0 * static_cast<double>(s.rank);
  return c;
}

template <class Adapter>
struct Problem {
  Problem(const Shape& s, Adapter adapter, const Matrix<T>& W)
      : layer(lorakit::AdaptedLinear<T, Adapter>::owning(W, std::move(adapter))),
        x(random(s.tokens, s.in, 2, 1.0)),
        dy(random(s.tokens, s.out, 3, 1.0)),
        y(s.tokens, s.out),
        dx(s.tokens, s.in) {
    layer.adapter().B() = random(s.out, s.rank, 4, 0.01);
  }
  lorakit::AdaptedLinear<T, Adapter> layer;
  Matrix<T> x, dy, y, dx;
};

void set_flops(benchmark::State& state, const Shape& s) {
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * static_cast<double>(s.tokens * s.in * s.out) *
                                                     static_cast<double>(state.iterations()) * 1e-9,
                                                 benchmark::Counter::kIsRate);
}

template <class Adapter>
void run_step(benchmark::State& state, Problem<Adapter>& p, const Shape& s) {
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    p.layer.adapter().zero_grad();
    p.layer.backward(p.x, p.dy, p.dx);
    benchmark::DoNotOptimize(p.dx.data());
  }
  set_flops(state, s);
}

void lora_step(benchmark::State& state, Shape s) {
  const Matrix<T> W = random(s.out, s.in, 1, 0.03);
  Problem<lorakit::Lora<T>> p(s, lorakit::Lora<T>(s.in, s.out, config_of(s)), W);
  run_step(state, p, s);
}

void dora_step(benchmark::State& state, Shape s) {
  const Matrix<T> W = random(s.out, s.in, 1, 0.03);
  Problem<lorakit::Dora<T>> p(s, lorakit::Dora<T>(W, config_of(s)), W);
  run_step(state, p, s);
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(2);  // the PyTorch peers run with two threads
  for (const Shape& s : kShapes) {
    const std::string name = s.name;
    benchmark::RegisterBenchmark((name + "/lora_step").c_str(), lora_step, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/dora_step").c_str(), dora_step, s)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
