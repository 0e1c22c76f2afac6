// Tests of the 16-bit conversions, the safetensors writer and the validating reader (one malformed file per rule).
#include <catch2/catch.hpp>

#include "io_test_support.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/io/safetensors.hpp>

#include <cmath>
#include <cstring>
#include <limits>

namespace lorakit_test_io_safetensors {

using namespace lorakit;
using namespace lorakit::io;
using lorakit::testing::TempDir;
using Catch::Contains;

namespace {

/// Every finite encoding of a 16-bit format, decoded through double arithmetic from its fields (an independent
/// truth for the decoders).
double decode_fields(std::uint16_t bits, int exponent_bits, int mantissa_bits) {
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int exponent = (bits >> mantissa_bits) & ((1 << exponent_bits) - 1);
  const int mantissa = bits & ((1 << mantissa_bits) - 1);
  const double sign = (bits & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0) return sign * std::ldexp(mantissa, 1 - bias - mantissa_bits);
  return sign * std::ldexp(mantissa + (1 << mantissa_bits), exponent - bias - mantissa_bits);
}

template <class T>
Matrix<T> sample_matrix(Index rows, Index cols, std::uint64_t seed) {
  Matrix<T> m(rows, cols);
  Rng(seed).fill_normal(m, T(0), T(3));
  return m;
}

}  // namespace

TEST_CASE("F16 and BF16 decoders agree with the format definitions on every encoding", "[io][dtype]") {
  for (std::uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const auto b = static_cast<std::uint16_t>(bits);
    const bool half_special = ((b >> 10) & 0x1F) == 0x1F, bf16_special = ((b >> 7) & 0xFF) == 0xFF;
    if (!half_special) REQUIRE(static_cast<double>(half_to_float(b)) == decode_fields(b, 5, 10));
    if (!bf16_special) REQUIRE(static_cast<double>(bfloat16_to_float(b)) == decode_fields(b, 8, 7));
    // Encoding the decoded value gives the same bits back (NaNs: a NaN of the same sign).
    if (half_special && (b & 0x3FF) != 0) {
      REQUIRE(std::isnan(half_to_float(b)));
      REQUIRE((float_to_half(half_to_float(b)) & 0xFC00u) == (b & 0xFC00u));
    } else {
      REQUIRE(float_to_half(half_to_float(b)) == b);
    }
    if (bf16_special && (b & 0x7F) != 0) {
      REQUIRE(std::isnan(bfloat16_to_float(b)));
    } else {
      REQUIRE(float_to_bfloat16(bfloat16_to_float(b)) == b);
    }
  }
}

TEST_CASE("F16 and BF16 encoders round to nearest, ties to even", "[io][dtype]") {
  CHECK(float_to_half(1.0f) == 0x3C00);
  CHECK(float_to_half(-2.0f) == 0xC000);
  CHECK(float_to_half(65504.0f) == 0x7BFF);
  CHECK(float_to_half(65519.0f) == 0x7BFF);                     // below the midpoint to 65536
  CHECK(float_to_half(65520.0f) == 0x7C00);                     // the midpoint ties to the even neighbour: Inf
  CHECK(float_to_half(std::ldexp(1.0f, -24)) == 0x0001);        // smallest subnormal
  CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);        // half of it ties to even: zero
  CHECK(float_to_half(std::ldexp(1.5f, -25)) == 0x0001);
  CHECK(float_to_half(std::ldexp(1023.5f, -24)) == 0x0400);     // largest subnormal rounds up into the normals
  CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);  // tie, even below
  CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // tie, even above
  CHECK(float_to_half(-0.0f) == 0x8000);
  CHECK(float_to_half(std::numeric_limits<float>::infinity()) == 0x7C00);
  CHECK(float_to_half(-std::numeric_limits<float>::infinity()) == 0xFC00);
  CHECK(float_to_bfloat16(1.0f) == 0x3F80);
  CHECK(float_to_bfloat16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);
  CHECK(float_to_bfloat16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);
  CHECK(float_to_bfloat16(std::numeric_limits<float>::max()) == 0x7F80);  // above bf16's largest finite: Inf
  CHECK(float_to_bfloat16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(float_to_bfloat16(std::ldexp(1.0f, -133)) == 0x0001);  // bf16's smallest subnormal
  const std::uint16_t nan_half = float_to_half(std::numeric_limits<float>::quiet_NaN());
  CHECK(((nan_half & 0x7C00) == 0x7C00 && (nan_half & 0x3FF) != 0));
  const std::uint16_t nan_bf16 = float_to_bfloat16(-std::numeric_limits<float>::quiet_NaN());
  CHECK(((nan_bf16 & 0xFF80) == 0xFF80 && (nan_bf16 & 0x7F) != 0));

  SECTION("a double is rounded once, not through float") {
    // 1 + 2^-11 + 2^-40 lies just above the midpoint of 1 and 1 + 2^-10; through float it would become the
    // midpoint itself and tie down to 1.
    const double x = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
    CHECK(double_to_half(x) == 0x3C01);
    CHECK(float_to_half(static_cast<float>(x)) == 0x3C00);
    const double y = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);
    CHECK(double_to_bfloat16(y) == 0x3F81);
  }

  SECTION("random values map to their nearest encoding") {
    Rng rng(5);
    for (int i = 0; i < 20000; ++i) {
      const float x = std::ldexp(rng.uniform<float>() * 2 - 1, static_cast<int>(rng.next_u32() % 40) - 26);
      const std::uint16_t h = float_to_half(x);
      const double error = std::fabs(static_cast<double>(half_to_float(h)) - x);
      for (const int step : {-1, 1}) {
        const auto neighbour = static_cast<std::uint16_t>(h + step);
        if (((neighbour >> 10) & 0x1F) == 0x1F || ((neighbour ^ h) & 0x8000) != 0) continue;
        REQUIRE(error <= std::fabs(static_cast<double>(half_to_float(neighbour)) - x));
      }
    }
  }
  CHECK(double_to_float(1e300) == std::numeric_limits<float>::infinity());
  CHECK(double_to_float(-1e300) == -std::numeric_limits<float>::infinity());
  CHECK(double_to_float(static_cast<double>(std::numeric_limits<float>::max()) + 0x1p102) ==
        std::numeric_limits<float>::max());
}

