// The setup that bench_lora.cpp and bench_dora.cpp share: the three LoRA shapes of ../shared/peer/lora_step.py,
// random inputs, one adapted layer per benchmark, and the training step both time.
#pragma once

#include <benchmark/benchmark.h>

#include <lorakit/lorakit.hpp>

#include <utility>

namespace layer_step {

using T = float;
using lorakit::Index;
using lorakit::Matrix;

struct Shape {
  const char* name;
  Index tokens, in, out, rank;
};
inline constexpr Shape kShapes[] = {{"small", 128, 512, 512, 8}, {"medium", 256, 1024, 1024, 16},
                                    {"large", 512, 4096, 4096, 16}};

inline Matrix<T> random(Index rows, Index cols, std::uint64_t seed, double stddev) {
  Matrix<T> m(rows, cols);
  lorakit::Rng(seed).fill_normal(m, T(0), static_cast<T>(stddev));
  return m;
}

/// Rank s.rank, alpha 2r.
inline lorakit::LoraConfig config_of(const Shape& s) {
  lorakit::LoraConfig c;
  c.rank = s.rank;
  c.alpha = 2.0 * static_cast<double>(s.rank);
  return c;
}

/// The base weight W [out x in] of every benchmark.
inline Matrix<T> base_weight(const Shape& s) { return random(s.out, s.in, 1, 0.03); }

/// A layer W + adapter with a nonzero B (as if trained), a batch x, an upstream gradient dy, and the outputs.
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

inline void set_flops(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * static_cast<double>(state.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

/// The base layer's flops of one training step: y = x W^T and dx = dy W.
inline double step_flops(const Shape& s) { return 4.0 * static_cast<double>(s.tokens * s.in * s.out); }

/// The training step: forward, zero_grad, backward with dx.
template <class Adapter>
void run_step(benchmark::State& state, Problem<Adapter>& p, const Shape& s) {
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    p.layer.adapter().zero_grad();
    p.layer.backward(p.x, p.dy, p.dx);
    benchmark::DoNotOptimize(p.dx.data());
  }
  set_flops(state, step_flops(s));
}

}  // namespace layer_step
