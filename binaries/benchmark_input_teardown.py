r"""How long a fit takes to end, with tf.data's autotuning thread (TensorFlow's default) and without it (ours).

  python binaries/benchmark_input_teardown.py --config=tiny --workdir=/tmp/expert_hub_demo --fits=8

Keras `fit` destroys its dataset iterator before it returns; with autotuning on, TensorFlow 2.20 often waits
there for the iterator's autotuning thread to sleep out its current interval (preprocessing.without_autotuning).
This trains full experts from the generalist in --workdir (the main job leaves one there) on their streams as
train_experts builds them, alternating between the stream as built (autotuning off) and the same stream with
autotuning switched back on, over the config's experts in turn, --fits times each. For every fit it records the
training seconds (fit start to its last batch) and the teardown (last batch to fit's return), and prints both per
mode: mean training seconds, teardown total and worst, and how many fits took over a second to end. Nothing is
written to --workdir.
"""

import os
import time

from absl import flags

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags_common.define_common_flags(export_dir=False)
flags.DEFINE_integer("fits", 8, "Fits per mode.", lower_bound=1)
flags.DEFINE_integer("steps", None, "Training steps of each fit (default: the config's full experts').",
                     lower_bound=1)
flags.DEFINE_string("output", "", "Optional JSON path for the results.")
flags.mark_flag_as_required("workdir")

MODES = ("autotuning off (expert_hub)", "autotuning on (TensorFlow's default)")


def main(argv):
  del argv
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from expert_hub import io_utils  # pylint: disable=g-import-not-at-top
  from expert_hub.data import upstream as upstream_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.models import weights as weights_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.train import experts as experts_train  # pylint: disable=g-import-not-at-top
  from expert_hub.train import upstream  # pylint: disable=g-import-not-at-top

  class FitClock(keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      self.begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
      self.last_batch = time.perf_counter()

  flags_common.setup_logging()
  cfg = flags_common.load_config()
  flags_common.check_workdir(FLAGS.workdir)
  generalist = os.path.join(FLAGS.workdir, "generalist")
  if not upstream.is_trained(generalist):
    raise FileNotFoundError(f"--workdir={FLAGS.workdir!r} holds no trained generalist/; run the main job (or "
                            "train_upstream.py) there first.")
  data_dir = f"{FLAGS.workdir}/tfds" if FLAGS.data_dir is None else FLAGS.data_dir
  builder = upstream_lib.get_builder(cfg.upstream.tfds_name, data_dir)
  num_labels = upstream_lib.load_hierarchy(cfg.upstream, builder).num_labels
  nodes = experts_train.plan_experts(cfg, data_dir, None, write=False)
  steps = FLAGS.steps or cfg.experts.full.steps
  generalist_weights = weights_lib.load_weights(os.path.join(generalist, upstream.WEIGHTS_FILE))
  model, loss = upstream.build_upstream_model(cfg.model, num_labels, cfg.experts.full, name="full_expert")
  autotuned = tf.data.Options()
  autotuned.autotune.enabled = True
  runs = {mode: [] for mode in MODES}
  for i in range(FLAGS.fits):
    for mode in MODES:  # alternating, so that a slow spell of the machine hits both
      node = nodes[i % len(nodes)]
      weights_lib.set_weights(model, generalist_weights)
      loss.set_labels(node.labels)
      stream = upstream.make_upstream_stream(builder, cfg.upstream, cfg.experts.full, num_labels, node.labels,
                                             seed=i, cache_subset=True)(0)
      if mode == MODES[1]:
        stream = stream.with_options(autotuned)
      clock = FitClock()
      model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])
      end = time.perf_counter()
      runs[mode].append({"expert": node.expert_name, "train_s": round(clock.last_batch - clock.begin, 2),
                         "teardown_s": round(end - clock.last_batch, 2)})
      print(f"fit {i + 1}/{FLAGS.fits} {node.expert_name}, {mode}: {runs[mode][-1]}", flush=True)
  rows = []
  for mode in MODES:
    train, teardown = (np.array([r[k] for r in runs[mode]]) for k in ("train_s", "teardown_s"))
    rows.append({"mode": mode, "fits": len(train), "steps": steps, "mean_train_s": round(float(train.mean()), 1),
                 "teardown_total_s": round(float(teardown.sum()), 1),
                 "teardown_max_s": round(float(teardown.max()), 1),
                 "fits_ending_over_1_s": int((teardown > 1.0).sum())})
  columns = list(rows[0])
  print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
  for row in rows:
    print("| " + " | ".join(str(row[c]) for c in columns) + " |")
  if FLAGS.output:
    io_utils.atomic_write_json(FLAGS.output, {"config": cfg.name, "results": rows, "fits": runs})


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
