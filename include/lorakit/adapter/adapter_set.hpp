// lorakit::AdapterSet: the adapters of one model, by module name, in insertion order.
#pragma once

#include "lorakit/adapter/adapter_ref.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"

#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lorakit {

/// Named adapters (names are module paths such as `transformer.h.0.attn.c_attn`) in insertion order.
/// Adapters never move once added, so references and `Parameter` views into them stay valid while the set lives
/// (assigning a new adapter to `at(name)` replaces its tensors: take `parameters()` again after that).
template <class Adapter>
class AdapterSet {
 public:
  using Scalar = typename Adapter::Scalar;
  using Entry = std::pair<const std::string, Adapter>;

  /// Adds `adapter` under `name` and returns it. Errors: an empty name, a name already present.
  Adapter& add(const std::string& name, Adapter adapter) {
    if (name.empty()) detail::fail<ValueError>("AdapterSet::add", "name is empty, expected a module path");
    if (contains(name)) detail::fail<ValueError>("AdapterSet::add", "name '", name, "' is already in the set");
    entries_.emplace_back(name, std::move(adapter));
    index_.emplace(name, entries_.size() - 1);
    return entries_.back().second;
  }

  /// The adapter named `name`. Errors: no such name.
  Adapter& at(const std::string& name) { return entries_[position("AdapterSet::at", name)].second; }
  const Adapter& at(const std::string& name) const { return entries_[position("AdapterSet::at", name)].second; }

  /// A handle to the adapter named `name` for a model's layer: `AdaptedLinear<T, AdapterRef<Adapter>>::owning(W,
  /// set.ref(name))` trains the set's adapter, and sees its replacement by `at(name) = ...`. Errors: no such name.
  AdapterRef<Adapter> ref(const std::string& name) { return AdapterRef<Adapter>(at(name)); }

  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  Index size() const { return static_cast<Index>(entries_.size()); }
  bool empty() const { return entries_.empty(); }

  /// Module names in insertion order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& entry : entries_) out.push_back(entry.first);
    return out;
  }

  /// Iteration over (name, adapter) pairs in insertion order: `for (auto& [name, adapter] : set)`.
  auto begin() { return entries_.begin(); }
  auto end() { return entries_.end(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  /// Every adapter's parameters, named `<module>.<parameter>` (e.g. `transformer.h.0.attn.c_attn.A`).
  std::vector<Parameter<Scalar>> parameters() {
    std::vector<Parameter<Scalar>> out;
    for (auto& [name, adapter] : entries_) {
      for (auto& parameter : adapter.parameters()) {
        out.push_back({name + "." + parameter.name, parameter.value, parameter.grad});
      }
    }
    return out;
  }

  /// Trainable scalars over the whole set.
  Index num_parameters() const {
    Index total = 0;
    for (const auto& entry : entries_) total += entry.second.num_parameters();
    return total;
  }

  void zero_grad() {
    for (auto& entry : entries_) entry.second.zero_grad();
  }

 private:
  std::size_t position(const char* where, const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) detail::fail<ValueError>(where, "no adapter named '", name, "' in the set");
    return it->second;
  }

  std::deque<Entry> entries_;
  std::map<std::string, std::size_t> index_;
};

}  // namespace lorakit
