// adapter_config.json of HuggingFace PEFT: reading it with typed, checked field access, PEFT's matching of
// `rank_pattern` / `alpha_pattern` keys against module names (in linear time, io/key_regex.hpp), and building
// such patterns on save.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/io/atomic_file.hpp"
#include "lorakit/io/input_file.hpp"
#include "lorakit/io/json_text.hpp"
#include "lorakit/io/key_regex.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

/// The file names PEFT uses in an adapter folder.
inline constexpr const char* peft_config_file = "adapter_config.json";
inline constexpr const char* peft_weights_file = "adapter_model.safetensors";
/// The prefix PEFT puts before module paths in tensor names.
inline constexpr const char* peft_module_prefix = "base_model.model.";
/// The largest adapter_config.json a reader accepts (PEFT's are a few kilobytes).
inline constexpr std::uint64_t max_peft_config_bytes = 16u << 20;

/// PEFT's `rank_pattern` or `alpha_pattern`: keys (regular expressions over module names) in file order, each with
/// a value; the first key that matches a module gives its value, otherwise the default (`r` or `lora_alpha`).
/// A key k matches a module when the regular expression `(.*\.)?(k)$` matches its whole name (PEFT's
/// `get_pattern_key`), so a plain key selects the module of that name and every module ending with "." + k.
/// Keys are compiled by detail::KeyRegex, which matches in time linear in the module name whatever the key
/// (keys such as `(a|aa)+` cost no more than others) and supports Python's `re` syntax without look-arounds
/// and back references.
class PeftPattern {
 public:
  PeftPattern() = default;

  /// From a JSON object of numbers (as read from adapter_config.json, keeping the file's key order).
  /// Errors (IoError): not an object, a value that is not a finite number, a key that is not a supported regular
  /// expression.
  static PeftPattern from_json(const char* where, const std::string& field, const nlohmann::ordered_json& object) {
    PeftPattern pattern;
    if (object.is_null()) return pattern;
    if (!object.is_object()) lorakit::detail::fail<IoError>(where, field, " is ", object.type_name(), ", expected an object");
    for (const auto& [key, value] : object.items()) {
      if (!value.is_number() || !std::isfinite(value.get<double>())) {
        lorakit::detail::fail<IoError>(where, field, "['", detail::shown(key), "'] is ", detail::describe(value),
                                       ", expected a number (finite)");
      }
      try {
        pattern.add(key, value.get<double>());
      } catch (const ValueError& e) {
        lorakit::detail::fail<IoError>(where, field, ": ", e.what());
      }
    }
    return pattern;
  }

  /// Appends a key (its position decides among keys that match the same module).
  /// Errors (ValueError): the key is not a supported regular expression (see detail::KeyRegex).
  void add(const std::string& key, double value) { entries_.push_back({key, detail::KeyRegex(key), value}); }

  /// The value for `module`: that of the first matching key, else `fallback`.
  double value_for(const std::string& module, double fallback) const {
    for (const auto& entry : entries_) {
      if (entry.regex.matches(module)) return entry.value;
    }
    return fallback;
  }

  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }

  /// The keys and values in order.
  std::vector<std::pair<std::string, double>> items() const {
    std::vector<std::pair<std::string, double>> out;
    for (const auto& entry : entries_) out.emplace_back(entry.key, entry.value);
    return out;
  }

  /// A pattern under which every module of `values` gets its value and `fallback` is the default: one key per
  /// module whose value differs (its full name), longest names first so that a module's own key comes before
  /// shorter keys that are suffixes of it. Modules that another key would still capture get their own key too.
  /// Errors (ValueError): the names cannot be told apart by PEFT's matching (e.g. "a.b" and "a_b").
  static PeftPattern build(const std::vector<std::pair<std::string, double>>& values, double fallback) {
    std::map<std::string, double> keyed;
    for (const auto& [module, value] : values) {
      if (value != fallback) keyed.emplace(module, value);
    }
    for (std::size_t round = 0; round <= values.size(); ++round) {
      PeftPattern pattern = ordered(keyed);
      bool changed = false;
      for (const auto& [module, value] : values) {
        if (pattern.value_for(module, fallback) != value) {
          if (keyed.count(module) != 0) {
            lorakit::detail::fail<ValueError>("PeftPattern::build", "module '", module,
                                              "' cannot be given its own value: an earlier key of the same length "
                                              "matches it under PEFT's regular-expression matching");
          }
          keyed.emplace(module, value);
          changed = true;
        }
      }
      if (!changed) return pattern;
    }
    lorakit::detail::fail<ValueError>("PeftPattern::build", "no consistent pattern found");
  }

 private:
  struct Entry {
    std::string key;
    detail::KeyRegex regex;
    double value;
  };

  static PeftPattern ordered(const std::map<std::string, double>& keyed) {
    std::vector<std::pair<std::string, double>> items(keyed.begin(), keyed.end());
    std::stable_sort(items.begin(), items.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    PeftPattern pattern;
    for (const auto& [key, value] : items) pattern.add(key, value);
    return pattern;
  }

  std::vector<Entry> entries_;
};

