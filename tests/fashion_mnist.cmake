# The IDX reader of examples/fashion_mnist is tested here; it reads gzip files through zlib.
find_package(ZLIB REQUIRED)
target_include_directories(test_fashion_mnist_idx PRIVATE ${PROJECT_SOURCE_DIR}/examples/fashion_mnist)
target_link_libraries(test_fashion_mnist_idx PRIVATE ZLIB::ZLIB)
# The claims section and the data-parallel glue shared by the examples' studies (examples/common), built without
# MPI here (the one-process path; the study's mpirun runs use the MPI path).
target_include_directories(test_examples_claims PRIVATE ${PROJECT_SOURCE_DIR}/examples/common)
