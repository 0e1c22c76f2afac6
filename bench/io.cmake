# The I/O benchmark needs nlohmann-json (include/lorakit/io).
find_package(nlohmann_json 3 REQUIRED)
if(TARGET bench_io)
  target_link_libraries(bench_io PRIVATE nlohmann_json::nlohmann_json)
endif()
