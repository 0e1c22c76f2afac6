// tiny_llama: pretrains a small llama-architecture byte-level language model on the fortunes and adapts it to the
// Jargon File with every method of lorakit under one step budget; reports held-out bits per byte over paired
// seeds with 95% intervals, each paper's claim as a paired difference, the curves (CSV) and a plot (SVG); then
// exports the pretrained model and the best LoRA adapter as GGUF files and lets llama.cpp continue one prompt with
// and without the adapter. See docs/tiny-llama.md.
//
//   tiny_llama [--quick] [--out DIR] [--cache DIR] [--steps N] [--seeds N] [--seed-offset N] [--previous DIR]
//              [--fortunes DIR] [--jargon FILE] [--llama-cpp DIR]
#include "gguf_export.hpp"
#include "llama_cpp.hpp"
#include "methods.hpp"

#include "../common/data_parallel.hpp"
#include "../common/report.hpp"
#include "../common/statistics.hpp"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

namespace tl = tiny_llama;
namespace ex = lorakit_examples;
using tl::Index;

#ifndef LORAKIT_LLAMA_CPP_DIR
#define LORAKIT_LLAMA_CPP_DIR "tests/llama_cpp"
#endif

namespace {

/// Exit status when a corpus is missing (ctest reads it as "skipped").
constexpr int kMissingData = 77;

struct Options {
  bool quick = false;
  std::string out = "tiny-llama-results";
  std::string cache;  // default: <out>/cache
  std::string fortunes = tl::kFortunesDir;
  std::string jargon = tl::kJargonFile;
  long long steps = 0;  // 0: the mode's default
  int seeds = 0;
  std::uint64_t seed_offset = 0;
  std::string llama_cpp = LORAKIT_LLAMA_CPP_DIR;  // the Node scripts and node-llama-cpp (tests/llama_cpp)
  std::string previous;  // the output folder of a run with another seed set: its claims.tsv is combined
  std::string command;
};

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "%s\nusage: tiny_llama [--quick] [--out DIR] [--cache DIR] [--steps N] [--seeds N] [--seed-offset N]\n"
               "                  [--previous DIR] [--fortunes DIR] [--jargon FILE] [--llama-cpp DIR]\n",
               message);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) o.command += (i ? " " : "") + std::string(argv[i]);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--quick") o.quick = true;
    else if (arg == "--out") o.out = value();
    else if (arg == "--cache") o.cache = value();
    else if (arg == "--steps") o.steps = std::stoll(value());
    else if (arg == "--seeds") o.seeds = std::stoi(value());
    else if (arg == "--seed-offset") o.seed_offset = std::stoull(value());
    else if (arg == "--fortunes") o.fortunes = value();
    else if (arg == "--jargon") o.jargon = value();
    else if (arg == "--llama-cpp") o.llama_cpp = value();
    else if (arg == "--previous") o.previous = value();
    else if (arg == "--help" || arg == "-h") usage("tiny_llama: the language-model fine-tuning study of lorakit");
    else usage(("unknown option " + arg).c_str());
  }
  if (o.cache.empty()) o.cache = (std::filesystem::path(o.out) / "cache").string();
  return o;
}

/// Evaluation points before the last step: dense at the start, then every tenth of the budget.
std::vector<long long> eval_steps(long long steps) {
  std::vector<long long> points;
  for (long long s : {5LL, 10LL, 20LL, 35LL, 50LL}) {
    if (s < steps) points.push_back(s);
  }
  for (long long s = steps / 10; s < steps; s += std::max(1LL, steps / 10)) {
    if (s > 50) points.push_back(s);
  }
  return points;
}

/// The pretrained model from the cache, or pretrained now (data-parallel over `parallel`'s ranks; rank 0 writes the
/// cache).
tl::Weights<float> pretrained(const tl::Bytes& text, const Options& options, tl::PretrainSettings settings,
                              const ex::DataParallel& parallel) {
  settings.corpus_bytes = text.size();
  const std::string key = settings.key();
  const auto path = std::filesystem::path(options.cache) / ("pretrained-" + [&] {
                      std::uint64_t hash = 1469598103934665603ull;  // FNV-1a of the key names the file
                      for (unsigned char c : key) hash = (hash ^ c) * 1099511628211ull;
                      char out[17];
                      std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(hash));
                      return std::string(out);
                    }() + ".safetensors");
  tl::Weights<float> weights;
  if (tl::load_weights(path, settings.config, key, weights)) {
    std::printf("Pretrained model: loaded from %s\n", path.c_str());
    return weights;
  }
  const std::clock_t cpu = std::clock();
  ex::Stopwatch clock;
  clock.start();
  weights = tl::pretrain(text, settings, &parallel);
  clock.stop();
  if (parallel.is_root()) tl::save_weights(path, weights, key);
  std::printf("Pretrained model: %lld steps of %lld x %lld bytes in %.1f s (%.1f s of CPU), cached in %s\n",
              settings.steps, static_cast<long long>(settings.batch), static_cast<long long>(settings.config.context),
              clock.seconds(), static_cast<double>(std::clock() - cpu) / CLOCKS_PER_SEC, path.c_str());
  return weights;
}

