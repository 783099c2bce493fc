"""The configuration schema: frozen dataclasses, filled in by the config files (tiny.py, paper.py).

Config is code: a config file's `get_config()` returns a `Config`, and library functions take these objects
(never flags). `dataclasses.replace` derives variants, e.g. for tests.
"""

import dataclasses
import math
from typing import Optional, Tuple, Union

from expert_hub.hub import export
from expert_hub.models.adapters import AdapterConfig
from expert_hub.models.resnet_v2 import ModelConfig
from expert_hub.selection import knn
from expert_hub.selection import proxy_registry

SCHEDULES = ("cosine", "step")
EXPERT_KINDS = ("full", "adapter")  # train/experts.py trains these


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _check_int(obj, field, low=1, optional=False):
  """Raises ValueError naming `<Class>.<field>=<value>` unless it is an integer >= low (or None if optional)."""
  value = getattr(obj, field)
  if optional and value is None:
    return
  if not _is_int(value) or value < low:
    what = "a positive integer" if low == 1 else f"an integer >= {low}"
    raise ValueError(f"{type(obj).__name__}.{field}={value!r}; expected {what}{' or None' if optional else ''}.")


def _check_number(obj, field, low=0.0, low_inclusive=False, high=None):
  """Raises ValueError unless the field is a finite number > low (>= low if low_inclusive) and < high."""
  value = getattr(obj, field)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        and (value >= low if low_inclusive else value > low) and (high is None or value < high))
  if not ok:
    bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
    raise ValueError(f"{type(obj).__name__}.{field}={value!r}; expected a finite number {bound}.")


def _check_text(obj, field, optional=False):
  value = getattr(obj, field)
  if optional and value is None:
    return
  if not isinstance(value, str) or not value.strip():
    raise ValueError(f"{type(obj).__name__}.{field}={value!r}; expected a non-empty string"
                     f"{' or None' if optional else ''}.")


