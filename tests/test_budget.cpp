// rank/budget.hpp: allocate_ranks against hand-computed allocations and a brute-force knapsack optimum.
#include <catch2/catch.hpp>

#include <lorakit/core/random.hpp>
#include <lorakit/rank/budget.hpp>

#include <cmath>
#include <functional>
#include <limits>

namespace lorakit_test_budget {

using namespace lorakit;

namespace {

using Ranks = std::map<std::string, Index>;

LayerScores layer(std::string name, std::vector<double> scores, Index max_rank = -1, Index min_rank = 0,
                  Index cost = 1) {
  return {std::move(name), std::move(scores), max_rank, min_rank, cost};
}

double total_score(const std::vector<LayerScores>& layers, const Ranks& ranks) {
  double sum = 0;
  for (const auto& l : layers)
    for (Index j = 0; j < ranks.at(l.name); ++j) sum += l.scores[static_cast<std::size_t>(j)];
  return sum;
}

double total_cost(const std::vector<LayerScores>& layers, const Ranks& ranks) {
  double sum = 0;
  for (const auto& l : layers) sum += static_cast<double>(ranks.at(l.name) * l.cost_per_rank);
  return sum;
}

}  // namespace

TEST_CASE("a rank budget keeps the highest scores over all layers", "[budget]") {
  const std::vector<LayerScores> layers{layer("a", {0.5, 0.3, 0.1}), layer("b", {0.4, 0.2}), layer("c", {0.35})};
  CHECK(allocate_ranks(layers, RankBudget::ranks(0)) == Ranks{{"a", 0}, {"b", 0}, {"c", 0}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(1)) == Ranks{{"a", 1}, {"b", 0}, {"c", 0}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(3)) == Ranks{{"a", 1}, {"b", 1}, {"c", 1}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(4)) == Ranks{{"a", 2}, {"b", 1}, {"c", 1}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(5)) == Ranks{{"a", 2}, {"b", 2}, {"c", 1}});
  // A fractional budget is rounded down; more budget than offered ranks takes everything.
  CHECK(allocate_ranks(layers, RankBudget::ranks(3.9)) == Ranks{{"a", 1}, {"b", 1}, {"c", 1}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(100)) == Ranks{{"a", 3}, {"b", 2}, {"c", 1}});
  CHECK(allocate_ranks({}, RankBudget::ranks(5)).empty());
}

TEST_CASE("ties go to the earlier layer, then the lower position", "[budget]") {
  const std::vector<LayerScores> ab{layer("a", {0.5, 0.2}), layer("b", {0.5, 0.2})};
  CHECK(allocate_ranks(ab, RankBudget::ranks(1)) == Ranks{{"a", 1}, {"b", 0}});
  CHECK(allocate_ranks(ab, RankBudget::ranks(3)) == Ranks{{"a", 2}, {"b", 1}});
  const std::vector<LayerScores> ba{layer("b", {0.5, 0.2}), layer("a", {0.5, 0.2})};
  CHECK(allocate_ranks(ba, RankBudget::ranks(1)) == Ranks{{"a", 0}, {"b", 1}});
  CHECK(allocate_ranks(ba, RankBudget::ranks(3)) == Ranks{{"a", 1}, {"b", 2}});
  // Equal scores within one layer and across layers: positions are taken in order.
  const std::vector<LayerScores> flat{layer("x", {1, 1, 1}), layer("y", {1, 1})};
  CHECK(allocate_ranks(flat, RankBudget::ranks(4)) == Ranks{{"x", 3}, {"y", 1}});
  // Equal score per parameter: the earlier layer wins even though it is more expensive.
  const std::vector<LayerScores> priced{layer("p", {0.4}, -1, 0, 4), layer("q", {0.1}, -1, 0, 1)};
  CHECK(allocate_ranks(priced, RankBudget::parameters(4)) == Ranks{{"p", 1}, {"q", 0}});
}

TEST_CASE("min_rank and max_rank bound every layer", "[budget]") {
  const std::vector<LayerScores> layers{layer("a", {0.9, 0.8, 0.7}, 1), layer("b", {0.1, 0.05, 0.01}, 2, 2)};
  // b's two ranks are reserved; the one left goes to a's best score; a is capped at 1.
  CHECK(allocate_ranks(layers, RankBudget::ranks(2)) == Ranks{{"a", 0}, {"b", 2}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(3)) == Ranks{{"a", 1}, {"b", 2}});
  CHECK(allocate_ranks(layers, RankBudget::ranks(10)) == Ranks{{"a", 1}, {"b", 2}});
  // max_rank = 0 leaves a layer out; min_rank = max_rank fixes it.
  const std::vector<LayerScores> fixed{layer("a", {0.9}, 0), layer("b", {0.2, 0.1}, 1, 1), layer("c", {0.3, 0.25})};
  CHECK(allocate_ranks(fixed, RankBudget::ranks(2)) == Ranks{{"a", 0}, {"b", 1}, {"c", 1}});
  CHECK(allocate_ranks(fixed, RankBudget::ranks(9)) == Ranks{{"a", 0}, {"b", 1}, {"c", 2}});
}

TEST_CASE("a parameter budget is filled greedily by score per parameter", "[budget]") {
  // Score per parameter: a 0.06 0.05 0.01 (cost 10), b 0.15 0.125 0.1 (cost 2), c 0.04 (cost 5).
  const std::vector<LayerScores> layers{layer("a", {0.6, 0.5, 0.1}, -1, 0, 10), layer("b", {0.3, 0.25, 0.2}, -1, 0, 2),
                                        layer("c", {0.2}, -1, 0, 5)};
  // 25: b b b (6), a (16), a's second does not fit (26 > 25) and is skipped, c fits (21).
  const Ranks at25 = allocate_ranks(layers, RankBudget::parameters(25));
  CHECK(at25 == Ranks{{"a", 1}, {"b", 3}, {"c", 1}});
  CHECK(total_score(layers, at25) == Approx(1.55));
  // The optimum at 25 is a 2 + b 2 (cost 24, score 1.65): within the documented bound OPT - max score.
  CHECK(total_score(layers, at25) >= 1.65 - 0.6);
  CHECK(allocate_ranks(layers, RankBudget::parameters(5)) == Ranks{{"a", 0}, {"b", 2}, {"c", 0}});
  CHECK(allocate_ranks(layers, RankBudget::parameters(26)) == Ranks{{"a", 2}, {"b", 3}, {"c", 0}});
  CHECK(allocate_ranks(layers, RankBudget::parameters(31)) == Ranks{{"a", 2}, {"b", 3}, {"c", 1}});
  CHECK(allocate_ranks(layers, RankBudget::parameters(1)) == Ranks{{"a", 0}, {"b", 0}, {"c", 0}});
  CHECK(allocate_ranks(layers, RankBudget::parameters(1e9)) == Ranks{{"a", 3}, {"b", 3}, {"c", 1}});
  // min ranks are charged first.
  const std::vector<LayerScores> with_min{layer("a", {0.6, 0.5}, -1, 1, 10), layer("b", {0.3, 0.25}, -1, 0, 2)};
  CHECK(allocate_ranks(with_min, RankBudget::parameters(12)) == Ranks{{"a", 1}, {"b", 1}});
}

TEST_CASE("greedy allocations against a brute-force optimum on random problems", "[budget]") {
  Rng rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const bool equal_costs = trial % 2 == 0;
    std::vector<LayerScores> layers;
    const int n_layers = 1 + static_cast<int>(rng.next_u32() % 4);
    for (int l = 0; l < n_layers; ++l) {
      std::vector<double> scores(1 + rng.next_u32() % 4);
      for (auto& s : scores) s = std::floor(rng.uniform<double>() * 8) / 8;  // coarse values: many ties
      std::sort(scores.rbegin(), scores.rend());
      const Index size = static_cast<Index>(scores.size());
      const Index min_rank = static_cast<Index>(rng.next_u32() % 2) * std::min<Index>(1, size);
      const Index cost = equal_costs ? 3 : 1 + static_cast<Index>(rng.next_u32() % 5);
      layers.push_back(layer("l" + std::to_string(l), scores, -1, min_rank, cost));
    }
    double min_cost = 0, max_score = 0;
    for (const auto& l : layers) {
      min_cost += static_cast<double>(l.min_rank * l.cost_per_rank);
      for (double s : l.scores) max_score = std::max(max_score, s);
    }
    const double P = min_cost + std::floor(rng.uniform<double>() * 20);
    // Brute force over every allocation within the bounds.
    double best = -1;
    std::vector<Index> r(layers.size());
    std::function<void(std::size_t)> walk = [&](std::size_t i) {
      if (i == layers.size()) {
        double cost = 0, score = 0;
        for (std::size_t k = 0; k < layers.size(); ++k) {
          cost += static_cast<double>(r[k] * layers[k].cost_per_rank);
          for (Index j = 0; j < r[k]; ++j) score += layers[k].scores[static_cast<std::size_t>(j)];
        }
        if (cost <= P) best = std::max(best, score);
        return;
      }
      for (r[i] = layers[i].min_rank; r[i] <= static_cast<Index>(layers[i].scores.size()); ++r[i]) walk(i + 1);
    };
    walk(0);
    const Ranks got = allocate_ranks(layers, RankBudget::parameters(P));
    INFO("trial " << trial);
    CHECK(total_cost(layers, got) <= P);
    for (const auto& l : layers) CHECK(got.at(l.name) >= l.min_rank);
    if (equal_costs) {
      CHECK(total_score(layers, got) == Approx(best).margin(1e-12));
      // Equal costs: the parameter rule is the rank rule with floor(P / c) ranks.
      CHECK(got == allocate_ranks(layers, RankBudget::ranks(std::floor(P / 3))));
    } else {
      CHECK(total_score(layers, got) >= best - max_score - 1e-12);
    }
  }
}

