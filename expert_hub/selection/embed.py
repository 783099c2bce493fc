"""Embedding a task's images with an expert module: batched calls of the module's traced function."""

import time

import numpy as np
import tensorflow as tf

from expert_hub.data import preprocessing
from expert_hub.hub import loading


def prepare_images(task, split, image_size):
  """(float32 images [N, S, S, 3] in [0, 1], labels [N]) of a task split, resized to image_size."""
  ds = task.load(split).map(lambda x, y: (preprocessing.resize(preprocessing.to_float_image(x), image_size), y))
  images, labels = [], []
  for x, y in ds.batch(512).as_numpy_iterator():
    images.append(x)
    labels.append(y)
  if not images:
    raise ValueError(f"Task {task.name!r} split {split!r} has no examples.")
  return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def embed(module, images, batch_size=256):
  """Features [N, D] of float images [N, H, W, 3] (the module's traced __call__, training=False)."""
  preprocessing.check_image_batch(images)
  out = []
  for start in range(0, len(images), batch_size):
    out.append(module(tf.constant(images[start:start + batch_size]), training=False).numpy())
  return np.concatenate(out)


def timed_embed(handle, images, batch_size=256, export_dirs=None):
  """(features, seconds including the verified module load)."""
  t0 = time.time()
  module, _ = loading.load_module(handle, export_dirs)
  features = embed(module, images, batch_size)
  return features, time.time() - t0
