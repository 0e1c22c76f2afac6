// Streaming (incremental) SVD / PCA over batches of rows with a mergeable state: what EVA runs over the
// minibatches of a layer's input activations to find their top right-singular vectors.
#pragma once

#include "lorakit/core/error.hpp"
#include "lorakit/core/types.hpp"
#include "lorakit/kernel/randomized_svd.hpp"
#include "lorakit/kernel/svd.hpp"
#include "lorakit/kernel/symmetric_products.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <utility>

namespace lorakit {

/// Settings of `StreamingSvd`.
struct StreamingSvdOptions {
  /// Subtract the running mean (PCA). Off: the SVD of the raw rows.
  bool center = true;
};

/// Everything a `StreamingSvd` keeps between batches, as plain values: what a checkpoint file or another process
/// receives (io/state.hpp), and what `StreamingSvd::from_state` rebuilds the object from.
template <class T>
struct StreamingSvdState {
  Index features = 0;
  Index components = 0;
  bool center = true;
  Index samples = 0;            ///< N
  Eigen::VectorXd mean;         ///< \f$\mu\f$ [features]
  double total_variance = 0;    ///< \f$\tau\f$
  Vector<T> singular_values;    ///< S [components]
  Matrix<T> directions;         ///< V [components x features]
};

/// Incremental PCA over batches of rows (samples), with a state that two streams can merge.
///
/// **State.** After N samples x_1..x_N (rows of [features] each): their mean \f$\mu\f$ (in double), the total
/// variance \f$\tau = \sum_i \|x_i - \mu\|^2\f$ (in double), and the top-k right singular pairs
/// \f$(S, V)\f$ of the centered data \f$X - \mathbf{1}\mu^T\f$, V stored as k orthonormal rows (`components()`).
/// Without centering, \f$\mu\f$ is 0 throughout.
///
/// **Update** (Ross, Lim, Lin, Yang, "Incremental learning for robust visual tracking", IJCV 2008, with the
/// mean-correction row as in scikit-learn's `IncrementalPCA`). A batch Y of b rows with mean \f$\mu_Y\f$ is
/// combined as the stacked matrix
/// \f[ M = \begin{bmatrix} \mathrm{diag}(S) V \\ Y - \mathbf{1}\mu_Y^T \\ \sqrt{N b/(N + b)}\,(\mu - \mu_Y)^T \end{bmatrix}, \f]
/// whose Gram matrix \f$M^T M\f$ equals the scatter of all N + b samples about their joint mean when the old
/// samples are exactly represented by (S, V). The top-k right singular pairs of M come from the other, small Gram
/// matrix \f$G = M M^T\f$ [(k + b) x (k + b)], formed in double (`gram_of_rows`); its top-k
/// eigenvectors \f$U_k\f$ (a randomized SVD of G when k is small next to k + b, see `top_eigenvectors`, else
/// `SelfAdjointEigenSolver`) give the subspace
/// \f$Q = \mathrm{orth}(M^T U_k)\f$ [f x k], and a Rayleigh-Ritz step, the exact SVD of the [(k + b) x k] matrix
/// \f$M Q = \hat U \Sigma \hat W^T\f$, gives \f$S' = \Sigma\f$ and \f$V' = (Q \hat W)^T\f$.
/// The result is the top-k SVD of M (to the randomized SVD's accuracy where it is used): exact for the whole
/// stream when the centered data has rank <= k, and the standard incremental-PCA approximation otherwise.
///
/// **Accuracy.** G squares M's condition number, which is why it is kept in double whatever T is: the subspace is
/// off by about \f$\epsilon_{64} \sigma_1^2 / (\sigma_k^2 - \sigma_{k+1}^2)\f$, far below float's resolution for
/// any usable gap; the singular values come from the Rayleigh-Ritz step (norms of M's images), so small and zero
/// ones are accurate too, not square roots of rounding errors.
///
/// **Merge.** Another stream (N', \f$\mu'\f$, S', V') enters as the rows \f$\mathrm{diag}(S') V'\f$ and the
/// correction \f$\sqrt{N N'/(N + N')}\,(\mu - \mu')^T\f$, the same update; \f$\tau\f$ adds the two totals and
/// \f$N N'/(N + N') \|\mu - \mu'\|^2\f$.
///
/// When k + b exceeds f, the f x f Gram matrix \f$M^T M\f$ is decomposed instead, and its top-k eigenvectors are Q.
///
/// **Cost** per batch of b rows, with m = min(k + b, f): O(f (k + b) m) for the Gram matrix (the only large
/// product), O(m^2 k) for its top eigenvectors (O(m^3) when k is not small next to m), O(f (k + b) k) for the
/// rest; memory O((k + b) f), whatever the number of batches. M is built once per update, in double, from the
/// batch (centered there) and the state. Batches may have fewer rows than k, and rank-deficient or zero batches
/// are fine: the components then include an orthonormal completion with zero singular values.
/// Before the first sample the components are the first k unit vectors, with zero singular values.
///
/// Signs: in every component, the entry of largest magnitude is positive.
template <class T>
class StreamingSvd {
  LORAKIT_STATIC_ASSERT_SCALAR(T);

