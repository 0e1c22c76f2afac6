// Reader of the IDX files of MNIST and Fashion-MNIST (gzip-compressed or plain), with every header field checked.
//
// Format (big-endian): magic = 0x00 0x00 <type> <rank>, then <rank> 32-bit sizes, then the data. Images are
// type 0x08 (unsigned byte) rank 3 [n x rows x cols]; labels are type 0x08 rank 1 [n]. Decompression goes
// through zlib's gzread, which also reads files that are not compressed.
#pragma once

#include <lorakit/core/error.hpp>

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fashion_mnist {

/// An IDX tensor of unsigned bytes: its sizes and its data in row-major order.
struct IdxArray {
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;
};

namespace detail {

/// A gzip (or plain) file read through zlib; closes itself.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (file_ == nullptr) lorakit::detail::fail<lorakit::IoError>("read_idx", "cannot open '", path, "'");
  }
  ~GzFile() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  /// Reads exactly `size` bytes of `what`. Errors (IoError): a corrupt stream, fewer bytes than that.
  void read(void* out, std::size_t size, const char* what) {
    auto* bytes = static_cast<unsigned char*>(out);
    std::size_t done = 0;
    while (done < size) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(size - done, 1u << 30));
      const int got = gzread(file_, bytes + done, chunk);
      if (got < 0) fail_stream(what);
      if (got == 0) {
        lorakit::detail::fail<lorakit::IoError>("read_idx", "'", path_, "' is truncated: it ends after ", done,
                                                " of the ", size, " bytes of its ", what);
      }
      done += static_cast<std::size_t>(got);
    }
  }

  /// True when the file holds nothing more (a trailing byte means the header lied about the sizes).
  bool at_end() {
    unsigned char extra = 0;
    const int got = gzread(file_, &extra, 1);
    if (got < 0) fail_stream("end");
    return got == 0;
  }

 private:
  [[noreturn]] void fail_stream(const char* what) {
    int code = 0;
    const char* message = gzerror(file_, &code);
    lorakit::detail::fail<lorakit::IoError>("read_idx", "'", path_, "' is not a valid gzip stream (while reading its ",
                                            what, "): ", message);
  }

  std::string path_;
  gzFile file_;
};

inline std::uint32_t big_endian(const std::array<unsigned char, 4>& b) {
  return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
}

inline std::string hex(std::uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", static_cast<unsigned>(value));
  return text;
}

}  // namespace detail

/// Reads an IDX file of unsigned bytes with `expected_rank` dimensions. Errors (lorakit::IoError, naming the
/// file): it cannot be opened; a magic number other than 0x0000 08 <expected_rank>; a zero or absurd size;
/// fewer data bytes than the sizes announce (truncated) or more (trailing bytes); a corrupt gzip stream.
inline IdxArray read_idx(const std::string& path, int expected_rank) {
  detail::GzFile file(path);
  std::array<unsigned char, 4> word{};
  file.read(word.data(), word.size(), "magic number");
  const std::uint32_t magic = detail::big_endian(word);
  const std::uint32_t expected_magic = 0x0800u | static_cast<std::uint32_t>(expected_rank);
  if (magic != expected_magic) {
    lorakit::detail::fail<lorakit::IoError>("read_idx", "'", path, "' has magic number ", detail::hex(magic),
                                            ", expected ", detail::hex(expected_magic), " (unsigned bytes, ",
                                            expected_rank, " dimensions)");
  }
  IdxArray out;
  std::int64_t total = 1;
  for (int d = 0; d < expected_rank; ++d) {
    file.read(word.data(), word.size(), "header");
    const std::int64_t size = detail::big_endian(word);
    // Fashion-MNIST has at most 60000 images of 28 x 28; anything past 2^31 bytes is a corrupt header.
    if (size < 1 || total * size > (std::int64_t{1} << 31)) {
      lorakit::detail::fail<lorakit::IoError>("read_idx", "'", path, "' announces size ", size, " for dimension ", d,
                                              ", expected between 1 and 2^31 bytes in all");
    }
    total *= size;
    out.shape.push_back(size);
  }
  out.data.resize(static_cast<std::size_t>(total));
  file.read(out.data.data(), out.data.size(), "data");
  if (!file.at_end()) {
    lorakit::detail::fail<lorakit::IoError>("read_idx", "'", path, "' has bytes after the ", total,
                                            " data bytes its header announces");
  }
  return out;
}

/// Images with their labels.
struct IdxImages {
  std::int64_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // count x rows x cols, row-major
  std::vector<std::uint8_t> labels;  // count
};

/// Images [n x rows x cols] of `path` and labels [n] of `labels_path`, checked against each other: the same n,
/// images of `rows` x `cols`, labels below `classes`. Errors (lorakit::IoError): those of read_idx, and any
/// mismatch.
inline IdxImages read_idx_images(const std::string& images_path, const std::string& labels_path, std::int64_t rows,
                                 std::int64_t cols, int classes) {
  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.shape[1] != rows || images.shape[2] != cols) {
    lorakit::detail::fail<lorakit::IoError>("read_idx_images", "'", images_path, "' holds images of ", images.shape[1],
                                            " x ", images.shape[2], " pixels, expected ", rows, " x ", cols);
  }
  if (images.shape[0] != labels.shape[0]) {
    lorakit::detail::fail<lorakit::IoError>("read_idx_images", "'", images_path, "' holds ", images.shape[0],
                                            " images but '", labels_path, "' holds ", labels.shape[0],
                                            " labels, expected as many");
  }
  for (std::size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= classes) {
      lorakit::detail::fail<lorakit::IoError>("read_idx_images", "'", labels_path, "' has label ",
                                              int{labels.data[i]}, " at position ", i, ", expected 0 to ", classes - 1);
    }
  }
  return IdxImages{images.shape[0], rows, cols, std::move(images.data), std::move(labels.data)};
}

}  // namespace fashion_mnist
