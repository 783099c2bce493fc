"""The one seam from metadata to a Keras model: model.json (training) and expert.json (export) both carry the
architecture ("model") and adapter plan ("adapter"); every stage rebuilds its network here.
"""

from typing import Mapping, Optional, Tuple

from expert_hub.models import adapters as adapters_lib
from expert_hub.models import resnet_v2


def configs_from_metadata(metadata: Mapping) -> Tuple[resnet_v2.ModelConfig, Optional[adapters_lib.AdapterConfig]]:
  """(ModelConfig, AdapterConfig or None) of a model.json / expert.json dict.

  Raises:
    ValueError: the metadata has no "model" architecture (not a module or model written by expert_hub).
  """
  if not metadata.get("model"):
    raise ValueError(f"Metadata with keys {sorted(metadata)} has no 'model' architecture; expected the model.json "
                     "or expert.json of a model trained or exported by expert_hub.")
  adapter = metadata.get("adapter")
  return (resnet_v2.ModelConfig.from_dict(metadata["model"]),
          adapters_lib.AdapterConfig(**adapter) if adapter else None)


def backbone_from_metadata(metadata: Mapping, name="backbone", trunk_layers=None):
  """images -> features, with the architecture and adapters the metadata names (fresh weights)."""
  model_cfg, adapter_cfg = configs_from_metadata(metadata)
  return resnet_v2.build_backbone(model_cfg, adapter=adapter_cfg, name=name, trunk_layers=trunk_layers)


def classifier_from_metadata(metadata: Mapping, num_classes, name="model"):
  """backbone_from_metadata + a zero-initialised head of `num_classes` (resnet_v2.build_classifier)."""
  return resnet_v2.build_classifier(backbone_from_metadata(metadata, name=f"{name}_backbone"), num_classes,
                                    name=name)
