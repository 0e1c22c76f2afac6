// AdapterBank (serve/adapter_bank.hpp) against the single-adapter truth, a loop of Lora::forward (Vera::forward)
// calls on the rows that use each adapter, for mixes of ranks and slots, over both product paths; the gathered
// kernels against scalar loops; the errors and that they change nothing.
#include <catch2/catch.hpp>

#include "test_support.hpp"

#include <lorakit/kernel/gathered_products.hpp>
#include <lorakit/serve/adapter_bank.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace lorakit_test_serve_bank {

using namespace lorakit;
using namespace lorakit::testing;

namespace {

/// A LoRA adapter with random A and B (B nonzero, so the branch is not trivially zero).
template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, std::uint64_t seed, bool rslora = false) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = 2.0 * static_cast<double>(rank) + 1.0;
  c.use_rslora = rslora;
  c.seed = seed;
  return Lora<T>::from_factors(random_matrix<T>(rank, in, seed, 0.5), random_matrix<T>(out, rank, seed + 1000, 0.5), c);
}

/// y0 plus, on each row i with an adapter, what `Lora::forward` of that one row adds (adapters[k] is slot k's
/// adapter or nullptr for an empty slot).
template <class T>
Matrix<T> reference(const Matrix<T>& x, const std::vector<Index>& row_slots, std::vector<Lora<T>*> adapters,
                    const Matrix<T>& y0) {
  Matrix<T> y = y0;
  for (Index i = 0; i < x.rows(); ++i) {
    const Index k = row_slots[static_cast<std::size_t>(i)];
    if (k < 0 || adapters[static_cast<std::size_t>(k)] == nullptr) continue;
    Lora<T>& lora = *adapters[static_cast<std::size_t>(k)];
    lora.set_training(false);
    Matrix<T> row = y.row(i);
    lora.forward(x.row(i), row);
    y.row(i) = row;
  }
  return y;
}

/// Every row that has no adapter is bit-identical to y0, every other row within rounding of the reference.
template <class T>
void check_against(const Matrix<T>& y, const Matrix<T>& expected, const Matrix<T>& y0,
                   const std::vector<Index>& row_slots, const std::vector<Lora<T>*>& adapters) {
  for (Index i = 0; i < y.rows(); ++i) {
    const Index k = row_slots[static_cast<std::size_t>(i)];
    INFO("row " << i << " slot " << k);
    if (k < 0 || adapters[static_cast<std::size_t>(k)] == nullptr) {
      REQUIRE(std::memcmp(y.row(i).data(), y0.row(i).data(), sizeof(T) * static_cast<std::size_t>(y.cols())) == 0);
    } else {
      REQUIRE(relative_error(y.row(i), expected.row(i)) < 20 * tolerance<T>());
    }
  }
}

template <class T>
Matrix<T> run(AdapterBank<T>& bank, BankProducts products, const Matrix<T>& x, const std::vector<Index>& row_slots,
              const Matrix<T>& y0) {
  bank.set_products(products);
  Matrix<T> y = y0;
  bank.forward(x, row_slots, y);
  return y;
}

std::vector<Index> random_slots(Index n, Index slots, std::uint64_t seed) {
  Matrix<double> u(1, n);
  Rng(seed).fill_uniform(u, -1.0, static_cast<double>(slots));
  std::vector<Index> out(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<Index>(std::floor(u(0, i)));
  return out;
}

constexpr BankProducts kAllProducts[] = {BankProducts::automatic, BankProducts::grouped, BankProducts::gathered};

}  // namespace

