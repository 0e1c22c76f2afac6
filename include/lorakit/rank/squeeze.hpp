// LoRA-Squeeze: compress a trained LoRA adapter to a lower rank by the SVD of its update, post hoc
// (`squeeze`), over a whole adapter set under a budget (`squeeze(set, budget)`), or in stages during
// training (`RankAnnealer`, following a `RankSchedule`).
//
// Vulić et al., "LoRA-Squeeze", arXiv 2602.10993: it is better to learn a higher-rank adapter and compress it
// than to learn the low rank directly.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/product_svd.hpp"
#include "lorakit/kernel/randomized_svd.hpp"
#include "lorakit/rank/budget.hpp"
#include "lorakit/rank/rank_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lorakit {

/// How a squeezed adapter splits its update between alpha and its factors.
struct SqueezeOptions {
  /// true: the new adapter keeps the source's scaling s (its alpha becomes s k, or s sqrt(k) with rsLoRA),
  /// so a learning rate tuned for the source still fits it: under Adam the scaling acts as a learning-rate
  /// multiplier. false: it keeps the source's alpha, its scaling becomes alpha / k (alpha / sqrt(k)), and the
  /// factors absorb the change. The update is the same either way (docs/squeeze.md, "Which scaling after a cut").
  bool keep_scaling = true;
};

namespace detail {

/// The new adapter's config: `source` with rank k and, with keep_scaling, alpha = s k (s sqrt(k) with rsLoRA).
inline LoraConfig squeezed_config(const LoraConfig& source, double scaling, Index k, const SqueezeOptions& options) {
  LoraConfig config = source;
  config.rank = k;
  if (options.keep_scaling) config.alpha = alpha_for_scaling(scaling, k, source.use_rslora);
  return config;
}

/// A Lora of rank k whose update is \f$U_k \Sigma_k V_k^\top\f$, from the leading k triplets of an SVD:
/// with s the new scaling (from `config`), \f$B = \mathrm{sign}(s)\, U_k \Sigma_k^{1/2} / \sqrt{|s|}\f$ and
/// \f$A = \Sigma_k^{1/2} V_k^\top / \sqrt{|s|}\f$, so \f$s B A = U_k \Sigma_k V_k^\top\f$ and both factors carry
/// the same singular values \f$\sqrt{\sigma_j / |s|}\f$.
template <class T>
Lora<T> lora_from_svd(const char* where, const Svd<T>& svd, LoraConfig config) {
  const Index k = config.rank;
  const double s = lora_scaling(config.alpha, k, config.use_rslora);
  if (!(s != 0) || !std::isfinite(s)) {
    fail<ValueError>(where, "the new scaling alpha / ", config.use_rslora ? "sqrt(rank)" : "rank", " is ", s,
                     " (alpha = ", config.alpha, "), expected a finite non-zero value");
  }
  const Vector<T> root = (svd.S.head(k).cwiseMax(T(0)) / static_cast<T>(std::abs(s))).cwiseSqrt();
  Matrix<T> B = svd.U.leftCols(k) * root.asDiagonal();
  if (s < 0) B = -B;
  Matrix<T> A = root.asDiagonal() * svd.V.leftCols(k).transpose();
  return Lora<T>::from_factors(std::move(A), std::move(B), config);
}

/// The SVD of a Lora's update s B A, via the factors (never the dense [out x in] matrix).
template <class T>
Svd<T> update_svd(const Lora<T>& adapter, Index k) {
  const Matrix<T> scaled_B = adapter.scaling() * adapter.B();
  return product_svd<T>(scaled_B, adapter.A(), k);
}

inline void check_target_rank(const char* where, Index target_rank, Index source_rank) {
  if (target_rank < 1 || target_rank > source_rank) {
    fail<ValueError>(where, "target_rank is ", target_rank, ", expected 1 <= target_rank <= source rank = ",
                     source_rank);
  }
}

/// The adapter `source` squeezed to rank k from its (at least k-term) update SVD, in the source's mode.
template <class T>
Lora<T> squeezed_from_svd(const char* where, const Lora<T>& source, const Svd<T>& svd, Index k,
                          const SqueezeOptions& options) {
  const LoraConfig config =
      squeezed_config(source.config(), static_cast<double>(source.scaling()), k, options);
  Lora<T> squeezed = lora_from_svd(where, svd, config);
  squeezed.set_training(source.training());
  return squeezed;
}

/// Throws ValueError unless `optimizer` holds every parameter of the adapter `module` (checked before anything
/// is changed, so a failing call leaves both the set and the optimizer as they were).
template <class T>
void check_optimizer_holds(const char* where, const ParameterTracker<T>& optimizer, const std::string& module,
                           Lora<T>& adapter) {
  for (const auto& parameter : adapter.parameters()) {
    const std::string name = module + "." + parameter.name;
    if (!optimizer.tracks(name)) {
      fail<ValueError>(where, "the optimizer has no parameter named '", name,
                       "', expected it to be built over the set's parameters()");
    }
  }
}

/// Replaces the adapters of `set` named in `fresh` and, when `optimizer` is given, rebinds their parameters in it
/// with fresh state (`ParameterTracker::restart`). Assumes check_optimizer_holds passed for each of them.
template <class T>
void install(AdapterSet<Lora<T>>& set, std::vector<std::pair<std::string, Lora<T>>>& fresh,
             ParameterTracker<T>* optimizer) {
  for (auto& [module, adapter] : fresh) {
    Lora<T>& slot = set.at(module);
    slot = std::move(adapter);
    if (optimizer == nullptr) continue;
    for (auto& parameter : slot.parameters()) {
      const std::string name = module + "." + parameter.name;
      optimizer->restart(name, Parameter<T>{name, parameter.value, parameter.grad});
    }
  }
}

}  // namespace detail

