// The methods of the language-model study: full fine-tuning of the projections (the reference), LoRA, VeRA, EVA,
// LoRA-DA (at alpha = r, and in its reference configuration), LoRA-Squeeze post hoc, post hoc + continued and
// annealed, DoRA, PiSSA, LoRA+ and LoRA-GA. Each builds its model from the pretrained weights (PiSSA and LoRA-GA:
// from the residual weights their initialization leaves) and hands it to the shared training loop.
#include "methods.hpp"

#include <lorakit/lorakit.hpp>

#include <map>
#include <memory>
#include <optional>
#include <sstream>

namespace tiny_llama {
namespace {

using lorakit::AdapterSet;
using lorakit::Lora;
using LoraSet = AdapterSet<Lora<float>>;

constexpr Index kRank = 8;
constexpr Index kSqueezeSource = 32;

/// The learning-rate grids. LoRA's own grid has three rates; the methods that start from LoRA's factors or train
/// them as LoRA does (EVA, LoRA-DA, the squeezes, DoRA) search the two rates around LoRA's choice, which keeps
/// scripts/demo in its time budget (docs/tiny-llama.md); PiSSA and LoRA-GA, whose factors start at another scale,
/// search three, and LoRA+ searches its base rate (A's; B's is 16 times that) over three.
std::vector<double> adapter_learning_rates() { return {1e-3, 3e-3, 1e-2}; }
std::vector<double> derived_learning_rates() { return {3e-3, 1e-2}; }
std::vector<double> loraplus_learning_rates() { return {3e-4, 1e-3, 3e-3}; }

lorakit::AdamWConfig adamw(double lr) {
  lorakit::AdamWConfig config;
  config.lr = lr;
  config.weight_decay = 0;
  return config;
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

/// Trains `model` for the task's steps with `optimizer`, then evaluates it; `before_step` as in TrainLoop.
/// `parameters()` gives the optimizer's parameters as they are (data-parallel runs broadcast their initial values
/// from rank 0 and average their gradients).
template <class Proj>
void train_and_evaluate(const Task& task, Model<float, Proj>& model, lorakit::AdamW<float>& optimizer,
                        std::function<std::vector<lorakit::Parameter<float>>()> parameters, std::uint64_t seed,
                        Progress& progress, RunResult& result, std::function<void(long long)> before_step = {},
                        std::function<std::string()> after = {}) {
  if (task.parallel != nullptr) {
    std::vector<lorakit::Parameter<float>> initial = parameters();
    task.parallel->broadcast_values(initial);
  }
  TrainLoop loop;
  loop.parallel = task.parallel;
  loop.parameters = std::move(parameters);
  loop.validation = &task.data->validation;
  loop.curve_windows = task.curve_windows;
  loop.eval_steps = task.eval_steps;
  loop.progress = &progress;
  loop.before_step = std::move(before_step);
  Batches batches(task.data->train, task.batch, task.seq_len, seed);  // the same windows for every method
  Stopwatch clock;
  train(model, optimizer, batches, loop, 0, task.steps, result.curve, clock);
  if (after) {
    clock.start();
    result.note = after();
    clock.stop();
  }
  result.train_seconds = clock.seconds();
  result.curve.push_back(
      {task.steps, bits_per_byte(model, task.data->validation, task.seq_len, task.curve_windows, 32, task.parallel)});
  result.validation = bits_per_byte(model, task.data->validation, task.seq_len, task.eval_windows, 32, task.parallel);
  result.test = bits_per_byte(model, task.data->test, task.seq_len, task.eval_windows, 32, task.parallel);
}

/// Full fine-tuning of every projection weight (embedding, norms and head stay as pretrained, as for the adapters).
RunResult run_full(const Task& task, double lr, std::uint64_t seed, Progress& progress) {
  RunResult result;
  Model<float, Dense<float>> model(*task.base, dense_projections<float>(true));
  lorakit::AdamW<float> optimizer(projection_parameters(model), adamw(lr));
  train_and_evaluate(task, model, optimizer, [&model] { return projection_parameters(model); }, seed, progress, result);
  result.trainable = static_cast<Index>(0);
  for (const auto& block : model.blocks) {
    for (const auto& p : block.proj) result.trainable += p.num_parameters();
  }
  return result;
}

/// What an adapter method may do besides plain training.
struct Hooks {
  std::function<void(long long, LoraSet&, lorakit::AdamW<float>&)> before_step;  // rank annealing
  std::function<std::string(LoraSet&)> after_training;                            // post-hoc squeeze
  std::function<void(lorakit::AdamW<float>&)> optimizer;                          // LoRA+'s parameter groups
  /// The frozen weights under the adapters when they are not the pretrained ones (PiSSA's and LoRA-GA's residual
  /// W - s B0 A0); their adapters then apply to these, not to the pretrained model, and are not exported.
  std::shared_ptr<const Weights<float>> base;
};

/// Trains the adapters of `set` on the frozen pretrained model (or on `hooks.base`).
template <class Adapter>
RunResult train_adapters(const Task& task, AdapterSet<Adapter> set, double init_seconds, double lr,
                         std::uint64_t seed, Progress& progress, const Hooks& hooks = {}) {
  RunResult result;
  result.init_seconds = init_seconds;
  Model<float, lorakit::AdaptedLinear<float, lorakit::AdapterRef<Adapter>>> model(
      hooks.base ? *hooks.base : *task.base, adapted_projections<float>(set));
  lorakit::AdamW<float> optimizer(set.parameters(), adamw(lr));
  if (hooks.optimizer) hooks.optimizer(optimizer);
  std::function<void(long long)> before;
  std::function<std::string()> after;
  if constexpr (std::is_same_v<Adapter, Lora<float>>) {
    if (hooks.before_step) before = [&](long long step) { hooks.before_step(step, set, optimizer); };
    if (hooks.after_training) after = [&] { return hooks.after_training(set); };
  }
  train_and_evaluate(task, model, optimizer, [&set] { return set.parameters(); }, seed, progress, result, before, after);
  result.trainable = set.num_parameters();
  if constexpr (std::is_same_v<Adapter, Lora<float>>) {
    if (!hooks.base) result.lora = std::make_shared<const LoraSet>(set);
  }
  return result;
}

/// LoRA adapters of rank r on every projection, alpha = r (scaling 1) unless `config` says otherwise.
LoraSet lora_set(const Config& c, std::uint64_t seed, lorakit::LoraConfig config) {
  LoraSet set;
  std::uint64_t layer = 0;
  for (const auto& shape : projection_shapes(c)) {
    config.seed = seed * 1000 + layer++;
    set.add(shape.name, Lora<float>(shape.in, shape.out, config));
  }
  return set;
}
lorakit::LoraConfig plain_lora(Index rank) {
  lorakit::LoraConfig config;
  config.rank = rank;
  config.alpha = static_cast<double>(rank);
  return config;
}

RunResult run_lora(const Task& task, double lr, std::uint64_t seed, Progress& progress, Index rank,
                   const Hooks& hooks = {}) {
  LoraSet set;
  const double seconds = timed([&] { set = lora_set(task.base->config, seed, plain_lora(rank)); });
  return train_adapters(task, std::move(set), seconds, lr, seed, progress, hooks);
}

RunResult run_vera(const Task& task, double lr, std::uint64_t seed, Progress& progress) {
  AdapterSet<lorakit::Vera<float>> set;
  const double seconds = timed([&] {
    std::vector<std::pair<Index, Index>> shapes;
    for (const auto& shape : projection_shapes(task.base->config)) shapes.emplace_back(shape.in, shape.out);
    lorakit::VeraConfig config;
    config.rank = 256;
    config.projection_seed = seed;
    const auto projections = lorakit::VeraProjections<float>::for_layers(config.rank, shapes, seed);
    for (const auto& shape : projection_shapes(task.base->config)) {
      set.add(shape.name, lorakit::Vera<float>(projections, shape.in, shape.out, config));
    }
  });
  return train_adapters(task, std::move(set), seconds, lr, seed, progress);
}

/// The frozen pretrained model (statistics for the data-driven initializations are taken on it).
Model<float, Dense<float>> frozen_base(const Task& task) {
  return Model<float, Dense<float>>(*task.base, dense_projections<float>(false));
}

/// The forward (and with `backward`, the backward at the batch's targets) of the frozen base model on this rank's
/// rows of the batch (all of them in one process); returns how many sequences that is.
Index statistics_pass(const Task& task, Model<float, Dense<float>>& base, const Batches& batches, bool backward) {
  if (task.parallel == nullptr || task.parallel->size() == 1) {
    base.forward(batches.tokens(), batches.seq_len());
    if (backward) base.backward(batches.targets());
    return batches.batch();
  }
  thread_local Bytes tokens, targets;
  const lorakit_examples::Rows mine = task.parallel->my_rows(batches.batch());
  rows_of(batches.tokens(), mine, batches.seq_len(), tokens);
  rows_of(batches.targets(), mine, batches.seq_len(), targets);
  base.forward(tokens, batches.seq_len());
  if (backward) base.backward(targets);
  return mine.count;
}

/// Whether the run is data-parallel over more than one rank.
bool sharded(const Task& task) { return task.parallel != nullptr && task.parallel->size() > 1; }

/// EVA: A from the top right-singular vectors of each projection's inputs on the new corpus (q, k, v share their
/// input, and so do gate and up: one SVD per group), ranks redistributed by explained variance, B = 0.
LoraSet eva_set(const Task& task, std::uint64_t seed, std::string& note) {
  lorakit::EvaConfig config;
  config.rank = kRank;
  config.rho = 2;
  lorakit::Eva<float> eva(config);
  const auto shapes = projection_shapes(task.base->config);
  const auto group = [](const ProjectionShape& s) -> std::string {
    const std::string layer = "model.layers." + std::to_string(s.layer);
    if (s.kind == Projection::q || s.kind == Projection::k || s.kind == Projection::v) return layer + ".attn_input";
    if (s.kind == Projection::gate || s.kind == Projection::up) return layer + ".mlp_input";
    return "";
  };
  for (const auto& s : shapes) eva.add_layer(s.name, s.in, s.out, group(s));
  Model<float, Dense<float>> base = frozen_base(task);
  Batches batches(task.data->train, task.batch, task.seq_len, seed + 500);
  Progress progress("  EVA statistics", task.eva_max_batches);
  Index used = 0;
  // Data-parallel: each rank's `eva` sees its rows; convergence and the adapters are read from the merge of all
  // ranks' states after each batch (bit-identical on every rank), docs/distributed.md.
  std::optional<lorakit::Eva<float>> merged;
  const auto global = [&]() -> const lorakit::Eva<float>& { return merged ? *merged : eva; };
  while (used < task.eva_max_batches && !global().converged()) {
    batches.next();
    statistics_pass(task, base, batches, false);
    for (const auto& s : shapes) {
      if (s.kind == Projection::k || s.kind == Projection::v || s.kind == Projection::up) continue;  // same group
      eva.observe(s.name, base.blocks[static_cast<std::size_t>(s.layer)].input_of(s.kind));
    }
    if (sharded(task)) merged.emplace(task.parallel->merged(eva));
    ++used;
    progress.advance();
  }
  progress.finish();
  lorakit::LoraConfig lora = plain_lora(kRank);
  lora.seed = seed;
  LoraSet made = global().make_adapters(lora);
  // In the model's order; a layer the redistribution left out keeps a zero update (a rank-1 adapter, A = B = 0).
  LoraSet set;
  std::map<Index, Index> histogram;
  for (const auto& s : shapes) {
    if (made.contains(s.name)) {
      set.add(s.name, made.at(s.name));
      ++histogram[made.at(s.name).rank()];
    } else {
      lorakit::LoraConfig zero = lora;
      zero.rank = 1;
      zero.init = lorakit::LoraInit::zeros;
      set.add(s.name, Lora<float>(s.in, s.out, zero));
      ++histogram[0];
    }
  }
  std::ostringstream text;
  text << "ranks";
  for (const auto& [rank, count] : histogram) text << " " << rank << " x" << count << ",";
  text << " after " << used << " batches" << (global().converged() ? "" : " (not converged)");
  note = text.str();
  return set;
}

/// LoRA-DA: Fisher statistics of every projection at the pretrained model on batches of the new corpus
/// (per-sequence gradients at the projection's output), then A and B from the guidance matrix.
LoraSet lora_da_set(const Task& task, std::uint64_t seed, const lorakit::LoraConfig& lora, double gamma,
                    std::string& note) {
  LoraSet set = lora_set(task.base->config, seed, lora);
  const auto shapes = projection_shapes(task.base->config);
  std::vector<lorakit::FisherStatistics<float>> stats;
  for (const auto& s : shapes) stats.emplace_back(s.in, s.out);
  Model<float, Dense<float>> base = frozen_base(task);
  Batches batches(task.data->train, task.batch, task.seq_len, seed + 500);
  Progress progress("  LoRA-DA statistics", task.lora_da_batches);
  for (Index b = 0; b < task.lora_da_batches; ++b) {
    batches.next();
    const Index sequences = statistics_pass(task, base, batches, true);
    // The loss is a mean over the pass's sequences: a sequence's own gradient is their number times its share.
    const float n = static_cast<float>(sequences);
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const auto& block = base.blocks[static_cast<std::size_t>(shapes[i].layer)];
      stats[i].observe(block.input_of(shapes[i].kind), block.grad_output_of(shapes[i].kind) * n, sequences);
    }
    progress.advance();
  }
  progress.finish();
  if (sharded(task)) {
    for (auto& s : stats) s = task.parallel->merged(s);  // the sums over every rank's sequences
  }
  lorakit::LoraDaConfig config;
  config.gamma = gamma;
  config.num_train_samples = static_cast<double>(task.data->train.size()) / static_cast<double>(task.seq_len);
  for (std::size_t i = 0; i < shapes.size(); ++i) lorakit::lora_da_initialize(set.at(shapes[i].name), stats[i], config);
  note = "Fisher statistics of " + std::to_string(task.lora_da_batches * task.batch) + " sequences";
  return set;
}

/// What a data- or weight-driven initialization produces: the adapters, and the frozen weights under them when it
/// changed them (PiSSA, LoRA-GA; null: the pretrained weights).
struct Initialized {
  LoraSet set;
  std::shared_ptr<const Weights<float>> base;
};

/// An initialization computed once per seed and reused by every learning rate of the grid (it does not depend on
/// the learning rate); its time is the time of its first computation.
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

Method data_driven(const std::string& name, std::vector<double> learning_rates, PerSeed::Make make) {
  auto cache = std::make_shared<PerSeed>(std::move(make));
  return {name, std::move(learning_rates), [cache](const Task& t, double lr, std::uint64_t s, Progress& p) {
            std::string note;
            auto [init, seconds] = cache->get(t, s, note);
            Hooks hooks;
            hooks.base = init.base;
            RunResult result = train_adapters(t, std::move(init.set), seconds, lr, s, p, hooks);
            result.note = note;
            return result;
          }};
}

/// An initialization that leaves the pretrained weights as they are.
template <class F>
PerSeed::Make adapters_only(F make) {
  return [make](const Task& t, std::uint64_t s, std::string& note) { return Initialized{make(t, s, note), nullptr}; };
}

/// DoRA: LoRA r=8's factors (the same config and seeds) plus a magnitude per output row, from the pretrained
/// weights' row norms.
RunResult run_dora(const Task& task, double lr, std::uint64_t seed, Progress& progress) {
  AdapterSet<lorakit::Dora<float>> set;
  const double seconds = timed([&] {
    lorakit::LoraConfig config = plain_lora(kRank);
    std::uint64_t layer = 0;
    for (const auto& shape : projection_shapes(task.base->config)) {
      config.seed = seed * 1000 + layer++;
      const auto& W = task.base->blocks[static_cast<std::size_t>(shape.layer)].proj[static_cast<std::size_t>(shape.kind)];
      set.add(shape.name, lorakit::Dora<float>(W, config));
    }
  });
  return train_adapters(task, std::move(set), seconds, lr, seed, progress);
}

/// LoRA+: LoRA r=8 (same factors) with B's learning rate 16 times A's (PEFT's default ratio); `lr` is A's.
RunResult run_loraplus(const Task& task, double lr, std::uint64_t seed, Progress& progress) {
  LoraSet set;
  const double seconds = timed([&] { set = lora_set(task.base->config, seed, plain_lora(kRank)); });
  Hooks hooks;
  hooks.optimizer = [](lorakit::AdamW<float>& optimizer) { lorakit::apply_loraplus(optimizer); };
  return train_adapters(task, std::move(set), seconds, lr, seed, progress, hooks);
}

/// The pretrained projection weight of a module, in a copy of the weights.
Matrix<float>& weight_of(Weights<float>& w, const ProjectionShape& s) {
  return w.blocks[static_cast<std::size_t>(s.layer)].proj[static_cast<std::size_t>(s.kind)];
}

/// PiSSA: A, B from the top-8 singular triplets of each projection weight (exact SVD, PEFT's split), the frozen
/// weights the residual, so the model's output is unchanged at step 0. It does not depend on the seed.
Initialized pissa_init(const Task& task, std::uint64_t seed, std::string& note) {
  auto residual = std::make_shared<Weights<float>>(*task.base);
  LoraSet set = lora_set(task.base->config, seed, plain_lora(kRank));
  for (const auto& s : projection_shapes(task.base->config)) lorakit::pissa_initialize(set.at(s.name), weight_of(*residual, s));
  note = "top-8 singular triplets of each projection weight (exact SVD); the frozen weights are the residual";
  return {std::move(set), std::move(residual)};
}

/// LoRA-GA: the mean weight gradient of every projection at the pretrained model over calibration batches of the
/// new corpus (as many as LoRA-DA's), then PEFT's lora_ga_init (ArB2r, "stable" scale with gamma 16, exact SVD); the
/// frozen weights become W - s B0 A0, so the output is unchanged at step 0.
Initialized lora_ga_init(const Task& task, std::uint64_t seed, std::string& note) {
  const auto shapes = projection_shapes(task.base->config);
  std::vector<lorakit::LoraGaGradient<float>> gradients;
  for (const auto& s : shapes) gradients.emplace_back(s.in, s.out);
  Model<float, Dense<float>> base = frozen_base(task);
  Batches batches(task.data->train, task.batch, task.seq_len, seed + 500);
  Progress progress("  LoRA-GA gradients", task.lora_da_batches);
  for (Index b = 0; b < task.lora_da_batches; ++b) {
    batches.next();
    const Index sequences = statistics_pass(task, base, batches, true);
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const auto& block = base.blocks[static_cast<std::size_t>(shapes[i].layer)];
      if (!sharded(task)) {
        gradients[i].observe(block.input_of(shapes[i].kind), block.grad_output_of(shapes[i].kind));
      } else {
        // This rank's mean-loss gradient weighted by its share of the batch: the ranks' terms add up to the whole
        // batch's gradient.
        const float share = static_cast<float>(sequences) / static_cast<float>(task.batch);
        gradients[i].observe(block.input_of(shapes[i].kind), block.grad_output_of(shapes[i].kind) * share);
      }
    }
    progress.advance();
  }
  progress.finish();
  if (sharded(task)) {
    for (auto& g : gradients) {
      Matrix<double> total = g.sum();
      task.parallel->sum(total);
      g = lorakit::LoraGaGradient<float>::from_sum(std::move(total), g.batches());
    }
  }
  auto adjusted = std::make_shared<Weights<float>>(*task.base);
  LoraSet set = lora_set(task.base->config, seed, plain_lora(kRank));
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    lorakit::lora_ga_initialize(set.at(shapes[i].name), weight_of(*adjusted, shapes[i]), gradients[i].mean());
  }
  note = "mean gradient of " + std::to_string(task.lora_da_batches) + " batches; the frozen weights are W - s B0 A0";
  return {std::move(set), std::move(adjusted)};
}

