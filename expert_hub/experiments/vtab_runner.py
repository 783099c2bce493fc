"""The VTAB-1k protocol over expert modules: per task select, tune on train800 -> val200, retrain, test.

The tasks are VTAB's 19 and any other task source with the same split names (tasks/sources.py: world/<task>,
tfds:<name>, folder:<path>), which the leaderboard lists after VTAB's, in its group "other".

For each task of a run: with expert "auto" pick the expert by leave-one-out kNN on train800val200
(selection/select.py); fine-tune it on train800 and score val200 for every point of a small LR x steps sweep;
retrain the best point on train800val200 and report top-1 on test. Fine-tuning is transfer/finetune.py's
Finetuner (BiT-HyperRule, from the head the config's finetune.head_init names) with the sweep's base LR and
step count.

Layout under the workdir, resumable at every level (finished work is read back, never redone); <task> is the
task's folder name (naming.folder_name: "dtd" stays, "world/count" becomes "world_count-<hash>"):
  <workdir>/runs/<run>/run.json                       the run's expert, config and sweep (a rerun must match)
  <workdir>/runs/<run>/<task>/selection.json          kNN ranking (expert "auto" only)
  <workdir>/runs/<run>/<task>/sweep/lr<lr>_steps<n>.json   one tuning fine-tune (val200 accuracy)
  <workdir>/runs/<run>/<task>/result.json             the task's final result (written last, atomically)
  <workdir>/vtab_results.{csv,json}, vtab_<group>.png  the leaderboard over every run in the workdir
                                                      (CSV and plots drawn by report.py)
"""

import dataclasses
import logging
import os
import time
from typing import Tuple

import numpy as np

from expert_hub import configs
from expert_hub import io_utils
from expert_hub import naming
from expert_hub import provenance
from expert_hub.experiments import report
from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib
from expert_hub.selection import select
from expert_hub.tasks import sources
from expert_hub.tasks import vtab
from expert_hub.transfer import finetune as finetune_lib
from expert_hub.transfer import hyperrule

log = logging.getLogger(__name__)
AUTO = "auto"
RUN_FILE, RESULT_FILE = "run.json", "result.json"
CSV_FILE, JSON_FILE = "vtab_results.csv", "vtab_results.json"
DEFAULT_LR_FACTORS = (0.3, 1.0, 3.0)
DEFAULT_STEPS_FACTORS = (1.0, 2.0)
TUNE_TRAIN, TUNE_VAL, FINAL_TRAIN, FINAL_TEST = "train800", "val200", "train800val200", "test"
OTHER_PREFIXES = (sources.WORLD_PREFIX, sources.TFDS_PREFIX, sources.FOLDER_PREFIX)  # task specs outside VTAB


@dataclasses.dataclass(frozen=True)
class SweepConfig:
  """The fine-tuning settings tried on train800 -> val200 (every base LR with every step count).

  Attributes:
    base_lrs: learning rates at batch 512 (FinetuneConfig.base_lr; the Finetuner scales them with the batch).
    steps: fine-tuning step counts (warm-up and decays scale with them, as in the Finetuner).
  """
  base_lrs: Tuple[float, ...]
  steps: Tuple[int, ...]

  def __post_init__(self):
    if not self.base_lrs or any(not lr > 0 for lr in self.base_lrs):
      raise ValueError(f"SweepConfig.base_lrs={self.base_lrs}; expected one or more positive learning rates.")
    if not self.steps or any(not isinstance(s, int) or s < 1 for s in self.steps):
      raise ValueError(f"SweepConfig.steps={self.steps}; expected one or more positive integers.")

  def points(self):
    """(base_lr, steps) pairs, shortest schedules first, then smallest LR (the order that breaks ties)."""
    return [(lr, s) for s in sorted(set(self.steps)) for lr in sorted(set(self.base_lrs))]


def default_sweep(finetune_cfg):
  """3 LRs x 2 lengths around the config: base_lr x (0.3, 1, 3), and 1x / 2x the steps it gives 800 images."""
  steps = finetune_cfg.steps or hyperrule.get_schedule(800, finetune_cfg.steps_scale).steps
  return SweepConfig(tuple(round(finetune_cfg.base_lr * f, 8) for f in DEFAULT_LR_FACTORS),
                     tuple(int(round(steps * f)) for f in DEFAULT_STEPS_FACTORS))


