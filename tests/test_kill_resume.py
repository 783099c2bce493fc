"""kill -9 at several points of a fine-tune and of an export, re-run: the result equals an uninterrupted run's."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

FINETUNE_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
from expert_hub import configs
from expert_hub.tasks import synthetic
from expert_hub.transfer import finetune
export_dir, workdir = sys.argv[1:3]
task = synthetic.colour_tasks(1, num_examples=200, num_classes=4)[0]
cfg = configs.FinetuneConfig(batch_size=16, steps=400, base_lr=0.3, resize=36, crop=32)
print("RESULT " + json.dumps(finetune.finetune("generalist", task, cfg, workdir, export_dirs=[export_dir])))
"""

EXPORT_SCRIPT = """
import sys
from expert_hub.hub import export_trained
export_trained.export_trained(sys.argv[1], sys.argv[2], version=1)
"""


def _env():
  return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")


def _run(script, *args):
  proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def _kill_when(script, args, ready, timeout=300):
  """Starts the script, SIGKILLs it as soon as `ready()` is true; fails if it finished first."""
  proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not ready():
    time.sleep(0.05)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _result(proc):
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_finetune_killed_twice_resumes_to_the_uninterrupted_result(export_dir, tmp_path):
  reference = _result(_run(FINETUNE_SCRIPT, export_dir, str(tmp_path / "reference")))
  workdir = str(tmp_path / "killed")
  ckpts = os.path.join(workdir, "finetune_runs", "generalist", "checkpoints")
  for step in (100, 200):  # the checkpoint after which each run is killed (every quarter of 400 steps)
    _kill_when(FINETUNE_SCRIPT, [export_dir, workdir],
               lambda: os.path.exists(os.path.join(ckpts, f"ckpt-{step}.index")))
    assert not os.path.exists(os.path.join(workdir, "finetune.json"))
  done = _run(FINETUNE_SCRIPT, export_dir, workdir)
  assert "resumed from" in done.stderr and "at step 200/400" in done.stderr
  result = _result(done)
  assert result["steps"] == reference["steps"] == 400
  assert (result["test_accuracy"], result["test_loss"]) == (reference["test_accuracy"], reference["test_loss"])
  assert result["made_from"] == reference["made_from"]


def test_export_killed_midway_reruns_to_the_same_modules(trained_workdir, export_dir, tmp_path):
  """export_dir (the fixture) is the uninterrupted export of the same trained models."""
  from expert_hub.hub import loading
  from expert_hub.hub import registry as registry_lib
  from expert_hub.hub import session as session_lib
  out = str(tmp_path / "export")
  pattern = os.path.join(out, "*", "*", ".*.tmp-*")
  for _ in range(2):  # killed while writing a module, twice (the second run first cleans up the first's)
    stale = set(glob.glob(pattern))
    _kill_when(EXPORT_SCRIPT, [trained_workdir, out], lambda: set(glob.glob(pattern)) - stale)
  _run(EXPORT_SCRIPT, trained_workdir, out)
  assert not glob.glob(pattern), "half-written exports were left behind"
  mine, theirs = registry_lib.Registry([out]), registry_lib.Registry([export_dir])
  assert sorted(e.qualified_name for e in mine.entries()) == sorted(e.qualified_name for e in theirs.entries())
  images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
  a, b = session_lib.ModuleSession(mine), session_lib.ModuleSession(theirs)
  for entry in mine.entries():
    loading.verify_manifest(entry.path)
    name = entry.qualified_name
    np.testing.assert_array_equal(np.asarray(a.embedder(name)(images)), np.asarray(b.embedder(name)(images)))
