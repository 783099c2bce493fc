"""select_expert killed with SIGKILL at several points and re-run gives the ranking of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from expert_hub import configs
from expert_hub.hub import registry
from expert_hub.selection import select
from expert_hub.tasks import get_task

pytestmark = pytest.mark.slow  # three runs of the binary: about a minute

POLL_SECONDS = 0.01
TIMEOUT = 300


def _folder_task(root, per_class=60):
  rng = np.random.default_rng(0)
  for c in ("a", "b", "c"):
    os.makedirs(root / "train" / c)
    for j in range(per_class):
      Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / "train" / c / f"{j}.png")
  return f"folder:{root}"


def _start(task, export_dir, workdir):
  """select_expert in a subprocess, its output in a file beside the workdir (a pipe could fill and stall it)."""
  args = [sys.executable, "binaries/select_expert.py", f"--task={task}", f"--export_dir={export_dir}",
          f"--workdir={workdir}", "--config=smoke", "--image_size=32"]
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  log = open(f"{workdir}.{time.time_ns()}.log", "w+")
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
  proc.log = log
  return proc


def _output(proc):
  proc.log.seek(0)
  text = proc.log.read()
  proc.log.close()
  return text[-5000:]


def _entries(workdir):
  folder = os.path.join(workdir, select.EMBEDDINGS_DIR)
  if not os.path.isdir(folder):
    return set()
  return {f for f in os.listdir(folder) if f.endswith(".npz") and not f.startswith(".")}


def _kill_when(proc, ready):
  """SIGKILLs `proc` as soon as ready() holds (polled); fails if it exits on its own first."""
  deadline = time.time() + TIMEOUT
  while not ready():
    if proc.poll() is not None:
      raise AssertionError(f"select_expert finished (rc {proc.returncode}) before the kill point:\n"
                           f"{_output(proc)}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError(f"select_expert did not reach the kill point in time:\n{_output(proc)}")
    time.sleep(POLL_SECONDS)
  os.kill(proc.pid, signal.SIGKILL)
  assert proc.wait(TIMEOUT) == -signal.SIGKILL
  _output(proc)


def _finish(proc):
  proc.wait(TIMEOUT)
  out = _output(proc)
  assert proc.returncode == 0, out


def _ranking(workdir):
  selection = json.load(open(os.path.join(workdir, select.SELECTION_FILE)))
  return selection, [(r["expert"], r["score"]) for r in selection["ranking"]]


def test_killed_selection_resumes_to_the_uninterrupted_ranking(export_dir, tmp_path):
  experts = registry.Registry([export_dir]).expert_handles()
  assert len(experts) >= 4  # the kill points below need experts left to embed after each
  task = _folder_task(tmp_path / "task")
  whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
  # The uninterrupted run, in this process (what select_expert runs, with its --config=smoke defaults).
  select.select_expert(get_task(task), experts, configs.get_config("smoke").selection, whole, 32, [export_dir])
  _, expected = _ranking(whole)
  assert sorted(e for e, _ in expected) == sorted(experts)

  # Kill 1: as soon as the first cache entry is published. Every published entry is whole (atomic writes).
  _kill_when(_start(task, export_dir, killed), lambda: _entries(killed))
  assert not os.path.exists(os.path.join(killed, select.SELECTION_FILE))
  for entry in _entries(killed):
    with np.load(os.path.join(killed, select.EMBEDDINGS_DIR, entry)) as z:
      assert len(z["array"]) == 180
  # Kill 2: mid-way, once the re-run has added an entry of its own.
  after_first = _entries(killed)
  assert len(after_first) < len(experts)
  _kill_when(_start(task, export_dir, killed), lambda: len(_entries(killed)) > len(after_first))
  after_second = _entries(killed)
  assert len(after_second) < len(experts) and not os.path.exists(os.path.join(killed, select.SELECTION_FILE))

  _finish(_start(task, export_dir, killed))
  selection, resumed = _ranking(killed)
  assert resumed == expected
  from_cache = [e for e, t in selection["input_seconds"].items() if t["cached"] == ["features"]]
  assert len(from_cache) == len(after_second)  # what the killed runs embedded was reused, not redone
  assert _entries(killed) == _entries(whole)
