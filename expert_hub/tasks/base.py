"""Downstream tasks: a name, a number of classes, and (image, label) datasets by split.

Split names follow VTAB-1k: train800, val200, train800val200, test. Datasets yield raw images (uint8 or
float, 1 or 3 channels, any size); consumers resize (see data/preprocessing.py).
"""

import functools

import numpy as np
import tensorflow as tf

VTAB_SPLITS = ("train800", "val200", "train800val200", "test")


class Task:
  """Base class. Subclasses set name/num_classes and implement `_load(split)`.

  Tasks pickle (Beam ships them to its workers). A task that reads through a TFDS builder, which does not
  unpickle, sets `_reopen = (args, kwargs)` of its constructor, and is opened again where it is unpickled.
  """

  name = "task"
  num_classes = 0
  domain = None
  _reopen = None

  def __reduce_ex__(self, protocol):
    if self._reopen is None:
      return super().__reduce_ex__(protocol)
    args, kwargs = self._reopen
    return (functools.partial(type(self), **kwargs), tuple(args))

  def load(self, split):
    """tf.data.Dataset of (image, label) for `split`."""
    return self._load(split)

  def _load(self, split):
    raise NotImplementedError

  def arrays(self, split):
    """(images [N, H, W, 3] uint8/float, labels [N]) as numpy; images must share a size."""
    images, labels = [], []
    for x, y in self.load(split).as_numpy_iterator():
      images.append(x)
      labels.append(y)
    if not images:
      raise ValueError(f"Task {self.name!r} split {split!r} is empty.")
    return np.stack(images), np.asarray(labels, np.int64)

  def describe(self):
    return {"task": self.name, "num_classes": self.num_classes, "domain": self.domain}


class ArrayTask(Task):
  """A task from in-memory arrays: {split: (images [N, H, W, C], labels [N])}."""

  def __init__(self, splits, name="arrays", num_classes=None):
    if not splits:
      raise ValueError("ArrayTask needs at least one split: {'train800val200': (images, labels), ...}.")
    self.name = name
    self._splits = {}
    all_labels = []
    for split, (images, labels) in splits.items():
      images, labels = np.asarray(images), np.asarray(labels)
      if images.ndim != 4:
        raise ValueError(f"ArrayTask split {split!r}: images have shape {images.shape} (rank {images.ndim}); "
                         "expected [num_images, height, width, channels].")
      if images.shape[-1] not in (1, 3):
        raise ValueError(f"ArrayTask split {split!r}: images have {images.shape[-1]} channels (shape "
                         f"{images.shape}); expected 1 (grey) or 3 (RGB).")
      if labels.shape != (images.shape[0],):
        raise ValueError(f"ArrayTask split {split!r}: labels have shape {labels.shape}; expected "
                         f"({images.shape[0]},) to match the images.")
      if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"ArrayTask split {split!r}: labels must be non-negative integers, got "
                         f"dtype {labels.dtype}.")
      self._splits[split] = (images, labels)
      all_labels.append(labels)
    self.num_classes = num_classes or int(max(int(l.max()) for l in all_labels if l.size) + 1)
    if self.num_classes < 2:
      raise ValueError(f"ArrayTask {name!r} has {self.num_classes} class; expected at least 2.")

  def _load(self, split):
    if split not in self._splits:
      raise KeyError(f"ArrayTask {self.name!r} has no split {split!r}; it has {sorted(self._splits)}.")
    images, labels = self._splits[split]
    return tf.data.Dataset.from_tensor_slices((images, labels))
