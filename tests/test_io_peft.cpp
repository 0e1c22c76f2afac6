// Tests of PEFT LoRA folders: the real GPT-2 adapter written by PEFT (values checked against its raw bytes,
// merge with fan_in_fan_out), save/load round trips in F32/F16/BF16, rank and alpha patterns, and errors.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/io/peft.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

namespace lorakit_test_io_peft {

using namespace lorakit;
using namespace lorakit::io;
using lorakit::testing::TempDir;
using Catch::Contains;

namespace {

const std::filesystem::path fixture = std::filesystem::path(LORAKIT_SHARED_DIR) / "fixtures" / "peft-gpt2-lora";

/// The float at element `index` of the tensor whose data starts at byte `tensor_begin` of the data section, read
/// straight from the file (independently of the reader under test).
float raw_float(std::uint64_t tensor_begin, std::uint64_t index) {
  const auto file = fixture / "adapter_model.safetensors";
  std::ifstream in(file, std::ios::binary);
  unsigned char prefix[8];
  in.read(reinterpret_cast<char*>(prefix), 8);
  std::uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | prefix[i];
  in.seekg(static_cast<std::streamoff>(8 + header + tensor_begin + 4 * index));
  char bytes[4];
  in.read(bytes, 4);
  REQUIRE(in.gcount() == 4);
  float value;
  std::memcpy(&value, bytes, 4);
  return value;
}

template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, double alpha, std::uint64_t seed, bool rslora = false) {
  LoraConfig config;
  config.rank = rank;
  config.alpha = alpha;
  config.use_rslora = rslora;
  config.seed = seed;
  Lora<T> lora(in, out, config);
  Rng(seed + 1000).fill_normal(lora.B(), T(0), T(0.5));  // B = 0 after init: give it values
  return lora;
}

nlohmann::json read_json(const std::filesystem::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

}  // namespace

TEMPLATE_TEST_CASE("load_peft reads the GPT-2 LoRA written by PEFT", "[io][peft]", float, double) {
  using T = TestType;
  const PeftAdapter<T> adapter = load_peft<T>(fixture);
  REQUIRE(adapter.adapters.size() == 12);
  std::vector<std::string> expected_names;
  for (int layer = 0; layer < 12; ++layer) expected_names.push_back("transformer.h." + std::to_string(layer) + ".attn.c_attn");
  CHECK(adapter.adapters.names() == expected_names);  // model order, not h.0, h.1, h.10, ...
  for (const auto& [name, lora] : adapter.adapters) {
    CHECK(lora.rank() == 8);
    CHECK(lora.config().alpha == 8);
    CHECK(lora.scaling() == T(1));
    CHECK(lora.A().rows() == 8);
    CHECK(lora.A().cols() == 768);
    CHECK(lora.B().rows() == 2304);
    CHECK(lora.B().cols() == 8);
  }
  CHECK(adapter.fan_in_fan_out);
  CHECK(adapter.config["task_type"] == "SEQ_CLS");
  CHECK(adapter.config["base_model_name_or_path"] == "gpt2");
  REQUIRE(adapter.extra_tensors.size() == 1);
  const Matrix<T>& score = adapter.extra_tensors.at("score.weight");
  CHECK(score.rows() == 6);
  CHECK(score.cols() == 768);
  CHECK(adapter.extra_shapes.at("score.weight") == std::vector<std::int64_t>{6, 768});

  // Values against the raw bytes. Data offsets from the file's header: score.weight [0, 18432),
  // h.0 lora_A [18432, 43008), h.0 lora_B [43008, 116736), h.11 lora_A [313344, 337920), h.11 lora_B [337920, 411648).
  const auto& h0 = adapter.adapters.at("transformer.h.0.attn.c_attn");
  const auto& h11 = adapter.adapters.at("transformer.h.11.attn.c_attn");
  CHECK(score(0, 0) == T(raw_float(0, 0)));
  CHECK(score(5, 767) == T(raw_float(0, 5 * 768 + 767)));
  CHECK(h0.A()(0, 0) == T(raw_float(18432, 0)));
  CHECK(h0.A()(3, 100) == T(raw_float(18432, 3 * 768 + 100)));
  CHECK(h0.A()(7, 767) == T(raw_float(18432, 7 * 768 + 767)));
  CHECK(h0.B()(0, 0) == T(raw_float(43008, 0)));
  CHECK(h0.B()(1234, 5) == T(raw_float(43008, 1234 * 8 + 5)));
  CHECK(h0.B()(2303, 7) == T(raw_float(43008, 2303 * 8 + 7)));
  CHECK(h11.A()(4, 321) == T(raw_float(313344, 4 * 768 + 321)));
  CHECK(h11.B()(2000, 2) == T(raw_float(337920, 2000 * 8 + 2)));
  CHECK(h0.B().norm() > T(0.1));  // a trained adapter: the merge below is not trivial

  SECTION("merging layer 0 into GPT-2's [768 x 2304] Conv1D weight adds s (B A)^T") {
    Matrix<T> W(768, 2304);
    Rng(7).fill_normal(W, T(0), T(0.02));
    const Matrix<T> W0 = W;
    adapter.merge_into("transformer.h.0.attn.c_attn", W);
    // Reference in double, from the factors: W0 + s (B A)^T.
    const Matrix<double> expected =
        W0.template cast<double>() +
        1.0 * (h0.B().template cast<double>() * h0.A().template cast<double>()).transpose();
    const double error = (W.template cast<double>() - expected).cwiseAbs().maxCoeff();
    CHECK(error < (std::is_same_v<T, float> ? 1e-6 : 1e-14));
    CHECK((W - W0).cwiseAbs().maxCoeff() > T(1e-3));
    adapter.unmerge_from("transformer.h.0.attn.c_attn", W);
    CHECK((W - W0).cwiseAbs().maxCoeff() < T(1e-6));
    Matrix<T> wrong(2304, 768);
    REQUIRE_THROWS_WITH(adapter.merge_into("transformer.h.0.attn.c_attn", wrong),
                        Contains("merge_peft_layer") && Contains("[2304 x 768], expected [768 x 2304]"));
  }
}

TEST_CASE("save_peft writes the GPT-2 adapter back as PEFT wrote it", "[io][peft]") {
  TempDir dir;
  const PeftAdapter<float> adapter = load_peft<float>(fixture);
  save_peft(dir.path(), adapter);
  CHECK(dir.files().size() == 2);

  // The data section is byte for byte PEFT's (same tensors, same order, F32).
  const std::string ours = lorakit::testing::read_bytes(dir / "adapter_model.safetensors");
  const std::string theirs = lorakit::testing::read_bytes(fixture / "adapter_model.safetensors");
  const auto data = [](const std::string& bytes) {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
    return bytes.substr(8 + n);
  };
  CHECK(data(ours) == data(theirs));

  const auto config = read_json(dir / "adapter_config.json");
  CHECK(config["peft_type"] == "LORA");
  CHECK(config["r"] == 8);
  CHECK(config["lora_alpha"] == 8);
  CHECK(config["rank_pattern"] == nlohmann::json::object());
  CHECK(config["alpha_pattern"] == nlohmann::json::object());
  CHECK(config["fan_in_fan_out"] == true);
  CHECK(config["target_modules"] == nlohmann::json::array({"c_attn"}));
  CHECK(config["base_model_name_or_path"] == "gpt2");
  CHECK(config["task_type"] == "SEQ_CLS");
  CHECK(config["bias"] == "none");
  CHECK(config["use_rslora"] == false);
  CHECK(config["init_lora_weights"] == true);
  CHECK(config["inference_mode"] == true);
  CHECK(config["lora_dropout"] == 0.0);
  // Every key we write is one PEFT's own file has (older PEFT versions reject unknown keys).
  const auto peft_config = read_json(fixture / "adapter_config.json");
  for (const auto& item : config.items()) CHECK(peft_config.contains(item.key()));
}

TEMPLATE_TEST_CASE("save_peft / load_peft round trip", "[io][peft]", float, double) {
  using T = TestType;
  TempDir dir;
  AdapterSet<Lora<T>> set;
  const std::string layer0 = "model.layers.0.self_attn.", layer1 = "model.layers.1.self_attn.";
  set.add(layer0 + "q_proj", random_lora<T>(32, 24, 8, 16, 1));
  set.add(layer0 + "v_proj", random_lora<T>(32, 24, 4, 16, 2));
  set.add(layer1 + "q_proj", random_lora<T>(32, 24, 8, 32, 3));
  set.add(layer1 + "v_proj", random_lora<T>(32, 24, 8, 16, 4));
  set.add("encoder.fc", random_lora<T>(16, 16, 2, 16, 5));          // a suffix of the next name, with its own rank
  set.add("decoder.encoder.fc", random_lora<T>(16, 16, 8, 16, 6));  // the default rank

  SECTION("F32 is bit-exact and the patterns give every module its rank and alpha") {
    PeftSaveOptions options;
    options.base_model_name_or_path = "tiny";
    options.task_type = "CAUSAL_LM";
    save_peft(dir.path(), set, options);
    const auto config = read_json(dir / "adapter_config.json");
    CHECK(config["r"] == 8);
    CHECK(config["lora_alpha"] == 16);
    CHECK(config["target_modules"] == nlohmann::json::array({"fc", "q_proj", "v_proj"}));
    CHECK(config["base_model_name_or_path"] == "tiny");
    CHECK(config["task_type"] == "CAUSAL_LM");
    CHECK(config["alpha_pattern"] == nlohmann::json{{layer1 + "q_proj", 32}});
    // "encoder.fc" would also select "decoder.encoder.fc" under PEFT's `(.*\.)?(key)$`: that module gets its own
    // key, placed first.
    const auto& ranks = config["rank_pattern"];
    CHECK(ranks.size() == 3);
    CHECK(ranks[layer0 + "v_proj"] == 4);
    CHECK(ranks["encoder.fc"] == 2);
    CHECK(ranks["decoder.encoder.fc"] == 8);
    const std::string text = lorakit::testing::read_bytes(dir / "adapter_config.json");
    CHECK(text.find("\"decoder.encoder.fc\"") < text.find("\"encoder.fc\""));

    const PeftAdapter<T> back = load_peft<T>(dir.path());
    REQUIRE(back.adapters.size() == set.size());
    CHECK(back.extra_tensors.empty());
    CHECK_FALSE(back.fan_in_fan_out);
    for (const auto& [name, lora] : set) {
      INFO(name);
      const Lora<T>& loaded = back.adapters.at(name);
      CHECK(loaded.rank() == lora.rank());
      CHECK(loaded.config().alpha == lora.config().alpha);
      CHECK(loaded.scaling() == lora.scaling());
      if constexpr (std::is_same_v<T, float>) {
        CHECK(loaded.A() == lora.A());
        CHECK(loaded.B() == lora.B());
      } else {
        CHECK(loaded.A() == lora.A().template cast<float>().template cast<double>());
        CHECK(loaded.B() == lora.B().template cast<float>().template cast<double>());
      }
    }
  }

  SECTION("F16 and BF16 keep each value to the format's precision") {
    for (const Dtype dtype : {Dtype::F16, Dtype::BF16}) {
      PeftSaveOptions options;
      options.dtype = dtype;
      save_peft(dir.path(), set, options);
      const PeftAdapter<T> back = load_peft<T>(dir.path());
      const double precision = dtype == Dtype::F16 ? 0x1p-11 : 0x1p-8;  // half a unit in the last place
      for (const auto& [name, lora] : set) {
        for (const auto* pair : {&lora.A(), &lora.B()}) {
          const Matrix<T>& original = *pair;
          const Matrix<T>& loaded = pair == &lora.A() ? back.adapters.at(name).A() : back.adapters.at(name).B();
          const double error = ((loaded - original).cwiseAbs() - original.cwiseAbs() * T(precision)).maxCoeff();
          CHECK(error <= 0x1p-24);  // the F16 subnormal range has an absolute, not relative, precision
          CHECK((loaded - original).cwiseAbs().maxCoeff() > 0);  // the values really went through 16 bits
        }
      }
    }
  }
}

TEST_CASE("load_peft applies PEFT-style rank and alpha patterns and rsLoRA", "[io][peft]") {
  TempDir dir;
  SafetensorsWriter writer;
  const std::vector<std::string> modules = {"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj",
                                            "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"};
  const std::vector<Index> expected_rank = {4, 8, 4, 8};
  const std::vector<double> expected_alpha = {16, 16, 32, 64};
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const Lora<float> lora = random_lora<float>(20, 12, expected_rank[i], 1, i);
    writer.add("base_model.model." + modules[i] + ".lora_A.weight", lora.A());
    writer.add("base_model.model." + modules[i] + ".lora_B.weight", lora.B());
  }
  writer.add("base_model.model.lm_head.weight", Matrix<float>::Ones(3, 4));
  writer.write(dir / "adapter_model.safetensors");
  // A key is a regular expression matched against the whole name, after any prefix ending with a dot; the first
  // matching key in the file's order wins ("p_proj" is not a whole component, so it never matches).
  lorakit::testing::write_bytes(dir / "adapter_config.json", R"({
    "peft_type": "LORA", "r": 8, "lora_alpha": 16, "use_rslora": true, "some_future_key": [1, 2],
    "rank_pattern": {"up_proj": 4},
    "alpha_pattern": {"layers\\.1\\.mlp\\.up_proj": 32, "layers\\.1\\..*": 64, "p_proj": 99}
  })");
  const PeftAdapter<float> adapter = load_peft<float>(dir.path());
  REQUIRE(adapter.adapters.size() == 4);
  for (std::size_t i = 0; i < modules.size(); ++i) {
    INFO(modules[i]);
    const Lora<float>& lora = adapter.adapters.at(modules[i]);
    CHECK(lora.rank() == expected_rank[i]);
    CHECK(lora.config().alpha == expected_alpha[i]);
    CHECK(lora.config().use_rslora);
    CHECK(lora.scaling() == Approx(expected_alpha[i] / std::sqrt(static_cast<double>(expected_rank[i]))));
  }
  CHECK(adapter.extra_tensors.at("lm_head.weight") == Matrix<float>::Ones(3, 4));
  CHECK(adapter.config["some_future_key"] == nlohmann::json::array({1, 2}));
}

