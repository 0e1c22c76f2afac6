// load_peft_banks and load_peft_into_banks (io/banks.hpp): several PEFT folders into one bank per module, slot j =
// folder j, each folder's own scaling; checked against load_peft of each folder and the adapters that were saved.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/io/banks.hpp>
#include <lorakit/io/peft_bank.hpp>  // the header of the first release still compiles

namespace lorakit_test_io_peft_bank {

using namespace lorakit;
using namespace lorakit::testing;

namespace {

template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, double alpha, std::uint64_t seed) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  return Lora<T>::from_factors(random_matrix<T>(rank, in, seed), random_matrix<T>(out, rank, seed + 1), c);
}

}  // namespace

TEST_CASE("load_peft_banks serves each folder's adapters from its slot", "[io][peft][bank]") {
  using T = double;
  TempDir tmp;
  AdapterSet<Lora<T>> user0, user1;
  user0.add("model.layers.0.self_attn.q_proj", random_lora<T>(16, 16, 4, 8, 1));
  user0.add("model.layers.0.self_attn.v_proj", random_lora<T>(16, 8, 2, 8, 3));  // alpha_pattern case
  user1.add("model.layers.0.self_attn.q_proj", random_lora<T>(16, 16, 6, 3, 5));
  io::save_peft(tmp / "user0", user0);
  io::save_peft(tmp / "user1", user1);

  const auto banks = io::load_peft_banks<T>({tmp / "user0", tmp / "user1"});
  REQUIRE(banks.size() == 2);
  const AdapterBank<T>& q = banks.at("model.layers.0.self_attn.q_proj");
  const AdapterBank<T>& v = banks.at("model.layers.0.self_attn.v_proj");
  CHECK(q.max_rank() == 6);
  CHECK(q.rank(0) == 4);
  CHECK(q.rank(1) == 6);
  CHECK(v.rank(1) == 0);
  CHECK(q.scaling(1) == Approx(0.5));

  // Each row of a mixed batch gets what load_peft's adapter of its folder gives it.
  auto folder0 = io::load_peft<T>(tmp / "user0");
  auto folder1 = io::load_peft<T>(tmp / "user1");
  const Matrix<T> x = random_matrix<T>(6, 16, 9);
  const std::vector<Index> slots = {1, 0, -1, 1, 0, 0};
  Matrix<T> y = Matrix<T>::Zero(6, 16), expected = Matrix<T>::Zero(6, 16);
  q.forward(x, slots, y);
  for (Index i = 0; i < 6; ++i) {
    const Index k = slots[static_cast<std::size_t>(i)];
    if (k < 0) continue;
    Lora<T>& lora = (k == 0 ? folder0 : folder1).adapters.at("model.layers.0.self_attn.q_proj");
    lora.set_training(false);
    Matrix<T> row = expected.row(i);
    lora.forward(x.row(i), row);
    expected.row(i) = row;
  }
  CHECK(relative_error(y, expected) < 1e-12);
  CHECK(y.row(2).isZero(0));

  CHECK(io::load_peft_banks<T>({tmp / "user0"}, 10).at("model.layers.0.self_attn.q_proj").max_rank() == 10);
  CHECK_THROWS_AS(io::load_peft_banks<T>({}), ValueError);
  CHECK_THROWS_AS(io::load_peft_banks<T>({tmp / "user0", tmp / "missing"}), IoError);
  CHECK_THROWS_AS(io::load_peft_banks<T>({tmp / "user0", tmp / "user1"}, 5), ValueError);
}

TEST_CASE("load_peft_banks reads a folder written by PEFT itself", "[io][peft][bank]") {
  const auto fixture = std::filesystem::path(LORAKIT_SHARED_DIR) / "fixtures" / "peft-gpt2-lora";
  if (!std::filesystem::exists(fixture / "adapter_config.json")) {
    FAIL("the PEFT fixture is missing: " << fixture.string());
  }
  const auto peft = io::load_peft<float>(fixture);
  const auto banks = io::load_peft_banks<float>({fixture, fixture});
  REQUIRE(static_cast<Index>(banks.size()) == peft.adapters.size());
  for (const auto& [name, lora] : peft.adapters) {
    const AdapterBank<float>& bank = banks.at(name);
    CHECK(bank.rank(0) == lora.rank());
    CHECK(bank.rank(1) == lora.rank());
    CHECK(bank.scaling(1) == lora.scaling());
    CHECK(Matrix<float>(bank.A(1)) == lora.A());
    CHECK(Matrix<float>(bank.B_transposed(0)) == Matrix<float>(lora.B().transpose()));
  }
}

TEST_CASE("load_peft_into_banks swaps folders into slots, all or nothing", "[io][peft][bank]") {
  using T = double;
  TempDir tmp;
  AdapterSet<Lora<T>> user0, user1, wide;
  user0.add("model.layers.0.self_attn.q_proj", random_lora<T>(16, 16, 4, 8, 1));
  user0.add("model.layers.0.self_attn.v_proj", random_lora<T>(16, 8, 2, 8, 3));
  user1.add("model.layers.0.self_attn.q_proj", random_lora<T>(16, 16, 6, 3, 5));
  wide.add("model.layers.0.self_attn.v_proj", random_lora<T>(16, 16, 2, 8, 7));
  io::save_peft(tmp / "user0", user0);
  io::save_peft(tmp / "user1", user1);
  io::save_peft(tmp / "wide", wide);

  auto banks = io::load_peft_banks<T>({tmp / "user0", tmp / "user0"}, 8);
  io::load_peft_into_banks(banks, {tmp / "user1"}, 1);
  const auto folder1 = io::load_peft<T>(tmp / "user1");
  const AdapterBank<T>& q = banks.at("model.layers.0.self_attn.q_proj");
  const AdapterBank<T>& v = banks.at("model.layers.0.self_attn.v_proj");
  CHECK(q.rank(0) == 4);
  CHECK(q.rank(1) == 6);
  CHECK(Matrix<T>(q.A(1)) == folder1.adapters.at("model.layers.0.self_attn.q_proj").A());
  CHECK(q.scaling(1) == folder1.adapters.at("model.layers.0.self_attn.q_proj").scaling());
  CHECK(v.rank(0) == 2);
  CHECK(v.rank(1) == 0);  // user1 does not adapt v: user0's adapter left slot 1

  // A later folder of the wrong shape, or missing: nothing changes, and the message names the folder.
  CHECK_THROWS_AS(io::load_peft_into_banks(banks, {tmp / "user0", tmp / "wide"}, 0), ShapeError);
  CHECK_THROWS_WITH(io::load_peft_into_banks(banks, {tmp / "user0", tmp / "wide"}, 0),
                    Catch::Contains("load_peft_into_banks: module 'model.layers.0.self_attn.v_proj' of dirs[1] (") &&
                        Catch::Contains("wide')"));
  CHECK_THROWS_AS(io::load_peft_into_banks(banks, {tmp / "user0", tmp / "missing"}, 0), IoError);
  CHECK(q.rank(0) == 4);
  CHECK(q.rank(1) == 6);
  CHECK(v.rank(1) == 0);
  CHECK(Matrix<T>(q.A(1)) == folder1.adapters.at("model.layers.0.self_attn.q_proj").A());
}

}  // namespace lorakit_test_io_peft_bank