/// One run as the curves CSV sees it.
struct RunRecord {
  std::string method;
  double lr;
  std::uint64_t seed;
  bool selected;
  tl::Curve curve;
};

/// One row of the table: a method at its selected learning rate, over the paired seeds.
struct Row {
  std::string name;
  double lr = 0;
  Index trainable = 0;
  std::vector<double> test, validation, init_seconds, train_seconds;
  std::vector<tl::Curve> curves;  // one per seed, in seed order
  tl::Curve mean_curve;
  long long runs = 0;             // training runs of the method (grid and seeds)
  double wall_seconds = 0, cpu_seconds = 0;  // of all its runs, evaluations and statistics included
  std::string note;
  std::shared_ptr<const lorakit::AdapterSet<lorakit::Lora<float>>> lora;  // the first seed's adapters (LoRA methods)
};

/// A paper's claim, read as the paired difference (method - baseline) of test bits per byte after the last step, or
/// (`early`) of validation bits per byte at the first curve point at or after a fifth of the steps: "converges
/// faster". Lower is better.
struct Claim {
  const char* text;
  const char* method;
  const char* baseline;
  bool early = false;
};
const Claim kClaims[] = {
    {"LoRA comes close to full fine-tuning (Hu et al.): LoRA r=8 at least as good", "LoRA r=8", "Full fine-tuning"},
    {"VeRA matches LoRA with far fewer parameters (Kopiczko et al.)", "VeRA r=256", "LoRA r=8"},
    {"EVA's data-driven init beats random init (Paischer et al.)", "EVA r=8, rho=2", "LoRA r=8"},
    {"LoRA-DA's init beats random init (Zhang et al.), at alpha = r", "LoRA-DA r=8", "LoRA r=8"},
    {"LoRA-DA's init beats random init, in its reference configuration", "LoRA-DA r=8, rsLoRA alpha=16, gamma=1024",
     "LoRA r=8"},
    {"Squeezing rank 32 to 8 after training beats training rank 8 (Vulic et al.)", "Squeeze 32->8, post hoc",
     "LoRA r=8"},
    {"Squeeze at 80% and continue beats training rank 8", "Squeeze 32->8, post hoc + continued", "LoRA r=8"},
    {"Annealing the rank 32 -> 16 -> 8 beats training rank 8", "Squeeze 32->16->8, annealed", "LoRA r=8"},
    {"DoRA beats LoRA at equal rank (Liu et al.)", "DoRA r=8", "LoRA r=8"},
    {"PiSSA's principal-component init ends better than random init (Meng et al.)", "PiSSA r=8", "LoRA r=8"},
    {"LoRA+'s larger learning rate for B beats LoRA (Hayou et al.)", "LoRA+ r=8", "LoRA r=8"},
    {"LoRA-GA's gradient-aligned init converges faster than LoRA (Wang et al.), at a fifth of the steps",
     "LoRA-GA r=8", "LoRA r=8", true},
};

/// The values a claim compares for one row, one per seed: test bits per byte, or validation bits per byte at the
/// first curve point at or after `step` (empty when the curves have none).
std::vector<double> claim_values(const Row& row, bool early, long long step) {
  if (!early) return row.test;
  std::vector<double> out;
  for (const auto& curve : row.curves) {
    for (const auto& point : curve) {
      if (point.step >= step) {
        out.push_back(point.bits);
        break;
      }
    }
  }
  return out.size() == row.curves.size() ? out : std::vector<double>{};
}

/// A claim's reading in one run: the paired difference and its verdict (empty verdict: not assessed).
struct ClaimResult {
  std::string text;
  ex::Interval difference{};
  std::string verdict;
  std::string measure;  // what was compared
};

