// The methods of the language-model study: full fine-tuning of the projections (the reference), LoRA, VeRA, EVA,
// LoRA-DA (at alpha = r, and in its reference configuration), and LoRA-Squeeze post hoc, post hoc + continued and
// annealed. Each builds its model from the pretrained weights and hands it to the shared training loop.
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

std::vector<double> adapter_learning_rates() { return {1e-3, 3e-3, 1e-2}; }

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
template <class Proj>
void train_and_evaluate(const Task& task, Model<float, Proj>& model, lorakit::AdamW<float>& optimizer,
                        std::uint64_t seed, Progress& progress, RunResult& result,
                        std::function<void(long long)> before_step = {}, std::function<std::string()> after = {}) {
  TrainLoop loop;
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
  result.curve.push_back({task.steps, bits_per_byte(model, task.data->validation, task.seq_len, task.curve_windows)});
  result.validation = bits_per_byte(model, task.data->validation, task.seq_len, task.eval_windows);
  result.test = bits_per_byte(model, task.data->test, task.seq_len, task.eval_windows);
}

/// Full fine-tuning of every projection weight (embedding, norms and head stay as pretrained, as for the adapters).
RunResult run_full(const Task& task, double lr, std::uint64_t seed, Progress& progress) {
  RunResult result;
  Model<float, Dense<float>> model(*task.base, dense_projections<float>(true));
  lorakit::AdamW<float> optimizer(projection_parameters(model), adamw(lr));
  train_and_evaluate(task, model, optimizer, seed, progress, result);
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
};

/// Trains the adapters of `set` on the frozen pretrained model.
template <class Adapter>
RunResult train_adapters(const Task& task, AdapterSet<Adapter> set, double init_seconds, double lr,
                         std::uint64_t seed, Progress& progress, const Hooks& hooks = {}) {
  RunResult result;
  result.init_seconds = init_seconds;
  Model<float, lorakit::AdaptedLinear<float, lorakit::AdapterRef<Adapter>>> model(*task.base,
                                                                                   adapted_projections<float>(set));
  lorakit::AdamW<float> optimizer(set.parameters(), adamw(lr));
  std::function<void(long long)> before;
  std::function<std::string()> after;
  if constexpr (std::is_same_v<Adapter, Lora<float>>) {
    if (hooks.before_step) before = [&](long long step) { hooks.before_step(step, set, optimizer); };
    if (hooks.after_training) after = [&] { return hooks.after_training(set); };
  }
  train_and_evaluate(task, model, optimizer, seed, progress, result, before, after);
  result.trainable = set.num_parameters();
  if constexpr (std::is_same_v<Adapter, Lora<float>>) result.lora = std::make_shared<const LoraSet>(set);
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
  while (used < task.eva_max_batches && !eva.converged()) {
    batches.next();
    base.forward(batches.tokens(), batches.seq_len());
    for (const auto& s : shapes) {
      if (s.kind == Projection::k || s.kind == Projection::v || s.kind == Projection::up) continue;  // same group
      eva.observe(s.name, base.blocks[static_cast<std::size_t>(s.layer)].input_of(s.kind));
    }
    ++used;
    progress.advance();
  }
  progress.finish();
  lorakit::LoraConfig lora = plain_lora(kRank);
  lora.seed = seed;
  LoraSet made = eva.make_adapters(lora);
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
  text << " after " << used << " batches" << (eva.converged() ? "" : " (not converged)");
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
    base.forward(batches.tokens(), batches.seq_len());
    base.backward(batches.targets());
    // The loss is a mean over the batch's sequences: a sequence's own gradient is the batch size times its share.
    const float n = static_cast<float>(task.batch);
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const auto& block = base.blocks[static_cast<std::size_t>(shapes[i].layer)];
      stats[i].observe(block.input_of(shapes[i].kind), block.grad_output_of(shapes[i].kind) * n, task.batch);
    }
    progress.advance();
  }
  progress.finish();
  lorakit::LoraDaConfig config;
  config.gamma = gamma;
  config.num_train_samples = static_cast<double>(task.data->train.size()) / static_cast<double>(task.seq_len);
  for (std::size_t i = 0; i < shapes.size(); ++i) lorakit::lora_da_initialize(set.at(shapes[i].name), stats[i], config);
  note = "Fisher statistics of " + std::to_string(task.lora_da_batches * task.batch) + " sequences";
  return set;
}

/// An initialization computed once per seed and reused by every learning rate of the grid (it does not depend on
/// the learning rate); its time is the time of its first computation.
class PerSeed {
 public:
  using Make = std::function<LoraSet(const Task&, std::uint64_t, std::string&)>;
  explicit PerSeed(Make make) : make_(std::move(make)) {}
  std::pair<LoraSet, double> get(const Task& task, std::uint64_t seed, std::string& note) {
    auto found = cache_.find(seed);
    if (found == cache_.end()) {
      Entry entry;
      entry.seconds = timed([&] { entry.set.emplace(make_(task, seed, entry.note)); });
      found = cache_.emplace(seed, std::move(entry)).first;
    }
    note = found->second.note;
    return {*found->second.set, found->second.seconds};
  }

 private:
  struct Entry {
    std::optional<LoraSet> set;
    double seconds = 0;
    std::string note;
  };
  Make make_;
  std::map<std::uint64_t, Entry> cache_;
};

Method data_driven(const std::string& name, PerSeed::Make make) {
  auto cache = std::make_shared<PerSeed>(std::move(make));
  return {name, adapter_learning_rates(), [cache](const Task& t, double lr, std::uint64_t s, Progress& p) {
            std::string note;
            auto [set, seconds] = cache->get(t, s, note);
            RunResult result = train_adapters(t, std::move(set), seconds, lr, s, p);
            result.note = note;
            return result;
          }};
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
  methods.push_back(data_driven("EVA r=8, rho=2", eva_set));
  methods.push_back(data_driven("LoRA-DA r=8", [](const Task& t, std::uint64_t s, std::string& note) {
    return lora_da_set(t, s, plain_lora(kRank), 1024, note);
  }));
  methods.push_back(data_driven("LoRA-DA r=8, rsLoRA alpha=16, gamma=1024", [](const Task& t, std::uint64_t s,
                                                                                std::string& note) {
    lorakit::LoraConfig config = plain_lora(kRank);
    config.alpha = 16;
    config.use_rslora = true;
    return lora_da_set(t, s, config, 1024, note);
  }));
  const std::pair<const char*, SqueezeMode> squeezes[] = {{"Squeeze 32->8, post hoc", SqueezeMode::post_hoc},
                                                          {"Squeeze 32->8, post hoc + continued", SqueezeMode::continued},
                                                          {"Squeeze 32->16->8, annealed", SqueezeMode::annealed}};
  for (const auto& [name, mode] : squeezes) {
    const SqueezeMode m = mode;
    methods.push_back({name, adapter_lrs, [m](const Task& t, double lr, std::uint64_t s, Progress& p) {
                         return run_squeeze(t, lr, s, p, m);
                       }});
  }
  return methods;
}

}  // namespace tiny_llama
