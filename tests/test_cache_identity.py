"""Cached embeddings and selection.json are reused only for the data and inputs they were computed from."""

import json
import logging
import os
import types

import numpy as np
import pytest
from PIL import Image

from conftest import run_python
from expert_hub import configs
from expert_hub.hub import registry
from expert_hub.hub import session as session_lib
from expert_hub.selection import cache as cache_lib
from expert_hub.selection import scoring
from expert_hub.selection import select
from expert_hub.tasks import ArrayTask, get_task

SPLIT = "train800val200"


@pytest.fixture(scope="module")
def session(export_dir):
  return session_lib.ModuleSession.for_export_dirs([export_dir])


@pytest.fixture(scope="module")
def experts(export_dir):
  return [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] not in registry.BASELINE_KINDS][:2]


def _cfg(smoke_cfg, **overrides):
  return configs.replace(smoke_cfg.selection, **dict({"split": SPLIT}, **overrides))


def _array_task(seed, labels_seed=None, n=40):
  images = np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
  labels = np.random.default_rng(seed if labels_seed is None else labels_seed).permutation(np.arange(n) % 2)
  return ArrayTask({SPLIT: (images, labels)})  # the default name, "arrays", every time


def _cached(result):
  return {e: t["cached"] for e, t in result["input_seconds"].items()}


def _scores(result):
  return [(r["expert"], r["score"]) for r in result["ranking"]]


def _write_images(folder, names, seed):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for name in names:
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(os.path.join(folder, name))


def test_folder_task_that_gained_images_is_embedded_again(experts, session, smoke_cfg, tmp_path):
  root = tmp_path / "folder"
  for i, c in enumerate(("cat", "dog")):  # 1000 train images: val200 is train[800:1000] of a shuffled listing
    _write_images(root / "train" / c, [f"{c}_{j:04d}.png" for j in range(500)], seed=i)
  cfg = _cfg(smoke_cfg, split="val200")
  before = get_task(f"folder:{root}")
  images_before, _ = before.arrays("val200")
  first = select.select_expert(before, experts, cfg, str(tmp_path / "sel"), 32, session=session)
  for i, c in enumerate(("cat", "dog")):
    _write_images(root / "train" / c, [f"{c}_new_{j:04d}.png" for j in range(150)], seed=10 + i)
  after = get_task(f"folder:{root}")
  images_after, _ = after.arrays("val200")
  assert len(images_after) == len(images_before) == 200 and not np.array_equal(images_after, images_before)
  again = select.select_expert(after, experts, cfg, str(tmp_path / "sel"), 32, session=session)
  assert all(c == [] for c in _cached(again).values())  # other images: not one cached feature reused
  fresh = select.select_expert(after, experts, cfg, str(tmp_path / "fresh"), 32, session=session, use_cache=False)
  assert _scores(again) == _scores(fresh)
  assert again["identity"]["task"]["fingerprint"] != first["identity"]["task"]["fingerprint"]


def test_array_tasks_with_the_default_name_share_no_embeddings(experts, session, smoke_cfg, tmp_path):
  cfg, workdir = _cfg(smoke_cfg), str(tmp_path / "sel")
  a, other_images, other_labels = _array_task(0), _array_task(1), _array_task(0, labels_seed=5)
  assert a.name == other_images.name == other_labels.name == "arrays"
  select.select_expert(a, experts, cfg, workdir, 32, session=session)
  for task in (other_images, other_labels):
    shared = select.select_expert(task, experts, cfg, workdir, 32, session=session)
    assert all(c == [] for c in _cached(shared).values())
    fresh = select.select_expert(task, experts, cfg, str(tmp_path / "fresh"), 32, session=session,
                                 use_cache=False)
    assert _scores(shared) == _scores(fresh)
  # The same content (another object, another name even) is the same entry.
  same = ArrayTask({SPLIT: a.arrays(SPLIT)}, name="renamed")
  assert all(c == ["features"] for c in _cached(select.select_expert(same, experts, cfg, workdir, 32,
                                                                     session=session)).values())


