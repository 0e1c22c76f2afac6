// serving: one frozen base layer, 32 users' LoRA adapters (ranks 4 to 32), and a request loop that batches
// interleaved requests of different users into one forward. The bank holds 8 adapters at a time; a request for
// a user whose adapter is not loaded takes the least recently used slot (S-LoRA's adapter cache), swapped in
// between two batches with no allocation and no pause. Prints the throughput and checks a sample of rows against
// the user's adapter merged into a copy of the weight.
//
// serving [--quick]
#include <lorakit/lorakit.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using T = float;
using lorakit::Index;
using lorakit::Matrix;

/// Which user's adapter sits in which slot, and when each slot was last used.
class SlotCache {
 public:
  SlotCache(lorakit::AdapterBank<T>& bank, const std::vector<lorakit::Lora<T>>& users)
      : bank_(bank), users_(users), user_of_slot_(static_cast<std::size_t>(bank.slots()), -1),
        last_use_(static_cast<std::size_t>(bank.slots()), -1) {}

  /// The slot holding `user`'s adapter, loading it over the least recently used slot if needed; -1 when that
  /// slot was used since `batch_start` (its adapter is still needed by the batch being built).
  Index slot_for(Index user, long now, long batch_start) {
    auto found = std::find(user_of_slot_.begin(), user_of_slot_.end(), user);
    if (found == user_of_slot_.end()) {
      const auto lru = std::min_element(last_use_.begin(), last_use_.end()) - last_use_.begin();
      if (last_use_[static_cast<std::size_t>(lru)] >= batch_start) return -1;
      bank_.load(lru, users_[static_cast<std::size_t>(user)]);  // hot swap: no allocation, between two batches
      found = user_of_slot_.begin() + lru;
      *found = user;
      ++swaps_;
    }
    const auto slot = static_cast<std::size_t>(found - user_of_slot_.begin());
    last_use_[slot] = now;
    return static_cast<Index>(slot);
  }
  long swaps() const { return swaps_; }

 private:
  lorakit::AdapterBank<T>& bank_;
  const std::vector<lorakit::Lora<T>>& users_;
  std::vector<Index> user_of_slot_;
  std::vector<long> last_use_;
  long swaps_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const Index features = quick ? 256 : 1024, users = 32, slots = 8, max_rank = 32;
  const int batches = quick ? 20 : 200;
  lorakit::Rng rng(1);

  Matrix<T> W(features, features);  // the shared base layer
  rng.fill_normal(W, T(0), T(0.03));
  std::vector<lorakit::Lora<T>> adapters;
  for (Index u = 0; u < users; ++u) {
    lorakit::LoraConfig c;
    c.rank = 4 * (1 + u % 8);
    c.alpha = 2.0 * static_cast<double>(c.rank);
    c.seed = static_cast<std::uint64_t>(100 + u);
    adapters.emplace_back(features, features, c);
    rng.fill_normal(adapters.back().B(), T(0), T(0.02));  // as if trained
  }
  lorakit::AdapterBank<T> bank(features, features, slots, max_rank);
  SlotCache cache(bank, adapters);

  // Requests of 1 to 64 tokens (a mix of prompts and single decode tokens) from a skewed mix of users. Each batch
  // packs up to 12 of them one after the other, so each request is one segment; a request whose adapter would
  // evict one that the batch already uses waits for the next batch.
  Matrix<T> x(12 * 64, features), y(12 * 64, features);
  rng.fill_normal(x, T(0), T(1));
  std::vector<lorakit::BankSegment> segments;
  std::vector<Index> request_users;
  Matrix<double> draw(1, 2);
  auto next_request = [&] {
    rng.fill_uniform(draw, 0.0, 1.0);
    const auto user = std::min(users - 1, static_cast<Index>(draw(0, 0) * draw(0, 0) * static_cast<double>(users)));
    const Index length = draw(0, 1) < 0.5 ? 1 : 1 + static_cast<Index>(draw(0, 1) * 63);
    return lorakit::BankSegment{length, user};  // slot = the user until it is placed in the bank
  };
  lorakit::BankSegment waiting = next_request();
  long tokens = 0, now = 0;
  double worst = 0, seconds = 0;
  for (int b = 0; b < batches; ++b) {
    const auto start = std::chrono::steady_clock::now();
    const long batch_start = now;
    segments.clear();
    request_users.clear();
    Index rows = 0;
    while (segments.size() < 12) {
      const Index slot = cache.slot_for(waiting.slot, now++, batch_start);
      if (slot < 0) break;
      segments.push_back({waiting.rows, slot});
      request_users.push_back(waiting.slot);
      rows += waiting.rows;
      waiting = next_request();
    }
    auto xb = x.topRows(rows);
    auto yb = y.topRows(rows);
    yb.noalias() = xb * W.transpose();
    bank.forward(xb, segments, yb);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    tokens += rows;

    if (b % 10 == 0) {  // check the batch's first request against its user's adapter merged into W
      Matrix<T> merged = W;
      adapters[static_cast<std::size_t>(request_users[0])].merge_into(merged);
      const Index length = segments[0].rows;
      const Matrix<T> expected = xb.topRows(length) * merged.transpose();
      worst = std::max(worst, static_cast<double>((yb.topRows(length) - expected).norm() / expected.norm()));
    }
  }
  std::printf("served %ld tokens in %d batches over a %ld x %ld base layer: %.0f tokens/s (%.1f ms per batch)\n", tokens,
              batches, static_cast<long>(features), static_cast<long>(features), static_cast<double>(tokens) / seconds,
              1e3 * seconds / batches);
  std::printf("%ld adapter swaps into %ld slots for %ld users; largest relative difference from a merged weight: %.2e\n",
              cache.swaps(), static_cast<long>(slots), static_cast<long>(users), worst);
  return worst < 1e-4 ? 0 : 1;
}
