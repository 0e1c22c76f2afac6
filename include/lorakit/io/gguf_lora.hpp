// LoRA adapters as llama.cpp reads them (src/llama-adapter.cpp): save_gguf_lora writes an AdapterSet<Lora<T>>
// as a GGUF adapter file, load_gguf_lora reads one back. The module names, the q/k row order of llama.cpp's
// converter and the per-file alpha are translated here; the container is io/gguf.hpp.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/io/dtype.hpp"
#include "lorakit/io/gguf.hpp"
#include "lorakit/io/peft.hpp"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

/// How llama.cpp's converter reorders the rows of a weight before writing it.
enum class GgufRowOrder {
  as_is,  ///< unchanged
  query,  ///< `LlamaModel.permute(W, n_head, n_head)`: the rotary halves of each query head interleaved
  key,    ///< `LlamaModel.permute(W, n_head, n_head_kv)`: the same over the key/value heads
};

/// One line of the name table: a Hugging Face module path and the llama.cpp tensor it becomes (without
/// ".weight"); `{L}` stands for a layer number (digits) and may appear once on each side.
struct GgufNameRule {
  std::string hf;    ///< e.g. "model.layers.{L}.self_attn.q_proj"
  std::string gguf;  ///< e.g. "blk.{L}.attn_q"
  GgufRowOrder rows = GgufRowOrder::as_is;
  /// llama.cpp applies the adapter of this tensor to looked-up rows (token_embd): the factors are stored flipped,
  /// lora_a = B [vocab x r] and lora_b = A^T [hidden x r] (see llm_build_inp_embd).
  bool embedding = false;
};

/// The names of llama-family models (Llama, Mistral, Qwen2, ...) as Hugging Face and llama.cpp spell them.
inline std::vector<GgufNameRule> llama_gguf_names() {
  return {
      {"model.layers.{L}.self_attn.q_proj", "blk.{L}.attn_q", GgufRowOrder::query, false},
      {"model.layers.{L}.self_attn.k_proj", "blk.{L}.attn_k", GgufRowOrder::key, false},
      {"model.layers.{L}.self_attn.v_proj", "blk.{L}.attn_v", GgufRowOrder::as_is, false},
      {"model.layers.{L}.self_attn.o_proj", "blk.{L}.attn_output", GgufRowOrder::as_is, false},
      {"model.layers.{L}.mlp.gate_proj", "blk.{L}.ffn_gate", GgufRowOrder::as_is, false},
      {"model.layers.{L}.mlp.up_proj", "blk.{L}.ffn_up", GgufRowOrder::as_is, false},
      {"model.layers.{L}.mlp.down_proj", "blk.{L}.ffn_down", GgufRowOrder::as_is, false},
      {"model.embed_tokens", "token_embd", GgufRowOrder::as_is, true},
      {"lm_head", "output", GgufRowOrder::as_is, false},
  };
}

/// What save_gguf_lora needs to know about the base model, and the name table (extend `names` for other models).
struct GgufLoraOptions {
  std::string architecture = "llama";  ///< the base model's `general.architecture`
  Index n_head = 0;                    ///< attention heads (0: no q/k permutation; required for "llama" q/k)
  Index n_head_kv = 0;                 ///< key/value heads (0: n_head)
  Dtype dtype = Dtype::F32;            ///< F32, F16 or BF16
  std::vector<GgufNameRule> names = llama_gguf_names();
};

/// A GGUF LoRA adapter as read by load_gguf_lora.
template <class T>
struct GgufLoraAdapter {
  /// One Lora per adapted tensor with alpha = the file's alpha (r when the file's alpha is 0, as llama.cpp then
  /// scales by 1), so each delta_weight() is what llama.cpp adds; named by Hugging Face module paths when the
  /// file is lorakit's or options were given, else by llama.cpp's tensor names (`blk.0.attn_q.weight`).
  AdapterSet<Lora<T>> adapters;
  double alpha = 0;             ///< adapter.lora.alpha (0 when absent)
  std::string architecture;     ///< general.architecture
  Index n_head = 0;             ///< the head counts used to undo the q/k permutation (0: rows as stored)
  Index n_head_kv = 0;
  std::map<std::string, GgufValue> metadata;  ///< every other key/value of the file
};

