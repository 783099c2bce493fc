"""Choosing an expert for a task without touching upstream data: embed, score by one or more proxies, rank.

`cfg.proxy` (or the `proxies` argument) names the proxies, "knn" by default, several comma-separated
("knn,logme,leep"; see proxies.py for the names and their parameters). Modules come from a
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
   "generalist", "input_seconds": {expert: {"embed", "logits"}}, "seconds"}
"""

import os

from expert_hub import io_utils
from expert_hub.hub import session as session_lib
from expert_hub.selection import proxies as proxies_lib
from expert_hub.selection import scoring

PROXIES = proxies_lib.PROXIES
SELECTION_FILE = "selection.json"
EMBEDDINGS_DIR = "embeddings"


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
  tasks, workdirs = list(tasks), list(workdirs)
  if len(workdirs) != len(tasks):
    raise ValueError(f"{len(workdirs)} workdirs for {len(tasks)} tasks; expected one per task.")
  cache_dirs = [os.path.join(w, EMBEDDINGS_DIR) if use_cache else None for w in workdirs]
  scored = score_tasks(tasks, experts, cfg, image_size, session, proxies, generalist, strict, cache_dirs,
                       beam_options, staging_dir=workdirs[0] if workdirs else None)
  results = []
  for task, workdir, one in zip(tasks, workdirs, scored):
    result = _result(task.name, cfg.k, cfg.split, one, one["seconds"])
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
