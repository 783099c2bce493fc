"""Finding experts by name: a registry over the expert.json files under one or more export dirs.

Handles resolve in order (a chain, as in tensorflow_hub): a URL passes through; an existing path passes
through; otherwise a name "expert", "upstream/expert" or "upstream/expert/version" is looked up (latest
version when none is given). An unknown name raises KeyError listing the nearest known names. One expert of a
packed module is "<pack name or path>#<expert>".

After the export dirs, the shipped catalogue of published modules (catalogue.py) answers for its names:
"bit-in21k/bird" resolves to that expert's tfhub.dev handle (loading fetches it through kagglehub first, see
published.py), and "bit-in21k" in an experts list stands for the whole collection (expand_handles). A module of
the export dirs with the same name ("bit-in21k/bird" as upstream/expert) wins.

A module's name is where it is: `<export_dir>/<upstream>/<name>/<version>/`. Its expert.json must agree (its
"upstream", "name" and "version", when present, equal the folder's); one that claims another name is skipped
with a warning naming its expert.json, as is one whose expert.json is unreadable or not valid JSON, so one bad
folder neither hijacks another module's name nor breaks every lookup ("shapes" then means the newest valid
version). Two folders of the same upstream/name/version (in two export dirs) are refused when the registry is
built: DuplicateExpertError names both paths. The same folder reached through two listed dirs counts once.

Trust for ops (loading.check_ops) follows where a module's files really are and who wrote them
(trusted_location): a module inside an export dir whose version folder, or any file or folder in it, links to
somewhere outside every export dir, or belongs to another user, is checked like a foreign module.
"""

import dataclasses
import difflib
import glob
import logging
import os
import re
from typing import Dict, List

from expert_hub.hub import catalogue as catalogue_lib
from expert_hub.hub import export

URL_PREFIXES = ("http://", "https://", "gs://", "hf://", "kaggle://")
_VERSION_RE = re.compile(r"^[0-9]+$")
log = logging.getLogger(__name__)
# Kinds of modules that are baselines, never experts to select: the generalist and the equal-compute control.
BASELINE_KINDS = ("generalist", "control")


class DuplicateExpertError(ValueError):
  """Two module folders of the same upstream/name/version."""


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


def _layout_mismatch(info, upstream, name, version):
  """Why expert.json `info` disagrees with the folder <upstream>/<name>/<version> it is in, or None."""
  for key, where in (("upstream", upstream), ("name", name), ("version", version)):
    if key in info and info[key] != where:
      return f"its {key} is {info[key]!r} but its folder says {where!r}"
  return None


def _root_of(path, roots):
  """The one of `roots` (real paths) that the real path of `path` lies inside, or None."""
  real = os.path.realpath(path)
  return next((r for r in roots if real.startswith(r.rstrip(os.sep) + os.sep)), None)


def _inside(path, roots):
  return _root_of(path, roots) is not None


def _owned(path):
  """Whether `path` (links followed) belongs to this user or to root; always true where there are no uids."""
  if not hasattr(os, "geteuid"):
    return True
  return os.stat(path).st_uid in (os.geteuid(), 0)


def trusted_location(path, trusted_dirs):
  """Whether module folder `path` really lies inside one of `trusted_dirs` and is this user's: the real path
  (links resolved) of the folder and of every file and folder under it, links followed, is inside one of them,
  and each of them, the export dir and every folder between it and the module belong to this user (or root).

  A link inside an export dir (`saved_model.pb -> /elsewhere/...`, or a version folder linked to another place)
  brings in files the export dir's owner did not write there, so it does not inherit the export dir's trust.
  Nor does a file or folder another user wrote or could swap: an export dir under a shared folder such as /tmp
  that another local user created first, or a writable one where they added a module. Such a module is checked
  like a foreign one (our modules pass that check too; it costs only the op scan).
  """
  roots = [os.path.realpath(d) for d in trusted_dirs]
  root = _root_of(path, roots)
  if root is None:
    return False
  chain, folder = [], os.path.realpath(path)
  while folder != root and len(folder) > len(root):  # the module's folder up to its export dir
    chain.append(folder)
    folder = os.path.dirname(folder)
  if not all(_owned(p) for p in chain + [root]):
    return False
  seen = set()
  for folder, dirs, files in os.walk(path, followlinks=True):
    real = os.path.realpath(folder)
    if real in seen:  # a link back to a folder already walked: nothing new below it
      dirs[:] = []
      continue
    seen.add(real)
    for name in dirs + files:
      entry = os.path.join(folder, name)
      if not _inside(entry, roots) or not _owned(entry):
        return False
  return True


class Registry:
  """Experts found under export dirs. Instances, not globals: build one per set of dirs.

  `skipped` lists (expert.json path, reason) for every folder left out (see the module docstring).

  Raises:
    DuplicateExpertError: two folders hold the same upstream/name/version; names both.
  """

  def __init__(self, export_dirs=None):
    self.export_dirs = list(export_dirs) if export_dirs else default_export_dirs()
    self._entries: List[ExpertEntry] = []
    self.skipped = []
    by_key, real_paths = {}, set()
    for root in self.export_dirs:
      for meta in sorted(glob.glob(os.path.join(root, "*", "*", "*", export.METADATA_FILE))):
        path = os.path.dirname(meta)
        version_dir = os.path.basename(path)
        if not _VERSION_RE.match(version_dir):
          continue
        if os.path.realpath(path) in real_paths:
          continue
        real_paths.add(os.path.realpath(path))
        name = os.path.basename(os.path.dirname(path))
        upstream = os.path.basename(os.path.dirname(os.path.dirname(path)))
        version, info, problem = int(version_dir), None, None
        if str(version) != version_dir or version < 1:  # "01" would alias "1"
          problem = f"its version folder {version_dir!r} is not a positive integer written as export writes it"
        else:
          try:
            info = export.read_metadata(path)
            problem = _layout_mismatch(info, upstream, name, version)
          except (OSError, ValueError) as e:
            problem = f"its {export.METADATA_FILE} cannot be used: {e}"
        if problem:
          log.warning("Skipping module folder %s: %s (%s).", path, problem, meta)
          self.skipped.append((meta, problem))
          continue
        entry = ExpertEntry(name, upstream, version, path, info)
        if entry.qualified_name in by_key:
          raise DuplicateExpertError(
              f"Two modules are named {entry.qualified_name!r}: {by_key[entry.qualified_name].path!r} and "
              f"{path!r}; remove or rename one (a name must point at one module).")
        by_key[entry.qualified_name] = entry
        self._entries.append(entry)

  def trusts(self, path):
    """Whether module folder `path` is trusted for its ops: inside these export dirs (trusted_location)."""
    return trusted_location(path, self.export_dirs)

  def entries(self):
    return list(self._entries)

  def names(self):
    return sorted({e.name for e in self._entries})

  def expert_handles(self):
    """Handles of every expert (not the generalist or the control): module paths, "<pack>#<expert>" for packed
    ones."""
    handles = []
    for e in self._entries:
      if e.metadata.get("kind") == "pack":
        handles += [f"{e.path}#{name}" for name in sorted(e.metadata.get("experts", {}))]
      elif e.metadata.get("kind") not in BASELINE_KINDS:
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