TEST_CASE("load_peft and save_peft report bad folders and bad adapters", "[io][peft]") {
  TempDir dir;
  AdapterSet<Lora<float>> set;
  set.add("m.q", random_lora<float>(8, 8, 2, 4, 1));
  const auto config_file = dir / "adapter_config.json";
  const auto write_config = [&](const std::string& text) { lorakit::testing::write_bytes(config_file, text); };

  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("load_peft") && Contains("cannot open") &&
                                                        Contains("adapter_config.json"));
  save_peft(dir.path(), set);
  const std::string good_config = lorakit::testing::read_bytes(config_file);
  const std::string good_weights = lorakit::testing::read_bytes(dir / "adapter_model.safetensors");

  write_config(R"({"peft_type": "VERA", "r": 2})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("peft_type is \"VERA\", expected \"LORA\""));
  write_config(R"({"peft_type": "LORA", "r": "2"})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("r is \"2\", expected a positive integer"));
  write_config(R"({"peft_type": "LORA", "r": 2, "use_dora": true})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("DoRA"));
  write_config(R"({"peft_type": "LORA", "r": 2, "rank_pattern": {"q": "x"}})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("rank_pattern['q']") && Contains("expected a number"));
  write_config(R"({"peft_type": "LORA", "r": 2, "rank_pattern": {"(": 3}})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("not a valid regular expression"));
  write_config(R"({"peft_type": "LORA", "r": 2, "rank_pattern": {"q": 2.5}})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("rank 2.5, expected a positive integer"));
  write_config(R"({"peft_type": "LORA", "r": 4})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("adapter_model.safetensors") &&
                                                        Contains("has 2 rows, but the config gives module 'm.q' rank 4"));
  write_config("{\"peft_type\": ");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("not valid JSON"));
  write_config(good_config);

  SafetensorsWriter half;
  half.add("base_model.model.m.q.lora_A.weight", Matrix<float>::Ones(2, 8));
  half.write(dir / "adapter_model.safetensors");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("module 'm.q' has lora_A but no lora_B"));
  Matrix<float> nan_factor = Matrix<float>::Ones(2, 8);
  nan_factor(1, 3) = std::numeric_limits<float>::quiet_NaN();
  SafetensorsWriter with_nan;
  with_nan.add("base_model.model.m.q.lora_A.weight", nan_factor);
  with_nan.add("base_model.model.m.q.lora_B.weight", Matrix<float>::Ones(8, 2));
  with_nan.write(dir / "adapter_model.safetensors");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()),
                      Contains("tensor 'base_model.model.m.q.lora_A.weight' has the non-finite value nan at [1, 3]"));
  std::filesystem::remove(dir / "adapter_model.safetensors");
  lorakit::testing::write_bytes(dir / "adapter_model.bin", "pickle");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("adapter_model.bin") && Contains("safe_serialization"));
  std::filesystem::remove(dir / "adapter_model.bin");
  lorakit::testing::write_bytes(dir / "adapter_model.safetensors", good_weights);

  SECTION("a failed save leaves the previous adapter as it was") {
    AdapterSet<Lora<float>> big;
    big.add("m.q", random_lora<float>(8, 8, 2, 4, 1));
    big.at("m.q").B()(0, 0) = 1e6f;  // overflows F16
    PeftSaveOptions options;
    options.dtype = Dtype::F16;
    REQUIRE_THROWS_WITH(save_peft(dir.path(), big, options), Contains("overflows F16"));
    CHECK(lorakit::testing::read_bytes(config_file) == good_config);
    CHECK(lorakit::testing::read_bytes(dir / "adapter_model.safetensors") == good_weights);
    CHECK(dir.files().size() == 2);
    REQUIRE_THROWS_WITH(save_peft(dir / "new", AdapterSet<Lora<float>>{}), Contains("adapters is empty"));
    CHECK_FALSE(std::filesystem::exists(dir / "new"));
  }

  SECTION("modules must agree on use_rslora") {
    set.add("m.k", random_lora<float>(8, 8, 2, 4, 2, true));
    REQUIRE_THROWS_WITH(save_peft(dir / "other", set), Contains("use_rslora"));
  }
}

