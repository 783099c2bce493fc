"""expert_hub: scalable transfer learning with expert models (Puigcerver et al., ICLR 2021).

Public API:
  expert_hub.ExpertLayer(handle, trainable=True)   Keras 3 layer around an expert module
  expert_hub.list_experts(export_dirs)             every exported expert's metadata
  expert_hub.resolve(handle, export_dirs)          name/path/URL -> module path
  expert_hub.ModuleSession(registry)               each module loaded once per process (hub/session.py)
"""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy: `import expert_hub` stays cheap; TensorFlow loads on first use of a TF-backed name.
  if name == "ExpertLayer":
    from expert_hub.hub.layer import ExpertLayer  # pylint: disable=g-import-not-at-top
    return ExpertLayer
  if name == "ModuleSession":
    from expert_hub.hub.session import ModuleSession  # pylint: disable=g-import-not-at-top
    return ModuleSession
  if name in ("list_experts", "resolve", "Registry"):
    from expert_hub.hub import registry  # pylint: disable=g-import-not-at-top
    return getattr(registry, name)
  raise AttributeError(f"module 'expert_hub' has no attribute {name!r}")
