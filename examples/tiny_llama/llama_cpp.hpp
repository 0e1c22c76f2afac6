// The real llama.cpp, as npm's node-llama-cpp ships it (prebuilt CPU binaries), run in a child process by the Node
// scripts of tests/llama_cpp: eval.mjs (the logits after each token of a sequence), generate.mjs (a sample
// continuing a prompt) and tokenize.mjs (the model's own vocabulary at work). Used by the GGUF export test and by
// the study's demo.
#pragma once

#include <lorakit/core/error.hpp>
#include <lorakit/core/types.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tiny_llama {

/// The Node scripts' folder (tests/llama_cpp, where `npm ci` installs node-llama-cpp).
class LlamaCpp {
 public:
  explicit LlamaCpp(std::filesystem::path scripts) : scripts_(std::move(scripts)) {}

  /// Empty when node and the package are there; otherwise why not, and how to install them.
  std::string unavailable() const {
    if (std::system("node --version > /dev/null 2>&1") != 0) {
      return "Node.js is not installed (node on the PATH); install it with: sudo apt-get install -y nodejs npm";
    }
    if (!std::filesystem::exists(scripts_ / "node_modules" / "node-llama-cpp" / "package.json")) {
      return "the npm package node-llama-cpp is not installed in " + (scripts_ / "node_modules").string() +
             "; install it from the committed lockfile with: (cd " + scripts_.string() +
             " && { npm ci --omit=optional --ignore-scripts || npm install --omit=optional --ignore-scripts --no-save; })"
             "   (scripts/test and scripts/demo do this)";
    }
    return {};
  }

  /// llama.cpp's next-token logits [tokens x vocab] after each token of `tokens` (evaluated as given: no BOS),
  /// for `model` plus `adapter` at scale 1 unless it is empty. Errors (lorakit::IoError): the script fails or
  /// prints other than tokens x vocab numbers.
  lorakit::Matrix<double> logits(const std::filesystem::path& model, const std::filesystem::path& adapter,
                                 const std::vector<std::uint8_t>& tokens, lorakit::Index vocab) const {
    const std::string output = run("LlamaCpp::logits", "eval.mjs", model, adapter, join(tokens));
    std::istringstream in(output);
    lorakit::Matrix<double> out(static_cast<lorakit::Index>(tokens.size()), vocab);
    for (lorakit::Index i = 0; i < out.rows(); ++i) {
      for (lorakit::Index t = 0; t < vocab; ++t) {
        if (!(in >> out(i, t))) {
          lorakit::detail::fail<lorakit::IoError>("LlamaCpp::logits", "eval.mjs printed too few logits (row ", i,
                                                  ", token ", t, ")");
        }
      }
    }
    return out;
  }

  /// `count` tokens that llama.cpp generates after `prompt` with a sliding window of the last `window` tokens (each
  /// step evaluates the window from position 0, as the C++ model does), greedy when `temperature` is 0, else
  /// sampled from softmax(logits / temperature) with a fixed seed. Errors (lorakit::IoError): the script fails.
  std::vector<std::uint8_t> generate(const std::filesystem::path& model, const std::filesystem::path& adapter,
                                     const std::vector<std::uint8_t>& prompt, int count, int window,
                                     double temperature, std::uint32_t seed) const {
    std::ostringstream args;
    args << join(prompt) << ' ' << count << ' ' << window << ' ' << temperature << ' ' << seed;
    std::istringstream in(run("LlamaCpp::generate", "generate.mjs", model, adapter, args.str()));
    std::vector<std::uint8_t> out;
    for (int token; in >> token;) {
      if (token < 0 || token > 255) {
        lorakit::detail::fail<lorakit::IoError>("LlamaCpp::generate", "generate.mjs printed token ", token,
                                                ", expected a byte");
      }
      out.push_back(static_cast<std::uint8_t>(token));
      if (in.peek() == ',') in.get();
    }
    if (static_cast<int>(out.size()) != count) {
      lorakit::detail::fail<lorakit::IoError>("LlamaCpp::generate", "generate.mjs printed ", out.size(),
                                              " tokens, expected ", count);
    }
    return out;
  }

  /// What llama.cpp's tokenizer of `model` makes of `text` (no special tokens added), and the text it
  /// detokenizes those tokens to. Errors (lorakit::IoError): the script fails or prints something else.
  std::pair<std::vector<int>, std::string> tokenize(const std::filesystem::path& model, const std::string& text) const {
    std::string hex;
    for (unsigned char c : text) {
      char two[3];
      std::snprintf(two, sizeof two, "%02x", static_cast<unsigned>(c));
      hex += two;
    }
    const std::string command = "node " + quote((scripts_ / "tokenize.mjs").string()) + " " + quote(model.string()) +
                                " " + quote(hex);
    std::istringstream in(run_command("LlamaCpp::tokenize", command));
    std::string tokens_line, back_hex;
    std::getline(in, tokens_line);
    std::getline(in, back_hex);
    std::pair<std::vector<int>, std::string> out;
    std::istringstream tokens(tokens_line);
    for (int token; tokens >> token;) {
      out.first.push_back(token);
      if (tokens.peek() == ',') tokens.get();
    }
    for (std::size_t i = 0; i + 1 < back_hex.size(); i += 2) {
      out.second += static_cast<char>(std::stoi(back_hex.substr(i, 2), nullptr, 16));
    }
    return out;
  }

 private:
  static std::string quote(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
  }
  static std::string join(const std::vector<std::uint8_t>& tokens) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? "," : "") + std::to_string(tokens[i]);
    return out;
  }

  std::string run(const char* where, const char* script, const std::filesystem::path& model,
                  const std::filesystem::path& adapter, const std::string& args) const {
    return run_command(where, "node " + quote((scripts_ / script).string()) + " " + quote(model.string()) + " " +
                                  (adapter.empty() ? std::string("-") : quote(adapter.string())) + " " + args);
  }

  /// The standard output of `command`. Errors (lorakit::IoError): it cannot run or exits with another status than 0.
  static std::string run_command(const char* where, const std::string& command) {
    std::FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) lorakit::detail::fail<lorakit::IoError>(where, "cannot run '", command, "'");
    std::string output;
    char buffer[65536];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
    const int status = ::pclose(pipe);
    if (status != 0) lorakit::detail::fail<lorakit::IoError>(where, "'", command, "' failed (status ", status, ")");
    return output;
  }

  std::filesystem::path scripts_;
};

}  // namespace tiny_llama
