# The layers, the model and the text data of examples/tiny_llama are tested here (they are headers of the example;
# the data reader decompresses the Jargon File through zlib).
find_package(ZLIB REQUIRED)
foreach(target test_tiny_llama_model test_tiny_llama_data)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/examples/tiny_llama)
endforeach()
target_link_libraries(test_tiny_llama_data PRIVATE ZLIB::ZLIB)
# The statistics shared by the examples' studies.
target_include_directories(test_examples_statistics PRIVATE ${PROJECT_SOURCE_DIR}/examples/common)
