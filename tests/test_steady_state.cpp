// No heap allocation in a steady-state training step (LoRA, DoRA): forward, backward, optimizer step.
//
// Two counters: a replaced global operator new (std containers, strings) and Eigen's own allocator check
// (EIGEN_RUNTIME_NO_MALLOC), which sees every Eigen temporary and workspace, since Eigen allocates with
// malloc rather than operator new.
#define EIGEN_RUNTIME_NO_MALLOC
#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<long> eigen_allocation_attempts{0};
std::atomic<long> operator_new_calls{0};
}  // namespace

// Counts Eigen's refused allocations instead of aborting (eigen_assert is otherwise off in Release builds).
#define eigen_assert(x) \
  do {                  \
    if (!(x)) ++eigen_allocation_attempts; \
  } while (false)

#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/adapter/adapted_linear.hpp>
#include <lorakit/adapter/dora.hpp>
#include <lorakit/adapter/lora.hpp>
#include <lorakit/optim/adamw.hpp>
#include <lorakit/serve/adapter_bank.hpp>

// GCC 12 sees the replaced delete's free() paired with a new-expression once both are inlined and warns
// (-Wmismatched-new-delete); here the pair is malloc/free by construction.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// Every form of the global allocation functions is replaced, so that each new finds its own delete (under
// AddressSanitizer a replaced delete meeting the sanitizer's own nothrow new is reported as a mismatch).
namespace {
void* counted_allocation(std::size_t size) noexcept {
  ++operator_new_calls;
  return std::malloc(size ? size : 1);
}
void* counted_allocation_or_throw(std::size_t size) {
  if (void* p = counted_allocation(size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return counted_allocation_or_throw(size); }
void* operator new[](std::size_t size) { return counted_allocation_or_throw(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_allocation(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

using namespace lorakit;

namespace {

// Small enough that Eigen's matrix-product blocking fits its stack buffer (EIGEN_STACK_ALLOCATION_LIMIT);
// larger products take their packing buffers from the heap inside Eigen itself.
constexpr Index kIn = 64, kOut = 48, kRank = 8, kRows = 16;

/// Five training steps of `layer` (forward, backward, AdamW step) after a first one that sizes the workspaces
/// allocate nothing, as seen by both counters.
template <class T, class Adapter>
void check_steps_allocate_nothing(AdaptedLinear<T, Adapter>& layer) {
  layer.set_bias(Vector<T>::Ones(kOut));
  AdamW<T> adamw(layer.adapter().parameters());
  const Matrix<T> x = testing::random_matrix<T>(kRows, kIn, 2), dy = testing::random_matrix<T>(kRows, kOut, 3);
  Matrix<T> y(kRows, kOut), dx(kRows, kIn);
  auto step = [&] {
    layer.forward(x, y);
    adamw.zero_grad();
    layer.backward(x, dy, dx);
    adamw.step();
  };
  step();  // the first step sizes the workspaces

  const long new_before = operator_new_calls.load();
  eigen_allocation_attempts = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  for (int i = 0; i < 5; ++i) step();
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(eigen_allocation_attempts.load() == 0);
  CHECK(operator_new_calls.load() - new_before == 0);
}

LoraConfig step_config(double dropout) {
  LoraConfig c;
  c.rank = kRank;
  c.dropout = dropout;
  return c;
}

}  // namespace

TEMPLATE_TEST_CASE("A steady-state LoRA training step allocates nothing", "[steady_state]", float, double) {
  using T = TestType;
  for (double dropout : {0.0, 0.1}) {
    INFO("dropout " << dropout);
    auto layer = AdaptedLinear<T, Lora<T>>::owning(testing::random_matrix<T>(kOut, kIn, 1),
                                                   Lora<T>(kIn, kOut, step_config(dropout)));
    check_steps_allocate_nothing(layer);
  }

  // The counters do see allocations: a temporary matrix trips Eigen's, a std::vector the other.
  eigen_allocation_attempts = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  { Matrix<T> temporary(50, 50); }
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(eigen_allocation_attempts.load() > 0);
  const long before = operator_new_calls.load();
  { std::vector<int> v(10); }
  CHECK(operator_new_calls.load() > before);
}

TEMPLATE_TEST_CASE("A steady-state DoRA training step allocates nothing", "[steady_state][dora]", float, double) {
  using T = TestType;
  for (double dropout : {0.0, 0.1}) {
    INFO("dropout " << dropout);
    const Matrix<T> W = testing::random_matrix<T>(kOut, kIn, 1);
    auto layer = AdaptedLinear<T, Dora<T>>::owning(W, Dora<T>(W, step_config(dropout)));
    layer.adapter().B() = testing::random_matrix<T>(kOut, kRank, 4, 0.1);
    check_steps_allocate_nothing(layer);
  }
}

TEMPLATE_TEST_CASE("AdapterBank's load, clear and steady-state forward allocate nothing", "[steady_state][bank]", float,
                   double) {
  using T = TestType;
  const Index in = 40, out = 24, n = 24, slots = 4, max_rank = 8;
  AdapterBank<T> bank(in, out, slots, max_rank);
  std::vector<Lora<T>> loras;
  for (Index k = 0; k < slots; ++k) {
    LoraConfig c;
    c.rank = 2 + 2 * k;
    c.seed = static_cast<std::uint64_t>(k);
    loras.emplace_back(in, out, c);
    loras.back().B() = testing::random_matrix<T>(out, c.rank, 10 + static_cast<std::uint64_t>(k));
  }
  const Matrix<T> x = testing::random_matrix<T>(n, in, 2);
  Matrix<T> y = Matrix<T>::Zero(n, out);
  std::vector<Index> row_slots(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) row_slots[static_cast<std::size_t>(i)] = i % (slots + 1) - 1;  // -1 included
  const std::vector<BankSegment> segments = {{5, 0}, {0, 1}, {7, 3}, {4, -1}, {8, 2}};
  for (BankProducts products : {BankProducts::grouped, BankProducts::gathered, BankProducts::automatic}) {
    bank.set_products(products);
    for (Index k = 0; k < slots; ++k) bank.load(k, loras[static_cast<std::size_t>(k)]);
    bank.forward(x, row_slots, y);  // the first forward sizes the workspaces
    bank.forward(x, segments, y);

    const long new_before = operator_new_calls.load();
    eigen_allocation_attempts = 0;
    Eigen::internal::set_is_malloc_allowed(false);
    for (int i = 0; i < 3; ++i) {
      bank.clear(1);
      bank.load(1, loras[static_cast<std::size_t>(3 - i % 2)]);  // hot swap between batches
      bank.forward(x, row_slots, y);
      bank.forward(x, segments, y);
    }
    Eigen::internal::set_is_malloc_allowed(true);
    CHECK(eigen_allocation_attempts.load() == 0);
    CHECK(operator_new_calls.load() - new_before == 0);
  }
}
