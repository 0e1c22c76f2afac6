# cmake -P script: compiles SOURCE with CXX -O0 -fkeep-inline-functions (every inline function the unit defines is
# emitted), lists the object's symbols with NM and fails on any of Eigen's decompositions or product kernels.
list(TRANSFORM INCLUDES PREPEND -I)
set(object ${WORK}/includes_everything.o)
execute_process(COMMAND ${CXX} -std=c++17 -O0 -fkeep-inline-functions ${INCLUDES} -c ${SOURCE} -o ${object}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "compiling ${SOURCE} failed:\n${err}")
endif()
execute_process(COMMAND ${NM} -C --defined-only ${object} RESULT_VARIABLE rc OUTPUT_VARIABLE symbols)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${object}")
endif()
set(kernels "BDCSVD|JacobiSVD|SelfAdjointEigenSolver|HouseholderQR|LLT|internal::general_matrix_matrix_product|\
internal::gebp_kernel")
string(REGEX MATCHALL "[^\n]*Eigen::(${kernels})[^\n]*" heavy "${symbols}")
list(LENGTH heavy count)
if(count GREATER 0)
  list(JOIN heavy "\n" heavy)
  message(FATAL_ERROR "Including lorakit compiled ${count} functions of Eigen's heavy kernels, which every unit that "
          "includes it pays for; a non-template function in a header reaches them (make it a template: "
          "docs/getting-started.md, \"Build time\"):\n${heavy}")
endif()
message(STATUS "no function of Eigen's decompositions or product kernels in ${object}")
