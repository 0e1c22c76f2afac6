// JSON from files that may be hostile: the nesting depth is checked by a linear scan before the parser (which
// recurses) sees the text, and values, keys and names shown in error messages are cut to a bounded length.
#pragma once

#include "lorakit/core/error.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace lorakit::io {

/// The deepest nesting of arrays and objects a reader accepts (PEFT configs and safetensors headers use 3).
inline constexpr std::size_t max_json_depth = 64;

namespace detail {

/// The longest excerpt of file content an error message shows.
inline constexpr std::size_t max_shown_chars = 120;

/// `text` for an error message: as is when short, else its first characters and the total length.
inline std::string shown(const std::string& text) {
  if (text.size() <= max_shown_chars) return text;
  return text.substr(0, max_shown_chars) + "... (" + std::to_string(text.size()) + " characters)";
}

/// A JSON value for an error message: numbers, booleans and short strings as written, longer strings cut, arrays
/// and objects by their size only (never serialized whole).
template <class Json>
std::string describe(const Json& value) {
  if (value.is_array()) return "an array of " + std::to_string(value.size()) + " elements";
  if (value.is_object()) return "an object of " + std::to_string(value.size()) + " keys";
  if (value.is_string()) return "\"" + shown(value.template get<std::string>()) + "\"";
  return value.dump();
}

/// The nesting depth of the JSON text (brackets outside strings), scanning no further than one level past
/// `limit`. Linear in the text, without recursion.
inline std::size_t json_depth(const std::string& text, std::size_t limit) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

/// Parses `text` (the content of `file`) as a JSON object. Errors (IoError, naming `where` and the file): nesting
/// deeper than max_json_depth (checked first), invalid JSON or trailing content, a value that is not an object,
/// and with `unique_keys` a key that appears twice in one object.
template <class Json>
Json parse_json_object(const char* where, const std::filesystem::path& file, const std::string& text, bool unique_keys) {
  const auto fail = [&](const auto&... parts) {
    lorakit::detail::fail<IoError>(where, "'", file.string(), "': ", parts...);
  };
  if (json_depth(text, max_json_depth) > max_json_depth) {
    fail("JSON nested deeper than ", max_json_depth, " levels (refused before parsing)");
  }
  // nlohmann-json stops at a NUL byte as at the end of the text, which would accept "{}" followed by garbage.
  if (const auto nul = text.find('\0'); nul != std::string::npos) fail("a NUL byte at offset ", nul, ", not valid JSON");
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  std::string duplicate;
  const auto callback = [&](int, typename Json::parse_event_t event, Json& parsed) {
    using Event = typename Json::parse_event_t;
    if (!unique_keys) return true;
    if (event == Event::object_start) keys.emplace_back();
    if (event == Event::object_end && !keys.empty()) keys.pop_back();
    if (event == Event::key && !keys.empty() && duplicate.empty() && parsed.is_string() &&
        !keys.back().insert(parsed.template get<std::string>()).second) {
      duplicate = parsed.template get<std::string>();
    }
    return true;
  };
  Json json;
  try {
    json = Json::parse(text, callback);
  } catch (const nlohmann::json::exception& e) {
    fail("not valid JSON: ", shown(e.what()));
  }
  if (!duplicate.empty()) fail("the JSON has the key '", shown(duplicate), "' twice in one object (duplicate key)");
  if (!json.is_object()) fail("the JSON value is ", json.type_name(), ", expected an object");
  return json;
}

}  // namespace detail
}  // namespace lorakit::io
