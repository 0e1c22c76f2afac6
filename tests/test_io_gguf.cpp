// Tests of the GGUF container (io/gguf.hpp: round trips, one malformed file per rule, files assembled byte by
// byte by the test) and of llama.cpp LoRA adapters (io/gguf_lora.hpp: names, q/k permutation, baked scales,
// dtypes), and of VeRA's export as LoRA.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/io/gguf.hpp>
#include <lorakit/io/gguf_lora.hpp>
#include <lorakit/rank/vera_to_lora.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

namespace lorakit_test_io_gguf {

using namespace lorakit;
using namespace lorakit::io;
using lorakit::testing::read_bytes;
using lorakit::testing::TempDir;
using lorakit::testing::write_bytes;
using Catch::Contains;

/// The expression throws an exception of `Type` whose message matches `matcher` (it is evaluated twice).
#define CHECK_THROWS_TYPE_WITH(expr, Type, matcher) \
  do {                                              \
    CHECK_THROWS_AS(expr, Type);                    \
    CHECK_THROWS_WITH(expr, matcher);               \
  } while (0)

namespace {

/// GGUF bytes assembled by hand, following the specification (not lorakit's writer).
struct RawGguf {
  std::string bytes;
  template <class U>
  RawGguf& scalar(U v) {
    bytes.append(reinterpret_cast<const char*>(&v), sizeof(U));
    return *this;
  }
  RawGguf& str(const std::string& s) {
    scalar<std::uint64_t>(s.size());
    bytes += s;
    return *this;
  }
  RawGguf& header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
    bytes += "GGUF";
    return scalar(version).scalar(n_tensors).scalar(n_kv);
  }
  RawGguf& kv_string(const std::string& key, const std::string& value) { return str(key).scalar<std::uint32_t>(8).str(value); }
  RawGguf& kv_f32(const std::string& key, float value) { return str(key).scalar<std::uint32_t>(6).scalar(value); }
  RawGguf& kv_u32(const std::string& key, std::uint32_t value) { return str(key).scalar<std::uint32_t>(4).scalar(value); }
  RawGguf& tensor(const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset) {
    str(name).scalar<std::uint32_t>(static_cast<std::uint32_t>(ne.size()));
    for (auto d : ne) scalar(d);
    return scalar(type).scalar(offset);
  }
  RawGguf& pad(std::size_t alignment = 32) {
    bytes.resize((bytes.size() + alignment - 1) / alignment * alignment, '\0');
    return *this;
  }
  RawGguf& floats(const std::vector<float>& values) {
    for (float v : values) scalar(v);
    return *this;
  }
};

/// A valid file: two F32 tensors of 4 and 6 values, one key.
RawGguf valid_file() {
  RawGguf f;
  f.header(2, 1).kv_string("general.name", "x");
  f.tensor("a", {4}, 0, 0).tensor("b", {3, 2}, 0, 32).pad();
  f.floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4, 5, 6});
  return f;
}

void expect_io_error(const TempDir& dir, const std::string& bytes, const std::string& fragment) {
  const auto file = dir / "bad.gguf";
  write_bytes(file, bytes);
  CHECK_THROWS_TYPE_WITH(GgufReader(file), IoError, Contains(fragment) && Contains("bad.gguf"));
}

template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, double alpha, bool rslora, std::uint64_t seed) {
  LoraConfig config;
  config.rank = rank;
  config.alpha = alpha;
  config.use_rslora = rslora;
  config.seed = seed;
  Lora<T> lora(in, out, config);
  Rng(seed + 100).fill_normal(lora.B(), T(0), T(0.5));
  return lora;
}

/// A llama-shaped set: hidden 24, n_head 4, n_head_kv 2 (head_dim 6), ffn 32, vocab 40.
template <class T>
AdapterSet<Lora<T>> llama_set(bool varied) {
  AdapterSet<Lora<T>> set;
  const auto rank = [&](Index r) { return varied ? r : Index(4); };
  const auto alpha = [&](double a) { return varied ? a : 8.0; };
  set.add("model.layers.0.self_attn.q_proj", random_lora<T>(24, 24, rank(4), alpha(8), false, 1));
  set.add("model.layers.0.self_attn.k_proj", random_lora<T>(24, 12, rank(2), alpha(3), false, 2));
  set.add("model.layers.0.self_attn.v_proj", random_lora<T>(24, 12, rank(4), alpha(8), varied, 3));
  set.add("model.layers.1.self_attn.o_proj", random_lora<T>(24, 24, rank(6), alpha(16), false, 4));
  set.add("model.layers.1.mlp.gate_proj", random_lora<T>(24, 32, rank(4), alpha(8), false, 5));
  set.add("model.layers.1.mlp.up_proj", random_lora<T>(24, 32, rank(4), alpha(8), false, 6));
  set.add("model.layers.1.mlp.down_proj", random_lora<T>(32, 24, rank(3), alpha(1.5), false, 7));
  set.add("model.embed_tokens", random_lora<T>(24, 40, rank(4), alpha(8), false, 8));
  set.add("lm_head", random_lora<T>(24, 40, rank(5), alpha(8), varied, 9));
  return set;
}

