// Calls every decomposition and product kernel that core/eigen_instances.hpp compiles once, in a unit built with
// LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS: tests/header_cost/CMakeLists.txt checks that the unit compiles none of them
// (it only refers to the copies that the instantiating unit holds).
#include <lorakit/lorakit.hpp>

namespace {

template <class T>
void call_decompositions(const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& m) {
  using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
  const Eigen::BDCSVD<ColMatrix> bdcsvd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::JacobiSVD<ColMatrix> jacobi(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::SelfAdjointEigenSolver<ColMatrix> eigen(m);
  const Eigen::LLT<ColMatrix> llt(m);
  const Eigen::HouseholderQR<ColMatrix> qr(m);
  ColMatrix in_place = m, q, r;
  const Eigen::HouseholderQR<Eigen::Ref<ColMatrix>> qr_in_place(in_place);
  lorakit::detail::orthonormalize_columns<T>(in_place);
  lorakit::detail::thin_qr<T>(m, q, r);
  const lorakit::Matrix<T> row_major = m;
  lorakit::randomized_svd<T>(row_major, 1);
  lorakit::product_svd<T>(row_major, row_major, 1);
  // The four storage orders of a product's operands.
  ColMatrix product = m * m;
  product += m * row_major;
  product += row_major * m;
  product += row_major * row_major;
}

}  // namespace

int main() {
  const Eigen::MatrixXd m = Eigen::MatrixXd::Identity(4, 4);
  call_decompositions<float>(m.cast<float>());
  call_decompositions<double>(m);
  lorakit::smallest_eigenpairs_dense(m, 1);
  Eigen::MatrixXd block = m.leftCols(1);
  lorakit::Rng rng(1);
  lorakit::detail::orthonormalize_krylov_block(m.rightCols(2), block, rng);
  return 0;
}