def resolve_tasks(spec):
  """The tasks of a run from `spec` (a comma string or a list): VTAB's ("all", a group, task names or
  vtab/<task>) in leaderboard order, then other task specs (world/<task>, tfds:<name>, folder:<path>) in the
  order given. Raises KeyError for an unknown VTAB or world task, ValueError when `spec` names no task."""
  tokens = spec.split(",") if isinstance(spec, str) else list(spec)
  tokens = [t.strip() for t in tokens if t and t.strip()]
  if not tokens:
    raise ValueError(f"No tasks in {spec!r}; expected 'all', a VTAB group {vtab.GROUPS}, VTAB task names, or task "
                     "specs world/<task>, tfds:<name>, folder:<path>.")
  other = list(dict.fromkeys(t for t in tokens if t.startswith(OTHER_PREFIXES)))
  for t in other:
    if t.startswith(sources.WORLD_PREFIX):
      sources.check_world_task(t[len(sources.WORLD_PREFIX):])
  named = [t for t in tokens if not t.startswith(OTHER_PREFIXES)]  # TASKS.resolve reads vtab/<task> too
  return (vtab.TASKS.resolve(named) if named else []) + other


def _open_task(name, data_dir, image_size, download, manual_dir):
  if name in vtab.TASKS.names():
    return vtab.VtabTask(name, data_dir, image_size, download=download, manual_dir=manual_dir)
  return sources.get_task(name, data_dir, image_size)


def _task_dir(run_dir, name):
  return os.path.join(run_dir, naming.folder_name(name))


def _finetuner(task, ft_cfg, lr, steps, train_split, test_split, session, strategy=None):
  cfg = configs.replace(ft_cfg, base_lr=lr, steps=steps, train_split=train_split, test_split=test_split)
  kwargs = {"strategy": strategy} if strategy is not None else {}
  return finetune_lib.Finetuner(task, cfg, session=session, **kwargs)


def _reuse(path, made_from, what):
  """The JSON at `path` when it exists and was made from `made_from` (a provenance digest), None when absent or
  made with an older fine-tuning recipe (finetune.RECIPE_FORMAT: redone); a file made from other inputs (another
  dataset preparation, module, config) is refused, not reused."""
  if not os.path.exists(path):
    return None
  done = io_utils.read_json(path)
  if finetune_lib.is_older_recipe(done, made_from, path):
    return None
  if done.get("made_from") != made_from:
    raise provenance.ProvenanceError(
        f"{path!r} holds a {what} made from other inputs than this run's (the task's data, the expert module "
        "or the fine-tune settings differ). Nothing was reused or overwritten; use another workdir or run name, "
        "or remove that file to redo it.")
  return done


def _selection_config(cfg):
  return configs.replace(cfg.selection, split=FINAL_TRAIN)  # VTAB: select on the 1000 training images.


