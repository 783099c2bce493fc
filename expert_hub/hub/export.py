"""Writing experts as TF2 Reusable SavedModels (the TF Hub module contract), atomically, with metadata.

Layout: `<export_dir>/<upstream>/<expert>/<version>/` holding `saved_model.pb`, `variables/`,
`expert.json` (name, kind, node, labels, feature_dim, image_size, num_params, num_trainable_params, model
architecture and a sha256 of every other file, the card included) and `README.md`, the model card generated from
expert.json (model_card.py). A module appears under its name only whole and on disk (fsynced, then renamed); a
killed export leaves a `.<version>.tmp-<host>-<pid>-*` folder that the next export beside it removes. The module:

    module = hub.load(path)            # or tf.saved_model.load
    features = module(images, training=False)     # images float32 [B, H, W, 3] in [0, 1], any H, W
    module.variables, module.trainable_variables, module.regularization_losses
    module.logits(images)              # [B, num_labels] upstream logits, when exported with a head
    module.serve(images), module.call_training(images)   # single-argument endpoints for keras.layers.TFSMLayer

Weight standardisation is folded into the stored kernels, so inference does not recompute it per call; the
training path still standardises exactly as BiT trains (see _FoldedStandardization).

The container is a tf.train.Checkpoint holding only raw tf.Variables (not the Keras model, which would
double the files; stack.md 4.2), with `__call__` traced for both values of `training` so that
hub.KerasLayer passes the flag through.
"""

import logging
import os
import re
import shutil
import stat
import socket
import tempfile
import time

import keras
import tensorflow as tf

from expert_hub import io_utils
from expert_hub.hub import model_card
from expert_hub.models import layers
from expert_hub.models import packing
from expert_hub.models import stacking
from expert_hub.models import weights as weights_lib

METADATA_FILE = "expert.json"
KINDS = ("generalist", "control", "full", "adapter", "dat")  # plus "pack" (export_pack); "dat": transfer/dat.py
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
log = logging.getLogger(__name__)


def check_name(value, what):
  """Names become path components: letters, digits, '_', '.', '-', no leading dot, no '..'."""
  if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
    raise ValueError(f"{what} {value!r} is not a valid name; expected letters, digits, '_', '.' or '-' "
                     "(no path separators, no leading '.', no '..').")
  return value


def module_dir(export_dir, upstream, name, version):
  check_name(upstream, "Upstream name")
  check_name(name, "Expert name")
  if not isinstance(version, int) or version < 1:
    raise ValueError(f"Version {version!r} is not valid; expected a positive integer.")
  return os.path.join(export_dir, upstream, name, str(version))


class _FoldedStandardization:
  """Weight standardisation folded into the kernels at export, re-folded lazily after training.

  Inference convolves with the stored kernels directly (they are standardised once at export); the training
  path standardises them on every call as BiT trains, and marks them stale. The next inference call re-folds
  them in place first: WS is idempotent, so this leaves the training path's function unchanged and makes
  inference exact again after any fine-tuning that went through the module's `training=True` call.
  """

  def __init__(self, kernels):
    self.kernels = [getattr(k, "value", k) for k in kernels]
    self.stale = tf.Variable(False, trainable=False, name="ws_refold_pending")

  def mark_stale(self):
    self.stale.assign(True)

  def refresh(self):
    def refold():
      for k in self.kernels:
        k.assign(layers.standardize_kernel(k))
      self.stale.assign(False)
      return tf.constant(True)
    return tf.cond(self.stale, refold, lambda: tf.constant(False))


def _make_call(backbone, folding):
  # A factory, not a lambda with default arguments: those make tf.saved_model.save fail (stack.md 4.3).
  def call(images, training=False):
    if training:
      folding.mark_stale()
      return backbone(images, training=True)
    folding.refresh()
    return backbone(images, training=False)
  return tf.function(call)


def _make_fixed(call, training):
  def fixed(images):
    return call(images, training=training)
  return tf.function(fixed)


