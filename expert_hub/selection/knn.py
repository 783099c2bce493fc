"""Leave-one-out kNN accuracy, the paper's performance proxy, with ScaNN or exact search.

Features are L2-normalised so the dot product is cosine similarity. Each example's k nearest *other*
examples vote (majority; ties go to the label of the nearest tied neighbour). The self-match is removed by
index, not by position, so duplicates and ties are handled.
"""

import numpy as np

BACKENDS = ("auto", "scann", "exact")
_CHUNK = 2048


def scann_available():
  try:
    import scann  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except Exception:  # pylint: disable=broad-except  (ImportError, or scann's NotFoundError with another TF)
    return False


def l2_normalize(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def exact_neighbours(x, k):
  """Indices [N, k] of each row's k most similar other rows (dot product), by chunked matmul."""
  n = x.shape[0]
  out = np.empty([n, k], np.int64)
  for start in range(0, n, _CHUNK):
    sims = x[start:start + _CHUNK] @ x.T
    rows = np.arange(sims.shape[0])
    sims[rows, start + rows] = -np.inf
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.argsort(-sims, axis=1)[:, :k]
    order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
    out[start:start + _CHUNK] = np.take_along_axis(part, order, axis=1)
  return out


def scann_neighbours(x, k):
  """Same as exact_neighbours with ScaNN's exact brute-force search (scann_ops_pybind)."""
  import scann  # pylint: disable=g-import-not-at-top
  n = x.shape[0]
  searcher = scann.scann_ops_pybind.builder(x, k + 1, "dot_product").score_brute_force().build()
  nb, _ = searcher.search_batched_parallel(x, final_num_neighbors=k + 1)
  nb = np.asarray(nb, np.int64)
  is_self = nb == np.arange(n)[:, None]
  is_self[~is_self.any(axis=1), -1] = True  # self missing from the list: drop the farthest instead
  return nb[~is_self].reshape(n, k)


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
    backend: "auto" (ScaNN if importable, else exact numpy), "scann" or "exact".

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
  if backend not in BACKENDS:
    raise ValueError(f"Unknown kNN backend {backend!r}; expected one of {BACKENDS}.")
  if backend == "auto":
    backend = "scann" if scann_available() else "exact"
  x = l2_normalize(features)
  nb = scann_neighbours(x, k) if backend == "scann" else exact_neighbours(x, k)
  return float(np.mean(vote(labels[nb]) == labels)), backend
