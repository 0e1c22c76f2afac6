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

option(LORAKIT_FUZZ "Build the fuzzers (clang, libFuzzer) and run them as tests" ON)
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

# lorakit_add_fuzzer(<name> <seconds> <timeout per input>): builds tests/fuzz/<name>.cpp with clang under libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer (whatever the project's compiler and flags are) and registers
# the ctest test io_<name>, which runs it for <seconds> from the seeds in tests/fuzz/<stem>_seeds with the
# dictionary tests/fuzz/<stem>.dict (<stem>: <name> without "fuzz_"). The run grows a corpus in the build folder; a
# crash, a leak or an exception other than lorakit::Error fails the test and leaves the input as
# build/.../<name>-crash-*.
function(lorakit_add_fuzzer name seconds input_timeout)
  string(REGEX REPLACE "^fuzz_" "" stem ${name})
  set(binary ${CMAKE_CURRENT_BINARY_DIR}/${name})
  file(GLOB headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/lorakit/*/*.hpp
       ${PROJECT_SOURCE_DIR}/include/lorakit/*/*/*.hpp)
  add_custom_command(
    OUTPUT ${binary}
    COMMAND ${LORAKIT_FUZZ_CXX} -std=c++17 -O1 -g -fno-omit-frame-pointer
            -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -I${PROJECT_SOURCE_DIR}/include
            "-I$<JOIN:$<TARGET_PROPERTY:Eigen3::Eigen,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            "-I$<JOIN:$<TARGET_PROPERTY:nlohmann_json::nlohmann_json,INTERFACE_INCLUDE_DIRECTORIES>,;-I>"
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/${name}.cpp -o ${binary}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/${name}.cpp ${headers}
    COMMAND_EXPAND_LISTS
    COMMENT "Building ${name} with ${LORAKIT_FUZZ_CXX}")
  add_custom_target(${name} ALL DEPENDS ${binary})
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/${name}_corpus)
  add_test(NAME io_${name}
           COMMAND ${binary} -max_total_time=${seconds} -max_len=4096 -rss_limit_mb=2048
                   -timeout=${input_timeout} -print_final_stats=1 -dict=${CMAKE_CURRENT_SOURCE_DIR}/fuzz/${stem}.dict
                   -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/${name}-
                   ${CMAKE_CURRENT_BINARY_DIR}/${name}_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/${stem}_seeds)
  math(EXPR test_timeout "${seconds} + 120")
  set_tests_properties(io_${name} PROPERTIES TIMEOUT ${test_timeout} ENVIRONMENT "ASAN_OPTIONS=detect_leaks=1")
endfunction()

# The safetensors reader, adapter_config.json and PEFT's pattern keys, and the GGUF reader.
set(LORAKIT_FUZZ_CONFIG_SECONDS 20 CACHE STRING "Seconds the adapter_config.json fuzz test runs")
set(LORAKIT_FUZZ_GGUF_SECONDS 20 CACHE STRING "Seconds the GGUF fuzz test runs")
if(LORAKIT_FUZZ AND LORAKIT_FUZZ_WORKS)
  lorakit_add_fuzzer(fuzz_safetensors ${LORAKIT_FUZZ_SECONDS} 10)
  lorakit_add_fuzzer(fuzz_peft_config ${LORAKIT_FUZZ_CONFIG_SECONDS} 5)
  lorakit_add_fuzzer(fuzz_gguf ${LORAKIT_FUZZ_GGUF_SECONDS} 10)
elseif(LORAKIT_FUZZ)
  message(STATUS "lorakit: no clang with libFuzzer found; the fuzz tests are not built")
endif()
