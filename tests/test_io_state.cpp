// io/state.hpp: the versioned, checksummed states of StreamingSvd, Eva and FisherStatistics. Round trips rebuild
// bit-identical objects that then evolve identically; corrupted, truncated, foreign-version, foreign-type and
// foreign-shape states are refused with IoError / ShapeError naming what was seen.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/io/state.hpp>

#include <cstring>
#include <string>

namespace lorakit_test_io_state {

using namespace lorakit;
using lorakit::testing::random_matrix;
using lorakit::testing::TempDir;

namespace {

template <class M>
bool same_bits(const M& a, const M& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(typename M::Scalar) * static_cast<std::size_t>(a.size())) == 0;
}

template <class T>
Eva<T> observed_eva(std::uint64_t seed) {
  Eva<T> eva(EvaConfig{2, 1.5, 2.0});  // tau > 1: never converges, every batch counts
  eva.add_layer("q", 12, 10, "attn");
  eva.add_layer("v", 12, 6, "attn");
  eva.add_layer("mlp", 8, 16);
  for (int b = 0; b < 3; ++b) {
    eva.observe("attn", random_matrix<T>(9, 12, seed + b));
    eva.observe("mlp", random_matrix<T>(7, 8, seed + 10 + b));
  }
  return eva;
}

/// Rewrites the CRC of a state after a deliberate edit (to reach the checks behind the checksum).
void reseal(std::vector<std::uint8_t>& bytes) {
  const std::uint32_t crc = io::crc32(bytes.data() + 40, bytes.size() - 40, io::crc32(bytes.data(), 32));
  std::memcpy(bytes.data() + 32, &crc, 4);
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e.what();
  }
  return "(no IoError)";
}

}  // namespace

TEST_CASE("crc32 gives the standard check values", "[io][state]") {
  const std::string check = "123456789", fox = "The quick brown fox jumps over the lazy dog";
  CHECK(io::crc32(check.data(), check.size()) == 0xCBF43926U);
  CHECK(io::crc32(fox.data(), fox.size()) == 0x414FA339U);
  CHECK(io::crc32("", 0) == 0U);
  // Continuing from a prefix's CRC equals the CRC of the whole.
  CHECK(io::crc32(fox.data() + 10, fox.size() - 10, io::crc32(fox.data(), 10)) == 0x414FA339U);
}

TEMPLATE_TEST_CASE("a StreamingSvd state round-trips bit for bit and continues identically", "[io][state]", float,
                   double) {
  using T = TestType;
  StreamingSvd<T> svd(10, 3);
  svd.update(random_matrix<T>(6, 10, 1));
  svd.update(random_matrix<T>(5, 10, 2));
  StreamingSvd<T> copy = io::state_from_bytes<StreamingSvd<T>>(io::state_to_bytes(svd));
  CHECK(copy.samples_seen() == 11);
  CHECK(copy.total_variance() == svd.total_variance());
  CHECK(same_bits(copy.mean(), svd.mean()));
  CHECK(same_bits(copy.components(), svd.components()));
  CHECK(same_bits(copy.singular_values(), svd.singular_values()));
  const Matrix<T> next = random_matrix<T>(4, 10, 3);
  svd.update(next);
  copy.update(next);
  CHECK(same_bits(copy.components(), svd.components()));
  CHECK(io::state_to_bytes(copy) == io::state_to_bytes(svd));

  StreamingSvd<T> raw(4, 4, StreamingSvdOptions{false});  // never updated, uncentered
  const StreamingSvd<T> raw_copy = io::state_from_bytes<StreamingSvd<T>>(io::state_to_bytes(raw));
  CHECK_FALSE(raw_copy.options().center);
  CHECK(raw_copy.samples_seen() == 0);
}

