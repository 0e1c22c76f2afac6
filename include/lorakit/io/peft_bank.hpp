// Adapter banks (serve/adapter_bank.hpp) filled from several PEFT adapter folders in one call: folder j becomes
// slot j of every module's bank. Kept on the io side so that serve/ does not need nlohmann-json.
//
// GGUF adapters (io/gguf.hpp, llama.cpp's format) take the same road when that reader lands: read each file into
// an AdapterSet<Lora<T>> and hand the sets to make_banks, as load_peft_banks does with load_peft's.
#pragma once

#include "lorakit/io/peft.hpp"
#include "lorakit/serve/adapter_bank.hpp"

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace lorakit::io {

/// One AdapterBank per adapted module from the PEFT folders `dirs` (as written by `model.save_pretrained`):
/// folder j goes to slot j; a module that folder j does not adapt leaves slot j empty in that module's bank.
/// max_rank 0 reserves each module's largest rank over the folders (pass a larger one to leave room for
/// adapters loaded later). Each folder's scaling (lora_alpha / r, rank_pattern, alpha_pattern, rsLoRA) is its own.
/// Errors: no folders (ValueError); everything load_peft throws (IoError, naming the file); a module whose shape
/// differs between folders (ShapeError); a rank above a given max_rank (ValueError).
template <class T>
std::map<std::string, AdapterBank<T>> load_peft_banks(const std::vector<std::filesystem::path>& dirs, Index max_rank = 0) {
  if (dirs.empty()) lorakit::detail::fail<ValueError>("load_peft_banks", "dirs is empty, expected at least one folder");
  std::vector<PeftAdapter<T>> adapters;
  adapters.reserve(dirs.size());
  for (const auto& dir : dirs) adapters.push_back(load_peft<T>(dir));
  std::vector<const AdapterSet<Lora<T>>*> sets;
  for (const auto& adapter : adapters) sets.push_back(&adapter.adapters);
  return make_banks<T>(sets, max_rank);
}

}  // namespace lorakit::io
