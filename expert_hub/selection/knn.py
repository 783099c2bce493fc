"""Leave-one-out kNN accuracy, the paper's performance proxy, with exact search or a ScaNN index.

Features are L2-normalised so the dot product is cosine similarity. Each example's k nearest *other*
examples vote (majority; ties go to the label of the nearest tied neighbour). The self-match is removed by
index, not by position, so duplicates and ties are handled.

Backends: "exact" (chunked numpy matmul), "scann" (ScaNN brute force: exact, for platforms where it is faster),
"scann_ah" (ScaNN tree + anisotropic hashing + exact re-ranking: approximate, for large tasks) and "auto", which
searches exactly below ANN_MIN_EXAMPLES examples (a VTAB-1k task has 1,000) and uses scann_ah above it when
ScaNN imports. `binaries/benchmark_knn.py` measures where the index pays (speed and accuracy side by side).
"""

import math

import numpy as np

BACKENDS = ("auto", "exact", "scann", "scann_ah")
# Below this many examples exact search is fast (seconds) and ScaNN's tree training does not pay for itself.
ANN_MIN_EXAMPLES = 50_000
_CHUNK = 2048


def scann_available():
  try:
    import scann  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except Exception:  # pylint: disable=broad-except  (ImportError, or scann's NotFoundError with another TF)
    return False


def non_finite_summary(x):
  """None if every value of array `x` is finite, else e.g. "2 NaN and 1 Inf value(s), the first at [3, 0]"."""
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.inexact) or np.isfinite(np.sum(x, dtype=np.float64)):
    return None  # the sum is finite only if every term is: one pass, no N x D temporary
  bad = ~np.isfinite(x)
  if not bad.any():
    return None
  nan = int(np.isnan(x).sum())
  first = [int(i) for i in np.argwhere(bad)[0]]
  return f"{nan} NaN and {int(bad.sum()) - nan} Inf value(s), the first at {first}"


class NonFiniteInputError(ValueError):
  """An array to search or score (features, logits) holds NaN or Inf values."""


def check_finite(x, what="features", prefix=""):
  """Raises NonFiniteInputError naming the non-finite values of `x` (see non_finite_summary), `prefix` first."""
  summary = non_finite_summary(x)
  if summary:
    raise NonFiniteInputError(f"{prefix}{what} hold {summary}; expected finite numbers (a diverged or broken "
                              "expert?).")


