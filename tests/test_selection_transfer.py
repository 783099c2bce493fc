"""Selection and fine-tuning write their JSON; tasks from folders and arrays; bad input is named."""

import json
import os
import re
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from expert_hub import configs
from expert_hub.hub import registry
from expert_hub.selection import proxies, select
from expert_hub.tasks import ArrayTask, FolderTask, get_task
from expert_hub.transfer import finetune, hyperrule


def _experts(export_dir):
  return [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] not in registry.BASELINE_KINDS]


def test_select_expert_writes_selection_json(export_dir, data_dir, tmp_path, smoke_cfg):
  task = get_task("world/colours_novel", data_dir)
  sel_cfg = configs.replace(smoke_cfg.selection, split="val200")
  result = select.select_expert(task, _experts(export_dir), sel_cfg, str(tmp_path), 32)
  on_disk = json.load(open(tmp_path / "selection.json"))
  assert on_disk == result
  assert set(result) >= {"task", "proxy", "k", "num_examples", "selected", "ranking", "seconds"}
  assert result["num_examples"] == 200 and result["proxy"] == "knn" and result["k"] == 1
  scores = [r["score"] for r in result["ranking"]]
  assert scores == sorted(scores, reverse=True) and result["selected"] == result["ranking"][0]["expert"]
  for r in result["ranking"]:
    assert set(r) == {"expert", "score", "embed_seconds", "knn_seconds"} and 0 <= r["score"] <= 1


def test_unknown_expert_or_task_fails_before_work(export_dir, data_dir, tmp_path, smoke_cfg):
  task = get_task("world/colours_novel", data_dir)
  with pytest.raises(KeyError, match="nearest known names"):
    select.select_expert(task, ["no_such_expert"], smoke_cfg.selection, str(tmp_path), 32, [export_dir])
  assert not os.listdir(tmp_path)
  with pytest.raises(KeyError, match="colours_novel"):
    get_task("world/colour_novel", data_dir)
  with pytest.raises(ValueError, match="Unknown task spec"):
    get_task("cifar100", data_dir)


def test_finetune_writes_finetune_json_and_learns(export_dir, data_dir, tmp_path, smoke_cfg, caplog):
  task = get_task("world/colours_novel", data_dir)
  # The smoke generalist is barely trained, so give the fine-tune enough steps and learning rate to learn
  # colour layouts (separable by colour alone) from it reliably, from a zero head: the learning is then the
  # fine-tune's, not a starting probe's. (A probe head at lr 0.4 diverged on an AVX-512 EPYC: train loss 473,
  # accuracy 0.19; at the config's 0.03 it reached 0.97, and a zero head at 0.4 0.89.)
  cfg = configs.replace(smoke_cfg.finetune, steps=150, base_lr=0.4, head_init="zeros")
  result = finetune.finetune("generalist", task, cfg, str(tmp_path), export_dirs=[export_dir])
  assert json.load(open(tmp_path / "finetune.json")) == result
  assert set(result) >= {"task", "expert", "test_accuracy", "steps", "seconds"}
  assert result["steps"] == 150 and result["num_test_examples"] == 1000
  assert result["test_accuracy"] > 1.0 / task.num_classes + 0.15
  assert "diverged" not in caplog.text
  # A learning rate far too large: the run ends above a uniform guess's loss, and says so.
  cfg = configs.replace(smoke_cfg.finetune, steps=10, base_lr=100.0, head_init="zeros")
  diverged = finetune.finetune("generalist", task, cfg, str(tmp_path / "too_fast"), export_dirs=[export_dir])
  assert not diverged["train_loss"] <= np.log(task.num_classes)
  assert re.search(r"generalist diverged: train loss \S+, above the 1\.609 of a uniform guess over 5 classes",
                   caplog.text), caplog.text


