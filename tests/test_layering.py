"""The library's layers never import the experiments: `expert_hub/experiments/` sits on top of them.

The experiments (pipeline, proxy evaluation, transfer cost, VTAB, their statistics and report) combine the layers
below (data, models, train, hub, selection, transfer, tasks and the top-level helpers); an import the other way
would make a layer depend on a run of the whole method. Reads the sources with `ast`, imports nothing.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PACKAGE = os.path.join(ROOT, "expert_hub")
EXPERIMENTS = "experiments"


def experiment_modules():
  """The module names of expert_hub/experiments/ (pipeline, report, ...), without the package's own."""
  return sorted(f[:-len(".py")] for f in os.listdir(os.path.join(PACKAGE, EXPERIMENTS))
                if f.endswith(".py") and f != "__init__.py")


def experiments_imports(source, module_path, modules):
  """(line, text) of every import in `source` that reaches expert_hub.experiments.

  Counts `import expert_hub.experiments[.x]`, `from expert_hub.experiments[.x] import y`, `from expert_hub import
  experiments`, `from expert_hub import <an experiment module>` (its old home, e.g. `from expert_hub import
  pipeline`), relative imports that resolve there, and importlib.import_module / __import__ of such a name.

  Args:
    source: Python source text.
    module_path: the file's package path as a list, e.g. ["expert_hub", "selection"] (resolves relative imports).
    modules: experiment module names (experiment_modules()).
  """
  target = "expert_hub." + EXPERIMENTS
  reaches = lambda name: name == target or name.startswith(target + ".")
  found = []
  for node in ast.walk(ast.parse(source)):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = module_path[:len(module_path) - node.level + 1]
        base = ".".join(parent + ([base] if base else []))
      names = [base] + [f"{base}.{a.name}" for a in node.names]
      if base == "expert_hub" and any(a.name in modules for a in node.names):
        names.append(target)
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)
          and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
      names = [node.args[0].value]
    if any(reaches(n) for n in names):
      found.append((node.lineno, ast.get_source_segment(source, node)))
  return sorted(found)


def library_sources():
  """{path from the repository root: package path} of every .py file of expert_hub outside experiments/."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(PACKAGE):
    rel = os.path.relpath(dirpath, ROOT)
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__"
                         and os.path.join(rel, d) != os.path.join("expert_hub", EXPERIMENTS))
    for f in sorted(filenames):
      if f.endswith(".py"):
        out[os.path.join(rel, f)] = rel.split(os.sep)
  return out


def test_the_check_finds_every_way_to_import_an_experiment():
  modules = ["pipeline", "report"]
  bad = """
import expert_hub.experiments.pipeline
from expert_hub.experiments import report
from expert_hub import experiments
from expert_hub import pipeline
from .. import experiments as e
from ..experiments.report import percent
importlib.import_module("expert_hub.experiments.vtab_runner")
def later():
  from expert_hub.experiments import stats
"""
  found = experiments_imports(bad, ["expert_hub", "selection"], modules)
  assert [line for line, _ in found] == [2, 3, 4, 5, 6, 7, 8, 10]
  fine = """
import expert_hub.selection.select
from expert_hub import naming, io_utils
from expert_hub.transfer import finetune
from . import experiments_helpers
from .experiments import x  # expert_hub.selection.experiments: not the experiments package
importlib.import_module("expert_hub.selection.pipeline_options")
"""
  assert experiments_imports(fine, ["expert_hub", "selection"], modules) == []


def test_no_library_layer_imports_the_experiments():
  modules = experiment_modules()
  assert {"pipeline", "proxy_evaluation", "report", "stats", "transfer_cost", "vtab_runner"} <= set(modules)
  sources = library_sources()
  assert {os.path.join("expert_hub", "selection", "select.py"), os.path.join("expert_hub", "naming.py")} <= set(
      sources) and not any(os.sep + EXPERIMENTS + os.sep in p for p in sources)
  offending = []
  for path, package in sources.items():
    with open(os.path.join(ROOT, path)) as f:
      offending += [f"  {path}:{line}: {text}" for line, text in experiments_imports(f.read(), package, modules)]
  if offending:
    pytest.fail("Library modules import expert_hub.experiments, which sits on top of them; move the shared code "
                "down into the library (or the caller up into experiments/):\n" + "\n".join(offending))


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
