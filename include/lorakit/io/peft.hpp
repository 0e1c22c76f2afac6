// HuggingFace PEFT adapters on disk: a folder with adapter_model.safetensors and adapter_config.json, read into
// and written from lorakit adapters, so that a LoRA trained with lorakit loads in PEFT and the reverse.
//
// LoRA mapping (see docs/peft.md): the module `m` has the tensors `base_model.model.<m>.lora_A.weight` [r x in]
// and `base_model.model.<m>.lora_B.weight` [out x r]; its rank and alpha are `r` and `lora_alpha` unless a key of
// `rank_pattern` / `alpha_pattern` matches it; the scaling is alpha / r (alpha / sqrt(r) with `use_rslora`).
// VeRA mapping: `base_model.model.<m>.vera_lambda_b` [out] and `.vera_lambda_d` [r] per module, and with
// `save_projection` the shared `base_model.vera_A` [r x max_in] and `base_model.vera_B` [max_out x r].
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/detail/branch.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/adapter/vera.hpp"
#include "lorakit/io/peft_config.hpp"
#include "lorakit/io/safetensors.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

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

/// A PEFT LoRA adapter as read from its folder.
template <class T>
struct PeftAdapter {
  /// One LoRA per adapted module, named by the module path (e.g. `transformer.h.0.attn.c_attn`), in model order
  /// (names sorted with digit runs compared as numbers).
  AdapterSet<Lora<T>> adapters;
  /// Tensors that are not LoRA factors (e.g. a `modules_to_save` head such as `score.weight`), by their key
  /// without `base_model.model.`, as matrices (see SafetensorsReader::matrix); their shapes are in extra_shapes.
  std::map<std::string, Matrix<T>> extra_tensors;
  std::map<std::string, std::vector<std::int64_t>> extra_shapes;
  /// adapter_config.json as read (every field, including the ones lorakit does not use).
  nlohmann::json config;
  /// PEFT's `fan_in_fan_out`: the base weights are stored [in x out] (GPT-2's Conv1D), so a merge transposes
  /// the update. The factors A [r x in] and B [out x r] are the same either way.
  bool fan_in_fan_out = false;

  /// W += the update of `module`, transposed when fan_in_fan_out (W is then [in x out]).
  void merge_into(const std::string& module, MatrixRef<T> W) const { merge_peft_layer(adapters.at(module), fan_in_fan_out, W); }
  void unmerge_from(const std::string& module, MatrixRef<T> W) const {
    unmerge_peft_layer(adapters.at(module), fan_in_fan_out, W);
  }
};

/// What save_peft writes besides the adapters.
struct PeftSaveOptions {
  std::string base_model_name_or_path;  ///< e.g. "gpt2" (empty: null)
  std::string task_type;                ///< e.g. "CAUSAL_LM", "SEQ_CLS" (empty: null)
  Dtype dtype = Dtype::F32;             ///< element type of the saved tensors (F32, F16, BF16; F64 also works)
  bool fan_in_fan_out = false;          ///< the base model stores these weights [in x out] (GPT-2)
};

namespace detail {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// A tensor name without PEFT's `base_model.model.` prefix.
inline std::string strip_module_prefix(const std::string& name) {
  const std::string prefix = peft_module_prefix;
  return name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
}

/// A 2-D tensor of `reader` as a matrix. Errors (IoError): another number of dimensions.
template <class T>
Matrix<T> read_2d(const SafetensorsReader& reader, const ConfigFields& fields, const std::string& name) {
  const auto& shape = reader.info(name).shape;
  if (shape.size() != 2) {
    fields.fail("tensor '", name, "' has shape ", shape_string(shape),
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
        fields.fail("tensor '", name, "' has the non-finite value ", static_cast<double>(m(i, j)), " at [", i, ", ", j, "]");
      }
    }
  }
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
  // The first value to reach the top count wins ties (counts only grow one at a time).
  return best;
}

/// The last component of a module path ("transformer.h.0.attn.c_attn" -> "c_attn").
inline std::string last_component(const std::string& module) {
  const auto dot = module.rfind('.');
  return dot == std::string::npos ? module : module.substr(dot + 1);
}

