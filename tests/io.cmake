# Wiring of the I/O tests: include/lorakit/io needs nlohmann-json (the lorakit::io target carries it). The readers'
# fuzzers are in tests/fuzz/.
find_package(nlohmann_json 3 REQUIRED)

file(GLOB lorakit_io_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_io_*.cpp)
foreach(source ${lorakit_io_tests})
  get_filename_component(name ${source} NAME_WE)
  target_link_libraries(${name} PRIVATE lorakit::io)
  # GCC 12 warns falsely inside libstdc++'s std::regex (the tests' reference for PEFT's rank/alpha patterns)
  # under -O1 -fsanitize=address (GCC bug 105562: "_State ... may be used uninitialized").
  target_compile_options(${name} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
endforeach()