TEMPLATE_TEST_CASE("an Eva state round-trips: same ranks, adapters and convergence, then identical updates",
                   "[io][state]", float, double) {
  using T = TestType;
  Eva<T> eva = observed_eva<T>(20);
  const std::vector<std::uint8_t> bytes = io::state_to_bytes(eva);
  Eva<T> copy = io::state_from_bytes<Eva<T>>(bytes);
  CHECK(copy.layer_names() == eva.layer_names());
  CHECK(copy.ranks() == eva.ranks());
  CHECK(copy.updates("q") == 3);
  CHECK(copy.samples_seen("mlp") == 21);
  CHECK(copy.converged() == eva.converged());
  CHECK(copy.config().tau == 2.0);
  const auto a = eva.make_adapters(LoraConfig{}), b = copy.make_adapters(LoraConfig{});
  for (const auto& name : eva.layer_names()) {
    if (!a.contains(name)) continue;
    CHECK(same_bits(b.at(name).A(), a.at(name).A()));
  }
  const Matrix<T> x = random_matrix<T>(9, 12, 99);
  eva.observe("v", x);
  copy.observe("v", x);
  CHECK(io::state_to_bytes(copy) == io::state_to_bytes(eva));

  // A state saved before any observation reloads with its layers, and more can still be added, as to the original.
  Eva<T> fresh(EvaConfig{3});
  fresh.add_layer("only", 5, 5);
  Eva<T> fresh_copy = io::state_from_bytes<Eva<T>>(io::state_to_bytes(fresh));
  fresh_copy.add_layer("later", 4, 4);  // not observed yet: adding layers is still allowed, as in the original
  CHECK(fresh_copy.layer_names().size() == 2);
}

TEMPLATE_TEST_CASE("a FisherStatistics state round-trips, empty or not", "[io][state]", float, double) {
  using T = TestType;
  FisherStatistics<T> stats(6, 4);
  const FisherStatistics<T> empty_copy = io::state_from_bytes<FisherStatistics<T>>(io::state_to_bytes(stats));
  CHECK(empty_copy.tokens() == 0);
  CHECK(empty_copy.in_features() == 6);
  stats.observe(random_matrix<T>(5, 6, 7), random_matrix<T>(5, 4, 8), 2);
  const FisherStatistics<T> copy = io::state_from_bytes<FisherStatistics<T>>(io::state_to_bytes(stats));
  CHECK(copy.tokens() == 5);
  CHECK(copy.samples() == 2);
  CHECK(same_bits(copy.input_moment_sum(), stats.input_moment_sum()));
  CHECK(same_bits(copy.output_square_sum(), stats.output_square_sum()));
  CHECK(same_bits(copy.gradient_sum(), stats.gradient_sum()));
}

TEST_CASE("state files are written atomically and reload into an object of the same shape only", "[io][state]") {
  TempDir dir;
  const auto file = dir / "eva.lkstate";
  const Eva<float> eva = observed_eva<float>(30);
  io::save_state(file, eva);
  CHECK(dir.files() == std::vector<std::string>{"eva.lkstate"});
  CHECK(io::load_state<Eva<float>>(file).ranks() == eva.ranks());

  Eva<float> same = observed_eva<float>(40);  // same layers, other data
  io::load_state(file, same);
  CHECK(io::state_to_bytes(same) == io::state_to_bytes(eva));

  Eva<float> other(EvaConfig{2, 1.5, 2.0});
  other.add_layer("q", 12, 10, "attn");
  other.add_layer("v", 12, 7, "attn");  // another shape
  other.add_layer("mlp", 8, 16);
  const auto before = io::state_to_bytes(other);
  CHECK_THROWS_AS(io::load_state(file, other), ShapeError);
  CHECK_THROWS_WITH(io::load_state(file, other), Catch::Contains("layer 1 is 'v' [6 x 12]") &&
                                                     Catch::Contains("expected 'v' [7 x 12]"));
  CHECK(io::state_to_bytes(other) == before);

  FisherStatistics<double> stats(3, 2), wider(4, 2);
  io::save_state(dir / "fisher", stats);
  CHECK_THROWS_AS(io::load_state(dir / "fisher", wider), ShapeError);
  StreamingSvd<double> svd(5, 2), more(5, 3);
  io::save_state(dir / "svd", svd);
  CHECK_THROWS_AS(io::load_state(dir / "svd", more), ShapeError);
  CHECK_THROWS_AS(io::load_state<Eva<float>>(dir / "missing"), IoError);
}

