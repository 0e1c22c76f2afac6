// Reading and writing safetensors files (https://github.com/huggingface/safetensors), the tensor format of
// HuggingFace PEFT: a validated reader that never trusts a size before checking it against the file, and a
// writer that replaces its destination atomically.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON (an object starting with `{`, padded with
// spaces), then the data. Each JSON entry is `name: {"dtype", "shape", "data_offsets": [begin, end)}` with
// offsets relative to the start of the data; the optional entry `__metadata__` maps strings to strings.
// Tensors are little-endian and row-major, and together cover the data exactly, without gaps or overlaps.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/io/atomic_file.hpp"
#include "lorakit/io/dtype.hpp"
#include "lorakit/io/input_file.hpp"
#include "lorakit/io/json_text.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "lorakit/io/safetensors.hpp: safetensors is little-endian and lorakit reads it in place; big-endian hosts are not supported"
#endif

namespace lorakit::io {

/// One tensor of a safetensors file.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;  ///< empty for a scalar
  std::uint64_t data_begin = 0;     ///< byte range [data_begin, data_end) relative to the start of the data
  std::uint64_t data_end = 0;

  /// Number of elements (the product of the shape; 1 for a scalar).
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (const auto d : shape) n *= d;
    return n;
  }
};

/// The largest header a reader accepts (as the reference implementation: 100,000,000 bytes).
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

namespace detail {

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

/// The matrix view of a tensor: a scalar is [1 x 1], a vector [n] is [1 x n], and [d0, d1, ...] is
/// [d0 x d1 * ...] (how PyTorch flattens a convolution weight to a matrix).
inline std::pair<Index, Index> matrix_shape(const std::vector<std::int64_t>& shape) {
  if (shape.empty()) return {1, 1};
  if (shape.size() == 1) return {1, static_cast<Index>(shape[0])};
  Index cols = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) cols *= static_cast<Index>(shape[i]);
  return {static_cast<Index>(shape[0]), cols};
}

/// `value` (a JSON integer) as a non-negative int64, or nothing.
inline std::optional<std::uint64_t> json_size(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return value.get<std::uint64_t>();
  return std::nullopt;
}

/// Converts `count` little-endian elements of `dtype` at `bytes` to T.
template <class T>
void convert_from(Dtype dtype, const unsigned char* bytes, std::size_t count, T* out) {
  switch (dtype) {
    case Dtype::F32:
      for (std::size_t i = 0; i < count; ++i) {
        float v;
        std::memcpy(&v, bytes + 4 * i, 4);
        out[i] = static_cast<T>(v);
      }
      break;
    case Dtype::F64:
      for (std::size_t i = 0; i < count; ++i) {
        double v;
        std::memcpy(&v, bytes + 8 * i, 8);
        if constexpr (std::is_same_v<T, float>) {
          out[i] = double_to_float(v);
        } else {
          out[i] = static_cast<T>(v);
        }
      }
      break;
    case Dtype::F16:
    case Dtype::BF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t v;
        std::memcpy(&v, bytes + 2 * i, 2);
        out[i] = static_cast<T>(dtype == Dtype::F16 ? half_to_float(v) : bfloat16_to_float(v));
      }
      break;
  }
}

}  // namespace detail

