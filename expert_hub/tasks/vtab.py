"""VTAB-1k (Zhai et al. 2019): the 19 tasks as data, and a Task that reads them from prepared TFDS datasets.

Each task is a `VtabTaskDef`: TFDS builder and version, label rule, number of classes, group
(natural / specialized / structured) and its seven splits written as TFDS slice strings, all as in
`shared/docs/bit_and_vtab.md`. `VtabTask` yields (float32 image [S, S, 3] in [0, 1], int64 label) pairs: the
image resized to S x S (bilinear; VTAB uses 224), single-channel images (dSprites, smallNORB) tiled to 3
channels. Address a task as `vtab/<name>` wherever a task spec is accepted (see tasks/sources.py).

Splits: `train`, `val`, `trainval`, `test`, and `train800` (first 800 of train), `val200` (first 200 of val),
`train800val200` (both). They are plain slices, never shuffled, so they are deterministic for a fixed TFDS
version. Where a subset cannot be written as one TFDS slice without knowing the split's size (the first 200 of
`train[90%:]`), it is a `SplitPart` with `take`: that TFDS split read in order, its first `take` examples. No
split size is ever read from `info.splits` (TFDS mocks leave it empty).

Nothing touches the network unless `download=True`. A dataset that is not prepared raises FileNotFoundError
saying what to put where (`data_dir`, and `manual_dir` for resisc45 and diabetic_retinopathy).
"""

import dataclasses
import difflib
import os
import re
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf
import tensorflow_datasets as tfds

from expert_hub.data import upstream as upstream_lib
from expert_hub.tasks import base

PREFIX = "vtab/"
GROUPS = ("natural", "specialized", "structured")
SPLIT_NAMES = ("train", "val", "trainval", "test", "train800", "val200", "train800val200")
DEFAULT_IMAGE_SIZE = 224  # The VTAB protocol's resolution.
CLEVR_DISTANCE_BINS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
KITTI_DISTANCE_BINS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE_DEPTH = 1000.0
KITTI_VEHICLE_TYPES = 3  # TFDS kitti `objects/type` ids 0, 1, 2: Car, Van, Truck.


@dataclasses.dataclass(frozen=True)
class SplitPart:
  """Examples of the TFDS split string `tfds_split` in file order; only its first `take` when `take` is set."""
  tfds_split: str
  take: Optional[int] = None

  def __str__(self):
    return self.tfds_split if self.take is None else f"{self.tfds_split}.take({self.take})"


@dataclasses.dataclass(frozen=True)
class VtabTaskDef:
  """One VTAB-1k task.

  Attributes:
    name: VTAB's task name, e.g. "clevr_count".
    group: "natural", "specialized" or "structured".
    tfds_name: TFDS builder (and config), e.g. "clevr" or "eurosat/rgb".
    version: TFDS version pattern, e.g. "3.*.*".
    num_classes: number of classes of the derived label.
    label_fn: TFDS example dict -> scalar integer label tensor (runs inside tf.data).
    label_rule: the label rule in words.
    splits: split name (SPLIT_NAMES) -> tuple of SplitPart, concatenated in order.
    grayscale: the images have one channel; they are tiled to three.
    pixel_scale: multiplies the raw pixels to reach [0, 1]: 1/255, or 1 for dSprites, whose 0/1 masks are
      masks x 255 / 255.
    manual_download: TFDS cannot fetch the source files; they go into `manual_dir` (see MANUAL_LAYOUT).
    augmentations: the training augmentations that keep the label (Task.augmentations): no flip where a mirror
      changes it (an x position, an orientation, an azimuth, a digit), no crop where a shift does (x position).
  """
  name: str
  group: str
  tfds_name: str
  version: str
  num_classes: int
  label_fn: Callable[[Dict[str, tf.Tensor]], tf.Tensor]
  label_rule: str
  splits: Dict[str, Tuple[SplitPart, ...]]
  grayscale: bool = False
  pixel_scale: float = 1.0 / 255.0
  manual_download: bool = False
  augmentations: Tuple[str, ...] = ("flip", "crop")

  def __post_init__(self):
    if self.group not in GROUPS:
      raise ValueError(f"VTAB task {self.name!r}: group {self.group!r}; expected one of {GROUPS}.")
    if tuple(self.splits) != SPLIT_NAMES:
      raise ValueError(f"VTAB task {self.name!r}: splits {tuple(self.splits)}; expected exactly {SPLIT_NAMES}.")

  @property
  def tfds_spec(self):
    """"name:version" as tfds.builder takes it."""
    return f"{self.tfds_name}:{self.version}"

  def split_parts(self, split):
    """The SplitParts of a split name; KeyError naming the known split names otherwise."""
    if split not in self.splits:
      raise KeyError(f"VTAB task {self.name!r} has no split {split!r}; its splits are {list(SPLIT_NAMES)}.")
    return self.splits[split]

  def split_string(self, split):
    """The split as text: TFDS slice strings joined by "+", `.take(n)` where only the first n are read."""
    return "+".join(str(p) for p in self.split_parts(split))

  def preprocess(self, example, image_size):
    """TFDS example -> (float32 image [image_size, image_size, 3] in [0, 1], int64 label)."""
    image = tf.cast(example["image"], tf.float32) * self.pixel_scale
    if self.grayscale:
      image = tf.tile(image, [1, 1, 3])
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.clip_by_value(image, 0.0, 1.0)
    return image, tf.cast(self.label_fn(example), tf.int64)