TEMPLATE_TEST_CASE("AdapterBank::forward equals a loop of Lora::forward for mixes of ranks and slots", "[serve][bank]",
                   float, double) {
  using T = TestType;
  // out = 37: not a multiple of any vector width, so the gathered expand's tails run.
  const Index in = 29, out = 37, max_rank = 9;
  std::vector<Lora<T>> loras;
  const Index ranks[] = {1, 9, 4, 7, 2, 8};
  for (std::size_t k = 0; k < 6; ++k) loras.push_back(random_lora<T>(in, out, ranks[k], 10 + k, k % 2 == 1));
  AdapterBank<T> bank(in, out, 7, max_rank);  // slot 6 never loaded; slot 3 loaded, then cleared
  std::vector<Lora<T>*> adapters(7, nullptr);
  for (std::size_t k = 0; k < 6; ++k) {
    bank.load(static_cast<Index>(k), loras[k]);
    adapters[k] = &loras[k];
  }
  bank.clear(3);
  adapters[3] = nullptr;
  CHECK(bank.rank(1) == 9);
  CHECK(bank.rank(3) == 0);
  CHECK_FALSE(bank.occupied(6));

  const Index n = 300;  // > kGatherBlock: the grouped path copies its non-contiguous rows in several blocks
  const Matrix<T> x = random_matrix<T>(n, in, 1);
  const Matrix<T> y0 = random_matrix<T>(n, out, 2);
  SECTION("random slots, -1 included") {
    const std::vector<Index> slots = random_slots(n, 7, 3);
    const Matrix<T> expected = reference(x, slots, adapters, y0);
    for (BankProducts p : kAllProducts) check_against(run(bank, p, x, slots, y0), expected, y0, slots, adapters);
  }
  SECTION("every row on one adapter") {
    const std::vector<Index> slots(static_cast<std::size_t>(n), 1);
    const Matrix<T> expected = reference(x, slots, adapters, y0);
    for (BankProducts p : kAllProducts) check_against(run(bank, p, x, slots, y0), expected, y0, slots, adapters);
  }
  SECTION("no row has an adapter: y is untouched") {
    for (Index s : {Index(-1), Index(3), Index(6)}) {
      const std::vector<Index> slots(static_cast<std::size_t>(n), s);
      for (BankProducts p : kAllProducts) {
        const Matrix<T> y = run(bank, p, x, slots, y0);
        REQUIRE(std::memcmp(y.data(), y0.data(), sizeof(T) * static_cast<std::size_t>(y.size())) == 0);
      }
    }
  }
  SECTION("one row per adapter") {
    const std::vector<Index> slots = {4, 0, 5, 2, 1, 3, 6, -1};
    const Matrix<T> xs = x.topRows(8), ys = y0.topRows(8);
    const Matrix<T> expected = reference(xs, slots, adapters, ys);
    for (BankProducts p : kAllProducts) check_against(run(bank, p, xs, slots, ys), expected, ys, slots, adapters);
  }
  SECTION("a single row") {
    const std::vector<Index> slots = {1};
    const Matrix<T> xs = x.topRows(1), ys = y0.topRows(1);
    const Matrix<T> expected = reference(xs, slots, adapters, ys);
    for (BankProducts p : kAllProducts) check_against(run(bank, p, xs, slots, ys), expected, ys, slots, adapters);
  }
  SECTION("segments, empty ones included, equal the same slots given per row") {
    const std::vector<BankSegment> segments = {{0, 2}, {40, 1}, {1, 5}, {0, 0}, {100, -1}, {59, 3}, {30, 2},
                                               {0, 4}, {70, 0}};
    std::vector<Index> slots;
    for (const BankSegment& s : segments) slots.insert(slots.end(), static_cast<std::size_t>(s.rows), s.slot);
    REQUIRE(static_cast<Index>(slots.size()) == n);
    const Matrix<T> expected = reference(x, slots, adapters, y0);
    for (BankProducts p : kAllProducts) {
      bank.set_products(p);
      Matrix<T> y = y0;
      bank.forward(x, segments, y);
      check_against(y, expected, y0, slots, adapters);
    }
  }
  SECTION("a slot reloaded with another adapter serves the new one at once") {
    Lora<T> other = random_lora<T>(in, out, 3, 77);
    bank.load(1, other);
    adapters[1] = &other;
    const std::vector<Index> slots = random_slots(n, 7, 4);
    const Matrix<T> expected = reference(x, slots, adapters, y0);
    for (BankProducts p : kAllProducts) check_against(run(bank, p, x, slots, y0), expected, y0, slots, adapters);
    CHECK(bank.rank(1) == 3);
  }
}