/// The singular values of an adapter's update \f$\Delta W = s B A\f$, descending (r of them), computed from the
/// factors with `product_svd` (QR of both factors and an r x r core SVD).
template <class T>
Vector<T> update_singular_values(const Lora<T>& adapter) {
  return detail::update_svd(adapter, adapter.rank()).S;
}

/// LoRA-Squeeze, post hoc: the rank-k adapter whose update is the best rank-k approximation of the source's
/// (Eckart–Young, in the Frobenius and spectral norms):
/// \f[ s B A = U \Sigma V^\top \;\Longrightarrow\; \Delta W_k = U_k \Sigma_k V_k^\top,\quad
///     B_k = U_k \Sigma_k^{1/2} / \sqrt{s_k},\quad A_k = \Sigma_k^{1/2} V_k^\top / \sqrt{s_k}, \f]
/// computed with `product_svd` on (s B, A), O((in + out) r^2) work, without forming the dense update.
/// The singular values are split as \f$\sqrt{\Sigma}\f$ over both factors.
/// The new scaling \f$s_k\f$: with `keep_scaling` (default) \f$s_k = s\f$, so alpha becomes \f$s k\f$
/// (\f$s \sqrt{k}\f$ with rsLoRA); otherwise alpha is kept and \f$s_k = \alpha/k\f$ (\f$\alpha/\sqrt{k}\f$).
/// (A negative scaling moves its sign into B.) Every other setting (dropout, seed, rsLoRA, training mode) is
/// kept; gradients start at zero.
///
/// Errors (ValueError): target_rank < 1 or above the source's rank; a zero or non-finite new scaling.
template <class T>
Lora<T> squeeze(const Lora<T>& adapter, Index target_rank, const SqueezeOptions& options = {}) {
  constexpr const char* where = "squeeze";
  detail::check_target_rank(where, target_rank, adapter.rank());
  return detail::squeezed_from_svd(where, adapter, detail::update_svd(adapter, target_rank), target_rank, options);
}

/// The smallest k whose leading singular values hold a fraction `energy` of the update's energy:
/// \f$\min\{k \ge 1 : \sum_{j \le k} \sigma_j^2 \ge \text{energy} \cdot \sum_j \sigma_j^2\}\f$, with the sums in
/// double and a relative slack of r ε(double) on the right, so rounding in the sums does not add a rank.
/// A zero update gives 1 (an adapter's smallest rank).
///
/// Errors (ValueError): energy outside (0, 1].
template <class T>
Index rank_for_energy(const Lora<T>& adapter, double energy) {
  if (!(energy > 0 && energy <= 1)) {
    detail::fail<ValueError>("rank_for_energy", "energy is ", energy, ", expected a value in (0, 1]");
  }
  const Vector<double> squares = update_singular_values(adapter).template cast<double>().array().square();
  const double total = squares.sum();
  const double slack = static_cast<double>(squares.size()) * std::numeric_limits<double>::epsilon() * total;
  double held = 0;
  for (Index k = 0; k < squares.size(); ++k) {
    held += squares(k);
    if (held >= energy * total - slack) return k + 1;
  }
  return squares.size();
}

