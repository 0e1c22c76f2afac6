// HuggingFace PEFT adapters on disk: a folder with adapter_model.safetensors and adapter_config.json, read into
// and written from lorakit adapters, so that a LoRA trained with lorakit loads in PEFT and the reverse.
//
// The header users include. As PEFT's tuners, one header per method over a common part:
//   io/peft_config.hpp   adapter_config.json fields, PeftPattern (rank_pattern / alpha_pattern)
//   io/peft_folder.hpp   reading a folder (tensor suffixes, extras), writing it as a whole (atomic protocol)
//   io/peft_lora.hpp     LoRA: PeftAdapter, load_peft, save_peft
//   io/peft_vera.hpp     VeRA: PeftVeraAdapter, load_peft_vera, save_peft_vera
//   io/peft_dora.hpp     DoRA (LoRA with use_dora): PeftDoraAdapter, load_peft_dora, save_peft_dora
#pragma once

#include "lorakit/io/peft_config.hpp"
#include "lorakit/io/peft_dora.hpp"
#include "lorakit/io/peft_folder.hpp"
#include "lorakit/io/peft_lora.hpp"
#include "lorakit/io/peft_vera.hpp"
#include "lorakit/io/safetensors.hpp"
