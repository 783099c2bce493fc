"""`tf.distribute` strategies by name (default, mirrored, multi_worker from TF_CONFIG, tpu) and who writes files.

Multi-worker jobs follow the standard TF pattern: every worker runs the same program and calls the same saves
(a save may run collectives), but only the chief writes into the workdir; the others write to a scratch folder
that is removed right after. All workers restore from the chief's folder, so the workdir must be on a filesystem
every worker sees (as `keras.callbacks.BackupAndRestore` assumes too).
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def read_tf_config():
  """The parsed TF_CONFIG environment variable ({} when unset). Raises ValueError naming a malformed value."""
  raw = os.environ.get("TF_CONFIG", "") or "{}"
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}; expected e.g. "
                     '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}.'
                     ) from e
  if not isinstance(tf_config, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task', got {raw!r}.")
  return tf_config


def _check_multi_worker_config(tf_config):
  cluster, task = tf_config.get("cluster"), tf_config.get("task")
  if not cluster or not task:
    raise ValueError(f"strategy='multi_worker' needs TF_CONFIG with 'cluster' and 'task', got {tf_config!r}.")
  task_type, index = task.get("type"), task.get("index", 0)
  if task_type not in cluster or not 0 <= int(index) < len(cluster[task_type]):
    raise ValueError(f"TF_CONFIG task {task!r} is not in its cluster {cluster!r}; expected a type among "
                     f"{sorted(cluster)} and an index below that type's number of addresses.")


def make_strategy(name="default", tpu_address="", devices=None):
  """Returns the tf.distribute strategy called `name`.

  Args:
    name: one of STRATEGIES. "mirrored" replicates over `devices` (default: every local GPU, else every logical
      CPU device; configure several logical CPUs before the first TF op to get more than one). "multi_worker"
      reads TF_CONFIG and must be created before the program runs other TF ops (it starts the gRPC server).
    tpu_address: for "tpu", the TPU name or address.
    devices: for "mirrored", an explicit device list such as ["/cpu:0", "/cpu:1"].

  Raises:
    ValueError: unknown name, or a missing / malformed TF_CONFIG for "multi_worker".
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("strategy='multi_worker' needs the TF_CONFIG environment variable (cluster + task), e.g. "
                       '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", '
                       '"index": 0}}.')
    _check_multi_worker_config(read_tf_config())
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def is_multi_worker(strategy):
  """True for a MultiWorkerMirroredStrategy spanning more than one worker."""
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
          and strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


def task_of(strategy=None):
  """(task_type, task_id) of this process: from the strategy's cluster resolver, else TF_CONFIG (None, 0)."""
  resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
  if resolver is not None and getattr(resolver, "task_type", None):
    return resolver.task_type, int(resolver.task_id or 0)
  task = read_tf_config().get("task", {})
  return task.get("type"), int(task.get("index", 0))


def is_chief(strategy=None):
  """True unless this is a non-chief worker of a multi-worker job (only the chief writes final files).

  With a strategy, only a multi-worker strategy can make this process a non-chief (a leftover TF_CONFIG does
  not silence a single-process run); without one, TF_CONFIG decides.
  """
  if strategy is not None and not is_multi_worker(strategy):
    return True
  task_type, index = task_of(strategy)
  if task_type in (None, "chief"):
    return True
  if task_type == "worker":
    has_chief = "chief" in read_tf_config().get("cluster", {})
    return not has_chief and index == 0
  return False


def write_dir(directory, strategy=None):
  """Where this process writes files meant for `directory`: itself on the chief, a fresh scratch folder elsewhere.

  Pair with `remove_write_dir` once the write is done, so non-chief workers leave nothing behind.
  """
  if is_chief(strategy):
    return directory
  task_type, index = task_of(strategy)
  return tempfile.mkdtemp(prefix=f"expert_hub_{task_type}{index}_")


def remove_write_dir(path, strategy=None):
  """Removes a scratch folder from `write_dir` on non-chief workers; the chief's folder is kept."""
  if not is_chief(strategy):
    shutil.rmtree(path, ignore_errors=True)