def _make_logits(backbone, head, label_ids, folding):
  ids = tf.constant(label_ids, tf.int32)

  def logits(images):
    folding.refresh()
    return tf.gather(head(backbone(images, training=False)), ids, axis=-1)
  return tf.function(logits)


def _make_embed_all(stacked, folding, experts_per_graph):
  def embed_all(images):
    folding.refresh()
    return stacked(images, experts_per_chunk=experts_per_graph)
  return tf.function(embed_all, autograph=False)  # plain Python loops over experts and steps: nothing to convert


def _raw(variables):
  return [getattr(v, "value", v) for v in variables]


def _file_hashes(root):
  """{relative POSIX path: sha256} of every file under `root` except the top-level expert.json (which holds
  the list): the SavedModel, its variables and assets, and the model card."""
  hashes = {}
  for folder, _, files in os.walk(root):
    for f in sorted(files):
      path = os.path.join(folder, f)
      rel = os.path.relpath(path, root).replace(os.sep, "/")
      if rel != METADATA_FILE:
        hashes[rel] = io_utils.sha256_file(path)
  return dict(sorted(hashes.items()))


# A half-written export is `.<version>.tmp-<host>-<pid>-<random>` beside its final folder; the host and pid say
# whether the process that wrote it can still be running (see remove_stale_exports).
_TMP_MARK = ".tmp-"
_TMP_RE = re.compile(r"^\.\d+\.tmp-(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?[A-Za-z0-9_]+$")
STALE_EXPORT_SECONDS = 3600  # a half-written export this old is stale whoever wrote it


def _host():
  return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError, OSError):
    return True  # another user's process, or a pid we cannot ask about: assume alive
  return True


def _newest_mtime(root):
  newest = os.lstat(root).st_mtime
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      try:
        newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
      except OSError:
        pass
  return newest


def remove_stale_exports(parent, now=None):
  """Removes half-written exports (`.<version>.tmp-*` folders) that an export killed mid-way left in `parent`.

  One is stale when the process that wrote it is gone (same host, pid not running) or when nothing in it changed
  for STALE_EXPORT_SECONDS (another host's, or one named before the pid was recorded); an export still running
  elsewhere is left alone. Returns the removed paths.
  """
  now = time.time() if now is None else now
  removed = []
  for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
    tmp = os.path.join(parent, name)
    m = _TMP_RE.match(name)
    if m is None or os.path.islink(tmp) or not os.path.isdir(tmp):
      continue
    dead = m.group("pid") is not None and m.group("host") == _host() and not _pid_alive(int(m.group("pid")))
    try:
      old = now - _newest_mtime(tmp) > STALE_EXPORT_SECONDS
    except OSError:  # removed meanwhile
      continue
    if dead or old:
      log.warning("Removing half-written export %s (%s).", tmp,
                  f"its process {m.group('pid')} is gone" if dead else f"untouched for over {STALE_EXPORT_SECONDS} s")
      shutil.rmtree(tmp, ignore_errors=True)
      removed.append(tmp)
  return removed


