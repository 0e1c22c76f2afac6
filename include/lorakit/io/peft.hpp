// HuggingFace PEFT adapters on disk: a folder with adapter_model.safetensors and adapter_config.json, read into
// and written from lorakit adapters, so that a LoRA trained with lorakit loads in PEFT and the reverse.
//
// The header users include. As PEFT's tuners, one header per method over a common part:
//   io/peft_config.hpp   adapter_config.json fields, PeftPattern (rank_pattern / alpha_pattern)
//   io/peft_folder.hpp   reading a folder (tensor suffixes, extras), writing it as a whole (atomic protocol)
//   io/peft_lora.hpp     LoRA: PeftAdapter, load_peft, save_peft
//   io/peft_vera.hpp     VeRA: PeftVeraAdapter, load_peft_vera, save_peft_vera
// and, here, merging a LoRA into a base weight stored as PEFT stores it.
#pragma once

#include "lorakit/adapter/detail/branch.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/io/peft_config.hpp"
#include "lorakit/io/peft_folder.hpp"
#include "lorakit/io/peft_lora.hpp"
#include "lorakit/io/peft_vera.hpp"
#include "lorakit/io/safetensors.hpp"

namespace lorakit::io {

/// W += s (B A) for a weight stored as PEFT stores it: [out x in], or with `fan_in_fan_out` [in x out] (GPT-2's
/// Conv1D), where the update is transposed: \f$W \mathrel{+}= s\,(BA)^\top = s\,A^\top B^\top\f$.
/// Errors: W of the wrong shape; a non-finite result (W is then left unchanged).
template <class T>
void merge_peft_layer(const Lora<T>& lora, bool fan_in_fan_out, MatrixRef<T> W) {
  if (!fan_in_fan_out) {
    lora.merge_into(W);
    return;
  }
  lorakit::detail::add_dense_update<T>("merge_peft_layer", W, lora.in_features(), lora.out_features(), T(1),
                                       (lora.scaling() * lora.A().transpose()) * lora.B().transpose(), "s (B A)^T");
}

/// The inverse of merge_peft_layer: W -= s (B A), transposed with `fan_in_fan_out`.
template <class T>
void unmerge_peft_layer(const Lora<T>& lora, bool fan_in_fan_out, MatrixRef<T> W) {
  if (!fan_in_fan_out) {
    lora.unmerge_from(W);
    return;
  }
  lorakit::detail::add_dense_update<T>("unmerge_peft_layer", W, lora.in_features(), lora.out_features(), T(-1),
                                       (lora.scaling() * lora.A().transpose()) * lora.B().transpose(), "s (B A)^T");
}

}  // namespace lorakit::io
