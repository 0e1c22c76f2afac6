// Eigen's dense decompositions and matrix-product kernels that lorakit uses, and lorakit's own decompositions built
// on them, instantiated once: an opt-in for faster builds.
//
// lorakit is header-only, so every translation unit that reaches an SVD compiles Eigen's BDCSVD (and the
// JacobiSVD it uses on small blocks) anew for each scalar type, which is most of the compile time of such a unit
// (docs/getting-started.md, "Build time"); every unit with a matrix product compiles Eigen's GEMM kernel too. A
// project with several units can compile them once instead:
//
//   1. define LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS in every unit (for example with CMake's
//      target_compile_definitions): lorakit/core/types.hpp then includes this header, which declares the
//      instances below `extern template`, so no unit instantiates them;
//   2. in exactly one .cpp of the program, define LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS before any include
//      and include this header: that unit holds the explicit instantiations.
//
// The code is the same, compiled once; results do not change. All units must be compiled with the same
// flags (the same -march in particular), as for any code linked into one program. The instantiating unit may be
// optimized more than the others (lorakit's sanitizer build compiles it at -O1 and its tests at -O0): the
// products and decompositions then run at its speed wherever they are called.
#pragma once

#include <Eigen/Dense>

// Over Eigen's column-major dynamic matrices (the layout the kernel hands the decompositions), in float and double.
// A class's explicit instantiation does not reach its member templates, so the ones that do the work are named too
// (the solvers' compute, run by their constructors from a matrix), and so is the in-place QR on a Ref (the kernel's
// orthonormalization), whose class as a whole does not instantiate (a Ref has no default constructor).
#define LORAKIT_EIGEN_DECOMPOSITIONS(PREFIX)                                                                      \
  LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS(PREFIX, float)                                                              \
  LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS(PREFIX, double)                                                             \
  LORAKIT_EIGEN_PRODUCTS(PREFIX, float)                                                                           \
  LORAKIT_EIGEN_PRODUCTS(PREFIX, double)

#define LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS(PREFIX, T)                                                            \
  PREFIX template class Eigen::BDCSVD<Eigen::Matrix<T, -1, -1>>;                                                  \
  PREFIX template class Eigen::JacobiSVD<Eigen::Matrix<T, -1, -1>>;                                               \
  PREFIX template class Eigen::SelfAdjointEigenSolver<Eigen::Matrix<T, -1, -1>>;                                  \
  PREFIX template Eigen::SelfAdjointEigenSolver<Eigen::Matrix<T, -1, -1>>&                                        \
  Eigen::SelfAdjointEigenSolver<Eigen::Matrix<T, -1, -1>>::compute(const Eigen::EigenBase<Eigen::Matrix<T, -1, -1>>&, \
                                                                   int);                                          \
  PREFIX template class Eigen::HouseholderQR<Eigen::Matrix<T, -1, -1>>;                                           \
  PREFIX template void Eigen::HouseholderQR<Eigen::Ref<Eigen::Matrix<T, -1, -1>>>::computeInPlace();              \
  PREFIX template class Eigen::LLT<Eigen::Matrix<T, -1, -1>>;                                                     \
  PREFIX template Eigen::LLT<Eigen::Matrix<T, -1, -1>>& Eigen::LLT<Eigen::Matrix<T, -1, -1>>::compute(            \
      const Eigen::EigenBase<Eigen::Matrix<T, -1, -1>>&);

// The matrix-matrix products (Eigen 3.4's GEMM): the blocked product for each storage order of the two operands
// (a row-major result is computed as the transposed column-major one) and its inner kernel, which other products
// (triangular, self-adjoint) share. Eigen's own names, internal to Eigen 3.4, which lorakit requires.
#define LORAKIT_EIGEN_GEMM(PREFIX, T, LHS_ORDER, RHS_ORDER)                                                       \
  PREFIX template struct Eigen::internal::general_matrix_matrix_product<Eigen::Index, T, LHS_ORDER, false, T,     \
                                                                        RHS_ORDER, false, Eigen::ColMajor, 1>;
#define LORAKIT_EIGEN_PRODUCTS(PREFIX, T)                                                                         \
  LORAKIT_EIGEN_GEMM(PREFIX, T, Eigen::ColMajor, Eigen::ColMajor)                                                 \
  LORAKIT_EIGEN_GEMM(PREFIX, T, Eigen::ColMajor, Eigen::RowMajor)                                                 \
  LORAKIT_EIGEN_GEMM(PREFIX, T, Eigen::RowMajor, Eigen::ColMajor)                                                 \
  LORAKIT_EIGEN_GEMM(PREFIX, T, Eigen::RowMajor, Eigen::RowMajor)                                                 \
  PREFIX template struct Eigen::internal::gebp_kernel<                                                            \
      T, T, Eigen::Index, Eigen::internal::blas_data_mapper<T, Eigen::Index, Eigen::ColMajor, Eigen::Unaligned, 1>, \
      Eigen::internal::gebp_traits<T, T>::mr, Eigen::internal::gebp_traits<T, T>::nr, false, false>;

#ifdef LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
LORAKIT_EIGEN_DECOMPOSITIONS()
#else
LORAKIT_EIGEN_DECOMPOSITIONS(extern)
#endif
#undef LORAKIT_EIGEN_DECOMPOSITIONS
#undef LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS
#undef LORAKIT_EIGEN_GEMM
#undef LORAKIT_EIGEN_PRODUCTS

// lorakit's decompositions (the kernel's QR, randomized and product SVDs, the dense symmetric eigensolver) follow
// the same switch: each of their headers ends with its instances, written once for both sides as
// `LORAKIT_DECOMPOSITION_INSTANCE <the explicit instantiation>;`.
#ifdef LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
#define LORAKIT_DECOMPOSITION_INSTANCE template
#include "lorakit/kernel/product_svd.hpp"
#include "lorakit/kernel/randomized_svd.hpp"
#include "lorakit/kernel/svd.hpp"
#include "lorakit/kernel/symmetric_eigen.hpp"
#else
#define LORAKIT_DECOMPOSITION_INSTANCE extern template
#endif
