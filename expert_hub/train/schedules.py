"""Learning-rate schedules: linear warm-up, then cosine decay or BiT's step decay (/10 at boundaries)."""

import keras
from keras import ops


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
