// Tests of the readers and writers on hostile input and interrupted saves: PEFT's pattern keys matched in linear
// time (checked against std::regex on safe keys), JSON depth refused before parsing, bounded error messages,
// special files refused without blocking, values and sizes validated before use, and adapter folders that are
// replaced as a whole (a forked writer killed with SIGKILL at random moments, then loaded).
#include <catch2/catch.hpp>

#include "io_test_support.hpp"

#include <lorakit/core/random.hpp>
#include <lorakit/io/peft.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#define LORAKIT_TEST_POSIX 1
#else
#define LORAKIT_TEST_POSIX 0
#endif

namespace lorakit_test_io_hardening {

using namespace lorakit;
using namespace lorakit::io;
using lorakit::testing::TempDir;
using Catch::Contains;

namespace {

Lora<float> lora_with(Index in, Index out, Index rank, double alpha, std::uint64_t seed) {
  LoraConfig config;
  config.rank = rank;
  config.alpha = alpha;
  config.seed = seed;
  Lora<float> lora(in, out, config);
  Rng(seed + 100).fill_normal(lora.B(), 0.0f, 0.5f);
  return lora;
}

/// The message of the lorakit::Error that `call` throws (fails the test when it throws nothing or another type).
template <class Call>
std::string error_of(Call&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("an exception that is not a lorakit::Error: " << e.what());
  }
  FAIL("no exception");
  return {};
}

/// A minimal valid LoRA folder: module m.q, rank 2, in 4, out 3.
void write_lora_folder(const TempDir& dir, const std::string& config) {
  SafetensorsWriter writer;
  writer.add("base_model.model.m.q.lora_A.weight", Matrix<float>::Ones(2, 4));
  writer.add("base_model.model.m.q.lora_B.weight", Matrix<float>::Ones(3, 2));
  writer.write(dir / "adapter_model.safetensors");
  lorakit::testing::write_bytes(dir / "adapter_config.json", config);
}

/// The same modules (in any order) with the same ranks, alphas and factors, bit for bit.
bool same_adapters(const AdapterSet<Lora<float>>& a, const AdapterSet<Lora<float>>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, lora] : a) {
    if (!b.contains(name)) return false;
    const Lora<float>& other = b.at(name);
    if (lora.rank() != other.rank() || lora.config().alpha != other.config().alpha || lora.A() != other.A() ||
        lora.B() != other.B()) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("pattern keys follow PEFT's matching, checked against std::regex", "[io][pattern]") {
  // PEFT: re.match(rf"(.*\.)?({key})$", name). On these keys ECMAScript and Python agree.
  const std::vector<std::string> keys = {"q_proj", "layers\\.1\\..*", "layers.1.q_proj", "(q|k)_proj", "h\\.[0-9]+\\.attn",
                                         "a*b?", "(ab|a)+c", "[^.]+", "x{2,3}", ".*", "mlp\\.(up|down)_proj", "1"};
  const std::vector<std::string> names = {"q_proj", "model.layers.1.q_proj", "model.layers.11.q_proj", "k_proj",
                                          "xq_proj", "transformer.h.10.attn", "h.1.attn.c", "", "aab", "b.abac",
                                          "x.xxx", "xxxx", "m.mlp.up_proj", "a.1", "11"};
  for (const auto& key : keys) {
    const std::regex reference("(.*\\.)?(" + key + ")$");
    const io::detail::KeyRegex compiled(key);
    for (const auto& name : names) {
      INFO("key " << key << ", name " << name);
      CHECK(compiled.matches(name) == std::regex_match(name, reference));
    }
  }
  PeftPattern pattern;
  pattern.add("layers\\.1\\..*", 3);
  pattern.add("q_proj", 5);
  CHECK(pattern.value_for("model.layers.1.q_proj", 8) == 3);  // the first matching key wins
  CHECK(pattern.value_for("model.layers.2.q_proj", 8) == 5);
  CHECK(pattern.value_for("model.layers.2.xq_proj", 8) == 8);
}

TEST_CASE("pattern keys that make backtracking engines blow up run in linear time", "[io][pattern]") {
  // A backtracking engine takes hours (or overflows its stack) on these: the test then fails by ctest's timeout of
  // the case (300 s), not by a clock of its own, which a loaded machine made fail at 2 s.
  const std::string as(20000, 'a');
  CHECK_FALSE(io::detail::KeyRegex("(a|aa)+").matches(as + "b"));
  CHECK(io::detail::KeyRegex("(a|aa)+").matches(as));
  CHECK_FALSE(io::detail::KeyRegex("(a*)*b").matches(as));
  CHECK(io::detail::KeyRegex("(a*)*b").matches(as + "b"));
  std::string dotted;
  for (int i = 0; i < 5000; ++i) dotted += "ab.";
  dotted += "q";
  CHECK(io::detail::KeyRegex("q").matches(dotted));
  CHECK(io::detail::KeyRegex("(.*)*(ab\\.)+q").matches(dotted));

  // The same through load_peft, with a 20,000-character module name.
  TempDir dir;
  const std::string module = "m." + as;
  SafetensorsWriter writer;
  writer.add("base_model.model." + module + ".lora_A.weight", Matrix<float>::Ones(2, 4));
  writer.add("base_model.model." + module + ".lora_B.weight", Matrix<float>::Ones(3, 2));
  writer.write(dir / "adapter_model.safetensors");
  lorakit::testing::write_bytes(dir / "adapter_config.json",
                                R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                    "alpha_pattern": {"(a|aa)+b": 7, "(a*)*b": 9, "m\\.(a|aa)+": 6}})");
  CHECK(load_peft<float>(dir.path()).adapters.at(module).config().alpha == 6);
}

