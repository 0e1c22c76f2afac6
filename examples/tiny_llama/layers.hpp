// The layers of the tiny llama, each backward written next to its forward (in the manner of karpathy/llm.c):
// a trainable linear map, the token embedding, RMSNorm, rotary position embedding (Hugging Face's rotate_half
// layout), causal grouped-query attention, the SwiGLU gate and the next-token cross-entropy.
//
// Activations are row-major [tokens x features]; a batch of B sequences of length L is B*L rows, sequence b
// occupying rows [b*L, (b+1)*L). Backward functions overwrite their input gradient and accumulate into their
// parameters' gradients.
#pragma once

#include <lorakit/lorakit.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace tiny_llama {

using lorakit::ConstMatrixRef;
using lorakit::Index;
using lorakit::MatrixRef;
using lorakit::Parameter;
template <class T>
using Matrix = lorakit::Matrix<T>;
template <class T>
using Vector = lorakit::Vector<T>;

/// A linear map without bias, \f$y = x W^\top\f$ with W [out x in], whose weight trains (pretraining, full
/// fine-tuning) or stays frozen. It has the calls of `lorakit::AdaptedLinear`, so the model takes either.
template <class T>
struct Dense {
  Matrix<T> W, grad_W;
  bool trainable = true;

  Dense() = default;
  Dense(Matrix<T> weight, bool is_trainable)
      : W(std::move(weight)), grad_W(Matrix<T>::Zero(W.rows(), W.cols())), trainable(is_trainable) {}

  Index in_features() const { return W.cols(); }
  Index out_features() const { return W.rows(); }

  void forward(const ConstMatrixRef<T>& x, MatrixRef<T> y) const { y.noalias() = x * W.transpose(); }
  /// \f$\partial W \mathrel{+}= dy^\top x\f$ (when trainable) and \f$dx = dy\,W\f$ (overwritten).
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy, MatrixRef<T> dx) {
    backward(x, dy);
    dx.noalias() = dy * W;
  }
  void backward(const ConstMatrixRef<T>& x, const ConstMatrixRef<T>& dy) {
    if (trainable) grad_W.noalias() += dy.transpose() * x;
  }
  std::vector<Parameter<T>> parameters(const std::string& name) {
    if (!trainable) return {};
    return {{name + ".weight", lorakit::flat_view(W), lorakit::flat_view(grad_W)}};
  }
  Index num_parameters() const { return trainable ? W.size() : 0; }
};

/// Token embedding: row t of the table [vocab x dim] for token t.
template <class T>
struct Embedding {
  Matrix<T> table, grad_table;
  bool trainable = true;

  Embedding() = default;
  Embedding(Matrix<T> weights, bool is_trainable)
      : table(std::move(weights)), grad_table(Matrix<T>::Zero(table.rows(), table.cols())), trainable(is_trainable) {}

  void forward(const std::vector<std::uint8_t>& tokens, Matrix<T>& x) const {
    x.resize(static_cast<Index>(tokens.size()), table.cols());
    for (std::size_t i = 0; i < tokens.size(); ++i) x.row(static_cast<Index>(i)) = table.row(tokens[i]);
  }
  /// Scatter-add of dx into the rows of the table that were looked up.
  void backward(const std::vector<std::uint8_t>& tokens, const Matrix<T>& dx) {
    if (!trainable) return;
    for (std::size_t i = 0; i < tokens.size(); ++i) grad_table.row(tokens[i]) += dx.row(static_cast<Index>(i));
  }
  std::vector<Parameter<T>> parameters(const std::string& name) {
    if (!trainable) return {};
    return {{name + ".weight", lorakit::flat_view(table), lorakit::flat_view(grad_table)}};
  }
};

/// RMSNorm (Zhang & Sennrich, 2019), as Hugging Face's LlamaRMSNorm and llama.cpp's rms_norm:
/// \f[ y = w \odot x\, r,\qquad r = \Big(\tfrac1d \textstyle\sum_j x_j^2 + \varepsilon\Big)^{-1/2}. \f]
template <class T>
struct RmsNorm {
  Vector<T> weight, grad_weight;
  double eps = 1e-5;
  bool trainable = true;

  RmsNorm() = default;
  RmsNorm(Vector<T> w, double epsilon, bool is_trainable)
      : weight(std::move(w)), grad_weight(Vector<T>::Zero(weight.size())), eps(epsilon), trainable(is_trainable) {}

