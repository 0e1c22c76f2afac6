// lorakit::allocate_ranks: distributes a budget of ranks (or of trainable parameters) over layers that each
// offer a descending list of scores, one per rank they could keep. Shared by EVA's rank redistribution
// (init/eva.hpp) and LoRA-Squeeze (rank/squeeze.hpp).
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace lorakit {

/// What one layer offers to the allocator: `scores[j]` is the value of giving the layer its (j+1)-th rank
/// (for EVA the explained-variance ratio of its j-th component; for LoRA-Squeeze a singular value).
/// Scores must be finite, non-negative and non-increasing, so a layer's ranks are always taken as a prefix.
struct LayerScores {
  std::string name;            ///< the layer's name: the key of the result
  std::vector<double> scores;  ///< descending scores, one per rank the layer could receive
  Index max_rank = -1;         ///< at most this many ranks; -1 means scores.size()
  Index min_rank = 0;          ///< at least this many ranks, whatever their scores
  Index cost_per_rank = 1;     ///< parameters per rank (in_features + out_features for a LoRA layer)
};

/// The budget that `allocate_ranks` distributes: a number of ranks, or a number of trainable parameters.
class RankBudget {
 public:
  enum class Kind { ranks, parameters };

  /// A budget of `total` ranks over all layers (EVA's rule: rank x number of layers). A fractional total is
  /// rounded down. Errors: total negative or not finite.
  static RankBudget ranks(double total) { return RankBudget(Kind::ranks, check("RankBudget::ranks", total)); }

  /// A budget of `total` trainable parameters; a layer's rank r costs r * cost_per_rank of them.
  /// Errors: total negative or not finite.
  static RankBudget parameters(double total) {
    return RankBudget(Kind::parameters, check("RankBudget::parameters", total));
  }

  Kind kind() const { return kind_; }
  double total() const { return total_; }

 private:
  RankBudget(Kind kind, double total) : kind_(kind), total_(total) {}

  static double check(const char* where, double total) {
    if (!std::isfinite(total) || total < 0) {
      detail::fail<ValueError>(where, "total is ", total, ", expected a finite value >= 0");
    }
    return total;
  }

  Kind kind_;
  double total_;
};

/// Scores for `allocate_ranks` from values that descend in exact arithmetic but may wobble by an ulp after rounding
/// (explained-variance ratios, energy fractions): each is clamped to the one before it, so they descend.
template <class Values>
std::vector<double> descending_scores(const Values& values) {
  std::vector<double> scores(static_cast<std::size_t>(values.size()));
  for (std::size_t j = 0; j < scores.size(); ++j) {
    const double value = static_cast<double>(values[static_cast<Index>(j)]);
    scores[j] = j == 0 ? value : std::min(value, scores[j - 1]);
  }
  return scores;
}

namespace detail {

/// The budget left after every layer's min_rank, in the budget's unit. Errors (ValueError, naming `where`): a
/// budget below what the minimum ranks cost.
inline double budget_after_minimum(const char* where, const std::vector<LayerScores>& layers, const RankBudget& budget) {
  const bool by_parameters = budget.kind() == RankBudget::Kind::parameters;
  double reserved = 0;
  for (const auto& layer : layers) {
    const double unit = by_parameters ? static_cast<double>(layer.cost_per_rank) : 1.0;
    reserved += unit * static_cast<double>(layer.min_rank);
  }
  const double total = by_parameters ? budget.total() : std::floor(budget.total());
  if (reserved > total) {
    fail<ValueError>(where, "the budget of ", total, by_parameters ? " parameters" : " ranks", " is below the ",
                     reserved, " that the layers' min_rank require");
  }
  return total - reserved;
}

/// One rank a layer could receive beyond its minimum.
struct RankCandidate {
  double score;
  double cost;
  std::size_t layer;
  Index position;  // index into the layer's scores
};

/// Validates one layer and returns its effective maximum rank.
inline Index checked_max_rank(const char* where, std::size_t i, const LayerScores& layer) {
  const Index offered = static_cast<Index>(layer.scores.size());
  const std::string label = concat("layers[", i, "] ('", layer.name, "')");
  for (std::size_t j = 0; j < layer.scores.size(); ++j) {
    const double s = layer.scores[j];
    if (!std::isfinite(s) || s < 0) {
      fail<ValueError>(where, label, ".scores[", j, "] is ", s, ", expected a finite value >= 0");
    }
    if (j > 0 && s > layer.scores[j - 1]) {
      fail<ValueError>(where, label, ".scores[", j, "] = ", s, " exceeds scores[", j - 1, "] = ", layer.scores[j - 1],
                       ", expected scores in descending order");
    }
  }
  if (layer.max_rank < -1 || layer.max_rank > offered) {
    fail<ValueError>(where, label, ".max_rank is ", layer.max_rank, ", expected -1 or 0 <= max_rank <= scores.size() = ",
                     offered);
  }
  const Index max_rank = layer.max_rank == -1 ? offered : layer.max_rank;
  if (layer.min_rank < 0 || layer.min_rank > max_rank) {
    fail<ValueError>(where, label, ".min_rank is ", layer.min_rank, ", expected 0 <= min_rank <= max_rank = ", max_rank);
  }
  if (layer.cost_per_rank < 1) {
    fail<ValueError>(where, label, ".cost_per_rank is ", layer.cost_per_rank, ", expected >= 1");
  }
  return max_rank;
}

}  // namespace detail

/// Distributes `budget` over `layers` and returns each layer's rank, by name (every layer appears, possibly
/// with rank 0).
///
/// Every layer first receives its `min_rank`. The remaining budget then buys further ranks, each layer offering
/// its scores `scores[min_rank .. max_rank-1]` in order:
/// - `RankBudget::ranks(R)`: the \f$\lfloor R\rfloor - \sum_l \mathrm{min}_l\f$ highest offered scores over all
///   layers are taken (EVA's redistribution, Paischer et al., "One Initialization to Rule them All: Fine-tuning
///   via Explained Variance Adaptation", 2024). This maximizes the total score among all allocations of at most
///   \f$\lfloor R\rfloor\f$ ranks within the bounds.
/// - `RankBudget::parameters(P)`: rank \f$r_l\f$ costs \f$c_l r_l\f$ parameters (\f$c_l\f$ = cost_per_rank) and
///   the allocation should maximize \f$\sum_l \sum_{j<r_l} s_{l,j}\f$ subject to \f$\sum_l c_l r_l \le P\f$, a
///   knapsack problem. The offered ranks are visited by score per parameter \f$s_{l,j}/c_l\f$, highest first, and
///   each one that still fits is taken. Since a layer's costs are equal and its scores descend, this always
///   takes prefixes. Guarantee: the total score is at least \f$\mathrm{OPT} - \max s\f$ (the optimum minus the
///   largest offered score; the usual bound of greedy knapsack), and it is optimal when all layers have the same
///   cost per rank (then it reduces to the ranks rule with \f$\lfloor P/c\rfloor\f$ ranks).
///
/// When the offered ranks do not use up the budget, every offered rank is taken. Ties (equal score, or equal
/// score per parameter) go to the layer that comes first in `layers`, then to the lower position.
///
/// Errors (ValueError, nothing computed): a duplicate layer name; a score that is NaN, infinite, negative or
/// larger than the one before it; max_rank outside [-1, scores.size()]; min_rank outside [0, max_rank];
/// cost_per_rank < 1; a budget smaller than what the minimum ranks cost.
inline std::map<std::string, Index> allocate_ranks(const std::vector<LayerScores>& layers, const RankBudget& budget) {
  constexpr const char* where = "allocate_ranks";
  const bool by_parameters = budget.kind() == RankBudget::Kind::parameters;

  std::set<std::string> seen;
  std::vector<Index> max_ranks(layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (!seen.insert(layers[i].name).second) {
      detail::fail<ValueError>(where, "layers[", i, "] has the name '", layers[i].name,
                               "' of an earlier layer, expected distinct names");
    }
    max_ranks[i] = detail::checked_max_rank(where, i, layers[i]);
  }
  double left = detail::budget_after_minimum(where, layers, budget);

  std::vector<detail::RankCandidate> candidates;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const double cost = by_parameters ? static_cast<double>(layers[i].cost_per_rank) : 1.0;
    for (Index j = layers[i].min_rank; j < max_ranks[i]; ++j) {
      candidates.push_back({layers[i].scores[static_cast<std::size_t>(j)], cost, i, j});
    }
  }
  // Highest score per unit first; ties by layer order, then position (a strict total order: deterministic).
  std::sort(candidates.begin(), candidates.end(), [](const detail::RankCandidate& a, const detail::RankCandidate& b) {
    const double da = a.score / a.cost, db = b.score / b.cost;
    if (da != db) return da > db;
    if (a.layer != b.layer) return a.layer < b.layer;
    return a.position < b.position;
  });

  std::vector<Index> rank(layers.size());
  for (std::size_t i = 0; i < layers.size(); ++i) rank[i] = layers[i].min_rank;
  for (const auto& c : candidates) {
    if (c.cost > left) {
      if (!by_parameters) break;  // unit costs: nothing later fits either
      continue;
    }
    // Scores descend within a layer and its costs are equal, so its earlier positions were taken already.
    ++rank[c.layer];
    left -= c.cost;
  }

  std::map<std::string, Index> result;
  for (std::size_t i = 0; i < layers.size(); ++i) result.emplace(layers[i].name, rank[i]);
  return result;
}

}  // namespace lorakit
