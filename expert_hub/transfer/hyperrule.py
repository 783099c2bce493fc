"""BiT-HyperRule (Kolesnikov et al. 2020): fine-tuning settings from the dataset's size and resolution.

Pure functions, no TensorFlow: SGD momentum 0.9, no weight decay, LR 0.003 at batch 512 (linear in batch),
zero-init head; steps/warm-up/decays and MixUp by dataset size; resize/crop by image area.
"""

import dataclasses
from typing import Tuple

BASE_BATCH = 512


@dataclasses.dataclass(frozen=True)
class Schedule:
  steps: int
  warmup_steps: int
  decay_steps: Tuple[int, ...]
  mixup_alpha: float


def get_schedule(dataset_size, scale=1.0):
  """The HyperRule schedule for `dataset_size` training examples, optionally scaled (for cheap runs)."""
  if dataset_size < 1:
    raise ValueError(f"dataset_size={dataset_size}; expected a positive number of training examples.")
  if scale <= 0:
    raise ValueError(f"scale={scale}; expected a positive factor.")
  if dataset_size < 20_000:
    steps, warmup, decays, mixup = 500, 100, (200, 300, 400), 0.0
  elif dataset_size < 500_000:
    steps, warmup, decays, mixup = 10_000, 500, (3000, 6000, 9000), 0.1
  else:
    steps, warmup, decays, mixup = 20_000, 500, (6000, 12_000, 18_000), 0.1
  s = lambda v: max(1, int(round(v * scale)))
  return Schedule(s(steps), s(warmup), tuple(s(d) for d in decays), mixup)


def get_resolution(height, width):
  """(resize, crop): images below 96x96 in area train at 160 -> crop 128, others 512 -> crop 480."""
  if height * width < 96 * 96:
    return 160, 128
  return 512, 480


def get_learning_rate(batch_size, base_lr=0.003):
  return base_lr * batch_size / BASE_BATCH