/// Reads a safetensors file. The constructor reads and validates the header (and only the header); tensors
/// are read on request, each with one read of its byte range.
///
/// The file is opened once (InputFile: only a regular file, refused without blocking otherwise) and every tensor
/// is read from that open file, so a file renamed over the path meanwhile is never mixed in.
///
/// Every problem is an IoError naming the file, the tensor and what is wrong: a missing file or one that is not
/// a regular file, a file shorter than the header, a header longer than the file or than 100,000,000 bytes, a
/// header nested deeper than max_json_depth (checked before parsing), one that is not a JSON object, has
/// trailing content or a duplicate key, an unknown dtype, a shape that is not a list of non-negative integers, data offsets that are
/// out of range, overlap, leave a gap, do not start at 0 or do not cover the data, or a byte range whose size
/// is not shape x dtype size.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(const std::filesystem::path& file) : file_(file), input_("SafetensorsReader", file) {
    const std::uint64_t file_size = input_.size();
    if (file_size < 8) fail("the file has ", file_size, " bytes, too short for the 8-byte header length (truncated file)");
    unsigned char prefix[8];
    input_.read_at(0, prefix, 8, "the header length");
    std::uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | prefix[i];
    if (header_size > max_safetensors_header_bytes) {
      fail("the header length ", header_size, " exceeds the limit of ", max_safetensors_header_bytes, " bytes");
    }
    if (header_size > file_size - 8) {
      fail("the header length ", header_size, " exceeds the ", file_size - 8,
           " bytes that follow the length (truncated file?)");
    }
    std::string text(static_cast<std::size_t>(header_size), '\0');
    input_.read_at(8, text.data(), header_size, "the header");
    data_start_ = 8 + header_size;
    data_size_ = file_size - data_start_;
    parse_header(text);
  }

  const std::filesystem::path& path() const { return file_; }

  /// The `__metadata__` entry (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensors, in the order of their data in the file.
  std::vector<TensorInfo> tensors() const { return tensors_; }

  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  /// The tensor named `name`. Errors (IoError): no such tensor.
  const TensorInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) {
      lorakit::detail::fail<IoError>("SafetensorsReader::info", "'", file_.string(), "' has no tensor named '",
                                     detail::shown(name), "' (it has ",
                            tensors_.size(), " tensors)");
    }
    return tensors_[it->second];
  }

  /// The tensor `name` converted to T, as a matrix: a scalar is [1 x 1], a 1-D tensor [n] is [1 x n], a 2-D tensor
  /// keeps its shape and [d0, d1, ...] becomes [d0 x d1 * ...]. Errors (IoError): no such tensor; the file is
  /// shorter than when it was opened.
  template <class T>
  Matrix<T> matrix(const std::string& name) const {
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    const TensorInfo& tensor = info(name);
    const auto [rows, cols] = detail::matrix_shape(tensor.shape);
    Matrix<T> out(rows, cols);
    read_into(tensor, out.data());
    return out;
  }

  /// The tensor `name` converted to T, flattened in row-major order.
  template <class T>
  Vector<T> vector(const std::string& name) const {
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    const TensorInfo& tensor = info(name);
    Vector<T> out(static_cast<Index>(tensor.numel()));
    read_into(tensor, out.data());
    return out;
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    lorakit::detail::fail<IoError>("SafetensorsReader", "'", file_.string(), "': ", parts...);
  }

  template <class... Parts>
  [[noreturn]] void fail_tensor(const std::string& name, const Parts&... parts) const {
    fail("tensor '", detail::shown(name), "': ", parts...);
  }

  /// Parses the JSON header: its depth is checked before parsing, and duplicate keys are refused at any depth
  /// (nlohmann-json would keep the last one).
  nlohmann::json parse_json(const std::string& text) const {
    if (text.empty() || text.front() != '{') fail("the header does not start with '{', expected a JSON object");
    return detail::parse_json_object<nlohmann::json>("SafetensorsReader", file_, text, true);
  }

  void parse_header(const std::string& text) {
    const nlohmann::json header = parse_json(text);
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        parse_metadata(value);
      } else {
        tensors_.push_back(parse_entry(key, value));
      }
    }
    check_layout();
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  void parse_metadata(const nlohmann::json& value) {
    if (!value.is_object()) fail("__metadata__ is ", value.type_name(), ", expected an object of strings");
    for (const auto& [key, item] : value.items()) {
      if (!item.is_string()) fail("__metadata__ '", detail::shown(key), "' is ", item.type_name(), ", expected a string");
      metadata_.emplace(key, item.get<std::string>());
    }
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& value) const {
    if (!value.is_object()) fail_tensor(name, "the entry is ", value.type_name(), ", expected an object");
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(field)) fail_tensor(name, "the entry has no '", field, "'");
    }
    TensorInfo tensor;
    tensor.name = name;
    const auto& dtype = value["dtype"];
    if (!dtype.is_string()) fail_tensor(name, "dtype is ", dtype.type_name(), ", expected a string");
    const auto parsed = parse_dtype(dtype.get<std::string>());
    if (!parsed) fail_tensor(name, "unknown dtype '", detail::shown(dtype.get<std::string>()), "', expected F32, F64, F16 or BF16");
    tensor.dtype = *parsed;

    const auto& shape = value["shape"];
    if (!shape.is_array()) fail_tensor(name, "shape is ", shape.type_name(), ", expected a list of sizes");
    constexpr auto max_size = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    std::uint64_t numel = 1, nonzero_product = 1;
    for (const auto& dim : shape) {
      const auto size = detail::json_size(dim);
      if (!size) fail_tensor(name, "shape has the entry ", detail::describe(dim), ", expected a non-negative integer");
      if (*size != 0 && nonzero_product > max_size / *size) fail_tensor(name, "shape ", detail::shape_string(tensor.shape), " x ", *size, " is too large");
      if (*size != 0) nonzero_product *= *size;
      numel = *size == 0 ? 0 : numel * *size;
      tensor.shape.push_back(static_cast<std::int64_t>(*size));
    }

    const auto& offsets = value["data_offsets"];
    const auto begin = offsets.is_array() && offsets.size() == 2 ? detail::json_size(offsets[0]) : std::nullopt;
    const auto end = offsets.is_array() && offsets.size() == 2 ? detail::json_size(offsets[1]) : std::nullopt;
    if (!begin || !end) fail_tensor(name, "data_offsets is ", detail::describe(offsets), ", expected [begin, end] with 0 <= begin <= end");
    if (*begin > *end) fail_tensor(name, "data_offsets [", *begin, ", ", *end, ") has begin > end, expected 0 <= begin <= end");
    if (*end > data_size_) {
      fail_tensor(name, "data_offsets [", *begin, ", ", *end, ") is out of range: the data section has ", data_size_,
                  " bytes (truncated file?)");
    }
    tensor.data_begin = *begin;
    tensor.data_end = *end;
    // numel <= nonzero_product < 2^63; the byte count cannot overflow unless numel exceeds the data anyway.
    const std::uint64_t bytes = numel * dtype_size(tensor.dtype);
    if (numel > data_size_ || bytes != *end - *begin) {
      fail_tensor(name, "shape ", detail::shape_string(tensor.shape), " of ", dtype_name(tensor.dtype), " needs ",
                  numel > data_size_ ? std::string("more") : std::to_string(bytes), " bytes, but data_offsets [", *begin,
                  ", ", *end, ") hold ", *end - *begin, " (size mismatch)");
    }
    return tensor;
  }

  /// The tensors, sorted by their offsets, must tile [0, data size) exactly.
  void check_layout() {
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.data_end < b.data_end;
    });
    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const TensorInfo& t = tensors_[i];
      if (t.data_begin < covered) {
        fail_tensor(t.name, "data_offsets [", t.data_begin, ", ", t.data_end, ") overlap tensor '", tensors_[i - 1].name,
                    "' [", tensors_[i - 1].data_begin, ", ", tensors_[i - 1].data_end, ")");
      }
      if (t.data_begin > covered) {
        fail_tensor(t.name, "data_offsets [", t.data_begin, ", ", t.data_end, ") leave the bytes [", covered, ", ",
                    t.data_begin, ") unused, expected tensors contiguous from offset 0");
      }
      covered = t.data_end;
    }
    if (covered != data_size_) {
      fail("the tensors cover ", covered, " bytes of data but the data section has ", data_size_,
           " (trailing bytes not covered by any tensor)");
    }
  }

  template <class T>
  void read_into(const TensorInfo& tensor, T* out) const {
    const std::uint64_t bytes = tensor.data_end - tensor.data_begin;
    if (bytes == 0) return;
    const bool same_type = (std::is_same_v<T, float> && tensor.dtype == Dtype::F32) ||
                           (std::is_same_v<T, double> && tensor.dtype == Dtype::F64);
    std::vector<unsigned char> buffer;
    void* target = out;
    if (!same_type) {
      buffer.resize(static_cast<std::size_t>(bytes));
      target = buffer.data();
    }
    const std::string what = "tensor '" + detail::shown(tensor.name) + "'";
    input_.read_at(data_start_ + tensor.data_begin, target, bytes, what.c_str());
    if (!same_type) detail::convert_from(tensor.dtype, buffer.data(), static_cast<std::size_t>(bytes / dtype_size(tensor.dtype)), out);
  }

  std::filesystem::path file_;
  InputFile input_;  // open once: tensors are read from the file whose header was validated
  std::uint64_t data_start_ = 0;
  std::uint64_t data_size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;  // sorted by data offset
  std::map<std::string, std::size_t> index_;
};

