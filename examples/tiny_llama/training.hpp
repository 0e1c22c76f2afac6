// The training loop every method of the study shares (random windows, AdamW, a held-out curve in bits per byte,
// timing), the pretraining of the base model, and its cache: a safetensors file with Hugging Face's tensor names
// whose metadata holds everything the weights depend on.
#pragma once

#include "text_data.hpp"

#include "../common/progress.hpp"

#include <lorakit/io/safetensors.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace tiny_llama {

using lorakit_examples::Progress;
using lorakit_examples::Stopwatch;

/// Held-out bits per byte after a number of training steps.
struct CurvePoint {
  long long step;
  double bits;
};
using Curve = std::vector<CurvePoint>;

/// What a stretch of training needs to know.
struct TrainLoop {
  const Bytes* validation = nullptr;  // null: no curve
  Index curve_windows = 32;           // windows of the validation text evaluated for each curve point
  std::vector<long long> eval_steps;  // the curve is evaluated after these steps
  Progress* progress = nullptr;
  /// Called before the forward of each step with the step number (rank annealing squeezes here).
  std::function<void(long long)> before_step;
  /// The learning rate of a step (null: the optimizer's own, constant).
  std::function<double(long long)> lr_at;
  /// Data-parallel training (null or one rank: one process): each rank runs its rows of every batch, and the
  /// gradients of `parameters()` (the optimizer's, as they are at that step: a rank change replaces them) are
  /// averaged over the ranks, weighted by their rows, before the step.
  const lorakit_examples::DataParallel* parallel = nullptr;
  std::function<std::vector<lorakit::Parameter<float>>()> parameters;
};

/// Forward and backward of one batch, or of this rank's rows of it (TrainLoop::parallel) followed by the average of
/// the gradients over the ranks: either way the gradient of the whole batch's mean loss.
template <class Proj>
void batch_gradient(Model<float, Proj>& model, lorakit::AdamW<float>& optimizer, const Batches& batches,
                    const TrainLoop& loop) {
  if (loop.parallel == nullptr || loop.parallel->size() == 1) {
    model.forward(batches.tokens(), batches.seq_len());
    optimizer.zero_grad();
    model.backward(batches.targets());
    return;
  }
  thread_local Bytes tokens, targets;
  const lorakit_examples::Rows mine = loop.parallel->my_rows(batches.batch());
  rows_of(batches.tokens(), mine, batches.seq_len(), tokens);
  rows_of(batches.targets(), mine, batches.seq_len(), targets);
  model.forward(tokens, batches.seq_len());
  optimizer.zero_grad();
  model.backward(targets);
  std::vector<lorakit::Parameter<float>> parameters = loop.parameters();
  loop.parallel->average_gradients(parameters, static_cast<double>(mine.count));
}

/// Trains `model` with `optimizer` for steps [first, last) on `batches`; appends curve points to `curve` and adds
/// the time of the steps (not of the evaluations) to `clock`.
template <class Proj>
void train(Model<float, Proj>& model, lorakit::AdamW<float>& optimizer, Batches& batches, const TrainLoop& loop,
           long long first, long long last, Curve& curve, Stopwatch& clock) {
  for (long long step = first; step < last; ++step) {
    clock.start();
    if (loop.before_step) loop.before_step(step);
    if (loop.lr_at) optimizer.set_lr(loop.lr_at(step));
    batches.next();
    batch_gradient(model, optimizer, batches, loop);
    optimizer.step();
    clock.stop();
    if (loop.progress != nullptr) loop.progress->advance();
    const long long done = step + 1;
    if (loop.validation != nullptr &&
        std::find(loop.eval_steps.begin(), loop.eval_steps.end(), done) != loop.eval_steps.end()) {
      curve.push_back(
          {done, bits_per_byte(model, *loop.validation, batches.seq_len(), loop.curve_windows, 32, loop.parallel)});
    }
  }
}

/// Settings of the pretraining on the first corpus.
struct PretrainSettings {
  Config config;
  long long steps = 1500;
  Index batch = 16;
  double lr = 3e-3;          // peak; linear warmup over the first 5% of the steps, cosine decay to 10%
  double weight_decay = 0.01;
  std::uint64_t seed = 1;
  std::size_t corpus_bytes = 0;  // size of the training text (part of the key)

  std::string key() const {
    return config.key() + " | pretrain v1 steps=" + std::to_string(steps) + " batch=" + std::to_string(batch) +
           " lr=" + std::to_string(lr) + " wd=" + std::to_string(weight_decay) + " seed=" + std::to_string(seed) +
           " corpus=" + std::to_string(corpus_bytes);
  }
};

