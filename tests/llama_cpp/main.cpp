// The main of the llama.cpp interop tests: without node or the npm package node-llama-cpp (installed in
// tests/llama_cpp/node_modules by scripts/test) it prints why and exits with 77, which ctest reports as skipped.
#include "../catch_session.hpp"

#include "../../examples/tiny_llama/llama_cpp.hpp"

#include <iostream>
#include <string>

int main(int argc, char* argv[]) {
  const std::string why = tiny_llama::LlamaCpp(LORAKIT_LLAMA_CPP_DIR).unavailable();
  if (!why.empty()) {
    std::cerr << "\n*** SKIPPED: GGUF files are checked on the real llama.cpp, but " << why << "\n\n";
    return 77;
  }
  return lorakit::testing::run_catch(argc, argv);
}
