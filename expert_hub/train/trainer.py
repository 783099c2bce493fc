"""The one fit loop: Keras `fit` with resumable checkpoints every N steps, progress lines and TensorBoard.

On resume the checkpoint restores every model and optimiser variable (the step counter included) and the input
stream is rebuilt to skip the batches already consumed, so a run killed at any point continues from its last
checkpoint with the examples it had not yet seen (augmentation is not seeded, so not bit for bit).

The same loop runs under MirroredStrategy (several local devices) and MultiWorkerMirroredStrategy (TF_CONFIG):
every worker restores the chief's checkpoints, only the chief writes, and Keras 3's `fit` is made to work under
the latter by `prepare_multi_worker`.
"""

import glob
import logging
import os
import re
import time

import keras
import tensorflow as tf

from expert_hub import io_utils
from expert_hub import provenance
from expert_hub.train import strategies

log = logging.getLogger(__name__)


def format_seconds(seconds):
  seconds = int(max(0, seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLogger(keras.callbacks.Callback):
  """Every `log_every` steps: a log line (step, loss, images/s, ETA) and TensorBoard scalars."""

  def __init__(self, name, start_step, total_steps, batch_size, log_every, summary_dir=None):
    super().__init__()
    self.name, self.start, self.total = name, start_step, total_steps
    self.batch_size, self.log_every = batch_size, log_every
    self.writer = tf.summary.create_file_writer(summary_dir) if summary_dir else None
    self.last_logs = {}

  def on_train_begin(self, logs=None):
    self.t0 = self.t_last = time.time()
    self.step_last = self.start

  def on_train_batch_end(self, batch, logs=None):
    step = self.start + batch + 1
    self.last_logs = dict(logs or {})
    if step % self.log_every and step != self.total:
      return
    now = time.time()
    rate = (step - self.step_last) * self.batch_size / max(now - self.t_last, 1e-9)
    done = step - self.start
    eta = (now - self.t0) / max(done, 1) * (self.total - step)
    metrics = " ".join(f"{k}={float(v):.4f}" for k, v in self.last_logs.items())
    log.info("[%s] step %d/%d %s %.0f img/s ETA %s", self.name, step, self.total, metrics, rate,
             format_seconds(eta))
    if self.writer is not None:
      with self.writer.as_default(step=step):
        for k, v in self.last_logs.items():
          tf.summary.scalar(k, float(v))
        tf.summary.scalar("images_per_second", rate)
        lr = self.model.optimizer.learning_rate
        tf.summary.scalar("learning_rate", float(lr(step) if callable(lr) else lr))
      self.writer.flush()
    self.t_last, self.step_last = now, step


class CheckpointEvery(keras.callbacks.Callback):
  """Saves a checkpoint every `every` global steps through `save(step)` (every worker calls it; see `fit`)."""

  def __init__(self, save, start_step, every):
    super().__init__()
    self.save, self.start, self.every = save, start_step, every

  def on_train_batch_end(self, batch, logs=None):
    step = self.start + batch + 1
    if step % self.every == 0:
      self.save(step)


def _raw(variables):
  return [getattr(v, "value", v) for v in variables]


def _check_same_start(strategy, start):
  """Fails fast when the workers of a multi-worker job restored different steps (a collective would hang)."""
  if not strategies.is_multi_worker(strategy):
    return
  value = tf.constant([start], tf.int64)
  starts = strategy.gather(strategy.run(lambda: tf.identity(value)), axis=0).numpy().tolist()
  highest, lowest = max(starts), min(starts)
  if highest != lowest:
    raise RuntimeError(f"Workers resumed from different steps {starts} (this worker: {start}). Every "
                       "worker restores from the chief's checkpoints, so the workdir must be on a filesystem all "
                       "workers share.")


def shard_by_data(dataset):
  """Multi-worker input: each worker runs the whole (seeded) stream and keeps its share of every batch.

  File-based auto-sharding would give each worker its own files, and then skipping the consumed batches after a
  resume would skip per-worker counts of a different stream; sharding by data keeps `make_dataset(skip)` exact.
  """
  if not isinstance(dataset, tf.data.Dataset):
    return dataset
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  return dataset.with_options(options)


def prepare_multi_worker(model, strategy):
  """Lets Keras 3 `fit` train a compiled model under MultiWorkerMirroredStrategy (no-op for other strategies).

  Keras 3.15 does not run `fit` under this strategy as shipped (keras-team/keras#20585), for two reasons this
  works around on the model instance; call it after `compile` and before `fit` (compile drops the second fix):
  1. Before training, `fit` pulls one distributed batch and `strategy.reduce`s the whole (images, labels) tuple to
     build the compiled loss and metrics; this strategy cannot reduce a nested structure ("ValueError: Attempt to
     convert a value (PerReplica ...)"), and it would average a batch of images across workers for nothing.
     Only shapes matter there, so the build uses this worker's own shard, under the strategy's scope (every
     worker creates the same variables in the same order, as the strategy's initial-value broadcast requires).
  2. Each step's logs are reduced with `strategy.reduce("MEAN", scalar, axis=0)`, which fails on scalars
     ("Invalid reduction dimension 0 for input with 0 dimensions"). The train function here runs the model's
     own `train_step` on every replica and averages its scalar logs over all replicas with `axis=None`.
  """
  if not strategies.is_multi_worker(strategy):
    return model
  if model.train_function is not None and model.train_function is getattr(model, "_multi_worker_train_fn", None):
    return model  # already prepared and not re-compiled since: keep the traced step (experts reuse one model)

  def symbolic_build(iterator=None, data_batch=None):
    if iterator is not None:
      for _, _, batches in iterator:
        data_batch = next(batches)
        break
    data_batch = tf.nest.map_structure(
        lambda v: v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v, data_batch)
    with strategy.scope():
      model._symbolic_build(data_batch=data_batch)  # pylint: disable=protected-access

  @tf.function(reduce_retracing=True)
  def train_on_next_batch(iterator):
    logs = strategy.run(model.train_step, args=(next(iterator),))
    return tf.nest.map_structure(lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), logs)

  model._maybe_symbolic_build = symbolic_build  # pylint: disable=protected-access
  model.train_function = model._multi_worker_train_fn = train_on_next_batch  # pylint: disable=protected-access
  return model


def fit(model, make_dataset, cfg, workdir, name="train", strategy=None, callbacks=(), made_from=None):
  """Trains a compiled model for cfg.steps steps, resuming from `<workdir>/checkpoints` if present.

  Under a multi-worker strategy every worker calls this with the same arguments: all restore from the chief's
  `<workdir>/checkpoints` (so a job whose workers were killed resumes where the chief last saved), all save every
  `cfg.checkpoint_every` steps, but only the chief writes into the workdir (checkpoints, TensorBoard,
  train_result.json); the others save into a scratch folder that is removed after each save.

  Args:
    model: a compiled keras.Model (its optimizer's `iterations` is the global step).
    make_dataset: `skip_batches -> tf.data.Dataset` of infinite training batches (global batch size) that starts
      after the first `skip_batches` batches of the deterministic stream.
    cfg: a TrainConfig (steps, batch_size, checkpoint_every, log_every).
    workdir: where checkpoints/ and tensorboard/ live.
    name: shown in progress lines.
    strategy: the tf.distribute strategy the model was built under (for chief-only writes).
    callbacks: extra Keras callbacks.
    made_from: what this run is made from (provenance.check): recorded in the workdir on the first start, and a
      workdir whose record differs (or that holds checkpoints without one) is refused instead of resumed.

  Returns:
    {"start_step", "steps", "seconds", "images_per_second", **last training metrics}.

  Raises:
    RuntimeError: the workers of a multi-worker job restored different steps.
    provenance.ProvenanceError: the workdir holds another run (see `made_from`).
  """
  strategy = strategy or tf.distribute.get_strategy()
  optimizer = model.optimizer
  if not optimizer.built:
    with strategy.scope():  # slots must be mirrored like the weights
      optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=_raw(model.variables), optimizer=_raw(optimizer.variables))
  chief = strategies.is_chief(strategy)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  start = 0
  latest = latest_checkpoint(ckpt_dir)
  if made_from is not None:
    provenance.check(workdir, made_from, name, has_output=latest is not None, write=chief)
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    start = int(optimizer.iterations.numpy())
    log.info("[%s] resumed from %s at step %d/%d", name, latest, start, cfg.steps)
  _check_same_start(strategy, start)
  write_dir = strategies.write_dir(ckpt_dir, strategy)
  manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=2)

  def save(step):
    manager.save(checkpoint_number=step)
    strategies.remove_write_dir(write_dir, strategy)  # non-chief: the standard save-then-delete

  prepare_multi_worker(model, strategy)
  remaining = cfg.steps - start
  progress = ProgressLogger(name, start, cfg.steps, cfg.batch_size, cfg.log_every,
                            os.path.join(workdir, "tensorboard") if chief else None)
  t0 = time.time()
  try:
    if remaining > 0:
      model.fit(shard_by_data(make_dataset(start)), epochs=1, steps_per_epoch=remaining, verbose=0,
                shuffle=False, callbacks=[CheckpointEvery(save, start, cfg.checkpoint_every), progress, *callbacks])
      if cfg.steps % cfg.checkpoint_every:
        save(cfg.steps)
  finally:
    strategies.remove_write_dir(write_dir, strategy)
  seconds = time.time() - t0
  result = {"start_step": start, "steps": cfg.steps, "seconds": round(seconds, 2),
            "images_per_second": round(remaining * cfg.batch_size / max(seconds, 1e-9), 1)}
  result.update({k: float(v) for k, v in progress.last_logs.items()})
  if chief:
    io_utils.atomic_write_json(os.path.join(workdir, "train_result.json"), result)
  return result


def latest_checkpoint(ckpt_dir):
  """The prefix of the newest complete checkpoint in ckpt_dir, or None.

  CheckpointManager records each save in its state file after writing it, so a kill between the two leaves a
  complete `ckpt-N` the state file does not name yet; TensorFlow writes a checkpoint's `.index` last, so every
  `ckpt-N.index` present is a complete checkpoint and counts.
  """
  found = {}
  for index in glob.glob(os.path.join(glob.escape(ckpt_dir), "ckpt-*.index")):
    m = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
    if m:
      found[int(m.group(1))] = index[:-len(".index")]
  return found[max(found)] if found else tf.train.latest_checkpoint(ckpt_dir)


def reset_optimizer(optimizer):
  """Zeroes every optimizer variable (slots and the step counter) so a compiled model can train anew."""
  for v in optimizer.variables:
    v.assign(tf.zeros_like(v))
