// The main of the llama.cpp interop tests: without node or the npm package node-llama-cpp (installed in
// tests/llama_cpp/node_modules by scripts/test) it prints why and exits with 77, which ctest reports as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "../../examples/tiny_llama/llama_cpp.hpp"

#include <iostream>
#include <string>

int main(int argc, char* argv[]) {
  const std::string why = tiny_llama::LlamaCpp(LORAKIT_LLAMA_CPP_DIR).unavailable();
  if (!why.empty()) {
    std::cerr << "\n*** SKIPPED: GGUF files are checked on the real llama.cpp, but " << why << "\n\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
