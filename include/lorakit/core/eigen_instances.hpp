// Eigen's dense decompositions that lorakit uses, instantiated once: an opt-in for faster builds.
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

// The decompositions, over Eigen's column-major dynamic matrices (the layout the kernel hands them).
#define LORAKIT_EIGEN_DECOMPOSITIONS(PREFIX)                      \
  PREFIX template class Eigen::BDCSVD<Eigen::MatrixXf>;           \
  PREFIX template class Eigen::BDCSVD<Eigen::MatrixXd>;           \
  PREFIX template class Eigen::JacobiSVD<Eigen::MatrixXf>;        \
  PREFIX template class Eigen::JacobiSVD<Eigen::MatrixXd>;        \
  PREFIX template class Eigen::SelfAdjointEigenSolver<Eigen::MatrixXf>; \
  PREFIX template class Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>; \
  PREFIX template class Eigen::HouseholderQR<Eigen::MatrixXf>;    \
  PREFIX template class Eigen::HouseholderQR<Eigen::MatrixXd>;    \
  PREFIX template class Eigen::LLT<Eigen::MatrixXd>;

#ifdef LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
LORAKIT_EIGEN_DECOMPOSITIONS()
#else
LORAKIT_EIGEN_DECOMPOSITIONS(extern)
#endif
#undef LORAKIT_EIGEN_DECOMPOSITIONS
