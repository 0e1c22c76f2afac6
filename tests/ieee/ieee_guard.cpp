// Compiled (syntax only) by tests/ieee.cmake with and without fast-math flags: lorakit's headers must refuse
// every flag that drops IEEE arithmetic, and accept the default.
#include <lorakit/lorakit.hpp>
