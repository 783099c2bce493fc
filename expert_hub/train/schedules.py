"""Learning-rate schedules: linear warm-up, then cosine decay or BiT's step decay (/10 at boundaries)."""

import keras
from keras import ops
import tensorflow as tf


@keras.saving.register_keras_serializable(package="expert_hub")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = base_lr * step / warmup during warm-up, then cosine to 0 or /10 at each decay step."""

  def __init__(self, base_lr, total_steps, warmup_steps=0, schedule="cosine", decay_steps=()):
    self.base_lr = float(base_lr)
    self.total_steps = int(total_steps)
    self.warmup_steps = int(warmup_steps)
    self.schedule = schedule
    self.decay_steps = tuple(int(s) for s in decay_steps)

  def __call__(self, step):
    step = ops.cast(step, "float32")
    if self.schedule == "cosine":
      span = max(1, self.total_steps - self.warmup_steps)
      progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
      lr = 0.5 * self.base_lr * (1.0 + ops.cos(3.141592653589793 * progress))
    else:
      lr = ops.convert_to_tensor(self.base_lr, "float32")
      for boundary in self.decay_steps:
        lr = ops.where(step >= boundary, lr * 0.1, lr)
    if self.warmup_steps > 0:
      lr = ops.where(step < self.warmup_steps, self.base_lr * (step + 1.0) / self.warmup_steps, lr)
    return lr

  def get_config(self):
    return {"base_lr": self.base_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "schedule": self.schedule, "decay_steps": list(self.decay_steps)}


def from_train_config(cfg):
  return WarmupSchedule(cfg.base_lr, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.decay_steps)


class AssignableStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """WarmupSchedule's "step" form (linear warm-up, /10 at each decay step) with its numbers in variables.

  A compiled model traces its optimizer's schedule into its train step; with the numbers in variables one
  compiled model serves every schedule (`assign` before each run), so a fine-tuning template reused across
  tasks and experts is never re-traced. Create it under the model's distribution strategy scope.
  """

  MAX_DECAYS = 8

  def __init__(self):
    self.base_lr = tf.Variable(0.0, trainable=False, name="schedule_base_lr")
    self.warmup_steps = tf.Variable(0.0, trainable=False, name="schedule_warmup_steps")
    self.boundaries = tf.Variable(tf.fill([self.MAX_DECAYS], float("inf")), trainable=False,
                                  name="schedule_decay_steps")

  def assign(self, base_lr, warmup_steps=0, decay_steps=()):
    decay_steps = sorted(int(s) for s in decay_steps)
    if len(decay_steps) > self.MAX_DECAYS:
      raise ValueError(f"{len(decay_steps)} decay steps {decay_steps}; at most {self.MAX_DECAYS} are supported.")
    self.base_lr.assign(float(base_lr))
    self.warmup_steps.assign(float(warmup_steps))
    self.boundaries.assign(decay_steps + [float("inf")] * (self.MAX_DECAYS - len(decay_steps)))

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    decays = tf.reduce_sum(tf.cast(step >= self.boundaries, tf.float32))
    lr = self.base_lr * tf.pow(0.1, decays)
    warm = self.base_lr * (step + 1.0) / tf.maximum(self.warmup_steps, 1.0)
    return tf.where(step < self.warmup_steps, warm, lr)

  def get_config(self):
    return {"base_lr": float(self.base_lr.numpy()), "warmup_steps": float(self.warmup_steps.numpy()),
            "decay_steps": [float(b) for b in self.boundaries.numpy() if b != float("inf")]}
