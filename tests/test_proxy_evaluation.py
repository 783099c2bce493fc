"""Proxy evaluation: rank correlations and regret against hand-computed values, then end to end on the tiny world."""

import json
import os

import numpy as np
import pytest

from conftest import run_python
from expert_hub import configs
from expert_hub import naming
from expert_hub.experiments import pipeline
from expert_hub.experiments import proxy_evaluation as pe
from expert_hub.hub import registry
from expert_hub.tasks import ArrayTask

PROXIES = "knn,logme,leep,generalist,random"


def _task(name="small", n=40, seed=0):
  """40 images per split of 2 classes (a bright or dark square): learnable in a few steps."""
  rng = np.random.default_rng(seed)
  splits = {}
  for split in ("train800val200", "test"):
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
    images[labels == 1, 8:24, 8:24] += 150
    splits[split] = (images, labels)
  return ArrayTask(splits, name=name)


def _experts(export_dir):
  return [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] not in registry.BASELINE_KINDS]


def _check_results(results, experts, workdir, proxies=PROXIES):
  assert json.load(open(os.path.join(workdir, pe.RESULTS_FILE))) == results
  assert results["proxies"] == proxies.split(",")
  assert list(results["summary"]) == proxies.split(",") + ["oracle"]
  for t in results["tasks"]:
    assert set(t["finetune_accuracy"]) == set(experts) | {"generalist"}  # the generalist reference's pick too
    assert set(t["seed_accuracy"]) == set(t["kinds"]) == set(t["finetune_accuracy"])  # every seed kept
    for name, per_seed in t["seed_accuracy"].items():
      assert len(per_seed) == len(t["seeds"]) and t["finetune_accuracy"][name] == pytest.approx(np.mean(per_seed))
    assert t["kinds"]["generalist"] == "generalist" and set(t["kinds"].values()) <= {"full", "adapter", "generalist"}
    assert t["oracle"]["regret"] == 0.0
    assert t["oracle"]["selected_accuracy"] == max(t["finetune_accuracy"].values())
    for label, r in t["proxies"].items():
      assert r["regret"] >= 0 and r["selected"] in t["finetune_accuracy"], label
      assert r["regret"] == pytest.approx(t["oracle"]["selected_accuracy"] - r["selected_accuracy"], abs=1e-4)
      assert r["kendall_tau"] is None or -1 <= r["kendall_tau"] <= 1
      assert r["spearman_rho"] is None or -1 <= r["spearman_rho"] <= 1
      assert r["selection_seconds"] >= r["proxy_seconds"] >= 0 and r["cost_vs_finetune_all"] >= 0
    assert t["proxies"]["generalist"]["selected"] == "generalist"
    assert t["proxies"]["knn"]["num_scored"] == len(experts) and t["proxies"]["knn"]["input_seconds"] > 0
    assert t["proxies"]["random"]["input_seconds"] == 0
  assert results["summary"]["oracle"]["mean_regret"] == 0.0
  assert results["summary"]["oracle"]["oracle_hits"] == len(results["tasks"])
  table = open(os.path.join(workdir, "proxy_evaluation.md")).read()
  assert "| proxy | mean regret |" in table and "| oracle | 0.0 | 0.0 |" in table
  for label in results["proxies"]:
    assert os.path.getsize(os.path.join(workdir, f"proxy_scores_{label}.png")) > 1000
  assert os.path.getsize(os.path.join(workdir, "proxy_regret.png")) > 1000


