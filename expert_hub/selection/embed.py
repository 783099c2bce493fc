"""Embedding a task's images with an expert module: batched calls of the module's traced function.

Several experts of one pack ("<pack path>#<expert>" handles, see group_packed) embed together with
embed_pack, which uses the pack's `embed_all` (every expert in one graph, models/stacking.py) when it has one.
"""

import numpy as np
import tensorflow as tf

from expert_hub.data import preprocessing
from expert_hub.tasks import fingerprint

# embed_pack's default cap on stacked activations: as many pixels as one expert's embed() of 256 images at 224 px
# (what selection at 224 px already holds), i.e. 256 stacked rows at 224 px, 12,544 at 32 px.
DEFAULT_STACKED_PIXELS = 256 * 224 * 224
# How load_split turns a task's images into a module's inputs (besides the size): part of every embedding
# cache key and selection identity. Change it whenever preprocessing.to_float_image or .resize computes
# something else, so that no cached features of the old preprocessing are reused.
PREPROCESSING = "to_float_image(uint8/255, float as is, grey tiled to RGB); resize(bilinear, antialias)"


def load_split(task, split, image_size):
  """(float32 images [N, S, S, 3] in [0, 1], labels [N], fingerprint record) of a task split, resized to
  image_size (PREPROCESSING) in one pass that also fingerprints the decoded images and labels (tasks/
  fingerprint.py; remembered for this task object)."""
  ds = task.load(split)
  fp = fingerprint.Fingerprinter(ds.element_spec[0].dtype)
  ds = ds.map(lambda x, y: (preprocessing.resize(preprocessing.to_float_image(x), image_size), y,
                            *fingerprint.fingerprint_fn(x)))
  images, labels = [], []
  for x, y, hashes, shapes in ds.batch(512).as_numpy_iterator():
    images.append(x)
    labels.append(y)
    fp.update(hashes, shapes, y)
  if not images:
    raise ValueError(f"Task {task.name!r} split {split!r} has no examples.")
  record = fp.record()
  fingerprint.remember(task, split, record)
  return np.concatenate(images), np.concatenate(labels).astype(np.int64), record


def prepare_images(task, split, image_size):
  """(float32 images [N, S, S, 3] in [0, 1], labels [N]) of a task split, resized to image_size."""
  images, labels, _ = load_split(task, split, image_size)
  return images, labels


def embed(module, images, batch_size=256):
  """Features [N, D] of float images [N, H, W, 3] (the module's traced __call__, training=False)."""
  preprocessing.check_image_batch(images)
  out = []
  for start in range(0, len(images), batch_size):
    out.append(module(tf.constant(images[start:start + batch_size]), training=False).numpy())
  return np.concatenate(out)


def group_packed(paths):
  """Splits resolved module paths into packs and single modules, keeping first-seen order.

  Args:
    paths: resolved paths (registry.Registry.resolve / ModuleSession.module's second value); a packed expert's
      is "<pack path>#<expert>".

  Returns:
    ({pack path: [expert, ...]}, [other paths]).
  """
  packs, singles = {}, []
  for path in paths:
    if "#" in path:
      pack, expert = path.rsplit("#", 1)
      packs.setdefault(pack, []).append(expert)
    else:
      singles.append(path)
  return packs, singles


def has_embed_all(module):
  """True for a loaded pack exported with `embed_all` (older packs and single modules lack it)."""
  return all(hasattr(module, a) for a in ("embed_all", "embed_all_experts", "embed_all_experts_per_graph"))


def embed_pack(pack_module, images, batch_size=256, experts=None, max_stacked_batch=None):
  """{expert name: features [N, D]} of float images [N, H, W, 3] for experts of one loaded pack.

  With the pack's `embed_all` (and at least half of its experts asked for, since it always computes all of
  them) every expert runs in one graph on each batch; otherwise each expert's own `__call__` runs in turn, as
  embed() does. Both give the same features up to float rounding.

  Args:
    pack_module: a loaded pack (ModuleSession.module(pack path)[0], or the `.pack` of a loaded packed expert).
      A module that is not a pack (no `experts`) is embedded as one expert, keyed None.
    images: float32 [N, H, W, 3] in [0, 1].
    batch_size: images per call (of one expert, or of embed_all for all of them).
    experts: names to return (default: all the pack's experts).
    max_stacked_batch: a cap on stacked rows per embed_all call (experts per graph x images), i.e. on its
      memory; default max(batch_size, DEFAULT_STACKED_PIXELS // (H * W)). Calls take min(batch_size,
      max_stacked_batch // experts per graph) images; if not even one fits, experts run one at a time.

  Raises:
    KeyError: an expert the pack does not hold.
  """
  if not hasattr(pack_module, "experts"):
    return {None: embed(pack_module, images, batch_size)}
  preprocessing.check_image_batch(images)
  held = [n.decode() for n in pack_module.experts.numpy()]
  wanted = list(held if experts is None else experts)
  missing = [n for n in wanted if n not in held]
  if missing:
    raise KeyError(f"The pack holds no expert {missing}; it holds {held}.")
  if has_embed_all(pack_module) and 2 * len(set(wanted)) >= len(held):
    per_graph = int(pack_module.embed_all_experts_per_graph.numpy())
    cap = max_stacked_batch
    if cap is None:
      cap = max(batch_size, DEFAULT_STACKED_PIXELS // (int(images.shape[1]) * int(images.shape[2])))
    images_per_call = min(batch_size, cap // per_graph)
    if images_per_call >= 1:
      order = [n.decode() for n in pack_module.embed_all_experts.numpy()]
      out = [pack_module.embed_all(tf.constant(images[start:start + images_per_call])).numpy()
             for start in range(0, len(images), images_per_call)]
      features = np.concatenate(out, axis=1)
      return {name: features[order.index(name)] for name in wanted}
  return {name: embed(getattr(pack_module, name), images, batch_size) for name in wanted}
