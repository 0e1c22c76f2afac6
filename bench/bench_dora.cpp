// DoRA training step next to LoRA's, at the shapes of bench_lora.cpp and bench/peer/dora_step.py (PyTorch, from
// PEFT's dora.py formulas).
//
// lora_step: AdaptedLinear<Lora> forward + zero_grad + backward with dx (as bench_lora.cpp).
// dora_step: AdaptedLinear<Dora> forward + zero_grad + backward with dx: the row norms of W + s B A (once per
//            step, factored: one [out x in] x [in x r] product), the column scaling, and the magnitude's gradient.
// The goal of the DoRA issue: dora_step at most 1.25x lora_step at the medium and large shapes.
#include "layer_step.hpp"

namespace {

using namespace layer_step;

void lora_step(benchmark::State& state, Shape s) {
  const Matrix<T> W = base_weight(s);
  Problem<lorakit::Lora<T>> p(s, lorakit::Lora<T>(s.in, s.out, config_of(s)), W);
  run_step(state, p, s);
}

void dora_step(benchmark::State& state, Shape s) {
  const Matrix<T> W = base_weight(s);
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