DAMAGE = {
    "cut in half": lambda b: b[:len(b) // 2],
    "zero bytes": lambda b: b"",
    "garbage": lambda b: np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes(),
    "zip header then garbage": lambda b: b"PK\x03\x04" + bytes(300),
    "one byte flipped": lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:],
    "a bad .npy header": lambda b: b"\x93NUMPY\x09\x00" + bytes(100),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_unreadable_cache_entry_is_missing_with_a_warning(damage, tmp_path, caplog):
  c = cache_lib.EmbeddingCache(str(tmp_path))
  c.put("e", "/m", "data", "s", 32, "features", np.ones((300, 8), np.float32))
  [entry] = os.listdir(tmp_path)
  path = tmp_path / entry
  path.write_bytes(DAMAGE[damage](path.read_bytes()))
  with caplog.at_level(logging.WARNING, logger="expert_hub.selection.cache"):
    assert c.get("e", "/m", "data", "s", 32, "features", 300) is None
  assert "unreadable" in caplog.text and entry in caplog.text
  array, hit = c.get_or_compute("e", "/m", "data", "s", 32, "features", 300, lambda: np.zeros((300, 8)))
  assert not hit and c.get("e", "/m", "data", "s", 32, "features", 300).shape == (300, 8)  # rewritten whole


def test_cache_key_holds_data_split_size_module_and_preprocessing(tmp_path, monkeypatch):
  c = cache_lib.EmbeddingCache(str(tmp_path))
  c.put("e", "/m", "fp-1", "s", 32, "features", np.ones((3, 2)))
  assert c.get("e", "/m", "fp-1", "s", 32, "features", 3).shape == (3, 2)
  for other in (("/m", "fp-2", "s", 32), ("/m", "fp-1", "t", 32), ("/m", "fp-1", "s", 64), ("/n", "fp-1", "s", 32)):
    assert c.get("e", other[0], other[1], other[2], other[3], "features", 3) is None, other
  from expert_hub.selection import embed
  monkeypatch.setattr(embed, "PREPROCESSING", embed.PREPROCESSING + "; another resize")
  assert c.get("e", "/m", "fp-1", "s", 32, "features", 3) is None


def test_cut_cache_entry_does_not_abort_selection(experts, session, smoke_cfg, tmp_path, caplog):
  cfg, workdir, task = _cfg(smoke_cfg), str(tmp_path / "sel"), _array_task(3)
  first = select.select_expert(task, experts, cfg, workdir, 32, session=session)
  entries = sorted(os.listdir(os.path.join(workdir, select.EMBEDDINGS_DIR)))
  assert len(entries) == len(experts)
  cut = os.path.join(workdir, select.EMBEDDINGS_DIR, entries[0])
  with open(cut, "r+b") as f:
    f.truncate(os.path.getsize(cut) // 3)
  with caplog.at_level(logging.WARNING, logger="expert_hub.selection.cache"):
    again = select.select_expert(task, experts, cfg, workdir, 32, session=session)
  assert entries[0] in caplog.text and "unreadable" in caplog.text
  assert sorted(c for c in _cached(again).values()) == [[], ["features"]]
  assert _scores(again) == _scores(first)


def test_selection_is_reused_only_for_the_inputs_it_records(experts, session, smoke_cfg, tmp_path, caplog):
  cfg, workdir, task = _cfg(smoke_cfg), str(tmp_path / "sel"), _array_task(4)
  result = select.select_expert(task, experts, cfg, workdir, 32, session=session)
  assert select.reusable_selection(workdir, task, experts, cfg, 32, session) == result
  assert select.reusable_selection(os.path.join(workdir, select.SELECTION_FILE), _array_task(4), experts[::-1],
                                   cfg, 32, session) == result  # another object with the same data; any order
  caplog.set_level(logging.INFO, logger="expert_hub.selection.select")
  others = {"task data": (_array_task(5), experts, cfg, 32, None),
            "labels": (_array_task(4, labels_seed=9), experts, cfg, 32, None),
            "candidates": (task, experts[:1], cfg, 32, None),
            "k": (task, experts, _cfg(smoke_cfg, k=3), 32, None),
            "split": (task, experts, _cfg(smoke_cfg, split="other"), 32, None),
            "image size": (task, experts, cfg, 64, None),
            "proxies": (task, experts, cfg, 32, "knn,logme")}
  for what, (t, e, c, size, proxies) in others.items():
    caplog.clear()
    assert select.reusable_selection(workdir, t, e, c, size, session, proxies=proxies) is None, what
    assert "Not reusing" in caplog.text, what
  assert select.reusable_selection(str(tmp_path / "nothing"), task, experts, cfg, 32, session) is None
  on_disk = json.load(open(os.path.join(workdir, select.SELECTION_FILE)))
  on_disk["identity"]["format"] = select.IDENTITY_FORMAT - 1  # scored by an older expert_hub's proxies
  json.dump(on_disk, open(os.path.join(workdir, select.SELECTION_FILE), "w"))
  caplog.clear()
  assert select.reusable_selection(workdir, task, experts, cfg, 32, session) is None
  assert f"format {select.IDENTITY_FORMAT}" in caplog.text
  del on_disk["identity"]  # as an older expert_hub wrote it
  json.dump(on_disk, open(os.path.join(workdir, select.SELECTION_FILE), "w"))
  assert select.reusable_selection(workdir, task, experts, cfg, 32, session) is None


def _small_folder(root, seed):
  for i, c in enumerate(("a", "b")):
    _write_images(root / "train" / c, [f"{j}.png" for j in range(6)], seed=10 * seed + i)
    _write_images(root / "test" / c, [f"{j}.png" for j in range(2)], seed=10 * seed + i + 5)


def test_finetune_auto_takes_only_a_selection_of_this_task(experts, session, smoke_cfg, tmp_path, export_dir):
  mine, other, workdir = tmp_path / "mine", tmp_path / "other", str(tmp_path / "work")
  _small_folder(mine, seed=0)
  _small_folder(other, seed=1)
  select.select_expert(get_task(f"folder:{mine}"), experts, _cfg(smoke_cfg), workdir, 32, session=session)
  assert select.selection_for_task(workdir, get_task(f"folder:{mine}"))["selected"] in experts
  with pytest.raises(select.SelectionMismatchError, match=r"task\.name: recorded"):
    select.selection_for_task(workdir, get_task(f"folder:{other}"))
  _small_folder(mine, seed=2)  # the same folder, its images replaced: only the fingerprint tells
  with pytest.raises(select.SelectionMismatchError, match=r"other data.*: task\.fingerprint: recorded \S+, now"):
    select.selection_for_task(workdir, get_task(f"folder:{mine}"))
  # The binary refuses it before any fine-tuning.
  proc = run_python(["binaries/finetune.py", "--expert=auto", f"--task=folder:{mine}", "--config=smoke",
                     f"--export_dir={export_dir}", f"--workdir={workdir}"], check=False, timeout=300)
  assert proc.returncode != 0
  assert "ranks experts for other data" in proc.stdout + proc.stderr
  assert not os.path.exists(os.path.join(workdir, "finetune_runs"))


def test_partials_of_one_task_read_as_two_contents_are_refused():
  plan = types.SimpleNamespace(parsed=[])  # merge_partials reads only the plan's proxies
  parts = [dict(scoring.empty_partial(plan), data={"fingerprint": f}) for f in ("aa", "bb")]
  assert scoring.merge_partials(plan, parts[:1])["data"] == {"fingerprint": "aa"}
  with pytest.raises(ValueError, match="two different contents"):
    scoring.merge_partials(plan, parts)
