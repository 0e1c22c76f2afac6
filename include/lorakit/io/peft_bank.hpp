// The first home of load_peft_banks, kept so that code including it still compiles: adapter banks from PEFT
// folders and from GGUF files now live together in io/banks.hpp.
#pragma once

#include "lorakit/io/banks.hpp"
