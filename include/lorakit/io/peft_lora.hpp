// PEFT's LoRA method (`peft_type: "LORA"`): the module `m` has the tensors `base_model.model.<m>.lora_A.weight`
// [r x in] and `base_model.model.<m>.lora_B.weight` [out x r]; its rank and alpha are `r` and `lora_alpha` unless a
// key of `rank_pattern` / `alpha_pattern` matches it; the scaling is alpha / r (alpha / sqrt(r) with `use_rslora`).
// Users include io/peft.hpp.
#pragma once

#include "lorakit/adapter/adapted_linear.hpp"
#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/io/peft_folder.hpp"
#include "lorakit/io/peft_init.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

/// The layout of a base weight that PEFT's `fan_in_fan_out` describes: [in x out] (GPT-2's Conv1D) when true.
inline WeightLayout peft_weight_layout(bool fan_in_fan_out) {
  return fan_in_fan_out ? WeightLayout::in_by_out : WeightLayout::out_by_in;
}

/// W += s (B A) for a weight stored as PEFT stores it: [out x in], or with `fan_in_fan_out` [in x out], where the
/// update is transposed (`lorakit::merge_into` with the layout). Errors: W of the wrong shape (ShapeError); a
/// non-finite result (ValueError; W is then left unchanged).
template <class T>
void merge_peft_layer(const Lora<T>& lora, bool fan_in_fan_out, MatrixRef<T> W) {
  lorakit::detail::add_update("merge_peft_layer", lora, W, peft_weight_layout(fan_in_fan_out), T(1));
}

/// The inverse of merge_peft_layer: W -= s (B A), transposed with `fan_in_fan_out`.
template <class T>
void unmerge_peft_layer(const Lora<T>& lora, bool fan_in_fan_out, MatrixRef<T> W) {
  lorakit::detail::add_update("unmerge_peft_layer", lora, W, peft_weight_layout(fan_in_fan_out), T(-1));
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
  /// PEFT's `init_lora_weights`: with PiSSA, OLoRA or LoRA-GA (`changes_base_weight()`) the factors belong to the
  /// residual base weight that initialization left, not to the original one (io/peft_init.hpp).
  PeftInitLoraWeights init_lora_weights;

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
  /// `init_lora_weights` to write (empty: `true`, or a loaded adapter's value); e.g. "pissa" for an adapter that
  /// goes with its residual base weight (io/peft_init.hpp).
  std::optional<PeftInitLoraWeights> init_lora_weights;
};

namespace detail {

/// LoRA's tensors per module.
inline PeftMethod lora_method() {
  return {"LORA", " (VeRA adapters are read by load_peft_vera)", {{".lora_A.weight", "lora_A"}, {".lora_B.weight", "lora_B"}}, {}, {}};
}

/// Writes a folder of PEFT's LoRA method from adapters with LoRA's factors and config (`Lora<T>`, `Dora<T>`):
/// `add_tensors(writer, prefix + name, adapter)` adds what a variant stores besides lora_A and lora_B, and
/// `method_fields` what it sets in the config besides LoRA's (e.g. `use_dora`).
template <class T, class Adapter, class AddTensors>
void save_lora_family(const char* where, const std::filesystem::path& dir, const AdapterSet<Adapter>& adapters,
                      const PeftExtras<T>& extras, const PeftSaveOptions& options,
                      std::map<std::string, nlohmann::ordered_json> config, const AddTensors& add_tensors) {
  if (adapters.empty()) lorakit::detail::fail<ValueError>(where, "adapters is empty, expected at least one module");
  std::vector<std::pair<Index, double>> rank_alpha;
  std::vector<std::pair<std::string, double>> ranks, alphas;
  std::set<std::string> targets;
  const Adapter& first = adapters.begin()->second;
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
    add_tensors(writer, prefix + name, lora);
  }
  config["alpha_pattern"] = pattern_json(PeftPattern::build(alphas, alpha));
  config["init_lora_weights"] = options.init_lora_weights.value_or(PeftInitLoraWeights{}).to_json();
  config["lora_alpha"] = json_number(alpha);
  config["lora_dropout"] = first.config().dropout;
  config["peft_type"] = "LORA";
  config["r"] = r;
  config["rank_pattern"] = pattern_json(PeftPattern::build(ranks, static_cast<double>(r)));
  config["use_rslora"] = first.config().use_rslora;
  save_folder(where, dir, writer, config, targets, extras, options);
}

