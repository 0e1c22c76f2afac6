// lorakit's release number. CMake reads these three macros for project(VERSION), the package version file and
// the pkg-config files, so this header is the one place where the version is written.
#pragma once

#define LORAKIT_VERSION_MAJOR 0
#define LORAKIT_VERSION_MINOR 1
#define LORAKIT_VERSION_PATCH 0

/// The version as one number, major * 10000 + minor * 100 + patch, for `#if LORAKIT_VERSION >= 100` checks.
#define LORAKIT_VERSION (LORAKIT_VERSION_MAJOR * 10000 + LORAKIT_VERSION_MINOR * 100 + LORAKIT_VERSION_PATCH)
