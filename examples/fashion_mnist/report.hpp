// The study's outputs: the markdown table, the CSV of every validation curve, and an SVG plot of the curves.
#pragma once

#include "training.hpp"

#include <string>
#include <vector>

namespace fashion_mnist {

/// One training run as the report sees it.
struct RunRecord {
  std::string method;
  double lr = 0;
  std::uint64_t seed = 0;
  bool selected = false;  // a run at the method's selected learning rate
  Curve curve;
};

/// One row of the table: a method at its selected learning rate, over the seeds.
struct MethodSummary {
  std::string name;
  double lr = 0;
  Index trainable = 0;
  std::vector<double> test, validation, init_seconds, train_seconds, steps_to_95;
  Curve mean_curve;  // validation accuracy averaged over the seeds
  std::string note;
};

/// The first step at which a curve reaches 95% of its final value.
long long steps_to_95(const Curve& curve);

/// Mean and sample standard deviation.
double mean(const std::vector<double>& values);
double stddev(const std::vector<double>& values);

/// The markdown table of the methods.
std::string markdown_table(const std::vector<MethodSummary>& rows, int seeds);

/// method,lr,seed,selected,step,validation_accuracy for every run.
void write_curves_csv(const std::string& path, const std::vector<RunRecord>& runs);

/// Validation accuracy against steps, one line per method (mean over the seeds at the selected learning rate).
void write_curves_svg(const std::string& path, const std::vector<MethodSummary>& rows, const std::string& title);

}  // namespace fashion_mnist