TEMPLATE_TEST_CASE("AdapterBank writes fused projections' output slices", "[serve][bank]", float, double) {
  using T = TestType;
  // q, k, v of one attention layer: one output [n x (16 + 8 + 8)], a bank per projection with its own adapters.
  const Index in = 16, n = 12;
  const Index outs[] = {16, 8, 8};
  const Matrix<T> x = random_matrix<T>(n, in, 5);
  const Matrix<T> y0 = random_matrix<T>(n, 32, 6);
  Matrix<T> y = y0, expected = y0;
  const std::vector<Index> slots = random_slots(n, 2, 7);
  Index offset = 0;
  for (std::size_t p = 0; p < 3; ++p) {
    AdapterBank<T> bank(in, outs[p], 2, 4);
    std::vector<Lora<T>> loras = {random_lora<T>(in, outs[p], 4, 20 + p), random_lora<T>(in, outs[p], 2, 30 + p)};
    bank.load(0, loras[0]);
    bank.load(1, loras[1]);
    bank.forward(x, slots, y.middleCols(offset, outs[p]));
    expected.middleCols(offset, outs[p]) =
        reference<T>(x, slots, {&loras[0], &loras[1]}, Matrix<T>(y0.middleCols(offset, outs[p])));
    offset += outs[p];
  }
  CHECK(relative_error(y, expected) < 20 * tolerance<T>());
  for (Index i = 0; i < n; ++i) {
    if (slots[static_cast<std::size_t>(i)] < 0) CHECK(y.row(i) == y0.row(i));
  }
}

TEMPLATE_TEST_CASE("AdapterBank serves a VeRA adapter as Vera::forward does", "[serve][bank]", float, double) {
  using T = TestType;
  const Index in = 20, out = 14, r = 6, n = 10;
  auto projections = std::make_shared<const VeraProjections<T>>(r, 32, 32, 3);
  VeraConfig c;
  c.rank = r;
  Vera<T> vera(projections, in, out, c);
  vera.lambda_b() = random_matrix<T>(out, 1, 8);
  vera.lambda_d() = random_matrix<T>(r, 1, 9);
  vera.set_training(false);
  AdapterBank<T> bank(in, out, 3, 8);
  bank.load(2, vera);
  CHECK(bank.scaling(2) == T(1));
  const Matrix<T> x = random_matrix<T>(n, in, 10);
  const Matrix<T> y0 = random_matrix<T>(n, out, 11);
  Matrix<T> expected = y0;
  vera.forward(x, expected);
  for (BankProducts p : kAllProducts) {
    bank.set_products(p);
    Matrix<T> y = y0;
    bank.forward(x, std::vector<Index>(static_cast<std::size_t>(n), 2), y);
    CHECK(relative_error(y, expected) < 20 * tolerance<T>());
  }
}

TEMPLATE_TEST_CASE("The gathered kernels equal scalar loops, with strides and remainders", "[serve][kernel]", float,
                   double) {
  using T = TestType;
  // out = 1100 with r = 40: B^T is cut into several column panels, and in = 1103 into several row panels of A^T
  // (detail::kGatheredPanelEntries); the other sizes leave tails past the last vector.
  for (Index out : {Index(1), Index(7), Index(33), Index(70), Index(1100)}) {
    for (Index count : {Index(1), Index(3), Index(5), Index(9)}) {
      const Index in = out + 3, r = out > 100 ? 40 : 5, ldx = in + 2, ld_at = r + 3, ldt = r + 1, ldb = out + 4,
                  ldy = out + 5, rows_total = 12;
      INFO("out " << out << " count " << count);
      const Matrix<T> x = random_matrix<T>(rows_total, ldx, 1);
      const Matrix<T> at = random_matrix<T>(in, ld_at, 2);  // A^T [in x r] in its first r columns
      const Matrix<T> bt = random_matrix<T>(r, ldb, 3);
      std::vector<Index> rows;
      for (Index j = 0; j < count; ++j) rows.push_back((j * 7 + 2) % rows_total);  // distinct, out of order
      Matrix<T> t = Matrix<T>::Constant(count, ldt, T(7));  // overwritten in its first r columns
      gathered_project(x.data(), ldx, rows.data(), count, at.data(), ld_at, in, r, t.data(), ldt);
      const Matrix<T> y0 = random_matrix<T>(rows_total, ldy, 4);
      Matrix<T> y = y0;
      gathered_expand_add(t.data(), ldt, rows.data(), count, bt.data(), ldb, r, out, y.data(), ldy);
      Matrix<double> expected_y = y0.template cast<double>();
      for (Index j = 0; j < count; ++j) {
        const Index i = rows[static_cast<std::size_t>(j)];
        for (Index p = 0; p < r; ++p) {
          double dot = 0, magnitude = 0;
          for (Index q = 0; q < in; ++q) {
            dot += static_cast<double>(x(i, q)) * static_cast<double>(at(q, p));
            magnitude += std::abs(static_cast<double>(x(i, q)) * static_cast<double>(at(q, p)));
          }
          REQUIRE(std::abs(t(j, p) - dot) <= 4 * tolerance<T>() * magnitude);
          for (Index c = 0; c < out; ++c) expected_y(i, c) += static_cast<double>(t(j, p)) * static_cast<double>(bt(p, c));
        }
        REQUIRE(t(j, r) == T(7));  // past the requested columns: untouched
      }
      // Only the listed rows' first `out` columns change; every other entry is untouched.
      const double scale = std::max(1.0, static_cast<double>(t.leftCols(r).cwiseAbs().maxCoeff()));
      REQUIRE((y.template cast<double>() - expected_y).cwiseAbs().maxCoeff() <= 4 * tolerance<T>() * scale * r * 4);
      for (Index i = 0; i < rows_total; ++i)
        for (Index c = out; c < ldy; ++c) REQUIRE(y(i, c) == y0(i, c));
    }
  }
}

