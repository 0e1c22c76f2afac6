// The data-driven initializations of the study: EVA (from the layers' inputs) and LoRA-DA (from Fisher statistics),
// both computed on downstream batches through the frozen pretrained model.
#include "method_support.hpp"

#if __has_include(<lorakit/init/eva.hpp>)
#include <lorakit/init/eva.hpp>
#define FASHION_MNIST_HAS_EVA 1
#endif
#if __has_include(<lorakit/init/lora_da.hpp>)
#include <lorakit/init/lora_da.hpp>
#define FASHION_MNIST_HAS_LORA_DA 1
#endif

#include <tuple>

namespace fashion_mnist::detail {
namespace {

#ifdef FASHION_MNIST_HAS_EVA
/// EVA: A from the top right-singular vectors of each layer's inputs on the downstream data (base model's
/// activations), ranks redistributed between the two layers by explained variance, B = 0.
LoraSet eva_set(const Task& task, std::uint64_t seed, std::string& note) {
  lorakit::EvaConfig config;
  config.rank = 8;
  config.rho = 2;
  lorakit::Eva<float> eva(config);
  eva.add_layer("fc1", kPixels, kHidden1);
  eva.add_layer("fc2", kHidden1, kHidden2);
  Mlp<Dense> base = frozen_base(*task.base);
  Batches batches(task.data->train, task.batch, seed + 500);
  Progress progress("  EVA statistics", task.eva_max_batches);
  Index used = 0;
  while (used < task.eva_max_batches && !eva.converged()) {
    batches.next();
    base.forward(batches.images());
    eva.observe("fc1", batches.images());
    eva.observe("fc2", base.hidden1());
    ++used;
    progress.advance();
  }
  progress.finish();
  lorakit::LoraConfig lora;
  lora.rank = config.rank;
  lora.alpha = static_cast<double>(config.rank);
  lora.seed = seed;
  LoraSet set = eva.make_adapters(lora);
  std::ostringstream text;
  text << "ranks fc1 " << eva.ranks().at("fc1") << ", fc2 " << eva.ranks().at("fc2") << " after " << used
       << " batches" << (eva.converged() ? "" : " (not converged)");
  note = text.str();
  // A layer the redistribution left out keeps a zero update: a rank-1 adapter with A = B = 0 stands for it.
  for (const auto& [name, in, out] : {std::tuple<std::string, Index, Index>{"fc1", kPixels, kHidden1},
                                      std::tuple<std::string, Index, Index>{"fc2", kHidden1, kHidden2}}) {
    if (set.contains(name)) continue;
    lorakit::LoraConfig zero = lora;
    zero.rank = 1;
    zero.init = lorakit::LoraInit::zeros;
    set.add(name, Lora<float>(in, out, zero));
  }
  return set;
}
#endif

#ifdef FASHION_MNIST_HAS_LORA_DA
/// LoRA-DA: Fisher statistics of each hidden layer at the pretrained model on downstream batches (per-sample
/// gradients of the loss at the layer's output), then A and B from the guidance matrix.
LoraSet lora_da_set(const Task& task, std::uint64_t seed, std::string& note) {
  LoraSet set = lora_set(8, seed);
  lorakit::FisherStatistics<float> fc1(kPixels, kHidden1), fc2(kHidden1, kHidden2);
  Mlp<Dense> base = frozen_base(*task.base);
  Batches batches(task.data->train, task.batch, seed + 500);
  for (Index b = 0; b < task.lora_da_batches; ++b) {
    batches.next();
    base.forward(batches.images());
    base.backward(batches.images(), batches.labels().data());
    // The loss is a batch mean: each sample's own gradient is the batch size times its share.
    const float n = static_cast<float>(task.batch);
    fc1.observe(batches.images(), base.grad_z1() * n, task.batch);
    fc2.observe(base.hidden1(), base.grad_z2() * n, task.batch);
  }
  lorakit::LoraDaConfig config;
  config.num_train_samples = static_cast<double>(task.data->train.size());
  lorakit::lora_da_initialize(set.at("fc1"), fc1, config);
  lorakit::lora_da_initialize(set.at("fc2"), fc2, config);
  note = "Fisher statistics of " + std::to_string(task.lora_da_batches * task.batch) + " samples";
  return set;
}
#endif

}  // namespace

void add_init_methods(std::vector<Method>& methods, std::vector<std::string>& missing) {
  (void)missing;  // empty when both headers are there
  const std::vector<double> adapter_lrs = adapter_learning_rates();
#ifdef FASHION_MNIST_HAS_EVA
  methods.push_back(data_driven("EVA r=8, rho=2", adapter_lrs, eva_set));
#else
  missing.push_back("EVA (init/eva.hpp)");
#endif
#ifdef FASHION_MNIST_HAS_LORA_DA
  methods.push_back(data_driven("LoRA-DA r=8", adapter_lrs, lora_da_set));
#else
  missing.push_back("LoRA-DA (init/lora_da.hpp)");
#endif
}

}  // namespace fashion_mnist::detail