def _write_module(path, save, info):
  """Writes a module atomically and durably: `save(tmp_dir)`, the model card generated from `info`, then
  expert.json with every other file's sha256 (the card included), an fsync of every file and folder, then the
  rename that publishes it.

  Half-written exports of an earlier, killed export beside `path` are removed first (remove_stale_exports). The
  module's folders get a plain mkdir's permissions (0o777 less the umask), not the temp folder's private 0o700.

  Raises FileExistsError (nothing written) when `path` exists.
  """
  if os.path.exists(path):
    raise FileExistsError(f"Export dir already holds {path!r}; choose a new version (nothing was written).")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  remove_stale_exports(parent)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}{_TMP_MARK}{_host()}-{os.getpid()}-", dir=parent)
  try:
    os.chmod(tmp, io_utils.default_dir_mode())
    save(tmp)
    model_card.write_model_card(tmp, info)  # before hashing: the card is a file of the module like any other
    info = dict(info, sha256=_file_hashes(tmp))
    io_utils.atomic_write_json(os.path.join(tmp, METADATA_FILE), info)
    io_utils.fsync_tree(tmp)  # every byte on disk before the rename makes the module visible
    os.rename(tmp, path)  # atomic; fails if a concurrent export created `path` meanwhile
    io_utils.fsync_dir(parent)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def _callable_module(backbone, spec, folding, head=None, label_ids=None, endpoints=True):
  """A tf.train.Checkpoint with the Reusable SavedModel attributes for one folded backbone (raw variables)."""
  call = _make_call(backbone, folding)
  call.get_concrete_function(spec, training=False)
  call.get_concrete_function(spec, training=True)
  obj = tf.train.Checkpoint()
  obj.__call__ = call
  obj.variables = _raw(backbone.variables)
  obj.trainable_variables = _raw(backbone.trainable_variables)
  obj.regularization_losses = []
  obj.ws_refold_pending = folding.stale
  if endpoints:
    obj.serve = _make_fixed(call, False)
    obj.call_training = _make_fixed(call, True)
    obj.serve.get_concrete_function(spec)
    obj.call_training.get_concrete_function(spec)
  if head is not None:
    obj.logits = _make_logits(backbone, head, list(label_ids), folding)
    obj.logits.get_concrete_function(spec)
    obj.head_variables = _raw(head.variables)
  return obj


def _num_params(variables):
  return int(sum(int(tf.size(v)) for v in variables))


def export_module(backbone, export_dir, upstream, name, version, metadata, head=None):
  """Exports a Keras backbone (images -> features) as a hub module; returns the module path.

  Args:
    backbone: keras.Model mapping [B, H, W, 3] images in [0, 1] to [B, D] features.
    export_dir: root of all exports.
    upstream: upstream dataset name (path component).
    name: expert name (path component).
    version: positive integer.
    metadata: dict merged into expert.json; must include "kind" (generalist | full | adapter); with a head,
      "labels" (upstream label ids the logits endpoint returns, in order) and optionally "label_names".
    head: optional Dense layer on the features; adds the `logits` endpoint over metadata["labels"].

  Raises:
    FileExistsError: the version already exists (nothing is overwritten).
    ValueError: bad names, version or kind.
  """
  path = module_dir(export_dir, upstream, name, version)
  kind = metadata.get("kind")
  if kind not in KINDS:
    raise ValueError(f"metadata['kind']={kind!r}; expected one of {KINDS}.")
  spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
  # Fold WS into a copy: the caller's model keeps standardising on every call, as training needs.
  folded = keras.models.clone_model(backbone)
  folded.set_weights(backbone.get_weights())
  folding = _FoldedStandardization(weights_lib.fold_standardization_in_place([folded]))
  obj = _callable_module(folded, spec, folding, head, metadata.get("labels"))
  signatures = {"serving_default": obj.__call__.get_concrete_function(spec, training=False)}
  if head is not None:
    signatures["logits"] = obj.logits.get_concrete_function(spec)
  info = dict(metadata)
  info.update({
      "name": name, "upstream": upstream, "version": version, "feature_dim": int(backbone.output_shape[-1]),
      "num_params": _num_params(obj.variables), "num_trainable_params": _num_params(obj.trainable_variables),
      "format": "tf2-reusable-savedmodel", "input": "float32 [batch, height, width, 3] in [0, 1]",
      "endpoints": ["__call__", "serve", "call_training"] + (["logits"] if head is not None else []),
  })
  return _write_module(path, lambda tmp: tf.saved_model.save(obj, tmp, signatures=signatures), info)


