// The pretrained weights on disk: a small binary file that starts with the settings it was trained with, so a
// cache written for other settings is never reused.
#include "training.hpp"

#include <filesystem>
#include <fstream>

namespace fashion_mnist {
namespace {

constexpr char kMagic[8] = {'L', 'K', 'F', 'M', 'N', 'I', 'S', '1'};

void write_matrix(std::ofstream& out, const Matrix& m) {
  const std::int64_t shape[2] = {m.rows(), m.cols()};
  out.write(reinterpret_cast<const char*>(shape), sizeof shape);
  out.write(reinterpret_cast<const char*>(m.data()), static_cast<std::streamsize>(m.size() * sizeof(float)));
}

Matrix read_matrix(std::ifstream& in, const std::string& path, Index rows, Index cols) {
  std::int64_t shape[2] = {0, 0};
  in.read(reinterpret_cast<char*>(shape), sizeof shape);
  if (!in || shape[0] != rows || shape[1] != cols) {
    lorakit::detail::fail<lorakit::IoError>("load_weights", "'", path, "' holds a tensor of [", shape[0], " x ",
                                            shape[1], "], expected [", rows, " x ", cols, "]");
  }
  Matrix m(rows, cols);
  in.read(reinterpret_cast<char*>(m.data()), static_cast<std::streamsize>(m.size() * sizeof(float)));
  if (!in) lorakit::detail::fail<lorakit::IoError>("load_weights", "'", path, "' is truncated");
  return m;
}

Dense read_dense(std::ifstream& in, const std::string& path, Index input, Index output) {
  Matrix W = read_matrix(in, path, output, input);
  Matrix b = read_matrix(in, path, output, 1);
  return Dense(std::move(W), Vector(b.col(0)), true);
}

}  // namespace

void save_weights(const std::string& path, const Weights& weights, const std::string& key) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    const std::int64_t length = static_cast<std::int64_t>(key.size());
    out.write(kMagic, sizeof kMagic);
    out.write(reinterpret_cast<const char*>(&length), sizeof length);
    out.write(key.data(), length);
    for (const Dense* layer : {&weights.fc1, &weights.fc2, &weights.head}) {
      write_matrix(out, layer->W);
      write_matrix(out, Matrix(layer->b));
    }
    if (!out) lorakit::detail::fail<lorakit::IoError>("save_weights", "cannot write '", temporary, "'");
  }
  std::filesystem::rename(temporary, path);
}

bool load_weights(const std::string& path, const std::string& key, Weights& weights) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  char magic[sizeof kMagic] = {};
  std::int64_t length = 0;
  in.read(magic, sizeof magic);
  in.read(reinterpret_cast<char*>(&length), sizeof length);
  if (!in || !std::equal(magic, magic + sizeof magic, kMagic) || length != static_cast<std::int64_t>(key.size())) {
    return false;
  }
  std::string stored(static_cast<std::size_t>(length), '\0');
  in.read(stored.data(), length);
  if (!in || stored != key) return false;
  weights.fc1 = read_dense(in, path, kPixels, kHidden1);
  weights.fc2 = read_dense(in, path, kHidden1, kHidden2);
  weights.head = read_dense(in, path, kHidden2, kClasses);
  return true;
}

}  // namespace fashion_mnist
