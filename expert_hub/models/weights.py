"""Name-based weights: move weights between a generalist, its experts and their files by layer name.

Plain and adapter models share trunk layer names, so a generalist's weights load into an adapter expert
(adapters keep their fresh zero-init) and an expert's trunk can be compared with the generalist's.
"""

import os

import keras
import numpy as np

from expert_hub import io_utils



def named_variables(model):
  """{"layer/weight": keras.Variable} for every weight of model, recursing into nested models."""
  out = {}
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      out.update(named_variables(layer))
      continue
    for w in layer.weights:
      key = f"{layer.name}/{w.name}"
      if key in out:
        raise ValueError(f"Weight name {key!r} appears twice in model {model.name!r}.")
      out[key] = w
  return out


def get_weights(model):
  return {k: np.asarray(v.numpy()) for k, v in named_variables(model).items()}


def set_weights(model, weights, allow_missing=(), allow_unused=False):
  """Assigns weights by name.

  Args:
    model: the destination.
    weights: {"layer/weight": array}.
    allow_missing: predicate or tuple of name prefixes for model weights that may be absent from `weights`
      (e.g. adapters when loading a generalist into an adapter expert); they keep their current values.
    allow_unused: if False, a name in `weights` that the model lacks is an error.

  Raises:
    ValueError: naming the missing, unused or mis-shaped weights.
  """
  variables = named_variables(model)
  if callable(allow_missing):
    may_miss = allow_missing
  else:
    may_miss = lambda k: any(k.startswith(p) for p in allow_missing)
  missing = [k for k in variables if k not in weights and not may_miss(k)]
  unused = [k for k in weights if k not in variables]
  if missing:
    raise ValueError(f"{len(missing)} weights of {model.name!r} are missing from the source, e.g. {missing[:5]}.")
  if unused and not allow_unused:
    raise ValueError(f"{len(unused)} source weights have no place in {model.name!r}, e.g. {unused[:5]}.")
  for k, v in variables.items():
    if k in weights:
      value = np.asarray(weights[k])
      if tuple(value.shape) != tuple(v.shape):
        raise ValueError(f"Weight {k!r} has shape {value.shape} in the source but {tuple(v.shape)} in "
                         f"{model.name!r}.")
      v.assign(value)


def save_weights(model, path):
  """Writes {"layer/weight": array} to an .npz file atomically."""
  weights = get_weights(model)
  with io_utils.atomic_writer(path, "wb") as f:
    np.savez(f, **weights)


def load_weights(path):
  if not os.path.exists(path):
    raise FileNotFoundError(f"Weights file {path!r} does not exist.")
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def count_params(variables):
  return int(sum(int(np.prod(v.shape)) for v in variables))




def fold_standardization_in_place(models):
  """Standardises every WS kernel of `models` once and switches those layers to standardize="training".

  The function each model computes is unchanged (WS is idempotent up to eps=1e-10), but inference no longer
  re-standardises kernels on every call. Use on export-only models: after further training, inference needs the
  kernels re-folded (the exported module does this itself). Returns the folded kernel variables.
  """
  from expert_hub.models import layers  # pylint: disable=g-import-not-at-top
  kernels, seen = [], set()
  for model in models:
    for layer in _all_layers(model):
      if isinstance(layer, layers.StandardizedConv2D) and id(layer) not in seen:
        seen.add(id(layer))
        if layer.standardize is True:
          layer.kernel.assign(layers.standardize_kernel(layer.kernel))
          layer.standardize = "training"
        if layer.standardize == "training":
          kernels.append(layer.kernel)
  return kernels


def _all_layers(model):
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _all_layers(layer)
    else:
      yield layer
