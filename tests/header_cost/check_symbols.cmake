# cmake -P script: compiles SOURCE with CXX at -O0, lists the object's defined symbols with NM, and fails on those
# that the unit must not compile. MODE:
#  - includes: with -fkeep-inline-functions (every inline function the unit defines is emitted); fails on any of
#    Eigen's decompositions or product kernels;
#  - extern: with LORAKIT_EXTERN_EIGEN_DECOMPOSITIONS; fails on any decomposition or product kernel that
#    core/eigen_instances.hpp compiles once (Eigen's and lorakit's), which the unit must leave to the instantiating
#    unit.
list(TRANSFORM INCLUDES PREPEND -I)
get_filename_component(name ${SOURCE} NAME_WE)
set(object ${WORK}/${name}.o)
if(MODE STREQUAL "includes")
  set(flags -fkeep-inline-functions)
  set(forbidden "Eigen::(BDCSVD|JacobiSVD|SelfAdjointEigenSolver|HouseholderQR|LLT|internal::general_matrix_matrix_product|\
internal::gebp_kernel)")
  set(advice "a non-template function in a header reaches them (make it a template: docs/getting-started.md, \"Build \
time\")")
elseif(MODE STREQUAL "extern")
  set(flags -DLORAKIT_EXTERN_EIGEN_DECOMPOSITIONS)
  set(forbidden "Eigen::(BDCSVD|JacobiSVD)<[^\n]*::compute\\(|Eigen::(SelfAdjointEigenSolver|LLT)<[^\n]*::compute<|\
Eigen::HouseholderQR<[^\n]*::computeInPlace\\(|lorakit::(randomized_svd|product_svd|smallest_eigenpairs_dense)<|\
lorakit::detail::(orthonormalize_columns|thin_qr|orthogonalize_against|orthonormalize_krylov_block)<|\
Eigen::internal::general_matrix_matrix_product<[^\n]*::run\\(|Eigen::internal::gebp_kernel<")
  set(advice "core/eigen_instances.hpp must declare them (LORAKIT_DECOMPOSITION_INSTANCE), or a call reaches a \
version it does not name")
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
execute_process(COMMAND ${CXX} -std=c++17 -O0 ${flags} ${INCLUDES} -c ${SOURCE} -o ${object}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compiling ${SOURCE} failed:\n${err}")
endif()
execute_process(COMMAND ${NM} -C --defined-only ${object} RESULT_VARIABLE rc OUTPUT_VARIABLE symbols)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${object}")
endif()
string(REGEX MATCHALL "[^\n]*(${forbidden})[^\n]*" heavy "${symbols}")
list(LENGTH heavy count)
if(count GREATER 0)
  list(JOIN heavy "\n" heavy)
  message(FATAL_ERROR "${SOURCE} compiled ${count} functions it must not (MODE ${MODE}): ${advice}:\n${heavy}")
endif()
message(STATUS "no function of the forbidden kernels in ${object}")
