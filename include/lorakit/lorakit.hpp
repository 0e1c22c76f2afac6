// lorakit umbrella header: every part of the library except io/ (which needs nlohmann-json).
#pragma once

#include "lorakit/version.hpp"

#include "lorakit/core/error.hpp"
#include "lorakit/core/parameter.hpp"
#include "lorakit/core/random.hpp"
#include "lorakit/core/types.hpp"

#include "lorakit/kernel/lowrank_products.hpp"
#include "lorakit/kernel/symmetric_eigen.hpp"

#include "lorakit/adapter/adapted_linear.hpp"
#include "lorakit/adapter/adapter_concept.hpp"
#include "lorakit/adapter/adapter_memory.hpp"
#include "lorakit/adapter/adapter_ref.hpp"
#include "lorakit/adapter/adapter_set.hpp"
#include "lorakit/adapter/dora.hpp"
#include "lorakit/adapter/lora.hpp"
#include "lorakit/adapter/vera.hpp"

#include "lorakit/init/eva.hpp"
#include "lorakit/init/lora_da.hpp"
#include "lorakit/init/lora_ga.hpp"
#include "lorakit/init/pissa.hpp"

#include "lorakit/optim/adamw.hpp"
#include "lorakit/optim/loraplus.hpp"

#include "lorakit/rank/budget.hpp"
#include "lorakit/rank/dora_to_lora.hpp"
#include "lorakit/rank/rank_schedule.hpp"
#include "lorakit/rank/squeeze.hpp"
#include "lorakit/rank/vera_to_lora.hpp"

#include "lorakit/serve/adapter_bank.hpp"
