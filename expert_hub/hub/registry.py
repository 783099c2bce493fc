"""Finding experts by name: a registry over the expert.json files under one or more export dirs.

Handles resolve in order (a chain, as in tensorflow_hub): a URL passes through; an existing path passes
through; otherwise a name "expert", "upstream/expert" or "upstream/expert/version" is looked up (latest
version when none is given). An unknown name raises KeyError listing the nearest known names. One expert of a
packed module is "<pack name or path>#<expert>".

After the export dirs, the shipped catalogue of published modules (catalogue.py) answers for its names:
"bit-in21k/bird" resolves to that expert's tfhub.dev handle (loading fetches it through kagglehub first, see
published.py), and "bit-in21k" in an experts list stands for the whole collection (expand_handles). A module of
the export dirs with the same name ("bit-in21k/bird" as upstream/expert) wins.
"""

import dataclasses
import difflib
import glob
import os
from typing import Dict, List

from expert_hub import io_utils
from expert_hub.hub import catalogue as catalogue_lib
from expert_hub.hub import export

URL_PREFIXES = ("http://", "https://", "gs://", "hf://", "kaggle://")


@dataclasses.dataclass(frozen=True)
class ExpertEntry:
  name: str
  upstream: str
  version: int
  path: str
  metadata: Dict

  @property
  def qualified_name(self):
    return f"{self.upstream}/{self.name}/{self.version}"


def default_export_dirs():
  env = os.environ.get("EXPERT_HUB_EXPORT_DIRS", "")
  return [d for d in env.split(os.pathsep) if d]


class Registry:
  """Experts found under export dirs. Instances, not globals: build one per set of dirs."""

  def __init__(self, export_dirs=None):
    self.export_dirs = list(export_dirs) if export_dirs else default_export_dirs()
    self._entries: List[ExpertEntry] = []
    for root in self.export_dirs:
      for meta in sorted(glob.glob(os.path.join(root, "*", "*", "*", export.METADATA_FILE))):
        path = os.path.dirname(meta)
        info = io_utils.read_json(meta)
        version_dir = os.path.basename(path)
        if not version_dir.isdigit():
          continue
        self._entries.append(ExpertEntry(info.get("name", os.path.basename(os.path.dirname(path))),
                                         info.get("upstream", os.path.basename(os.path.dirname(os.path.dirname(path)))),
                                         int(version_dir), path, info))

  def entries(self):
    return list(self._entries)

  def names(self):
    return sorted({e.name for e in self._entries})

  def expert_handles(self):
    """Handles of every expert (not generalists): module paths, and "<pack>#<expert>" for packed ones."""
    handles = []
    for e in self._entries:
      if e.metadata.get("kind") == "pack":
        handles += [f"{e.path}#{name}" for name in sorted(e.metadata.get("experts", {}))]
      elif e.metadata.get("kind") != "generalist":
        handles.append(e.path)
    return handles

  def lookup(self, name) -> ExpertEntry:
    """Finds the entry for "expert", "upstream/expert" or "upstream/expert/version"."""
    parts = name.split("/")
    if not 1 <= len(parts) <= 3:
      raise KeyError(f"Expert name {name!r} has {len(parts)} parts; expected 'expert', 'upstream/expert' or "
                     "'upstream/expert/version'.")
    if len(parts) == 3 and not parts[2].isdigit():
      raise KeyError(f"Expert name {name!r}: version {parts[2]!r} is not an integer.")
    matches = [e for e in self._entries
               if e.name == parts[-1 if len(parts) == 1 else 1]
               and (len(parts) == 1 or e.upstream == parts[0])
               and (len(parts) < 3 or e.version == int(parts[2]))]
    if not matches:
      known = sorted({e.name for e in self._entries} | {f"{e.upstream}/{e.name}" for e in self._entries})
      near = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
      raise KeyError(f"Unknown expert {name!r} in export dirs {self.export_dirs}; nearest known names: {near} "
                     f"({len(self.names())} experts known).")
    upstreams = {e.upstream for e in matches}
    if len(upstreams) > 1:
      raise KeyError(f"Expert name {name!r} exists for several upstreams {sorted(upstreams)}; qualify it as "
                     f"'upstream/{name}'.")
    return max(matches, key=lambda e: e.version)

  def resolve(self, handle):
    """A handle (name, path or URL) -> a path or URL that tf.saved_model.load / hub.load accepts.

    For "<pack>#<expert>" the result is "<pack path>#<expert>" (see loading.load_module).
    """
    if not isinstance(handle, str) or not handle:
      raise ValueError(f"Expert handle {handle!r} is not a non-empty string.")
    if "#" in handle:
      base, expert = handle.rsplit("#", 1)
      path = self.resolve(base)
      packed = export.read_metadata(path).get("experts", {})
      if expert not in packed:
        near = difflib.get_close_matches(expert, list(packed), n=5, cutoff=0.4)
        raise KeyError(f"Pack {path!r} holds no expert {expert!r}; it holds {sorted(packed)} (nearest: {near}).")
      return f"{path}#{expert}"
    if handle.startswith(URL_PREFIXES):
      return handle
    if os.path.isabs(handle) or os.path.exists(handle):
      if not os.path.exists(handle):
        raise FileNotFoundError(f"Expert path {handle!r} does not exist.")
      return handle
    published = catalogue_lib.find_owner(handle)
    if published is None:
      return self.lookup(handle).path
    try:
      return self.lookup(handle).path  # the user's own module of that name wins
    except KeyError:
      return published.lookup(handle).tfhub_handle  # KeyError naming the nearest catalogue names

  def expand_handles(self, handles):
    """An experts list with every collection name ("bit-in21k") replaced by its experts' handles, in catalogue
    order; other handles pass unchanged, duplicates dropped (first place kept)."""
    out = []
    for handle in handles:
      published = catalogue_lib.find_owner(handle)
      out += published.expert_handles() if published is not None and handle == published.collection else [handle]
    return list(dict.fromkeys(out))


def list_experts(export_dirs=None, published=False):
  """[{"name", "upstream", "version", "kind", "node", "path", ...}] for every expert found.

  With published=True the catalogued published modules follow (catalogue.PublishedModule.metadata(): "handle",
  "tfhub_handle", "kaggle_handle", ...; "path" None), except those a module of the export dirs shadows.
  Listing them touches no network.
  """
  registry = Registry(export_dirs)
  out = [dict(e.metadata, path=e.path) for e in registry.entries()]
  if published:
    own = {f"{e.upstream}/{e.name}" for e in registry.entries()}
    out += [dict(m.metadata(), path=None) for c in catalogue_lib.catalogues() for m in c.modules()
            if m.handle not in own]
  return out


def resolve(handle, export_dirs=None):
  return Registry(export_dirs).resolve(handle)
