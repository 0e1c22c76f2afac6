// lorakit::AdapterBank: many adapters of one weight shape, applied to a batch whose rows use different adapters
// in one pass (multi-tenant serving: S-LoRA, Punica's gathered products as in vLLM), with slots loaded and
// cleared while serving without any allocation.
#pragma once

#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/adapter/vera.hpp"
#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/gathered_products.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace lorakit {

/// A contiguous run of rows of a batch that share one adapter (vLLM's `sgmv` segments): `rows` rows (0 is
/// allowed) on `slot` (-1: no adapter). A batch is a list of segments, in row order, whose rows add up to the
/// batch's rows.
struct BankSegment {
  Index rows = 0;
  Index slot = -1;
};

/// How `AdapterBank::forward` computes the products of each adapter's rows.
enum class BankProducts {
  automatic,  ///< per adapter and product, from the measured crossover (see AdapterBank)
  grouped,    ///< Eigen's GEMM on each adapter's rows (a block of x when they are contiguous, else gathered copies
              ///< and a scatter-add of the result): PEFT's grouping, kept as the reference and for benchmarks
  gathered,   ///< the gathered SIMD kernels on each listed row in place (kernel/gathered_products.hpp)
};

/// Up to `slots` LoRA adapters of one weight shape W [out x in], of any ranks up to `max_rank`, applied to a
/// batch x [n x in] by a slot per row:
/// \f[ y_i \mathrel{+}= s_k\,(x_i A_k^\top)\,B_k^\top,\qquad k = \mathrm{row\_slots}[i], \f]
/// and nothing for k = -1 or an empty slot (such rows of y are not touched, bit for bit). Each row gets exactly
/// what `Lora<T>::forward` (evaluation mode) gives it, up to the rounding of a different summation order.
///
/// Memory for every slot (A_kᵀ and B_kᵀ at max_rank) is reserved by the constructor, so `load` and `clear` never
/// allocate and can swap adapters between two batches of a running server. A VeRA adapter fits a slot too:
/// \f$\Delta W = \Lambda_b B \Lambda_d A\f$ is the LoRA pair \f$(\Lambda_d A_l, \Lambda_b B_l)\f$ with s = 1.
///
/// Products (`BankProducts`): the rows are grouped by slot (a counting sort); each group's shrink
/// \f$T = s_k X_k A_k^\top\f$ is computed for every group first and checked finite, so that bad input throws before
/// y is touched; then each group's expand adds \f$T B_k^\top\f$ into its rows. Automatic: a group whose rows are
/// contiguous in x and at least `gathered_max_rows()` long, or a single row, runs Eigen's products in place; every
/// other group runs the gathered SIMD kernels (kernel/gathered_products.hpp) on its rows in place (the crossover
/// and how it was found: docs/kernel.md). Workspaces are sized on first use and reused: a steady-state `forward` allocates
/// nothing (beyond Eigen's own GEMM packing buffers, which it takes from the heap for products too large for its
/// stack buffer). `forward` is `const` but uses those workspaces: one bank must not run two `forward` calls at once.
template <class T>
class AdapterBank {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  using Scalar = T;
  /// Rows gathered (copied) at a time for a grouped GEMM over non-contiguous rows.
  static constexpr Index kGatherBlock = 128;
  /// The default shortest contiguous group that Eigen's GEMM serves (docs/kernel.md).
  static constexpr Index kDefaultGatheredMaxRows = 16;
  /// A^T's columns are padded to a multiple of this (the widest float vector), so the gathered shrink has no tail.
  static constexpr Index kPad = 16;