TEMPLATE_TEST_CASE("AdapterBank's errors name the argument and change nothing", "[serve][bank][errors]", float, double) {
  using T = TestType;
  const Index in = 10, out = 8, n = 5;
  AdapterBank<T> bank(in, out, 3, 4);
  Lora<T> lora = random_lora<T>(in, out, 4, 1);
  bank.load(0, lora);
  const Matrix<T> A0 = bank.A(0), Bt0 = bank.B_transposed(0);
  const Matrix<T> x = random_matrix<T>(n, in, 2);
  const Matrix<T> y0 = random_matrix<T>(n, out, 3);
  Matrix<T> y = y0;
  const std::vector<Index> ok(static_cast<std::size_t>(n), 0);
  using Catch::Matchers::Contains;

  CHECK_THROWS_AS(AdapterBank<T>(0, out, 3, 4), ValueError);
  CHECK_THROWS_AS(AdapterBank<T>(in, out, 0, 4), ValueError);
  CHECK_THROWS_WITH(AdapterBank<T>(in, out, 3, 9), Contains("max_rank is 9"));
  CHECK_THROWS_WITH(AdapterBank<T>(in, out, 3, 0), Contains("max_rank is 0"));

  // load: bad slot, wrong shape, rank above max_rank, non-finite factors.
  CHECK_THROWS_WITH(bank.load(3, random_lora<T>(in, out, 2, 4)), Contains("AdapterBank::load: slot is 3"));
  CHECK_THROWS_AS(bank.load(-1, random_lora<T>(in, out, 2, 4)), ValueError);
  CHECK_THROWS_AS(bank.load(0, random_lora<T>(in + 1, out, 2, 4)), ShapeError);
  CHECK_THROWS_WITH(bank.load(0, random_lora<T>(in, out, 5, 4)), Contains("rank is 5, above max_rank = 4"));
  Lora<T> bad = random_lora<T>(in, out, 2, 5);
  bad.B()(1, 1) = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_WITH(bank.load(0, bad), Contains("adapter.B()[1, 1]"));
  CHECK_THROWS_AS(bank.clear(3), ValueError);
  CHECK(bank.rank(0) == 4);
  CHECK(Matrix<T>(bank.A(0)) == A0);
  CHECK(Matrix<T>(bank.B_transposed(0)) == Bt0);

  // forward: bad slot per row, row_slots length, shapes, segments, non-finite x.
  CHECK_THROWS_WITH(bank.forward(x, std::vector<Index>{0, 0, 3, 0, 0}, y), Contains("row_slots[2] is 3"));
  CHECK_THROWS_WITH(bank.forward(x, std::vector<Index>{0, -2, 0, 0, 0}, y), Contains("row_slots[1] is -2"));
  CHECK_THROWS_WITH(bank.forward(x, std::vector<Index>{0, 0, 0, 0}, y), Contains("row_slots has 4 entries"));
  CHECK_THROWS_AS(bank.forward(Matrix<T>(random_matrix<T>(n, in + 1, 4)), ok, y), ShapeError);
  Matrix<T> wrong_y(n, out + 1);
  CHECK_THROWS_AS(bank.forward(x, ok, wrong_y), ShapeError);
  Matrix<T> empty_y(0, out);
  CHECK_THROWS_AS(bank.forward(Matrix<T>(0, in), std::vector<Index>{}, empty_y), ShapeError);
  CHECK_THROWS_WITH(bank.forward(x, std::vector<BankSegment>{{2, 0}, {2, 1}}, y), Contains("segments cover 4 rows"));
  CHECK_THROWS_WITH(bank.forward(x, std::vector<BankSegment>{{6, 0}, {-1, 1}}, y), Contains("segments[1].rows is -1"));
  CHECK_THROWS_WITH(bank.forward(x, std::vector<BankSegment>{{5, 7}}, y), Contains("segments[0].slot is 7"));
  Matrix<T> x_nan = x;
  x_nan(3, 2) = std::numeric_limits<T>::infinity();
  for (BankProducts p : kAllProducts) {
    bank.set_products(p);
    CHECK_THROWS_WITH(bank.forward(x_nan, std::vector<Index>{0, 0, 0, 0, 0}, y), Contains("x[3, 2] is inf"));
  }
  // A non-finite row without an adapter is not read: no error, that row untouched.
  bank.forward(x_nan, std::vector<Index>{0, 0, 0, -1, 0}, y);
  CHECK(y.row(3) == y0.row(3));
  y = y0;
  for (BankProducts p : kAllProducts) {
    bank.set_products(p);
    CHECK_THROWS_AS(bank.forward(x_nan, std::vector<Index>{1, 0, 2, 0, 0}, y), ValueError);
  }
  CHECK(y == y0);
  CHECK_THROWS_AS(bank.set_gathered_max_rows(-1), ValueError);
}

