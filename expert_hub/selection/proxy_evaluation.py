"""How well each selection proxy predicts transfer: every expert fine-tuned (the oracle) against each proxy's pick.

Per task: score every expert by every proxy (scoring.score_tasks, all tasks expert-major), fine-tune every model some proxy ranked (the
experts, and the generalist when the `generalist` reference or Domain Prediction asks for it), then per proxy:
  selected      the proxy's pick;
  regret        oracle accuracy - fine-tuned accuracy of the pick (>= 0; the oracle is the best fine-tuned model
                of that pool, so it may be the generalist, unlike the pipeline's `oracle_expert`);
  kendall_tau   Kendall's tau-b between the proxy's scores and the fine-tuned accuracies (ties handled);
  spearman_rho  Spearman's rho, the Pearson correlation of average ranks;
  cost          selection seconds (the proxy's own + the inputs it reads: the experts' embeddings and/or upstream
                logits, the generalist's logits) against the seconds of fine-tuning every model.
A correlation is None where it is undefined (fewer than 2 scored models, or constant scores or accuracies).

Resumable: `<workdir>/tasks/<task>/proxies.json` holds the proxy scores and `<workdir>/tasks/<task>/finetune/
<model>.json` each fine-tune result; a re-run reuses both. With `pipeline_workdir`, fine-tuned accuracies come
from a pipeline run's `tasks/<task>/task_result.json` (run with `oracle`, it fine-tuned every module) and only
models it lacks are fine-tuned. Writes `<workdir>/proxy_evaluation.json`, `proxy_evaluation.md`,
`proxy_regret.png` and one `proxy_scores_<proxy>.png` per proxy.
"""

import dataclasses
import logging
import math
import os
import re
import time

import numpy as np

from expert_hub import io_utils
from expert_hub import pipeline
from expert_hub import report
from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib
from expert_hub.selection import proxies as proxies_lib
from expert_hub.selection import select
from expert_hub.train import trainer
from expert_hub.transfer import finetune as finetune_lib

log = logging.getLogger(__name__)
DEFAULT_PROXIES = "knn,linear_probe,logme,hscore,nce,leep,domain_prediction,generalist,random"
RESULTS_FILE = "proxy_evaluation.json"
PROXIES_FILE = "proxies.json"
ORACLE = "oracle"


