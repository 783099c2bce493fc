"""Shared fixtures: a small rendered world and a tiny trained generalist + experts, built once per session."""

import logging
import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
logging.getLogger("absl").setLevel(logging.WARNING)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code_or_args, env=None, timeout=600, check=True):
  """Runs the venv's python in a subprocess from the repo root; returns CompletedProcess."""
  args = [sys.executable] + (["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args))
  full_env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  proc = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
  return proc


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def smoke_cfg():
  from expert_hub import configs
  return configs.get_config("smoke")


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, smoke_cfg, data_dir):
  """A workdir with a generalist and 2 full + 2 adapter experts trained for a few steps on the mini world."""
  from expert_hub.train import experts, upstream
  workdir = str(tmp_path_factory.mktemp("workdir"))
  upstream.train_generalist(smoke_cfg, data_dir, workdir)
  experts.train_experts(smoke_cfg, data_dir, workdir)
  return workdir


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, trained_workdir):
  from expert_hub.hub import export_trained
  out = str(tmp_path_factory.mktemp("export"))
  export_trained.export_trained(trained_workdir, out, version=1)
  return out
