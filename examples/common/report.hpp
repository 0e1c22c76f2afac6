// What the examples' study reports share: the machine they ran on, and an SVG plot of one curve per method.
#pragma once

#include <lorakit/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace lorakit_examples {

/// The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere): recorded in every study's outputs, since
/// Eigen's kernels round differently on different CPUs.
inline std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

/// A file opened for writing. Errors (lorakit::IoError): it cannot be created.
inline std::ofstream open_output(const char* where, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) lorakit::detail::fail<lorakit::IoError>(where, "cannot write '", path, "'");
  return out;
}

/// printf-style formatting of one number.
inline std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

inline std::string escape_xml(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

/// One line of a plot: (step, value) points.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

/// How the value axis of a plot is drawn.
struct Axis {
  std::string label;           // e.g. "validation accuracy (%)"
  double divisions = 20;      // the axis range is rounded out to multiples of 1 / divisions (in the values' units)
  double label_scale = 1;      // tick labels show value * label_scale
  const char* tick_format = "%.2f";
  double floor = -1e300, ceiling = 1e300;  // the range never goes beyond these
};

/// A line plot of the series against the training step, with a legend on the right.
inline void write_curves_svg(const std::string& path, const std::vector<Series>& series, const std::string& title,
                             const Axis& axis) {
  constexpr double width = 860, height = 520, left = 70, right = 290, top = 40, bottom = 60;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  double max_step = 1, lo = 1e300, hi = -1e300;
  for (const auto& s : series) {
    for (const auto& [step, value] : s.points) {
      max_step = std::max(max_step, step);
      lo = std::min(lo, value);
      hi = std::max(hi, value);
    }
  }
  if (lo > hi) lo = hi = 0;
  lo = std::max(axis.floor, std::floor(lo * axis.divisions) / axis.divisions);
  hi = std::min(axis.ceiling, std::ceil(hi * axis.divisions) / axis.divisions);
  if (hi <= lo) hi = lo + 1 / axis.divisions;
  const auto x_of = [&](double step) { return left + plot_w * step / max_step; };
  const auto y_of = [&](double value) { return top + plot_h * (1 - (value - lo) / (hi - lo)); };
  static const char* colors[] = {"#000000", "#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c",
                                 "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

  std::ofstream out = open_output("write_curves_svg", path);
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << left << "\" y=\"24\" font-size=\"15\">" << escape_xml(title) << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and tick labels
    const double value = lo + (hi - lo) * i / 5, y = y_of(value);
    out << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_w << "\" y2=\"" << y
        << "\" stroke=\"#dddddd\"/>\n";
    out << "<text x=\"" << left - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
        << format(axis.tick_format, axis.label_scale * value) << "</text>\n";
    const double step = max_step * i / 5, x = x_of(step);
    out << "<text x=\"" << x << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">" << format("%.0f", step)
        << "</text>\n";
  }
  out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
      << "\" fill=\"none\" stroke=\"black\"/>\n";
  out << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 18
      << "\" text-anchor=\"middle\">training step</text>\n";
  out << "<text transform=\"translate(20," << top + plot_h / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
      << escape_xml(axis.label) << "</text>\n";
  for (std::size_t m = 0; m < series.size(); ++m) {
    const char* color = colors[m % (sizeof colors / sizeof colors[0])];
    const char* dash = m >= 6 ? " stroke-dasharray=\"6 3\"" : "";
    out << "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" << color << "\"" << dash << " points=\"";
    for (const auto& [step, value] : series[m].points) out << x_of(step) << ',' << y_of(value) << ' ';
    out << "\"/>\n";
    const double y = top + 10 + 20 * static_cast<double>(m);
    out << "<line x1=\"" << left + plot_w + 15 << "\" y1=\"" << y << "\" x2=\"" << left + plot_w + 40 << "\" y2=\"" << y
        << "\" stroke-width=\"2\" stroke=\"" << color << "\"" << dash << "/>\n";
    out << "<text x=\"" << left + plot_w + 46 << "\" y=\"" << y + 4 << "\">" << escape_xml(series[m].name)
        << "</text>\n";
  }
  out << "</svg>\n";
}

}  // namespace lorakit_examples
