// fashion_mnist: adapts an MLP pretrained on Fashion-MNIST to a shifted domain (images rotated by 90 degrees and
// contrast-inverted) with every method of lorakit, under one step budget, and compares them: test accuracy over
// paired seeds with 95% intervals, each paper's claim as a paired difference, trainable parameters,
// initialization and training time, speed of convergence. Built with MPI, `mpirun -np P fashion_mnist ...` runs it
// data-parallel (each batch split across the ranks; rank 0 writes the outputs). See docs/fashion-mnist.md.
//
//   fashion_mnist [--quick] [--data DIR] [--out DIR] [--cache DIR] [--steps N] [--seeds N] [--seed-offset N]
#include "methods.hpp"
#include "report.hpp"

#include "../common/claims.hpp"
#include "../common/data_parallel.hpp"
#include "../common/report.hpp"

#if __has_include(<lorakit/io/peft.hpp>) && defined(FASHION_MNIST_HAS_JSON)
#include <lorakit/io/peft.hpp>
#define FASHION_MNIST_HAS_PEFT 1
#endif

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>

namespace fm = fashion_mnist;
namespace ex = lorakit_examples;
using fm::Index;

namespace {

/// Exit status when the data is missing (ctest reads it as "skipped").
constexpr int kMissingData = 77;

struct Options {
  bool quick = false;
  std::string data = fm::default_data_dir();
  std::string out = "fashion-mnist-results";
  std::string cache;  // default: <out>/cache
  long long steps = 0;  // 0: the mode's default
  int seeds = 0;
  std::uint64_t seed_offset = 0;
  std::string command;
};

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "%s\nusage: fashion_mnist [--quick] [--data DIR] [--out DIR] [--cache DIR] [--steps N] [--seeds N]\n"
               "                     [--seed-offset N]\n",
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
    else if (arg == "--data") o.data = value();
    else if (arg == "--out") o.out = value();
    else if (arg == "--cache") o.cache = value();
    else if (arg == "--steps") o.steps = std::stoll(value());
    else if (arg == "--seeds") o.seeds = std::stoi(value());
    else if (arg == "--seed-offset") o.seed_offset = std::stoull(value());
    else if (arg == "--help" || arg == "-h") usage("fashion_mnist: the Fashion-MNIST fine-tuning study of lorakit");
    else usage(("unknown option " + arg).c_str());
  }
  if (o.cache.empty()) o.cache = (std::filesystem::path(o.out) / "cache").string();
  return o;
}

/// Evaluation points before the last step: dense at the start (where the methods differ most), then every 100.
std::vector<long long> eval_steps(long long steps) {
  std::vector<long long> points;
  for (long long s : {10LL, 25LL, 50LL, 75LL, 100LL, 150LL, 200LL, 250LL}) {
    if (s < steps) points.push_back(s);
  }
  for (long long s = 300; s < steps; s += 100) points.push_back(s);
  return points;
}

/// All weights of a model, as parameters (for the broadcast of rank 0's pretrained model).
std::vector<lorakit::Parameter<float>> all_parameters(fm::Weights& w) {
  auto p = w.fc1.parameters("fc1");
  for (auto& q : w.fc2.parameters("fc2")) p.push_back(q);
  for (auto& q : w.head.parameters("head")) p.push_back(q);
  return p;
}

/// The pretrained model: loaded from the cache or pretrained (one process, rank 0 when data-parallel, which then
/// sends it to the other ranks).
fm::Weights pretrained(const fm::Splits& original, const Options& options, fm::PretrainSettings settings,
                       const ex::DataParallel& parallel) {
  settings.train_size = original.train.size();
  fm::Weights weights;
  if (parallel.is_root()) {
    const std::string key = settings.key();
    const std::string path =
        (std::filesystem::path(options.cache) / ("pretrained-" + fm::fnv1a_hex(key) + ".bin")).string();
    if (fm::load_weights(path, key, weights)) {
      std::printf("Pretrained model: loaded from %s\n", path.c_str());
    } else {
      fm::Stopwatch clock;
      clock.start();
      weights = fm::pretrain(original.train, settings);
      clock.stop();
      fm::save_weights(path, weights, key);
      std::printf("Pretrained model: %d epochs of batch %lld in %.1f s, cached in %s\n", settings.epochs,
                  static_cast<long long>(settings.batch), clock.seconds(), path.c_str());
    }
  } else {
    lorakit::Rng unused(0);
    weights = fm::Weights{fm::Dense::random(fm::kPixels, fm::kHidden1, unused),
                          fm::Dense::random(fm::kHidden1, fm::kHidden2, unused),
                          fm::Dense::random(fm::kHidden2, fm::kClasses, unused)};
  }
  auto parameters = all_parameters(weights);
  parallel.broadcast_values(parameters);
  return weights;
}

