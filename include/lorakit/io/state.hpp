// Versioned, checksummed binary states of lorakit's mergeable statistics (StreamingSvd, Eva, FisherStatistics):
// the checkpoint files that save and reload them, and the bytes that dist/mpi.hpp moves between processes.
// Needs neither MPI nor nlohmann-json.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/init/eva.hpp"
#include "lorakit/init/lora_da.hpp"
#include "lorakit/io/atomic_file.hpp"
#include "lorakit/kernel/streaming_svd.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lorakit::io {

/// The version of the state format that this header writes and the only one it reads.
inline constexpr std::uint32_t state_format_version = 1;

/// What a state blob holds.
enum class StateKind : std::uint32_t { streaming_svd = 1, eva = 2, fisher_statistics = 3 };

/// CRC-32 of `size` bytes (the IEEE 802.3 / zlib / PNG polynomial, reflected 0xEDB88320, initial and final
/// complement), continuing from `crc` (0 to start): crc32("123456789") = 0xCBF43926.
inline std::uint32_t crc32(const void* data, std::size_t size, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int bit = 0; bit < 8; ++bit) c = (c & 1U) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  const auto* bytes = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ bytes[i]) & 0xFFU] ^ (crc >> 8);
  return ~crc;
}

namespace detail {

/// The fixed header of a state blob (40 bytes, in the writer's byte order, which the `byte_order` field records):
///
/// | offset | field | |
/// | --- | --- | --- |
/// | 0 | magic | the 8 bytes "LKSTATE\0" |
/// | 8 | version | u32, `state_format_version` |
/// | 12 | byte_order | u32 0x01020304 as written |
/// | 16 | kind | u32, `StateKind` |
/// | 20 | scalar | u32, sizeof(T): 4 (float) or 8 (double) |
/// | 24 | payload | u64, bytes that follow the header |
/// | 32 | crc | u32, CRC-32 of the header's first 32 bytes followed by the payload |
/// | 36 | reserved | u32, 0 |
inline constexpr std::size_t state_header_bytes = 40;
inline constexpr char state_magic[8] = {'L', 'K', 'S', 'T', 'A', 'T', 'E', '\0'};
inline constexpr std::uint32_t state_byte_order = 0x01020304U;

/// Appends plain values to a byte vector (native byte order; doubles and floats bit for bit).
class StateWriter {
 public:
  explicit StateWriter(std::vector<std::uint8_t>& out) : out_(out) {}

  template <class V>
  void put(V value) {
    static_assert(std::is_trivially_copyable_v<V>, "StateWriter::put: plain values only");
    append(&value, sizeof(V));
  }
  void put_bool(bool value) { put<std::uint8_t>(value ? 1 : 0); }
  void put_index(Index value) { put<std::int64_t>(static_cast<std::int64_t>(value)); }
  void put_string(const std::string& text) {
    put<std::uint64_t>(text.size());
    append(text.data(), text.size());
  }
  /// rows, cols, then the entries in storage order (row-major for lorakit matrices, contiguous for vectors).
  template <class Derived>
  void put_dense(const Eigen::PlainObjectBase<Derived>& m) {
    put_index(m.rows());
    put_index(m.cols());
    append(m.data(), sizeof(typename Derived::Scalar) * static_cast<std::size_t>(m.size()));
  }

 private:
  void append(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const std::uint8_t*>(data);
    out_.insert(out_.end(), bytes, bytes + size);
  }
  std::vector<std::uint8_t>& out_;
};

/// Reads what StateWriter wrote, refusing to run past the end (IoError naming the field and offset).
class StateReader {
 public:
  StateReader(const char* where, const std::uint8_t* data, std::size_t size) : where_(where), data_(data), size_(size) {}

