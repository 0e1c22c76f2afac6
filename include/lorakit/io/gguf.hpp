// Reading and writing GGUF v3 files (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), the container
// of llama.cpp's models and adapters: a validated reader that checks every count, length and offset against the
// file before it allocates or reads, and a writer that replaces its destination atomically.
//
// Layout (all little-endian): the magic "GGUF", uint32 version 3, uint64 tensor count, uint64 key/value count;
// the key/values (a string key, a uint32 value type, the value; strings are a uint64 length and that many bytes
// without a terminator; an array is a uint32 element type, a uint64 count and the elements); the tensor infos
// (a string name, uint32 n_dims, n_dims uint64 sizes ne[0..], the uint32 ggml type, the uint64 offset of the
// tensor in the data section); padding to the alignment (key `general.alignment`, a UINT32 power of two,
// default 32); the data section, where every tensor starts at a multiple of the alignment.
// ggml sizes run fastest first: a row-major matrix [rows x cols] is stored with ne = [cols, rows].
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/io/atomic_file.hpp"
#include "lorakit/io/dtype.hpp"
#include "lorakit/io/safetensors.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io {

/// The type of a GGUF value (the numbers are the file's).
enum class GgufType : std::uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, boolean = 7, string = 8,
  array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

/// "UINT8", ..., "FLOAT64" (the names of the GGUF specification), or "unknown".
inline const char* gguf_type_name(GgufType type) {
  static const char* const names[] = {"UINT8", "INT8",  "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                      "BOOL",  "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};
  const auto i = static_cast<std::uint32_t>(type);
  return i < 13 ? names[i] : "unknown";
}

/// One GGUF value: a number, a bool, a string, or an array of scalars or strings (GGUF arrays of arrays are not
/// read). Integers keep their type and exact value; FLOAT32 values are held exactly in `real`.
struct GgufValue {
  GgufType type = GgufType::uint32;
  std::uint64_t uint = 0;       ///< UINT8 ... UINT64
  std::int64_t sint = 0;        ///< INT8 ... INT64
  double real = 0;              ///< FLOAT32, FLOAT64
  bool boolean = false;         ///< BOOL
  std::string string;           ///< STRING
  GgufType element_type = GgufType::uint32;  ///< ARRAY: the type of its elements
  std::vector<GgufValue> array;              ///< ARRAY: the elements

  static GgufValue make_uint32(std::uint32_t v) { GgufValue x; x.type = GgufType::uint32; x.uint = v; return x; }
  static GgufValue make_uint64(std::uint64_t v) { GgufValue x; x.type = GgufType::uint64; x.uint = v; return x; }
  static GgufValue make_int32(std::int32_t v) { GgufValue x; x.type = GgufType::int32; x.sint = v; return x; }
  static GgufValue make_int64(std::int64_t v) { GgufValue x; x.type = GgufType::int64; x.sint = v; return x; }
  static GgufValue make_float32(float v) { GgufValue x; x.type = GgufType::float32; x.real = v; return x; }
  static GgufValue make_float64(double v) { GgufValue x; x.type = GgufType::float64; x.real = v; return x; }
  static GgufValue make_bool(bool v) { GgufValue x; x.type = GgufType::boolean; x.boolean = v; return x; }
  static GgufValue make_string(std::string v) { GgufValue x; x.type = GgufType::string; x.string = std::move(v); return x; }
  /// An array of `element_type`; every element must have that type (checked by GgufWriter::set).
  static GgufValue make_array(GgufType element_type, std::vector<GgufValue> elements) {
    GgufValue x;
    x.type = GgufType::array;
    x.element_type = element_type;
    x.array = std::move(elements);
    return x;
  }
  static GgufValue make_strings(const std::vector<std::string>& values) {
    std::vector<GgufValue> elements;
    elements.reserve(values.size());
    for (const auto& v : values) elements.push_back(make_string(v));
    return make_array(GgufType::string, std::move(elements));
  }

  bool is_unsigned() const { return type == GgufType::uint8 || type == GgufType::uint16 || type == GgufType::uint32 || type == GgufType::uint64; }
  bool is_signed() const { return type == GgufType::int8 || type == GgufType::int16 || type == GgufType::int32 || type == GgufType::int64; }
  bool is_real() const { return type == GgufType::float32 || type == GgufType::float64; }
};