TEMPLATE_TEST_CASE("safetensors round trip", "[io][safetensors]", float, double) {
  using T = TestType;
  TempDir dir;
  const auto file = dir / "t.safetensors";
  Matrix<T> a = sample_matrix<T>(7, 5, 1);
  a(0, 0) = std::numeric_limits<T>::quiet_NaN();
  a(0, 1) = std::numeric_limits<T>::infinity();
  a(0, 2) = -T(0);
  a(0, 3) = std::numeric_limits<T>::denorm_min();
  Vector<T> v = sample_matrix<T>(9, 1, 2).col(0);
  Matrix<T> cube = sample_matrix<T>(2, 12, 3);
  Matrix<T> small = sample_matrix<T>(4, 6, 4) * T(0.01);

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.set_metadata("note", "a \"quoted\" value");
  writer.add("a", a, Dtype::F32);
  writer.add("v", v, Dtype::F32);
  writer.add("cube", cube, Dtype::F32, {2, 3, 4});
  writer.add("empty", Matrix<T>(0, 3), Dtype::F32);
  writer.add("scalar", Matrix<T>::Constant(1, 1, T(2.5)), Dtype::F32, {});
  writer.add("h", small, Dtype::F16);
  writer.add("b", small, Dtype::BF16);
  writer.add("d", small, Dtype::F64);
  writer.write(file);
  CHECK(dir.files() == std::vector<std::string>{"t.safetensors"});  // no temporary file is left

  // The raw layout: the header length is a multiple of 8 and the header a JSON object padded with spaces.
  const std::string raw = lorakit::testing::read_bytes(file);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(raw[static_cast<std::size_t>(i)]);
  CHECK(n % 8 == 0);
  CHECK(raw[8] == '{');
  const auto header = nlohmann::json::parse(raw.substr(8, n));
  CHECK(header["__metadata__"]["format"] == "pt");
  CHECK(header["cube"]["shape"] == nlohmann::json::array({2, 3, 4}));
  CHECK(header["v"]["shape"] == nlohmann::json::array({9}));
  // Largest elements first: the F64 tensor starts the data, so every tensor is aligned to its element size.
  CHECK(header["d"]["data_offsets"][0] == 0);
  for (const auto& [name, entry] : header.items()) {
    if (name != "__metadata__") CHECK(entry["data_offsets"][0].template get<std::uint64_t>() % 2 == 0);
  }

  SafetensorsReader reader(file);
  CHECK(reader.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "a \"quoted\" value"}});
  CHECK(reader.tensors().size() == 8);
  CHECK(reader.info("cube").shape == std::vector<std::int64_t>{2, 3, 4});
  CHECK(reader.info("scalar").shape.empty());

  // F32 is bit-exact for float (NaN, Inf, -0 and subnormals included); double goes through float rounding.
  const Matrix<T> a_back = reader.template matrix<T>("a");
  REQUIRE(a_back.rows() == 7);
  REQUIRE(a_back.cols() == 5);
  for (Index i = 0; i < a.rows(); ++i) {
    for (Index j = 0; j < a.cols(); ++j) {
      const float expected = double_to_float(static_cast<double>(a(i, j)));
      const float got = static_cast<float>(a_back(i, j));
      REQUIRE(std::memcmp(&expected, &got, 4) == 0);
    }
  }
  CHECK(std::signbit(a_back(0, 2)));
  const Matrix<T> v_back = reader.template matrix<T>("v");
  CHECK(v_back.rows() == 1);
  CHECK(v_back.transpose() == v.template cast<float>().template cast<T>());
  CHECK(reader.template vector<T>("v") == v.template cast<float>().template cast<T>());
  CHECK(reader.template matrix<T>("cube") == cube.template cast<float>().template cast<T>());
  CHECK(reader.template matrix<T>("empty").rows() == 0);
  CHECK(reader.template matrix<T>("scalar") == Matrix<T>::Constant(1, 1, T(2.5)));
  CHECK(reader.template matrix<T>("d") == small);

  // F16 and BF16: each value is its correctly rounded encoding, within half a unit in the last place.
  const Matrix<T> h = reader.template matrix<T>("h"), b = reader.template matrix<T>("b");
  for (Index i = 0; i < small.rows(); ++i) {
    for (Index j = 0; j < small.cols(); ++j) {
      const double x = static_cast<double>(small(i, j));
      REQUIRE(static_cast<double>(h(i, j)) == static_cast<double>(half_to_float(double_to_half(x))));
      REQUIRE(static_cast<double>(b(i, j)) == static_cast<double>(bfloat16_to_float(double_to_bfloat16(x))));
      REQUIRE(std::fabs(static_cast<double>(h(i, j)) - x) <= std::max(std::fabs(x) * 0x1p-11, 0x1p-25));
      REQUIRE(std::fabs(static_cast<double>(b(i, j)) - x) <= std::fabs(x) * 0x1p-8);
    }
  }

  SECTION("rewriting replaces the file atomically") {
    SafetensorsWriter other;
    other.add("only", small, Dtype::F32);
    other.write(file);
    SafetensorsReader again(file);
    CHECK(again.tensors().size() == 1);
    CHECK(again.metadata().empty());
    CHECK(dir.files() == std::vector<std::string>{"t.safetensors"});
  }
}

