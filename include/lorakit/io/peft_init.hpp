// PEFT's `init_lora_weights` (adapter_config.json of a LORA adapter): how the adapter was initialized, and with it
// whether the adapter belongs to the original base weight or to a base weight that the initialization changed
// (PiSSA, OLoRA, LoRA-GA, CorDA, LoftQ). Read and written by load_peft / save_peft (io/peft_lora.hpp).
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/io/json_text.hpp"
#include "lorakit/io/peft_config.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <utility>

namespace lorakit::io {

/// The value of PEFT's `init_lora_weights` (src/peft/tuners/lora/config.py, dispatched in
/// `LoraLayer.update_layer`, src/peft/tuners/lora/layer.py): `true` (PEFT's default: Kaiming-uniform A, B = 0),
/// `false`, or one of the strings below. Strings PEFT compares case-insensitively ("gaussian", "olora") are
/// recognized so; others exactly, as PEFT does.
class PeftInitLoraWeights {
 public:
  enum class Kind {
    kaiming_uniform,  ///< `true`
    random,           ///< `false`: both factors keep torch's default Linear init (the update is not zero)
    gaussian,         ///< "gaussian": A ~ N(0, 1/r^2), B = 0
    pissa,            ///< "pissa" (exact SVD) or "pissa_niter_N" (randomized, N power iterations); changes W
    olora,            ///< "olora"; changes W
    lora_ga,          ///< "lora_ga"; changes W
    corda,            ///< "corda..." (CorDA); changes W
    loftq,            ///< "loftq": W is replaced by its quantized residual
    eva,              ///< "eva": A from the inputs' SVD, B = 0
    other,            ///< any other string (e.g. "orthogonal", "mica"), kept as written
  };

  /// `true`.
  PeftInitLoraWeights() = default;

  static PeftInitLoraWeights kaiming_uniform() { return {}; }
  /// "pissa" (power_iterations = -1) or "pissa_niter_N". Errors (ValueError): power_iterations < -1.
  static PeftInitLoraWeights pissa(int power_iterations = -1) {
    if (power_iterations < -1) {
      lorakit::detail::fail<ValueError>("PeftInitLoraWeights::pissa", "power_iterations is ", power_iterations,
                                        ", expected -1 (exact SVD) or >= 0");
    }
    const std::string text = power_iterations < 0 ? "pissa" : "pissa_niter_" + std::to_string(power_iterations);
    PeftInitLoraWeights value(Kind::pissa, text);
    value.pissa_niter_ = power_iterations;
    return value;
  }
  static PeftInitLoraWeights olora() { return {Kind::olora, "olora"}; }
  static PeftInitLoraWeights lora_ga() { return {Kind::lora_ga, "lora_ga"}; }

  /// The value as PEFT writes it: `true`, `false` or a string (null: PEFT's default `true`); empty for another
  /// JSON type or a "pissa..." string that is neither "pissa" nor "pissa_niter_N" with N a non-negative integer in
  /// plain digits (PEFT's `int()` would also take a sign or surrounding spaces).
  template <class Json>
  static std::optional<PeftInitLoraWeights> parse(const Json& value) {
    if (value.is_null()) return PeftInitLoraWeights{};
    if (value.is_boolean()) {
      return value.template get<bool>() ? PeftInitLoraWeights{} : PeftInitLoraWeights{Kind::random, ""};
    }
    if (!value.is_string()) return std::nullopt;
    return from_string(value.template get<std::string>());
  }

  /// What `parse` accepts, for error messages.
  static constexpr const char* accepted =
      "true, false or a string (\"gaussian\", \"pissa\", \"pissa_niter_N\" with N >= 0, \"olora\", \"lora_ga\", ...)";

  /// `true`, `false` or the string, for adapter_config.json.
  nlohmann::ordered_json to_json() const {
    if (kind_ == Kind::kaiming_uniform) return true;
    if (kind_ == Kind::random) return false;
    return text_;
  }

  Kind kind() const { return kind_; }
  /// The string as written ("" for true and false).
  const std::string& text() const { return text_; }
  /// PiSSA's power iterations: -1 for "pissa" (exact SVD), N for "pissa_niter_N", -1 for other kinds.
  int pissa_niter() const { return pissa_niter_; }

  /// True for the initializations that change the base weight (PiSSA, OLoRA, LoRA-GA, CorDA, LoftQ): an adapter
  /// saved with this value applies to the changed weight (the residual), not to the original one. PEFT's
  /// `save_pretrained(path_initial_model_for_weight_conversion=...)` and lorakit's `pissa_to_lora` turn it into a
  /// plain LoRA of rank 2r on the original weight, saved with `true`.
  bool changes_base_weight() const {
    return kind_ == Kind::pissa || kind_ == Kind::olora || kind_ == Kind::lora_ga || kind_ == Kind::corda ||
           kind_ == Kind::loftq;
  }

  friend bool operator==(const PeftInitLoraWeights& a, const PeftInitLoraWeights& b) {
    return a.kind_ == b.kind_ && a.text_ == b.text_;
  }
  friend bool operator!=(const PeftInitLoraWeights& a, const PeftInitLoraWeights& b) { return !(a == b); }

 private:
  PeftInitLoraWeights(Kind kind, std::string text) : kind_(kind), text_(std::move(text)) {}

  static std::string lowercase(std::string text) {
    for (char& c : text) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return text;
  }

  /// PEFT's dispatch: startswith("pissa"), startswith("corda"), lower() == "olora", == "loftq", == "eva",
  /// == "lora_ga", lower() == "gaussian".
  static std::optional<PeftInitLoraWeights> from_string(const std::string& text) {
    const std::string lower = lowercase(text);
    if (text.rfind("pissa", 0) == 0) {
      if (text == "pissa") return pissa();
      const std::string prefix = "pissa_niter_";
      const std::string digits = text.rfind(prefix, 0) == 0 ? text.substr(prefix.size()) : std::string();
      const bool number = !digits.empty() && digits.size() <= 9 &&
                          digits.find_first_not_of("0123456789") == std::string::npos;
      if (!number) return std::nullopt;
      return pissa(std::stoi(digits));
    }
    if (text.rfind("corda", 0) == 0) return PeftInitLoraWeights{Kind::corda, text};
    if (lower == "olora") return PeftInitLoraWeights{Kind::olora, text};
    if (lower == "gaussian") return PeftInitLoraWeights{Kind::gaussian, text};
    if (text == "lora_ga") return PeftInitLoraWeights{Kind::lora_ga, text};
    if (text == "loftq") return PeftInitLoraWeights{Kind::loftq, text};
    if (text == "eva") return PeftInitLoraWeights{Kind::eva, text};
    return PeftInitLoraWeights{Kind::other, text};
  }

  Kind kind_ = Kind::kaiming_uniform;
  std::string text_;
  int pissa_niter_ = -1;
};

namespace detail {

/// `init_lora_weights` of a LORA adapter_config.json. Errors (IoError naming the file): a value `parse` refuses.
inline PeftInitLoraWeights read_init_lora_weights(const ConfigFields& fields) {
  const auto it = fields.json().find("init_lora_weights");
  if (it == fields.json().end()) return {};
  const std::optional<PeftInitLoraWeights> value = PeftInitLoraWeights::parse(*it);
  if (!value) fields.fail("init_lora_weights is ", describe(*it), ", expected ", PeftInitLoraWeights::accepted);
  return *value;
}

}  // namespace detail
}  // namespace lorakit::io
