// lorakit-convert: a PEFT LoRA folder to a llama.cpp GGUF adapter, and a GGUF adapter back to a PEFT folder.
//
//   lorakit-convert --arch llama --n-head N --n-head-kv M [--dtype f32|f16|bf16] PEFT_DIR OUT.gguf
//   lorakit-convert --to-peft [--n-head N --n-head-kv M] [--dtype f32|f16|bf16] IN.gguf OUT_DIR
#include <lorakit/io/gguf.hpp>
#include <lorakit/io/gguf_lora.hpp>
#include <lorakit/io/peft.hpp>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr const char* usage = R"(usage:
  lorakit-convert --arch ARCH --n-head N --n-head-kv M [--dtype f32|f16|bf16] PEFT_DIR OUT.gguf
  lorakit-convert --to-peft [--n-head N --n-head-kv M] [--dtype f32|f16|bf16] IN.gguf OUT_DIR

The first form writes the LoRA adapter of a PEFT folder (adapter_config.json, adapter_model.safetensors) as a
llama.cpp adapter (load it with llama.cpp's --lora). ARCH is the base model's general.architecture (llama,
qwen2, mistral, ...); N and M are its attention and key/value head counts (num_attention_heads,
num_key_value_heads in its config.json): llama.cpp's converter permutes the rows of the q and k projections per
head, and the adapter must follow. Modules are named as in Hugging Face (model.layers.3.self_attn.q_proj).

The second form writes a GGUF LoRA adapter as a PEFT folder. Files written by lorakit-convert carry their head
counts; for files of other tools pass --n-head and --n-head-kv so that the q and k rows are put back.

  --dtype   element type of the written tensors (default f32)
  --help    this text

Exit status: 0 on success, 1 on any error (the message says what went wrong), 2 on a bad command line.)";

struct Arguments {
  bool to_peft = false;
  std::string arch;
  long long n_head = -1;
  long long n_head_kv = -1;
  lorakit::io::Dtype dtype = lorakit::io::Dtype::F32;
  std::vector<std::string> positional;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "lorakit-convert: " << message << "\n(see lorakit-convert --help)\n";
  std::exit(2);
}

long long head_count(const std::string& option, const std::string& text) {
  std::size_t used = 0;
  long long value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 1 || value > 1'000'000) usage_error(option + " needs a positive integer, got '" + text + "'");
  return value;
}

Arguments parse(int argc, char** argv) {
  Arguments out;
  const auto value = [&](int& i, const std::string& option) -> std::string {
    if (i + 1 >= argc) usage_error(option + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage << "\n";
      std::exit(0);
    } else if (arg == "--to-peft") {
      out.to_peft = true;
    } else if (arg == "--arch") {
      out.arch = value(i, arg);
      if (out.arch.empty()) usage_error("--arch needs a non-empty architecture name");
    } else if (arg == "--n-head") {
      out.n_head = head_count(arg, value(i, arg));
    } else if (arg == "--n-head-kv") {
      out.n_head_kv = head_count(arg, value(i, arg));
    } else if (arg == "--dtype") {
      const std::string dtype = value(i, arg);
      if (dtype == "f32") out.dtype = lorakit::io::Dtype::F32;
      else if (dtype == "f16") out.dtype = lorakit::io::Dtype::F16;
      else if (dtype == "bf16") out.dtype = lorakit::io::Dtype::BF16;
      else usage_error("--dtype is '" + dtype + "', expected f32, f16 or bf16");
    } else if (arg.size() > 1 && arg[0] == '-') {
      usage_error("unknown option '" + arg + "'");
    } else {
      out.positional.push_back(arg);
    }
  }
  if (out.positional.size() != 2) usage_error("expected 2 paths (input and output), got " + std::to_string(out.positional.size()));
  if ((out.n_head < 0) != (out.n_head_kv < 0)) usage_error("--n-head and --n-head-kv go together");
  if (out.n_head_kv > out.n_head) usage_error("--n-head-kv is larger than --n-head");
  if (out.to_peft && !out.arch.empty()) usage_error("--arch is not used with --to-peft (the file names its architecture)");
  if (!out.to_peft && out.arch.empty()) usage_error("--arch is required (the base model's architecture, e.g. llama)");
  return out;
}

void peft_to_gguf(const Arguments& args) {
  const auto peft = lorakit::io::load_peft<float>(args.positional[0]);
  if (!peft.extra_tensors.empty()) {
    throw lorakit::ValueError("lorakit-convert: '" + args.positional[0] + "' holds tensors that are not LoRA factors (e.g. '" +
                              peft.extra_tensors.begin()->first +
                              "', from modules_to_save), which a llama.cpp adapter cannot carry");
  }
  if (peft.fan_in_fan_out) {
    throw lorakit::ValueError("lorakit-convert: '" + args.positional[0] +
                              "' has fan_in_fan_out (GPT-2 style Conv1D weights), which lorakit-convert does not map");
  }
  lorakit::io::GgufLoraOptions options;
  options.architecture = args.arch;
  options.n_head = args.n_head > 0 ? static_cast<lorakit::Index>(args.n_head) : 0;
  options.n_head_kv = args.n_head_kv > 0 ? static_cast<lorakit::Index>(args.n_head_kv) : 0;
  options.dtype = args.dtype;
  lorakit::io::save_gguf_lora(args.positional[1], peft.adapters, options);
  std::cout << "wrote " << peft.adapters.size() << " adapters (alpha " << lorakit::io::gguf_file_alpha(peft.adapters)
            << ") to " << args.positional[1] << "\n";
}

void gguf_to_peft(const Arguments& args) {
  const std::string& in = args.positional[0];
  std::optional<lorakit::io::GgufLoraOptions> options;
  const bool own = lorakit::io::GgufReader(in).has("lorakit.n_head");
  if (args.n_head > 0) {
    options.emplace();
    options->n_head = static_cast<lorakit::Index>(args.n_head);
    options->n_head_kv = static_cast<lorakit::Index>(args.n_head_kv);
  } else if (!own) {
    throw lorakit::ValueError("lorakit-convert: '" + in +
                              "' was not written by lorakit: pass --n-head and --n-head-kv (the base model's head counts) "
                              "so that the q and k rows are put back in Hugging Face order");
  }
  const auto adapter = lorakit::io::load_gguf_lora<float>(in, options);
  for (const auto& name : adapter.adapters.names()) {
    if (lorakit::io::detail::ends_with(name, ".weight")) {
      throw lorakit::ValueError("lorakit-convert: tensor '" + name + "' of '" + in +
                                "' has no Hugging Face name in lorakit's table (architecture " + adapter.architecture + ")");
    }
  }
  lorakit::io::PeftSaveOptions save;
  save.dtype = args.dtype;
  save.task_type = "CAUSAL_LM";
  lorakit::io::save_peft(args.positional[1], adapter.adapters, save);
  std::cout << "wrote " << adapter.adapters.size() << " adapters (architecture " << adapter.architecture << ", alpha "
            << adapter.alpha << ") to " << args.positional[1] << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const Arguments args = parse(argc, argv);
  try {
    if (args.to_peft) {
      gguf_to_peft(args);
    } else {
      peft_to_gguf(args);
    }
  } catch (const std::exception& e) {
    std::cerr << "lorakit-convert: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
