"""Selection on Apache Beam (DirectRunner, 2 worker processes): the in-process ranking, failures named."""

import json
import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest

from conftest import run_python
from expert_hub import configs
from expert_hub.hub import export_trained, registry, session as session_lib
from expert_hub.selection import beam_selection, select
from expert_hub.tasks import ArrayTask

DIRECT = ["--runner=DirectRunner"]  # beam_selection adds 2 worker processes (multi_processing)


def _tasks():
  out = []
  for i, classes in enumerate((2, 3)):
    rng = np.random.default_rng(i)
    images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    out.append(ArrayTask({"train800val200": (images, np.arange(30) % classes)}, name=f"beam{i}"))
  return out


def _experts(export_dir):
  return [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] not in registry.BASELINE_KINDS]


def test_beam_selection_equals_the_in_process_ranking(trained_workdir, export_dir, tmp_path, smoke_cfg):
  pack = export_trained.export_pack(trained_workdir, str(tmp_path / "packs"), version=1)
  names = sorted(json.load(open(os.path.join(pack, "expert.json")))["experts"])
  experts = _experts(export_dir) + [f"{pack}#{n}" for n in names]  # single modules and one pack
  tasks = _tasks()
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  cfg = configs.replace(smoke_cfg.selection, proxy="knn,logme")
  local = select.select_experts(tasks, experts, cfg, [str(tmp_path / "l0"), str(tmp_path / "l1")], 32, session,
                                use_cache=False)
  options = beam_selection.pipeline_options(DIRECT)
  assert options.get_all_options()["direct_num_workers"] == 2
  folders = [str(tmp_path / "b0"), str(tmp_path / "b1")]
  beam = select.select_experts(tasks, experts, cfg, folders, 32, session, use_cache=False, beam_options=options)
  assert [json.load(open(os.path.join(f, "selection.json"))) for f in folders] == beam
  for one, other in zip(local, beam):
    assert other["selected"] == one["selected"] and other["num_examples"] == one["num_examples"]
    for label in ("knn", "logme"):
      got = [(r["expert"], r["score"]) for r in other["proxies"][label]["ranking"]]
      want = [(r["expert"], r["score"]) for r in one["proxies"][label]["ranking"]]
      assert [e for e, _ in got] == [e for e, _ in want], label
      np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
      assert len(got) == len(experts)  # every expert once
  assert not [f for f in os.listdir(tmp_path / "b0") if f.startswith(".beam_staging")]  # staging removed


def test_an_expert_that_fails_on_beam_is_named_and_nothing_is_selected(export_dir, tmp_path, smoke_cfg):
  exports = str(tmp_path / "export")
  shutil.copytree(export_dir, exports)
  experts = _experts(exports)
  bad = experts[-1]
  with open(os.path.join(bad, "saved_model.pb"), "ab") as f:
    f.write(b"tampered")
  session = session_lib.ModuleSession(registry.Registry([exports]))
  folder = tmp_path / "sel"
  folder.mkdir()
  with pytest.raises(RuntimeError, match=rf"1 of {len(experts)} experts could not be scored") as raised:
    select.select_experts(_tasks()[:1], experts, smoke_cfg.selection, [str(folder)], 32, session,
                          beam_options=beam_selection.pipeline_options(DIRECT))
  message = str(raised.value)
  assert re.search(rf"- {re.escape(bad)}: ValueError: .*saved_model.pb.*does not match", message)
  assert all(e not in message for e in experts[:-1])
  assert not (folder / select.SELECTION_FILE).exists()


def test_select_expert_binary_on_the_direct_runner_and_bad_flags(export_dir, tmp_path):
  for c in ("dark", "light"):
    os.makedirs(tmp_path / "task" / "train" / c)
    for i in range(6):
      Image.fromarray(np.full((32, 32, 3), 10 * i + (150 if c == "light" else 0), np.uint8)).save(
          tmp_path / "task" / "train" / c / f"{i}.png")
  common = ["binaries/select_expert.py", "--config=smoke", f"--export_dir={export_dir}",
            f"--task=folder:{tmp_path / 'task'}", "--split=train"]
  proc = run_python([*common, f"--workdir={tmp_path / 'sel'}", "--runner=DirectRunner", "--direct_num_workers=2"])
  assert "selected (knn):" in proc.stdout
  assert json.load(open(tmp_path / "sel" / "selection.json"))["num_examples"] == 12
  bad = run_python([*common, f"--workdir={tmp_path / 'bad'}", "--direct_num_workers=2"], check=False)
  assert bad.returncode != 0 and "Unknown flags or arguments ['--direct_num_workers=2']" in bad.stderr
  assert not (tmp_path / "bad").exists()


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
