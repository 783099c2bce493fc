"""Label hierarchies as data: nodes with parents and (optional) dataset label ids.

The JSON format works for any upstream dataset (WordNet for ImageNet-21k, the embedded world, your own):

    {"name": "expert_hub_world",
     "nodes": [{"name": "entity", "parents": []},
               {"name": "shapes", "parents": ["entity"]},
               {"name": "disk", "parents": ["round"], "label": 0}, ...]}

A node may have several parents (WordNet is a DAG) and any node may carry a label id (ImageNet-21k labels
internal synsets too). `labels_under(node)` is the set of label ids in the node's subtree, itself included.

A hierarchy is checked whole when it is built or read, before anything trains on it, so that a bad file fails at
once naming what is wrong instead of after the generalist has trained (or at export):
  - node names are strings that can name an expert: after "/" becomes "_" (ExpertNode.expert_name), letters,
    digits, "_", "." and "-", starting with a letter or digit, no ".." (export.check_name, the rule export uses
    for module folders); no two nodes share a name, nor an expert name ("a/b" and "a_b");
  - parents are a list of known node names (a single name is accepted), each listed once; no cycles;
  - labels are integers (not booleans), each carried by one node, and run 0..N-1 without gaps (the generalist's
    head has N outputs and label_name(i) must exist for each); at least one node carries a label.
"""

import json
import os

from expert_hub import io_utils
from expert_hub.hub import export


class HierarchyError(ValueError):
  """A hierarchy file that is not a DAG of known nodes."""


class Hierarchy:
  """An immutable, validated label hierarchy."""

  def __init__(self, nodes, name="hierarchy"):
    """Args: nodes: a list of {"name", "parents", optional "label"} dicts. Raises HierarchyError (see the module
    docstring for what is checked), naming the node and the bad value."""
    if not isinstance(name, str) or not name:
      raise HierarchyError(f"Hierarchy name {name!r} is not a non-empty string.")
    if not isinstance(nodes, (list, tuple)):
      raise HierarchyError(f"Hierarchy {name!r}: nodes are {type(nodes).__name__} {nodes!r:.80}; expected a list.")
    self.name = name
    self._parents = {}
    self._label = {}
    expert_names = {}
    for i, node in enumerate(nodes):
      if not isinstance(node, dict) or "name" not in node:
        raise HierarchyError(f"Node #{i} is {node!r}; expected a dict with a 'name'.")
      node_name = _check_node_name(node["name"], i)
      if node_name in self._parents:
        raise HierarchyError(f"Node {node_name!r} is defined twice (again as node #{i}).")
      expert_name = node_name.replace("/", "_")
      if expert_name in expert_names:
        raise HierarchyError(f"Nodes {expert_names[expert_name]!r} and {node_name!r} would both be expert "
                             f"{expert_name!r} ('/' becomes '_'); rename one.")
      expert_names[expert_name] = node_name
      self._parents[node_name] = _check_parents(node_name, node.get("parents", []))
      if node.get("label") is not None:
        label = node["label"]
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
          raise HierarchyError(f"Node {node_name!r} has label {label!r}; expected a non-negative integer.")
        self._label[node_name] = label
    for node_name, parents in self._parents.items():
      for p in parents:
        if p not in self._parents:
          raise HierarchyError(f"Node {node_name!r} names unknown parent {p!r}.")
    self._node_of_label = {}
    for node_name, label in self._label.items():
      if label in self._node_of_label:
        raise HierarchyError(f"Label {label} is carried by both {self._node_of_label[label]!r} and "
                             f"{node_name!r}.")
      self._node_of_label[label] = node_name
    self._children = {n: [] for n in self._parents}
    for node_name, parents in self._parents.items():
      for p in parents:
        self._children[p].append(node_name)
    self._check_acyclic()
    self._check_labels_contiguous()
    self._subtree_cache = {}
    self._depth_cache = {}

  def _check_labels_contiguous(self):
    if not self._label:
      raise HierarchyError(f"Hierarchy {self.name!r} has {len(self._parents)} nodes but no node carries a "
                           "label; expected label ids 0..N-1 on the nodes that are dataset classes.")
    top = max(self._label.values())
    missing = sorted(set(range(top + 1)) - set(self._label.values()))
    if missing:
      shown = ", ".join(str(m) for m in missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10
                                                         else "")
      raise HierarchyError(f"Hierarchy {self.name!r}: label ids must run 0..N-1 without gaps, but no node carries "
                           f"{shown} (node {self._node_of_label[top]!r} carries {top}); renumber the labels "
                           "or add the missing classes.")

  def _check_acyclic(self):
    state = {}  # 1 = on the current path, 2 = done
    for start in self._parents:
      if state.get(start) == 2:
        continue
      stack = [(start, iter(self._children[start]))]
      state[start] = 1
      path = [start]
      while stack:
        node, it = stack[-1]
        child = next(it, None)
        if child is None:
          stack.pop()
          path.pop()
          state[node] = 2
        elif state.get(child) == 1:
          cycle = path[path.index(child):] + [child]
          raise HierarchyError(f"The hierarchy has a cycle: {' -> '.join(cycle)}.")
        elif state.get(child) is None:
          state[child] = 1
          path.append(child)
          stack.append((child, iter(self._children[child])))

  # ------------------------------------------------------------------------------------------ queries
  @property
  def nodes(self):
    return list(self._parents)

  @property
  def roots(self):
    return [n for n, p in self._parents.items() if not p]

  @property
  def num_labels(self):
    return max(self._label.values()) + 1 if self._label else 0

  def __contains__(self, node):
    return node in self._parents

  def check_node(self, node):
    if node not in self._parents:
      import difflib  # pylint: disable=g-import-not-at-top
      near = difflib.get_close_matches(str(node), self.nodes, n=5)
      raise KeyError(f"Unknown hierarchy node {node!r} in {self.name!r}; nearest known nodes: {near}.")

  def parents(self, node):
    self.check_node(node)
    return list(self._parents[node])

  def children(self, node):
    self.check_node(node)
    return list(self._children[node])

  def label(self, node):
    """The node's own label id, or None."""
    self.check_node(node)
    return self._label.get(node)

  def label_name(self, label):
    """The node carrying `label`."""
    if label not in self._node_of_label:
      raise KeyError(f"No node carries label {label}; labels run 0..{self.num_labels - 1}.")
    return self._node_of_label[label]

  def descendants(self, node):
    """The node and everything below it."""
    self.check_node(node)
    if node not in self._subtree_cache:
      out, stack = [], [node]
      seen = set()
      while stack:
        n = stack.pop()
        if n in seen:
          continue
        seen.add(n)
        out.append(n)
        stack.extend(self._children[n])
      self._subtree_cache[node] = out
    return list(self._subtree_cache[node])

  def labels_under(self, node):
    """Sorted label ids in the node's subtree (the node's own label included)."""
    return sorted(self._label[n] for n in self.descendants(node) if n in self._label)

  def depth(self, node):
    """Length of the longest path from a root to node (roots have depth 0); memoised, since in a DAG the same
    ancestors are reached along many paths."""
    if node not in self._depth_cache:
      parents = self.parents(node)
      self._depth_cache[node] = 0 if not parents else 1 + max(self.depth(p) for p in parents)
    return self._depth_cache[node]

  # ------------------------------------------------------------------------------------------ I/O
  def to_json(self):
    nodes = []
    for n, parents in self._parents.items():
      node = {"name": n, "parents": list(parents)}
      if n in self._label:
        node["label"] = self._label[n]
      nodes.append(node)
    return {"name": self.name, "nodes": nodes}

  def save(self, path):
    io_utils.atomic_write_text(path, json.dumps(self.to_json(), indent=1))


