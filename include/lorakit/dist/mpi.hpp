// Data-parallel training and statistics over MPI: adapter gradients averaged across ranks, values broadcast from
// a root, and EVA's, LoRA-DA's and the streaming SVD's statistics merged so that every rank holds the same bits.
// Only programs that include this header need MPI (CMake target lorakit::mpi); the rest of lorakit never does.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/init/eva.hpp"
#include "lorakit/init/lora_da.hpp"
#include "lorakit/io/state.hpp"
#include "lorakit/kernel/streaming_svd.hpp"

// Only MPI's C interface is used. Its deprecated C++ bindings (removed in MPI-3), which Open MPI's and MPICH's
// mpi.h would otherwise pull in, are skipped: they do not compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lorakit::dist {

/// This process's rank in `comm`.
inline int rank(MPI_Comm comm) {
  int r = 0;
  MPI_Comm_rank(comm, &r);
  return r;
}

/// The number of ranks in `comm`.
inline int size(MPI_Comm comm) {
  int n = 0;
  MPI_Comm_size(comm, &n);
  return n;
}

/// Rows [begin, begin + count) of a batch: one rank's share.
struct RowRange {
  Index begin = 0;
  Index count = 0;
};

/// Rank r's contiguous share of `rows` rows when `ranks` ranks split them in rank order: the first rows % ranks
/// ranks take one row more than the others. Errors: rows < 0, ranks < 1, rank outside [0, ranks) (ValueError).
inline RowRange shard_rows(Index rows, int ranks, int r) {
  constexpr const char* where = "dist::shard_rows";
  if (rows < 0) detail::fail<ValueError>(where, "rows is ", rows, ", expected >= 0");
  if (ranks < 1 || r < 0 || r >= ranks) {
    detail::fail<ValueError>(where, "rank ", r, " of ", ranks, " ranks, expected 0 <= rank < ranks");
  }
  const Index base = rows / ranks, extra = rows % ranks;
  return {r * base + std::min<Index>(r, extra), base + (r < extra ? 1 : 0)};
}

/// This process's share of `rows` rows in `comm` (not a collective call).
inline RowRange shard_rows(MPI_Comm comm, Index rows) { return shard_rows(rows, size(comm), rank(comm)); }

namespace detail {

using lorakit::detail::concat;
using lorakit::detail::fail;

/// Throws lorakit::Error naming an MPI call that returned an error (with MPI_ERRORS_RETURN set on the
/// communicator; under MPI's default handler, MPI_ERRORS_ARE_FATAL, a failing call aborts the job instead).
inline void check(const char* where, int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail<Error>(where, call, " failed: ", std::string(text, static_cast<std::size_t>(length)));
}

template <class T>
MPI_Datatype datatype() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "lorakit::dist: float or double only");
  return std::is_same_v<T, float> ? MPI_FLOAT : MPI_DOUBLE;
}

/// MPI counts are ints: large buffers move in chunks of at most 2^30 elements.
constexpr std::size_t max_chunk = std::size_t{1} << 30;

/// An exception caught on one rank, as what it needs to be rethrown anywhere: lorakit's exception type and its
/// message.
struct Failure {
  enum Kind : int { none = 0, error, shape, value, state, io, other };
  int kind = none;
  std::string message;
};

/// Runs `work`, returning what it threw (nothing when it returned).
template <class F>
Failure capture(F&& work) {
  try {
    std::forward<F>(work)();
    return {};
  } catch (const ShapeError& e) {
    return {Failure::shape, e.what()};
  } catch (const ValueError& e) {
    return {Failure::value, e.what()};
  } catch (const StateError& e) {
    return {Failure::state, e.what()};
  } catch (const IoError& e) {
    return {Failure::io, e.what()};
  } catch (const Error& e) {
    return {Failure::error, e.what()};
  } catch (const std::exception& e) {
    return {Failure::other, e.what()};
  } catch (...) {
    return {Failure::other, "an exception that is not a std::exception"};
  }
}