# --- Label rules -------------------------------------------------------------------------------------------


def _label_feature(key="label"):
  return lambda example: example[key]


def bin_label(value, thresholds, num_classes):
  """VTAB's binning: the index of the last threshold strictly below `value`, clipped to [0, num_classes).

  `label = max{i : thresholds[i] < value}` as in task_adaptation (`reduce_max(where(thresholds - value < 0))`):
  kitti's 4 thresholds give 4 classes (the last, 999, is "no vehicle"), clevr's 7 give 6 (nothing is as deep
  as 100). The clip only matters for values outside the VTAB data's range.
  """
  below = tf.reduce_sum(tf.cast(tf.constant(thresholds, tf.float32) < tf.cast(value, tf.float32), tf.int64))
  return tf.clip_by_value(below - 1, 0, num_classes - 1)


def clevr_count_label(example):
  """Number of objects in the scene minus 3 (CLEVR scenes hold 3 to 10 objects: 8 classes)."""
  return tf.cast(tf.size(example["objects"]["size"]), tf.int64) - 3


def clevr_distance_label(example):
  """Depth of the closest object (`objects/pixel_coords[:, 2]`), binned at CLEVR_DISTANCE_BINS (6 classes)."""
  return bin_label(tf.reduce_min(example["objects"]["pixel_coords"][:, 2]), CLEVR_DISTANCE_BINS, 6)


def kitti_distance_label(example):
  """Depth (`objects/location[:, 2]`) of the closest Car/Van/Truck, 1000 if none, binned at KITTI_DISTANCE_BINS.

  Classes: 0 closer than 8 m, 1 within 8-20 m, 2 beyond 20 m, 3 no vehicle.
  """
  objects = example["objects"]
  depth = tf.cast(objects["location"][:, 2], tf.float32)
  vehicle_depth = tf.boolean_mask(depth, objects["type"] < KITTI_VEHICLE_TYPES)
  closest = tf.reduce_min(tf.concat([vehicle_depth, [KITTI_NO_VEHICLE_DEPTH]], axis=0))
  return bin_label(closest, KITTI_DISTANCE_BINS, 4)


def make_bins_label(key, original_classes, num_classes):
  """label = floor(value / (original_classes / num_classes)): dSprites' 32 positions / 40 orientations -> 16."""
  width = original_classes / num_classes

  def label_fn(example):
    return tf.cast(tf.math.floor(tf.cast(example[key], tf.float32) / width), tf.int64)
  return label_fn


# --- Splits ------------------------------------------------------------------------------------------------

_PREFIX_SLICE = re.compile(r"^(\w+)(\[:[^\]]*\])?$")  # "train", "validation", "train[:90%]", "test[:50%]".


