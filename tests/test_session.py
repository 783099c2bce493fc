"""The module session: each module loaded once per process however many tasks use it; fine-tunes of our modules
restore the module's exact weights into shared templates without loading its graph; bad modules are named."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from expert_hub import configs
from expert_hub.hub import export, export_trained, loading, registry, session as session_lib
from expert_hub.models import resnet_v2
from expert_hub.selection import select
from expert_hub.tasks import ArrayTask
from expert_hub.train import schedules
from expert_hub.transfer import finetune


def _task(name, num_classes=3, n=48, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(n) % num_classes
  return ArrayTask({"train800val200": (images, labels), "test": (images[:24], labels[:24])}, name=name,
                   num_classes=num_classes)


def _expert_paths(export_dir):
  return [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] not in registry.BASELINE_KINDS]


def _load_counts(paths):
  return {p: loading.LOADS[os.path.realpath(p.split("#")[0])] for p in paths}


def test_each_module_is_loaded_once_however_many_tasks_and_finetunes(export_dir, tmp_path, smoke_cfg):
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  experts = _expert_paths(export_dir)
  before = _load_counts(experts)
  tasks = [_task(f"t{i}", seed=i) for i in range(3)]
  folders = [str(tmp_path / t.name) for t in tasks]
  # kNN embeds our modules in a shared template (no graph load); NCE needs each module's logits endpoint.
  sel_cfg = configs.replace(smoke_cfg.selection, proxy="knn,nce")
  results = select.select_experts(tasks, experts, sel_cfg, folders, 32, session, use_cache=False)
  assert [json.load(open(os.path.join(f, "selection.json"))) for f in folders] == results
  assert all(sorted(r["expert"] for r in res["ranking"]) == sorted(experts) for res in results)
  loads = {p: n - before[p] for p, n in _load_counts(experts).items()}
  assert loads == dict.fromkeys(experts, 1), loads  # three tasks, one load per module
  # A second selection in the same process loads nothing more; neither do fine-tunes of our modules.
  select.select_experts(tasks[:1], experts, sel_cfg, [str(tmp_path / "again")], 32, session, use_cache=False)
  cfg = configs.replace(smoke_cfg.finetune, steps=2)
  generalist = next(e["path"] for e in registry.list_experts([export_dir]) if e["kind"] == "generalist")
  gen_before = loading.LOADS[os.path.realpath(generalist)]
  for task in tasks[:2]:
    finetuner = finetune.Finetuner(task, cfg, session=session)
    for handle in experts + [generalist]:
      finetuner.run(handle)
  assert {p: n - before[p] for p, n in _load_counts(experts).items()} == dict.fromkeys(experts, 1)
  assert loading.LOADS[os.path.realpath(generalist)] == gen_before
  assert session.num_loads == len(experts)
  # kNN alone loads no module of ours at all, and embeds exactly what the loaded module computes.
  knn_only = session_lib.ModuleSession(registry.Registry([export_dir]))
  select.select_experts(tasks[:1], experts, smoke_cfg.selection, [str(tmp_path / "knn")], 32, knn_only,
                        use_cache=False)
  assert knn_only.num_loads == 0
  images = np.random.default_rng(4).random((5, 32, 32, 3)).astype("float32")
  for handle in experts:
    want = session.module(handle)[0](tf.constant(images), training=False).numpy()
    got = knn_only.embedder(handle)(tf.constant(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=handle)


def test_a_restored_finetune_starts_from_exactly_the_modules_weights(trained_workdir, export_dir, tmp_path,
                                                                      smoke_cfg):
  pack = export_trained.export_pack(trained_workdir, str(tmp_path / "packs"), version=1)
  packed = [f"{pack}#{n}" for n in sorted(export.read_metadata(pack)["experts"])]
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  finetuner = finetune.Finetuner(_task("weights"), configs.replace(smoke_cfg.finetune, steps=2), session=session)
  images = np.random.default_rng(1).random((6, 32, 32, 3)).astype("float32")
  for handle in _expert_paths(export_dir) + packed:
    model = finetuner._model_for(handle)  # pylint: disable=protected-access
    backbone = resnet_v2.get_backbone(model)
    module, _ = loading.load_module(handle, [export_dir])
    saved = dict(zip(session.saved_variable_names(handle), module.variables))
    assert {v.path for v in backbone.variables} == set(saved), handle
    for v in backbone.variables:
      np.testing.assert_array_equal(v.numpy(), saved[v.path].numpy(), err_msg=f"{handle}: {v.path}")
    want = module(tf.constant(images), training=False).numpy()
    got = backbone(images, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=handle)
    assert not np.any(model.get_layer("head").get_weights()[0])  # a fresh, zero head


def test_templates_are_shared_across_tasks_and_a_padded_head_trains_as_an_exact_one(export_dir, smoke_cfg):
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  cfg = configs.replace(smoke_cfg.finetune, steps=3)
  full = next(p for p in _expert_paths(export_dir) if not p.rstrip("/").split("/")[-2].endswith("_adapter"))
  first = finetune.Finetuner(_task("a", num_classes=3), cfg, session=session)
  second = finetune.Finetuner(_task("b", num_classes=5, seed=1), cfg, session=session)
  model_a = first._model_for(full)  # pylint: disable=protected-access
  first.run(full)
  traced = model_a.train_function
  model_b = second._model_for(full)  # pylint: disable=protected-access
  second.run(full)
  assert model_b is model_a and model_b.train_function is traced  # one compiled, traced template
  assert finetune.head_size(3) == finetune.head_size(5) == 8 and finetune.head_size(9) == 16
  assert finetune.head_size(397) == 512
  # A masked head of 8 takes the same SGD step as an exact head of 5 outputs.
  x = np.random.default_rng(2).random((4, 7)).astype("float32")
  y = np.array([0, 1, 4, 2])
  kernel = np.random.default_rng(3).normal(size=(7, 8)).astype("float32")
  padded = keras.Sequential([keras.Input((7,)), keras.layers.Dense(8), finetune.LogitMask(8)])
  exact = keras.Sequential([keras.Input((7,)), keras.layers.Dense(5)])
  padded.layers[0].set_weights([kernel, np.zeros(8, "float32")])
  exact.layers[0].set_weights([kernel[:, :5], np.zeros(5, "float32")])
  padded.layers[1].set_classes(5)
  for model, depth in ((padded, 8), (exact, 5)):
    model.compile(keras.optimizers.SGD(0.5), keras.losses.CategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, tf.one_hot(y, depth))
  np.testing.assert_allclose(padded.layers[0].get_weights()[0][:, :5], exact.layers[0].get_weights()[0], atol=1e-6)
  np.testing.assert_array_equal(padded.layers[0].get_weights()[0][:, 5:], kernel[:, 5:])  # no gradient there
  np.testing.assert_allclose(padded.predict(x, verbose=0)[:, :5], exact.predict(x, verbose=0), atol=1e-5)


def test_assignable_schedule_matches_the_fixed_step_schedule():
  fixed = schedules.WarmupSchedule(0.2, 100, 10, "step", (40, 70, 90))
  assignable = schedules.AssignableStepSchedule()
  assignable.assign(0.2, 10, (40, 70, 90))
  steps = [0, 5, 9, 10, 39, 40, 69, 70, 95]
  np.testing.assert_allclose([float(assignable(s)) for s in steps], [float(fixed(s)) for s in steps], rtol=1e-6)
  assignable.assign(0.01, 0, ())
  assert float(assignable(0)) == pytest.approx(0.01) and float(assignable(10_000)) == pytest.approx(0.01)
  with pytest.raises(ValueError, match="at most 8"):
    assignable.assign(0.1, 0, range(1, 10))


def test_a_foreign_module_gets_its_saved_weights_back_after_training(export_dir, tmp_path, smoke_cfg):
  foreign = str(tmp_path / "foreign")  # no expert.json: fine-tuned through ExpertLayer, as a TF Hub module is
  shutil.copytree(_expert_paths(export_dir)[0], foreign)
  os.remove(os.path.join(foreign, export.METADATA_FILE))
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  module, _ = session.module(foreign)
  saved = [v.numpy().copy() for v in module.variables]
  finetune.Finetuner(_task("foreign"), configs.replace(smoke_cfg.finetune, steps=3, base_lr=1.0),
                     session=session).run(foreign)
  assert any(not np.array_equal(s, v.numpy()) for s, v in zip(saved, module.variables))  # it trained in place
  again, _ = session.module(foreign)
  assert again is module and session.num_loads == 1
  changed = [v.name for s, v in zip(saved, again.variables) if not np.array_equal(s, v.numpy())]
  assert not changed, changed


def test_a_module_that_fails_verification_is_named_and_nothing_is_written(export_dir, tmp_path, smoke_cfg):
  exports = str(tmp_path / "export")
  shutil.copytree(export_dir, exports)
  experts = _expert_paths(exports)
  bad = experts[0]
  index = next(f for f in os.listdir(os.path.join(bad, "variables")) if f.endswith(".index"))
  with open(os.path.join(bad, "variables", index), "ab") as f:
    f.write(b"tampered")
  session = session_lib.ModuleSession(registry.Registry([exports]))
  out = tmp_path / "sel"
  out.mkdir()
  with pytest.raises(ValueError, match=rf"{re.escape(bad)}.*variables/{re.escape(index)}.*does not match"):
    select.select_experts([_task("v")], experts, smoke_cfg.selection, [str(out)], 32, session)
  assert not os.listdir(out)
  with pytest.raises(ValueError, match=rf"variables/{re.escape(index)}.*does not match"):
    finetune.finetune(bad, _task("v"), configs.replace(smoke_cfg.finetune, steps=2), str(tmp_path / "ft"),
                      session=session)
  assert not os.path.exists(tmp_path / "ft" / finetune.FINETUNE_FILE)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
