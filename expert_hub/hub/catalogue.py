"""The catalogue of published experts shipped with expert_hub: names -> handles, node and input contract.

`bit_in21k.json` (package data) lists Google's 48 BiT-M R50x1 ImageNet-21k experts (Puigcerver et al. 2021,
TF Hub collection google/experts/bit/1) and the BiT-M R50x1 generalist they were fine-tuned from, each with its
name, WordNet node, Kaggle Models handle, tfhub.dev handle, feature dim and input contract. Names:

  bit-in21k/bird          one expert (also "bit-in21k/bird/1": every published version is 1)
  bit-in21k/generalist    the generalist
  bit-in21k               the whole collection: the 48 experts (expand_handles; not the generalist)

Reading the catalogue touches no network and no cache; published.py downloads a module only when one is asked
for. The registry consults the catalogue after the user's own export dirs, so a module of theirs with the same
name wins.
"""

import dataclasses
import difflib
import functools
import json
import os
from typing import Dict, Optional, Tuple

CATALOGUE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bit_in21k.json")
KAGGLE_PREFIX = "kaggle://"


@dataclasses.dataclass(frozen=True)
class PublishedModule:
  """One catalogue entry. `handle` is how expert_hub names it ("bit-in21k/bird")."""
  collection: str
  name: str
  kind: str  # "generalist" or "full"
  wordnet_node: Optional[str]
  wordnet_id: Optional[str]
  description: str
  tfhub_handle: str
  kaggle_handle: str
  feature_dim: int
  input: Dict

  @property
  def handle(self):
    return f"{self.collection}/{self.name}"

  def metadata(self):
    """expert.json-style fields for listings (no labels, no architecture: these modules are foreign)."""
    return {"name": self.name, "upstream": self.collection, "version": 1, "kind": self.kind,
            "node": self.wordnet_node, "wordnet_id": self.wordnet_id, "feature_dim": self.feature_dim,
            "input": self.input, "description": self.description, "handle": self.handle,
            "tfhub_handle": self.tfhub_handle, "kaggle_handle": self.kaggle_handle}


class Catalogue:
  """The modules of one collection, by name and by either published handle."""

  def __init__(self, collection, modules, info=None):
    self.collection = collection
    self.info = dict(info or {})
    self._by_name: Dict[str, PublishedModule] = {}
    self._by_url: Dict[str, PublishedModule] = {}
    for m in modules:
      if m.name in self._by_name:
        raise ValueError(f"Catalogue {collection!r} lists {m.name!r} twice; names must be unique.")
      self._by_name[m.name] = m
      self._by_url[m.tfhub_handle] = m
      self._by_url[KAGGLE_PREFIX + m.kaggle_handle] = m

  def __len__(self):
    return len(self._by_name)

  def modules(self):
    return list(self._by_name.values())

  def names(self):
    return list(self._by_name)

  def expert_handles(self):
    """"<collection>/<name>" of every expert, in catalogue order (the generalist is not an expert)."""
    return [m.handle for m in self._by_name.values() if m.kind != "generalist"]

  def owns(self, handle):
    """True for "<collection>" and "<collection>/..." names: the catalogue answers for them (or says why not)."""
    return isinstance(handle, str) and (handle == self.collection or handle.startswith(self.collection + "/"))

  def lookup(self, handle) -> PublishedModule:
    """The entry of "<collection>/<name>" or "<collection>/<name>/1".

    Raises:
      KeyError: not a catalogue name, naming the nearest ones (or, for the bare collection name, how to use it).
    """
    parts = handle.split("/") if isinstance(handle, str) else []
    if parts == [self.collection]:
      raise KeyError(f"{handle!r} is the whole collection of {len(self.expert_handles())} experts: use it in an "
                     "experts list (--experts=" + self.collection + "), or name one module, e.g. "
                     f"{self.expert_handles()[0]!r} or '{self.collection}/generalist'.")
    if len(parts) == 3 and parts[2] == "1":
      parts = parts[:2]
    if len(parts) == 2 and parts[0] == self.collection and parts[1] in self._by_name:
      return self._by_name[parts[1]]
    asked = parts[1] if len(parts) >= 2 else str(handle)
    near = difflib.get_close_matches(asked, self.names(), n=5, cutoff=0.4)
    raise KeyError(f"Unknown published module {handle!r}; nearest in the {self.collection!r} catalogue: "
                   f"{[f'{self.collection}/{n}' for n in near]} ({len(self)} modules: "
                   f"'{self.collection}/<name>' or '{self.collection}/<name>/1', names as in "
                   f"{os.path.basename(CATALOGUE_FILE)}).")

  def by_url(self, url) -> Optional[PublishedModule]:
    """The entry whose tfhub.dev handle or "kaggle://<Kaggle handle>" is `url`, else None."""
    return self._by_url.get(url.rstrip("/") if isinstance(url, str) else url)


def _module(collection, entry):
  fields = {f.name for f in dataclasses.fields(PublishedModule)} - {"collection"}
  missing = sorted(fields - set(entry))
  if missing:
    raise ValueError(f"Catalogue entry {entry.get('name')!r} of {collection!r} lacks {missing}.")
  return PublishedModule(collection=collection, **{k: entry[k] for k in fields})


@functools.lru_cache(maxsize=None)
def load_catalogue(path=CATALOGUE_FILE) -> Catalogue:
  """The catalogue in `path` (default: the shipped bit_in21k.json), parsed once per process."""
  with open(path) as f:
    doc = json.load(f)
  collection = doc["collection"]
  return Catalogue(collection, [_module(collection, e) for e in doc["modules"]],
                   {k: v for k, v in doc.items() if k != "modules"})


def catalogues() -> Tuple[Catalogue, ...]:
  """Every catalogue shipped (one today)."""
  return (load_catalogue(),)


def find_owner(handle) -> Optional[Catalogue]:
  """The catalogue that answers for a name ("bit-in21k/..."), else None."""
  return next((c for c in catalogues() if c.owns(handle)), None)


def find_by_url(url) -> Optional[PublishedModule]:
  """The published module behind a tfhub.dev or kaggle:// handle, if a catalogue lists it."""
  for c in catalogues():
    entry = c.by_url(url)
    if entry is not None:
      return entry
  return None
