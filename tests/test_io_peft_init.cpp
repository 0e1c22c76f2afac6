// PEFT's `init_lora_weights` (io/peft_init.hpp): the values PEFT writes, parsed with PEFT's dispatch rules; written
// and read back by save_peft / load_peft; a weight-changing initialization (LoRA-GA, PiSSA) saved in its residual
// form and converted to a plain LoRA on the original weight; malformed values refused.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/init/lora_ga.hpp>
#include <lorakit/init/pissa.hpp>
#include <lorakit/io/peft.hpp>

#include <fstream>
#include <string>
#include <vector>

namespace lorakit_test_io_peft_init {

using namespace lorakit;
using namespace lorakit::io;
using lorakit::testing::random_matrix;
using lorakit::testing::relative_error;
using lorakit::testing::TempDir;
using Catch::Contains;
using Kind = PeftInitLoraWeights::Kind;

namespace {

nlohmann::json read_json(const std::filesystem::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

LoraConfig rank_config(Index rank, double alpha) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  return c;
}

}  // namespace

TEST_CASE("PeftInitLoraWeights reads PEFT's init_lora_weights values as PEFT dispatches them", "[io][peft]") {
  struct Case {
    nlohmann::json value;
    Kind kind;
    int niter;
    bool changes_base;
  };
  const std::vector<Case> cases = {
      {true, Kind::kaiming_uniform, -1, false},     {false, Kind::random, -1, false},
      {nullptr, Kind::kaiming_uniform, -1, false},  {"gaussian", Kind::gaussian, -1, false},
      {"Gaussian", Kind::gaussian, -1, false},      {"pissa", Kind::pissa, -1, true},
      {"pissa_niter_4", Kind::pissa, 4, true},      {"pissa_niter_16", Kind::pissa, 16, true},
      {"olora", Kind::olora, -1, true},             {"OLoRA", Kind::olora, -1, true},
      {"lora_ga", Kind::lora_ga, -1, true},         {"corda", Kind::corda, -1, true},
      {"loftq", Kind::loftq, -1, true},             {"eva", Kind::eva, -1, false},
      {"orthogonal", Kind::other, -1, false},       {"mica", Kind::other, -1, false},
  };
  for (const Case& c : cases) {
    INFO(c.value.dump());
    const auto parsed = PeftInitLoraWeights::parse(c.value);
    REQUIRE(parsed.has_value());
    CHECK(parsed->kind() == c.kind);
    CHECK(parsed->pissa_niter() == c.niter);
    CHECK(parsed->changes_base_weight() == c.changes_base);
    // Written back as read (null is PEFT's default, true).
    CHECK(nlohmann::json(parsed->to_json()) == (c.value.is_null() ? nlohmann::json(true) : c.value));
  }
  for (const nlohmann::json& bad : {nlohmann::json(7), nlohmann::json::array(), nlohmann::json::object(),
                                    nlohmann::json("pissa_niter_"), nlohmann::json("pissa_niter_x"),
                                    nlohmann::json("pissa_niter_-1"), nlohmann::json("pissa2")}) {
    INFO(bad.dump());
    CHECK_FALSE(PeftInitLoraWeights::parse(bad).has_value());
  }
  CHECK(PeftInitLoraWeights::pissa().to_json() == "pissa");
  CHECK(PeftInitLoraWeights::pissa(4).to_json() == "pissa_niter_4");
  CHECK(PeftInitLoraWeights::pissa(0).pissa_niter() == 0);
  CHECK(PeftInitLoraWeights::olora().to_json() == "olora");
  CHECK(PeftInitLoraWeights::lora_ga().to_json() == "lora_ga");
  CHECK(PeftInitLoraWeights::kaiming_uniform().to_json() == true);
  CHECK(PeftInitLoraWeights::pissa(4) == *PeftInitLoraWeights::parse(nlohmann::json("pissa_niter_4")));
  CHECK(PeftInitLoraWeights::pissa(4) != PeftInitLoraWeights::pissa(5));
  CHECK_THROWS_AS(PeftInitLoraWeights::pissa(-2), ValueError);
}

TEST_CASE("save_peft writes init_lora_weights and load_peft keeps it, through a second save", "[io][peft]") {
  TempDir dir;
  AdapterSet<Lora<float>> set;
  set.add("m.q", Lora<float>(8, 6, rank_config(2, 4)));
  set.add("m.v", Lora<float>(8, 6, rank_config(2, 4)));

  save_peft(dir / "plain", set);  // no value given: PEFT's default
  CHECK(read_json(dir / "plain" / "adapter_config.json")["init_lora_weights"] == true);
  CHECK(load_peft<float>(dir / "plain").init_lora_weights == PeftInitLoraWeights{});

  for (const PeftInitLoraWeights& value :
       {PeftInitLoraWeights::pissa(), PeftInitLoraWeights::pissa(3), PeftInitLoraWeights::olora(),
        PeftInitLoraWeights::lora_ga(), *PeftInitLoraWeights::parse(nlohmann::json(false)),
        *PeftInitLoraWeights::parse(nlohmann::json("gaussian"))}) {
    INFO(nlohmann::json(value.to_json()).dump());
    PeftSaveOptions options;
    options.init_lora_weights = value;
    save_peft(dir / "first", set, options);
    CHECK(nlohmann::json(read_json(dir / "first" / "adapter_config.json")["init_lora_weights"]) ==
          nlohmann::json(value.to_json()));
    const PeftAdapter<float> loaded = load_peft<float>(dir / "first");
    CHECK(loaded.init_lora_weights == value);
    CHECK(loaded.config["init_lora_weights"] == nlohmann::json(value.to_json()));

    save_peft(dir / "second", loaded);  // a loaded adapter keeps its value
    CHECK(load_peft<float>(dir / "second").init_lora_weights == value);
    PeftSaveOptions converted;  // unless the options say otherwise
    converted.init_lora_weights = PeftInitLoraWeights::kaiming_uniform();
    save_peft(dir / "third", loaded, converted);
    CHECK(read_json(dir / "third" / "adapter_config.json")["init_lora_weights"] == true);
  }
}

TEMPLATE_TEST_CASE("a LoRA-GA adapter is saved in its residual form or converted to a LoRA on the original weight",
                   "[io][peft][lora_ga]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  const Dtype dtype = std::is_same_v<T, float> ? Dtype::F32 : Dtype::F64;  // the factors saved exactly
  TempDir dir;
  const Index out = 10, in = 8, r = 2;
  const Matrix<T> original = random_matrix<T>(out, in, 1);
  Matrix<T> W = original;  // becomes the residual
  Lora<T> lora(in, out, rank_config(r, 4));
  lora_ga_initialize(lora, W, random_matrix<double>(out, in, 2));
  const Lora<T> initial = lora;
  lora.A() += random_matrix<T>(r, in, 3, 0.1);  // "training"
  lora.B() += random_matrix<T>(out, r, 4, 0.1);
  const Matrix<double> trained_weight = (W + lora.delta_weight()).template cast<double>();

  // 1. The residual form: the adapter as trained, marked "lora_ga"; it applies to the residual W.
  AdapterSet<Lora<T>> residual_form;
  residual_form.add("layer.fc", lora);
  PeftSaveOptions options;
  options.dtype = dtype;
  options.init_lora_weights = PeftInitLoraWeights::lora_ga();
  save_peft(dir / "residual", residual_form, options);
  CHECK(read_json(dir / "residual" / "adapter_config.json")["init_lora_weights"] == "lora_ga");
  const PeftAdapter<T> residual = load_peft<T>(dir / "residual");
  CHECK(residual.init_lora_weights.changes_base_weight());
  Matrix<T> merged_residual = W;
  residual.merge_into("layer.fc", merged_residual);
  CHECK(relative_error(merged_residual.template cast<double>(), trained_weight) < tol);

  // 2. Converted as PEFT's path_initial_model_for_weight_conversion does: rank 2r on the original W, marked true.
  AdapterSet<Lora<T>> converted;
  converted.add("layer.fc", pissa_to_lora(lora, initial));
  PeftSaveOptions plain_options;
  plain_options.dtype = dtype;
  save_peft(dir / "converted", converted, plain_options);
  const auto config = read_json(dir / "converted" / "adapter_config.json");
  CHECK(config["init_lora_weights"] == true);
  CHECK(config["r"] == 2 * r);
  CHECK(config["lora_alpha"] == 8);  // alpha doubled: the same scaling at rank 2r
  const PeftAdapter<T> plain = load_peft<T>(dir / "converted");
  CHECK_FALSE(plain.init_lora_weights.changes_base_weight());
  Matrix<T> merged_original = original;
  plain.merge_into("layer.fc", merged_original);
  CHECK(relative_error(merged_original.template cast<double>(), trained_weight) < tol);
}

TEST_CASE("load_peft refuses a malformed init_lora_weights, naming the file", "[io][peft]") {
  TempDir dir;
  AdapterSet<Lora<float>> set;
  set.add("m.q", Lora<float>(8, 8, rank_config(2, 4)));
  save_peft(dir.path(), set);
  const auto config_file = dir / "adapter_config.json";
  const auto write_config = [&](const std::string& text) { lorakit::testing::write_bytes(config_file, text); };
  write_config(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": 7})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("load_peft") && Contains("adapter_config.json") &&
                                                        Contains("init_lora_weights is 7, expected true, false"));
  write_config(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa_niter_x"})");
  REQUIRE_THROWS_WITH(load_peft<float>(dir.path()), Contains("init_lora_weights is \"pissa_niter_x\""));
  write_config(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa_niter_2"})");
  CHECK(load_peft<float>(dir.path()).init_lora_weights.pissa_niter() == 2);
}

}  // namespace lorakit_test_io_peft_init
