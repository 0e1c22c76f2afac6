# lorakit refuses builds without IEEE arithmetic (core/types.hpp): each fast-math flag set below must stop a unit
# that includes lorakit with the header's message, and the same unit without it must compile.
# Compile-only checks, independent of the build's flags: a sanitizer build leaves them out.
option(LORAKIT_TEST_IEEE "Test that lorakit's headers refuse fast-math flags (ieee:*)" ON)
if(NOT LORAKIT_TEST_IEEE)
  return()
endif()
get_target_property(lorakit_ieee_includes Eigen3::Eigen INTERFACE_INCLUDE_DIRECTORIES)
list(TRANSFORM lorakit_ieee_includes PREPEND -I)
set(lorakit_ieee_compile ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only -Wfatal-errors
    -I${PROJECT_SOURCE_DIR}/include ${lorakit_ieee_includes} ${CMAKE_CURRENT_SOURCE_DIR}/ieee_guard.cpp)
add_test(NAME ieee:default_flags_compile COMMAND ${lorakit_ieee_compile})
# -fassociative-math only takes effect without signed zeros and traps, hence its companions.
foreach(flags "-ffast-math" "-Ofast" "-ffinite-math-only" "-funsafe-math-optimizations"
              "-fassociative-math -fno-signed-zeros -fno-trapping-math" "-freciprocal-math")
  separate_arguments(flag_list UNIX_COMMAND "${flags}")
  list(GET flag_list 0 name)
  add_test(NAME ieee:refuses${name} COMMAND ${lorakit_ieee_compile} ${flag_list})
  set_tests_properties(ieee:refuses${name} PROPERTIES PASS_REGULAR_EXPRESSION "lorakit needs IEEE arithmetic")
endforeach()
