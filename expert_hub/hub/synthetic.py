"""Random-weight expert modules at the shapes of a real export, for benchmarks and scale rehearsals.

No training: a generalist (random trunk and head), a pack of adapter experts on its trunk (random non-zero
adapters, so experts differ) and some full experts (independently initialised trunks), exported exactly as
export_trained writes trained ones (expert.json with architecture, labels and sha256), so selection,
fine-tuning and the registry treat them like any other modules. What they compute is meaningless; what they
cost (load, embed, fine-tune, memory) is that of real modules of the same architecture.
"""

import dataclasses

import keras

from expert_hub.hub import export
from expert_hub.models import adapters as adapters_lib
from expert_hub.models import packing
from expert_hub.models import resnet_v2

PACK_NAME = "adapters"


def adapter_name(i):
  return f"a{i:03d}"


def _info(kind, model_cfg, adapter_cfg, num_labels, image_size):
  return {"kind": kind, "node": None, "labels": list(range(num_labels)), "image_size": image_size,
          "model": model_cfg.to_dict(), "adapter": None if adapter_cfg is None else dataclasses.asdict(adapter_cfg)}


def build_pack(model_cfg, adapter_cfg, num_experts, export_dir, upstream="synthetic", name=PACK_NAME, seed=0,
               num_labels=10, image_size=32):
  """Exports a pack of `num_experts` random adapter experts on one random trunk; returns its path."""
  keras.utils.set_random_seed(seed)
  shared = {}
  resnet_v2.build_backbone(model_cfg, name="trunk", trunk_layers=shared)
  experts = {}
  for i in range(num_experts):
    model = resnet_v2.build_backbone(model_cfg, adapter=adapter_cfg, name=adapter_name(i), trunk_layers=shared)
    adapters_lib.randomize_adapters(model, seed=seed + i)
    experts[adapter_name(i)] = (model, adapter_cfg)
  trunk, packed = packing.build_packed(model_cfg, shared, experts)
  per_expert = {n: _info("adapter", model_cfg, adapter_cfg, num_labels, image_size) for n in experts}
  metadata = {"experts": per_expert, "image_size": image_size, "model": model_cfg.to_dict(), "trunk": "generalist"}
  return export.export_pack(trunk, packed, export_dir, upstream, name, 1, metadata)


def build_module(model_cfg, kind, name, export_dir, upstream="synthetic", seed=0, num_labels=10, image_size=32):
  """Exports one random full-network module ("generalist" or "full") with an upstream head; returns its path."""
  keras.utils.set_random_seed(seed)
  backbone = resnet_v2.build_backbone(model_cfg, name=f"{name}_backbone")
  head = keras.layers.Dense(num_labels, name="head")
  head.build((None, model_cfg.feature_dim))
  return export.export_module(backbone, export_dir, upstream, name, 1,
                              _info(kind, model_cfg, None, num_labels, image_size), head=head)


def build_experts(export_dir, model_cfg=None, adapter_cfg=None, num_adapters=48, num_full=2, upstream="synthetic",
                  seed=0, image_size=32):
  """A generalist, a pack of `num_adapters` adapter experts and `num_full` full experts under export_dir.

  Returns:
    {"generalist": path, "pack": path or None, "full": [paths], "handles": [every expert's handle, packed
     ones as "<pack path>#<expert>", full ones as paths]}.
  """
  model_cfg = model_cfg or resnet_v2.MODEL_SIZES["tiny"]
  adapter_cfg = adapter_cfg or adapters_lib.AdapterConfig()
  out = {"generalist": build_module(model_cfg, "generalist", "generalist", export_dir, upstream, seed,
                                    image_size=image_size)}
  out["pack"] = (build_pack(model_cfg, adapter_cfg, num_adapters, export_dir, upstream, seed=seed + 1,
                            image_size=image_size) if num_adapters else None)
  out["full"] = [build_module(model_cfg, "full", f"full{i:02d}", export_dir, upstream, seed + 1000 + i,
                              image_size=image_size) for i in range(num_full)]
  out["handles"] = ([f"{out['pack']}#{adapter_name(i)}" for i in range(num_adapters)] + out["full"])
  return out
