"""Performance proxies' measures: cheap scores that predict how well an expert will transfer to a task (higher is
better), as plain functions of arrays.

Each reads an expert's features of the task's images (or its upstream logits) and the task labels and returns a
number; proxy_registry.py names them, gives them one interface (`Proxy.score(ProxyInputs)`) and parses spec
strings, and the selector uses them through it. An input holding NaN or Inf raises NonFiniteInputError naming the
values: a broken expert's features would otherwise still get a finite kNN score.

| function              | proxy name        | paper                                    | reads                         |
|-----------------------|-------------------|------------------------------------------|-------------------------------|
| knn_accuracy          | knn               | Puigcerver et al. 2021 (the paper's)     | features, labels              |
| linear_probe_accuracy | linear_probe      | (standard frozen-feature logistic probe) | features, labels              |
| logme                 | logme             | You et al. 2021, Algorithm 1             | features, labels              |
| h_score               | hscore            | Bao et al. 2019, Definition 2            | features, labels              |
| nce                   | nce               | Tran et al. 2019, Eq. 2                  | source labels, labels         |
| leep                  | leep              | Nguyen et al. 2020, Eq. 1-2              | expert logits, labels         |
| domain_prediction     | domain_prediction | paper.md (label-free)                    | generalist logits, label ids  |

`fit_probe` is the one frozen-feature probe estimator (scikit-learn), shared with transfer/linear_head.py.
"""

import functools

import numpy as np

from expert_hub.selection import knn as knn_lib


# What every measure here raises for an input holding NaN or Inf (a ValueError; knn.check_finite).
NonFiniteInputError = knn_lib.NonFiniteInputError


def _as_features_and_labels(features, labels):
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  if features.ndim != 2:
    raise ValueError(f"features have shape {features.shape}; expected [num_examples, dim].")
  if labels.shape != (features.shape[0],):
    raise ValueError(f"labels have shape {labels.shape}; expected ({features.shape[0]},) to match features.")
  if features.shape[0] < 2:
    raise ValueError(f"{features.shape[0]} example(s); a proxy needs at least 2.")
  knn_lib.check_finite(features, "features")
  return features, labels