def run_task(task, expert, cfg, sweep, task_dir, export_dirs=None, candidates=None, image_size=None,
             strategy=None, session=None, name=None):
  """The VTAB protocol on one task; returns (and writes `<task_dir>/result.json`) its result.

  Args:
    task: a vtab.VtabTask (any Task with the VTAB split names works).
    expert: an expert handle, or "auto" to select one among `candidates` by kNN on train800val200.
    cfg: a Config (its `finetune` and `selection` parts are used).
    sweep: a SweepConfig. A single point needs no tuning run and goes straight to the final fine-tune.
    task_dir: this task's folder; finished pieces in it are reused.
    export_dirs: where expert names are looked up when no `session` is given.
    candidates: expert handles to select from (expert "auto"), unless `<task_dir>/selection.json` exists
      (run_vtab selects for all tasks first, expert-major).
    image_size: resolution of the selection embeddings (default the task's).
    strategy: tf.distribute strategy of the fine-tunes (default: the current one).
    session: the session.ModuleSession of the run (None: one for export_dirs).
    name: the task's name on the leaderboard (run_vtab passes the spec it was asked for, e.g. "tfds:cifar100",
      which no VTAB name equals); default: its VTAB name, else the task's own.
  """
  session = session or session_lib.ModuleSession.for_export_dirs(export_dirs)
  done = os.path.join(task_dir, RESULT_FILE)
  if os.path.exists(done):  # reused only when its final fine-tune is made from this run's inputs
    finished = io_utils.read_json(done)
    best = finished.get("best", {})
    final = _finetuner(task, cfg.finetune, best.get("base_lr"), best.get("steps"), FINAL_TRAIN, FINAL_TEST,
                       session, strategy)
    asked = finished["expert"] if expert == AUTO else expert  # auto: the expert its selection picked
    if _reuse(done, provenance.digest(final.made_from(asked)), "VTAB task result") is not None:
      log.info("[vtab %s] already done; reusing %s.", task.name, done)
      return finished
  t0 = time.time()
  selection = None
  if expert == AUTO:
    size = image_size or getattr(task, "image_size", 224)
    if candidates:  # reused only when made from this task's data, these candidates and this config
      selection = select.reusable_selection(task_dir, task, candidates, _selection_config(cfg), size, session)
    else:  # a selection made beforehand (run_vtab's expert-major pass) must at least be this task's
      selection = select.selection_for_task(task_dir, task)
    if selection is None:
      selection = select.select_expert(task, candidates, _selection_config(cfg), task_dir, size, session=session)
    expert = selection["selected"]
  select_seconds = selection.get("seconds", 0.0) if selection else 0.0  # its share of an expert-major run

  points, sweep_results = sweep.points(), []
  tuning = points if len(points) > 1 else []  # One setting has nothing to choose between: no tuning run.
  for lr, steps in tuning:
    path = os.path.join(task_dir, "sweep", f"lr{lr:g}_steps{steps}.json")
    finetuner = _finetuner(task, cfg.finetune, lr, steps, TUNE_TRAIN, TUNE_VAL, session, strategy)
    made_from = provenance.digest(finetuner.made_from(expert))
    point = _reuse(path, made_from, "VTAB sweep point")
    if point is None:
      r = finetuner.run(expert)
      point = {"base_lr": lr, "steps": steps, "val_accuracy": r["test_accuracy"], "seconds": r["seconds"],
               "recipe_format": finetune_lib.RECIPE_FORMAT, "made_from": made_from}
      io_utils.atomic_write_json(path, point)
      log.info("[vtab %s] %s lr=%g steps=%d: val200 %.4f", task.name, expert, lr, steps, point["val_accuracy"])
    sweep_results.append(point)
  if sweep_results:  # max() keeps the first of equals: the shortest schedule, then the smallest LR.
    best = max(sweep_results, key=lambda p: p["val_accuracy"])
  else:
    best = {"base_lr": points[0][0], "steps": points[0][1], "val_accuracy": None}

  final = _finetuner(task, cfg.finetune, best["base_lr"], best["steps"], FINAL_TRAIN, FINAL_TEST, session,
                     strategy).run(expert)
  result = {
      "task": name or (task.definition.name if hasattr(task, "definition") else task.name),
      "group": getattr(task, "group", task.domain), "num_classes": task.num_classes, "expert": expert,
      "selection": None if selection is None else {
          "proxy": selection.get("proxy"), "split": selection.get("split"), "k": selection.get("k"),
          "scores": {r["expert"]: r["score"] for r in selection["ranking"]}},
      "sweep": sweep_results, "best": {k: best[k] for k in ("base_lr", "steps", "val_accuracy")},
      "test_accuracy": final["test_accuracy"], "num_test_examples": final["num_test_examples"],
      "seconds": {"selection": round(select_seconds, 2), "sweep": round(sum(p["seconds"] for p in sweep_results), 2),
                  "final": final["seconds"], "total": round(time.time() - t0, 2)},
      "recipe_format": finetune_lib.RECIPE_FORMAT, "made_from": final["made_from"],
  }
  io_utils.atomic_write_json(done, result)
  log.info("[vtab %s] %s (lr=%g, %d steps): test top-1 %.4f", task.name, expert, best["base_lr"], best["steps"],
           result["test_accuracy"])
  return result


