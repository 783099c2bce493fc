"""Exports every trained model of a workdir (generalist and experts) as hub modules."""

import glob
import logging
import os

from expert_hub.hub import export
from expert_hub.models import resnet_v2
from expert_hub.train import upstream

log = logging.getLogger(__name__)


def module_name(info):
  """Readable expert names: the generalist, `<node>` for full experts, `<node>_adapter` for adapters."""
  if info["kind"] == "generalist":
    return "generalist"
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
    info = upstream.read_model_info(folder)
    name = module_name(info)
    if names and name not in names:
      continue
    path = export.module_dir(export_dir, info["upstream"], name, version)
    if os.path.exists(path) and skip_existing:
      log.info("Module %s already exported at %s; keeping it.", name, path)
      out[name] = path
      continue
    classifier = upstream.model_from_info(info, folder)
    metadata = {"kind": info["kind"], "node": info.get("node"), "labels": info["labels"],
                "label_names": info.get("label_names"),
                "image_size": info["image_size"], "model": info["model"], "adapter": info.get("adapter"),
                "num_images": info.get("num_images"), "train": info.get("train")}
    out[name] = export.export_module(resnet_v2.get_backbone(classifier), export_dir, info["upstream"], name,
                                     version, metadata, head=classifier.get_layer("head"))
    log.info("Exported %s -> %s", name, out[name])
  if names:
    missing = sorted(set(names) - set(out))
    if missing:
      raise KeyError(f"No trained model named {missing} in {workdir!r}.")
  return out