 public:
  /// Errors: features < 1, components outside [1, features] (ValueError).
  StreamingSvd(Index features, Index components, const StreamingSvdOptions& options = {})
      : features_(features), k_(components), options_(options) {
    constexpr const char* where = "StreamingSvd::StreamingSvd";
    if (features < 1) detail::fail<ValueError>(where, "features is ", features, ", expected >= 1");
    if (components < 1 || components > features) {
      detail::fail<ValueError>(where, "components is ", components, ", expected 1 <= components <= features = ",
                               features);
    }
    mean_ = Eigen::VectorXd::Zero(features);
    singular_values_ = Vector<T>::Zero(components);
    components_ = Matrix<T>::Identity(components, features);
  }

  /// Adds a batch of samples (rows). Errors: 0 rows, columns != features (ShapeError); NaN or Inf (ValueError).
  /// On an error the state is unchanged.
  void update(const Eigen::Ref<const Matrix<T>>& batch) {
    constexpr const char* where = "StreamingSvd::update";
    if (batch.rows() == 0) detail::fail<ShapeError>(where, "batch has 0 rows, expected at least one sample");
    detail::check_cols(where, "batch", batch.cols(), features_, "features");
    detail::check_finite(where, "batch", batch);

    const Index b = batch.rows();
    const bool correct = options_.center && samples_ > 0;
    WideMatrix stacked = stack_state(b + (correct ? 1 : 0));
    auto rows = stacked.middleRows(k_, b);
    rows = batch.template cast<double>();
    Eigen::VectorXd mean = Eigen::VectorXd::Zero(features_);
    double total = total_;
    if (options_.center) {
      for (Index i = 0; i < b; ++i) mean += rows.row(i).transpose();  // contiguous rows: one vectorized pass
      mean /= static_cast<double>(b);
      rows.rowwise() -= mean.transpose();
      if (correct) {
        const double n = static_cast<double>(samples_), nb = static_cast<double>(b);
        const Eigen::VectorXd shift = mean_ - mean;
        stacked.row(k_ + b) = std::sqrt(n * nb / (n + nb)) * shift.transpose();
        total += n * nb / (n + nb) * shift.squaredNorm();
        mean = (n * mean_ + nb * mean) / (n + nb);
      }
    }
    total += rows.squaredNorm();
    absorb(stacked);  // may throw (allocation): the state below is only committed after it
    mean_.swap(mean);
    total_ = total;
    samples_ += b;
  }

