"""Stage identity: folder names, made_from records, and resume/reuse only for the same inputs (issue 14, 2-3)."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from expert_hub import configs
from expert_hub import naming
from expert_hub import provenance
from expert_hub import seeds
from expert_hub.data.world import builder
from expert_hub.tasks import base as tasks_base
from expert_hub.tasks import synthetic


# --- naming -------------------------------------------------------------------------------------------------


def test_folder_names_are_injective_and_keep_safe_names():
  assert naming.folder_name("cifar100") == "cifar100"
  a, b = naming.folder_name("folder:/d/a_b"), naming.folder_name("folder:/d/a/b")
  assert a != b and a.startswith("folder_d_a_b-") and b.startswith("folder_d_a_b-")
  assert naming.folder_name("world/count") != naming.folder_name("world_count")
  assert "/" not in naming.folder_name("../../etc") and not naming.folder_name("..").startswith(".")
  with pytest.raises(ValueError, match="non-empty string"):
    naming.folder_name("")


def test_pipeline_task_folders_differ_for_names_that_clean_alike(tmp_path):
  from expert_hub.experiments import pipeline
  assert pipeline.task_dir(str(tmp_path), "folder:/d/a_b") != pipeline.task_dir(str(tmp_path), "folder:/d/a/b")


# --- records ------------------------------------------------------------------------------------------------


def test_check_records_then_accepts_the_same_and_names_each_difference(tmp_path):
  folder = str(tmp_path / "stage")
  record = {"train": configs.TrainConfig(steps=20, warmup_steps=0), "seed": 3}
  provenance.check(folder, record, "generalist")
  assert json.load(open(os.path.join(folder, provenance.MADE_FROM_FILE)))["train"]["steps"] == 20
  provenance.check(folder, {"seed": 3, "train": configs.TrainConfig(steps=20, warmup_steps=0)}, "generalist")  # same: fine
  with pytest.raises(provenance.ProvenanceError, match=r"seed: recorded 3, now 4; train\.steps: recorded 20, now 1600"):
    provenance.check(folder, {"train": configs.TrainConfig(steps=1600, warmup_steps=0), "seed": 4}, "generalist")


def test_output_without_a_record_is_refused_not_reused(tmp_path):
  with pytest.raises(provenance.ProvenanceError, match="no made_from.json"):
    provenance.check(str(tmp_path), {"seed": 0}, "generalist", has_output=True)
  assert not os.path.exists(tmp_path / provenance.MADE_FROM_FILE)


def test_digest_ignores_dict_order_and_array_fingerprint_sees_every_byte():
  assert provenance.digest({"a": 1, "b": (2, 3)}) == provenance.digest({"b": [2, 3], "a": 1})
  x = np.zeros((4, 3), np.float32)
  y = x.copy()
  y[3, 2] = 1e-7
  assert provenance.array_fingerprint(x) != provenance.array_fingerprint(y)
  assert provenance.array_fingerprint(x) != provenance.array_fingerprint(x.reshape(3, 4))


def test_derived_seeds_are_stable_distinct_and_validated():
  assert seeds.derive(0, "expert", "full", "shapes") == seeds.derive(0, "expert", "full", "shapes")
  assert len({seeds.derive(s, "x") for s in range(50)}) == 50
  assert seeds.derive(0, "a") != seeds.derive(0, "b")
  with pytest.raises(ValueError, match="seed=-1"):
    seeds.derive(-1, "x")


# --- stages -------------------------------------------------------------------------------------------------


def test_generalist_of_another_config_is_refused_before_any_training(trained_workdir, smoke_cfg, data_dir):
  """smoke then tiny in one workdir: the tiny run must not reuse (or resume) the smoke generalist."""
  from expert_hub.train import upstream
  other = configs.replace(smoke_cfg, **{"generalist.steps": 1600})
  before = sorted(os.listdir(os.path.join(trained_workdir, "generalist")))
  with pytest.raises(provenance.ProvenanceError, match=r"train\.steps: recorded 40, now 1600"):
    upstream.train_generalist(other, data_dir, trained_workdir)
  with pytest.raises(provenance.ProvenanceError, match="seed: recorded"):
    upstream.train_generalist(dataclasses.replace(smoke_cfg, seed=1), data_dir, trained_workdir)
  assert sorted(os.listdir(os.path.join(trained_workdir, "generalist"))) == before
  upstream.train_generalist(smoke_cfg, data_dir, trained_workdir)  # the same config: reused, no error


def test_generalist_of_another_data_version_is_refused(trained_workdir, smoke_cfg, data_dir, monkeypatch):
  """A new version of the world (1.1.0 grew the upstream from 200 to 800 images a class) is other data: a
  generalist trained on the old one is not reused for the same config."""
  from expert_hub.data import upstream as upstream_lib
  from expert_hub.train import upstream
  version = upstream_lib.data_version(smoke_cfg.upstream.tfds_name, data_dir)
  assert version == builder.WORLD_VERSION
  monkeypatch.setattr(upstream_lib, "data_version", lambda *args: "9.9.9")
  expected = f'data_version: recorded "{re.escape(version)}", now "9\\.9\\.9"'
  with pytest.raises(provenance.ProvenanceError, match=expected):
    upstream.train_generalist(smoke_cfg, data_dir, trained_workdir)


def test_experts_of_another_recipe_are_refused(trained_workdir, smoke_cfg, data_dir):
  from expert_hub.train import experts
  other = configs.replace(smoke_cfg, **{"experts.full.base_lr": 0.5})
  recorded = smoke_cfg.experts.full.base_lr
  with pytest.raises(provenance.ProvenanceError, match=rf"train\.base_lr: recorded {recorded}, now 0\.5"):
    experts.train_experts(other, data_dir, trained_workdir, kinds=["full"])


def _five_class_task(seed, name="arrays"):
  rng = np.random.default_rng(seed)
  splits = {s: (rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), np.arange(40) % 5)
            for s in ("train800val200", "test")}
  return tasks_base.ArrayTask(splits, name=name, num_classes=5)


def test_finetune_of_another_task_in_the_same_workdir_is_refused(export_dir, tmp_path):
  """Today's bug: the second task resumed the first one's finished checkpoint (0 steps) and reported its
  accuracy. Now it is refused, naming what differs, and nothing of the first run is overwritten."""
  from expert_hub.transfer import finetune
  cfg = configs.FinetuneConfig(batch_size=16, steps=4, resize=36, crop=32)
  workdir = str(tmp_path / "ft")
  first = finetune.finetune("generalist", _five_class_task(0), cfg, workdir, export_dirs=[export_dir])
  assert first["steps"] == 4
  saved = open(os.path.join(workdir, finetune.FINETUNE_FILE)).read()
  with pytest.raises(provenance.ProvenanceError, match="another fine-tune"):
    finetune.finetune("generalist", _five_class_task(1), cfg, workdir, export_dirs=[export_dir])
  assert open(os.path.join(workdir, finetune.FINETUNE_FILE)).read() == saved
  os.remove(os.path.join(workdir, finetune.FINETUNE_FILE))  # even without it, the checkpoints are not reused
  with pytest.raises(provenance.ProvenanceError, match="data: recorded"):
    finetune.finetune("generalist", _five_class_task(1), cfg, workdir, export_dirs=[export_dir])
  with pytest.raises(provenance.ProvenanceError, match="seed: recorded 0, now 5"):
    finetune.finetune("generalist", _five_class_task(0), cfg, workdir, export_dirs=[export_dir], seed=5)


def test_finetuning_is_repeatable_and_depends_on_its_seed(export_dir):
  from expert_hub.hub import session as session_lib
  from expert_hub.transfer import finetune
  session = session_lib.ModuleSession.for_export_dirs([export_dir])
  task = synthetic.colour_tasks(1, num_examples=64, num_classes=4)[0]
  cfg = configs.FinetuneConfig(batch_size=16, steps=12, base_lr=0.3, resize=36, crop=32)
  run = lambda seed: finetune.Finetuner(task, cfg, seed=seed, session=session).run("generalist")
  a, b, c = run(0), run(0), run(1)
  assert (a["test_loss"], a["train_loss"]) == (b["test_loss"], b["train_loss"])
  assert a["made_from"] == b["made_from"] != c["made_from"]
  assert (a["test_loss"], a["train_loss"]) != (c["test_loss"], c["train_loss"])


def test_pipeline_reuses_a_models_finetune_only_for_the_same_inputs(export_dir, tmp_path):
  from expert_hub import io_utils
  from expert_hub.experiments import pipeline
  from expert_hub.hub import session as session_lib
  from expert_hub.transfer import finetune
  session = session_lib.ModuleSession.for_export_dirs([export_dir])
  cfg = configs.FinetuneConfig(batch_size=16, steps=4, resize=36, crop=32)
  folder = str(tmp_path / "task")
  finetuner = finetune.Finetuner(_five_class_task(0), cfg, session=session)
  first = pipeline.finetune_once(finetuner, "generalist", "generalist", folder)
  assert not os.path.exists(os.path.join(folder, "finetune_runs", "generalist"))  # checkpoints removed
  finetuner.run = lambda *a, **k: pytest.fail("a finished fine-tune was redone")
  assert pipeline.finetune_once(finetuner, "generalist", "generalist", folder) == first
  other = finetune.Finetuner(_five_class_task(1), cfg, session=session)
  with pytest.raises(provenance.ProvenanceError, match="made from other inputs"):
    pipeline.finetune_once(other, "generalist", "generalist", folder)
  # A result made by an older recipe (no recipe_format) is fine-tuned again, not refused.
  assert first["recipe_format"] == finetune.RECIPE_FORMAT
  path = os.path.join(folder, "finetune", "generalist.seed0.json")
  older = {k: v for k, v in first.items() if k != "recipe_format"}  # as an older expert_hub wrote it
  io_utils.atomic_write_json(path, dict(older, made_from="older", test_accuracy=-1.0))
  os.makedirs(os.path.join(folder, "finetune_runs", "generalist.seed0", "checkpoints"))  # its stale run
  finetuner = finetune.Finetuner(_five_class_task(0), cfg, session=session)
  again = pipeline.finetune_once(finetuner, "generalist", "generalist", folder)
  assert again["test_accuracy"] == first["test_accuracy"] and again["made_from"] == first["made_from"]
  assert io_utils.read_json(path)["test_accuracy"] == first["test_accuracy"]
  # The single-module program's finetune.json likewise.
  workdir = str(tmp_path / "single")
  one = finetune.finetune("generalist", _five_class_task(0), cfg, workdir, session=session)
  io_utils.atomic_write_json(os.path.join(workdir, finetune.FINETUNE_FILE),
                             {k: v for k, v in dict(one, made_from="older").items() if k != "recipe_format"})
  assert finetune.finetune("generalist", _five_class_task(0), cfg, workdir, session=session)["made_from"] == (
      one["made_from"])


def test_an_export_from_another_trained_model_is_not_kept(trained_workdir, export_dir, tmp_path):
  import shutil
  from expert_hub.hub import export_trained
  kept = export_trained.export_trained(trained_workdir, export_dir, version=1)  # the same models: kept as they are
  assert kept["generalist"].startswith(export_dir)
  other = str(tmp_path / "generalist")
  shutil.copytree(os.path.join(trained_workdir, "generalist"), other)
  record = provenance.read(other)
  provenance.os.remove(os.path.join(other, provenance.MADE_FROM_FILE))
  provenance.check(other, dict(record, seed=record["seed"] + 1), "generalist")  # as if trained with another seed
  with pytest.raises(provenance.ProvenanceError, match="exported from another trained model"):
    export_trained.export_model_dir(other, export_dir, "generalist", version=1)
