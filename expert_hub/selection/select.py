"""Choosing an expert for a task without touching upstream data: embed, score by one or more proxies, rank.

`cfg.proxy` (or the `proxies` argument) names the proxies, "knn" by default, several comma-separated
("knn,logme,leep"; see proxy_registry.py for the names and their parameters). Modules come from a
session.ModuleSession (each loaded at most once per process), and select_experts scores many tasks expert-major
(scoring.py): each module embeds every task's images before the next is touched; with `beam_options` the
same scoring runs on Apache Beam workers (beam_selection.py). An expert's features
are computed when some proxy needs them, its upstream logits when NCE or LEEP is asked for, and the generalist's
logits once when Domain Prediction is. The first proxy decides "selected".

A proxy that lacks an input for an expert (NCE/LEEP for an expert without a `logits` endpoint, such as a packed
adapter expert; Domain Prediction or the generalist reference when no generalist is found) skips that expert and
records why under "skipped"; with strict=True the MissingInputError (naming the expert and what is missing) is
raised instead. If the first proxy can score no expert at all, selection fails.

Writes `<workdir>/selection.json`:
  {"task", "proxy" (the first), "k", "num_examples", "split", "knn_backend", "selected",
   "ranking": [{"expert", "score", "embed_seconds", "knn_seconds" (or "proxy_seconds")}, ...] (the first
     proxy's, best first),
   "proxies": {label: {"name", "params", "selected", "ranking": [{"expert", "score", "seconds", ...}, ...],
                       "skipped": {expert: reason}, "seconds"}, ...} (every proxy, in the order asked),
   "generalist", "input_seconds": {expert: {"embed", "logits"}}, "seconds",
   "identity": what it was computed from (selection_identity): {"format", "task": {"name", "num_classes",
     "split", "num_examples", "fingerprint"}, "split", "image_size", "preprocessing", "proxies": [{"label",
     "name", "params"}, ...], "candidates": {expert: digest of its cache.module_identity}, "generalist" (when a
     proxy uses it)}}

A selection.json is reused only for the inputs it records: reusable_selection (pipeline, vtab_runner) returns
it or None; selection_for_task (finetune --expert=auto) refuses one made for another task's data.
"""

import logging
import os

from expert_hub import io_utils
from expert_hub import provenance
from expert_hub.hub import session as session_lib
from expert_hub.selection import cache
from expert_hub.selection import embed as embed_lib
from expert_hub.selection import proxy_registry
from expert_hub.selection import scoring
from expert_hub.tasks import fingerprint

log = logging.getLogger(__name__)

PROXIES = proxy_registry.PROXIES
SELECTION_FILE = "selection.json"
EMBEDDINGS_DIR = "embeddings"
# What a recorded identity means; bumped when a proxy scores the same inputs differently, so that older
# selections and proxy scores are recomputed, not reused. 2: the random proxy keys on the module, not its path.
# 3: the linear probe runs until lbfgs converges (proxies.PROBE_MAX_ITER, was 100 iterations).
IDENTITY_FORMAT = 3


class SelectionMismatchError(provenance.ProvenanceError):
  """A selection.json was made for other inputs (another task's data) than the ones at hand."""


def _knn_backend(scored):
  for label in scored["order"]:
    record = scored["proxies"][label]
    if record["name"] == "knn" and record["ranking"]:
      return record["ranking"][0]["backend"]
  return None


def _primary_ranking(scored):
  record = scored["proxies"][scored["order"][0]]
  if not record["ranking"]:
    raise ValueError(f"Proxy {scored['order'][0]!r} could not score any expert, so it cannot select one: "
                     f"{record['skipped']}")
  key = "knn_seconds" if record["name"] == "knn" else "proxy_seconds"
  return [{"expert": r["expert"], "score": r["score"],
           "embed_seconds": scored["input_seconds"].get(r["expert"], {}).get("embed", 0.0), key: r["seconds"]}
          for r in record["ranking"]]


def _result(task_name, k, split, scored, seconds):
  """selection.json's content from one task's scores (score_tasks)."""
  ranking = _primary_ranking(scored)
  return {"task": task_name, "proxy": scored["order"][0], "k": k, "num_examples": scored["num_examples"],
          "split": split, "knn_backend": _knn_backend(scored), "selected": ranking[0]["expert"], "ranking": ranking,
          "proxies": scored["proxies"], "generalist": scored["generalist"],
          "generalist_seconds": scored["generalist_seconds"], "input_seconds": scored["input_seconds"],
          "seconds": round(seconds, 3)}