/// ggml's tensor type numbers for the element types lorakit reads and writes.
inline constexpr std::uint32_t ggml_type_f32 = 0, ggml_type_f16 = 1, ggml_type_f64 = 28, ggml_type_bf16 = 30;

/// The ggml type number of a Dtype.
inline std::uint32_t ggml_type_of(Dtype dtype) {
  switch (dtype) {
    case Dtype::F32: return ggml_type_f32;
    case Dtype::F16: return ggml_type_f16;
    case Dtype::F64: return ggml_type_f64;
    case Dtype::BF16: return ggml_type_bf16;
  }
  return ggml_type_f32;
}

/// The Dtype of a ggml type number, or nothing for a type lorakit does not read (the quantized ones).
inline std::optional<Dtype> dtype_of_ggml_type(std::uint32_t type) {
  switch (type) {
    case ggml_type_f32: return Dtype::F32;
    case ggml_type_f16: return Dtype::F16;
    case ggml_type_f64: return Dtype::F64;
    case ggml_type_bf16: return Dtype::BF16;
    default: return std::nullopt;
  }
}

/// One tensor of a GGUF file.
struct GgufTensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> ne;  ///< ggml sizes, fastest first: a [rows x cols] matrix has ne = [cols, rows]
  std::uint64_t offset = 0;      ///< from the start of the data section
  std::uint64_t bytes = 0;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (const auto d : ne) n *= d;
    return n;
  }
  /// The row-major matrix view: cols = ne[0], rows = the product of the other sizes.
  std::pair<Index, Index> matrix_shape() const {
    Index rows = 1;
    for (std::size_t i = 1; i < ne.size(); ++i) rows *= static_cast<Index>(ne[i]);
    return {rows, ne.empty() ? Index(1) : static_cast<Index>(ne[0])};
  }
};

inline constexpr std::uint32_t gguf_version = 3;
inline constexpr std::uint32_t gguf_default_alignment = 32;
/// ggml's limits: a tensor name is shorter than GGML_MAX_NAME = 64 bytes; a tensor has at most 4 dimensions.
inline constexpr std::size_t gguf_max_tensor_name = 63;
inline constexpr std::uint32_t gguf_max_dims = 4;

namespace detail {

/// At most `limit` characters of an untrusted string for an error message, with "..." when cut.
inline std::string gguf_excerpt(const std::string& text, std::size_t limit = 80) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < limit; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7F) ? static_cast<char>(c) : '?';
  }
  return text.size() > limit ? out + "..." : out;
}

/// Size in bytes of a scalar GGUF value (0 for STRING, ARRAY and unknown types).
inline std::uint64_t gguf_scalar_size(GgufType type) {
  switch (type) {
    case GgufType::uint8: case GgufType::int8: case GgufType::boolean: return 1;
    case GgufType::uint16: case GgufType::int16: return 2;
    case GgufType::uint32: case GgufType::int32: case GgufType::float32: return 4;
    case GgufType::uint64: case GgufType::int64: case GgufType::float64: return 8;
    default: return 0;
  }
}

inline std::uint64_t align_up(std::uint64_t offset, std::uint64_t alignment) {
  return (offset + alignment - 1) / alignment * alignment;
}

}  // namespace detail

/// Reads a GGUF v3 file. The constructor reads and validates the header (key/values and tensor infos), never
/// allocating more than the file could hold; tensors are read on request, each with one read.
///
/// Every problem is an IoError naming the file and what is wrong: a bad magic or version; a file that ends
/// inside the header; counts or lengths larger than the rest of the file; an unknown value type, an array of
/// arrays; a duplicate key or tensor name; `general.alignment` not a UINT32 power of two; a tensor name of 64
/// bytes or more, 0 or more than 4 dimensions, a negative or overflowing size, an unknown or quantized ggml type,
/// an offset that is not aligned, lies outside the data section, or overlaps another tensor.
class GgufReader {
 public:
  explicit GgufReader(const std::filesystem::path& file) : file_(file) {
    std::ifstream in(file_, std::ios::binary);
    if (!in) fail("cannot open the file");
    in.seekg(0, std::ios::end);
    const auto end = in.tellg();
    if (end < 0) fail("cannot determine the file's size");
    file_size_ = static_cast<std::uint64_t>(end);
    in.seekg(0);
    Cursor cursor{in, 0, file_size_, this};
    parse(cursor);
  }