/// LoRA-Squeeze: rank 32 trained and cut to rank 8 after the last step (post hoc), at 80% of the steps (post hoc +
/// continued), or in stages 32 -> 16 -> 8 over the budget (annealed).
enum class SqueezeMode { post_hoc, continued, annealed };

lorakit::RankSchedule squeeze_schedule(const Task& task, SqueezeMode mode) {
  return mode == SqueezeMode::continued ? lorakit::RankSchedule::cont_squeeze(kSqueezeSource, kRank, task.steps * 4 / 5)
                                        : lorakit::RankSchedule::geometric(kSqueezeSource, kRank, task.steps);
}

RunResult run_squeeze(const Task& task, double lr, std::uint64_t seed, Progress& progress, SqueezeMode mode) {
  Hooks hooks;
  if (mode == SqueezeMode::post_hoc) {
    hooks.after_training = [](LoraSet& set) {
      for (auto& [name, adapter] : set) adapter = lorakit::squeeze(adapter, kRank);
      return std::string("squeezed after the last step");
    };
  } else {
    auto annealer = std::make_shared<lorakit::RankAnnealer>(squeeze_schedule(task, mode));
    hooks.before_step = [annealer](long long step, LoraSet& set, lorakit::AdamW<float>& optimizer) {
      annealer->on_step(step, set, optimizer);
    };
  }
  RunResult result = run_lora(task, lr, seed, progress, kSqueezeSource, hooks);
  if (mode != SqueezeMode::post_hoc) {
    std::ostringstream note;
    note << "rank";
    const lorakit::RankSchedule schedule = squeeze_schedule(task, mode);
    for (const auto& stage : schedule.stages()) {
      note << " " << stage.rank << " from step " << stage.start_step << ",";
    }
    result.note = note.str();
    result.note.pop_back();
  }
  return result;
}

}  // namespace

