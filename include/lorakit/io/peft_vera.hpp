// PEFT's VeRA method (`peft_type: "VERA"`): `base_model.model.<m>.vera_lambda_b` [out] and `.vera_lambda_d` [r] per
// module, and with `save_projection` the shared `base_model.vera_A` [r x max_in] and `base_model.vera_B`
// [max_out x r].
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/vera.hpp"
#include "lorakit/io/peft_folder.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

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

namespace detail {

/// VeRA's tensors per module, and its shared projections.
inline PeftMethod vera_method() {
  return {"VERA", " (LoRA adapters are read by load_peft)",
          {{".vera_lambda_b", "vera_lambda_b"}, {".vera_lambda_d", "vera_lambda_d"}},
          {"base_model.vera_A", "base_model.vera_B"},
          {}};
}

template <class T>
void save_vera(const char* where, const std::filesystem::path& dir, const AdapterSet<Vera<T>>& adapters,
               const PeftExtras<T>& extras, const PeftVeraSaveOptions& options) {
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
    targets.insert(last_component(name));
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
  std::map<std::string, nlohmann::ordered_json> config;
  config["d_initial"] = first.config().d_initial;
  config["init_weights"] = true;
  config["peft_type"] = "VERA";
  config["projection_prng_key"] = projections.seed();
  config["r"] = projections.rank();
  config["save_projection"] = options.save_projection;
  config["vera_dropout"] = first.config().dropout;
  save_folder(where, dir, writer, config, targets, extras, options);
}

}  // namespace detail

/// Writes VeRA adapters (all over the same projections) as a PEFT folder: `peft_type: "VERA"`, `r`,
/// `projection_prng_key` (the projections' seed), `d_initial`, `vera_dropout` and `save_projection` from the first
/// adapter, the scaling vectors of each module and, with save_projection, the projections. The folder is replaced
/// as a whole, as by save_peft.
/// Errors (ValueError, before anything is written): an empty set, adapters over different projections,
/// save_projection = false for projections that are not `regenerable()`, a value that overflows the dtype;
/// (IoError) the folder cannot be written.
template <class T>
void save_peft_vera(const std::filesystem::path& dir, const AdapterSet<Vera<T>>& adapters,
                    const PeftVeraSaveOptions& options = {}) {
  detail::save_vera<T>("save_peft_vera", dir, adapters, {}, options);
}

/// Writes a PeftVeraAdapter back: its adapters, its extra tensors (with their original shapes), its
/// fan_in_fan_out and its config's modules_to_save; base_model_name_or_path and task_type come from `options`
/// or, when empty there, from the adapter's config. Errors: as the overload above, and (ShapeError) an extra
/// tensor whose shape in extra_shapes does not hold its values.
template <class T>
void save_peft_vera(const std::filesystem::path& dir, const PeftVeraAdapter<T>& adapter, PeftVeraSaveOptions options = {}) {
  const detail::PeftExtras<T> extras = detail::extras_of<T>(adapter, options);
  detail::save_vera<T>("save_peft_vera", dir, adapter.adapters, extras, options);
}

