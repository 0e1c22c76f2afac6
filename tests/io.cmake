# Wiring of the I/O tests: include/lorakit/io needs nlohmann-json (the lorakit::io target carries it), and the
# safetensors reader is fuzzed with libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer (built with
# clang, run for a bounded time).
find_package(nlohmann_json 3 REQUIRED)

file(GLOB lorakit_io_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_io_*.cpp)
foreach(source ${lorakit_io_tests})
  get_filename_component(name ${source} NAME_WE)
  target_link_libraries(${name} PRIVATE lorakit::io)
  # GCC 12 warns falsely inside libstdc++'s std::regex (the tests' reference for PEFT's rank/alpha patterns)
  # under -O1 -fsanitize=address (GCC bug 105562: "_State ... may be used uninitialized").
  target_compile_options(${name} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
endforeach()

option(LORAKIT_FUZZ "Build the safetensors fuzzer (clang, libFuzzer) and run it as a test" ON)
set(LORAKIT_FUZZ_SECONDS 30 CACHE STRING "Seconds the safetensors fuzz test runs")
find_program(LORAKIT_FUZZ_CXX NAMES clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14)

if(LORAKIT_FUZZ AND LORAKIT_FUZZ_CXX AND NOT DEFINED LORAKIT_FUZZ_WORKS)
  # clang may be installed without its libFuzzer runtime: try it once and remember the answer.
  set(probe_dir ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe)
  file(WRITE ${probe_dir}/probe.cpp
       "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }\n")
  execute_process(COMMAND ${LORAKIT_FUZZ_CXX} -fsanitize=fuzzer,address,undefined ${probe_dir}/probe.cpp -o ${probe_dir}/probe
                  RESULT_VARIABLE probe_result OUTPUT_QUIET ERROR_QUIET)
  if(probe_result EQUAL 0)
    set(LORAKIT_FUZZ_WORKS ON CACHE INTERNAL "clang can build libFuzzer targets")
  else()
    set(LORAKIT_FUZZ_WORKS OFF CACHE INTERNAL "clang can build libFuzzer targets")
  endif()
endif()

if(LORAKIT_FUZZ AND LORAKIT_FUZZ_WORKS)
  set(fuzz_binary ${CMAKE_CURRENT_BINARY_DIR}/fuzz_safetensors)
  file(GLOB fuzz_headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/lorakit/io/*.hpp
       ${PROJECT_SOURCE_DIR}/include/lorakit/core/*.hpp)
  # Built by clang whatever the project's compiler is, with its own flags (never the project's CMAKE_CXX_FLAGS).
  add_custom_command(
    OUTPUT ${fuzz_binary}
    COMMAND ${LORAKIT_FUZZ_CXX} -std=c++17 -O1 -g -fno-omit-frame-pointer
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -I${PROJECT_SOURCE_DIR}/include
            "-I$<JOIN:$<TARGET_PROPERTY:Eigen3::Eigen,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            "-I$<JOIN:$<TARGET_PROPERTY:nlohmann_json::nlohmann_json,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_safetensors.cpp -o ${fuzz_binary}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_safetensors.cpp ${fuzz_headers}
    COMMAND_EXPAND_LISTS
    COMMENT "Building the safetensors fuzzer with ${LORAKIT_FUZZ_CXX}")
  add_custom_target(fuzz_safetensors ALL DEPENDS ${fuzz_binary})

  # The run grows a corpus in the build folder from the seeds in the source tree; a crash, a leak or an
  # exception other than lorakit::Error fails the test and leaves the input as build/.../fuzz-crash-*.
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_corpus)
  add_test(NAME io_fuzz_safetensors
           COMMAND ${fuzz_binary} -max_total_time=${LORAKIT_FUZZ_SECONDS} -max_len=4096 -rss_limit_mb=2048
                   -timeout=10 -print_final_stats=1 -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/safetensors.dict
                   -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz-
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/safetensors_seeds)
  math(EXPR fuzz_timeout "${LORAKIT_FUZZ_SECONDS} + 120")
  set_tests_properties(io_fuzz_safetensors PROPERTIES TIMEOUT ${fuzz_timeout} ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
elseif(LORAKIT_FUZZ)
  message(STATUS "lorakit: no clang with libFuzzer found; the safetensors fuzz test is not built")
endif()

# The adapter_config.json readers and PEFT's pattern keys, fuzzed the same way (its own block and corpus).
set(LORAKIT_FUZZ_CONFIG_SECONDS 20 CACHE STRING "Seconds the adapter_config.json fuzz test runs")
if(LORAKIT_FUZZ AND LORAKIT_FUZZ_WORKS)
  set(fuzz_config_binary ${CMAKE_CURRENT_BINARY_DIR}/fuzz_peft_config)
  file(GLOB fuzz_config_headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/lorakit/*/*.hpp
       ${PROJECT_SOURCE_DIR}/include/lorakit/*/*/*.hpp)
  add_custom_command(
    OUTPUT ${fuzz_config_binary}
    COMMAND ${LORAKIT_FUZZ_CXX} -std=c++17 -O1 -g -fno-omit-frame-pointer
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -I${PROJECT_SOURCE_DIR}/include
            "-I$<JOIN:$<TARGET_PROPERTY:Eigen3::Eigen,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            "-I$<JOIN:$<TARGET_PROPERTY:nlohmann_json::nlohmann_json,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_peft_config.cpp -o ${fuzz_config_binary}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_peft_config.cpp ${fuzz_config_headers}
    COMMAND_EXPAND_LISTS
    COMMENT "Building the adapter_config.json fuzzer with ${LORAKIT_FUZZ_CXX}")
  add_custom_target(fuzz_peft_config ALL DEPENDS ${fuzz_config_binary})
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_config_corpus)
  add_test(NAME io_fuzz_peft_config
           COMMAND ${fuzz_config_binary} -max_total_time=${LORAKIT_FUZZ_CONFIG_SECONDS} -max_len=4096 -rss_limit_mb=2048
                   -timeout=5 -print_final_stats=1 -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/peft_config.dict
                   -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz-config-
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_config_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/peft_config_seeds)
  math(EXPR fuzz_config_timeout "${LORAKIT_FUZZ_CONFIG_SECONDS} + 120")
  set_tests_properties(io_fuzz_peft_config PROPERTIES TIMEOUT ${fuzz_config_timeout} ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
endif()

# The GGUF reader's fuzzer, built and run like the safetensors one (same clang probe, its own corpus and seeds).
set(LORAKIT_FUZZ_GGUF_SECONDS 20 CACHE STRING "Seconds the GGUF fuzz test runs")
if(LORAKIT_FUZZ AND LORAKIT_FUZZ_WORKS)
  set(fuzz_gguf_binary ${CMAKE_CURRENT_BINARY_DIR}/fuzz_gguf)
  file(GLOB fuzz_gguf_headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/lorakit/io/*.hpp
       ${PROJECT_SOURCE_DIR}/include/lorakit/core/*.hpp ${PROJECT_SOURCE_DIR}/include/lorakit/adapter/*.hpp)
  add_custom_command(
    OUTPUT ${fuzz_gguf_binary}
    COMMAND ${LORAKIT_FUZZ_CXX} -std=c++17 -O1 -g -fno-omit-frame-pointer
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -I${PROJECT_SOURCE_DIR}/include
            "-I$<JOIN:$<TARGET_PROPERTY:Eigen3::Eigen,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            "-I$<JOIN:$<TARGET_PROPERTY:nlohmann_json::nlohmann_json,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_gguf.cpp -o ${fuzz_gguf_binary}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_gguf.cpp ${fuzz_gguf_headers}
    COMMAND_EXPAND_LISTS
    COMMENT "Building the GGUF fuzzer with ${LORAKIT_FUZZ_CXX}")
  add_custom_target(fuzz_gguf ALL DEPENDS ${fuzz_gguf_binary})
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz_gguf_corpus)
  add_test(NAME io_fuzz_gguf
           COMMAND ${fuzz_gguf_binary} -max_total_time=${LORAKIT_FUZZ_GGUF_SECONDS} -max_len=4096 -rss_limit_mb=2048
                   -timeout=10 -print_final_stats=1 -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/gguf.dict
                   -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz-gguf-
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_gguf_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/gguf_seeds)
  math(EXPR fuzz_gguf_timeout "${LORAKIT_FUZZ_GGUF_SECONDS} + 120")
  set_tests_properties(io_fuzz_gguf PROPERTIES TIMEOUT ${fuzz_gguf_timeout} ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
endif()