def _check_run(run_dir, meta):
  """Writes run.json, or checks that a resumed run asks for the same expert, config and sweep."""
  path = os.path.join(run_dir, RUN_FILE)
  if os.path.exists(path):
    old = io_utils.read_json(path)
    changed = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
    if changed:
      raise ValueError(f"Run folder {run_dir!r} holds a run with other settings {changed} (old, new); pass "
                       "another run name, or delete that folder to start it again.")
  else:
    io_utils.atomic_write_json(path, meta)


def run_vtab(tasks, expert, cfg, workdir, data_dir=None, export_dirs=None, sweep=None, run_name=None,
             image_size=None, download=False, manual_dir=None, experts=None, strategy=None, session=None,
             beam_options=None):
  """Runs the VTAB-1k protocol on `tasks` and writes the leaderboard files; returns the leaderboard dict.

  Args:
    tasks: "all", a group, VTAB task names, other task specs, or a mix (a comma string or a list): see
      resolve_tasks.
    expert: an expert handle (name, path, URL) used for every task, or "auto" (kNN selection per task).
    cfg: a Config (finetune, selection and upstream.image_size are used).
    workdir: where runs and results live; rerunning the same command continues where it stopped.
    data_dir: TFDS data dir holding the prepared VTAB datasets (and the world's tasks, rendered on first use).
    export_dirs: expert module roots.
    sweep: a SweepConfig (default: default_sweep(cfg.finetune)).
    run_name: the leaderboard row (default: the expert's name).
    image_size: task images are resized to this (default cfg.upstream.image_size; VTAB itself uses 224).
    download, manual_dir: see vtab.VtabTask.
    experts: the handles "auto" selects from (default: every expert, not generalist, under export_dirs).
    strategy: tf.distribute strategy of the fine-tunes (default: the current one).
    session: the session.ModuleSession of the run (None: one for export_dirs); every task's selection and
      fine-tunes take their modules from it.
    beam_options: Beam PipelineOptions to run "auto"'s selection on Apache Beam (selection/beam_selection.py).

  Raises:
    FileNotFoundError: a dataset of an unfinished task is missing; the message covers every missing one.
    KeyError: an unknown task or expert name (before any work).
  """
  names = resolve_tasks(tasks)
  sweep = sweep or default_sweep(cfg.finetune)
  image_size = image_size or cfg.upstream.image_size
  session = session or session_lib.ModuleSession(registry_lib.Registry(export_dirs))  # one for the whole run
  registry = session.registry
  candidates = None
  if expert == AUTO:
    # Readable handles ("world32/shapes/1") for plain modules; "<path>#<expert>" for the experts of a pack.
    readable = {e.path: e.qualified_name for e in registry.entries()}
    candidates = (registry.expand_handles(experts) if experts  # "bit-in21k": the 48 published experts
                  else [readable.get(h, h) for h in registry.expert_handles()])
    if not candidates:
      raise ValueError(f"--expert=auto found no experts under export dirs {registry.export_dirs}; export some "
                       "first (export_experts) or name an expert.")
    for handle in candidates:
      registry.resolve(handle)  # An unknown name fails here, before any work, listing the nearest ones.
  else:
    if experts:
      raise ValueError(f"experts={experts} is for expert='auto' only; got expert={expert!r}.")
    registry.resolve(expert)
  run_name = naming.folder_name(run_name or os.path.basename(expert.rstrip("/")))
  run_dir = os.path.join(workdir, "runs", run_name)
  os.makedirs(run_dir, exist_ok=True)
  _check_run(run_dir, {"run": run_name, "expert": expert, "experts": list(experts) if experts else None,
                       "config": cfg.name, "image_size": image_size,
                       "sweep": {"base_lrs": list(sweep.base_lrs), "steps": list(sweep.steps)},
                       "finetune": dataclasses.asdict(cfg.finetune)})

  # Open every unfinished task's dataset before any training, so that all missing datasets are named at once.
  todo = [n for n in names if not os.path.exists(os.path.join(_task_dir(run_dir, n), RESULT_FILE))]
  opened, missing = {}, []
  for name in todo:
    try:
      opened[name] = _open_task(name, data_dir, image_size, download, manual_dir)
    except FileNotFoundError as e:
      missing.append(str(e))
  if missing:
    raise FileNotFoundError(f"{len(missing)} of the {len(names)} tasks asked for cannot be read:\n- "
                            + "\n- ".join(missing))
  if expert == AUTO:  # Expert-major selection for every task still to select: each module loaded once.
    unselected = [n for n in opened if select.reusable_selection(
        _task_dir(run_dir, n), opened[n], candidates, _selection_config(cfg), image_size, session) is None]
    for n in unselected:
      os.makedirs(_task_dir(run_dir, n), exist_ok=True)
    if unselected:
      select.select_experts([opened[n] for n in unselected], candidates, _selection_config(cfg),
                            [_task_dir(run_dir, n) for n in unselected], image_size, session,
                            beam_options=beam_options)
  start = time.time()
  for i, name in enumerate(names):
    if name in opened:
      run_task(opened[name], expert, cfg, sweep, _task_dir(run_dir, name), candidates=candidates,
               image_size=image_size, strategy=strategy, session=session, name=name)
      log.info("[vtab] %d/%d tasks done (%.0f s).", i + 1, len(names), time.time() - start)
  return write_leaderboard(workdir)