  /// y = norm(x); r (one entry per row) is kept for the backward.
  void forward(const Matrix<T>& x, Matrix<T>& y, Vector<T>& r) const {
    y.resize(x.rows(), x.cols());
    r.resize(x.rows());
    const double d = static_cast<double>(x.cols());
    for (Index i = 0; i < x.rows(); ++i) {
      const double mean_square = static_cast<double>(x.row(i).squaredNorm()) / d;
      r(i) = static_cast<T>(1.0 / std::sqrt(mean_square + eps));
      y.row(i) = x.row(i).cwiseProduct(weight.transpose()) * r(i);
    }
  }
  /// \f$dx = r\,(w\odot dy) - \tfrac{r^3}{d}\, x \sum_j w_j\,dy_j\,x_j\f$ (overwritten);
  /// \f$\partial w \mathrel{+}= \sum_{rows} dy \odot x\, r\f$.
  void backward(const Matrix<T>& x, const Vector<T>& r, const Matrix<T>& dy, Matrix<T>& dx) {
    dx.resize(x.rows(), x.cols());
    const T d = static_cast<T>(x.cols());
    for (Index i = 0; i < x.rows(); ++i) {
      const auto wdy = dy.row(i).cwiseProduct(weight.transpose());
      const T dot = wdy.dot(x.row(i));
      dx.row(i) = wdy * r(i) - x.row(i) * (r(i) * r(i) * r(i) * dot / d);
      if (trainable) grad_weight += (dy.row(i).cwiseProduct(x.row(i)) * r(i)).transpose();
    }
  }
  std::vector<Parameter<T>> parameters(const std::string& name) {
    if (!trainable) return {};
    return {{name + ".weight", lorakit::flat_view(weight), lorakit::flat_view(grad_weight)}};
  }
};

/// Rotary position embedding (Su et al., RoFormer, 2021) in Hugging Face's llama layout: each head of size h is
/// split into halves, and entry i < h/2 is rotated with entry i + h/2 by the angle
/// \f$\theta_{p,i} = p\, \mathrm{base}^{-2i/h}\f$ at position p ("rotate_half"):
/// \f[ y_i = x_i\cos\theta - x_{i+h/2}\sin\theta,\qquad y_{i+h/2} = x_{i+h/2}\cos\theta + x_i\sin\theta. \f]
/// (llama.cpp rotates adjacent pairs instead; its GGUF converter permutes the rows of q_proj and k_proj so that
/// both compute the same attention.)
template <class T>
class Rope {
 public:
  Rope() = default;
  Rope(Index context, Index head_dim, double base) : half_(head_dim / 2), cos_(context, head_dim / 2), sin_(context, head_dim / 2) {
    for (Index p = 0; p < context; ++p) {
      for (Index i = 0; i < half_; ++i) {
        const double angle =
            static_cast<double>(p) * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
        cos_(p, i) = static_cast<T>(std::cos(angle));
        sin_(p, i) = static_cast<T>(std::sin(angle));
      }
    }
  }

  /// Rotates every head of x [B*L x heads*head_dim] in place; row i is at position i mod L.
  void forward(Matrix<T>& x, Index seq_len) const { rotate(x, seq_len, T(1)); }
  /// The rotation is orthogonal: the gradient is rotated back by the opposite angle, in place.
  void backward(Matrix<T>& dx, Index seq_len) const { rotate(dx, seq_len, T(-1)); }

 private:
  void rotate(Matrix<T>& x, Index seq_len, T sign) const {
    const Index head_dim = 2 * half_;
    for (Index row = 0; row < x.rows(); ++row) {
      const Index p = row % seq_len;
      for (Index h0 = 0; h0 < x.cols(); h0 += head_dim) {
        for (Index i = 0; i < half_; ++i) {
          const T c = cos_(p, i), s = sign * sin_(p, i);
          const T a = x(row, h0 + i), b = x(row, h0 + half_ + i);
          x(row, h0 + i) = a * c - b * s;
          x(row, h0 + half_ + i) = b * c + a * s;
        }
      }
    }
  }

  Index half_ = 0;
  Matrix<T> cos_, sin_;
};

