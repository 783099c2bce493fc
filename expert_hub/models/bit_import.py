"""Importing BiT weight files (`BiT-M-R50x1.npz` and siblings) into our ResNet-v2.

BiT's keys (bit_and_vtab.md) map one to one onto our layer names:
  resnet/root_block/standardized_conv2d/kernel           -> root_conv/kernel
  resnet/block{B}/unit{UU}/{a,b,c}/standardized_conv2d/kernel -> block{B}_unit{UU}_{a,b,c}_conv/kernel
  resnet/block{B}/unit{UU}/{a,b,c}/group_norm/{gamma,beta}    -> block{B}_unit{UU}_{a,b,c}_gn/{gamma,beta}
  resnet/block{B}/unit01/a/proj/standardized_conv2d/kernel    -> block{B}_unit01_a_proj/kernel
  resnet/group_norm/{gamma,beta}                        -> final_gn/{gamma,beta}
  resnet/head/conv2d/{kernel,bias} (1x1 conv)            -> head/{kernel,bias} (dense)
The architecture (units per stage, width) is read from the file itself. Nothing is skipped silently: a key
with no place, a weight with no key, or a shape mismatch is an error naming them.
"""

import re

import numpy as np

from expert_hub.models import resnet_v2
from expert_hub.models import weights as weights_lib

_UNIT = re.compile(r"^resnet/block(\d)/unit(\d\d)/([abc])/(proj/)?(standardized_conv2d|group_norm)/(kernel|gamma|beta)$")


def bit_key_to_name(key):
  """Our "layer/weight" name for a BiT key. Raises KeyError for keys that have no place."""
  if key == "resnet/root_block/standardized_conv2d/kernel":
    return "root_conv/kernel"
  if key in ("resnet/group_norm/gamma", "resnet/group_norm/beta"):
    return f"final_gn/{key.rsplit('/', 1)[1]}"
  if key in ("resnet/head/conv2d/kernel", "resnet/head/conv2d/bias"):
    return f"head/{key.rsplit('/', 1)[1]}"
  m = _UNIT.match(key)
  if not m:
    raise KeyError(f"BiT key {key!r} has no place in ResNet-v2.")
  block, unit, part, proj, kind, weight = m.groups()
  if proj:
    if part != "a" or kind != "standardized_conv2d":
      raise KeyError(f"BiT key {key!r} has no place in ResNet-v2 (projections live under a/proj/).")
    return f"block{block}_unit{unit}_a_proj/{weight}"
  return f"block{block}_unit{unit}_{part}_{'conv' if kind == 'standardized_conv2d' else 'gn'}/{weight}"


def infer_model_config(arrays):
  """ModelConfig (units per stage, width) from a BiT weight dict."""
  units = []
  for block in range(1, 5):
    ids = {int(m.group(2)) for k in arrays if (m := _UNIT.match(k)) and int(m.group(1)) == block}
    if not ids:
      raise KeyError(f"BiT file has no units for block{block}; expected resnet/block{block}/unitNN/... keys.")
    units.append(max(ids))
  root = arrays.get("resnet/root_block/standardized_conv2d/kernel")
  if root is None:
    raise KeyError("BiT file lacks resnet/root_block/standardized_conv2d/kernel.")
  width = root.shape[-1] / 64.0
  cfg = resnet_v2.ModelConfig(units=tuple(units), width=width)
  if tuple(units) in {v: k for k, v in resnet_v2.DEPTHS.items()}:
    cfg = resnet_v2.ModelConfig(depth={v: k for k, v in resnet_v2.DEPTHS.items()}[tuple(units)], width=width)
  return cfg


def load_bit_npz(path):
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def build_from_bit(arrays, name="bit"):
  """A classifier (when the file has a head) or backbone with every BiT tensor in place.

  Returns:
    (model, ModelConfig, num_classes or None).
  """
  cfg = infer_model_config(arrays)
  weights = {}
  for key, value in arrays.items():
    target = bit_key_to_name(key)
    if target == "head/kernel":
      value = value.reshape(value.shape[-2], value.shape[-1])  # 1x1 conv [1, 1, C, N] -> dense [C, N]
    weights[target] = value
  backbone = resnet_v2.build_backbone(cfg, name=f"{name}_backbone")
  num_classes = None
  if "head/kernel" in weights:
    num_classes = int(weights["head/kernel"].shape[-1])
    model = resnet_v2.build_classifier(backbone, num_classes, name=name)
  else:
    model = backbone
  weights_lib.set_weights(model, weights)  # raises on missing / unused / mis-shaped weights
  return model, cfg, num_classes