template <class T>
void save_lora(const char* where, const std::filesystem::path& dir, const AdapterSet<Lora<T>>& adapters,
               const PeftExtras<T>& extras, const PeftSaveOptions& options) {
  save_lora_family<T>(where, dir, adapters, extras, options, {}, [](SafetensorsWriter&, const std::string&, const Lora<T>&) {});
}

/// The config fields of PEFT's LoRA method that every module starts from, and the patterns that override them.
struct LoraFields {
  LoraConfig base;
  PeftPattern ranks, alphas;
};

inline LoraFields read_lora_fields(const ConfigFields& fields) {
  LoraFields out;
  out.base.rank = static_cast<Index>(fields.positive_integer("r", 8));
  out.base.alpha = fields.number("lora_alpha", 8);
  out.base.use_rslora = fields.boolean("use_rslora", false);
  out.base.dropout = fields.number("lora_dropout", 0);
  out.base.init = LoraInit::zeros;
  out.ranks = fields.pattern("rank_pattern");
  out.alphas = fields.pattern("alpha_pattern");
  return out;
}

/// One module's LoRA config and factors A [r x in], B [out x r], checked against the config (rank, a finite
/// scaling in T) and for finite values.
template <class T>
struct LoraModule {
  LoraConfig config;
  Matrix<T> A, B;
};

template <class T>
LoraModule<T> read_lora_module(const PeftFolder& folder, const LoraFields& lora_fields, const std::string& module,
                               const std::string& a_name, const std::string& b_name) {
  const ConfigFields& fields = folder.fields;
  const ConfigFields& weights = folder.weights;
  LoraModule<T> out;
  LoraConfig& config = out.config;
  config = lora_fields.base;
  const double rank = lora_fields.ranks.value_for(module, static_cast<double>(lora_fields.base.rank));
  if (!(rank >= 1 && rank <= 1e9 && std::floor(rank) == rank)) {
    fields.fail("rank_pattern gives module '", shown(module), "' the rank ", rank, ", expected a positive integer");
  }
  config.rank = static_cast<Index>(rank);
  config.alpha = lora_fields.alphas.value_for(module, lora_fields.base.alpha);
  const double scaling = lora_scaling(config.alpha, config.rank, config.use_rslora);
  if (!(std::fabs(scaling) <= static_cast<double>(std::numeric_limits<T>::max()))) {
    fields.fail("module '", shown(module), "' has lora_alpha ", config.alpha, " and rank ", config.rank,
                ": the scaling ", scaling, " is not finite in ", sizeof(T) == 4 ? "float" : "double");
  }
  const auto& a_shape = folder.reader.info(a_name).shape;
  if (a_shape.size() == 2 && a_shape[0] != config.rank) {
    weights.fail("tensor '", shown(a_name), "' has ", a_shape[0], " rows, but the config gives module '",
                 shown(module), "' rank ", rank, " (r or rank_pattern)");
  }
  out.A = read_2d<T>(folder.reader, weights, a_name);
  out.B = read_2d<T>(folder.reader, weights, b_name);
  if (out.B.cols() != out.A.rows()) {
    weights.fail("tensor '", shown(b_name), "' has ", out.B.cols(), " columns, expected the rank ", out.A.rows(),
                 " of '", shown(a_name), "'");
  }
  check_finite_tensor(weights, a_name, out.A);
  check_finite_tensor(weights, b_name, out.B);
  return out;
}

}  // namespace detail

