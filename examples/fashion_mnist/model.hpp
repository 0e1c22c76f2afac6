// The classifier of the study: an MLP 784 -> 512 -> 256 -> 10 (ReLU, softmax cross-entropy) written with Eigen.
//
// The two hidden layers are a template parameter: `Dense` (trainable or frozen weights: pretraining, full
// fine-tuning, head only) or a lorakit `AdaptedLinear` (frozen pretrained weight + an adapter). The head is
// always a trainable `Dense` layer, as PEFT's modules_to_save.
#pragma once

#include "data.hpp"

#include "../common/data_parallel.hpp"

#include <lorakit/lorakit.hpp>

#include <cmath>
#include <string>
#include <vector>

namespace fashion_mnist {

using Vector = lorakit::Vector<float>;
using lorakit::Parameter;

constexpr Index kHidden1 = 512;
constexpr Index kHidden2 = 256;

/// A plain linear layer y = x W^T + b whose weights train (or stay frozen with trainable = false).
struct Dense {
  Matrix W, grad_W;  // [out x in]
  Vector b, grad_b;  // [out]
  bool trainable = true;

  Dense() = default;
  Dense(Matrix weight, Vector bias, bool is_trainable)
      : W(std::move(weight)), grad_W(Matrix::Zero(W.rows(), W.cols())), b(std::move(bias)),
        grad_b(Vector::Zero(b.size())), trainable(is_trainable) {}

  /// A layer drawn like PyTorch's nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for W and b.
  static Dense random(Index in, Index out, lorakit::Rng& rng) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(in));
    Matrix W(out, in);
    Matrix b(out, 1);
    rng.fill_uniform(W, -bound, bound);
    rng.fill_uniform(b, -bound, bound);
    return Dense(std::move(W), Vector(b.col(0)), true);
  }

  void forward(const lorakit::ConstMatrixRef<float>& x, lorakit::MatrixRef<float> y) const {
    y.noalias() = x * W.transpose();
    y.rowwise() += b.transpose();
  }
  /// Gradients of W and b (accumulated, when trainable) and dx = dy W (overwritten).
  void backward(const lorakit::ConstMatrixRef<float>& x, const lorakit::ConstMatrixRef<float>& dy,
                lorakit::MatrixRef<float> dx) {
    backward(x, dy);
    dx.noalias() = dy * W;
  }
  /// Gradients only (the first layer needs no dx).
  void backward(const lorakit::ConstMatrixRef<float>& x, const lorakit::ConstMatrixRef<float>& dy) {
    if (!trainable) return;
    grad_W.noalias() += dy.transpose() * x;
    grad_b += dy.colwise().sum().transpose();
  }
  std::vector<Parameter<float>> parameters(const std::string& name) {
    if (!trainable) return {};
    return {{name + ".weight", lorakit::flat_view(W), lorakit::flat_view(grad_W)},
            {name + ".bias", lorakit::flat_view(b), lorakit::flat_view(grad_b)}};
  }
  Index num_parameters() const { return trainable ? W.size() + b.size() : 0; }
};

/// A hidden layer of the pretrained model with an adapter from `set` (module name `name`) on it.
template <class Adapter>
lorakit::AdaptedLinear<float, lorakit::AdapterRef<Adapter>> adapted(const Dense& pretrained,
                                                                    lorakit::AdapterSet<Adapter>& set,
                                                                    const std::string& name) {
  auto layer = lorakit::AdaptedLinear<float, lorakit::AdapterRef<Adapter>>::owning(pretrained.W, set.ref(name));
  layer.set_bias(pretrained.b);
  return layer;
}

/// The weights of the whole model (what pretraining produces and every method starts from).
struct Weights {
  Dense fc1, fc2, head;
};

/// The MLP with hidden layers of type `Hidden`, and the workspaces of one batch size (allocated once).
template <class Hidden>
class Mlp {
 public:
  Mlp(Hidden first, Hidden second, Dense classifier)
      : fc1(std::move(first)), fc2(std::move(second)), head(std::move(classifier)) {}

  Hidden fc1, fc2;
  Dense head;

