"""Task sources: the embedded world's tasks, any prepared TFDS dataset, and image folders.

Specs accepted wherever a task is (selection, fine-tuning, pipeline, run_vtab):
  world/<task>        a task of the embedded world (rendered on first use), e.g. world/shapes_novel
  tfds:<name>         a prepared TFDS dataset, e.g. tfds:cifar100 or tfds:eurosat/rgb
  folder:<path>       TFDS ImageFolder layout: <path>/<split>/<class>/<image>
  vtab/<task>         a VTAB-1k task from its prepared TFDS dataset, e.g. vtab/clevr_count (see tasks/vtab.py;
                      its labels, splits and channel tiling are VTAB's, images resized to image_size)

For TFDS and folder tasks the VTAB split names map onto the source's splits: train800 -> train[:800],
val200 -> train[800:1000], train800val200 -> train[:1000], test -> test; for TFDS any other split string is
passed on as it is (e.g. "train[:5000]"), a folder task knows only its split folders.

Image folders are read as they come from cameras, zip files and notebooks (FolderTask has the details):
  - skipped silently: hidden entries (.DS_Store, ._x.jpg AppleDouble files, .ipynb_checkpoints, .git),
    __MACOSX, Thumbs.db and desktop.ini, at every level;
  - skipped with a warning that names each file, why, and their count: anything else that is not an image
    Pillow reads (a .txt, a zero-byte or corrupt file, a folder inside a class folder, a file beside the class
    folders), at construction from its header; an image that then fails to decode (truncated data) when read;
  - read, whatever the extension: JPEG, PNG, GIF, BMP, WebP, TIFF and the other formats Pillow decodes, as RGB
    (grey and palette converted, 16-bit grey scaled, alpha composited on white), one image at a time, each
    shrunk to at most FolderTask's max_side (1024) px a side: a 6000x4000 photo costs one image's memory,
    not every image's;
  - an error naming it: no split folder, fewer than 2 class folders, or a class folder with no valid image.
Class names are the class folder names, sorted; labels are their indices.
"""
import logging
import os
import random

import numpy as np
import tensorflow as tf

from expert_hub.data import preprocessing
from expert_hub.data import upstream as upstream_lib
from expert_hub.tasks import base
from expert_hub.tasks import vtab

WORLD_PREFIX, TFDS_PREFIX, FOLDER_PREFIX, VTAB_PREFIX = "world/", "tfds:", "folder:", "vtab/"
_VTAB_FROM_TRAIN = {"train800": "train[:800]", "val200": "train[800:1000]", "train800val200": "train[:1000]"}
_FROM_TRAIN = {"train800": (0, 800), "val200": (800, 1000), "train800val200": (0, 1000)}
# Entries of an image folder that are never images: macOS, Windows and Jupyter clutter (with any leading ".").
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
# Twice the HyperRule's largest resize (512): for aspect ratios up to 2:1 the shrunk image still has the pixels
# fine-tuning at 512 x 512 uses, while a decoded image stays under 3 MB.
DEFAULT_MAX_SIDE = 1024
log = logging.getLogger(__name__)


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

  def __init__(self, tfds_name, data_dir=None, name=None, image_key="image", label_key="label", domain=None,
               augmentations=("flip", "crop")):
    self._reopen = ((tfds_name, data_dir), {"name": name, "image_key": image_key, "label_key": label_key,
                                            "domain": domain, "augmentations": augmentations})
    self.augmentations = preprocessing.check_augmentations(augmentations, f"Task {name or tfds_name!r}")
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


def check_world_task(task):
  """Returns the world catalogue's entry of `task`; raises KeyError naming the world's tasks when unknown."""
  from expert_hub.data.world import catalogue  # pylint: disable=g-import-not-at-top
  if task not in catalogue.TASKS:
    import difflib  # pylint: disable=g-import-not-at-top
    near = difflib.get_close_matches(task, list(catalogue.TASKS), n=3)
    raise KeyError(f"Unknown world task {task!r}; world tasks are {sorted(catalogue.TASKS)} (nearest: {near}).")
  return catalogue.TASKS[task]


def world_task(task, data_dir=None, image_size=32):
  """A task of the embedded world at `image_size` px (rendered into data_dir on first use)."""
  entry = check_world_task(task)
  return TfdsTask(f"expert_hub_world/{task}_{image_size}", data_dir, name=f"world/{task}",
                  domain=entry["domain"], augmentations=entry["augmentations"])