  const std::filesystem::path& path() const { return file_; }
  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  /// Offset of the data section from the start of the file.
  std::uint64_t data_offset() const { return data_start_; }

  /// The key/values, in file order (`keys()`), and by key.
  const std::vector<std::string>& keys() const { return key_order_; }
  const std::map<std::string, GgufValue>& values() const { return values_; }
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  /// The value of `key`, or nothing.
  const GgufValue* find(const std::string& key) const {
    const auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  /// The STRING value of `key`. Errors (IoError): no such key, another type.
  const std::string& string(const std::string& key) const { return typed(key, GgufType::string).string; }

  /// The tensors in the order of their infos.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// The tensor `name`. Errors (IoError): no such tensor.
  const GgufTensorInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    if (it == index_.end()) fail("no tensor named '", detail::gguf_excerpt(name), "' (the file has ", tensors_.size(), " tensors)");
    return tensors_[it->second];
  }

  /// The tensor `name` converted to T as a row-major matrix [ne[1] * ne[2] * ... x ne[0]]. Errors (IoError): no
  /// such tensor; the file is shorter than when it was opened.
  template <class T>
  Matrix<T> matrix(const std::string& name) const {
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    const GgufTensorInfo& tensor = info(name);
    const auto [rows, cols] = tensor.matrix_shape();
    Matrix<T> out(rows, cols);
    read_into(tensor, out.data());
    return out;
  }

 private:
  /// Bounded reads of the header: every read checks the bytes left in the file first.
  struct Cursor {
    std::ifstream& in;
    std::uint64_t position;
    std::uint64_t size;
    const GgufReader* reader;