  /// An empty bank for W [out x in]. Errors (ValueError): in or out < 1, slots < 1, max_rank outside [1, min(in, out)].
  AdapterBank(Index in_features, Index out_features, Index slots, Index max_rank)
      : in_(in_features), out_(out_features), slots_(slots), max_rank_(max_rank) {
    constexpr const char* where = "AdapterBank::AdapterBank";
    detail::check_features(where, in_features, out_features);
    if (slots < 1) detail::fail<ValueError>(where, "slots is ", slots, ", expected >= 1");
    if (max_rank < 1 || max_rank > std::min(in_features, out_features)) {
      detail::fail<ValueError>(where, "max_rank is ", max_rank,
                               ", expected 1 <= max_rank <= min(in_features, out_features) = ",
                               std::min(in_features, out_features));
    }
    ld_ = (max_rank + kPad - 1) / kPad * kPad;
    At_.setZero(slots * in_features, ld_);
    Bt_.setZero(slots * max_rank, out_features);
    ranks_.assign(static_cast<std::size_t>(slots), 0);
    scalings_.assign(static_cast<std::size_t>(slots), T(0));
    counts_.assign(static_cast<std::size_t>(slots) + 1, 0);
  }

  Index in_features() const { return in_; }
  Index out_features() const { return out_; }
  Index slots() const { return slots_; }
  Index max_rank() const { return max_rank_; }
  /// The rank of the adapter in `slot`, 0 when the slot is empty. Errors: slot outside [0, slots).
  Index rank(Index slot) const { return ranks_[checked_slot("AdapterBank::rank", slot)]; }
  /// The scaling s of the adapter in `slot` (0 when empty). Errors: slot outside [0, slots).
  T scaling(Index slot) const { return scalings_[checked_slot("AdapterBank::scaling", slot)]; }
  bool occupied(Index slot) const { return rank(slot) > 0; }
  /// A_k [rank x in], A_k^T [in x rank] and B_k^T [rank x out] of `slot` (empty when the slot is empty).
  auto A(Index slot) const { return A_transposed(slot).transpose(); }
  auto A_transposed(Index slot) const { return At_.block(slot * in_, 0, in_, rank(slot)); }
  auto B_transposed(Index slot) const { return Bt_.middleRows(slot * max_rank_, rank(slot)); }

  /// Copies `adapter`'s A, B and scaling into `slot` (replacing what was there); no allocation.
  /// Errors: slot outside [0, slots) (ValueError); the adapter's in or out unlike the bank's (ShapeError); its rank
  /// above max_rank (ValueError); non-finite factors (ValueError). The bank is unchanged when one is thrown.
  void load(Index slot, const Lora<T>& adapter) {
    check_load(slot, adapter);
    const Index r = adapter.rank();
    At_.block(slot * in_, 0, in_, r) = adapter.A().transpose();
    At_.block(slot * in_, r, in_, ld_ - r).setZero();
    Bt_.middleRows(slot * max_rank_, r) = adapter.B().transpose();
    set_slot(slot, r, adapter.scaling());
  }

  /// Throws what `load(slot, adapter)` would throw, and changes nothing: for loads of several adapters that must
  /// all take place or none (load_banks checks every adapter before it loads the first).
  void check_load(Index slot, const Lora<T>& adapter) const {
    constexpr const char* where = "AdapterBank::load";
    check_loadable(where, slot, adapter.in_features(), adapter.out_features(), adapter.rank());
    detail::check_finite(where, "adapter.A()", adapter.A());
    detail::check_finite(where, "adapter.B()", adapter.B());
  }

  /// Loads a VeRA adapter as the LoRA pair \f$A = \Lambda_d A_l\f$, \f$B = \Lambda_b B_l\f$, s = 1 (Kopiczko et al.,
  /// ICLR 2024: \f$\Delta W = \Lambda_b B_l \Lambda_d A_l\f$); no allocation. Errors as for a LoRA adapter.
  void load(Index slot, const Vera<T>& adapter) {
    constexpr const char* where = "AdapterBank::load";
    check_loadable(where, slot, adapter.in_features(), adapter.out_features(), adapter.rank());
    detail::check_finite(where, "adapter.lambda_d()", adapter.lambda_d());
    detail::check_finite(where, "adapter.lambda_b()", adapter.lambda_b());
    const Index r = adapter.rank();
    At_.block(slot * in_, 0, in_, r).noalias() = adapter.A().transpose() * adapter.lambda_d().asDiagonal();
    At_.block(slot * in_, r, in_, ld_ - r).setZero();
    Bt_.middleRows(slot * max_rank_, r).noalias() = adapter.B().transpose() * adapter.lambda_b().asDiagonal();
    set_slot(slot, r, T(1));
  }

