// A consumer of lorakit's io/: a matrix written to a safetensors file and read back.
#include <lorakit/io/safetensors.hpp>

#include <cstdio>
#include <filesystem>

int main(int argc, char** argv) {
  const std::filesystem::path file = argc > 1 ? argv[1] : "consumer_io.safetensors";
  lorakit::Matrix<float> m(2, 3);
  m << 1, 2, 3, 4, 5, 6;
  lorakit::io::SafetensorsWriter writer;
  writer.add("m", m);
  writer.write(file);
  const lorakit::io::SafetensorsReader reader(file);
  const bool ok = reader.matrix<float>("m") == m;
  std::printf("consumer_io: %s\n", ok ? "ok" : "mismatch");
  return ok ? 0 : 1;
}
