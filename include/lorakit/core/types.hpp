// Basic types shared by every lorakit header: scalar-generic row-major matrices, vectors, and the
// Eigen::Ref aliases that public functions take so callers can pass Eigen::Map views of their own memory.
#pragma once

#include <Eigen/Core>

#include <type_traits>

// -ffast-math (and -Ofast, -ffinite-math-only) lets the compiler assume no NaN or Inf and reassociate sums: the
// finite checks that reject bad input would be compiled away, and the SVDs' accuracy and the error bounds that
// the documentation states would no longer hold. GCC and Clang define __FAST_MATH__ under it. Its parts that
// reorder or approximate arithmetic without assuming finite values (-funsafe-math-optimizations,
// -fassociative-math, -freciprocal-math) are refused too: they define __ASSOCIATIVE_MATH__ / __RECIPROCAL_MATH__.
#if defined(__FAST_MATH__) || (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__) || \
    defined(__ASSOCIATIVE_MATH__) || defined(__RECIPROCAL_MATH__)
#error "lorakit needs IEEE arithmetic: build without -ffast-math, -Ofast, -ffinite-math-only, -funsafe-math-optimizations, -fassociative-math or -freciprocal-math"
#endif

#ifdef LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS
#include "lorakit/core/eigen_instances.hpp"  // opt-in: Eigen's decompositions compiled once (see that header)
#endif

namespace lorakit {

/// The first release's spelling of the kernel's names (`lorakit::kernel::gram_of_rows`, ...), kept so that code
/// written against it compiles: every public name is in `lorakit` itself (docs/getting-started.md, "Conventions").
/// lorakit's own code does not use it.
namespace kernel = ::lorakit;

/// Index type of every size and position (Eigen's signed index).
using Index = Eigen::Index;

/// Dense matrix with PyTorch's layout: row-major, so `[tokens x features]` activations and
/// `[out x in]` weights can be shared with libtorch or ggml buffers without a copy.
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Dense column vector.
template <class T>
using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// Read-only matrix argument: binds a `Matrix<T>`, an `Eigen::Map<Matrix<T>>` or a row block without copying.
template <class T>
using ConstMatrixRef = Eigen::Ref<const Matrix<T>>;

/// Writable matrix argument (outputs that are accumulated into).
template <class T>
using MatrixRef = Eigen::Ref<Matrix<T>>;

/// Read-only vector argument.
template <class T>
using ConstVectorRef = Eigen::Ref<const Vector<T>>;

namespace detail {
template <class T>
inline constexpr bool is_supported_scalar_v = std::is_same_v<T, float> || std::is_same_v<T, double>;
}  // namespace detail

#define LORAKIT_STATIC_ASSERT_SCALAR(T) \
  static_assert(::lorakit::detail::is_supported_scalar_v<T>, "lorakit: the scalar type T must be float or double")

}  // namespace lorakit
