"""`tf.distribute` strategies by name: default, mirrored, multi_worker (TF_CONFIG) or tpu."""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name="default", tpu_address=""):
  """Returns the tf.distribute strategy called `name`. Raises ValueError naming the allowed ones."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("strategy='multi_worker' needs the TF_CONFIG environment variable (cluster + task).")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def is_chief(strategy=None):
  """True unless this is a non-chief worker of a multi-worker job (only the chief writes final files)."""
  del strategy
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  task = tf_config.get("task", {})
  task_type = task.get("type")
  if task_type in (None, "chief"):
    return True
  if task_type == "worker":
    has_chief = "chief" in tf_config.get("cluster", {})
    return not has_chief and task.get("index", 0) == 0
  return False
