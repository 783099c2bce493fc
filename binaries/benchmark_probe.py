r"""The frozen-feature linear probe on one BLAS thread vs the BLAS library's own thread count, side by side.

  python binaries/benchmark_probe.py --sizes=1000,5000 --dims=512,2048

For each N x D the same synthetic features (expert_hub.selection.synthetic_features; --num_classes classes) are
scored by the linear-probe proxy (proxies.linear_probe_accuracy: --folds scikit-learn LogisticRegression fits)
twice in turn, --repeats times: with BLAS held at proxies.PROBE_BLAS_THREADS threads, as the library fits every
probe (the proxy, the fine-tune's starting head, the report's frozen probe), and with BLAS at its own count
(the cores, unless OPENBLAS_NUM_THREADS says otherwise). Prints the median seconds per fit of each, the
speed-up and both accuracies, which should agree: the thread count changes the order of BLAS's sums, not the
optimum lbfgs converges to. N = 1000 is a VTAB-1k task's train800val200, D = 512 the tiny ResNet's features
and 2048 a ResNet50's.
"""

import os
import statistics
import time

from absl import flags
from absl import logging

from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.selection import synthetic_features as synthetic

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["1000", "5000"], "Numbers of examples N.")
flags.DEFINE_list("dims", ["512", "2048"], "Feature dimensions D.")
flags.DEFINE_integer("num_classes", 20, "Classes of the synthetic features.", lower_bound=2)
flags.DEFINE_integer("folds", 5, "Cross-validation folds (fits) per probe.", lower_bound=2)
flags.DEFINE_integer("repeats", 3, "Probes timed per setting; the median is reported.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the features and the folds.", lower_bound=0)
flags.DEFINE_string("output", "", "Optional JSON path for the results.")


def time_probe(x, labels, folds, seed, blas_threads):
  """(seconds per fit, accuracy) of one cross-validated probe with BLAS at `blas_threads` (None: its own)."""
  from expert_hub.selection import proxies  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  accuracy, _ = proxies.linear_probe_accuracy(x, labels, num_folds=folds, seed=seed, blas_threads=blas_threads)
  return (time.perf_counter() - t0) / folds, accuracy


def main(argv):
  del argv
  sizes = flags_common.positive_ints("--sizes", FLAGS.sizes)
  dims = flags_common.positive_ints("--dims", FLAGS.dims)
  from expert_hub.selection import proxies  # pylint: disable=g-import-not-at-top
  settings = {"one thread": proxies.PROBE_BLAS_THREADS, "BLAS default": None}
  rows = []
  for n in sizes:
    for dim in dims:
      x, labels = synthetic.synthetic_features(n, dim, FLAGS.num_classes, FLAGS.seed)
      seconds = {name: [] for name in settings}
      accuracy = {}
      for repeat in range(FLAGS.repeats):  # alternate, so drifting load hits both alike
        for name, threads in settings.items():
          s, accuracy[name] = time_probe(x, labels, FLAGS.folds, FLAGS.seed, threads)
          seconds[name].append(s)
          logging.info("N=%d D=%d %s, repeat %d/%d: %.3f s per fit", n, dim, name, repeat + 1, FLAGS.repeats, s)
      medians = {name: statistics.median(v) for name, v in seconds.items()}
      rows.append(dict(n=n, dim=dim, one_thread_s=medians["one thread"], default_s=medians["BLAS default"],
                       speedup=medians["BLAS default"] / medians["one thread"],
                       one_thread_acc=accuracy["one thread"], default_acc=accuracy["BLAS default"]))
  print(f"\nLinear probe ({FLAGS.folds}-fold, {FLAGS.num_classes} classes) on {os.cpu_count()} cores; median seconds "
        f"per LogisticRegression fit over {FLAGS.repeats} probes.")
  print("| N | D | BLAS default s/fit | one thread s/fit | speed-up | accuracy default | accuracy one thread |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['n']:,} | {r['dim']:,} | {r['default_s']:.3f} | {r['one_thread_s']:.3f} | {r['speedup']:.1f}x | "
          f"{100 * r['default_acc']:.1f} | {100 * r['one_thread_acc']:.1f} |")
  if FLAGS.output:
    io_utils.atomic_write_json(FLAGS.output, {"flags": {f: FLAGS[f].value for f in (
        "sizes", "dims", "num_classes", "folds", "repeats", "seed")}, "cores": os.cpu_count(), "rows": rows})


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
