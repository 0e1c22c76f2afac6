// The part of PEFT's adapter folders that every method shares (PEFT's `save_pretrained` / `from_pretrained`):
// reading a consistent (config, weights) pair, sorting tensor names into per-module tensors by suffix and extras,
// the config fields common to all methods, and writing a folder so that it is replaced as a whole.
//
// Atomic folder protocol. A folder holds two files, and no file system renames two files at once, so the
// weights file records which config it belongs to: its `__metadata__` entry `lorakit.adapter_config_digest` is
// a digest (FNV-1a, 64 bits) of the config's bytes. A save
//   1. rolls an interrupted save forward and removes temporaries of dead writers (recover_folder),
//   2. writes the new config as `.adapter_config.json.staged` (atomically: complete or absent),
//   3. replaces the weights file (atomically) -- the commit point --,
//   4. renames the staged config over adapter_config.json.
// A reader takes the config whose digest the weights record: adapter_config.json, or, after a save killed
// between 3 and 4, the staged config. A kill at any moment thus leaves a folder that loads as exactly the old
// adapter (before 3) or exactly the new one (from 3 on). Weights without the entry (PEFT's own files) pair with
// adapter_config.json as PEFT reads them; so do weights whose config was edited by hand (no staged file matches).
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/io/atomic_file.hpp"
#include "lorakit/io/input_file.hpp"
#include "lorakit/io/json_text.hpp"
#include "lorakit/io/peft_config.hpp"
#include "lorakit/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

/// The `__metadata__` key of the weights file that names its config (see the protocol above).
inline constexpr const char* peft_config_digest_key = "lorakit.adapter_config_digest";
/// The config of a save in progress, beside adapter_config.json.
inline constexpr const char* peft_staged_config_file = ".adapter_config.json.staged";

namespace detail {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// A tensor name without PEFT's `base_model.model.` prefix.
inline std::string strip_module_prefix(const std::string& name) {
  const std::string prefix = peft_module_prefix;
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

/// The last component of a module path ("transformer.h.0.attn.c_attn" -> "c_attn").
inline std::string last_component(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

/// "fnv1a64:<16 hex digits>" of `bytes` (Fowler-Noll-Vo 1a): identifies a config, it does not authenticate it.
inline std::string config_digest(const std::string& bytes) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return std::string("fnv1a64:") + hex;
}

/// The value that occurs most often (the first one to reach the highest count).
template <class Value>
Value most_common(const std::vector<Value>& values) {
  std::map<Value, std::size_t> counts;
  Value best = values.front();
  std::size_t best_count = 0;
  for (const auto& value : values) {
    const std::size_t count = ++counts[value];
    if (count > best_count) {
      best_count = count;
      best = value;
    }
  }
  return best;
}

/// A 2-D tensor of `reader` as a matrix. Errors (IoError): another number of dimensions.
template <class T>
Matrix<T> read_2d(const SafetensorsReader& reader, const ConfigFields& fields, const std::string& name) {
  const auto& shape = reader.info(name).shape;
  if (shape.size() != 2) {
    fields.fail("tensor '", shown(name), "' has shape ", shape_string(shape),
                ", expected 2 dimensions (LoRA of convolutions and embeddings is not supported)");
  }
  return reader.matrix<T>(name);
}

/// Errors (IoError) naming the tensor and the entry if `m` has a NaN or an infinity (one vectorized pass of
/// `all_finite` when there is none).
template <class Derived>
void check_finite_tensor(const ConfigFields& fields, const std::string& name, const Eigen::PlainObjectBase<Derived>& m) {
  if (lorakit::detail::all_finite(m)) return;
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) {
      if (!std::isfinite(m(i, j))) {
        fields.fail("tensor '", shown(name), "' has the non-finite value ", static_cast<double>(m(i, j)), " at [", i,
                    ", ", j, "]");
      }
    }
  }
}

// ---- Reading ----------------------------------------------------------------------------------------------------

/// What a method stores per module and besides: the tensor-name suffixes of a module (e.g. ".lora_A.weight"),
/// the label of each in messages, and whole tensor names that belong to the method (VeRA's shared projections).
struct PeftMethod {
  const char* peft_type;
  const char* hint;  // appended to a peft_type mismatch, e.g. " (VeRA adapters are read by load_peft_vera)"
  std::vector<std::pair<std::string, std::string>> suffixes;  // (suffix, label)
  std::vector<std::string> named;
  std::vector<std::pair<std::string, std::size_t>> aliases;  // (suffix, k): another spelling of suffixes[k]
};

