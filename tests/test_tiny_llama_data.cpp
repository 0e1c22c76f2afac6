// The text data of examples/tiny_llama: the three-way split, the training windows, gzip reading, and held-out bits
// per byte against its closed form for a model that predicts every byte with probability 1/256.
#include "tiny_llama/text_data.hpp"

#include <catch2/catch.hpp>

#include <zlib.h>

#include <filesystem>
#include <fstream>

namespace lorakit_test_tiny_llama_data {

namespace {

using namespace tiny_llama;

Bytes counting_text(std::size_t n) {
  Bytes text(n);
  for (std::size_t i = 0; i < n; ++i) text[i] = static_cast<std::uint8_t>(i % 251);
  return text;
}

TEST_CASE("tiny_llama split_text deals chunks out, one of each period to validation and test", "[tiny_llama]") {
  const Bytes text = counting_text(10 * 20 * 100 + 37);  // 2,003 full chunks of 10 (100 periods of 20) and 7 bytes
  const TextSplits s = split_text(text, 10, 20);
  CHECK(s.train.size() + s.validation.size() + s.test.size() == text.size());
  CHECK(s.validation.size() == 1000);  // chunks 18, 38, ..., 1998 of 10 bytes
  CHECK(s.test.size() == 1000);         // chunks 19, 39, ..., 1999
  CHECK(s.validation[0] == text[180]);
  CHECK(s.test[0] == text[190]);
  CHECK(s.validation[10] == text[380]);
  CHECK(s.train[180] == text[200]);  // chunk 18 and 19 skipped in training
  CHECK_THROWS_AS(split_text(counting_text(100), 10, 20), lorakit::ValueError);
  CHECK_THROWS_AS(split_text(text, 10, 2), lorakit::ValueError);
}

TEST_CASE("tiny_llama Batches: targets are the next bytes, the same windows for the same seed", "[tiny_llama]") {
  const Bytes text = counting_text(5000);
  Batches a(text, 4, 8, 7), b(text, 4, 8, 7), c(text, 4, 8, 8);
  a.next();
  b.next();
  c.next();
  CHECK(a.tokens() == b.tokens());
  CHECK(a.tokens() != c.tokens());
  for (std::size_t i = 0; i < a.tokens().size(); ++i) {
    CHECK(a.targets()[i] == static_cast<std::uint8_t>((a.tokens()[i] + 1) % 251));
  }
  const Bytes short_text = counting_text(8);
  CHECK_THROWS_AS(Batches(short_text, 4, 8, 1), lorakit::ValueError);
}

/// A one-layer model small enough for exact checks of the evaluation.
Config tiny_config() {
  Config c;
  c.dim = 8;
  c.layers = 1;
  c.heads = 2;
  c.kv_heads = 1;
  c.hidden = 8;
  c.context = 16;
  return c;
}

TEST_CASE("tiny_llama bits_per_byte is 8 for a model that predicts uniformly", "[tiny_llama]") {
  const Config c = tiny_config();
  lorakit::Rng rng(3);
  Weights<double> w = Weights<double>::random(c, rng);
  w.lm_head.setZero();  // every logit 0: probability 1/256 for every byte
  Model<double, Dense<double>> model(w, dense_projections<double>(false));
  CHECK(bits_per_byte(model, counting_text(1000), 16, 20, 7) == Approx(8.0).epsilon(1e-12));
  CHECK_THROWS_AS(bits_per_byte(model, counting_text(10), 16, 20), lorakit::ValueError);
}

TEST_CASE("tiny_llama rows_of: the ranks' shares of a batch put together are the batch", "[tiny_llama]") {
  const Bytes text = counting_text(1000);  // Batches keeps a pointer to the text
  Batches batches(text, 5, 8, 11);
  batches.next();
  for (int ranks : {1, 2, 3}) {
    Bytes joined, share;
    for (int r = 0; r < ranks; ++r) {
      // shard_rows' rule (lorakit::dist): the first rows % ranks ranks take one row more.
      const Index base = 5 / ranks, extra = 5 % ranks;
      const lorakit_examples::Rows rows{r * base + std::min<Index>(r, extra), base + (r < extra ? 1 : 0)};
      rows_of(batches.tokens(), rows, 8, share);
      CHECK(share.size() == static_cast<std::size_t>(rows.count * 8));
      joined.insert(joined.end(), share.begin(), share.end());
    }
    CHECK(joined == batches.tokens());
  }
}

TEST_CASE("tiny_llama bits_per_byte of a one-process DataParallel is the plain figure, bit for bit", "[tiny_llama]") {
  const Config c = tiny_config();
  lorakit::Rng rng(5);
  Model<double, Dense<double>> model(Weights<double>::random(c, rng), dense_projections<double>(false));
  int argc = 1;
  char name[] = "test";
  char* args[] = {name, nullptr};
  char** argv = args;
  const lorakit_examples::DataParallel one(argc, argv);  // built without MPI: one rank
  REQUIRE(one.size() == 1);
  CHECK(one.my_rows(7).begin == 0);
  CHECK(one.my_rows(7).count == 7);
  const Bytes text = counting_text(2000);
  const double plain = bits_per_byte(model, text, 16, 20, 7);
  CHECK(bits_per_byte(model, text, 16, 20, 7, &one) == plain);
  CHECK(plain > 7.0);  // a random model: close to uniform, not exactly
  CHECK(plain != 8.0);
}

TEST_CASE("tiny_llama read_gzip reads what zlib wrote, and rejects a corrupt file", "[tiny_llama]") {
  const auto dir = std::filesystem::temp_directory_path() / "lorakit_test_tiny_llama_data";
  std::filesystem::create_directories(dir);
  const auto good = dir / "good.gz", bad = dir / "bad.gz";
  const std::string text = "The Jargon File\n:hack: n.\n";
  gzFile out = gzopen(good.string().c_str(), "wb");
  REQUIRE(out != nullptr);
  gzwrite(out, text.data(), static_cast<unsigned>(text.size()));
  gzclose(out);
  const Bytes read = read_gzip(good);
  CHECK(std::string(read.begin(), read.end()) == text);
  Bytes corrupt = read_file(good);
  corrupt.resize(corrupt.size() - 12);  // truncated stream
  corrupt[12] ^= 0xff;
  std::ofstream(bad, std::ios::binary).write(reinterpret_cast<const char*>(corrupt.data()),
                                             static_cast<std::streamsize>(corrupt.size()));
  CHECK_THROWS_AS(read_gzip(bad), lorakit::IoError);
  CHECK_THROWS_AS(read_gzip(dir / "missing.gz"), lorakit::IoError);
  std::filesystem::remove_all(dir);
}

}  // namespace

}  // namespace lorakit_test_tiny_llama_data
