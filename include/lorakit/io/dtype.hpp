// Element types of tensor files (safetensors): their names and sizes, and exact conversions between
// float / double and the 16-bit formats IEEE binary16 (F16) and bfloat16 (BF16).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>

namespace lorakit::io {

/// Element type of a stored tensor (the safetensors names).
enum class Dtype {
  F32,   ///< IEEE binary32
  F64,   ///< IEEE binary64
  F16,   ///< IEEE binary16: 5 exponent bits, 10 mantissa bits (largest finite 65504)
  BF16,  ///< bfloat16: binary32 with the low 16 mantissa bits dropped (8 exponent bits, 7 mantissa bits)
};

/// "F32", "F64", "F16" or "BF16".
inline const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::F32: return "F32";
    case Dtype::F64: return "F64";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
  }
  return "?";
}

/// The Dtype of a safetensors name, or nothing for a name lorakit does not read.
inline std::optional<Dtype> parse_dtype(std::string_view name) {
  if (name == "F32") return Dtype::F32;
  if (name == "F64") return Dtype::F64;
  if (name == "F16") return Dtype::F16;
  if (name == "BF16") return Dtype::BF16;
  return std::nullopt;
}

/// Bytes per element.
inline std::size_t dtype_size(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64: return 8;
    case Dtype::F32: return 4;
    case Dtype::F16:
    case Dtype::BF16: return 2;
  }
  return 0;
}

namespace detail {

template <class To, class From>
To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From) && std::is_trivially_copyable_v<From>, "bit_cast: sizes differ");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

/// Bit layout of a binary floating-point format with `E` exponent bits and `M` stored mantissa bits.
template <int E, int M>
struct Format {
  static constexpr int exponent_bits = E;
  static constexpr int mantissa_bits = M;
  static constexpr int bias = (1 << (E - 1)) - 1;
  static constexpr int max_exponent_field = (1 << E) - 1;  // all ones: Inf and NaN
};
using Binary16 = Format<5, 10>;
using BFloat16 = Format<8, 7>;
using Binary64 = Format<11, 52>;

/// Rounds a double to the 16-bit format `F` (round to nearest, ties to even), correctly in one step, so that
/// float -> F and double -> F agree with a conversion done in exact arithmetic (no double rounding).
/// Overflow gives +-Inf, tiny values give (signed) subnormals or zero, NaN stays a quiet NaN of the same sign
/// that keeps the leading payload bits.
template <class F>
std::uint16_t narrow_to(double value) {
  static_assert(F::exponent_bits + F::mantissa_bits == 15, "narrow_to: a 16-bit format is expected");
  constexpr int src_m = Binary64::mantissa_bits;
  const auto bits = bit_cast<std::uint64_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 63) << 15);
  const auto exponent_field = static_cast<int>((bits >> src_m) & 0x7FF);
  std::uint64_t significand = bits & ((std::uint64_t{1} << src_m) - 1);
  constexpr auto inf = static_cast<std::uint16_t>(F::max_exponent_field << F::mantissa_bits);
  if (exponent_field == 0x7FF) {
    if (significand == 0) return static_cast<std::uint16_t>(sign | inf);
    const auto payload = static_cast<std::uint16_t>(significand >> (src_m - F::mantissa_bits));
    const auto quiet = static_cast<std::uint16_t>(1u << (F::mantissa_bits - 1));
    return static_cast<std::uint16_t>(sign | inf | quiet | payload);
  }
  if (exponent_field == 0 && significand == 0) return sign;
  // value = significand * 2^(exponent - src_m) with the leading bit of significand at position src_m.
  int exponent;
  if (exponent_field == 0) {  // a subnormal double: normalize it
    exponent = 1 - Binary64::bias;
    while ((significand >> src_m) == 0) {
      significand <<= 1;
      --exponent;
    }
  } else {
    exponent = exponent_field - Binary64::bias;
    significand |= std::uint64_t{1} << src_m;
  }
  const int target_field = exponent + F::bias;
  // Normal results keep mantissa_bits + 1 bits; subnormal ones (target_field < 1) fewer.
  const int shift = src_m - F::mantissa_bits + (target_field < 1 ? 1 - target_field : 0);
  if (shift > src_m + 1) return sign;  // below half the smallest subnormal: rounds to zero
  std::uint64_t rounded = significand >> shift;
  const std::uint64_t rest = significand & ((std::uint64_t{1} << shift) - 1);
  const std::uint64_t half = std::uint64_t{1} << (shift - 1);
  if (rest > half || (rest == half && (rounded & 1) != 0)) ++rounded;
  // For a normal result, (field - 1) << M plus the significand with its leading bit adds that bit into the
  // exponent field, and a carry out of rounding moves to the next binade by itself; for a subnormal result
  // the rounded significand is the encoding (rounding up to 2^M gives the smallest normal).
  std::uint64_t magnitude = target_field >= 1
                                ? (static_cast<std::uint64_t>(target_field - 1) << F::mantissa_bits) + rounded
                                : rounded;
  if (magnitude >= inf) magnitude = inf;
  return static_cast<std::uint16_t>(sign | magnitude);
}

}  // namespace detail

/// float -> IEEE binary16, round to nearest even (overflow to Inf, NaN kept).
inline std::uint16_t float_to_half(float value) { return detail::narrow_to<detail::Binary16>(value); }
/// double -> IEEE binary16, rounded once.
inline std::uint16_t double_to_half(double value) { return detail::narrow_to<detail::Binary16>(value); }
/// float -> bfloat16, round to nearest even (overflow to Inf, NaN kept).
inline std::uint16_t float_to_bfloat16(float value) { return detail::narrow_to<detail::BFloat16>(value); }
/// double -> bfloat16, rounded once.
inline std::uint16_t double_to_bfloat16(double value) { return detail::narrow_to<detail::BFloat16>(value); }

/// IEEE binary16 -> float (exact).
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return detail::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  return detail::bit_cast<float>(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

/// bfloat16 -> float (exact: the high half of a binary32).
inline float bfloat16_to_float(std::uint16_t b) { return detail::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

/// double -> float rounded to nearest even, with values beyond float's range giving +-Inf (a plain cast
/// would be undefined there).
inline float double_to_float(double value) {
  constexpr double max_float = static_cast<double>(std::numeric_limits<float>::max());
  // Halfway between FLT_MAX and the next binade (2^128): ties go to Inf since FLT_MAX's last bit is odd.
  constexpr double overflow = max_float + 0x1p103;
  if (std::fabs(value) >= overflow) return value > 0 ? std::numeric_limits<float>::infinity()
                                                    : -std::numeric_limits<float>::infinity();
  return static_cast<float>(value);
}

/// The largest finite value of a dtype (double's for F64).
inline double dtype_max(Dtype dtype) {
  switch (dtype) {
    case Dtype::F64: return std::numeric_limits<double>::max();
    case Dtype::F32: return static_cast<double>(std::numeric_limits<float>::max());
    case Dtype::F16: return 65504.0;
    case Dtype::BF16: return static_cast<double>(bfloat16_to_float(0x7F7Fu));
  }
  return 0;
}

}  // namespace lorakit::io
