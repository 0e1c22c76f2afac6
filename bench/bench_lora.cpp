// LoRA training step and forward against the base layer alone, at the shapes of ../shared/peer/lora_step.py.
//
// base_step: y = x W^T, dx = dy W (what the frozen layer costs on its own: Eigen's plain products).
// lora_step: AdaptedLinear<Lora> forward + zero_grad + backward with dx (the step the peer times).
// *_forward: forward only, for the adapter's overhead at inference-style use.
#include "layer_step.hpp"

namespace {

using namespace layer_step;

Problem<lorakit::Lora<T>> lora_problem(const Shape& s) {
  return Problem<lorakit::Lora<T>>(s, lorakit::Lora<T>(s.in, s.out, config_of(s)), base_weight(s));
}

void base_step(benchmark::State& state, Shape s) {
  auto p = lora_problem(s);
  const auto W = p.layer.weight();
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    p.dx.noalias() = p.dy * W;
    benchmark::DoNotOptimize(p.dx.data());
  }
  set_flops(state, step_flops(s));
}

void lora_step(benchmark::State& state, Shape s) {
  auto p = lora_problem(s);
  run_step(state, p, s);
}

void base_forward(benchmark::State& state, Shape s) {
  auto p = lora_problem(s);
  const auto W = p.layer.weight();
  for (auto _ : state) {
    p.y.noalias() = p.x * W.transpose();
    benchmark::DoNotOptimize(p.y.data());
  }
  set_flops(state, step_flops(s) / 2);
}

void lora_forward(benchmark::State& state, Shape s) {
  auto p = lora_problem(s);
  for (auto _ : state) {
    p.layer.forward(p.x, p.y);
    benchmark::DoNotOptimize(p.y.data());
  }
  set_flops(state, step_flops(s) / 2);
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
