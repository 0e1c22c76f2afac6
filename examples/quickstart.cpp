// quickstart: put a LoRA adapter on a frozen linear layer, train it with AdamW to learn a planted
// low-rank change of the layer (teacher-student), then merge it into the weight.
#include <lorakit/lorakit.hpp>

#include <cstdio>

int main() {
  using T = float;
  using lorakit::Matrix;
  const lorakit::Index in = 256, out = 128, rank = 8, batch = 64;

  // A frozen "pretrained" layer, and a teacher that differs from it by a rank-8 update.
  lorakit::Rng rng(7);
  Matrix<T> W(out, in), U(out, rank), V(rank, in);
  rng.fill_normal(W, 0.0f, 0.05f);
  rng.fill_normal(U, 0.0f, 0.2f);
  rng.fill_normal(V, 0.0f, 0.2f);
  const Matrix<T> W_teacher = W + U * V;

  lorakit::LoraConfig config;
  config.rank = rank;
  config.alpha = 16;
  auto layer = lorakit::AdaptedLinear<T, lorakit::Lora<T>>::owning(W, lorakit::Lora<T>(in, out, config));
  lorakit::AdamWConfig adamw;
  adamw.lr = 5e-3;
  adamw.weight_decay = 0;
  lorakit::AdamW<T> optimizer(layer.adapter().parameters(), adamw);

  Matrix<T> x(batch, in), y(batch, out), target(batch, out), dy(batch, out), dx(batch, in);
  for (int step = 1; step <= 1500; ++step) {
    rng.fill_normal(x, 0.0f, 1.0f);
    target.noalias() = x * W_teacher.transpose();
    layer.forward(x, y);
    dy = (y - target) * (T(2) / static_cast<T>(y.size()));  // d/dy of the mean squared error
    optimizer.zero_grad();
    layer.backward(x, dy, dx);
    optimizer.step();
    if (step % 300 == 0) {
      const double relative = (layer.adapter().delta_weight() - U * V).norm() / (U * V).norm();
      std::printf("step %4d  loss %.3e  |dW - UV| / |UV| = %.3e\n", step, (y - target).squaredNorm() / y.size(),
                  relative);
    }
  }

  layer.merge();  // W += s B A: the forward is now a single product
  const double merged_error = (layer.weight() - W_teacher).norm() / W_teacher.norm();
  std::printf("merged weight vs teacher: relative error %.3e; trainable parameters %lld of %lld\n", merged_error,
              static_cast<long long>(layer.adapter().num_parameters()), static_cast<long long>(W.size()));
  return merged_error < 1e-2 ? 0 : 1;
}
