// Fashion-MNIST as float matrices, the train / validation split, and the shifted domain of the downstream task.
#pragma once

#include "idx.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/core/types.hpp>

#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

namespace fashion_mnist {

using lorakit::Index;
using Matrix = lorakit::Matrix<float>;

constexpr Index kSide = 28;
constexpr Index kPixels = kSide * kSide;
constexpr int kClasses = 10;

/// Images as rows of pixels in [0, 1] ([n x 784]) and their labels.
struct Dataset {
  Matrix images;
  std::vector<int> labels;
  Index size() const { return images.rows(); }
};

/// The Debian package's folder (`apt-get install dataset-fashion-mnist`).
inline const char* default_data_dir() { return "/usr/share/datasets/fashion-mnist"; }

/// True when the four files of Fashion-MNIST are in `dir`.
inline bool has_fashion_mnist(const std::string& dir) {
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                           "t10k-labels-idx1-ubyte.gz"}) {
    if (!std::filesystem::exists(std::filesystem::path(dir) / name)) return false;
  }
  return true;
}

/// Reads `<dir>/<prefix>-images-idx3-ubyte.gz` and its labels (prefix "train" or "t10k").
inline Dataset load_split(const std::string& dir, const std::string& prefix) {
  const auto path = [&](const char* kind) { return (std::filesystem::path(dir) / (prefix + kind)).string(); };
  const IdxImages raw = read_idx_images(path("-images-idx3-ubyte.gz"), path("-labels-idx1-ubyte.gz"), kSide, kSide,
                                        kClasses);
  Dataset out;
  out.images.resize(raw.count, kPixels);
  for (Index i = 0; i < out.images.size(); ++i) out.images.data()[i] = raw.pixels[static_cast<std::size_t>(i)] / 255.0f;
  out.labels.assign(raw.labels.begin(), raw.labels.end());
  return out;
}

/// The rows `rows` of `data`, in that order.
inline Dataset subset(const Dataset& data, const std::vector<Index>& rows) {
  Dataset out;
  out.images.resize(static_cast<Index>(rows.size()), data.images.cols());
  out.labels.resize(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    out.images.row(static_cast<Index>(i)) = data.images.row(rows[i]);
    out.labels[i] = data.labels[static_cast<std::size_t>(rows[i])];
  }
  return out;
}

/// 0, 1, ..., n - 1 shuffled by Fisher-Yates with lorakit's portable generator (the same order everywhere).
inline std::vector<Index> permutation(Index n, std::uint64_t seed) {
  std::vector<Index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), Index{0});
  lorakit::Rng rng(seed, 7);
  for (Index i = n - 1; i > 0; --i) {
    const auto j = static_cast<Index>(rng.next_u64() % static_cast<std::uint64_t>(i + 1));
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(j)]);
  }
  return order;
}

/// The downstream domain: every image rotated by 90 degrees clockwise and contrast-inverted (v -> 1 - v).
inline Dataset shift_domain(const Dataset& data) {
  Dataset out = data;
  for (Index n = 0; n < data.size(); ++n) {
    for (Index r = 0; r < kSide; ++r) {
      for (Index c = 0; c < kSide; ++c) {
        // Clockwise: the new pixel (r, c) is the old pixel (side - 1 - c, r).
        out.images(n, r * kSide + c) = 1.0f - data.images(n, (kSide - 1 - c) * kSide + r);
      }
    }
  }
  return out;
}

/// Training set, the validation split carved from it, and the test set.
struct Splits {
  Dataset train, validation, test;
};

/// Splits the 60000 training images into `train` and a validation split of `validation_size` (a fixed random
/// choice), keeps the test set; `limit_train` > 0 keeps only that many training images (quick runs).
inline Splits make_splits(const Dataset& train, const Dataset& test, Index validation_size, Index limit_train = 0,
                          Index limit_test = 0) {
  const std::vector<Index> order = permutation(train.size(), 2024);
  std::vector<Index> validation(order.begin(), order.begin() + validation_size);
  std::vector<Index> rest(order.begin() + validation_size, order.end());
  if (limit_train > 0 && limit_train < static_cast<Index>(rest.size())) rest.resize(static_cast<std::size_t>(limit_train));
  Splits out{subset(train, rest), subset(train, validation), test};
  if (limit_test > 0 && limit_test < test.size()) {
    std::vector<Index> first(static_cast<std::size_t>(limit_test));
    std::iota(first.begin(), first.end(), Index{0});
    out.test = subset(test, first);
  }
  return out;
}

}  // namespace fashion_mnist
