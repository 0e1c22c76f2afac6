// Plain text from Debian packages as byte sequences: the fortunes (pretraining) and the Jargon File (adaptation),
// split into training, validation and test text, random training windows, and held-out bits per byte.
#pragma once

#include "model.hpp"

#include "../common/data_parallel.hpp"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace tiny_llama {

using Bytes = std::vector<std::uint8_t>;

/// Where the packages put the two corpora.
inline const char* kFortunesDir = "/usr/share/games/fortunes";
inline const char* kJargonFile = "/usr/share/doc/jargon-text/jargon.txt.gz";

/// The bytes of a file. Errors (lorakit::IoError): a file that cannot be read.
inline Bytes read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) lorakit::detail::fail<lorakit::IoError>("read_file", "cannot open '", path.string(), "'");
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// The decompressed bytes of a gzip file (a file that is not gzip is read as it is, as zlib does).
/// Errors (lorakit::IoError): missing, corrupt or truncated.
inline Bytes read_gzip(const std::filesystem::path& path) {
  gzFile file = gzopen(path.string().c_str(), "rb");
  if (file == nullptr) lorakit::detail::fail<lorakit::IoError>("read_gzip", "cannot open '", path.string(), "'");
  Bytes out;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) out.insert(out.end(), buffer, buffer + n);
  int status = Z_OK;
  gzerror(file, &status);  // a truncated stream ends with Z_BUF_ERROR, not with n < 0
  const bool failed = n < 0 || (status != Z_OK && status != Z_STREAM_END);
  gzclose(file);
  if (failed) {
    lorakit::detail::fail<lorakit::IoError>("read_gzip", "'", path.string(), "' is a corrupt or truncated gzip file");
  }
  return out;
}

/// Every fortune file of `dir` (the text files, not the .dat indexes nor the .u8 copies, not the offensive/
/// subfolder), in name order, with the "%" lines between fortunes turned into blank lines.
inline Bytes read_fortunes(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const auto ext = entry.path().extension();
    if (entry.is_regular_file() && ext != ".dat" && ext != ".u8") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  Bytes out;
  for (const auto& path : files) {
    const Bytes text = read_file(path);
    std::size_t line = 0;
    while (line < text.size()) {
      std::size_t end = line;
      while (end < text.size() && text[end] != '\n') ++end;
      const bool separator = end - line == 1 && text[line] == '%';
      if (!separator) out.insert(out.end(), text.begin() + static_cast<std::ptrdiff_t>(line),
                                 text.begin() + static_cast<std::ptrdiff_t>(end));
      out.push_back('\n');
      line = end + 1;
    }
  }
  return out;
}

/// A corpus split three ways.
struct TextSplits {
  Bytes train, validation, test;
};

/// Splits text into chunks of `chunk` bytes and deals them out: of every `period` chunks, one to validation, one to
/// test, the rest to training, so that the held-out text is spread over the whole corpus (no topic or letter of
/// the alphabet is held out as a block). Errors (lorakit::ValueError): period < 3, chunk < 2, too little text.
inline TextSplits split_text(const Bytes& text, std::size_t chunk = 2048, std::size_t period = 20) {
  if (period < 3 || chunk < 2) {
    lorakit::detail::fail<lorakit::ValueError>("split_text", "chunk = ", chunk, " and period = ", period,
                                               ", expected chunk >= 2 and period >= 3");
  }
  if (text.size() < chunk * period) {
    lorakit::detail::fail<lorakit::ValueError>("split_text", "text has ", text.size(), " bytes, expected at least ",
                                               chunk * period);
  }
  TextSplits out;
  for (std::size_t start = 0, index = 0; start < text.size(); start += chunk, ++index) {
    const auto first = text.begin() + static_cast<std::ptrdiff_t>(start);
    const auto last = text.begin() + static_cast<std::ptrdiff_t>(std::min(text.size(), start + chunk));
    Bytes& into = index % period == period - 2 ? out.validation : index % period == period - 1 ? out.test : out.train;
    into.insert(into.end(), first, last);
  }
  return out;
}

/// Training batches: `batch` windows of seq_len + 1 bytes at uniformly random offsets of the text, drawn from
/// lorakit::Rng(seed) (the same windows for the same seed, on every platform): inputs are the first seq_len bytes
/// of each window, targets the last seq_len.
class Batches {
 public:
  Batches(const Bytes& text, Index batch, Index seq_len, std::uint64_t seed)
      : text_(&text), batch_(batch), seq_len_(seq_len), rng_(seed, 77),
        tokens_(static_cast<std::size_t>(batch * seq_len)), targets_(tokens_.size()) {
    if (static_cast<Index>(text.size()) <= seq_len) {
      lorakit::detail::fail<lorakit::ValueError>("Batches", "text has ", text.size(), " bytes, expected more than seq_len = ",
                                                 seq_len);
    }
  }