GgufLoraOptions llama_options(Dtype dtype = Dtype::F32) {
  GgufLoraOptions options;
  options.n_head = 4;
  options.n_head_kv = 2;
  options.dtype = dtype;
  return options;
}

double relative_error(const Matrix<double>& a, const Matrix<double>& b) { return (a - b).norm() / std::max(b.norm(), 1e-300); }

}  // namespace

TEMPLATE_TEST_CASE("GGUF container round trip: every value type, every dtype, alignment", "[io][gguf]", float, double) {
  using T = TestType;
  TempDir dir;
  GgufWriter writer;
  writer.set("general.alignment", GgufValue::make_uint32(64));
  writer.set("u8", [] { GgufValue v; v.type = GgufType::uint8; v.uint = 200; return v; }());
  writer.set("i16", [] { GgufValue v; v.type = GgufType::int16; v.sint = -300; return v; }());
  writer.set("u32", GgufValue::make_uint32(4000000000u));
  writer.set("i64", GgufValue::make_int64(-5000000000LL));
  writer.set("u64", GgufValue::make_uint64(1ULL << 60));
  writer.set("f32", GgufValue::make_float32(0.1f));
  writer.set("f64", GgufValue::make_float64(0.1));
  writer.set("flag", GgufValue::make_bool(true));
  writer.set("text", GgufValue::make_string("hello"));
  writer.set("tokens", GgufValue::make_strings({"a", "", "ccc"}));
  writer.set("ints", GgufValue::make_array(GgufType::int32, {GgufValue::make_int32(-1), GgufValue::make_int32(7)}));
  const Matrix<T> m = [] { Matrix<T> x(3, 5); Rng(1).fill_normal(x, T(0), T(2)); return x; }();
  const Vector<T> v = [] { Vector<T> x(7); Rng(2).fill_normal(x, T(0), T(2)); return x; }();
  writer.add("m32", m, Dtype::F32);
  writer.add("m16", m, Dtype::F16);
  writer.add("mbf", m, Dtype::BF16);
  writer.add("m64", m, Dtype::F64);
  writer.add("v", v, Dtype::F32);
  writer.add("t3", m, Dtype::F32, {5, 1, 3});
  writer.write(dir / "x.gguf");
  CHECK(dir.files().size() == 1);

  const GgufReader reader(dir / "x.gguf");
  CHECK(reader.version() == 3);
  CHECK(reader.alignment() == 64);
  CHECK(reader.data_offset() % 64 == 0);
  CHECK(reader.keys().front() == "general.alignment");
  CHECK(reader.find("u8")->uint == 200);
  CHECK(reader.find("i16")->sint == -300);
  CHECK(reader.find("u32")->uint == 4000000000u);
  CHECK(reader.find("i64")->sint == -5000000000LL);
  CHECK(reader.find("u64")->uint == (1ULL << 60));
  CHECK(reader.find("f32")->real == static_cast<double>(0.1f));
  CHECK(reader.find("f64")->real == 0.1);
  CHECK(reader.find("flag")->boolean);
  CHECK(reader.string("text") == "hello");
  CHECK(reader.find("tokens")->element_type == GgufType::string);
  REQUIRE(reader.find("tokens")->array.size() == 3);
  CHECK(reader.find("tokens")->array[2].string == "ccc");
  CHECK(reader.find("ints")->array[0].sint == -1);
  CHECK_THROWS_AS(reader.string("u32"), IoError);
  for (const auto& t : reader.tensors()) CHECK(t.offset % 64 == 0);
  CHECK(reader.info("m32").ne == std::vector<std::int64_t>{5, 3});
  CHECK(reader.info("v").ne == std::vector<std::int64_t>{7});
  CHECK(reader.matrix<T>("m32") == m.template cast<float>().template cast<T>());
  CHECK(reader.matrix<T>("m64") == m.template cast<double>().template cast<T>());
  CHECK(reader.matrix<T>("t3") == m.template cast<float>().template cast<T>());
  CHECK(reader.matrix<T>("v") == v.transpose().template cast<float>().template cast<T>());
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j) {
      CHECK(reader.matrix<T>("m16")(i, j) == static_cast<T>(half_to_float(double_to_half(static_cast<double>(m(i, j))))));
      CHECK(reader.matrix<T>("mbf")(i, j) == static_cast<T>(bfloat16_to_float(double_to_bfloat16(static_cast<double>(m(i, j))))));
    }
  }
  CHECK_THROWS_TYPE_WITH(reader.matrix<T>("nope"), IoError, Contains("no tensor named 'nope'"));
}