  /// Empties `slot`: rows that name it get no adapter until the next `load`. Errors: slot outside [0, slots).
  void clear(Index slot) { set_slot(static_cast<Index>(checked_slot("AdapterBank::clear", slot)), 0, T(0)); }

  /// y_i += s_k x_i A_k^T B_k^T with k = row_slots[i] for x [n x in], y [n x out] (y may be a column block of a
  /// wider output, e.g. the q, k or v part of a fused projection). Errors: x without rows or of the wrong width,
  /// y of the wrong shape, row_slots not of length n (ShapeError); a slot outside [-1, slots) (ValueError, naming
  /// the row); non-finite x on a row with an adapter (ValueError). y is unchanged when one is thrown.
  void forward(const ConstMatrixRef<T>& x, const std::vector<Index>& row_slots, MatrixRef<T> y) const {
    constexpr const char* where = "AdapterBank::forward";
    check_io(where, x, y);
    if (static_cast<Index>(row_slots.size()) != x.rows()) {
      detail::fail<ShapeError>(where, "row_slots has ", row_slots.size(), " entries, expected x's rows = ", x.rows());
    }
    for (std::size_t i = 0; i < row_slots.size(); ++i) check_row_slot(where, "row_slots", i, "", row_slots[i]);
    group_rows(row_slots);
    apply(where, x, y);
  }

  /// The same over segments: rows [begin_j, begin_j + segments[j].rows) use segments[j].slot, with begin_0 = 0
  /// and each segment starting where the previous one ends. Errors as above, plus a negative segment length or
  /// lengths that do not add up to x's rows (ShapeError).
  void forward(const ConstMatrixRef<T>& x, const std::vector<BankSegment>& segments, MatrixRef<T> y) const {
    constexpr const char* where = "AdapterBank::forward";
    check_io(where, x, y);
    Index total = 0;
    for (std::size_t j = 0; j < segments.size(); ++j) {
      if (segments[j].rows < 0) {
        detail::fail<ShapeError>(where, "segments[", j, "].rows is ", segments[j].rows, ", expected >= 0");
      }
      check_row_slot(where, "segments", j, ".slot", segments[j].slot);
      total += segments[j].rows;
    }
    if (total != x.rows()) {
      detail::fail<ShapeError>(where, "segments cover ", total, " rows, expected x's rows = ", x.rows());
    }
    group_segments(segments);
    apply(where, x, y);
  }

  /// The product path (default automatic) and the automatic crossover: a contiguous group of fewer than `rows`
  /// rows takes the gathered kernels (scattered rows always do). Errors (ValueError): rows < 0.
  void set_products(BankProducts products) { products_ = products; }
  BankProducts products() const { return products_; }
  void set_gathered_max_rows(Index rows) {
    if (rows < 0) detail::fail<ValueError>("AdapterBank::set_gathered_max_rows", "rows is ", rows, ", expected >= 0");
    gathered_max_rows_ = rows;
  }
  Index gathered_max_rows() const { return gathered_max_rows_; }

 private:
  /// Rows order_[begin, begin + count) use `slot`; contiguous when they are consecutive rows of x.
  struct Group {
    Index slot;
    Index begin;
    Index count;
    bool contiguous;
  };

  std::size_t checked_slot(const char* where, Index slot) const {
    if (slot < 0 || slot >= slots_) detail::fail<ValueError>(where, "slot is ", slot, ", expected 0 <= slot < ", slots_);
    return static_cast<std::size_t>(slot);
  }