TEST_CASE("safetensors writer rejects bad tensors without changing its state", "[io][safetensors]") {
  TempDir dir;
  SafetensorsWriter writer;
  writer.add("x", Matrix<float>::Ones(2, 2));
  REQUIRE_THROWS_AS(writer.add("x", Matrix<float>::Ones(2, 2)), ValueError);
  REQUIRE_THROWS_WITH(writer.add("x", Matrix<float>::Ones(2, 2)), Contains("already added"));
  REQUIRE_THROWS_WITH(writer.add("__metadata__", Matrix<float>::Ones(2, 2)), Contains("reserved"));
  REQUIRE_THROWS_WITH(writer.add("", Matrix<float>::Ones(2, 2)), Contains("reserved"));
  REQUIRE_THROWS_WITH(writer.add("y", Matrix<float>::Ones(2, 2), Dtype::F32, {3}), Contains("holds 3 elements"));
  Matrix<float> big = Matrix<float>::Ones(2, 3);
  big(1, 2) = 70000.0f;
  REQUIRE_THROWS_WITH(writer.add("big", big, Dtype::F16), Contains("70000") && Contains("row 1, column 2") &&
                                                              Contains("overflows F16"));
  REQUIRE_THROWS_WITH(writer.add("huge", Matrix<double>::Constant(1, 1, 1e300), Dtype::F32), Contains("overflows F32"));
  big(1, 2) = std::numeric_limits<float>::infinity();  // a non-finite value is stored as it is
  writer.add("inf", big, Dtype::F16);
  CHECK(writer.size() == 2);
  REQUIRE_THROWS_AS(writer.write(dir / "missing" / "t.safetensors"), IoError);
  CHECK(dir.files().empty());
  writer.write(dir / "t.safetensors");
  CHECK(std::isinf(SafetensorsReader(dir / "t.safetensors").matrix<float>("inf")(1, 2)));
}