[[noreturn]] inline void raise(const Failure& failure, int failed_rank, int this_rank) {
  const std::string message =
      failed_rank == this_rank ? failure.message : concat("rank ", failed_rank, " failed: ", failure.message);
  switch (failure.kind) {
    case Failure::shape: throw ShapeError(message);
    case Failure::value: throw ValueError(message);
    case Failure::state: throw StateError(message);
    case Failure::io: throw IoError(message);
    default: throw Error(message);
  }
}

/// Collective, after every rank learned (from a reduction) that `first` is the lowest rank whose `local` holds a
/// failure: every rank throws that failure (its type and message, prefixed on the other ranks with
/// "rank r failed: ").
[[noreturn]] inline void throw_everywhere(MPI_Comm comm, const Failure& local, int first) {
  constexpr const char* where = "dist::throw_everywhere";
  Failure failure = local;
  std::int64_t header[2] = {failure.kind, static_cast<std::int64_t>(failure.message.size())};
  check(where, MPI_Bcast(header, 2, MPI_INT64_T, first, comm), "MPI_Bcast");
  failure.kind = static_cast<int>(header[0]);
  failure.message.resize(static_cast<std::size_t>(header[1]));
  if (header[1] > 0) {
    check(where, MPI_Bcast(failure.message.data(), static_cast<int>(header[1]), MPI_CHAR, first, comm), "MPI_Bcast");
  }
  raise(failure, first, rank(comm));
}

/// Collective: when `local` holds a failure on any rank, every rank throws the failure of the lowest such rank
/// (`throw_everywhere`); otherwise returns on every rank. Costs one MPI_Allreduce of an int when nothing failed.
inline void agree(MPI_Comm comm, const Failure& local) {
  const int ranks = size(comm);
  int mine = local.kind == Failure::none ? ranks : rank(comm), first = ranks;
  check("dist::agree", MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
  if (first < ranks) throw_everywhere(comm, local, first);
}

/// Broadcasts `bytes` from `root` (its size first), in chunks.
inline void broadcast_bytes(MPI_Comm comm, std::vector<std::uint8_t>& bytes, int root) {
  constexpr const char* where = "dist::broadcast_bytes";
  std::uint64_t count = bytes.size();
  check(where, MPI_Bcast(&count, 1, MPI_UINT64_T, root, comm), "MPI_Bcast");
  bytes.resize(static_cast<std::size_t>(count));
  for (std::size_t at = 0; at < bytes.size(); at += max_chunk) {
    const int chunk = static_cast<int>(std::min(max_chunk, bytes.size() - at));
    check(where, MPI_Bcast(bytes.data() + at, chunk, MPI_BYTE, root, comm), "MPI_Bcast");
  }
}

inline void send_bytes(MPI_Comm comm, const std::vector<std::uint8_t>& bytes, int to, int tag) {
  constexpr const char* where = "dist::send_bytes";
  for (std::size_t at = 0; at < bytes.size(); at += max_chunk) {
    const int chunk = static_cast<int>(std::min(max_chunk, bytes.size() - at));
    check(where, MPI_Send(bytes.data() + at, chunk, MPI_BYTE, to, tag, comm), "MPI_Send");
  }
}

inline void receive_bytes(MPI_Comm comm, std::vector<std::uint8_t>& bytes, int from, int tag) {
  constexpr const char* where = "dist::receive_bytes";
  for (std::size_t at = 0; at < bytes.size(); at += max_chunk) {
    const int chunk = static_cast<int>(std::min(max_chunk, bytes.size() - at));
    check(where, MPI_Recv(bytes.data() + at, chunk, MPI_BYTE, from, tag, comm, MPI_STATUS_IGNORE), "MPI_Recv");
  }
}

/// The fused buffer of this thread's gradient and value exchanges: it grows to the largest parameter list seen and
/// is reused from then on, so a steady-state training step allocates nothing.
template <class T>
std::vector<T>& fused_buffer() {
  thread_local std::vector<T> buffer;
  return buffer;
}

/// FNV-1a over the parameters' names and sizes: two ranks with different layouts get different fingerprints.
template <class T>
std::uint64_t layout_fingerprint(const std::vector<Parameter<T>>& parameters) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) h = (h ^ bytes[i]) * 0x100000001b3ULL;
  };
  for (const auto& p : parameters) {
    mix(p.name.data(), p.name.size());
    const std::int64_t n = p.value.size();
    mix(&n, sizeof n);
  }
  return h;
}

