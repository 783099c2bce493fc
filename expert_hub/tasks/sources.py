"""Task sources: the embedded world's tasks, any prepared TFDS dataset, and image folders.

Specs accepted wherever a task is (selection, fine-tuning, pipeline):
  world/<task>        a task of the embedded world (rendered on first use), e.g. world/shapes_novel
  tfds:<name>         a prepared TFDS dataset, e.g. tfds:cifar100 or tfds:eurosat/rgb
  folder:<path>       TFDS ImageFolder layout: <path>/<split>/<class>/<image>
  vtab/<task>         a VTAB-1k task from its prepared TFDS dataset, e.g. vtab/clevr_count (see tasks/vtab.py;
                      its labels, splits and channel tiling are VTAB's, images resized to image_size)

For TFDS and folder tasks the VTAB split names map onto the source's splits: train800 -> train[:800],
val200 -> train[800:1000], train800val200 -> train[:1000], test -> test; any other split string is passed to
TFDS as it is (e.g. "train[:5000]").
"""

import os

import tensorflow_datasets as tfds

from expert_hub.data import upstream as upstream_lib
from expert_hub.tasks import base
from expert_hub.tasks import vtab

WORLD_PREFIX, TFDS_PREFIX, FOLDER_PREFIX, VTAB_PREFIX = "world/", "tfds:", "folder:", "vtab/"
_VTAB_FROM_TRAIN = {"train800": "train[:800]", "val200": "train[800:1000]", "train800val200": "train[:1000]"}


def _map_split(split, available):
  if split in available:
    return split
  if split in _VTAB_FROM_TRAIN and "train" in available:
    return _VTAB_FROM_TRAIN[split]
  if split in base.VTAB_SPLITS:
    raise KeyError(f"Split {split!r} cannot be formed from splits {sorted(available)}; expected a 'train' "
                   "split (and 'test') or splits named after VTAB's.")
  return split  # A TFDS split expression such as "train[:5000]".


class TfdsTask(base.Task):
  """A prepared TFDS dataset with `image` and `label` features."""

  def __init__(self, tfds_name, data_dir=None, name=None, image_key="image", label_key="label", domain=None):
    self._reopen = ((tfds_name, data_dir), {"name": name, "image_key": image_key, "label_key": label_key,
                                            "domain": domain})
    self.builder = upstream_lib.get_builder(tfds_name, data_dir)
    self.name = name or tfds_name
    self.image_key, self.label_key = image_key, label_key
    self.domain = domain
    features = self.builder.info.features
    if label_key not in features or not hasattr(features[label_key], "num_classes"):
      raise ValueError(f"TFDS dataset {tfds_name!r} has no class-label feature {label_key!r}; features are "
                       f"{list(features)}.")
    self.num_classes = features[label_key].num_classes

  def _load(self, split):
    split = _map_split(split, set(self.builder.info.splits))
    ds = self.builder.as_dataset(split=split, shuffle_files=False)
    return ds.map(lambda ex: (ex[self.image_key], ex[self.label_key]))


def world_task(task, data_dir=None, image_size=32):
  """A task of the embedded world at `image_size` px (rendered into data_dir on first use)."""
  from expert_hub.data.world import catalogue  # pylint: disable=g-import-not-at-top
  if task not in catalogue.TASKS:
    import difflib  # pylint: disable=g-import-not-at-top
    near = difflib.get_close_matches(task, list(catalogue.TASKS), n=3)
    raise KeyError(f"Unknown world task {task!r}; world tasks are {sorted(catalogue.TASKS)} (nearest: {near}).")
  return TfdsTask(f"expert_hub_world/{task}_{image_size}", data_dir, name=f"world/{task}",
                  domain=catalogue.TASKS[task]["domain"])


class FolderTask(base.Task):
  """Images in `<path>/<split>/<class>/<image>` (TFDS ImageFolder layout)."""

  def __init__(self, path):
    if not os.path.isdir(path):
      raise FileNotFoundError(f"Image folder {path!r} does not exist; expected <path>/<split>/<class>/<image>.")
    splits = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if not splits:
      raise ValueError(f"Image folder {path!r} has no split folders; expected <path>/<split>/<class>/<image>.")
    classes = set()
    num_images = 0
    for s in splits:
      for c in os.listdir(os.path.join(path, s)):
        if os.path.isdir(os.path.join(path, s, c)):
          classes.add(c)
          num_images += len(os.listdir(os.path.join(path, s, c)))
    if len(classes) < 2:
      raise ValueError(f"Image folder {path!r} has {len(classes)} class folder(s) {sorted(classes)}; expected at "
                       "least 2 classes.")
    if num_images == 0:
      raise ValueError(f"Image folder {path!r} has class folders {sorted(classes)} but no images.")
    self.builder = tfds.ImageFolder(path)
    self._reopen = ((path,), {})
    self.name = f"folder:{path}"
    self.num_classes = self.builder.info.features["label"].num_classes

  def _load(self, split):
    available = set(self.builder.info.splits)
    mapped = _map_split(split, available)
    if mapped == split:
      return self.builder.as_dataset(split=split, shuffle_files=False, as_supervised=True)
    # ImageFolder has no sub-split API: slice "train" by hand (train[:800] etc.).
    ds = self.builder.as_dataset(split="train", shuffle_files=False, as_supervised=True)
    start, stop = {"train800": (0, 800), "val200": (800, 1000), "train800val200": (0, 1000)}[split]
    return ds.skip(start).take(stop - start)


def get_task(spec, data_dir=None, image_size=32):
  """Resolves a task spec (see module docstring) or passes a Task through."""
  if isinstance(spec, base.Task):
    return spec
  if not isinstance(spec, str) or not spec:
    raise ValueError(f"Task spec {spec!r} is not a non-empty string.")
  if spec.startswith(WORLD_PREFIX):
    return world_task(spec[len(WORLD_PREFIX):], data_dir, image_size)
  if spec.startswith(TFDS_PREFIX):
    return TfdsTask(spec[len(TFDS_PREFIX):], data_dir)
  if spec.startswith(FOLDER_PREFIX):
    return FolderTask(spec[len(FOLDER_PREFIX):])
  if spec.startswith(VTAB_PREFIX):
    return vtab.VtabTask(spec[len(VTAB_PREFIX):], data_dir, image_size)
  raise ValueError(f"Unknown task spec {spec!r}; expected 'world/<task>', 'tfds:<name>', 'folder:<path>' or "
                   "'vtab/<task>'.")