/// Creates the adapter folder. Errors (IoError): it cannot be created.
inline void create_folder(const char* where, const std::filesystem::path& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error || !std::filesystem::is_directory(dir)) {
    lorakit::detail::fail<IoError>(where, "cannot create the folder '", dir.string(), "': ", error.message());
  }
}

/// Opens the weights of a PEFT folder. Errors (IoError): only a pickle checkpoint is there.
inline SafetensorsReader open_peft_weights(const char* where, const std::filesystem::path& dir) {
  const auto weights = dir / peft_weights_file;
  if (!std::filesystem::exists(weights) && std::filesystem::exists(dir / "adapter_model.bin")) {
    lorakit::detail::fail<IoError>(where, "'", dir.string(),
                                   "' has adapter_model.bin (a PyTorch pickle) but no adapter_model.safetensors; "
                                   "save it from PEFT with safe_serialization=True");
  }
  return SafetensorsReader(weights);
}

/// Writes the two files of an adapter folder (creating it if needed), each atomically.
inline void write_folder(const char* where, const std::filesystem::path& dir, const SafetensorsWriter& writer,
                         const nlohmann::ordered_json& config) {
  create_folder(where, dir);
  writer.write(dir / peft_weights_file);
  write_json_atomically(where, dir / peft_config_file, config);
}

/// Everything save_peft needs besides the adapters.
template <class T>
struct PeftExtras {
  const std::map<std::string, Matrix<T>>* tensors = nullptr;
  const std::map<std::string, std::vector<std::int64_t>>* shapes = nullptr;
  nlohmann::ordered_json modules_to_save;  // null unless the adapter was loaded with a list
};

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

template <class T>
void save_lora(const char* where, const std::filesystem::path& dir, const AdapterSet<Lora<T>>& adapters,
               const PeftExtras<T>& extras, const PeftSaveOptions& options) {
  if (adapters.empty()) lorakit::detail::fail<ValueError>(where, "adapters is empty, expected at least one module");
  std::vector<std::pair<Index, double>> rank_alpha;
  std::vector<std::pair<std::string, double>> ranks, alphas;
  std::set<std::string> targets;
  const Lora<T>& first = adapters.begin()->second;
  for (const auto& [name, lora] : adapters) {
    if (lora.config().use_rslora != first.config().use_rslora) {
      lorakit::detail::fail<ValueError>(where, "module '", name, "' has use_rslora = ", lora.config().use_rslora,
                                        " but '", adapters.begin()->first, "' has ", first.config().use_rslora,
                                        "; PEFT has one use_rslora for all modules");
    }
    rank_alpha.emplace_back(lora.rank(), lora.config().alpha);
    ranks.emplace_back(name, static_cast<double>(lora.rank()));
    alphas.emplace_back(name, lora.config().alpha);
    targets.insert(last_component(name));
  }
  const auto [r, alpha] = most_common(rank_alpha);

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  const std::string prefix = peft_module_prefix;
  for (const auto& [name, lora] : adapters) {
    writer.add(prefix + name + ".lora_A.weight", lora.A(), options.dtype);
    writer.add(prefix + name + ".lora_B.weight", lora.B(), options.dtype);
  }
  add_extras(writer, extras, options.dtype);

  auto config = common_config(options, targets, extras.modules_to_save);
  config["alpha_pattern"] = pattern_json(PeftPattern::build(alphas, alpha));
  config["init_lora_weights"] = true;
  config["lora_alpha"] = json_number(alpha);
  config["lora_dropout"] = first.config().dropout;
  config["peft_type"] = "LORA";
  config["r"] = r;
  config["rank_pattern"] = pattern_json(PeftPattern::build(ranks, static_cast<double>(r)));
  config["use_rslora"] = first.config().use_rslora;

  write_folder(where, dir, writer, sorted_config(config));
}

}  // namespace detail

