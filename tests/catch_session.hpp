// Runs Catch2's test cases: what a test program's main calls (Catch2's implementation is compiled once, in
// catch_session.cpp, the library lorakit_catch_session; its Catch::Session is declared only there).
#pragma once

namespace lorakit::testing {

/// Catch::Session().run(argc, argv): runs the test cases the arguments select and returns the exit status.
int run_catch(int argc, char* argv[]);

}  // namespace lorakit::testing