  /// Logits [n x 10] of x [n x 784] (kept in the workspace until the next call).
  const Matrix& forward(const lorakit::ConstMatrixRef<float>& x) {
    resize(x.rows());
    fc1.forward(x, z1_);
    a1_ = z1_.cwiseMax(0.0f);
    fc2.forward(a1_, z2_);
    a2_ = z2_.cwiseMax(0.0f);
    head.forward(a2_, logits_);
    return logits_;
  }

  /// Mean cross-entropy of the last forward against `labels` (rows `first`, ... of a label list), and its gradient
  /// through the model into every trainable tensor.
  double backward(const lorakit::ConstMatrixRef<float>& x, const int* labels) {
    const Index n = x.rows();
    double loss = 0;
    for (Index i = 0; i < n; ++i) {
      // Softmax with the row maximum subtracted; dlogits = (softmax - onehot) / n.
      const float top = logits_.row(i).maxCoeff();
      dlogits_.row(i) = (logits_.row(i).array() - top).exp().matrix();
      const float sum = dlogits_.row(i).sum();
      loss += std::log(static_cast<double>(sum)) - (logits_(i, labels[i]) - top);
      dlogits_.row(i) /= sum;
      dlogits_(i, labels[i]) -= 1.0f;
    }
    dlogits_ /= static_cast<float>(n);
    head.backward(a2_, dlogits_, da2_);
    dz2_ = (z2_.array() > 0.0f).select(da2_, 0.0f);
    fc2.backward(a1_, dz2_, da1_);
    dz1_ = (z1_.array() > 0.0f).select(da1_, 0.0f);
    fc1.backward(x, dz1_);
    return loss / static_cast<double>(n);
  }

  /// Inputs of fc1 and fc2 and the gradients at their outputs, from the last forward and backward: what EVA and
  /// LoRA-DA collect.
  const Matrix& hidden1() const { return a1_; }
  const Matrix& grad_z1() const { return dz1_; }
  const Matrix& grad_z2() const { return dz2_; }

 private:
  void resize(Index n) {
    if (z1_.rows() == n) return;
    z1_.resize(n, kHidden1);
    a1_.resize(n, kHidden1);
    z2_.resize(n, kHidden2);
    a2_.resize(n, kHidden2);
    logits_.resize(n, kClasses);
    dlogits_.resize(n, kClasses);
    da2_.resize(n, kHidden2);
    dz2_.resize(n, kHidden2);
    da1_.resize(n, kHidden1);
    dz1_.resize(n, kHidden1);
  }

  Matrix z1_, a1_, z2_, a2_, logits_, dlogits_, da2_, dz2_, da1_, dz1_;
};

/// Correct predictions of `model` on rows [begin, begin + count) of `data`, in batches of `batch` rows.
template <class Hidden>
Index correct_predictions(Mlp<Hidden>& model, const Dataset& data, Index begin, Index count, Index batch = 500) {
  Index correct = 0;
  for (Index start = begin; start < begin + count; start += batch) {
    const Index n = std::min(batch, begin + count - start);
    const Matrix& logits = model.forward(data.images.middleRows(start, n));
    for (Index i = 0; i < n; ++i) {
      Index predicted = 0;
      logits.row(i).maxCoeff(&predicted);
      correct += predicted == data.labels[static_cast<std::size_t>(start + i)] ? 1 : 0;
    }
  }
  return correct;
}

/// Accuracy of `model` on `data`.
template <class Hidden>
double accuracy(Mlp<Hidden>& model, const Dataset& data) {
  return static_cast<double>(correct_predictions(model, data, 0, data.size())) / static_cast<double>(data.size());
}

/// Accuracy of `model` on `data`, every rank of `parallel` counting its share of the rows (collective: the same
/// value on every rank; one process when `parallel` is null).
template <class Hidden>
double accuracy(Mlp<Hidden>& model, const Dataset& data, const lorakit_examples::DataParallel* parallel) {
  if (parallel == nullptr) return accuracy(model, data);
  const lorakit_examples::Rows mine = parallel->my_rows(data.size());
  const double correct = parallel->sum(static_cast<double>(correct_predictions(model, data, mine.begin, mine.count)));
  return correct / static_cast<double>(data.size());
}

}  // namespace fashion_mnist
