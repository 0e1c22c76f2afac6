// The tiny llama: a llama-architecture decoder (token embedding, RMSNorm, RoPE, causal grouped-query attention,
// SwiGLU MLP, untied output) over a byte vocabulary, with forward and backward written by hand over Eigen.
//
// The seven projections of each block are a template parameter `Proj`: `Dense<T>` (trainable or frozen weights:
// pretraining, full fine-tuning) or `lorakit::AdaptedLinear<T, lorakit::AdapterRef<Adapter>>` over an adapter of
// an `AdapterSet` named as in Hugging Face (`model.layers.N.self_attn.q_proj`, `model.layers.N.mlp.gate_proj`).
#pragma once

#include "layers.hpp"

#include <array>
#include <functional>
#include <sstream>
#include <utility>

namespace tiny_llama {

/// The shape of the model. Defaults: the study's model (about 0.2 M weights).
struct Config {
  Index vocab = 256;      // bytes
  Index dim = 64;         // d_model
  Index layers = 2;
  Index heads = 4;
  Index kv_heads = 2;
  Index hidden = 176;     // SwiGLU width (about 8/3 d, as llama)
  Index context = 64;     // the longest sequence (RoPE tables)
  double norm_eps = 1e-5;
  double rope_theta = 10000;

  Index head_dim() const { return dim / heads; }
  Index kv_dim() const { return kv_heads * head_dim(); }

  /// Errors (lorakit::ValueError): a size below 1, dim not a multiple of heads, an odd head size, heads not a
  /// multiple of kv_heads, a non-positive eps or theta.
  void validate() const {
    constexpr const char* where = "tiny_llama::Config";
    for (const auto& [name, value] : {std::pair<const char*, Index>{"vocab", vocab}, {"dim", dim}, {"layers", layers},
                                      {"heads", heads}, {"kv_heads", kv_heads}, {"hidden", hidden},
                                      {"context", context}}) {
      if (value < 1) lorakit::detail::fail<lorakit::ValueError>(where, name, " is ", value, ", expected >= 1");
    }
    if (dim % heads != 0 || head_dim() % 2 != 0) {
      lorakit::detail::fail<lorakit::ValueError>(where, "dim = ", dim, " over heads = ", heads,
                                                 " must give an even head size");
    }
    if (heads % kv_heads != 0) {
      lorakit::detail::fail<lorakit::ValueError>(where, "heads = ", heads, " is not a multiple of kv_heads = ",
                                                 kv_heads);
    }
    if (!(norm_eps > 0) || !(rope_theta > 0)) {
      lorakit::detail::fail<lorakit::ValueError>(where, "norm_eps = ", norm_eps, " and rope_theta = ", rope_theta,
                                                 " must be positive");
    }
  }

