"""The whole method end to end: world -> generalist -> experts -> export -> select -> per task: fine-tune.

One module session serves the whole run: selection is expert-major over all tasks (each module used once for all),
and fine-tunes restore our modules' weights into compiled templates shared by every task (no graph loads).
Every stage skips work that is already done in the workdir (trained models, exported modules, finished
tasks), so an interrupted run continues where it stopped. Writes `<workdir>/results.json`, a Markdown table
(`results.md`) and a plot (`results.png`).
"""

import logging
import os
import time

from expert_hub import io_utils
from expert_hub import report
from expert_hub.data import upstream as upstream_lib
from expert_hub.hub import export_trained
from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib
from expert_hub.selection import select
from expert_hub.tasks import sources
from expert_hub.train import experts as experts_train
from expert_hub.train import upstream as upstream_train
from expert_hub.transfer import finetune as finetune_lib

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"


def task_dir(workdir, task_name):
  """A task's folder under a run's workdir (run_pipeline, evaluate_proxies): `<workdir>/tasks/<task>`."""
  return os.path.join(workdir, "tasks", task_name.replace("/", "_").replace(":", "_"))


def _selected_already(out, candidates):
  """A task folder's selection.json when it ranks exactly these candidates (a resumed run), else None."""
  path = os.path.join(out, select.SELECTION_FILE)
  if not os.path.exists(path):
    return None
  selection = io_utils.read_json(path)
  return selection if sorted(r["expert"] for r in selection["ranking"]) == sorted(candidates) else None


def select_tasks(tasks, cfg, workdir, handles, image_size, session):
  """kNN selection for every task without a task_result.json, expert-major (each module loaded once for all
  tasks, select.select_experts); writes `<workdir>/tasks/<task>/selection.json`. Returns {task name: selection}."""
  candidates = [h for n, h in handles.items() if n != "generalist"]
  todo, out = [], {}
  for task in tasks:
    folder = task_dir(workdir, task.name)
    if os.path.exists(os.path.join(folder, "task_result.json")):
      continue
    os.makedirs(folder, exist_ok=True)
    done = _selected_already(folder, candidates)
    if done is not None:
      log.info("Task %s: selection already done; reusing it.", task.name)
      out[task.name] = done
    else:
      todo.append(task)
  if todo:
    selections = select.select_experts(todo, candidates, cfg.selection,
                                       [task_dir(workdir, t.name) for t in todo], image_size, session)
    out.update({t.name: s for t, s in zip(todo, selections)})
  return out


def run_task(task, cfg, workdir, session, handles, selection):
  """Fine-tuning for one task after its selection; cached in `<workdir>/tasks/<task>/task_result.json`."""
  out = task_dir(workdir, task.name)
  done = os.path.join(out, "task_result.json")
  if os.path.exists(done):
    log.info("Task %s already done; reusing %s.", task.name, done)
    return io_utils.read_json(done)
  experts = [n for n in handles if n != "generalist"]
  by_handle = {h: n for n, h in handles.items()}
  selected = by_handle[selection["selected"]]
  to_finetune = list(handles) if cfg.oracle else [selected, "generalist"]
  finetuner = finetune_lib.Finetuner(task, cfg.finetune, session=session)
  accuracy, finetune_seconds = {}, {}
  for name in to_finetune:
    r = finetuner.run(handles[name])
    accuracy[name], finetune_seconds[name] = r["test_accuracy"], r["seconds"]
    if name == selected:
      io_utils.atomic_write_json(os.path.join(out, finetune_lib.FINETUNE_FILE), r)
  oracle = max(experts, key=lambda n: accuracy.get(n, -1.0)) if cfg.oracle else None
  result = {
      "task": task.name, "domain": task.domain, "num_classes": task.num_classes, "selected": selected,
      "selected_accuracy": accuracy[selected], "generalist_accuracy": accuracy["generalist"],
      "oracle_expert": oracle, "oracle_accuracy": accuracy[oracle] if oracle else None,
      "knn_scores": {by_handle[r["expert"]]: r["score"] for r in selection["ranking"]},
      "finetune_accuracy": accuracy,
      "seconds": {"selection": selection["seconds"], "finetune": finetune_seconds},
  }
  io_utils.atomic_write_json(done, result)
  return result


def run_pipeline(cfg, workdir, data_dir, export_dir=None, strategy=None):
  """Runs every stage; returns the results dict (also written to `<workdir>/results.json`)."""
  export_dir = export_dir or os.path.join(workdir, "export")
  os.makedirs(workdir, exist_ok=True)
  timings = {}

  def stage(name, fn):
    log.info("=== stage %s ===", name)
    t0 = time.time()
    value = fn()
    timings[name] = round(time.time() - t0, 2)
    log.info("=== stage %s done in %.1f s ===", name, timings[name])
    return value

  image_size = cfg.upstream.image_size
  stage("data", lambda: [upstream_lib.get_builder(cfg.upstream.tfds_name, data_dir)] +
        [sources.get_task(t, data_dir, image_size) for t in cfg.tasks])
  stage("generalist", lambda: upstream_train.train_generalist(cfg, data_dir, workdir, strategy))
  stage("experts", lambda: experts_train.train_experts(cfg, data_dir, workdir, strategy=strategy))
  modules = stage("export", lambda: export_trained.export_trained(workdir, export_dir, cfg.version))
  session = session_lib.ModuleSession(registry_lib.Registry([export_dir]))  # the one session of the run
  handles = {n: f"{cfg.upstream.name}/{n}/{cfg.version}" for n in modules}
  downstream = [sources.get_task(spec, data_dir, image_size) for spec in cfg.tasks]
  selections = stage("selection", lambda: select_tasks(downstream, cfg, workdir, handles, image_size, session))
  tasks = []
  for task in downstream:
    tasks.append(stage(f"task:{task.name}", lambda: run_task(task, cfg, workdir, session, handles,
                                                            selections.get(task.name))))
  timings["total"] = round(sum(timings.values()), 2)
  results = {"config": cfg.name, "tasks": tasks, "timings": timings,
             "experts": sorted(n for n in modules if n != "generalist")}
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
  table = report.markdown_table(results)
  io_utils.atomic_write_text(os.path.join(workdir, "results.md"), table + "\n")
  report.plot_results(results, os.path.join(workdir, "results.png"))
  return results
