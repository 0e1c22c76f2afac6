// VeRA adapters as plain LoRA adapters with the same update, for formats and runtimes that know only LoRA
// (llama.cpp's GGUF adapters, PEFT LoRA folders), optionally compressed to a lower rank by LoRA-Squeeze.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/adapter/vera.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/rank/squeeze.hpp"

#include <algorithm>
#include <map>
#include <string>

namespace lorakit {

/// The LoRA adapter with the update of `vera` (Kopiczko et al., "VeRA", ICLR 2024):
/// \f[ \Delta W = \Lambda_b B \Lambda_d A = s\,B' A',\qquad A' = A,\quad B' = \Lambda_b B \Lambda_d,\quad s = 1 \f]
/// (alpha = r, so the scaling is exactly 1), with A and B the layer's blocks of the shared projections.
/// Errors (ValueError): the VeRA rank exceeds min(in, out), which a Lora cannot hold.
template <class T>
Lora<T> vera_as_lora(const Vera<T>& vera) {
  LoraConfig config;
  config.rank = vera.rank();
  config.alpha = static_cast<double>(vera.rank());
  config.init = LoraInit::zeros;
  if (vera.rank() > std::min(vera.in_features(), vera.out_features())) {
    detail::fail<ValueError>("vera_as_lora", "the VeRA rank ", vera.rank(), " exceeds min(in, out) = ",
                             std::min(vera.in_features(), vera.out_features()), ", which a LoRA adapter cannot hold");
  }
  Matrix<T> B = vera.lambda_b().asDiagonal() * vera.B() * vera.lambda_d().asDiagonal();
  return Lora<T>::from_factors(Matrix<T>(vera.A()), std::move(B), config);
}

/// A VeRA adapter set as LoRA adapters, and how much of each update they keep.
template <class T>
struct VeraAsLora {
  AdapterSet<Lora<T>> adapters;
  /// Per module, the fraction of the update's energy kept, \f$\sum_{j \le k} \sigma_j^2 / \sum_j \sigma_j^2\f$
  /// (1 when not compressed, or for a zero update).
  std::map<std::string, double> energy_kept;
};

/// Every adapter of `set` as vera_as_lora gives it; with `rank` > 0, each one whose rank is higher is squeezed
/// to `rank` by the exact SVD of its update (LoRA-Squeeze, keeping its scaling 1): the best rank-`rank`
/// approximation, which keeps the fraction `energy_kept` of \f$\|\Delta W\|_F^2\f$.
/// Errors (ValueError): rank < 0; a VeRA rank above a layer's min(in, out) (see vera_as_lora).
template <class T>
VeraAsLora<T> vera_to_lora(const AdapterSet<Vera<T>>& set, Index rank = 0) {
  if (rank < 0) detail::fail<ValueError>("vera_to_lora", "rank is ", rank, ", expected 0 (keep) or a positive rank");
  VeraAsLora<T> out;
  for (const auto& [name, vera] : set) {
    Lora<T> lora = vera_as_lora(vera);
    double kept = 1;
    if (rank > 0 && rank < lora.rank()) {
      const Vector<double> squares = update_singular_values(lora).template cast<double>().array().square();
      const double total = squares.sum();
      kept = total > 0 ? squares.head(rank).sum() / total : 1.0;
      lora = squeeze(lora, rank);
    }
    out.energy_kept.emplace(name, kept);
    out.adapters.add(name, std::move(lora));
  }
  return out;
}

}  // namespace lorakit