TEST_CASE("unsupported or oversized pattern keys are refused with an IoError naming the file", "[io][pattern]") {
  for (const char* key : {"(?=q)", "(q)\\1", "\\bq", "(?i)q", "(", "a**", "x{1000}{1000}"}) {
    INFO(key);
    CHECK_THROWS_AS(io::detail::KeyRegex(key), ValueError);
  }
  CHECK_THROWS_AS(io::detail::KeyRegex(std::string(5000, 'a')), ValueError);
  TempDir dir;
  write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2, "rank_pattern": {"(?<=m\\.)q": 2}})");
  const std::string message = error_of([&] { load_peft<float>(dir.path()); });
  CHECK_THAT(message, Contains("load_peft") && Contains("adapter_config.json") && Contains("rank_pattern"));
}

TEST_CASE("JSON nested beyond the limit is refused before parsing", "[io][json]") {
  TempDir dir;
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  SECTION("in a safetensors header") {
    const auto file = dir / "deep.safetensors";
    const std::string header = R"({"a": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 0]}})";
    lorakit::testing::write_bytes(file, lorakit::testing::safetensors_bytes(header, ""));
    const std::string message = error_of([&] { SafetensorsReader reader(file); });
    CHECK_THAT(message, Contains("deep.safetensors") && Contains("nested deeper than 64"));
    CHECK(message.size() < 400);
  }
  SECTION("in an ignored key of adapter_config.json, and in peft_type") {
    write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2, "x": )" + std::string(100000, '[') + "]}");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }),
               Contains("adapter_config.json") && Contains("nested deeper"));
    write_lora_folder(dir, R"({"r": 2, "peft_type": )" + deep + "}");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }), Contains("nested deeper"));
  }
  SECTION("64 levels are still read") {
    lorakit::testing::write_bytes(dir / "ok.json", "{\"a\": " + std::string(63, '[') + std::string(63, ']') + "}");
    CHECK(io::detail::read_json_object("test", dir / "ok.json").contains("a"));
  }
}

TEST_CASE("error messages show a bounded excerpt of what the file holds", "[io][json]") {
  TempDir dir;
  const std::string long_name(1'000'000, 'n');
  const auto file = dir / "long.safetensors";
  const std::string header = "{\"" + long_name + R"(": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})";
  lorakit::testing::write_bytes(file, lorakit::testing::safetensors_bytes(header, "abcd"));
  const std::string message = error_of([&] { SafetensorsReader reader(file); });
  CHECK_THAT(message, Contains("size mismatch") && Contains("(1000000 characters)"));
  CHECK(message.size() < 600);

  write_lora_folder(dir, R"({"peft_type": "LORA", "r": ")" + long_name + "\"}");
  const std::string config_message = error_of([&] { load_peft<float>(dir.path()); });
  CHECK_THAT(config_message, Contains("r is") && Contains("expected a positive integer"));
  CHECK(config_message.size() < 600);
  std::string many = "1";
  for (int i = 0; i < 50000; ++i) many += ",1";
  write_lora_folder(dir, R"({"peft_type": "LORA", "r": [)" + many + "]}");
  const std::string array_message = error_of([&] { load_peft<float>(dir.path()); });
  CHECK_THAT(array_message, Contains("r is an array of 50001 elements"));
  CHECK(array_message.size() < 600);
}

