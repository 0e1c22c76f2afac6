// Proof on the real llama.cpp (node-llama-cpp's prebuilt CPU binaries, run by eval.mjs in a child process):
// a tiny random llama model (2 layers, 4 query heads, 2 key/value heads) is written as a GGUF base model, an
// adapter as a GGUF adapter, and the merged weights W + s B A as a third model; llama.cpp's logits for base +
// adapter must equal the merged model's, and differ from the base's.
//
// Without node or the npm package the program skips (main.cpp).
#include <catch2/catch.hpp>

#include "../io_test_support.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/io/gguf.hpp>
#include <lorakit/io/gguf_lora.hpp>
#include <lorakit/io/peft.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace lorakit_test_test_llama_cpp {

using namespace lorakit;
using namespace lorakit::io;

namespace {

const std::filesystem::path script_dir = LORAKIT_LLAMA_CPP_DIR;
const std::string convert_binary = LORAKIT_CONVERT_BINARY;

constexpr Index hidden = 32, n_head = 4, n_head_kv = 2, head_dim = hidden / n_head, ffn = 48, vocab = 64, layers = 2;
const std::vector<int> prompt = {1, 7, 42, 3, 63, 20, 11, 5};

/// A folder under the temporary directory, removed on destruction.
using Scratch = lorakit::testing::TempDir;

/// The weights of the model in Hugging Face names and layout (W [out x in], q and k rows in Hugging Face order).
using Weights = std::map<std::string, Matrix<double>>;

Weights random_model(std::uint64_t seed) {
  Weights w;
  Rng rng(seed);
  const auto add = [&](const std::string& name, Index rows, Index cols, double sigma) {
    Matrix<double> m(rows, cols);
    rng.fill_normal(m, 0.0, sigma);
    w[name] = m;
  };
  add("model.embed_tokens", vocab, hidden, 1.0);
  add("lm_head", vocab, hidden, 0.3);
  add("model.norm", 1, hidden, 0.1);
  w["model.norm"].array() += 1.0;
  for (Index l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "self_attn.q_proj", n_head * head_dim, hidden, 0.3);
    add(p + "self_attn.k_proj", n_head_kv * head_dim, hidden, 0.3);
    add(p + "self_attn.v_proj", n_head_kv * head_dim, hidden, 0.3);
    add(p + "self_attn.o_proj", hidden, n_head * head_dim, 0.3);
    add(p + "mlp.gate_proj", ffn, hidden, 0.3);
    add(p + "mlp.up_proj", ffn, hidden, 0.3);
    add(p + "mlp.down_proj", hidden, ffn, 0.3);
    add(p + "input_layernorm", 1, hidden, 0.1);
    add(p + "post_attention_layernorm", 1, hidden, 0.1);
    w[p + "input_layernorm"].array() += 1.0;
    w[p + "post_attention_layernorm"].array() += 1.0;
  }
  return w;
}

/// The test's own rendering of llama.cpp's converter permutation (convert_hf_to_gguf.py, LlamaModel.permute):
/// `W.reshape(h, 2, d / 2, in).swapaxes(1, 2).reshape(out, in)`, written as numpy's index arithmetic: the element
/// at [a, j, i] of the swapped view (a < h, j < d/2, i < 2) is the reshaped tensor's [a, i, j].
Matrix<double> llama_permute(const Matrix<double>& W, Index heads) {
  const Index half = W.rows() / heads / 2;
  Matrix<double> out(W.rows(), W.cols());
  Index row = 0;
  for (Index a = 0; a < heads; ++a) {
    for (Index j = 0; j < half; ++j) {
      for (Index i = 0; i < 2; ++i) out.row(row++) = W.row(a * 2 * half + i * half + j);
    }
  }
  return out;
}

