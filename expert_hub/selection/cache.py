"""Embedding cache: what a selection run computed per (expert, task, split), kept so a re-run skips it.

Embedding the task with every expert is nearly all of selection's cost, and an interrupted or re-run selection
(another proxy, another k, a Beam run over the same workdir) needs the same arrays again. Each entry is one
`.npz` in the cache folder (`<workdir>/embeddings/` for select_expert), written atomically, holding one array ("features" or
"logits") and the key it was computed for. The key names the module by content, not only by path: the sha256 of
its files listed in its expert.json (re-exporting a module under the same path invalidates its entries); modules
without an expert.json (hub URLs, published modules) are keyed by path and saved_model.pb size and mtime. An
entry whose stored key or example count does not match is ignored and recomputed, never trusted.
"""

import hashlib
import json
import logging
import os
import re

import numpy as np

from expert_hub import io_utils
from expert_hub.hub import export

log = logging.getLogger(__name__)
KINDS = ("features", "logits")


def module_identity(path):
  """A string that changes when the module at `path` (or "<pack>#<expert>") changes."""
  base, _, expert = path.partition("#")
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
  return json.dumps({"path": path})


class EmbeddingCache:
  """Arrays per (module, task, split, image size, kind) under `root`; `root=None` caches nothing."""

  def __init__(self, root):
    self.root = root

  def _entry(self, expert, path, task, split, image_size, kind):
    if kind not in KINDS:
      raise ValueError(f"Cache kind {kind!r}; expected one of {KINDS}.")
    key = json.dumps({"module": module_identity(path), "task": task, "split": split, "image_size": image_size,
                      "kind": kind}, sort_keys=True)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", expert)[-80:]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(self.root, f"{readable}.{kind}.{digest}.npz"), key

  def get(self, expert, path, task, split, image_size, kind, num_examples):
    """The cached array, or None when absent or stale (different key or example count)."""
    if self.root is None:
      return None
    file, key = self._entry(expert, path, task, split, image_size, kind)
    if os.path.exists(file):
      try:
        with np.load(file) as z:
          if str(z["key"]) == key and len(z["array"]) == num_examples:
            return z["array"]
      except (OSError, ValueError, KeyError) as e:
        log.warning("Ignoring unreadable cache entry %s (%s); recomputing.", file, e)
      else:
        log.warning("Ignoring stale cache entry %s (its key or example count differs); recomputing.", file)
    return None

  def put(self, expert, path, task, split, image_size, kind, array):
    if self.root is None:
      return
    file, key = self._entry(expert, path, task, split, image_size, kind)
    with io_utils.atomic_writer(file, "wb") as f:
      np.savez(f, array=np.asarray(array), key=np.array(key))

  def get_or_compute(self, expert, path, task, split, image_size, kind, num_examples, compute):
    """(array, True if it came from the cache); `compute()` makes and caches it on a miss."""
    array = self.get(expert, path, task, split, image_size, kind, num_examples)
    if array is not None:
      return array, True
    array = compute()
    self.put(expert, path, task, split, image_size, kind, array)
    return array, False