def _first(split, n):
  """The first n examples of a TFDS split string: `name[:n]` when the split starts at 0, else a `take`."""
  m = _PREFIX_SLICE.match(split)
  return SplitPart(f"{m.group(1)}[:{n}]") if m else SplitPart(split, take=n)


def make_splits(train, val, trainval, test):
  """The seven VTAB split names from the TFDS strings of the train, val, train+val and test parts."""
  return {"train": (SplitPart(train),), "val": (SplitPart(val),), "trainval": (SplitPart(trainval),),
          "test": (SplitPart(test),), "train800": (_first(train, 800),), "val200": (_first(val, 200),),
          "train800val200": (_first(train, 800), _first(val, 200))}


# VTAB carves a validation part from TFDS train for some datasets (the doc's "Splits" section).
_TRAIN_90_10 = dict(train="train[:90%]", val="train[90%:]", trainval="train", test="test")
_TRAIN_80_20 = dict(train="train[:80%]", val="train[80%:]", trainval="train", test="test")
_TRAIN_60_20_20 = dict(train="train[:60%]", val="train[60%:80%]", trainval="train[:80%]", test="train[80%:]")
_TFDS_VALIDATION = dict(train="train", val="validation", trainval="train+validation", test="test")


def _task(name, group, tfds_name, version, num_classes, splits, label_fn=None, label_rule="label", **kw):
  return VtabTaskDef(name=name, group=group, tfds_name=tfds_name, version=version, num_classes=num_classes,
                     label_fn=label_fn or _label_feature(), label_rule=label_rule, splits=make_splits(**splits),
                     **kw)


def _definitions():
  """The 19 VTAB-1k tasks, in the leaderboard's order (natural, specialized, structured)."""
  return [
      _task("caltech101", "natural", "caltech101", "3.*.*", 102, _TRAIN_90_10),
      _task("cifar100", "natural", "cifar100", "3.*.*", 100, _TRAIN_90_10),
      _task("dtd", "natural", "dtd", "3.*.*", 47, _TFDS_VALIDATION),
      _task("oxford_flowers102", "natural", "oxford_flowers102", "2.*.*", 102, _TFDS_VALIDATION),
      _task("oxford_iiit_pet", "natural", "oxford_iiit_pet", "3.*.*", 37, _TRAIN_80_20),
      _task("sun397", "natural", "sun397/tfds", "4.*.*", 397, _TFDS_VALIDATION),
      _task("svhn", "natural", "svhn_cropped", "3.*.*", 10, _TRAIN_90_10, augmentations=("crop",)),
      _task("patch_camelyon", "specialized", "patch_camelyon", "2.*.*", 2, _TFDS_VALIDATION),
      _task("eurosat", "specialized", "eurosat/rgb", "2.*.*", 10, _TRAIN_60_20_20),
      _task("resisc45", "specialized", "resisc45", "3.*.*", 45, _TRAIN_60_20_20, manual_download=True),
      _task("diabetic_retinopathy", "specialized", "diabetic_retinopathy_detection/btgraham-300", "3.*.*", 5,
            _TFDS_VALIDATION, manual_download=True),
      _task("clevr_count", "structured", "clevr", "3.*.*", 8, dict(_TRAIN_90_10, test="validation"),
            clevr_count_label, "number of objects - 3"),
      _task("clevr_distance", "structured", "clevr", "3.*.*", 6, dict(_TRAIN_90_10, test="validation"),
            clevr_distance_label, f"min objects/pixel_coords[:, 2] binned at {list(CLEVR_DISTANCE_BINS)}"),
      _task("dmlab", "structured", "dmlab", "2.0.1", 6, _TFDS_VALIDATION),
      _task("kitti_distance", "structured", "kitti", "3.1.0", 4, _TFDS_VALIDATION, kitti_distance_label,
            f"min objects/location[:, 2] of type < 3 (Car/Van/Truck), {KITTI_NO_VEHICLE_DEPTH:g} if none, binned "
            f"at {list(KITTI_DISTANCE_BINS)}"),
      _task("dsprites_location", "structured", "dsprites", "2.*.*", 16,
            dict(train="train[:80%]", val="train[80%:90%]", trainval="train[:90%]", test="train[90%:]"),
            make_bins_label("label_x_position", 32, 16), "floor(label_x_position / 2)", grayscale=True,
            pixel_scale=1.0, augmentations=()),
      _task("dsprites_orientation", "structured", "dsprites", "2.*.*", 16,
            dict(train="train[:80%]", val="train[80%:90%]", trainval="train[:90%]", test="train[90%:]"),
            make_bins_label("label_orientation", 40, 16), "floor(label_orientation / 2.5)", grayscale=True,
            pixel_scale=1.0, augmentations=("crop",)),
      _task("smallnorb_azimuth", "structured", "smallnorb", "2.*.*", 18,
            dict(train="train", val="test[:50%]", trainval="train+test[:50%]", test="test[50%:]"),
            _label_feature("label_azimuth"), "label_azimuth", grayscale=True, augmentations=("crop",)),
      _task("smallnorb_elevation", "structured", "smallnorb", "2.*.*", 9,
            dict(train="train", val="test[:50%]", trainval="train+test[:50%]", test="test[50%:]"),
            _label_feature("label_elevation"), "label_elevation", grayscale=True),
  ]


