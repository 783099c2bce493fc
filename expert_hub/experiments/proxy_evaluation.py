"""How well each selection proxy predicts transfer: every expert fine-tuned (the oracle) against each proxy's pick.

Per task: score every expert by every proxy (scoring.score_tasks, all tasks expert-major), fine-tune every
model some proxy ranked (the experts, and the generalist when the `generalist` reference or Domain
Prediction asks for it), then per proxy:
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
models it lacks are fine-tuned. On the domain tasks it also compares full and adapter experts (compare_kinds:
each kind's domain expert, best fine-tuned and best-ranked, gains over the generalist paired by seed). Writes
`<workdir>/proxy_evaluation.json`, `proxy_evaluation.md`, `proxy_regret.png`, one `proxy_scores_<proxy>.png` per
proxy and, with domain tasks, `full_vs_adapter.png` (drawn by report.py).
"""

import logging
import math
import os
import time

import numpy as np

from expert_hub import io_utils
from expert_hub.experiments import pipeline
from expert_hub.experiments import report
from expert_hub.experiments import stats
from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib
from expert_hub.selection import proxy_registry
from expert_hub.selection import select
from expert_hub.train import trainer
from expert_hub.transfer import finetune as finetune_lib

log = logging.getLogger(__name__)
DEFAULT_PROXIES = "knn,linear_probe,logme,hscore,nce,leep,domain_prediction,generalist,random"
RESULTS_FILE = "proxy_evaluation.json"
PROXIES_FILE = "proxies.json"
ORACLE = report.ORACLE  # the oracle's row in the results: every model fine-tuned, the best kept


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
    # the task's data, the candidates' modules, the parsed proxies and the config (select.selection_identity)
    key = {"identity": select.selection_identity(task, experts, cfg, image_size, session, proxies, generalist),
           "experts": list(experts), "strict": strict}
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


def _pipeline_finetunes(pipeline_workdir, task, task_seeds):
  """({name: [accuracy per seed]}, {name: seconds}) of a pipeline run's fine-tunes of this task, when they were
  made on the same seeds (pipeline.finetune_seeds); ({}, {}) with a warning otherwise."""
  path = os.path.join(pipeline.task_dir(pipeline_workdir, task.name), "task_result.json")
  result = io_utils.read_json(path, missing=(
      f"No pipeline result for task {task.name!r} in pipeline_workdir {pipeline_workdir!r}: expected {path} "
      "(written by run_pipeline for each task it finished)."))
  if result.get("seeds") != task_seeds:
    log.warning("[evaluate_proxies %s] the pipeline run in %s fine-tuned on seeds %s, this run on %s (another "
                "config seed or seeds count); not reusing its fine-tunes.", task.name, pipeline_workdir,
                result.get("seeds"), task_seeds)
    return {}, {}
  seconds = result.get("seconds", {}).get("finetune", {})
  seed_accuracy = {n: list(a) for n, a in result["seed_accuracy"].items()}
  return seed_accuracy, {n: seconds.get(n, 0.0) for n in seed_accuracy}


