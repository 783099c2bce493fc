"""BiT ResNet-v2: pre-activation bottleneck ResNet with GroupNorm and Weight Standardization.

Layout (paper.md, verified for BiT-M R50x1): root 7x7/2 conv -> pad 1 -> 3x3/2 max-pool; four stages of
bottleneck units with the stride on the 3x3 conv; projection shortcut from the pre-activated input when the
shape changes; pre-logits = GN -> ReLU -> global average pool; a zero-initialised head.

Layer names follow BiT's checkpoint keys (`block1_unit01_a_conv` for `resnet/block1/unit01/a/...`), because
Keras 3 forbids "/" in names; weights therefore load by name.
"""

import dataclasses
import functools
from typing import Optional, Tuple

import keras

from expert_hub.models import adapters as adapters_lib
from expert_hub.models import layers

DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a ResNet-v2 backbone.

  Attributes:
    depth: 26, 50, 101 or 152; ignored when `units` is given.
    width: width multiplier (BiT's x1, x3, ...); fractional values give the tiny nets.
    units: residual units per stage; overrides `depth` (the tiny nets use (1, 1, 1, 1)).
    max_groups: GroupNorm groups (32 in BiT).
  """
  depth: int = 50
  width: float = 1.0
  units: Optional[Tuple[int, int, int, int]] = None
  max_groups: int = 32

  def __post_init__(self):
    if self.units is None and self.depth not in DEPTHS:
      raise ValueError(f"ModelConfig.depth={self.depth}; expected one of {sorted(DEPTHS)} or explicit units.")
    if self.units is not None and (len(self.units) != 4 or min(self.units) < 1):
      raise ValueError(f"ModelConfig.units={self.units}; expected four positive integers.")
    if self.width <= 0:
      raise ValueError(f"ModelConfig.width={self.width}; expected a positive multiplier.")

  @property
  def stage_units(self):
    return tuple(self.units) if self.units is not None else DEPTHS[self.depth]

  @property
  def root_filters(self):
    return max(8, int(round(64 * self.width)))

  @property
  def feature_dim(self):
    return 4 * self.root_filters * 8

  def to_dict(self):
    d = dataclasses.asdict(self)
    d["units"] = list(self.stage_units)
    return d

  @classmethod
  def from_dict(cls, d):
    d = dict(d)
    if d.get("units") is not None:
      d["units"] = tuple(d["units"])
    return cls(**d)


# The sizes the configs use. "tiny" is what tests and the embedded-world demo train on 2 CPU cores.
MODEL_SIZES = {
    "tiny": ModelConfig(units=(1, 1, 1, 1), width=0.25, max_groups=8),
    "r26x1": ModelConfig(depth=26),
    "r50x1": ModelConfig(depth=50),
    "r101x1": ModelConfig(depth=101),
    "r152x1": ModelConfig(depth=152),
    "r50x3": ModelConfig(depth=50, width=3.0),
}


class _Layers:
  """Creates trunk layers, or hands out the same instances again when a cache is shared between models.

  Sharing the trunk's layer objects is how several adapter experts live in one graph on one set of trunk
  variables (the packed module); without a cache every call creates fresh layers.
  """

  def __init__(self, cache=None):
    self.cache = cache

  def get(self, name, make):
    if self.cache is None:
      return make()
    if name not in self.cache:
      self.cache[name] = make()
    return self.cache[name]

  def conv(self, filters, kernel_size, strides=1, name=None):
    return self.get(name, lambda: layers.StandardizedConv2D(
        filters, kernel_size, strides=strides, padding="same", kernel_initializer="he_normal", name=name))

  def gn(self, channels, max_groups, name):
    return self.get(name, lambda: layers.group_norm(channels, max_groups, name=name))

  def relu(self, name):
    return self.get(name, lambda: keras.layers.ReLU(name=name))


def _unit(make, x, mid, out, stride, max_groups, name):
  """One pre-activation bottleneck unit."""
  pre = make.gn(x.shape[-1], max_groups, name=f"{name}_a_gn")(x)
  pre = make.relu(f"{name}_a_relu")(pre)
  if stride != 1 or x.shape[-1] != out:
    shortcut = make.conv(out, 1, strides=stride, name=f"{name}_a_proj")(pre)
  else:
    shortcut = x
  y = make.conv(mid, 1, name=f"{name}_a_conv")(pre)
  y = make.gn(mid, max_groups, name=f"{name}_b_gn")(y)
  y = make.relu(f"{name}_b_relu")(y)
  y = make.conv(mid, 3, strides=stride, name=f"{name}_b_conv")(y)
  y = make.gn(mid, max_groups, name=f"{name}_c_gn")(y)
  y = make.relu(f"{name}_c_relu")(y)
  y = make.conv(out, 1, name=f"{name}_c_conv")(y)
  return make.get(f"{name}_add", lambda: keras.layers.Add(name=f"{name}_add"))([y, shortcut])


def _stem(make, x, config):
  # BiT's raw training code feeds [-1, 1]; our modules take [0, 1] like the published TF Hub ones.
  x = make.get("to_bit_range", lambda: keras.layers.Rescaling(2.0, offset=-1.0, name="to_bit_range"))(x)
  x = make.conv(config.root_filters, 7, strides=2, name="root_conv")(x)
  x = make.get("root_pad", lambda: keras.layers.ZeroPadding2D(1, name="root_pad"))(x)
  return make.get("root_pool", lambda: keras.layers.MaxPooling2D(3, strides=2, name="root_pool"))(x)


def _final(make, x, config):
  x = make.gn(x.shape[-1], config.max_groups, name="final_gn")(x)
  x = make.relu("final_relu")(x)
  return make.get("pre_logits", lambda: keras.layers.GlobalAveragePooling2D(name="pre_logits"))(x)


def backbone_plan(config: ModelConfig, adapter: Optional[adapters_lib.AdapterConfig] = None):
  """The backbone as ordered steps: ("trunk", name, apply(make, x)) and ("adapter", name, None).

  build_backbone runs the steps in one graph; packed modules run each trunk step as one shared function.
  """
  if adapter is not None and adapter.first_stage > len(config.stage_units):
    raise ValueError(f"AdapterConfig.first_stage={adapter.first_stage}, but the backbone has "
                     f"{len(config.stage_units)} stages; expected 1..{len(config.stage_units)}.")
  steps = [("trunk", "stem", functools.partial(_stem, config=config))]
  for block, num_units in enumerate(config.stage_units, start=1):
    mid = config.root_filters * 2 ** (block - 1)
    adapted = adapter is not None and block >= adapter.first_stage
    if adapted and adapter.placement == "stage_input":
      steps.append(("adapter", f"adapter_block{block}", None))
    for unit in range(1, num_units + 1):
      name = f"block{block}_unit{unit:02d}"
      stride = 2 if (unit == 1 and block > 1) else 1
      apply = functools.partial(_unit, mid=mid, out=4 * mid, stride=stride, max_groups=config.max_groups,
                                name=name)
      steps.append(("trunk", name, apply))
      if adapted and adapter.placement == "every_unit":
        steps.append(("adapter", f"adapter_{name}", None))
  steps.append(("trunk", "final", functools.partial(_final, config=config)))
  return steps


def build_backbone(config: ModelConfig, adapter: Optional[adapters_lib.AdapterConfig] = None,
                   name="resnet_v2", trunk_layers: Optional[dict] = None):
  """Builds images [B, H, W, 3] in [0, 1] -> pre-logits features [B, config.feature_dim].

  Args:
    config: the architecture.
    adapter: if given, residual adapters are inserted (see adapters.py); all their layers are named
      "adapter_*", so trunk weights keep their names and copy between plain and adapter models.
    name: the Keras model name.
    trunk_layers: a dict shared between calls to reuse the same trunk layers (and so the same trunk
      variables) in several models; adapters are always new.

  Returns:
    A functional keras.Model; any image size works (global average pooling).
  """
  make = _Layers(trunk_layers)
  images = keras.Input((None, None, 3), name="images")
  x = images
  for kind, step, apply in backbone_plan(config, adapter):
    if kind == "trunk":
      x = apply(make, x)
    else:
      x = adapters_lib.residual_adapter(x, adapter.reduction, config.max_groups, name=step)
  return keras.Model(images, x, name=name)


def build_trunk_segments(config: ModelConfig, trunk_layers: dict):
  """{step name: keras.Model} for every trunk step of backbone_plan, on the shared layers in trunk_layers."""
  make = _Layers(trunk_layers)
  channels, segments = 3, {}
  for kind, step, apply in backbone_plan(config):
    if kind != "trunk":
      continue
    inputs = keras.Input((None, None, channels), name=f"{step}_in")
    outputs = apply(make, inputs)
    segments[step] = keras.Model(inputs, outputs, name=f"segment_{step}")
    channels = outputs.shape[-1]
  return segments


def build_classifier(backbone, num_classes, name=None):
  """Backbone + a zero-initialised linear head: images -> logits [B, num_classes].

  The zero init (BiT) means a fresh head predicts uniformly and leaves the backbone's features untouched at
  the first step.
  """
  if num_classes < 1:
    raise ValueError(f"num_classes={num_classes}; expected a positive integer.")
  images = keras.Input((None, None, 3), name="images")
  features = backbone(images)
  logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head")(features)
  return keras.Model(images, logits, name=name or f"{backbone.name}_classifier")


def build_endpoints(classifier):
  """Named endpoints of a classifier from build_classifier: images -> {"pre_logits", "logits"}."""
  backbone = classifier.layers[1]
  images = keras.Input((None, None, 3), name="images")
  features = backbone(images)
  return keras.Model(images, {"pre_logits": features, "logits": classifier.get_layer("head")(features)})


def get_backbone(classifier):
  """The backbone sub-model of a classifier built by build_classifier."""
  return classifier.layers[1]
