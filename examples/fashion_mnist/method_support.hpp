// What the methods of the study share: the loop around `train` for adapters (hooks for squeezing), and the
// helpers that build LoRA sets and the frozen base model. Internal to the example (methods*.cpp).
#pragma once

#include "methods.hpp"

#include <lorakit/lorakit.hpp>

#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <type_traits>

namespace fashion_mnist::detail {

using lorakit::AdapterSet;
using lorakit::Lora;
using LoraSet = AdapterSet<Lora<float>>;

/// The learning-rate grid of the adapter methods and of the head-only baseline.
inline std::vector<double> adapter_learning_rates() { return {1e-3, 3e-3, 1e-2}; }

inline lorakit::AdamWConfig adamw(double lr) {
  lorakit::AdamWConfig config;
  config.lr = lr;
  config.weight_decay = 0;
  return config;
}

inline TrainLoop make_loop(const Task& task, Progress& progress) {
  TrainLoop loop;
  loop.train = &task.data->train;
  loop.validation = task.curve;
  loop.batch = task.batch;
  loop.eval_steps = task.eval_steps;
  loop.progress = &progress;
  loop.parallel = task.parallel;
  return loop;
}

/// Final accuracies of a trained model, and the last point of its curve.
template <class Hidden>
void finish(RunResult& result, Mlp<Hidden>& model, const Task& task) {
  result.curve.push_back({task.steps, accuracy(model, *task.curve, task.parallel)});
  result.validation = accuracy(model, task.data->validation, task.parallel);
  result.test = accuracy(model, task.data->test, task.parallel);
}

/// What an adapter method may do besides plain training.
template <class Adapter>
struct Hooks {
  /// Before each step's forward (rank annealing).
  std::function<void(long long, AdapterSet<Adapter>&, lorakit::AdamW<float>&)> before_step;
  /// After the last step (post-hoc squeeze); returns a note for the report.
  std::function<std::string(AdapterSet<Adapter>&)> after_training;
  /// Once, on the optimizer before the first step (LoRA+'s parameter groups).
  std::function<void(lorakit::AdamW<float>&)> configure_optimizer;
};

/// Trains the adapters of `set` (modules "fc1" and "fc2") on the frozen pretrained model, with the head.
template <class Adapter>
RunResult train_adapters(const Task& task, AdapterSet<Adapter> set, double init_seconds, double lr,
                         std::uint64_t seed, Progress& progress, const Hooks<Adapter>& hooks = {}) {
  RunResult result;
  result.init_seconds = init_seconds;
  const Weights& base = *task.base;
  Mlp<lorakit::AdaptedLinear<float, lorakit::AdapterRef<Adapter>>> model(
      adapted(base.fc1, set, "fc1"), adapted(base.fc2, set, "fc2"), Dense(base.head.W, base.head.b, true));
  std::vector<Parameter<float>> parameters = with_head(set.parameters(), model.head);
  if (task.parallel != nullptr) task.parallel->broadcast_values(parameters);  // every rank starts from rank 0's values
  lorakit::AdamW<float> optimizer(parameters, adamw(lr));
  if (hooks.configure_optimizer) hooks.configure_optimizer(optimizer);
  Batches batches(task.data->train, task.batch, seed);
  TrainLoop loop = make_loop(task, progress);
  loop.parameters = [&] { return with_head(set.parameters(), model.head); };
  if (hooks.before_step) loop.before_step = [&](long long step) { hooks.before_step(step, set, optimizer); };
  Stopwatch clock;
  train(model, optimizer, batches, loop, 0, task.steps, result.curve, clock);
  if (hooks.after_training) {
    clock.start();
    result.note = hooks.after_training(set);
    clock.stop();
  }
  result.train_seconds = clock.seconds();
  result.trainable = set.num_parameters() + model.head.num_parameters();
  finish(result, model, task);
  result.head = model.head;
  if constexpr (std::is_same_v<Adapter, Lora<float>>) result.lora = std::move(set);
  return result;
}

/// Seconds taken by `f()`.
template <class F>
double timed(F&& f) {
  Stopwatch clock;
  clock.start();
  f();
  clock.stop();
  return clock.seconds();
}

/// Plain LoRA adapters of rank r (alpha = r, so the scaling is 1) on both hidden layers.
inline LoraSet lora_set(Index rank, std::uint64_t seed) {
  lorakit::LoraConfig config;
  config.rank = rank;
  config.alpha = static_cast<double>(rank);
  config.seed = seed;
  LoraSet set;
  set.add("fc1", Lora<float>(kPixels, kHidden1, config));
  config.seed = seed + 1000;
  set.add("fc2", Lora<float>(kHidden1, kHidden2, config));
  return set;
}

/// Plain LoRA of rank r, trained with `hooks`.
inline RunResult run_lora(const Task& task, double lr, std::uint64_t seed, Progress& progress, Index rank,
                   const Hooks<Lora<float>>& hooks) {
  LoraSet set;
  const double seconds = timed([&] { set = lora_set(rank, seed); });
  return train_adapters(task, std::move(set), seconds, lr, seed, progress, hooks);
}

/// The frozen pretrained model (statistics for data-driven initializations are taken on it).
inline Mlp<Dense> frozen_base(const Weights& base) {
  return Mlp<Dense>(Dense(base.fc1.W, base.fc1.b, false), Dense(base.fc2.W, base.fc2.b, false),
                    Dense(base.head.W, base.head.b, false));
}

/// What a data-driven initialization produces: the adapters and, for the methods that move part of the weight into
/// the adapter (PiSSA, LoRA-GA), the residual base weights they train on (null: the pretrained ones).
struct Initialized {
  LoraSet set;
  std::shared_ptr<const Weights> base;
};

/// An initialization computed once per seed and reused by every learning rate of the grid (it does not depend
/// on the learning rate); its time is the time of its first computation.
class PerSeed {
 public:
  using Make = std::function<Initialized(const Task&, std::uint64_t, std::string&)>;
  explicit PerSeed(Make make) : make_(std::move(make)) {}
  std::pair<Initialized, double> get(const Task& task, std::uint64_t seed, std::string& note) {
    auto found = cache_.find(seed);
    if (found == cache_.end()) {
      Entry entry;
      entry.seconds = timed([&] { entry.init.emplace(make_(task, seed, entry.note)); });
      found = cache_.emplace(seed, std::move(entry)).first;
    }
    note = found->second.note;
    return {*found->second.init, found->second.seconds};
  }

