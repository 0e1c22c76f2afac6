// lorakit::Eva: EVA initialization (Paischer et al., "One Initialization to Rule them All: Fine-tuning via
// Explained Variance Adaptation", 2024). A streaming SVD of each layer's input activations gives A (its top
// right-singular vectors) and the layers' explained variance redistributes the ranks; B starts at zero.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/streaming_svd.hpp"
#include "lorakit/rank/budget.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lorakit {

/// Hyper-parameters of EVA, named as in PEFT's `EvaConfig`.
struct EvaConfig {
  Index rank = 8;      ///< r: the average rank; the budget is r x (number of layers)
  double rho = 2.0;    ///< each layer may receive up to round(r rho) ranks (rho >= 1)
  double tau = 0.99;   ///< convergence threshold on |cos| between successive components (> 1: never converges)
  bool whiten = false; ///< divide row i of A by sqrt(singular value i)
  bool adjust_scaling_factors = true;  ///< alpha of a layer with rank r_l becomes alpha r_l / r (PEFT's rule)
  /// With rsLoRA, PEFT's rule above changes a layer's scaling by sqrt(r_l / r); true instead keeps the base
  /// scaling exactly (alpha sqrt(r_l / r)). Off by default, as in PEFT.
  bool keep_rslora_scaling = false;
};

/// The rows of x whose `keep` entry is true, in order: how a caller keeps padding and ignored-label tokens
/// (attention mask 0, label -100) out of EVA's statistics. Errors: keep.size() != x.rows() (ShapeError).
template <class Derived>
Matrix<typename Derived::Scalar> select_rows(const Eigen::MatrixBase<Derived>& x, const std::vector<bool>& keep) {
  if (static_cast<Index>(keep.size()) != x.rows()) {
    detail::fail<ShapeError>("select_rows", "keep has ", keep.size(), " entries, expected x.rows() = ", x.rows());
  }
  const auto kept = static_cast<Index>(std::count(keep.begin(), keep.end(), true));
  Matrix<typename Derived::Scalar> out(kept, x.cols());
  Index row = 0;
  for (Index i = 0; i < x.rows(); ++i) {
    if (keep[static_cast<std::size_t>(i)]) out.row(row++) = x.row(i);
  }
  return out;
}

/// EVA's data-driven initialization of LoRA adapters.
///
/// **Statistics.** Every layer (or every input group: layers that read the same input, such as q, k and v,
/// share one) keeps a centered `StreamingSvd` of its input rows with \f$k = \min(\mathrm{round}(r\rho),
/// \mathrm{in})\f$ components. `observe(name, X)` adds a batch X [tokens x in] (valid tokens only, see
/// `select_rows`).
///
/// **Ranks.** Layer l offers the explained-variance ratios \f$\sigma_j^2 / \sum_i \|x_i - \mu\|^2\f$ of its group's
/// k components, at most \f$\min(k, \mathrm{in}, \mathrm{out})\f$ of them; the \f$r \cdot L\f$ highest over all L
/// layers are kept (`allocate_ranks` with `RankBudget::ranks`), which gives each layer its rank \f$r_l\f$.
///
/// **Convergence** (as PEFT). After each update of a group, the similarity of component j is
/// \f$|\langle v_j^{new}, v_j^{old}\rangle| / (\|v_j^{new}\| \|v_j^{old}\|)\f$ (the sign of a singular vector
/// is arbitrary). The group has converged when it has had at least two updates and the first
/// \f$\max_{l \in \text{group}} r_l\f$ components (ranks as redistributed right after the update) all have a
/// similarity of at least tau. Convergence is final: later `observe` calls on a converged group are no-ops, as
/// PEFT stops feeding converged layers. A layer that the redistribution gives rank 0 converges at its group's
/// second update (nothing to compare).
///
/// **Adapters.** `make_adapters(base)` builds one `Lora` per layer with \f$r_l > 0\f$:
/// \f$A = V_{:r_l}\f$ (the top right-singular vectors, as rows; with `whiten`, row j divided by
/// \f$\sqrt{\sigma_j}\f$), B = 0, so the adapted model starts as the base model. With `adjust_scaling_factors`,
/// alpha becomes \f$\alpha\, r_l / r_{base}\f$ (rsLoRA: \f$\alpha \sqrt{r_l / r_{base}}\f$), so that every layer keeps
/// the scaling \f$s = \alpha / r_{base}\f$ of `base`.
///
/// **Workers.** Data-parallel workers that each observed their share combine with `merge`: the result is the
/// statistics of all their data (exactly, when the centered inputs have rank <= k).
template <class T>
class Eva {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;

