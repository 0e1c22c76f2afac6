// Includes all of lorakit but io/ and calls nothing: tests/header_cost/CMakeLists.txt checks that this compiles none
// of Eigen's decompositions or matrix-product kernels.
#include <lorakit/lorakit.hpp>