  /// Everything the weights depend on, as text (part of the pretraining cache key).
  std::string key() const {
    std::ostringstream out;
    out << "llama vocab=" << vocab << " dim=" << dim << " layers=" << layers << " heads=" << heads
        << " kv_heads=" << kv_heads << " hidden=" << hidden << " context=" << context << " eps=" << norm_eps
        << " theta=" << rope_theta;
    return out.str();
  }
};

/// The seven projections of a block, in Hugging Face's order.
enum class Projection { q, k, v, o, gate, up, down };
inline constexpr std::array<Projection, 7> kProjections = {Projection::q,    Projection::k,  Projection::v,
                                                           Projection::o,    Projection::gate, Projection::up,
                                                           Projection::down};

/// Hugging Face's module path of a projection, e.g. `model.layers.0.self_attn.q_proj`.
inline std::string module_name(Index layer, Projection p) {
  static const char* const names[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  return "model.layers." + std::to_string(layer) + "." + names[static_cast<int>(p)];
}

/// A projection's module path with its [in, out] sizes.
struct ProjectionShape {
  std::string name;
  Index layer;
  Projection kind;
  Index in, out;
};

/// Every projection of the model, layer by layer.
inline std::vector<ProjectionShape> projection_shapes(const Config& c) {
  std::vector<ProjectionShape> out;
  for (Index l = 0; l < c.layers; ++l) {
    for (Projection p : kProjections) {
      Index in = c.dim, size = c.dim;
      if (p == Projection::k || p == Projection::v) size = c.kv_dim();
      if (p == Projection::gate || p == Projection::up) size = c.hidden;
      if (p == Projection::down) in = c.hidden;
      out.push_back({module_name(l, p), l, p, in, size});
    }
  }
  return out;
}

/// The weights of one block.
template <class T>
struct BlockWeights {
  Vector<T> attn_norm, mlp_norm;  // input_layernorm, post_attention_layernorm
  std::array<Matrix<T>, 7> proj;  // indexed by Projection, each [out x in]
};

/// The weights of the whole model (what pretraining produces and every method starts from).
template <class T>
struct Weights {
  Config config;
  Matrix<T> embed;    // model.embed_tokens [vocab x dim]
  std::vector<BlockWeights<T>> blocks;
  Vector<T> norm;     // model.norm
  Matrix<T> lm_head;  // [vocab x dim], not tied to embed

  /// A fresh model: projections, embedding and head N(0, 0.02^2) as Hugging Face's initializer_range; norms 1.
  static Weights random(const Config& c, lorakit::Rng& rng) {
    c.validate();
    Weights w;
    w.config = c;
    w.embed.resize(c.vocab, c.dim);
    rng.fill_normal(w.embed, T(0), T(0.02));
    for (Index l = 0; l < c.layers; ++l) {
      BlockWeights<T> b;
      b.attn_norm = Vector<T>::Ones(c.dim);
      b.mlp_norm = Vector<T>::Ones(c.dim);
      for (const auto& shape : projection_shapes(c)) {
        if (shape.layer != l) continue;
        Matrix<T>& W = b.proj[static_cast<std::size_t>(shape.kind)];
        W.resize(shape.out, shape.in);
        rng.fill_normal(W, T(0), T(0.02));
      }
      w.blocks.push_back(std::move(b));
    }
    w.norm = Vector<T>::Ones(c.dim);
    w.lm_head.resize(c.vocab, c.dim);
    rng.fill_normal(w.lm_head, T(0), T(0.02));
    return w;
  }

  const Matrix<T>& projection(Index layer, Projection p) const {
    return blocks[static_cast<std::size_t>(layer)].proj[static_cast<std::size_t>(p)];
  }
};

/// Which tensors besides the projections train (the projections' own flag is in `Proj`).
struct Trainable {
  bool embed = false, norms = false, lm_head = false;
  static Trainable all() { return {true, true, true}; }
};

/// One decoder block:
/// \f$x_2 = x + o(\mathrm{attn}(\mathrm{rope}(q(n_1)), \mathrm{rope}(k(n_1)), v(n_1)))\f$ with \f$n_1 = \mathrm{rms}(x)\f$,
/// then \f$x_3 = x_2 + \mathrm{down}(\mathrm{silu}(\mathrm{gate}(n_2)) \odot \mathrm{up}(n_2))\f$ with \f$n_2 = \mathrm{rms}(x_2)\f$.
template <class T, class Proj>
class Block {
 public:
  Block(const Config& c, const BlockWeights<T>& w, std::array<Proj, 7> projections, bool norms_train)
      : attn_norm(w.attn_norm, c.norm_eps, norms_train), mlp_norm(w.mlp_norm, c.norm_eps, norms_train),
        proj(std::move(projections)), attention_(c.heads, c.kv_heads, c.head_dim()) {}

  RmsNorm<T> attn_norm, mlp_norm;
  std::array<Proj, 7> proj;

  Proj& operator[](Projection p) { return proj[static_cast<std::size_t>(p)]; }

  /// x [B*L x dim] -> out (the residual stream after the block); keeps what the backward needs.
  void forward(const Matrix<T>& x, const Rope<T>& rope, Index seq_len, Matrix<T>& out) {
    const Index n = x.rows();
    x_ = x;
    attn_norm.forward(x_, n1_, r1_);
    project(Projection::q, n1_, q_);
    project(Projection::k, n1_, k_);
    project(Projection::v, n1_, v_);
    rope.forward(q_, seq_len);
    rope.forward(k_, seq_len);
    attention_.forward(q_, k_, v_, seq_len, att_);
    project(Projection::o, att_, x2_);
    x2_ += x_;
    mlp_norm.forward(x2_, n2_, r2_);
    project(Projection::gate, n2_, g_);
    project(Projection::up, n2_, u_);
    SwiGlu<T>::forward(g_, u_, h_);
    out.resize(n, x.cols());
    (*this)[Projection::down].forward(h_, out);
    out += x2_;
  }

  /// dout (gradient at the block's output) -> dx (gradient at its input).
  void backward(const Matrix<T>& dout, const Rope<T>& rope, Index seq_len, Matrix<T>& dx) {
    dy_[idx(Projection::down)] = dout;
    back(Projection::down, h_, dh_);
    SwiGlu<T>::backward(g_, u_, dh_, dy_[idx(Projection::gate)], dy_[idx(Projection::up)]);
    back(Projection::gate, n2_, dn_);
    back(Projection::up, n2_, tmp_);
    dn_ += tmp_;
    mlp_norm.backward(x2_, r2_, dn_, dx2_);
    dx2_ += dout;
    dy_[idx(Projection::o)] = dx2_;
    back(Projection::o, att_, datt_);
    attention_.backward(q_, k_, v_, datt_, seq_len, dy_[idx(Projection::q)], dy_[idx(Projection::k)],
                        dy_[idx(Projection::v)]);
    rope.backward(dy_[idx(Projection::q)], seq_len);
    rope.backward(dy_[idx(Projection::k)], seq_len);
    back(Projection::q, n1_, dn_);
    back(Projection::k, n1_, tmp_);
    dn_ += tmp_;
    back(Projection::v, n1_, tmp_);
    dn_ += tmp_;
    attn_norm.backward(x_, r1_, dn_, dx);
    dx += dx2_;
  }

  /// The input of a projection in the last forward ([B*L x in]): what EVA observes.
  const Matrix<T>& input_of(Projection p) const {
    switch (p) {
      case Projection::q: case Projection::k: case Projection::v: return n1_;
      case Projection::o: return att_;
      case Projection::gate: case Projection::up: return n2_;
      case Projection::down: break;
    }
    return h_;
  }
  /// The gradient at a projection's output in the last backward ([B*L x out]): what LoRA-DA's Fisher factors use.
  const Matrix<T>& grad_output_of(Projection p) const { return dy_[idx(p)]; }

 private:
  static std::size_t idx(Projection p) { return static_cast<std::size_t>(p); }
  void project(Projection p, const Matrix<T>& in, Matrix<T>& out) {
    out.resize(in.rows(), (*this)[p].out_features());
    (*this)[p].forward(in, out);
  }
  void back(Projection p, const Matrix<T>& in, Matrix<T>& din) {
    din.resize(in.rows(), in.cols());
    (*this)[p].backward(in, dy_[idx(p)], din);
  }

  Attention<T> attention_;
  Matrix<T> x_, n1_, q_, k_, v_, att_, x2_, n2_, g_, u_, h_;
  Vector<T> r1_, r2_;
  std::array<Matrix<T>, 7> dy_;
  Matrix<T> dh_, dn_, tmp_, dx2_, datt_;
};

/// The model: embedding, blocks, final RMSNorm and the untied output head, over batches of B token sequences of
/// length L (given as B*L bytes, sequence after sequence).
template <class T, class Proj>
class Model {
  Config config_;

 public:
  /// Builds the projection of module `name` from its pretrained weight W [out x in].
  using MakeProjection = std::function<Proj(const std::string& name, const Matrix<T>& W)>;

  Model(const Weights<T>& w, const MakeProjection& make, Trainable trainable = {})
      : config_(w.config), embed(w.embed, trainable.embed), norm(w.norm, w.config.norm_eps, trainable.norms),
        lm_head(w.lm_head, trainable.lm_head), rope_(w.config.context, w.config.head_dim(), w.config.rope_theta) {
    config_.validate();
    for (Index l = 0; l < config_.layers; ++l) {
      const BlockWeights<T>& bw = w.blocks[static_cast<std::size_t>(l)];
      blocks.emplace_back(config_, bw, make_block(l, bw, make), trainable.norms);
    }
  }

  Embedding<T> embed;
  std::vector<Block<T, Proj>> blocks;
  RmsNorm<T> norm;
  Dense<T> lm_head;

  const Config& config() const { return config_; }

  /// Logits [B*L x vocab] of `tokens` (B*L bytes, sequences of length seq_len <= context), kept until the next call.
  const Matrix<T>& forward(const std::vector<std::uint8_t>& tokens, Index seq_len) {
    check_tokens("Model::forward", tokens, seq_len);
    seq_len_ = seq_len;
    tokens_ = tokens;
    embed.forward(tokens_, stream_[0]);
    for (std::size_t l = 0; l < blocks.size(); ++l) blocks[l].forward(stream_[l], rope_, seq_len, stream_[l + 1]);
    norm.forward(stream_.back(), final_, final_r_);
    logits_.resize(final_.rows(), config_.vocab);
    lm_head.forward(final_, logits_);
    return logits_;
  }

  /// Mean cross-entropy (nats per byte) of the last forward against `targets` (one per row), and its gradient in
  /// every trainable tensor (accumulated).
  double backward(const std::vector<std::uint8_t>& targets) {
    if (static_cast<Index>(targets.size()) != logits_.rows()) {
      lorakit::detail::fail<lorakit::ShapeError>("Model::backward", "targets has ", targets.size(),
                                                 " entries, expected ", logits_.rows(), " (the rows of the forward)");
    }
    const double loss = cross_entropy(logits_, targets, &dlogits_);
    dfinal_.resize(final_.rows(), final_.cols());
    lm_head.backward(final_, dlogits_, dfinal_);
    norm.backward(stream_.back(), final_r_, dfinal_, dstream_[0]);
    for (std::size_t l = blocks.size(); l-- > 0;) {
      blocks[l].backward(dstream_[0], rope_, seq_len_, dstream_[1]);
      std::swap(dstream_[0], dstream_[1]);
    }
    embed.backward(tokens_, dstream_[0]);
    return loss;
  }

  /// Mean cross-entropy (nats per byte) without gradients.
  double loss(const std::vector<std::uint8_t>& tokens, const std::vector<std::uint8_t>& targets, Index seq_len) {
    forward(tokens, seq_len);
    return cross_entropy<T>(logits_, targets, nullptr);
  }

  /// The trainable tensors that are not projections (embedding, norms, head; empty in adaptation).
  std::vector<Parameter<T>> other_parameters() {
    std::vector<Parameter<T>> out;
    const auto append = [&out](std::vector<Parameter<T>> more) {
      for (auto& p : more) out.push_back(p);
    };
    append(embed.parameters("model.embed_tokens"));
    for (std::size_t l = 0; l < blocks.size(); ++l) {
      const std::string prefix = "model.layers." + std::to_string(l) + ".";
      append(blocks[l].attn_norm.parameters(prefix + "input_layernorm"));
      append(blocks[l].mlp_norm.parameters(prefix + "post_attention_layernorm"));
    }
    append(norm.parameters("model.norm"));
    append(lm_head.parameters("lm_head"));
    return out;
  }

 private:
  std::array<Proj, 7> make_block(Index layer, const BlockWeights<T>& bw, const MakeProjection& make) const {
    const auto p = [&](Projection kind) { return make(module_name(layer, kind), bw.proj[static_cast<std::size_t>(kind)]); };
    return {p(Projection::q), p(Projection::k), p(Projection::v), p(Projection::o),
            p(Projection::gate), p(Projection::up), p(Projection::down)};
  }

  void check_tokens(const char* where, const std::vector<std::uint8_t>& tokens, Index seq_len) {
    if (seq_len < 1 || seq_len > config_.context) {
      lorakit::detail::fail<lorakit::ShapeError>(where, "seq_len is ", seq_len, ", expected 1 to context = ",
                                                 config_.context);
    }
    if (tokens.empty() || static_cast<Index>(tokens.size()) % seq_len != 0) {
      lorakit::detail::fail<lorakit::ShapeError>(where, "tokens has ", tokens.size(),
                                                 " entries, expected a positive multiple of seq_len = ", seq_len);
    }
    for (std::uint8_t t : tokens) {
      if (t >= config_.vocab) {
        lorakit::detail::fail<lorakit::ValueError>(where, "token ", static_cast<int>(t), " is outside the vocabulary of ",
                                                   config_.vocab);
      }
    }
    if (stream_.size() != blocks.size() + 1) stream_.resize(blocks.size() + 1);
  }

  Rope<T> rope_;
  Index seq_len_ = 0;
  std::vector<std::uint8_t> tokens_;
  std::vector<Matrix<T>> stream_;  // the residual stream before each block and after the last
  std::array<Matrix<T>, 2> dstream_;
  Matrix<T> final_, logits_, dlogits_, dfinal_;
  Vector<T> final_r_;
};

/// A frozen or trainable dense projection (pretraining, full fine-tuning, statistics on the base model).
template <class T>
typename Model<T, Dense<T>>::MakeProjection dense_projections(bool trainable) {
  return [trainable](const std::string&, const Matrix<T>& W) { return Dense<T>(W, trainable); };
}

/// Projections with the adapters of `set` (one per module path; the set must outlive the model).
template <class T, class Adapter>
typename Model<T, lorakit::AdaptedLinear<T, lorakit::AdapterRef<Adapter>>>::MakeProjection adapted_projections(
    lorakit::AdapterSet<Adapter>& set) {
  return [&set](const std::string& name, const Matrix<T>& W) {
    return lorakit::AdaptedLinear<T, lorakit::AdapterRef<Adapter>>::owning(W, set.ref(name));
  };
}

/// Every trainable projection weight of a dense model (full fine-tuning, pretraining).
template <class T>
std::vector<Parameter<T>> projection_parameters(Model<T, Dense<T>>& model) {
  std::vector<Parameter<T>> out;
  for (std::size_t l = 0; l < model.blocks.size(); ++l) {
    for (Projection p : kProjections) {
      for (auto& param : model.blocks[l][p].parameters(module_name(static_cast<Index>(l), p))) out.push_back(param);
    }
  }
  return out;
}

/// The weights of a dense model (after pretraining or full fine-tuning).
template <class T>
Weights<T> weights_of(const Model<T, Dense<T>>& model) {
  Weights<T> w;
  w.config = model.config();
  w.embed = model.embed.table;
  for (const auto& block : model.blocks) {
    BlockWeights<T> bw;
    bw.attn_norm = block.attn_norm.weight;
    bw.mlp_norm = block.mlp_norm.weight;
    for (std::size_t i = 0; i < bw.proj.size(); ++i) bw.proj[i] = block.proj[i].W;
    w.blocks.push_back(std::move(bw));
  }
  w.norm = model.norm.weight;
  w.lm_head = model.lm_head.W;
  return w;
}

}  // namespace tiny_llama