class TaskRegistry:
  """VTAB task definitions by name. Duplicates are refused; unknown names list the nearest known ones."""

  def __init__(self, definitions=()):
    self._defs = {}
    for d in definitions:
      self.register(d)

  def register(self, task_def):
    if task_def.name in self._defs:
      raise ValueError(f"VTAB task {task_def.name!r} is already registered.")
    self._defs[task_def.name] = task_def

  def names(self, group=None):
    """Task names in registration (leaderboard) order, optionally of one group."""
    if group is not None and group not in GROUPS:
      raise ValueError(f"Unknown VTAB group {group!r}; expected one of {GROUPS}.")
    return [n for n, d in self._defs.items() if group is None or d.group == group]

  def get(self, name):
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if name not in self._defs:
      near = difflib.get_close_matches(name, list(self._defs), n=3, cutoff=0.4)
      raise KeyError(f"Unknown VTAB task {name!r}; VTAB tasks are {list(self._defs)} (nearest: {near}).")
    return self._defs[name]

  def resolve(self, spec):
    """Task names from "all", a group, task names, or a mix (a comma string or a list), in leaderboard order."""
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    tokens = [t.strip() for t in tokens if t and t.strip()]
    if not tokens:
      raise ValueError(f"No VTAB tasks in {spec!r}; expected 'all', a group {GROUPS} or task names.")
    wanted = set()
    for token in tokens:
      if token == "all":
        wanted.update(self._defs)
      elif token in GROUPS:
        wanted.update(self.names(token))
      else:
        wanted.add(self.get(token).name)
    return [n for n in self._defs if n in wanted]


TASKS = TaskRegistry(_definitions())


# --- Loading -----------------------------------------------------------------------------------------------

# What TFDS's builders for the manual-download tasks read from manual_dir (their _split_generators).
MANUAL_LAYOUT = {
    "resisc45": "{m}/NWPU-RESISC45/<class>/<image>.jpg: the extracted NWPU-RESISC45.rar (45 class folders of 700 "
                "images each).",
    "diabetic_retinopathy": "{m}/train/ (the unpacked Kaggle train.zip.00* images), {m}/test/ (test.zip.00*), "
                            "{m}/sample/ (sample.zip) and {m}/trainLabels.csv; preparing also fetches the test "
                            "labels (retinopathy_solution.csv), so prepare it where the network is allowed.",
}


def _default_manual_dir(data_dir):
  return os.path.join(data_dir, "downloads", "manual")


