"""Atomic file writes and hashing: nothing half-written is ever visible under its final name."""

import contextlib
import hashlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_writer(path, mode="w", permissions=None):
  """Yields a file opened with `mode` ("w" or "wb") that appears under `path` only when the block succeeds:
  a temp file in the same folder, then an atomic rename; on any error the temp file is removed.
  `permissions` (e.g. 0o644) replaces the temp file's private 0o600 before the rename."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      if permissions is not None:
        os.fchmod(f.fileno(), permissions)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path, text):
  """Writes `text` to `path` through a temp file in the same folder and an atomic rename."""
  with atomic_writer(path) as f:
    f.write(text)


def atomic_write_json(path, obj):
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path, missing=None):
  """Parsed JSON of `path`; if it does not exist, FileNotFoundError with the `missing` explanation."""
  if missing is not None and not os.path.exists(path):
    raise FileNotFoundError(missing)
  with open(path) as f:
    return json.load(f)


def sha256_file(path, chunk=1 << 20):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()
