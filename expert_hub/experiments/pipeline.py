"""The whole method end to end: world -> generalist -> experts -> export -> select -> per task: fine-tune.

One module session serves the whole run: selection is expert-major over all tasks (each module used once for all),
and fine-tunes restore our modules' weights into compiled templates shared by every task (no graph loads).
Every stage skips work that is already done in the workdir (trained models, exported modules, finished
tasks), so an interrupted run continues where it stopped. Writes `<workdir>/results.json`, a Markdown table
(`results.md`) and a plot (`results.png`).
"""

import logging
import os
import shutil
import time

import numpy as np

from expert_hub import io_utils
from expert_hub import naming
from expert_hub import provenance
from expert_hub import seeds
from expert_hub.data import upstream as upstream_lib
from expert_hub.experiments import report
from expert_hub.experiments import stats
from expert_hub.hub import export_trained
from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib
from expert_hub.selection import embed
from expert_hub.selection import proxies
from expert_hub.selection import select
from expert_hub.tasks import sources
from expert_hub.train import experts as experts_train
from expert_hub.train import upstream as upstream_train
from expert_hub.transfer import finetune as finetune_lib

log = logging.getLogger(__name__)
RESULTS_FILE = "results.json"


def task_dir(workdir, task_name):
  """A task's folder under a run's workdir (run_pipeline, evaluate_proxies): `<workdir>/tasks/<task>`, named by
  naming.folder_name (two task names never share a folder)."""
  return os.path.join(workdir, "tasks", naming.folder_name(task_name))


def select_tasks(tasks, cfg, workdir, handles, image_size, session):
  """kNN selection for every task, expert-major (each module loaded once for all tasks, select.select_experts);
  writes `<workdir>/tasks/<task>/selection.json` and reuses one made for the same task, candidates and config.
  Returns {task name: selection}."""
  candidates = [h for n, h in handles.items() if n not in BASELINES]
  todo, out = [], {}
  for task in tasks:
    folder = task_dir(workdir, task.name)
    os.makedirs(folder, exist_ok=True)
    done = select.reusable_selection(folder, task, candidates, cfg.selection, image_size, session)
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


BASELINES = registry_lib.BASELINE_KINDS  # module names as well: the generalist and the control, never candidates


def finetune_seeds(cfg, task_name):
  """The fine-tuning seeds of a task: `cfg.seeds` of them, derived from the config's seed; every model of the
  task is fine-tuned with each (a paired comparison: the same batches, order and augmentation per seed)."""
  return [seeds.derive(cfg.seed, "finetune", task_name, r) for r in range(cfg.seeds)]


def finetune_once(finetuner, name, handle, folder, seed=None):
  """One model's fine-tune on a task with one seed (default the Finetuner's), kept as `<folder>/finetune/
  <name>.seed<seed>.json` and reused only for the same inputs (Finetuner.made_from): one made with an older
  fine-tuning recipe (finetune.RECIPE_FORMAT) is fine-tuned again, one made from other inputs is refused.
  Checkpointed under `<folder>/finetune_runs/<name>.seed<seed>/` while it runs (a kill resumes there), removed
  once the result is written."""
  seed = finetuner.seed if seed is None else seed
  stem = f"{naming.folder_name(name)}.seed{seed}"
  result_path = os.path.join(folder, "finetune", stem + ".json")
  run_dir = os.path.join(folder, "finetune_runs", stem)
  made_from = provenance.digest(finetuner.made_from(handle, seed))
  done = io_utils.read_json(result_path) if os.path.exists(result_path) else None
  if done is not None and finetune_lib.is_older_recipe(done, made_from, result_path):
    done = None
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints of the older recipe's run
  if done is not None:
    if done.get("made_from") != made_from:
      raise provenance.ProvenanceError(
          f"{result_path!r} holds a fine-tune of {done.get('expert')!r} on {done.get('task')!r} made from other "
          f"inputs than this run's ({handle!r} on {finetuner.task.name!r}: another config, module, seed or task "
          "data). Nothing was reused or overwritten; use another workdir, or remove that file to redo it.")
    log.info("[%s] %s seed %d: already fine-tuned (test accuracy %.4f); reusing %s.", finetuner.task.name, name,
             seed, done["test_accuracy"], result_path)
    return done
  result = finetuner.run(handle, workdir=run_dir, seed=seed)
  io_utils.atomic_write_json(result_path, result)
  shutil.rmtree(run_dir, ignore_errors=True)  # the result file is the durable record now
  return result