/// Reads a PEFT VeRA folder. VeRA files do not record each layer's input size, so `in_features` gives it per module
/// (its out_features is the length of vera_lambda_b).
/// Stored projections (PEFT's save_projection) are used: when they equal lorakit's draws from
/// `projection_prng_key` to their dtype's rounding (a folder lorakit wrote), the result's projections are those
/// draws (`regenerable()`); otherwise (PEFT drew them with torch's generator) the stored matrices, through
/// `VeraProjections::from_matrices`. Without stored projections they are drawn from the seed with lorakit's
/// generator at the largest in and out of the layers. Every size is checked against the file before anything is
/// allocated (an `r` that no stored vector has is refused before projections of that rank are drawn).
/// Errors (IoError, naming the file): a missing, special or malformed file (as load_peft), `peft_type` not
/// "VERA", no module, a module with one of its two vectors only, vectors of the wrong shape, a tensor named both
/// with and without `base_model.model.`, non-finite values in any tensor, mis-shaped stored projections;
/// (ValueError) a module missing from `in_features`, an in_features below 1, projections too large to allocate.
template <class T>
PeftVeraAdapter<T> load_peft_vera(const std::filesystem::path& dir, const std::map<std::string, Index>& in_features) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  constexpr const char* where = "load_peft_vera";
  const detail::PeftFolder folder = detail::read_peft_folder(where, dir, detail::vera_method());
  const detail::ConfigFields& fields = folder.fields;
  const detail::ConfigFields& weights = folder.weights;
  const nlohmann::ordered_json& json = fields.json();
  VeraConfig config;
  config.rank = static_cast<Index>(fields.positive_integer("r", 256));
  config.d_initial = fields.number("d_initial", 0.1);
  config.dropout = fields.number("vera_dropout", 0);
  const auto seed = json.find("projection_prng_key");
  if (seed != json.end() && !seed->is_number_unsigned() && !(seed->is_number_integer() && seed->get<std::int64_t>() >= 0)) {
    fields.fail("projection_prng_key is ", detail::describe(*seed), ", expected a non-negative integer");
  }
  config.projection_seed = seed == json.end() ? 0 : seed->get<std::uint64_t>();

  // Shapes first, from the header: nothing is allocated for a size the file does not hold.
  if (folder.modules.empty()) weights.fail("no tensor ends with .vera_lambda_b / .vera_lambda_d (no VeRA module)");
  Index max_in = 1, max_out = 1;
  for (const auto& [module, names] : folder.modules) {
    const auto& b_shape = folder.reader.info(names[0]).shape;
    const auto& d_shape = folder.reader.info(names[1]).shape;
    if (b_shape.size() != 1 || d_shape.size() != 1 || d_shape[0] != config.rank || b_shape[0] < 1) {
      weights.fail("module '", detail::shown(module), "': vera_lambda_b has shape ", detail::shape_string(b_shape),
                   " and vera_lambda_d ", detail::shape_string(d_shape), ", expected [out] and [", config.rank, "] (r)");
    }
    const auto in = in_features.find(module);
    if (in == in_features.end()) {
      lorakit::detail::fail<ValueError>(where, "in_features has no entry for module '", detail::shown(module), "'");
    }
    if (in->second < 1) {
      lorakit::detail::fail<ValueError>(where, "in_features['", detail::shown(module), "'] is ", in->second,
                                        ", expected at least 1");
    }
    max_in = std::max(max_in, in->second);
    max_out = std::max(max_out, static_cast<Index>(b_shape[0]));
  }
  const bool stored = folder.named.size() == 2;
  if (folder.named.size() == 1) weights.fail("only one of base_model.vera_A and base_model.vera_B is stored");
  if (stored) {
    const auto& a_shape = folder.reader.info("base_model.vera_A").shape;
    const auto& b_shape = folder.reader.info("base_model.vera_B").shape;
    if (a_shape.size() != 2 || b_shape.size() != 2 || a_shape[0] != config.rank || b_shape[1] != config.rank) {
      weights.fail("vera_A has shape ", detail::shape_string(a_shape), " and vera_B ", detail::shape_string(b_shape),
                   ", expected [r, max_in] and [max_out, r] with r = ", config.rank);
    }
  }

  PeftVeraAdapter<T> out;
  detail::read_common<T>(folder, out);
  try {
    if (stored) {
      const Matrix<T> A = folder.reader.matrix<T>("base_model.vera_A"), B = folder.reader.matrix<T>("base_model.vera_B");
      detail::check_finite_tensor(weights, "base_model.vera_A", A);
      detail::check_finite_tensor(weights, "base_model.vera_B", B);
      // lorakit's own checkpoints hold its draws from the seed: keep them regenerable. Others (PEFT draws with
      // torch's generator) are used as stored.
      auto regenerated = std::make_shared<const VeraProjections<T>>(config.rank, A.cols(), B.rows(), config.projection_seed);
      // Relative rounding of the stored dtype (bfloat16's for both 16-bit formats), plus F16's subnormal spacing.
      const double precision = dtype_size(folder.reader.info("base_model.vera_A").dtype) == 2 ? 0x1p-8 : 0x1p-24;
      const auto beyond_rounding = [&](const Matrix<T>& values, const Matrix<T>& drawn) {
        return ((values - drawn).cwiseAbs() - drawn.cwiseAbs() * T(precision)).maxCoeff();
      };
      if (beyond_rounding(A, regenerated->A()) <= 0x1p-24 && beyond_rounding(B, regenerated->B()) <= 0x1p-24) {
        out.projections = std::move(regenerated);
      } else {
        out.projections = VeraProjections<T>::from_matrices(A, B, config.projection_seed);
      }
    } else {
      out.projections = std::make_shared<const VeraProjections<T>>(config.rank, max_in, max_out, config.projection_seed);
    }
  } catch (const IoError&) {
    throw;  // already names the file
  } catch (const Error& e) {
    weights.fail("the projections: ", e.what());
  } catch (const std::bad_alloc&) {
    lorakit::detail::fail<ValueError>(where, "the projections of rank ", config.rank, " for layers up to ", max_in,
                                      " inputs and ", max_out, " outputs cannot be allocated");
  }

  for (const auto& [module, names] : folder.modules) {
    const Vector<T> lambda_b = folder.reader.vector<T>(names[0]), lambda_d = folder.reader.vector<T>(names[1]);
    detail::check_finite_tensor(weights, names[0], lambda_b);
    detail::check_finite_tensor(weights, names[1], lambda_d);
    try {
      Vera<T> vera(out.projections, in_features.at(module), lambda_b.size(), config);
      vera.lambda_b() = lambda_b;
      vera.lambda_d() = lambda_d;
      out.adapters.add(module, std::move(vera));
    } catch (const Error& e) {
      weights.fail("module '", detail::shown(module), "': ", e.what());
    }
  }
  return out;
}

}  // namespace lorakit::io
