"""The whole method end to end: world -> generalist -> experts -> export -> per task: select, fine-tune.

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


def run_task(task, cfg, workdir, export_dir, modules, image_size):
  """Selection and fine-tuning for one task; cached in `<workdir>/tasks/<task>/task_result.json`."""
  out = task_dir(workdir, task.name)
  done = os.path.join(out, "task_result.json")
  if os.path.exists(done):
    log.info("Task %s already done; reusing %s.", task.name, done)
    return io_utils.read_json(done)
  os.makedirs(out, exist_ok=True)
  experts = [n for n in modules if n != "generalist"]
  handles = {n: f"{cfg.upstream.name}/{n}/{cfg.version}" for n in modules}
  t0 = time.time()
  selection = select.select_expert(task, [handles[n] for n in experts], cfg.selection, out, image_size,
                                   export_dirs=[export_dir])
  select_seconds = time.time() - t0
  by_handle = {h: n for n, h in handles.items()}
  selected = by_handle[selection["selected"]]
  to_finetune = list(modules) if cfg.oracle else [selected, "generalist"]
  finetuner = finetune_lib.Finetuner(task, cfg.finetune, export_dirs=[export_dir])
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
      "seconds": {"selection": round(select_seconds, 2), "finetune": finetune_seconds},
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
  tasks = []
  for spec in cfg.tasks:
    task = sources.get_task(spec, data_dir, image_size)
    tasks.append(stage(f"task:{task.name}", lambda: run_task(task, cfg, workdir, export_dir, modules,
                                                            image_size)))
  timings["total"] = round(sum(timings.values()), 2)
  results = {"config": cfg.name, "tasks": tasks, "timings": timings,
             "experts": sorted(n for n in modules if n != "generalist")}
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
  table = report.markdown_table(results)
  io_utils.atomic_write_text(os.path.join(workdir, "results.md"), table + "\n")
  report.plot_results(results, os.path.join(workdir, "results.png"))
  return results