/// A rank-k LoRA adapter for a dense update dW [out x in]: the best rank-k approximation found by
/// `randomized_svd` (Halko, Martinsson, Tropp 2011), split as in `squeeze`. `config` gives alpha,
/// rsLoRA, dropout and seed; its rank is replaced by k, so the scaling is alpha / k (alpha / sqrt(k)).
///
/// Errors: k outside [1, min(out, in)] (ValueError); a non-finite dW (ValueError); zero or non-finite scaling.
template <class T>
Lora<T> squeeze_dense(const ConstMatrixRef<T>& dW, Index k, const LoraConfig& config,
                      const RsvdOptions& rsvd = {}) {
  constexpr const char* where = "squeeze_dense";
  const Index limit = std::min(dW.rows(), dW.cols());
  if (k < 1 || k > limit) {
    detail::fail<ValueError>(where, "k is ", k, ", expected 1 <= k <= min(rows, cols) of dW = ", limit);
  }
  detail::check_finite(where, "dW", dW);
  LoraConfig target = config;
  target.rank = k;
  return detail::lora_from_svd(where, randomized_svd<T>(dW, k, rsvd), target);
}

namespace detail {

template <class T>
std::map<std::string, Index> squeeze_set(AdapterSet<Lora<T>>& set, const RankBudget& budget, ParameterTracker<T>* optimizer,
                                         const SqueezeOptions& options) {
  constexpr const char* where = "squeeze(AdapterSet)";
  std::vector<LayerScores> layers;
  std::vector<Svd<T>> svds;
  for (auto& [module, adapter] : set) {
    svds.push_back(update_svd(adapter, adapter.rank()));
    Vector<double> fractions = svds.back().S.template cast<double>().array().square();
    const double total = fractions.sum();
    if (total > 0) fractions /= total;  // each rank's share of the update's energy (all 0 for a zero update)
    LayerScores layer;
    layer.name = module;
    layer.scores = descending_scores(fractions);
    layer.min_rank = 1;
    layer.cost_per_rank = adapter.in_features() + adapter.out_features();
    layers.push_back(std::move(layer));
  }
  (void)budget_after_minimum(where, layers, budget);  // one rank per layer must fit
  std::map<std::string, Index> ranks = allocate_ranks(layers, budget);

  std::vector<std::pair<std::string, Lora<T>>> fresh;
  std::size_t i = 0;
  for (auto& [module, adapter] : set) {
    const Index k = ranks.at(module);
    if (k < adapter.rank()) {
      if (optimizer != nullptr) check_optimizer_holds(where, *optimizer, module, adapter);
      fresh.emplace_back(module, squeezed_from_svd(where, adapter, svds[i], k, options));
    }
    ++i;
  }
  install(set, fresh, optimizer);
  return ranks;
}

}  // namespace detail

/// LoRA-Squeeze over a whole adapter set under a total budget: every layer's update is decomposed (one
/// `product_svd` each), layer l offers the scores \f$\sigma_{l,j}^2 / \sum_i \sigma_{l,i}^2\f$ (the fraction of its
/// energy that its j-th rank holds; 0 for a zero update) with min_rank 1, max_rank its current rank and
/// cost_per_rank in + out, and `allocate_ranks` distributes the budget; each layer is then squeezed to its rank
/// (layers given their current rank are left untouched). Returns every layer's new rank.
///
/// Guarantees: every layer keeps 1 <= rank <= its current rank; the total respects the budget
/// (\f$\sum_l r_l \le \lfloor R\rfloor\f$ for `RankBudget::ranks(R)`, \f$\sum_l r_l (in_l + out_l) \le P\f$ for
/// `RankBudget::parameters(P)`); with a ranks budget the allocation maximizes the summed energy fractions kept,
/// with a parameters budget it is `allocate_ranks`'s greedy knapsack. Layers may end at different ranks.
///
/// Errors (ValueError, the set unchanged): a budget below one rank per layer; those of `squeeze`.
template <class T>
std::map<std::string, Index> squeeze(AdapterSet<Lora<T>>& set, const RankBudget& budget,
                                     const SqueezeOptions& options = {}) {
  return detail::squeeze_set<T>(set, budget, nullptr, options);
}

