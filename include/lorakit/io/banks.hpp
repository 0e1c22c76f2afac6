// Adapter banks (serve/adapter_bank.hpp) filled from files in one call: several PEFT adapter folders, or several
// llama.cpp GGUF adapter files, file j in slot j of every module's bank. Every file is read first (the readers'
// errors come before any bank is made or touched); the sets then take make_banks' or load_banks' road, the one rule
// for adapter sets and banks. Kept on the io side so that serve/ does not need nlohmann-json.
#pragma once

#include "lorakit/io/gguf_lora.hpp"
#include "lorakit/io/peft.hpp"
#include "lorakit/serve/adapter_bank.hpp"

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lorakit::io {

namespace detail {

/// The adapter sets of `paths`, each read by `read(path)` (an AdapterSet<Lora<T>>). Errors: no paths (ValueError,
/// naming `argument`); what `read` throws.
template <class T, class Read>
std::vector<AdapterSet<Lora<T>>> read_adapter_sets(const char* where, const char* argument,
                                                   const std::vector<std::filesystem::path>& paths, const Read& read) {
  if (paths.empty()) lorakit::detail::fail<ValueError>(where, argument, " is empty, expected at least one");
  std::vector<AdapterSet<Lora<T>>> sets;
  sets.reserve(paths.size());
  for (const auto& path : paths) sets.push_back(read(path));
  return sets;
}

template <class T>
std::vector<const AdapterSet<Lora<T>>*> set_pointers(const std::vector<AdapterSet<Lora<T>>>& sets) {
  std::vector<const AdapterSet<Lora<T>>*> out;
  out.reserve(sets.size());
  for (const auto& set : sets) out.push_back(&set);
  return out;
}

/// Names path j in the bank loaders' messages: "files[1] ('bob.gguf')".
inline auto path_label(const char* argument, const std::vector<std::filesystem::path>& paths) {
  return [argument, &paths](std::size_t j) { return lorakit::detail::concat(argument, "[", j, "] ('", paths[j].string(), "')"); };
}

template <class T>
AdapterSet<Lora<T>> read_peft_set(const std::filesystem::path& dir) {
  auto adapter = load_peft<T>(dir);
  return std::move(adapter.adapters);
}

template <class T>
AdapterSet<Lora<T>> read_gguf_set(const std::filesystem::path& file, const std::optional<GgufLoraOptions>& options) {
  auto adapter = load_gguf_lora<T>(file, options);
  return std::move(adapter.adapters);
}

inline constexpr const char* gguf_names_hint =
    " (a file without lorakit's keys is read with llama.cpp's names and row order); pass GgufLoraOptions with the "
    "head counts to read every file by the name table";

/// A weight that the files name two ways would get two banks: a file written by save_gguf_lora is read with the
/// module names it was saved with (Hugging Face paths), a file of another tool with llama.cpp's tensor names (and
/// its q/k rows in llama.cpp's order). Errors (ValueError): a llama.cpp name whose Hugging Face module (by `rules`)
/// is also a name of the files, or has a bank in `banks` (when given).
template <class T>
void check_gguf_names_agree(const char* where, const std::vector<std::filesystem::path>& files,
                            const std::vector<AdapterSet<Lora<T>>>& sets, const std::vector<GgufNameRule>& rules,
                            const std::map<std::string, AdapterBank<T>>* banks = nullptr) {
  std::map<std::string, std::size_t> first_file;  // name -> the first file that has it
  for (std::size_t j = 0; j < sets.size(); ++j) {
    for (const auto& entry : sets[j]) first_file.try_emplace(entry.first, j);
  }
  for (const auto& [name, j] : first_file) {
    const auto module = hf_module(name, rules);
    if (!module) continue;
    if (banks != nullptr && banks->count(module->first) != 0) {
      lorakit::detail::fail<ValueError>(where, "files[", j, "] ('", files[j].string(), "') names '", name,
                                        "', whose bank is named '", module->first, "'", gguf_names_hint);
    }
    const auto other = first_file.find(module->first);
    if (other == first_file.end()) continue;
    lorakit::detail::fail<ValueError>(where, "files[", j, "] ('", files[j].string(), "') names '", name, "' and files[",
                                      other->second, "] ('", files[other->second].string(), "') names '", module->first,
                                      "': one weight under two names", gguf_names_hint);
  }
}

}  // namespace detail

/// One AdapterBank per adapted module from the PEFT folders `dirs` (as written by `model.save_pretrained`):
/// folder j goes to slot j; a module that folder j does not adapt leaves slot j empty in that module's bank.
/// max_rank 0 reserves each module's largest rank over the folders (pass a larger one to leave room for
/// adapters loaded later). Each folder's scaling (lora_alpha / r, rank_pattern, alpha_pattern, rsLoRA) is its own.
/// Tensors that are not LoRA factors (`modules_to_save` heads) are not served by a bank and are left out.
/// Errors: no folders (ValueError); everything load_peft throws (IoError, naming the file); a module whose shape
/// differs between folders (ShapeError); a rank above a given max_rank (ValueError); each naming the folder.
template <class T>
std::map<std::string, AdapterBank<T>> load_peft_banks(const std::vector<std::filesystem::path>& dirs, Index max_rank = 0) {
  constexpr const char* where = "load_peft_banks";
  const auto sets = detail::read_adapter_sets<T>(where, "dirs", dirs, detail::read_peft_set<T>);
  return lorakit::detail::make_banks<T>(where, detail::set_pointers(sets), max_rank, detail::path_label("dirs", dirs));
}

/// One AdapterBank per adapted module from the llama.cpp LoRA adapters `files` (GGUF), file j in slot j, each file
/// read by load_gguf_lora<T>(file, options): a module that file j does not adapt leaves slot j empty in its bank,
/// and each adapter keeps its file's scaling (alpha / r, as llama.cpp applies it). The banks are named as
/// load_gguf_lora names the adapters: files written by save_gguf_lora by the module names they were saved with
/// (their q/k rows back in Hugging Face order), files of other tools by llama.cpp's tensor names
/// (`blk.0.attn_q.weight`, rows as stored), or every file through `options.names` and its head counts when
/// `options` is given. max_rank as for load_peft_banks.
/// Errors: no files (ValueError); everything load_gguf_lora throws (IoError, naming the file); one weight named
/// two ways by different files (ValueError: pass `options`); a module whose shape differs between files
/// (ShapeError); a rank above a given max_rank (ValueError); each naming the file.
template <class T>
std::map<std::string, AdapterBank<T>> load_gguf_banks(const std::vector<std::filesystem::path>& files, Index max_rank = 0,
                                                      const std::optional<GgufLoraOptions>& options = std::nullopt) {
  constexpr const char* where = "load_gguf_banks";
  const auto read = [&options](const std::filesystem::path& file) { return detail::read_gguf_set<T>(file, options); };
  const auto sets = detail::read_adapter_sets<T>(where, "files", files, read);
  detail::check_gguf_names_agree<T>(where, files, sets, options ? options->names : llama_gguf_names());
  return lorakit::detail::make_banks<T>(where, detail::set_pointers(sets), max_rank, detail::path_label("files", files));
}

/// Hot swap from folders: folder j's adapters into slot first_slot + j of `banks` (as load_banks does with
/// adapter sets: a bank whose module folder j does not adapt gets that slot cleared). Every folder is read and
/// every adapter checked before the first is loaded: the banks are unchanged when an error is thrown.
/// Errors: no folders (ValueError); what load_peft throws (IoError); what load_banks throws, naming the folder.
template <class T>
void load_peft_into_banks(std::map<std::string, AdapterBank<T>>& banks, const std::vector<std::filesystem::path>& dirs,
                          Index first_slot = 0) {
  constexpr const char* where = "load_peft_into_banks";
  const auto sets = detail::read_adapter_sets<T>(where, "dirs", dirs, detail::read_peft_set<T>);
  lorakit::detail::load_banks<T>(where, banks, detail::set_pointers(sets), first_slot, detail::path_label("dirs", dirs));
}

/// Hot swap from GGUF files: file j's adapters (read as load_gguf_banks reads them) into slot first_slot + j of
/// `banks`; a bank whose module file j does not adapt gets that slot cleared. All or nothing, as
/// load_peft_into_banks. Errors: no files (ValueError); what load_gguf_lora throws (IoError); one weight named
/// two ways, by two files or by a file and the banks (ValueError: pass `options`); what load_banks throws (a module without a bank, e.g. a file of another tool read
/// without `options` into banks named by Hugging Face paths; a shape unlike the bank's; a rank above its
/// max_rank; slots outside the banks), naming the file.
template <class T>
void load_gguf_into_banks(std::map<std::string, AdapterBank<T>>& banks, const std::vector<std::filesystem::path>& files,
                          Index first_slot = 0, const std::optional<GgufLoraOptions>& options = std::nullopt) {
  constexpr const char* where = "load_gguf_into_banks";
  const auto read = [&options](const std::filesystem::path& file) { return detail::read_gguf_set<T>(file, options); };
  const auto sets = detail::read_adapter_sets<T>(where, "files", files, read);
  detail::check_gguf_names_agree<T>(where, files, sets, options ? options->names : llama_gguf_names(), &banks);
  lorakit::detail::load_banks<T>(where, banks, detail::set_pointers(sets), first_slot, detail::path_label("files", files));
}

}  // namespace lorakit::io