TEST_CASE("a header that is {} followed by garbage is refused", "[io][json]") {
  TempDir dir;
  const auto file = dir / "garbage.safetensors";
  lorakit::testing::write_bytes(file, lorakit::testing::safetensors_bytes(std::string("{}\0\0xyz", 7), ""));
  CHECK_THAT(error_of([&] { SafetensorsReader reader(file); }), Contains("garbage.safetensors") && Contains("NUL byte"));
  lorakit::testing::write_bytes(file, lorakit::testing::safetensors_bytes("{}xyz", ""));
  CHECK_THAT(error_of([&] { SafetensorsReader reader(file); }), Contains("not valid JSON"));
  write_lora_folder(dir, std::string("{\"peft_type\": \"LORA\"}\0junk", 26));
  CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }), Contains("adapter_config.json") && Contains("NUL byte"));
}

#if LORAKIT_TEST_POSIX
TEST_CASE("special files are refused with an IoError, without blocking", "[io][files]") {
  TempDir dir;
  write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2})");
  const auto weights = dir / "adapter_model.safetensors", config = dir / "adapter_config.json";
  SECTION("adapter_config.json is a directory") {
    std::filesystem::remove(config);
    std::filesystem::create_directory(config);
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }),
               Contains("load_peft") && Contains("adapter_config.json") && Contains("is a directory"));
  }
  SECTION("the weights are a FIFO without a writer") {
    std::filesystem::remove(weights);
    REQUIRE(::mkfifo(weights.c_str(), 0600) == 0);
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }), Contains("adapter_model.safetensors") && Contains("a FIFO"));
  }
  SECTION("the weights are a symlink loop") {
    std::filesystem::remove(weights);
    std::filesystem::create_symlink(dir / "loop2", weights);
    std::filesystem::create_symlink(weights, dir / "loop2");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }),
               Contains("adapter_model.safetensors") && Contains("cannot open"));
  }
  SECTION("the weights are a device") {
    std::filesystem::remove(weights);
    std::filesystem::create_symlink("/dev/zero", weights);
    CHECK_THAT(error_of([&] { SafetensorsReader reader(weights); }), Contains("a character device"));
  }
}
#endif

TEST_CASE("values and names are validated where they enter", "[io][peft]") {
  TempDir dir;
  SECTION("an alpha whose scaling overflows float") {
    write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2, "lora_alpha": 1e40})");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }),
               Contains("adapter_config.json") && Contains("lora_alpha") && Contains("not finite in float"));
    write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2, "alpha_pattern": {"q": 1e300}, "use_rslora": true})");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }), Contains("not finite in float"));
    CHECK(load_peft<double>(dir.path()).adapters.at("m.q").config().alpha == 1e300);
  }
  SECTION("a NaN in a tensor that is not a LoRA factor") {
    write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2})");
    SafetensorsWriter writer;
    writer.add("base_model.model.m.q.lora_A.weight", Matrix<float>::Ones(2, 4));
    writer.add("base_model.model.m.q.lora_B.weight", Matrix<float>::Ones(3, 2));
    Matrix<float> head = Matrix<float>::Ones(2, 2);
    head(1, 0) = std::numeric_limits<float>::quiet_NaN();
    writer.add("base_model.model.score.weight", head);
    writer.write(dir / "adapter_model.safetensors");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }),
               Contains("adapter_model.safetensors") && Contains("score.weight") && Contains("nan at [1, 0]"));
  }
  SECTION("one tensor named with and without base_model.model.") {
    write_lora_folder(dir, R"({"peft_type": "LORA", "r": 2})");
    SafetensorsWriter writer;
    writer.add("base_model.model.m.lora_A.weight", Matrix<float>::Ones(2, 4));
    writer.add("base_model.model.m.lora_B.weight", Matrix<float>::Ones(3, 2));
    writer.add("m.lora_A.weight", Matrix<float>::Zero(2, 4));
    writer.add("m.lora_B.weight", Matrix<float>::Zero(3, 2));
    writer.write(dir / "adapter_model.safetensors");
    CHECK_THAT(error_of([&] { load_peft<float>(dir.path()); }),
               Contains("both name 'm.lora_A.weight'") && Contains("adapter_model.safetensors"));
  }
  SECTION("a VeRA rank of 2^40 without stored projections is refused before any allocation") {
    SafetensorsWriter writer;
    writer.add("base_model.model.m.q.vera_lambda_b", Vector<float>::Ones(3));
    writer.add("base_model.model.m.q.vera_lambda_d", Vector<float>::Ones(2));
    writer.write(dir / "adapter_model.safetensors");
    lorakit::testing::write_bytes(dir / "adapter_config.json",
                                  R"({"peft_type": "VERA", "r": 1099511627776, "save_projection": false})");
    CHECK_THAT(error_of([&] { load_peft_vera<float>(dir.path(), {{"m.q", 4}}); }),
               Contains("load_peft_vera") && Contains("vera_lambda_d [2]") && Contains("expected [out] and [1099511627776]"));
    lorakit::testing::write_bytes(dir / "adapter_config.json", R"({"peft_type": "VERA", "r": 2})");
    CHECK(load_peft_vera<float>(dir.path(), {{"m.q", 4}}).adapters.at("m.q").out_features() == 3);
    CHECK_THROWS_AS(load_peft_vera<float>(dir.path(), {{"m.q", 0}}), ValueError);
  }
}

