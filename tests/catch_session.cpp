// Catch2's implementation, compiled once for every test program (the library lorakit_catch_session): a program
// links it and either takes the plain main (catch_main.cpp) or writes its own that calls run_catch (the MPI tests
// start MPI first; the llama.cpp tests first check that llama.cpp is installed).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_session.hpp"

int lorakit::testing::run_catch(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
