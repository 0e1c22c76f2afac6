// The tiny llama as llama.cpp loads it: the base model as a GGUF file of the `llama` architecture (F32, llama.cpp's
// tensor names and q/k row order, a byte-level vocabulary of 256 tokens), and LoRA adapters of its projections
// through lorakit's save_gguf_lora. See docs/tiny-llama.md ("The GGUF export").
#pragma once

#include "model.hpp"

#include <lorakit/io/gguf.hpp>
#include <lorakit/io/gguf_lora.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace tiny_llama {

/// GPT-2's byte-level alphabet (`bytes_to_unicode` of OpenAI's encoder.py, which llama.cpp's `unicode_byte_to_utf8`
/// inverts): byte b is the character b itself when printable (33-126, 161-172, 174-255), else U+0100 + n for the
/// n-th other byte. Entry b is that character in UTF-8: with no merges, llama.cpp's `gpt2` tokenizer turns byte b
/// into token b, and detokenizes token b to byte b.
inline std::vector<std::string> byte_level_tokens() {
  const auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); };
  const auto utf8 = [](int code) {
    std::string s;
    if (code < 0x80) {
      s += static_cast<char>(code);
    } else {  // every code point here is below U+0800: two bytes
      s += static_cast<char>(0xC0 | (code >> 6));
      s += static_cast<char>(0x80 | (code & 0x3F));
    }
    return s;
  };
  std::vector<std::string> tokens(256);
  int others = 0;
  for (int b = 0; b < 256; ++b) tokens[static_cast<std::size_t>(b)] = utf8(printable(b) ? b : 256 + others++);
  return tokens;
}

