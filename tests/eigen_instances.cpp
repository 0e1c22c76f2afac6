// The one translation unit of the test programs that instantiates Eigen's decompositions; every test
// declares them extern (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS, set on lorakit_catch_main).
#define LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
#include <lorakit/core/eigen_instances.hpp>
