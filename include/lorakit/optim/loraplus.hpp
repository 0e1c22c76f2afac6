// LoRA+ (Hayou, Ghosh, Yu, "LoRA+: Efficient Low Rank Adaptation of Large Models", ICML 2024): the B factors
// learn with a larger learning rate than the A factors, as AdamW parameter groups.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/optim/adamw.hpp"

#include <cmath>
#include <string>

namespace lorakit {

/// LoRA+'s one hyper-parameter, named as in PEFT's `create_loraplus_optimizer`.
struct LoraPlusConfig {
  double lr_ratio = 16;  ///< loraplus_lr_ratio: eta_B / eta_A (PEFT's default 16; the paper suggests 2^4)
};

/// Puts `optimizer`'s parameters into PEFT's LoRA+ groups (src/peft/optimizers/loraplus.py), by the last component
/// of each name (`<module>.A`, `<module>.B`, ...):
/// - `B`, and every one-dimensional parameter (`lambda_b`, `lambda_d` of VeRA, `magnitude` of DoRA; PEFT's
///   `param.ndim == 1` rule): learning rate lr x lr_ratio;
/// - `bias` (a trainable bias, e.g. of a head trained alongside): lr x lr_ratio and no weight decay (PEFT's
///   `groupB_no_decay`);
/// - everything else (`A`, a head's `weight`): lr (PEFT's `groupA`).
/// In AdamW the decoupled weight decay then uses each group's lr, as in torch.optim.AdamW with PEFT's groups.
/// PEFT's separate rate for embedding layers (`loraplus_lr_embedding`) has no counterpart: lorakit adapts linear
/// layers only. Errors: lr_ratio not finite or <= 0 (ValueError).
template <class T>
void apply_loraplus(AdamW<T>& optimizer, const LoraPlusConfig& config = {}) {
  if (!(config.lr_ratio > 0) || !std::isfinite(config.lr_ratio)) {
    detail::fail<ValueError>("apply_loraplus", "lr_ratio is ", config.lr_ratio, ", expected a finite value > 0");
  }
  for (const std::string& name : optimizer.names()) {
    const std::string last = name.substr(name.rfind('.') + 1);  // the whole name when it has no '.'
    if (last == "bias") {
      optimizer.set_group(name, config.lr_ratio, 0.0);
    } else if (last == "B" || last == "lambda_b" || last == "lambda_d" || last == "magnitude") {
      optimizer.set_group(name, config.lr_ratio);
    } else {
      optimizer.set_group(name, 1.0);
    }
  }
}

}  // namespace lorakit
