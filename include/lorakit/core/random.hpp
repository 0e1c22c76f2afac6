// lorakit::Rng: a portable, counter-based random number generator.
//
// Everything lorakit must be able to regenerate (VeRA's projections, initializations, dropout masks) is
// drawn from this generator, never from std::*_distribution, whose output is implementation-defined.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace lorakit {

/// Counter-based generator: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers:
/// as easy as 1, 2, 3", SC 2011), with lorakit's own mappings from bits to values.
///
/// **Bits.** The generator is the pure function `block = philox4x32_10(counter, key)` of a 128-bit counter
/// and a 64-bit key. lorakit uses key = (seed mod 2^32, seed / 2^32) and counter = (n mod 2^32, n / 2^32,
/// stream mod 2^32, stream / 2^32), where n = 0, 1, 2, ... numbers the blocks of one stream. A block is
/// four 32-bit words w0..w3, handed out in that order by `next_u32()`. One Philox round maps
/// (c0, c1, c2, c3) with key (k0, k1) to
/// \f$(\mathrm{hi}(M_1 c_2) \oplus c_1 \oplus k_0,\ \mathrm{lo}(M_1 c_2),\ \mathrm{hi}(M_0 c_0) \oplus c_3 \oplus k_1,\ \mathrm{lo}(M_0 c_0))\f$
/// with \f$M_0\f$ = 0xD2511F53, \f$M_1\f$ = 0xCD9E8D57; the key is bumped by (0x9E3779B9, 0xBB67AE85)
/// between rounds; ten rounds.
///
/// **Values.** (All exact or single-rounded, with no dependence on FMA contraction or the platform's libm
/// except where noted.)
/// - `next_u64()` = w_a + 2^32 w_b for the next two words a, b.
/// - `uniform<float>()` = (next_u32() >> 8) * 2^-24 in [0, 1); `uniform<double>()` = (next_u64() >> 11) * 2^-53.
/// - `uniform<T>(lo, hi)` = fma(hi - lo, u, lo) with u = `uniform<T>()`.
/// - `normal<T>()`: Box-Muller on two doubles u1 = 1 - uniform<double>(), u2 = uniform<double>():
///   \f$z = \sqrt{-2 \ln u_1} \cos(2\pi u_2)\f$ (and the sine for the second value of a pair in `fill_normal`),
///   computed in double and rounded to T. These use the C library's log, cos and sin, which are within
///   one ulp everywhere but not bit-identical across all C libraries.
/// - Fills walk a matrix in logical row-major order (row 0 left to right, then row 1, ...), whatever its storage.
class Rng {
 public:
  using Block = std::array<std::uint32_t, 4>;
  using Key = std::array<std::uint32_t, 2>;

  /// A generator for stream `stream` of seed `seed`. Distinct (seed, stream) pairs give independent sequences.
  explicit Rng(std::uint64_t seed, std::uint64_t stream = 0) : seed_(seed), stream_(stream) {}

  std::uint64_t seed() const { return seed_; }
  std::uint64_t stream() const { return stream_; }

  /// Philox4x32-10 of one counter block under one key: the whole generator, as a pure function.
  static Block philox4x32_10(Block counter, Key key) {
    constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
      if (round > 0) {
        key[0] += w0;
        key[1] += w1;
      }
      const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * counter[0];
      const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * counter[2];
      counter = {static_cast<std::uint32_t>(p1 >> 32) ^ counter[1] ^ key[0], static_cast<std::uint32_t>(p1),
                 static_cast<std::uint32_t>(p0 >> 32) ^ counter[3] ^ key[1], static_cast<std::uint32_t>(p0)};
    }
    return counter;
  }

  /// Next 32 random bits.
  std::uint32_t next_u32() {
    if (word_ == 4) refill();
    return block_[static_cast<std::size_t>(word_++)];
  }

  /// Next 64 random bits (two words, the first one low).
  std::uint64_t next_u64() {
    const std::uint64_t lo = next_u32();
    const std::uint64_t hi = next_u32();
    return lo | (hi << 32);
  }

  /// Uniform on [0, 1), with 24 (float) or 53 (double) random bits.
  template <class T>
  T uniform() {
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    if constexpr (std::is_same_v<T, float>) {
      return static_cast<float>(next_u32() >> 8) * 0x1.0p-24f;
    } else {
      return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
    }
  }

  /// Uniform on [lo, hi).
  template <class T>
  T uniform(T lo, T hi) {
    return std::fma(hi - lo, uniform<T>(), lo);
  }

  /// Standard normal (Box-Muller; one value per four words).
  template <class T>
  T normal() {
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    return static_cast<T>(box_muller().first);
  }

  /// Fills `m` with U[lo, hi) in logical row-major order.
  template <class Derived>
  void fill_uniform(Eigen::DenseBase<Derived>& m, typename Derived::Scalar lo, typename Derived::Scalar hi) {
    using T = typename Derived::Scalar;
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j) m.derived().coeffRef(i, j) = uniform<T>(lo, hi);
  }

  /// Fills `m` with N(mean, stddev^2) in logical row-major order; consecutive entries share one Box-Muller pair.
  template <class Derived>
  void fill_normal(Eigen::DenseBase<Derived>& m, typename Derived::Scalar mean, typename Derived::Scalar stddev) {
    using T = typename Derived::Scalar;
    LORAKIT_STATIC_ASSERT_SCALAR(T);
    bool have_spare = false;  // the second value of the last pair, not yet written
    double spare = 0;
    for (Index i = 0; i < m.rows(); ++i) {
      for (Index j = 0; j < m.cols(); ++j) {
        double z = spare;
        if (!have_spare) std::tie(z, spare) = box_muller();
        have_spare = !have_spare;
        m.derived().coeffRef(i, j) = std::fma(stddev, static_cast<T>(z), mean);
      }
    }
  }

  /// Fills `mask` with an inverted-dropout mask: each entry is 1 / (1 - p) with probability 1 - p, else 0.
  /// An entry is dropped when its 32-bit word is below round(p * 2^32).
  template <class Derived>
  void fill_dropout_mask(Eigen::DenseBase<Derived>& mask, double p) {
    using T = typename Derived::Scalar;
    if (!(p >= 0.0 && p < 1.0)) detail::fail<ValueError>("Rng::fill_dropout_mask", "p is ", p, ", expected 0 <= p < 1");
    const auto threshold = static_cast<std::uint64_t>(std::llround(p * 4294967296.0));
    const T keep = static_cast<T>(1.0 / (1.0 - p));
    for (Index i = 0; i < mask.rows(); ++i)
      for (Index j = 0; j < mask.cols(); ++j)
        mask.derived().coeffRef(i, j) = static_cast<std::uint64_t>(next_u32()) < threshold ? T(0) : keep;
  }

 private:
  void refill() {
    block_ = philox4x32_10({static_cast<std::uint32_t>(counter_), static_cast<std::uint32_t>(counter_ >> 32),
                            static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)},
                           {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)});
    ++counter_;
    word_ = 0;
  }

  std::pair<double, double> box_muller() {
    constexpr double two_pi = 6.283185307179586476925286766559;
    const double u1 = 1.0 - uniform<double>();  // (0, 1]: the logarithm stays finite
    const double u2 = uniform<double>();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = two_pi * u2;
    return {radius * std::cos(angle), radius * std::sin(angle)};
  }

  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint64_t counter_ = 0;
  Block block_{};
  int word_ = 4;
};

}  // namespace lorakit