/// Causal multi-head attention with grouped key/value heads (Ainslie et al., GQA, 2023): query head h reads
/// key/value head \f$\lfloor h / (H/H_{kv})\rfloor\f$ (Hugging Face's repeat_kv). Per sequence and head,
/// \f[ P = \mathrm{softmax}\big(Q K^\top/\sqrt{d_h} + M\big),\qquad O = P V, \f]
/// with \f$M_{ts} = -\infty\f$ for s > t (a token sees itself and the tokens before it).
template <class T>
class Attention {
 public:
  Attention() = default;
  Attention(Index heads, Index kv_heads, Index head_dim) : heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim) {}

  /// q [B*L x heads*hd], k, v [B*L x kv_heads*hd] -> out [B*L x heads*hd]; keeps P for the backward.
  void forward(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, Index seq_len, Matrix<T>& out) {
    const Index batch = q.rows() / seq_len;
    out.resize(q.rows(), q.cols());
    probs_.resize(batch * heads_ * seq_len, seq_len);
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
    for (Index b = 0; b < batch; ++b) {
      for (Index h = 0; h < heads_; ++h) {
        const Index g = kv_head(h);
        auto P = probs_.middleRows((b * heads_ + h) * seq_len, seq_len);
        P.noalias() = q.block(b * seq_len, h * head_dim_, seq_len, head_dim_) *
                      k.block(b * seq_len, g * head_dim_, seq_len, head_dim_).transpose();
        for (Index t = 0; t < seq_len; ++t) {
          // Softmax over the visible keys s <= t; the masked ones get probability 0.
          auto row = P.row(t).head(t + 1);
          row *= scale;
          const T top = row.maxCoeff();
          row = (row.array() - top).exp().matrix();
          row /= row.sum();
          P.row(t).tail(seq_len - t - 1).setZero();
        }
        out.block(b * seq_len, h * head_dim_, seq_len, head_dim_).noalias() =
            P * v.block(b * seq_len, g * head_dim_, seq_len, head_dim_);
      }
    }
  }

  /// From dout: \f$dV = P^\top dO\f$, \f$dP = dO\,V^\top\f$, \f$dS = P\odot(dP - \mathrm{rowsum}(P\odot dP))\f$,
  /// \f$dQ = dS\,K/\sqrt{d_h}\f$, \f$dK = dS^\top Q/\sqrt{d_h}\f$ (summed over the query heads of a group).
  void backward(const Matrix<T>& q, const Matrix<T>& k, const Matrix<T>& v, const Matrix<T>& dout, Index seq_len,
                Matrix<T>& dq, Matrix<T>& dk, Matrix<T>& dv) {
    const Index batch = q.rows() / seq_len;
    dq.resize(q.rows(), q.cols());
    dk.setZero(k.rows(), k.cols());
    dv.setZero(v.rows(), v.cols());
    dp_.resize(seq_len, seq_len);
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
    for (Index b = 0; b < batch; ++b) {
      for (Index h = 0; h < heads_; ++h) {
        const Index g = kv_head(h);
        const auto P = probs_.middleRows((b * heads_ + h) * seq_len, seq_len);
        const auto dO = dout.block(b * seq_len, h * head_dim_, seq_len, head_dim_);
        dv.block(b * seq_len, g * head_dim_, seq_len, head_dim_).noalias() += P.transpose() * dO;
        dp_.noalias() = dO * v.block(b * seq_len, g * head_dim_, seq_len, head_dim_).transpose();
        for (Index t = 0; t < seq_len; ++t) {
          const T inner = P.row(t).dot(dp_.row(t));
          dp_.row(t) = P.row(t).cwiseProduct((dp_.row(t).array() - inner).matrix()) * scale;  // dS, scaled
        }
        dq.block(b * seq_len, h * head_dim_, seq_len, head_dim_).noalias() =
            dp_ * k.block(b * seq_len, g * head_dim_, seq_len, head_dim_);
        dk.block(b * seq_len, g * head_dim_, seq_len, head_dim_).noalias() +=
            dp_.transpose() * q.block(b * seq_len, h * head_dim_, seq_len, head_dim_);
      }
    }
  }

 private:
  Index kv_head(Index h) const { return h / (heads_ / kv_heads_); }

  Index heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
  Matrix<T> probs_;  // [B*heads*L x L]
  Matrix<T> dp_;     // [L x L] workspace
};

/// SwiGLU (Shazeer, "GLU Variants Improve Transformer", 2020): \f$h = \mathrm{silu}(g)\odot u\f$,
/// \f$\mathrm{silu}(g) = g\,\sigma(g)\f$.
template <class T>
struct SwiGlu {
  static void forward(const Matrix<T>& g, const Matrix<T>& u, Matrix<T>& h) {
    h = (g.array() / (T(1) + (-g.array()).exp()) * u.array()).matrix();
  }
  /// \f$du = dh\odot\mathrm{silu}(g)\f$, \f$dg = dh\odot u\odot\sigma(g)\,(1 + g\,(1-\sigma(g)))\f$.
  static void backward(const Matrix<T>& g, const Matrix<T>& u, const Matrix<T>& dh, Matrix<T>& dg, Matrix<T>& du) {
    const auto s = (T(1) / (T(1) + (-g.array()).exp())).eval();
    du = (dh.array() * g.array() * s).matrix();
    dg = (dh.array() * u.array() * s * (T(1) + g.array() * (T(1) - s))).matrix();
  }
};

/// Mean next-token cross-entropy (nats) of logits [N x vocab] against targets, and its gradient
/// \f$(\mathrm{softmax} - \mathrm{onehot})/N\f$ in dlogits (overwritten). Sums in double.
template <class T>
double cross_entropy(const Matrix<T>& logits, const std::vector<std::uint8_t>& targets, Matrix<T>* dlogits) {
  const Index n = logits.rows();
  if (dlogits != nullptr) dlogits->resize(n, logits.cols());
  double loss = 0;
  for (Index i = 0; i < n; ++i) {
    const Index target = targets[static_cast<std::size_t>(i)];
    const T top = logits.row(i).maxCoeff();
    double sum = 0;
    for (Index j = 0; j < logits.cols(); ++j) sum += std::exp(static_cast<double>(logits(i, j) - top));
    loss += std::log(sum) - static_cast<double>(logits(i, target) - top);
    if (dlogits != nullptr) {
      auto row = dlogits->row(i);
      row = ((logits.row(i).array() - top).exp() / static_cast<T>(sum * static_cast<double>(n))).matrix();
      row(target) -= static_cast<T>(1.0 / static_cast<double>(n));
    }
  }
  return loss / static_cast<double>(n);
}

}  // namespace tiny_llama