/// Collective: `local` (a failure found on this rank before, or none) is empty on every rank, every rank's
/// parameters have the same names and sizes, and each parameter's value and grad views the same size; all in one
/// MPI_Allreduce of seven integers. Throws on every rank otherwise (the failure, or a ShapeError naming the sizes).
/// Returns the number of scalars.
template <class T>
std::size_t check_layout(MPI_Comm comm, const char* where, const std::vector<Parameter<T>>& parameters,
                         Failure local = {}) {
  std::size_t total = 0;
  for (const auto& p : parameters) {
    if (p.value.size() != p.grad.size() && local.kind == Failure::none) {
      local = {Failure::shape, concat(where, ": parameter '", p.name, "' has ", p.value.size(), " values but ",
                                      p.grad.size(), " gradient entries")};
    }
    total += static_cast<std::size_t>(p.value.size());
  }
  // The lowest failing rank, and min and max over ranks of (total, fingerprint halves) as min(x) and min(-x).
  const int ranks = size(comm);
  const std::uint64_t h = layout_fingerprint(parameters);
  const std::int64_t values[3] = {static_cast<std::int64_t>(total), static_cast<std::int64_t>(h >> 32),
                                  static_cast<std::int64_t>(h & 0xffffffffULL)};
  std::int64_t mine[7], least[7];
  mine[6] = local.kind == Failure::none ? ranks : rank(comm);
  for (int i = 0; i < 3; ++i) {
    mine[i] = values[i];
    mine[3 + i] = -values[i];
  }
  check(where, MPI_Allreduce(mine, least, 7, MPI_INT64_T, MPI_MIN, comm), "MPI_Allreduce");
  if (least[6] < ranks) throw_everywhere(comm, local, static_cast<int>(least[6]));
  for (int i = 0; i < 3; ++i) {
    if (least[i] != -least[3 + i]) {
      fail<ShapeError>(where, "the ranks hold different parameters (this rank: ", parameters.size(), " tensors, ",
                       total, " scalars; totals over ranks range from ", least[0], " to ", -least[3],
                       "), expected the same names and sizes on every rank");
    }
  }
  return total;
}

}  // namespace detail

/// Runs `work` on every rank of `comm` (collective): when it throws on any rank, every rank throws (the lowest
/// failing rank's exception type and message; the other ranks' messages start "rank r failed: "), so no rank is
/// left waiting in a later collective call for one that gave up. Costs one MPI_Allreduce of an int.
template <class F>
void collectively(MPI_Comm comm, F&& work) {
  detail::agree(comm, detail::capture(std::forward<F>(work)));
}

/// Averages the gradients of `parameters` across the ranks of `comm` with weights (collective):
/// \f$g \leftarrow \sum_r w_r g_r / \sum_r w_r\f$, e.g. with \f$w_r\f$ the
/// rows (samples, valid tokens) of rank r's share, so that the result is the whole batch's mean-loss gradient
/// even when the batch does not split evenly. Errors: as the unweighted call's (below), and a weight that is
/// negative or not finite, or weights summing to 0 (ValueError, on every rank).
template <class T>
void allreduce_gradients(MPI_Comm comm, std::vector<Parameter<T>>& parameters, double weight) {
  constexpr const char* where = "dist::allreduce_gradients";
  detail::Failure bad_weight;
  if (!(weight >= 0) || !std::isfinite(weight)) {
    bad_weight = {detail::Failure::value, lorakit::detail::concat(where, ": weight is ", weight,
                                                                   ", expected a finite value >= 0")};
  }
  const std::size_t total = detail::check_layout(comm, where, parameters, bad_weight);
  std::vector<T>& buffer = detail::fused_buffer<T>();
  buffer.resize(total + 1);
  std::size_t at = 0;
  const T w = static_cast<T>(weight);
  for (const auto& p : parameters) {
    Eigen::Map<Vector<T>>(buffer.data() + at, p.grad.size()) = w * p.grad;
    at += static_cast<std::size_t>(p.grad.size());
  }
  buffer[total] = w;
  const bool root = rank(comm) == 0;
  for (std::size_t begin = 0; begin < buffer.size(); begin += detail::max_chunk) {
    const int chunk = static_cast<int>(std::min(detail::max_chunk, buffer.size() - begin));
    T* data = buffer.data() + begin;
    detail::check(where,
                  MPI_Reduce(root ? MPI_IN_PLACE : data, data, chunk, detail::datatype<T>(), MPI_SUM, 0, comm),
                  "MPI_Reduce");
    detail::check(where, MPI_Bcast(data, chunk, detail::datatype<T>(), 0, comm), "MPI_Bcast");
  }
  const T weights = buffer[total];
  if (!(weights > 0)) {
    lorakit::detail::fail<ValueError>(where, "the weights sum to ", weights, " over the ranks, expected > 0");
  }
  at = 0;
  for (auto& p : parameters) {
    p.grad = Eigen::Map<const Vector<T>>(buffer.data() + at, p.grad.size()) / weights;
    at += static_cast<std::size_t>(p.grad.size());
  }
}