  /// Combines the state of another stream over the same features: afterwards this object describes the union
  /// of both streams (exactly, when the union's centered data has rank <= components).
  /// Errors: different features or components (ShapeError), different centering (ValueError).
  void merge(const StreamingSvd& other) {
    constexpr const char* where = "StreamingSvd::merge";
    if (other.features_ != features_) {
      detail::fail<ShapeError>(where, "other has ", other.features_, " features, expected features = ", features_);
    }
    if (other.k_ != k_) {
      detail::fail<ShapeError>(where, "other has ", other.k_, " components, expected components = ", k_);
    }
    if (other.options_.center != options_.center) {
      detail::fail<ValueError>(where, "other has center = ", other.options_.center, ", expected ", options_.center);
    }
    if (&other == this) {
      StreamingSvd copy(other);
      merge(copy);
      return;
    }
    if (other.samples_ == 0) return;
    if (samples_ == 0) {
      *this = other;
      return;
    }
    const double n = static_cast<double>(samples_), m = static_cast<double>(other.samples_);
    const bool correct = options_.center;
    WideMatrix stacked = stack_state(k_ + (correct ? 1 : 0));
    stacked.middleRows(k_, k_) =
        (other.singular_values_.asDiagonal() * other.components_).template cast<double>();
    double total = total_ + other.total_;
    Eigen::VectorXd mean = mean_;
    if (correct) {
      const Eigen::VectorXd shift = mean_ - other.mean_;
      stacked.row(2 * k_) = std::sqrt(n * m / (n + m)) * shift.transpose();
      total += n * m / (n + m) * shift.squaredNorm();
      mean = (n * mean_ + m * other.mean_) / (n + m);
    }
    absorb(stacked);
    mean_.swap(mean);
    total_ = total;
    samples_ += other.samples_;
  }

  /// The top-k principal directions, [k x features], orthonormal rows, by descending singular value.
  const Matrix<T>& components() const { return components_; }
  /// S [k], descending, >= 0: singular values of the centered data seen so far.
  const Vector<T>& singular_values() const { return singular_values_; }
  /// \f$S_j^2 / \tau\f$: the share of the total variance that each component explains (0 when \f$\tau = 0\f$).
  Vector<T> explained_variance_ratio() const {
    if (!(total_ > 0)) return Vector<T>::Zero(k_);
    return (singular_values_.template cast<double>().array().square() / total_).template cast<T>().matrix();
  }
  /// N, the number of samples seen (rows of every batch, plus those of merged streams).
  Index samples_seen() const { return samples_; }
  /// \f$\mu\f$ [features], the running mean (zero without centering), in double.
  const Eigen::VectorXd& mean() const { return mean_; }
  /// \f$\tau = \sum_i \|x_i - \mu\|^2\f$ over every sample seen, in double.
  double total_variance() const { return total_; }
  Index features() const { return features_; }
  Index num_components() const { return k_; }
  const StreamingSvdOptions& options() const { return options_; }

  /// The state, copied (exact: no arithmetic).
  StreamingSvdState<T> state() const {
    return {features_, k_, options_.center, samples_, mean_, total_, singular_values_, components_};
  }

  /// The object whose `state()` is `state`, bit for bit. Errors: features or components out of range (ValueError),
  /// vectors or matrices of other sizes (ShapeError), a negative count, variance or singular value, or a non-finite
  /// entry (ValueError).
  static StreamingSvd from_state(StreamingSvdState<T> state) {
    constexpr const char* where = "StreamingSvd::from_state";
    StreamingSvd svd(state.features, state.components, StreamingSvdOptions{state.center});
    detail::check_rows(where, "state.mean", state.mean.size(), state.features, "state.features");
    detail::check_rows(where, "state.singular_values", state.singular_values.size(), state.components,
                       "state.components");
    detail::check_shape(where, "state.directions", state.directions.rows(), state.directions.cols(), state.components,
                        state.features);
    if (state.samples < 0) detail::fail<ValueError>(where, "state.samples is ", state.samples, ", expected >= 0");
    if (!(state.total_variance >= 0) || !std::isfinite(state.total_variance)) {
      detail::fail<ValueError>(where, "state.total_variance is ", state.total_variance, ", expected finite and >= 0");
    }
    detail::check_finite(where, "state.mean", state.mean);
    detail::check_finite(where, "state.singular_values", state.singular_values);
    detail::check_finite(where, "state.directions", state.directions);
    if ((state.singular_values.array() < T(0)).any()) {
      detail::fail<ValueError>(where, "state.singular_values has a negative entry, expected >= 0");
    }
    svd.samples_ = state.samples;
    svd.mean_ = std::move(state.mean);
    svd.total_ = state.total_variance;
    svd.singular_values_ = std::move(state.singular_values);
    svd.components_ = std::move(state.directions);
    return svd;
  }