@pytest.mark.parametrize("num_classes", [2, 3])
def test_linear_head_is_the_probe_on_raw_features(num_classes):
  """The head reproduces the standardised scikit-learn probe on unstandardised features: same probabilities,
  padding and absent classes at 0, two classes as -z/2, +z/2."""
  from sklearn import linear_model, preprocessing as sk_preprocessing
  from expert_hub.transfer import linear_head
  rng = np.random.default_rng(0)
  labels = np.arange(60) % num_classes * 2  # classes 0, 2 (, 4): 1 and 3 absent
  features = rng.normal(size=(60, 5)) * [1, 10, 100, 0.1, 1] + labels[:, None] * [1, 0, 3, 0, 0] + 7
  kernel, bias = linear_head.fit(features, labels, size=8, l2=0.05)
  assert kernel.shape == (5, 8) and bias.shape == (8,) and kernel.dtype == np.float32
  absent = [c for c in range(8) if c not in set(labels)]
  assert not kernel[:, absent].any() and not bias[absent].any()
  scaler = sk_preprocessing.StandardScaler().fit(features)
  probe = linear_model.LogisticRegression(C=1 / (0.05 * 60), max_iter=proxies.PROBE_MAX_ITER).fit(
      scaler.transform(features), labels)
  logits = features @ kernel + bias
  present = logits[:, probe.classes_]
  probs = np.exp(present - present.max(1, keepdims=True))
  np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), probe.predict_proba(scaler.transform(features)),
                             atol=1e-4)
  if num_classes == 2:
    np.testing.assert_allclose(kernel[:, 0], -kernel[:, 2], rtol=1e-6)
  with pytest.raises(ValueError, match="at least 2"):
    linear_head.fit(features, np.zeros(60, int), size=8)
  with pytest.raises(ValueError, match=r"labels in \[0, 9\]; expected labels in \[0, 8\)"):
    linear_head.fit(features, np.arange(60) % 10, size=8)
  with pytest.raises(ValueError, match="non-finite"):
    linear_head.fit(np.where(features > 50, np.nan, features), labels, size=8)


def test_linear_probe_head_starts_fine_tuning_at_the_probe(export_dir):
  """With a learning rate too small to move the backbone, a probe head predicts what the frozen features separate
  (a colour task: nearly all of it); a zero head gets only what one tiny step's tie-breaking gives (~55%)."""
  from expert_hub.hub import session as session_lib
  from expert_hub.tasks import synthetic
  session = session_lib.ModuleSession.for_export_dirs([export_dir])
  task = synthetic.colour_tasks(1, num_examples=64, num_classes=4)[0]
  accuracy = {}
  for head_init in ("zeros", "linear_probe"):
    cfg = configs.FinetuneConfig(batch_size=16, steps=1, base_lr=1e-9, resize=36, crop=32, head_init=head_init)
    result = finetune.Finetuner(task, cfg, session=session).run("generalist")
    assert result["head_init"] == head_init
    accuracy[head_init] = result["test_accuracy"]
  assert accuracy["linear_probe"] >= 0.9 and accuracy["linear_probe"] > accuracy["zeros"] + 0.2, accuracy
  # Another seed of the same module starts from the same probe, fitted once per Finetuner and module.
  finetuner = finetune.Finetuner(task, cfg, session=session)
  with mock.patch.object(finetune.linear_head, "fit", wraps=finetune.linear_head.fit) as fit:
    runs = [finetuner.run("generalist", seed=s) for s in (1, 2)]
  assert fit.call_count == 1 and runs[0]["test_accuracy"] == runs[1]["test_accuracy"] >= 0.9


