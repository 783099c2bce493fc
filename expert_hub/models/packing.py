"""Many adapter experts on one trunk, with the trunk's graph traced once.

A packed module holds the generalist trunk once plus each adapter expert's own variables. Tracing each expert
as a whole Keras model would copy the whole trunk graph into every expert's functions (~1.7 MiB per expert for
ResNet50). Here every trunk step of `resnet_v2.backbone_plan` (stem, each unit, final) is one shared
tf.function; an expert's call runs those functions with its adapters in between, so its own graph is a few
adapter ops and function calls. models/stacking.py runs all of a pack's experts in one graph (`embed_all`).
"""

import tensorflow as tf

from expert_hub.models import adapters as adapters_lib
from expert_hub.models import resnet_v2


def _segment_fn(segment):
  def fn(x, training=False):
    return segment(x, training=training)
  return tf.function(fn)


class SharedTrunkBackbone:
  """A backbone-like callable (`__call__(images, training)`, `variables`, `trainable_variables`, `layers`,
  `output_shape`) that runs shared trunk segments with this expert's adapters in between."""

  def __init__(self, plan, segment_fns, segments, adapter_model=None):
    self.plan, self.segment_fns, self.adapter_model = plan, segment_fns, adapter_model
    self.layers = list(segments.values())
    if adapter_model is not None:
      self.layers += [l for l in adapter_model.layers if adapters_lib.is_adapter_layer(l.name)]
    self.output_shape = (None, segments["final"].output_shape[-1])

  @property
  def variables(self):
    seen, out = set(), []
    for layer in self.layers:
      for v in layer.weights:
        if id(v) not in seen:
          seen.add(id(v))
          out.append(v)
    return out

  @property
  def trainable_variables(self):
    return [v for v in self.variables if v.trainable]

  def __call__(self, images, training=False):
    x = images
    for kind, step, _ in self.plan:
      if kind == "trunk":
        x = self.segment_fns[step](x, training=training)
      else:
        x = adapters_lib.apply_adapter(x, lambda part, step=step: self.adapter_model.get_layer(f"{step}_{part}"))
    return x


def build_packed(config, trunk_layers, expert_models):
  """(trunk, {name: expert}) SharedTrunkBackbones for a trunk layer cache and adapter experts built on it.

  Args:
    config: the ModelConfig of trunk and experts.
    trunk_layers: the layer cache the experts were built with (build_backbone(..., trunk_layers=...)).
    expert_models: {name: (keras.Model, AdapterConfig)}.
  """
  segments = resnet_v2.build_trunk_segments(config, trunk_layers)
  segment_fns = {name: _segment_fn(seg) for name, seg in segments.items()}
  trunk = SharedTrunkBackbone(resnet_v2.backbone_plan(config), segment_fns, segments)
  experts = {name: SharedTrunkBackbone(resnet_v2.backbone_plan(config, adapter), segment_fns, segments, model)
             for name, (model, adapter) in expert_models.items()}
  return trunk, experts