def _finetune_all(task, handles, names, cfg, out, session, reused, task_seeds):
  """Fine-tunes every handle whose name is not in `reused` on each of the task's seeds ({name: [accuracy per
  seed]}, {name: summed seconds}), each (model, seed) kept in `out/finetune/` and reused only when made from the
  same inputs (pipeline.finetune_once)."""
  seed_accuracy, seconds, finetuner = {}, {}, None
  todo = [h for h in handles if names[h] not in reused]
  start = time.time()
  for i, handle in enumerate(todo):
    name = names[handle]
    finetuner = finetuner or finetune_lib.Finetuner(task, cfg.finetune, seed=task_seeds[0], session=session)
    runs = [pipeline.finetune_once(finetuner, name, handle, out, seed) for seed in task_seeds]
    seed_accuracy[name] = [r["test_accuracy"] for r in runs]
    seconds[name] = round(sum(r["seconds"] for r in runs), 2)
    rate = sum(r["steps"] * r["batch_size"] for r in runs) / max(seconds[name], 1e-9)
    eta = (time.time() - start) / (i + 1) * (len(todo) - i - 1)
    log.info("[evaluate_proxies %s] %d/%d %s: test accuracy %.4f over %d seed(s) (%.1f s, %.0f img/s) ETA %s",
             task.name, i + 1, len(todo), name, np.mean(seed_accuracy[name]), len(runs), seconds[name], rate,
             trainer.format_seconds(eta))
  return seed_accuracy, seconds


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
  input_seconds = _input_seconds(proxy_registry.default_registry().build(record["name"]).requires, scored)
  selection_seconds = record["seconds"] + input_seconds
  return {
      "selected": selected, "selected_accuracy": accuracy.get(selected),
      "regret": stats.regret(accuracy, selected) if selected else None,
      "kendall_tau": _none_if_nan(stats.kendall_tau_b(x, y)), "spearman_rho": _none_if_nan(stats.spearman_rho(x, y)),
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
  task_seeds = pipeline.finetune_seeds(cfg, task.name)  # the pipeline's: its fine-tunes pair with these
  seed_accuracy, seconds, source = {}, {}, "finetuned"
  if pipeline_workdir:
    from_pipeline, pipeline_seconds = _pipeline_finetunes(pipeline_workdir, task, task_seeds)
    seed_accuracy = {n: a for n, a in from_pipeline.items() if n in names.values()}
    seconds = {n: pipeline_seconds[n] for n in seed_accuracy}
    source = "pipeline"
    lacking = sorted(n for n in names.values() if n not in seed_accuracy)
    if lacking:
      log.warning("[evaluate_proxies %s] the pipeline run fine-tuned no %s; fine-tuning them here.", task.name,
                  lacking)
      source = "pipeline+finetuned"
  more_accuracy, more_seconds = _finetune_all(task, ranked, names, cfg, out, session, set(seed_accuracy),
                                              task_seeds)
  seed_accuracy.update(more_accuracy)
  seconds.update(more_seconds)
  accuracy = {n: round(float(np.mean(a)), 4) for n, a in seed_accuracy.items()}
  metadata = {names[h]: session.metadata(h) for h in ranked}
  finetune_total = round(sum(seconds.values()), 2)
  oracle, oracle_accuracy = stats.oracle_of(accuracy)
  records = {label: _proxy_record(scored["proxies"][label], names, accuracy, finetune_total, scored)
             for label in scored["order"]}
  return {"task": task.name, "domain": task.domain, "num_classes": task.num_classes,
          "num_examples": scored["num_examples"], "finetune_source": source,
          "oracle": {"selected": oracle, "selected_accuracy": oracle_accuracy, "regret": 0.0,
                     "selection_seconds": finetune_total},
          "finetune_accuracy": accuracy, "seed_accuracy": seed_accuracy, "seeds": task_seeds,
          "kinds": {n: m.get("kind") for n, m in metadata.items()},
          "nodes": {n: m.get("node") for n, m in metadata.items()},
          "finetune_seconds": seconds, "finetune_total_seconds": finetune_total, "proxies": records}


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


KINDS = ("full", "adapter")


def compare_kinds(tasks, proxy="knn", baseline="generalist"):
  """Full vs adapter experts on the domain tasks: how much of a gap is the experts' and how much their pick's.

  A domain task (its `domain` is the node of a full and of an adapter expert) scores each kind's pick by three
  rules: `domain` (the task's own domain expert), `best` (the kind's best fine-tuned expert: an oracle within
  the kind) and `proxy` (the kind's best-ranked by that proxy, as the pipeline's "best-ranked" expert). Each
  pick's gain is its accuracy minus the baseline's, paired by seed; over tasks, each (kind, rule) gain and
  the adapter's minus the full expert's gain carry a 95% interval over tasks.

  Args:
    tasks: evaluate_task records (`seed_accuracy`, `finetune_accuracy`, `kinds`, `nodes`, `proxies`).
    proxy: the proxy whose ranking is the third rule; the rule is left out where the proxy was not evaluated.
    baseline: the model the gains are over.

  Returns:
    {"rules": [...], "tasks": [{"task", "domain", "picks": {kind: {rule: {"expert", "gain"}}}}],
     "summary": {kind or "adapter_minus_full": {rule: {"mean", "ci95", "tasks"}}}}; no tasks and an empty
    summary when no task has a domain expert of both kinds.
  """
  rules = ["domain", "best"] + ([proxy] if tasks and all(proxy in t["proxies"] for t in tasks) else [])
  rows = []
  for t in tasks:
    accuracy, seed_accuracy = t["finetune_accuracy"], t["seed_accuracy"]
    if not t.get("domain") or baseline not in seed_accuracy:
      continue
    picks = {}
    for kind in KINDS:
      members = sorted(n for n, k in t["kinds"].items() if k == kind and n in seed_accuracy)
      scores = t["proxies"][proxy]["scores"] if proxy in rules else {}
      chosen = {"domain": next((n for n in members if t["nodes"].get(n) == t["domain"]), None),
                "best": max(members, key=lambda n: accuracy[n], default=None),
                proxy: max((n for n in members if n in scores), key=lambda n: scores[n], default=None)}
      picks[kind] = {rule: {"expert": chosen[rule],
                            "gain": stats.interval(seed_accuracy[chosen[rule]], seed_accuracy[baseline])}
                     for rule in rules if chosen[rule] is not None}
    if all("domain" in picks[kind] for kind in KINDS):
      rows.append({"task": t["task"], "domain": t["domain"], "picks": picks})
  summary = {}
  for rule in rules:
    gains = {kind: [r["picks"][kind][rule]["gain"]["mean"] for r in rows if rule in r["picks"][kind]]
             for kind in KINDS}
    for kind in KINDS:
      if gains[kind]:
        summary.setdefault(kind, {})[rule] = dict(stats.interval(gains[kind]), tasks=len(gains[kind]))
    paired = [r for r in rows if all(rule in r["picks"][kind] for kind in KINDS)]
    if paired:
      summary.setdefault("adapter_minus_full", {})[rule] = dict(
          stats.interval([r["picks"]["adapter"][rule]["gain"]["mean"] for r in paired],
                         [r["picks"]["full"][rule]["gain"]["mean"] for r in paired]), tasks=len(paired))
  return {"proxy": proxy, "baseline": baseline, "rules": rules, "tasks": rows, "summary": summary}


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
    proxies: proxy spec string (see proxy_registry.py); all of them by default.
    generalist: the generalist's handle; None finds it by the experts' upstream.
    strict: fail where a proxy lacks an input instead of recording a skip.
    pipeline_workdir: a pipeline run's workdir whose fine-tuned accuracies are reused.
    session: the session.ModuleSession of the run (None: one for export_dirs).
    beam_options: Beam PipelineOptions to score the proxies on Apache Beam (selection/beam_selection.py).

  Returns:
    {"config", "proxies": [labels], "tasks": [per-task records], "summary": {label or "oracle": {...}},
     "full_vs_adapter": compare_kinds' comparison (by the config's proxy), "seconds"}, also written to
    `<workdir>/proxy_evaluation.json`.

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
  proxy_registry.parse_proxies(proxies)  # Unknown proxies or parameters fail here, before any work.
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
         "summary": summarize(results, order), "full_vs_adapter": compare_kinds(results, cfg.selection.proxy),
         "seconds": round(time.time() - t0, 2)}
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), out)
  io_utils.atomic_write_text(os.path.join(workdir, "proxy_evaluation.md"), report.proxy_markdown_table(out) + "\n")
  report.plot_proxy_scores(out, workdir)
  report.plot_proxy_regret(out, os.path.join(workdir, "proxy_regret.png"))
  if out["full_vs_adapter"]["tasks"]:
    report.plot_kind_comparison(out["full_vs_adapter"], os.path.join(workdir, "full_vs_adapter.png"))
  return out