std::vector<ClaimResult> read_claims(const std::vector<Row>& rows, long long steps) {
  std::map<std::string, const Row*> by_name;
  for (const auto& row : rows) by_name[row.name] = &row;
  std::vector<ClaimResult> out;
  for (const auto& claim : kClaims) {
    const auto a = by_name.find(claim.method), b = by_name.find(claim.baseline);
    if (a == by_name.end() || b == by_name.end()) continue;
    const long long at = std::max(1LL, (steps + 4) / 5);
    ClaimResult result;
    result.text = claim.text;
    result.measure = claim.early ? "validation at step >= " + std::to_string(at) : "test";
    const std::vector<double> x = claim_values(*a->second, claim.early, at), y = claim_values(*b->second, claim.early, at);
    if (x.size() >= 2 && x.size() == y.size()) {
      result.difference = ex::paired_difference(x, y);
      result.verdict = ex::verdict(result.difference, true);
    }
    out.push_back(std::move(result));
  }
  return out;
}

/// The verdicts of another run (its claims.tsv: claim text, tab, verdict per line), by claim text, read when this
/// run ends (the two seed sets may run side by side); empty when the folder is not given or has no claims.tsv yet.
std::map<std::string, std::string> previous_verdicts(const std::string& folder) {
  std::map<std::string, std::string> out;
  if (folder.empty()) return out;
  std::ifstream in(std::filesystem::path(folder) / "claims.tsv");
  if (!in) {
    std::fprintf(stderr, "tiny_llama: %s/claims.tsv is not there (yet): the verdicts are not combined\n", folder.c_str());
    return out;
  }
  std::string line;
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    if (tab != std::string::npos) out[line.substr(0, tab)] = line.substr(tab + 1);
  }
  return out;
}

void write_claims_tsv(const std::string& path, const std::vector<ClaimResult>& claims) {
  std::ofstream out = ex::open_output("write_claims_tsv", path);
  for (const auto& c : claims) out << c.text << '\t' << (c.verdict.empty() ? "not assessed" : c.verdict) << '\n';
}

std::string interval_text(const std::vector<double>& values) {
  if (values.size() < 2) return ex::format("%.4f", ex::mean(values)) + " (one seed: no interval)";
  const ex::Interval i = ex::t_interval(values);
  return ex::format("%.4f", i.mean) + " [" + ex::format("%.4f", i.low) + ", " + ex::format("%.4f", i.high) + "]";
}

std::string markdown_table(const std::vector<Row>& rows, int seeds) {
  std::ostringstream out;
  out << "| method | lr | trainable parameters | test bits per byte (mean [95% t interval], " << seeds
      << (seeds == 1 ? " seed" : " paired seeds") << ") | validation bits per byte | init time (s) | training time (s) |\n";
  out << "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& row : rows) {
    out << "| " << row.name << " | " << ex::format("%g", row.lr) << " | " << row.trainable << " | "
        << interval_text(row.test) << " | " << ex::format("%.4f", ex::mean(row.validation)) << " | "
        << ex::format("%.3f", ex::mean(row.init_seconds)) << " | " << ex::format("%.1f", ex::mean(row.train_seconds))
        << " |\n";
  }
  return out.str();
}

std::string claims_table(const std::vector<ClaimResult>& claims, const std::map<std::string, std::string>& previous) {
  std::ostringstream out;
  out << "| claim | compared | paired difference of bits per byte (method - baseline; < 0 favours the claim), mean "
         "[95% t interval] | verdict |"
      << (previous.empty() ? "" : " verdict of the other seed set | over both seed sets |") << "\n| --- | --- | ---: | --- |"
      << (previous.empty() ? "" : " --- | --- |") << "\n";
  for (const auto& c : claims) {
    out << "| " << c.text << " | " << c.measure << " | ";
    if (c.verdict.empty()) {
      out << "one seed: no interval | not assessed |";
    } else {
      out << ex::format("%+.4f", c.difference.mean) << " [" << ex::format("%+.4f", c.difference.low) << ", "
          << ex::format("%+.4f", c.difference.high) << "] | " << c.verdict << " |";
    }
    if (!previous.empty()) {
      const auto found = previous.find(c.text);
      if (found == previous.end() || c.verdict.empty() || found->second == "not assessed") {
        out << " " << (found == previous.end() ? "absent" : found->second) << " | not assessed |";
      } else {
        out << " " << found->second << " | " << ex::combined_verdict(c.verdict.c_str(), found->second.c_str()) << " |";
      }
    }
    out << "\n";
  }
  return out.str();
}