  template <class V>
  V get(const char* field) {
    V value;
    std::memcpy(&value, take(field, sizeof(V)), sizeof(V));
    return value;
  }
  bool get_bool(const char* field) {
    const auto value = get<std::uint8_t>(field);
    if (value > 1) lorakit::detail::fail<IoError>(where_, field, " is ", int(value), ", expected 0 or 1");
    return value == 1;
  }
  Index get_index(const char* field) { return static_cast<Index>(get<std::int64_t>(field)); }
  std::string get_string(const char* field) {
    const auto length = get<std::uint64_t>(field);
    if (length > remaining()) too_short(field, length);
    const char* text = reinterpret_cast<const char*>(take(field, static_cast<std::size_t>(length)));
    return std::string(text, static_cast<std::size_t>(length));
  }
  /// A matrix or vector of type M; its stored shape must be [rows x cols] when those are >= 0.
  template <class M>
  M get_dense(const char* field, Index rows, Index cols) {
    using Scalar = typename M::Scalar;
    const Index r = get_index(field), c = get_index(field);
    if (r < 0 || c < 0 || (rows >= 0 && r != rows) || (cols >= 0 && c != cols)) {
      lorakit::detail::fail<IoError>(where_, field, " is [", r, " x ", c, "], expected [", rows, " x ", cols, "]");
    }
    const auto entries = static_cast<std::uint64_t>(r) * static_cast<std::uint64_t>(c);
    if (c != 0 && entries / static_cast<std::uint64_t>(c) != static_cast<std::uint64_t>(r)) too_short(field, ~0ULL);
    if (entries > remaining() / sizeof(Scalar)) too_short(field, entries * sizeof(Scalar));
    M m(r, c);
    std::memcpy(m.data(), take(field, static_cast<std::size_t>(entries) * sizeof(Scalar)),
                static_cast<std::size_t>(entries) * sizeof(Scalar));
    return m;
  }
  std::size_t remaining() const { return size_ - offset_; }
  std::size_t offset() const { return offset_; }

 private:
  const std::uint8_t* take(const char* field, std::size_t bytes) {
    if (bytes > remaining()) too_short(field, bytes);
    const std::uint8_t* at = data_ + offset_;
    offset_ += bytes;
    return at;
  }
  [[noreturn]] void too_short(const char* field, std::uint64_t bytes) const {
    lorakit::detail::fail<IoError>(where_, "the state is truncated: ", field, " needs ", bytes, " bytes at offset ",
                                   offset_, ", only ", remaining(), " remain");
  }

  const char* where_;
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
};

/// How each state type is written and rebuilt. `read` may throw lorakit::Error for values the type's own
/// checks refuse; `state_from_bytes` reports those as a malformed state (IoError).
template <class State>
struct StateCodec;

template <class T>
struct StateCodec<StreamingSvd<T>> {
  using Scalar = T;
  static constexpr StateKind kind = StateKind::streaming_svd;
  static constexpr const char* name() { return std::is_same_v<T, float> ? "StreamingSvd<float>" : "StreamingSvd<double>"; }

  static void write(StateWriter& out, const StreamingSvd<T>& svd) { write_state(out, svd.state()); }
  static void write_state(StateWriter& out, const StreamingSvdState<T>& s) {
    out.put_index(s.features);
    out.put_index(s.components);
    out.put_bool(s.center);
    out.put_index(s.samples);
    out.put(s.total_variance);
    out.put_dense(s.mean);
    out.put_dense(s.singular_values);
    out.put_dense(s.directions);
  }
  static StreamingSvd<T> read(StateReader& in) { return StreamingSvd<T>::from_state(read_state(in)); }
  static StreamingSvdState<T> read_state(StateReader& in) {
    StreamingSvdState<T> s;
    s.features = in.get_index("features");
    s.components = in.get_index("components");
    s.center = in.get_bool("center");
    s.samples = in.get_index("samples");
    s.total_variance = in.get<double>("total_variance");
    s.mean = in.get_dense<Eigen::VectorXd>("mean", s.features, 1);
    s.singular_values = in.get_dense<Vector<T>>("singular_values", s.components, 1);
    s.directions = in.get_dense<Matrix<T>>("directions", s.components, s.features);
    return s;
  }
  /// Same features, components and centering (a shape a merge accepts).
  static void check_like(const char* where, const StreamingSvd<T>& loaded, const StreamingSvd<T>& into) {
    if (loaded.features() != into.features() || loaded.num_components() != into.num_components() ||
        loaded.options().center != into.options().center) {
      lorakit::detail::fail<ShapeError>(where, "the file holds ", loaded.num_components(), " components of ",
                                        loaded.features(), " features (center ", loaded.options().center,
                                        "), expected ", into.num_components(), " of ", into.features(), " (center ",
                                        into.options().center, ")");
    }
  }
};

template <class T>
struct StateCodec<Eva<T>> {
  using Scalar = T;
  static constexpr StateKind kind = StateKind::eva;
  static constexpr const char* name() { return std::is_same_v<T, float> ? "Eva<float>" : "Eva<double>"; }