@pytest.mark.slow
def test_evaluate_proxies_end_to_end_and_resumes(export_dir, tmp_path, smoke_cfg, caplog):
  cfg = configs.replace(smoke_cfg, **{"finetune.steps": 3, "finetune.batch_size": 16})
  experts = _experts(export_dir)
  workdir = str(tmp_path / "eval")
  results = pe.evaluate_proxies([_task()], experts, cfg, workdir, 32, [export_dir], proxies=PROXIES)
  names = {os.path.basename(os.path.dirname(p)) for p in experts}
  _check_results(results, names, workdir)
  task = results["tasks"][0]
  assert task["finetune_source"] == "finetuned" and task["finetune_total_seconds"] > 0
  cached = os.listdir(os.path.join(pipeline.task_dir(workdir, "small"), "finetune"))
  task_seeds = pipeline.finetune_seeds(cfg, "small")  # one result per (model, seed)
  assert sorted(cached) == sorted(f"{naming.folder_name(n)}.seed{s}.json" for n in names | {"generalist"}
                                  for s in task_seeds)
  # A re-run reuses the proxy scores and every fine-tune.
  caplog.set_level("INFO", logger="expert_hub")
  caplog.clear()
  again = pe.evaluate_proxies([_task()], experts, cfg, workdir, 32, [export_dir], proxies=PROXIES)
  assert again["tasks"] == results["tasks"]
  assert "proxy scores already computed" in caplog.text
  assert caplog.text.count("already fine-tuned") == len(cached)  # every (model, seed) reused
  assert "[finetune small]" not in caplog.text  # nothing was fine-tuned again (Finetuner.run logs this)
  # Bad input is named, before any work.
  with pytest.raises(ValueError, match="No tasks"):
    pe.evaluate_proxies([], experts, cfg, workdir, 32, [export_dir])
  _fake_pipeline_run(tmp_path / "tiny_run", "small", sorted(names), "tiny")
  with pytest.raises(ValueError, match="was run with config 'tiny', not 'smoke'; pass --config=tiny"):
    pe.evaluate_proxies([_task()], experts, cfg, workdir, 32, [export_dir],
                        pipeline_workdir=str(tmp_path / "tiny_run"))
  with pytest.raises(FileNotFoundError, match="has no tasks/ folder"):
    pe.evaluate_proxies([_task()], experts, cfg, workdir, 32, [export_dir], pipeline_workdir=str(tmp_path))
  with pytest.raises(ValueError, match="Unknown proxy 'knnn'"):
    pe.evaluate_proxies([_task()], experts, cfg, str(tmp_path / "bad"), 32, [export_dir], proxies="knnn")


def _kind_task(name, domain, seed_accuracy, knn_scores):
  """An evaluate_task record with models `<node>` (full) and `<node>_adapter` and the generalist."""
  kinds = {n: "generalist" if n == "generalist" else "adapter" if n.endswith("_adapter") else "full"
           for n in seed_accuracy}
  return {"task": name, "domain": domain, "seed_accuracy": seed_accuracy,
          "finetune_accuracy": {n: float(np.mean(a)) for n, a in seed_accuracy.items()}, "kinds": kinds,
          "nodes": {n: None if n == "generalist" else n.replace("_adapter", "") for n in seed_accuracy},
          "proxies": {"knn": {"scores": knn_scores}}}


def test_compare_kinds_hand_computed():
  tasks = [
      _kind_task("world/a", "a", {"generalist": [0.50, 0.60], "a": [0.70, 0.80], "b": [0.75, 0.85],
                                  "a_adapter": [0.55, 0.65], "b_adapter": [0.52, 0.58]},
                 {"a": 2.0, "b": 1.0, "a_adapter": 0.5, "b_adapter": 0.9}),
      _kind_task("world/b", "b", {"generalist": [0.40, 0.40], "a": [0.45, 0.45], "b": [0.50, 0.60],
                                  "a_adapter": [0.42, 0.42], "b_adapter": [0.48, 0.48]},
                 {"a": 1.0, "b": 2.0, "a_adapter": 0.3, "b_adapter": 0.1}),
      _kind_task("world/count", None, {"generalist": [0.3, 0.3], "a": [0.9, 0.9], "a_adapter": [0.9, 0.9]}, {}),
      # a domain with no adapter expert of its own: not comparable, left out
      _kind_task("world/c", "c", {"generalist": [0.3, 0.3], "c": [0.9, 0.9], "a_adapter": [0.9, 0.9]}, {}),
  ]
  kinds = pe.compare_kinds(tasks)
  assert kinds["rules"] == ["domain", "best", "knn"] and [t["task"] for t in kinds["tasks"]] == ["world/a", "world/b"]
  picks = {t["task"]: {k: {r: (p["expert"], p["gain"]["mean"]) for r, p in v.items()} for k, v in t["picks"].items()}
           for t in kinds["tasks"]}
  approx = lambda expected: pytest.approx(expected, abs=1e-4)
  assert picks["world/a"] == {"full": {"domain": ("a", approx(0.2)), "best": ("b", approx(0.25)),
                                       "knn": ("a", approx(0.2))},
                              "adapter": {"domain": ("a_adapter", approx(0.05)), "best": ("a_adapter", approx(0.05)),
                                          "knn": ("b_adapter", approx(0.0))}}
  assert picks["world/b"]["adapter"] == {"domain": ("b_adapter", approx(0.08)), "best": ("b_adapter", approx(0.08)),
                                         "knn": ("a_adapter", approx(0.02))}
  # per task over 2 seeds: t_{0.975, 1} = 12.706 times the standard error of the paired differences
  assert kinds["tasks"][1]["picks"]["full"]["domain"]["gain"]["ci95"] == approx(12.7062 * 0.05)
  summary = kinds["summary"]
  assert summary["full"]["domain"] == {"mean": approx(0.175), "ci95": approx(12.7062 * 0.025), "tasks": 2}
  assert summary["adapter"]["domain"] == {"mean": approx(0.065), "ci95": approx(12.7062 * 0.015), "tasks": 2}
  assert summary["adapter_minus_full"]["domain"] == {"mean": approx(-0.11), "ci95": approx(12.7062 * 0.04),
                                                     "tasks": 2}
  assert summary["full"]["best"]["mean"] == approx(0.2) and summary["adapter"]["knn"]["mean"] == approx(0.01)
  # a proxy that was not evaluated drops its rule; no comparable task leaves nothing to summarise
  assert pe.compare_kinds(tasks, proxy="logme")["rules"] == ["domain", "best"]
  assert pe.compare_kinds(tasks[2:]) == {"proxy": "knn", "baseline": "generalist", "rules": ["domain", "best", "knn"],
                                         "tasks": [], "summary": {}}


