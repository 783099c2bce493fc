"""A module session: one per process, it resolves, verifies and loads each hub module at most once.

TensorFlow keeps every `tf.saved_model.load`'s functions for the life of the process
(tensorflow/tensorflow#45453: ~80 MB per load of a tiny module), so a loop that loads a module per task or per
fine-tune grows without bound. A session is built once at the top (a binary, the pipeline) around one Registry
and passed down; everything below asks it for modules:

  session = ModuleSession(registry_lib.Registry(export_dirs))
  module, path = session.module("shapes")           # loaded, verified and traced once; later calls reuse it
  embed = session.embedder("shapes")                # features of our modules without loading their graph
  session.metadata("world32/adapters#shapes_adapter")  # expert.json (a packed expert's entry), {} if foreign
  session.restore_variables("shapes", variables)    # our modules' weights into a Keras model, no graph load

`restore_variables` reads a module's weights from its SavedModel checkpoint (`variables/`), matched by
variable name, into variables the caller built (a compiled fine-tuning template), so fine-tuning our modules
loads no graph at all. Verification (the sha256 manifest; the op allowlist for modules outside the export
dirs) runs once per module per process, before its first load or restore.

A module handed out for training (`module(..., for_training=True)`, as ExpertLayer does) gets its saved
weights back from its checkpoint the next time anyone asks for it, so a fine-tune never leaks into the next
selection or fine-tune of the same process.
"""

import logging
import os

import tensorflow as tf

from expert_hub.hub import export
from expert_hub.hub import loading
from expert_hub.hub import registry as registry_lib

log = logging.getLogger(__name__)
_CHECKPOINT = os.path.join("variables", "variables")


