"""The embedded world: deterministic, a consistent hierarchy, VTAB-shaped tasks, loadable by name offline."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import run_python
from expert_hub.data import upstream
from expert_hub.data.world import builder, catalogue


def test_rendering_is_deterministic_and_seeded():
  cfg = builder.WorldConfig(part="upstream", image_size=32)
  a, la = builder.render_example(cfg, "train", 7)
  b, lb = builder.render_example(cfg, "train", 7)
  np.testing.assert_array_equal(a, b)
  assert la == lb == 7
  other = builder.WorldConfig(part="upstream", image_size=32, seed=1)
  c, _ = builder.render_example(other, "train", 7)
  assert not np.array_equal(a, c)
  assert a.shape == (32, 32, 3) and a.dtype == np.uint8
  big, _ = builder.render_example(builder.WorldConfig(part="upstream", image_size=64), "train", 7)
  assert big.shape == (64, 64, 3)


def test_images_vary_within_a_class():
  cfg = builder.WorldConfig(part="upstream", image_size=32)
  images = [builder.render_example(cfg, "train", i * 80)[0] for i in range(5)]  # all label 0
  assert all(not np.array_equal(images[0], im) for im in images[1:])


def test_hierarchy_is_consistent():
  h = builder.world_hierarchy()
  assert h.roots == ["entity"]
  domains = h.children("entity")
  assert len(domains) >= 6
  leaves = [n for n in h.nodes if h.label(n) is not None]
  assert len(leaves) >= 60
  assert sorted(h.label(n) for n in leaves) == list(range(len(leaves)))
  assert max(h.depth(n) for n in leaves) >= 3
  assert sorted(l for d in domains for l in h.labels_under(d)) == list(range(len(leaves)))
  names = [c for _, _, c, _ in catalogue.upstream_classes()]
  assert all(h.label(names[i]) == i for i in range(len(names)))


def test_shipped_hierarchy_file_matches_code():
  from expert_hub.data import hierarchy
  path = os.path.join(os.path.dirname(builder.__file__), "hierarchy.json")
  assert hierarchy.load_hierarchy(path).to_json() == builder.world_hierarchy().to_json()


def test_tasks_are_held_out_and_vtab_shaped(data_dir):
  upstream_names = {c for _, _, c, _ in catalogue.upstream_classes()}
  assert len(catalogue.TASKS) >= 6
  assert sum(t["domain"] is None for t in catalogue.TASKS.values()) >= 2
  for name, task in catalogue.TASKS.items():
    assert not upstream_names & set(task["classes"]), name
    assert len(task["classes"]) >= 2
  b = upstream.get_builder("expert_hub_world/count_32", data_dir)
  sizes = {s: b.info.splits[s].num_examples for s in ("train800", "val200", "train800val200", "test")}
  assert sizes == {"train800": 800, "val200": 200, "train800val200": 1000, "test": 1000}
  both = [x["image"] for x in tfds.as_numpy(b.as_dataset(split="train800val200"))]
  first = [x["image"] for x in tfds.as_numpy(b.as_dataset(split="train800"))]
  np.testing.assert_array_equal(np.stack(both[:800]), np.stack(first))


def test_demo_tasks_cover_every_domain_once_and_the_structured_tasks():
  assert set(catalogue.DEMO_TASKS) <= set(catalogue.TASKS)
  domains = [catalogue.TASKS[t]["domain"] for t in catalogue.DEMO_TASKS]
  tied = [d for d in domains if d is not None]
  assert sorted(tied) == sorted(catalogue.UPSTREAM), domains
  assert {t for t, task in catalogue.TASKS.items() if task["domain"] is None} <= set(catalogue.DEMO_TASKS)


def test_fine_tasks_differ_finely_and_extend_their_easy_twins():
  """colours_fine's tricolours each have a twin one outer hue away; textures_fine holds textures_novel and more."""
  fine = catalogue.TASKS["colours_fine"]["classes"]
  stripes = [name.split("_")[1] for name in fine]
  assert all(s[1] == "w" for s in stripes)  # white between, as the comment in colours.py promises
  for a in stripes:
    assert any(sum(x != y for x, y in zip(a, b)) == 1 for b in stripes if b != a), a
  assert set(catalogue.TASKS["textures_novel"]["classes"]) < set(catalogue.TASKS["textures_fine"]["classes"])


def test_tfds_load_by_name_in_a_fresh_process(data_dir):
  upstream.get_builder("expert_hub_world/upstream_mini_32", data_dir)
  proc = run_python(
      "import json, tensorflow_datasets as tfds\n"
      f"ds, info = tfds.load('expert_hub_world/upstream_mini_32', split='train', data_dir={data_dir!r}, "
      "with_info=True, as_supervised=True)\n"
      "x, y = next(iter(ds))\n"
      "print(json.dumps({'shape': x.shape.as_list(), 'n': info.splits['train'].num_examples, "
      "'h': len(info.metadata['hierarchy']['nodes'])}))")
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["shape"] == [32, 32, 3]
  assert out["n"] == 12 * 80
  assert out["h"] == len(builder.world_hierarchy().nodes)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