/// Per-method cost: runs, wall and CPU seconds (the CPU figure is what an idle machine would take on one core).
std::string time_table(const std::vector<Row>& rows) {
  std::ostringstream out;
  out << "| method | runs | wall time (s) | CPU time (s) |\n| --- | ---: | ---: | ---: |\n";
  double wall = 0, cpu = 0;
  long long runs = 0;
  for (const auto& row : rows) {
    out << "| " << row.name << " | " << row.runs << " | " << ex::format("%.1f", row.wall_seconds) << " | "
        << ex::format("%.1f", row.cpu_seconds) << " |\n";
    wall += row.wall_seconds;
    cpu += row.cpu_seconds;
    runs += row.runs;
  }
  out << "| all methods | " << runs << " | " << ex::format("%.1f", wall) << " | " << ex::format("%.1f", cpu) << " |\n";
  return out.str();
}

void write_curves_csv(const std::string& path, const std::vector<RunRecord>& runs) {
  std::ofstream out = ex::open_output("write_curves_csv", path);
  out << "method,lr,seed,selected,step,validation_bits_per_byte\n";
  for (const auto& run : runs) {
    for (const auto& point : run.curve) {
      out << '"' << run.method << "\"," << ex::format("%g", run.lr) << ',' << run.seed << ',' << (run.selected ? 1 : 0)
          << ',' << point.step << ',' << ex::format("%.5f", point.bits) << '\n';
    }
  }
}

/// Bytes as text for a Markdown code block: printable ASCII and newlines as they are, other bytes as \xNN.
std::string printable(const std::vector<std::uint8_t>& bytes) {
  std::string out;
  for (std::uint8_t b : bytes) {
    if (b == '\n' || (b >= 32 && b < 127)) {
      out += static_cast<char>(b);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02X", static_cast<unsigned>(b));
      out += escaped;
    }
  }
  return out;
}

/// The largest |llama.cpp - C++| of the next-token logits over one window of held-out text, for the base alone and
/// with the adapters (the check of tests/llama_cpp/test_tiny_llama_gguf.cpp, on the study's own model).
std::pair<double, double> served_logits_error(const tl::LlamaCpp& llama_cpp, const std::filesystem::path& base_file,
                                              const std::filesystem::path& adapter_file, const tl::Weights<float>& base,
                                              lorakit::AdapterSet<lorakit::Lora<float>> adapters, const tl::Bytes& text) {
  const std::size_t length = static_cast<std::size_t>(base.config.context);
  if (text.size() < length) {
    lorakit::detail::fail<lorakit::ValueError>("served_logits_error", "the held-out text has ", text.size(),
                                               " bytes, expected at least ", length);
  }
  const std::size_t start = (text.size() - length) / 2;  // the middle of the split (its start is a table of contents)
  const std::vector<std::uint8_t> window(text.begin() + static_cast<std::ptrdiff_t>(start),
                                         text.begin() + static_cast<std::ptrdiff_t>(start + length));
  const auto n = static_cast<Index>(length);
  tl::Model<float, tl::Dense<float>> plain(base, tl::dense_projections<float>(false));
  tl::Model<float, lorakit::AdaptedLinear<float, lorakit::AdapterRef<lorakit::Lora<float>>>> adapted(
      base, tl::adapted_projections<float>(adapters));
  const lorakit::Matrix<double> expected_base = plain.forward(window, n).cast<double>();
  const lorakit::Matrix<double> expected_adapted = adapted.forward(window, n).cast<double>();
  return {(llama_cpp.logits(base_file, {}, window, base.config.vocab) - expected_base).cwiseAbs().maxCoeff(),
          (llama_cpp.logits(base_file, adapter_file, window, base.config.vocab) - expected_adapted).cwiseAbs().maxCoeff()};
}