TEST_CASE("corrupted, truncated, foreign and malformed states are refused with IoError", "[io][state]") {
  const std::vector<std::uint8_t> good = io::state_to_bytes(observed_eva<float>(50));
  REQUIRE_NOTHROW(io::state_from_bytes<Eva<float>>(good));

  auto flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  CHECK(message_of([&] { io::state_from_bytes<Eva<float>>(flipped); }).find("CRC-32 mismatch") != std::string::npos);

  auto truncated = good;
  truncated.resize(good.size() - 3);
  CHECK(message_of([&] { io::state_from_bytes<Eva<float>>(truncated); }).find("payload bytes") != std::string::npos);
  CHECK_THROWS_AS(io::state_from_bytes<Eva<float>>(good.data(), 20), IoError);

  auto version = good;
  version[8] = 2;
  CHECK(message_of([&] { io::state_from_bytes<Eva<float>>(version); })
            .find("format version 2, expected version 1") != std::string::npos);

  CHECK(message_of([&] { io::state_from_bytes<Eva<double>>(good); })
            .find("holds Eva with 4-byte scalars, expected Eva<double>") != std::string::npos);
  CHECK(message_of([&] { io::state_from_bytes<FisherStatistics<float>>(good); })
            .find("expected FisherStatistics<float>") != std::string::npos);

  std::vector<std::uint8_t> text(64, 'x');
  CHECK(message_of([&] { io::state_from_bytes<Eva<float>>(text); }).find("lorakit state header") != std::string::npos);

  // Behind a valid checksum: a negative singular value in a StreamingSvd state is refused by from_state.
  StreamingSvd<double> svd(3, 2);
  svd.update(random_matrix<double>(4, 3, 60));
  auto bytes = io::state_to_bytes(svd);
  // Payload: features, components, center (1 byte), samples, total_variance, mean [2 + 3 entries], then S.
  const std::size_t s_offset = 40 + 8 + 8 + 1 + 8 + 8 + (16 + 3 * 8) + 16;
  const double negative = -1.0;
  std::memcpy(bytes.data() + s_offset, &negative, 8);
  reseal(bytes);
  CHECK(message_of([&] { io::state_from_bytes<StreamingSvd<double>>(bytes); })
            .find("malformed: StreamingSvd::from_state: state.singular_values has a negative entry") != std::string::npos);

  // Behind a valid checksum: an Eva layer wider than its input group (in_features of the first layer, 'q').
  auto wide = good;
  // Payload: rank, rho, tau (8 bytes each), whiten, adjust, keep_rslora_scaling, observed (1 each), layer count
  // (8), then layer 'q': name (8-byte length + 1 byte), in_features.
  const std::size_t in_offset = 40 + 3 * 8 + 3 + 1 + 8 + 8 + 1;
  std::int64_t in_features = 0;
  std::memcpy(&in_features, wide.data() + in_offset, 8);
  REQUIRE(in_features == 12);
  in_features = 13;
  std::memcpy(wide.data() + in_offset, &in_features, 8);
  reseal(wide);
  CHECK(message_of([&] { io::state_from_bytes<Eva<float>>(wide); })
            .find("layer 'q' has in_features 13 and input group 'attn'") != std::string::npos);

  // Trailing bytes behind a valid header and checksum.
  auto padded = io::state_to_bytes(svd);
  padded.push_back(0);
  const std::uint64_t payload = padded.size() - 40;
  std::memcpy(padded.data() + 24, &payload, 8);
  reseal(padded);
  CHECK(message_of([&] { io::state_from_bytes<StreamingSvd<double>>(padded); }).find("1 bytes follow") !=
        std::string::npos);
}

}  // namespace lorakit_test_io_state
