// The adapter concept: what `AdaptedLinear`, `AdapterSet`, the optimizers and the serializers require of an
// adapter type (`Lora<T>`, `Vera<T>`, `AdapterRef<A>`, or a user's own), written down as a trait.
#pragma once

#include "lorakit/core/parameter.hpp"
#include "lorakit/core/types.hpp"

#include <type_traits>
#include <utility>
#include <vector>

namespace lorakit {

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

}  // namespace lorakit
