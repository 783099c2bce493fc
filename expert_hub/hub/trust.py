"""Trust on first use for modules expert_hub did not write: a local record of every file's sha256.

A published module (Kaggle Models, tfhub.dev) carries no expert.json, so nothing inside it says what its files
should be. The first time expert_hub uses one it records the sha256 of every file under its folder in a trust
file; every later load checks the folder against that record and refuses a file that changed, went missing or
appeared, naming it. Only regular files are hashed: a symbolic link or special file in the folder is refused,
never followed. Like a manifest, a record proves the files are the ones first seen, not who wrote them. The
record is keyed by the module's real local path and keeps the handle it came from.

The trust file is a JSON file outside the module folders: `$EXPERT_HUB_TRUST_FILE` when set, otherwise the one
the caller names (published.py keeps one in the root of the cache the module sits in). Writes are atomic.
"""

import contextlib
import datetime
import fcntl
import os
import stat

from expert_hub import io_utils

TRUST_FILE_ENV = "EXPERT_HUB_TRUST_FILE"
TRUST_FILE_NAME = "expert_hub_trust.json"


class UntrustedModuleError(ValueError):
  """A module whose files differ from what was recorded when it was first trusted."""


def trust_file(default):
  """$EXPERT_HUB_TRUST_FILE, or `default`."""
  return os.environ.get(TRUST_FILE_ENV) or default


def file_hashes(folder):
  """{relative POSIX path: sha256} of every file under `folder`, sorted.

  Raises:
    UntrustedModuleError: a symbolic link (file or folder) or anything but a regular file under `folder`: a
      link would stand for files outside the record's reach (and a link to /dev/zero, a FIFO or a device would
      hang the hash), so it is refused, named, rather than followed.
  """
  hashes = {}
  for root, dirs, files in os.walk(folder, followlinks=False):
    for name in sorted(dirs) + sorted(files):
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder).replace(os.sep, "/")
      mode = os.lstat(path).st_mode
      if stat.S_ISLNK(mode) or (name in files and not stat.S_ISREG(mode)):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else f"not a regular file ({stat.filemode(mode)})"
        raise UntrustedModuleError(f"Module folder {folder!r}: {rel!r} is {kind}; a module to trust holds "
                                   "regular files and folders only. Replace it by the file itself.")
      if name in files:
        hashes[rel] = io_utils.sha256_file(path)
  return dict(sorted(hashes.items()))


def _read(path):
  if not os.path.exists(path):
    return {"modules": {}}
  doc = io_utils.read_json(path)
  if not isinstance(doc, dict) or not isinstance(doc.get("modules"), dict):
    raise ValueError(f"Trust file {path!r} is not an expert_hub trust file (no 'modules' object); move it away "
                     "to start a new one.")
  return doc


def _key(folder):
  return os.path.realpath(folder)


@contextlib.contextmanager
def _locked(path):
  """Holds an exclusive lock beside the trust file, so processes recording at once (Beam workers) keep every
  record: each reads, extends and rewrites the file in turn."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(f"{path}.lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def record(folder, handle, trust_path, source=None):
  """Returns the record of `folder`, recording the sha256 of its files first if it has none (first use).

  Args:
    folder: the module's local folder.
    handle: what it was asked for as (kept in the record, named in errors).
    trust_path: the trust file to read and extend.
    source: where the files came from ("kagglehub", "tensorflow_hub", "kagglehub cache", ...).

  Returns:
    (record dict, True if it was recorded just now).

  Raises:
    UntrustedModuleError: a link or special file in the folder (file_hashes), named.
  """
  key = _key(folder)
  known = lookup(folder, trust_path)
  if known is not None:
    return known, False
  try:
    with _locked(trust_path):
      doc = _read(trust_path)
      if key in doc["modules"]:  # another process recorded it meanwhile
        return doc["modules"][key], False
      entry = {"handle": handle, "source": source,
               "recorded": datetime.datetime.now().isoformat(timespec="seconds"), "sha256": file_hashes(folder)}
      if not entry["sha256"]:
        raise ValueError(f"Module {handle!r} at {folder!r} has no files; nothing to trust.")
      doc["modules"][key] = entry
      io_utils.atomic_write_json(trust_path, doc)
  except PermissionError as e:  # a shared, read-only cache
    raise PermissionError(f"Cannot record the sha256 of module {handle!r} in trust file {trust_path!r} ({e}); set "
                          f"${TRUST_FILE_ENV} to a file you can write.") from e
  return entry, True


def lookup(folder, trust_path):
  """The record of `folder` in the trust file, or None."""
  return _read(trust_path)["modules"].get(_key(folder))


def verify(folder, trust_path):
  """Checks `folder` against its record; returns the record, or None when it has none.

  Raises:
    UntrustedModuleError: a file changed, is missing or was added since the record; the message names each one,
      the handle, the trust file and how to recover.
  """
  entry = lookup(folder, trust_path)
  if entry is None:
    return None
  expected, actual = entry["sha256"], file_hashes(folder)
  changed = sorted(f for f in expected if f in actual and actual[f] != expected[f])
  missing = sorted(set(expected) - set(actual))
  added = sorted(set(actual) - set(expected))
  if changed or missing or added:
    problems = ([f"changed: {changed}"] if changed else []) + ([f"missing: {missing}"] if missing else []) + (
        [f"added: {added}"] if added else [])
    raise UntrustedModuleError(
        f"Module {entry.get('handle')!r} at {folder!r} differs from the files first trusted on "
        f"{entry.get('recorded')} ({'; '.join(problems)}), per the sha256 record in {trust_path!r}. Refusing to "
        "load it. Delete the folder to download it again, or remove its entry from the trust file if you trust "
        "the files as they are now.")
  return entry