    std::uint64_t left() const { return size - position; }
    void bytes(void* out, std::uint64_t count, const char* what) {
      if (count > left()) reader->fail("the file ends inside ", what, " at byte ", position, " (truncated file)");
      in.read(static_cast<char*>(out), static_cast<std::streamsize>(count));
      if (static_cast<std::uint64_t>(in.gcount()) != count) reader->fail("reading ", what, " at byte ", position, " failed");
      position += count;
    }
    template <class U>
    U scalar(const char* what) {
      U value;
      bytes(&value, sizeof(U), what);
      return value;
    }
    std::string string(const char* what) {
      const auto length = scalar<std::uint64_t>(what);
      if (length > left()) {
        reader->fail(what, " at byte ", position - 8, " has the length ", length, ", more than the ", left(),
                     " bytes left in the file");
      }
      std::string out(static_cast<std::size_t>(length), '\0');
      bytes(out.data(), length, what);
      return out;
    }
  };

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    lorakit::detail::fail<IoError>("GgufReader", "'", file_.string(), "': ", parts...);
  }

  const GgufValue& typed(const std::string& key, GgufType type) const {
    const GgufValue* value = find(key);
    if (value == nullptr) fail("no key '", detail::gguf_excerpt(key), "'");
    if (value->type != type) {
      fail("key '", detail::gguf_excerpt(key), "' is ", gguf_type_name(value->type), ", expected ", gguf_type_name(type));
    }
    return *value;
  }

  void parse(Cursor& cursor) {
    char magic[4];
    if (file_size_ < 4) fail("the file has ", file_size_, " bytes, too short for the magic 'GGUF' (truncated file)");
    cursor.bytes(magic, 4, "the magic");
    if (std::memcmp(magic, "GGUF", 4) != 0) fail("the file does not start with the magic 'GGUF' (not a GGUF file)");
    version_ = cursor.scalar<std::uint32_t>("the version");
    if (version_ != gguf_version) fail("version ", version_, " is not supported, expected ", gguf_version);
    const auto n_tensors = cursor.scalar<std::uint64_t>("the tensor count");
    const auto n_kv = cursor.scalar<std::uint64_t>("the key/value count");
    // The smallest key/value takes 13 bytes (empty key, type, one-byte value), the smallest tensor info 32.
    if (n_kv > cursor.left() / 13) fail("the key/value count ", n_kv, " is larger than the rest of the file could hold");
    if (n_tensors > cursor.left() / 32) fail("the tensor count ", n_tensors, " is larger than the rest of the file could hold");
    for (std::uint64_t i = 0; i < n_kv; ++i) read_key_value(cursor, i);
    read_alignment();
    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) tensors_.push_back(read_tensor_info(cursor));
    data_start_ = detail::align_up(cursor.position, alignment_);
    if (data_start_ > file_size_) {
      if (n_tensors > 0) fail("the data section would start at byte ", data_start_, ", past the end of the file (", file_size_, " bytes)");
      data_start_ = file_size_;  // no tensors: the padding may be left out
    }
    check_layout();
  }

  void read_key_value(Cursor& cursor, std::uint64_t i) {
    std::string key = cursor.string("a key");
    if (values_.count(key) != 0) fail("the key '", detail::gguf_excerpt(key), "' appears twice (duplicate key)");
    const auto type = static_cast<GgufType>(cursor.scalar<std::uint32_t>("a value type"));
    GgufValue value = read_value(cursor, type, key, i, true);
    key_order_.push_back(key);
    values_.emplace(std::move(key), std::move(value));
  }

  GgufValue read_value(Cursor& cursor, GgufType type, const std::string& key, std::uint64_t i, bool array_allowed) {
    GgufValue value;
    value.type = type;
    switch (type) {
      case GgufType::uint8: value.uint = cursor.scalar<std::uint8_t>("a value"); break;
      case GgufType::uint16: value.uint = cursor.scalar<std::uint16_t>("a value"); break;
      case GgufType::uint32: value.uint = cursor.scalar<std::uint32_t>("a value"); break;
      case GgufType::uint64: value.uint = cursor.scalar<std::uint64_t>("a value"); break;
      case GgufType::int8: value.sint = cursor.scalar<std::int8_t>("a value"); break;
      case GgufType::int16: value.sint = cursor.scalar<std::int16_t>("a value"); break;
      case GgufType::int32: value.sint = cursor.scalar<std::int32_t>("a value"); break;
      case GgufType::int64: value.sint = cursor.scalar<std::int64_t>("a value"); break;
      case GgufType::float32: value.real = cursor.scalar<float>("a value"); break;
      case GgufType::float64: value.real = cursor.scalar<double>("a value"); break;
      case GgufType::boolean: {
        const auto b = cursor.scalar<std::uint8_t>("a value");
        if (b > 1) fail("key '", detail::gguf_excerpt(key), "': the BOOL value is ", static_cast<unsigned>(b), ", expected 0 or 1");
        value.boolean = b != 0;
        break;
      }
      case GgufType::string: value.string = cursor.string("a string value"); break;
      case GgufType::array: {
        if (!array_allowed) fail("key '", detail::gguf_excerpt(key), "' is an array of arrays, which is not supported");
        value.element_type = static_cast<GgufType>(cursor.scalar<std::uint32_t>("an array's element type"));
        const auto count = cursor.scalar<std::uint64_t>("an array's length");
        if (value.element_type == GgufType::array) fail("key '", detail::gguf_excerpt(key), "' is an array of arrays, which is not supported");
        const std::uint64_t smallest = value.element_type == GgufType::string ? 8 : detail::gguf_scalar_size(value.element_type);
        if (smallest == 0) bad_type(key, i, value.element_type);
        if (count > cursor.left() / smallest) {
          fail("key '", detail::gguf_excerpt(key), "': the array length ", count, " is larger than the rest of the file could hold");
        }
        value.array.reserve(static_cast<std::size_t>(count));
        for (std::uint64_t k = 0; k < count; ++k) value.array.push_back(read_value(cursor, value.element_type, key, i, false));
        break;
      }
      default: bad_type(key, i, type);
    }
    return value;
  }

  [[noreturn]] void bad_type(const std::string& key, std::uint64_t i, GgufType type) const {
    fail("key/value ", i, " ('", detail::gguf_excerpt(key), "') has the unknown value type ", static_cast<std::uint32_t>(type),
         ", expected 0 to 12");
  }

  void read_alignment() {
    const GgufValue* value = find("general.alignment");
    if (value == nullptr) return;
    if (value->type != GgufType::uint32) fail("general.alignment is ", gguf_type_name(value->type), ", expected UINT32");
    if (value->uint == 0 || (value->uint & (value->uint - 1)) != 0) {
      fail("general.alignment is ", value->uint, ", expected a power of two");
    }
    alignment_ = value->uint;
  }

  GgufTensorInfo read_tensor_info(Cursor& cursor) {
    GgufTensorInfo tensor;
    tensor.name = cursor.string("a tensor name");
    const std::string name = detail::gguf_excerpt(tensor.name);
    if (tensor.name.size() > gguf_max_tensor_name) {
      fail("tensor '", name, "': the name has ", tensor.name.size(), " bytes, ggml allows at most ", gguf_max_tensor_name);
    }
    if (index_.count(tensor.name) != 0) fail("tensor '", name, "' appears twice (duplicate tensor name)");
    const auto n_dims = cursor.scalar<std::uint32_t>("a tensor's dimension count");
    if (n_dims == 0 || n_dims > gguf_max_dims) fail("tensor '", name, "' has ", n_dims, " dimensions, expected 1 to ", gguf_max_dims);
    // extent: the product of the nonzero sizes, which bounds every partial product (a matrix view's rows) even when
    // a zero size makes the number of elements 0.
    std::uint64_t numel = 1, extent = 1;
    constexpr auto max_size = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const auto size = cursor.scalar<std::uint64_t>("a tensor's sizes");
      if (size > max_size) fail("tensor '", name, "': ne[", d, "] = ", size, " is negative as a signed 64-bit size");
      if (size != 0) {
        if (extent > max_size / size) fail("tensor '", name, "': the product of its sizes overflows 64 bits");
        extent *= size;
      }
      numel *= size;
      tensor.ne.push_back(static_cast<std::int64_t>(size));
    }
    const auto type = cursor.scalar<std::uint32_t>("a tensor's type");
    const auto dtype = dtype_of_ggml_type(type);
    if (!dtype) fail("tensor '", name, "' has the ggml type ", type, ", expected F32 (0), F16 (1), F64 (28) or BF16 (30) (quantized types are not read)");
    tensor.dtype = *dtype;
    tensor.offset = cursor.scalar<std::uint64_t>("a tensor's offset");
    if (numel > max_size / dtype_size(tensor.dtype)) fail("tensor '", name, "': the byte size overflows 64 bits");
    tensor.bytes = numel * dtype_size(tensor.dtype);
    if (tensor.offset % alignment_ != 0) fail("tensor '", name, "': the offset ", tensor.offset, " is not a multiple of the alignment ", alignment_);
    index_.emplace(tensor.name, tensors_.size());
    return tensor;
  }

  /// Every tensor lies inside the data section, and no two overlap.
  void check_layout() const {
    const std::uint64_t data_size = file_size_ - data_start_;
    std::vector<const GgufTensorInfo*> order;
    for (const auto& t : tensors_) {
      if (t.offset > data_size || t.bytes > data_size - t.offset) {
        fail("tensor '", detail::gguf_excerpt(t.name), "': its ", t.bytes, " bytes at offset ", t.offset,
             " lie outside the data section of ", data_size, " bytes (truncated file?)");
      }
      order.push_back(&t);
    }
    std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      if (order[i]->offset < order[i - 1]->offset + order[i - 1]->bytes) {
        fail("tensor '", detail::gguf_excerpt(order[i]->name), "' at offset ", order[i]->offset, " overlaps tensor '",
             detail::gguf_excerpt(order[i - 1]->name), "' [", order[i - 1]->offset, ", ", order[i - 1]->offset + order[i - 1]->bytes, ")");
      }
    }
  }

  template <class T>
  void read_into(const GgufTensorInfo& tensor, T* out) const {
    if (tensor.bytes == 0) return;
    std::ifstream in(file_, std::ios::binary);
    if (!in) fail("tensor '", detail::gguf_excerpt(tensor.name), "': cannot open the file again to read it");
    in.seekg(static_cast<std::streamoff>(data_start_ + tensor.offset));
    const bool same_type = (std::is_same_v<T, float> && tensor.dtype == Dtype::F32) ||
                           (std::is_same_v<T, double> && tensor.dtype == Dtype::F64);
    std::vector<unsigned char> buffer;
    char* target = reinterpret_cast<char*>(out);
    if (!same_type) {
      buffer.resize(static_cast<std::size_t>(tensor.bytes));
      target = reinterpret_cast<char*>(buffer.data());
    }
    in.read(target, static_cast<std::streamsize>(tensor.bytes));
    if (static_cast<std::uint64_t>(in.gcount()) != tensor.bytes) {
      fail("tensor '", detail::gguf_excerpt(tensor.name), "': the file ended after ", in.gcount(), " of its ", tensor.bytes,
           " bytes (truncated since it was opened)");
    }
    if (!same_type) detail::convert_from(tensor.dtype, buffer.data(), static_cast<std::size_t>(tensor.numel()), out);
  }

  std::filesystem::path file_;
  std::uint64_t file_size_ = 0;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = gguf_default_alignment;
  std::uint64_t data_start_ = 0;
  std::vector<std::string> key_order_;
  std::map<std::string, GgufValue> values_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
};