  /// The batches keep a pointer to the text: a temporary would be gone before the first batch.
  Batches(Bytes&&, Index, Index, std::uint64_t) = delete;

  void next() {
    const std::uint64_t starts = text_->size() - static_cast<std::size_t>(seq_len_);
    for (Index b = 0; b < batch_; ++b) {
      const std::size_t start = static_cast<std::size_t>(rng_.next_u64() % starts);
      const std::size_t at = static_cast<std::size_t>(b * seq_len_);
      std::copy_n(text_->begin() + static_cast<std::ptrdiff_t>(start), seq_len_, tokens_.begin() + static_cast<std::ptrdiff_t>(at));
      std::copy_n(text_->begin() + static_cast<std::ptrdiff_t>(start + 1), seq_len_,
                  targets_.begin() + static_cast<std::ptrdiff_t>(at));
    }
  }
  const Bytes& tokens() const { return tokens_; }
  const Bytes& targets() const { return targets_; }
  Index seq_len() const { return seq_len_; }
  Index batch() const { return batch_; }

 private:
  const Bytes* text_;
  Index batch_, seq_len_;
  lorakit::Rng rng_;
  Bytes tokens_, targets_;
};

/// Sequences [rows.begin, rows.begin + rows.count) of a batch of sequences of `seq_len` bytes, into `out`.
inline void rows_of(const Bytes& all, lorakit_examples::Rows rows, Index seq_len, Bytes& out) {
  const auto first = all.begin() + static_cast<std::ptrdiff_t>(rows.begin * seq_len);
  out.assign(first, first + static_cast<std::ptrdiff_t>(rows.count * seq_len));
}

/// Held-out bits per byte: the mean next-byte cross-entropy in bits over `windows` windows of seq_len + 1 bytes
/// spread evenly over `text` (of the windows that tile it, every (available / windows)-th one, so that a corpus
/// whose parts differ, such as a table of contents before the entries, is measured over all of it; each byte but
/// the first of a window is predicted from up to seq_len bytes before it inside the window), `batch` at a time.
/// Data-parallel (`parallel` with more than one rank): each rank evaluates its share of the windows and the sums
/// of the ranks are added (the same figure on every rank, equal to one process's within double rounding).
/// Errors (lorakit::ValueError): text shorter than one window.
template <class T, class Proj>
double bits_per_byte(Model<T, Proj>& model, const Bytes& text, Index seq_len, Index windows, Index batch = 32,
                     const lorakit_examples::DataParallel* parallel = nullptr) {
  const Index available = (static_cast<Index>(text.size()) - 1) / seq_len;
  if (available < 1) {
    lorakit::detail::fail<lorakit::ValueError>("bits_per_byte", "text has ", text.size(), " bytes, expected more than ",
                                               seq_len);
  }
  windows = std::min(windows, available);
  const Index stride = available / windows;  // in windows, >= 1
  const lorakit_examples::Rows mine = parallel != nullptr ? parallel->my_rows(windows) : lorakit_examples::Rows{0, windows};
  Bytes tokens, targets;
  double nats = 0;
  for (Index first = mine.begin; first < mine.begin + mine.count; first += batch) {
    const Index n = std::min(batch, mine.begin + mine.count - first);
    tokens.resize(static_cast<std::size_t>(n * seq_len));
    targets.resize(tokens.size());
    for (Index w = 0; w < n; ++w) {
      const auto at = text.begin() + static_cast<std::ptrdiff_t>((first + w) * stride * seq_len);
      std::copy_n(at, seq_len, tokens.begin() + static_cast<std::ptrdiff_t>(w * seq_len));
      std::copy_n(at + 1, seq_len, targets.begin() + static_cast<std::ptrdiff_t>(w * seq_len));
    }
    nats += model.loss(tokens, targets, seq_len) * static_cast<double>(n);
  }
  if (parallel != nullptr && parallel->size() > 1) {
    lorakit::Matrix<double> total = lorakit::Matrix<double>::Constant(1, 1, nats);
    parallel->sum(total);
    nats = total(0, 0);
  }
  return nats / static_cast<double>(windows) / std::log(2.0);
}

}  // namespace tiny_llama