namespace detail {

/// Reads a JSON object from a file, keeping its key order. Errors (IoError): missing, not a regular file, larger
/// than max_peft_config_bytes, nested deeper than max_json_depth, not JSON, not an object.
inline nlohmann::ordered_json read_json_object(const char* where, const std::filesystem::path& file) {
  const InputFile input(where, file);
  return parse_json_object<nlohmann::ordered_json>(where, file, input.read_all(max_peft_config_bytes), false);
}

/// Typed access to the fields of a config file, with errors that name the file and the field.
class ConfigFields {
 public:
  ConfigFields(const char* where, std::filesystem::path file, nlohmann::ordered_json json)
      : where_(where), file_(std::move(file)), json_(std::move(json)) {}

  /// The adapter_config.json of the PEFT folder `dir`, which must have `peft_type` = `peft_type`.
  static ConfigFields read_peft(const char* where, const std::filesystem::path& dir, const std::string& peft_type,
                                const std::string& hint) {
    const auto file = dir / peft_config_file;
    ConfigFields fields(where, file, read_json_object(where, file));
    fields.require("peft_type", peft_type, hint);
    return fields;
  }

  /// The same checks, with errors naming another file of the folder.
  ConfigFields about(const std::filesystem::path& file) const { return ConfigFields(where_, file, json_); }

  const nlohmann::ordered_json& json() const { return json_; }

  /// A string field; `fallback` when absent or null.
  std::string string(const char* field, const std::string& fallback) const {
    const auto* value = find(field);
    if (value == nullptr) return fallback;
    if (!value->is_string()) wrong(field, *value, "a string");
    return value->get<std::string>();
  }

  bool boolean(const char* field, bool fallback) const {
    const auto* value = find(field);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) wrong(field, *value, "true or false");
    return value->get<bool>();
  }

  double number(const char* field, double fallback) const {
    const auto* value = find(field);
    if (value == nullptr) return fallback;
    if (!value->is_number() || !std::isfinite(value->get<double>())) wrong(field, *value, "a finite number");
    return value->get<double>();
  }

  /// A positive integer field.
  std::int64_t positive_integer(const char* field, std::int64_t fallback) const {
    const auto* value = find(field);
    if (value == nullptr) return fallback;
    if (!value->is_number_integer() || value->get<std::int64_t>() < 1) wrong(field, *value, "a positive integer");
    return value->get<std::int64_t>();
  }

  /// A pattern field (`rank_pattern`, `alpha_pattern`).
  PeftPattern pattern(const char* field) const {
    const auto* value = find(field);
    if (value == nullptr) return {};
    try {
      return PeftPattern::from_json(where_, field, *value);
    } catch (const IoError& e) {
      lorakit::detail::fail<IoError>(where_, "'", file_.string(), "': ", without_where(e.what()));
    }
  }

  /// Errors (IoError) unless the field is present with this string value.
  void require(const char* field, const std::string& expected, const std::string& hint) const {
    const auto* value = find(field);
    if (value == nullptr || !value->is_string() || value->get<std::string>() != expected) {
      lorakit::detail::fail<IoError>(where_, "'", file_.string(), "': ", field, " is ",
                                     value == nullptr ? std::string("missing") : describe(*value), ", expected \"",
                                     expected, "\"", hint);
    }
  }

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    lorakit::detail::fail<IoError>(where_, "'", file_.string(), "': ", parts...);
  }

 private:
  const nlohmann::ordered_json* find(const char* field) const {
    const auto it = json_.find(field);
    return it == json_.end() || it->is_null() ? nullptr : &*it;
  }

  [[noreturn]] void wrong(const char* field, const nlohmann::ordered_json& value, const char* expected) const {
    fail(field, " is ", describe(value), ", expected ", expected);
  }

  std::string without_where(const std::string& message) const {
    const std::string prefix = std::string(where_) + ": ";
    return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
  }

  const char* where_;
  std::filesystem::path file_;
  nlohmann::ordered_json json_;
};

/// A number as JSON: an integer when it is one (so `8`, not `8.0`, as PEFT writes it).
inline nlohmann::ordered_json json_number(double value) {
  if (std::nearbyint(value) == value && std::fabs(value) < 9007199254740992.0) {
    return static_cast<std::int64_t>(value);
  }
  return value;
}

/// A pattern as a JSON object, in its key order.
inline nlohmann::ordered_json pattern_json(const PeftPattern& pattern) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& [key, value] : pattern.items()) out[key] = json_number(value);
  return out;
}

/// Compares names so that digit runs compare as numbers ("h.2" < "h.10"), for listing layers in model order.
inline bool natural_less(const std::string& a, const std::string& b) {
  std::size_t i = 0, j = 0;
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      std::size_t ei = i, ej = j;
      while (ei < a.size() && digit(a[ei])) ++ei;
      while (ej < b.size() && digit(b[ej])) ++ej;
      // Compare the runs without their leading zeros: longer means larger, then digit by digit.
      std::size_t si = i, sj = j;
      while (si + 1 < ei && a[si] == '0') ++si;
      while (sj + 1 < ej && b[sj] == '0') ++sj;
      if (ei - si != ej - sj) return ei - si < ej - sj;
      const int order = a.compare(si, ei - si, b, sj, ej - sj);
      if (order != 0) return order < 0;
      i = ei;
      j = ej;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j || (a.size() - i == b.size() - j && a < b);
}

/// Writes a JSON document atomically, indented as PEFT writes it.
inline void write_json_atomically(const char* where, const std::filesystem::path& file, const nlohmann::ordered_json& json) {
  const std::string text = json.dump(2) + "\n";
  write_file_atomically(where, file, text.data(), text.size());
}

}  // namespace detail
}  // namespace lorakit::io