/// Builds a GGUF v3 file: set key/values, add tensors (converted to the dtype chosen for each), then `write` it.
/// Key/values and tensors are written in the order they were first set or added; tensors are laid out one after
/// the other, each padded to the alignment (`general.alignment` when set, else 32), as ggml's own writer does.
class GgufWriter {
 public:
  /// Sets (or replaces) a key/value. Errors (ValueError): an ARRAY whose elements differ from its element type,
  /// an array of arrays, `general.alignment` that is not a UINT32 power of two.
  void set(const std::string& key, GgufValue value) {
    constexpr const char* where = "GgufWriter::set";
    if (value.type == GgufType::array) {
      if (value.element_type == GgufType::array) lorakit::detail::fail<ValueError>(where, "key '", key, "': arrays of arrays are not supported");
      for (const auto& element : value.array) {
        if (element.type != value.element_type) {
          lorakit::detail::fail<ValueError>(where, "key '", key, "': an element is ", gguf_type_name(element.type),
                                            " in an array of ", gguf_type_name(value.element_type));
        }
      }
    }
    if (key == "general.alignment" &&
        (value.type != GgufType::uint32 || value.uint == 0 || (value.uint & (value.uint - 1)) != 0)) {
      lorakit::detail::fail<ValueError>(where, "general.alignment must be a UINT32 power of two");
    }
    if (values_.count(key) == 0) keys_.push_back(key);
    values_[key] = std::move(value);
  }

