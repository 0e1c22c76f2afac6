// libFuzzer target of the adapter_config.json readers and of PEFT's pattern keys: the input is a config for a
// small LoRA folder and a small VeRA folder (written once), or, after a first line "KEY", a pattern key and the
// module names it is matched against. Any input must load or throw lorakit::Error, in bounded time (libFuzzer's
// -timeout catches a matcher that backtracks); a crash, a stack overflow from deep JSON, a leak, undefined
// behaviour or any other exception is a bug.
#include <lorakit/io/peft.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace {

std::filesystem::path scratch_folder(const char* method) {
  std::error_code error;
  const std::filesystem::path base = std::filesystem::exists("/dev/shm", error) ? std::filesystem::path("/dev/shm")
                                                                                 : std::filesystem::temp_directory_path();
  auto folder = base / ("lorakit-fuzz-" + std::string(method) + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);
  return folder;
}

std::filesystem::path lora_folder() {
  static const std::filesystem::path folder = [] {
    const auto dir = scratch_folder("lora");
    lorakit::io::SafetensorsWriter writer;
    writer.add("base_model.model.model.layers.0.q_proj.lora_A.weight", lorakit::Matrix<float>::Ones(2, 4));
    writer.add("base_model.model.model.layers.0.q_proj.lora_B.weight", lorakit::Matrix<float>::Ones(3, 2));
    writer.add("base_model.model.score.weight", lorakit::Matrix<float>::Ones(1, 2));
    writer.write(dir / lorakit::io::peft_weights_file, false);
    return dir;
  }();
  return folder;
}

std::filesystem::path vera_folder() {
  static const std::filesystem::path folder = [] {
    const auto dir = scratch_folder("vera");
    lorakit::io::SafetensorsWriter writer;
    writer.add("base_model.model.m.q.vera_lambda_b", lorakit::Vector<float>::Ones(3));
    writer.add("base_model.model.m.q.vera_lambda_d", lorakit::Vector<float>::Ones(2));
    writer.write(dir / lorakit::io::peft_weights_file, false);
    return dir;
  }();
  return folder;
}

void write_config(const std::filesystem::path& dir, const std::uint8_t* data, std::size_t size) {
  std::FILE* out = std::fopen((dir / lorakit::io::peft_config_file).c_str(), "wb");
  if (out == nullptr) return;
  if (size > 0) std::fwrite(data, 1, size, out);
  std::fclose(out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  if (input.rfind("KEY\n", 0) == 0) {
    // "KEY\n<key>\n<name>\n<name>...": a pattern key against module names.
    const auto key_end = input.find('\n', 4);
    const std::string key = input.substr(4, key_end == std::string::npos ? std::string::npos : key_end - 4);
    try {
      const lorakit::io::detail::KeyRegex regex(key);
      std::size_t begin = key_end == std::string::npos ? input.size() : key_end + 1;
      while (begin < input.size()) {
        const auto end = input.find('\n', begin);
        (void)regex.matches(input.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
        begin = end == std::string::npos ? input.size() : end + 1;
      }
    } catch (const lorakit::Error&) {
    }
    return 0;
  }
  write_config(lora_folder(), data, size);
  try {
    (void)lorakit::io::load_peft<float>(lora_folder());
  } catch (const lorakit::Error&) {
  }
  write_config(vera_folder(), data, size);
  try {
    (void)lorakit::io::load_peft_vera<float>(vera_folder(), {{"m.q", 4}});
  } catch (const lorakit::Error&) {
  }
  return 0;
}