TEMPLATE_TEST_CASE("save_peft_vera writes a read PeftVeraAdapter back, extras included", "[io][peft][vera]", float, double) {
  using T = TestType;
  TempDir dir, again;
  const auto projections = VeraProjections<T>::for_layers(4, {{6, 5}}, 7);
  VeraConfig config;
  config.rank = 4;
  config.projection_seed = 7;
  AdapterSet<Vera<T>> set;
  Vera<T>& q = set.add("m.q", Vera<T>(projections, 6, 5, config));
  Rng(1).fill_normal(q.lambda_b(), T(0), T(1));
  PeftVeraSaveOptions options;
  options.task_type = "CAUSAL_LM";
  save_peft_vera(dir.path(), set, options);
  // Add a head PEFT would save with modules_to_save.
  {
    const SafetensorsReader reader(dir / "adapter_model.safetensors");
    SafetensorsWriter writer;
    for (const auto& tensor : reader.tensors()) writer.add(tensor.name, reader.matrix<float>(tensor.name), Dtype::F32, tensor.shape);
    writer.add("base_model.model.score.weight", Matrix<float>::Constant(2, 3, 0.5f));
    writer.write(dir / "adapter_model.safetensors");
    auto json = nlohmann::json::parse(lorakit::testing::read_bytes(dir / "adapter_config.json"));
    json["modules_to_save"] = {"score"};
    lorakit::testing::write_bytes(dir / "adapter_config.json", json.dump());
  }
  const PeftVeraAdapter<T> loaded = load_peft_vera<T>(dir.path(), {{"m.q", 6}});
  save_peft_vera(again.path(), loaded);
  const PeftVeraAdapter<T> back = load_peft_vera<T>(again.path(), {{"m.q", 6}});
  CHECK(back.adapters.at("m.q").lambda_b() == loaded.adapters.at("m.q").lambda_b());
  CHECK(back.extra_tensors.at("score.weight") == Matrix<T>::Constant(2, 3, T(0.5)));
  CHECK(back.extra_shapes.at("score.weight") == std::vector<std::int64_t>{2, 3});
  CHECK(back.config["modules_to_save"] == nlohmann::json::array({"score"}));
  CHECK(back.config["task_type"] == "CAUSAL_LM");
  CHECK(again.files().size() == 2);
}

TEST_CASE("an adapter folder is replaced as a whole", "[io][atomic]") {
  TempDir dir;
  AdapterSet<Lora<float>> a, b;
  a.add("m.q", lora_with(6, 5, 2, 4, 1));
  b.add("m.q", lora_with(6, 5, 3, 12, 2));
  b.add("m.v", lora_with(6, 5, 3, 12, 3));
  save_peft(dir.path(), a);
  const std::string config_a = lorakit::testing::read_bytes(dir / "adapter_config.json");
  save_peft(dir.path(), b);
  const std::string config_b = lorakit::testing::read_bytes(dir / "adapter_config.json");
  CHECK(dir.files().size() == 2);

  SECTION("a save killed after its commit point loads as the new adapter, and the next save completes it") {
    // The state a kill between the weights' rename and the config's leaves: new weights, old config, staged new.
    lorakit::testing::write_bytes(dir / ".adapter_config.json.staged", config_b);
    lorakit::testing::write_bytes(dir / "adapter_config.json", config_a);
    CHECK(same_adapters(load_peft<float>(dir.path()).adapters, b));
    save_peft(dir.path(), b);
    CHECK(dir.files().size() == 2);
    CHECK(lorakit::testing::read_bytes(dir / "adapter_config.json") == config_b);
  }
  SECTION("a save killed before its commit point loads as the old adapter") {
    lorakit::testing::write_bytes(dir / ".adapter_config.json.staged", config_a);
    CHECK(same_adapters(load_peft<float>(dir.path()).adapters, b));
    save_peft(dir.path(), a);
    CHECK(dir.files().size() == 2);
    CHECK(same_adapters(load_peft<float>(dir.path()).adapters, a));
  }
  SECTION("a config edited by hand is read as it is") {
    auto json = nlohmann::json::parse(config_b);
    json["lora_alpha"] = 6;
    lorakit::testing::write_bytes(dir / "adapter_config.json", json.dump());
    CHECK(load_peft<float>(dir.path()).adapters.at("m.v").config().alpha == 6);
  }
#if LORAKIT_TEST_POSIX
  SECTION("temporaries of dead writers are removed by the next save; a live writer's are kept") {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ::waitpid(child, nullptr, 0);  // a process id that is no longer in use
    const std::string dead = std::to_string(child), alive = std::to_string(::getppid());
    lorakit::testing::write_bytes(dir / (".adapter_model.safetensors.tmp-" + dead + "-0"), "partial");
    // AtomicFile names the staged config's temporary "." + ".adapter_config.json.staged" + ".tmp-<pid>-<n>".
    lorakit::testing::write_bytes(dir / ("..adapter_config.json.staged.tmp-" + dead + "-3"), "partial");
    lorakit::testing::write_bytes(dir / (".adapter_config.json.tmp-" + alive + "-1"), "in progress");
    save_peft(dir.path(), a);
    const auto files = dir.files();
    CHECK(files.size() == 3);
    CHECK(std::find(files.begin(), files.end(), ".adapter_config.json.tmp-" + alive + "-1") != files.end());
  }
#endif
}