 private:
  struct Entry {
    std::optional<Initialized> init;
    double seconds = 0;
    std::string note;
  };
  Make make_;
  std::map<std::uint64_t, Entry> cache_;
};

/// A method whose LoRA initialization is computed from data (or from the weights) once per seed (EVA, LoRA-DA,
/// PiSSA, LoRA-GA); it trains on the residual weights when the initialization made some.
inline Method data_driven(const std::string& name, const std::vector<double>& lrs, PerSeed::Make make) {
  auto cache = std::make_shared<PerSeed>(std::move(make));
  return {name, lrs, [cache](const Task& t, double lr, std::uint64_t s, Progress& p) {
            std::string note;
            auto [init, seconds] = cache->get(t, s, note);
            Task task = t;
            if (init.base) task.base = init.base.get();
            RunResult result = train_adapters(task, std::move(init.set), seconds, lr, s, p);
            result.note = note;
            return result;
          }};
}


/// The methods of methods_init.cpp (EVA, LoRA-DA) and methods_squeeze.cpp (LoRA-Squeeze); `missing` gets those
/// whose headers are not there.
void add_init_methods(std::vector<Method>& methods, std::vector<std::string>& missing);
void add_squeeze_methods(std::vector<Method>& methods, std::vector<std::string>& missing);

}  // namespace fashion_mnist::detail