def test_linear_probe_head_l2_is_the_configs_or_the_best_cross_validated_of_its_grid(export_dir):
  """One l2 is used as given (no cross-validation); of a grid, the one linear_probe_accuracy picks on folds shuffled
  by the Finetuner's seed, for the head's fit and in the result; the grid and that seed are in made_from."""
  from expert_hub import provenance
  from expert_hub.hub import session as session_lib
  from expert_hub.tasks import synthetic
  from expert_hub.transfer import linear_head
  rng = np.random.default_rng(0)
  labels = np.arange(90) % 3
  features = rng.normal(size=(90, 8)) + labels[:, None] * [1.0, 0.5, 0, 0, 0, 0, 0, 0]
  with mock.patch.object(proxies, "linear_probe_accuracy", wraps=proxies.linear_probe_accuracy) as cv:
    assert linear_head.choose_l2(features, labels, 0.3, seed=1) == linear_head.choose_l2(features, labels, (0.3,), 1)
    assert cv.call_count == 0
    picked = linear_head.choose_l2(features, labels, (1e3, 0.01, 1.0), seed=4)
    assert cv.call_count == 1 and picked == proxies.linear_probe_accuracy(features, labels, l2=[1e3, 0.01, 1.0],
                                                                          seed=4)[1]
  session = session_lib.ModuleSession.for_export_dirs([export_dir])
  task = synthetic.colour_tasks(1, num_examples=64, num_classes=4)[0]
  one = configs.FinetuneConfig(batch_size=16, steps=1, base_lr=1e-9, resize=36, crop=32, head_init="linear_probe",
                               head_l2=0.2)
  grid = configs.replace(one, head_l2=[1e3, 0.05])  # a list is kept as a tuple
  assert grid.head_l2 == (1e3, 0.05)
  original, picks = linear_head.choose_l2, []

  def spy(*args, **kwargs):
    picks.append((args, kwargs, original(*args, **kwargs)))
    return picks[-1][2]
  with mock.patch.object(linear_head, "choose_l2", side_effect=spy), \
       mock.patch.object(linear_head, "fit", wraps=linear_head.fit) as fit:
    assert finetune.Finetuner(task, one, session=session, seed=3).run("generalist")["head_l2"] == 0.2
    assert fit.call_args.kwargs["l2"] == 0.2
    result = finetune.Finetuner(task, grid, session=session, seed=3).run("generalist")
  args, kwargs, picked = picks[-1]
  assert args[2] == (1e3, 0.05) and kwargs["seed"] == 3  # the grid, on folds shuffled by the Finetuner's seed
  assert result["head_l2"] == picked == fit.call_args.kwargs["l2"] and picked in (1e3, 0.05)

  def made_from(cfg, finetuner_seed):  # the record of a run with seed 3, by a Finetuner of another default seed
    finetuner = finetune.Finetuner(task, cfg, session=session, seed=finetuner_seed)
    return provenance.digest(finetuner.made_from("generalist", seed=3))
  assert made_from(grid, 3) != made_from(grid, 4) and made_from(one, 3) == made_from(one, 4)
  zero = finetune.Finetuner(task, configs.replace(one, head_init="zeros"), session=session).run("generalist")
  assert zero["head_l2"] is None


def test_hyperrule():
  s = hyperrule.get_schedule(1000)
  assert (s.steps, s.warmup_steps, s.decay_steps, s.mixup_alpha) == (500, 100, (200, 300, 400), 0.0)
  assert hyperrule.get_schedule(100_000).steps == 10_000 and hyperrule.get_schedule(100_000).mixup_alpha == 0.1
  assert hyperrule.get_schedule(1_000_000).decay_steps == (6000, 12_000, 18_000)
  assert hyperrule.get_resolution(32, 32) == (160, 128) and hyperrule.get_resolution(224, 224) == (512, 480)
  assert hyperrule.get_learning_rate(64) == pytest.approx(0.003 / 8)
  with pytest.raises(ValueError, match="dataset_size=0"):
    hyperrule.get_schedule(0)