# ---------------------------------------------------------------------------------------------- statistics
def _paired(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape:
    raise ValueError(f"Rank correlation of shapes {x.shape} and {y.shape}; expected two vectors of one length.")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError(f"Rank correlation of non-finite values: {x.tolist()} and {y.tolist()}.")
  return x, y


def average_ranks(x):
  """1-based ranks of x, tied values sharing the mean of their ranks: [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]."""
  _, inverse, counts = np.unique(np.asarray(x, np.float64), return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)
  return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def kendall_tau_b(x, y):
  """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - tx) (n0 - ty)), tx/ty the pairs tied in x/y.

  Returns nan when undefined (fewer than 2 values, or all of x or all of y tied).
  """
  x, y = _paired(x, y)
  i, j = np.triu_indices(len(x), 1)
  dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
  n0 = len(i)
  denominator = math.sqrt(float(n0 - np.sum(dx == 0)) * float(n0 - np.sum(dy == 0)))
  return float(np.sum(dx * dy) / denominator) if denominator > 0 else math.nan


def spearman_rho(x, y):
  """Spearman's rho: the Pearson correlation of average ranks (ties handled). nan when undefined."""
  x, y = _paired(x, y)
  if len(x) < 2:
    return math.nan
  rx, ry = average_ranks(x), average_ranks(y)
  rx, ry = rx - rx.mean(), ry - ry.mean()
  denominator = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
  return float(np.sum(rx * ry) / denominator) if denominator > 0 else math.nan


def oracle_of(accuracy):
  """(name, accuracy) of the best fine-tuned model; ties go to the first name in sorted order."""
  if not accuracy:
    raise ValueError("No fine-tuned accuracies to take the oracle of.")
  best = max(sorted(accuracy), key=lambda n: accuracy[n])
  return best, accuracy[best]


def regret(accuracy, selected):
  """Oracle accuracy - the fine-tuned accuracy of `selected` (>= 0), rounded to 4 places as accuracies are."""
  if selected not in accuracy:
    raise KeyError(f"No fine-tuned accuracy for {selected!r}; fine-tuned: {sorted(accuracy)}.")
  return round(oracle_of(accuracy)[1] - accuracy[selected], 4)


def _none_if_nan(value):
  return None if value is None or math.isnan(value) else round(value, 4)


# ---------------------------------------------------------------------------------------------- per task
def _module_names(session, handles):
  """{handle: readable name}: the module's name in its expert.json (the pipeline's key), or the handle when two
  handles would share a name."""
  by_path = {e.path: e.name for e in session.registry.entries()}
  names = {}
  for handle in handles:
    path = session.resolve(handle)
    base, _, packed = path.partition("#")
    names[handle] = packed or by_path.get(base, handle)
  if len(set(names.values())) < len(names):
    return {h: h for h in handles}
  return names


def score_all(tasks, experts, cfg, workdir, image_size, session, proxies, generalist, strict, beam_options=None):
  """{task name: select.score_tasks' scores}, each cached in `<task dir>/proxies.json` for the same
  experts and proxies; the tasks without a cache entry are scored together, expert-major (scoring.py)."""
  out, todo = {}, []
  for task in tasks:
    folder = pipeline.task_dir(workdir, task.name)
    key = {"task": task.name, "experts": list(experts), "proxies": proxies, "generalist": generalist,
           "split": cfg.split, "k": cfg.k, "backend": cfg.backend, "image_size": image_size}
    path = os.path.join(folder, PROXIES_FILE)
    cached = io_utils.read_json(path) if os.path.exists(path) else {}
    if cached.get("key") == key:
      log.info("[evaluate_proxies %s] proxy scores already computed; reusing %s.", task.name, path)
      out[task.name] = cached["scored"]
    else:
      todo.append((task, folder, key))
  if todo:
    scored = select.score_tasks([t for t, _, _ in todo], experts, cfg, image_size, session, proxies=proxies,
                                generalist=generalist, strict=strict,  # other proxies later: no re-embed
                                cache_dirs=[os.path.join(f, select.EMBEDDINGS_DIR) for _, f, _ in todo],
                                beam_options=beam_options, staging_dir=workdir)
    for (task, folder, key), one in zip(todo, scored):
      io_utils.atomic_write_json(os.path.join(folder, PROXIES_FILE), {"key": key, "scored": one})
      out[task.name] = one
  return out


def _pipeline_finetunes(pipeline_workdir, task):
  """({name: accuracy}, {name: seconds}) of a pipeline run's fine-tunes of this task."""
  path = os.path.join(pipeline.task_dir(pipeline_workdir, task.name), "task_result.json")
  result = io_utils.read_json(path, missing=(
      f"No pipeline result for task {task.name!r} in pipeline_workdir {pipeline_workdir!r}: expected {path} "
      "(written by run_pipeline for each task it finished)."))
  seconds = result.get("seconds", {}).get("finetune", {})
  return dict(result["finetune_accuracy"]), {n: seconds.get(n, 0.0) for n in result["finetune_accuracy"]}


def _finetune_all(task, handles, names, cfg, out, session, reused):
  """Fine-tunes every handle whose name is not in `reused`, each cached in `out/finetune/<name>.json` (reused
  only for the same handle and fine-tune settings)."""
  accuracy, seconds, finetuner = {}, {}, None
  settings = dataclasses.asdict(cfg.finetune)  # a cached fine-tune counts only if made with these settings
  todo = [h for h in handles if names[h] not in reused]
  start = time.time()
  for i, handle in enumerate(todo):
    name = names[handle]
    path = os.path.join(out, "finetune", re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".json")
    result = io_utils.read_json(path) if os.path.exists(path) else None
    if result is not None and result.get("expert") == handle and result.get("finetune_config") == settings:
      log.info("[evaluate_proxies %s] %d/%d %s already fine-tuned; reusing %s.", task.name, i + 1, len(todo),
               name, path)
    else:
      finetuner = finetuner or finetune_lib.Finetuner(task, cfg.finetune, session=session)
      result = dict(finetuner.run(handle), finetune_config=settings)
      io_utils.atomic_write_json(path, result)
      rate = result["steps"] * result["batch_size"] / max(result["seconds"], 1e-9)
      eta = (time.time() - start) / (i + 1) * (len(todo) - i - 1)
      log.info("[evaluate_proxies %s] fine-tuned %d/%d %s: test accuracy %.4f (%.1f s, %.0f img/s) ETA %s",
               task.name, i + 1, len(todo), name, result["test_accuracy"], result["seconds"], rate,
               trainer.format_seconds(eta))
    accuracy[name], seconds[name] = result["test_accuracy"], result["seconds"]
  return accuracy, seconds


def _input_seconds(requires, scored):
  """Seconds of the shared inputs a proxy reads: embeddings, upstream logits, the generalist's logits."""
  total = 0.0
  for per_expert in scored["input_seconds"].values():
    total += per_expert["embed"] if "features" in requires else 0.0
    total += per_expert["logits"] if "logits" in requires else 0.0
  return total + (scored["generalist_seconds"] if "generalist_logits" in requires else 0.0)


def _proxy_record(record, names, accuracy, finetune_total, scored):
  scores = {names.get(r["expert"], r["expert"]): r["score"] for r in record["ranking"]}
  paired = [n for n in scores if n in accuracy]
  x, y = [scores[n] for n in paired], [accuracy[n] for n in paired]
  selected = names.get(record["selected"], record["selected"]) if record["selected"] else None
  input_seconds = _input_seconds(proxies_lib.default_registry().build(record["name"]).requires, scored)
  selection_seconds = record["seconds"] + input_seconds
  return {
      "selected": selected, "selected_accuracy": accuracy.get(selected),
      "regret": regret(accuracy, selected) if selected else None,
      "kendall_tau": _none_if_nan(kendall_tau_b(x, y)), "spearman_rho": _none_if_nan(spearman_rho(x, y)),
      "num_scored": len(paired), "scores": scores,
      "skipped": {names.get(e, e): why for e, why in record["skipped"].items()},
      "proxy_seconds": round(record["seconds"], 3), "input_seconds": round(input_seconds, 3),
      "selection_seconds": round(selection_seconds, 3),
      "cost_vs_finetune_all": round(selection_seconds / finetune_total, 4) if finetune_total > 0 else None,
  }


def evaluate_task(task, experts, cfg, workdir, image_size, export_dirs=None, proxies=DEFAULT_PROXIES,
                  generalist=None, strict=False, pipeline_workdir=None, session=None, scored=None):
  """Scores (unless `scored` holds score_all's result for this task), fine-tunes (or reads the pipeline's
  fine-tunes) and compares, for one task. See evaluate_proxies."""
  out = pipeline.task_dir(workdir, task.name)
  session = session or session_lib.ModuleSession.for_export_dirs(export_dirs)
  if scored is None:
    scored = score_all([task], experts, cfg.selection, workdir, image_size, session, proxies, generalist,
                       strict)[task.name]
  ranked = list(dict.fromkeys(list(experts) + [r["expert"] for label in scored["order"]
                                               for r in scored["proxies"][label]["ranking"]]))
  names = _module_names(session, ranked)
  accuracy, seconds, source = {}, {}, "finetuned"
  if pipeline_workdir:
    from_pipeline, pipeline_seconds = _pipeline_finetunes(pipeline_workdir, task)
    accuracy = {n: a for n, a in from_pipeline.items() if n in names.values()}
    seconds = {n: pipeline_seconds[n] for n in accuracy}
    source = "pipeline"
    lacking = sorted(n for n in names.values() if n not in accuracy)
    if lacking:
      log.warning("[evaluate_proxies %s] the pipeline run fine-tuned no %s; fine-tuning them here.", task.name,
                  lacking)
      source = "pipeline+finetuned"
  more_accuracy, more_seconds = _finetune_all(task, ranked, names, cfg, out, session, reused=set(accuracy))
  accuracy.update(more_accuracy)
  seconds.update(more_seconds)
  finetune_total = round(sum(seconds.values()), 2)
  oracle, oracle_accuracy = oracle_of(accuracy)
  records = {label: _proxy_record(scored["proxies"][label], names, accuracy, finetune_total, scored)
             for label in scored["order"]}
  return {"task": task.name, "domain": task.domain, "num_classes": task.num_classes,
          "num_examples": scored["num_examples"], "finetune_source": source,
          "oracle": {"selected": oracle, "selected_accuracy": oracle_accuracy, "regret": 0.0,
                     "selection_seconds": finetune_total},
          "finetune_accuracy": accuracy, "finetune_seconds": seconds, "finetune_total_seconds": finetune_total,
          "proxies": records}


def summarize(tasks, order):
  """Per proxy over tasks: mean/max regret, oracle hits, mean tau and rho (where defined), cost."""
  summary = {}
  for label in list(order) + [ORACLE]:
    rows = [t[ORACLE] if label == ORACLE else t["proxies"][label] for t in tasks]
    regrets = [r["regret"] for r in rows if r["regret"] is not None]

    def mean(key, rows=rows):
      values = [r.get(key) for r in rows if r.get(key) is not None]
      return round(float(np.mean(values)), 4) if values else None

    selection = sum(r["selection_seconds"] for r in rows)
    finetune = sum(t["finetune_total_seconds"] for t in tasks)
    summary[label] = {
        "mean_regret": round(float(np.mean(regrets)), 4) if regrets else None,
        "max_regret": round(float(np.max(regrets)), 4) if regrets else None,
        "oracle_hits": sum(1 for r in regrets if r == 0), "num_tasks": len(regrets),
        "mean_kendall_tau": mean("kendall_tau"), "mean_spearman_rho": mean("spearman_rho"),
        "selection_seconds": round(selection, 2),
        "cost_vs_finetune_all": round(selection / finetune, 4) if finetune > 0 else None,
    }
  return summary


def evaluate_proxies(tasks, experts, cfg, workdir, image_size, export_dirs=None, proxies=DEFAULT_PROXIES,
                     generalist=None, strict=False, pipeline_workdir=None, session=None, beam_options=None):
  """Evaluates every proxy against fine-tuning every expert on each task; writes JSON, Markdown and PNGs.

  Args:
    tasks: tasks.Task objects.
    experts: expert handles to rank and fine-tune (names, paths or "<pack>#<expert>").
    cfg: a Config; its `selection` drives scoring and its `finetune` the fine-tunes.
    workdir: where results and the per-task caches go.
    image_size: side the task images are resized to for the proxies.
    export_dirs: where names are looked up when no `session` is given.
    proxies: proxy spec string (see proxies.py); all of them by default.
    generalist: the generalist's handle; None finds it by the experts' upstream.
    strict: fail where a proxy lacks an input instead of recording a skip.
    pipeline_workdir: a pipeline run's workdir whose fine-tuned accuracies are reused.
    session: the session.ModuleSession of the run (None: one for export_dirs).
    beam_options: Beam PipelineOptions to score the proxies on Apache Beam (selection/beam_selection.py).

  Returns:
    {"config", "proxies": [labels], "tasks": [per-task records], "summary": {label or "oracle": {...}},
     "seconds"}, also written to `<workdir>/proxy_evaluation.json`.

  Raises:
    ValueError: no tasks or experts, unknown proxies, a pipeline run made with another config.
    FileNotFoundError: pipeline_workdir lacks a task's result.
  """
  t0 = time.time()
  tasks = list(tasks)
  if not tasks:
    raise ValueError("No tasks to evaluate proxies on; expected at least one task spec (e.g. world/count).")
  if not experts:
    raise ValueError("No experts to evaluate; export some first (export_experts) or pass --experts.")
  proxies_lib.parse_proxies(proxies)  # Unknown proxies or parameters fail here, before any work.
  if pipeline_workdir:
    if not os.path.isdir(os.path.join(pipeline_workdir, "tasks")):
      raise FileNotFoundError(f"pipeline_workdir {pipeline_workdir!r} has no tasks/ folder; expected the workdir "
                              "of a run_pipeline run.")
    done = os.path.join(pipeline_workdir, pipeline.RESULTS_FILE)
    ran_with = io_utils.read_json(done).get("config") if os.path.exists(done) else None
    if ran_with not in (None, cfg.name):
      raise ValueError(f"pipeline_workdir {pipeline_workdir!r} was run with config {ran_with!r}, not "
                       f"{cfg.name!r}; pass --config={ran_with}.")
  session = session or session_lib.ModuleSession(registry_lib.Registry(export_dirs))  # one for the whole run
  scored = score_all(tasks, experts, cfg.selection, workdir, image_size, session, proxies, generalist, strict,
                     beam_options)
  results = []
  for i, task in enumerate(tasks):
    log.info("=== [evaluate_proxies] task %d/%d: %s ===", i + 1, len(tasks), task.name)
    results.append(evaluate_task(task, experts, cfg, workdir, image_size, proxies=proxies, generalist=generalist,
                                 strict=strict, pipeline_workdir=pipeline_workdir, session=session,
                                 scored=scored[task.name]))
    eta = (time.time() - t0) / (i + 1) * (len(tasks) - i - 1)
    log.info("=== [evaluate_proxies] task %d/%d done; ETA %s ===", i + 1, len(tasks), trainer.format_seconds(eta))
  order = list(results[0]["proxies"])
  out = {"config": cfg.name, "proxies": order, "pipeline_workdir": pipeline_workdir, "tasks": results,
         "summary": summarize(results, order), "seconds": round(time.time() - t0, 2)}
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), out)
  io_utils.atomic_write_text(os.path.join(workdir, "proxy_evaluation.md"), markdown_table(out) + "\n")
  plot_scores(out, workdir)
  plot_regret(out, os.path.join(workdir, "proxy_regret.png"))
  return out


