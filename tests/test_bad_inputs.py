"""Every program refuses bad input early: non-zero exit, a message naming the bad value, no traceback, nothing written.

Each row of CASES runs `python <program> <args>` in a subprocess, with `{tmp}` a fresh folder that holds the
fixtures below and EXPERT_HUB_DATA_DIR pointed inside it, then checks:
  - the exit status is 1 (absl: a flag that fails to parse, app.UsageError) or 2 (flags_common.run: a ValueError,
    KeyError or missing/misplaced path raised by the library for bad input);
  - every string of the row's `expect` appears in the output (the bad value, named);
  - "Traceback" does not;
  - no file or folder appeared under `{tmp}` (the snapshot before equals the snapshot after), so validation comes
    before any rendering, training, workdir or export;
  - it took under TIMEOUT_S seconds (nothing ran that a bad flag should have stopped).

Fixtures under {tmp}: `afile` (a regular file), `empty/` (an empty folder), `trained/generalist/` (a workdir whose
generalist looks trained: model.json and weights.npz present), `not.npz` (text), `h_<name>.json` (HIERARCHIES) and
`h_invalid.json` (cut-off JSON). Paths named `missing*` or `wd` do not exist (and must still not exist afterwards).
CASES is the table; `python tests/test_bad_inputs.py --table` prints it as Markdown.
"""

import concurrent.futures
import json
import os

import pytest

from conftest import run_python

TIMEOUT_S = 90  # a bad-input case fails in seconds (most of it importing TensorFlow); training would take minutes

# Hierarchy files with one defect each (the world's label ids are 0..N-1; see data/hierarchy.py).
_ROOT = {"name": "root", "parents": []}
HIERARCHIES = {
    "gaps": [_ROOT, {"name": "cat", "parents": ["root"], "label": 0}, {"name": "dog", "parents": ["root"], "label": 1},
             {"name": "zebra", "parents": ["root"], "label": 7}],
    "space": [_ROOT, {"name": "golden retriever", "parents": ["root"], "label": 0},
              {"name": "cat", "parents": ["root"], "label": 1}],
    "dotdot": [_ROOT, {"name": "..", "parents": ["root"], "label": 0}, {"name": "cat", "parents": ["root"], "label": 1}],
    "dot": [_ROOT, {"name": ".", "parents": ["root"], "label": 0}, {"name": "cat", "parents": ["root"], "label": 1}],
    "lead_slash": [_ROOT, {"name": "/etc", "parents": ["root"], "label": 0},
                   {"name": "cat", "parents": ["root"], "label": 1}],
    "collide": [_ROOT, {"name": "a/b", "parents": ["root"], "label": 0}, {"name": "a_b", "parents": ["root"], "label": 1}],
    "nonstring": [_ROOT, {"name": 4242, "parents": ["root"], "label": 0}, {"name": "cat", "parents": ["root"], "label": 1}],
    "duplicate": [_ROOT, {"name": "bird", "parents": ["root"], "label": 0}, {"name": "bird", "parents": ["root"]},
                  {"name": "cat", "parents": ["root"], "label": 1}],
    "cycle": [_ROOT, {"name": "ping", "parents": ["pong"], "label": 0}, {"name": "pong", "parents": ["ping"], "label": 1}],
    "ghost_parent": [_ROOT, {"name": "cat", "parents": ["ghost"], "label": 0},
                     {"name": "dog", "parents": ["root"], "label": 1}],
    "int_parents": [_ROOT, {"name": "cat", "parents": 17, "label": 0}, {"name": "dog", "parents": ["root"], "label": 1}],
    "bool_label": [_ROOT, {"name": "cat", "parents": ["root"], "label": True},
                   {"name": "dog", "parents": ["root"], "label": 0}],
    "no_labels": [_ROOT, {"name": "cat", "parents": ["root"]}],
}

_WD = "--workdir={tmp}/wd"
_EMPTY = "--export_dir={tmp}/empty"
_H = "--hierarchy_file={tmp}/h_"