def score_tasks(tasks, experts, cfg, image_size, session, proxies=None, generalist=None, strict=False,
                cache_dirs=None, beam_options=None, staging_dir=None):
  """scoring.score_tasks in this process, or on Apache Beam when `beam_options` (beam_selection.pipeline_options)
  are given: the same scores either way (beam_selection.py; `staging_dir` as there)."""
  if beam_options is None:
    return scoring.score_tasks(tasks, experts, cfg, image_size, session, proxies, generalist, strict, cache_dirs)
  from expert_hub.selection import beam_selection  # pylint: disable=g-import-not-at-top
  return beam_selection.score_tasks(tasks, experts, cfg, image_size, session.export_dirs, beam_options, proxies,
                                    generalist, strict, cache_dirs, staging_dir,
                                    allow_unsafe_ops=session.allow_unsafe_ops)


def select_experts(tasks, experts, cfg, workdirs, image_size, session, proxies=None, generalist=None,
                   strict=False, use_cache=True, beam_options=None):
  """Ranks experts for many tasks, expert-major (each module loaded once for all of them); writes each task's
  `<workdir>/selection.json` and returns their contents, in the order of `tasks`.

  Args:
    tasks: tasks.Task objects.
    experts: expert handles, the candidates of every task.
    cfg: a SelectionConfig.
    workdirs: per task, the folder its selection.json (and, with use_cache, its `embeddings/`) goes to.
    image_size: side the task images are resized to before embedding.
    session: the session.ModuleSession modules come from.
    proxies, generalist, strict: as in scoring.score_tasks.
    use_cache: reuse and keep embeddings in `<workdir>/embeddings/`.
    beam_options: Beam PipelineOptions to score on Apache Beam (beam_selection.py) instead of in this process.
  """
  tasks, workdirs, experts = list(tasks), list(workdirs), list(experts)
  if len(workdirs) != len(tasks):
    raise ValueError(f"{len(workdirs)} workdirs for {len(tasks)} tasks; expected one per task.")
  cache_dirs = [os.path.join(w, EMBEDDINGS_DIR) if use_cache else None for w in workdirs]
  scored = score_tasks(tasks, experts, cfg, image_size, session, proxies, generalist, strict, cache_dirs,
                       beam_options, staging_dir=workdirs[0] if workdirs else None)
  inputs = _inputs_identity(experts, cfg, image_size, session, proxies, generalist)
  results = []
  for task, workdir, one in zip(tasks, workdirs, scored):
    result = _result(task.name, cfg.k, cfg.split, one, one["seconds"])
    # The fingerprint of the data that was embedded (scoring computed it in the same pass), not a re-read.
    result["identity"] = dict(inputs, task=fingerprint.task_identity(task, cfg.split, one["data"]))
    io_utils.atomic_write_json(os.path.join(workdir, SELECTION_FILE), result)
    results.append(result)
  return results


def select_expert(task, experts, cfg, workdir, image_size, export_dirs=None, proxies=None, generalist=None,
                  strict=False, use_cache=True, session=None, beam_options=None):
  """Ranks experts for the task by every proxy and writes `<workdir>/selection.json`; returns its content.

  Arguments as in select_experts (one task); without a `session`, one is made for `export_dirs`. The first proxy
  decides "selected" and the top-level "ranking". Embeddings are cached in `<workdir>/embeddings/` (unless
  use_cache=False), so a re-run (other proxies, after an interruption) skips the experts already embedded.
  """
  session = session or session_lib.ModuleSession.for_export_dirs(export_dirs)
  return select_experts([task], experts, cfg, [workdir], image_size, session, proxies, generalist, strict,
                        use_cache, beam_options)[0]


def _module_digest(path):
  """A short digest of cache.module_identity (the sha256 of the module's files for ours): selection.json stays
  readable, and any change to a module still changes it."""
  return provenance.digest(cache.module_identity(path))


def _inputs_identity(experts, cfg, image_size, session, proxies=None, generalist=None):
  """selection_identity less the task: the candidates' module identities, the parsed proxies (with the config's
  k and backend where knn takes them), split, image size and preprocessing; the generalist where a proxy uses it.
  cfg.batch_size is left out: it does not change the ranking (nor the embedding cache's key)."""
  plan = scoring.make_plan(list(experts), cfg, session, proxies, generalist)
  record = {"format": IDENTITY_FORMAT, "split": cfg.split, "image_size": int(image_size),
            "preprocessing": embed_lib.PREPROCESSING,
            "proxies": [{"label": p.label, "name": p.name, "params": provenance.describe(p.params)}
                        for p in plan.parsed],
            "candidates": {e: _module_digest(path) for e, path in sorted(plan.paths.items())}}
  if plan.needs & {"generalist_logits", "is_generalist"}:
    record["generalist"] = None if plan.gen_path is None else {
        "handle": plan.gen_handle, "module": _module_digest(plan.gen_path)}
  return record


