// load_gguf_banks and load_gguf_into_banks (io/banks.hpp): several llama.cpp LoRA files (written by
// save_gguf_lora, and the same files without lorakit's keys as another tool writes them) into one bank per module,
// checked against the files' adapters read one by one with load_gguf_lora, the adapters that were saved, and a
// loop of single-adapter forwards; the errors and that they leave the banks as they were.
#include <catch2/catch.hpp>

#include "io_test_support.hpp"
#include "test_support.hpp"

#include <lorakit/io/banks.hpp>

#include <string>
#include <vector>

namespace lorakit_test_io_gguf_bank {

using namespace lorakit;
using namespace lorakit::testing;
using Catch::Contains;

namespace {

constexpr const char* kQ = "model.layers.0.self_attn.q_proj";
constexpr const char* kK = "model.layers.0.self_attn.k_proj";
constexpr const char* kV = "model.layers.0.self_attn.v_proj";

template <class T>
Lora<T> random_lora(Index in, Index out, Index rank, double alpha, bool rslora, std::uint64_t seed) {
  LoraConfig c;
  c.rank = rank;
  c.alpha = alpha;
  c.use_rslora = rslora;
  return Lora<T>::from_factors(random_matrix<T>(rank, in, seed, 0.5), random_matrix<T>(out, rank, seed + 1, 0.5), c);
}

/// Three users of a llama-shaped layer (hidden 16, 4 query heads, 2 key/value heads: k and v are [8 x 16]):
/// different ranks, alphas (one file's layers with two alphas, one rsLoRA) and modules.
template <class T>
std::vector<AdapterSet<Lora<T>>> users() {
  std::vector<AdapterSet<Lora<T>>> out(3);
  out[0].add(kQ, random_lora<T>(16, 16, 4, 8, false, 1));
  out[0].add(kK, random_lora<T>(16, 8, 2, 4, false, 3));
  out[0].add(kV, random_lora<T>(16, 8, 3, 6, false, 5));
  out[1].add(kQ, random_lora<T>(16, 16, 6, 3, false, 7));
  out[1].add(kV, random_lora<T>(16, 8, 2, 5, true, 9));  // rsLoRA: its scaling is baked into B by the writer
  out[2].add(kV, random_lora<T>(16, 8, 1, 2, false, 11));
  return out;
}

io::GgufLoraOptions llama_options() {
  io::GgufLoraOptions options;
  options.n_head = 4;
  options.n_head_kv = 2;
  return options;
}

/// The files of `sets`, user j in `dir / "user<j>.gguf"`.
template <class T>
std::vector<std::filesystem::path> save_users(const TempDir& dir, const std::vector<AdapterSet<Lora<T>>>& sets) {
  std::vector<std::filesystem::path> files;
  for (std::size_t j = 0; j < sets.size(); ++j) {
    files.push_back(dir / ("user" + std::to_string(j) + ".gguf"));
    io::save_gguf_lora(files.back(), sets[j], llama_options());
  }
  return files;
}

/// `from` rewritten without lorakit's keys: the file as llama.cpp's own converter would write it (llama.cpp's
/// names, q/k rows in its order), which load_gguf_lora reads as stored unless given options.
void strip_lorakit_keys(const std::filesystem::path& from, const std::filesystem::path& to) {
  const io::GgufReader reader(from);
  io::GgufWriter writer;
  for (const auto& key : reader.keys()) {
    if (key.rfind("lorakit.", 0) != 0) writer.set(key, reader.values().at(key));
  }
  for (const auto& tensor : reader.tensors()) writer.add(tensor.name, reader.matrix<float>(tensor.name), io::Dtype::F32);
  writer.write(to);
}

/// Every slot of `bank` holds exactly what `set` (or nothing, when `set` lacks `name`) holds: rank, scaling, factors.
template <class T>
void check_slot(const AdapterBank<T>& bank, Index slot, const AdapterSet<Lora<T>>& set, const std::string& name) {
  INFO("module " << name << " slot " << slot);
  if (!set.contains(name)) {
    CHECK(bank.rank(slot) == 0);
    return;
  }
  const Lora<T>& lora = set.at(name);
  CHECK(bank.rank(slot) == lora.rank());
  CHECK(bank.scaling(slot) == lora.scaling());
  CHECK(Matrix<T>(bank.A(slot)) == lora.A());
  CHECK(Matrix<T>(bank.B_transposed(slot)) == Matrix<T>(lora.B().transpose()));
}

/// The state of every bank (ranks, scalings, factors) as one list of numbers, to check that a failed call changed
/// nothing.
template <class T>
std::vector<double> snapshot(const std::map<std::string, AdapterBank<T>>& banks) {
  std::vector<double> out;
  for (const auto& [name, bank] : banks) {
    for (Index k = 0; k < bank.slots(); ++k) {
      out.push_back(static_cast<double>(bank.rank(k)));
      out.push_back(static_cast<double>(bank.scaling(k)));
      const Matrix<T> A = bank.A(k), Bt = bank.B_transposed(k);
      out.insert(out.end(), A.data(), A.data() + A.size());
      out.insert(out.end(), Bt.data(), Bt.data() + Bt.size());
    }
  }
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("load_gguf_banks serves file j's adapters from slot j, as the files' adapters read one by one",
                   "[io][gguf][bank]", float, double) {
  using T = TestType;
  TempDir dir;
  const auto saved = users<T>();
  const auto files = save_users(dir, saved);

  const auto banks = io::load_gguf_banks<T>(files);
  REQUIRE(banks.size() == 3);
  std::vector<io::GgufLoraAdapter<T>> direct;
  for (const auto& file : files) direct.push_back(io::load_gguf_lora<T>(file));
  for (const char* name : {kQ, kK, kV}) {
    const AdapterBank<T>& bank = banks.at(name);
    CHECK(bank.slots() == 3);
    for (Index j = 0; j < 3; ++j) check_slot(bank, j, direct[static_cast<std::size_t>(j)].adapters, name);
  }
  CHECK(banks.at(kQ).max_rank() == 6);
  CHECK(banks.at(kV).max_rank() == 3);
  CHECK(banks.at(kK).rank(1) == 0);

  // The saved adapters' updates come back (the F32 file and the scalings baked into B round them).
  for (std::size_t j = 0; j < saved.size(); ++j) {
    for (const auto& [name, lora] : saved[j]) {
      const AdapterBank<T>& bank = banks.at(name);
      const auto slot = static_cast<Index>(j);
      const Matrix<T> delta = bank.scaling(slot) * Matrix<T>(bank.B_transposed(slot).transpose()) * bank.A(slot);
      CHECK(relative_error(delta, lora.delta_weight()) < 2e-6);
    }
  }

  // A mixed batch: every row gets what its file's adapter, read with load_gguf_lora, gives it alone.
  const Matrix<T> x = random_matrix<T>(9, 16, 21);
  const std::vector<Index> slots = {2, 0, -1, 1, 1, 0, 2, -1, 0};
  for (const char* name : {kQ, kV}) {
    const AdapterBank<T>& bank = banks.at(name);
    const Matrix<T> y0 = random_matrix<T>(9, bank.out_features(), 23);
    Matrix<T> y = y0, expected = y0;
    bank.forward(x, slots, y);
    for (Index i = 0; i < x.rows(); ++i) {
      const Index k = slots[static_cast<std::size_t>(i)];
      auto& set = direct[static_cast<std::size_t>(std::max<Index>(k, 0))].adapters;
      if (k < 0 || !set.contains(name)) continue;
      Lora<T>& lora = set.at(name);
      lora.set_training(false);
      Matrix<T> row = expected.row(i);
      lora.forward(x.row(i), row);
      expected.row(i) = row;
    }
    INFO("module " << name);
    CHECK(relative_error(y, expected) < 20 * tolerance<T>());
    CHECK(y.row(2) == y0.row(2));
    CHECK(y.row(7) == y0.row(7));
  }

  CHECK(io::load_gguf_banks<T>(files, 8).at(kK).max_rank() == 8);
}

TEST_CASE("load_gguf_banks reads files of another tool by llama.cpp's names, or by the table when given options",
          "[io][gguf][bank]") {
  using T = float;
  TempDir dir;
  const auto saved = users<T>();
  const auto files = save_users(dir, saved);
  const auto other = dir / "other.gguf";
  strip_lorakit_keys(files[1], other);

  // Without lorakit's keys alone: llama.cpp's names, q rows in llama.cpp's order.
  const auto stored = io::load_gguf_banks<T>({other, other});
  REQUIRE(stored.count("blk.0.attn_q.weight") == 1);
  const AdapterBank<T>& q_stored = stored.at("blk.0.attn_q.weight");
  const Matrix<T> delta_stored = q_stored.scaling(1) * Matrix<T>(q_stored.B_transposed(1).transpose()) * q_stored.A(1);
  CHECK(relative_error(delta_stored, io::permute_llama_rows(saved[1].at(kQ).delta_weight(), 4)) < 2e-6);
  CHECK(relative_error(delta_stored, saved[1].at(kQ).delta_weight()) > 0.1);  // the permutation is not the identity

  // Mixed with lorakit's files, one weight would get two banks: refused, and the message says what to do.
  CHECK_THROWS_AS(io::load_gguf_banks<T>({files[0], other}), ValueError);
  CHECK_THROWS_WITH(io::load_gguf_banks<T>({files[0], other}),
                    Contains("load_gguf_banks: files[1]") && Contains("'blk.0.attn_q.weight'") &&
                        Contains("pass GgufLoraOptions"));

  // With options every file is read through the table: the stripped copy serves what its original serves.
  const auto banks = io::load_gguf_banks<T>({files[0], other, files[1]}, 0, llama_options());
  for (const char* name : {kQ, kV}) {
    const AdapterBank<T>& bank = banks.at(name);
    INFO("module " << name);
    CHECK(bank.scaling(1) == bank.scaling(2));
    CHECK(Matrix<T>(bank.A(1)) == Matrix<T>(bank.A(2)));
    CHECK(Matrix<T>(bank.B_transposed(1)) == Matrix<T>(bank.B_transposed(2)));
    CHECK(relative_error(Matrix<T>(bank.scaling(1) * Matrix<T>(bank.B_transposed(1).transpose()) * bank.A(1)),
                         saved[1].at(name).delta_weight()) < 2e-6);
  }
}

TEST_CASE("load_gguf_into_banks swaps files into slots all or nothing, with errors naming the file",
          "[io][gguf][bank]") {
  using T = float;
  TempDir dir;
  const auto saved = users<T>();
  const auto files = save_users(dir, saved);
  auto banks = io::load_gguf_banks<T>({files[0], files[0], files[0]}, 6);

  // Users 2 and 1 into slots 1 and 2: user 2 adapts v alone, so its q and k slots are cleared.
  io::load_gguf_into_banks(banks, {files[2], files[1]}, 1);
  std::vector<AdapterSet<Lora<T>>> direct;
  for (const auto& file : files) direct.push_back(io::load_gguf_lora<T>(file).adapters);
  for (const char* name : {kQ, kK, kV}) {
    check_slot(banks.at(name), 0, direct[0], name);
    check_slot(banks.at(name), 1, direct[2], name);
    check_slot(banks.at(name), 2, direct[1], name);
  }
  CHECK(banks.at(kQ).rank(1) == 0);

  const auto before = snapshot(banks);
  const auto unchanged = [&] { CHECK(snapshot(banks) == before); };
  // A later file that is not there, or not a GGUF file.
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {files[0], dir / "missing.gguf"}, 0), IoError);
  unchanged();
  write_bytes(dir / "junk.gguf", "GGUF but not really");
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {files[0], dir / "junk.gguf"}, 0), IoError);
  unchanged();

  // A later file whose module differs in shape from its bank.
  AdapterSet<Lora<T>> wide;
  wide.add(kV, random_lora<T>(16, 16, 2, 4, false, 31));
  io::save_gguf_lora(dir / "wide.gguf", wide, llama_options());
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {files[0], dir / "wide.gguf"}, 0), ShapeError);
  CHECK_THROWS_WITH(io::load_gguf_into_banks(banks, {files[0], dir / "wide.gguf"}, 0),
                    Contains("load_gguf_into_banks: module '" + std::string(kV) + "' of files[1] (") &&
                        Contains("wide.gguf'): AdapterBank::load: the adapter is [16 x 16]"));
  unchanged();

  // A later file whose rank is above its bank's maximum (q's bank reserves rank 6).
  AdapterSet<Lora<T>> big;
  big.add(kQ, random_lora<T>(16, 16, 8, 8, false, 33));
  io::save_gguf_lora(dir / "big.gguf", big, llama_options());
  CHECK_THROWS_WITH(io::load_gguf_into_banks(banks, {files[0], dir / "big.gguf"}, 0),
                    Contains("files[1]") && Contains("rank is 8, above max_rank = 6"));
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {files[0], dir / "big.gguf"}, 0), ValueError);
  unchanged();

  // A later file that adapts a module the banks do not serve.
  AdapterSet<Lora<T>> extra;
  extra.add("model.layers.0.self_attn.o_proj", random_lora<T>(16, 16, 2, 4, false, 35));
  io::save_gguf_lora(dir / "extra.gguf", extra, llama_options());
  CHECK_THROWS_WITH(io::load_gguf_into_banks(banks, {files[0], dir / "extra.gguf"}, 0),
                    Contains("files[1]") && Contains("adapts module 'model.layers.0.self_attn.o_proj', which has no bank"));
  unchanged();
  // A file of another tool read without options: its llama.cpp names are not the banks' (with options they are).
  strip_lorakit_keys(files[2], dir / "other.gguf");
  CHECK_THROWS_WITH(io::load_gguf_into_banks(banks, {dir / "other.gguf"}, 0),
                    Contains("names 'blk.0.attn_v.weight', whose bank is named '" + std::string(kV) + "'") &&
                        Contains("pass GgufLoraOptions"));
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {dir / "other.gguf"}, 0), ValueError);
  unchanged();
  io::load_gguf_into_banks(banks, {dir / "other.gguf"}, 0, llama_options());
  check_slot(banks.at(kV), 0, direct[2], kV);
  CHECK(banks.at(kQ).rank(0) == 0);

  // Slots outside the banks, no files.
  const auto after = snapshot(banks);
  CHECK_THROWS_WITH(io::load_gguf_into_banks(banks, {files[0], files[1]}, 2), Contains("first_slot is 2 for 2 adapter sets"));
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {files[0]}, -1), ValueError);
  CHECK_THROWS_AS(io::load_gguf_into_banks(banks, {}, 0), ValueError);
  CHECK(snapshot(banks) == after);
  CHECK_THROWS_AS(io::load_gguf_banks<T>({}), ValueError);

  // A module whose shape differs between the files of one load_gguf_banks call.
  CHECK_THROWS_WITH(io::load_gguf_banks<T>({files[0], dir / "wide.gguf"}),
                    Contains("load_gguf_banks: module '" + std::string(kV) + "' is [16 x 16] in files[1]"));
  CHECK_THROWS_AS(io::load_gguf_banks<T>({files[0], dir / "wide.gguf"}), ShapeError);
  CHECK_THROWS_AS(io::load_gguf_banks<T>({files[0], files[1]}, 4), ValueError);
}

}  // namespace lorakit_test_io_gguf_bank
