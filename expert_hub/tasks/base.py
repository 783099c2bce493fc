"""Downstream tasks: a name, a number of classes, and (image, label) datasets by split.

Split names follow VTAB-1k: train800, val200, train800val200, test. Datasets yield raw images (uint8 [0, 255] or
float [0, 1], 1 or 3 channels, any size); consumers resize (see data/preprocessing.py). Labels are integer class
ids in [0, num_classes): ArrayTask checks its arrays when it is built, `Task.load` checks every label it yields
and load_arrays checks what it reads, so a label outside the task's classes is an error naming it, never a
silently wrong score.

load_arrays reads a split into memory at a bounded size, the HyperRule's resolution at most (fine-tuning uses it):
one large photo among small images does not make every image large.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from expert_hub.data import preprocessing
from expert_hub.transfer import hyperrule

VTAB_SPLITS = ("train800", "val200", "train800val200", "test")
# The largest side load_arrays keeps when no resize is given: the HyperRule's resize for large images (512).
MAX_RULE_RESIZE = max(hyperrule.get_resolution(1, 1)[0], hyperrule.get_resolution(1 << 16, 1 << 16)[0])


def check_labels(labels, num_classes=None, where="labels"):
  """Raises ValueError naming the first label that is not an integer class id in [0, num_classes).

  Args:
    labels: [N] array-like.
    num_classes: the number of classes, or None to check only that labels are non-negative integers.
    where: what the labels belong to, quoted in the error (e.g. "ArrayTask split 'test'").
  """
  labels = np.asarray(labels)
  allowed = f"[0, {num_classes})" if num_classes is not None else "[0, num_classes)"
  if not np.issubdtype(labels.dtype, np.integer):
    if np.issubdtype(labels.dtype, np.floating):
      bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
      example = (f" (e.g. {labels[bad[0]].item()!r} at index {bad[0]})" if bad.size
                 else " (integral values: convert them with labels.astype(np.int64))")
    else:
      first = labels.flat[0] if labels.size else None
      first = first.item() if isinstance(first, np.generic) else first  # 'cat', not np.str_('cat')
      example = f" (e.g. {first!r} at index 0)" if labels.size else ""
    raise ValueError(f"{where}: labels have dtype {labels.dtype}{example}; expected integer class ids in "
                     f"{allowed}.")
  if not labels.size:
    return
  negative = np.flatnonzero(labels < 0)
  if negative.size:
    raise ValueError(f"{where}: label {labels[negative[0]]} at index {negative[0]} is negative ({negative.size} "
                     f"negative label(s)); expected integer class ids in {allowed}.")
  if num_classes is not None:
    over = np.flatnonzero(labels >= num_classes)
    if over.size:
      raise ValueError(f"{where}: label {labels[over[0]]} at index {over[0]} is not below num_classes="
                       f"{num_classes} ({over.size} label(s) out of range); expected integer class ids in "
                       f"{allowed}.")


def check_images(images, where="images"):
  """Raises ValueError unless images are [N, H, W, 1 or 3] uint8 [0, 255] or float [0, 1] (finite)."""
  shape = tuple(images.shape)
  if len(shape) != 4:
    raise ValueError(f"{where}: images have shape {shape} (rank {len(shape)}); expected [num_images, height, "
                     "width, channels].")
  if shape[-1] not in (1, 3):
    raise ValueError(f"{where}: images have {shape[-1]} channels (shape {shape}); expected 1 (grey) or 3 (RGB).")
  if min(shape[1:3]) < 1:
    raise ValueError(f"{where}: images have shape {shape}; expected a height and width of at least 1.")
  dtype = images.dtype
  if dtype == np.uint8:
    return
  if not np.issubdtype(dtype, np.floating):
    hint = " (values 0-255? convert with .astype(np.uint8); 16-bit? scale to 0-255 first)" \
        if np.issubdtype(dtype, np.integer) else ""
    raise ValueError(f"{where}: images have dtype {dtype}{hint}; expected uint8 in [0, 255] or float in [0, 1].")
  if not images.size:
    return
  lo, hi = float(np.min(images)), float(np.max(images))  # NaN propagates through min/max: no N-sized temporary
  if math.isnan(lo) or math.isnan(hi):
    raise ValueError(f"{where}: float images contain NaN; expected finite values in [0, 1].")
  if lo < 0.0 or hi > 1.0:
    hint = " (0-255 floats? divide by 255 or pass uint8)" if hi > 1.0 and hi <= 255.0 and lo >= 0.0 else ""
    raise ValueError(f"{where}: float images have values in [{lo:g}, {hi:g}]{hint}; expected float in [0, 1] "
                     "or uint8 in [0, 255].")


def _check_num_classes(num_classes, where):
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f"{where}: num_classes={num_classes!r}; expected an integer of at least 2.")
  return int(num_classes)


class Task:
  """Base class. Subclasses set name/num_classes and implement `_load(split)`.

  Tasks pickle (Beam ships them to its workers). A task that reads through a TFDS builder, which does not
  unpickle, sets `_reopen = (args, kwargs)` of its constructor, and is opened again where it is unpickled.
  """

  name = "task"
  num_classes = 0
  domain = None
  # The training augmentations that keep this task's labels (preprocessing.AUGMENTATIONS): a horizontal flip
  # changes a left/right position or a mirror-asymmetric class (letters), a crop can move an object across a
  # grid cell or cut one out of a count. Fine-tuning applies only these.
  augmentations = ("flip", "crop")
  _reopen = None

  def __reduce_ex__(self, protocol):
    if self._reopen is None:
      return super().__reduce_ex__(protocol)
    args, kwargs = self._reopen
    return (functools.partial(type(self), **kwargs), tuple(args))

  def load(self, split):
    """tf.data.Dataset of (image, label) for `split`; a label outside [0, num_classes) fails the iteration.

    Raises (while iterating):
      tf.errors.InvalidArgumentError naming the task, the split and the label ("Task t, split test: a label is
      outside [0, 3):] [7]").
    """
    ds = self._load(split)
    if self.num_classes < 1:
      return ds
    num_classes, where = int(self.num_classes), f"Task {self.name}, split {split}"  # no quotes: TF escapes them

    def check(image, label):
      ok = tf.reduce_all(tf.logical_and(label >= 0, tf.cast(label, tf.int64) < num_classes))
      assertion = tf.debugging.Assert(ok, [f"{where}: a label is outside [0, {num_classes}):", label])
      with tf.control_dependencies([assertion]):
        return image, tf.identity(label)
    return ds.map(check)

  def _load(self, split):
    raise NotImplementedError

  def arrays(self, split):
    """(images [N, H, W, 3] uint8/float, labels [N]) as numpy; images must share a size (else load_arrays)."""
    images, labels = [], []
    for x, y in self._load(split).as_numpy_iterator():
      images.append(x)
      labels.append(y)
    if not images:
      raise ValueError(f"Task {self.name!r} split {split!r} is empty.")
    labels = np.asarray(labels)
    check_labels(labels, self.num_classes or None, f"Task {self.name!r} split {split!r}")
    return np.stack(images), labels.astype(np.int64)

  def describe(self):
    return {"task": self.name, "num_classes": self.num_classes, "domain": self.domain,
            "augmentations": list(self.augmentations)}


class ArrayTask(Task):
  """A task from in-memory arrays: {split: (images [N, H, W, C], labels [N])}.

  Images are uint8 in [0, 255] or float in [0, 1], with 1 or 3 channels; labels are integer class ids in
  [0, num_classes). Anything else (0-255 floats, uint16, NaN, a label >= num_classes) is refused here, with the
  split and the value, rather than mis-scaled or mis-scored later.

  Args:
    splits: {split name: (images, labels)}, at least one split, none empty.
    name: the task's name (selection's cache and results are keyed by it).
    num_classes: None to infer it (the largest label + 1), otherwise an integer >= 2 above every label.
    augmentations: the training augmentations that keep the labels (Task.augmentations).
  """

  def __init__(self, splits, name="arrays", num_classes=None, augmentations=("flip", "crop")):
    if not splits:
      raise ValueError("ArrayTask needs at least one split: {'train800val200': (images, labels), ...}.")
    if not isinstance(name, str) or not name:
      raise ValueError(f"ArrayTask name={name!r}; expected a non-empty string.")
    if num_classes is not None:
      num_classes = _check_num_classes(num_classes, f"ArrayTask {name!r}")
    self.name = name
    self.augmentations = preprocessing.check_augmentations(augmentations, f"ArrayTask {name!r} augmentations")
    self._splits = {}
    for split, (images, labels) in splits.items():
      images, labels = np.asarray(images), np.asarray(labels)
      where = f"ArrayTask {name!r} split {split!r}"
      check_images(images, where)
      if images.shape[0] == 0:
        raise ValueError(f"{where} has no images (shape {images.shape}); expected at least one.")
      if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}: labels have shape {labels.shape}; expected ({images.shape[0]},) to match the "
                         "images.")
      check_labels(labels, num_classes, where)
      self._splits[split] = (images, labels)
    if num_classes is None:
      num_classes = int(max(int(labels.max()) for _, labels in self._splits.values()) + 1)
      if num_classes < 2:
        raise ValueError(f"ArrayTask {name!r} has {num_classes} class (every label is 0); expected at least 2.")
    self.num_classes = num_classes

  def _load(self, split):
    if split not in self._splits:
      raise KeyError(f"ArrayTask {self.name!r} has no split {split!r}; it has {sorted(self._splits)}.")
    images, labels = self._splits[split]
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _rgb(image, where):
  """One image [H, W, 1 or 3] -> [H, W, 3] uint8 or float32, checked like ArrayTask's."""
  check_images(image[None], where)
  if image.dtype != np.uint8:
    image = image.astype(np.float32)
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _resized(image, height, width):
  """[h, w, 3] -> [height, width, 3] in the same dtype (bilinear with antialiasing, as preprocessing.resize)."""
  out = tf.image.resize(image, [height, width], method="bilinear", antialias=True).numpy()
  if image.dtype == np.uint8:
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def load_arrays(task, split, resize=None):
  """A split as (images [N, H, W, 3], labels [N] int64) in memory, at the HyperRule's resolution at most.

  Images are read, checked and (if larger) shrunk one at a time, so memory holds N images of at most
  `resize` (default MAX_RULE_RESIZE, 512) px a side, whatever the source's largest image. Images that already
  share one size within that bound are returned as they are. Otherwise every image is brought to S x S with
  S = min(bound, isqrt(median image area)): the size of the split's typical image, so that
  hyperrule.get_resolution of the result is the one of its typical image (160/128 for small images, 512/480 for
  others), never the one of its largest. Fine-tuning resizes to a square anyway (preprocessing.train_augment).

  Args:
    task: a Task.
    split: the split to read.
    resize: the largest side to keep (FinetuneConfig.resize), or None for the HyperRule's largest.

  Returns:
    (images, labels): uint8 images when every image is uint8, else float32 in [0, 1].

  Raises:
    ValueError: an empty split, an image that is not uint8 / float [0, 1] with 1 or 3 channels, or a label
      outside [0, task.num_classes), each named with the task, split and index.
  """
  bound = int(resize) if resize else MAX_RULE_RESIZE
  if bound < 1:
    raise ValueError(f"resize={resize!r}; expected a positive side in pixels or None.")
  images, sizes, labels = [], [], []
  for i, (x, y) in enumerate(task._load(split).as_numpy_iterator()):  # pylint: disable=protected-access
    x = _rgb(np.asarray(x), f"Task {task.name!r} split {split!r} image {i}")
    h, w = x.shape[:2]
    sizes.append((h, w))
    if h > bound or w > bound:  # shrink now, before the next image is read: memory stays bounded
      x = _resized(x, min(h, bound), min(w, bound))
    images.append(x)
    labels.append(y)
  if not images:
    raise ValueError(f"Task {task.name!r} split {split!r} has no examples.")
  labels = np.asarray(labels)
  check_labels(labels, task.num_classes or None, f"Task {task.name!r} split {split!r}")
  floating = any(x.dtype != np.uint8 for x in images)
  dtype = np.float32 if floating else np.uint8
  if len(set(sizes)) == 1 and max(sizes[0]) <= bound:
    side = None
  else:
    side = max(1, min(bound, math.isqrt(int(np.median([h * w for h, w in sizes])))))
  out = np.empty([len(images)] + ([side, side] if side else list(sizes[0])) + [3], dtype)
  for i, x in enumerate(images):
    images[i] = None  # release each source image as soon as it is copied
    if floating and x.dtype == np.uint8:
      x = x.astype(np.float32) / 255.0
    if side and x.shape[:2] != (side, side):
      x = _resized(x, side, side)
    out[i] = x
  return out, labels.astype(np.int64)
