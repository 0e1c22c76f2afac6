// LoRA training step and forward against the base layer alone, at the shapes of ../shared/peer/lora_step.py.
//
// base_step: y = x W^T, dx = dy W (what the frozen layer costs on its own: Eigen's plain products).
// lora_step: AdaptedLinear<Lora> forward + zero_grad + backward with dx (the step the peer times).
// *_forward: forward only, for the adapter's overhead at inference-style use.
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

struct Problem {
  explicit Problem(const Shape& s)
      : layer(lorakit::AdaptedLinear<T, lorakit::Lora<T>>::owning(random(s.out, s.in, 1, 0.03), make_lora(s))),
        x(random(s.tokens, s.in, 2, 1.0)),
        dy(random(s.tokens, s.out, 3, 1.0)),
        y(s.tokens, s.out),
        dx(s.tokens, s.in) {
    layer.adapter().B() = random(s.out, s.rank, 4, 0.01);
  }
  static Matrix<T> random(Index rows, Index cols, std::uint64_t seed, double stddev) {
    Matrix<T> m(rows, cols);
    lorakit::Rng(seed).fill_normal(m, T(0), static_cast<T>(stddev));
    return m;
  }
  static lorakit::Lora<T> make_lora(const Shape& s) {
    lorakit::LoraConfig c;
    c.rank = s.rank;
    c.alpha = 2.0 * static_cast<double>(s.rank);
    return lorakit::Lora<T>(s.in, s.out, c);
  }
  lorakit::AdaptedLinear<T, lorakit::Lora<T>> layer;
  Matrix<T> x, dy, y, dx;
};

void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops * static_cast<double>(state.iterations()) * 1e-9,
                                                 benchmark::Counter::kIsRate);
}

void base_step(benchmark::State& state, Shape s) {
  Problem p(s);
  const auto W = p.layer.weight();
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    p.dx.noalias() = p.dy * W;
    benchmark::DoNotOptimize(p.dx.data());
  }
  set_flops(state, 4.0 * s.tokens * s.in * s.out);
}

void lora_step(benchmark::State& state, Shape s) {
  Problem p(s);
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    p.layer.adapter().zero_grad();
    p.layer.backward(p.x, p.dy, p.dx);
    benchmark::DoNotOptimize(p.dx.data());
  }
  set_flops(state, 4.0 * s.tokens * s.in * s.out);
}

void base_forward(benchmark::State& state, Shape s) {
  Problem p(s);
  const auto W = p.layer.weight();
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    benchmark::DoNotOptimize(p.y.data());
  }
  set_flops(state, 2.0 * s.tokens * s.in * s.out);
}

void lora_forward(benchmark::State& state, Shape s) {
  Problem p(s);
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_flops(state, 2.0 * s.tokens * s.in * s.out);
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::setNbThreads(2);  // the PyTorch peers run with two threads
  for (const Shape& s : kShapes) {
    const std::string name = s.name;
    benchmark::RegisterBenchmark((name + "/base_step").c_str(), base_step, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/lora_step").c_str(), lora_step, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/base_forward").c_str(), base_forward, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark((name + "/lora_forward").c_str(), lora_forward, s)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
