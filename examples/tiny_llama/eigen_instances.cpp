// The one translation unit of the study that instantiates Eigen's decompositions; every other unit
// declares them extern (LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS, set in this folder's CMakeLists.txt).
#define LORAKIT_INSTANTIATE_EIGEN_DECOMPOSITIONS
#include <lorakit/core/eigen_instances.hpp>