namespace detail {

inline constexpr const char* gguf_weight_suffix = ".weight";

/// The layer number `{L}` matches in `name`, "" for a pattern without `{L}`, or nothing when it does not match.
inline std::optional<std::string> match_name_pattern(const std::string& pattern, const std::string& name) {
  const auto at = pattern.find("{L}");
  if (at == std::string::npos) return pattern == name ? std::optional<std::string>("") : std::nullopt;
  const std::string head = pattern.substr(0, at), tail = pattern.substr(at + 3);
  if (name.size() <= head.size() + tail.size() || name.compare(0, head.size(), head) != 0 || !ends_with(name, tail)) {
    return std::nullopt;
  }
  const std::string layer = name.substr(head.size(), name.size() - head.size() - tail.size());
  if (layer.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return layer;
}

inline std::string fill_name_pattern(const std::string& pattern, const std::string& layer) {
  const auto at = pattern.find("{L}");
  return at == std::string::npos ? pattern : pattern.substr(0, at) + layer + pattern.substr(at + 3);
}

/// The llama.cpp tensor (with ".weight") and rule of a module name; `rule` is null for a name given in
/// llama.cpp's form that no rule knows (it passes through as is). `hf`: the name is a Hugging Face module path
/// (its rows are in Hugging Face order); a name in llama.cpp's form has llama.cpp's row order already.
struct GgufTarget {
  std::string tensor;
  const GgufNameRule* rule = nullptr;
  bool hf = false;
};

inline std::string known_gguf_patterns(const std::vector<GgufNameRule>& rules) {
  std::string out;
  for (const auto& rule : rules) out += "\n  " + rule.hf + " -> " + rule.gguf + gguf_weight_suffix;
  return out;
}

inline GgufTarget gguf_target(const char* where, const std::string& module, const std::vector<GgufNameRule>& rules) {
  const std::string name = strip_module_prefix(module);
  for (const auto& rule : rules) {
    if (const auto layer = match_name_pattern(rule.hf, name)) return {fill_name_pattern(rule.gguf, *layer) + gguf_weight_suffix, &rule, true};
  }
  const std::string bare = ends_with(name, gguf_weight_suffix) ? name.substr(0, name.size() - 7) : name;
  for (const auto& rule : rules) {
    if (match_name_pattern(rule.gguf, bare)) return {bare + gguf_weight_suffix, &rule, false};
  }
  if (ends_with(name, gguf_weight_suffix)) return {name, nullptr, false};  // another llama.cpp tensor, named as stored
  lorakit::detail::fail<ValueError>(where, "adapter '", module, "' has no llama.cpp name: expected a module path of the table ",
                   "(GgufLoraOptions::names), a llama.cpp name of it, or a llama.cpp tensor name ending in '.weight'; "
                   "the known patterns are:", known_gguf_patterns(rules));
}

/// The Hugging Face module of a llama.cpp tensor name (with ".weight") and its rule, or nothing.
inline std::optional<std::pair<std::string, const GgufNameRule*>> hf_module(const std::string& tensor,
                                                                           const std::vector<GgufNameRule>& rules) {
  if (!ends_with(tensor, gguf_weight_suffix)) return std::nullopt;
  const std::string bare = tensor.substr(0, tensor.size() - 7);
  for (const auto& rule : rules) {
    if (const auto layer = match_name_pattern(rule.gguf, bare)) return std::make_pair(fill_name_pattern(rule.hf, *layer), &rule);
  }
  return std::nullopt;
}

/// The number of heads whose rows llama.cpp's permute interleaves (`LlamaModel.permute` uses n_head_kv for k).
inline Index permuted_heads(GgufRowOrder order, Index n_head, Index n_head_kv) {
  if (order == GgufRowOrder::as_is || n_head == 0) return 0;
  return order == GgufRowOrder::query ? n_head : (n_head_kv > 0 ? n_head_kv : n_head);
}

/// Row `i` of the permuted matrix is row `source_row(i)` of the original: with d = rows / heads, llama.cpp's
/// `W.reshape(heads, 2, d/2, in).swapaxes(1, 2)` puts row h d + i' (d/2) + j at h d + 2 j + i' (i' in {0, 1}).
inline Index permuted_source_row(Index i, Index head_dim) {
  const Index h = i / head_dim, within = i % head_dim;
  return h * head_dim + (within % 2) * (head_dim / 2) + within / 2;
}

inline void check_permutable(const char* where, const std::string& name, Index rows, Index heads) {
  if (heads < 1 || rows % (2 * heads) != 0) {
    lorakit::detail::fail<ValueError>(where, "'", name, "' has ", rows, " output rows, which do not split into ", heads,
                     " heads of an even size (check n_head and n_head_kv)");
  }
}

/// llama.cpp's converter order: out.row(i) = M.row(source_row(i)).
template <class Derived>
Matrix<typename Derived::Scalar> permute_heads(const Eigen::MatrixBase<Derived>& M, Index heads) {
  Matrix<typename Derived::Scalar> out(M.rows(), M.cols());
  const Index head_dim = M.rows() / heads;
  for (Index i = 0; i < M.rows(); ++i) out.row(i) = M.row(permuted_source_row(i, head_dim));
  return out;
}

/// The inverse of permute_heads.
template <class Derived>
Matrix<typename Derived::Scalar> unpermute_heads(const Eigen::MatrixBase<Derived>& M, Index heads) {
  Matrix<typename Derived::Scalar> out(M.rows(), M.cols());
  const Index head_dim = M.rows() / heads;
  for (Index i = 0; i < M.rows(); ++i) out.row(permuted_source_row(i, head_dim)) = M.row(i);
  return out;
}

inline const char* lorakit_n_head_key = "lorakit.n_head";
inline const char* lorakit_n_head_kv_key = "lorakit.n_head_kv";
inline const char* lorakit_names_key = "lorakit.module_names";
inline const char* lorakit_row_heads_key = "lorakit.row_heads";
inline const char* lorakit_flipped_key = "lorakit.flipped";

}  // namespace detail

/// A weight's rows in the order llama.cpp's converter writes them for its rotary embedding, which rotates adjacent
/// pairs where Hugging Face's rotates halves (`convert_hf_to_gguf.py`, `LlamaModel.permute`):
/// `W.reshape(heads, 2, d/2, in).swapaxes(1, 2).reshape(out, in)` with d = out / heads, i.e. row
/// \f$h d + 2j + i\f$ of the result is row \f$h d + i\,d/2 + j\f$ of W (i in {0, 1}, j < d/2). Use n_head heads
/// for `q_proj` and n_head_kv for `k_proj` when writing a llama base model; save_gguf_lora does the same to B.
/// Errors (ValueError): heads < 1, or rows that do not split into `heads` heads of an even size.
template <class Derived>
Matrix<typename Derived::Scalar> permute_llama_rows(const Eigen::MatrixBase<Derived>& W, Index heads) {
  detail::check_permutable("permute_llama_rows", "W", W.rows(), heads);
  return detail::permute_heads(W, heads);
}

/// The file alpha save_gguf_lora writes for `adapters`: the most common \f$s_\ell r_\ell\f$ (the alpha that gives
/// layer \f$\ell\f$ its scaling \f$s_\ell\f$ under llama.cpp's \f$s = \alpha / r\f$), rounded to float; 1 when
/// every scaling is zero.
template <class T>
float gguf_file_alpha(const AdapterSet<Lora<T>>& adapters) {
  std::vector<double> alphas;
  for (const auto& [name, lora] : adapters) {
    const double alpha = static_cast<double>(lora.scaling()) * static_cast<double>(lora.rank());
    if (alpha != 0) alphas.push_back(alpha);
  }
  return alphas.empty() ? 1.0f : double_to_float(detail::most_common(alphas));
}

/// Writes `adapters` as a llama.cpp LoRA adapter (GGUF v3), replacing `file` atomically.
///
/// Keys: `general.type` = "adapter", `general.architecture` = options.architecture, `adapter.type` = "lora",
/// `adapter.lora.alpha` (FLOAT32) = \f$\alpha_f\f$ = gguf_file_alpha(adapters), and lorakit's own
/// `lorakit.n_head`, `lorakit.n_head_kv` (UINT32) and, one entry per tensor pair, `lorakit.module_names` (the
/// adapters' names), `lorakit.row_heads` (UINT32: the heads whose rows were permuted, 0 for none) and
/// `lorakit.flipped` (BOOL: the embedding layout), which llama.cpp ignores. Tensors, per adapter, in set order:
/// `<tensor>.lora_a` = A (ggml ne = [in, r]) and `<tensor>.lora_b` = B' (ne = [r, out]), with the tensor named
/// by options.names. llama.cpp adds \f$(\alpha_f / r)\, B' A\f$, so each layer's own scaling is baked into B:
/// \f[ B' = P\,B\,\frac{s\,r}{\alpha_f}, \f]
/// exactly B where \f$s r = \alpha_f\f$ (uniform rank and alpha: no rounding at all in F32). P is llama.cpp's
/// q/k row permutation (query: n_head heads, key: n_head_kv heads) for adapters named by Hugging Face module
/// paths, and the identity for adapters named in llama.cpp's form (their rows are in llama.cpp's order already). For token_embd the factors
/// are stored as llama.cpp applies them: lora_a = B' (ne = [r, vocab]) and lora_b = \f$A^\top\f$ (ne = [r, hidden]).
///
/// Errors, before anything is written: an empty set, an empty architecture, a dtype other than F32, F16, BF16,
/// negative head counts, a name without a llama.cpp name (the message lists the table), two adapters on one
/// tensor, q/k of "llama" without n_head, rows that do not split into heads (ValueError); a value that
/// overflows the dtype (ValueError); the file cannot be written (IoError).
template <class T>
void save_gguf_lora(const std::filesystem::path& file, const AdapterSet<Lora<T>>& adapters, const GgufLoraOptions& options = {}) {
  constexpr const char* where = "save_gguf_lora";
  if (adapters.empty()) lorakit::detail::fail<ValueError>(where, "the adapter set is empty");
  if (options.architecture.empty()) lorakit::detail::fail<ValueError>(where, "options.architecture is empty, expected the base model's (e.g. \"llama\")");
  if (options.dtype == Dtype::F64) lorakit::detail::fail<ValueError>(where, "options.dtype is F64, expected F32, F16 or BF16 (llama.cpp's types)");
  if (options.n_head < 0 || options.n_head_kv < 0 || options.n_head_kv > options.n_head) {
    lorakit::detail::fail<ValueError>(where, "n_head = ", options.n_head, " and n_head_kv = ", options.n_head_kv,
                                      ", expected 0 <= n_head_kv <= n_head");
  }
  const float alpha = gguf_file_alpha(adapters);
  GgufWriter writer;
  writer.set("general.type", GgufValue::make_string("adapter"));
  writer.set("general.architecture", GgufValue::make_string(options.architecture));
  writer.set("adapter.type", GgufValue::make_string("lora"));
  writer.set("adapter.lora.alpha", GgufValue::make_float32(alpha));
  writer.set(detail::lorakit_n_head_key, GgufValue::make_uint32(static_cast<std::uint32_t>(options.n_head)));
  writer.set(detail::lorakit_n_head_kv_key, GgufValue::make_uint32(static_cast<std::uint32_t>(options.n_head_kv)));
  std::map<std::string, std::string> owners;  // tensor -> module
  std::vector<std::string> modules;
  std::vector<GgufValue> row_heads, flipped;
  for (const auto& [name, lora] : adapters) {
    modules.push_back(name);
    const detail::GgufTarget target = detail::gguf_target(where, name, options.names);
    const auto [it, fresh] = owners.emplace(target.tensor, name);
    if (!fresh) lorakit::detail::fail<ValueError>(where, "adapters '", it->second, "' and '", name, "' both map to '", target.tensor, "'");
    const GgufRowOrder order = target.rule && target.hf ? target.rule->rows : GgufRowOrder::as_is;
    if (order != GgufRowOrder::as_is && options.n_head == 0 && options.architecture == "llama") {
      lorakit::detail::fail<ValueError>(where, "adapter '", name, "' is a llama q/k projection, whose rows llama.cpp's converter ",
                                        "permutes per head: set options.n_head and options.n_head_kv");
    }
    const Index heads = detail::permuted_heads(order, options.n_head, options.n_head_kv);
    const double factor = static_cast<double>(lora.scaling()) * static_cast<double>(lora.rank()) / static_cast<double>(alpha);
    Matrix<double> B = lora.B().template cast<double>();
    if (factor != 1) B *= factor;
    if (heads > 0) {
      detail::check_permutable(where, name, B.rows(), heads);
      B = detail::permute_heads(B, heads);
    }
    row_heads.push_back(GgufValue::make_uint32(static_cast<std::uint32_t>(heads)));
    flipped.push_back(GgufValue::make_bool(target.rule && target.rule->embedding));
    if (target.rule && target.rule->embedding) {
      writer.add(target.tensor + ".lora_a", B, options.dtype);
      writer.add(target.tensor + ".lora_b", lora.A().transpose(), options.dtype);
    } else {
      writer.add(target.tensor + ".lora_a", lora.A(), options.dtype);
      writer.add(target.tensor + ".lora_b", B, options.dtype);
    }
  }
  writer.set(detail::lorakit_names_key, GgufValue::make_strings(modules));
  writer.set(detail::lorakit_row_heads_key, GgufValue::make_array(GgufType::uint32, std::move(row_heads)));
  writer.set(detail::lorakit_flipped_key, GgufValue::make_array(GgufType::boolean, std::move(flipped)));
  writer.write(file);
}

/// Reads a llama.cpp LoRA adapter. Files written by save_gguf_lora carry the head counts and the adapters' names,
/// so their adapters come back under the names they were saved with, the q/k rows of those named by Hugging Face
/// module paths in Hugging Face order; files of other tools are read with llama.cpp's names and row order, unless
/// `options` is given (then its table and head counts are used).
/// Either way each adapter's delta_weight() is the update llama.cpp applies: \f$(\alpha / r)\,B A\f$.
///
/// Errors (IoError, naming the file): a malformed GGUF file (see GgufReader); `general.type` not "adapter" or
/// `adapter.type` not "lora"; no `general.architecture`; `adapter.lora.alpha` not FLOAT32 or not finite; a
/// tensor that is not `<name>.lora_a` / `.lora_b`, a pair with a factor missing, factors that are not 2-D or
/// whose ranks disagree, a rank above the layer's sizes, non-finite values, rows that do not split into heads.
template <class T>
GgufLoraAdapter<T> load_gguf_lora(const std::filesystem::path& file, const std::optional<GgufLoraOptions>& options = std::nullopt);

namespace detail {

template <class T>
GgufLoraAdapter<T> load_gguf_lora_impl(const std::filesystem::path& file, const GgufLoraOptions* given) {
  LORAKIT_STATIC_ASSERT_SCALAR(T);
  constexpr const char* where = "load_gguf_lora";
  const GgufReader reader(file);
  const auto bad = [&](const auto&... parts) { lorakit::detail::fail<IoError>(where, "'", file.string(), "': ", parts...); };
  const auto text = [&](const char* key, const char* expected) {
    const GgufValue* value = reader.find(key);
    if (value == nullptr || value->type != GgufType::string) bad("no STRING key ", key, expected ? std::string(" (expected \"") + expected + "\")" : "");
    if (expected != nullptr && value->string != expected) bad(key, " is '", gguf_excerpt(value->string), "', expected '", expected, "'");
    return value->string;
  };
  text("general.type", "adapter");
  text("adapter.type", "lora");
  GgufLoraAdapter<T> out;
  out.architecture = text("general.architecture", nullptr);
  if (const GgufValue* alpha = reader.find("adapter.lora.alpha")) {
    if (alpha->type != GgufType::float32) bad("adapter.lora.alpha is ", gguf_type_name(alpha->type), ", expected FLOAT32 (llama.cpp reads no other type)");
    if (!std::isfinite(alpha->real)) bad("adapter.lora.alpha is ", alpha->real, ", expected a finite value");
    out.alpha = alpha->real;
  }
  const auto head_count = [&](const char* key) -> Index {
    const GgufValue* value = reader.find(key);
    if (value == nullptr) return 0;
    if (value->type != GgufType::uint32) bad(key, " is ", gguf_type_name(value->type), ", expected UINT32");
    return static_cast<Index>(value->uint);
  };
  const bool own = reader.has(lorakit_n_head_key);
  const GgufLoraOptions defaults;
  const std::vector<GgufNameRule>& rules = given ? given->names : defaults.names;
  const bool map_names = own || given != nullptr;
  const GgufValue* recorded = own && given == nullptr ? reader.find(lorakit_names_key) : nullptr;
  const GgufValue* recorded_heads = recorded ? reader.find(lorakit_row_heads_key) : nullptr;
  const GgufValue* recorded_flipped = recorded ? reader.find(lorakit_flipped_key) : nullptr;
  out.n_head = given ? given->n_head : head_count(lorakit_n_head_key);
  out.n_head_kv = given ? given->n_head_kv : head_count(lorakit_n_head_kv_key);
  for (const auto& key : reader.keys()) {
    if (key != "general.type" && key != "adapter.type" && key != "general.architecture" && key != "adapter.lora.alpha" &&
        key != lorakit_n_head_key && key != lorakit_n_head_kv_key && key != lorakit_names_key &&
        key != lorakit_row_heads_key && key != lorakit_flipped_key) {
      out.metadata.emplace(key, reader.values().at(key));
    }
  }

  std::vector<std::string> order;                                      // base tensors in file order
  std::map<std::string, std::pair<std::string, std::string>> factors;  // base -> (lora_a, lora_b)
  for (const auto& tensor : reader.tensors()) {
    const bool is_a = ends_with(tensor.name, ".lora_a"), is_b = ends_with(tensor.name, ".lora_b");
    if (!is_a && !is_b) bad("tensor '", gguf_excerpt(tensor.name), "' is neither a .lora_a nor a .lora_b factor");
    const std::string base = tensor.name.substr(0, tensor.name.size() - 7);
    if (factors.count(base) == 0) order.push_back(base);
    (is_a ? factors[base].first : factors[base].second) = tensor.name;
  }
  const auto check_recorded = [&](const GgufValue* value, const char* key, GgufType type) {
    if (value == nullptr || value->type != GgufType::array || value->element_type != type || value->array.size() != order.size()) {
      bad(key, " is missing or not an array of ", order.size(), " ", gguf_type_name(type), " (one per tensor pair)");
    }
  };
  if (recorded != nullptr) {
    check_recorded(recorded, lorakit_names_key, GgufType::string);
    check_recorded(recorded_heads, lorakit_row_heads_key, GgufType::uint32);
    check_recorded(recorded_flipped, lorakit_flipped_key, GgufType::boolean);
  }
  for (std::size_t pair = 0; pair < order.size(); ++pair) {
    const std::string& base = order[pair];
    const auto& [a_name, b_name] = factors.at(base);
    if (a_name.empty() || b_name.empty()) bad("tensor '", base, "' has ", a_name.empty() ? "a .lora_b but no .lora_a" : "a .lora_a but no .lora_b");
    const GgufTensorInfo& a = reader.info(a_name);
    const GgufTensorInfo& b = reader.info(b_name);
    if (a.ne.size() != 2 || b.ne.size() != 2) bad("the factors of '", base, "' have ne ", shape_string(a.ne), " and ", shape_string(b.ne), ", expected 2-D tensors");
    // Before any loop over rows: a factor with no values may still claim 2^53 rows.
    if (a.ne[0] < 1 || a.ne[1] < 1 || b.ne[0] < 1 || b.ne[1] < 1) bad("the factors of '", base, "' have ne ", shape_string(a.ne), " and ", shape_string(b.ne), ", expected no empty dimension (rank 0 or an empty layer)");
    // The module name, row order and layout: as recorded by save_gguf_lora, else through the table.
    std::string name = base;
    bool embedding = false;
    Index heads = 0;
    if (recorded != nullptr) {
      name = recorded->array[pair].string;
      heads = static_cast<Index>(recorded_heads->array[pair].uint);
      embedding = recorded_flipped->array[pair].boolean;
    } else {
      const auto mapped = map_names ? hf_module(base, rules) : std::nullopt;
      const GgufNameRule* rule = mapped ? mapped->second : nullptr;
      if (!rule) {  // the embedding rule is known from the llama.cpp name even when names are kept as stored
        for (const auto& r : rules) {
          if (r.embedding && match_name_pattern(r.gguf + gguf_weight_suffix, base)) rule = &r;
        }
      }
      embedding = rule && rule->embedding;
      if (mapped) {
        name = mapped->first;
        heads = permuted_heads(rule->rows, out.n_head, out.n_head_kv);
      }
    }
    // PEFT orientation: A [r x in], B [out x r].
    Matrix<T> A, B;
    if (embedding) {
      if (a.ne[0] != b.ne[0]) bad("token embedding '", base, "': lora_a ne ", shape_string(a.ne), " and lora_b ne ", shape_string(b.ne), " disagree on the rank ne[0]");
      B = reader.matrix<T>(a_name);                 // [vocab x r]
      A = reader.matrix<T>(b_name).transpose();     // [r x hidden]
    } else {
      if (a.ne[1] != b.ne[0]) bad("'", base, "': lora_a ne ", shape_string(a.ne), " and lora_b ne ", shape_string(b.ne), " disagree on the rank (expected ne = [in, r] and [r, out])");
      A = reader.matrix<T>(a_name);
      B = reader.matrix<T>(b_name);
    }
    if (heads > 0) {
      if (B.rows() % (2 * heads) != 0) bad("'", base, "' has ", B.rows(), " output rows, which do not split into ", heads, " heads of an even size");
      B = unpermute_heads(B, heads);
    }
    if (!lorakit::detail::all_finite(A) || !lorakit::detail::all_finite(B)) bad("the factors of '", base, "' hold a non-finite value");
    LoraConfig config;
    config.rank = A.rows();
    config.alpha = out.alpha != 0 ? out.alpha : static_cast<double>(config.rank);  // llama.cpp: alpha 0 scales by 1
    config.init = LoraInit::zeros;
    try {
      if (config.rank < 1 || config.rank > std::min(A.cols(), B.rows())) {
        lorakit::detail::fail<ValueError>(where, "rank ", config.rank, " is outside [1, min(in, out) = ", std::min(A.cols(), B.rows()), "]");
      }
      Lora<T> lora(A.cols(), B.rows(), config);
      lora.A() = std::move(A);
      lora.B() = std::move(B);
      out.adapters.add(name, std::move(lora));
    } catch (const IoError&) {
      throw;
    } catch (const Error& e) {
      bad("'", base, "': ", e.what());
    }
  }
  return out;
}

}  // namespace detail

template <class T>
GgufLoraAdapter<T> load_gguf_lora(const std::filesystem::path& file, const std::optional<GgufLoraOptions>& options) {
  return detail::load_gguf_lora_impl<T>(file, options ? &*options : nullptr);
}

}  // namespace lorakit::io