def l2_normalize(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def resolve_backend(backend, num_examples):
  """The backend "auto" stands for at this size: exact below ANN_MIN_EXAMPLES, else scann_ah if importable."""
  if backend not in BACKENDS:
    raise ValueError(f"Unknown kNN backend {backend!r}; expected one of {BACKENDS}.")
  if backend != "auto":
    return backend
  return "scann_ah" if num_examples >= ANN_MIN_EXAMPLES and scann_available() else "exact"


class NeighbourIndex:
  """Each query row's k most similar *other* rows of x (dot product on L2-normalised rows).

  Building and searching are separate so that benchmarks can time them apart; `neighbours` takes the row ids
  of the queries (a subset is allowed), so the self-match is dropped by index for every backend.
  """

  def __init__(self, x, k, backend="exact", leaves_to_search=0.3, reorder=100, training_sample_size=50_000):
    """x: [N, D] L2-normalised rows. backend: "exact", "scann" or "scann_ah" ("auto" via resolve_backend).

    For scann_ah: a tree of sqrt(N) leaves trained on at most training_sample_size rows, the fraction
    `leaves_to_search` of them searched per query, anisotropic hashing on 2-dimensional blocks, and the best
    `reorder` candidates re-scored exactly. The default 30% kept recall@1 at 0.997 and LOO accuracy within
    0.2 points of exact search at 200k x 2048 while 6x faster; 10% was 12x faster but recall 0.98
    (binaries/benchmark_knn.py).
    """
    self.x, self.k, self.backend = np.asarray(x, np.float32), int(k), resolve_backend(backend, len(x))
    check_finite(self.x, "indexed rows")
    n = self.x.shape[0]
    if not 1 <= self.k < n:
      raise ValueError(f"k={k}; expected 1 <= k < num_examples ({n}).")
    if not 0.0 < leaves_to_search <= 1.0:
      raise ValueError(f"leaves_to_search={leaves_to_search}; expected a fraction in (0, 1].")
    self.searcher = None
    if self.backend in ("scann", "scann_ah"):
      import scann  # pylint: disable=g-import-not-at-top
      builder = scann.scann_ops_pybind.builder(self.x, self.k + 1, "dot_product")
      if self.backend == "scann":
        builder = builder.score_brute_force()
      else:
        num_leaves = max(2, int(math.sqrt(n)))
        builder = builder.tree(num_leaves=num_leaves,
                               num_leaves_to_search=max(1, int(round(leaves_to_search * num_leaves))),
                               training_sample_size=min(n, training_sample_size))
        builder = builder.score_ah(2, anisotropic_quantization_threshold=0.2).reorder(max(reorder, self.k + 1))
      self.searcher = builder.build()

  def neighbours(self, query_ids=None):
    """[Q, k] neighbour row ids for the rows `query_ids` (all rows when None), nearest first, self excluded."""
    ids = np.arange(self.x.shape[0]) if query_ids is None else np.asarray(query_ids, np.int64)
    if self.searcher is None:
      return _exact(self.x, ids, self.k)
    nb, _ = self.searcher.search_batched_parallel(self.x[ids], final_num_neighbors=self.k + 1)
    nb = np.asarray(nb, np.int64)
    is_self = nb == ids[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # self missing from the list: drop the farthest instead
    return nb[~is_self].reshape(len(ids), self.k)


def _exact(x, ids, k):
  n = x.shape[0]
  out = np.empty([len(ids), k], np.int64)
  for start in range(0, len(ids), _CHUNK):
    chunk = ids[start:start + _CHUNK]
    sims = x[chunk] @ x.T
    sims[np.arange(len(chunk)), chunk] = -np.inf
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.argsort(-sims, axis=1)[:, :k]
    order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
    out[start:start + len(chunk)] = np.take_along_axis(part, order, axis=1)
  return out


def exact_neighbours(x, k):
  """Indices [N, k] of each row's k most similar other rows (dot product), by chunked matmul."""
  return NeighbourIndex(x, k, "exact").neighbours()


def scann_neighbours(x, k):
  """Same as exact_neighbours with ScaNN's exact brute-force search (scann_ops_pybind)."""
  return NeighbourIndex(x, k, "scann").neighbours()


def vote(neighbour_labels):
  """Majority label per row of [N, k] neighbour labels; ties go to the nearest tied neighbour's label."""
  n, k = neighbour_labels.shape
  if k == 1:
    return neighbour_labels[:, 0]
  out = np.empty([n], neighbour_labels.dtype)
  for i, row in enumerate(neighbour_labels):
    values, counts = np.unique(row, return_counts=True)
    best = values[counts == counts.max()]
    out[i] = next(label for label in row if label in best)
  return out


def leave_one_out_accuracy(features, labels, k=1, backend="auto"):
  """Fraction of examples whose k nearest other examples vote for their own label.

  Args:
    features: [N, D] array.
    labels: [N] integer labels.
    k: neighbours per vote (1 <= k < N).
    backend: one of BACKENDS; "auto" is exact below ANN_MIN_EXAMPLES examples and scann_ah above.

  Returns:
    (accuracy, backend actually used).
  """
  features = np.asarray(features)
  labels = np.asarray(labels)
  if features.ndim != 2:
    raise ValueError(f"features have shape {features.shape}; expected [num_examples, dim].")
  if labels.shape != (features.shape[0],):
    raise ValueError(f"labels have shape {labels.shape}; expected ({features.shape[0]},) to match features.")
  if not 1 <= k < features.shape[0]:
    raise ValueError(f"k={k}; expected 1 <= k < num_examples ({features.shape[0]}).")
  check_finite(features)  # NaN rows would still find "neighbours" and give a finite, meaningless accuracy
  index = NeighbourIndex(l2_normalize(features), k, resolve_backend(backend, features.shape[0]))
  return float(np.mean(vote(labels[index.neighbours()]) == labels)), index.backend
