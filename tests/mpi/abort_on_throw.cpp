// A rank that throws must not leave the others waiting. Rank 1 throws while the other ranks wait in a barrier:
// - "scope": the exception leaves the scope of dist::Environment (and is caught outside it): its destructor calls
//   MPI_Abort, which ends every rank;
// - "uncaught": no handler catches it, the process terminates, and mpirun aborts the job.
// Either way mpirun must exit with a failure status before the test's timeout (expect_abort.sh, ctest's TIMEOUT); if
// the abort did not happen, the waiting ranks would wait forever and the test would time out.
#include <lorakit/dist/mpi.hpp>

#include <cstdio>
#include <cstring>

namespace {

bool is_rank_1() {
  if (lorakit::dist::rank(MPI_COMM_WORLD) != 1) return false;
  std::puts("rank 1 throws");
  std::fflush(stdout);
  return true;
}

void wait_for_everyone() {
  MPI_Barrier(MPI_COMM_WORLD);
  std::puts("a waiting rank got past the barrier");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "uncaught") == 0) {
    lorakit::dist::Environment mpi(argc, argv);
    if (is_rank_1()) throw lorakit::ValueError("rank 1 gave up (no handler)");
    wait_for_everyone();
    return 0;
  }
  try {
    lorakit::dist::Environment mpi(argc, argv);
    if (is_rank_1()) throw lorakit::ValueError("rank 1 gave up");
    wait_for_everyone();
  } catch (const lorakit::ValueError& e) {
    std::fprintf(stderr, "rank 1 returns normally, so MPI_Abort did not end it: %s\n", e.what());
  }
  return 0;
}