  void check_loadable(const char* where, Index slot, Index in, Index out, Index rank) const {
    checked_slot(where, slot);
    if (in != in_ || out != out_) {
      detail::fail<ShapeError>(where, "the adapter is [", out, " x ", in, "] (out x in), expected the bank's [", out_,
                               " x ", in_, "]");
    }
    if (rank > max_rank_) detail::fail<ValueError>(where, "the adapter's rank is ", rank, ", above max_rank = ", max_rank_);
  }

  void set_slot(Index slot, Index rank, T scaling) {
    ranks_[static_cast<std::size_t>(slot)] = rank;
    scalings_[static_cast<std::size_t>(slot)] = scaling;
  }

  void check_io(const char* where, const ConstMatrixRef<T>& x, const MatrixRef<T>& y) const {
    detail::check_batch<T>(where, x, in_);
    detail::check_shape(where, "y", y.rows(), y.cols(), x.rows(), out_);
  }

  void check_row_slot(const char* where, const char* array, std::size_t i, const char* field, Index slot) const {
    if (slot < -1 || slot >= slots_) {
      detail::fail<ValueError>(where, array, "[", i, "]", field, " is ", slot,
                               ", expected -1 (no adapter) or 0 <= slot < ", slots_);
    }
  }

  bool active(Index slot) const { return slot >= 0 && ranks_[static_cast<std::size_t>(slot)] > 0; }

  /// Counting sort of the rows with an adapter by slot (stable, so each group's rows stay in x's order).
  void group_rows(const std::vector<Index>& row_slots) const {
    std::fill(counts_.begin(), counts_.end(), Index(0));
    for (Index slot : row_slots)
      if (active(slot)) ++counts_[static_cast<std::size_t>(slot) + 1];
    for (std::size_t k = 1; k < counts_.size(); ++k) counts_[k] += counts_[k - 1];
    const Index total = counts_.back();
    if (static_cast<Index>(order_.size()) < total) order_.resize(static_cast<std::size_t>(total));
    groups_.clear();
    for (Index k = 0; k < slots_; ++k) {
      const Index begin = counts_[static_cast<std::size_t>(k)], end = counts_[static_cast<std::size_t>(k) + 1];
      if (end > begin) groups_.push_back({k, begin, end - begin, false});
    }
    for (std::size_t i = 0; i < row_slots.size(); ++i) {
      const Index slot = row_slots[i];
      if (active(slot)) order_[static_cast<std::size_t>(counts_[static_cast<std::size_t>(slot)]++)] = static_cast<Index>(i);
    }
    for (Group& g : groups_) {
      const auto first = static_cast<std::size_t>(g.begin), last = static_cast<std::size_t>(g.begin + g.count - 1);
      g.contiguous = order_[last] - order_[first] == g.count - 1;
    }
  }

  /// Each segment with an adapter is a contiguous group.
  void group_segments(const std::vector<BankSegment>& segments) const {
    groups_.clear();
    Index listed = 0;
    for (const BankSegment& s : segments) {
      if (s.rows > 0 && active(s.slot)) {
        groups_.push_back({s.slot, listed, s.rows, true});
        listed += s.rows;
      }
    }
    if (static_cast<Index>(order_.size()) < listed) order_.resize(static_cast<std::size_t>(listed));
    Index row = 0;
    listed = 0;
    for (const BankSegment& s : segments) {
      if (s.rows > 0 && active(s.slot)) {
        for (Index i = 0; i < s.rows; ++i) order_[static_cast<std::size_t>(listed++)] = row + i;
      }
      row += s.rows;
    }
  }

  /// Whether the products of g take the gathered kernels (else Eigen's GEMM). Automatic: Eigen only on a
  /// contiguous block of x's rows that is long enough, or a single row (a matrix-vector product, which gets no
  /// reuse from the kernels' four-row blocks); scattered rows would need copies in and out of a GEMM.
  bool gathered(const Group& g) const {
    switch (products_) {
      case BankProducts::gathered: return true;
      case BankProducts::grouped: return false;
      case BankProducts::automatic: break;
    }
    return !(g.count == 1 || (g.contiguous && g.count >= gathered_max_rows_));
  }

