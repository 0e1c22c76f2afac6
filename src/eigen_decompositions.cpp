// The one translation unit that instantiates Eigen's decompositions for lorakit's own programs (tests, examples,
// benchmarks, lorakit-convert); each of their units declares them extern (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS,
// which the target lorakit_eigen_decompositions passes on to what links it). core/eigen_instances.hpp explains
// how a user's project can do the same.
#define LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
#include <lorakit/core/eigen_instances.hpp>
