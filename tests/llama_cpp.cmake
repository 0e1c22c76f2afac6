# The llama.cpp interop test (tests/llama_cpp): llama.cpp itself comes from the npm package node-llama-cpp
# (prebuilt CPU binaries), installed in tests/llama_cpp by `npm ci --omit=optional` from the committed lockfile
# (scripts/test does it). Without node or the package the test exits with 77, which ctest reports as skipped.
find_package(nlohmann_json 3 REQUIRED)
option(LORAKIT_LLAMA_CPP_TESTS "Test GGUF files on the real llama.cpp (needs Node.js and npm's node-llama-cpp)" ON)
if(NOT LORAKIT_LLAMA_CPP_TESTS)
  return()
endif()

# One program (main.cpp skips it with 77 when node or the package is missing), one ctest entry per file:
#  - llama_cpp: adapters written by save_gguf_lora and lorakit-convert applied by llama.cpp;
#  - llama_cpp_tiny_llama: the tiny llama of examples/tiny_llama as a GGUF base model, with and without an adapter.
add_executable(test_llama_cpp ${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp/main.cpp
                              ${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp/test_tiny_llama_gguf.cpp)
target_link_libraries(test_llama_cpp PRIVATE lorakit_catch_session lorakit::lorakit nlohmann_json::nlohmann_json
                                             lorakit_warnings)
target_compile_options(test_llama_cpp PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
# One unit (each file keeps its contents in a namespace of its own, as in the unit-test groups).
set_target_properties(test_llama_cpp PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 0)
target_compile_definitions(test_llama_cpp PRIVATE LORAKIT_LLAMA_CPP_DIR="${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp")
set(lorakit_llama_cpp_files test_tiny_llama_gguf:llama_cpp_tiny_llama)
if(TARGET lorakit-convert)
  target_sources(test_llama_cpp PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp/test_llama_cpp.cpp)
  target_compile_definitions(test_llama_cpp PRIVATE LORAKIT_CONVERT_BINARY="$<TARGET_FILE:lorakit-convert>")
  add_dependencies(test_llama_cpp lorakit-convert)
  list(APPEND lorakit_llama_cpp_files test_llama_cpp:llama_cpp)
else()
  message(STATUS "lorakit: LORAKIT_BUILD_TOOLS is off, so the llama.cpp test of lorakit-convert is not built")
endif()
foreach(entry ${lorakit_llama_cpp_files})
  string(REPLACE ":" ";" entry ${entry})
  list(GET entry 0 file)
  list(GET entry 1 test)
  add_test(NAME ${test} COMMAND test_llama_cpp "-#" "[#${file}]" --warn NoTests)
  set_tests_properties(${test} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