def selection_identity(task, experts, cfg, image_size, session, proxies=None, generalist=None):
  """What a task's selection is computed from, as selection.json records it under "identity".

  Args: as select_experts' (one task); reads the task's `cfg.split` once to fingerprint it unless this task
  object's fingerprint is already known (tasks/fingerprint.py).
  """
  return dict(_inputs_identity(experts, cfg, image_size, session, proxies, generalist),
              task=fingerprint.task_identity(task, cfg.split))


def _selection_file(path):
  return os.path.join(path, SELECTION_FILE) if os.path.isdir(path) else path


def reusable_selection(path, task, candidates, cfg, image_size, session, proxies=None, generalist=None):
  """A task's earlier selection.json when it was made from exactly these inputs, else None (logged why).

  The recorded identity must equal selection_identity(task, candidates, cfg, image_size, session, proxies,
  generalist): the same candidates (each module by content, module_identity), proxies and their parameters,
  split, image size, preprocessing, generalist where used, and the task's name, classes and data fingerprint.
  The cheap fields are compared first; the task split is read to fingerprint it only if they all match.

  Args:
    path: the selection.json, or the folder holding it (a task's workdir).
    task, candidates, cfg, image_size, session, proxies, generalist: what select_experts would be called with.

  Returns:
    The selection (selection.json's content), or None when there is none, it cannot be read, it records no
    identity (written by an older expert_hub) or it was made from other inputs.
  """
  file = _selection_file(path)
  if not os.path.exists(file):
    return None
  try:
    selection = io_utils.read_json(file)
  except ValueError as e:
    log.warning("Not reusing %s: it is not valid JSON (%s); selecting again.", file, e)
    return None
  recorded = selection.get("identity") if isinstance(selection, dict) else None
  if not isinstance(recorded, dict) or recorded.get("format") != IDENTITY_FORMAT:
    log.info("Not reusing %s: it records no identity of format %d (made by an older expert_hub); selecting "
             "again.", file, IDENTITY_FORMAT)
    return None
  wanted = _inputs_identity(candidates, cfg, image_size, session, proxies, generalist)
  diff = provenance.differences({k: v for k, v in recorded.items() if k != "task"}, wanted)
  if not diff:
    diff = provenance.differences(recorded.get("task"), fingerprint.task_identity(task, cfg.split), "task")
  if diff:
    log.info("Not reusing %s for task %s: it was made from other inputs (%s); selecting again.", file, task.name,
             "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else ""))
    return None
  log.info("Reusing %s for task %s: made from the same task data, candidates and config.", file, task.name)
  return selection


def selection_for_task(path, task):
  """The selection.json at `path` (a file or its folder) when it was made for this task's data: its recorded
  task name, number of classes and the fingerprint of the split it embedded equal `task`'s.

  Candidates and proxies are not compared: they are the choice of whoever ran the selection.

  Raises:
    FileNotFoundError: there is no selection.json.
    SelectionMismatchError: it records no task identity (an older expert_hub) or another task's (each
      differing field named with both values).
  """
  file = _selection_file(path)
  selection = io_utils.read_json(file, missing=f"No selection at {file}; run select_expert for this task first.")
  recorded = (selection.get("identity") or {}).get("task") if isinstance(selection, dict) else None
  if not isinstance(recorded, dict) or "split" not in recorded:
    raise SelectionMismatchError(
        f"{file} records no task identity (made by an older expert_hub, or by hand), so it cannot be shown to "
        f"rank experts for task {task.name!r}; run select_expert again for this task.")
  try:
    now = fingerprint.task_identity(task, recorded["split"])
  except (KeyError, ValueError) as e:
    raise SelectionMismatchError(f"{file} was made on split {recorded['split']!r} of task {recorded.get('name')!r}, "
                                 f"which task {task.name!r} cannot give ({e}).") from e
  diff = provenance.differences(recorded, now, "task")
  if diff:
    raise SelectionMismatchError(
        f"{file} ranks experts for other data than task {task.name!r}'s: {'; '.join(diff)}. Run select_expert "
        "for this task (in another workdir, or after removing that file).")
  return selection