namespace detail {

/// Encodes `count` values of one row as `dtype` (little-endian). Errors (ValueError): a finite value overflows.
template <class T>
void encode(const char* where, const std::string& name, const T* in, std::size_t count, Index row, Dtype dtype,
            unsigned char* out) {
  if ((std::is_same_v<T, float> && dtype == Dtype::F32) || (std::is_same_v<T, double> && dtype == Dtype::F64)) {
    std::memcpy(out, in, count * sizeof(T));
    return;
  }
  for (std::size_t j = 0; j < count; ++j) {
    const double v = static_cast<double>(in[j]);
    bool overflow = false;
    switch (dtype) {
      case Dtype::F64: std::memcpy(out + 8 * j, &v, 8); break;
      case Dtype::F32: {
        const float f = double_to_float(v);
        overflow = std::isinf(f) && std::isfinite(v);
        std::memcpy(out + 4 * j, &f, 4);
        break;
      }
      case Dtype::F16:
      case Dtype::BF16: {
        const std::uint16_t h = dtype == Dtype::F16 ? double_to_half(v) : double_to_bfloat16(v);
        overflow = std::isfinite(v) && (h & 0x7FFFu) == (dtype == Dtype::F16 ? 0x7C00u : 0x7F80u);
        std::memcpy(out + 2 * j, &h, 2);
        break;
      }
    }
    if (overflow) {
      lorakit::detail::fail<ValueError>(where, "tensor '", name, "': the value ", v, " at row ", row, ", column ", j,
                                        " overflows ", dtype_name(dtype), " (largest finite ", dtype_max(dtype), ")");
    }
  }
}

/// Encodes the rows of `rows` one after the other (a Ref: a row-major copy is made only when needed).
template <class T>
void encode_rows(const char* where, const std::string& name, const Eigen::Ref<const Matrix<T>>& rows,
                 Dtype dtype, unsigned char* out) {
  for (Index i = 0; i < rows.rows(); ++i) {
    const auto count = static_cast<std::size_t>(rows.cols());
    encode(where, name, rows.row(i).data(), count, i, dtype, out);
    out += count * dtype_size(dtype);
  }
}

/// The bytes of a tensor of `shape` holding `values` (a matrix, or a column vector as one row: the same element
/// order) converted to `dtype`, for both writers (safetensors, GGUF). `shape_name` names the shape in messages.
/// Errors: a negative size (ValueError); a shape whose element count is not the values' (ShapeError); a finite
/// value that overflows `dtype` (ValueError).
template <class Derived>
std::vector<unsigned char> encode_tensor(const char* where, const std::string& name,
                                         const Eigen::MatrixBase<Derived>& values, Dtype dtype,
                                         const std::vector<std::int64_t>& shape, const char* shape_name) {
  using T = typename Derived::Scalar;
  std::int64_t numel = 1;
  for (const auto d : shape) {
    if (d < 0) lorakit::detail::fail<ValueError>(where, "tensor '", name, "': ", shape_name, " ", shape_string(shape), " has a negative size");
    numel *= d;
  }
  if (numel != static_cast<std::int64_t>(values.size())) {
    lorakit::detail::fail<ShapeError>(where, "tensor '", name, "': ", shape_name, " ", shape_string(shape), " holds ", numel,
                                      " elements, but the values have ", values.size());
  }
  std::vector<unsigned char> bytes(static_cast<std::size_t>(values.size()) * dtype_size(dtype));
  if constexpr (Derived::ColsAtCompileTime == 1) {
    encode_rows<T>(where, name, values.transpose(), dtype, bytes.data());
  } else {
    encode_rows<T>(where, name, values.derived(), dtype, bytes.data());
  }
  return bytes;
}

}  // namespace detail