def _models_to_finetune(cfg, handles, ranking, kinds):
  """The task's models: the kNN pick, the best-ranked full and adapter experts (full vs adapter on the same
  task and seeds), the generalist and the control; every module with `cfg.oracle`."""
  if cfg.oracle:
    return list(handles)
  by_handle = {h: n for n, h in handles.items()}
  ranked = [by_handle[r["expert"]] for r in ranking]
  best = {kind: next((n for n in ranked if kinds[n] == kind), None) for kind in ("full", "adapter")}
  chosen = [ranked[0], best["full"], best["adapter"], *BASELINES]
  return [n for n in dict.fromkeys(chosen) if n in handles]


def frozen_feature_accuracy(task, handle, cfg, image_size, session, l2=None):
  """What a module's frozen features reach without fine-tuning, for the report's fine-tuned vs frozen comparison.

  On the selection split: leave-one-out kNN accuracy (the selection proxy) and the 5-fold linear probe
  (scikit-learn logistic regression). On the test split fine-tuning is scored on: the same kNN and probe fitted on
  the selection split (`knn_test`, `linear_probe_test`), so that both sides are measured on the same images. The
  probe's l2 (`probe_l2`) is `l2`, the one the module's fine-tune started from, when given; else the config's
  `finetune.head_l2` (of a grid, the one that cross-validates best).
  """
  from sklearn import neighbors  # pylint: disable=g-import-not-at-top
  from expert_hub.transfer import linear_head  # pylint: disable=g-import-not-at-top
  embedder = session.embedder(handle)
  images, labels = embed.prepare_images(task, cfg.selection.split, image_size)
  features = embed.embed(embedder, images, cfg.selection.batch_size)
  test_images, test_labels = embed.prepare_images(task, cfg.finetune.test_split, image_size)
  test_features = embed.embed(embedder, test_images, cfg.selection.batch_size)
  knn = proxies.knn_accuracy(features, labels, k=cfg.selection.k, backend=cfg.selection.backend)[0]
  probe, l2 = proxies.linear_probe_accuracy(features, labels, l2=cfg.finetune.head_l2 if l2 is None else l2,
                                            seed=seeds.derive(cfg.seed, "probe", task.name))
  knn_test = neighbors.KNeighborsClassifier(n_neighbors=cfg.selection.k, metric="cosine").fit(
      features, labels).score(test_features, test_labels)
  kernel, bias = linear_head.fit(features, labels, task.num_classes, l2=l2)
  probe_test = np.mean(np.argmax(test_features @ kernel + bias, axis=-1) == test_labels)
  return {"knn_loo": round(float(knn), 4), "linear_probe": round(float(probe), 4),
          "knn_test": round(float(knn_test), 4), "linear_probe_test": round(float(probe_test), 4), "probe_l2": l2}