TEST_CASE("GGUF reader reads a file assembled by hand and the writer's bytes follow the specification", "[io][gguf]") {
  TempDir dir;
  write_bytes(dir / "hand.gguf", valid_file().bytes);
  const GgufReader reader(dir / "hand.gguf");
  CHECK(reader.data_offset() % 32 == 0);
  CHECK(reader.matrix<float>("a") == (Matrix<float>(1, 4) << 1, 2, 3, 4).finished());
  CHECK(reader.matrix<float>("b") == (Matrix<float>(2, 3) << 1, 2, 3, 4, 5, 6).finished());

  GgufWriter writer;
  writer.set("general.name", GgufValue::make_string("x"));
  writer.add("a", (Vector<float>(4) << 1, 2, 3, 4).finished());
  writer.add("b", (Matrix<float>(2, 3) << 1, 2, 3, 4, 5, 6).finished());
  writer.write(dir / "w.gguf");
  // The writer pads the last tensor too: the hand-made file is its prefix.
  const std::string written = read_bytes(dir / "w.gguf");
  const std::string expected = valid_file().pad().bytes;
  CHECK(written == expected);
}

TEST_CASE("GGUF reader rejects each kind of malformed file with a clear message", "[io][gguf]") {
  TempDir dir;
  const std::string good = valid_file().bytes;
  SECTION("every truncation") {
    const std::size_t end_of_data = good.size();
    for (std::size_t n = 0; n < end_of_data; ++n) {
      write_bytes(dir / "cut.gguf", good.substr(0, n));
      CHECK_THROWS_AS(GgufReader(dir / "cut.gguf"), IoError);
    }
  }
  SECTION("magic and version") {
    expect_io_error(dir, "GGUX" + good.substr(4), "magic");
    RawGguf v2;
    v2.header(0, 0, 2);
    expect_io_error(dir, v2.bytes, "version 2");
  }
  SECTION("absurd counts and lengths") {
    RawGguf f;
    f.header(0, 1ULL << 60);
    expect_io_error(dir, f.bytes, "key/value count");
    RawGguf t;
    t.header(1ULL << 62, 0);
    expect_io_error(dir, t.bytes, "tensor count");
    RawGguf s;
    s.header(0, 1).scalar<std::uint64_t>(1ULL << 62).bytes += "abcdefghijklmn";
    expect_io_error(dir, s.bytes, "has the length");
    RawGguf a;
    a.header(0, 1).str("arr").scalar<std::uint32_t>(9).scalar<std::uint32_t>(4).scalar<std::uint64_t>(1ULL << 61).scalar<std::uint32_t>(1);
    expect_io_error(dir, a.bytes, "array length");
  }
  SECTION("unknown types, nested arrays, bad bools") {
    RawGguf u;
    u.header(0, 1).str("k").scalar<std::uint32_t>(13).scalar<std::uint32_t>(0);
    expect_io_error(dir, u.bytes, "unknown value type 13");
    RawGguf n;
    n.header(0, 1).str("k").scalar<std::uint32_t>(9).scalar<std::uint32_t>(9).scalar<std::uint64_t>(1).scalar<std::uint32_t>(0);
    expect_io_error(dir, n.bytes, "array of arrays");
    RawGguf b;
    b.header(0, 1).str("k").scalar<std::uint32_t>(7).scalar<std::uint8_t>(2);
    expect_io_error(dir, b.bytes, "BOOL");
  }
  SECTION("duplicates") {
    RawGguf k;
    k.header(0, 2).kv_string("k", "a").kv_string("k", "b");
    expect_io_error(dir, k.bytes, "duplicate key");
    RawGguf t;
    t.header(2, 0).tensor("a", {4}, 0, 0).tensor("a", {4}, 0, 32).pad().floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
    expect_io_error(dir, t.bytes, "duplicate tensor name");
  }
  SECTION("alignment") {
    RawGguf zero;
    zero.header(0, 1).kv_u32("general.alignment", 0);
    expect_io_error(dir, zero.bytes, "power of two");
    RawGguf three;
    three.header(0, 1).kv_u32("general.alignment", 3);
    expect_io_error(dir, three.bytes, "power of two");
    RawGguf typed;
    typed.header(0, 1).kv_string("general.alignment", "32");
    expect_io_error(dir, typed.bytes, "expected UINT32");
    RawGguf unaligned;
    unaligned.header(1, 0).tensor("a", {2}, 0, 8).pad().floats({0, 0, 0, 0, 0, 0, 0, 0});
    expect_io_error(dir, unaligned.bytes, "not a multiple of the alignment 32");
  }
  SECTION("tensor infos") {
    RawGguf name;
    name.header(1, 0).tensor(std::string(64, 'n'), {1}, 0, 0).pad().floats({0});
    expect_io_error(dir, name.bytes, "at most 63");
    RawGguf dims0;
    dims0.header(1, 0).tensor("a", {}, 0, 0).pad().floats({0});
    expect_io_error(dir, dims0.bytes, "0 dimensions");
    RawGguf dims5;
    dims5.header(1, 0).tensor("a", {1, 1, 1, 1, 1}, 0, 0).pad().floats({0});
    expect_io_error(dir, dims5.bytes, "5 dimensions");
    RawGguf negative;
    negative.header(1, 0).tensor("a", {std::uint64_t(-2)}, 0, 0).pad().floats({0});
    expect_io_error(dir, negative.bytes, "negative");
    RawGguf overflow;
    overflow.header(1, 0).tensor("a", {1ULL << 40, 1ULL << 40}, 0, 0).pad().floats({0});
    expect_io_error(dir, overflow.bytes, "overflows 64 bits");
    // No elements, but rows of a matrix view (ne[1] * ne[2]) that overflow: a fuzzer's input (UBSan).
    RawGguf empty_overflow;
    empty_overflow.header(1, 0).tensor("a", {0, 1ULL << 40, 1ULL << 40}, 0, 0).pad();
    expect_io_error(dir, empty_overflow.bytes, "overflows 64 bits");
    RawGguf bytes_overflow;
    bytes_overflow.header(1, 0).tensor("a", {1ULL << 62}, 0, 0).pad().floats({0});
    expect_io_error(dir, bytes_overflow.bytes, "byte size overflows");
    RawGguf quantized;
    quantized.header(1, 0).tensor("a", {32}, 2, 0).pad().floats({0});
    expect_io_error(dir, quantized.bytes, "ggml type 2");
  }
  SECTION("offsets out of range or overlapping") {
    RawGguf out;
    out.header(1, 0).tensor("a", {4}, 0, 32).pad().floats({1, 2, 3, 4});
    expect_io_error(dir, out.bytes, "outside the data section");
    RawGguf overlap;
    overlap.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad().floats(std::vector<float>(16, 1.0f));
    expect_io_error(dir, overlap.bytes, "overlaps tensor 'a'");
  }
  SECTION("long names are cut in messages") {
    RawGguf k;
    k.header(0, 2).kv_string(std::string(5000, 'k'), "a").kv_string(std::string(5000, 'k'), "b");
    write_bytes(dir / "bad.gguf", k.bytes);
    try {
      GgufReader reader(dir / "bad.gguf");
      FAIL("no exception");
    } catch (const IoError& e) {
      CHECK(std::string(e.what()).size() < 400);
    }
  }
}

