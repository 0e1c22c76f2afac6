// The initializations of the study computed from data or from the weights: EVA (from the layers' inputs), LoRA-DA
// (from Fisher statistics), LoRA-GA (from the first-step gradient) on downstream batches through the frozen
// pretrained model, and PiSSA (from the weights' top singular triplets). Under data parallelism every rank feeds
// its rows of each batch and the statistics are merged across the ranks before the adapters are made.
#include "method_support.hpp"

#include "../common/report.hpp"

#include <lorakit/init/eva.hpp>
#include <lorakit/init/lora_da.hpp>
#include <lorakit/init/lora_ga.hpp>
#include <lorakit/init/pissa.hpp>

#include <tuple>

namespace fashion_mnist::detail {
namespace {

/// This rank's rows of a statistics batch (all of them in one process).
lorakit_examples::Rows my_rows(const Task& task) {
  return task.parallel != nullptr ? task.parallel->my_rows(task.batch) : lorakit_examples::Rows{0, task.batch};
}

bool sharded(const Task& task) { return task.parallel != nullptr && task.parallel->size() > 1; }

/// EVA: A from the top right-singular vectors of each layer's inputs on the downstream data (base model's
/// activations), ranks redistributed between the two layers by explained variance, B = 0. Data-parallel: each
/// rank feeds its rows; after each batch the ranks' states are merged into a view (the same bits on every rank),
/// whose convergence decides whether to stop and which makes the adapters.
Initialized eva_set(const Task& task, std::uint64_t seed, std::string& note) {
  lorakit::EvaConfig config;
  config.rank = 8;
  config.rho = 2;
  lorakit::Eva<float> eva(config);
  eva.add_layer("fc1", kPixels, kHidden1);
  eva.add_layer("fc2", kHidden1, kHidden2);
  Mlp<Dense> base = frozen_base(*task.base);
  Batches batches(task.data->train, task.batch, seed + 500);
  const lorakit_examples::Rows mine = my_rows(task);
  Progress progress("  EVA statistics", task.eva_max_batches);
  Index used = 0;
  std::optional<lorakit::Eva<float>> view;  // the merge of every rank's statistics (data-parallel runs)
  const auto merged_view = [&]() -> const lorakit::Eva<float>& { return view ? *view : eva; };
  while (used < task.eva_max_batches && !merged_view().converged()) {
    batches.next();
    const auto x = batches.images().middleRows(mine.begin, mine.count);
    base.forward(x);
    eva.observe("fc1", x);
    eva.observe("fc2", base.hidden1());
    if (sharded(task)) view.emplace(task.parallel->merged(eva));
    ++used;
    progress.advance();
  }
  progress.finish();
  const lorakit::Eva<float>& result = merged_view();
  lorakit::LoraConfig lora;
  lora.rank = config.rank;
  lora.alpha = static_cast<double>(config.rank);
  lora.seed = seed;
  LoraSet set = result.make_adapters(lora);
  std::ostringstream text;
  text << "ranks fc1 " << result.ranks().at("fc1") << ", fc2 " << result.ranks().at("fc2") << " after " << used
       << " batches" << (result.converged() ? "" : " (not converged)");
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
  return {std::move(set), nullptr};
}

/// LoRA-DA: Fisher statistics of each hidden layer at the pretrained model on downstream batches (per-sample
/// gradients of the loss at the layer's output), then A and B from the guidance matrix; `lora` sets the adapters'
/// scaling (alpha, rsLoRA), `gamma` the factors' scale. Data-parallel: each rank adds its rows, the sums are
/// merged (in double) before the initialization.
Initialized lora_da_set(const Task& task, std::uint64_t seed, const lorakit::LoraConfig& lora, double gamma,
                        std::string& note) {
  LoraSet set;
  lorakit::LoraConfig config1 = lora;
  config1.seed = seed;
  set.add("fc1", Lora<float>(kPixels, kHidden1, config1));
  config1.seed = seed + 1000;
  set.add("fc2", Lora<float>(kHidden1, kHidden2, config1));
  lorakit::FisherStatistics<float> fc1(kPixels, kHidden1), fc2(kHidden1, kHidden2);
  Mlp<Dense> base = frozen_base(*task.base);
  Batches batches(task.data->train, task.batch, seed + 500);
  const lorakit_examples::Rows mine = my_rows(task);
  for (Index b = 0; b < task.lora_da_batches; ++b) {
    batches.next();
    const auto x = batches.images().middleRows(mine.begin, mine.count);
    base.forward(x);
    base.backward(x, batches.labels().data() + mine.begin);
    // The loss is a mean over this rank's rows: each sample's own gradient is their number times its share.
    const float n = static_cast<float>(mine.count);
    fc1.observe(x, base.grad_z1() * n, mine.count);
    fc2.observe(base.hidden1(), base.grad_z2() * n, mine.count);
  }
  if (task.parallel != nullptr) {
    task.parallel->merge(fc1);
    task.parallel->merge(fc2);
  }
  lorakit::LoraDaConfig config;
  config.gamma = gamma;
  config.num_train_samples = static_cast<double>(task.data->train.size());
  lorakit::lora_da_initialize(set.at("fc1"), fc1, config);
  lorakit::lora_da_initialize(set.at("fc2"), fc2, config);
  note = "Fisher statistics of " + std::to_string(task.lora_da_batches * task.batch) + " samples";
  return {std::move(set), nullptr};
}

/// PiSSA: A and B from the top 8 singular triplets of each pretrained weight (exact SVD, PEFT's split), the rest
/// of the weight stays as the frozen residual the adapters train on. It needs no data: the same for every seed.
Initialized pissa_set(const Task& task, std::uint64_t seed, std::string& note) {
  LoraSet set = lora_set(8, seed);
  auto residual = std::make_shared<Weights>(*task.base);
  lorakit::pissa_initialize(set.at("fc1"), residual->fc1.W);
  lorakit::pissa_initialize(set.at("fc2"), residual->fc2.W);
  note = "top 8 singular triplets of each weight (exact SVD), the residual frozen";
  return {std::move(set), std::move(residual)};
}

/// LoRA-GA (PEFT's form: direction ArB2r, "stable" scale with gamma 16): the mean weight gradient of each hidden
/// layer over downstream batches at the pretrained model, A and B from its top 2r singular triplets, s B A moved
/// out of the frozen weight so that the output is unchanged at step 0. Data-parallel: each rank adds its rows'
/// share of every batch gradient, the sums are added across the ranks (in double).
Initialized lora_ga_set(const Task& task, std::uint64_t seed, std::string& note) {
  LoraSet set = lora_set(8, seed);
  lorakit::LoraGaGradient<float> fc1(kPixels, kHidden1), fc2(kHidden1, kHidden2);
  Mlp<Dense> base = frozen_base(*task.base);
  Batches batches(task.data->train, task.batch, seed + 500);
  const lorakit_examples::Rows mine = my_rows(task);
  // This rank's rows carry this weight of the batch-mean loss's gradient.
  const float share = static_cast<float>(mine.count) / static_cast<float>(task.batch);
  for (Index b = 0; b < task.lora_ga_batches; ++b) {
    batches.next();
    const auto x = batches.images().middleRows(mine.begin, mine.count);
    base.forward(x);
    base.backward(x, batches.labels().data() + mine.begin);
    fc1.observe(x, base.grad_z1() * share);
    fc2.observe(base.hidden1(), base.grad_z2() * share);
  }
  const auto summed = [&](const lorakit::LoraGaGradient<float>& local) {
    if (!sharded(task)) return local;
    const lorakit::Matrix<double>& sum = local.sum();
    std::vector<double> flat(sum.data(), sum.data() + sum.size());
    task.parallel->sum(flat);
    return lorakit::LoraGaGradient<float>::from_sum(
        Eigen::Map<const lorakit::Matrix<double>>(flat.data(), sum.rows(), sum.cols()), task.lora_ga_batches);
  };
  auto residual = std::make_shared<Weights>(*task.base);
  lorakit::lora_ga_initialize(set.at("fc1"), residual->fc1.W, summed(fc1));
  const lorakit::LoraGaReport report = lorakit::lora_ga_initialize(set.at("fc2"), residual->fc2.W, summed(fc2));
  std::ostringstream text;
  text << "mean gradient of " << task.lora_ga_batches * task.batch << " samples; fc2's top singular value "
       << lorakit_examples::format("%.3g", report.singular_values(0));
  note = text.str();
  return {std::move(set), std::move(residual)};
}

}  // namespace

void add_init_methods(std::vector<Method>& methods, std::vector<std::string>& missing) {
  (void)missing;  // every initializer is in this checkout
  const std::vector<double> adapter_lrs = adapter_learning_rates();
  methods.push_back(data_driven("EVA r=8, rho=2", adapter_lrs, eva_set));
  methods.push_back(data_driven("LoRA-DA r=8", adapter_lrs, [](const Task& t, std::uint64_t s, std::string& note) {
    lorakit::LoraConfig lora;
    lora.rank = 8;
    lora.alpha = 8;
    return lora_da_set(t, s, lora, 1024, note);
  }));
  methods.push_back(data_driven("LoRA-DA r=8, rsLoRA alpha=16, gamma=1024", adapter_lrs,
                                [](const Task& t, std::uint64_t s, std::string& note) {
                                  lorakit::LoraConfig lora;
                                  lora.rank = 8;
                                  lora.alpha = 16;
                                  lora.use_rslora = true;
                                  return lora_da_set(t, s, lora, 1024, note);
                                }));
  // PiSSA and LoRA-GA train on a residual weight: their adapters alone are not an adapter of the pretrained model
  // (PEFT converts them with the initial adapters first), so they are not candidates for the PEFT export.
  for (Method method : {data_driven("PiSSA r=8", adapter_lrs, pissa_set),
                        data_driven("LoRA-GA r=8", adapter_lrs, lora_ga_set)}) {
    method.run = [run = method.run](const Task& t, double lr, std::uint64_t s, Progress& p) {
      RunResult result = run(t, lr, s, p);
      result.lora.reset();
      return result;
    };
    methods.push_back(std::move(method));
  }
}

}  // namespace fashion_mnist::detail