  /// Errors (ValueError): rank < 1, rho < 1 or not finite, tau not finite.
  explicit Eva(const EvaConfig& config = {}) : config_(config) {
    constexpr const char* where = "Eva::Eva";
    if (config.rank < 1) detail::fail<ValueError>(where, "config.rank is ", config.rank, ", expected >= 1");
    if (!std::isfinite(config.rho) || config.rho < 1) {
      detail::fail<ValueError>(where, "config.rho is ", config.rho, ", expected a finite value >= 1");
    }

    detail::check_finite_scalar(where, "config.tau", config.tau);
  }

  const EvaConfig& config() const { return config_; }

  /// Registers a layer W [out x in]. Layers with the same non-empty `input_group` share one SVD (they must have
  /// the same in_features); an empty group means the layer's own name. Errors (nothing registered): in or out < 1,
  /// an empty or repeated name, a group whose in_features differ, a name that is both a layer of one group and the
  /// name of another group (ValueError); any layer added after the first observation (StateError).
  void add_layer(const std::string& name, Index in_features, Index out_features, const std::string& input_group = "") {
    constexpr const char* where = "Eva::add_layer";
    if (observed_) {
      detail::fail<StateError>(where, "layer '", name, "' added after observe, expected every layer to be added first");
    }
    if (name.empty()) detail::fail<ValueError>(where, "name is empty, expected a module path");
    if (in_features < 1) detail::fail<ValueError>(where, "in_features of '", name, "' is ", in_features, ", expected >= 1");
    if (out_features < 1) {
      detail::fail<ValueError>(where, "out_features of '", name, "' is ", out_features, ", expected >= 1");
    }
    if (layer_index_.count(name)) detail::fail<ValueError>(where, "layer '", name, "' was already added");
    const std::string key = input_group.empty() ? name : input_group;
    const auto group_named_like_layer = group_index_.find(name);
    if (group_named_like_layer != group_index_.end() && key != name) {
      detail::fail<ValueError>(where, "layer name '", name, "' is already the name of an input group, expected '", name,
                               "' to join it (input_group '' or '", name, "'), not '", key, "'");
    }
    const auto layer_named_like_group = layer_index_.find(key);
    if (layer_named_like_group != layer_index_.end() &&
        groups_[layers_[layer_named_like_group->second].group].key != key) {
      detail::fail<ValueError>(where, "input_group '", key, "' is the name of layer '", key,
                               "' of another group, expected a group name that is not another group's layer");
    }
    const auto found = group_index_.find(key);
    if (found != group_index_.end() && groups_[found->second].svd.features() != in_features) {
      detail::fail<ValueError>(where, "layer '", name, "' has in_features = ", in_features, " but its input group '", key,
                               "' has ", groups_[found->second].svd.features(), ", expected equal in_features");
    }
    std::size_t g;
    if (found == group_index_.end()) {
      const Index k = std::min<Index>(max_components(), in_features);
      groups_.push_back(Group{key, StreamingSvd<T>(in_features, k), {}, Vector<double>::Zero(k), 0, false});
      g = groups_.size() - 1;
      group_index_.emplace(key, g);
    } else {
      g = found->second;
    }
    layers_.push_back(Layer{name, in_features, out_features, g});
    layer_index_.emplace(name, layers_.size() - 1);
    groups_[g].layers.push_back(layers_.size() - 1);
  }

