# The IDX reader of examples/fashion_mnist is tested here; it reads gzip files through zlib.
find_package(ZLIB REQUIRED)
target_include_directories(test_fashion_mnist_idx PRIVATE ${PROJECT_SOURCE_DIR}/examples/fashion_mnist)
target_link_libraries(test_fashion_mnist_idx PRIVATE ZLIB::ZLIB)