/// A paper's claim, read as the paired difference (method - baseline) of test accuracy (higher is better).
const std::vector<ex::Claim>& claims() {
  static const std::vector<ex::Claim> list = {
      {"LoRA comes close to full fine-tuning (Hu et al.): LoRA r=8 at least as good", "LoRA r=8", "Full fine-tuning"},
      {"VeRA matches LoRA with far fewer parameters (Kopiczko et al.)", "VeRA r=256", "LoRA r=8"},
      {"DoRA beats LoRA at the same rank (Liu et al.)", "DoRA r=8", "LoRA r=8"},
      {"LoRA+ (B at 16 x the learning rate) beats LoRA (Hayou et al.)", "LoRA+ r=8, ratio 16", "LoRA r=8"},
      {"EVA's data-driven init beats random init (Paischer et al.)", "EVA r=8, rho=2", "LoRA r=8"},
      {"LoRA-DA's init beats random init (Zhang et al.), at alpha = r", "LoRA-DA r=8", "LoRA r=8"},
      {"LoRA-DA's init beats random init, in its reference configuration", "LoRA-DA r=8, rsLoRA alpha=16, gamma=1024",
       "LoRA r=8"},
      {"PiSSA's init from the principal singular triplets beats random init (Meng et al.)", "PiSSA r=8", "LoRA r=8"},
      {"LoRA-GA's init from the first-step gradient beats random init (Wang et al.)", "LoRA-GA r=8", "LoRA r=8"},
      {"Squeezing rank 32 to 8 after training beats training rank 8 (Vulic et al.)", "Squeeze 32->8, post hoc",
       "LoRA r=8"},
      {"Squeeze at 80% and continue beats training rank 8", "Squeeze 32->8, post hoc + continued", "LoRA r=8"},
      {"Annealing the rank 32 -> 16 -> 8 beats training rank 8", "Squeeze 32->16->8, annealed", "LoRA r=8"},
  };
  return list;
}

/// Test accuracy of the pretrained model, unadapted, on `data`.
double base_accuracy(const fm::Weights& w, const fm::Dataset& data) {
  fm::Mlp<fm::Dense> model(w.fc1, w.fc2, w.head);
  return fm::accuracy(model, data);
}

#ifdef FASHION_MNIST_HAS_PEFT
/// Saves LoRA adapters with the head as PEFT's modules_to_save.
void export_peft(const std::string& dir, const lorakit::AdapterSet<lorakit::Lora<float>>& adapters,
                 const fm::Dense& head) {
  lorakit::io::PeftAdapter<float> peft;
  peft.adapters = lorakit::AdapterSet<lorakit::Lora<float>>(adapters);
  peft.extra_tensors["head.weight"] = head.W;
  peft.extra_tensors["head.bias"] = fm::Matrix(head.b.transpose());
  peft.extra_shapes["head.weight"] = {head.W.rows(), head.W.cols()};
  peft.extra_shapes["head.bias"] = {head.b.size()};
  peft.config["modules_to_save"] = {"head"};
  lorakit::io::PeftSaveOptions options;
  options.base_model_name_or_path = "lorakit-example-fashion-mnist-mlp";
  lorakit::io::save_peft(dir, peft, options);
}
#endif