/// Writes the model as llama.cpp's converter would: llama.cpp names, q and k rows permuted, F32.
void write_model(const std::filesystem::path& file, const Weights& w) {
  GgufWriter g;
  g.set("general.architecture", GgufValue::make_string("llama"));
  g.set("general.name", GgufValue::make_string("lorakit-test"));
  g.set("llama.context_length", GgufValue::make_uint32(64));
  g.set("llama.embedding_length", GgufValue::make_uint32(hidden));
  g.set("llama.block_count", GgufValue::make_uint32(layers));
  g.set("llama.feed_forward_length", GgufValue::make_uint32(ffn));
  g.set("llama.attention.head_count", GgufValue::make_uint32(n_head));
  g.set("llama.attention.head_count_kv", GgufValue::make_uint32(n_head_kv));
  g.set("llama.rope.dimension_count", GgufValue::make_uint32(head_dim));
  g.set("llama.rope.freq_base", GgufValue::make_float32(10000.0f));
  g.set("llama.attention.layer_norm_rms_epsilon", GgufValue::make_float32(1e-5f));
  g.set("general.file_type", GgufValue::make_uint32(0));
  g.set("tokenizer.ggml.model", GgufValue::make_string("test"));
  std::vector<std::string> tokens;
  for (Index t = 0; t < vocab; ++t) tokens.push_back("t" + std::to_string(t));
  g.set("tokenizer.ggml.tokens", GgufValue::make_strings(tokens));
  const auto vec = [&](const std::string& name, const std::string& tensor) {
    g.add(tensor, Vector<double>(w.at(name).transpose()), Dtype::F32);
  };
  g.add("token_embd.weight", w.at("model.embed_tokens"), Dtype::F32);
  vec("model.norm", "output_norm.weight");
  g.add("output.weight", w.at("lm_head"), Dtype::F32);
  for (Index l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".", b = "blk." + std::to_string(l) + ".";
    vec(p + "input_layernorm", b + "attn_norm.weight");
    g.add(b + "attn_q.weight", llama_permute(w.at(p + "self_attn.q_proj"), n_head), Dtype::F32);
    g.add(b + "attn_k.weight", llama_permute(w.at(p + "self_attn.k_proj"), n_head_kv), Dtype::F32);
    g.add(b + "attn_v.weight", w.at(p + "self_attn.v_proj"), Dtype::F32);
    g.add(b + "attn_output.weight", w.at(p + "self_attn.o_proj"), Dtype::F32);
    vec(p + "post_attention_layernorm", b + "ffn_norm.weight");
    g.add(b + "ffn_gate.weight", w.at(p + "mlp.gate_proj"), Dtype::F32);
    g.add(b + "ffn_up.weight", w.at(p + "mlp.up_proj"), Dtype::F32);
    g.add(b + "ffn_down.weight", w.at(p + "mlp.down_proj"), Dtype::F32);
  }
  g.write(file, false);
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

/// llama.cpp's logits [positions x vocab] for `model` (+ `adapter` unless empty), from a child process.
Matrix<double> llama_logits(const std::filesystem::path& model, const std::filesystem::path& adapter = {}) {
  std::string tokens;
  for (std::size_t i = 0; i < prompt.size(); ++i) tokens += (i ? "," : "") + std::to_string(prompt[i]);
  const std::string command = "node " + quote((script_dir / "eval.mjs").string()) + " " + quote(model.string()) + " " +
                              (adapter.empty() ? std::string("-") : quote(adapter.string())) + " " + tokens;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buffer[65536];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) output.append(buffer, n);
  const int status = ::pclose(pipe);
  INFO("command: " << command);
  REQUIRE(status == 0);
  std::istringstream lines(output);
  Matrix<double> logits(static_cast<Index>(prompt.size()), vocab);
  for (Index i = 0; i < logits.rows(); ++i) {
    for (Index t = 0; t < vocab; ++t) REQUIRE(lines >> logits(i, t));
  }
  return logits;
}

/// Weights with each adapter's update added (the embedding's too: E [vocab x hidden] is the adapter's W).
Weights merged(Weights w, const AdapterSet<Lora<double>>& adapters) {
  for (const auto& [name, lora] : adapters) lora.merge_into(w.at(name));
  return w;
}

Lora<double> random_lora(Index in, Index out, Index rank, double alpha, bool rslora, std::uint64_t seed, double sigma = 0.4) {
  LoraConfig config;
  config.rank = rank;
  config.alpha = alpha;
  config.use_rslora = rslora;
  config.seed = seed;
  Lora<double> lora(in, out, config);
  Rng(seed + 1000).fill_normal(lora.B(), 0.0, sigma);
  return lora;
}