class FolderTask(base.Task):
  """Images in `<path>/<split>/<class>/<image>` (TFDS ImageFolder layout), decoded by Pillow one at a time.

  What counts, and what happens to the rest (see the module docstring):
    - split and class folders: every sub-folder, except hidden ones (a leading ".": .ipynb_checkpoints, .git)
      and __MACOSX; class names are the class folder names over all splits, sorted, and a label is the index of
      its class in that list (task.class_names);
    - images: every file Pillow opens (JPEG, PNG, GIF, BMP, WebP, TIFF, ...; whatever the extension) is an image
      of its class. Hidden files (.DS_Store, ._x.jpg) and Thumbs.db / desktop.ini are ignored silently; any
      other file (a .txt, a zero-byte or corrupt file, a folder inside a class folder) is skipped with one
      warning that names each skipped file, why, and their count (also in `task.skipped`). An image that opens
      but fails to decode when it is read (truncated data) is skipped then, with a warning naming it;
    - pixels: RGB. Grey, palette and CMYK images are converted, 16-bit greyscale scaled to 8 bits, and an alpha
      channel is composited on white (what an image viewer shows) rather than dropped (which would show
      transparent pixels in whatever colour they were saved with, often black); 32-bit integer or float pixels
      are skipped (no fixed range); the EXIF orientation is applied; of an animated image only the first frame
      is read; an image whose longer side exceeds `max_side` is shrunk to it (aspect kept; a JPEG is decoded
      at 1/2, 1/4 or 1/8 scale already), so no image the task yields holds more than max_side^2 x 3 bytes,
      whatever the photo's size;
    - the order: per split, sorted by class and file name, then shuffled with random.Random(split) (as TFDS
      ImageFolder does), so train800 / val200 slices of "train" are spread over the classes and reproducible.

  Raises (when built):
    FileNotFoundError: no folder at `path`.
    ValueError: no split folder, fewer than 2 classes, no image at all, or a class folder with no valid image
      (each named).
  """

  def __init__(self, path, max_side=DEFAULT_MAX_SIDE):
    if not os.path.isdir(path):
      raise FileNotFoundError(f"Image folder {path!r} does not exist; expected <path>/<split>/<class>/<image>.")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
      raise ValueError(f"max_side={max_side!r}; expected a positive number of pixels.")
    _pil()  # fail now, not at the first image, where Pillow is missing
    self._reopen = ((path,), {"max_side": max_side})
    self.path, self.max_side = path, max_side
    self.name = f"folder:{path}"
    self.class_names, self.files, self.skipped = _scan_folder(path)
    self.num_classes = len(self.class_names)
    self._decode_failures = set()

  def _load(self, split):
    if split in self.files:
      files = self.files[split]
    else:
      _map_split(split, set(self.files))  # raises for a VTAB split that cannot be formed
      if split not in _FROM_TRAIN:
        raise KeyError(f"Image folder {self.path!r} has no split {split!r}; it has {sorted(self.files)} (and "
                       f"{sorted(_FROM_TRAIN)} when it has 'train').")
      start, stop = _FROM_TRAIN[split]
      files = self.files["train"][start:stop]  # slices of the shuffled list, so val200 never overlaps train800
    spec = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64))
    return tf.data.Dataset.from_generator(lambda: self._examples(files), output_signature=spec)

  def _examples(self, files):
    for file, label in files:
      try:
        image = decode_image_file(file, self.max_side)
      except Exception as e:  # pylint: disable=broad-except  (any decoder error of one file skips that file)
        if file not in self._decode_failures:
          self._decode_failures.add(file)
          log.warning("Image folder %s: skipped %s, which failed to decode (%s: %s).", self.path, file,
                      type(e).__name__, e)
        continue
      yield image, label


def _ignored(name):
  return name.startswith(".") or name in _IGNORED_NAMES


def _probe(file):
  """Why `file` is not an image (a short reason), or None: its header is read, not its pixels."""
  Image = _pil()[0]  # pylint: disable=invalid-name
  try:
    if os.path.getsize(file) == 0:
      return "empty file (0 bytes)"
    with Image.open(file) as im:
      im.size  # pylint: disable=pointless-statement  (the header has been parsed)
  except Image.UnidentifiedImageError:
    return "not an image Pillow can read"
  except Exception as e:  # pylint: disable=broad-except  (DecompressionBombError, OSError, ...)
    return f"{type(e).__name__}: {e}"
  return None