/// A PEFT folder opened for reading: its config, its weights, and their tensors sorted by role.
struct PeftFolder {
  ConfigFields fields;   ///< adapter_config.json (errors name it)
  ConfigFields weights;  ///< the same fields, with errors naming the weights file
  SafetensorsReader reader;
  /// Adapted modules in model order, each with its tensor names in the order of PeftMethod::suffixes.
  std::vector<std::pair<std::string, std::vector<std::string>>> modules;
  std::map<std::string, std::string> named;  ///< the method's named tensors that are present
  std::vector<TensorInfo> extras;            ///< every other tensor
};

/// The config text that the weights of `reader` belong to (see the protocol above).
inline std::string matching_config_text(const char* where, const std::filesystem::path& dir, const SafetensorsReader& reader,
                                        std::string text) {
  const auto recorded = reader.metadata().find(peft_config_digest_key);
  if (recorded == reader.metadata().end() || config_digest(text) == recorded->second) return text;
  std::error_code error;
  const auto staged = dir / peft_staged_config_file;
  if (std::filesystem::is_regular_file(staged, error)) {
    try {
      std::string staged_text = InputFile(where, staged).read_all(max_peft_config_bytes);
      if (config_digest(staged_text) == recorded->second) return staged_text;  // a save was interrupted at its commit
    } catch (const IoError&) {
      // gone meanwhile (a save completed): the config file below is then the one
    }
  }
  std::string again = InputFile(where, dir / peft_config_file).read_all(max_peft_config_bytes);
  return again;  // matches after a concurrent save completed; otherwise a config edited by hand, used as is
}

/// Opens the weights of a PEFT folder. Errors (IoError): only a pickle checkpoint is there, or SafetensorsReader's.
inline SafetensorsReader open_peft_weights(const char* where, const std::filesystem::path& dir) {
  const auto weights = dir / peft_weights_file;
  std::error_code error;
  if (!std::filesystem::exists(weights, error) && std::filesystem::exists(dir / "adapter_model.bin", error)) {
    lorakit::detail::fail<IoError>(where, "'", dir.string(),
                                   "' has adapter_model.bin (a PyTorch pickle) but no adapter_model.safetensors; "
                                   "save it from PEFT with safe_serialization=True");
  }
  return SafetensorsReader(weights);
}

/// Reads the folder `dir` of `method`: the config (peft_type checked), the weights, and the tensors sorted into
/// modules (names sorted with digit runs compared as numbers), the method's named tensors, and extras.
/// Errors (IoError, naming the file): anything SafetensorsReader or ConfigFields refuse, another peft_type, two
/// tensors that name the same key with and without `base_model.model.`, a module missing one of its tensors.
inline PeftFolder read_peft_folder(const char* where, const std::filesystem::path& dir, const PeftMethod& method) {
  const auto config_file = dir / peft_config_file;
  std::string text = InputFile(where, config_file).read_all(max_peft_config_bytes);
  SafetensorsReader reader = open_peft_weights(where, dir);
  text = matching_config_text(where, dir, reader, std::move(text));
  ConfigFields fields(where, config_file, parse_json_object<nlohmann::ordered_json>(where, config_file, text, false));
  fields.require("peft_type", method.peft_type, method.hint);
  PeftFolder folder{fields, fields.about(reader.path()), std::move(reader), {}, {}, {}};

  std::map<std::string, std::string> keys;  // key without the prefix -> tensor name
  std::map<std::string, std::vector<std::string>> modules;
  const std::size_t count = method.suffixes.size();
  for (const auto& tensor : folder.reader.tensors()) {
    const std::string key = strip_module_prefix(tensor.name);
    const auto [previous, inserted] = keys.emplace(key, tensor.name);
    if (!inserted) {
      folder.weights.fail("tensors '", shown(previous->second), "' and '", shown(tensor.name), "' both name '",
                          shown(key), "' (with and without the prefix ", peft_module_prefix, ")");
    }
    if (std::find(method.named.begin(), method.named.end(), tensor.name) != method.named.end()) {
      folder.named.emplace(tensor.name, tensor.name);
      continue;
    }
    bool classified = false;
    const auto classify = [&](const std::string& suffix, std::size_t k) {
      if (classified || !ends_with(key, suffix) || key.size() <= suffix.size()) return;
      const std::string module = key.substr(0, key.size() - suffix.size());
      auto& names = modules[module];
      names.resize(count);
      if (!names[k].empty()) {
        folder.weights.fail("tensors '", shown(names[k]), "' and '", shown(tensor.name), "' are both the ",
                            method.suffixes[k].second, " of module '", shown(module), "'");
      }
      names[k] = tensor.name;
      classified = true;
    };
    for (std::size_t k = 0; k < count; ++k) classify(method.suffixes[k].first, k);
    for (const auto& [suffix, k] : method.aliases) classify(suffix, k);
    if (!classified) folder.extras.push_back(tensor);
  }
  for (auto& [module, names] : modules) {
    for (std::size_t k = 0; k < count; ++k) {
      if (names[k].empty()) {
        const std::size_t present = k == 0 ? 1 : 0;
        folder.weights.fail("module '", shown(module), "' has ", method.suffixes[present].second, " but no ",
                            method.suffixes[k].second);
      }
    }
    folder.modules.emplace_back(module, std::move(names));
  }
  std::sort(folder.modules.begin(), folder.modules.end(),
            [](const auto& a, const auto& b) { return natural_less(a.first, b.first); });
  return folder;
}