  /// Shrink of every group into t_ (checked finite), then the expand of every group into y.
  void apply(const char* where, const ConstMatrixRef<T>& x, MatrixRef<T> y) const {
    if (groups_.empty()) return;
    const Index listed = groups_.back().begin + groups_.back().count;
    if (t_.rows() < listed) t_.resize(listed, ld_);
    for (const Group& g : groups_) shrink(g, x);
    for (const Group& g : groups_) {
      if (!detail::all_finite(t_block(g))) report_non_finite(where, g, x);
    }
    for (const Group& g : groups_) expand(g, y);
  }

  auto t_block(const Group& g) const { return t_.block(g.begin, 0, g.count, ranks_[static_cast<std::size_t>(g.slot)]); }
  const Index* rows_of(const Group& g) const { return order_.data() + g.begin; }
  Index first_row(const Group& g) const { return order_[static_cast<std::size_t>(g.begin)]; }

  /// t = s_k x_rows A_k^T for one group.
  void shrink(const Group& g, const ConstMatrixRef<T>& x) const {
    const Index r = ranks_[static_cast<std::size_t>(g.slot)];
    const auto At = At_.block(g.slot * in_, 0, in_, r);
    auto t = t_block(g);
    if (gathered(g)) {
      // Over r rounded up to kPad columns: A^T's padding is zero, so no scalar tail runs and the extra columns of
      // t come out zero (they are never read).
      const Index columns = std::min(ld_, (r + kPad - 1) / kPad * kPad);
      gathered_project(x.data(), x.outerStride(), rows_of(g), g.count, At.data(), ld_, in_, columns,
                               t.data(), ld_);
    } else if (g.contiguous) {
      t.noalias() = x.middleRows(first_row(g), g.count) * At;
    } else {
      ensure_gather_workspaces();
      for (Index j = 0; j < g.count; j += kGatherBlock) {
        const Index c = std::min(kGatherBlock, g.count - j);
        for (Index i = 0; i < c; ++i) x_gather_.row(i) = x.row(order_[static_cast<std::size_t>(g.begin + j + i)]);
        t.middleRows(j, c).noalias() = x_gather_.topRows(c) * At;
      }
    }
    t *= scalings_[static_cast<std::size_t>(g.slot)];
  }

  /// y_rows += t B_k^T for one group.
  void expand(const Group& g, MatrixRef<T>& y) const {
    const Index r = ranks_[static_cast<std::size_t>(g.slot)];
    const auto Bt = Bt_.middleRows(g.slot * max_rank_, r);
    const auto t = t_block(g);
    if (gathered(g)) {
      gathered_expand_add(t.data(), t_.outerStride(), rows_of(g), g.count, Bt.data(), Bt_.outerStride(), r,
                                  out_, y.data(), y.outerStride());
    } else if (g.contiguous) {
      y.middleRows(first_row(g), g.count).noalias() += t * Bt;
    } else {
      ensure_gather_workspaces();
      for (Index j = 0; j < g.count; j += kGatherBlock) {
        const Index c = std::min(kGatherBlock, g.count - j);
        y_gather_.topRows(c).noalias() = t.middleRows(j, c) * Bt;
        for (Index i = 0; i < c; ++i) y.row(order_[static_cast<std::size_t>(g.begin + j + i)]) += y_gather_.row(i);
      }
    }
  }

  void ensure_gather_workspaces() const {
    if (x_gather_.rows() == 0) {
      x_gather_.resize(kGatherBlock, in_);
      y_gather_.resize(kGatherBlock, out_);
    }
  }

  [[noreturn]] void report_non_finite(const char* where, const Group& g, const ConstMatrixRef<T>& x) const {
    for (Index j = 0; j < g.count; ++j) {
      const Index row = order_[static_cast<std::size_t>(g.begin + j)];
      for (Index c = 0; c < x.cols(); ++c) {
        if (!std::isfinite(static_cast<double>(x(row, c)))) {
          detail::fail<ValueError>(where, "x[", row, ", ", c, "] is ", static_cast<double>(x(row, c)),
                                   ", expected a finite value");
        }
      }
    }
    detail::fail<ValueError>(where, "the branch of slot ", g.slot, " overflowed for finite x (entries too large for ",
                             "the scalar type)");
  }