def _scan_folder(path):
  """(sorted class names, {split: [(file, label)]} shuffled per split, [(skipped file, why)])."""
  splits = [d for d in sorted(os.listdir(path)) if not _ignored(d) and os.path.isdir(os.path.join(path, d))]
  if not splits:
    raise ValueError(f"Image folder {path!r} has no split folders; expected <path>/<split>/<class>/<image>.")
  skipped, found, loose, ignored = [], {}, {}, 0
  for split in splits:
    for entry in sorted(os.listdir(os.path.join(path, split))):
      full = os.path.join(path, split, entry)
      if _ignored(entry):
        ignored += 1
      elif not os.path.isdir(full):
        loose.setdefault(split, []).append(full)
      else:
        images = found.setdefault((split, entry), [])
        for name in sorted(os.listdir(full)):
          file = os.path.join(full, name)
          if _ignored(name):
            ignored += 1
          elif os.path.isdir(file):
            skipped.append((file, "a folder inside a class folder; images go directly in <split>/<class>/"))
          else:
            why = _probe(file)
            if why is None:
              images.append(file)
            else:
              skipped.append((file, why))
  class_names = sorted({c for _, c in found})
  if len(class_names) < 2:
    hint = ""
    if loose:
      split, files = next(iter(loose.items()))
      hint = (f" Split folder {split!r} holds files directly ({os.path.basename(files[0])!r}, ...): is {path!r} "
              "one split (<path>/<class>/<image>) rather than <path>/<split>/<class>/<image>?")
    raise ValueError(f"Image folder {path!r} has {len(class_names)} class folder(s) {class_names}; expected at "
                     f"least 2 classes in <path>/<split>/<class>/<image>.{hint}")
  for split, files in loose.items():
    skipped += [(f, "a file outside the class folders of its split") for f in files]
  if skipped:
    log.warning("Image folder %s: skipped %d file(s) that are not readable images: %s", path, len(skipped),
                "; ".join(f"{f} ({why})" for f, why in skipped))
  if ignored:
    log.info("Image folder %s: ignored %d hidden or system entries (.DS_Store, ._*, __MACOSX, ...).", path,
             ignored)
  if not any(found.values()):
    raise ValueError(f"Image folder {path!r} has class folders {class_names} but no images"
                     f"{f' ({len(skipped)} file(s) skipped, see the warning)' if skipped else ''}.")
  empty = [os.path.join(split, c) for (split, c), images in found.items() if not images]
  if empty:
    raise ValueError(f"Image folder {path!r}: class folder(s) {empty} hold no valid image"
                     f"{f' ({len(skipped)} file(s) skipped, see the warning)' if skipped else ''}; every class "
                     "folder needs at least one image, or remove it.")
  label = {c: i for i, c in enumerate(class_names)}
  files = {}
  for (split, c), images in found.items():  # found is filled in sorted (split, class) order
    files.setdefault(split, []).extend((f, label[c]) for f in images)
  for split, examples in files.items():
    random.Random(split).shuffle(examples)  # deterministic: str seeds do not depend on PYTHONHASHSEED
  return class_names, files, skipped


def _pil():
  try:
    from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("folder: tasks decode images with Pillow (installed with matplotlib, an expert_hub "
                      "dependency); pip install pillow.") from e
  return Image, ImageOps


_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def decode_image_file(file, max_side=DEFAULT_MAX_SIDE):
  """An image file -> uint8 [H, W, 3] RGB, H and W at most max_side (see FolderTask for the conversions).

  Raises:
    ValueError: a pixel mode with no fixed range (32-bit integer or float pixels). Pillow's own errors (a
      corrupt or truncated file, an image over Image.MAX_IMAGE_PIXELS) pass through.
  """
  Image, ImageOps = _pil()  # pylint: disable=invalid-name
  with Image.open(file) as opened:
    opened.draft(None, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when that is still larger
    im = ImageOps.exif_transpose(opened)
  if im.mode in _SIXTEEN_BIT_GREY:
    grey = (np.asarray(im, np.uint32) * 255 + 32767) // 65535
    im = Image.fromarray(grey.astype(np.uint8), "L")
  elif im.mode in ("I", "F"):
    raise ValueError(f"pixel mode {im.mode!r} (32-bit {'integer' if im.mode == 'I' else 'float'} values) has "
                     "no fixed range to map to 0-255")
  if im.mode in _ALPHA_MODES or "transparency" in im.info:
    rgba = im.convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
  im = im.convert("RGB")
  if max(im.size) > max_side:
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
  return np.asarray(im, np.uint8)


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