/// Fills the fields every method's result has (config, fan_in_fan_out, extra_tensors, extra_shapes), reading the
/// extra tensors. Errors (IoError): a non-finite value in an extra tensor.
template <class T, class Adapter>
void read_common(const PeftFolder& folder, Adapter& out) {
  out.config = nlohmann::json::parse(folder.fields.json().dump());
  out.fan_in_fan_out = folder.fields.boolean("fan_in_fan_out", false);
  for (const auto& tensor : folder.extras) {
    const std::string key = strip_module_prefix(tensor.name);
    Matrix<T> values = folder.reader.matrix<T>(tensor.name);
    check_finite_tensor(folder.weights, tensor.name, values);
    out.extra_tensors.emplace(key, std::move(values));
    out.extra_shapes.emplace(key, tensor.shape);
  }
}

// ---- Writing ----------------------------------------------------------------------------------------------------

/// Creates the adapter folder. Errors (IoError): it cannot be created.
inline void create_folder(const char* where, const std::filesystem::path& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error || !std::filesystem::is_directory(dir, error)) {
    lorakit::detail::fail<IoError>(where, "cannot create the folder '", dir.string(), "': ", error.message());
  }
}

/// Brings `dir` back to a committed state: completes a save that was killed after its commit point (renames the
/// staged config that the weights name), removes a staged config that no weights name, and removes the
/// temporaries of writers that died. Best effort (a folder that cannot be fixed is reported by the save itself).
inline void recover_folder(const std::filesystem::path& dir) {
  const auto config = dir / peft_config_file, staged = dir / peft_staged_config_file, weights = dir / peft_weights_file;
  std::error_code error;
  if (std::filesystem::exists(staged, error)) {
    bool roll_forward = false;
    try {
      const SafetensorsReader reader(weights);
      const auto recorded = reader.metadata().find(peft_config_digest_key);
      roll_forward = recorded != reader.metadata().end() &&
                     config_digest(InputFile("recover_folder", staged).read_all(max_peft_config_bytes)) == recorded->second;
    } catch (const Error&) {
    }
    if (roll_forward) {
      std::filesystem::rename(staged, config, error);
    } else {
      std::filesystem::remove(staged, error);
    }
    sync_folder(dir);
  }
  for (const auto& file : {config, staged, weights}) AtomicFile::remove_stale_temporaries(file);
}

/// Writes the two files of an adapter folder (creating it if needed) by the protocol above, so that the folder
/// is replaced as a whole. Errors (IoError): the folder cannot be created or written.
inline void write_folder(const char* where, const std::filesystem::path& dir, SafetensorsWriter& writer,
                         const nlohmann::ordered_json& config) {
  create_folder(where, dir);
  recover_folder(dir);
  const std::string text = config.dump(2) + "\n";
  const auto staged = dir / peft_staged_config_file;
  write_file_atomically(where, staged, text.data(), text.size());
  writer.set_metadata(peft_config_digest_key, config_digest(text));
  writer.write(dir / peft_weights_file);  // the commit point
  std::error_code error;
  std::filesystem::rename(staged, dir / peft_config_file, error);
  if (error) {
    lorakit::detail::fail<IoError>(where, "renaming '", staged.string(), "' to '", (dir / peft_config_file).string(),
                                   "' failed: ", error.message(), " (the folder loads as the new adapter)");
  }
  sync_folder(dir);
}

