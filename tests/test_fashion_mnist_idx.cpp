// The IDX reader of the Fashion-MNIST example: valid files read back, malformed ones throw IoError naming the file.
#include "fashion_mnist/idx.hpp"

#include <catch2/catch.hpp>

#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lorakit_test_fashion_mnist_idx {

namespace {

using Bytes = std::vector<unsigned char>;

std::filesystem::path temp_dir() {
  const auto dir = std::filesystem::temp_directory_path() / "lorakit_test_fashion_mnist_idx";
  std::filesystem::create_directories(dir);
  return dir;
}

void put_u32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<unsigned char>(v >> shift));
}

/// An IDX file of unsigned bytes with the given sizes and data.
Bytes idx(std::uint32_t magic, const std::vector<std::uint32_t>& shape, const Bytes& data) {
  Bytes out;
  put_u32(out, magic);
  for (auto s : shape) put_u32(out, s);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::string write_gzip(const std::string& name, const Bytes& content) {
  const std::string path = (temp_dir() / name).string();
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  if (!content.empty()) REQUIRE(gzwrite(file, content.data(), static_cast<unsigned>(content.size())) > 0);
  gzclose(file);
  return path;
}

std::string write_plain(const std::string& name, const Bytes& content) {
  const std::string path = (temp_dir() / name).string();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(content.data()),
                                              static_cast<std::streamsize>(content.size()));
  return path;
}

Bytes pixels(std::size_t n) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<unsigned char>(i * 7);
  return out;
}

/// Checks that reading throws lorakit::IoError whose message names `path` and contains `fragment`.
template <class F>
void require_io_error(F&& read, const std::string& path, const std::string& fragment) {
  try {
    read();
    FAIL("expected lorakit::IoError");
  } catch (const lorakit::IoError& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.find(path) != std::string::npos);
    CHECK(message.find(fragment) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("read_idx reads gzip and plain IDX files") {
  const Bytes data = pixels(2 * 3 * 4);
  for (const auto& path : {write_gzip("images.gz", idx(0x0803, {2, 3, 4}, data)),
                           write_plain("images.raw", idx(0x0803, {2, 3, 4}, data))}) {
    const auto array = fashion_mnist::read_idx(path, 3);
    CHECK(array.shape == std::vector<std::int64_t>{2, 3, 4});
    CHECK(array.data == std::vector<std::uint8_t>(data.begin(), data.end()));
  }
}

TEST_CASE("read_idx_images pairs images with labels") {
  const auto images = write_gzip("pair-images.gz", idx(0x0803, {3, 2, 2}, pixels(12)));
  const auto labels = write_gzip("pair-labels.gz", idx(0x0801, {3}, {0, 9, 4}));
  const auto read = fashion_mnist::read_idx_images(images, labels, 2, 2, 10);
  CHECK(read.count == 3);
  CHECK(read.labels == std::vector<std::uint8_t>{0, 9, 4});
  CHECK(read.pixels.size() == 12);
}

TEST_CASE("read_idx rejects malformed files with an IoError naming the file") {
  SECTION("missing file") {
    const std::string path = (temp_dir() / "does-not-exist.gz").string();
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "cannot open");
  }
  SECTION("wrong magic number") {
    const auto path = write_gzip("magic.gz", idx(0x0801, {4}, pixels(4)));
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "magic number 0x00000801");
  }
  SECTION("wrong element type") {
    const auto path = write_gzip("type.gz", idx(0x0D03, {1, 1, 1}, pixels(4)));
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "magic number");
  }
  SECTION("truncated header") {
    Bytes bytes = idx(0x0803, {2, 3, 4}, {});
    bytes.resize(9);
    const auto path = write_gzip("short-header.gz", bytes);
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "truncated");
  }
  SECTION("truncated data") {
    const auto path = write_gzip("short-data.gz", idx(0x0803, {2, 3, 4}, pixels(23)));
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "truncated");
  }
  SECTION("trailing bytes") {
    const auto path = write_gzip("long-data.gz", idx(0x0803, {2, 3, 4}, pixels(25)));
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "after the 24 data bytes");
  }
  SECTION("zero size") {
    const auto path = write_gzip("zero.gz", idx(0x0803, {0, 3, 4}, {}));
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "size 0");
  }
  SECTION("absurd size") {
    const auto path = write_gzip("huge.gz", idx(0x0803, {0x7fffffff, 28, 28}, {}));
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "announces size");
  }
  SECTION("corrupt gzip stream") {
    Bytes bytes;
    {
      const auto good = write_gzip("good.gz", idx(0x0803, {2, 3, 4}, pixels(24)));
      std::ifstream in(good, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    bytes.resize(bytes.size() / 2);  // cut the deflate stream in the middle
    const auto path = write_plain("cut.gz", bytes);
    require_io_error([&] { fashion_mnist::read_idx(path, 3); }, path, "");
  }
}

TEST_CASE("read_idx_images rejects images and labels that do not match") {
  const auto images = write_gzip("m-images.gz", idx(0x0803, {3, 2, 2}, pixels(12)));
  SECTION("count mismatch") {
    const auto labels = write_gzip("m-labels2.gz", idx(0x0801, {2}, {1, 2}));
    require_io_error([&] { fashion_mnist::read_idx_images(images, labels, 2, 2, 10); }, images, "3 images");
  }
  SECTION("image size mismatch") {
    const auto labels = write_gzip("m-labels3.gz", idx(0x0801, {3}, {1, 2, 3}));
    require_io_error([&] { fashion_mnist::read_idx_images(images, labels, 28, 28, 10); }, images, "2 x 2 pixels");
  }
  SECTION("label out of range") {
    const auto labels = write_gzip("m-labels-bad.gz", idx(0x0801, {3}, {1, 12, 3}));
    require_io_error([&] { fashion_mnist::read_idx_images(images, labels, 2, 2, 10); }, labels, "label 12");
  }
}

}  // namespace lorakit_test_fashion_mnist_idx
