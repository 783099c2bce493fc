"""The one fit loop: Keras `fit` with resumable checkpoints every N steps, progress lines and TensorBoard.

On resume the checkpoint restores every model and optimiser variable (the step counter included) and the input
stream is rebuilt to skip the batches already consumed, so a run killed at any point continues from its last
checkpoint with the examples it had not yet seen (augmentation is not seeded, so not bit for bit).
"""

import logging
import os
import tempfile
import time

import keras
import tensorflow as tf

from expert_hub import io_utils
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
  """Saves the checkpoint manager every `every` global steps (on the chief; workers write to scratch)."""

  def __init__(self, manager, start_step, every):
    super().__init__()
    self.manager, self.start, self.every = manager, start_step, every

  def on_train_batch_end(self, batch, logs=None):
    step = self.start + batch + 1
    if step % self.every == 0:
      self.manager.save(checkpoint_number=step)


def _raw(variables):
  return [getattr(v, "value", v) for v in variables]


def fit(model, make_dataset, cfg, workdir, name="train", strategy=None, callbacks=()):
  """Trains a compiled model for cfg.steps steps, resuming from `<workdir>/checkpoints` if present.

  Args:
    model: a compiled keras.Model (its optimizer's `iterations` is the global step).
    make_dataset: `skip_batches -> tf.data.Dataset` of infinite training batches that starts after the
      first `skip_batches` batches of the deterministic stream.
    cfg: a TrainConfig (steps, batch_size, checkpoint_every, log_every).
    workdir: where checkpoints/ and tensorboard/ live.
    name: shown in progress lines.
    strategy: the tf.distribute strategy the model was built under (for chief-only writes).
    callbacks: extra Keras callbacks.

  Returns:
    {"start_step", "steps", "seconds", "images_per_second", **last training metrics}.
  """
  optimizer = model.optimizer
  if not optimizer.built:
    with (strategy or tf.distribute.get_strategy()).scope():  # slots must be mirrored like the weights
      optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(model=_raw(model.variables), optimizer=_raw(optimizer.variables))
  chief = strategies.is_chief(strategy)
  ckpt_dir = os.path.join(workdir, "checkpoints") if chief else tempfile.mkdtemp(prefix="worker_ckpt_")
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=2)
  start = 0
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    start = int(optimizer.iterations.numpy())
    log.info("[%s] resumed from %s at step %d/%d", name, manager.latest_checkpoint, start, cfg.steps)
  remaining = cfg.steps - start
  progress = ProgressLogger(name, start, cfg.steps, cfg.batch_size, cfg.log_every,
                            os.path.join(workdir, "tensorboard") if chief else None)
  t0 = time.time()
  if remaining > 0:
    model.fit(make_dataset(start), epochs=1, steps_per_epoch=remaining, verbose=0, shuffle=False,
              callbacks=[CheckpointEvery(manager, start, cfg.checkpoint_every), progress, *callbacks])
    if cfg.steps % cfg.checkpoint_every:
      manager.save(checkpoint_number=cfg.steps)
  seconds = time.time() - t0
  result = {"start_step": start, "steps": cfg.steps, "seconds": round(seconds, 2),
            "images_per_second": round(remaining * cfg.batch_size / max(seconds, 1e-9), 1)}
  result.update({k: float(v) for k, v in progress.last_logs.items()})
  if chief:
    io_utils.atomic_write_json(os.path.join(workdir, "train_result.json"), result)
  return result


def reset_optimizer(optimizer):
  """Zeroes every optimizer variable (slots and the step counter) so a compiled model can train anew."""
  for v in optimizer.variables:
    v.assign(tf.zeros_like(v))