# --- The leaderboard ---------------------------------------------------------------------------------------


def collect_runs(workdir):
  """{run: {"meta": run.json, "tasks": {task: result.json}}} for every run folder under the workdir; the tasks
  in leaderboard order (VTAB's, then the others by name)."""
  runs = {}
  root = os.path.join(workdir, "runs")
  for run in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    meta_path = os.path.join(root, run, RUN_FILE)
    if not os.path.exists(meta_path):
      continue
    found = {}
    for folder in sorted(os.listdir(os.path.join(root, run))):
      path = os.path.join(root, run, folder, RESULT_FILE)
      if os.path.exists(path):
        result = io_utils.read_json(path)
        found[result["task"]] = result
    order = vtab.TASKS.names() + report.other_task_names(found)
    runs[run] = {"meta": io_utils.read_json(meta_path), "tasks": {n: found[n] for n in order if n in found}}
  return runs


def summarize(tasks):
  """Group means and the mean over all tasks of {task: result}; each over the tasks present (None if none).
  Tasks outside VTAB have their mean under report.OTHER_GROUP and count apart in tasks_done ("3/19 + 2 other")."""
  accuracy = {n: r["test_accuracy"] for n, r in tasks.items()}
  mean = lambda names: round(float(np.mean([accuracy[n] for n in names])), 4) if names else None
  summary = {g: mean([n for n in vtab.TASKS.names(g) if n in accuracy]) for g in vtab.GROUPS}
  other = report.other_task_names(accuracy)
  if other:
    summary[report.OTHER_GROUP] = mean(other)
  summary["mean"] = mean(list(accuracy))
  summary["tasks_done"] = f"{len(accuracy) - len(other)}/{len(vtab.TASKS.names())}" + (
      f" + {len(other)} other" if other else "")
  return summary


def write_leaderboard(workdir):
  """Writes vtab_results.csv / .json and one vtab_<group>.png per group with results; returns the JSON dict."""
  runs = collect_runs(workdir)
  board = {"runs": {run: dict(data["meta"], tasks=data["tasks"], summary=summarize(data["tasks"]))
                    for run, data in runs.items()},
           "files": {"csv": CSV_FILE, "json": JSON_FILE, "plots": {}}}
  for group in report.leaderboard_groups(board["runs"]):
    if any(n in d["tasks"] for d in runs.values() for n in report.group_task_names(board["runs"], group)):
      board["files"]["plots"][group] = f"vtab_{group}.png"
      report.plot_vtab_group(board["runs"], group, os.path.join(workdir, f"vtab_{group}.png"))
  io_utils.atomic_write_text(os.path.join(workdir, CSV_FILE), report.leaderboard_csv(board["runs"]))
  io_utils.atomic_write_json(os.path.join(workdir, JSON_FILE), board)
  return board
