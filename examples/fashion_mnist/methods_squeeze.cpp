// LoRA-Squeeze in the study: rank 32 trained and cut to rank 8 after training, at 80% of it, or in stages.
#include "method_support.hpp"

#if __has_include(<lorakit/rank/squeeze.hpp>)
#include <lorakit/rank/squeeze.hpp>
#define FASHION_MNIST_HAS_SQUEEZE 1
#endif

namespace fashion_mnist::detail {
namespace {

#ifdef FASHION_MNIST_HAS_SQUEEZE
constexpr Index kSqueezeSource = 32;
constexpr Index kSqueezeTarget = 8;

/// Trains rank 32 and squeezes to rank 8: after the last step (post hoc), at 80% of the steps (post hoc +
/// continued), or in stages 32 -> 16 -> 8 over the budget (annealed).
enum class SqueezeMode { post_hoc, continued, annealed };

/// The rank schedule of the continued and annealed variants.
lorakit::RankSchedule squeeze_schedule(const Task& task, SqueezeMode mode) {
  return mode == SqueezeMode::continued
             ? lorakit::RankSchedule::cont_squeeze(kSqueezeSource, kSqueezeTarget, task.steps * 4 / 5)
             : lorakit::RankSchedule::geometric(kSqueezeSource, kSqueezeTarget, task.steps);
}

RunResult run_squeeze(const Task& task, double lr, std::uint64_t seed, Progress& progress, SqueezeMode mode) {
  Hooks<Lora<float>> hooks;
  if (mode == SqueezeMode::post_hoc) {
    hooks.after_training = [](LoraSet& set) {
      for (auto& [name, adapter] : set) adapter = lorakit::squeeze(adapter, kSqueezeTarget);
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
    for (const auto& stage : schedule.stages()) note << " " << stage.rank << " from step " << stage.start_step << ",";
    result.note = note.str();
    result.note.pop_back();
  }
  return result;
}
#endif

}  // namespace

void add_squeeze_methods(std::vector<Method>& methods, std::vector<std::string>& missing) {
  (void)missing;  // empty when the header is there
  const std::vector<double> adapter_lrs = adapter_learning_rates();
#ifdef FASHION_MNIST_HAS_SQUEEZE
  const std::pair<const char*, SqueezeMode> squeezes[] = {{"Squeeze 32->8, post hoc", SqueezeMode::post_hoc},
                                                          {"Squeeze 32->8, post hoc + continued", SqueezeMode::continued},
                                                          {"Squeeze 32->16->8, annealed", SqueezeMode::annealed}};
  for (const auto& [name, mode] : squeezes) {
    const SqueezeMode m = mode;
    methods.push_back({name, adapter_lrs, [m](const Task& t, double lr, std::uint64_t s, Progress& p) {
                         return run_squeeze(t, lr, s, p, m);
                       }});
  }
#else
  missing.push_back("LoRA-Squeeze (rank/squeeze.hpp)");
#endif
}

}  // namespace fashion_mnist::detail
