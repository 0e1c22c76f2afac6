// PEFT's DoRA: the LoRA method (`peft_type: "LORA"`) with `use_dora: true`. The module `m` has, besides LoRA's
// `base_model.model.<m>.lora_A.weight` [r x in] and `.lora_B.weight` [out x r], its magnitude
// `base_model.model.<m>.lora_magnitude_vector` [out] (the key PEFT's LoraModel._get_adapter_state_dict writes:
// the parameter `lora_magnitude_vector.<adapter>.weight` without its adapter name and ".weight"; the spelling with
// ".weight" is read too, as LoraModel._remap_adapter_state_dict_for_load accepts it). Rank, alpha, patterns,
// rsLoRA, dropout and fan_in_fan_out as in io/peft_lora.hpp. Users include io/peft.hpp.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/dora.hpp"
#include "lorakit/io/peft_folder.hpp"
#include "lorakit/io/peft_lora.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

/// A PEFT DoRA adapter as read from its folder (the fields as PeftAdapter's).
template <class T>
struct PeftDoraAdapter {
  /// One Dora per adapted module, named by the module path, in model order.
  AdapterSet<Dora<T>> adapters;
  /// Tensors that are not DoRA's, by their key without `base_model.model.` (see PeftAdapter).
  std::map<std::string, Matrix<T>> extra_tensors;
  std::map<std::string, std::vector<std::int64_t>> extra_shapes;
  /// adapter_config.json as read.
  nlohmann::json config;
  /// PEFT's `fan_in_fan_out`: the base weights are stored [in x out]; pass `WeightLayout::in_by_out` to the
  /// layers (`AdaptedLinear::owning(W, adapter, layout)`).
  bool fan_in_fan_out = false;
};

namespace detail {

/// DoRA's tensors per module: LoRA's and the magnitude (also read with ".weight").
inline PeftMethod dora_method() {
  return {"LORA",
          " (VeRA adapters are read by load_peft_vera)",
          {{".lora_A.weight", "lora_A"}, {".lora_B.weight", "lora_B"}, {".lora_magnitude_vector", "lora_magnitude_vector"}},
          {},
          {{".lora_magnitude_vector.weight", 2}}};
}

template <class T>
void save_dora(const char* where, const std::filesystem::path& dir, const AdapterSet<Dora<T>>& adapters,
               const PeftExtras<T>& extras, const PeftSaveOptions& options) {
  std::map<std::string, nlohmann::ordered_json> fields;
  fields["use_dora"] = true;
  save_lora_family<T>(where, dir, adapters, extras, options, std::move(fields),
                      [&](SafetensorsWriter& writer, const std::string& module, const Dora<T>& dora) {
                        writer.add(module + ".lora_magnitude_vector", dora.magnitude(), options.dtype);
                      });
}

}  // namespace detail

/// Reads a PEFT DoRA adapter folder (`use_dora: true`), converting the tensors to T. Each module becomes
/// `Dora<T>::from_factors(A, B, magnitude, config)`, to be used as `AdaptedLinear<T, Dora<T>>` over the base
/// weight it was trained on. Errors (IoError, naming the file and the tensor or field): those of load_peft
/// (io/peft_lora.hpp), `use_dora` not true (a LoRA adapter: load_peft), a module without its magnitude or with two,
/// a magnitude that is not one-dimensional of length out (the rows of lora_B), a non-finite magnitude.
template <class T>
PeftDoraAdapter<T> load_peft_dora(const std::filesystem::path& dir) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  constexpr const char* where = "load_peft_dora";
  const detail::PeftFolder folder = detail::read_peft_folder(where, dir, detail::dora_method());
  const detail::ConfigFields& fields = folder.fields;
  const detail::ConfigFields& weights = folder.weights;
  if (!fields.boolean("use_dora", false)) fields.fail("use_dora is not true: a LoRA adapter (read it with load_peft)");
  const detail::LoraFields lora_fields = detail::read_lora_fields(fields);

  PeftDoraAdapter<T> out;
  detail::read_common<T>(folder, out);
  for (const auto& [module, names] : folder.modules) {
    detail::LoraModule<T> read = detail::read_lora_module<T>(folder, lora_fields, module, names[0], names[1]);
    const std::string& m_name = names[2];
    const auto& m_shape = folder.reader.info(m_name).shape;
    if (m_shape.size() != 1 || m_shape[0] != read.B.rows()) {
      weights.fail("tensor '", detail::shown(m_name), "' has shape ", detail::shape_string(m_shape), ", expected [",
                   read.B.rows(), "] (the rows of lora_B)");
    }
    Vector<T> magnitude = folder.reader.vector<T>(m_name);
    detail::check_finite_tensor(weights, m_name, magnitude);
    try {
      out.adapters.add(module, Dora<T>::from_factors(std::move(read.A), std::move(read.B), std::move(magnitude), read.config));
    } catch (const Error& e) {
      weights.fail("module '", detail::shown(module), "': ", e.what());
    }
  }
  return out;
}

/// Writes `adapters` as a PEFT DoRA folder that `PeftModel.from_pretrained(base, dir)` loads: save_peft's folder
/// (io/peft_lora.hpp) with `use_dora: true` and each module's `lora_magnitude_vector`. Errors: as save_peft.
template <class T>
void save_peft_dora(const std::filesystem::path& dir, const AdapterSet<Dora<T>>& adapters,
                    const PeftSaveOptions& options = {}) {
  detail::save_dora<T>("save_peft_dora", dir, adapters, {}, options);
}

/// Writes a PeftDoraAdapter back, with its extra tensors, fan_in_fan_out and modules_to_save (as save_peft's
/// overload for PeftAdapter).
template <class T>
void save_peft_dora(const std::filesystem::path& dir, const PeftDoraAdapter<T>& adapter, PeftSaveOptions options = {}) {
  const detail::PeftExtras<T> extras = detail::extras_of<T>(adapter, options);
  detail::save_dora<T>("save_peft_dora", dir, adapter.adapters, extras, options);
}

}  // namespace lorakit::io
