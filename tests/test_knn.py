"""The kNN proxy matches a brute-force reference, with ScaNN and without."""

import numpy as np
import pytest

from expert_hub.selection import knn


def brute_force_loo(features, labels, k):
  x = features / np.linalg.norm(features, axis=1, keepdims=True)
  correct = 0
  for i in range(len(x)):
    sims = [(float(x[i] @ x[j]), j) for j in range(len(x)) if j != i]
    nearest = [j for _, j in sorted(sims, key=lambda s: -s[0])[:k]]
    votes = {}
    for rank, j in enumerate(nearest):
      votes.setdefault(labels[j], []).append(rank)
    best = max(votes.items(), key=lambda kv: (len(kv[1]), -kv[1][0]))[0]
    correct += best == labels[i]
  return correct / len(x)


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("backend", ["exact", "scann"])
def test_matches_brute_force(k, backend):
  if backend == "scann" and not knn.scann_available():
    pytest.skip("ScaNN is not installed on this platform")
  rng = np.random.RandomState(k)
  centres = rng.randn(4, 16)
  labels = rng.randint(0, 4, 150)
  features = centres[labels] + 1.2 * rng.randn(150, 16)
  acc, used = knn.leave_one_out_accuracy(features, labels, k=k, backend=backend)
  assert used == backend
  assert acc == pytest.approx(brute_force_loo(features, labels, k))
  assert 0.25 < acc < 1.0


def test_duplicates_do_not_leak_self():
  features = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  labels = np.array([0, 1, 0, 1])  # each point's twin has the other label: LOO accuracy must be 0
  assert knn.leave_one_out_accuracy(features, labels, 1, "exact")[0] == 0.0


def test_query_subsets_agree_with_the_full_search():
  rng = np.random.RandomState(0)
  x = knn.l2_normalize(rng.randn(300, 8))
  index = knn.NeighbourIndex(x, 3, "exact")
  ids = rng.choice(300, 40, replace=False)
  np.testing.assert_array_equal(index.neighbours(ids), index.neighbours()[ids])
  assert not (index.neighbours(ids) == ids[:, None]).any()


def test_auto_is_exact_for_small_tasks_and_the_ann_index_keeps_accuracy():
  assert knn.resolve_backend("auto", 1000) == "exact"
  if not knn.scann_available():
    pytest.skip("ScaNN is not installed on this platform")
  assert knn.resolve_backend("auto", knn.ANN_MIN_EXAMPLES) == "scann_ah"
  rng = np.random.RandomState(1)
  labels = rng.randint(0, 10, 4000)
  features = np.maximum(rng.randn(10, 64)[labels] + 2.5 * rng.randn(4000, 64), 0)  # ReLU-like features
  exact, _ = knn.leave_one_out_accuracy(features, labels, k=1, backend="exact")
  assert 0.3 < exact < 0.9
  assert knn.leave_one_out_accuracy(features, labels, k=1, backend="scann_ah")[1] == "scann_ah"
  # ScaNN's tree training is not seeded: bounds leave room for run-to-run variation (seen: recall 0.88-0.92).
  x = knn.l2_normalize(features)
  truth = knn.NeighbourIndex(x, 1, "exact").neighbours()
  found = knn.NeighbourIndex(x, 1, "scann_ah", leaves_to_search=0.3).neighbours()
  assert (found == truth).mean() > 0.8  # recall@1 of the approximate index
  approx = float(np.mean(labels[found[:, 0]] == labels))
  assert abs(approx - exact) < 0.06


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="k=10"):
    knn.leave_one_out_accuracy(np.zeros([5, 2]), np.zeros(5, int), k=10)
  with pytest.raises(ValueError, match="backend 'faiss'"):
    knn.leave_one_out_accuracy(np.ones([5, 2]), np.zeros(5, int), backend="faiss")
  with pytest.raises(ValueError, match=r"labels have shape \(4,\)"):
    knn.leave_one_out_accuracy(np.ones([5, 2]), np.zeros(4, int))
  with pytest.raises(ValueError, match="leaves_to_search=0"):
    knn.NeighbourIndex(np.ones([5, 2]), 1, "exact", leaves_to_search=0)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
