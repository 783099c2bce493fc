r"""One worker of a tiny multi-worker training job (tests/test_multi_worker.py starts two of these).

  TF_CONFIG='{"cluster": {"worker": ["localhost:P0", "localhost:P1"]}, "task": {"type": "worker", "index": 0}}' \
      python tests/multi_worker_job.py --workdir=/tmp/mw --weights_out=/tmp/mw/worker0.npz --steps=6

Builds the generalist's model (tiny BiT ResNet-v2, masked sigmoid loss, SGD) under MultiWorkerMirroredStrategy
and trains it with `trainer.fit` (the engine train_upstream, train_experts and finetune share) on a seeded,
learnable in-memory stream at 32 px, so each worker's cost is the model, not the data. Every worker writes its
final weights to --weights_out (for the test to compare) and prints one JSON line with its fit result.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (the chief's checkpoints, TensorBoard, train_result.json).")
flags.DEFINE_string("weights_out", None, "Where this worker writes its final weights (.npz).")
flags.DEFINE_integer("steps", 6, "Total optimiser steps.")
flags.DEFINE_integer("checkpoint_every", 3, "Checkpoint every this many steps.")
flags.DEFINE_integer("batch_size", 16, "Global batch size (split over the workers).")
flags.mark_flags_as_required(["workdir", "weights_out"])

NUM_LABELS = 4
IMAGE_SIZE = 32


def make_stream(batch_size, num_examples=256, seed=0):
  """`skip_batches -> dataset` of (images, multi-hot labels): label k tints channel k % 3, brightness by k // 3."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_LABELS, num_examples)
  images = rng.uniform(0.0, 0.3, (num_examples, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  images[np.arange(num_examples), :, :, labels % 3] += 0.4 + 0.2 * (labels // 3)[:, None, None]
  multi_hot = np.eye(NUM_LABELS, dtype=np.float32)[labels]

  def make(skip_batches):
    ds = tf.data.Dataset.from_tensor_slices((images, multi_hot)).repeat().skip(skip_batches * batch_size)
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)

  return make


def main(argv):
  del argv
  from expert_hub.train import strategies  # pylint: disable=g-import-not-at-top
  strategy = strategies.make_strategy("multi_worker")  # before any other TF op: it starts the gRPC server
  import logging  # pylint: disable=g-import-not-at-top
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  from expert_hub.models import resnet_v2  # pylint: disable=g-import-not-at-top
  from expert_hub.models import weights as weights_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.train import trainer  # pylint: disable=g-import-not-at-top
  from expert_hub.train import upstream  # pylint: disable=g-import-not-at-top
  logging.getLogger("expert_hub").setLevel(logging.INFO)
  train_cfg = configs.TrainConfig(batch_size=FLAGS.batch_size, steps=FLAGS.steps, base_lr=0.05,
                                       warmup_steps=1, checkpoint_every=FLAGS.checkpoint_every, log_every=1,
                                       augment=False)
  with strategy.scope():
    model, _ = upstream.build_upstream_model(resnet_v2.MODEL_SIZES["tiny"], NUM_LABELS, train_cfg)
  result = trainer.fit(model, make_stream(FLAGS.batch_size), train_cfg, FLAGS.workdir, name="multi_worker",
                       strategy=strategy)
  weights_lib.save_weights(model, FLAGS.weights_out)
  task_type, task_id = strategies.task_of(strategy)
  print(json.dumps({"task": f"{task_type}:{task_id}", "chief": strategies.is_chief(strategy),
                    "replicas": strategy.num_replicas_in_sync, **result}), flush=True)


if __name__ == "__main__":
  app.run(main)