def _check_split(obj, field, test_split="test"):
  """A split other than the test split (selection and training must never see the images they are scored on)."""
  _check_text(obj, field)
  value = getattr(obj, field)
  if value == test_split or value.startswith(test_split + "["):
    raise ValueError(f"{type(obj).__name__}.{field}={value!r} is the test split; expected a training split "
                     "(e.g. train800val200), so that the test images stay unseen.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One SGD training run: batch, steps, warm-up + decay schedule, checkpointing.

  Attributes:
    batch_size: global batch size (split over replicas by the strategy).
    steps: total optimiser steps.
    base_lr: peak learning rate after warm-up.
    warmup_steps: linear warm-up from 0 to base_lr.
    schedule: "cosine" (to 0 at `steps`) or "step" (divide by 10 at each of `decay_steps`).
    decay_steps: boundaries for the "step" schedule.
    momentum: SGD momentum.
    weight_decay: L2 penalty on kernels (added to the loss as BiT does), 0 for none.
    checkpoint_every: save a resumable checkpoint every this many steps.
    log_every: progress line and TensorBoard scalars every this many steps.
    augment: random horizontal flips and small crops of the training images.
  """
  batch_size: int = 128
  steps: int = 1000
  base_lr: float = 0.1
  warmup_steps: int = 100
  schedule: str = "cosine"
  decay_steps: Tuple[int, ...] = ()
  momentum: float = 0.9
  weight_decay: float = 1e-4
  checkpoint_every: int = 200
  log_every: int = 50
  augment: bool = True

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"TrainConfig.schedule={self.schedule!r}; expected one of {SCHEDULES}.")
    for field in ("batch_size", "steps", "checkpoint_every", "log_every"):
      _check_int(self, field)
    if not _is_int(self.warmup_steps) or not 0 <= self.warmup_steps <= self.steps:
      raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps!r}; expected 0..steps ({self.steps}).")
    _check_number(self, "base_lr")
    _check_number(self, "momentum", low_inclusive=True, high=1.0)
    _check_number(self, "weight_decay", low_inclusive=True)
    steps = tuple(self.decay_steps)
    if (not all(_is_int(b) and 0 < b <= self.steps for b in steps)) or list(steps) != sorted(set(steps)):
      raise ValueError(f"TrainConfig.decay_steps={self.decay_steps!r}; expected increasing integers in "
                       f"1..steps ({self.steps}).")


@dataclasses.dataclass(frozen=True)
class UpstreamConfig:
  """The upstream dataset: a TFDS name in `data_dir`, and its label hierarchy.

  Attributes:
    tfds_name: e.g. "expert_hub_world/upstream_32" or "imagenet21k".
    name: short name used in export paths (`<export_dir>/<name>/<expert>/<version>`).
    hierarchy_file: path of a hierarchy JSON; None reads `info.metadata["hierarchy"]` (the world has it).
    train_split / eval_split: TFDS split strings.
    image_key / label_key: feature names; labels may be integer ids or multi-hot vectors.
    image_size: training resolution (images are resized to it).
  """
  tfds_name: str = "expert_hub_world/upstream_32"
  name: str = "world32"
  hierarchy_file: Optional[str] = None
  train_split: str = "train"
  eval_split: str = "validation"
  image_key: str = "image"
  label_key: str = "label"
  image_size: int = 32

  def __post_init__(self):
    for field in ("tfds_name", "train_split", "eval_split", "image_key", "label_key"):
      _check_text(self, field)
    _check_text(self, "hierarchy_file", optional=True)
    export.check_name(self.name, "UpstreamConfig.name")  # a folder of every export path
    _check_int(self, "image_size")


@dataclasses.dataclass(frozen=True)
class ExpertsConfig:
  """Which hierarchy nodes get experts and how experts are trained.

  Attributes:
    min_images: a node gets an expert if its subtree holds at least this many upstream training images.
    max_experts: keep at most this many (largest subsets first); None keeps all.
    min_depth: skip nodes shallower than this (depth 0 = the root, whose expert would be the generalist).
    max_depth: skip nodes deeper than this; None for no limit.
    kinds: which experts to train: "full" (whole network) and/or "adapter" (adapters + head, frozen trunk).
    full: schedule of full experts (paper.md: the generalist's recipe at 0.1x learning rate).
    adapter: schedule of adapter experts.
    adapter_arch: adapter size and placement.
    control: also train the equal-compute control: the generalist continued on all upstream labels with the
      `full` schedule, exported as "control" (a baseline, never a selection candidate).
  """
  min_images: int = 1000
  max_experts: Optional[int] = None
  min_depth: int = 1
  max_depth: Optional[int] = None
  kinds: Tuple[str, ...] = ("full", "adapter")
  full: TrainConfig = TrainConfig()
  adapter: TrainConfig = TrainConfig()
  adapter_arch: AdapterConfig = AdapterConfig()
  control: bool = False

  def __post_init__(self):
    _check_int(self, "min_images")
    _check_int(self, "max_experts", optional=True)
    _check_int(self, "min_depth", low=0)
    _check_int(self, "max_depth", low=self.min_depth, optional=True)
    kinds = self.kinds
    if (isinstance(kinds, str) or not isinstance(kinds, (tuple, list)) or not kinds
        or any(k not in EXPERT_KINDS for k in kinds) or len(set(kinds)) != len(kinds)):
      raise ValueError(f"ExpertsConfig.kinds={kinds!r}; expected one or more of {EXPERT_KINDS}, each once.")
    for field, cls in (("full", TrainConfig), ("adapter", TrainConfig), ("adapter_arch", AdapterConfig),
                       ("control", bool)):
      if not isinstance(getattr(self, field), cls):
        raise ValueError(f"ExpertsConfig.{field}={getattr(self, field)!r}; expected a {cls.__name__}.")


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
  """Expert selection by a performance proxy on the task's labelled training images.

  Attributes:
    proxy: "knn" (leave-one-out kNN accuracy, the paper's proxy); see selection/proxy_registry.py for the others.
    k: neighbours per vote.
    backend: kNN search, one of selection/knn.py's BACKENDS: "auto" (exact below 50k examples, ScaNN tree + AH
      above), "exact", "scann" (brute force) or "scann_ah".
    split: the task split that is embedded (never the test split).
    batch_size: embedding batch size.
  """
  proxy: str = "knn"
  k: int = 1
  backend: str = "auto"
  split: str = "train800val200"
  batch_size: int = 256

  def __post_init__(self):
    _check_text(self, "proxy")
    try:
      proxy_registry.parse_proxies(self.proxy)  # names and parameters; the values are checked when a proxy scores
    except ValueError as e:
      raise ValueError(f"SelectionConfig.proxy={self.proxy!r}: {e}") from None
    _check_int(self, "k")
    if self.backend not in knn.BACKENDS:
      raise ValueError(f"SelectionConfig.backend={self.backend!r}; expected one of {knn.BACKENDS}.")
    _check_split(self, "split")
    _check_int(self, "batch_size")


HEAD_INITS = ("zeros", "linear_probe")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """Downstream fine-tuning: BiT-HyperRule unless overridden.

  Attributes:
    batch_size: fine-tuning batch (the HyperRule's LR scales with it from 0.003 at 512).
    base_lr: LR at batch 512 (BiT: 0.003).
    steps: None for the HyperRule's steps by dataset size; otherwise an explicit count.
    steps_scale: multiply the HyperRule schedule (steps, warm-up, boundaries) by this, for cheap runs.
    resize / crop: None for the HyperRule's (160/128 below 96x96 images, else 512/480).
    train_split / test_split: task splits to train on and to report.
    head_init: the head fine-tuning starts from: "zeros" (BiT) or "linear_probe" (a logistic-regression probe
      fitted on the frozen features first, LP-FT; transfer/linear_head.py).
    head_l2: the linear-probe head's l2 (mean cross-entropy + l2/2 ||W||^2 on standardised features): a number,
      or a tuple of them cross-validated per module and task on the training split (5 stratified folds; the best
      is kept and recorded as the result's `head_l2`). Unused with a zero head.
  """
  batch_size: int = 512
  base_lr: float = 0.003
  steps: Optional[int] = None
  steps_scale: float = 1.0
  resize: Optional[int] = None
  crop: Optional[int] = None
  train_split: str = "train800val200"
  test_split: str = "test"
  head_init: str = "zeros"
  head_l2: Union[float, Tuple[float, ...]] = 1e-2

  def __post_init__(self):
    _check_int(self, "batch_size")
    if self.head_init not in HEAD_INITS:
      raise ValueError(f"FinetuneConfig.head_init={self.head_init!r}; expected one of {list(HEAD_INITS)}.")
    grid = self.head_l2 if isinstance(self.head_l2, (tuple, list)) else (self.head_l2,)
    if not grid or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                           for v in grid):
      raise ValueError(f"FinetuneConfig.head_l2={self.head_l2!r}; expected a finite number >= 0, or a non-empty "
                       "tuple of them to cross-validate.")
    if isinstance(self.head_l2, list):
      object.__setattr__(self, "head_l2", tuple(self.head_l2))
    _check_number(self, "base_lr")
    _check_int(self, "steps", optional=True)
    _check_number(self, "steps_scale")
    _check_int(self, "resize", optional=True)
    _check_int(self, "crop", optional=True)
    if self.resize is not None and self.crop is not None and self.crop > self.resize:
      raise ValueError(f"FinetuneConfig.crop={self.crop} is larger than resize={self.resize}; expected "
                       "crop <= resize (the crop is cut from the resized image).")
    _check_text(self, "test_split")
    _check_split(self, "train_split", test_split=self.test_split)


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one pipeline run needs.

  Attributes:
    name: the config's name ("tiny", "paper").
    model: the backbone architecture.
    upstream: the upstream data.
    generalist: the generalist's training schedule.
    experts: expert selection and training.
    selection / finetune: downstream stages.
    tasks: downstream task specs (see expert_hub.tasks.get_task).
    oracle: fine-tune every expert per task (the oracle) as well as the selected one and the generalist.
    version: the export version of every module.
    seed: every random source of a run derives from it (seeds.derive): weight initialisation, shuffles,
      augmentation, resampling and MixUp of the generalist, each expert and each fine-tune.
    seeds: fine-tuning repetitions per (model, task), on the same seeds for every model (paired); results
      carry a 95% interval over them.
  """
  name: str = "base"
  model: ModelConfig = ModelConfig()
  upstream: UpstreamConfig = UpstreamConfig()
  generalist: TrainConfig = TrainConfig()
  experts: ExpertsConfig = ExpertsConfig()
  selection: SelectionConfig = SelectionConfig()
  finetune: FinetuneConfig = FinetuneConfig()
  tasks: Tuple[str, ...] = ()
  oracle: bool = False
  version: int = 1
  seed: int = 0
  seeds: int = 1

  def __post_init__(self):
    _check_text(self, "name")
    if isinstance(self.tasks, str) or not all(isinstance(t, str) and t for t in self.tasks):
      raise ValueError(f"Config.tasks={self.tasks!r}; expected a tuple of task specs (e.g. ('world/count',)).")
    _check_int(self, "version")
    _check_int(self, "seed", low=0)
    _check_int(self, "seeds")


def replace(obj, **changes):
  """dataclasses.replace with dotted keys: replace(cfg, **{"generalist.steps": 10})."""
  nested = {}
  flat = {}
  for key, value in changes.items():
    head, _, rest = key.partition(".")
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      flat[key] = value
  for head, sub in nested.items():
    if not hasattr(obj, head):
      raise AttributeError(f"{type(obj).__name__} has no field {head!r}.")
    flat[head] = replace(getattr(obj, head), **sub)
  return dataclasses.replace(obj, **flat)
