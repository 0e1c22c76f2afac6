// A consumer of lorakit: one adapter, one forward pass, checked against the dense update; and the version macros.
#include <lorakit/lorakit.hpp>

#include <cstdio>
#include <cstring>
#include <string>

int main() {
  lorakit::LoraConfig config;
  config.rank = 4;
  config.init = lorakit::LoraInit::gaussian;
  lorakit::Lora<float> adapter(16, 8, config);
  adapter.B().setConstant(0.5f);
  lorakit::Matrix<float> x = lorakit::Matrix<float>::Ones(3, 16);
  lorakit::Matrix<float> y = lorakit::Matrix<float>::Zero(3, 8);
  adapter.forward(x, y);
  const lorakit::Matrix<float> expected = x * adapter.delta_weight().transpose();
  const bool ok = (y - expected).norm() <= 1e-5f * (1.0f + expected.norm());
  std::printf("consumer: %s\n", ok ? "ok" : "mismatch");
  const std::string version = std::to_string(LORAKIT_VERSION_MAJOR) + "." + std::to_string(LORAKIT_VERSION_MINOR) +
                              "." + std::to_string(LORAKIT_VERSION_PATCH);
  std::printf("consumer: lorakit %s\n", version.c_str());
#ifdef CONSUMER_PACKAGE_VERSION
  if (version != CONSUMER_PACKAGE_VERSION) {
    std::printf("consumer: the package says version %s, the headers %s\n", CONSUMER_PACKAGE_VERSION, version.c_str());
    return 1;
  }
#endif
  return ok ? 0 : 1;
}