/// Exports the pretrained model (tiny-llama-base.gguf) and the adapters of the LoRA method with the best mean
/// validation bits per byte (tiny-llama-adapter.gguf, the first seed's run) to the output folder, and, when
/// node-llama-cpp is there, checks llama.cpp's logits on held-out text against the C++ model's and prints what
/// llama.cpp generates from one prompt with and without the adapter. Returns the section of results.md that says
/// so. Errors (lorakit::ValueError): llama.cpp's logits differ from the C++ model's by more than 1e-3.
std::string serve(const Options& options, const tl::Weights<float>& base, const std::vector<Row>& rows,
                  std::uint64_t seed, const tl::Bytes& held_out) {
  const Row* best = nullptr;
  for (const auto& row : rows) {
    if (row.lora && (best == nullptr || ex::mean(row.validation) < ex::mean(best->validation))) best = &row;
  }
  if (best == nullptr) return "";
  const auto out = std::filesystem::path(options.out);
  const auto base_file = out / "tiny-llama-base.gguf", adapter_file = out / "tiny-llama-adapter.gguf";
  tl::save_gguf_base(base_file, base);
  lorakit::io::save_gguf_lora(adapter_file, *best->lora, tl::gguf_lora_options(base.config));
  std::ostringstream text;
  text << "llama.cpp: the pretrained model is `" << base_file.filename().string() << "`, the adapters of " << best->name
       << " (the LoRA method with the best validation bits per byte; lr " << ex::format("%g", best->lr) << ", seed "
       << seed << ") are `" << adapter_file.filename().string() << "` (`llama-cli -m " << base_file.filename().string()
       << " --lora " << adapter_file.filename().string() << "`).\n";
  std::printf("\nExported %s and %s (%s)\n", base_file.c_str(), adapter_file.c_str(), best->name.c_str());

  const tl::LlamaCpp llama_cpp(options.llama_cpp);
  const std::string why = llama_cpp.unavailable();
  if (!why.empty()) {
    std::fprintf(stderr, "\n*** llama.cpp's check and samples SKIPPED: %s\n\n", why.c_str());
    text << "\nllama.cpp's check and samples were skipped: " << why << ".\n";
    return text.str();
  }
  const auto [base_error, adapted_error] =
      served_logits_error(llama_cpp, base_file, adapter_file, base, *best->lora, held_out);
  text << "\nllama.cpp's next-token logits over " << base.config.context
       << " bytes of held-out Jargon File text equal the C++ model's within " << ex::format("%.2g", base_error)
       << " (max |difference|) for the pretrained model and " << ex::format("%.2g", adapted_error)
       << " with the adapter.\n";
  std::printf("llama.cpp against the C++ model, max |difference| of the logits on held-out text: %.2g (base), %.2g "
              "(with the adapter)\n", base_error, adapted_error);
  if (!(base_error <= 1e-3) || !(adapted_error <= 1e-3)) {
    lorakit::detail::fail<lorakit::ValueError>("serve", "llama.cpp's logits differ from the C++ model's by ",
                                               std::max(base_error, adapted_error), ", expected at most 1e-3");
  }
  const std::string prompt_text = "A hacker is ";
  const std::vector<std::uint8_t> prompt(prompt_text.begin(), prompt_text.end());
  constexpr int kBytes = 120;
  constexpr double kTemperature = 0.7;
  constexpr std::uint32_t kSeed = 1;
  const int window = static_cast<int>(base.config.context);
  text << "\nSamples generated by llama.cpp (node-llama-cpp's CPU build) from the prompt `" << prompt_text << "`: "
       << kBytes << " bytes drawn at temperature " << kTemperature << " with seed " << kSeed
       << " (the same draws for both), each byte seeing the last " << window << ".\n";
  for (const bool adapted : {false, true}) {
    const auto sample = llama_cpp.generate(base_file, adapted ? adapter_file : std::filesystem::path(), prompt, kBytes,
                                           window, kTemperature, kSeed);
    const std::string shown = printable(prompt) + printable(sample);
    text << "\n" << (adapted ? "With the adapter:" : "Pretrained model alone:") << "\n\n```text\n" << shown << "\n```\n";
    std::printf("\nllama.cpp, %s:\n%s\n", adapted ? "with the adapter" : "pretrained model alone", shown.c_str());
  }
  std::fflush(stdout);
  return text.str();
}

