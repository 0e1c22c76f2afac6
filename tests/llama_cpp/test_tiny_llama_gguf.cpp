// The tiny llama of examples/tiny_llama served by the real llama.cpp (node-llama-cpp's prebuilt CPU binaries, run
// by eval.mjs and generate.mjs in a child process): the model written by save_gguf_base and a LoRA adapter on every
// projection written by save_gguf_lora must give llama.cpp's next-token logits equal to the C++ model's own
// forward, for the base alone and for base + adapter; llama.cpp's greedy continuation must be the C++ model's, and
// its tokenizer of the exported vocabulary must map each byte to its token and back.
//
// Without node or the npm package the program skips (main.cpp).
#include <catch2/catch.hpp>

#include "../io_test_support.hpp"

#include "../../examples/tiny_llama/gguf_export.hpp"
#include "../../examples/tiny_llama/llama_cpp.hpp"

#include <algorithm>
#include <iostream>
#include <set>
#include <string>
#include <vector>

namespace lorakit_test_test_tiny_llama_gguf {

namespace tl = tiny_llama;
using lorakit::Index;

namespace {

const tl::LlamaCpp llama_cpp(LORAKIT_LLAMA_CPP_DIR);

/// A folder under the temporary directory, removed on destruction.
using Scratch = lorakit::testing::TempDir;

/// The study's architecture at a smaller size (4 query heads, 2 key/value heads, 2 layers, the byte vocabulary).
tl::Config small_config() {
  tl::Config c;
  c.dim = 32;
  c.hidden = 64;
  c.context = 64;
  return c;
}

/// Random weights large enough that every part of the model moves the logits by O(1) (a pretraining
/// initialization, N(0, 0.02), would leave them all near zero and the comparison blind): embedding N(0, 1),
/// projections and head N(0, 0.3), norm weights 1 + N(0, 0.1).
tl::Weights<float> random_weights(const tl::Config& c, std::uint64_t seed) {
  lorakit::Rng rng(seed);
  tl::Weights<float> w = tl::Weights<float>::random(c, rng);
  rng.fill_normal(w.embed, 0.0f, 1.0f);
  rng.fill_normal(w.lm_head, 0.0f, 0.3f);
  const auto norm = [&rng](lorakit::Vector<float>& v) {
    rng.fill_normal(v, 0.0f, 0.1f);
    v.array() += 1.0f;
  };
  norm(w.norm);
  for (auto& block : w.blocks) {
    norm(block.attn_norm);
    norm(block.mlp_norm);
    for (auto& W : block.proj) rng.fill_normal(W, 0.0f, 0.3f);
  }
  return w;
}

/// LoRA r=4, alpha=8 on every projection of every layer, with A from LoRA's initialization and a non-zero B.
lorakit::AdapterSet<lorakit::Lora<float>> random_adapters(const tl::Config& c, std::uint64_t seed) {
  lorakit::AdapterSet<lorakit::Lora<float>> set;
  lorakit::Rng rng(seed, 1);
  for (const auto& shape : tl::projection_shapes(c)) {
    lorakit::LoraConfig config;
    config.rank = 4;
    config.alpha = 8;
    config.seed = seed + set.size();
    lorakit::Lora<float> lora(shape.in, shape.out, config);
    rng.fill_normal(lora.B(), 0.0f, 0.3f);
    set.add(shape.name, std::move(lora));
  }
  return set;
}

/// Held-out text as tokens (token = byte): not seen by the random weights, and shorter than the context.
std::vector<std::uint8_t> text_tokens() {
  const std::string text = "Jargon File: hack, n. 1. Originally, a quick job that produces what is needed.";
  return std::vector<std::uint8_t>(text.begin(), text.begin() + 64);
}

/// The C++ model's logits [tokens x vocab] for one sequence, in double.
template <class Proj>
lorakit::Matrix<double> cpp_logits(tl::Model<float, Proj>& model, const std::vector<std::uint8_t>& tokens) {
  return model.forward(tokens, static_cast<Index>(tokens.size())).template cast<double>();
}

/// The C++ model's greedy continuation with the window generate.mjs uses (each step evaluates the last `window`
/// tokens from position 0).
template <class Proj>
std::vector<std::uint8_t> cpp_greedy(tl::Model<float, Proj>& model, std::vector<std::uint8_t> text, int count,
                                     int window) {
  std::vector<std::uint8_t> out;
  for (int step = 0; step < count; ++step) {
    const std::size_t start = text.size() > static_cast<std::size_t>(window) ? text.size() - static_cast<std::size_t>(window) : 0;
    const std::vector<std::uint8_t> input(text.begin() + static_cast<std::ptrdiff_t>(start), text.end());
    const auto& logits = model.forward(input, static_cast<Index>(input.size()));
    Index next = 0;
    logits.row(logits.rows() - 1).maxCoeff(&next);
    text.push_back(static_cast<std::uint8_t>(next));
    out.push_back(static_cast<std::uint8_t>(next));
  }
  return out;
}

// What the 1e-3 covers: both sides compute in float32 from the same float32 weights (F32 GGUF tensors, F32 KV
// cache, flash attention off), but in different orders of summation and with different special functions:
// llama.cpp's rms_norm sums in float where the C++ RmsNorm sums in double; its RoPE angles come from powf and a
// running product in float, the C++ tables from std::pow in double; its softmax and SiLU use ggml's vectorized
// exp. Each is a relative error of a few float ulps (1e-7), amplified through 2 layers to logits of size O(1-10):
// about 1e-5 measured. A wrong row order, scale, norm or position would differ by O(1).
constexpr double kTolerance = 1e-3;

}  // namespace

TEST_CASE("the byte vocabulary is GPT-2's byte alphabet, one token per byte", "[llama_cpp][tiny_llama]") {
  const auto tokens = tl::byte_level_tokens();
  REQUIRE(tokens.size() == 256);
  CHECK(std::set<std::string>(tokens.begin(), tokens.end()).size() == 256);  // llama.cpp requires distinct texts
  CHECK(tokens['a'] == "a");
  CHECK(tokens['~'] == "~");
  CHECK(tokens[0] == "\xC4\x80");    // U+0100, as in GPT-2's vocab.json
  CHECK(tokens[' '] == "\xC4\xA0");  // U+0120 'Ġ'
  CHECK(tokens['\n'] == "\xC4\x8A"); // U+010A 'Ċ'
  CHECK(tokens[0xAD] == "\xC5\x83"); // U+0143, the last of the non-printable bytes
  CHECK(tokens[0xFF] == "\xC3\xBF"); // U+00FF 'ÿ'
}

TEST_CASE("llama.cpp's own tokenizer of the exported vocabulary maps each byte to its token and back",
          "[llama_cpp][tiny_llama]") {
  const tl::Config c = small_config();
  lorakit::Rng rng(3);
  Scratch scratch;
  tl::save_gguf_base(scratch / "base.gguf", tl::Weights<float>::random(c, rng));
  const std::string text = "A hacker's kludge,\n  ~{x = 42;}\t| `foo' & \"bar\" @ 100%!";
  const auto [tokens, back] = llama_cpp.tokenize(scratch / "base.gguf", text);
  CHECK(tokens == std::vector<int>(text.begin(), text.end()));  // token id = byte, no BOS or EOS added
  CHECK(back == text);
}

TEST_CASE("save_gguf_base rejects a vocabulary that is not the 256 bytes", "[llama_cpp][tiny_llama]") {
  tl::Config c = small_config();
  c.vocab = 64;
  lorakit::Rng rng(1);
  Scratch scratch;
  CHECK_THROWS_AS(tl::save_gguf_base(scratch / "base.gguf", tl::Weights<float>::random(c, rng)), lorakit::ValueError);
  CHECK_FALSE(std::filesystem::exists(scratch / "base.gguf"));
}

TEST_CASE("llama.cpp's logits for the exported tiny llama and its LoRA adapter equal the C++ model's",
          "[llama_cpp][tiny_llama]") {
  const tl::Config c = small_config();
  const tl::Weights<float> weights = random_weights(c, 7);
  auto adapters = random_adapters(c, 11);
  const std::vector<std::uint8_t> tokens = text_tokens();
  Scratch scratch;
  const auto base_file = scratch / "base.gguf", adapter_file = scratch / "adapter.gguf";
  tl::save_gguf_base(base_file, weights);
  lorakit::io::save_gguf_lora(adapter_file, adapters, tl::gguf_lora_options(c));

  tl::Model<float, tl::Dense<float>> base(weights, tl::dense_projections<float>(false));
  tl::Model<float, lorakit::AdaptedLinear<float, lorakit::AdapterRef<lorakit::Lora<float>>>> adapted(
      weights, tl::adapted_projections<float>(adapters));
  const lorakit::Matrix<double> expected_base = cpp_logits(base, tokens);
  const lorakit::Matrix<double> expected_adapted = cpp_logits(adapted, tokens);
  // The comparison can fail: the logits spread over several units, and the adapter moves them by more than 0.5.
  CHECK(expected_base.maxCoeff() - expected_base.minCoeff() > 5);
  CHECK((expected_adapted - expected_base).cwiseAbs().maxCoeff() > 0.5);

  const lorakit::Matrix<double> served_base = llama_cpp.logits(base_file, {}, tokens, c.vocab);
  const lorakit::Matrix<double> served_adapted = llama_cpp.logits(base_file, adapter_file, tokens, c.vocab);
  const double base_error = (served_base - expected_base).cwiseAbs().maxCoeff();
  const double adapted_error = (served_adapted - expected_adapted).cwiseAbs().maxCoeff();
  std::cout << "tiny llama on llama.cpp, " << tokens.size() << " positions: max |llama.cpp - C++| of the logits = "
            << base_error << " (base), " << adapted_error << " (base + LoRA adapter)\n";
  CHECK(base_error <= kTolerance);
  CHECK(adapted_error <= kTolerance);

  {  // The q/k rows matter: a base written in Hugging Face's row order gives other logits.
    tl::Weights<float> unpermuted = weights;
    for (auto& block : unpermuted.blocks) {  // undo the writer's permutation, so that the file holds HF's order
      for (const auto& [kind, heads] : {std::pair{tl::Projection::q, c.heads}, std::pair{tl::Projection::k, c.kv_heads}}) {
        auto& W = block.proj[static_cast<std::size_t>(kind)];
        W = lorakit::io::detail::unpermute_heads(W, heads);
      }
    }
    tl::save_gguf_base(scratch / "hf-order.gguf", unpermuted);
    const double error = (llama_cpp.logits(scratch / "hf-order.gguf", {}, tokens, c.vocab) - expected_base)
                             .cwiseAbs().maxCoeff();
    std::cout << "with the q/k rows in Hugging Face's order instead: " << error << " (logits spread over "
              << expected_base.maxCoeff() - expected_base.minCoeff() << ")\n";
    CHECK(error > 100 * kTolerance);
  }
  {  // llama.cpp's greedy continuation (generate.mjs, a sliding window) is the C++ model's.
    const std::vector<std::uint8_t> prompt(tokens.begin(), tokens.begin() + 40);
    const int count = 30, window = 48;  // the window slides: 40 + 30 > 48
    CHECK(llama_cpp.generate(base_file, adapter_file, prompt, count, window, 0, 1) ==
          cpp_greedy(adapted, prompt, count, window));
  }
}

}  // namespace lorakit_test_test_tiny_llama_gguf
