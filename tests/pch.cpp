// The unit that builds the test units' precompiled header (Catch2, Eigen, xsimd: tests/CMakeLists.txt).