def _missing_message(task_def, data_dir, manual_dir, reason):
  folder = os.path.join(data_dir, *task_def.tfds_name.split("/"), task_def.version.replace("*", "x"))
  msg = (f"VTAB task {task_def.name!r} needs the TFDS dataset {task_def.tfds_spec!r} prepared in data_dir "
         f"{data_dir!r} (a folder {folder}/ holding dataset_info.json and the record files); {reason}. "
         "expert_hub never downloads unless asked.")
  prepare = (f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{task_def.tfds_spec}', "
             f"data_dir='{data_dir}').download_and_prepare(")
  if task_def.manual_download:
    manual_dir = manual_dir or _default_manual_dir(data_dir)
    layout = MANUAL_LAYOUT[task_def.name].format(m=manual_dir)
    msg += (f" TFDS cannot download its source files: put them into manual_dir {manual_dir!r} as {layout} Then "
            f"prepare it with run_vtab --download --manual_dir={manual_dir} --data_dir={data_dir}, or with "
            f"{prepare}download_config=tfds.download.DownloadConfig(manual_dir='{manual_dir}'))\".")
  else:
    msg += (f" Either rerun with --download (run_vtab) / download=True, or prepare it on a machine with network "
            f"access ({prepare})\") and copy the folder {task_def.tfds_name.split('/')[0]}/ it writes into "
            f"{data_dir}.")
  return msg


def load_builder(task_def, data_dir=None, download=False, manual_dir=None):
  """The prepared TFDS builder of a VTAB task; prepares it only when `download` is True.

  Raises:
    FileNotFoundError: the dataset is not prepared in data_dir (and download is False, or preparing failed);
      the message says what to put where.
  """
  data_dir = data_dir or upstream_lib.default_data_dir()
  try:
    builder = tfds.builder(task_def.tfds_spec, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except  (unknown version in code and none on disk, etc.)
    raise FileNotFoundError(_missing_message(
        task_def, data_dir, manual_dir, f"TFDS cannot open it ({type(e).__name__}: {e})")) from e
  if builder.is_prepared():
    return builder
  if not download:
    raise FileNotFoundError(_missing_message(task_def, data_dir, manual_dir, "it is not there"))
  manual_dir = manual_dir or _default_manual_dir(data_dir)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(_missing_message(
        task_def, data_dir, manual_dir, f"preparing it failed ({type(e).__name__}: {e})")) from e
  return builder


class VtabTask(base.Task):
  """A VTAB-1k task read from its prepared TFDS dataset.

  Args:
    name: task name, with or without the "vtab/" prefix (see TASKS.names()).
    data_dir: TFDS data dir (default $EXPERT_HUB_DATA_DIR or ~/tensorflow_datasets).
    image_size: images are resized to image_size x image_size (VTAB: 224).
    download: prepare the dataset if it is missing (network; manual_dir for the manual-download tasks).
    manual_dir: where the manual-download tasks' files are (default <data_dir>/downloads/manual).
    registry: the TaskRegistry to look the name up in (default TASKS).
  """

  def __init__(self, name, data_dir=None, image_size=DEFAULT_IMAGE_SIZE, download=False, manual_dir=None,
               registry=None):
    if not isinstance(image_size, int) or image_size < 1:
      raise ValueError(f"image_size={image_size!r}; expected a positive integer (VTAB uses 224).")
    self.definition = (registry or TASKS).get(name)
    self.name = PREFIX + self.definition.name
    self.num_classes = self.definition.num_classes
    self.group = self.domain = self.definition.group
    self.augmentations = self.definition.augmentations
    self.image_size = image_size
    self._reopen = ((name, data_dir, image_size), {"manual_dir": manual_dir, "registry": registry})  # base.Task
    self.builder = load_builder(self.definition, data_dir, download, manual_dir)

  def _load(self, split):
    ds = None
    for part in self.definition.split_parts(split):
      part_ds = self.builder.as_dataset(split=part.tfds_split, shuffle_files=False)
      if part.take is not None:
        part_ds = part_ds.take(part.take)
      ds = part_ds if ds is None else ds.concatenate(part_ds)
    return ds.map(lambda ex: self.definition.preprocess(ex, self.image_size), num_parallel_calls=tf.data.AUTOTUNE)

  def describe(self):
    return dict(super().describe(), group=self.group, tfds=self.definition.tfds_spec)