/// Reads a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, as written by
/// `model.save_pretrained(dir)`), converting the tensors to T.
///
/// The config's `r`, `lora_alpha`, `rank_pattern`, `alpha_pattern`, `use_rslora`, `lora_dropout` and
/// `fan_in_fan_out` are used (PEFT's defaults when absent); other keys are kept in `config` and otherwise ignored.
/// Tensor pairs `<module>.lora_A.weight` / `<module>.lora_B.weight` become `Lora<T>` adapters; every other tensor
/// goes to `extra_tensors`.
/// Errors (IoError, naming the file and the tensor or field): a missing or malformed file, `peft_type` not "LORA",
/// DoRA (`use_dora`), a lora_A without its lora_B or the reverse, factors whose rank differs from the config's.
template <class T>
PeftAdapter<T> load_peft(const std::filesystem::path& dir) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  constexpr const char* where = "load_peft";
  const auto fields = detail::ConfigFields::read_peft(where, dir, "LORA", " (VeRA adapters are read by load_peft_vera)");
  const nlohmann::ordered_json& json = fields.json();
  if (fields.boolean("use_dora", false)) fields.fail("use_dora is true: DoRA adapters are not supported");
  LoraConfig base;
  base.rank = static_cast<Index>(fields.positive_integer("r", 8));
  base.alpha = fields.number("lora_alpha", 8);
  base.use_rslora = fields.boolean("use_rslora", false);
  base.dropout = fields.number("lora_dropout", 0);
  base.init = LoraInit::zeros;
  const PeftPattern ranks = fields.pattern("rank_pattern"), alphas = fields.pattern("alpha_pattern");

  PeftAdapter<T> out;
  out.fan_in_fan_out = fields.boolean("fan_in_fan_out", false);
  out.config = nlohmann::json::parse(json.dump());

  const SafetensorsReader reader = detail::open_peft_weights(where, dir);
  const detail::ConfigFields weights = fields.about(reader.path());  // errors about tensors name the weights file
  std::map<std::string, std::pair<std::string, std::string>> factors;  // module -> (lora_A name, lora_B name)
  const std::string suffix_a = ".lora_A.weight", suffix_b = ".lora_B.weight";
  for (const auto& tensor : reader.tensors()) {
    const std::string key = detail::strip_module_prefix(tensor.name);
    if (detail::ends_with(key, suffix_a)) {
      factors[key.substr(0, key.size() - suffix_a.size())].first = tensor.name;
    } else if (detail::ends_with(key, suffix_b)) {
      factors[key.substr(0, key.size() - suffix_b.size())].second = tensor.name;
    } else {
      out.extra_tensors.emplace(key, reader.matrix<T>(tensor.name));
      out.extra_shapes.emplace(key, tensor.shape);
    }
  }
  std::vector<std::string> modules;
  for (const auto& entry : factors) modules.push_back(entry.first);
  std::sort(modules.begin(), modules.end(), detail::natural_less);
  for (const auto& module : modules) {
    const auto& [a_name, b_name] = factors.at(module);
    if (a_name.empty() || b_name.empty()) {
      weights.fail("module '", module, "' has ", a_name.empty() ? "lora_B but no lora_A" : "lora_A but no lora_B");
    }
    LoraConfig config = base;
    const double rank = ranks.value_for(module, static_cast<double>(base.rank));
    if (!(rank >= 1 && rank <= 1e9 && std::floor(rank) == rank)) {
      fields.fail("rank_pattern gives module '", module, "' the rank ", rank, ", expected a positive integer");
    }
    config.rank = static_cast<Index>(rank);
    config.alpha = alphas.value_for(module, base.alpha);
    Matrix<T> A = detail::read_2d<T>(reader, weights, a_name);
    Matrix<T> B = detail::read_2d<T>(reader, weights, b_name);
    if (A.rows() != config.rank) {
      weights.fail("tensor '", a_name, "' has ", A.rows(), " rows, but the config gives module '", module, "' rank ",
                   rank, " (r or rank_pattern)");
    }
    if (B.cols() != A.rows()) {
      weights.fail("tensor '", b_name, "' has ", B.cols(), " columns, expected the rank ", A.rows(), " of '", a_name, "'");
    }
    detail::check_finite_tensor(weights, a_name, A);
    detail::check_finite_tensor(weights, b_name, B);
    try {
      // The factors are moved in rather than passed to Lora::from_factors, whose checks were just made (with
      // errors that name the file's tensors).
      Lora<T> lora(A.cols(), B.rows(), config);
      lora.A() = std::move(A);
      lora.B() = std::move(B);
      out.adapters.add(module, std::move(lora));
    } catch (const Error& e) {
      weights.fail("module '", module, "': ", e.what());
    }
  }
  return out;
}