  const std::map<std::string, GgufValue>& values() const { return values_; }

  /// Adds a row-major matrix [rows x cols] as a 2-D tensor with ne = [cols, rows], converted to `dtype`.
  template <class Derived>
  void add(const std::string& name, const Eigen::MatrixBase<Derived>& values, Dtype dtype = Dtype::F32) {
    if constexpr (Derived::ColsAtCompileTime == 1) {
      add(name, values, dtype, {static_cast<std::int64_t>(values.size())});
    } else {
      add(name, values, dtype, {static_cast<std::int64_t>(values.cols()), static_cast<std::int64_t>(values.rows())});
    }
  }

  /// Adds `values` (read in row-major order) with explicit ggml sizes `ne` (fastest first) whose product must be
  /// values.size(). Errors (ValueError): an empty, too long or repeated name, 0 or more than 4 sizes, a negative
  /// size, a finite value that overflows `dtype`; (ShapeError) a size mismatch.
  template <class Derived>
  void add(const std::string& name, const Eigen::MatrixBase<Derived>& values, Dtype dtype, std::vector<std::int64_t> ne) {
    using T = typename Derived::Scalar;
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    constexpr const char* where = "GgufWriter::add";
    if (name.empty() || name.size() > gguf_max_tensor_name) {
      lorakit::detail::fail<ValueError>(where, "tensor name '", name, "' has ", name.size(), " bytes, expected 1 to ",
                                        gguf_max_tensor_name, " (ggml's limit)");
    }
    if (names_.count(name) != 0) lorakit::detail::fail<ValueError>(where, "tensor '", name, "' was already added");
    if (ne.empty() || ne.size() > gguf_max_dims) {
      lorakit::detail::fail<ValueError>(where, "tensor '", name, "' has ", ne.size(), " sizes, expected 1 to ", gguf_max_dims);
    }
    std::vector<unsigned char> bytes = detail::encode_tensor(where, name, values, dtype, ne, "ne");
    Entry entry{name, dtype, std::move(ne), std::move(bytes)};
    names_.insert(name);
    entries_.push_back(std::move(entry));
  }

