// What the examples' studies need to run data-parallel under mpirun (docs/distributed.md), and to run as one
// process without it: the MPI session for main's scope, this rank's rows of a batch, gradients averaged and initial
// values broadcast across ranks, statistics merged, values summed, and output from rank 0 only. Built with
// LORAKIT_EXAMPLES_MPI (CMake: the target links lorakit::mpi) it calls lorakit/dist/mpi.hpp; without it every call
// is the one-process identity, so a study calls the same functions in both builds.
//
//   int main(int argc, char** argv) {
//     lorakit_examples::DataParallel parallel(argc, argv);       // MPI_Init ... MPI_Finalize (or MPI_Abort)
//     ...
//     parallel.broadcast_values(parameters);                      // every rank starts from rank 0's values
//     for (each step) {
//       const auto mine = parallel.my_rows(batch.rows());         // this rank's contiguous share of the batch
//       forward_backward(batch.middleRows(mine.begin, mine.count)); // mean loss over the share
//       parallel.average_gradients(parameters, mine.count);       // the whole batch's mean-loss gradient
//       optimizer.step();
//     }
//     parallel.merge(eva);                                        // EVA / Fisher statistics of every rank's rows
//     if (parallel.is_root()) write_outputs();                    // rank 0 writes
//   }
#pragma once

#include <lorakit/core/error.hpp>
#include <lorakit/core/parameter.hpp>
#include <lorakit/core/types.hpp>

#include "progress.hpp"

#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

#ifdef LORAKIT_EXAMPLES_MPI
#include <lorakit/dist/mpi.hpp>

#include <optional>
#endif

namespace lorakit_examples {

/// Rows [begin, begin + count) of a batch: this rank's share.
struct Rows {
  lorakit::Index begin = 0;
  lorakit::Index count = 0;
};

/// The MPI session of a study (one per process, in main) and the data-parallel calls the study makes. Every call
/// but available(), rank(), size(), is_root(), my_rows(), quiet_unless_root() and error() is collective under MPI:
/// every rank makes it, in the same order. With one rank each is the identity (no copy, no rounding), so a
/// one-process run computes exactly what the example computes without MPI.
class DataParallel {
 public:
  /// Starts MPI when built with it (MPI_Finalize at the end of main's scope, MPI_Abort when left by an exception,
  /// so no rank waits forever for one that failed) and makes the progress bars of every rank but 0 quiet; nothing
  /// otherwise.
  DataParallel(int& argc, char**& argv) {
#ifdef LORAKIT_EXAMPLES_MPI
    environment_.emplace(argc, argv);
    rank_ = lorakit::dist::rank(MPI_COMM_WORLD);
    size_ = lorakit::dist::size(MPI_COMM_WORLD);
    if (rank_ != 0) Progress::quiet_process();
#else
    (void)argc;
    (void)argv;
#endif
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  /// Whether this build can run data-parallel (it was built with MPI).
  static constexpr bool available() {
#ifdef LORAKIT_EXAMPLES_MPI
    return true;
#else
    return false;
#endif
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Rank 0: the one that prints, writes the outputs and exports.
  bool is_root() const { return rank_ == 0; }

  /// Sends this process's stdout and stderr to /dev/null unless it is rank 0 (progress and results once, not once
  /// per rank); `error` still reaches the terminal.
  void quiet_unless_root() {
    if (is_root()) return;
    std::fflush(stdout);
    std::fflush(stderr);
    error_fd_ = dup(fileno(stderr));
    if (std::freopen("/dev/null", "w", stdout) == nullptr || std::freopen("/dev/null", "w", stderr) == nullptr) {
      // The output stays visible: harmless.
    }
  }

  /// Prints an error on the terminal's stderr (prefixed by the rank when there are several), quiet or not.
  void error(const std::string& text) const {
    const std::string line = (size_ > 1 ? "rank " + std::to_string(rank_) + ": " : std::string()) + text + "\n";
    if (write(error_fd_, line.data(), line.size()) < 0) {
      // Nowhere left to report it.
    }
  }

  /// Ends the whole job with `status` (MPI_Abort) when more than one rank runs: for a rank that failed on its own,
  /// which the others may be waiting for in a collective call. Does nothing in one process.
  void abort_job(int status) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, status);
#else
    (void)status;
#endif
  }