def _write_folder(root, classes, per_class=3):
  for split in ("train", "test"):
    for c in classes:
      os.makedirs(root / split / c, exist_ok=True)
      for i in range(per_class):
        Image.fromarray(np.full((20 + i, 24, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")


def test_folder_task_and_its_errors(tmp_path):
  _write_folder(tmp_path / "ok", ["cat", "dog"])
  task = get_task(f"folder:{tmp_path / 'ok'}")
  assert task.num_classes == 2
  assert len(list(task.load("train800val200"))) == 6
  _write_folder(tmp_path / "one", ["cat"])
  with pytest.raises(ValueError, match="1 class folder"):
    FolderTask(str(tmp_path / "one"))
  os.makedirs(tmp_path / "empty" / "train" / "a")
  os.makedirs(tmp_path / "empty" / "train" / "b")
  with pytest.raises(ValueError, match="no images"):
    FolderTask(str(tmp_path / "empty"))


def test_array_task_rejects_bad_images():
  with pytest.raises(ValueError, match=r"shape \(4, 8, 8\) \(rank 3\)"):
    ArrayTask({"train": (np.zeros([4, 8, 8]), np.arange(4))})
  with pytest.raises(ValueError, match="4 channels"):
    ArrayTask({"train": (np.zeros([4, 8, 8, 4]), np.arange(4))})
  t = ArrayTask({"train800val200": (np.zeros([4, 8, 8, 1], np.uint8), np.array([0, 1, 0, 1]))})
  x, _ = next(iter(t.load("train800val200")))
  assert x.shape == (8, 8, 1) and t.num_classes == 2




def test_embedding_cache_is_reused_and_keyed_by_module(export_dir, data_dir, tmp_path, smoke_cfg):
  task = get_task("world/colours_novel", data_dir)
  sel_cfg = configs.replace(smoke_cfg.selection, split="val200")
  experts = _experts(export_dir)[:2]
  first = select.select_expert(task, experts, sel_cfg, str(tmp_path), 32)
  cache_files = sorted(os.listdir(tmp_path / select.EMBEDDINGS_DIR))
  assert len(cache_files) == 2 and all(".features." in f for f in cache_files)
  assert all(t["cached"] == [] for t in first["input_seconds"].values())
  again = select.select_expert(task, experts, sel_cfg, str(tmp_path), 32)
  assert all(t["cached"] == ["features"] for t in again["input_seconds"].values())
  assert again["ranking"] == [dict(r, embed_seconds=again["ranking"][i]["embed_seconds"],
                                   knn_seconds=again["ranking"][i]["knn_seconds"])
                              for i, r in enumerate(first["ranking"])]
  # Another split or image size is another entry; an entry written for another key is not trusted.
  other = select.select_expert(task, experts, configs.replace(sel_cfg, split="train800"), str(tmp_path), 32)
  assert all(t["cached"] == [] for t in other["input_seconds"].values())
  from expert_hub.selection import cache as cache_lib
  c = cache_lib.EmbeddingCache(str(tmp_path / "c"))
  c.put("e", experts[0], "t", "s", 32, "features", np.ones((3, 2)))
  assert c.get("e", experts[0], "t", "s", 32, "features", 3).shape == (3, 2)
  assert c.get("e", experts[0], "t", "s", 32, "features", 4) is None  # another example count: stale
  assert c.get("e", experts[1], "t", "s", 32, "features", 3) is None  # another module
  with pytest.raises(ValueError, match="'weights'.*expected one of"):
    c.get("e", experts[0], "t", "s", 32, "weights", 3)


def test_packed_experts_are_embedded_together_and_score_as_single_modules(trained_workdir, export_dir, data_dir,
                                                                          tmp_path, smoke_cfg):
  from expert_hub.hub import export_trained
  packs = str(tmp_path / "packs")
  pack = export_trained.export_pack(trained_workdir, packs, version=1)
  singles = {e["name"]: e["path"] for e in registry.list_experts([export_dir]) if e["kind"] == "adapter"}
  assert len(singles) >= 2
  task = get_task("world/colours_novel", data_dir)
  sel_cfg = configs.replace(smoke_cfg.selection, split="val200")
  packed = select.select_expert(task, [f"{pack}#{n}" for n in sorted(singles)], sel_cfg, str(tmp_path / "p"), 32,
                                proxies="knn,logme", use_cache=False)
  single = select.select_expert(task, [singles[n] for n in sorted(singles)], sel_cfg, str(tmp_path / "s"), 32,
                                proxies="knn,logme", use_cache=False)
  # One embed_pack call embedded all of them; its seconds are shared equally.
  assert len({t["embed"] for t in packed["input_seconds"].values()}) == 1
  # With the cache, a re-run reads every packed expert's features from it.
  handles = [f"{pack}#{n}" for n in sorted(singles)]
  first = select.select_expert(task, handles, sel_cfg, str(tmp_path / "c"), 32, proxies="knn")
  again = select.select_expert(task, handles, sel_cfg, str(tmp_path / "c"), 32, proxies="knn")
  assert all(t["cached"] == [] for t in first["input_seconds"].values())
  assert all(t["cached"] == ["features"] for t in again["input_seconds"].values())
  assert [(r["expert"], r["score"]) for r in again["ranking"]] == [(r["expert"], r["score"]) for r in first["ranking"]]
  names = {f"{pack}#{n}": n for n in singles}
  names.update({path: n for n, path in singles.items()})
  for label in ("knn", "logme"):
    got, want = ({names[r["expert"]]: r["score"] for r in result["proxies"][label]["ranking"]}
                 for result in (packed, single))
    assert set(got) == set(singles) and got == pytest.approx(want, abs=1e-3)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