TEST_CASE("allocate_ranks rejects bad budgets and bad layers", "[budget]") {
  CHECK_THROWS_AS(RankBudget::ranks(-1), ValueError);
  CHECK_THROWS_AS(RankBudget::parameters(-0.5), ValueError);
  CHECK_THROWS_AS(RankBudget::ranks(std::nan("")), ValueError);
  CHECK_THROWS_AS(RankBudget::parameters(std::numeric_limits<double>::infinity()), ValueError);
  CHECK_THROWS_WITH(RankBudget::ranks(-2), "RankBudget::ranks: total is -2, expected a finite value >= 0");

  const auto budget = RankBudget::ranks(4);
  CHECK_THROWS_WITH(allocate_ranks({layer("a", {0.5}), layer("q", {0.2, 0.3})}, budget),
                    "allocate_ranks: layers[1] ('q').scores[1] = 0.29999999999999999 exceeds scores[0] = "
                    "0.20000000000000001, expected scores in descending order");
  CHECK_THROWS_AS(allocate_ranks({layer("a", {0.5, std::nan("")})}, budget), ValueError);
  CHECK_THROWS_WITH(allocate_ranks({layer("a", {std::nan(""), 0.1})}, budget),
                    "allocate_ranks: layers[0] ('a').scores[0] is nan, expected a finite value >= 0");
  CHECK_THROWS_AS(allocate_ranks({layer("a", {-0.1})}, budget), ValueError);
  CHECK_THROWS_WITH(allocate_ranks({layer("a", {0.5, 0.4}, 1, 2)}, budget),
                    "allocate_ranks: layers[0] ('a').min_rank is 2, expected 0 <= min_rank <= max_rank = 1");
  CHECK_THROWS_AS(allocate_ranks({layer("a", {0.5}, -1, -1)}, budget), ValueError);
  CHECK_THROWS_AS(allocate_ranks({layer("a", {0.5}, 2)}, budget), ValueError);
  CHECK_THROWS_AS(allocate_ranks({layer("a", {0.5}, -2)}, budget), ValueError);
  CHECK_THROWS_AS(allocate_ranks({layer("a", {0.5}, -1, 0, 0)}, budget), ValueError);
  CHECK_THROWS_WITH(allocate_ranks({layer("a", {0.5}), layer("a", {0.4})}, budget),
                    "allocate_ranks: layers[1] has the name 'a' of an earlier layer, expected distinct names");
  // A budget below the minimum ranks.
  const std::vector<LayerScores> mins{layer("a", {0.5, 0.4}, -1, 2, 3), layer("b", {0.3, 0.2}, -1, 1, 5)};
  CHECK_THROWS_WITH(allocate_ranks(mins, RankBudget::ranks(2.5)),
                    "allocate_ranks: the budget of 2 ranks is below the 3 that the layers' min_rank require");
  CHECK_THROWS_WITH(allocate_ranks(mins, RankBudget::parameters(10)),
                    "allocate_ranks: the budget of 10 parameters is below the 11 that the layers' min_rank require");
  CHECK(allocate_ranks(mins, RankBudget::parameters(11)) == Ranks{{"a", 2}, {"b", 1}});
}

}  // namespace lorakit_test_budget
