// Eigen's dense decompositions that lorakit uses, and lorakit's own built on them, instantiated once: an opt-in
// for faster builds.
//
// lorakit is header-only, so every translation unit that reaches an SVD compiles Eigen's BDCSVD (and the
// JacobiSVD it uses on small blocks) anew for each scalar type, which is most of the compile time of such a unit
// (docs/getting-started.md, "Build time"). A project with several units can compile them once instead:
//
//   1. define LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS in every unit (for example with CMake's
//      target_compile_definitions): lorakit/core/types.hpp then includes this header, which declares the
//      classes below `extern template`, so no unit instantiates their members;
//   2. in exactly one .cpp of the program, define LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS before any include
//      and include this header: that unit holds the explicit instantiations.
//
// The code is the same, compiled once; results do not change. All units must be compiled with the same
// flags (the same -march in particular), as for any code linked into one program.
#pragma once

#include <Eigen/Dense>

// The decompositions, over Eigen's column-major dynamic matrices (the layout the kernel hands them). A class's
// explicit instantiation does not reach its member templates, so the ones that do the work are named too (the
// solvers' compute, run by their constructors from a matrix), and so is the in-place QR on a Ref (the kernel's
// orthonormalization), whose class as a whole does not instantiate (a Ref has no default constructor).
#define LORAKIT_EIGEN_DECOMPOSITIONS(PREFIX)                                                                      \
  PREFIX template class Eigen::BDCSVD<Eigen::MatrixXf>;                                                           \
  PREFIX template class Eigen::BDCSVD<Eigen::MatrixXd>;                                                           \
  PREFIX template class Eigen::JacobiSVD<Eigen::MatrixXf>;                                                        \
  PREFIX template class Eigen::JacobiSVD<Eigen::MatrixXd>;                                                        \
  LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS(PREFIX, float)                                                              \
  LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS(PREFIX, double)

#define LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS(PREFIX, T)                                                            \
  PREFIX template class Eigen::SelfAdjointEigenSolver<Eigen::Matrix<T, -1, -1>>;                                  \
  PREFIX template Eigen::SelfAdjointEigenSolver<Eigen::Matrix<T, -1, -1>>&                                        \
  Eigen::SelfAdjointEigenSolver<Eigen::Matrix<T, -1, -1>>::compute(const Eigen::EigenBase<Eigen::Matrix<T, -1, -1>>&, \
                                                                   int);                                          \
  PREFIX template class Eigen::HouseholderQR<Eigen::Matrix<T, -1, -1>>;                                           \
  PREFIX template void Eigen::HouseholderQR<Eigen::Ref<Eigen::Matrix<T, -1, -1>>>::computeInPlace();              \
  PREFIX template class Eigen::LLT<Eigen::Matrix<T, -1, -1>>;                                                     \
  PREFIX template Eigen::LLT<Eigen::Matrix<T, -1, -1>>& Eigen::LLT<Eigen::Matrix<T, -1, -1>>::compute(            \
      const Eigen::EigenBase<Eigen::Matrix<T, -1, -1>>&);

#ifdef LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
LORAKIT_EIGEN_DECOMPOSITIONS()
#else
LORAKIT_EIGEN_DECOMPOSITIONS(extern)
#endif
#undef LORAKIT_EIGEN_DECOMPOSITIONS
#undef LORAKIT_EIGEN_SCALAR_DECOMPOSITIONS

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