/// Writes `adapters` as a PEFT LoRA folder that `PeftModel.from_pretrained(base, dir)` loads: the tensors (in
/// `options.dtype`) and adapter_config.json with `r` and `lora_alpha` set to the most common (rank, alpha) pair,
/// `rank_pattern` / `alpha_pattern` keyed by the full module names of the modules that differ, and
/// `target_modules` = the distinct last components of the module names. Each file is replaced atomically; the
/// folder is created if needed. Errors: an empty set, modules that disagree on use_rslora (ValueError), a value
/// that overflows the dtype (ValueError, before anything is written), the folder cannot be written (IoError).
template <class T>
void save_peft(const std::filesystem::path& dir, const AdapterSet<Lora<T>>& adapters,
               const PeftSaveOptions& options = {}) {
  detail::save_lora<T>("save_peft", dir, adapters, {}, options);
}

/// Writes a PeftAdapter back: its adapters, its extra tensors (with their original shapes), its
/// fan_in_fan_out and its config's modules_to_save; base_model_name_or_path and task_type come from `options`
/// or, when empty there, from the adapter's config.
template <class T>
void save_peft(const std::filesystem::path& dir, const PeftAdapter<T>& adapter, PeftSaveOptions options = {}) {
  const auto from_config = [&](const char* key, std::string& field) {
    if (field.empty() && adapter.config.contains(key) && adapter.config[key].is_string()) field = adapter.config[key];
  };
  from_config("base_model_name_or_path", options.base_model_name_or_path);
  from_config("task_type", options.task_type);
  options.fan_in_fan_out = adapter.fan_in_fan_out;
  detail::PeftExtras<T> extras;
  extras.tensors = &adapter.extra_tensors;
  extras.shapes = &adapter.extra_shapes;
  if (adapter.config.contains("modules_to_save") && adapter.config["modules_to_save"].is_array()) {
    extras.modules_to_save = nlohmann::ordered_json::parse(adapter.config["modules_to_save"].dump());
  }
  detail::save_lora<T>("save_peft", dir, adapter.adapters, extras, options);
}

/// A PEFT VeRA adapter as read from its folder.
template <class T>
struct PeftVeraAdapter {
  /// The shared projections, regenerated from `projection_prng_key` (and checked against the stored ones).
  std::shared_ptr<const VeraProjections<T>> projections;
  /// One Vera per adapted module, named by the module path, in model order.
  AdapterSet<Vera<T>> adapters;
  /// Tensors that are neither scaling vectors nor projections, by their key without `base_model.model.`.
  std::map<std::string, Matrix<T>> extra_tensors;
  std::map<std::string, std::vector<std::int64_t>> extra_shapes;
  nlohmann::json config;
  bool fan_in_fan_out = false;
};

/// What save_peft_vera writes besides the adapters.
struct PeftVeraSaveOptions {
  std::string base_model_name_or_path;
  std::string task_type;
  Dtype dtype = Dtype::F32;
  bool fan_in_fan_out = false;
  /// Store vera_A / vera_B (PEFT's default). PEFT regenerates missing projections with torch's generator, which
  /// differs from lorakit's, so only a folder saved with the projections loads in PEFT with the same weights.
  bool save_projection = true;
};