def export_pack(trunk, experts, export_dir, upstream, name, version, metadata, max_experts_per_graph=None):
  """Exports one SavedModel holding a trunk once plus several adapter experts built on the same trunk layers.

  The root is the trunk itself (a Reusable SavedModel: the generalist); each expert is a named sub-module
  `module.<expert>` with its own `__call__(images, training=False)`, `variables` (trunk + its adapters),
  `trainable_variables` and `regularization_losses` (TF Hub's named sub-callables); `module.experts` lists them.

  When the experts are packing.SharedTrunkBackbones, the root also gets `embed_all(images)` -> [E, B, D]: every
  expert's inference features in one graph (models/stacking.py), expert e being `module.embed_all_experts[e]`
  (also expert.json's "embed_all"). It runs at most `module.embed_all_experts_per_graph` experts' activations
  stacked at a time, so one call holds that many times the activations of one expert's call on B images.
  Packs exported before embed_all existed lack these attributes (selection/embed.py:embed_pack falls back).

  The models are folded in place (weights.fold_standardization_in_place): build them for the export only.

  Args:
    trunk: the generalist backbone whose variables the experts share (a keras.Model or a
      models.packing.SharedTrunkBackbone, which traces the trunk's graph once for all experts).
    experts: {expert name: backbone} sharing the trunk's variables.
    export_dir, upstream, name, version: as in export_module (name is the pack's name).
    metadata: {"experts": {expert name: expert.json-style metadata}, ...} merged into the pack's expert.json.
    max_experts_per_graph: experts stacked per trunk call inside embed_all (None: all), a memory bound.
  """
  path = module_dir(export_dir, upstream, name, version)
  for expert in experts:
    check_name(expert, "Packed expert name")
  trunk_ids = {id(v) for v in _raw(trunk.variables)}
  for expert, model in experts.items():
    if not trunk_ids <= {id(v) for v in _raw(model.variables)}:
      raise ValueError(f"Packed expert {expert!r} does not share the trunk's variables; build it with "
                       "build_backbone(..., trunk_layers=<the trunk's layer cache>).")
  spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
  folding = _FoldedStandardization(weights_lib.fold_standardization_in_place([trunk, *experts.values()]))
  root = _callable_module(trunk, spec, folding)
  per_expert = dict(metadata.get("experts", {}))
  for expert, model in experts.items():
    setattr(root, expert, _callable_module(model, spec, folding, endpoints=False))
    own = [v for v in _raw(model.variables) if id(v) not in trunk_ids]
    per_expert[expert] = dict(per_expert.get(expert, {}), num_params=_num_params(_raw(model.variables)),
                              num_own_params=_num_params(own), feature_dim=int(model.output_shape[-1]))
  root.experts = tf.Variable(sorted(experts), trainable=False, name="experts")  # constants are not saved
  embed_all = None
  if experts and all(isinstance(m, packing.SharedTrunkBackbone) for m in experts.values()):
    stacked = stacking.StackedExperts(experts)
    per_graph = len(experts) if max_experts_per_graph is None else max(1, min(len(experts), max_experts_per_graph))
    root.embed_all = _make_embed_all(stacked, folding, per_graph)
    root.embed_all.get_concrete_function(spec)
    root.embed_all_experts = tf.Variable(list(stacked.names), trainable=False, name="embed_all_experts")
    root.embed_all_experts_per_graph = tf.Variable(per_graph, trainable=False, name="embed_all_experts_per_graph")
    embed_all = {"experts": list(stacked.names), "experts_per_graph": per_graph}
  info = dict(metadata)
  info.update({
      "name": name, "upstream": upstream, "version": version, "kind": "pack",
      "feature_dim": int(trunk.output_shape[-1]), "num_params": _num_params(root.variables),
      "num_trainable_params": _num_params(root.trainable_variables),
      "num_params_total": _num_params({id(v): v for m in experts.values() for v in _raw(m.variables)}.values()),
      "format": "tf2-reusable-savedmodel, named sub-callables per expert",
      "input": "float32 [batch, height, width, 3] in [0, 1]", "experts": per_expert,
  })
  if embed_all is not None:
    info["embed_all"] = embed_all
  signatures = {"serving_default": root.__call__.get_concrete_function(spec, training=False)}
  return _write_module(path, lambda tmp: tf.saved_model.save(root, tmp, signatures=signatures), info)


