// The one translation unit of the benchmark programs that instantiates Eigen's decompositions; every benchmark
// declares them extern (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS, set on lorakit_bench_support).
#define LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
#include <lorakit/core/eigen_instances.hpp>