/// Writes VeRA adapters (all over the same projections) as a PEFT folder: `peft_type: "VERA"`, `r`,
/// `projection_prng_key` (the projections' seed), `d_initial`, `vera_dropout` and `save_projection` from the first
/// adapter, the scaling vectors of each module and, with save_projection, the projections.
/// Errors (ValueError): an empty set, adapters over different projections, save_projection = false for projections
/// that are not `regenerable()`, a value that overflows the dtype; (IoError) the folder cannot be written.
template <class T>
void save_peft_vera(const std::filesystem::path& dir, const AdapterSet<Vera<T>>& adapters,
                    const PeftVeraSaveOptions& options = {}) {
  constexpr const char* where = "save_peft_vera";
  if (adapters.empty()) lorakit::detail::fail<ValueError>(where, "adapters is empty, expected at least one module");
  const Vera<T>& first = adapters.begin()->second;
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  std::set<std::string> targets;
  const std::string prefix = peft_module_prefix;
  for (const auto& [name, vera] : adapters) {
    if (vera.projections() != first.projections()) {
      lorakit::detail::fail<ValueError>(where, "module '", name, "' uses other projections than '",
                                        adapters.begin()->first, "'; PEFT shares one pair for all modules");
    }
    writer.add(prefix + name + ".vera_lambda_b", vera.lambda_b(), options.dtype);
    writer.add(prefix + name + ".vera_lambda_d", vera.lambda_d(), options.dtype);
    targets.insert(detail::last_component(name));
  }
  const VeraProjections<T>& projections = *first.projections();
  if (!options.save_projection && !projections.regenerable()) {
    lorakit::detail::fail<ValueError>(where, "save_projection is false, but the projections were given as matrices "
                                      "(VeraProjections::from_matrices) and cannot be drawn again from "
                                      "projection_prng_key = ", projections.seed(), "; save them");
  }
  if (options.save_projection) {
    writer.add("base_model.vera_A", projections.A(), options.dtype);
    writer.add("base_model.vera_B", projections.B(), options.dtype);
  }
  auto config = detail::common_config(options, targets, nullptr);
  config["d_initial"] = first.config().d_initial;
  config["init_weights"] = true;
  config["peft_type"] = "VERA";
  config["projection_prng_key"] = projections.seed();
  config["r"] = projections.rank();
  config["save_projection"] = options.save_projection;
  config["vera_dropout"] = first.config().dropout;
  detail::write_folder(where, dir, writer, detail::sorted_config(config));
}