  static void write(StateWriter& out, const Eva<T>& eva) {
    const typename Eva<T>::State s = eva.state();
    out.put_index(s.config.rank);
    out.put(s.config.rho);
    out.put(s.config.tau);
    out.put_bool(s.config.whiten);
    out.put_bool(s.config.adjust_scaling_factors);
    out.put_bool(s.config.keep_rslora_scaling);
    out.put_bool(s.observed);
    out.put<std::uint64_t>(s.layers.size());
    for (const auto& layer : s.layers) {
      out.put_string(layer.name);
      out.put_index(layer.in_features);
      out.put_index(layer.out_features);
      out.put_string(layer.input_group);
    }
    out.put<std::uint64_t>(s.groups.size());
    for (const auto& group : s.groups) {
      out.put_string(group.key);
      StateCodec<StreamingSvd<T>>::write_state(out, group.svd);
      out.put_dense(group.similarity);
      out.put_index(group.updates);
      out.put_bool(group.converged);
    }
  }
  static Eva<T> read(StateReader& in) {
    typename Eva<T>::State s;
    s.config.rank = in.get_index("config.rank");
    s.config.rho = in.get<double>("config.rho");
    s.config.tau = in.get<double>("config.tau");
    s.config.whiten = in.get_bool("config.whiten");
    s.config.adjust_scaling_factors = in.get_bool("config.adjust_scaling_factors");
    s.config.keep_rslora_scaling = in.get_bool("config.keep_rslora_scaling");
    s.observed = in.get_bool("observed");
    const auto layers = in.get<std::uint64_t>("layer count");
    for (std::uint64_t i = 0; i < layers; ++i) {  // each layer takes >= 32 bytes: a bogus count ends as truncated
      typename Eva<T>::LayerState layer;
      layer.name = in.get_string("layer name");
      layer.in_features = in.get_index("layer in_features");
      layer.out_features = in.get_index("layer out_features");
      layer.input_group = in.get_string("layer input_group");
      s.layers.push_back(std::move(layer));
    }
    const auto groups = in.get<std::uint64_t>("group count");
    for (std::uint64_t g = 0; g < groups; ++g) {
      typename Eva<T>::GroupState group;
      group.key = in.get_string("group key");
      group.svd = StateCodec<StreamingSvd<T>>::read_state(in);
      group.similarity = in.get_dense<Vector<double>>("group similarity", group.svd.components, 1);
      group.updates = in.get_index("group updates");
      group.converged = in.get_bool("group converged");
      s.groups.push_back(std::move(group));
    }
    // Every layer's width must be that of a group read above (whose sizes the bytes have backed) before
    // from_state allocates the layers' statistics.
    for (const auto& layer : s.layers) {
      const auto group = std::find_if(s.groups.begin(), s.groups.end(),
                                      [&](const auto& g) { return g.key == layer.input_group; });
      if (group == s.groups.end() || group->svd.features != layer.in_features) {
        lorakit::detail::fail<IoError>("state_from_bytes", "layer '", layer.name, "' has in_features ",
                                       layer.in_features, " and input group '", layer.input_group,
                                       "', expected a group of that name and width in the state");
      }
    }
    return Eva<T>::from_state(std::move(s));
  }
  /// The same layers (names, shapes, groups, order) and the same rank and rho (a state a merge accepts).
  static void check_like(const char* where, const Eva<T>& loaded, const Eva<T>& into) {
    const auto a = loaded.state(), b = into.state();
    if (a.config.rank != b.config.rank || a.config.rho != b.config.rho) {
      lorakit::detail::fail<ValueError>(where, "the file has rank ", a.config.rank, " and rho ", a.config.rho,
                                        ", expected rank ", b.config.rank, " and rho ", b.config.rho);
    }
    if (a.layers.size() != b.layers.size()) {
      lorakit::detail::fail<ShapeError>(where, "the file has ", a.layers.size(), " layers, expected ", b.layers.size());
    }
    for (std::size_t i = 0; i < a.layers.size(); ++i) {
      const auto &x = a.layers[i], &y = b.layers[i];
      if (x.name != y.name || x.in_features != y.in_features || x.out_features != y.out_features ||
          x.input_group != y.input_group) {
        lorakit::detail::fail<ShapeError>(where, "the file's layer ", i, " is '", x.name, "' [", x.out_features, " x ",
                                          x.in_features, "] in group '", x.input_group, "', expected '", y.name, "' [",
                                          y.out_features, " x ", y.in_features, "] in group '", y.input_group, "'");
      }
    }
  }
};

template <class T>
struct StateCodec<FisherStatistics<T>> {
  using Scalar = T;
  static constexpr StateKind kind = StateKind::fisher_statistics;
  static constexpr const char* name() {
    return std::is_same_v<T, float> ? "FisherStatistics<float>" : "FisherStatistics<double>";
  }