def run_task(task, cfg, workdir, session, handles, selection):
  """Fine-tuning for one task after its selection, over `cfg.seeds` paired seeds; the task's results go to
  `<workdir>/tasks/<task>/task_result.json`, built from one result file per (model, seed), each reused when
  made from the same inputs, so a run killed at fine-tune 12 of 13 redoes only the 12th, from its last
  checkpoint.

  The result holds every seed's accuracy (`seed_accuracy`: {model: [accuracy per seed]}), each model's mean ±
  95% interval over seeds, and the selected expert's paired gain ± interval over each baseline.
  """
  out = task_dir(workdir, task.name)
  by_handle = {h: n for n, h in handles.items()}
  selected = by_handle[selection["selected"]]
  kinds = {n: session.metadata(h).get("kind") for n, h in handles.items()}
  to_finetune = _models_to_finetune(cfg, handles, selection["ranking"], kinds)
  task_seeds = finetune_seeds(cfg, task.name)
  finetuner = finetune_lib.Finetuner(task, cfg.finetune, seed=task_seeds[0], session=session)
  seed_accuracy, finetune_seconds, train_loss, head_l2 = {}, {}, {}, {}
  for name in to_finetune:
    runs = [finetune_once(finetuner, name, handles[name], out, seed) for seed in task_seeds]
    seed_accuracy[name] = [r["test_accuracy"] for r in runs]
    head_l2[name] = runs[0].get("head_l2")  # one probe per module, whatever the seed
    losses = [r["train_loss"] for r in runs if r.get("train_loss") is not None]
    train_loss[name] = round(float(np.mean(losses)), 4) if losses else None
    finetune_seconds[name] = round(sum(r["seconds"] for r in runs), 2)
    if name == selected:
      io_utils.atomic_write_json(os.path.join(out, finetune_lib.FINETUNE_FILE), runs[0])
  accuracy = {n: round(float(sum(a) / len(a)), 4) for n, a in seed_accuracy.items()}
  experts = [n for n in accuracy if n not in BASELINES]
  oracle = stats.oracle_of({n: accuracy[n] for n in experts})[0] if cfg.oracle else None
  domain_expert = task.domain if task.domain in handles else None
  result = {
      "task": task.name, "domain": task.domain, "num_classes": task.num_classes, "selected": selected,
      "selected_kind": kinds[selected], "domain_expert": domain_expert,
      "best_full": next((n for n in to_finetune if kinds[n] == "full"), None),
      "best_adapter": next((n for n in to_finetune if kinds[n] == "adapter"), None),
      "seeds": task_seeds, "seed_accuracy": seed_accuracy,
      "accuracy": {n: stats.interval(a) for n, a in seed_accuracy.items()},
      "gain": {b: stats.interval(seed_accuracy[selected], seed_accuracy[b])
               for b in BASELINES if b in seed_accuracy},
      "selected_accuracy": accuracy[selected], "generalist_accuracy": accuracy["generalist"],
      "control_accuracy": accuracy.get(experts_train.CONTROL),
      "oracle_expert": oracle, "oracle_accuracy": accuracy[oracle] if oracle else None,
      "knn_scores": {by_handle[r["expert"]]: r["score"] for r in selection["ranking"]},
      # the selected expert's frozen features on the selection split: fine-tuning should reach at least these
      "frozen": frozen_feature_accuracy(task, handles[selected], cfg, cfg.upstream.image_size, session,
                                        l2=head_l2[selected]),
      "finetune_accuracy": accuracy, "train_loss": train_loss,
      "seconds": {"selection": selection["seconds"], "finetune": finetune_seconds},
  }
  io_utils.atomic_write_json(os.path.join(out, "task_result.json"), result)
  return result


def summarize(tasks):
  """Means over tasks of the paired gains (selected - baseline) with a 95% interval over tasks: on all tasks
  and on the domain tasks (those with an expert of their own domain); and full vs adapter experts' gains over
  the generalist on the domain tasks."""
  def gain(rows, model, baseline):
    per_task = [float(np.mean(np.subtract(t["seed_accuracy"][model(t)], t["seed_accuracy"][baseline])))
                for t in rows if model(t) and baseline in t["seed_accuracy"]]
    return dict(stats.interval(per_task), tasks=len(per_task)) if per_task else None
  domain = [t for t in tasks if t.get("domain_expert")]
  selected = lambda t: t["selected"]
  summary = {"domain_tasks": [t["task"] for t in domain]}
  for rows, where in ((tasks, "all"), (domain, "domain")):
    for baseline in BASELINES:
      summary[f"gain_vs_{baseline}_{where}"] = gain(rows, selected, baseline)
  summary["full_gain_domain"] = gain(domain, lambda t: t.get("best_full"), "generalist")
  summary["adapter_gain_domain"] = gain(domain, lambda t: t.get("best_adapter"), "generalist")
  return summary


def run_pipeline(cfg, workdir, data_dir, export_dir=None, strategy=None):
  """Runs every stage; returns the results dict (also written to `<workdir>/results.json`)."""
  export_dir = export_dir or os.path.join(workdir, "export")
  io_utils.make_workdir(workdir)  # private (0o700) when new; refuses one another user owns
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
  results = {"config": cfg.name, "seed": cfg.seed, "seeds": cfg.seeds, "tasks": tasks, "summary": summarize(tasks),
             "timings": timings, "experts": sorted(n for n in modules if n not in BASELINES)}
  io_utils.atomic_write_json(os.path.join(workdir, RESULTS_FILE), results)
  table = report.markdown_table(results)
  io_utils.atomic_write_text(os.path.join(workdir, "results.md"), table + "\n")
  report.plot_results(results, os.path.join(workdir, "results.png"))
  return results
