# The llama.cpp interop test (tests/llama_cpp): llama.cpp itself comes from the npm package node-llama-cpp
# (prebuilt CPU binaries), installed in tests/llama_cpp by `npm ci --omit=optional` from the committed lockfile
# (scripts/test does it). Without node or the package the test exits with 77, which ctest reports as skipped.
find_package(nlohmann_json 3 REQUIRED)
option(LORAKIT_LLAMA_CPP_TESTS "Test GGUF adapters on the real llama.cpp (needs Node.js and npm's node-llama-cpp)" ON)
if(LORAKIT_LLAMA_CPP_TESTS AND TARGET lorakit-convert)
  add_executable(test_llama_cpp ${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp/test_llama_cpp.cpp)
  target_link_libraries(test_llama_cpp PRIVATE Catch2::Catch2 lorakit::lorakit nlohmann_json::nlohmann_json lorakit_warnings)
  target_compile_options(test_llama_cpp PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
  target_compile_definitions(test_llama_cpp PRIVATE
    LORAKIT_LLAMA_CPP_DIR="${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp"
    LORAKIT_CONVERT_BINARY="$<TARGET_FILE:lorakit-convert>")
  add_dependencies(test_llama_cpp lorakit-convert)
  add_test(NAME llama_cpp COMMAND test_llama_cpp)
  set_tests_properties(llama_cpp PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
elseif(LORAKIT_LLAMA_CPP_TESTS)
  message(STATUS "lorakit: LORAKIT_BUILD_TOOLS is off, so the llama.cpp interop test (which runs lorakit-convert) is not built")
endif()

# The tiny llama of examples/tiny_llama (its headers) exported as a GGUF base model and a GGUF LoRA adapter, whose
# logits on the real llama.cpp must equal the C++ model's; the same skip (77) without node or the package.
if(LORAKIT_LLAMA_CPP_TESTS)
  add_executable(test_tiny_llama_gguf ${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp/test_tiny_llama_gguf.cpp)
  target_link_libraries(test_tiny_llama_gguf PRIVATE Catch2::Catch2 lorakit::lorakit nlohmann_json::nlohmann_json lorakit_warnings)
  target_compile_options(test_tiny_llama_gguf PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
  target_compile_definitions(test_tiny_llama_gguf PRIVATE LORAKIT_LLAMA_CPP_DIR="${CMAKE_CURRENT_SOURCE_DIR}/llama_cpp")
  add_test(NAME llama_cpp_tiny_llama COMMAND test_tiny_llama_gguf)
  set_tests_properties(llama_cpp_tiny_llama PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
