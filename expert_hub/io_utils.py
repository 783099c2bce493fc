"""Atomic, durable file writes, private workdirs and hashing: nothing half-written is ever visible under its
final name, and what is published survives a crash or power loss (fsync before the rename that publishes it)."""

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


def default_dir_mode():
  """What a plain os.mkdir gives a folder: 0o777 less the umask."""
  return 0o777 & ~_umask()


def fsync_dir(path):
  """Flushes a folder's entries (names created, renamed or removed in it) to disk; a no-op where folders cannot
  be opened (Windows)."""
  try:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # some filesystems refuse fsync on folders; the data files were synced already
    pass
  finally:
    os.close(fd)


def fsync_tree(root):
  """Flushes every file and folder under `root` (root included) to disk, files before the folders holding them."""
  for folder, _, files in os.walk(root, topdown=False):
    for name in files:
      path = os.path.join(folder, name)
      if os.path.islink(path):
        continue
      with open(path, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(folder)


@contextlib.contextmanager
def atomic_writer(path, mode="w", permissions=None):
  """Yields a file opened with `mode` ("w" or "wb") that appears under `path` only when the block succeeds:
  a temp file in the same folder, fsynced, then an atomic rename and an fsync of the folder; on any error the
  temp file is removed. After a crash `path` holds either the old content or the whole new one, never a prefix.
  The file gets `permissions`, by default what open() would give it (0o666 less the umask), not the temp file's
  private 0o600, so results stay readable by whoever could read a plainly written file."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      os.fchmod(f.fileno(), 0o666 & ~_umask() if permissions is None else permissions)
      f.flush()
      os.fsync(f.fileno())  # the data is on disk before its name is: a crash cannot publish a truncated file
    os.replace(tmp, path)
    fsync_dir(folder)  # and the rename itself survives the crash
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
  """Parsed JSON of `path`.

  Raises:
    FileNotFoundError: `path` does not exist (with the `missing` explanation when given).
    json.JSONDecodeError: (a ValueError) the file is not valid UTF-8 JSON; the message names `path`.
  """
  if missing is not None and not os.path.exists(path):
    raise FileNotFoundError(missing)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise json.JSONDecodeError(f"{path!r} is not valid JSON (not UTF-8 text: {e.reason})", "", 0) from e
  except json.JSONDecodeError as e:
    raise json.JSONDecodeError(f"{path!r} is not valid JSON (truncated or corrupt? {e.msg})", e.doc, e.pos) from e


def make_workdir(path):
  """Creates a workdir private to this user (mode 0o700) when it is missing; returns `path`.

  A workdir under a shared folder such as /tmp could be created first by another local user, who could then
  read or replace our results, caches and checkpoints; so an existing one must be ours.

  Raises:
    PermissionError: `path` (or the link it is) exists and is owned by another user (named with the uid).
    FileExistsError: `path` exists and is not a folder.
  """
  me = os.geteuid() if hasattr(os, "geteuid") else None
  os.makedirs(path, mode=0o700, exist_ok=True)
  if me is None:  # no uids to compare (Windows)
    return path
  checks = [("link", os.lstat(path))] if os.path.islink(path) else []  # a link planted by someone else, too
  for what, st in checks + [("folder", os.stat(path))]:
    if st.st_uid != me:
      raise PermissionError(f"Workdir {path!r}: the existing {what} is owned by uid {st.st_uid}, not by this user "
                            f"(uid {me}); choose a workdir of your own (another user could read or replace what "
                            "is written there).")
  return path


def sha256_file(path, chunk=1 << 20):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      h.update(block)
  return h.hexdigest()