def _check_node_name(value, index):
  """A node name that can name an expert (see the module docstring); returns it."""
  if not isinstance(value, str):
    raise HierarchyError(f"Node #{index} has name {value!r} ({type(value).__name__}); expected a string.")
  try:
    export.check_name(value.replace("/", "_"), "its expert name")
  except ValueError as e:
    raise HierarchyError(f"Node #{index} {value!r}: {e}") from None
  return value


def _check_parents(node_name, parents):
  """A node's parents as a tuple of names, each once."""
  if isinstance(parents, str):
    parents = [parents]
  if not isinstance(parents, (list, tuple)):
    raise HierarchyError(f"Node {node_name!r} has parents {parents!r}; expected a list of node names.")
  for p in parents:
    if not isinstance(p, str):
      raise HierarchyError(f"Node {node_name!r} has parent {p!r} ({type(p).__name__}); expected a node name.")
  duplicates = sorted({p for p in parents if parents.count(p) > 1})
  if duplicates:
    raise HierarchyError(f"Node {node_name!r} lists parent(s) {duplicates} more than once.")
  return tuple(parents)


def load_hierarchy(path):
  """Reads and validates a hierarchy JSON file.

  Raises:
    FileNotFoundError: no file at `path`.
    HierarchyError: the file is not JSON of {"name", "nodes": [...]}, or its hierarchy is invalid (the message
      names the file and the node).
  """
  if not isinstance(path, str) or not path:
    raise HierarchyError(f"Hierarchy file {path!r} is not a path.")
  if not os.path.exists(path):
    raise FileNotFoundError(f"Hierarchy file {path!r} does not exist.")
  if not os.path.isfile(path):
    raise HierarchyError(f"Hierarchy file {path!r} is not a file.")
  with open(path, "rb") as f:
    try:
      data = json.loads(f.read().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise HierarchyError(f"Hierarchy file {path!r} is not valid JSON: {e}") from None
  if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
    raise HierarchyError(f"Hierarchy file {path!r} must hold {{'name': ..., 'nodes': [...]}}.")
  try:
    return Hierarchy(data["nodes"], name=data.get("name", os.path.basename(path)))
  except HierarchyError as e:
    raise HierarchyError(f"Hierarchy file {path!r}: {e}") from None