TEST_CASE("GGUF writer rejects bad input", "[io][gguf]") {
  GgufWriter writer;
  const Matrix<float> m = Matrix<float>::Ones(2, 2);
  CHECK_THROWS_AS(writer.add(std::string(64, 'x'), m), ValueError);
  CHECK_THROWS_AS(writer.add("", m), ValueError);
  writer.add("a", m);
  CHECK_THROWS_AS(writer.add("a", m), ValueError);
  CHECK_THROWS_AS(writer.add("b", m, Dtype::F32, {3}), ShapeError);
  CHECK_THROWS_AS(writer.add("b", m, Dtype::F32, {1, 1, 1, 1, 4}), ValueError);
  CHECK_THROWS_AS(writer.add("big", (Matrix<float>(1, 1) << 1e6f).finished(), Dtype::F16), ValueError);
  CHECK_THROWS_AS(writer.set("general.alignment", GgufValue::make_uint32(24)), ValueError);
  CHECK_THROWS_AS(writer.set("mixed", GgufValue::make_array(GgufType::int32, {GgufValue::make_uint32(1)})), ValueError);
  CHECK(writer.size() == 1);
}

TEST_CASE("llama.cpp names: the table, pass-through, user rules, unknown names", "[io][gguf][lora]") {
  const auto rules = llama_gguf_names();
  const auto target = [&](const std::string& name) { return io::detail::gguf_target("t", name, rules).tensor; };
  CHECK(target("model.layers.3.self_attn.q_proj") == "blk.3.attn_q.weight");
  CHECK(target("base_model.model.model.layers.12.self_attn.k_proj") == "blk.12.attn_k.weight");
  CHECK(target("model.layers.0.self_attn.v_proj") == "blk.0.attn_v.weight");
  CHECK(target("model.layers.0.self_attn.o_proj") == "blk.0.attn_output.weight");
  CHECK(target("model.layers.7.mlp.gate_proj") == "blk.7.ffn_gate.weight");
  CHECK(target("model.layers.7.mlp.up_proj") == "blk.7.ffn_up.weight");
  CHECK(target("model.layers.7.mlp.down_proj") == "blk.7.ffn_down.weight");
  CHECK(target("model.embed_tokens") == "token_embd.weight");
  CHECK(target("lm_head") == "output.weight");
  CHECK(target("blk.3.attn_q") == "blk.3.attn_q.weight");
  CHECK(target("blk.3.attn_q.weight") == "blk.3.attn_q.weight");
  CHECK(target("blk.3.attn_qkv.weight") == "blk.3.attn_qkv.weight");
  CHECK(io::detail::gguf_target("t", "blk.3.attn_q", rules).rule->rows == GgufRowOrder::query);
  CHECK_THROWS_TYPE_WITH(target("model.layers.x.self_attn.q_proj"), ValueError,
                       Contains("model.layers.{L}.self_attn.q_proj -> blk.{L}.attn_q.weight"));
  CHECK_THROWS_TYPE_WITH(target("transformer.h.0.attn.c_attn"), ValueError, Contains("no llama.cpp name"));
  auto extended = rules;
  extended.push_back({"transformer.h.{L}.attn.c_attn", "blk.{L}.attn_qkv"});
  CHECK(io::detail::gguf_target("t", "transformer.h.2.attn.c_attn", extended).tensor == "blk.2.attn_qkv.weight");
  const auto back = io::detail::hf_module("blk.2.attn_qkv.weight", extended);
  REQUIRE(back);
  CHECK(back->first == "transformer.h.2.attn.c_attn");
}

