r"""Leave-one-out kNN at scale: exact search vs the ScaNN tree + AH index, time and accuracy side by side.

  python binaries/benchmark_knn.py --sizes=1000,10000,50000,200000 --dim=2048

For each size N the same synthetic features (ReLU of a random 2048-d projection of noisy 64-d class centres,
like pooled CNN features; --num_classes classes) are scored by expert_hub.selection.knn.NeighbourIndex with
the exact backend and with scann_ah at each --leaves_to_search fraction. Up to --max_queries examples are the
leave-one-out queries (all of them when N <= max_queries); both backends answer the *same* queries against
all N examples, and search time is scaled to N queries (search cost is linear in the number of queries), so
"total s" is what a full leave-one-out pass over N examples costs: build + N queries. Accuracy is the LOO
1-NN (k-NN) accuracy on the queries, recall@k is against the exact neighbours.
"""

import time

from absl import flags
from absl import logging
import numpy as np

from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.selection import synthetic_features as synthetic

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["1000", "10000", "50000", "200000"], "Numbers of examples N.")
flags.DEFINE_integer("dim", 2048, "Feature dimension.", lower_bound=1)
flags.DEFINE_integer("k", 1, "Neighbours per vote.", lower_bound=1)
flags.DEFINE_integer("num_classes", 100, "Classes of the synthetic features.", lower_bound=1)
flags.DEFINE_integer("max_queries", 10_000, "Leave-one-out queries per size (a random subset above this).",
                     lower_bound=1)
flags.DEFINE_list("leaves_to_search", ["0.1", "0.3"], "scann_ah: fractions of the tree's leaves searched.")
flags.DEFINE_integer("seed", 0, "Seed of the features and the query subset.", lower_bound=0)
flags.DEFINE_string("output", "", "Optional JSON path for the results.")


def measure(x, labels, k, backend, query_ids, **index_kwargs):
  """Builds the index, answers the queries; returns (neighbours, build s, search s scaled to all N rows)."""
  from expert_hub.selection import knn  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  index = knn.NeighbourIndex(x, k, backend, **index_kwargs)
  build = time.time() - t0
  t0 = time.time()
  nb = index.neighbours(query_ids)
  search = (time.time() - t0) * len(x) / len(query_ids)
  return nb, build, search


def _fractions(flag, values):
  """The floats of a list flag, each in (0, 1]; raises ValueError naming the flag and the bad entry."""
  out = []
  for v in values:
    try:
      f = float(v)
    except ValueError:
      f = None
    if f is None or not 0 < f <= 1:
      raise ValueError(f"{flag}={','.join(values)}: {v!r} is not a fraction in (0, 1].")
    out.append(f)
  if not out:
    raise ValueError(f"{flag} is empty; expected fractions in (0, 1], e.g. 0.1,0.3.")
  return out


def main(argv):
  del argv
  sizes = flags_common.positive_ints("--sizes", FLAGS.sizes)
  fractions = _fractions("--leaves_to_search", FLAGS.leaves_to_search)
  from expert_hub.selection import knn  # pylint: disable=g-import-not-at-top
  if not knn.scann_available():
    raise SystemExit("ScaNN does not import on this platform; nothing to compare exact search with.")
  rows = []
  for n in sizes:
    x, labels = synthetic.synthetic_features(n, FLAGS.dim, FLAGS.num_classes, FLAGS.seed)
    x = knn.l2_normalize(x)
    rng = np.random.RandomState(FLAGS.seed + 1)
    queries = np.arange(n) if n <= FLAGS.max_queries else np.sort(rng.choice(n, FLAGS.max_queries, replace=False))
    logging.info("N=%d: exact search of %d queries...", n, len(queries))
    truth, _, exact_s = measure(x, labels, FLAGS.k, "exact", queries)
    exact_acc = float(np.mean(knn.vote(labels[truth]) == labels[queries]))
    for fraction in fractions:
      logging.info("N=%d: scann_ah, %.0f%% of leaves...", n, 100 * fraction)
      nb, build_s, search_s = measure(x, labels, FLAGS.k, "scann_ah", queries, leaves_to_search=fraction)
      acc = float(np.mean(knn.vote(labels[nb]) == labels[queries]))
      recall = float(np.mean([len(set(a) & set(b)) / FLAGS.k for a, b in zip(nb, truth)]))
      rows.append(dict(n=n, queries=len(queries), exact_s=exact_s, exact_acc=exact_acc, leaves_to_search=fraction,
                       scann_build_s=build_s, scann_search_s=search_s, scann_total_s=build_s + search_s,
                       scann_acc=acc, recall=recall, speedup=exact_s / (build_s + search_s)))
      logging.info("%s", _row(rows[-1]))
  print(f"\nLeave-one-out {FLAGS.k}-NN, d={FLAGS.dim}, {FLAGS.num_classes} classes; times in seconds for a full pass "
        "over N examples (search measured on the query subset, scaled to N).")
  print("| N | queries | exact s | exact acc | leaves searched | ScaNN build s | ScaNN search s | ScaNN total s "
        "| ScaNN acc | acc diff (points) | recall@k | speed-up |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(_row(r))
  if FLAGS.output:
    io_utils.atomic_write_json(FLAGS.output, {"flags": {f: FLAGS[f].value for f in (
        "sizes", "dim", "k", "num_classes", "max_queries", "leaves_to_search", "seed")}, "rows": rows})


def _row(r):
  return (f"| {r['n']:,} | {r['queries']:,} | {r['exact_s']:.1f} | {100 * r['exact_acc']:.1f} | "
          f"{100 * r['leaves_to_search']:.0f}% | {r['scann_build_s']:.1f} | {r['scann_search_s']:.1f} | "
          f"{r['scann_total_s']:.1f} | {100 * r['scann_acc']:.1f} | {100 * (r['scann_acc'] - r['exact_acc']):+.1f} | "
          f"{r['recall']:.3f} | {r['speedup']:.1f}x |")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