  static void write(StateWriter& out, const FisherStatistics<T>& stats) {
    out.put_index(stats.in_features());
    out.put_index(stats.out_features());
    out.put_index(stats.tokens());
    out.put_index(stats.samples());
    out.put_dense(stats.input_moment_sum());
    out.put_dense(stats.output_square_sum());
    out.put_dense(stats.gradient_sum());
  }
  static FisherStatistics<T> read(StateReader& in) {
    const Index n = in.get_index("in_features"), m = in.get_index("out_features");
    const Index tokens = in.get_index("tokens"), samples = in.get_index("samples");
    FisherStatistics<T> empty(n, m);  // checks n, m >= 1 before the sizes below are trusted
    auto moment = in.get_dense<Matrix<double>>("input_moment_sum", n, n);
    auto square = in.get_dense<Vector<double>>("output_square_sum", m, 1);
    auto gradient = in.get_dense<Matrix<double>>("gradient_sum", m, n);
    if (tokens == 0 && samples == 0) {
      if (moment.any() || square.any() || gradient.any()) {
        lorakit::detail::fail<ValueError>("FisherStatistics", "tokens and samples are 0 but the sums are not");
      }
      return empty;
    }
    return FisherStatistics<T>::from_sums(std::move(moment), std::move(square), std::move(gradient), tokens, samples);
  }
  static void check_like(const char* where, const FisherStatistics<T>& loaded, const FisherStatistics<T>& into) {
    if (loaded.in_features() != into.in_features() || loaded.out_features() != into.out_features()) {
      lorakit::detail::fail<ShapeError>(where, "the file holds the statistics of a [", loaded.out_features(), " x ",
                                        loaded.in_features(), "] layer, expected [", into.out_features(), " x ",
                                        into.in_features(), "]");
    }
  }
};

inline const char* state_kind_name(std::uint32_t kind) {
  switch (kind) {
    case static_cast<std::uint32_t>(StateKind::streaming_svd): return "StreamingSvd";
    case static_cast<std::uint32_t>(StateKind::eva): return "Eva";
    case static_cast<std::uint32_t>(StateKind::fisher_statistics): return "FisherStatistics";
    default: return "an unknown kind";
  }
}

}  // namespace detail

/// The state of `state` (a `StreamingSvd<T>`, `Eva<T>` or `FisherStatistics<T>`) as bytes: the 40-byte header
/// described at `detail::state_header_bytes` (magic, version, byte order, kind, scalar size, payload size, CRC-32),
/// then the payload, every floating-point value bit for bit. `state_from_bytes` of the result rebuilds an object
/// whose state is identical.
template <class State>
std::vector<std::uint8_t> state_to_bytes(const State& state) {
  using Codec = detail::StateCodec<State>;
  std::vector<std::uint8_t> bytes(detail::state_header_bytes, 0);
  detail::StateWriter payload(bytes);
  Codec::write(payload, state);
  std::uint8_t* header = bytes.data();
  const std::uint32_t version = state_format_version, order = detail::state_byte_order;
  const auto kind = static_cast<std::uint32_t>(Codec::kind);
  const auto scalar = static_cast<std::uint32_t>(sizeof(typename Codec::Scalar));
  const std::uint64_t size = bytes.size() - detail::state_header_bytes;
  std::memcpy(header, detail::state_magic, 8);
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 12, &order, 4);
  std::memcpy(header + 16, &kind, 4);
  std::memcpy(header + 20, &scalar, 4);
  std::memcpy(header + 24, &size, 8);
  const std::uint32_t crc = crc32(header + detail::state_header_bytes, static_cast<std::size_t>(size), crc32(header, 32));
  std::memcpy(header + 32, &crc, 4);
  return bytes;
}