/// Averages the gradients of `parameters` across the ranks of `comm` (collective):
/// \f$g \leftarrow \frac{1}{P}\sum_{r=0}^{P-1} g_r\f$, so that P ranks that each computed the mean-loss gradient of
/// an equal share of a batch hold the gradient of the whole batch (the weighted call above with w = 1). Values are
/// not touched.
///
/// All gradients travel in one fused buffer (this thread's, sized on first use and reused: no allocation in a
/// steady-state step): packed, summed to rank 0 (MPI_Reduce), broadcast back (MPI_Bcast) and divided by P (the sum of the weights, which travels in the same buffer). The
/// broadcast makes every rank's result the same bits, which MPI_Allreduce does not promise (the standard only
/// advises it); so optimizer states stay identical across ranks. Before it, one small MPI_Allreduce checks that
/// every rank holds the same parameter names and sizes. Errors (thrown on every rank): different layouts across
/// ranks, a parameter whose value and grad sizes differ (ShapeError).
template <class T>
void allreduce_gradients(MPI_Comm comm, std::vector<Parameter<T>>& parameters) {
  allreduce_gradients(comm, parameters, 1.0);
}

/// Copies the values of `parameters` on `root` to every rank of `comm` (collective), in one fused buffer: after
/// it every rank starts from the same adapters. Gradients are not touched. Errors (thrown on every rank):
/// different layouts across ranks (ShapeError), root outside the communicator (ValueError).
template <class T>
void broadcast_values(MPI_Comm comm, std::vector<Parameter<T>>& parameters, int root = 0) {
  constexpr const char* where = "dist::broadcast_values";
  if (root < 0 || root >= size(comm)) {
    lorakit::detail::fail<ValueError>(where, "root is ", root, ", expected a rank in [0, ", size(comm), ")");
  }
  const std::size_t total = detail::check_layout(comm, where, parameters);
  std::vector<T>& buffer = detail::fused_buffer<T>();
  buffer.resize(total);
  const bool is_root = rank(comm) == root;
  std::size_t at = 0;
  if (is_root) {
    for (const auto& p : parameters) {
      Eigen::Map<Vector<T>>(buffer.data() + at, p.value.size()) = p.value;
      at += static_cast<std::size_t>(p.value.size());
    }
  }
  for (std::size_t begin = 0; begin < total; begin += detail::max_chunk) {
    const int chunk = static_cast<int>(std::min(detail::max_chunk, total - begin));
    detail::check(where, MPI_Bcast(buffer.data() + begin, chunk, detail::datatype<T>(), root, comm), "MPI_Bcast");
  }
  if (is_root) return;
  at = 0;
  for (auto& p : parameters) {
    p.value = Eigen::Map<const Vector<T>>(buffer.data() + at, p.value.size());
    at += static_cast<std::size_t>(p.value.size());
  }
}