/// Reads a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, as written by
/// `model.save_pretrained(dir)`), converting the tensors to T.
///
/// The config's `r`, `lora_alpha`, `rank_pattern`, `alpha_pattern`, `use_rslora`, `lora_dropout` and
/// `fan_in_fan_out` are used (PEFT's defaults when absent), `init_lora_weights` is read into `init_lora_weights`;
/// other keys are kept in `config` and otherwise ignored.
/// Tensor pairs `<module>.lora_A.weight` / `<module>.lora_B.weight` become `Lora<T>` adapters; every other tensor
/// goes to `extra_tensors`. A folder whose save was interrupted loads as the adapter of its weights file (see
/// io/peft_folder.hpp).
/// Errors (IoError, naming the file and the tensor or field): a missing, special (directory, FIFO, device) or
/// malformed file (io/safetensors.hpp, JSON nested deeper than max_json_depth), `peft_type` not "LORA", an
/// `init_lora_weights` that is not true, false or a string (or a malformed "pissa_niter_N"), DoRA
/// (`use_dora`: read by load_peft_dora, io/peft_dora.hpp), a pattern key that is not a supported regular
/// expression, a lora_A without its lora_B or the
/// reverse, a tensor named both with and without `base_model.model.`, factors whose rank differs from the
/// config's, a non-finite value in any tensor, an alpha whose scaling is not finite in T.
template <class T>
PeftAdapter<T> load_peft(const std::filesystem::path& dir) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  constexpr const char* where = "load_peft";
  const detail::PeftFolder folder = detail::read_peft_folder(where, dir, detail::lora_method());
  const detail::ConfigFields& fields = folder.fields;
  const detail::ConfigFields& weights = folder.weights;
  if (fields.boolean("use_dora", false)) fields.fail("use_dora is true: a DoRA adapter (read it with load_peft_dora)");
  const detail::LoraFields lora_fields = detail::read_lora_fields(fields);

  PeftAdapter<T> out;
  detail::read_common<T>(folder, out);
  out.init_lora_weights = detail::read_init_lora_weights(fields);
  for (const auto& [module, names] : folder.modules) {
    detail::LoraModule<T> read = detail::read_lora_module<T>(folder, lora_fields, module, names[0], names[1]);
    try {
      // The factors are moved in rather than passed to Lora::from_factors, whose checks were just made (with
      // errors that name the file's tensors).
      Lora<T> lora(read.A.cols(), read.B.rows(), read.config);
      lora.A() = std::move(read.A);
      lora.B() = std::move(read.B);
      out.adapters.add(module, std::move(lora));
    } catch (const Error& e) {
      weights.fail("module '", detail::shown(module), "': ", e.what());
    }
  }
  return out;
}

/// Writes `adapters` as a PEFT LoRA folder that `PeftModel.from_pretrained(base, dir)` loads: the tensors (in
/// `options.dtype`) and adapter_config.json with `r` and `lora_alpha` set to the most common (rank, alpha) pair,
/// `rank_pattern` / `alpha_pattern` keyed by the full module names of the modules that differ, and
/// `target_modules` = the distinct last components of the module names. The folder is created if needed and
/// replaced as a whole: a process killed at any moment leaves either the previous adapter or this one
/// (io/peft_folder.hpp). Errors: an empty set, modules that disagree on use_rslora, names that PEFT's patterns
/// cannot tell apart, a value that overflows the dtype (ValueError, before anything is written); the folder
/// cannot be written (IoError).
template <class T>
void save_peft(const std::filesystem::path& dir, const AdapterSet<Lora<T>>& adapters,
               const PeftSaveOptions& options = {}) {
  detail::save_lora<T>("save_peft", dir, adapters, {}, options);
}

/// Writes a PeftAdapter back: its adapters, its extra tensors (with their original shapes), its
/// fan_in_fan_out and its config's modules_to_save; base_model_name_or_path and task_type come from `options`
/// or, when empty there, from the adapter's config, and so does init_lora_weights. Errors: as the overload above,
/// and (ShapeError) an extra tensor whose shape in extra_shapes does not hold its values.
template <class T>
void save_peft(const std::filesystem::path& dir, const PeftAdapter<T>& adapter, PeftSaveOptions options = {}) {
  const detail::PeftExtras<T> extras = detail::extras_of<T>(adapter, options);
  if (!options.init_lora_weights) options.init_lora_weights = adapter.init_lora_weights;
  detail::save_lora<T>("save_peft", dir, adapter.adapters, extras, options);
}

}  // namespace lorakit::io
