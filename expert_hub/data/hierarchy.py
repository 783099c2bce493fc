"""Label hierarchies as data: nodes with parents and (optional) dataset label ids.

The JSON format works for any upstream dataset (WordNet for ImageNet-21k, the embedded world, your own):

    {"name": "expert_hub_world",
     "nodes": [{"name": "entity", "parents": []},
               {"name": "shapes", "parents": ["entity"]},
               {"name": "disk", "parents": ["round"], "label": 0}, ...]}

A node may have several parents (WordNet is a DAG) and any node may carry a label id (ImageNet-21k labels
internal synsets too). `labels_under(node)` is the set of label ids in the node's subtree, itself included.
"""

import json
import os

from expert_hub import io_utils


class HierarchyError(ValueError):
  """A hierarchy file that is not a DAG of known nodes."""


class Hierarchy:
  """An immutable, validated label hierarchy."""

  def __init__(self, nodes, name="hierarchy"):
    """Args: nodes: a list of {"name", "parents", optional "label"} dicts. Raises HierarchyError."""
    self.name = name
    self._parents = {}
    self._label = {}
    for i, node in enumerate(nodes):
      if not isinstance(node, dict) or "name" not in node:
        raise HierarchyError(f"Node #{i} is {node!r}; expected a dict with a 'name'.")
      node_name = node["name"]
      if node_name in self._parents:
        raise HierarchyError(f"Node {node_name!r} is defined twice.")
      parents = node.get("parents", [])
      if isinstance(parents, str):
        parents = [parents]
      self._parents[node_name] = tuple(parents)
      if node.get("label") is not None:
        label = node["label"]
        if not isinstance(label, int) or label < 0:
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
    self._subtree_cache = {}
    self._depth_cache = {}

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


def load_hierarchy(path):
  """Reads and validates a hierarchy JSON file. Raises HierarchyError / FileNotFoundError."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Hierarchy file {path!r} does not exist.")
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise HierarchyError(f"Hierarchy file {path!r} is not valid JSON: {e}") from e
  if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
    raise HierarchyError(f"Hierarchy file {path!r} must hold {{'name': ..., 'nodes': [...]}}.")
  return Hierarchy(data["nodes"], name=data.get("name", os.path.basename(path)))