/// Linear warmup to `peak` over `warmup` steps, then a cosine decay to peak / 10 at `steps`.
inline double warmup_cosine(long long step, long long steps, double peak) {
  const long long warmup = std::max(1LL, steps / 20);
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max(1LL, steps - warmup));
  return peak * (0.1 + 0.45 * (1 + std::cos(3.141592653589793 * progress)));
}

/// Pretrains a fresh model (every tensor trains) on `text` with AdamW (data-parallel over `parallel`'s ranks).
inline Weights<float> pretrain(const Bytes& text, const PretrainSettings& settings,
                               const lorakit_examples::DataParallel* parallel = nullptr) {
  lorakit::Rng rng(settings.seed, 3);
  Model<float, Dense<float>> model(Weights<float>::random(settings.config, rng), dense_projections<float>(true),
                                   Trainable::all());
  auto params = projection_parameters(model);
  for (auto& p : model.other_parameters()) params.push_back(p);
  lorakit::AdamWConfig adamw;
  adamw.lr = settings.lr;
  adamw.weight_decay = settings.weight_decay;
  lorakit::AdamW<float> optimizer(params, adamw);
  Progress progress("pretraining", settings.steps);
  TrainLoop loop;
  loop.progress = &progress;
  loop.parallel = parallel;
  loop.parameters = [&params] { return params; };
  loop.lr_at = [&](long long step) { return warmup_cosine(step, settings.steps, settings.lr); };
  Batches batches(text, settings.batch, settings.config.context, settings.seed);
  Curve none;
  Stopwatch clock;
  train(model, optimizer, batches, loop, 0, settings.steps, none, clock);
  progress.finish();
  return weights_of(model);
}

/// Calls f(name, tensor) for every tensor of the weights with Hugging Face's llama names
/// (`model.embed_tokens.weight`, `model.layers.N.input_layernorm.weight`, `model.layers.N.self_attn.q_proj.weight`,
/// ..., `model.norm.weight`, `lm_head.weight`); W is `Weights<T>` or `const Weights<T>`.
template <class W, class F>
void for_each_tensor(W& w, F&& f) {
  f(std::string("model.embed_tokens.weight"), w.embed);
  for (std::size_t l = 0; l < w.blocks.size(); ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    f(prefix + "input_layernorm.weight", w.blocks[l].attn_norm);
    f(prefix + "post_attention_layernorm.weight", w.blocks[l].mlp_norm);
    for (Projection p : kProjections) {
      f(module_name(static_cast<Index>(l), p) + ".weight", w.blocks[l].proj[static_cast<std::size_t>(p)]);
    }
  }
  f(std::string("model.norm.weight"), w.norm);
  f(std::string("lm_head.weight"), w.lm_head);
}

/// Saves the weights as safetensors (float32, Hugging Face's names) with `key` in the metadata; the file is
/// replaced as a whole.
inline void save_weights(const std::filesystem::path& file, const Weights<float>& w, const std::string& key) {
  lorakit::io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("lorakit.tiny_llama.key", key);
  for_each_tensor(w, [&writer](const std::string& name, const auto& tensor) { writer.add(name, tensor); });
  std::filesystem::create_directories(file.parent_path());
  writer.write(file);
}

/// The weights saved under `key` (shapes from `config`), or false when the file is missing or was written for
/// other settings. Errors (lorakit::IoError): a file with the right key that is malformed or has other shapes.
inline bool load_weights(const std::filesystem::path& file, const Config& config, const std::string& key,
                         Weights<float>& out) {
  if (!std::filesystem::exists(file)) return false;
  const lorakit::io::SafetensorsReader reader(file);
  const auto found = reader.metadata().find("lorakit.tiny_llama.key");
  if (found == reader.metadata().end() || found->second != key) return false;
  lorakit::Rng unused(0);
  Weights<float> w = Weights<float>::random(config, unused);  // gives the shapes
  for_each_tensor(w, [&](const std::string& name, auto& tensor) {
    constexpr bool is_vector = std::remove_reference_t<decltype(tensor)>::ColsAtCompileTime == 1;
    const Index rows = is_vector ? 1 : tensor.rows(), cols = is_vector ? tensor.size() : tensor.cols();
    const Matrix<float> m = reader.matrix<float>(name);
    if (m.rows() != rows || m.cols() != cols) {
      lorakit::detail::fail<lorakit::IoError>("load_weights", "'", file.string(), "': tensor '", name, "' is [",
                                              m.rows(), " x ", m.cols(), "], expected [", rows, " x ", cols, "]");
    }
    std::copy(m.data(), m.data() + m.size(), tensor.data());
  });
  out = std::move(w);
  return true;
}

}  // namespace tiny_llama