TEST_CASE("llama.cpp's q/k permutation: rows interleaved per head as LlamaModel.permute does", "[io][gguf][lora]") {
  // LlamaModel.permute(w, 4, 2) on 12 rows, by hand from numpy's semantics: reshape(2, 2, 3) then swapaxes(1, 2)
  // reads each head's rows [0 1 2 | 3 4 5] as pairs (0 3) (1 4) (2 5).
  Matrix<double> rows(12, 1);
  for (Index i = 0; i < 12; ++i) rows(i, 0) = static_cast<double>(i);
  const std::vector<double> expected = {0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11};
  const Index heads = io::detail::permuted_heads(GgufRowOrder::key, 4, 2);
  CHECK(heads == 2);
  const Matrix<double> permuted = io::detail::permute_heads(rows, heads);
  for (Index i = 0; i < 12; ++i) CHECK(permuted(i, 0) == expected[static_cast<std::size_t>(i)]);
  CHECK(io::detail::unpermute_heads(permuted, heads) == rows);
  CHECK(io::detail::permuted_heads(GgufRowOrder::query, 4, 2) == 4);
  CHECK(io::detail::permuted_heads(GgufRowOrder::as_is, 4, 2) == 0);
  // The public name of the same rule, for base-model writers, and its errors.
  const Matrix<double> public_permuted = io::permute_llama_rows(rows, heads);
  for (Index i = 0; i < 12; ++i) CHECK(public_permuted(i, 0) == expected[static_cast<std::size_t>(i)]);
  CHECK_THROWS_AS(io::permute_llama_rows(rows, 0), ValueError);
  CHECK_THROWS_AS(io::permute_llama_rows(rows, 4), ValueError);  // heads of 3 rows: not even
  CHECK_THROWS_AS(io::permute_llama_rows(rows, 5), ValueError);
}

TEMPLATE_TEST_CASE("GGUF LoRA round trip restores names, rows and every layer's update", "[io][gguf][lora]", float, double) {
  using T = TestType;
  TempDir dir;
  const bool varied = GENERATE(false, true);
  const Dtype dtype = GENERATE(Dtype::F32, Dtype::F16, Dtype::BF16);
  const auto set = llama_set<T>(varied);
  save_gguf_lora(dir / "a.gguf", set, llama_options(dtype));
  CHECK(dir.files().size() == 1);
  const auto loaded = load_gguf_lora<T>(dir / "a.gguf");
  CHECK(loaded.architecture == "llama");
  CHECK(loaded.n_head == 4);
  CHECK(loaded.n_head_kv == 2);
  REQUIRE(loaded.adapters.names() == set.names());
  const double tolerance = dtype == Dtype::F32 ? (std::is_same_v<T, float> ? 2e-6 : 1e-6) : dtype == Dtype::F16 ? 2e-3 : 1.5e-2;
  for (const auto& [name, lora] : set) {
    const auto& back = loaded.adapters.at(name);
    CHECK(back.rank() == lora.rank());
    CHECK(relative_error(back.delta_weight().template cast<double>(), lora.delta_weight().template cast<double>()) < tolerance);
    if (!varied && dtype == Dtype::F32) {  // uniform rank and alpha: nothing is baked, the factors come back as F32 holds them
      CHECK(back.A() == lora.A().template cast<float>().template cast<T>());
      CHECK(back.B() == lora.B().template cast<float>().template cast<T>());
      CHECK(back.scaling() == lora.scaling());
    }
  }
}