TEMPLATE_TEST_CASE("save_peft_vera / load_peft_vera round trip", "[io][peft][vera]", float, double) {
  using T = TestType;
  TempDir dir;
  const auto projections = VeraProjections<T>::for_layers(16, {{32, 24}, {48, 40}}, 42);
  VeraConfig config;
  config.rank = 16;
  config.d_initial = 0.25;
  config.projection_seed = 42;
  AdapterSet<Vera<T>> set;
  Vera<T>& q = set.add("layers.0.attn.q", Vera<T>(projections, 32, 24, config));
  Vera<T>& fc = set.add("layers.0.mlp.fc", Vera<T>(projections, 48, 40, config));
  Rng(3).fill_normal(q.lambda_b(), T(0), T(1));
  Rng(4).fill_normal(fc.lambda_b(), T(0), T(1));
  Rng(5).fill_normal(fc.lambda_d(), T(0), T(1));
  const std::map<std::string, Index> in_features = {{"layers.0.attn.q", 32}, {"layers.0.mlp.fc", 48}};

  SECTION("with the projections") {
    PeftVeraSaveOptions options;
    options.base_model_name_or_path = "tiny";
    save_peft_vera(dir.path(), set, options);
    const auto json = read_json(dir / "adapter_config.json");
    CHECK(json["peft_type"] == "VERA");
    CHECK(json["r"] == 16);
    CHECK(json["projection_prng_key"] == 42);
    CHECK(json["d_initial"] == 0.25);
    CHECK(json["save_projection"] == true);
    CHECK(json["target_modules"] == nlohmann::json::array({"fc", "q"}));
    const SafetensorsReader reader(dir / "adapter_model.safetensors");
    CHECK(reader.info("base_model.vera_A").shape == std::vector<std::int64_t>{16, 48});
    CHECK(reader.info("base_model.vera_B").shape == std::vector<std::int64_t>{40, 16});
    CHECK(reader.info("base_model.model.layers.0.attn.q.vera_lambda_b").shape == std::vector<std::int64_t>{24});
    CHECK(reader.info("base_model.model.layers.0.attn.q.vera_lambda_d").shape == std::vector<std::int64_t>{16});
    CHECK(reader.matrix<T>("base_model.vera_A") == projections->A().template cast<float>().template cast<T>());

    const PeftVeraAdapter<T> back = load_peft_vera<T>(dir.path(), in_features);
    CHECK(back.adapters.names() == std::vector<std::string>{"layers.0.attn.q", "layers.0.mlp.fc"});
    CHECK(back.projections->A() == projections->A());
    for (const auto& [name, vera] : set) {
      const Vera<T>& loaded = back.adapters.at(name);
      CHECK(loaded.in_features() == vera.in_features());
      CHECK(loaded.out_features() == vera.out_features());
      CHECK(loaded.config().d_initial == 0.25);
      CHECK(loaded.lambda_b() == vera.lambda_b().template cast<float>().template cast<T>());
      CHECK(loaded.lambda_d() == vera.lambda_d().template cast<float>().template cast<T>());
      if constexpr (std::is_same_v<T, float>) CHECK(loaded.delta_weight() == vera.delta_weight());
    }

    CHECK(back.projections->regenerable());

    // Projections that lorakit does not draw (as PEFT's, from torch's generator) are used as stored.
    SafetensorsWriter foreign;
    Matrix<float> foreign_B;
    for (const auto& tensor : reader.tensors()) {
      Matrix<float> m = reader.matrix<float>(tensor.name);
      if (tensor.name == "base_model.vera_B") {
        m(3, 2) += 0.5f;
        foreign_B = m;
      }
      foreign.add(tensor.name, m, Dtype::F32, tensor.shape);
    }
    foreign.write(dir / "adapter_model.safetensors");
    const PeftVeraAdapter<T> peft_made = load_peft_vera<T>(dir.path(), in_features);
    CHECK_FALSE(peft_made.projections->regenerable());
    CHECK(peft_made.projections->seed() == 42);
    CHECK(peft_made.projections->B() == foreign_B.template cast<T>());
    CHECK(peft_made.projections->A() == projections->A().template cast<float>().template cast<T>());
    // The layers read the stored matrices: delta_weight = diag(b) B[:out] diag(d) A[:, :in] with the stored B.
    for (const auto& [name, vera] : peft_made.adapters) {
      const Matrix<double> B = foreign_B.template cast<double>().topRows(vera.out_features());
      const Matrix<double> A =
          peft_made.projections->A().template cast<double>().leftCols(vera.in_features());
      const Matrix<double> expected = vera.lambda_b().template cast<double>().asDiagonal() * B *
                                      vera.lambda_d().template cast<double>().asDiagonal() * A;
      CHECK((vera.delta_weight().template cast<double>() - expected).norm() < 1e-6 * expected.norm());
    }
    // Such projections cannot be drawn again, so a checkpoint without them is refused.
    TempDir again;
    PeftVeraSaveOptions without;
    without.save_projection = false;
    REQUIRE_THROWS_WITH(save_peft_vera(again.path(), peft_made.adapters, without),
                        Contains("save_projection") && Contains("from_matrices"));
    save_peft_vera(again.path(), peft_made.adapters);
    CHECK(load_peft_vera<T>(again.path(), in_features).projections->B() == foreign_B.template cast<T>());
  }

  SECTION("without the projections, and errors") {
    PeftVeraSaveOptions options;
    options.save_projection = false;
    options.dtype = Dtype::BF16;
    save_peft_vera(dir.path(), set, options);
    CHECK_FALSE(SafetensorsReader(dir / "adapter_model.safetensors").contains("base_model.vera_A"));
    const PeftVeraAdapter<T> back = load_peft_vera<T>(dir.path(), in_features);
    CHECK(back.projections->A() == projections->A());  // regenerated at the largest layer shape
    const Vera<T>& loaded = back.adapters.at("layers.0.mlp.fc");
    CHECK(((loaded.lambda_b() - fc.lambda_b()).cwiseAbs() - fc.lambda_b().cwiseAbs() * T(0x1p-8)).maxCoeff() <= T(0));

    REQUIRE_THROWS_WITH(load_peft_vera<T>(dir.path(), {{"layers.0.attn.q", 32}}),
                        Contains("in_features has no entry for module 'layers.0.mlp.fc'"));
    REQUIRE_THROWS_WITH(load_peft<T>(dir.path()), Contains("expected \"LORA\""));
    AdapterSet<Vera<T>> mixed;
    mixed.add("a", Vera<T>(projections, 32, 24, config));
    mixed.add("b", Vera<T>(VeraProjections<T>::for_layers(16, {{32, 24}}, 42), 32, 24, config));
    REQUIRE_THROWS_WITH(save_peft_vera(dir / "mixed", mixed), Contains("other projections"));
  }
}

}  // namespace lorakit_test_io_peft