#if LORAKIT_TEST_POSIX
TEST_CASE("a writer killed at random moments leaves exactly one of its two adapters", "[io][atomic]") {
  TempDir dir;
  AdapterSet<Lora<float>> a, b;
  a.add("m.q", lora_with(16, 12, 2, 4, 1));
  a.add("m.k", lora_with(16, 12, 2, 8, 2));
  b.add("m.q", lora_with(16, 12, 3, 12, 3));
  b.add("m.v", lora_with(16, 12, 4, 12, 4));
  // Kill moments spread over one cycle of the writer (two saves, fsyncs included), measured here.
  const auto start = std::chrono::steady_clock::now();
  save_peft(dir.path(), b);
  save_peft(dir.path(), a);
  const auto cycle = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  std::mt19937 random(20);
  // Up to three cycles at first; a forked writer may start slower than the measured one (page faults,
  // sanitizers), so the range doubles whenever four kills in a row found the same adapter.
  const long initial_delay_us = std::max<long>(2000, static_cast<long>(cycle.count() * 3));
  long max_delay_us = initial_delay_us;
  int loads_a = 0, loads_b = 0, kills = 0, same_in_a_row = 0;
  bool last_was_a = true;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(3000);
  while (std::chrono::steady_clock::now() < deadline && kills < 80) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Writers alternate which adapter they save first, so that both states are reached whatever the timing.
      const auto& first = kills % 2 == 0 ? a : b;
      const auto& second = kills % 2 == 0 ? b : a;
      try {
        for (;;) {
          save_peft(dir.path(), first);
          save_peft(dir.path(), second);
        }
      } catch (...) {
        ::_exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<long>(0, max_delay_us)(random)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFSIGNALED(status));  // the writer never failed by itself
    ++kills;
    PeftAdapter<float> loaded;
    REQUIRE_NOTHROW(loaded = load_peft<float>(dir.path()));
    const bool is_a = same_adapters(loaded.adapters, a), is_b = same_adapters(loaded.adapters, b);
    REQUIRE((is_a || is_b));
    (is_a ? loads_a : loads_b)++;
    same_in_a_row = is_a == last_was_a ? same_in_a_row + 1 : 0;
    last_was_a = is_a;
    if (same_in_a_row >= 4) {
      max_delay_us = std::min<long>(2 * max_delay_us, 8 * initial_delay_us);
      same_in_a_row = 0;
    }
    // At most the dead writer's leftovers: a staged config and two temporaries.
    REQUIRE(dir.files().size() <= 5);
  }
  INFO("cycle " << cycle.count() << " us, last delay range " << max_delay_us << " us, kills " << kills << ", loads of a " << loads_a << ", of b " << loads_b);
  CHECK(kills >= 5);
  CHECK(loads_a > 0);  // both states were reached
  CHECK(loads_b > 0);
  save_peft(dir.path(), a);
  CHECK(dir.files().size() == 2);  // nothing accumulated
  CHECK(same_adapters(load_peft<float>(dir.path()).adapters, a));
}
#endif

}  // namespace lorakit_test_io_hardening
