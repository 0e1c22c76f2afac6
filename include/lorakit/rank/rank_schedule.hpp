// lorakit::RankSchedule: the stages of in-tuning rank annealing (LoRA-Squeeze): which rank an adapter is
// trained at during each step, and the steps where the rank drops. The RankAnnealer of rank/squeeze.hpp
// follows one; a single stage after the source is Cont-Squeeze (post-hoc squeeze, then training at the target).
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace lorakit {

/// A piecewise-constant rank over training steps, from the source rank down to the target rank
/// (Vulić et al., "LoRA-Squeeze", arXiv 2602.10993: learn at a high rank, then reduce it in stages).
///
/// Steps are numbered from 0. Stage i covers the steps \f$[b_i, b_{i+1})\f$ with \f$b_0 = 0\f$ and
/// \f$b_{m} = \infty\f$ for the last stage; its rank is \f$r_i\f$, strictly decreasing:
/// \f$r_0 > r_1 > \dots > r_{m-1}\f$, where \f$r_0\f$ is the rank training starts at (the source) and
/// \f$r_{m-1}\f$ the target. A squeeze happens at each boundary \f$b_i\f$, \f$i \ge 1\f$, before the step
/// \f$b_i\f$ is taken.
///
/// Factories (the constructor `RankSchedule(source, target, total_steps)` is `geometric`):
/// - `geometric(source, target, total_steps)`: ranks source, source/2, source/4, ... (integer halving),
///   the first one at or below the target replaced by the target; the stages share the steps equally.
/// - `from_ranks({r_0, ..., r_{m-1}}, total_steps)`: given ranks, equal steps per stage.
/// - `cont_squeeze(source, target, squeeze_step)`: two stages, one boundary (post hoc, then continued training).
/// - `from_stages({{r_0, 0}, {r_1, b_1}, ...})`: given ranks and boundaries.
///
/// With equal steps per stage, m stages over T steps start at \f$b_i = \lfloor i T / m \rfloor\f$, so every
/// stage gets \f$\lfloor T/m \rfloor\f$ or \f$\lceil T/m \rceil\f$ steps and the last one ends at step T.
class RankSchedule {
 public:
  /// One stage: the rank used from `start_step` on (until the next stage starts).
  struct Stage {
    Index rank;
    long long start_step;
  };

  /// The default schedule: geometric halving, as `geometric(source_rank, target_rank, total_steps, min_steps_per_stage)`.
  RankSchedule(Index source_rank, Index target_rank, long long total_steps, long long min_steps_per_stage = 1)
      : RankSchedule(geometric(source_rank, target_rank, total_steps, min_steps_per_stage)) {}

  /// Stages with given ranks and start steps. Errors (ValueError): no stage; a rank < 1; ranks that do not
  /// strictly decrease; a first stage that does not start at step 0; start steps that do not strictly increase.
  static RankSchedule from_stages(std::vector<Stage> stages) {
    constexpr const char* where = "RankSchedule::from_stages";
    if (stages.empty()) detail::fail<ValueError>(where, "stages is empty, expected at least one stage");
    for (std::size_t i = 0; i < stages.size(); ++i) {
      if (stages[i].rank < 1) detail::fail<ValueError>(where, "stages[", i, "].rank is ", stages[i].rank, ", expected >= 1");
      if (i == 0) {
        if (stages[0].start_step != 0) {
          detail::fail<ValueError>(where, "stages[0].start_step is ", stages[0].start_step, ", expected 0");
        }
        continue;
      }
      if (stages[i].rank >= stages[i - 1].rank) {
        detail::fail<ValueError>(where, "stages[", i, "].rank = ", stages[i].rank, " is not below stages[", i - 1,
                                 "].rank = ", stages[i - 1].rank, ", expected strictly decreasing ranks");
      }
      if (stages[i].start_step <= stages[i - 1].start_step) {
        detail::fail<ValueError>(where, "stages[", i, "].start_step = ", stages[i].start_step, " is not after stages[",
                                 i - 1, "].start_step = ", stages[i - 1].start_step,
                                 ", expected strictly increasing start steps");
      }
    }
    return RankSchedule(std::move(stages));
  }

  /// Ranks `ranks[0]` (the source) > ... > `ranks.back()` (the target), sharing `total_steps` equally.
  /// Errors (ValueError): those of from_stages; total_steps below ranks.size() * min_steps_per_stage;
  /// min_steps_per_stage < 1.
  static RankSchedule from_ranks(const std::vector<Index>& ranks, long long total_steps,
                                 long long min_steps_per_stage = 1) {
    constexpr const char* where = "RankSchedule::from_ranks";
    if (ranks.empty()) detail::fail<ValueError>(where, "ranks is empty, expected at least the source rank");
    check_steps(where, static_cast<long long>(ranks.size()), total_steps, min_steps_per_stage);
    const auto m = static_cast<long long>(ranks.size());
    std::vector<Stage> stages;
    for (long long i = 0; i < m; ++i) stages.push_back({ranks[static_cast<std::size_t>(i)], i * total_steps / m});
    return from_stages(std::move(stages));
  }

  /// Geometric halving from `source_rank` to `target_rank` over `total_steps`, each stage at least
  /// `min_steps_per_stage` steps long: when the halving gives more stages than fit, the intermediate ranks are
  /// thinned (evenly, keeping the source and the target) until they fit. source == target gives one stage.
  /// Errors (ValueError): target_rank < 1 or above source_rank; min_steps_per_stage < 1; fewer total steps than
  /// two stages need (one when source == target).
  static RankSchedule geometric(Index source_rank, Index target_rank, long long total_steps,
                                long long min_steps_per_stage = 1) {
    constexpr const char* where = "RankSchedule::geometric";
    if (target_rank < 1 || target_rank > source_rank) {
      detail::fail<ValueError>(where, "target_rank is ", target_rank, ", expected 1 <= target_rank <= source_rank = ",
                               source_rank);
    }
    std::vector<Index> halving{source_rank};
    while (halving.back() > target_rank) halving.push_back(std::max(halving.back() / 2, target_rank));
    const long long fitting = min_steps_per_stage >= 1 ? total_steps / min_steps_per_stage : 0;
    check_steps(where, std::min<long long>(static_cast<long long>(halving.size()), 2), total_steps,
                min_steps_per_stage);
    const auto wanted = static_cast<long long>(halving.size());
    if (wanted <= fitting) return from_ranks(halving, total_steps, min_steps_per_stage);
    // Keep `fitting` (>= 2) stages: the source, the target, and evenly spaced ranks of the halving between them.
    std::vector<Index> thinned;
    for (long long i = 0; i < fitting; ++i) {
      thinned.push_back(halving[static_cast<std::size_t>(i * (wanted - 1) / (fitting - 1))]);
    }
    return from_ranks(thinned, total_steps, min_steps_per_stage);
  }

  /// Cont-Squeeze: train at `source_rank` for steps [0, squeeze_step), at `target_rank` from squeeze_step on.
  /// Errors: those of from_stages (squeeze_step must be >= 1, target below source).
  static RankSchedule cont_squeeze(Index source_rank, Index target_rank, long long squeeze_step) {
    return from_stages({{source_rank, 0}, {target_rank, squeeze_step}});
  }

  const std::vector<Stage>& stages() const { return stages_; }
  Index num_stages() const { return static_cast<Index>(stages_.size()); }
  Index source_rank() const { return stages_.front().rank; }
  Index target_rank() const { return stages_.back().rank; }

  /// The stage that step `step` belongs to (0 for negative steps).
  Index stage_at(long long step) const {
    Index stage = 0;
    while (stage + 1 < num_stages() && stages_[static_cast<std::size_t>(stage + 1)].start_step <= step) ++stage;
    return stage;
  }

  /// The rank step `step` is trained at.
  Index rank_at(long long step) const { return stages_[static_cast<std::size_t>(stage_at(step))].rank; }

  /// True when a stage (other than the first) starts at `step`: the rank drops before that step.
  bool is_boundary(long long step) const {
    for (std::size_t i = 1; i < stages_.size(); ++i) {
      if (stages_[i].start_step == step) return true;
    }
    return false;
  }

 private:
  explicit RankSchedule(std::vector<Stage> stages) : stages_(std::move(stages)) {}

  static void check_steps(const char* where, long long num_stages, long long total_steps, long long min_steps) {
    if (min_steps < 1) detail::fail<ValueError>(where, "min_steps_per_stage is ", min_steps, ", expected >= 1");
    if (total_steps < num_stages * min_steps) {
      detail::fail<ValueError>(where, "total_steps is ", total_steps, ", expected at least ", num_stages * min_steps,
                               " (", num_stages, " stages of at least min_steps_per_stage = ", min_steps, " steps)");
    }
  }

  std::vector<Stage> stages_;
};

}  // namespace lorakit