class ModuleSession:
  """Modules of one registry, each loaded at most once per process.

  Args:
    registry: the Registry names are looked up in (its export dirs are trusted for their ops); None builds
      one from $EXPERT_HUB_EXPORT_DIRS.
    allow_unsafe_ops: the default for `module(...)`: load modules from elsewhere even if their graph has ops
      outside the allowlist.
    trusted_dirs: folders whose modules skip the op allowlist (default: the registry's export dirs); a
      `.keras` file's layers look names up in the export dirs it records but trust only the caller's.
  """

  def __init__(self, registry=None, allow_unsafe_ops=False, trusted_dirs=None):
    self.registry = registry if registry is not None else registry_lib.Registry()
    self.allow_unsafe_ops = allow_unsafe_ops
    self.trusted_dirs = list(self.registry.export_dirs if trusted_dirs is None else trusted_dirs)
    self._resolved = {}  # handle -> resolved handle
    self._local = {}  # resolved handle -> (local path, packed expert or None)
    self._verified = set()  # local paths whose manifest was checked
    self._ops_checked = set()  # local paths that passed the allowlist (or are trusted)
    self._loaded = {}  # local path -> loaded SavedModel root
    self._metadata = {}  # local path -> expert.json or {}
    self._variable_names = {}  # local path -> {sub-module name or None: [variable names in `variables` order]}
    self._trained = set()  # resolved handles handed out for training since their weights were last restored
    self._shared = {}

  @classmethod
  def for_export_dirs(cls, export_dirs=None, allow_unsafe_ops=False):
    return cls(registry_lib.Registry(export_dirs), allow_unsafe_ops)

  @property
  def export_dirs(self):
    return self.registry.export_dirs

  @property
  def num_loads(self):
    """How many SavedModels this session has loaded (each at most once)."""
    return len(self._loaded)

  def resolve(self, handle):
    """Registry.resolve, memoised: name, path or URL -> path or URL ("<pack path>#<expert>" for packs)."""
    if handle not in self._resolved:
      self._resolved[handle] = self.registry.resolve(handle)
    return self._resolved[handle]

  def local_path(self, handle):
    """(local module path, packed expert or None) of a handle; a URL is downloaded to tensorflow_hub's cache."""
    resolved = self.resolve(handle)
    if resolved not in self._local:
      self._local[resolved] = loading.split_handle(resolved)
    return self._local[resolved]

  def metadata(self, handle):
    """The module's expert.json; for "<pack>#<expert>" the pack's entry for that expert (with the pack's
    upstream); {} for modules not written by expert_hub (no expert.json)."""
    path, packed = self.local_path(handle)
    if path not in self._metadata:
      has_metadata = os.path.exists(os.path.join(path, export.METADATA_FILE))
      self._metadata[path] = export.read_metadata(path) if has_metadata else {}
    info = self._metadata[path]
    if packed is None or not info:
      return info
    return dict(info.get("experts", {}).get(packed, {}), upstream=info.get("upstream"))

  def _check(self, path, allow_unsafe_ops):
    if path not in self._verified:
      loading.verify_manifest(path)
      self._verified.add(path)
    if path not in self._ops_checked:
      loading.check_ops(path, self.trusted_dirs, allow_unsafe_ops)
      if not allow_unsafe_ops:  # an allowed-anyway module is checked again for the next caller that does not
        self._ops_checked.add(path)

  def module(self, handle, allow_unsafe_ops=None, for_training=False):
    """(loaded module, path) of a handle: loaded and verified on first use, then the same object every time.

    Args:
      handle: expert name, module path, URL or "<pack>#<expert>" (the pack's sub-module).
      allow_unsafe_ops: as loading.load_module; None for the session's default.
      for_training: the caller will change its variables (fine-tuning); the saved weights come back from the
        module's checkpoint before the next caller gets it.

    Raises:
      ValueError: a file does not match the sha256 manifest (named). Nothing is loaded.
      loading.UnsafeModuleError: ops outside the allowlist (named), unless allowed.
    """
    resolved = self.resolve(handle)
    path, packed = self.local_path(handle)
    self._check(path, self.allow_unsafe_ops if allow_unsafe_ops is None else allow_unsafe_ops)
    if path not in self._loaded:
      log.info("Loading module %s", path)
      self._loaded[path] = loading.load_saved_model(path)
    root = self._loaded[path]
    self._restore_trained(path)
    if for_training:
      self._trained.add(resolved)
    if packed is not None:
      return loading.packed_expert_of(root, packed, path)
    return root, path

  def _restore_trained(self, path):
    """Gives every variable a training caller may have changed in the module at `path` its saved value."""
    for resolved in [r for r in self._trained if self._local[r][0] == path]:
      packed = self._local[resolved][1]
      sub = self._loaded[path] if packed is None else getattr(self._loaded[path], packed)
      self._read_checkpoint(path, packed, list(sub.variables))
      self._trained.discard(resolved)

  def saved_variable_names(self, handle):
    """Names of the module's `variables` in order (for "<pack>#<expert>", that expert's), read from the
    SavedModel's object graph without loading it."""
    path, packed = self.local_path(handle)
    if path not in self._variable_names:
      self._variable_names[path] = _variable_names(path)
    names = self._variable_names[path]
    if packed not in names:
      raise ValueError(f"Module {path!r} has no `variables` list for {packed or 'its root'!r}; expected a TF2 "
                       "Reusable SavedModel.")
    return names[packed]

  def restore_variables(self, handle, variables):
    """Assigns the module's saved weights to `variables` ({name: tf.Variable or keras.Variable}), by name.

    Reads the SavedModel's checkpoint only: no graph is loaded, nothing is traced. The module is verified
    first, as a load would be.

    Raises:
      ValueError: a verification failure, or names that do not match the module's variables (both sides
        named).
    """
    path, packed = self.local_path(handle)
    self._check(path, self.allow_unsafe_ops)
    names = self.saved_variable_names(handle)
    missing, extra = sorted(set(names) - set(variables)), sorted(set(variables) - set(names))
    if missing or extra or len(names) != len(set(names)):
      raise ValueError(f"Module {self.resolve(handle)!r}: its {len(names)} variables do not match the "
                       f"{len(variables)} given: only in the module {missing[:5]}, only given {extra[:5]}.")
    self._read_checkpoint(path, packed, [variables[n] for n in names])

  def _read_checkpoint(self, path, packed, targets):
    # A Keras variable's `.value` is its tf.Variable; a tf.Variable's `.value` is a method, so keep those as they are.
    leaf = tf.train.Checkpoint(variables=[v if isinstance(v, tf.Variable) else v.value for v in targets])
    root = leaf if packed is None else tf.train.Checkpoint(**{packed: leaf})
    status = root.read(os.path.join(path, _CHECKPOINT))
    status.expect_partial()  # the checkpoint also holds heads, counters and other experts
    status.assert_existing_objects_matched()

  def embedder(self, handle):
    """An images -> features callable (`fn(images, training=False)`, traced once per architecture) for a handle.

    For a module written by expert_hub (expert.json has its architecture; packed experts too) it is a Keras
    backbone of that architecture with the module's weights restored from its checkpoint: no graph is loaded,
    and one traced function serves every module of that architecture in turn. Any other module is loaded (once)
    and its own `__call__` is returned. Both compute the same features up to float rounding (the exported
    kernels are weight-standardised once; the Keras layers standardise on every call, which is idempotent).
    """
    metadata = self.metadata(handle)
    if not metadata.get("model"):
      return self.module(handle)[0]
    key = ("embed_template", repr(metadata["model"]), repr(metadata.get("adapter")))
    template = self.shared(key, lambda: _EmbedTemplate(metadata))
    resolved = self.resolve(handle)
    if template.holds != resolved:
      template.holds = None
      self.restore_variables(handle, template.variables)
      template.holds = resolved
    return template

  def shared(self, key, build):
    """A per-process memo for objects built once and reused across tasks (compiled fine-tuning templates)."""
    if key not in self._shared:
      self._shared[key] = build()
    return self._shared[key]


class _EmbedTemplate:
  """A Keras backbone for one architecture and its inference function, traced once for any image size."""

  def __init__(self, metadata):
    from expert_hub.models import builder  # pylint: disable=g-import-not-at-top
    self.backbone = builder.backbone_from_metadata(metadata, name="embed_backbone")
    self.variables = {v.path: v for v in self.backbone.variables}
    self.holds = None  # the resolved handle whose weights it holds
    self._call = tf.function(lambda images: self.backbone(images, training=False),
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

  def __call__(self, images, training=False):
    if training:
      raise ValueError("An embedding template runs inference only (training=False).")
    return self._call(images)


def _variable_names(path):
  """{None: root's variable names, sub-module name: its names} from a SavedModel's object graph."""
  graph = loading.read_saved_model_proto(path).meta_graphs[0].object_graph_def

  def names_under(node_id):
    children = {c.local_name: c.node_id for c in graph.nodes[node_id].children}
    if "variables" not in children:
      return None
    return [graph.nodes[c.node_id].variable.name for c in graph.nodes[children["variables"]].children]

  out = {None: names_under(0)}
  for child in graph.nodes[0].children:
    names = names_under(child.node_id)
    if names is not None and child.local_name not in ("variables", "trainable_variables"):
      out[child.local_name] = names
  return {k: v for k, v in out.items() if v is not None}
