"""`expert_hub_world`: the procedurally generated upstream dataset and downstream tasks, as a TFDS builder.

Nothing is downloaded: `download_and_prepare` renders every image from a seed, so the same config gives the
same bytes on every machine, and `tfds.load("expert_hub_world/upstream_32", data_dir=...)` works offline.

Configs are `<part>_<size>` for part in {"upstream", "upstream_mini", *catalogue.TASKS} and size in
{32, 64, 128}:
  - upstream: label = leaf class id (80 classes, hierarchy entity -> domain -> group -> class, shipped in
    `info.metadata["hierarchy"]` and in hierarchy.json beside this file); splits train (800 images per class)
    and validation (20 per class). 800, not 200: with 200 the generalist's budget (13 passes) absorbs the upstream
    and an expert only revisits images it has seen, so experts barely specialise; with 800 (3 passes) an expert's
    budget shows its domain's images the generalist could not absorb, as in the paper's ImageNet-21k.
  - upstream_mini: the same classes with few images, for tests.
  - tasks: held-out classes or structured attributes with VTAB-1k-shaped splits train800, val200,
    train800val200 (the same images as train800 + val200) and test.
"""

import zlib

import numpy as np
import tensorflow_datasets as tfds

from expert_hub.data import hierarchy as hierarchy_lib
from expert_hub.data.world import catalogue

NAME = "expert_hub_world"
WORLD_VERSION = "1.1.0"
IMAGE_SIZES = (32, 64, 128)
UPSTREAM_SIZES = {"upstream": {"train": 800, "validation": 20}, "upstream_mini": {"train": 12, "validation": 4}}
TASK_SPLITS = {"train800": (0, 800), "val200": (800, 1000), "train800val200": (0, 1000), "test": (1000, 2000)}


def world_hierarchy():
  """The world's label hierarchy (entity -> domain -> group -> class) with upstream label ids."""
  nodes = [{"name": "entity", "parents": []}]
  for domain, groups in catalogue.UPSTREAM.items():
    nodes.append({"name": domain, "parents": ["entity"]})
    for group in groups:
      nodes.append({"name": f"{domain}/{group}", "parents": [domain]})
  for label, (domain, group, cls, _) in enumerate(catalogue.upstream_classes()):
    nodes.append({"name": cls, "parents": [f"{domain}/{group}"], "label": label})
  return hierarchy_lib.Hierarchy(nodes, name=NAME)


class WorldConfig(tfds.core.BuilderConfig):
  """One part of the world at one image size.

  Attributes:
    part: "upstream", "upstream_mini" or a task name from catalogue.TASKS.
    image_size: side of the square images.
    seed: the world seed; every image is rendered from (seed, part, split, index).
  """

  def __init__(self, *, part, image_size, seed=0, name=None, **kwargs):
    if part not in UPSTREAM_SIZES and part not in catalogue.TASKS:
      raise ValueError(f"WorldConfig.part={part!r}; expected one of "
                       f"{sorted(UPSTREAM_SIZES) + sorted(catalogue.TASKS)}.")
    if image_size < 16:
      raise ValueError(f"WorldConfig.image_size={image_size}; expected at least 16 pixels.")
    name = name or (f"{part}_{image_size}" if seed == 0 else f"{part}_{image_size}_seed{seed}")
    super().__init__(name=name, version=WORLD_VERSION, description=_describe(part), **kwargs)
    self.part, self.image_size, self.seed = part, image_size, seed

  @property
  def is_upstream(self):
    return self.part in UPSTREAM_SIZES


def _describe(part):
  if part in UPSTREAM_SIZES:
    return f"Upstream world, {len(catalogue.upstream_classes())} classes in a 4-level hierarchy."
  task = catalogue.TASKS[part]
  return f"Task {part}: {task['description']} (domain: {task['domain']})."


def _stable_hash(text):
  return zlib.crc32(text.encode("utf-8"))


def render_example(config, split, index):
  """(uint8 image, label) of example `index` in `split`; a pure function of its arguments."""
  if config.is_upstream:
    renderers = [fn for *_, fn in catalogue.upstream_classes()]
    stream = split
  else:
    renderers = list(catalogue.TASKS[config.part]["classes"].values())
    stream = "task"  # train800/val200/train800val200/test index one stream, so overlapping splits agree
  label = index % len(renderers)
  rng = np.random.default_rng([config.seed, _stable_hash(config.part), _stable_hash(stream), index])
  return renderers[label](rng, config.image_size), label


class ExpertHubWorld(tfds.core.GeneratorBasedBuilder):
  """The embedded procedural world (see module docstring)."""

  VERSION = tfds.core.Version(WORLD_VERSION)
  RELEASE_NOTES = {"1.0.0": "Six domains, 80 upstream classes, eight downstream tasks.",
                   "1.1.0": "upstream: 800 training images per class (was 200)."}
  BUILDER_CONFIGS = [WorldConfig(part=p, image_size=s)
                     for s in IMAGE_SIZES for p in list(UPSTREAM_SIZES) + list(catalogue.TASKS)]

  def _info(self):
    cfg = self.builder_config
    if cfg.is_upstream:
      names = [c for _, _, c, _ in catalogue.upstream_classes()]
      metadata = tfds.core.MetadataDict(hierarchy=world_hierarchy().to_json(), part=cfg.part)
    else:
      task = catalogue.TASKS[cfg.part]
      names = list(task["classes"])
      metadata = tfds.core.MetadataDict(domain=task["domain"], part=cfg.part)
    return tfds.core.DatasetInfo(
        builder=self,
        description=cfg.description,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(cfg.image_size, cfg.image_size, 3)),
            "label": tfds.features.ClassLabel(names=names),
        }),
        supervised_keys=("image", "label"),
        metadata=metadata,
        # Keep generation order so that train800val200 = train800 + val200 and slices are fixed, as in VTAB.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: every image is rendered.
    cfg = self.builder_config
    if cfg.is_upstream:
      ranges = {split: (0, n) for split, n in UPSTREAM_SIZES[cfg.part].items()}
      ranges = {s: (0, n * len(catalogue.upstream_classes())) for s, (_, n) in ranges.items()}
    else:
      ranges = TASK_SPLITS
    return {split: self._generate_examples(split, start, stop) for split, (start, stop) in ranges.items()}

  def _generate_examples(self, split, start, stop):
    cfg = self.builder_config
    for index in range(start, stop):
      image, label = render_example(cfg, split, index)
      yield index, {"image": image, "label": label}