/// The merge of every rank's `local` statistics (collective; `local` is not changed): the states of a
/// `StreamingSvd<T>`, `Eva<T>` or `FisherStatistics<T>` in the format of io/state.hpp are sent to rank 0, which
/// merges them in rank order (rank 0's, then 1's, ...) and broadcasts the serialized result; every rank rebuilds
/// the same object from the same bytes, so the results are bit-identical on every rank, and identical from run to
/// run for the same inputs and number of ranks (the merge order never depends on timing).
///
/// Merge the statistics of disjoint data only: merging a state that already holds the others' data counts that
/// data twice (keep per-rank statistics and merge them into a copy each time a global view is wanted).
/// Errors (thrown on every rank, nothing changed): ranks whose statistics do not match (other layers or shapes:
/// what `merge` refuses), a state that fails to travel (IoError).
template <class State>
State merged(MPI_Comm comm, const State& local) {
  constexpr const char* where = "dist::merged";
  constexpr int tag = 0x4c4b;  // "LK"
  const int me = rank(comm), ranks = size(comm);
  std::vector<std::uint8_t> bytes;
  detail::agree(comm, detail::capture([&] { bytes = io::state_to_bytes(local); }));
  std::vector<std::uint64_t> sizes(static_cast<std::size_t>(ranks));
  const std::uint64_t mine = bytes.size();
  detail::check(where, MPI_Gather(&mine, 1, MPI_UINT64_T, sizes.data(), 1, MPI_UINT64_T, 0, comm), "MPI_Gather");
  detail::Failure failure;
  if (me == 0) {
    // Receives every other rank's state even after a failure, so that no sender is left blocked.
    State sum = local;
    std::vector<std::uint8_t> incoming;
    for (int r = 1; r < ranks; ++r) {
      incoming.resize(static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)]));
      detail::receive_bytes(comm, incoming, r, tag);
      if (failure.kind != detail::Failure::none) continue;
      failure = detail::capture([&] { sum.merge(io::state_from_bytes<State>(incoming)); });
      if (failure.kind != detail::Failure::none) {
        failure.message = lorakit::detail::concat(where, ": rank ", r, "'s statistics do not merge with those of the ",
                                                  "ranks before it: ", failure.message);
      }
    }
    if (failure.kind == detail::Failure::none) failure = detail::capture([&] { bytes = io::state_to_bytes(sum); });
  } else {
    detail::send_bytes(comm, bytes, 0, tag);
  }
  detail::agree(comm, failure);
  detail::broadcast_bytes(comm, bytes, 0);
  return io::state_from_bytes<State>(bytes);
}

/// Replaces every rank's `eva` by the merge of all ranks' (see `merged`): after it every rank holds the
/// bit-identical state, so its rank redistribution, convergence and adapters agree on all ranks by construction.
template <class T>
void allreduce(MPI_Comm comm, Eva<T>& eva) {
  eva = merged(comm, eva);
}

/// Replaces every rank's `stats` by the sums over all ranks (see `merged`), bit-identical on every rank.
template <class T>
void allreduce(MPI_Comm comm, FisherStatistics<T>& stats) {
  stats = merged(comm, stats);
}

/// Replaces every rank's `svd` by the merge of all ranks' streams (see `merged`), bit-identical on every rank.
template <class T>
void allreduce(MPI_Comm comm, StreamingSvd<T>& svd) {
  svd = merged(comm, svd);
}

/// MPI for the lifetime of a scope: MPI_Init in the constructor (unless MPI is initialized already), MPI_Finalize
/// in the destructor. When the scope is left by an exception, the destructor calls MPI_Abort on
/// MPI_COMM_WORLD instead, so the ranks that did not throw are stopped rather than left waiting forever in a
/// collective call for this one. (An exception that no handler catches terminates the process without unwinding;
/// mpirun then aborts the job as well.)
class Environment {
 public:
  Environment(int& argc, char**& argv) : exceptions_(std::uncaught_exceptions()) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      detail::check("dist::Environment", MPI_Init(&argc, &argv), "MPI_Init");
      owner_ = true;
    }
  }
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  ~Environment() {
    if (std::uncaught_exceptions() > exceptions_) MPI_Abort(MPI_COMM_WORLD, 1);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owner_ && !finalized) MPI_Finalize();
  }

 private:
  int exceptions_;
  bool owner_ = false;
};

}  // namespace lorakit::dist