  std::size_t size() const { return entries_.size(); }

  /// Writes the file atomically (a temporary file flushed to the disk unless `sync` is false, renamed over `file`).
  /// Errors (IoError): the folder is missing or not writable, the disk is full.
  void write(const std::filesystem::path& file, bool sync = true) const {
    const auto it = values_.find("general.alignment");
    const std::uint64_t alignment = it == values_.end() ? gguf_default_alignment : it->second.uint;
    std::string header;
    put(header, "GGUF", 4);
    put_scalar(header, gguf_version);
    put_scalar(header, static_cast<std::uint64_t>(entries_.size()));
    put_scalar(header, static_cast<std::uint64_t>(keys_.size()));
    for (const auto& key : keys_) {
      put_string(header, key);
      const GgufValue& value = values_.at(key);
      put_scalar(header, static_cast<std::uint32_t>(value.type));
      put_value(header, value);
    }
    std::uint64_t offset = 0;
    for (const auto& entry : entries_) {
      put_string(header, entry.name);
      put_scalar(header, static_cast<std::uint32_t>(entry.ne.size()));
      for (const auto d : entry.ne) put_scalar(header, static_cast<std::uint64_t>(d));
      put_scalar(header, ggml_type_of(entry.dtype));
      put_scalar(header, offset);
      offset = detail::align_up(offset + entry.bytes.size(), alignment);
    }
    header.resize(static_cast<std::size_t>(detail::align_up(header.size(), alignment)), '\0');
    AtomicFile out("GgufWriter::write", file);
    out.write(header.data(), header.size());
    const std::string padding(static_cast<std::size_t>(alignment), '\0');
    for (const auto& entry : entries_) {
      out.write(entry.bytes.data(), entry.bytes.size());
      out.write(padding.data(), static_cast<std::size_t>(detail::align_up(entry.bytes.size(), alignment) - entry.bytes.size()));
    }
    out.commit(sync);
  }

 private:
  struct Entry {
    std::string name;
    Dtype dtype;
    std::vector<std::int64_t> ne;
    std::vector<unsigned char> bytes;
  };

  static void put(std::string& out, const void* data, std::size_t size) { out.append(static_cast<const char*>(data), size); }
  template <class U>
  static void put_scalar(std::string& out, U value) { put(out, &value, sizeof(U)); }
  static void put_string(std::string& out, const std::string& s) {
    put_scalar(out, static_cast<std::uint64_t>(s.size()));
    put(out, s.data(), s.size());
  }
  static void put_value(std::string& out, const GgufValue& value) {
    switch (value.type) {
      case GgufType::uint8: put_scalar(out, static_cast<std::uint8_t>(value.uint)); break;
      case GgufType::uint16: put_scalar(out, static_cast<std::uint16_t>(value.uint)); break;
      case GgufType::uint32: put_scalar(out, static_cast<std::uint32_t>(value.uint)); break;
      case GgufType::uint64: put_scalar(out, value.uint); break;
      case GgufType::int8: put_scalar(out, static_cast<std::int8_t>(value.sint)); break;
      case GgufType::int16: put_scalar(out, static_cast<std::int16_t>(value.sint)); break;
      case GgufType::int32: put_scalar(out, static_cast<std::int32_t>(value.sint)); break;
      case GgufType::int64: put_scalar(out, value.sint); break;
      case GgufType::float32: put_scalar(out, static_cast<float>(value.real)); break;
      case GgufType::float64: put_scalar(out, value.real); break;
      case GgufType::boolean: put_scalar(out, static_cast<std::uint8_t>(value.boolean ? 1 : 0)); break;
      case GgufType::string: put_string(out, value.string); break;
      case GgufType::array:
        put_scalar(out, static_cast<std::uint32_t>(value.element_type));
        put_scalar(out, static_cast<std::uint64_t>(value.array.size()));
        for (const auto& element : value.array) put_value(out, element);
        break;
    }
  }

  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> values_;
  std::vector<Entry> entries_;
  std::set<std::string> names_;
};

}  // namespace lorakit::io