/// As `squeeze(set, budget, options)`, and rebinds every squeezed adapter's parameters in `optimizer` (built over
/// `set.parameters()`) with fresh moments. Errors: also a squeezed parameter the optimizer does not hold
/// (checked first; nothing changes then).
template <class T>
std::map<std::string, Index> squeeze(AdapterSet<Lora<T>>& set, const RankBudget& budget, ParameterTracker<T>& optimizer,
                                     const SqueezeOptions& options = {}) {
  return detail::squeeze_set<T>(set, budget, &optimizer, options);
}

/// What `RankAnnealer::on_step` did at a stage boundary.
struct RankChange {
  long long step;                      ///< the step before which the squeeze happened
  Index stage;                         ///< the schedule's stage that starts (or is in force) at `step`
  std::map<std::string, Index> ranks;  ///< every adapter that was squeezed, with its new rank
};

/// In-tuning rank annealing (LoRA-Squeeze): follows a `RankSchedule` during training. Call `on_step(step, set,
/// optimizer)` once per step, before the step's forward pass; whenever an adapter's rank is above the schedule's
/// rank for that step (at a stage boundary, or on the first call when the adapters start above the source rank),
/// every such adapter is squeezed to the schedule's rank and its parameters are rebound in the optimizer with
/// fresh state (`ParameterTracker::restart`, AdamW's `reset_state(name, parameter)`), so the optimizer never
/// holds a view of a freed tensor. Other adapters, and their optimizer state, are untouched.
///
/// The decision depends only on the step and the adapters' current ranks, so a loop that skips steps or resumes
/// from a checkpoint lands on the right rank. Cont-Squeeze (squeeze once, then train at the target) is the
/// schedule `RankSchedule::cont_squeeze(source, target, squeeze_step)`.
///
/// ```
/// RankAnnealer annealer(RankSchedule::geometric(32, 8, total_steps));
/// AdamW<float> optimizer(set.parameters(), config);
/// for (long long step = 0; step < total_steps; ++step) {
///   if (auto change = annealer.on_step(step, set, optimizer)) log(change->ranks);
///   forward, backward, optimizer.step() ...
/// }
/// ```
class RankAnnealer {
 public:
  explicit RankAnnealer(RankSchedule schedule, const SqueezeOptions& options = {})
      : schedule_(std::move(schedule)), options_(options) {}

  const RankSchedule& schedule() const { return schedule_; }
  const SqueezeOptions& options() const { return options_; }

  /// Squeezes every adapter above `schedule().rank_at(step)` and rebinds its parameters in `optimizer` with fresh
  /// state. Returns what changed, or nothing. Errors (ValueError; the set and the optimizer unchanged): the
  /// optimizer lacks a parameter of an adapter to squeeze; those of `squeeze`.
  template <class T>
  std::optional<RankChange> on_step(long long step, AdapterSet<Lora<T>>& set, ParameterTracker<T>& optimizer) const {
    return apply<T>(step, set, &optimizer);
  }

  /// The same without an optimizer (the caller rebinds its own).
  template <class T>
  std::optional<RankChange> on_step(long long step, AdapterSet<Lora<T>>& set) const {
    return apply<T>(step, set, nullptr);
  }

 private:
  template <class T>
  std::optional<RankChange> apply(long long step, AdapterSet<Lora<T>>& set, ParameterTracker<T>* optimizer) const {
    constexpr const char* where = "RankAnnealer::on_step";
    const Index rank = schedule_.rank_at(step);
    std::vector<std::pair<std::string, Lora<T>>> fresh;
    RankChange change{step, schedule_.stage_at(step), {}};
    for (auto& [module, adapter] : set) {
      if (adapter.rank() <= rank) continue;
      if (optimizer != nullptr) detail::check_optimizer_holds(where, *optimizer, module, adapter);
      fresh.emplace_back(module, detail::squeezed_from_svd(where, adapter, detail::update_svd(adapter, rank), rank,
                                                           options_));
      change.ranks.emplace(module, rank);
    }
    if (fresh.empty()) return std::nullopt;
    detail::install(set, fresh, optimizer);
    return change;
  }

  RankSchedule schedule_;
  SqueezeOptions options_;
};

}  // namespace lorakit
