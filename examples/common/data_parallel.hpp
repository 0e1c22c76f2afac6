// What the examples' studies need to run data-parallel over MPI (docs/distributed.md), and to run as one process
// without it: the MPI session, this process's rows of a batch, gradients averaged over the ranks, values
// broadcast from rank 0, statistics merged, and output from rank 0 only. Built with LORAKIT_EXAMPLES_MPI (the
// example links lorakit::mpi) it calls lorakit::dist; without it every call is the one-process identity.
#pragma once

#include <lorakit/core/parameter.hpp>
#include <lorakit/core/types.hpp>

#include <cstdio>
#include <string>
#include <unistd.h>
#include <vector>

#ifdef LORAKIT_EXAMPLES_MPI
#include <lorakit/dist/mpi.hpp>

#include <memory>
#endif

namespace lorakit_examples {

/// A contiguous share of a batch's rows: [begin, begin + count).
struct Rows {
  lorakit::Index begin = 0;
  lorakit::Index count = 0;
};

/// The data-parallel session of a study, for the lifetime of `main`: MPI_Init / MPI_Finalize (MPI_Abort when left
/// by an exception, so no rank waits forever for one that failed) when built with MPI, nothing otherwise. Every
/// call below is collective: every rank makes it, in the same order. With one rank each is the identity (no copy,
/// no rounding), so a one-process run computes exactly what the example computes without MPI.
class DataParallel {
 public:
  DataParallel(int& argc, char**& argv) {
#ifdef LORAKIT_EXAMPLES_MPI
    environment_ = std::make_unique<lorakit::dist::Environment>(argc, argv);
    rank_ = lorakit::dist::rank(MPI_COMM_WORLD);
    size_ = lorakit::dist::size(MPI_COMM_WORLD);
#else
    (void)argc;
    (void)argv;
#endif
  }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

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

  /// Ends the job when this rank failed on its own (MPI_Abort: no rank waits forever for it); one process: nothing.
  void abort_job(int status) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, status);
#else
    (void)status;
#endif
  }

  /// This rank's share of a batch of `rows` rows (sequences): contiguous, in rank order, sizes within one row.
  Rows my_rows(lorakit::Index rows) const {
#ifdef LORAKIT_EXAMPLES_MPI
    const auto share = lorakit::dist::shard_rows(rows, size_, rank_);
    return {share.begin, share.count};
#else
    return {0, rows};
#endif
  }

  /// g <- sum_r w_r g_r / sum_r w_r over the ranks (w_r: the rows of rank r's share, each g_r the mean-loss gradient
  /// of that share): the whole batch's mean-loss gradient, the same bits on every rank.
  template <class T>
  void average_gradients(std::vector<lorakit::Parameter<T>>& parameters, double weight) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) lorakit::dist::allreduce_gradients(MPI_COMM_WORLD, parameters, weight);
#else
    (void)parameters;
    (void)weight;
#endif
  }

  /// Copies rank 0's values to every rank: every rank starts from the same adapters.
  template <class T>
  void broadcast_values(std::vector<lorakit::Parameter<T>>& parameters) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) lorakit::dist::broadcast_values(MPI_COMM_WORLD, parameters);
#else
    (void)parameters;
#endif
  }

  /// The merge of every rank's statistics over disjoint data (`Eva<T>`, `FisherStatistics<T>`), bit-identical on
  /// every rank; `local` is not changed.
  template <class State>
  State merged(const State& local) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) return lorakit::dist::merged(MPI_COMM_WORLD, local);
#endif
    return local;
  }

  /// m <- the sum of every rank's m (a sum of disjoint data, e.g. LoRA-GA's gradient sums), the same bits on every
  /// rank: the ranks' mean (lorakit::dist::allreduce_gradients over one view) times their number.
  void sum(lorakit::Matrix<double>& m) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) {
      std::vector<lorakit::Parameter<double>> view{{"sum", lorakit::flat_view(m), lorakit::flat_view(m)}};
      lorakit::dist::allreduce_gradients(MPI_COMM_WORLD, view);
      m *= static_cast<double>(size_);
    }
#else
    (void)m;
#endif
  }

  /// Runs `work` on every rank; when it throws on any rank, every rank throws (no rank left waiting).
  template <class F>
  void collectively(F&& work) const {
#ifdef LORAKIT_EXAMPLES_MPI
    if (size_ > 1) {
      lorakit::dist::collectively(MPI_COMM_WORLD, std::forward<F>(work));
      return;
    }
#endif
    work();
  }

 private:
#ifdef LORAKIT_EXAMPLES_MPI
  std::unique_ptr<lorakit::dist::Environment> environment_;
#endif
  int rank_ = 0;
  int size_ = 1;
  int error_fd_ = STDERR_FILENO;
};

}  // namespace lorakit_examples