/// Reads a PEFT VeRA folder. VeRA files do not record each layer's input size, so `in_features` gives it per module
/// (its out_features is the length of vera_lambda_b). The projections are regenerated from `projection_prng_key`
/// Stored projections (PEFT's save_projection) are used: when they equal lorakit's draws from
/// `projection_prng_key` to their dtype's rounding (a folder lorakit wrote), the result's projections are those
/// draws (`regenerable()`); otherwise (PEFT drew them with torch's generator) the stored matrices, through
/// `VeraProjections::from_matrices`. Without stored projections they are drawn from the seed with lorakit's
/// generator at the largest in and out of the layers.
/// Errors (IoError): a malformed folder, `peft_type` not "VERA", a module missing from `in_features` or one of its
/// two vectors, vectors of the wrong length, non-finite or mis-shaped stored projections.
template <class T>
PeftVeraAdapter<T> load_peft_vera(const std::filesystem::path& dir, const std::map<std::string, Index>& in_features) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  constexpr const char* where = "load_peft_vera";
  const auto fields = detail::ConfigFields::read_peft(where, dir, "VERA", " (LoRA adapters are read by load_peft)");
  const nlohmann::ordered_json& json = fields.json();
  VeraConfig config;
  config.rank = static_cast<Index>(fields.positive_integer("r", 256));
  config.d_initial = fields.number("d_initial", 0.1);
  config.dropout = fields.number("vera_dropout", 0);
  const auto seed = json.find("projection_prng_key");
  if (seed != json.end() && !seed->is_number_unsigned() && !(seed->is_number_integer() && seed->get<std::int64_t>() >= 0)) {
    fields.fail("projection_prng_key is ", seed->dump(), ", expected a non-negative integer");
  }
  config.projection_seed = seed == json.end() ? 0 : seed->get<std::uint64_t>();

  PeftVeraAdapter<T> out;
  out.fan_in_fan_out = fields.boolean("fan_in_fan_out", false);
  out.config = nlohmann::json::parse(json.dump());
  const SafetensorsReader reader = detail::open_peft_weights(where, dir);
  const detail::ConfigFields weights = fields.about(reader.path());
  std::map<std::string, std::pair<std::string, std::string>> vectors;  // module -> (lambda_b name, lambda_d name)
  std::string stored_A, stored_B;
  for (const auto& tensor : reader.tensors()) {
    const std::string key = detail::strip_module_prefix(tensor.name);
    if (tensor.name == "base_model.vera_A") {
      stored_A = tensor.name;
    } else if (tensor.name == "base_model.vera_B") {
      stored_B = tensor.name;
    } else if (detail::ends_with(key, ".vera_lambda_b")) {
      vectors[key.substr(0, key.size() - 14)].first = tensor.name;
    } else if (detail::ends_with(key, ".vera_lambda_d")) {
      vectors[key.substr(0, key.size() - 14)].second = tensor.name;
    } else {
      out.extra_tensors.emplace(key, reader.matrix<T>(tensor.name));
      out.extra_shapes.emplace(key, tensor.shape);
    }
  }
  if (stored_A.empty() != stored_B.empty()) weights.fail("only one of base_model.vera_A and base_model.vera_B is stored");

  std::vector<std::string> modules;
  Index max_in = 1, max_out = 1;
  for (const auto& [module, names] : vectors) {
    if (names.first.empty() || names.second.empty()) {
      weights.fail("module '", module, "' has only one of vera_lambda_b and vera_lambda_d");
    }
    if (in_features.count(module) == 0) {
      lorakit::detail::fail<ValueError>(where, "in_features has no entry for module '", module, "'");
    }
    modules.push_back(module);
    max_in = std::max(max_in, in_features.at(module));
    max_out = std::max(max_out, static_cast<Index>(reader.info(names.first).numel()));
  }
  std::sort(modules.begin(), modules.end(), detail::natural_less);

  if (!stored_A.empty()) {
    const Matrix<T> A = detail::read_2d<T>(reader, weights, stored_A), B = detail::read_2d<T>(reader, weights, stored_B);
    if (A.rows() != config.rank || B.cols() != config.rank) {
      weights.fail("vera_A is [", A.rows(), " x ", A.cols(), "] and vera_B [", B.rows(), " x ", B.cols(),
                   "], expected rank r = ", config.rank);
    }
    // lorakit's own checkpoints hold its draws from the seed: keep them regenerable. Others (PEFT draws with
    // torch's generator) are used as stored.
    auto regenerated = std::make_shared<const VeraProjections<T>>(config.rank, A.cols(), B.rows(), config.projection_seed);
    // Relative rounding of the stored dtype (bfloat16's for both 16-bit formats), plus F16's subnormal spacing.
    const double precision = dtype_size(reader.info(stored_A).dtype) == 2 ? 0x1p-8 : 0x1p-24;
    const auto beyond_rounding = [&](const Matrix<T>& stored, const Matrix<T>& drawn) {
      return ((stored - drawn).cwiseAbs() - drawn.cwiseAbs() * T(precision)).maxCoeff();
    };
    if (beyond_rounding(A, regenerated->A()) <= 0x1p-24 && beyond_rounding(B, regenerated->B()) <= 0x1p-24) {
      out.projections = std::move(regenerated);
    } else {
      detail::check_finite_tensor(weights, stored_A, A);
      detail::check_finite_tensor(weights, stored_B, B);
      out.projections = VeraProjections<T>::from_matrices(A, B, config.projection_seed);
    }
  } else {
    out.projections = std::make_shared<const VeraProjections<T>>(config.rank, max_in, max_out, config.projection_seed);
  }

  for (const auto& module : modules) {
    const auto& [b_name, d_name] = vectors.at(module);
    const Vector<T> lambda_b = reader.vector<T>(b_name), lambda_d = reader.vector<T>(d_name);
    if (reader.info(b_name).shape.size() != 1 || reader.info(d_name).shape.size() != 1 || lambda_d.size() != config.rank) {
      weights.fail("module '", module, "': vera_lambda_b has shape ", detail::shape_string(reader.info(b_name).shape),
                   " and vera_lambda_d ", detail::shape_string(reader.info(d_name).shape), ", expected [out] and [",
                   config.rank, "]");
    }
    detail::check_finite_tensor(weights, b_name, lambda_b);
    detail::check_finite_tensor(weights, d_name, lambda_d);
    try {
      Vera<T> vera(out.projections, in_features.at(module), lambda_b.size(), config);
      vera.lambda_b() = lambda_b;
      vera.lambda_d() = lambda_d;
      out.adapters.add(module, std::move(vera));
    } catch (const Error& e) {
      weights.fail("module '", module, "': ", e.what());
    }
  }
  return out;
}

}  // namespace lorakit::io