/// Writes the model as llama.cpp's `convert_hf_to_gguf.py` would write it from Hugging Face's LlamaForCausalLM:
///
/// - keys: `general.architecture` = "llama"; `llama.context_length`, `embedding_length`, `block_count`,
///   `feed_forward_length`, `attention.head_count`, `attention.head_count_kv`, `rope.dimension_count` (the head
///   size: every entry rotates), `vocab_size` (UINT32); `llama.attention.layer_norm_rms_epsilon` = Config::norm_eps
///   and `llama.rope.freq_base` = Config::rope_theta (FLOAT32);
/// - the vocabulary: `tokenizer.ggml.model` = "gpt2" (byte-level BPE) with the 256 tokens of byte_level_tokens()
///   and no merges, so that token id = byte value both ways; no BOS or EOS is added to a prompt
///   (`add_bos_token` = `add_eos_token` = false); the BOS and EOS ids are 0 (the NUL byte, absent from text);
/// - tensors, F32: `token_embd`, `blk.N.attn_norm`, `attn_q`, `attn_k`, `attn_v`, `attn_output`, `ffn_norm`,
///   `ffn_gate`, `ffn_up`, `ffn_down`, `output_norm`, `output` (`.weight`), with the rows of `attn_q` and `attn_k`
///   in llama.cpp's rotary order (lorakit::io::permute_llama_rows with the query and the key/value head counts).
///
/// The file is replaced as a whole. Errors (lorakit::ValueError): a vocabulary other than 256 (the byte tokens);
/// (lorakit::IoError) the file cannot be written.
inline void save_gguf_base(const std::filesystem::path& file, const Weights<float>& w,
                           const std::string& name = "lorakit tiny llama") {
  const Config& c = w.config;
  c.validate();
  if (c.vocab != 256) {
    lorakit::detail::fail<lorakit::ValueError>("save_gguf_base", "the vocabulary has ", c.vocab,
                                               " tokens, expected 256 (one per byte)");
  }
  using lorakit::io::GgufValue;
  using lorakit::io::GgufType;
  const auto u32 = [](Index v) { return GgufValue::make_uint32(static_cast<std::uint32_t>(v)); };
  lorakit::io::GgufWriter g;
  g.set("general.architecture", GgufValue::make_string("llama"));
  g.set("general.name", GgufValue::make_string(name));
  g.set("general.file_type", GgufValue::make_uint32(0));  // LLAMA_FTYPE_ALL_F32
  g.set("llama.context_length", u32(c.context));
  g.set("llama.embedding_length", u32(c.dim));
  g.set("llama.block_count", u32(c.layers));
  g.set("llama.feed_forward_length", u32(c.hidden));
  g.set("llama.attention.head_count", u32(c.heads));
  g.set("llama.attention.head_count_kv", u32(c.kv_heads));
  g.set("llama.attention.layer_norm_rms_epsilon", GgufValue::make_float32(static_cast<float>(c.norm_eps)));
  g.set("llama.rope.freq_base", GgufValue::make_float32(static_cast<float>(c.rope_theta)));
  g.set("llama.rope.dimension_count", u32(c.head_dim()));
  g.set("llama.vocab_size", u32(c.vocab));

  g.set("tokenizer.ggml.model", GgufValue::make_string("gpt2"));
  g.set("tokenizer.ggml.pre", GgufValue::make_string("gpt-2"));
  g.set("tokenizer.ggml.tokens", GgufValue::make_strings(byte_level_tokens()));
  g.set("tokenizer.ggml.token_type",
        GgufValue::make_array(GgufType::int32, std::vector<GgufValue>(256, GgufValue::make_int32(1))));  // NORMAL
  g.set("tokenizer.ggml.merges", GgufValue::make_array(GgufType::string, {}));
  g.set("tokenizer.ggml.bos_token_id", GgufValue::make_uint32(0));
  g.set("tokenizer.ggml.eos_token_id", GgufValue::make_uint32(0));
  g.set("tokenizer.ggml.add_bos_token", GgufValue::make_bool(false));
  g.set("tokenizer.ggml.add_eos_token", GgufValue::make_bool(false));

  using lorakit::io::Dtype;
  g.add("token_embd.weight", w.embed, Dtype::F32);
  for (Index l = 0; l < c.layers; ++l) {
    const BlockWeights<float>& b = w.blocks[static_cast<std::size_t>(l)];
    const std::string p = "blk." + std::to_string(l) + ".";
    const auto proj = [&](Projection kind) -> const Matrix<float>& { return b.proj[static_cast<std::size_t>(kind)]; };
    g.add(p + "attn_norm.weight", b.attn_norm, Dtype::F32);
    g.add(p + "attn_q.weight", lorakit::io::permute_llama_rows(proj(Projection::q), c.heads), Dtype::F32);
    g.add(p + "attn_k.weight", lorakit::io::permute_llama_rows(proj(Projection::k), c.kv_heads), Dtype::F32);
    g.add(p + "attn_v.weight", proj(Projection::v), Dtype::F32);
    g.add(p + "attn_output.weight", proj(Projection::o), Dtype::F32);
    g.add(p + "ffn_norm.weight", b.mlp_norm, Dtype::F32);
    g.add(p + "ffn_gate.weight", proj(Projection::gate), Dtype::F32);
    g.add(p + "ffn_up.weight", proj(Projection::up), Dtype::F32);
    g.add(p + "ffn_down.weight", proj(Projection::down), Dtype::F32);
  }
  g.add("output_norm.weight", w.norm, Dtype::F32);
  g.add("output.weight", w.lm_head, Dtype::F32);
  if (!file.parent_path().empty()) std::filesystem::create_directories(file.parent_path());
  g.write(file);
}

/// The options save_gguf_lora needs for adapters of this model: the `llama` architecture and the head counts, so
/// that the B of q_proj and k_proj gets the rows' permutation of the base (adapters named as module_name gives).
inline lorakit::io::GgufLoraOptions gguf_lora_options(const Config& c) {
  lorakit::io::GgufLoraOptions options;
  options.architecture = "llama";
  options.n_head = c.heads;
  options.n_head_kv = c.kv_heads;
  return options;
}

}  // namespace tiny_llama
