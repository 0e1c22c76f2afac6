// A consumer of lorakit: one adapter, one forward pass, checked against the dense update.
#include <lorakit/lorakit.hpp>

#include <cstdio>

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
  return ok ? 0 : 1;
}