def _fake_pipeline_run(root, task_name, names, config):
  """A pipeline workdir holding one task's fine-tuned accuracies on the config's seeds (made up: `names` in
  order, best last; two seeds around each mean)."""
  accuracy = {n: round(0.5 + 0.05 * i, 4) for i, n in enumerate(names)}
  task_seeds = pipeline.finetune_seeds(configs.get_config(config), task_name)
  spread = np.linspace(-0.01, 0.01, len(task_seeds))
  out = pipeline.task_dir(str(root), task_name)
  os.makedirs(out)
  json.dump({"task": task_name, "seeds": task_seeds, "finetune_accuracy": accuracy,
             "seed_accuracy": {n: [a + d for d in spread] for n, a in accuracy.items()},
             "seconds": {"finetune": {n: 2.0 for n in names}}}, open(os.path.join(out, "task_result.json"), "w"))
  json.dump({"config": config, "tasks": []}, open(os.path.join(str(root), pipeline.RESULTS_FILE), "w"))
  return accuracy


@pytest.mark.slow
def test_binary_reads_a_pipeline_run_without_finetuning(export_dir, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, labels = _task(n=12).arrays("train800val200")
  for i, (image, label) in enumerate(zip(images, labels)):
    os.makedirs(tmp_path / "task" / "train" / str(label), exist_ok=True)
    Image.fromarray(image).save(tmp_path / "task" / "train" / str(label) / f"{i}.png")
  spec = f"folder:{tmp_path / 'task'}"
  names = sorted(os.path.basename(os.path.dirname(p)) for p in _experts(export_dir)) + ["generalist"]
  accuracy = _fake_pipeline_run(tmp_path / "pipeline", spec, names, "smoke")
  out = tmp_path / "eval"
  proxies = "knn,leep,generalist,random"  # not logme: on 12 images it can give nan (proxies.py), failing the run
  args = ["binaries/evaluate_proxies.py", "--config=smoke", f"--export_dir={export_dir}", f"--workdir={out}",
          f"--pipeline_workdir={tmp_path / 'pipeline'}", f"--tasks={spec}", f"--proxy={proxies}"]
  proc = run_python(args)
  results = json.load(open(out / pe.RESULTS_FILE))
  _check_results(results, set(names) - {"generalist"}, str(out), proxies)
  task = results["tasks"][0]
  assert task["finetune_source"] == "pipeline" and task["finetune_accuracy"] == accuracy
  assert task["finetune_total_seconds"] == 2.0 * len(names)
  assert task["oracle"]["selected"] == "generalist"  # the best made-up accuracy
  assert task["proxies"]["generalist"]["regret"] == 0.0
  assert not os.path.exists(os.path.join(pipeline.task_dir(str(out), spec), "finetune"))
  assert "| proxy | mean regret |" in proc.stdout and "proxy_evaluation.json" in proc.stdout


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
