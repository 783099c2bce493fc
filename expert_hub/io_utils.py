"""Atomic file writes and hashing: nothing half-written is ever visible under its final name."""

import contextlib
import hashlib
import json
import os
import tempfile


def _umask():
  """The process umask, read without changing it where Linux exposes it (os.umask can only set it)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_writer(path, mode="w", permissions=None):
  """Yields a file opened with `mode` ("w" or "wb") that appears under `path` only when the block succeeds:
  a temp file in the same folder, then an atomic rename; on any error the temp file is removed.
  The file gets `permissions`, by default what open() would give it (0o666 less the umask), not the temp file's
  private 0o600, so results stay readable by whoever could read a plainly written file."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      os.fchmod(f.fileno(), 0o666 & ~_umask() if permissions is None else permissions)
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