struct Shapes {
  Index in, out;
};
Shapes shape_of(const Weights& w, const std::string& name) { return {w.at(name).cols(), w.at(name).rows()}; }

/// Checks llama.cpp(base + adapter) == llama.cpp(merged) within `tolerance`, and != llama.cpp(base).
void check_adapter(const Weights& base, const AdapterSet<Lora<double>>& adapters, const std::filesystem::path& adapter_file,
                   const std::filesystem::path& folder, const Matrix<double>& base_logits, double tolerance = 1e-4) {
  write_model(folder / "merged.gguf", merged(base, adapters));
  const Matrix<double> with_adapter = llama_logits(folder / "base.gguf", adapter_file);
  const Matrix<double> with_merge = llama_logits(folder / "merged.gguf");
  const double agreement = (with_adapter - with_merge).cwiseAbs().maxCoeff();
  const double change = (with_adapter - base_logits).cwiseAbs().maxCoeff();
  INFO("max |adapter - merged| = " << agreement << ", max |adapter - base| = " << change);
  CHECK(agreement <= tolerance);
  CHECK(change > 0.5);
}

/// One base model for every case, written and evaluated once.
struct Base {
  Scratch scratch;
  Weights weights = random_model(1);
  Matrix<double> logits;
  Base() {
    write_model(scratch / "base.gguf", weights);
    logits = llama_logits(scratch / "base.gguf");
  }
};
Base& base_model() {
  static Base base;
  return base;
}

const std::vector<std::string> projections = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

GgufLoraOptions options() {
  GgufLoraOptions o;
  o.n_head = n_head;
  o.n_head_kv = n_head_kv;
  return o;
}

}  // namespace

TEST_CASE("llama.cpp applies lorakit's GGUF adapters exactly as the merged weights", "[llama_cpp]") {
  Base& b = base_model();
  const Weights& base = b.weights;
  const auto& folder = b.scratch.path();
  CHECK(b.logits.allFinite());

  SECTION("plain adapter on every projection, the embedding and the head") {
    AdapterSet<Lora<double>> set;
    std::uint64_t seed = 10;
    for (Index l = 0; l < layers; ++l) {
      for (const auto& p : projections) {
        const std::string name = "model.layers." + std::to_string(l) + "." + p;
        set.add(name, random_lora(shape_of(base, name).in, shape_of(base, name).out, 4, 8, false, ++seed));
      }
    }
    set.add("model.embed_tokens", random_lora(hidden, vocab, 4, 8, false, ++seed));
    set.add("lm_head", random_lora(hidden, vocab, 4, 8, false, ++seed));
    save_gguf_lora(folder / "adapter.gguf", set, options());
    check_adapter(base, set, folder / "adapter.gguf", folder, b.logits);
  }
  SECTION("rsLoRA") {
    AdapterSet<Lora<double>> set;
    std::uint64_t seed = 50;
    for (const auto& p : projections) {
      const std::string name = "model.layers.1." + p;
      set.add(name, random_lora(shape_of(base, name).in, shape_of(base, name).out, 8, 4, true, ++seed));
    }
    save_gguf_lora(folder / "adapter.gguf", set, options());
    check_adapter(base, set, folder / "adapter.gguf", folder, b.logits);
  }
  SECTION("rank and alpha patterns") {
    AdapterSet<Lora<double>> set;
    std::uint64_t seed = 90;
    const std::vector<Index> ranks = {2, 3, 4, 5, 6, 7, 8};
    const std::vector<double> alphas = {1, 16, 3, 8, 0.5, 12, 5};
    for (Index l = 0; l < layers; ++l) {
      for (std::size_t k = 0; k < projections.size(); ++k) {
        const std::string name = "model.layers." + std::to_string(l) + "." + projections[k];
        const std::size_t pick = (k + static_cast<std::size_t>(l)) % ranks.size();
        set.add(name, random_lora(shape_of(base, name).in, shape_of(base, name).out, ranks[pick], alphas[pick], false, ++seed));
      }
    }
    save_gguf_lora(folder / "adapter.gguf", set, options());
    check_adapter(base, set, folder / "adapter.gguf", folder, b.logits);
  }
  SECTION("a subset of the projections (q and k only)") {
    AdapterSet<Lora<double>> set;
    set.add("model.layers.0.self_attn.q_proj", random_lora(hidden, hidden, 4, 16, false, 200, 0.8));
    set.add("model.layers.1.self_attn.k_proj", random_lora(hidden, n_head_kv * head_dim, 2, 4, false, 201, 0.8));
    save_gguf_lora(folder / "adapter.gguf", set, options());
    check_adapter(base, set, folder / "adapter.gguf", folder, b.logits);
  }
  SECTION("an F16 file") {
    AdapterSet<Lora<double>> set;
    std::uint64_t seed = 400;
    for (const auto& p : projections) {
      const std::string name = "model.layers.0." + p;
      set.add(name, random_lora(shape_of(base, name).in, shape_of(base, name).out, 4, 8, false, ++seed));
    }
    auto o = options();
    o.dtype = Dtype::F16;
    save_gguf_lora(folder / "adapter.gguf", set, o);
    // The merged model gets the update the F16 file holds. llama.cpp's CPU product with F16 weights also rounds
    // the activations to F16 (ggml's vec_dot_f16), hence the looser bound: a misread file would be off by O(1).
    const auto stored = load_gguf_lora<double>(folder / "adapter.gguf");
    check_adapter(base, stored.adapters, folder / "adapter.gguf", folder, b.logits, 1e-2);
  }
}