  Index in_, out_, slots_, max_rank_;
  Index ld_;      // max_rank rounded up to kPad
  Matrix<T> At_;  // [slots * in x ld_]: slot k's A^T in rows [k in, (k + 1) in), columns [0, r_k), zeros after
  Matrix<T> Bt_;  // [slots * max_rank x out]: slot k's B^T likewise (row-major, so each row of B^T is contiguous)
  std::vector<Index> ranks_;
  std::vector<T> scalings_;
  BankProducts products_ = BankProducts::automatic;
  Index gathered_max_rows_ = kDefaultGatheredMaxRows;
  // Workspaces of forward, sized on first use.
  mutable std::vector<Index> counts_;  // [slots + 1]
  mutable std::vector<Index> order_;   // rows with an adapter, grouped by slot
  mutable std::vector<Group> groups_;
  mutable Matrix<T> t_;                // [listed rows x ld_]: s_k x_i A_k^T, group by group
  mutable Matrix<T> x_gather_;         // [kGatherBlock x in]
  mutable Matrix<T> y_gather_;         // [kGatherBlock x out]
};

namespace detail {

/// Names set j in the messages of the bank loaders ("sets[1]"; io/banks.hpp names the file instead).
inline std::string bank_set_index(std::size_t j) { return concat("sets[", j, "]"); }

/// Rethrows e (a ShapeError or ValueError of AdapterBank::check_load) as the same type with `where` and the
/// module and set in front.
[[noreturn]] inline void rethrow_in_context(const char* where, const std::string& module, const std::string& set,
                                           const Error& e) {
  if (dynamic_cast<const ShapeError*>(&e)) fail<ShapeError>(where, "module '", module, "' of ", set, ": ", e.what());
  fail<ValueError>(where, "module '", module, "' of ", set, ": ", e.what());
}

/// The one rule that puts adapter sets into banks: set j goes to slot first_slot + j of every bank; a bank whose
/// module set j lacks gets that slot cleared (the set does not adapt that module). Everything is checked first
/// (every module of every set has a bank, its shape and rank fit it, its factors are finite, the slots exist),
/// then everything is loaded, so the banks are unchanged when an error is thrown.
/// `label(j)` names set j in the messages.
template <class T, class Label>
void load_banks(const char* where, std::map<std::string, AdapterBank<T>>& banks,
                const std::vector<const AdapterSet<Lora<T>>*>& sets, Index first_slot, const Label& label) {
  if (sets.empty()) fail<ValueError>(where, "no adapter sets, expected at least one");
  for (std::size_t j = 0; j < sets.size(); ++j) {
    if (sets[j] == nullptr) fail<ValueError>(where, label(j), " is null");
  }
  const auto count = static_cast<Index>(sets.size());
  for (const auto& [name, bank] : banks) {
    if (first_slot < 0 || first_slot + count > bank.slots()) {
      fail<ValueError>(where, "first_slot is ", first_slot, " for ", count, " adapter sets, but the bank of '", name,
                       "' has ", bank.slots(), " slots (expected 0 <= first_slot <= ", bank.slots() - count, ")");
    }
  }
  for (std::size_t j = 0; j < sets.size(); ++j) {
    for (const auto& [name, lora] : *sets[j]) {
      const auto bank = banks.find(name);
      if (bank == banks.end()) {
        std::string known;
        for (const auto& entry : banks) known += (known.empty() ? "'" : ", '") + entry.first + "'";
        fail<ValueError>(where, label(j), " adapts module '", name, "', which has no bank (the banks are for ",
                         known.empty() ? std::string("no module") : known, ")");
      }
      try {
        bank->second.check_load(first_slot + static_cast<Index>(j), lora);
      } catch (const Error& e) {
        rethrow_in_context(where, name, label(j), e);
      }
    }
  }
  for (auto& [name, bank] : banks) {
    for (std::size_t j = 0; j < sets.size(); ++j) {
      const Index slot = first_slot + static_cast<Index>(j);
      if (sets[j]->contains(name)) {
        bank.load(slot, sets[j]->at(name));
      } else {
        bank.clear(slot);
      }
    }
  }
}

/// make_banks with the caller's name and set labels in its messages.
template <class T, class Label>
std::map<std::string, AdapterBank<T>> make_banks(const char* where, const std::vector<const AdapterSet<Lora<T>>*>& sets,
                                                 Index max_rank, const Label& label) {
  if (sets.empty()) fail<ValueError>(where, "no adapter sets, expected at least one");
  if (max_rank < 0) fail<ValueError>(where, "max_rank is ", max_rank, ", expected 0 (the largest rank) or more");
  struct Shape {
    Index in, out, rank;
  };
  std::map<std::string, Shape> shapes;
  for (std::size_t j = 0; j < sets.size(); ++j) {
    if (sets[j] == nullptr) fail<ValueError>(where, label(j), " is null");
    for (const auto& [name, lora] : *sets[j]) {
      auto [it, inserted] = shapes.try_emplace(name, Shape{lora.in_features(), lora.out_features(), lora.rank()});
      if (!inserted && (it->second.in != lora.in_features() || it->second.out != lora.out_features())) {
        fail<ShapeError>(where, "module '", name, "' is [", lora.out_features(), " x ", lora.in_features(), "] in ",
                         label(j), " but [", it->second.out, " x ", it->second.in, "] in an earlier one");
      }
      it->second.rank = std::max(it->second.rank, lora.rank());
    }
  }
  std::map<std::string, AdapterBank<T>> banks;
  const auto slots = static_cast<Index>(sets.size());
  for (const auto& [name, shape] : shapes) {
    const Index rank = max_rank > 0 ? std::min(max_rank, std::min(shape.in, shape.out)) : shape.rank;
    banks.try_emplace(name, shape.in, shape.out, slots, rank);
  }
  detail::load_banks<T>(where, banks, sets, 0, label);
  return banks;
}

}  // namespace detail

