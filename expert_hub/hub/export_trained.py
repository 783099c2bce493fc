"""Exports every trained model of a workdir (generalist and experts) as hub modules."""

import glob
import logging
import os

import numpy as np

from expert_hub import provenance
from expert_hub.hub import export
from expert_hub.models import adapters as adapters_lib
from expert_hub.models import builder
from expert_hub.models import packing
from expert_hub.models import resnet_v2
from expert_hub.models import weights as weights_lib
from expert_hub.train import upstream

log = logging.getLogger(__name__)


def module_name(info):
  """Readable module names: "generalist", "control" (the equal-compute control), `<node>` for full experts,
  `<node>_adapter` for adapters."""
  if info["kind"] in ("generalist", "control"):
    return info["kind"]
  base = info["node"].replace("/", "_")
  return base if info["kind"] == "full" else f"{base}_adapter"


def trained_model_dirs(workdir):
  dirs = [os.path.join(workdir, "generalist")]
  dirs += sorted(glob.glob(os.path.join(workdir, "experts", "*", "*")))
  return [d for d in dirs if upstream.is_trained(d)]


def export_trained(workdir, export_dir, version=1, names=None, skip_existing=True):
  """Exports trained models; returns {module name: path}.

  Args:
    workdir: a training workdir (generalist/, experts/<kind>/<name>/).
    export_dir: root of exports.
    version: the version to write.
    names: only these module names (default all).
    skip_existing: if True an already-exported version is kept and reported; if False it is an error.
  """
  out = {}
  for folder in trained_model_dirs(workdir):
    name = module_name(upstream.read_model_info(folder))
    if not names or name in names:
      out[name] = export_model_dir(folder, export_dir, name, version, skip_existing)
  if names:
    missing = sorted(set(names) - set(out))
    if missing:
      raise KeyError(f"No trained model named {missing} in {workdir!r}.")
  return out


def export_model_dir(folder, export_dir, name, version=1, skip_existing=True):
  """Exports one trained model folder (model.json + weights.npz) as module `name`; returns its path."""
  info = upstream.read_model_info(folder)
  path = export.module_dir(export_dir, info["upstream"], name, version)
  made_from = provenance.digest(provenance.read(folder))  # the trained model's own record (provenance.py)
  if os.path.exists(path) and skip_existing:
    exported_from = export.read_metadata(path).get("made_from")
    if exported_from != made_from:
      raise provenance.ProvenanceError(
          f"Module {path!r} was exported from another trained model (made_from {exported_from}) than "
          f"{folder!r} (made_from {made_from}): this workdir's models were retrained or come from another "
          "config. Nothing was kept or overwritten; export to another export_dir or version, or remove it.")
    log.info("Module %s already exported at %s; keeping it.", name, path)
    return path
  classifier = upstream.model_from_info(info, folder)
  metadata = {"kind": info["kind"], "node": info.get("node"), "labels": info["labels"],
              "label_names": info.get("label_names"),
              "image_size": info["image_size"], "model": info["model"], "adapter": info.get("adapter"),
              "num_images": info.get("num_images"), "train": info.get("train"), "made_from": made_from}
  path = export.export_module(resnet_v2.get_backbone(classifier), export_dir, info["upstream"], name, version,
                              metadata, head=classifier.get_layer("head"))
  log.info("Exported %s -> %s", name, path)
  return path


def export_pack(workdir, export_dir, version=1, pack_name="adapters"):
  """Exports the generalist trunk once plus every trained adapter expert as one packed module.

  Adapter experts train with the trunk frozen, so they share the generalist's trunk exactly; an expert whose
  trunk differs is refused rather than silently re-based.
  """
  generalist_dir = os.path.join(workdir, "generalist")
  g_info = upstream.read_model_info(generalist_dir)
  g_weights = weights_lib.load_weights(os.path.join(generalist_dir, upstream.WEIGHTS_FILE))
  model_cfg, _ = builder.configs_from_metadata(g_info)
  shared = {}
  trunk = resnet_v2.build_backbone(model_cfg, name="trunk", trunk_layers=shared)
  weights_lib.set_weights(trunk, g_weights, allow_unused=True)
  trunk_names = set(weights_lib.named_variables(trunk))
  experts, per_expert = {}, {}
  for folder in trained_model_dirs(workdir):
    info = upstream.read_model_info(folder)
    if info["kind"] != "adapter":
      continue
    name = module_name(info)
    w = weights_lib.load_weights(os.path.join(folder, upstream.WEIGHTS_FILE))
    moved = [k for k in trunk_names if not np.array_equal(w[k], g_weights[k])]
    if moved:
      raise ValueError(f"Adapter expert {name!r} changed trunk weights {moved[:3]}; only frozen-trunk adapter "
                       "experts can share the generalist's trunk in a pack.")
    model = builder.backbone_from_metadata(info, name=name, trunk_layers=shared)
    adapter_cfg = builder.configs_from_metadata(info)[1]
    weights_lib.set_weights(model, {k: v for k, v in w.items() if adapters_lib.is_adapter_layer(k)},
                            allow_missing=lambda k: k in trunk_names, allow_unused=True)
    experts[name] = (model, adapter_cfg)
    per_expert[name] = {"kind": "adapter", "node": info["node"], "labels": info["labels"],
                        "label_names": info.get("label_names"), "image_size": info["image_size"],
                        "adapter": info["adapter"], "model": info["model"]}
  if not experts:
    raise ValueError(f"No trained adapter experts in {workdir!r}; train some with train_experts --kinds=adapter.")
  metadata = {"experts": per_expert, "image_size": g_info["image_size"], "model": g_info["model"],
              "trunk": "generalist"}
  packed_trunk, packed_experts = packing.build_packed(model_cfg, shared, experts)
  return export.export_pack(packed_trunk, packed_experts, export_dir, g_info["upstream"], pack_name, version,
                            metadata)
