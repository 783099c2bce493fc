"""Task fingerprints: the identity of one split of a task by its content (decoded images and labels, in order).

Anything computed from a task's images (cached embeddings, a selection.json) is reused only for the data it was
computed from, and a task's name does not say that: a `folder:` task gains images, a TFDS dataset is prepared
again, two ArrayTasks share the default name. The fingerprint is

    sha256( FORMAT, image dtype,
            per example in order: farmhash64 of the decoded image's bytes (tf.fingerprint, [8] bytes),
            per example in order: the image's shape (int64 little-endian),
            per example in order: the label (int64 little-endian) )

computed inside the tf.data pass that reads the images (see `fingerprint_fn`, used by selection/embed.py while
it resizes them for embedding), so it costs no second read there. tf.fingerprint's farmhash64 is TensorFlow's
stable fingerprint (the same on every platform); were it ever to change, a fingerprint would change with it, and
cached work would be recomputed, never reused for other data. The result does not depend on batching.

A split's fingerprint is also remembered per task object (`split_fingerprint` reads the task only once per
process); a task object's data is taken to be fixed while it lives (FolderTask lists its files when it is made).
"""

import hashlib
import logging
import weakref

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)
FORMAT = "expert_hub.task_fingerprint/1"
_BATCH = 512
_MEMO = weakref.WeakKeyDictionary()  # task -> {split: record}


def fingerprint_fn(image):
  """(farmhash64 bytes [8] uint8, shape [3] int64) of one decoded image, for use inside a tf.data map."""
  image = tf.convert_to_tensor(image)
  return tf.fingerprint(tf.expand_dims(image, 0))[0], tf.cast(tf.shape(image), tf.int64)


class Fingerprinter:
  """Accumulates (image fingerprint, shape, label) batches in order; `record()` gives the split's identity."""

  def __init__(self, image_dtype):
    self.image_dtype = tf.as_dtype(image_dtype).name
    self._hashes, self._shapes, self._labels = [], [], []

  def update(self, hashes, shapes, labels):
    """Adds one batch: hashes [B, 8] uint8 and shapes [B, rank] from fingerprint_fn, labels [B]."""
    hashes, shapes, labels = np.asarray(hashes, np.uint8), np.asarray(shapes), np.asarray(labels)
    if shapes.ndim != 2 or shapes.shape[1] != 3:
      raise ValueError(f"Image shapes {shapes.shape[1:]} in a fingerprint batch; expected rank-3 images "
                       "[height, width, channels].")
    self._hashes.append(hashes.reshape(-1, 8))
    self._shapes.append(shapes.astype("<i8"))
    self._labels.append(labels.astype("<i8").reshape(-1))

  @property
  def num_examples(self):
    return int(sum(len(l) for l in self._labels))

  def record(self):
    """{"fingerprint": sha256 hex, "num_examples", "image_dtype"} of everything added so far."""
    h = hashlib.sha256(f"{FORMAT}|{self.image_dtype}|".encode())
    for parts in (self._hashes, self._shapes, self._labels):
      for part in parts:
        h.update(np.ascontiguousarray(part).tobytes())
      h.update(b"|")
    return {"fingerprint": h.hexdigest(), "num_examples": self.num_examples, "image_dtype": self.image_dtype}


def remember(task, split, record):
  """Keeps a split's record for this task object (split_fingerprint then needs no read)."""
  try:
    _MEMO.setdefault(task, {})[split] = dict(record)
  except TypeError:  # a task class that is not hashable or weak-referenceable: nothing is remembered
    pass


def _remembered(task, split):
  try:
    return _MEMO.get(task, {}).get(split)
  except TypeError:
    return None


def split_fingerprint(task, split):
  """{"fingerprint", "num_examples", "image_dtype"} of a task split: remembered for this task object, else
  computed by one pass over `task.load(split)` (images are decoded, not resized).

  Raises:
    ValueError: the split has no examples, or images that are not [height, width, channels].
  """
  known = _remembered(task, split)
  if known is not None:
    return dict(known)
  ds = task.load(split)
  fp = Fingerprinter(ds.element_spec[0].dtype)
  ds = ds.map(lambda x, y: (*fingerprint_fn(x), y))
  for hashes, shapes, labels in ds.batch(_BATCH).as_numpy_iterator():
    fp.update(hashes, shapes, labels)
  if not fp.num_examples:
    raise ValueError(f"Task {task.name!r} split {split!r} has no examples.")
  record = fp.record()
  remember(task, split, record)
  log.info("Fingerprinted task %s split %s: %d examples, %s", task.name, split, record["num_examples"],
           record["fingerprint"][:16])
  return record


def task_identity(task, split, record=None):
  """What a result computed from a task split depends on: {"name", "num_classes", "split", "num_examples",
  "fingerprint"}; `record` is the split's fingerprint record when already known (else split_fingerprint)."""
  record = record or split_fingerprint(task, split)
  return {"name": task.name, "num_classes": int(task.num_classes), "split": split,
          "num_examples": int(record["num_examples"]), "fingerprint": record["fingerprint"]}
