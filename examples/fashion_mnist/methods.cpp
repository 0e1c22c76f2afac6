// The methods of the study that need no initializer: full fine-tuning, head only, LoRA, DoRA, LoRA+, VeRA; and the
// list of all methods. Each builds its model from the pretrained weights and hands it to the shared training loop.
#include "method_support.hpp"

#if __has_include(<lorakit/adapter/vera.hpp>)
#include <lorakit/adapter/vera.hpp>
#define FASHION_MNIST_HAS_VERA 1
#endif

namespace fashion_mnist {
namespace {

using namespace detail;

/// Full fine-tuning (every weight trains) or the head alone (the hidden layers stay frozen).
RunResult run_dense(const Task& task, double lr, std::uint64_t seed, Progress& progress, bool hidden_trainable) {
  RunResult result;
  const Weights& base = *task.base;
  Mlp<Dense> model(Dense(base.fc1.W, base.fc1.b, hidden_trainable), Dense(base.fc2.W, base.fc2.b, hidden_trainable),
                   Dense(base.head.W, base.head.b, true));
  const auto parameters = [&] {
    auto hidden = model.fc1.parameters("fc1");
    for (auto& p : model.fc2.parameters("fc2")) hidden.push_back(p);
    return with_head(std::move(hidden), model.head);
  };
  lorakit::AdamW<float> optimizer(parameters(), adamw(lr));
  Batches batches(task.data->train, task.batch, seed);
  TrainLoop loop = make_loop(task, progress);
  loop.parameters = parameters;
  Stopwatch clock;
  train(model, optimizer, batches, loop, 0, task.steps, result.curve, clock);
  result.train_seconds = clock.seconds();
  result.trainable = model.fc1.num_parameters() + model.fc2.num_parameters() + model.head.num_parameters();
  finish(result, model, task);
  return result;
}

}  // namespace


std::vector<Method> all_methods(std::vector<std::string>& missing) {
  const std::vector<double> adapter_lrs = adapter_learning_rates();
  std::vector<Method> methods;
  methods.push_back({"Full fine-tuning", {1e-4, 3e-4, 1e-3}, [](const Task& t, double lr, std::uint64_t s, Progress& p) {
                       return run_dense(t, lr, s, p, true);
                     }});
  methods.push_back({"Head only", adapter_lrs, [](const Task& t, double lr, std::uint64_t s, Progress& p) {
                       return run_dense(t, lr, s, p, false);
                     }});
  methods.push_back({"LoRA r=8", adapter_lrs, [](const Task& t, double lr, std::uint64_t s, Progress& p) {
                       return run_lora(t, lr, s, p, 8, {});
                     }});
  methods.push_back({"DoRA r=8", adapter_lrs, [](const Task& t, double lr, std::uint64_t s, Progress& p) {
                       // LoRA r=8's factors (same config and seeds) plus a magnitude per output row, from the
                       // pretrained weights' row norms.
                       AdapterSet<lorakit::Dora<float>> set;
                       const double seconds = timed([&] {
                         lorakit::LoraConfig config;
                         config.rank = 8;
                         config.alpha = 8;
                         config.seed = s;
                         set.add("fc1", lorakit::Dora<float>(t.base->fc1.W, config));
                         config.seed = s + 1000;
                         set.add("fc2", lorakit::Dora<float>(t.base->fc2.W, config));
                       });
                       return train_adapters(t, std::move(set), seconds, lr, s, p);
                     }});
  methods.push_back({"LoRA+ r=8, ratio 16", {3e-4, 1e-3, 3e-3}, [](const Task& t, double lr, std::uint64_t s,
                                                                      Progress& p) {
                       // LoRA r=8's factors and seeds; B (and the head's bias) learn at 16 x lr (PEFT's groups).
                       Hooks<Lora<float>> hooks;
                       hooks.configure_optimizer = [](lorakit::AdamW<float>& optimizer) {
                         lorakit::apply_loraplus(optimizer, lorakit::LoraPlusConfig{16});
                       };
                       return run_lora(t, lr, s, p, 8, hooks);
                     }});
#ifdef FASHION_MNIST_HAS_VERA
  methods.push_back({"VeRA r=256", {3e-3, 1e-2, 3e-2}, [](const Task& t, double lr, std::uint64_t s, Progress& p) {
                       AdapterSet<lorakit::Vera<float>> set;
                       const double seconds = timed([&] {
                         const auto projections = lorakit::VeraProjections<float>::for_layers(
                             256, {{kPixels, kHidden1}, {kHidden1, kHidden2}}, s);
                         lorakit::VeraConfig config;
                         config.rank = 256;
                         config.projection_seed = s;
                         set.add("fc1", lorakit::Vera<float>(projections, kPixels, kHidden1, config));
                         set.add("fc2", lorakit::Vera<float>(projections, kHidden1, kHidden2, config));
                       });
                       return train_adapters(t, std::move(set), seconds, lr, s, p);
                     }});
#else
  missing.push_back("VeRA r=256 (adapter/vera.hpp)");
#endif
  detail::add_init_methods(methods, missing);
  detail::add_squeeze_methods(methods, missing);
  return methods;
}

}  // namespace fashion_mnist