/// Extra tensors written back by a save (those of a loaded adapter), and its modules_to_save.
template <class T>
struct PeftExtras {
  const std::map<std::string, Matrix<T>>* tensors = nullptr;
  const std::map<std::string, std::vector<std::int64_t>>* shapes = nullptr;
  nlohmann::ordered_json modules_to_save;  // null unless the adapter was loaded with a list
};

/// The extras of a loaded adapter (PeftAdapter, PeftVeraAdapter), and the options completed from its config:
/// base_model_name_or_path and task_type when empty in `options`, and fan_in_fan_out.
template <class T, class Adapter, class Options>
PeftExtras<T> extras_of(const Adapter& adapter, Options& options) {
  const auto from_config = [&](const char* key, std::string& field) {
    if (field.empty() && adapter.config.contains(key) && adapter.config[key].is_string()) field = adapter.config[key];
  };
  from_config("base_model_name_or_path", options.base_model_name_or_path);
  from_config("task_type", options.task_type);
  options.fan_in_fan_out = adapter.fan_in_fan_out;
  PeftExtras<T> extras;
  extras.tensors = &adapter.extra_tensors;
  extras.shapes = &adapter.extra_shapes;
  if (adapter.config.contains("modules_to_save") && adapter.config["modules_to_save"].is_array()) {
    extras.modules_to_save = nlohmann::ordered_json::parse(adapter.config["modules_to_save"].dump());
  }
  return extras;
}

/// Adds the extra tensors (with their original shapes when known) under `base_model.model.<key>`.
template <class T>
void add_extras(SafetensorsWriter& writer, const PeftExtras<T>& extras, Dtype dtype) {
  if (extras.tensors == nullptr) return;
  for (const auto& [key, value] : *extras.tensors) {
    const std::string name = peft_module_prefix + key;
    if (extras.shapes != nullptr && extras.shapes->count(key) != 0) {
      writer.add(name, value, dtype, extras.shapes->at(key));
    } else {
      writer.add(name, value, dtype);
    }
  }
}

/// The fields every PEFT config has, from the save options, as (key, value) pairs for `sorted_config`.
template <class Options>
std::map<std::string, nlohmann::ordered_json> common_config(const Options& options, const std::set<std::string>& targets,
                                                            const nlohmann::ordered_json& modules_to_save) {
  const auto or_null = [](const std::string& s) { return s.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(s); };
  std::map<std::string, nlohmann::ordered_json> config;
  config["base_model_name_or_path"] = or_null(options.base_model_name_or_path);
  config["bias"] = "none";
  config["fan_in_fan_out"] = options.fan_in_fan_out;
  config["inference_mode"] = true;
  config["layers_pattern"] = nullptr;
  config["layers_to_transform"] = nullptr;
  config["modules_to_save"] = modules_to_save;
  config["revision"] = nullptr;
  config["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  config["task_type"] = or_null(options.task_type);
  return config;
}

/// A config object with its keys in alphabetical order, as PEFT writes them (values keep their own order).
inline nlohmann::ordered_json sorted_config(const std::map<std::string, nlohmann::ordered_json>& fields) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [key, value] : fields) out[key] = value;
  return out;
}

/// Completes and writes a folder: the extras, the common config fields merged with the method's, atomically.
template <class T, class Options>
void save_folder(const char* where, const std::filesystem::path& dir, SafetensorsWriter& writer,
                 const std::map<std::string, nlohmann::ordered_json>& method_fields, const std::set<std::string>& targets,
                 const PeftExtras<T>& extras, const Options& options) {
  add_extras(writer, extras, options.dtype);
  auto config = common_config(options, targets, extras.modules_to_save);
  for (const auto& [key, value] : method_fields) config[key] = value;
  write_folder(where, dir, writer, sorted_config(config));
}

}  // namespace detail
}  // namespace lorakit::io