def read_metadata(path):
  """The expert.json of the module folder `path`.

  Raises:
    FileNotFoundError: `path` has no expert.json.
    ValueError: expert.json is not valid JSON (json.JSONDecodeError) or not a JSON object; names the file.
  """
  meta = os.path.join(path, METADATA_FILE)
  info = io_utils.read_json(meta, missing=f"{path!r} is not an expert_hub module ({METADATA_FILE} is missing).")
  if not isinstance(info, dict):
    raise ValueError(f"{meta!r} holds a JSON {type(info).__name__}; expected an object (name, kind, sha256, ...).")
  return info


def _module_files(path):
  """{relative POSIX path} of every entry under a module folder but the top-level expert.json.

  Raises:
    ValueError: a symlink or anything but a regular file or folder inside the module (a link could point a
      trusted folder's file anywhere; a FIFO or device would hang the hash).
  """
  found = set()
  for folder, dirs, files in os.walk(path, followlinks=False):
    for name in dirs + files:
      full = os.path.join(folder, name)
      rel = os.path.relpath(full, path).replace(os.sep, "/")
      mode = os.lstat(full).st_mode
      if stat.S_ISLNK(mode):
        raise ValueError(f"Module {path!r}: {rel!r} is a symbolic link; a module holds regular files only "
                         "(a link would let a module in a trusted folder read or stand for files elsewhere).")
      if name in files and not stat.S_ISREG(mode):
        raise ValueError(f"Module {path!r}: {rel!r} is not a regular file (mode {stat.filemode(mode)}).")
      if name in files and rel != METADATA_FILE:
        found.add(rel)
  return found


def _check_manifest_path(path, rel):
  """Raises ValueError unless `rel` is a plain relative path inside the module (no '/' root, no '..', no '.')."""
  parts = rel.split("/") if isinstance(rel, str) else None
  if (not parts or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts)
      or os.path.isabs(rel)):
    raise ValueError(f"Module {path!r}: its {METADATA_FILE} lists {rel!r}; expected relative paths inside the "
                     "module (no leading '/', no '.' or '..' parts).")


def verify_module(path):
  """Checks the module's files against expert.json's sha256 manifest; returns expert.json.

  The manifest must list every file of the module but expert.json itself (saved_model.pb, variables/,
  assets/, fingerprint.pb, the model card), by plain relative paths, and nothing else; every file must be a
  regular file (no links). A manifest proves integrity against accidents (a truncated copy, an edited file, a
  file added or lost), not authenticity: whoever can write the module can rewrite its manifest. Trust comes
  from where a module is (the registry's export dirs) or from a trust record (published.py).

  Raises:
    ValueError: no or an empty manifest, a path that leaves the module, a file missing, unlisted, not regular,
      or not matching its sha256: each named.
  """
  info = read_metadata(path)
  expected = info.get("sha256")
  if not isinstance(expected, dict) or not expected:
    raise ValueError(f"Module {path!r}: {METADATA_FILE} has no sha256 manifest (got {expected!r}); expected "
                     "{relative path: sha256} for every file of the module. Export it again with expert_hub.")
  for rel in expected:
    _check_manifest_path(path, rel)
  present = _module_files(path)
  if "saved_model.pb" not in expected:
    raise ValueError(f"Module {path!r}: its {METADATA_FILE} manifest does not list saved_model.pb.")
  unlisted = sorted(present - set(expected))
  if unlisted:
    raise ValueError(f"Module {path!r} holds files its {METADATA_FILE} manifest does not list: {unlisted[:5]}"
                     f"{' ...' if len(unlisted) > 5 else ''}; a module's files are all listed, so these were "
                     "added after its export.")
  for rel, digest in expected.items():
    if rel not in present:
      raise ValueError(f"Module {path!r} is missing file {rel!r} listed in {METADATA_FILE}.")
    if io_utils.sha256_file(os.path.join(path, *rel.split("/"))) != digest:
      raise ValueError(f"Module {path!r}: file {rel!r} does not match its sha256 in {METADATA_FILE} "
                       "(modified or truncated).")
  return info