# ---------------------------------------------------------------------------------------------- presentation
def _num(x, digits=2):
  return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(results):
  """A summary table (a row per proxy, then the oracle) and a per-task table of picks and regrets."""
  summary, tasks = results["summary"], results["tasks"]
  rows = ["| proxy | mean regret | max regret | oracle hits | Kendall τ-b | Spearman ρ | selection s | "
          "vs fine-tune all |", "|---|---|---|---|---|---|---|---|"]
  for label, s in summary.items():
    rows.append(f"| {label} | {report.percent(s['mean_regret'])} | {report.percent(s['max_regret'])} | "
                f"{s['oracle_hits']}/{s['num_tasks']} | {_num(s['mean_kendall_tau'])} | "
                f"{_num(s['mean_spearman_rho'])} | {s['selection_seconds']:.1f} | "
                f"{_num(None if s['cost_vs_finetune_all'] is None else 100 * s['cost_vs_finetune_all'], 1)}% |")
  labels = list(results["proxies"]) + [ORACLE]
  rows += ["", "| task | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
  for t in tasks:
    cells = []
    for label in labels:
      r = t[ORACLE] if label == ORACLE else t["proxies"][label]
      cells.append("-" if r["selected"] is None else
                   f"{r['selected']} {report.percent(r['selected_accuracy'])} ({report.percent(r['regret'])})")
    rows.append(f"| {t['task']} | " + " | ".join(cells) + " |")
  return ("\n".join(rows) + "\n\nRegret: oracle test top-1 minus the fine-tuned test top-1 of the proxy's pick "
          "(points). Oracle hits: tasks where the pick is the best fine-tuned model. τ-b and ρ: between proxy scores "
          "and fine-tuned accuracies, mean over tasks where defined. Selection s: proxy + the inputs it reads "
          "(embeddings, logits), all tasks; vs fine-tune all: that over the seconds of fine-tuning every model. "
          "Per task: pick, its accuracy (regret).")


def _slug(label):
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


def plot_scores(results, workdir):
  """One PNG per proxy, `proxy_scores_<proxy>.png`: a subplot per task of proxy score vs fine-tuned accuracy,
  the pick marked with a star and the oracle ringed. Returns the paths written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks, paths = results["tasks"], []
  cols = min(4, len(tasks))
  rows = math.ceil(len(tasks) / cols)
  for label in results["proxies"]:
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
      r = t["proxies"][label]
      names = [n for n in r["scores"] if n in t["finetune_accuracy"]]
      x = [r["scores"][n] for n in names]
      y = [100 * t["finetune_accuracy"][n] for n in names]
      ax.scatter(x, y, s=18, color="tab:blue")
      for n, xi, yi in zip(names, x, y):
        if n == r["selected"]:
          ax.scatter([xi], [yi], marker="*", s=160, color="tab:orange", zorder=3, label="pick")
        if n == t[ORACLE]["selected"]:
          ax.scatter([xi], [yi], s=110, facecolors="none", edgecolors="tab:red", zorder=4, label="oracle")
      ax.set_title(f"{t['task'].split('/')[-1][:28]}\nτ={_num(r['kendall_tau'])} ρ={_num(r['spearman_rho'])}",
                   fontsize=9)
      ax.tick_params(labelsize=7)
    for ax in axes.flat[len(tasks):]:
      ax.axis("off")
    for ax in axes[:, 0]:
      ax.set_ylabel("fine-tuned top-1 (%)", fontsize=8)
    for ax in axes[-1, :]:
      ax.set_xlabel(f"{label} score", fontsize=8)
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    unique = dict(zip(legend_labels, handles))
    if unique:
      fig.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    fig.suptitle(f"proxy {label}: score vs fine-tuned accuracy per task", fontsize=10)
    path = os.path.join(workdir, f"proxy_scores_{_slug(label)}.png")
    report.save_figure(fig, path)
    paths.append(path)
  return paths


def plot_regret(results, path):
  """Bars of each proxy's mean regret (points), with every task's regret as a dot; the oracle is 0."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = list(results["proxies"])
  x = np.arange(len(labels))
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4))
  means = [100 * (results["summary"][label]["mean_regret"] or 0) for label in labels]
  ax.bar(x, means, 0.6, color="tab:blue", alpha=0.7, label="mean over tasks")
  for i, label in enumerate(labels):
    per_task = [100 * t["proxies"][label]["regret"] for t in results["tasks"]
                if t["proxies"][label]["regret"] is not None]
    ax.scatter(np.full(len(per_task), i), per_task, s=12, color="black", zorder=3,
               label="one task" if i == 0 else None)
  ax.set_xticks(x, labels, rotation=30, ha="right")
  ax.set_ylabel("regret (top-1 points)")
  ax.set_title(f"expert_hub ({results.get('config', '')}): regret of each proxy's pick vs the oracle")
  ax.legend()
  report.save_figure(fig, path)
