# The layers and the model of examples/tiny_llama are tested here (they are headers of the example).
target_include_directories(test_tiny_llama_model PRIVATE ${PROJECT_SOURCE_DIR}/examples/tiny_llama)
