// Table, CSV and SVG of the study.
#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace fashion_mnist {
namespace {

std::ofstream open_output(const char* where, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) lorakit::detail::fail<lorakit::IoError>(where, "cannot write '", path, "'");
  return out;
}

std::string format(const char* pattern, double value) {
  char text[64];
  std::snprintf(text, sizeof text, pattern, value);
  return text;
}

std::string with_thousands(Index value) {
  std::string digits = std::to_string(value), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string escape_xml(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

long long steps_to_95(const Curve& curve) {
  if (curve.empty()) return 0;
  const double target = 0.95 * curve.back().accuracy;
  for (const auto& point : curve) {
    if (point.accuracy >= target) return point.step;
  }
  return curve.back().step;
}

double mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

double stddev(const std::vector<double>& values) {
  if (values.size() < 2) return 0;
  const double m = mean(values);
  double sum = 0;
  for (double v : values) sum += (v - m) * (v - m);
  return std::sqrt(sum / static_cast<double>(values.size() - 1));
}

std::string markdown_table(const std::vector<MethodSummary>& rows, int seeds) {
  std::ostringstream out;
  out << "| method | lr | trainable parameters | test accuracy (%, mean ± std, " << seeds
      << (seeds == 1 ? " seed" : " seeds") << ") | validation accuracy (%) | init time (s) | training time (s) "
      << "| steps to 95% of final validation accuracy |\n";
  out << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const auto& row : rows) {
    out << "| " << row.name << " | " << format("%g", row.lr) << " | " << with_thousands(row.trainable) << " | "
        << format("%.2f", 100 * mean(row.test)) << " ± " << format("%.2f", 100 * stddev(row.test)) << " | "
        << format("%.2f", 100 * mean(row.validation)) << " | " << format("%.3f", mean(row.init_seconds)) << " | "
        << format("%.1f", mean(row.train_seconds)) << " | " << format("%.0f", mean(row.steps_to_95)) << " |\n";
  }
  return out.str();
}

void write_curves_csv(const std::string& path, const std::vector<RunRecord>& runs) {
  std::ofstream out = open_output("write_curves_csv", path);
  out << "method,lr,seed,selected,step,validation_accuracy\n";
  for (const auto& run : runs) {
    for (const auto& point : run.curve) {
      out << '"' << run.method << "\"," << format("%g", run.lr) << ',' << run.seed << ',' << (run.selected ? 1 : 0)
          << ',' << point.step << ',' << format("%.4f", point.accuracy) << '\n';
    }
  }
}

void write_curves_svg(const std::string& path, const std::vector<MethodSummary>& rows, const std::string& title) {
  constexpr double width = 860, height = 520, left = 70, right = 290, top = 40, bottom = 60;
  const double plot_w = width - left - right, plot_h = height - top - bottom;
  long long max_step = 1;
  double lo = 1, hi = 0;
  for (const auto& row : rows) {
    for (const auto& p : row.mean_curve) {
      max_step = std::max(max_step, p.step);
      lo = std::min(lo, p.accuracy);
      hi = std::max(hi, p.accuracy);
    }
  }
  // Round the accuracy axis out to whole 5% steps.
  lo = std::max(0.0, std::floor(lo * 20) / 20);
  hi = std::min(1.0, std::ceil(hi * 20) / 20);
  if (hi <= lo) hi = lo + 0.05;
  const auto x_of = [&](double step) { return left + plot_w * step / static_cast<double>(max_step); };
  const auto y_of = [&](double acc) { return top + plot_h * (1 - (acc - lo) / (hi - lo)); };
  static const char* colors[] = {"#000000", "#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c",
                                 "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

  std::ofstream out = open_output("write_curves_svg", path);
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  out << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  out << "<text x=\"" << left << "\" y=\"24\" font-size=\"15\">" << escape_xml(title) << "</text>\n";
  for (int i = 0; i <= 5; ++i) {  // grid and tick labels
    const double acc = lo + (hi - lo) * i / 5, y = y_of(acc);
    out << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_w << "\" y2=\"" << y
        << "\" stroke=\"#dddddd\"/>\n";
    out << "<text x=\"" << left - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << format("%.1f", 100 * acc)
        << "</text>\n";
    const double step = static_cast<double>(max_step) * i / 5, x = x_of(step);
    out << "<text x=\"" << x << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">" << format("%.0f", step)
        << "</text>\n";
  }
  out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
      << "\" fill=\"none\" stroke=\"black\"/>\n";
  out << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 18
      << "\" text-anchor=\"middle\">training step</text>\n";
  out << "<text transform=\"translate(20," << top + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">validation accuracy (%)</text>\n";
  for (std::size_t m = 0; m < rows.size(); ++m) {
    const char* color = colors[m % (sizeof colors / sizeof colors[0])];
    out << "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"" << color << "\"" << (m >= 6 ? " stroke-dasharray=\"6 3\"" : "")
        << " points=\"";
    for (const auto& p : rows[m].mean_curve) out << x_of(static_cast<double>(p.step)) << ',' << y_of(p.accuracy) << ' ';
    out << "\"/>\n";
    const double y = top + 10 + 20 * static_cast<double>(m);
    out << "<line x1=\"" << left + plot_w + 15 << "\" y1=\"" << y << "\" x2=\"" << left + plot_w + 40 << "\" y2=\"" << y
        << "\" stroke-width=\"2\" stroke=\"" << color << "\"" << (m >= 6 ? " stroke-dasharray=\"6 3\"" : "") << "/>\n";
    out << "<text x=\"" << left + plot_w + 46 << "\" y=\"" << y + 4 << "\">" << escape_xml(rows[m].name) << "</text>\n";
  }
  out << "</svg>\n";
}

}  // namespace fashion_mnist
