"""Embedding cache: what a selection run computed per (module, task data, split), kept so a re-run skips it.

Embedding the task with every expert is nearly all of selection's cost, and an interrupted or re-run selection
(another proxy, another k, a Beam run over the same workdir) needs the same arrays again. An entry is reused only
for the content it was computed from, never for a name: the key holds

  module:         module_identity: the sha256 of the module's files listed in its expert.json (re-exporting a
                  module under the same path invalidates its entries); modules without an expert.json (hub URLs,
                  published modules) by path and saved_model.pb size and mtime;
  data:           the task split's fingerprint (tasks/fingerprint.py: sha256 over its decoded images and labels
                  in order), so added or replaced images, a re-prepared dataset or another ArrayTask with the
                  same name is another entry;
  split, image_size, preprocessing (embed.PREPROCESSING: how images are brought to image_size), kind.

On-disk format (FORMAT): one `.npz` per entry in the cache folder (`<workdir>/embeddings/` for select_expert),
named `<expert, cleaned>.<kind>.<first 16 hex of sha256(key)>.npz` and written atomically (a temp file, then a
rename), holding two arrays: "array" (features [N, D] or logits [N, C], float) and "key" (the key's canonical
JSON, a 0-d string array). An entry whose stored key, example count or rank differs is stale and recomputed; one
that cannot be read (cut short, zero bytes, garbage: a copy interrupted outside this code) is treated as missing,
with a warning naming it, and recomputed. An entry is never trusted without its key.
"""

import hashlib
import json
import logging
import os
import pickle
import re
import zipfile
import zlib

import numpy as np

from expert_hub import io_utils
from expert_hub.hub import export
from expert_hub.selection import embed

log = logging.getLogger(__name__)
KINDS = ("features", "logits")
FORMAT = 2  # 1: keyed by task name; 2: by task content (a fingerprint) and preprocessing
# What reading a damaged .npz raises: a cut zip (BadZipFile), zero bytes (EOFError), garbage (ValueError: not
# a zip, refused pickle), a bad member (BadZipFile CRC, zlib.error), unreadable files (OSError).
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError)


def module_identity(path):
  """A string that changes when the module changes.

  Args:
    path: a resolved handle, "<module path>" or "<pack>#<expert>" (or a URL), or the (local path, packed expert
      or None) pair of session.ModuleSession.local_path.
  """
  if isinstance(path, (tuple, list)):
    base, expert = path[0], path[1] or ""
  else:
    base, _, expert = str(path).partition("#")
  meta = os.path.join(base, export.METADATA_FILE)
  if os.path.exists(meta):
    hashes = export.read_metadata(base).get("sha256")
    if hashes:
      return json.dumps({"sha256": hashes, "expert": expert}, sort_keys=True)
  pb = os.path.join(base, "saved_model.pb")
  if os.path.exists(pb):
    st = os.stat(pb)
    return json.dumps({"path": os.path.abspath(base), "expert": expert, "size": st.st_size,
                       "mtime_ns": st.st_mtime_ns}, sort_keys=True)
  return json.dumps({"path": base, "expert": expert} if expert else {"path": base})


class EmbeddingCache:
  """Arrays per (module, task data, split, image size, kind) under `root`; `root=None` caches nothing.

  `data` is what identifies the task split's content: its fingerprint (tasks/fingerprint.py) as scoring passes
  it; any string does, but only a content fingerprint keeps different data apart.
  """

  def __init__(self, root):
    self.root = root

  def _entry(self, expert, path, data, split, image_size, kind):
    if kind not in KINDS:
      raise ValueError(f"Cache kind {kind!r}; expected one of {KINDS}.")
    key = json.dumps({"format": FORMAT, "module": module_identity(path), "data": data, "split": split,
                      "image_size": image_size, "preprocessing": embed.PREPROCESSING, "kind": kind},
                     sort_keys=True)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", expert)[-80:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(self.root, f"{readable}.{kind}.{digest}.npz"), key

  def get(self, expert, path, data, split, image_size, kind, num_examples):
    """The cached array, or None when absent, stale (other key, example count or rank) or unreadable."""
    if self.root is None:
      return None
    file, key = self._entry(expert, path, data, split, image_size, kind)
    if not os.path.exists(file):
      return None
    try:
      with np.load(file) as z:
        stored_key, array = str(z["key"]), z["array"]
    except _UNREADABLE as e:
      log.warning("Ignoring unreadable embedding cache entry %s (%s: %s); treating it as missing and "
                  "recomputing.", file, type(e).__name__, e)
      return None
    if stored_key != key or array.ndim != 2 or len(array) != num_examples:
      log.warning("Ignoring stale embedding cache entry %s (its key, example count %d or shape %s differs from "
                  "%d examples wanted); recomputing.", file, len(array) if array.ndim else 0, array.shape,
                  num_examples)
      return None
    return array

  def put(self, expert, path, data, split, image_size, kind, array):
    """Stores an array for this key (atomically: a reader sees the old entry or the whole new one)."""
    if self.root is None:
      return
    file, key = self._entry(expert, path, data, split, image_size, kind)
    with io_utils.atomic_writer(file, "wb") as f:
      np.savez(f, array=np.asarray(array), key=np.array(key))

  def get_or_compute(self, expert, path, data, split, image_size, kind, num_examples, compute):
    """(array, True if it came from the cache); `compute()` makes and caches it on a miss."""
    array = self.get(expert, path, data, split, image_size, kind, num_examples)
    if array is not None:
      return array, True
    array = compute()
    self.put(expert, path, data, split, image_size, kind, array)
    return array, False