int run(const Options& options, const ex::DataParallel& parallel) {
  if (!fm::has_fashion_mnist(options.data)) {
    if (parallel.is_root()) {
      std::fprintf(stderr,
                   "Fashion-MNIST was not found in %s.\nInstall it with:\n  sudo apt-get install -y "
                   "dataset-fashion-mnist\nor pass --data DIR (a folder with train-images-idx3-ubyte.gz and the three "
                   "other files).\n",
                   options.data.c_str());
    }
    return kMissingData;
  }
  const bool root = parallel.is_root();
  if (root) std::filesystem::create_directories(options.out);

  // The budget. Full: 800 steps of 64 (about one epoch of the downstream training set), 5 paired seeds, the
  // learning rate chosen on validation averaged over the first 2; the curves are evaluated on 1000 validation
  // images, the final validation accuracy (which picks the learning rate) on 5000.
  fm::Task task;
  task.steps = 800;
  fm::PretrainSettings pretraining;
  pretraining.epochs = 2;
  int seeds = 5, selection_seeds = 2;
  Index limit_train = 0, limit_test = 0, validation_size = 5000, curve_size = 1000;
  if (options.quick) {
    task.steps = 40;
    task.eva_max_batches = 20;
    task.lora_da_batches = 16;
    task.lora_ga_batches = 8;
    pretraining.epochs = 1;
    seeds = 2;
    selection_seeds = 1;
    limit_train = 5000;
    limit_test = 1000;
    validation_size = 500;
    curve_size = 500;
  }
  if (options.steps > 0) task.steps = options.steps;
  if (options.seeds > 0) seeds = options.seeds;
  selection_seeds = std::min(selection_seeds, seeds);
  task.eval_steps = eval_steps(task.steps);
  task.parallel = &parallel;

  fm::Stopwatch total;
  total.start();
  const std::clock_t cpu_start = std::clock();
  const fm::Splits original = fm::make_splits(fm::load_split(options.data, "train"),
                                              fm::load_split(options.data, "t10k"), validation_size, limit_train,
                                              limit_test);
  const fm::Weights base = pretrained(original, options, pretraining, parallel);
  const fm::Splits shifted{fm::shift_domain(original.train), fm::shift_domain(original.validation),
                           fm::shift_domain(original.test)};
  std::vector<Index> first(static_cast<std::size_t>(curve_size));
  std::iota(first.begin(), first.end(), Index{0});
  const fm::Dataset curve = fm::subset(shifted.validation, first);
  task.data = &shifted;
  task.curve = &curve;
  task.base = &base;

  std::ostringstream header;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  header << "Run: " << date << " on " << ex::cpu_name() << "; command: `" << options.command << "`";
  if (parallel.size() > 1) {
    header << " under mpirun with " << parallel.size() << " ranks (each batch split across them)";
  }
  header << ".\n\n";
  header << "Data: " << original.train.size() << " training, " << original.validation.size() << " validation ("
         << curve.size() << " of them for the curves), " << original.test.size() << " test images. Budget: "
         << task.steps << " steps of batch " << task.batch << ", " << seeds << (seeds == 1 ? " seed" : " paired seeds")
         << " (offset " << options.seed_offset << "), learning rate chosen on validation averaged over "
         << selection_seeds << (selection_seeds == 1 ? " seed" : " seeds") << ".\n\n";
  header << "Pretrained model, original task: test accuracy " << 100 * base_accuracy(base, original.test) << "%.\n";
  header << "Pretrained model, shifted domain (rotated 90 degrees, inverted), before adaptation: test accuracy "
         << 100 * base_accuracy(base, shifted.test) << "%.\n";
  if (root) std::printf("%s", header.str().c_str());
  std::fflush(stdout);

  std::vector<std::string> missing;
  std::vector<fm::Method> methods = fm::all_methods(missing);
  std::vector<fm::MethodSummary> rows;
  std::vector<fm::RunRecord> records;
  struct Export {
    double validation = -1;
    std::string method;
    std::optional<lorakit::AdapterSet<lorakit::Lora<float>>> lora;
    fm::Dense head;
  } best_lora;

  const auto seed_of = [&](int i) { return options.seed_offset + static_cast<std::uint64_t>(i); };
  for (auto& method : methods) {
    const long long runs =
        static_cast<long long>(method.learning_rates.size()) * selection_seeds + seeds - selection_seeds;
    fm::Progress progress(method.name, runs * task.steps);
    // Learning rate: the best final validation accuracy averaged over the selection seeds (the test set is never
    // looked at).
    std::vector<std::vector<fm::RunResult>> grid(method.learning_rates.size());
    std::vector<double> score(method.learning_rates.size(), 0);
    std::size_t best = 0;
    for (std::size_t i = 0; i < method.learning_rates.size(); ++i) {
      for (int s = 0; s < selection_seeds; ++s) {
        grid[i].push_back(method.run(task, method.learning_rates[i], seed_of(s), progress));
        score[i] += grid[i].back().validation / selection_seeds;
      }
      if (score[i] > score[best]) best = i;
    }
    const double lr = method.learning_rates[best];
    for (std::size_t i = 0; i < grid.size(); ++i) {
      for (int s = 0; s < selection_seeds; ++s) {
        records.push_back({method.name, method.learning_rates[i], seed_of(s), i == best,
                           grid[i][static_cast<std::size_t>(s)].curve});
      }
    }
    std::vector<fm::RunResult> selected = std::move(grid[best]);
    for (int s = selection_seeds; s < seeds; ++s) {
      selected.push_back(method.run(task, lr, seed_of(s), progress));
      records.push_back({method.name, lr, seed_of(s), true, selected.back().curve});
    }
    progress.finish();

    fm::MethodSummary row;
    row.name = method.name;
    row.lr = lr;
    row.trainable = selected.front().trainable;
    row.note = selected.front().note;
    for (const auto& r : selected) {
      row.test.push_back(r.test);
      row.validation.push_back(r.validation);
      row.init_seconds.push_back(r.init_seconds);
      row.train_seconds.push_back(r.train_seconds);
      row.steps_to_95.push_back(static_cast<double>(fm::steps_to_95(r.curve)));
    }
    for (std::size_t p = 0; p < selected.front().curve.size(); ++p) {
      double sum = 0;
      for (const auto& r : selected) sum += r.curve[p].accuracy;
      row.mean_curve.push_back({selected.front().curve[p].step, sum / static_cast<double>(selected.size())});
    }
    if (root) {
      std::printf("%-42s lr %-6g test %.2f%%  (%s)\n", method.name.c_str(), lr, 100 * fm::mean(row.test),
                  row.note.c_str());
    }
    std::fflush(stdout);
    if (selected.front().lora && fm::mean(row.validation) > best_lora.validation) {
      best_lora = {fm::mean(row.validation), method.name, std::move(selected.front().lora), selected.front().head};
    }
    rows.push_back(std::move(row));
  }
  total.stop();
  // CPU seconds of every rank together.
  const double cpu_seconds = parallel.sum(static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC);
  if (!root) return 0;

  std::map<std::string, std::vector<double>> test_by_method;
  for (const auto& row : rows) test_by_method[row.name] = row.test;
  std::ostringstream results;
  results << header.str() << "\n" << fm::markdown_table(rows, seeds);
  for (const auto& name : missing) results << "\nNot in this run: " << name << " is not available in this checkout.\n";
  results << "\nClaims (paired over the seeds: the same data order and adapter seeds for every method; Student t):\n\n"
          << ex::claims_markdown(ex::read_claims(claims(), test_by_method, false),
                                 "paired difference of test accuracy (method - baseline, percentage points; > 0 "
                                 "favours the claim), mean [95% t interval]",
                                 100, "%.2f");
  results << "\nNotes:\n";
  for (const auto& row : rows) {
    if (!row.note.empty()) results << "- " << row.name << ": " << row.note << "\n";
  }
  results << "\nWhole study: " << static_cast<long long>(total.seconds() + 0.5) << " s ("
          << static_cast<long long>(cpu_seconds + 0.5) << " s of CPU";
  if (parallel.size() > 1) results << " over " << parallel.size() << " ranks";
  results << ") on " << ex::cpu_name() << ".\n";
  const auto out = std::filesystem::path(options.out);
  std::ofstream(out / "results.md") << results.str();
  fm::write_curves_csv((out / "curves.csv").string(), records);
  fm::write_curves_svg((out / "validation-accuracy.svg").string(), rows,
                       "Fashion-MNIST, rotated and inverted: validation accuracy (mean over seeds)");
  std::printf("\n%s\nWrote %s, %s and %s\n", results.str().c_str(), (out / "results.md").c_str(),
              (out / "curves.csv").c_str(), (out / "validation-accuracy.svg").c_str());
#ifdef FASHION_MNIST_HAS_PEFT
  if (best_lora.lora) {
    const auto dir = out / "best-lora-peft";
    export_peft(dir.string(), *best_lora.lora, best_lora.head);
    std::printf("Best LoRA adapter (%s, seed %llu) saved for PEFT in %s\n", best_lora.method.c_str(),
                static_cast<unsigned long long>(seed_of(0)), dir.c_str());
  }
#else
  std::printf("PEFT export skipped: io/peft.hpp or nlohmann-json is not available in this build\n");
#endif
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // MPI (when built with it) for the whole run: MPI_Finalize at the end, MPI_Abort if an exception escapes.
  ex::DataParallel parallel(argc, argv);
  try {
    return run(parse(argc, argv), parallel);
  } catch (const lorakit::Error& e) {
    std::fprintf(stderr, "fashion_mnist (rank %d): %s\n", parallel.rank(), e.what());
    parallel.abort_job(1);  // the other ranks may be waiting for this one
    return 1;
  }
}