TEST_CASE("lorakit-convert turns a PEFT folder into the adapter llama.cpp's converter implies", "[llama_cpp]") {
  Base& b = base_model();
  const Weights& base = b.weights;
  const Matrix<double>& base_logits = b.logits;
  Scratch scratch;
  AdapterSet<Lora<double>> set;
  std::uint64_t seed = 300;
  for (Index l = 0; l < layers; ++l) {
    for (const auto& p : projections) {
      const std::string name = "model.layers." + std::to_string(l) + "." + p;
      set.add(name, random_lora(shape_of(base, name).in, shape_of(base, name).out, l == 0 ? 4 : 6, 8, false, ++seed));
    }
  }
  PeftSaveOptions peft;
  peft.task_type = "CAUSAL_LM";
  save_peft(scratch / "peft", set, peft);
  const std::string command = quote(convert_binary) + " --arch llama --n-head " + std::to_string(n_head) + " --n-head-kv " +
                              std::to_string(n_head_kv) + " " + quote((scratch / "peft").string()) + " " +
                              quote((scratch / "adapter.gguf").string());
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
  // The merged model: Hugging Face weights merged by lorakit from the PEFT folder, converted by the test itself.
  const auto folder = load_peft<double>(scratch / "peft");
  Weights merged_weights = base;
  for (const auto& name : folder.adapters.names()) folder.merge_into(name, merged_weights.at(name));
  write_model(scratch / "merged.gguf", merged_weights);
  const Matrix<double> with_adapter = llama_logits(b.scratch / "base.gguf", scratch / "adapter.gguf");
  const Matrix<double> with_merge = llama_logits(scratch / "merged.gguf");
  const double agreement = (with_adapter - with_merge).cwiseAbs().maxCoeff();
  const double change = (with_adapter - base_logits).cwiseAbs().maxCoeff();
  INFO("max |adapter - merged| = " << agreement << ", max |adapter - base| = " << change);
  CHECK(agreement <= 1e-4);
  CHECK(change > 0.5);

  // And back: --to-peft restores the PEFT folder's updates.
  const std::string back = quote(convert_binary) + " --to-peft " + quote((scratch / "adapter.gguf").string()) + " " +
                           quote((scratch / "back").string());
  REQUIRE(std::system(back.c_str()) == 0);
  const auto returned = load_peft<double>(scratch / "back");
  REQUIRE(returned.adapters.names() == folder.adapters.names());
  for (const auto& [name, lora] : folder.adapters) {
    const Matrix<double> expected = lora.delta_weight();
    CHECK((returned.adapters.at(name).delta_weight() - expected).norm() <= 1e-6 * expected.norm());
  }
}

}  // namespace lorakit_test_test_llama_cpp
