// What the examples' studies share for their long phases: a progress bar on stderr (redrawn in place on a
// terminal, one line per 10% otherwise, for small CI logs) and a stopwatch.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace lorakit_examples {

class Progress {
 public:
  Progress(std::string label, long long total)
      : label_(std::move(label)), total_(total > 0 ? total : 1), tty_(isatty(fileno(stderr)) != 0),
        start_(std::chrono::steady_clock::now()) {
    draw();
  }
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  /// Makes every bar of this process silent from now on (the ranks but 0 of a data-parallel run).
  static void quiet_process() { quiet() = true; }

  /// Marks `n` more units done.
  void advance(long long n = 1) {
    done_ = std::min(total_, done_ + n);
    draw();
  }

  /// Completes the bar (idempotent).
  void finish() {
    if (finished_) return;
    done_ = total_;
    draw();
    if (tty_ && !quiet()) std::fputc('\n', stderr);
    finished_ = true;
  }

 private:
  static bool& quiet() {
    static bool value = false;
    return value;
  }

  void draw() {
    if (quiet()) return;
    const int percent = static_cast<int>(100 * done_ / total_);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (tty_) {
      if (percent == last_percent_) return;
      constexpr int width = 30;
      const int filled = percent * width / 100;
      std::fprintf(stderr, "\r%-28s [%s%s] %3d%% %6.1fs", label_.c_str(), std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), percent, seconds);
    } else {
      if (percent / 10 == last_percent_ / 10) return;
      std::fprintf(stderr, "%s: %d%% (%.1fs)\n", label_.c_str(), percent / 10 * 10, seconds);
    }
    std::fflush(stderr);
    last_percent_ = percent;
  }

  std::string label_;
  long long total_, done_ = 0;
  bool tty_;
  bool finished_ = false;
  int last_percent_ = -1;
  std::chrono::steady_clock::time_point start_;
};

/// Seconds on a steady clock, accumulated over intervals.
class Stopwatch {
 public:
  void start() { begin_ = std::chrono::steady_clock::now(); }
  void stop() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin_).count(); }
  double seconds() const { return total_; }

 private:
  std::chrono::steady_clock::time_point begin_;
  double total_ = 0;
};

}  // namespace lorakit_examples
