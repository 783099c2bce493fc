"""Seeded synthetic tasks for benchmarks: the shape of the world's downstream tasks without rendering it."""

import numpy as np

from expert_hub.tasks import base


def colour_tasks(count, num_examples=1000, num_classes=10, size=32, seed=0):
  """`count` ArrayTasks ("synthetic00", ...) with train800val200 and test splits of `num_examples` uint8 images:
  each class a mean colour (different per task) plus Gaussian noise, so features separate them partly."""
  out = []
  for t in range(count):
    rng = np.random.default_rng(seed + t)
    centres = rng.integers(40, 216, (num_classes, 3))
    splits = {}
    for split in ("train800val200", "test"):
      labels = np.arange(num_examples) % num_classes
      noise = rng.normal(0, 40, (num_examples, size, size, 3))
      splits[split] = (np.clip(centres[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels)
    out.append(base.ArrayTask(splits, name=f"synthetic{t:02d}", num_classes=num_classes))
  return out
