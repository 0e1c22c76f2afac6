// What the examples' studies need to run data-parallel under mpirun: an MPI session for main's scope, "my rows of
// this batch", gradients averaged and initial values broadcast across ranks, statistics merged, counts summed, and
// "rank 0 only" for the outputs. Built with LORAKIT_EXAMPLES_HAS_MPI (CMake: the target links lorakit::mpi) it
// uses lorakit/dist/mpi.hpp (docs/distributed.md); without it every call is the one-process identity, so a study
// calls the same functions in both builds.
//
//   int main(int argc, char** argv) {
//     lorakit_examples::DataParallel parallel(argc, argv);       // MPI_Init ... MPI_Finalize (or MPI_Abort)
//     ...
//     parallel.broadcast(parameters);                             // every rank starts from rank 0's values
//     for (each step) {
//       const auto mine = parallel.my_rows(batch.rows());         // this rank's contiguous share of the batch
//       forward_backward(batch.middleRows(mine.begin, mine.count)); // mean loss over the share
//       parallel.average_gradients(parameters, mine.count);       // the whole batch's mean-loss gradient
//       optimizer.step();
//     }
//     parallel.merge(eva);                                        // EVA / Fisher statistics of every rank's rows
//     if (parallel.root()) write_outputs();                       // rank 0 writes
//   }
#pragma once

#include <lorakit/core/error.hpp>
#include <lorakit/core/parameter.hpp>
#include <lorakit/core/types.hpp>

#ifdef LORAKIT_EXAMPLES_HAS_MPI
#include <lorakit/dist/mpi.hpp>
#endif

#include "progress.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace lorakit_examples {

/// Rows [begin, begin + count) of a batch: this rank's share.
struct Rows {
  lorakit::Index begin = 0;
  lorakit::Index count = 0;
};

/// The MPI session of a study (one per process, in main) and the data-parallel calls the study makes. Every call
/// but rank(), size(), root() and my_rows() is collective under MPI: every rank makes it, in the same order.
class DataParallel {
 public:
  /// Starts MPI when built with it (and makes the progress bars of every rank but 0 quiet); nothing otherwise.
  DataParallel(int& argc, char**& argv) {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    environment_.emplace(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
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
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    return true;
#else
    return false;
#endif
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Rank 0: the one that prints and writes the outputs.
  bool root() const { return rank_ == 0; }

  /// Ends the whole job with `code` (MPI_Abort) when more than one rank runs: for a rank that failed on its own,
  /// which the others may be waiting for in a collective call. Does nothing in one process.
  void abort_if_parallel(int code) const {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)code;
#endif
  }

  /// This rank's contiguous share of a batch of `rows` rows: rank order, shares differing by at most one row
  /// (dist::shard_rows); all of them in one process.
  Rows my_rows(lorakit::Index rows) const {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    const lorakit::dist::RowRange share = lorakit::dist::shard_rows(rows, size_, rank_);
    return {share.begin, share.count};
#else
    return {0, rows};
#endif
  }

  /// Copies rank 0's values of `parameters` to every rank (dist::broadcast_values).
  template <class T>
  void broadcast(std::vector<lorakit::Parameter<T>>& parameters) const {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    if (size_ > 1) lorakit::dist::broadcast_values(MPI_COMM_WORLD, parameters);
#else
    (void)parameters;
#endif
  }

  /// The gradients of the whole batch from every rank's mean-loss gradient over its `my_count` rows:
  /// \f$g \leftarrow \sum_r n_r g_r / \sum_r n_r\f$ (dist::allreduce_gradients, bit-identical on every rank).
  template <class T>
  void average_gradients(std::vector<lorakit::Parameter<T>>& parameters, lorakit::Index my_count) const {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    if (size_ > 1) lorakit::dist::allreduce_gradients(MPI_COMM_WORLD, parameters, static_cast<double>(my_count));
#else
    (void)parameters;
    (void)my_count;
#endif
  }

  /// The merge of every rank's statistics (Eva, FisherStatistics, StreamingSvd: dist::merged), `local` unchanged;
  /// a copy of `local` in one process.
  template <class State>
  State merged(const State& local) const {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
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
  void sum(std::vector<double>& values) const {
#ifdef LORAKIT_EXAMPLES_HAS_MPI
    if (size_ < 2 || values.empty()) return;
    lorakit::dist::collectively(MPI_COMM_WORLD, [&] {
      // Every rank must hold as many values, or the reduction would read past the shorter buffers.
      long long counts[2] = {static_cast<long long>(values.size()), -static_cast<long long>(values.size())};
      MPI_Allreduce(MPI_IN_PLACE, counts, 2, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
      if (counts[0] != -counts[1]) {
        lorakit::detail::fail<lorakit::ShapeError>("DataParallel::sum", "values has ", values.size(),
                                                   " entries on rank ", rank_, ", not the same on every rank");
      }
    });
    const int count = static_cast<int>(values.size());
    MPI_Reduce(root() ? MPI_IN_PLACE : values.data(), values.data(), count, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    MPI_Bcast(values.data(), count, MPI_DOUBLE, 0, MPI_COMM_WORLD);
#else
    (void)values;
#endif
  }

  /// One value summed over the ranks (see the vector form).
  double sum(double value) const {
    std::vector<double> one{value};
    sum(one);
    return one.front();
  }

 private:
  int rank_ = 0;
  int size_ = 1;
#ifdef LORAKIT_EXAMPLES_HAS_MPI
  std::optional<lorakit::dist::Environment> environment_;
#endif
};

}  // namespace lorakit_examples
