"""Residual adapters: small expert-specific modules on a frozen generalist trunk."""

import dataclasses

import keras

from expert_hub.models import layers

PLACEMENTS = ("every_unit", "stage_input")


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  """Where adapters go and how big they are.

  Attributes:
    reduction: hidden width = channels // reduction (paper.md default 4).
    placement: "stage_input" (once before each stage: ~3% of R50's parameters per expert) or "every_unit"
      (after every residual unit: ~1/3 of the parameters at reduction 4, so use a larger reduction).
    first_stage: adapters only in stages >= first_stage (1-based). The stem and the stages before it are the
      generalist's for every expert of a pack, so selection computes them once per batch for all experts
      (models/stacking.py): a later first stage makes scoring many experts cheaper and each expert smaller,
      at some cost in how much an expert can adapt (benchmark_selection measures the speed).
  """
  reduction: int = 4
  placement: str = "stage_input"
  first_stage: int = 1

  def __post_init__(self):
    if self.placement not in PLACEMENTS:
      raise ValueError(f"AdapterConfig.placement={self.placement!r}; expected one of {PLACEMENTS}.")
    if self.reduction < 1:
      raise ValueError(f"AdapterConfig.reduction={self.reduction}; expected an integer >= 1.")
    if self.first_stage < 1:
      raise ValueError(f"AdapterConfig.first_stage={self.first_stage}; expected a 1-based stage index >= 1.")


def residual_adapter(x, reduction, max_groups, name):
  """y = x + Up(ReLU(GN(Down(ReLU(GN(x)))))) with 1x1 convs and a zero-initialised Up.

  The zero-initialised up-projection makes a fresh adapter the identity, so a new adapter expert computes
  exactly the generalist's features before training (tested).
  """
  channels = x.shape[-1]
  hidden = max(1, channels // reduction)
  parts = {
      "gn_in": layers.group_norm(channels, max_groups, name=f"{name}_gn_in"),
      "relu_in": keras.layers.ReLU(name=f"{name}_relu_in"),
      "down": keras.layers.Conv2D(hidden, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_down"),
      "gn_mid": layers.group_norm(hidden, max_groups, name=f"{name}_gn_mid"),
      "relu_mid": keras.layers.ReLU(name=f"{name}_relu_mid"),
      "up": keras.layers.Conv2D(channels, 1, use_bias=False, kernel_initializer="zeros", name=f"{name}_up"),
      "add": keras.layers.Add(name=f"{name}_add"),
  }
  return apply_adapter(x, lambda part: parts[part])


ADAPTER_PARTS = ("gn_in", "relu_in", "down", "gn_mid", "relu_mid", "up")


def apply_adapter(x, get_part):
  """Runs an adapter's layers on x: get_part(part) returns its layer for each of ADAPTER_PARTS and "add"."""
  h = x
  for part in ADAPTER_PARTS:
    h = get_part(part)(h)
  return get_part("add")([x, h])


def is_adapter_layer(layer_name):
  """True for layers that belong to an adapter (their names all start with 'adapter_')."""
  return layer_name.startswith("adapter_")


def randomize_adapters(model, seed, scale=0.5):
  """Sets every adapter weight of `model` to random non-zero values, so that experts differ from the trunk and
  from each other (tests and benchmarks of many experts; trained adapters come from train/experts.py).

  Kernels ~ N(0, scale^2 / fan_in), GroupNorm gamma ~ 1 + N(0, 0.1^2), beta ~ N(0, 0.1^2).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if not is_adapter_layer(layer.name):
      continue
    for w in layer.weights:
      shape = tuple(w.shape)
      if len(shape) == 4:
        value = rng.normal(0.0, scale / np.sqrt(np.prod(shape[:3])), shape)
      elif w.name == "gamma":
        value = 1.0 + rng.normal(0.0, 0.1, shape)
      else:
        value = rng.normal(0.0, 0.1, shape)
      w.assign(value.astype("float32"))