def _softmax(logits):
  logits = np.asarray(logits)
  if not np.issubdtype(logits.dtype, np.floating):
    logits = logits.astype(np.float64)
  knn_lib.check_finite(logits, "logits")
  z = np.exp(logits - logits.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- kNN
KNN_METRICS = ("cosine", "euclidean")


def knn_accuracy(features, labels, k=1, metric="cosine", backend="auto"):
  """Leave-one-out k-NN accuracy (Puigcerver et al. 2021's proxy): each example is classified by its k nearest
  *other* examples (majority vote, ties to the nearest tied neighbour).

  metric "cosine" goes through knn.leave_one_out_accuracy (exact or ScaNN by `backend`); "euclidean" is exact
  numpy search on squared L2 distances with knn.vote. Returns (accuracy, backend used).
  """
  if metric not in KNN_METRICS:
    raise ValueError(f"kNN metric {metric!r}; expected one of {KNN_METRICS}.")
  if metric == "cosine":  # knn.leave_one_out_accuracy checks its features are finite
    return knn_lib.leave_one_out_accuracy(features, labels, k, backend)
  features, labels = _as_features_and_labels(features, labels)
  if not 1 <= k < features.shape[0]:
    raise ValueError(f"k={k}; expected 1 <= k < num_examples ({features.shape[0]}).")
  sq = (features ** 2).sum(axis=1)
  dist = sq[:, None] + sq[None, :] - 2.0 * features @ features.T
  np.fill_diagonal(dist, np.inf)
  neighbours = np.argsort(dist, axis=1, kind="stable")[:, :k]
  return float(np.mean(knn_lib.vote(labels[neighbours]) == labels)), "exact"


# ---------------------------------------------------------------------------------------------- linear probe
# lbfgs iterations a probe may take. On the main job's 14 modules x 4 tasks, fits needed up to 239 iterations:
# the former caps stopped 31 of 56 first CV folds (100) and 5 of 56 fine-tuning heads (200) short; 1,000 lets
# them converge.
PROBE_MAX_ITER = 1000
# BLAS threads a probe fits with. lbfgs fits a probe in many small BLAS calls, on which OpenBLAS's threads mostly
# wait for each other: on 2 idle cores one thread fits 7.2x faster at N 1,000 x D 512 (0.06 vs 0.43 s) and
# 1.8-3.4x at D 2,048 or N 5,000 (binaries/benchmark_probe.py), and beside a busy core 4-8 s became 0.2-0.5 s;
# accuracies equal, coefficients ~1e-15 apart. One thread also gives the same bits on any number of cores.
PROBE_BLAS_THREADS = 1


@functools.lru_cache(maxsize=None)
def _thread_pools():
  """threadpoolctl's view of the process's thread pools, inspected once: `threadpool_limits` rescans the loaded
  libraries on every call (1.9-4.4 ms, ~1-5% of a probe fit), a controller's `limit` does not (0.01-0.03 ms).
  Built at the first fit, after scikit-learn has loaded the BLAS libraries the probes call."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  return threadpoolctl.ThreadpoolController()


def fit_probe(features, labels, l2, max_iter=PROBE_MAX_ITER, blas_threads=PROBE_BLAS_THREADS):
  """(scaler, probe) fitted on `features` [N, D] and `labels` [N]: the frozen-feature probe of this module and of
  transfer/linear_head.py.

  Features are standardised (scikit-learn's StandardScaler); a multinomial LogisticRegression minimises mean
  cross-entropy + l2/2 ||W||^2 (C = 1 / (l2 N); l2 = 0: no penalty) with BLAS held at `blas_threads` threads
  (threadpoolctl; None: the BLAS library's own count). Predict with `probe.predict(scaler.transform(x))`.
  """
  from sklearn import linear_model, preprocessing as sk_preprocessing  # pylint: disable=g-import-not-at-top
  scaler = sk_preprocessing.StandardScaler().fit(features)
  # C = inf is no penalty (scikit-learn 1.8 deprecated penalty=None for it).
  probe = linear_model.LogisticRegression(C=1.0 / (l2 * len(labels)) if l2 > 0 else np.inf, max_iter=max_iter)
  with _thread_pools().limit(limits=blas_threads, user_api="blas"):
    probe.fit(scaler.transform(features), labels)
  return scaler, probe


def linear_probe_accuracy(features, labels, num_folds=5, l2=1e-2, max_iter=PROBE_MAX_ITER, seed=0,
                          blas_threads=PROBE_BLAS_THREADS):
  """Cross-validated accuracy of a logistic-regression probe on frozen features (the linear-evaluation protocol).

  scikit-learn's StratifiedKFold (shuffled with `seed`) splits the task's training split; per fold `fit_probe`
  (features standardised with the training folds' statistics, a multinomial LogisticRegression minimising mean
  cross-entropy + l2/2 ||W||^2) classifies the held-out fold. `l2` may be a sequence: each value is
  cross-validated on the same folds and the best mean accuracy is returned (as LogisticRegressionCV does;
  slightly optimistic, as any model selection on the folds it is scored on). A class with fewer examples than
  folds is absent from some training folds; those held-out examples count as errors.

  Returns:
    (mean held-out accuracy, the l2 that reached it).
  """
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  features, labels = _as_features_and_labels(features, labels)
  if not 2 <= num_folds <= features.shape[0]:
    raise ValueError(f"num_folds={num_folds}; expected 2 <= num_folds <= num_examples ({features.shape[0]}).")
  counts = np.unique(labels, return_counts=True)[1]
  if num_folds > counts.max():
    raise ValueError(f"num_folds={num_folds}; expected at most the largest class's {counts.max()} examples "
                     "(stratified folds need that many).")
  grid = [float(v) for v in (l2 if isinstance(l2, (list, tuple)) else [l2])]
  if not grid or min(grid) < 0:
    raise ValueError(f"l2={l2!r}; expected a non-negative number or a non-empty sequence of them.")
  folds = list(model_selection.StratifiedKFold(num_folds, shuffle=True, random_state=seed).split(features, labels))
  best = (-1.0, None)
  for value in grid:
    correct = 0
    for train, test in folds:
      if len(np.unique(labels[train])) < 2:  # one class left to learn: it is the prediction
        predicted = np.full(len(test), labels[train][0])
      else:
        scaler, probe = fit_probe(features[train], labels[train], value, max_iter, blas_threads)
        predicted = probe.predict(scaler.transform(features[test]))
      correct += int(np.sum(predicted == labels[test]))
    accuracy = correct / features.shape[0]
    if accuracy > best[0]:
      best = (accuracy, value)
  return best


# ---------------------------------------------------------------------------------------------- LogME
def _thin_svd(f, rcond=1e-10):
  """(s, U) of F's thin SVD with s_i^2 > rcond * max s^2, from the eigendecomposition of the smaller Gram matrix
  (D x D or N x N): one D^3 or N^3 step instead of an N x D SVD, as LogME's reference code does."""
  n, d = f.shape
  if n >= d:
    sigma, v = np.linalg.eigh(f.T @ f)
  else:
    sigma, u = np.linalg.eigh(f @ f.T)
  keep = sigma > rcond * max(float(sigma.max()), 1e-300)
  s = np.sqrt(sigma[keep])
  return s, (f @ v[:, keep] / s if n >= d else u[:, keep])


_LOGME_MIN, _LOGME_MAX = 1e-10, 1e10


def _logme_fixed_point(s, z, rest, n, d, max_iter, tol):
  sigma = s ** 2
  alpha, beta = 1.0, 1.0

  def terms(alpha, beta):
    shrink = beta * sigma / (alpha + beta * sigma)
    mm = float(np.sum((beta * s * z / (alpha + beta * sigma)) ** 2))  # m^T m
    residual = float(np.sum(((1.0 - shrink) * z) ** 2)) + rest  # ||F m - y||^2
    return shrink.sum(), mm, residual

  for _ in range(max_iter):
    gamma, mm, residual = terms(alpha, beta)
    # Clipped: where F fits y exactly (beta -> inf) or spans nothing (all-zero features: alpha -> 0) the evidence
    # has a finite limit but its terms do not; at the clip the cancelling terms stay finite and close to it.
    new_alpha = float(np.clip(gamma / max(mm, 1e-300), _LOGME_MIN, _LOGME_MAX))
    new_beta = float(np.clip((n - gamma) / max(residual, 1e-300), _LOGME_MIN, _LOGME_MAX))
    done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
    alpha, beta = new_alpha, new_beta
    if done:
      break
  _, mm, residual = terms(alpha, beta)
  log_det = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * np.log(alpha)
  evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi) - beta / 2 * residual
              - alpha / 2 * mm - log_det / 2)
  return float(evidence / n), float(alpha), float(beta)


def logme_evidence(features, target, max_iter=100, tol=1e-6, basis=None):
  """Maximised log evidence per example of a Bayesian linear model target ~ N(features w, 1/beta), w ~ N(0, 1/alpha).

  You et al. 2021 (LogME), Algorithm 1: with the SVD of F (sigma_i = s_i^2, zeros beyond the rank), iterate
    gamma = sum_i beta sigma_i / (alpha + beta sigma_i),  m = beta A^-1 F^T y,  A = alpha I + beta F^T F,
    alpha <- gamma / m^T m,  beta <- (n - gamma) / ||F m - y||^2
  to a fixed point (relative change below tol), then evaluate their Eq. 2:
    L = n/2 log beta + D/2 log alpha - n/2 log 2pi - beta/2 ||F m - y||^2 - alpha/2 m^T m - 1/2 log|A|.
  log|A| sums over all D eigenvalues (alpha alone for the directions F does not span). basis: (s, U) from
  _thin_svd(features), to share one decomposition across classes. Returns (L / n, alpha, beta).
  """
  f = np.asarray(features, np.float64)
  y = np.asarray(target, np.float64)
  s, u = basis if basis is not None else _thin_svd(f)
  z = u.T @ y  # the target in F's column basis; the rest of y is out of F's reach
  return _logme_fixed_point(s, z, max(float(y @ y - z @ z), 0.0), f.shape[0], f.shape[1], max_iter, tol)


def logme(features, labels, max_iter=100, tol=1e-6):
  """LogME (You et al. 2021): mean over classes of logme_evidence with the one-hot column of that class."""
  features, labels = _as_features_and_labels(features, labels)
  basis = _thin_svd(features)
  return float(np.mean([logme_evidence(features, (labels == c).astype(np.float64), max_iter, tol, basis)[0]
                        for c in np.unique(labels)]))


# ---------------------------------------------------------------------------------------------- H-score
def h_score(features, labels, shrinkage=0.0, rcond=1e-10):
  """H-score (Bao et al. 2019, Definition 2): H(f) = tr(cov(f)^+ cov(E[f | y])).

  Computed from the thin SVD of the centred features F = U S V^T: cov(f) = V S^2 V^T / n, and
  v_i^T cov(E[f|y]) v_i = s_i^2 / n * sum_c (1_c^T u_i)^2 / n_c, so no D x D inverse is formed. Directions with
  s_i^2 <= rcond * max s^2 are dropped (the pseudo-inverse). `shrinkage` in [0, 1) replaces cov(f) by
  (1 - shrinkage) cov(f) + shrinkage * tr(cov(f)) / D * I (Ibrahim et al. 2022); 0 is Bao's definition. Note
  that with n <= D, unshrunk, every feature set in general position scores num_classes - 1 (the covariance is
  not estimable), which is what the shrinkage is for.
  """
  features, labels = _as_features_and_labels(features, labels)
  if not 0.0 <= shrinkage < 1.0:
    raise ValueError(f"shrinkage={shrinkage}; expected a value in [0, 1).")
  n, d = features.shape
  s, u = _thin_svd(features - features.mean(axis=0), rcond)
  var = s ** 2 / n
  q = np.zeros(len(s))
  for c in np.unique(labels):
    members = labels == c
    q += u[members].sum(axis=0) ** 2 / members.sum()
  regularised = (1.0 - shrinkage) * var + shrinkage * var.sum() / d
  return float(np.sum(var * q / regularised))


# ---------------------------------------------------------------------------------------------- NCE, LEEP
def nce(source_labels, labels):
  """Negative Conditional Entropy (Tran et al. 2019, Eq. 2): -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z), with
  P the empirical joint of the task labels Y and the source labels Z of the same images. At most 0; 0 when Z
  determines Y."""
  z, y = np.asarray(source_labels), np.asarray(labels)
  if z.shape != y.shape or z.ndim != 1 or not len(y):
    raise ValueError(f"source_labels {z.shape} and labels {y.shape}; expected two equal non-empty [N] arrays.")
  _, zi = np.unique(z, return_inverse=True)
  _, yi = np.unique(y, return_inverse=True)
  joint = np.zeros([zi.max() + 1, yi.max() + 1])
  np.add.at(joint, (zi, yi), 1.0)
  joint /= len(y)
  cond = joint / joint.sum(axis=1, keepdims=True)
  nz = joint > 0
  return float(np.sum(joint[nz] * np.log(cond[nz])))


def leep(logits, labels):
  """LEEP (Nguyen et al. 2020, Eq. 1-2), theta = softmax of the expert's upstream logits:
    P(y, z) = 1/n sum_{i: y_i = y} theta(x_i)_z,  P(y | z) = P(y, z) / sum_y P(y, z),
    LEEP = 1/n sum_i log sum_z P(y_i | z) theta(x_i)_z.
  At most 0 (log-likelihood of the expected empirical predictor)."""
  theta = _softmax(logits)
  y = np.asarray(labels)
  if theta.ndim != 2 or y.shape != (theta.shape[0],):
    raise ValueError(f"logits {theta.shape} and labels {y.shape}; expected [N, L] and [N].")
  _, yi = np.unique(y, return_inverse=True)
  joint = np.eye(yi.max() + 1)[yi].T @ theta / len(y)  # [Y, Z]
  cond = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-300)
  return float(np.mean(np.log(np.sum(cond[yi] * theta, axis=1))))


# ---------------------------------------------------------------------------------------------- Domain Prediction
def domain_prediction(generalist_logits, generalist_label_ids, expert_label_ids):
  """Domain Prediction (paper.md, label-free): the mean over the task's images of the probability mass that the
  generalist's upstream head (softmax over its labels) puts on the expert's upstream labels."""
  probs = _softmax(generalist_logits)
  ids = [int(i) for i in generalist_label_ids]
  if probs.ndim != 2 or probs.shape[1] != len(ids):
    raise ValueError(f"generalist logits {probs.shape} do not match its {len(ids)} label ids.")
  column = {label: j for j, label in enumerate(ids)}
  unknown = sorted({int(i) for i in expert_label_ids} - set(column))
  if unknown:
    raise ValueError(f"Expert label ids {unknown[:10]} are not among the generalist's {len(ids)} labels; the "
                     "expert and the generalist must come from the same upstream.")
  if not len(expert_label_ids):
    raise ValueError("The expert covers no upstream labels; Domain Prediction needs at least one.")
  columns = sorted({column[int(i)] for i in expert_label_ids})
  return float(np.mean(probs[:, columns].sum(axis=1)))
