// fashion_mnist: adapts an MLP pretrained on Fashion-MNIST to a shifted domain (images rotated by 90 degrees and
// contrast-inverted) with every method of lorakit, under one step budget, and compares them: test accuracy over
// seeds, trainable parameters, initialization and training time, speed of convergence. See docs/fashion-mnist.md.
//
//   fashion_mnist [--quick] [--data DIR] [--out DIR] [--cache DIR] [--steps N] [--seeds N]
#include "methods.hpp"
#include "report.hpp"

#if __has_include(<lorakit/io/peft.hpp>) && defined(FASHION_MNIST_HAS_JSON)
#include <lorakit/io/peft.hpp>
#define FASHION_MNIST_HAS_PEFT 1
#endif

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

namespace fm = fashion_mnist;
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
};

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "%s\nusage: fashion_mnist [--quick] [--data DIR] [--out DIR] [--cache DIR] [--steps N] [--seeds N]\n",
               message);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
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

fm::Weights pretrained(const fm::Splits& original, const Options& options, fm::PretrainSettings settings) {
  settings.train_size = original.train.size();
  const std::string key = settings.key();
  const std::string path = (std::filesystem::path(options.cache) / ("pretrained-" + fm::fnv1a_hex(key) + ".bin")).string();
  fm::Weights weights;
  if (fm::load_weights(path, key, weights)) {
    std::printf("Pretrained model: loaded from %s\n", path.c_str());
    return weights;
  }
  fm::Stopwatch clock;
  clock.start();
  weights = fm::pretrain(original.train, settings);
  clock.stop();
  fm::save_weights(path, weights, key);
  std::printf("Pretrained model: %d epochs of batch %lld in %.1f s, cached in %s\n", settings.epochs,
              static_cast<long long>(settings.batch), clock.seconds(), path.c_str());
  return weights;
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

int run(const Options& options) {
  if (!fm::has_fashion_mnist(options.data)) {
    std::fprintf(stderr,
                 "Fashion-MNIST was not found in %s.\nInstall it with:\n  sudo apt-get install -y dataset-fashion-mnist\n"
                 "or pass --data DIR (a folder with train-images-idx3-ubyte.gz and the three other files).\n",
                 options.data.c_str());
    return kMissingData;
  }
  std::filesystem::create_directories(options.out);

  // The budget. Full: 800 steps of 64 (about one epoch of the downstream training set), 3 seeds; the curves are
  // evaluated on 1000 validation images, the final validation accuracy (which picks the learning rate) on 5000.
  fm::Task task;
  task.steps = 800;
  fm::PretrainSettings pretraining;
  pretraining.epochs = 2;
  int seeds = 3;
  Index limit_train = 0, limit_test = 0, validation_size = 5000, curve_size = 1000;
  if (options.quick) {
    task.steps = 40;
    task.eva_max_batches = 20;
    task.lora_da_batches = 16;
    pretraining.epochs = 1;
    seeds = 1;
    limit_train = 5000;
    limit_test = 1000;
    validation_size = 500;
    curve_size = 500;
  }
  if (options.steps > 0) task.steps = options.steps;
  if (options.seeds > 0) seeds = options.seeds;
  task.eval_steps = eval_steps(task.steps);

  fm::Stopwatch total;
  total.start();
  const fm::Splits original = fm::make_splits(fm::load_split(options.data, "train"), fm::load_split(options.data, "t10k"),
                                              validation_size, limit_train, limit_test);
  const fm::Weights base = pretrained(original, options, pretraining);
  const fm::Splits shifted{fm::shift_domain(original.train), fm::shift_domain(original.validation),
                           fm::shift_domain(original.test)};
  std::vector<Index> first(static_cast<std::size_t>(curve_size));
  std::iota(first.begin(), first.end(), Index{0});
  const fm::Dataset curve = fm::subset(shifted.validation, first);
  task.data = &shifted;
  task.curve = &curve;
  task.base = &base;

  std::ostringstream header;
  header << "Data: " << original.train.size() << " training, " << original.validation.size() << " validation ("
         << curve.size() << " of them for the curves), " << original.test.size() << " test images. Budget: " << task.steps << " steps of batch " << task.batch << ", "
         << seeds << (seeds == 1 ? " seed" : " seeds") << ".\n\n";
  header << "Pretrained model, original task: test accuracy " << 100 * base_accuracy(base, original.test) << "%.\n";
  header << "Pretrained model, shifted domain (rotated 90 degrees, inverted), before adaptation: test accuracy "
         << 100 * base_accuracy(base, shifted.test) << "%.\n";
  std::printf("%s", header.str().c_str());
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

  for (auto& method : methods) {
    const long long runs = static_cast<long long>(method.learning_rates.size()) + seeds - 1;
    fm::Progress progress(method.name, runs * task.steps);
    // Learning rate: the best final validation accuracy with seed 0 (the test set is never looked at).
    std::vector<fm::RunResult> grid;
    std::size_t best = 0;
    for (std::size_t i = 0; i < method.learning_rates.size(); ++i) {
      grid.push_back(method.run(task, method.learning_rates[i], 0, progress));
      if (grid[i].validation > grid[best].validation) best = i;
    }
    const double lr = method.learning_rates[best];
    for (std::size_t i = 0; i < grid.size(); ++i) {
      records.push_back({method.name, method.learning_rates[i], 0, i == best, grid[i].curve});
    }
    std::vector<fm::RunResult> selected;
    selected.push_back(std::move(grid[best]));
    for (int seed = 1; seed < seeds; ++seed) {
      selected.push_back(method.run(task, lr, static_cast<std::uint64_t>(seed), progress));
      records.push_back({method.name, lr, static_cast<std::uint64_t>(seed), true, selected.back().curve});
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
    std::printf("%-36s lr %-6g test %.2f%%  (%s)\n", method.name.c_str(), lr, 100 * fm::mean(row.test),
                row.note.c_str());
    std::fflush(stdout);
    if (selected.front().lora && fm::mean(row.validation) > best_lora.validation) {
      best_lora = {fm::mean(row.validation), method.name, std::move(selected.front().lora), selected.front().head};
    }
    rows.push_back(std::move(row));
  }
  total.stop();

  std::ostringstream results;
  results << header.str() << "\n" << fm::markdown_table(rows, seeds);
  for (const auto& name : missing) results << "\nNot in this run: " << name << " is not available in this checkout.\n";
  results << "\nNotes:\n";
  for (const auto& row : rows) {
    if (!row.note.empty()) results << "- " << row.name << ": " << row.note << "\n";
  }
  results << "\nWhole study: " << static_cast<long long>(total.seconds() + 0.5) << " s.\n";
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
    std::printf("Best LoRA adapter (%s, seed 0) saved for PEFT in %s\n", best_lora.method.c_str(), dir.c_str());
  }
#else
  std::printf("PEFT export skipped: io/peft.hpp or nlohmann-json is not available in this build\n");
#endif
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const lorakit::Error& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 1;
  }
}
