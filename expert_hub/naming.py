"""Folder names for things named by users (tasks, handles, runs): readable, filesystem-safe and injective.

Every workdir layout (pipeline tasks, VTAB runs, transfer cost, DAT, fine-tune runs) names its folders with
`folder_name`, so two different names never share a folder: `folder:/d/a_b` and `folder:/d/a/b` clean to the
same readable text, and the short hash of the exact name that follows tells them apart.
"""

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def folder_name(name):
  """A folder name for `name`: `name` itself when it is already safe, else its cleaned form + `-<8 hex>` of
  the exact name (e.g. "world/shapes_novel" -> "world_shapes_novel-1c0d2a9e").

  Raises:
    ValueError: `name` is not a non-empty string.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"Folder name from {name!r}; expected a non-empty string.")
  readable = _UNSAFE.sub("_", name).strip("_.")[-80:] or "_"
  if readable == name:
    return name
  return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
