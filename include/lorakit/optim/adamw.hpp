// lorakit::AdamW: PyTorch's AdamW over the flat parameters of an adapter set.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/kernel/simd.hpp"

#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lorakit {

/// Hyper-parameters, with PyTorch's defaults.
struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

/// The scalars of step t (counted from 1) of AdamW's elementwise update (`adamw_update`) under `config`, in double:
/// \f$1 - \eta\lambda\f$, \f$\beta_1\f$, \f$\beta_2\f$, \f$\eta / (1 - \beta_1^t)\f$,
/// \f$1 / \sqrt{1 - \beta_2^t}\f$ and \f$\epsilon\f$. `AdamW` passes the config of the parameter's group (its lr
/// multiplier and weight decay applied).
inline AdamWStepCoefficients adamw_step_coefficients(const AdamWConfig& config, long long t) {
  const double steps = static_cast<double>(t);
  AdamWStepCoefficients c;
  c.decay = 1.0 - config.lr * config.weight_decay;
  c.beta1 = config.beta1;
  c.beta2 = config.beta2;
  c.step_size = config.lr / (1.0 - std::pow(config.beta1, steps));
  c.inverse_sqrt_correction2 = 1.0 / std::sqrt(1.0 - std::pow(config.beta2, steps));
  c.eps = config.eps;
  return c;
}

/// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019), step for step as
/// `torch.optim.AdamW`: for each parameter p with gradient g at its own step t,
/// \f[ p \leftarrow p (1 - \eta\lambda),\quad m \leftarrow \beta_1 m + (1-\beta_1) g,\quad
///     v \leftarrow \beta_2 v + (1-\beta_2) g^2, \f]
/// \f[ p \leftarrow p - \frac{\eta}{1-\beta_1^t}\, \frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}. \f]
/// The moments are kept per parameter name, so the state of one parameter can be reset when its shape changes
/// (a rank change) while the others keep theirs.
template <class T>
class AdamW : public ParameterTracker<T> {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  AdamW(std::vector<Parameter<T>> parameters, const AdamWConfig& config = {}) : config_(config) {
    validate(config);
    rebind(std::move(parameters));
  }

  const AdamWConfig& config() const { return config_; }
  /// Changes the learning rate (schedules).
  void set_lr(double lr) {
    if (!(lr >= 0) || !std::isfinite(lr)) detail::fail<ValueError>("AdamW::set_lr", "lr is ", lr, ", expected >= 0");
    config_.lr = lr;
  }

  /// One update of every parameter from its current gradient, or none at all: a step whose gradients hold a NaN
  /// or an Inf anywhere is skipped (no parameter, moment or step count changes), as mixed-precision trainers skip
  /// the steps whose scaled gradients overflowed (PyTorch's GradScaler). Returns whether the step was taken;
  /// `skipped_steps()` counts the skips, `last_non_finite()` names the first offending parameter.
  bool step() {
    for (const auto& slot : slots_) {
      if (!detail::all_finite(Eigen::Map<const Vector<T>>(slot.grad_data, slot.size))) {
        ++skipped_steps_;
        last_non_finite_ = slot.name;
        return false;
      }
    }
    for (auto& slot : slots_) update(slot);
    return true;
  }

  /// Steps skipped because a gradient was not finite (see `step`).
  long long skipped_steps() const { return skipped_steps_; }
  /// The parameter whose gradient made the last skipped step skip ("" if none was skipped).
  const std::string& last_non_finite() const { return last_non_finite_; }

  /// Sets every gradient to zero.
  void zero_grad() {
    for (auto& slot : slots_) slot.grad().setZero();
  }

  /// Forgets the moments and the step count of `name` (same tensor, same size).
  void reset_state(const std::string& name) {
    Slot& slot = slots_[position("AdamW::reset_state", name)];
    clear(slot);
  }

  /// Rebinds `name` to a new view (for a tensor that was reallocated, e.g. after a rank change) and forgets its state.
  void reset_state(const std::string& name, Parameter<T> parameter) {
    Slot& slot = slots_[position("AdamW::reset_state", name)];
    if (parameter.name != name) {
      detail::fail<ValueError>("AdamW::reset_state", "parameter is named '", parameter.name, "', expected '", name, "'");
    }
    check_views("AdamW::reset_state", parameter);
    slot.bind(parameter);
    clear(slot);
  }

  /// Whether `name` is one of the optimizer's parameters (ParameterTracker).
  bool tracks(const std::string& name) const override { return index_.count(name) != 0; }
  /// reset_state(name, parameter) (ParameterTracker: what a rank change calls).
  void restart(const std::string& name, Parameter<T> parameter) override { reset_state(name, std::move(parameter)); }

  /// Rebinds to a new list of views: a name seen before whose size is unchanged keeps its state, every other
  /// name starts fresh, names no longer present are dropped.
  void rebind(std::vector<Parameter<T>> parameters) {
    std::vector<Slot> slots;
    std::map<std::string, std::size_t> index;
    slots.reserve(parameters.size());
    for (auto& parameter : parameters) {
      check_views("AdamW::rebind", parameter);
      if (index.count(parameter.name)) {
        detail::fail<ValueError>("AdamW::rebind", "parameter name '", parameter.name, "' appears twice");
      }
      const auto old = index_.find(parameter.name);
      Slot slot;
      slot.bind(parameter);
      if (old != index_.end() && slots_[old->second].m.size() == slot.size) {
        const Slot& previous = slots_[old->second];
        slot.m = previous.m;
        slot.v = previous.v;
        slot.steps = previous.steps;
      } else {
        clear(slot);
      }
      if (old != index_.end()) {
        slot.lr_multiplier = slots_[old->second].lr_multiplier;
        slot.weight_decay = slots_[old->second].weight_decay;
      }
      index.emplace(slot.name, slots.size());
      slots.push_back(std::move(slot));
    }
    slots_ = std::move(slots);
    index_ = std::move(index);
  }