std::vector<Method> all_methods() {
  const std::vector<double> adapter_lrs = adapter_learning_rates();
  std::vector<Method> methods;
  methods.push_back({"Full fine-tuning", {3e-4, 1e-3, 3e-3}, run_full});
  methods.push_back({"LoRA r=8", adapter_lrs, [](const Task& t, double lr, std::uint64_t s, Progress& p) {
                       return run_lora(t, lr, s, p, kRank);
                     }});
  methods.push_back({"VeRA r=256", {3e-3, 1e-2, 3e-2}, run_vera});
  const std::vector<double> derived_lrs = derived_learning_rates();
  methods.push_back(data_driven("EVA r=8, rho=2", derived_lrs, adapters_only(eva_set)));
  methods.push_back(data_driven("LoRA-DA r=8", derived_lrs,
                                adapters_only([](const Task& t, std::uint64_t s, std::string& note) {
                                  return lora_da_set(t, s, plain_lora(kRank), 1024, note);
                                })));
  methods.push_back(data_driven("LoRA-DA r=8, rsLoRA alpha=16, gamma=1024", derived_lrs,
                                adapters_only([](const Task& t, std::uint64_t s, std::string& note) {
                                  lorakit::LoraConfig config = plain_lora(kRank);
                                  config.alpha = 16;
                                  config.use_rslora = true;
                                  return lora_da_set(t, s, config, 1024, note);
                                })));
  const std::pair<const char*, SqueezeMode> squeezes[] = {{"Squeeze 32->8, post hoc", SqueezeMode::post_hoc},
                                                          {"Squeeze 32->8, post hoc + continued", SqueezeMode::continued},
                                                          {"Squeeze 32->16->8, annealed", SqueezeMode::annealed}};
  for (const auto& [name, mode] : squeezes) {
    const SqueezeMode m = mode;
    methods.push_back({name, derived_lrs, [m](const Task& t, double lr, std::uint64_t s, Progress& p) {
                         return run_squeeze(t, lr, s, p, m);
                       }});
  }
  methods.push_back({"DoRA r=8", derived_lrs, run_dora});
  methods.push_back(data_driven("PiSSA r=8", adapter_lrs, pissa_init));
  methods.push_back({"LoRA+ r=8", loraplus_learning_rates(), run_loraplus});
  methods.push_back(data_driven("LoRA-GA r=8", adapter_lrs, lora_ga_init));
  return methods;
}

}  // namespace tiny_llama
