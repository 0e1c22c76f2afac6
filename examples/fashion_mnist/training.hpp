// The training loop every method shares (minibatches, AdamW, validation curve, timing), and the pretraining of
// the base model with its on-disk cache.
#pragma once

#include "model.hpp"
#include "progress.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace fashion_mnist {

/// Validation accuracy after a number of training steps.
struct CurvePoint {
  long long step;
  double accuracy;
};
using Curve = std::vector<CurvePoint>;

/// Minibatches of a dataset, reshuffled every epoch from the seed (the same sequence on every platform).
class Batches {
 public:
  Batches(const Dataset& data, Index batch, std::uint64_t seed)
      : data_(&data), batch_(batch), seed_(seed), images_(batch, data.images.cols()), labels_(batch) {}

  /// Fills images() and labels() with the next batch.
  void next() {
    for (Index i = 0; i < batch_; ++i) {
      if (position_ == static_cast<Index>(order_.size())) {
        order_ = permutation(data_->size(), seed_ * 1000 + epoch_++);
        position_ = 0;
      }
      const Index row = order_[static_cast<std::size_t>(position_++)];
      images_.row(i) = data_->images.row(row);
      labels_[static_cast<std::size_t>(i)] = data_->labels[static_cast<std::size_t>(row)];
    }
  }
  const Matrix& images() const { return images_; }
  const std::vector<int>& labels() const { return labels_; }

 private:
  const Dataset* data_;
  Index batch_;
  std::uint64_t seed_;
  std::uint64_t epoch_ = 0;
  Index position_ = 0;
  std::vector<Index> order_;
  Matrix images_;
  std::vector<int> labels_;
};

/// What a stretch of training needs to know.
struct TrainLoop {
  const Dataset* train = nullptr;
  const Dataset* validation = nullptr;  // null: no curve
  Index batch = 64;
  std::vector<long long> eval_steps;    // validation accuracy is recorded after these steps
  Progress* progress = nullptr;
  /// Called before the forward of each step with the step number (rank annealing squeezes here).
  std::function<void(long long)> before_step;
  /// Data parallelism (null: one process): every rank takes its rows of each batch, and the gradients of
  /// `parameters()` (every trainable tensor, asked again after each before_step, which may reallocate them) are
  /// averaged across the ranks before the optimizer's step.
  const lorakit_examples::DataParallel* parallel = nullptr;
  std::function<std::vector<Parameter<float>>()> parameters;
};

/// Trains `model` with `optimizer` for steps [first, last) on batches from `batches`; appends validation points
/// to `curve` and adds the time of the training steps (not of the evaluations) to `clock`. Under data
/// parallelism each rank runs forward and backward on its rows of the batch (the mean loss over them) and the
/// gradients are averaged weighted by the rows, which gives every rank the whole batch's mean-loss gradient.
template <class Hidden>
void train(Mlp<Hidden>& model, lorakit::AdamW<float>& optimizer, Batches& batches, const TrainLoop& loop,
           long long first, long long last, Curve& curve, Stopwatch& clock) {
  const bool sharded = loop.parallel != nullptr && loop.parallel->size() > 1;
  if (sharded && !loop.parameters) {
    lorakit::detail::fail<lorakit::ValueError>("train", "loop.parameters is empty, expected the trainable tensors "
                                               "when the loop runs data-parallel");
  }
  std::vector<Parameter<float>> parameters;
  if (sharded) parameters = loop.parameters();
  const lorakit_examples::Rows mine =
      sharded ? loop.parallel->my_rows(loop.batch) : lorakit_examples::Rows{0, loop.batch};
  for (long long step = first; step < last; ++step) {
    clock.start();
    if (loop.before_step) {
      loop.before_step(step);
      if (sharded) parameters = loop.parameters();
    }
    batches.next();
    const auto x = batches.images().middleRows(mine.begin, mine.count);
    model.forward(x);
    optimizer.zero_grad();
    model.backward(x, batches.labels().data() + mine.begin);
    if (sharded) loop.parallel->average_gradients(parameters, mine.count);
    optimizer.step();
    clock.stop();
    if (loop.progress != nullptr) loop.progress->advance();
    const long long done = step + 1;
    if (loop.validation != nullptr &&
        std::find(loop.eval_steps.begin(), loop.eval_steps.end(), done) != loop.eval_steps.end()) {
      curve.push_back({done, accuracy(model, *loop.validation, loop.parallel)});
    }
  }
}

/// All trainable tensors of a model: the hidden layers' (`hidden`, already collected) and the head's.
inline std::vector<Parameter<float>> with_head(std::vector<Parameter<float>> hidden, Dense& head) {
  for (auto& p : head.parameters("head")) hidden.push_back(p);
  return hidden;
}

/// Settings of the pretraining on the original 10-class task.
struct PretrainSettings {
  int epochs = 3;
  Index batch = 128;
  double lr = 1e-3;
  std::uint64_t seed = 1;
  Index train_size = 0;  // rows of the training split (part of the cache key)

  std::string key() const {
    return "fashion-mnist-mlp-784-512-256-10 v1 epochs=" + std::to_string(epochs) + " batch=" + std::to_string(batch) +
           " lr=" + std::to_string(lr) + " seed=" + std::to_string(seed) + " train=" + std::to_string(train_size);
  }
};

/// Pretrains the MLP from a random start with AdamW on `train` (the original domain).
inline Weights pretrain(const Dataset& data, const PretrainSettings& settings) {
  lorakit::Rng rng(settings.seed, 3);
  Weights w{Dense::random(kPixels, kHidden1, rng), Dense::random(kHidden1, kHidden2, rng),
            Dense::random(kHidden2, kClasses, rng)};
  Mlp<Dense> model(std::move(w.fc1), std::move(w.fc2), std::move(w.head));
  lorakit::AdamWConfig config;
  config.lr = settings.lr;
  lorakit::AdamW<float> optimizer(
      with_head([&] {
        auto p = model.fc1.parameters("fc1");
        for (auto& q : model.fc2.parameters("fc2")) p.push_back(q);
        return p;
      }(), model.head),
      config);
  const long long steps = settings.epochs * (data.size() / settings.batch);
  Progress progress("pretraining", steps);
  TrainLoop loop;
  loop.train = &data;
  loop.batch = settings.batch;
  loop.progress = &progress;
  Batches batches(data, settings.batch, settings.seed);
  Curve none;
  Stopwatch clock;
  train(model, optimizer, batches, loop, 0, steps, none, clock);
  return Weights{std::move(model.fc1), std::move(model.fc2), std::move(model.head)};
}

/// FNV-1a of a string, as 16 hex digits: names the cache file of a set of pretraining settings.
inline std::string fnv1a_hex(const std::string& text) {
  std::uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(hash));
  return out;
}

/// Writes the weights with their settings key; an existing file is replaced atomically (write, then rename).
void save_weights(const std::string& path, const Weights& weights, const std::string& key);

/// The weights saved under `key`, or false when the file is missing or was written for other settings.
/// Errors (lorakit::IoError): a file with the right key that is truncated or malformed.
bool load_weights(const std::string& path, const std::string& key, Weights& weights);

}  // namespace fashion_mnist