/// Builds a safetensors file: add tensors (converted to the dtype chosen for each), then `write` it.
/// Tensors are laid out by element size (largest first) then name, so every tensor is aligned to its element
/// size, as the reference implementation does; the header is padded with spaces to a multiple of 8 bytes.
class SafetensorsWriter {
 public:
  /// Sets a `__metadata__` entry (PEFT writes {"format": "pt"}).
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// Adds a matrix (shape [rows, cols]) or a column vector such as `Vector<T>` (shape [n]), converted to `dtype`.
  /// Errors (ValueError): an empty, reserved or repeated name; a finite value that overflows `dtype`.
  template <class Derived>
  void add(const std::string& name, const Eigen::MatrixBase<Derived>& values, Dtype dtype = Dtype::F32) {
    std::vector<std::int64_t> shape;
    if constexpr (Derived::ColsAtCompileTime == 1) {
      shape = {static_cast<std::int64_t>(values.size())};
    } else {
      shape = {static_cast<std::int64_t>(values.rows()), static_cast<std::int64_t>(values.cols())};
    }
    add(name, values, dtype, std::move(shape));
  }

  /// Adds `values` (read in row-major order) with an explicit shape whose product must be values.size().
  template <class Derived>
  void add(const std::string& name, const Eigen::MatrixBase<Derived>& values, Dtype dtype,
           std::vector<std::int64_t> shape) {
    using T = typename Derived::Scalar;
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    constexpr const char* where = "SafetensorsWriter::add";
    if (name.empty() || name == "__metadata__") {
      lorakit::detail::fail<ValueError>(where, "tensor name '", name, "' is not allowed (empty or reserved)");
    }
    if (names_.count(name) != 0) lorakit::detail::fail<ValueError>(where, "tensor '", name, "' was already added");
    std::vector<unsigned char> bytes = detail::encode_tensor(where, name, values, dtype, shape, "shape");
    Entry entry{name, dtype, std::move(shape), std::move(bytes)};
    names_.insert(name);
    entries_.push_back(std::move(entry));
  }