/// Rebuilds a state from `state_to_bytes`'s bytes. Errors (IoError, naming what was seen): not a lorakit state,
/// another format version, the other byte order, a size unlike the header's, a CRC mismatch (corruption), another
/// kind or scalar type than `State`, or values the type's own checks refuse.
template <class State>
State state_from_bytes(const std::uint8_t* data, std::size_t size) {
  using Codec = detail::StateCodec<State>;
  constexpr const char* where = "state_from_bytes";
  if (size < detail::state_header_bytes || std::memcmp(data, detail::state_magic, 8) != 0) {
    lorakit::detail::fail<IoError>(where, "the ", size, " bytes do not start with a lorakit state header (\"LKSTATE\"), expected a ",
                                   Codec::name(), " state");
  }
  std::uint32_t version, order, kind, scalar, crc;
  std::uint64_t payload;
  std::memcpy(&version, data + 8, 4);
  std::memcpy(&order, data + 12, 4);
  std::memcpy(&kind, data + 16, 4);
  std::memcpy(&scalar, data + 20, 4);
  std::memcpy(&payload, data + 24, 8);
  std::memcpy(&crc, data + 32, 4);
  if (order != detail::state_byte_order) {
    lorakit::detail::fail<IoError>(where, "the state was written on a machine of another byte order (mark ", order,
                                   "), expected ", detail::state_byte_order);
  }
  if (version != state_format_version) {
    lorakit::detail::fail<IoError>(where, "the state has format version ", version, ", expected version ",
                                   state_format_version);
  }
  if (payload != size - detail::state_header_bytes) {
    lorakit::detail::fail<IoError>(where, "the header announces ", payload, " payload bytes, the state has ",
                                   size - detail::state_header_bytes, " (truncated or padded)");
  }
  const std::uint32_t actual = crc32(data + detail::state_header_bytes, size - detail::state_header_bytes, crc32(data, 32));
  if (actual != crc) {
    lorakit::detail::fail<IoError>(where, "CRC-32 mismatch: the header says ", crc, ", the bytes give ", actual,
                                   " (the state is corrupted)");
  }
  if (kind != static_cast<std::uint32_t>(Codec::kind) || scalar != sizeof(typename Codec::Scalar)) {
    lorakit::detail::fail<IoError>(where, "the state holds ", detail::state_kind_name(kind), " with ", scalar,
                                   "-byte scalars, expected ", Codec::name());
  }
  detail::StateReader in(where, data + detail::state_header_bytes, size - detail::state_header_bytes);
  try {
    State state = Codec::read(in);
    if (in.remaining() != 0) {
      lorakit::detail::fail<IoError>(where, in.remaining(), " bytes follow the ", Codec::name(), " state, expected none");
    }
    return state;
  } catch (const IoError&) {
    throw;
  } catch (const Error& error) {
    lorakit::detail::fail<IoError>(where, "the ", Codec::name(), " state is malformed: ", error.what());
  }
}

template <class State>
State state_from_bytes(const std::vector<std::uint8_t>& bytes) {
  return state_from_bytes<State>(bytes.data(), bytes.size());
}

/// Writes `state_to_bytes(state)` to `file`, replacing it as a whole (io/atomic_file.hpp). Errors: IoError.
template <class State>
void save_state(const std::filesystem::path& file, const State& state) {
  const std::vector<std::uint8_t> bytes = state_to_bytes(state);
  write_file_atomically("save_state", file, bytes.data(), bytes.size());
}

/// Reads a state saved by `save_state`. Errors (IoError): the file cannot be read, and what `state_from_bytes`
/// refuses.
template <class State>
State load_state(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) lorakit::detail::fail<IoError>("load_state", "cannot open '", file.string(), "'");
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) lorakit::detail::fail<IoError>("load_state", "reading '", file.string(), "' failed");
  try {
    return state_from_bytes<State>(bytes);
  } catch (const IoError& error) {
    lorakit::detail::fail<IoError>("load_state", "'", file.string(), "': ", error.what());
  }
}

/// Replaces `into` by the state saved in `file`, which must describe the same shape: the same features and
/// components (StreamingSvd), layers and rank (Eva), layer shape (FisherStatistics). Errors: what `load_state`
/// refuses (IoError); another shape (ShapeError, or ValueError for Eva's rank and rho). `into` is unchanged on error.
template <class State>
void load_state(const std::filesystem::path& file, State& into) {
  State loaded = load_state<State>(file);
  detail::StateCodec<State>::check_like("load_state", loaded, into);
  into = std::move(loaded);
}

}  // namespace lorakit::io
