// libFuzzer target of the GGUF reader and the LoRA adapter reader: any input must either read or throw
// lorakit::Error; a crash, a leak, undefined behaviour or any other exception is a bug.
#include <lorakit/io/gguf.hpp>
#include <lorakit/io/gguf_lora.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace {

std::filesystem::path scratch_file() {
  std::error_code error;
  std::filesystem::path folder = std::filesystem::exists("/dev/shm", error) ? std::filesystem::path("/dev/shm")
                                                                             : std::filesystem::temp_directory_path();
  return folder / ("lorakit-fuzz-" + std::to_string(::getpid()) + ".gguf");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::filesystem::path file = scratch_file();
  {
    std::FILE* out = std::fopen(file.c_str(), "wb");
    if (out == nullptr) return 0;
    if (size > 0) std::fwrite(data, 1, size, out);
    std::fclose(out);
  }
  try {
    const lorakit::io::GgufReader reader(file);
    for (const auto& tensor : reader.tensors()) {
      const auto m = reader.matrix<float>(tensor.name);
      if (m.size() != tensor.numel()) __builtin_trap();
    }
  } catch (const lorakit::Error&) {
  }
  try {
    (void)lorakit::io::load_gguf_lora<float>(file);
  } catch (const lorakit::Error&) {
  }
  return 0;
}
