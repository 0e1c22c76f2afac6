// VeRA training step against the base layer alone, at the shapes of ../shared/peer/lora_step.py
// (tokens, in, out, r_vera) = (128, 512, 512, 256), (256, 1024, 1024, 256), (512, 4096, 4096, 1024).
//
// base_step: y = x W^T, dx = dy W (the frozen layer on its own).
// vera_step: AdaptedLinear<Vera> forward + zero_grad + backward with dx, the step the peer's `vera` times
//            (lambda_b = 0 and lambda_d = 0.1 as there; no work is skipped for the zeros).
// vera_forward: forward only.
#include <benchmark/benchmark.h>

#include <lorakit/lorakit.hpp>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

namespace {

using T = float;
using lorakit::Index;
using lorakit::Matrix;

struct Shape {
  const char* name;
  Index tokens, in, out, rank;
};
constexpr Shape kShapes[] = {
    {"small", 128, 512, 512, 256}, {"medium", 256, 1024, 1024, 256}, {"large", 512, 4096, 4096, 1024}};

Matrix<T> normal(Index rows, Index cols, std::uint64_t seed, double stddev) {
  Matrix<T> m(rows, cols);
  lorakit::Rng(seed).fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

struct VeraProblem {
  explicit VeraProblem(const Shape& s)
      : layer(lorakit::AdaptedLinear<T, lorakit::Vera<T>>::owning(normal(s.out, s.in, 1, 0.03), make_vera(s))),
        x(normal(s.tokens, s.in, 2, 1.0)),
        dy(normal(s.tokens, s.out, 3, 1.0)),
        y(s.tokens, s.out),
        dx(s.tokens, s.in) {}
  static lorakit::Vera<T> make_vera(const Shape& s) {
    lorakit::VeraConfig c;
    c.rank = s.rank;
    return lorakit::Vera<T>(std::make_shared<const lorakit::VeraProjections<T>>(s.rank, s.in, s.out, 0), s.in, s.out, c);
  }
  lorakit::AdaptedLinear<T, lorakit::Vera<T>> layer;
  Matrix<T> x, dy, y, dx;
};

/// Multiply-adds of a step: the base layer's two products and VeRA's four (x A^T, . B^T, dy B, . A).
double step_flops(const Shape& s, bool with_vera) {
  const double base = 4.0 * s.tokens * s.in * s.out;
  return with_vera ? base + 4.0 * s.tokens * s.rank * (s.in + s.out) : base;
}

void report(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void base_step(benchmark::State& state, Shape s) {
  VeraProblem p(s);
  const auto W = p.layer.weight();
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    p.dx.noalias() = p.dy * W;
    benchmark::DoNotOptimize(p.dx.data());
  }
  report(state, step_flops(s, false));
}

void vera_step(benchmark::State& state, Shape s) {
  VeraProblem p(s);
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    p.layer.adapter().zero_grad();
    p.layer.backward(p.x, p.dy, p.dx);
    benchmark::DoNotOptimize(p.dx.data());
  }
  report(state, step_flops(s, true));
}

void vera_forward(benchmark::State& state, Shape s) {
  VeraProblem p(s);
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  report(state, 2.0 * s.tokens * (static_cast<double>(s.in) * s.out + s.rank * (s.in + s.out)));
}

}  // namespace

int main(int argc, char** argv) {
  // The PyTorch peer runs with two threads (its --threads N); LORAKIT_BENCH_THREADS=N matches another setting.
  const char* threads = std::getenv("LORAKIT_BENCH_THREADS");
  Eigen::setNbThreads(threads != nullptr ? std::max(1, std::atoi(threads)) : 2);
  for (const Shape& s : kShapes) {
    const std::string name = s.name;
    for (auto [label, fn] : {std::pair{"/base_step", base_step}, std::pair{"/vera_step", vera_step},
                             std::pair{"/vera_forward", vera_forward}}) {
      benchmark::RegisterBenchmark((name + label).c_str(), fn, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
