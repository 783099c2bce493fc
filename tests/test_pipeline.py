"""End to end: the binaries and the pipeline on the `smoke` config (slow: CI runs it once)."""

import glob
import json
import os

import pytest

from conftest import run_python
from expert_hub.experiments import pipeline


@pytest.mark.slow
def test_run_pipeline_binary_writes_results(tmp_path):
  workdir = str(tmp_path / "wd")
  proc = run_python(["binaries/run_pipeline.py", "--config=smoke", f"--workdir={workdir}"], timeout=1200)
  assert "| task |" in proc.stdout and "kNN-selected expert" in proc.stdout
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert len(results["tasks"]) == 2
  for t in results["tasks"]:
    assert set(t) >= {"task", "selected", "selected_accuracy", "generalist_accuracy", "control_accuracy",
                      "knn_scores", "finetune_accuracy", "seed_accuracy", "accuracy", "gain"}
    assert t["selected"] in t["knn_scores"] and "control" not in t["knn_scores"]  # a baseline, not a candidate
    # the pick, the best-ranked full and adapter experts, the generalist and the control, on the same 2 seeds
    assert {t["selected"], t["best_full"], t["best_adapter"], "generalist", "control"} == set(t["seed_accuracy"])
    assert all(len(a) == 2 for a in t["seed_accuracy"].values()) and len(set(t["seeds"])) == 2
    assert set(t["gain"]) == {"generalist", "control"} and t["gain"]["generalist"]["ci95"] is not None
    # the selected expert's frozen features, on the selection split and on the test split fine-tuning is scored on
    frozen = dict(t["frozen"])
    probe_l2 = frozen.pop("probe_l2")  # the l2 of the probe the selected expert's fine-tune started from
    assert set(frozen) == {"knn_loo", "linear_probe", "knn_test", "linear_probe_test"}
    assert all(0 <= a <= 1 for a in frozen.values())
    started = json.load(open(os.path.join(pipeline.task_dir(workdir, t["task"]), "finetune.json")))
    assert started["expert"].split("/")[1] == t["selected"] and started["head_l2"] == probe_l2 == 0.01
  assert results["summary"]["gain_vs_generalist_all"]["tasks"] == 2
  assert {"data", "generalist", "experts", "export", "total"} <= set(results["timings"])
  assert os.path.getsize(os.path.join(workdir, "results.png")) > 1000
  # Re-running reuses every stage's output.
  again = run_python(["binaries/run_pipeline.py", "--config=smoke", f"--workdir={workdir}"], timeout=600)
  assert "already trained; skipping" in again.stderr and "selection already done" in again.stderr
  assert json.load(open(os.path.join(workdir, "results.json")))["tasks"] == results["tasks"]  # reused, not redone


@pytest.mark.slow
def test_stage_binaries(tmp_path, data_dir):
  wd, ex = str(tmp_path / "wd"), str(tmp_path / "export")
  common = ["--config=smoke", f"--workdir={wd}", f"--data_dir={data_dir}"]
  run_python(["binaries/train_upstream.py", *common, "--steps=10"])
  # Adapters from stage 3 only: the rest of the chain (export, selection, fine-tuning) must follow the config.
  trained = run_python(["binaries/train_experts.py", *common, "--kinds=adapter", "--steps=4",
                        "--adapter_first_stage=3"])
  assert "(generalist 0." in trained.stdout or "(generalist 1." in trained.stdout
  infos = glob.glob(os.path.join(wd, "experts", "adapter", "*", "model.json"))
  assert infos and all(json.load(open(p))["adapter"]["first_stage"] == 3 for p in infos)
  run_python(["export/export_experts.py", f"--workdir={wd}", f"--export_dir={ex}"])
  again = run_python(["export/export_experts.py", f"--workdir={wd}", f"--export_dir={ex}"], check=False)
  assert again.returncode != 0 and "already holds" in again.stderr
  sel = run_python(["binaries/select_expert.py", *common, f"--export_dir={ex}", "--task=world/count",
                    "--split=val200"])
  assert "selected (knn):" in sel.stdout
  ft = run_python(["binaries/finetune.py", *common, f"--export_dir={ex}", "--task=world/count", "--expert=auto",
                   "--steps=5"])
  assert "test accuracy" in ft.stdout
  assert json.load(open(os.path.join(wd, "finetune.json")))["steps"] == 5


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
