"""Hierarchy files: validation (cycles, unknown parents, duplicate labels) and subtree queries."""

import json

import numpy as np
import pytest
import tensorflow as tf

from expert_hub.data import experts, hierarchy

NODES = [
    {"name": "root", "parents": []},
    {"name": "animal", "parents": ["root"]},
    {"name": "bird", "parents": ["animal"], "label": 0},
    {"name": "robin", "parents": ["bird"], "label": 1},
    {"name": "dog", "parents": ["animal", "pet"], "label": 2},
    {"name": "pet", "parents": ["root"]},
    {"name": "rock", "parents": ["root"], "label": 3},
]


def test_subtrees_with_internal_labels_and_several_parents():
  h = hierarchy.Hierarchy(NODES)
  assert h.labels_under("animal") == [0, 1, 2]
  assert h.labels_under("pet") == [2]
  assert h.labels_under("root") == [0, 1, 2, 3]
  assert h.depth("robin") == 3 and h.depth("dog") == 2
  assert h.num_labels == 4


def test_cycle_is_rejected():
  nodes = [{"name": "a", "parents": ["c"]}, {"name": "b", "parents": ["a"]}, {"name": "c", "parents": ["b"]}]
  with pytest.raises(hierarchy.HierarchyError, match="cycle"):
    hierarchy.Hierarchy(nodes)


def test_unknown_parent_and_duplicate_label_are_rejected():
  with pytest.raises(hierarchy.HierarchyError, match="unknown parent 'ghost'"):
    hierarchy.Hierarchy([{"name": "a", "parents": ["ghost"]}])
  with pytest.raises(hierarchy.HierarchyError, match="Label 0"):
    hierarchy.Hierarchy([{"name": "a", "label": 0}, {"name": "b", "label": 0}])


def test_file_round_trip_and_bad_file(tmp_path):
  h = hierarchy.Hierarchy(NODES, name="toy")
  path = str(tmp_path / "h.json")
  h.save(path)
  assert hierarchy.load_hierarchy(path).to_json() == h.to_json()
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"nodes": "nope"}))
  with pytest.raises(hierarchy.HierarchyError, match="must hold"):
    hierarchy.load_hierarchy(str(bad))


def test_unknown_node_names_nearest():
  with pytest.raises(KeyError, match="robin"):
    hierarchy.Hierarchy(NODES).labels_under("robinn")


def test_expert_node_selection_int_and_multi_hot_labels():
  h = hierarchy.Hierarchy(NODES)
  ints = np.array([0, 1, 1, 2, 2, 2, 3])
  counts = experts.node_image_counts(h, ints)
  assert counts["animal"] == 6 and counts["bird"] == 3 and counts["pet"] == 3
  chosen = experts.select_expert_nodes(h, counts, min_images=3)
  assert [e.node for e in chosen] == ["animal", "bird", "dog", "pet"]  # largest first, ties by name
  assert [e.node for e in experts.select_expert_nodes(h, counts, 3, max_experts=1)] == ["animal"]
  multi = np.eye(4)[ints]
  multi[0, 3] = 1  # one image labelled both bird and rock counts once under root
  counts_mh = experts.node_image_counts(h, multi)
  assert counts_mh["root"] == 7 and counts_mh["rock"] == 2


def test_subset_filter_int_and_multi_hot():
  keep = experts.make_subset_filter([0, 1], 4)
  assert bool(keep(None, tf.constant(1))) and not bool(keep(None, tf.constant(3)))
  assert bool(keep(None, tf.constant([0, 0, 1, 1]) * 0 + tf.constant([1, 0, 0, 1])))
  assert not bool(keep(None, tf.constant([0, 0, 1, 1])))
  ds = tf.data.Dataset.from_tensor_slices((tf.zeros([4]), tf.constant([0, 2, 1, 3]))).filter(keep)
  assert [int(y) for _, y in ds] == [0, 1]


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