/// One bank per module from several adapter sets (e.g. the PEFT folders or GGUF files of several users): set j
/// goes to slot j of the bank of each module it adapts; a module that set j lacks leaves slot j empty in its bank.
/// max_rank 0 takes the largest rank of each module over the sets (a given one is capped at min(in, out)).
/// Errors: no sets, a null set, max_rank < 0 (ValueError); a module whose shapes differ between sets (ShapeError);
/// a rank above a given max_rank, non-finite factors (ValueError, naming the module and the set).
template <class T>
std::map<std::string, AdapterBank<T>> make_banks(const std::vector<const AdapterSet<Lora<T>>*>& sets, Index max_rank = 0) {
  return detail::make_banks<T>("make_banks", sets, max_rank, detail::bank_set_index);
}

/// Loads adapter set j into slot first_slot + j of every bank of `banks` (module name -> bank, as make_banks
/// returns): a hot swap of several users' adapters at once, with no allocation in the banks. A bank whose module
/// set j does not adapt gets that slot cleared (set j's user has no adapter there), as make_banks leaves it empty.
/// All or nothing: every adapter is checked before the first is loaded, and the banks are unchanged when one of
/// these is thrown. Errors: no sets, a null set, slots first_slot .. first_slot + sets - 1 outside a bank's
/// (ValueError); a module of a set without a bank (ValueError: its adapter could not be served); an adapter whose
/// shape differs from its bank's (ShapeError); a rank above its bank's max_rank, non-finite factors (ValueError);
/// each naming the module and the set.
template <class T>
void load_banks(std::map<std::string, AdapterBank<T>>& banks, const std::vector<const AdapterSet<Lora<T>>*>& sets,
                Index first_slot = 0) {
  detail::load_banks<T>("load_banks", banks, sets, first_slot, detail::bank_set_index);
}

}  // namespace lorakit
