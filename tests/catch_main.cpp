// The main of the test programs that need nothing before Catch2 runs (Catch2 itself: catch_session.cpp).
#include "catch_session.hpp"

int main(int argc, char* argv[]) { return lorakit::testing::run_catch(argc, argv); }