TEST_CASE("GGUF LoRA file: keys as llama.cpp reads them, ggml shapes, permuted B, one alpha that scales every layer exactly", "[io][gguf][lora]") {
  TempDir dir;
  const auto set = llama_set<double>(true);
  save_gguf_lora(dir / "a.gguf", set, llama_options());
  const GgufReader reader(dir / "a.gguf");
  CHECK(reader.string("general.type") == "adapter");
  CHECK(reader.string("general.architecture") == "llama");
  CHECK(reader.string("adapter.type") == "lora");
  REQUIRE(reader.find("adapter.lora.alpha")->type == GgufType::float32);
  const double alpha = reader.find("adapter.lora.alpha")->real;
  CHECK(alpha == 8.0);  // the most common s r: four of the nine layers (q, gate, up, embed_tokens)
  const auto& q = set.at("model.layers.0.self_attn.q_proj");
  CHECK(reader.info("blk.0.attn_q.weight.lora_a").ne == std::vector<std::int64_t>{24, 4});
  CHECK(reader.info("blk.0.attn_q.weight.lora_b").ne == std::vector<std::int64_t>{4, 24});
  CHECK(reader.info("token_embd.weight.lora_a").ne == std::vector<std::int64_t>{4, 40});
  CHECK(reader.info("token_embd.weight.lora_b").ne == std::vector<std::int64_t>{4, 24});
  // q (4 heads of 6 rows), k (2 heads of 6 rows): stored row i of B is row h*6 + (i%6 odd ? 3 : 0) + (i%6)/2.
  const auto check_rows = [&](const std::string& module, const std::string& tensor) {
    const auto& lora = set.at(module);
    const Matrix<double> stored = reader.matrix<double>(tensor);
    const double factor = lora.scaling() * static_cast<double>(lora.rank()) / alpha;
    for (Index i = 0; i < stored.rows(); ++i) {
      const Index source = (i / 6) * 6 + (i % 2) * 3 + (i % 6) / 2;
      CHECK((stored.row(i) - factor * lora.B().row(source)).norm() <= 1e-7 * lora.B().row(source).norm());
    }
  };
  check_rows("model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight.lora_b");
  check_rows("model.layers.0.self_attn.k_proj", "blk.0.attn_k.weight.lora_b");
  CHECK(reader.matrix<double>("blk.0.attn_q.weight.lora_a") == q.A().cast<float>().cast<double>());
  // llama.cpp's update (alpha / r) b a, for every unpermuted layer, equals the layer's own s B A.
  for (const auto& [module, tensor] : std::vector<std::pair<std::string, std::string>>{
           {"model.layers.0.self_attn.v_proj", "blk.0.attn_v.weight"},
           {"model.layers.1.self_attn.o_proj", "blk.1.attn_output.weight"},
           {"model.layers.1.mlp.down_proj", "blk.1.ffn_down.weight"},
           {"lm_head", "output.weight"}}) {
    const auto& lora = set.at(module);
    const Matrix<double> a = reader.matrix<double>(tensor + ".lora_a"), b = reader.matrix<double>(tensor + ".lora_b");
    const double r = static_cast<double>(reader.info(tensor + ".lora_b").ne[0]);
    CHECK(relative_error((alpha / r) * b * a, lora.delta_weight()) < 1e-6);
  }
  // token_embd: llama.cpp adds s * lora_a[token] * lora_b^T to the token's embedding row: (s a b^T) = s B A.
  const auto& embed = set.at("model.embed_tokens");
  const Matrix<double> ea = reader.matrix<double>("token_embd.weight.lora_a"), eb = reader.matrix<double>("token_embd.weight.lora_b");
  CHECK(relative_error((alpha / 4.0) * ea * eb.transpose(), embed.delta_weight()) < 1e-6);
}

TEST_CASE("save_gguf_lora rejects bad sets and options, writing nothing", "[io][gguf][lora]") {
  TempDir dir;
  const auto file = dir / "a.gguf";
  CHECK_THROWS_TYPE_WITH(save_gguf_lora(file, AdapterSet<Lora<float>>{}), ValueError, Contains("empty"));
  auto set = llama_set<float>(false);
  CHECK_THROWS_TYPE_WITH(save_gguf_lora(file, set), ValueError, Contains("n_head"));
  auto options = llama_options();
  options.n_head = 5;
  options.n_head_kv = 5;
  CHECK_THROWS_TYPE_WITH(save_gguf_lora(file, set, options), ValueError, Contains("do not split into 5 heads"));
  options = llama_options(Dtype::F64);
  CHECK_THROWS_AS(save_gguf_lora(file, set, options), ValueError);
  options = llama_options();
  options.n_head_kv = 8;
  CHECK_THROWS_AS(save_gguf_lora(file, set, options), ValueError);
  set.add("blk.0.attn_q.weight", random_lora<float>(24, 24, 2, 2, false, 11));
  CHECK_THROWS_TYPE_WITH(save_gguf_lora(file, set, llama_options()), ValueError, Contains("both map to 'blk.0.attn_q.weight'"));
  AdapterSet<Lora<float>> unknown;
  unknown.add("encoder.block.0.q", random_lora<float>(8, 8, 2, 2, false, 1));
  CHECK_THROWS_TYPE_WITH(save_gguf_lora(file, unknown, llama_options()), ValueError, Contains("the known patterns are"));
  CHECK(dir.files().empty());
}