  /// Parameter groups, as PyTorch's: `name` steps with lr x `lr_multiplier` (its weight decay then also uses that
  /// lr, as a group's lr does in torch.optim.AdamW) and with `weight_decay` instead of the config's when given
  /// (>= 0). Settings survive reset_state and rebind. Errors (ValueError): no such name, a multiplier that is
  /// negative or not finite, a negative or non-finite weight decay.
  void set_group(const std::string& name, double lr_multiplier, double weight_decay = -1) {
    constexpr const char* where = "AdamW::set_group";
    Slot& slot = slots_[position(where, name)];
    if (!(lr_multiplier >= 0) || !std::isfinite(lr_multiplier)) {
      detail::fail<ValueError>(where, "lr_multiplier of '", name, "' is ", lr_multiplier, ", expected a finite value >= 0");
    }
    if (!std::isfinite(weight_decay) || (weight_decay < 0 && weight_decay != -1)) {
      detail::fail<ValueError>(where, "weight_decay of '", name, "' is ", weight_decay,
                               ", expected a finite value >= 0 (or -1: the config's)");
    }
    slot.lr_multiplier = lr_multiplier;
    slot.weight_decay = weight_decay;
  }
  double lr_multiplier(const std::string& name) const {
    return slots_[position("AdamW::lr_multiplier", name)].lr_multiplier;
  }

  /// The parameters' names, in the order they were given.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(slots_.size());
    for (const auto& slot : slots_) out.push_back(slot.name);
    return out;
  }

  /// Steps taken by `name` since its state was last reset.
  long long steps(const std::string& name) const { return slots_[position("AdamW::steps", name)].steps; }
  /// First and second moments of `name` (flat).
  const Vector<T>& first_moment(const std::string& name) const { return slots_[position("AdamW::first_moment", name)].m; }
  const Vector<T>& second_moment(const std::string& name) const {
    return slots_[position("AdamW::second_moment", name)].v;
  }

 private:
  // A parameter's views are kept as pointers: assigning an Eigen::Map copies coefficients instead of rebinding.
  struct Slot {
    std::string name;
    T* value_data = nullptr;
    T* grad_data = nullptr;
    Index size = 0;
    Vector<T> m, v;
    long long steps = 0;
    double lr_multiplier = 1;  // parameter group: lr x this
    double weight_decay = -1;  // parameter group: this instead of the config's when >= 0

    void bind(Parameter<T>& p) {
      name = p.name;
      value_data = p.value.data();
      grad_data = p.grad.data();
      size = p.value.size();
    }
    Eigen::Map<Vector<T>> grad() { return Eigen::Map<Vector<T>>(grad_data, size); }
  };

  static void validate(const AdamWConfig& c) {
    constexpr const char* where = "AdamW::AdamW";
    auto in_range = [&](const char* name, double value, double lo, double hi) {
      if (!(value >= lo && value < hi)) detail::fail<ValueError>(where, name, " is ", value, ", expected in [", lo, ", ", hi, ")");
    };
    in_range("lr", c.lr, 0, INFINITY);
    in_range("beta1", c.beta1, 0, 1);
    in_range("beta2", c.beta2, 0, 1);
    in_range("weight_decay", c.weight_decay, 0, INFINITY);
    if (!(c.eps > 0) || !std::isfinite(c.eps)) detail::fail<ValueError>(where, "eps is ", c.eps, ", expected > 0");
  }

  static void check_views(const char* where, const Parameter<T>& p) {
    if (p.value.size() != p.grad.size()) {
      detail::fail<ShapeError>(where, "parameter '", p.name, "' has ", p.value.size(), " values but ", p.grad.size(),
                               " gradient entries");
    }
  }

  static void clear(Slot& slot) {
    slot.m.setZero(slot.size);
    slot.v.setZero(slot.size);
    slot.steps = 0;
  }

  std::size_t position(const char* where, const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) detail::fail<ValueError>(where, "no parameter named '", name, "'");
    return it->second;
  }

  /// One fused pass over the parameter, its gradient and both moments (`adamw_update`, SIMD) instead of one pass per
  /// Eigen array statement; the coefficients are those of the parameter's group at its step count.
  void update(Slot& slot) {
    ++slot.steps;
    AdamWConfig group = config_;
    group.lr = config_.lr * slot.lr_multiplier;
    if (slot.weight_decay >= 0) group.weight_decay = slot.weight_decay;
    adamw_update(slot.value_data, slot.m.data(), slot.v.data(), slot.grad_data, slot.size,
                 adamw_step_coefficients(group, slot.steps));
  }

  AdamWConfig config_;
  std::vector<Slot> slots_;
  std::map<std::string, std::size_t> index_;
  long long skipped_steps_ = 0;
  std::string last_non_finite_;
};

}  // namespace lorakit