  /// This rank's contiguous share of a batch of `rows` rows: rank order, shares differing by at most one row
  /// (dist::shard_rows); all of them in one process.
  Rows my_rows(lorakit::Index rows) const {
#ifdef LORAKIT_EXAMPLES_MPI
    const lorakit::dist::RowRange share = lorakit::dist::shard_rows(rows, size_, rank_);
    return {share.begin, share.count};
#else
    return {0, rows};
#endif
  }

  /// Copies rank 0's values of `parameters` to every rank (dist::broadcast_values): every rank starts from the
  /// same adapters.
  template <class T>
  void broadcast_values(std::vector<lorakit::Parameter<T>>& parameters) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) lorakit::dist::broadcast_values(MPI_COMM_WORLD, parameters);
#else
    (void)parameters;
#endif
  }

  /// The gradients of the whole batch from every rank's mean-loss gradient over its share of `weight` rows:
  /// \f$g \leftarrow \sum_r w_r g_r / \sum_r w_r\f$ (dist::allreduce_gradients, bit-identical on every rank).
  template <class T>
  void average_gradients(std::vector<lorakit::Parameter<T>>& parameters, double weight) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) lorakit::dist::allreduce_gradients(MPI_COMM_WORLD, parameters, weight);
#else
    (void)parameters;
    (void)weight;
#endif
  }

  /// The merge of every rank's statistics over disjoint data (Eva, FisherStatistics, StreamingSvd: dist::merged),
  /// bit-identical on every rank; `local` is not changed. A copy of `local` in one process.
  template <class State>
  State merged(const State& local) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) return lorakit::dist::merged(MPI_COMM_WORLD, local);
#endif
    return local;
  }

  /// Replaces `state` by the merge of every rank's (see merged).
  template <class State>
  void merge(State& state) const {
    if (size_ > 1) state = merged(state);
  }

  /// Every rank's `values` summed element by element, the same bits on every rank (reduced to rank 0 and
  /// broadcast; exact for counts). In one process: unchanged. Errors (ShapeError, on every rank): ranks holding
  /// different numbers of values.
  void sum(std::vector<double>& values) const { sum(values.data(), static_cast<lorakit::Index>(values.size())); }

  /// The same for a matrix (e.g. LoRA-GA's gradient sums over disjoint data).
  void sum(lorakit::Matrix<double>& m) const { sum(m.data(), m.size()); }

  /// One value summed over the ranks (see the vector form).
  double sum(double value) const {
    sum(&value, 1);
    return value;
  }

 private:
  void sum(double* values, lorakit::Index count) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ < 2) return;
    lorakit::dist::collectively(MPI_COMM_WORLD, [&] {
      // Every rank must hold as many values, or the reduction would read past the shorter buffers.
      long long counts[2] = {static_cast<long long>(count), -static_cast<long long>(count)};
      MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
      if (counts[0] != -counts[1]) {
        lorakit::detail::fail<lorakit::ShapeError>("DataParallel::sum", "values has ", count, " entries on rank ",
                                                   rank_, ", not the same on every rank");
      }
    });
    if (count == 0) return;
    const int n = static_cast<int>(count);
    MPI_Reduce(is_root() ? MPI_IN_PLACE : values, values, n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Bcast(values, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
#else
    (void)values;
    (void)count;
#endif
  }

#ifdef LORAKIT_EXAMPLES_MPI
  std::optional<lorakit::dist::Environment> environment_;
#endif
  int rank_ = 0;
  int size_ = 1;
  int error_fd_ = STDERR_FILENO;
};

}  // namespace lorakit_examples