  /// Number of tensors added.
  std::size_t size() const { return entries_.size(); }

  /// Writes the file atomically (a temporary file in the same folder, flushed to the disk unless `sync` is false,
  /// then renamed over `file`). Errors (IoError): the folder is missing or not writable, the disk is full.
  void write(const std::filesystem::path& file, bool sync = true) const {
    std::vector<const Entry*> order;
    for (const auto& entry : entries_) order.push_back(&entry);
    std::stable_sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
      const auto sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
      return sa != sb ? sa > sb : a->name < b->name;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const Entry* entry : order) {
      const std::uint64_t end = offset + entry->bytes.size();
      header[entry->name] = {{"dtype", dtype_name(entry->dtype)}, {"shape", entry->shape}, {"data_offsets", {offset, end}}};
      offset = end;
    }
    std::string text = header.dump();
    text.resize((text.size() + 7) / 8 * 8, ' ');
    unsigned char prefix[8];
    for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
    AtomicFile out("SafetensorsWriter::write", file);
    out.write(prefix, 8);
    out.write(text.data(), text.size());
    for (const Entry* entry : order) out.write(entry->bytes.data(), entry->bytes.size());
    out.commit(sync);
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<std::int64_t> shape;
    std::vector<unsigned char> bytes;
  };

  std::map<std::string, std::string> metadata_;
  std::vector<Entry> entries_;
  std::set<std::string> names_;
};

}  // namespace lorakit::io