TEST_CASE("load_gguf_lora reads a file of another writer (the test's own) with llama.cpp's names, or mapped with options", "[io][gguf][lora]") {
  TempDir dir;
  // q of a model with hidden 4, n_head 2 (head_dim 2), rank 1, alpha 3: A = [1 2 3 4], B^T = [1 2 3 4].
  RawGguf f;
  f.header(2, 4).kv_string("general.type", "adapter").kv_string("general.architecture", "llama");
  f.kv_string("adapter.type", "lora").kv_f32("adapter.lora.alpha", 3.0f);
  f.tensor("blk.0.attn_q.weight.lora_a", {4, 1}, 0, 0).tensor("blk.0.attn_q.weight.lora_b", {1, 4}, 0, 32).pad();
  f.floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
  write_bytes(dir / "other.gguf", f.bytes);

  const auto stored = load_gguf_lora<double>(dir / "other.gguf");
  REQUIRE(stored.adapters.names() == std::vector<std::string>{"blk.0.attn_q.weight"});
  CHECK(stored.alpha == 3.0);
  const auto& lora = stored.adapters.at("blk.0.attn_q.weight");
  const Matrix<double> ab = (Matrix<double>(4, 1) << 1, 2, 3, 4).finished() * (Matrix<double>(1, 4) << 1, 2, 3, 4).finished();
  CHECK(lora.delta_weight() == 3.0 * ab);
  // Saved again under llama.cpp's names, the rows stay in llama.cpp's order (no permutation, no n_head needed).
  save_gguf_lora(dir / "again.gguf", stored.adapters);
  const auto again = load_gguf_lora<double>(dir / "again.gguf");
  REQUIRE(again.adapters.names() == std::vector<std::string>{"blk.0.attn_q.weight"});
  CHECK(again.adapters.at("blk.0.attn_q.weight").B() == lora.B());
  CHECK(GgufReader(dir / "again.gguf").matrix<double>("blk.0.attn_q.weight.lora_b") == lora.B());
  // A user-extended table: the recorded names come back without the table.
  auto extended = llama_options();
  extended.names.push_back({"model.layers.{L}.attn.qkv", "blk.{L}.attn_qkv", GgufRowOrder::as_is, false});
  AdapterSet<Lora<double>> custom;
  custom.add("model.layers.2.attn.qkv", random_lora<double>(8, 24, 2, 4, false, 5));
  save_gguf_lora(dir / "custom.gguf", custom, extended);
  const auto custom_back = load_gguf_lora<double>(dir / "custom.gguf");
  REQUIRE(custom_back.adapters.names() == custom.names());
  CHECK(custom_back.adapters.at("model.layers.2.attn.qkv").B() ==
        custom.at("model.layers.2.attn.qkv").B().cast<float>().cast<double>());

  GgufLoraOptions options;
  options.n_head = 2;
  options.n_head_kv = 2;
  const auto mapped = load_gguf_lora<double>(dir / "other.gguf", options);
  REQUIRE(mapped.adapters.names() == std::vector<std::string>{"model.layers.0.self_attn.q_proj"});
  // Unpermuted rows of B (head_dim 2: the permutation of a head of 2 rows is the identity).
  CHECK(mapped.adapters.at("model.layers.0.self_attn.q_proj").B() == (Matrix<double>(4, 1) << 1, 2, 3, 4).finished());
  options.n_head = 1;
  options.n_head_kv = 1;  // one head of 4 rows: stored [1 2 3 4] is HF rows [1 3 2 4]
  CHECK(load_gguf_lora<double>(dir / "other.gguf", options).adapters.at("model.layers.0.self_attn.q_proj").B() ==
        (Matrix<double>(4, 1) << 1, 3, 2, 4).finished());
}

