// The fine-tuning methods of the language-model study: each takes the pretrained tiny llama to the second corpus
// in the same step budget (same batches for the same seed), adapting only the seven projections of every block.
#pragma once

#include "training.hpp"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tiny_llama {

/// The adaptation task and the budget every method gets.
struct Task {
  const TextSplits* data = nullptr;     // the second corpus
  const Weights<float>* base = nullptr; // the pretrained model
  long long steps = 200;
  Index batch = 16;
  Index seq_len = 64;
  std::vector<long long> eval_steps;  // steps after which the curve is evaluated (the last step always is)
  Index curve_windows = 32;           // validation windows of each curve point
  Index eval_windows = 128;           // validation and test windows of the final figures
  Index eva_max_batches = 32;         // EVA stops observing there if it has not converged
  Index lora_da_batches = 16;         // batches of Fisher statistics for LoRA-DA (and of LoRA-GA's gradient)
  /// Data-parallel runs (null: one process): every rank takes its rows of each batch, of the statistics' batches
  /// and of the evaluation windows; gradients are averaged and statistics merged over the ranks.
  const lorakit_examples::DataParallel* parallel = nullptr;
};

/// One training run of a method at one learning rate and seed.
struct RunResult {
  double validation = 0;     // final validation bits per byte
  double test = 0;           // final test bits per byte
  double init_seconds = 0;   // building and initializing the adapters (statistics included)
  double train_seconds = 0;  // the training steps (evaluations excluded)
  Index trainable = 0;       // trainable scalars at the end
  Curve curve;               // validation bits per byte along the steps, the last step included
  std::string note;          // e.g. EVA's ranks
  /// The trained adapters, for the methods whose adapters are LoRA adapters (what llama.cpp loads); null for full
  /// fine-tuning and VeRA (whose rank 256 exceeds what a LoRA of these projections can hold).
  std::shared_ptr<const lorakit::AdapterSet<lorakit::Lora<float>>> lora;
};

/// A method: its name, its learning-rate grid, and how to run it.
struct Method {
  std::string name;
  std::vector<double> learning_rates;
  std::function<RunResult(const Task&, double lr, std::uint64_t seed, Progress&)> run;
};

/// Every method of the study, in table order.
std::vector<Method> all_methods();

}  // namespace tiny_llama
