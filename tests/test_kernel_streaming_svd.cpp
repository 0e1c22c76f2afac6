// kernel/streaming_svd.hpp against the dense PCA (BDCSVD of the stacked, centered data), in float and double.
#include <catch2/catch.hpp>

#include "kernel_test_support.hpp"

#include <lorakit/kernel/streaming_svd.hpp>

#include <cmath>
#include <limits>
#include <vector>

namespace lorakit_test_kernel_streaming_svd {

using namespace lorakit;
using namespace lorakit::testing;

namespace {

/// Batches of rows x_i = mean + z_i G, z_i Gaussian in `rank` dimensions: centered data of rank `rank`.
std::vector<Matrix<double>> low_rank_batches(const std::vector<Index>& sizes, Index features, Index rank,
                                             std::uint64_t seed) {
  const Matrix<double> mix = random_matrix<double>(rank, features, seed);
  const Eigen::RowVectorXd mean = 3.0 * random_matrix<double>(1, features, seed + 1);
  std::vector<Matrix<double>> batches;
  for (Index b : sizes) {
    Matrix<double> x = random_matrix<double>(b, rank, seed + 2 + batches.size()) * mix;
    x.rowwise() += mean;
    batches.push_back(x);
  }
  return batches;
}

Matrix<double> stack(const std::vector<Matrix<double>>& batches) {
  Index rows = 0;
  for (const auto& b : batches) rows += b.rows();
  Matrix<double> all(rows, batches.front().cols());
  Index at = 0;
  for (const auto& b : batches) {
    all.middleRows(at, b.rows()) = b;
    at += b.rows();
  }
  return all;
}

template <class T>
double tolerance_of() {
  return std::is_same_v<T, float> ? 2e-4 : 1e-10;
}

/// The stream's state equals the dense PCA of `all` in its top `exact` directions (those with distinct, non-zero
/// singular values), and its remaining singular values equal the reference's.
template <class T>
void check_against_dense(const StreamingSvd<T>& stream, const Matrix<double>& data, bool center, Index exact) {
  const Index k = stream.num_components();
  const Matrix<double> all = data.cast<T>().template cast<double>();  // the samples the stream saw
  const Eigen::RowVectorXd mean =
      center ? Eigen::RowVectorXd(all.colwise().mean()) : Eigen::RowVectorXd::Zero(all.cols());
  const Eigen::MatrixXd centered = all.rowwise() - mean;
  Svd<double> reference = reference_svd(centered, k);
  detail::normalize_signs(reference.V);  // components follow the convention on V
  const double tol = tolerance_of<T>();
  const double scale = reference.S(0);

  CHECK(stream.samples_seen() == all.rows());
  CHECK((stream.mean().transpose() - mean).cwiseAbs().maxCoeff() < 1e-12 * (1 + mean.cwiseAbs().maxCoeff()));
  CHECK(std::abs(stream.total_variance() - centered.squaredNorm()) < 1e-10 * centered.squaredNorm());
  REQUIRE(stream.singular_values().size() == k);
  REQUIRE(stream.components().rows() == k);
  REQUIRE(stream.components().cols() == all.cols());
  CHECK(stream.components().allFinite());
  CHECK((stream.singular_values().template cast<double>() - reference.S).cwiseAbs().maxCoeff() < tol * scale);
  CHECK(orthonormality_error(stream.components().transpose()) < (std::is_same_v<T, float> ? 1e-5 : 1e-12));
  // Components: rows of V^T with the same sign convention (largest-magnitude entry positive).
  const Eigen::MatrixXd got = stream.components().template cast<double>().transpose();
  for (Index j = 0; j < exact; ++j) {
    INFO("component " << j);
    CHECK((got.col(j) - reference.V.col(j)).cwiseAbs().maxCoeff() < tol * 10);
  }
  const Eigen::VectorXd ratio = stream.explained_variance_ratio().template cast<double>();
  const Eigen::VectorXd expected = reference.S.array().square() / centered.squaredNorm();
  CHECK((ratio - expected).cwiseAbs().maxCoeff() < tol);
}

template <class T>
StreamingSvd<T> run_stream(const std::vector<Matrix<double>>& batches, std::size_t from, std::size_t to, Index k,
                           bool center) {
  StreamingSvd<T> stream(batches.front().cols(), k, {center});
  for (std::size_t i = from; i < to; ++i) stream.update(batches[i].cast<T>());
  return stream;
}

}  // namespace

TEMPLATE_TEST_CASE("StreamingSvd over many batches of rank-<=k data equals the dense PCA", "[kernel][streaming]",
                   float, double) {
  using T = TestType;
  const Index features = 60, k = 6;
  // Batch sizes include batches with fewer rows than components (and single rows).
  const std::vector<Index> sizes = {25, 3, 40, 1, 17, 2, 30, 9, 25, 4, 12, 33};
  for (Index rank : {Index(4), Index(6)}) {
    INFO("rank " << rank);
    const auto batches = low_rank_batches(sizes, features, rank, 100 + static_cast<std::uint64_t>(rank));
    for (bool center : {true, false}) {
      INFO("center " << center);
      const StreamingSvd<T> stream = run_stream<T>(batches, 0, batches.size(), k, center);
      // Uncentered, the mean adds a direction: rank + 1 > k is no longer exact, so only check centered there.
      if (!center && rank == k) continue;
      check_against_dense(stream, stack(batches), center, rank);
    }
  }
}

TEMPLATE_TEST_CASE("StreamingSvd with batches taller than the features (the features x features Gram route)",
                   "[kernel][streaming]", float, double) {
  using T = TestType;
  const Index features = 12, k = 4;
  // k + rows > features in every batch but the last: the update decomposes M^T M instead of M M^T.
  const auto batches = low_rank_batches({40, 25, 9, 3}, features, 3, 61);
  for (bool center : {true, false}) {
    INFO("center " << center);
    check_against_dense(run_stream<T>(batches, 0, batches.size(), k, center), stack(batches), center, 3);
  }
}

TEMPLATE_TEST_CASE("StreamingSvd with batches much larger than k (subspace iteration on the Gram matrix)",
                   "[kernel][streaming]", float, double) {
  using T = TestType;
  const Index features = 150, k = 4;
  // k + rows >= 4 (2k + 16): the update takes the top-k of M M^T by subspace iteration, exact at rank <= k.
  const auto batches = low_rank_batches({100, 90, 120, 5}, features, 4, 83);
  check_against_dense(run_stream<T>(batches, 0, batches.size(), k, true), stack(batches), true, 4);
  // One full-rank batch with a decaying spectrum: the top-k of that batch, as the dense PCA gives it.
  Matrix<double> x = random_matrix<double>(110, features, 84);
  for (Index j = 0; j < features; ++j) x.col(j) *= std::pow(0.9, static_cast<double>(j));
  check_against_dense(run_stream<T>({x}, 0, 1, k, true), x, true, k);
}

TEMPLATE_TEST_CASE("StreamingSvd::merge equals one stream over both", "[kernel][streaming]", float, double) {
  using T = TestType;
  const Index features = 45, k = 5;
  // Centered rank 4: the uncentered data (the mean adds one direction) has rank 5 = k, so both modes are exact.
  const auto batches = low_rank_batches({20, 7, 31, 2, 15, 26, 11, 8}, features, 4, 7);
  const Matrix<double> all = stack(batches);
  for (bool center : {true, false}) {
    INFO("center " << center);
    StreamingSvd<T> first = run_stream<T>(batches, 0, 3, k, center);
    const StreamingSvd<T> second = run_stream<T>(batches, 3, batches.size(), k, center);
    const StreamingSvd<T> single = run_stream<T>(batches, 0, batches.size(), k, center);
    first.merge(second);
    CHECK(first.samples_seen() == single.samples_seen());
    const double tol = tolerance_of<T>();
    CHECK((first.singular_values() - single.singular_values()).cwiseAbs().maxCoeff() <
          tol * single.singular_values()(0));
    const Index exact = center ? 4 : 5;  // directions beyond the data's rank are an arbitrary completion
    CHECK(subspace_distance(first.components().topRows(exact).transpose(),
                            single.components().topRows(exact).transpose()) < tol * 10);
    CHECK(std::abs(first.total_variance() - single.total_variance()) < 1e-10 * single.total_variance());
    CHECK((first.mean() - single.mean()).cwiseAbs().maxCoeff() < 1e-12 * (1 + single.mean().cwiseAbs().maxCoeff()));
    check_against_dense(first, all, center, exact);
  }
}

TEMPLATE_TEST_CASE("StreamingSvd::merge with empty streams and with itself", "[kernel][streaming]", float, double) {
  using T = TestType;
  const auto batches = low_rank_batches({10, 12}, 20, 3, 9);
  StreamingSvd<T> empty(20, 4);
  StreamingSvd<T> full = run_stream<T>(batches, 0, 2, 4, true);
  const Vector<T> before = full.singular_values();
  full.merge(empty);
  CHECK(full.singular_values() == before);
  empty.merge(full);
  CHECK(empty.samples_seen() == 22);
  CHECK(empty.components() == full.components());
  // A stream merged with itself: every sample twice; same mean and directions, singular values times sqrt(2).
  StreamingSvd<T> twice = full;
  twice.merge(twice);
  CHECK(twice.samples_seen() == 44);
  const double tol = tolerance_of<T>();
  CHECK((twice.singular_values().template cast<double>() - std::sqrt(2.0) * before.template cast<double>())
            .cwiseAbs()
            .maxCoeff() < tol * before(0));
  CHECK(subspace_distance(twice.components().topRows(3).transpose(), full.components().topRows(3).transpose()) <
        tol * 10);
}

TEMPLATE_TEST_CASE("StreamingSvd of full-rank data keeps a valid top-k estimate", "[kernel][streaming]", float,
                   double) {
  using T = TestType;
  const Index features = 40, k = 4;
  std::vector<Matrix<double>> batches;
  for (std::uint64_t i = 0; i < 6; ++i) batches.push_back(random_matrix<double>(30, features, 50 + i));
  // One batch: the exact top-k of that batch.
  check_against_dense(run_stream<T>(batches, 0, 1, k, true), batches[0], true, k);
  // Many: an approximation whose singular values cannot exceed the exact ones (it is a projection of the data).
  const StreamingSvd<T> stream = run_stream<T>(batches, 0, batches.size(), k, true);
  const Matrix<double> all = stack(batches);
  const Eigen::MatrixXd centered = all.rowwise() - all.colwise().mean();
  const Svd<double> reference = reference_svd(centered, k);
  for (Index j = 0; j < k; ++j) {
    CHECK(stream.singular_values()(j) <= reference.S(j) * (1 + tolerance_of<T>()));
    CHECK(stream.singular_values()(j) >= 0.7 * reference.S(j));
  }
  CHECK(orthonormality_error(stream.components().transpose()) < (std::is_same_v<T, float> ? 1e-5 : 1e-12));
}

TEMPLATE_TEST_CASE("StreamingSvd tolerates zero and rank-deficient batches", "[kernel][streaming]", float, double) {
  using T = TestType;
  const Index features = 30, k = 5;
  StreamingSvd<T> stream(features, k);
  CHECK(stream.components() == Matrix<T>::Identity(k, features));  // before any sample
  CHECK(stream.explained_variance_ratio().isZero(0));
  stream.update(Matrix<T>::Zero(8, features));
  stream.update(Matrix<T>::Constant(3, features, T(2)));  // constant rows: zero after centering
  CHECK(stream.singular_values().allFinite());
  CHECK(stream.components().allFinite());
  CHECK(orthonormality_error(stream.components().transpose()) < 1e-5);
  CHECK(stream.explained_variance_ratio().allFinite());
  // Zero batch then rank-2 data: the dense PCA of everything, with k - 2 zero singular values.
  std::vector<Matrix<double>> batches = {Matrix<double>::Zero(6, features)};
  for (const auto& b : low_rank_batches({9, 1, 14}, features, 2, 21)) batches.push_back(b);
  check_against_dense(run_stream<T>(batches, 0, batches.size(), k, true), stack(batches), true, 2);
}

TEMPLATE_TEST_CASE("StreamingSvd rejects bad arguments and stays unchanged", "[kernel][streaming]", float, double) {
  using T = TestType;
  CHECK_THROWS_WITH(StreamingSvd<T>(10, 0),
                    "StreamingSvd::StreamingSvd: components is 0, expected 1 <= components <= features = 10");
  CHECK_THROWS_AS(StreamingSvd<T>(10, 11), ValueError);
  CHECK_THROWS_AS(StreamingSvd<T>(0, 1), ValueError);
  StreamingSvd<T> stream(10, 3);
  stream.update(random_matrix<T>(5, 10, 1));
  const StreamingSvd<T> saved = stream;
  CHECK_THROWS_WITH(stream.update(Matrix<T>(0, 10)),
                    "StreamingSvd::update: batch has 0 rows, expected at least one sample");
  CHECK_THROWS_WITH(stream.update(random_matrix<T>(4, 9, 2)),
                    "StreamingSvd::update: batch has 9 columns, expected features = 10");
  Matrix<T> bad = random_matrix<T>(4, 10, 3);
  bad(2, 5) = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_WITH(stream.update(bad), Catch::Contains("batch[2, 5] is nan"));
  bad(2, 5) = -std::numeric_limits<T>::infinity();
  CHECK_THROWS_AS(stream.update(bad), ValueError);
  CHECK_THROWS_AS(stream.merge(StreamingSvd<T>(11, 3)), ShapeError);
  CHECK_THROWS_AS(stream.merge(StreamingSvd<T>(10, 2)), ShapeError);
  CHECK_THROWS_AS(stream.merge(StreamingSvd<T>(10, 3, {false})), ValueError);
  CHECK(stream.samples_seen() == saved.samples_seen());
  CHECK(stream.mean() == saved.mean());
  CHECK(stream.components() == saved.components());
  CHECK(stream.singular_values() == saved.singular_values());
}

}  // namespace lorakit_test_kernel_streaming_svd
