// lorakit::adapter_memory: what the adapters of a model hold in memory, with frozen storage that layers share
// (VeRA's projections) counted once, however many layers use it.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/adapter/vera.hpp"

#include <cstddef>
#include <set>
#include <utility>

namespace lorakit {

/// The memory of an adapter set, in bytes of its scalar type.
struct AdapterMemory {
  Index trainable_parameters = 0;   ///< trainable scalars over the set (`AdapterSet::num_parameters()`)
  std::size_t trainable_bytes = 0;  ///< their bytes: what a saved adapter holds when the frozen part is regenerated
  std::size_t frozen_bytes = 0;     ///< frozen tensors the forward needs, each shared object counted once
  Index shared_objects = 0;         ///< distinct shared frozen objects (e.g. VeRA projection pairs)

  /// Trainable plus frozen bytes: the adapters' weights as they sit in memory.
  std::size_t total_bytes() const { return trainable_bytes + frozen_bytes; }
  /// What training with AdamW holds besides activations: parameters, gradients, the two moments, frozen tensors.
  std::size_t training_bytes() const { return 4 * trainable_bytes + frozen_bytes; }
};

namespace detail {

/// The frozen storage an adapter shares with others: (identity, bytes), or (nullptr, 0) if none.
template <class T>
std::pair<const void*, std::size_t> shared_frozen_storage(const Lora<T>&) {
  return {nullptr, 0};
}

template <class T>
std::pair<const void*, std::size_t> shared_frozen_storage(const Vera<T>& vera) {
  return {vera.projections().get(), vera.projections()->bytes()};
}

}  // namespace detail

/// Trainable parameters and bytes of a set of `Lora` or `Vera` adapters, with each shared projections object
/// counted once (a model's VeRA layers all read the same A and B).
template <class Adapter>
AdapterMemory adapter_memory(const AdapterSet<Adapter>& set) {
  using T = typename Adapter::Scalar;
  AdapterMemory memory;
  std::set<const void*> seen;
  for (const auto& [name, adapter] : set) {
    (void)name;
    memory.trainable_parameters += adapter.num_parameters();
    const auto [identity, bytes] = detail::shared_frozen_storage(adapter);
    if (identity != nullptr && seen.insert(identity).second) {
      memory.frozen_bytes += bytes;
      ++memory.shared_objects;
    }
  }
  memory.trainable_bytes = static_cast<std::size_t>(memory.trainable_parameters) * sizeof(T);
  return memory;
}

/// `adapter_memory(set).total_bytes()`: the adapters' weights in memory, shared projections counted once.
template <class Adapter>
std::size_t adapter_bytes(const AdapterSet<Adapter>& set) {
  return adapter_memory(set).total_bytes();
}

}  // namespace lorakit