TEMPLATE_TEST_CASE("make_banks puts adapter set j in slot j of each module's bank", "[serve][bank]", float, double) {
  using T = TestType;
  AdapterSet<Lora<T>> user0, user1, user2;
  user0.add("q", random_lora<T>(12, 12, 2, 1));
  user0.add("v", random_lora<T>(12, 6, 3, 2));
  user1.add("q", random_lora<T>(12, 12, 5, 3));
  user2.add("v", random_lora<T>(12, 6, 1, 4));
  auto banks = make_banks<T>({&user0, &user1, &user2});
  REQUIRE(banks.size() == 2);
  const AdapterBank<T>& q = banks.at("q");
  const AdapterBank<T>& v = banks.at("v");
  CHECK(q.slots() == 3);
  CHECK(q.max_rank() == 5);
  CHECK(v.max_rank() == 3);
  CHECK(q.rank(0) == 2);
  CHECK(q.rank(1) == 5);
  CHECK(q.rank(2) == 0);
  CHECK(v.rank(1) == 0);
  CHECK(Matrix<T>(v.A(2)) == user2.at("v").A());
  CHECK(Matrix<T>(v.B_transposed(0)) == Matrix<T>(user0.at("v").B().transpose()));
  CHECK(v.scaling(2) == user2.at("v").scaling());
  CHECK(make_banks<T>({&user0, &user1}, 8).at("q").max_rank() == 8);

  AdapterSet<Lora<T>> odd;
  odd.add("q", random_lora<T>(12, 10, 2, 5));
  CHECK_THROWS_AS(make_banks<T>({&user0, &odd}), ShapeError);
  CHECK_THROWS_AS(make_banks<T>({&user0, &user1}, 4), ValueError);
  CHECK_THROWS_AS(make_banks<T>({}), ValueError);
}