  /// Adds a batch of input rows [tokens x in] to the statistics of a layer's group (by layer or group name).
  /// A batch with no rows, or a batch for a group that has converged, changes nothing.
  /// Errors (nothing changed): an unknown name (ValueError), a batch of the wrong width (ShapeError),
  /// NaN or Inf in the batch (ValueError).
  void observe(const std::string& layer_or_group, const ConstMatrixRef<T>& inputs) {
    constexpr const char* where = "Eva::observe";
    Group& group = groups_[group_of(where, layer_or_group)];
    detail::check_cols(where, "inputs", inputs.cols(), group.svd.features(), "in_features");
    detail::check_finite(where, "inputs", inputs);
    if (inputs.rows() == 0) return;  // an empty batch changes nothing
    observed_ = true;
    if (group.converged) return;

    StreamingSvd<T> next = group.svd;
    next.update(inputs);
    Vector<double> similarity = component_similarity(next.components(), group.svd.components());
    const auto index = static_cast<std::size_t>(&group - groups_.data());
    const bool converged = has_converged(group, group.updates + 1, similarity, distribute(index, &next));

    group.svd = std::move(next);
    group.similarity = std::move(similarity);
    ++group.updates;
    group.converged = converged;
  }

  /// True when every layer has converged (vacuously, with no layers).
  bool converged() const {
    return std::all_of(groups_.begin(), groups_.end(), [](const Group& g) { return g.converged; });
  }

  /// Whether the group of one layer (or the group of that name) has converged.
  bool converged(const std::string& layer_or_group) const {
    return groups_[group_of("Eva::converged", layer_or_group)].converged;
  }

  /// The share of layers that have converged, in [0, 1] (1 with no layers): for a progress bar.
  double progress() const {
    if (layers_.empty()) return 1.0;
    Index done = 0;
    for (const auto& layer : layers_) done += groups_[layer.group].converged ? 1 : 0;
    return static_cast<double>(done) / static_cast<double>(layers_.size());
  }

  /// The current redistribution: each layer's rank (0 for the layers left out).
  std::map<std::string, Index> ranks() const { return distribute(groups_.size(), nullptr); }

  /// One Lora per layer with rank > 0, in the order the layers were added (A = top components, B = 0); layers
  /// with rank 0 are left out (`ranks()` names them). Errors: a layer whose group has seen no inputs
  /// (StateError); base.rank < 1 (ValueError); with `whiten`, a selected component with a zero singular value
  /// (ValueError); and what `Lora` rejects in `base` (alpha, dropout).
  AdapterSet<Lora<T>> make_adapters(const LoraConfig& base) const {
    constexpr const char* where = "Eva::make_adapters";
    if (base.rank < 1) detail::fail<ValueError>(where, "base.rank is ", base.rank, ", expected >= 1");
    for (const auto& layer : layers_) {
      if (groups_[layer.group].svd.samples_seen() == 0) {
        detail::fail<StateError>(where, "layer '", layer.name, "' has seen no inputs, expected observe before make_adapters");
      }
    }
    if (layers_.empty()) detail::fail<StateError>(where, "no layers were added, expected add_layer and observe first");
    const std::map<std::string, Index> rank = ranks();
    AdapterSet<Lora<T>> set;
    for (const auto& layer : layers_) {
      const Index r = rank.at(layer.name);
      if (r == 0) continue;  // left out: ranks() names it with rank 0
      const StreamingSvd<T>& svd = groups_[layer.group].svd;
      Matrix<T> A = svd.components().topRows(r);
      if (config_.whiten) {
        for (Index j = 0; j < r; ++j) {
          const double sigma = static_cast<double>(svd.singular_values()(j));
          if (!(sigma > 0)) {
            detail::fail<ValueError>(where, "whiten: component ", j, " of layer '", layer.name,
                                     "' has singular value ", sigma, ", expected > 0");
          }
          A.row(j) /= static_cast<T>(std::sqrt(sigma));
        }
      }
      LoraConfig config = base;
      config.rank = r;
      if (config_.adjust_scaling_factors) config.alpha = adjusted_alpha(base, r);
      set.add(layer.name, Lora<T>::from_factors(std::move(A), Matrix<T>::Zero(layer.out_features, r), config));
    }
    return set;
  }

