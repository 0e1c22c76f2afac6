// The progress bar and stopwatch of the study (shared with the other examples, in examples/common/).
#pragma once

#include "../common/progress.hpp"

namespace fashion_mnist {
using lorakit_examples::Progress;
using lorakit_examples::Stopwatch;
}  // namespace fashion_mnist