 private:
  /// M in double, row-major: the rows of one update.
  using WideMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// A [(k + extra_rows) x features] matrix whose first k rows are diag(S) V; the caller fills the rest.
  WideMatrix stack_state(Index extra_rows) const {
    WideMatrix stacked(k_ + extra_rows, features_);
    stacked.topRows(k_) = (singular_values_.asDiagonal() * components_).template cast<double>();
    return stacked;
  }

  /// Replaces (S, V) by the top-k SVD of M = `stacked`. Only writes the members once everything is computed.
  void absorb(const WideMatrix& stacked) {
    const Index m = stacked.rows();
    // Q: an orthonormal basis of M's top-k right singular subspace, from the smaller of its two Gram matrices.
    Eigen::MatrixXd basis, gram;
    if (m <= features_) {
      gram_of_rows(stacked, gram);  // M M^T
      // M^T U_k, largest first: the QR then orthonormalizes the well-determined directions before those of
      // (near-)zero eigenvalues, whose images are rounding noise.
      basis.noalias() = stacked.transpose() * top_eigenvectors(gram, k_);
      detail::orthonormalize_columns<double>(basis);
    } else {
      gram_of_rows(stacked.transpose(), gram);  // M^T M
      basis = top_eigenvectors(gram, k_);
    }
    // Rayleigh-Ritz: the exact SVD of M restricted to Q orders the directions and gives the singular values.
    const Eigen::MatrixXd restricted = stacked * basis;  // [m x k]
    const Eigen::JacobiSVD<Eigen::MatrixXd> small(restricted, Eigen::ComputeThinV);
    Eigen::MatrixXd directions = basis * small.matrixV();
    detail::normalize_signs(directions);

    Vector<T> values = small.singularValues().template cast<T>();
    Matrix<T> components = directions.transpose().template cast<T>();
    singular_values_.swap(values);
    components_.swap(components);
  }

  /// The k eigenvectors of the symmetric positive semi-definite G [m x m] (full) with the largest eigenvalues,
  /// largest first, as the columns of an [m x k] matrix. When l = 2k + 16 is at most m / 2, they are G's top-k
  /// left singular vectors by `randomized_svd` with k + 16 oversamples and 4 power iterations (deterministic
  /// seed): the subspace is then off by about \f$(\lambda_{l+1} / \lambda_k)^{9}\f$ =
  /// \f$(\sigma_{l+1} / \sigma_k)^{18}\f$ in M's singular values, and exact when G has rank <= l (data of rank
  /// <= k included), for O(m^2 l) per power iteration instead of the O(m^3) of the dense solver (Eigen's
  /// SelfAdjointEigenSolver), which is used otherwise.
  static Eigen::MatrixXd top_eigenvectors(const Eigen::MatrixXd& gram, Index k) {
    const Index m = gram.rows(), l = 2 * k + 16;
    if (2 * l > m) {
      const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(gram);  // ascending eigenvalues
      return eigen.eigenvectors().rightCols(k).rowwise().reverse();
    }
    // G is symmetric, so its column-major storage is also its row-major storage.
    const Eigen::Map<const Matrix<double>> symmetric(gram.data(), m, m);
    return randomized_svd<double>(symmetric, k, RsvdOptions{k + 16, 4, 0x5eed}).U;
  }

  Index features_;
  Index k_;
  StreamingSvdOptions options_;
  Index samples_ = 0;
  Eigen::VectorXd mean_;
  double total_ = 0;
  Vector<T> singular_values_;
  Matrix<T> components_;
};

}  // namespace lorakit