TEST_CASE("load_gguf_lora rejects files that are not LoRA adapters", "[io][gguf][lora]") {
  TempDir dir;
  const auto base = [](const std::string& type, bool f64_alpha) {
    RawGguf f;
    f.header(2, 4).kv_string("general.type", type).kv_string("general.architecture", "llama").kv_string("adapter.type", "lora");
    if (f64_alpha) {
      f.str("adapter.lora.alpha").scalar<std::uint32_t>(12).scalar(3.0);
    } else {
      f.kv_f32("adapter.lora.alpha", 3.0f);
    }
    return f;
  };
  const auto check = [&](RawGguf f, const std::string& fragment) {
    write_bytes(dir / "bad.gguf", f.bytes);
    CHECK_THROWS_TYPE_WITH(load_gguf_lora<float>(dir / "bad.gguf"), IoError, Contains(fragment) && Contains("bad.gguf"));
  };
  auto model = base("model", false);
  model.tensor("x.lora_a", {4, 1}, 0, 0).tensor("x.lora_b", {1, 4}, 0, 32).pad().floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
  check(model, "expected 'adapter'");
  auto f64 = base("adapter", true);
  f64.tensor("x.lora_a", {4, 1}, 0, 0).tensor("x.lora_b", {1, 4}, 0, 32).pad().floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
  check(f64, "expected FLOAT32");
  auto missing = base("adapter", false);
  missing.tensor("x.lora_a", {4, 1}, 0, 0).tensor("y.lora_b", {1, 4}, 0, 32).pad().floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
  check(missing, "no .lora_b");
  auto ranks = base("adapter", false);
  ranks.tensor("x.lora_a", {2, 2}, 0, 0).tensor("x.lora_b", {1, 4}, 0, 32).pad().floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
  check(ranks, "disagree on the rank");
  // Rank 0 with 2^53 output rows: no values to read, so only the shape check stops it (before it, q's row
  // permutation walked every row: a fuzzer's input that ran for minutes).
  RawGguf empty;
  empty.header(2, 6).kv_string("general.type", "adapter").kv_string("general.architecture", "llama");
  empty.kv_string("adapter.type", "lora").kv_f32("adapter.lora.alpha", 3.0f);
  empty.kv_u32("lorakit.n_head", 1).kv_u32("lorakit.n_head_kv", 1);
  empty.tensor("blk.0.attn_q.weight.lora_a", {4, 0}, 0, 0).tensor("blk.0.attn_q.weight.lora_b", {0, 1ull << 53}, 0, 0);
  empty.pad();
  check(empty, "expected no empty dimension");
  auto other = base("adapter", false);
  other.tensor("x.lora_a", {4, 1}, 0, 0).tensor("norm.weight", {4}, 0, 32).pad().floats({1, 2, 3, 4}).pad().floats({1, 2, 3, 4});
  check(other, "neither a .lora_a nor a .lora_b");
  auto nan = base("adapter", false);
  nan.tensor("x.lora_a", {4, 1}, 0, 0).tensor("x.lora_b", {1, 4}, 0, 32).pad().floats({1, 2, 3, 4}).pad();
  nan.floats({1, std::numeric_limits<float>::quiet_NaN(), 3, 4});
  check(nan, "non-finite");
}

TEST_CASE("VeRA exports as the LoRA with the same update, optionally squeezed", "[io][gguf][vera]") {
  auto projections = std::make_shared<const VeraProjections<double>>(6, 20, 16, 3);
  AdapterSet<Vera<double>> set;
  for (int l = 0; l < 2; ++l) {
    VeraConfig config;
    config.rank = 6;
    Vera<double> vera(projections, 20 - 4 * l, 16, config);
    Rng(static_cast<std::uint64_t>(l)).fill_normal(vera.lambda_b(), 0.0, 1.0);
    Rng(static_cast<std::uint64_t>(l) + 10).fill_normal(vera.lambda_d(), 0.0, 1.0);
    set.add("model.layers." + std::to_string(l) + ".mlp.up_proj", std::move(vera));
  }
  const auto full = vera_to_lora(set);
  for (const auto& [name, vera] : set) {
    CHECK(relative_error(full.adapters.at(name).delta_weight(), vera.delta_weight()) < 1e-14);
    CHECK(full.energy_kept.at(name) == 1.0);
  }
  const auto squeezed = vera_to_lora(set, 3);
  for (const auto& [name, vera] : set) {
    const Matrix<double> dW = vera.delta_weight();
    const Eigen::BDCSVD<Matrix<double>> svd(dW);
    const Vector<double> sq = svd.singularValues().array().square();
    CHECK(squeezed.adapters.at(name).rank() == 3);
    CHECK(std::abs(squeezed.energy_kept.at(name) - sq.head(3).sum() / sq.sum()) < 1e-12);
    const double optimal = std::sqrt(sq.tail(sq.size() - 3).sum());
    CHECK(std::abs((squeezed.adapters.at(name).delta_weight() - dW).norm() - optimal) < 1e-10 * dW.norm());
  }
  CHECK_THROWS_AS(vera_to_lora(set, -1), ValueError);
}

}  // namespace lorakit_test_io_gguf
