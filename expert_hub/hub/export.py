"""Writing experts as TF2 Reusable SavedModels (the TF Hub module contract), atomically, with metadata.

Layout: `<export_dir>/<upstream>/<expert>/<version>/` holding `saved_model.pb`, `variables/` and
`expert.json` (name, kind, node, labels, feature_dim, image_size, num_params, num_trainable_params, model
architecture and a sha256 of every other file). The module:

    module = hub.load(path)            # or tf.saved_model.load
    features = module(images, training=False)     # images float32 [B, H, W, 3] in [0, 1], any H, W
    module.variables, module.trainable_variables, module.regularization_losses
    module.logits(images)              # [B, num_labels] upstream logits, when exported with a head
    module.serve(images), module.call_training(images)   # single-argument endpoints for keras.layers.TFSMLayer

The container is a tf.train.Checkpoint holding only raw tf.Variables (not the Keras model, which would
double the files; stack.md 4.2), with `__call__` traced for both values of `training` so that
hub.KerasLayer passes the flag through.
"""

import os
import re
import shutil
import tempfile

import tensorflow as tf

from expert_hub import io_utils

METADATA_FILE = "expert.json"
KINDS = ("generalist", "full", "adapter")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


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


def _make_call(backbone):
  # A factory, not a lambda with default arguments: those make tf.saved_model.save fail (stack.md 4.3).
  def call(images, training=False):
    return backbone(images, training=training)
  return tf.function(call)


def _make_fixed(call, training):
  def fixed(images):
    return call(images, training=training)
  return tf.function(fixed)


def _make_logits(backbone, head, label_ids):
  ids = tf.constant(label_ids, tf.int32)

  def logits(images):
    return tf.gather(head(backbone(images, training=False)), ids, axis=-1)
  return tf.function(logits)


def _raw(variables):
  return [getattr(v, "value", v) for v in variables]


def _file_hashes(root):
  hashes = {}
  for folder, _, files in os.walk(root):
    for f in sorted(files):
      path = os.path.join(folder, f)
      rel = os.path.relpath(path, root)
      if rel != METADATA_FILE:
        hashes[rel] = io_utils.sha256_file(path)
  return dict(sorted(hashes.items()))


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
  if os.path.exists(path):
    raise FileExistsError(f"Export dir already holds {path!r}; choose a new version (nothing was written).")
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=parent)
  try:
    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
    call = _make_call(backbone)
    serving = call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    obj = tf.train.Checkpoint()
    obj.__call__ = call
    obj.variables = _raw(backbone.variables)
    obj.trainable_variables = _raw(backbone.trainable_variables)
    obj.regularization_losses = []
    obj.serve = _make_fixed(call, False)
    obj.call_training = _make_fixed(call, True)
    obj.serve.get_concrete_function(spec)
    obj.call_training.get_concrete_function(spec)
    signatures = {"serving_default": serving}
    if head is not None:
      obj.logits = _make_logits(backbone, head, list(metadata["labels"]))
      signatures["logits"] = obj.logits.get_concrete_function(spec)
      obj.head_variables = _raw(head.variables)
    tf.saved_model.save(obj, tmp, signatures=signatures)
    feature_dim = int(backbone.output_shape[-1])
    info = dict(metadata)
    info.update({
        "name": name, "upstream": upstream, "version": version, "feature_dim": feature_dim,
        "num_params": int(sum(int(tf.size(v)) for v in obj.variables)),
        "num_trainable_params": int(sum(int(tf.size(v)) for v in obj.trainable_variables)),
        "format": "tf2-reusable-savedmodel", "input": "float32 [batch, height, width, 3] in [0, 1]",
        "endpoints": ["__call__", "serve", "call_training"] + (["logits"] if head is not None else []),
        "sha256": _file_hashes(tmp),
    })
    io_utils.atomic_write_json(os.path.join(tmp, METADATA_FILE), info)
    os.rename(tmp, path)  # atomic; fails if a concurrent export created `path` meanwhile
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return path


def read_metadata(path):
  meta = os.path.join(path, METADATA_FILE)
  if not os.path.exists(meta):
    raise FileNotFoundError(f"{path!r} is not an expert_hub module ({METADATA_FILE} is missing).")
  return io_utils.read_json(meta)


def verify_module(path):
  """Checks every file against expert.json's sha256 list. Raises ValueError naming the bad file."""
  info = read_metadata(path)
  expected = info.get("sha256", {})
  for rel, digest in expected.items():
    f = os.path.join(path, rel)
    if not os.path.exists(f):
      raise ValueError(f"Module {path!r} is missing file {rel!r} listed in {METADATA_FILE}.")
    if io_utils.sha256_file(f) != digest:
      raise ValueError(f"Module {path!r}: file {rel!r} does not match its sha256 in {METADATA_FILE} "
                       "(modified or truncated).")
  return info
