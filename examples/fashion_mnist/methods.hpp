// The fine-tuning methods of the study: each one takes the pretrained weights to the shifted domain in the same
// step budget, with the same batch size, and reports what the table and the curves need.
#pragma once

#include "training.hpp"

#include <lorakit/adapter/lora.hpp>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fashion_mnist {

/// The downstream task and the budget that every method gets.
struct Task {
  const Splits* data = nullptr;   // the shifted domain
  const Weights* base = nullptr;  // the pretrained model
  const Dataset* curve = nullptr; // validation images evaluated along training (a subset of data->validation)
  long long steps = 1000;
  Index batch = 64;
  std::vector<long long> eval_steps;  // steps after which the curve is evaluated (the last step always is)
  Index eva_max_batches = 100;  // EVA stops observing there if it has not converged
  Index lora_da_batches = 32;   // batches of Fisher statistics for LoRA-DA
  Index lora_ga_batches = 32;   // batches whose mean weight gradient initializes LoRA-GA
  /// Data parallelism (null: one process): each rank takes its rows of every batch, of the statistics' batches
  /// too, and of the evaluations; the ranks combine gradients, statistics and counts (examples/common).
  const lorakit_examples::DataParallel* parallel = nullptr;
};

/// One training run of a method at one learning rate and seed.
struct RunResult {
  double validation = 0;      // final validation accuracy
  double test = 0;            // final test accuracy
  double init_seconds = 0;    // building and initializing the adapters (statistics included)
  double train_seconds = 0;   // the training steps (evaluations excluded)
  Index trainable = 0;        // trainable scalars at the end (adapters + head)
  Curve curve;                // accuracy on task.curve along the steps, the last step included
  std::string note;           // e.g. EVA's ranks, the accuracy before a squeeze
  std::optional<lorakit::AdapterSet<lorakit::Lora<float>>> lora;  // the trained LoRA adapters, if any
  Dense head;                 // the trained head
};

/// A method: its name, its learning-rate grid, and how to run it.
struct Method {
  std::string name;
  std::vector<double> learning_rates;
  std::function<RunResult(const Task&, double lr, std::uint64_t seed, Progress&)> run;
};

/// Every method whose header is available, in table order; `missing` receives the names of those left out.
std::vector<Method> all_methods(std::vector<std::string>& missing);

}  // namespace fashion_mnist