TEMPLATE_TEST_CASE("load_banks swaps adapter sets into slots of every bank, all or nothing", "[serve][bank]", float,
                   double) {
  using T = TestType;
  using Catch::Matchers::Contains;
  AdapterSet<Lora<T>> user0, user1, user2;
  user0.add("q", random_lora<T>(12, 12, 2, 1));
  user0.add("v", random_lora<T>(12, 6, 3, 2));
  user1.add("q", random_lora<T>(12, 12, 5, 3));
  user2.add("v", random_lora<T>(12, 6, 1, 4));
  auto banks = make_banks<T>({&user0, &user0, &user0}, 5);

  // user2 and user1 into slots 1 and 2; user2 does not adapt q, user1 not v: those slots are cleared.
  load_banks<T>(banks, {&user2, &user1}, 1);
  const AdapterBank<T>& q = banks.at("q");
  const AdapterBank<T>& v = banks.at("v");
  CHECK(q.rank(0) == 2);
  CHECK(q.rank(1) == 0);
  CHECK(q.rank(2) == 5);
  CHECK(v.rank(1) == 1);
  CHECK(v.rank(2) == 0);
  CHECK(Matrix<T>(q.A(2)) == user1.at("q").A());
  CHECK(Matrix<T>(v.B_transposed(1)) == Matrix<T>(user2.at("v").B().transpose()));
  CHECK(q.scaling(2) == user1.at("q").scaling());
  CHECK(v.scaling(1) == user2.at("v").scaling());
  // Rows on the swapped slots get what each user's adapter gives alone.
  const Matrix<T> x = random_matrix<T>(4, 12, 5);
  const std::vector<Index> slots = {2, 1, 0, 2};
  const Matrix<T> y0 = random_matrix<T>(4, 12, 6);
  Matrix<T> y = y0;
  q.forward(x, slots, y);
  Lora<T> q0 = user0.at("q"), q1 = user1.at("q");
  check_against(y, reference(x, slots, std::vector<Lora<T>*>{&q0, nullptr, &q1}, y0), y0, slots,
                std::vector<Lora<T>*>{&q0, nullptr, &q1});

  // Each error names the module and the set, and a failure in the last set leaves every bank as it was.
  const auto state = [&] {
    std::vector<T> out;
    for (const auto& entry : banks) {
      const AdapterBank<T>& bank = entry.second;
      for (Index k = 0; k < bank.slots(); ++k) {
        out.push_back(static_cast<T>(bank.rank(k)));
        out.push_back(bank.scaling(k));
        const Matrix<T> A = bank.A(k), Bt = bank.B_transposed(k);
        out.insert(out.end(), A.data(), A.data() + A.size());
        out.insert(out.end(), Bt.data(), Bt.data() + Bt.size());
      }
    }
    return out;
  };
  const auto before = state();
  AdapterSet<Lora<T>> big, odd, nan, other;
  big.add("q", random_lora<T>(12, 12, 6, 7));
  odd.add("v", random_lora<T>(12, 10, 2, 8));
  nan.add("v", random_lora<T>(12, 6, 2, 9));
  nan.at("v").B()(3, 1) = std::numeric_limits<T>::quiet_NaN();
  other.add("o", random_lora<T>(12, 12, 2, 10));
  CHECK_THROWS_AS(load_banks<T>(banks, {&user1, &big}, 0), ValueError);
  CHECK_THROWS_WITH(load_banks<T>(banks, {&user1, &big}, 0),
                    Contains("load_banks: module 'q' of sets[1]: AdapterBank::load: the adapter's rank is 6, above max_rank = 5"));
  CHECK_THROWS_AS(load_banks<T>(banks, {&user0, &odd}, 0), ShapeError);
  CHECK_THROWS_WITH(load_banks<T>(banks, {&user0, &nan}, 1), Contains("module 'v' of sets[1]") && Contains("is nan"));
  CHECK_THROWS_WITH(load_banks<T>(banks, {&user0, &other}, 0),
                    Contains("sets[1] adapts module 'o', which has no bank (the banks are for 'q', 'v')"));
  CHECK_THROWS_WITH(load_banks<T>(banks, {&user0, &user1}, 2), Contains("first_slot is 2 for 2 adapter sets"));
  CHECK_THROWS_AS(load_banks<T>(banks, {&user0}, -1), ValueError);
  CHECK_THROWS_AS(load_banks<T>(banks, {&user0, nullptr}, 0), ValueError);
  CHECK_THROWS_AS(load_banks<T>(banks, {}, 0), ValueError);
  CHECK(state() == before);
}

}  // namespace lorakit_test_serve_bank
