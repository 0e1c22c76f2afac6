// The adapter concept: what `AdaptedLinear`, `AdapterSet`, the optimizers and the serializers require of an
// adapter type (`Lora<T>`, `Vera<T>`, `AdapterRef<A>`, or a user's own), written down as a trait; and the second
// form, for adapters that need the base weight itself (`Dora<T>`).
#pragma once

#include "lorakit/core/parameter.hpp"
#include "lorakit/core/types.hpp"

#include <type_traits>
#include <utility>
#include <vector>

namespace lorakit {

/// How a base weight is stored: PyTorch's `nn.Linear` keeps W [out x in]; GPT-2's `Conv1D` keeps its transpose
/// [in x out] (PEFT's `fan_in_fan_out = True`), and a merge must then add the transposed update.
enum class WeightLayout {
  out_by_in,  ///< W [out x in]: y = x W^T (nn.Linear)
  in_by_out,  ///< W [in x out]: y = x W (Conv1D, fan_in_fan_out)
};

/// An adapter of a weight W [out x in] is a type `A` with
///
/// | expression | meaning |
/// | --- | --- |
/// | `typename A::Scalar` | float or double |
/// | `a.in_features()`, `a.out_features()` | the shape of the weight it adapts |
/// | `a.forward(x, y)` | y [n x out] += adapter(x [n x in]) |
/// | `a.backward(x, dy, dx)` | gradients += ...; dx [n x in] += d adapter / dx |
/// | `a.backward(x, dy)` | gradients only |
/// | `a.merge_into(W)`, `a.unmerge_from(W)` | W += / -= ΔW |
/// | `a.delta_weight()` | ΔW [out x in] as a `Matrix<Scalar>` |
/// | `a.parameters()` | `std::vector<Parameter<Scalar>>`: what an optimizer walks |
///
/// `is_adapter_v<A>` tests these expressions; `AdaptedLinear` states them in a `static_assert`.
template <class A, class = void>
struct is_adapter : std::false_type {};

template <class A>
struct is_adapter<
    A, std::void_t<typename A::Scalar,
                   decltype(std::declval<const A&>().in_features()),
                   decltype(std::declval<const A&>().out_features()),
                   decltype(std::declval<A&>().forward(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                       std::declval<MatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<A&>().backward(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<MatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<A&>().backward(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<ConstMatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<const A&>().merge_into(std::declval<MatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<const A&>().unmerge_from(std::declval<MatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<const A&>().delta_weight()),
                   decltype(std::declval<A&>().parameters())>>
    : std::is_same<decltype(std::declval<A&>().parameters()), std::vector<Parameter<typename A::Scalar>>> {};

template <class A>
inline constexpr bool is_adapter_v = is_adapter<A>::value;

/// Whether `A` declares `static constexpr bool needs_base_weight = true`: an adapter whose output depends on the
/// base weight itself (DoRA normalizes the rows of W + ΔW), not only on its own parameters.
template <class A, class = void>
struct needs_base_weight : std::false_type {};

template <class A>
struct needs_base_weight<A, std::enable_if_t<A::needs_base_weight>> : std::true_type {};

template <class A>
inline constexpr bool needs_base_weight_v = needs_base_weight<A>::value;

/// An adapter that needs the base weight (`Dora<T>`, `AdapterRef<Dora<T>>`) declares
/// `static constexpr bool needs_base_weight = true` and takes W, as stored in `layout` ([out x in], or [in x out]
/// with `WeightLayout::in_by_out`), with every call that depends on it. `AdaptedLinear` passes its own W, so that
/// the layer keeps a single copy of the weight and the adapter computes what it derives from W (DoRA's row norms)
/// once per step:
///
/// | expression | meaning |
/// | --- | --- |
/// | `typename A::Scalar`, `a.in_features()`, `a.out_features()`, `a.parameters()` | as above |
/// | `a.forward(x, W, layout, y)` | on entry y = x W^T (the base product, no bias); on return the adapted output without bias |
/// | `a.backward(x, dy, W, layout, dx)` | gradients += ...; dx [n x in] = the whole gradient reaching x (base path included; overwritten) |
/// | `a.backward(x, dy, W, layout)` | gradients only |
/// | `a.merge_into(W, layout)`, `a.unmerge_from(W, layout)` | W becomes the merged weight, and back (non-const: may keep what the unmerge needs) |
/// | `a.delta_weight(W, layout)` | the merged weight minus W, [out x in] |
///
/// `is_base_weight_adapter_v<A>` tests these expressions.
template <class A, class = void>
struct is_base_weight_adapter : std::false_type {};

template <class A>
struct is_base_weight_adapter<
    A, std::void_t<typename A::Scalar,
                   decltype(std::declval<const A&>().in_features()),
                   decltype(std::declval<const A&>().out_features()),
                   decltype(std::declval<A&>().forward(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                       std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                       WeightLayout::out_by_in,
                                                       std::declval<MatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<A&>().backward(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        WeightLayout::out_by_in,
                                                        std::declval<MatrixRef<typename A::Scalar>>())),
                   decltype(std::declval<A&>().backward(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                        WeightLayout::out_by_in)),
                   decltype(std::declval<A&>().merge_into(std::declval<MatrixRef<typename A::Scalar>>(),
                                                          WeightLayout::out_by_in)),
                   decltype(std::declval<A&>().unmerge_from(std::declval<MatrixRef<typename A::Scalar>>(),
                                                            WeightLayout::out_by_in)),
                   decltype(std::declval<const A&>().delta_weight(std::declval<ConstMatrixRef<typename A::Scalar>>(),
                                                                  WeightLayout::out_by_in)),
                   decltype(std::declval<A&>().parameters())>>
    : std::bool_constant<needs_base_weight_v<A> &&
                         std::is_same_v<decltype(std::declval<A&>().parameters()),
                                        std::vector<Parameter<typename A::Scalar>>>> {};

template <class A>
inline constexpr bool is_base_weight_adapter_v = is_base_weight_adapter<A>::value;

}  // namespace lorakit
