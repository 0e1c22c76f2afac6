// Load and save of a 7B-scale PEFT LoRA (r = 16 on 224 layers of 4096 x 4096: 117 MB in F32), in MB/s, against
// copying the same file on the same disk.
//
// save_peft:        save_peft to a folder (safetensors + config, each written to a temporary file, fsynced, renamed)
// write_nosync:     the same safetensors file through SafetensorsWriter::write(file, sync = false)
// load_peft:        load_peft<float> of that folder (the file is in the page cache, as it is for the copy)
// copy_file:        std::filesystem::copy_file of adapter_model.safetensors (no fsync)
// copy_file_fsync:  the same, then fsync of the copy (what save_peft's durability costs a plain copy)
// save_gguf_lora:   the same adapters as a llama.cpp GGUF adapter (F32; q/k rows permuted, as for a llama model
//                   of 32 heads), written to a temporary file, fsynced, renamed
// load_gguf_lora:   load_gguf_lora<float> of that file (rows put back, names mapped back)
// copy_gguf_fsync:  copy_file of the GGUF file, then fsync
// After the runs, a table gives each one's MB/s and its ratio to copy_file (and save to copy_file_fsync).
#include <benchmark/benchmark.h>

#include <lorakit/io/gguf_lora.hpp>
#include <lorakit/io/peft.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>

namespace {

using T = float;
using lorakit::Index;
namespace fs = std::filesystem;

constexpr Index kLayers = 224, kWidth = 4096, kRank = 16;

/// The adapters, and a scratch folder removed at exit.
struct Workload {
  Workload() {
    std::random_device device;
    folder = fs::temp_directory_path() / ("lorakit-bench-io-" + std::to_string(device()));
    fs::create_directories(folder);
    lorakit::LoraConfig config;
    config.rank = kRank;
    config.alpha = 32;
    const char* projections[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    for (Index i = 0; i < kLayers; ++i) {
      config.seed = static_cast<std::uint64_t>(i);
      lorakit::Lora<T> lora(kWidth, kWidth, config);
      lorakit::Rng(1000 + config.seed).fill_normal(lora.B(), T(0), T(0.01));
      adapters.add("model.layers." + std::to_string(i / 7) + ".self_attn." + projections[i % 7], std::move(lora));
    }
    lorakit::io::save_peft(folder / "saved", adapters);
    file_bytes = static_cast<double>(fs::file_size(folder / "saved" / lorakit::io::peft_weights_file));
    gguf_options.n_head = 32;
    gguf_options.n_head_kv = 32;
    // The workload names every projection under self_attn: map the MLP names there too.
    for (const char* p : {"gate", "up", "down"}) {
      gguf_options.names.push_back({std::string("model.layers.{L}.self_attn.") + p + "_proj", std::string("blk.{L}.ffn_") + p});
    }
    lorakit::io::save_gguf_lora(gguf(), adapters, gguf_options);
    gguf_bytes = static_cast<double>(fs::file_size(gguf()));
  }
  fs::path gguf() const { return folder / "saved.gguf"; }
  ~Workload() {
    std::error_code ignored;
    fs::remove_all(folder, ignored);
  }
  fs::path weights() const { return folder / "saved" / lorakit::io::peft_weights_file; }

  fs::path folder;
  lorakit::AdapterSet<lorakit::Lora<T>> adapters;
  double file_bytes = 0;
  lorakit::io::GgufLoraOptions gguf_options;
  double gguf_bytes = 0;
};

Workload& workload() {
  static Workload w;
  return w;
}

void finish(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<std::int64_t>(workload().file_bytes) * state.iterations());
  state.counters["MB"] = workload().file_bytes / 1e6;
}

void save_peft(benchmark::State& state) {
  for (auto _ : state) lorakit::io::save_peft(workload().folder / "save", workload().adapters);
  finish(state);
}

void write_nosync(benchmark::State& state) {
  for (auto _ : state) {
    lorakit::io::SafetensorsWriter writer;
    for (const auto& [name, lora] : workload().adapters) {
      writer.add("base_model.model." + name + ".lora_A.weight", lora.A());
      writer.add("base_model.model." + name + ".lora_B.weight", lora.B());
    }
    writer.write(workload().folder / "nosync.safetensors", false);
  }
  finish(state);
}

void load_peft(benchmark::State& state) {
  for (auto _ : state) {
    auto adapter = lorakit::io::load_peft<T>(workload().folder / "saved");
    benchmark::DoNotOptimize(adapter.adapters.size());
  }
  finish(state);
}

void copy(benchmark::State& state, bool sync, const fs::path& source = workload().weights()) {
  const fs::path target = workload().folder / ("copy" + source.extension().string());
  for (auto _ : state) {
    fs::copy_file(source, target, fs::copy_options::overwrite_existing);
    if (sync) {
      const int fd = ::open(target.c_str(), O_RDONLY);
      if (fd < 0 || ::fsync(fd) != 0) state.SkipWithError("fsync of the copy failed");
      if (fd >= 0) ::close(fd);
    }
  }
  finish(state);
}

void copy_file(benchmark::State& state) { copy(state, false); }
void copy_file_fsync(benchmark::State& state) { copy(state, true); }

void finish_gguf(benchmark::State& state) {
  state.SetBytesProcessed(static_cast<std::int64_t>(workload().gguf_bytes) * state.iterations());
  state.counters["MB"] = workload().gguf_bytes / 1e6;
}

void save_gguf_lora(benchmark::State& state) {
  for (auto _ : state) lorakit::io::save_gguf_lora(workload().folder / "save.gguf", workload().adapters, workload().gguf_options);
  finish_gguf(state);
}

void load_gguf_lora(benchmark::State& state) {
  for (auto _ : state) {
    auto adapter = lorakit::io::load_gguf_lora<T>(workload().gguf());
    benchmark::DoNotOptimize(adapter.adapters.size());
  }
  finish_gguf(state);
}

void copy_gguf_fsync(benchmark::State& state) {
  copy(state, true, workload().gguf());
  finish_gguf(state);
}

/// Prints the usual console output and keeps each run's MB/s for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      const auto it = run.counters.find("bytes_per_second");
      if (it != run.counters.end()) rates[run.run_name.function_name] = it->second.value / 1e6;
    }
  }
  std::map<std::string, double> rates;
};

}  // namespace

BENCHMARK(save_peft)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(write_nosync)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(load_peft)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(copy_file)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(copy_file_fsync)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(save_gguf_lora)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(load_gguf_lora)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK(copy_gguf_fsync)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  const auto rate = [&](const char* name) { return reporter.rates.count(name) ? reporter.rates[name] : 0.0; };
  std::printf("\n%-16s %10s %14s\n", "run", "MB/s", "vs copy_file");
  for (const auto& [name, mb_per_s] : reporter.rates) {
    const double cp = rate("copy_file");
    std::printf("%-16s %10.0f %14.2f\n", name.c_str(), mb_per_s, cp > 0 ? mb_per_s / cp : 0.0);
  }
  if (rate("copy_file_fsync") > 0) {
    std::printf("save_peft / copy_file_fsync = %.2f\n", rate("save_peft") / rate("copy_file_fsync"));
  }
  if (rate("copy_gguf_fsync") > 0) {
    std::printf("save_gguf_lora / copy_gguf_fsync = %.2f\n", rate("save_gguf_lora") / rate("copy_gguf_fsync"));
  }
  benchmark::Shutdown();
  return 0;
}