  /// Adds the statistics of another worker that registered the same layers (names, shapes and groups, in the
  /// same order) with the same config. Every group's SVD absorbs the other's; the convergence check then runs as
  /// after an update (a group stays converged when it had converged in both workers; a group this worker never
  /// fed takes the other's state as it is). Errors (nothing changed): different layers or config (ValueError).
  void merge(const Eva& other) {
    constexpr const char* where = "Eva::merge";
    if (&other == this) detail::fail<ValueError>(where, "other is this object, expected another worker's Eva");
    if (other.config_.rank != config_.rank || other.config_.rho != config_.rho) {
      detail::fail<ValueError>(where, "other has rank ", other.config_.rank, " and rho ", other.config_.rho,
                               ", expected rank ", config_.rank, " and rho ", config_.rho);
    }
    if (other.layers_.size() != layers_.size()) {
      detail::fail<ValueError>(where, "other has ", other.layers_.size(), " layers, expected ", layers_.size());
    }
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const Layer &a = layers_[i], &b = other.layers_[i];
      if (a.name != b.name || a.in_features != b.in_features || a.out_features != b.out_features ||
          groups_[a.group].key != other.groups_[b.group].key) {
        detail::fail<ValueError>(where, "other's layer ", i, " is '", b.name, "' [", b.out_features, " x ",
                                 b.in_features, "] in group '", other.groups_[b.group].key, "', expected '", a.name,
                                 "' [", a.out_features, " x ", a.in_features, "] in group '", groups_[a.group].key, "'");
      }
    }
    std::vector<Group> merged = groups_;
    for (std::size_t g = 0; g < merged.size(); ++g) {
      Group& mine = merged[g];
      const Group& theirs = other.groups_[g];
      if (theirs.svd.samples_seen() == 0) continue;
      if (mine.svd.samples_seen() == 0) {
        mine = theirs;
        continue;
      }
      const Matrix<T> before = mine.svd.components();
      mine.svd.merge(theirs.svd);
      mine.updates += theirs.updates;
      mine.similarity = component_similarity(mine.svd.components(), before);
    }
    // Convergence with the ranks of the merged statistics.
    std::vector<Group> saved = std::move(groups_);
    groups_ = std::move(merged);
    std::map<std::string, Index> rank;
    try {
      rank = ranks();
    } catch (...) {
      groups_ = std::move(saved);
      throw;
    }
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      Group& group = groups_[g];
      if (saved[g].svd.samples_seen() == 0 || other.groups_[g].svd.samples_seen() == 0) continue;
      const bool both = saved[g].converged && other.groups_[g].converged;
      group.converged = both || has_converged(group, group.updates, group.similarity, rank);
    }
    observed_ = observed_ || other.observed_;
  }

  /// A layer as `add_layer` registered it (`input_group`: its group's name, its own name when alone).
  struct LayerState {
    std::string name;
    Index in_features = 0;
    Index out_features = 0;
    std::string input_group;
  };
  /// An input group's statistics and convergence bookkeeping.
  struct GroupState {
    std::string key;
    StreamingSvdState<T> svd;
    Vector<double> similarity;  ///< [k]: |cos| of each component with its value before the last update
    Index updates = 0;
    bool converged = false;
  };
  /// Everything an Eva holds, as plain values: what a checkpoint file or another process receives (io/state.hpp).
  struct State {
    EvaConfig config;
    std::vector<LayerState> layers;  ///< in the order they were added
    std::vector<GroupState> groups;  ///< in the order they were created (that of their first layer)
    bool observed = false;
  };

  /// The state, copied (exact: no arithmetic).
  State state() const {
    State out{config_, {}, {}, observed_};
    for (const auto& layer : layers_) {
      out.layers.push_back({layer.name, layer.in_features, layer.out_features, groups_[layer.group].key});
    }
    for (const auto& g : groups_) out.groups.push_back({g.key, g.svd.state(), g.similarity, g.updates, g.converged});
    return out;
  }

  /// The Eva whose `state()` is `state`, bit for bit: the layers are added again (with add_layer's checks), then
  /// every group takes its statistics. Errors: what `Eva::Eva`, `add_layer` and `StreamingSvd::from_state` reject;
  /// groups that are not those the layers make, in that order, or statistics of another size (ValueError).
  static Eva from_state(State state) {
    constexpr const char* where = "Eva::from_state";
    Eva eva(state.config);
    for (const auto& layer : state.layers) {
      eva.add_layer(layer.name, layer.in_features, layer.out_features, layer.input_group);
    }
    if (state.groups.size() != eva.groups_.size()) {
      detail::fail<ValueError>(where, "state has ", state.groups.size(), " groups, its layers make ",
                               eva.groups_.size());
    }
    for (std::size_t g = 0; g < eva.groups_.size(); ++g) {
      Group& group = eva.groups_[g];
      GroupState& saved = state.groups[g];
      const Index k = group.svd.num_components();
      if (saved.key != group.key || saved.svd.features != group.svd.features() || saved.svd.components != k) {
        detail::fail<ValueError>(where, "state's group ", g, " is '", saved.key, "' with ", saved.svd.components,
                                 " components of ", saved.svd.features, " features, expected '", group.key, "' with ",
                                 k, " of ", group.svd.features());
      }
      if (saved.similarity.size() != k || saved.updates < 0) {
        detail::fail<ValueError>(where, "state's group '", saved.key, "' has ", saved.similarity.size(),
                                 " similarities and ", saved.updates, " updates, expected ", k, " and >= 0");
      }
      group.svd = StreamingSvd<T>::from_state(std::move(saved.svd));
      group.similarity = std::move(saved.similarity);
      group.updates = saved.updates;
      group.converged = saved.converged;
    }
    eva.observed_ = state.observed;
    return eva;
  }

  /// The components of a layer's group [k x in], orthonormal rows by descending singular value.
  const Matrix<T>& components(const std::string& layer_or_group) const {
    return groups_[group_of("Eva::components", layer_or_group)].svd.components();
  }
  /// The singular values of a layer's group [k].
  const Vector<T>& singular_values(const std::string& layer_or_group) const {
    return groups_[group_of("Eva::singular_values", layer_or_group)].svd.singular_values();
  }
  /// The explained-variance ratios of a layer's group [k]: the scores of the rank redistribution.
  Vector<T> explained_variance_ratio(const std::string& layer_or_group) const {
    return groups_[group_of("Eva::explained_variance_ratio", layer_or_group)].svd.explained_variance_ratio();
  }
  /// Input rows seen by a layer's group.
  Index samples_seen(const std::string& layer_or_group) const {
    return groups_[group_of("Eva::samples_seen", layer_or_group)].svd.samples_seen();
  }
  /// Updates (batches with rows, merges) of a layer's group so far.
  Index updates(const std::string& layer_or_group) const {
    return groups_[group_of("Eva::updates", layer_or_group)].updates;
  }

  /// Layer names in the order they were added.
  std::vector<std::string> layer_names() const {
    std::vector<std::string> names;
    for (const auto& layer : layers_) names.push_back(layer.name);
    return names;
  }

  /// Bytes of the statistics kept between batches (components, singular values, means, similarities): it depends
  /// on the layers and on k, never on the number of batches seen.
  std::size_t state_bytes() const {
    std::size_t bytes = 0;
    for (const auto& g : groups_) {
      bytes += sizeof(T) * static_cast<std::size_t>(g.svd.components().size() + g.svd.singular_values().size());
      bytes += sizeof(double) * static_cast<std::size_t>(g.svd.mean().size() + g.similarity.size());
    }
    return bytes;
  }

 private:
  struct Layer {
    std::string name;
    Index in_features;
    Index out_features;
    std::size_t group;
  };

  struct Group {
    std::string key;
    StreamingSvd<T> svd;
    std::vector<std::size_t> layers;
    Vector<double> similarity;  // |cos| of each component with its value before the last update
    Index updates;
    bool converged;
  };

  /// |cos| between each component and its value before an update (0 for a zero row).
  static Vector<double> component_similarity(const Matrix<T>& after, const Matrix<T>& before) {
    Vector<double> similarity(after.rows());
    for (Index j = 0; j < after.rows(); ++j) {
      const auto a = after.row(j).template cast<double>();
      const auto b = before.row(j).template cast<double>();
      const double norms = a.norm() * b.norm();
      similarity(j) = norms > 0 ? std::abs(a.dot(b)) / norms : 0.0;
    }
    return similarity;
  }

  /// PEFT's convergence test: at least two updates, and every component a layer of the group uses (the largest
  /// rank among its layers, under `ranks`) has similarity >= tau.
  bool has_converged(const Group& group, Index updates, const Vector<double>& similarity,
                     const std::map<std::string, Index>& ranks) const {
    Index checked = 0;
    for (std::size_t l : group.layers) checked = std::max(checked, ranks.at(layers_[l].name));
    return updates >= 2 && (similarity.head(checked).array() >= config_.tau).all();
  }

  /// Alpha of a layer that receives rank r instead of base.rank: PEFT's alpha r / base.rank, or, with
  /// `keep_rslora_scaling` under rsLoRA, the alpha that keeps the base scaling (alpha sqrt(r / base.rank)).
  double adjusted_alpha(const LoraConfig& base, Index r) const {
    if (base.use_rslora && config_.keep_rslora_scaling) {
      return alpha_for_scaling(lora_scaling(base.alpha, base.rank, true), r, true);
    }
    return base.alpha * static_cast<double>(r) / static_cast<double>(base.rank);
  }

  /// round(rank rho), at least 1; a huge rank or rho (which PEFT caps at the largest weight dimension) is
  /// clamped before rounding, and a group then keeps min(this, in_features) components.
  Index max_components() const {
    const double wanted = std::min(static_cast<double>(config_.rank) * config_.rho, 1e15);
    return std::max<Index>(1, static_cast<Index>(std::llround(wanted)));
  }

  std::size_t group_of(const char* where, const std::string& key) const {
    const auto group = group_index_.find(key);
    if (group != group_index_.end()) return group->second;
    const auto layer = layer_index_.find(key);
    if (layer != layer_index_.end()) return layers_[layer->second].group;
    detail::fail<ValueError>(where, "no layer or input group named '", key, "', expected one added with add_layer");
  }

  /// The rank redistribution, with group `replaced` read from `replacement` instead of its current SVD.
  std::map<std::string, Index> distribute(std::size_t replaced, const StreamingSvd<T>* replacement) const {
    std::vector<Vector<T>> ratios(groups_.size());
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      ratios[g] = (g == replaced ? *replacement : groups_[g].svd).explained_variance_ratio();
    }
    std::vector<LayerScores> scores;
    scores.reserve(layers_.size());
    for (const auto& layer : layers_) {
      const Vector<T>& r = ratios[layer.group];
      LayerScores s{layer.name, descending_scores(r), std::min<Index>(r.size(), layer.out_features), 0,
                    layer.in_features + layer.out_features};
      scores.push_back(std::move(s));
    }
    const double budget = static_cast<double>(config_.rank) * static_cast<double>(layers_.size());
    return allocate_ranks(scores, RankBudget::ranks(budget));
  }

  EvaConfig config_;
  std::vector<Layer> layers_;
  std::vector<Group> groups_;
  std::map<std::string, std::size_t> layer_index_;
  std::map<std::string, std::size_t> group_index_;
  bool observed_ = false;
};

}  // namespace lorakit