namespace {

/// One header entry, written by hand.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, int begin, int end) {
  return "\"" + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape + ", \"data_offsets\": [" +
         std::to_string(begin) + ", " + std::to_string(end) + "]}";
}

/// A malformed file, the rule it breaks, and the parts its error message must contain.
struct BadFile {
  std::string rule;
  std::string bytes;
  std::vector<std::string> message;
};

}  // namespace

TEST_CASE("safetensors reader rejects each kind of malformed file with a clear message", "[io][safetensors]") {
  using lorakit::testing::length_prefix;
  using lorakit::testing::safetensors_bytes;
  TempDir dir;
  const auto file = dir / "bad.safetensors";
  const auto with = [&](const std::string& bytes) {
    lorakit::testing::write_bytes(file, bytes);
    return file;
  };
  const std::string eight(8, '\1'), twelve(12, '\1');
  const auto open = [](const std::filesystem::path& path) { SafetensorsReader reader(path); };
  const auto header = [](const std::string& entries) { return "{" + entries + "}"; };

  const std::vector<BadFile> corpus = {
      {"shorter than the length field", "abc", {"too short", "truncated"}},
      {"header longer than the file", length_prefix(100) + "{}", {"header length 100 exceeds", "truncated"}},
      {"header over the limit", length_prefix(200'000'000) + "{}", {"exceeds the limit of 100000000"}},
      {"header length 2^64 - 1", length_prefix(~std::uint64_t{0}) + "{}", {"exceeds the limit"}},
      {"bad JSON", safetensors_bytes(R"({"a": {"dtype": "F32", )", ""), {"not valid JSON"}},
      {"not an object", safetensors_bytes("[1, 2]", ""), {"does not start with '{'"}},
      {"empty header", safetensors_bytes("", ""), {"does not start with '{'"}},
      {"offsets out of range", safetensors_bytes(header(entry("a", "F32", "[4]", 0, 16)), eight),
       {"tensor 'a'", "out of range", "8 bytes"}},
      {"overlapping tensors",
       safetensors_bytes(header(entry("a", "F32", "[2]", 0, 8) + ", " + entry("b", "F32", "[2]", 4, 12)), twelve),
       {"tensor 'b'", "overlap tensor 'a'"}},
      {"data not starting at 0", safetensors_bytes(header(entry("a", "F32", "[2]", 4, 12)), twelve),
       {"tensor 'a'", "[0, 4) unused", "contiguous from offset 0"}},
      {"a gap between tensors",
       safetensors_bytes(header(entry("a", "F32", "[1]", 0, 4) + ", " + entry("b", "F32", "[1]", 8, 12)), twelve),
       {"tensor 'b'", "[4, 8) unused"}},
      {"data not covered", safetensors_bytes(header(entry("a", "F32", "[2]", 0, 8)), twelve),
       {"cover 8 bytes", "has 12", "trailing bytes"}},
      {"shape x dtype size differs from the range", safetensors_bytes(header(entry("a", "F32", "[3]", 0, 8)), eight),
       {"tensor 'a'", "shape [3] of F32 needs 12 bytes", "size mismatch"}},
      {"a shape larger than the file",
       safetensors_bytes(header(entry("a", "BF16", "[4611686018427387904]", 0, 8)), eight), {"size mismatch"}},
      {"duplicate tensor",
       safetensors_bytes(header(entry("a", "F32", "[2]", 0, 8) + ", " + entry("a", "F32", "[2]", 0, 8)), eight),
       {"'a' twice", "duplicate key"}},
      {"duplicate metadata key", safetensors_bytes(R"({"__metadata__": {"k": "1", "k": "2"}})", ""),
       {"'k' twice", "duplicate key"}},
      {"unknown dtype", safetensors_bytes(header(entry("a", "I7", "[2]", 0, 8)), eight),
       {"tensor 'a'", "unknown dtype 'I7'"}},
      {"negative size", safetensors_bytes(header(entry("a", "F32", "[-2]", 0, 8)), eight), {"non-negative integer"}},
      {"fractional size", safetensors_bytes(header(entry("a", "F32", "[2.5]", 0, 8)), eight), {"non-negative integer"}},
      {"shape overflowing int64",
       safetensors_bytes(header(entry("a", "F32", "[0, 4611686018427387904, 4]", 0, 0)), ""), {"too large"}},
      {"begin after end", safetensors_bytes(header(entry("a", "F32", "[2]", 8, 0)), eight), {"begin > end"}},
      {"one offset", safetensors_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", eight),
       {"expected [begin, end]"}},
      {"no dtype", safetensors_bytes(R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", eight), {"no 'dtype'"}},
      {"entry not an object", safetensors_bytes(R"({"a": [1, 2]})", ""), {"expected an object"}},
      {"metadata not strings", safetensors_bytes(R"({"__metadata__": {"k": 1}})", ""),
       {"__metadata__ 'k'", "expected a string"}},
  };
  for (const BadFile& bad : corpus) {
    INFO("rule: " << bad.rule);
    with(bad.bytes);
    try {
      open(file);
      FAIL("no error was thrown");
    } catch (const IoError& error) {
      CHECK_THAT(error.what(), Contains("SafetensorsReader") && Contains("bad.safetensors"));
      for (const auto& part : bad.message) CHECK_THAT(error.what(), Contains(part));
    }
  }
  REQUIRE_THROWS_WITH(open(dir / "absent.safetensors"), Contains("absent.safetensors") && Contains("cannot open"));

  SECTION("a truncated file") {
    SafetensorsWriter writer;
    writer.add("w", Matrix<float>::Ones(4, 4));
    writer.write(file);
    const std::string whole = lorakit::testing::read_bytes(file);
    REQUIRE_THROWS_WITH(open(with(whole.substr(0, whole.size() - 4))),
                        Contains("tensor 'w'") && Contains("out of range") && Contains("truncated"));
    REQUIRE_THROWS_WITH(open(with(whole.substr(0, 20))), Contains("truncated"));
  }

  SECTION("a file truncated after it was opened, and unknown names") {
    SafetensorsWriter writer;
    writer.add("w", Matrix<float>::Ones(4, 4));
    writer.write(file);
    SafetensorsReader reader(file);
    REQUIRE_THROWS_WITH(reader.matrix<float>("nope"), Contains("no tensor named 'nope'"));
    std::filesystem::resize_file(file, std::filesystem::file_size(file) - 4);
    REQUIRE_THROWS_WITH(reader.matrix<float>("w"), Contains("tensor 'w'") && Contains("truncated"));
  }

  SECTION("zero-size tensors and an empty file are valid") {
    const auto ok = with(safetensors_bytes(R"({"a": {"dtype": "F16", "shape": [0, 3], "data_offsets": [0, 0]},
                                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}  )",
                                           eight));
    SafetensorsReader reader(ok);
    CHECK(reader.matrix<float>("a").size() == 0);
    CHECK(reader.matrix<double>("b").cols() == 2);
    CHECK(SafetensorsReader(with(safetensors_bytes("{}", ""))).tensors().empty());
  }
}

}  // namespace lorakit_test_io_safetensors