int run(const Options& options, ex::DataParallel& parallel) {
  if (!std::filesystem::is_directory(options.fortunes) || !std::filesystem::exists(options.jargon)) {
    std::fprintf(stderr,
                 "The corpora were not found (%s, %s).\nInstall them with:\n  sudo apt-get install -y fortunes "
                 "jargon-text\nor pass --fortunes DIR and --jargon FILE.\n",
                 options.fortunes.c_str(), options.jargon.c_str());
    return kMissingData;
  }
  std::filesystem::create_directories(options.out);

  // The budget. Full: pretraining 1500 steps of 16 x 64 bytes; adaptation 100 steps of 16 x 64 bytes for every
  // method, 5 paired seeds, the learning rate chosen on validation averaged over the first 2 seeds (81 runs: about
  // 0.05 s of CPU per step on one core, VeRA's steps three to four times that).
  tl::PretrainSettings pretraining;
  tl::Task task;
  task.steps = 100;
  int seeds = 5, selection_seeds = 2;
  if (options.quick) {
    pretraining.steps = 60;
    task.steps = 8;
    task.curve_windows = 8;
    task.eval_windows = 16;
    task.eva_max_batches = 4;
    task.lora_da_batches = 2;
    seeds = 2;
    selection_seeds = 1;
  }
  if (options.steps > 0) task.steps = options.steps;
  if (options.seeds > 0) seeds = options.seeds;
  selection_seeds = std::min(selection_seeds, seeds);
  task.seq_len = pretraining.config.context;
  task.batch = pretraining.batch;
  task.eval_steps = eval_steps(task.steps);

  ex::Stopwatch total;
  total.start();
  const std::clock_t cpu_start = std::clock();
  const tl::TextSplits fortunes = tl::split_text(tl::read_fortunes(options.fortunes));
  const tl::TextSplits jargon = tl::split_text(tl::read_gzip(options.jargon));
  const tl::Weights<float> base = pretrained(fortunes.train, options, pretraining, parallel);
  task.data = &jargon;
  task.base = &base;
  task.parallel = &parallel;

  std::ostringstream header;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  header << "Run: " << date << " on " << ex::cpu_name();
  if (parallel.size() > 1) header << ", data-parallel over " << parallel.size() << " MPI ranks";
  header << "; command: `" << options.command << "`.\n\n";
  header << "Model: " << pretraining.config.key() << ".\n";
  header << "Data: fortunes " << fortunes.train.size() << " / " << fortunes.validation.size() << " / "
         << fortunes.test.size() << " bytes, Jargon File " << jargon.train.size() << " / " << jargon.validation.size()
         << " / " << jargon.test.size() << " bytes (training / validation / test). Budget: " << task.steps
         << " steps of " << task.batch << " x " << task.seq_len << " bytes, " << seeds
         << (seeds == 1 ? " seed" : " paired seeds") << " (offset " << options.seed_offset
         << "), learning rate chosen on validation averaged over " << selection_seeds << ".\n\n";
  {
    tl::Model<float, tl::Dense<float>> model(base, tl::dense_projections<float>(false));
    header << "Pretrained model, test bits per byte: fortunes "
           << ex::format("%.4f", tl::bits_per_byte(model, fortunes.test, task.seq_len, task.eval_windows))
           << ", Jargon File before adaptation "
           << ex::format("%.4f", tl::bits_per_byte(model, jargon.test, task.seq_len, task.eval_windows)) << ".\n";
  }
  std::printf("%s", header.str().c_str());
  std::fflush(stdout);

  std::vector<tl::Method> methods = tl::all_methods();
  std::vector<Row> rows;
  std::vector<RunRecord> records;
  const auto seed_of = [&](int i) { return options.seed_offset + static_cast<std::uint64_t>(i); };
  for (auto& method : methods) {
    const long long runs = static_cast<long long>(method.learning_rates.size()) * selection_seeds + seeds - selection_seeds;
    ex::Progress progress(method.name, runs * task.steps);
    ex::Stopwatch method_clock;
    method_clock.start();
    const std::clock_t method_cpu = std::clock();
    // Learning rate: the lowest validation bits per byte averaged over the selection seeds (test never looked at).
    std::vector<std::vector<tl::RunResult>> grid(method.learning_rates.size());
    std::size_t best = 0;
    std::vector<double> score(method.learning_rates.size(), 0);
    for (std::size_t i = 0; i < method.learning_rates.size(); ++i) {
      for (int s = 0; s < selection_seeds; ++s) {
        grid[i].push_back(method.run(task, method.learning_rates[i], seed_of(s), progress));
        score[i] += grid[i].back().validation / selection_seeds;
      }
      if (score[i] < score[best]) best = i;
    }
    const double lr = method.learning_rates[best];
    for (std::size_t i = 0; i < grid.size(); ++i) {
      for (int s = 0; s < selection_seeds; ++s) {
        records.push_back({method.name, method.learning_rates[i], seed_of(s), i == best, grid[i][static_cast<std::size_t>(s)].curve});
      }
    }
    std::vector<tl::RunResult> selected = std::move(grid[best]);
    for (int s = selection_seeds; s < seeds; ++s) {
      selected.push_back(method.run(task, lr, seed_of(s), progress));
      records.push_back({method.name, lr, seed_of(s), true, selected.back().curve});
    }
    progress.finish();

    Row row;
    method_clock.stop();
    row.runs = runs;
    row.wall_seconds = method_clock.seconds();
    row.cpu_seconds = static_cast<double>(std::clock() - method_cpu) / CLOCKS_PER_SEC;
    row.name = method.name;
    row.lr = lr;
    row.trainable = selected.front().trainable;
    row.note = selected.front().note;
    row.lora = selected.front().lora;
    for (const auto& r : selected) {
      row.test.push_back(r.test);
      row.validation.push_back(r.validation);
      row.init_seconds.push_back(r.init_seconds);
      row.train_seconds.push_back(r.train_seconds);
      row.curves.push_back(r.curve);
    }
    for (std::size_t p = 0; p < selected.front().curve.size(); ++p) {
      double sum = 0;
      for (const auto& r : selected) sum += r.curve[p].bits;
      row.mean_curve.push_back({selected.front().curve[p].step, sum / static_cast<double>(selected.size())});
    }
    std::printf("%-42s lr %-6g test %.4f bits/byte  %lld runs in %.1f s (%.1f s of CPU)  (%s)\n", method.name.c_str(),
                lr, ex::mean(row.test), runs, row.wall_seconds, row.cpu_seconds, row.note.c_str());
    std::fflush(stdout);
    rows.push_back(std::move(row));
  }
  total.stop();
  const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  if (!parallel.is_root()) return 0;  // rank 0 writes the outputs and exports
  const std::string served = serve(options, base, rows, seed_of(0), jargon.test);

  const std::vector<ClaimResult> claims = read_claims(rows, task.steps);
  const std::map<std::string, std::string> previous = previous_verdicts(options.previous);
  std::ostringstream results;
  results << header.str() << "\n" << markdown_table(rows, seeds) << "\nClaims (paired over the seeds, Student t";
  if (!previous.empty()) {
    results << "; the other seed set is the run in `" << options.previous
            << "`, and a verdict that differs between the two is not separable";
  }
  results << "):\n\n" << claims_table(claims, previous)
          << "\nTime per method (every run of the grid and the seeds, evaluations and statistics included):\n\n"
          << time_table(rows) << "\nNotes:\n";
  for (const auto& row : rows) {
    if (!row.note.empty()) results << "- " << row.name << ": " << row.note << "\n";
  }
  results << "\n" << served;
  results << "\nWhole study: " << static_cast<long long>(total.seconds() + 0.5) << " s ("
          << static_cast<long long>(cpu_seconds + 0.5)
          << " s of CPU) on " << ex::cpu_name() << ".\n";
  const auto out = std::filesystem::path(options.out);
  std::ofstream(out / "results.md") << results.str();
  write_curves_csv((out / "curves.csv").string(), records);
  write_claims_tsv((out / "claims.tsv").string(), claims);
  std::vector<ex::Series> series;
  for (const auto& row : rows) {
    ex::Series s{row.name, {}};
    for (const auto& p : row.mean_curve) s.points.emplace_back(static_cast<double>(p.step), p.bits);
    series.push_back(std::move(s));
  }
  ex::Axis axis;
  axis.label = "validation bits per byte";
  axis.divisions = 10;
  axis.floor = 0;
  ex::write_curves_svg((out / "validation-bits-per-byte.svg").string(), series,
                       "Tiny llama, fortunes -> Jargon File: validation bits per byte (mean over seeds)", axis);
  std::printf("\n%s\nWrote %s, %s and %s\n", results.str().c_str(), (out / "results.md").c_str(),
              (out / "curves.csv").c_str(), (out / "validation-bits-per-byte.svg").c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ex::DataParallel parallel(argc, argv);  // MPI when built with it (mpirun -np N): each rank runs its rows
  try {
    const Options options = parse(argc, argv);
    parallel.quiet_unless_root();
    return run(options, parallel);
  } catch (const lorakit::Error& e) {
    parallel.error(std::string("tiny_llama: ") + e.what());
    parallel.abort_job(1);
    return 1;
  }
}