# (id, program, args, strings the output must contain). Keep each row one bad input among otherwise good flags.
CASES = [
    # --- train_upstream: config, workdir, numbers, hierarchy files (checked before the world is rendered)
    ("upstream-config", "binaries/train_upstream.py", ["--config=nope", _WD], ["nope"]),
    ("upstream-workdir-file", "binaries/train_upstream.py", ["--workdir={tmp}/afile"], ["{tmp}/afile"]),
    ("upstream-steps-0", "binaries/train_upstream.py", ["--steps=0", _WD], ["steps=0"]),
    ("upstream-steps-neg", "binaries/train_upstream.py", ["--steps=-5", _WD], ["steps=-5"]),
    ("upstream-h-missing", "binaries/train_upstream.py", [_WD, _H + "missing.json"], ["h_missing.json"]),
    ("upstream-h-invalid-json", "binaries/train_upstream.py", [_WD, _H + "invalid.json"], ["h_invalid.json", "JSON"]),
    ("upstream-h-gaps", "binaries/train_upstream.py", [_WD, _H + "gaps.json"], ["h_gaps.json", "2, 3, 4, 5, 6"]),
    ("upstream-h-space", "binaries/train_upstream.py", [_WD, _H + "space.json"], ["'golden retriever'"]),
    ("upstream-h-dotdot", "binaries/train_upstream.py", [_WD, _H + "dotdot.json"], ["'..'"]),
    ("upstream-h-dot", "binaries/train_upstream.py", [_WD, _H + "dot.json"], ["'.'"]),
    ("upstream-h-lead-slash", "binaries/train_upstream.py", [_WD, _H + "lead_slash.json"], ["'/etc'"]),
    ("upstream-h-collide", "binaries/train_upstream.py", [_WD, _H + "collide.json"], ["'a/b'", "'a_b'"]),
    ("upstream-h-nonstring", "binaries/train_upstream.py", [_WD, _H + "nonstring.json"], ["4242"]),
    ("upstream-h-duplicate", "binaries/train_upstream.py", [_WD, _H + "duplicate.json"], ["'bird'"]),
    ("upstream-h-cycle", "binaries/train_upstream.py", [_WD, _H + "cycle.json"], ["cycle", "ping", "pong"]),
    ("upstream-h-ghost-parent", "binaries/train_upstream.py", [_WD, _H + "ghost_parent.json"], ["'ghost'"]),
    ("upstream-h-int-parents", "binaries/train_upstream.py", [_WD, _H + "int_parents.json"], ["'cat'", "17"]),
    ("upstream-h-bool-label", "binaries/train_upstream.py", [_WD, _H + "bool_label.json"], ["'cat'", "True"]),
    ("upstream-h-no-labels", "binaries/train_upstream.py", [_WD, _H + "no_labels.json"], ["h_no_labels.json", "label"]),
    # --- train_experts: the workdir must hold a generalist; numbers and kinds
    ("experts-workdir-missing", "binaries/train_experts.py", [_WD], ["{tmp}/wd"]),
    ("experts-workdir-empty", "binaries/train_experts.py", ["--workdir={tmp}/empty"], ["{tmp}/empty", "generalist"]),
    ("experts-steps-0", "binaries/train_experts.py", ["--workdir={tmp}/trained", "--steps=0"], ["steps=0"]),
    ("experts-first-stage-0", "binaries/train_experts.py", ["--workdir={tmp}/trained", "--adapter_first_stage=0"],
     ["first_stage=0"]),
    ("experts-reduction-0", "binaries/train_experts.py", ["--workdir={tmp}/trained", "--adapter_reduction=0"],
     ["reduction=0"]),
    ("experts-adapter-lr-negative", "binaries/train_experts.py", ["--workdir={tmp}/trained", "--adapter_lr=-0.1"],
     ["base_lr=-0.1"]),
    ("experts-kind", "binaries/train_experts.py", ["--workdir={tmp}/trained", "--kinds=full,nope"], ["'nope'"]),
    ("experts-h-gaps", "binaries/train_experts.py", ["--workdir={tmp}/trained", _H + "gaps.json"], ["2, 3, 4, 5, 6"]),
    # --- run_pipeline: tasks are checked before the first stage trains anything
    ("pipeline-config", "binaries/run_pipeline.py", ["--config=nope", _WD], ["nope"]),
    ("pipeline-workdir-file", "binaries/run_pipeline.py", ["--workdir={tmp}/afile"], ["{tmp}/afile"]),
    ("pipeline-task-world", "binaries/run_pipeline.py", [_WD, "--tasks=world/count,world/nope"], ["'nope'"]),
    ("pipeline-task-folder", "binaries/run_pipeline.py", [_WD, "--tasks=folder:{tmp}/missing_images"],
     ["{tmp}/missing_images"]),
    ("pipeline-task-vtab", "binaries/run_pipeline.py", [_WD, "--tasks=vtab/nope"], ["'nope'"]),
    ("pipeline-task-prefix", "binaries/run_pipeline.py", [_WD, "--tasks=cifar100"], ["'cifar100'"]),
    ("pipeline-h-gaps", "binaries/run_pipeline.py", [_WD, _H + "gaps.json"], ["2, 3, 4, 5, 6"]),
    # --- select_expert: numbers and strings the config takes, tasks, experts, paths
    ("select-k-0", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--k=0"], ["k=0"]),
    ("select-k-neg", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--k=-3"], ["k=-3"]),
    ("select-split-empty", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--split="], ["split=''"]),
    ("select-split-test", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--split=test"],
     ["split='test'"]),
    ("select-proxy-empty", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--proxy="], ["proxy=''"]),
    ("select-proxy-unknown", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--proxy=knn,nope"],
     ["'nope'"]),
    ("select-proxy-malformed", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--proxy=knn(k=3"],
     ["knn(k=3"]),
    ("select-image-size-0", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--image_size=0"],
     ["image_size=0"]),
    ("select-task-world", "binaries/select_expert.py", ["--task=world/nope", _EMPTY, _WD], ["'nope'"]),
    ("select-task-folder", "binaries/select_expert.py", ["--task=folder:/nonexistent/images", _EMPTY, _WD],
     ["/nonexistent/images"]),
    ("select-task-vtab", "binaries/select_expert.py", ["--task=vtab/nope", _EMPTY, _WD], ["'nope'"]),
    ("select-task-tfds-missing-data-dir", "binaries/select_expert.py",
     ["--task=tfds:mnist", "--data_dir={tmp}/missing_tfds", _EMPTY, _WD], ["{tmp}/missing_tfds"]),
    ("select-export-dir-missing", "binaries/select_expert.py", ["--task=world/count", "--export_dir={tmp}/missing", _WD],
     ["{tmp}/missing"]),
    ("select-export-dir-file", "binaries/select_expert.py", ["--task=world/count", "--export_dir={tmp}/afile", _WD],
     ["{tmp}/afile"]),
    ("select-expert-unknown", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD, "--experts=nope"],
     ["'nope'"]),
    ("select-no-experts", "binaries/select_expert.py", ["--task=world/count", _EMPTY, _WD], ["{tmp}/empty"]),
    ("select-workdir-file", "binaries/select_expert.py", ["--task=world/count", _EMPTY, "--workdir={tmp}/afile"],
     ["{tmp}/afile"]),
    # --- finetune
    ("finetune-steps-0", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD, "--steps=0"],
     ["steps=0"]),
    ("finetune-batch-0", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD, "--batch_size=0"],
     ["batch_size=0"]),
    ("finetune-batch-neg", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD,
                                                    "--batch_size=-2"], ["batch_size=-2"]),
    ("finetune-base-lr-0", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD, "--base_lr=0"],
     ["base_lr=0.0"]),
    ("finetune-head-init", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD,
                                                    "--head_init=random"], ["random"]),
    ("finetune-head-l2-text", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD,
                                                       "--head_l2=0.1,abc"], ["--head_l2=0.1,abc"]),
    ("finetune-head-l2-neg", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD,
                                                      "--head_l2=0.1,-1"], ["head_l2=(0.1, -1.0)"]),
    ("finetune-image-size-0", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY, _WD,
                                                       "--image_size=0"], ["image_size=0"]),
    ("finetune-expert-unknown", "binaries/finetune.py", ["--task=world/count", "--expert=nope", _EMPTY, _WD],
     ["'nope'"]),
    ("finetune-expert-auto", "binaries/finetune.py", ["--task=world/count", "--expert=auto", _EMPTY, _WD],
     ["{tmp}/wd/selection.json"]),
    ("finetune-task-vtab", "binaries/finetune.py", ["--task=vtab/nope", "--expert=x", _EMPTY, _WD], ["'nope'"]),
    ("finetune-export-dir-missing", "binaries/finetune.py", ["--task=world/count", "--expert=x",
                                                             "--export_dir={tmp}/missing", _WD], ["{tmp}/missing"]),
    ("finetune-workdir-file", "binaries/finetune.py", ["--task=world/count", "--expert=x", _EMPTY,
                                                       "--workdir={tmp}/afile"], ["{tmp}/afile"]),
    # --- run_vtab: the sweep, numbers, tasks, experts
    ("vtab-lrs-0", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--lrs=0.0"], ["0.0"]),
    ("vtab-lrs-neg", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--lrs=0.01,-0.25"], ["-0.25"]),
    ("vtab-lrs-text", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--lrs=fast"], ["fast"]),
    ("vtab-steps-0", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--steps=100,0"], ["100,0"]),
    ("vtab-batch-0", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--batch_size=0"], ["batch_size=0"]),
    ("vtab-image-size-0", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--image_size=0"], ["image_size=0"]),
    ("vtab-task", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--tasks=nope"], ["'nope'"]),
    ("vtab-world-task", "binaries/run_vtab.py", ["--expert=x", _EMPTY, _WD, "--tasks=dtd,world/cont"],
     ["Unknown world task 'cont'", "'count'"]),
    ("vtab-expert-unknown", "binaries/run_vtab.py", ["--expert=nope", _EMPTY, _WD, "--tasks=dtd"], ["'nope'"]),
    ("vtab-export-dir-missing", "binaries/run_vtab.py", ["--expert=x", "--export_dir={tmp}/missing", _WD],
     ["{tmp}/missing"]),
    # --- evaluate_proxies
    ("proxies-task", "binaries/evaluate_proxies.py", [_EMPTY, _WD, "--tasks=world/nope"], ["'nope'"]),
    ("proxies-proxy", "binaries/evaluate_proxies.py", [_EMPTY, _WD, "--tasks=world/count", "--proxy=nope"],
     ["'nope'"]),
    ("proxies-image-size-0", "binaries/evaluate_proxies.py", [_EMPTY, _WD, "--tasks=world/count", "--image_size=0"],
     ["image_size=0"]),
    ("proxies-export-dir-missing", "binaries/evaluate_proxies.py", ["--export_dir={tmp}/missing", _WD,
                                                                    "--tasks=world/count"], ["{tmp}/missing"]),
    ("proxies-pipeline-workdir-missing", "binaries/evaluate_proxies.py", [_WD, "--pipeline_workdir={tmp}/missing"],
     ["{tmp}/missing"]),
    # --- export_experts: the workdir must hold trained models; names and versions
    ("export-workdir-missing", "export/export_experts.py", [_WD, "--export_dir={tmp}/out"], ["{tmp}/wd"]),
    ("export-workdir-untrained", "export/export_experts.py", ["--workdir={tmp}/empty", "--export_dir={tmp}/out"],
     ["{tmp}/empty"]),
    ("export-version-0", "export/export_experts.py", ["--workdir={tmp}/trained", "--export_dir={tmp}/out",
                                                      "--version=0"], ["version=0"]),
    ("export-expert-unknown", "export/export_experts.py", ["--workdir={tmp}/trained", "--export_dir={tmp}/out",
                                                           "--experts=nope"], ["'nope'"]),
    ("export-export-dir-file", "export/export_experts.py", ["--workdir={tmp}/trained", "--export_dir={tmp}/afile"],
     ["{tmp}/afile"]),
    ("export-pack-name", "export/export_experts.py", ["--workdir={tmp}/trained", "--export_dir={tmp}/out", "--packed",
                                                      "--pack_name=../up"], ["'../up'"]),
    # --- import_bit
    ("import-npz-missing", "binaries/import_bit.py", ["--npz={tmp}/missing.npz", "--export_dir={tmp}/out"],
     ["{tmp}/missing.npz"]),
    ("import-npz-not-npz", "binaries/import_bit.py", ["--npz={tmp}/not.npz", "--export_dir={tmp}/out"],
     ["{tmp}/not.npz"]),
    ("import-version-0", "binaries/import_bit.py", ["--npz={tmp}/not.npz", "--export_dir={tmp}/out", "--version=0"],
     ["version=0"]),
    ("import-name", "binaries/import_bit.py", ["--npz={tmp}/not.npz", "--export_dir={tmp}/out", "--name=a b"],
     ["'a b'"]),
    ("import-upstream", "binaries/import_bit.py", ["--npz={tmp}/not.npz", "--export_dir={tmp}/out",
                                                   "--upstream=../in21k"], ["'../in21k'"]),
    ("import-image-size-0", "binaries/import_bit.py", ["--npz={tmp}/not.npz", "--export_dir={tmp}/out",
                                                       "--image_size=0"], ["image_size=0"]),
    ("import-export-dir-file", "binaries/import_bit.py", ["--npz={tmp}/not.npz", "--export_dir={tmp}/afile"],
     ["{tmp}/afile"]),
    # --- benchmarks: counts and sizes
    ("bench-knn-k-0", "binaries/benchmark_knn.py", ["--k=0", "--sizes=100"], ["k=0"]),
    ("bench-knn-sizes", "binaries/benchmark_knn.py", ["--sizes=100,-7"], ["-7"]),
    ("bench-knn-leaves", "binaries/benchmark_knn.py", ["--sizes=100", "--leaves_to_search=1.5"], ["1.5"]),
    ("bench-probe-dims", "binaries/benchmark_probe.py", ["--dims=512,x2"], ["--dims", "x2"]),
    ("bench-probe-folds", "binaries/benchmark_probe.py", ["--folds=1"], ["folds"]),
    ("bench-inference-batch-0", "binaries/benchmark_inference.py", ["--batch_size=0", "--model=tiny"],
     ["batch_size=0"]),
    ("bench-inference-sizes", "binaries/benchmark_inference.py", ["--sizes=big", "--model=tiny"], ["big"]),
    ("bench-stream-steps-0", "binaries/benchmark_expert_stream.py", ["--workdir={tmp}", "--steps=0"], ["steps"]),
    ("bench-stream-no-generalist", "binaries/benchmark_expert_stream.py", ["--workdir={tmp}"],
     ["{tmp}", "generalist"]),
    ("bench-teardown-fits-0", "binaries/benchmark_input_teardown.py", ["--workdir={tmp}", "--fits=0"], ["fits"]),
    ("bench-teardown-no-generalist", "binaries/benchmark_input_teardown.py", ["--workdir={tmp}"],
     ["{tmp}", "generalist"]),
    ("bench-selection-images-0", "binaries/benchmark_selection.py", ["--num_images=0"], ["num_images=0"]),
    ("bench-selection-experts", "binaries/benchmark_selection.py", ["--num_experts=0"], ["num_experts"]),
    ("bench-packing-experts", "binaries/benchmark_packing.py", ["--num_experts=4,x", "--model=tiny"], ["4,x"]),
    ("bench-beam-modules-0", "binaries/benchmark_beam.py", ["--num_modules=0", _WD], ["num_modules=0"]),
    ("bench-beam-workdir-file", "binaries/benchmark_beam.py", ["--workdir={tmp}/afile"], ["{tmp}/afile"]),
    ("bench-scale-grid", "binaries/benchmark_scale.py", ["--grid=4x1,lots", _WD], ["lots"]),
    ("bench-scale-examples-0", "binaries/benchmark_scale.py", ["--num_examples=0", _WD], ["num_examples=0"]),
    ("bench-cost-task", "binaries/benchmark_transfer_cost.py", [_WD, "--tasks=world/nope"], ["'nope'"]),
    ("bench-cost-budget-config", "binaries/benchmark_transfer_cost.py", [_WD, "--budget_config=huge"], ["huge"]),
    ("bench-cost-crops", "binaries/benchmark_transfer_cost.py", [_WD, "--budget_finetune_crops=128,0"], ["128,0"]),
]


def _snapshot(root):
  """Every path under root (files and folders), relative."""
  out = set()
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      out.add(os.path.relpath(os.path.join(folder, name), root))
  return out


def _make_fixtures(tmp):
  with open(os.path.join(tmp, "afile"), "w") as f:
    f.write("a file, not a folder\n")
  with open(os.path.join(tmp, "not.npz"), "w") as f:
    f.write("not a numpy archive\n")
  os.makedirs(os.path.join(tmp, "empty"))
  generalist = os.path.join(tmp, "trained", "generalist")
  os.makedirs(generalist)
  with open(os.path.join(generalist, "model.json"), "w") as f:
    json.dump({"kind": "generalist", "node": None, "num_labels": 80, "upstream": "world32"}, f)
  with open(os.path.join(generalist, "weights.npz"), "wb") as f:
    f.write(b"")
  for name, nodes in HIERARCHIES.items():
    with open(os.path.join(tmp, f"h_{name}.json"), "w") as f:
      json.dump({"name": name, "nodes": nodes}, f)
  with open(os.path.join(tmp, "h_invalid.json"), "w") as f:
    f.write('{"name": "broken", "nodes": [{"name": "root", "parents": []},')


PARALLEL = 3  # program starts at once: each is mostly TensorFlow's import, so 3 keep 2 cores busy


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
  """{case name: (tmp dir, files before, CompletedProcess, files after)} for every CASES row, each program run
  in its own fresh folder, PARALLEL at a time (one at a time, the ~100 program starts take 8-13 minutes)."""
  folders = {}
  for name, *_ in CASES:  # made here, one thread: the folders and their fixtures
    folders[name] = str(tmp_path_factory.mktemp(name))
    _make_fixtures(folders[name])

  def run(case):
    name, program, args, _ = case
    tmp = folders[name]
    before = _snapshot(tmp)
    proc = run_python([program, *[a.replace("{tmp}", tmp) for a in args]],
                      env={"EXPERT_HUB_DATA_DIR": os.path.join(tmp, "tfds")}, timeout=TIMEOUT_S, check=False)
    return tmp, before, proc, _snapshot(tmp)

  with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
    return dict(zip([c[0] for c in CASES], pool.map(run, CASES)))


@pytest.mark.slow  # ~100 program starts: CI runs them once (pytest), Bazel's runs skip them
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_early_and_named(case, refusals):
  name, _, _, expect = case
  tmp, before, proc, after = refusals[name]
  output = proc.stdout + proc.stderr
  assert proc.returncode in (1, 2), f"exit {proc.returncode}:\n{output[-4000:]}"
  assert "Traceback" not in output, output[-4000:]
  for text in expect:
    assert text.replace("{tmp}", tmp) in output, f"{text!r} not named in:\n{output[-4000:]}"
  assert after == before, f"wrote {sorted(after - before)}:\n{output[-2000:]}"


def test_table_covers_every_program():
  """A program added to binaries/ or export/ gets rows here too."""
  from conftest import ROOT  # pylint: disable=g-import-not-at-top
  programs = {f"{d}/{f}" for d in ("binaries", "export") for f in os.listdir(os.path.join(ROOT, d))
              if f.endswith(".py") and f != "__init__.py"}
  assert programs == {c[1] for c in CASES}


# In-process checks of the same rules, where the programs meet them: the hierarchy and the config dataclasses.
@pytest.mark.parametrize("name", sorted(HIERARCHIES))
def test_every_bad_hierarchy_is_refused_when_built(name):
  from expert_hub.data import hierarchy  # pylint: disable=g-import-not-at-top
  with pytest.raises(hierarchy.HierarchyError):
    hierarchy.Hierarchy(HIERARCHIES[name], name=name)


def test_hierarchy_keeps_what_is_valid():
  """Several parents (a DAG, as WordNet), '/' in names (it becomes '_' in expert names) and internal labels."""
  from expert_hub.data import experts, hierarchy  # pylint: disable=g-import-not-at-top
  h = hierarchy.Hierarchy([_ROOT, {"name": "pets/dogs", "parents": ["root"], "label": 1},
                           {"name": "beagle", "parents": ["pets/dogs", "root"], "label": 0}])
  assert h.num_labels == 2 and h.parents("beagle") == ["pets/dogs", "root"]
  assert [e.expert_name for e in experts.select_expert_nodes(h, {"pets/dogs": 5}, 1)] == ["pets_dogs"]


def test_labels_outside_the_hierarchy_are_refused_when_counted():
  import numpy as np  # pylint: disable=g-import-not-at-top
  from expert_hub.data import experts  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"\[5\].*0\.\.3"):
    experts.count_label_images(np.array([0, 1, 5]), 4)
  with pytest.raises(ValueError, match="-1"):
    experts.count_label_images(np.array([0, -1]), 4)
  with pytest.raises(ValueError, match=r"\[N, 4\]"):
    experts.count_label_images(np.zeros([3, 5]), 4)


CONFIG_CASES = [  # (config class, bad field values, text the error must hold)
    ("FinetuneConfig", {"batch_size": 0}, "FinetuneConfig.batch_size=0"),
    ("FinetuneConfig", {"base_lr": 0.0}, "FinetuneConfig.base_lr=0.0"),
    ("FinetuneConfig", {"base_lr": float("nan")}, "FinetuneConfig.base_lr=nan"),
    ("FinetuneConfig", {"steps": 0}, "FinetuneConfig.steps=0"),
    ("FinetuneConfig", {"steps_scale": -1.0}, "FinetuneConfig.steps_scale=-1.0"),
    ("FinetuneConfig", {"resize": 0}, "FinetuneConfig.resize=0"),
    ("FinetuneConfig", {"resize": 32, "crop": 36}, "crop=36"),
    ("FinetuneConfig", {"train_split": "test"}, "FinetuneConfig.train_split='test'"),
    ("FinetuneConfig", {"train_split": ""}, "FinetuneConfig.train_split=''"),
    ("FinetuneConfig", {"head_init": "random"}, "FinetuneConfig.head_init='random'"),
    ("FinetuneConfig", {"head_l2": -1.0}, "FinetuneConfig.head_l2=-1.0"),
    ("FinetuneConfig", {"head_l2": (0.01, float("inf"))}, "FinetuneConfig.head_l2=(0.01, inf)"),
    ("FinetuneConfig", {"head_l2": ()}, "FinetuneConfig.head_l2=()"),
    ("SelectionConfig", {"k": 0}, "SelectionConfig.k=0"),
    ("SelectionConfig", {"k": True}, "SelectionConfig.k=True"),
    ("SelectionConfig", {"batch_size": -1}, "SelectionConfig.batch_size=-1"),
    ("SelectionConfig", {"backend": "faiss"}, "SelectionConfig.backend='faiss'"),
    ("SelectionConfig", {"proxy": "knn,nope"}, "'nope'"),
    ("SelectionConfig", {"proxy": ""}, "SelectionConfig.proxy=''"),
    ("SelectionConfig", {"split": "test[:100]"}, "SelectionConfig.split='test[:100]'"),
    ("ExpertsConfig", {"min_images": 0}, "ExpertsConfig.min_images=0"),
    ("ExpertsConfig", {"max_experts": 0}, "ExpertsConfig.max_experts=0"),
    ("ExpertsConfig", {"min_depth": 2, "max_depth": 1}, "ExpertsConfig.max_depth=1"),
    ("ExpertsConfig", {"kinds": ()}, "ExpertsConfig.kinds=()"),
    ("ExpertsConfig", {"kinds": ("full", "huge")}, "'huge'"),
    ("UpstreamConfig", {"name": "../up"}, "'../up'"),
    ("UpstreamConfig", {"image_size": 0}, "UpstreamConfig.image_size=0"),
    ("UpstreamConfig", {"hierarchy_file": ""}, "UpstreamConfig.hierarchy_file=''"),
    ("UpstreamConfig", {"tfds_name": ""}, "UpstreamConfig.tfds_name=''"),
    ("TrainConfig", {"base_lr": 0}, "TrainConfig.base_lr=0"),
    ("TrainConfig", {"momentum": 1.0}, "TrainConfig.momentum=1.0"),
    ("TrainConfig", {"steps": 10, "warmup_steps": 0, "decay_steps": (5, 20)}, "decay_steps=(5, 20)"),
    ("Config", {"version": 0}, "Config.version=0"),
    ("Config", {"tasks": "world/count"}, "Config.tasks='world/count'"),
]


@pytest.mark.parametrize("cls,values,text", CONFIG_CASES, ids=[f"{c[0]}-{'-'.join(c[1])}" for c in CONFIG_CASES])
def test_config_fields_are_validated_naming_field_and_value(cls, values, text):
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError) as e:
    getattr(configs, cls)(**values)
  assert text in str(e.value)


def test_defaults_and_named_configs_are_valid():
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  for cls in (configs.Config, configs.FinetuneConfig, configs.SelectionConfig, configs.ExpertsConfig,
              configs.UpstreamConfig, configs.TrainConfig):
    cls()
  assert [configs.get_config(n).name for n in configs.CONFIG_NAMES] == list(configs.CONFIG_NAMES)


def markdown_table():
  """CASES as a Markdown table (for notes and the README)."""
  rows = ["| case | program | arguments | the output names |", "|---|---|---|---|"]
  for case_id, program, args, expect in CASES:
    rows.append(f"| {case_id} | {program} | `{' '.join(args)}` | {', '.join(f'`{e}`' for e in expect)} |")
  return "\n".join(rows)


if __name__ == "__main__":
  import sys
  if sys.argv[1:] == ["--table"]:
    print(markdown_table())
    sys.exit(0)
  sys.exit(pytest.main([__file__, "-q"]))
