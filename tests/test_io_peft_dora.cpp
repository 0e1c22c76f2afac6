// Tests of PEFT DoRA folders (io/peft_dora.hpp): the names and config PEFT uses (`use_dora`,
// `lora_magnitude_vector`, read with or without ".weight"), save/load round trips, and errors.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/io/peft.hpp>

#include <fstream>
#include <limits>
#include <type_traits>

namespace lorakit_test_io_peft_dora {

using namespace lorakit;
using namespace lorakit::io;
using lorakit::testing::random_matrix;
using lorakit::testing::TempDir;
using Catch::Contains;

namespace {

template <class T>
Dora<T> trained_dora(Index in, Index out, Index rank, double alpha, std::uint64_t seed) {
  LoraConfig config;
  config.rank = rank;
  config.alpha = alpha;
  config.seed = seed;
  Dora<T> dora(random_matrix<T>(out, in, seed), config);
  dora.B() = random_matrix<T>(out, rank, seed + 1, 0.5);
  dora.magnitude() += random_matrix<T>(out, 1, seed + 2, 0.1);
  return dora;
}

nlohmann::json read_json(const std::filesystem::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

/// A folder of PEFT's DoRA layout written tensor by tensor (the names of PEFT's LoraModel state dict), with the
/// magnitude's key ending in `magnitude_suffix`.
void write_peft_dora_folder(const TempDir& dir, const std::string& magnitude_suffix, const Matrix<float>& A,
                            const Matrix<float>& B, const Vector<float>& m, bool use_dora = true) {
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", A);
  writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", B);
  writer.add("base_model.model.model.layers.0.self_attn.q_proj" + magnitude_suffix, m);
  writer.write(dir / "adapter_model.safetensors");
  std::ofstream(dir / "adapter_config.json")
      << R"({"peft_type": "LORA", "r": )" << A.rows() << R"(, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": )"
      << (use_dora ? "true" : "false") << R"(, "use_rslora": false, "lora_dropout": 0.05, "fan_in_fan_out": false})";
}

}  // namespace

TEMPLATE_TEST_CASE("A DoRA adapter saved as PEFT saves it loads back equal", "[io][peft][dora]", float, double) {
  using T = TestType;
  AdapterSet<Dora<T>> set;
  set.add("model.layers.0.self_attn.q_proj", trained_dora<T>(12, 8, 4, 8, 1));
  set.add("model.layers.0.self_attn.v_proj", trained_dora<T>(12, 6, 2, 4, 5));
  PeftSaveOptions options;
  options.dtype = std::is_same_v<T, float> ? Dtype::F32 : Dtype::F64;  // bit-exact round trips
  TempDir dir;
  save_peft_dora(dir.path(), set, options);

  const nlohmann::json config = read_json(dir / "adapter_config.json");
  CHECK(config["use_dora"] == true);
  CHECK(config["peft_type"] == "LORA");
  SafetensorsReader reader(dir / "adapter_model.safetensors");
  const auto& magnitude = reader.info("base_model.model.model.layers.0.self_attn.v_proj.lora_magnitude_vector");
  CHECK(magnitude.shape == std::vector<std::int64_t>{6});

  const PeftDoraAdapter<T> loaded = load_peft_dora<T>(dir.path());
  REQUIRE(loaded.adapters.size() == 2);
  for (const auto& [name, dora] : set) {
    INFO(name);
    const Dora<T>& back = loaded.adapters.at(name);
    CHECK(back.A() == dora.A());
    CHECK(back.B() == dora.B());
    CHECK(back.magnitude() == dora.magnitude());
    CHECK(back.rank() == dora.rank());
    CHECK(back.scaling() == dora.scaling());
  }
  CHECK(loaded.extra_tensors.empty());

  // Written back from what was read: the same tensors.
  TempDir again;
  save_peft_dora(again.path(), loaded, options);
  const PeftDoraAdapter<T> twice = load_peft_dora<T>(again.path());
  CHECK(twice.adapters.at("model.layers.0.self_attn.q_proj").magnitude() == set.at("model.layers.0.self_attn.q_proj").magnitude());

  // load_peft (LoRA) refuses the DoRA folder and names the reader that takes it.
  CHECK_THROWS_WITH(load_peft<T>(dir.path()), Contains("use_dora") && Contains("load_peft_dora"));
}

TEST_CASE("load_peft_dora reads PEFT's names, with or without .weight, and refuses what is not DoRA", "[io][peft][dora]") {
  const Matrix<float> A = random_matrix<float>(4, 10, 7), B = random_matrix<float>(6, 4, 8);
  const Vector<float> m = random_matrix<float>(6, 1, 9).cwiseAbs();
  for (const std::string suffix : {".lora_magnitude_vector", ".lora_magnitude_vector.weight"}) {
    INFO(suffix);
    TempDir dir;
    write_peft_dora_folder(dir, suffix, A, B, m);
    const auto loaded = load_peft_dora<float>(dir.path());
    const Dora<float>& dora = loaded.adapters.at("model.layers.0.self_attn.q_proj");
    CHECK(dora.A() == A);
    CHECK(dora.B() == B);
    CHECK(dora.magnitude() == m);
    CHECK(dora.scaling() == 4.0f);  // lora_alpha 16 / r 4
    CHECK(dora.config().dropout == 0.05);
  }
  {
    TempDir dir;  // both spellings at once
    write_peft_dora_folder(dir, ".lora_magnitude_vector", A, B, m);
    SafetensorsWriter writer;
    writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", A);
    writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", B);
    writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", m);
    writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector.weight", m);
    writer.write(dir / "adapter_model.safetensors");
    CHECK_THROWS_WITH(load_peft_dora<float>(dir.path()), Contains("are both the lora_magnitude_vector"));
  }
  {
    TempDir dir;  // use_dora false: a LoRA folder
    write_peft_dora_folder(dir, ".lora_magnitude_vector", A, B, m, false);
    CHECK_THROWS_WITH(load_peft_dora<float>(dir.path()), Contains("use_dora is not true"));
  }
  {
    TempDir dir;  // a magnitude of the wrong length
    write_peft_dora_folder(dir, ".lora_magnitude_vector", A, B, Vector<float>::Ones(5));
    CHECK_THROWS_WITH(load_peft_dora<float>(dir.path()), Contains("lora_magnitude_vector") && Contains("expected [6]"));
  }
  {
    TempDir dir;  // a non-finite magnitude
    Vector<float> bad = m;
    bad(2) = std::numeric_limits<float>::infinity();
    write_peft_dora_folder(dir, ".lora_magnitude_vector", A, B, bad);
    CHECK_THROWS_AS(load_peft_dora<float>(dir.path()), IoError);
  }
  {
    TempDir dir;  // a module without its magnitude
    write_peft_dora_folder(dir, ".lora_magnitude_vector", A, B, m);
    SafetensorsWriter writer;
    writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", A);
    writer.add("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", B);
    writer.write(dir / "adapter_model.safetensors");
    CHECK_THROWS_WITH(load_peft_dora<float>(dir.path()), Contains("no lora_magnitude_vector"));
  }
}

TEST_CASE("A DoRA folder in PEFT's layout gives PEFT's output, gradients and merge (PyTorch reference)",
          "[io][peft][dora]") {
  // tests/fixtures/make_peft_dora.py wrote the folder with PEFT's names and config, and the reference with
  // PyTorch from PEFT's dora.py formulas (autograd for the gradients, the norm detached).
  const std::filesystem::path dir = std::filesystem::path(LORAKIT_SOURCE_DIR) / "tests" / "fixtures" / "peft-dora";
  const PeftDoraAdapter<float> loaded = load_peft_dora<float>(dir);
  REQUIRE(loaded.adapters.size() == 2);
  CHECK(loaded.adapters.at("model.layers.0.self_attn.v_proj").rank() == 2);  // rank_pattern
  SafetensorsReader reference(dir / "reference.safetensors");
  for (const auto& entry : loaded.adapters) {
    const std::string& module = entry.first;  // named, not a structured binding: the lambda below reads it
    const Dora<float>& dora = entry.second;
    INFO(module);
    const auto tensor = [&](const char* name) { return reference.matrix<float>(module + "." + name); };
    const Matrix<float> W = tensor("W"), x = tensor("x"), G = tensor("G");
    const Vector<float> bias = reference.vector<float>(module + ".bias");
    auto layer = AdaptedLinear<float, Dora<float>>::owning(W, dora);
    layer.set_bias(bias);
    Matrix<float> y(x.rows(), W.rows()), dx(x.rows(), W.cols());
    layer.forward(x, y);
    layer.backward(x, G, dx);
    const double tol = 1e-5;
    CHECK(lorakit::testing::relative_error(y, tensor("y")) < tol);
    CHECK(lorakit::testing::relative_error(dx, tensor("grad_x")) < tol);
    CHECK(lorakit::testing::relative_error(layer.adapter().grad_A(), tensor("grad_A")) < tol);
    CHECK(lorakit::testing::relative_error(layer.adapter().grad_B(), tensor("grad_B")) < tol);
    CHECK(lorakit::testing::relative_error(layer.adapter().grad_magnitude(),
                                           reference.vector<float>(module + ".grad_magnitude")) < tol);
    layer.merge();
    CHECK(lorakit::testing::relative_error(Matrix<float>(layer.weight()), tensor("merged")) < tol);
    layer.unmerge();
    CHECK(lorakit::testing::relative_error(Matrix<float>(layer.weight()), W) < tol);
  }
}

}  // namespace lorakit_test_io_peft_dora
