"""Choosing an expert for a task without touching upstream data: embed, score by kNN, rank.

Writes `<workdir>/selection.json`:
  {"task", "proxy", "k", "num_examples", "selected",
   "ranking": [{"expert", "score", "embed_seconds", "knn_seconds"}, ...] (best first), "seconds"}
"""

import logging
import os
import time

from expert_hub import io_utils
from expert_hub.hub import registry as registry_lib
from expert_hub.selection import embed as embed_lib
from expert_hub.selection import knn
from expert_hub.train import trainer

log = logging.getLogger(__name__)
PROXIES = ("knn",)
SELECTION_FILE = "selection.json"


def score_experts(task, experts, cfg, image_size, export_dirs=None):
  """Scores each expert on the task's `cfg.split` with the kNN proxy.

  Args:
    task: a tasks.Task.
    experts: list of expert handles (names, paths or URLs).
    cfg: a SelectionConfig.
    image_size: side the task images are resized to before embedding.
    export_dirs: where names are looked up.

  Returns:
    (ranking best first, number of examples, kNN backend used).
  """
  if cfg.proxy not in PROXIES:
    raise ValueError(f"Unknown proxy {cfg.proxy!r}; expected one of {PROXIES}.")
  if not experts:
    raise ValueError("No experts to select from; export some first (export_experts) or pass --experts.")
  registry = registry_lib.Registry(export_dirs)
  paths = {e: registry.resolve(e) for e in experts}  # Fail on an unknown name before any work.
  images, labels = embed_lib.prepare_images(task, cfg.split, image_size)
  ranking, backend = [], None
  start = time.time()
  for i, (expert, path) in enumerate(paths.items()):
    t0 = time.time()
    features, embed_seconds = embed_lib.timed_embed(path, images, cfg.batch_size, export_dirs)
    t1 = time.time()
    score, backend = knn.leave_one_out_accuracy(features, labels, cfg.k, cfg.backend)
    knn_seconds = time.time() - t1
    ranking.append({"expert": expert, "score": round(score, 4), "embed_seconds": round(embed_seconds, 3),
                    "knn_seconds": round(knn_seconds, 3)})
    eta = (time.time() - start) / (i + 1) * (len(paths) - i - 1)
    log.info("[select %s] %d/%d %s: kNN=%.4f (%.0f img/s) ETA %s", task.name, i + 1, len(paths), expert, score,
             len(images) / max(time.time() - t0, 1e-9), trainer.format_seconds(eta))
  ranking.sort(key=lambda r: (-r["score"], r["expert"]))
  return ranking, len(labels), backend


def select_expert(task, experts, cfg, workdir, image_size, export_dirs=None):
  """Ranks experts for the task and writes `<workdir>/selection.json`; returns its content."""
  t0 = time.time()
  ranking, n, backend = score_experts(task, experts, cfg, image_size, export_dirs)
  result = {"task": task.name, "proxy": cfg.proxy, "k": cfg.k, "num_examples": n, "split": cfg.split,
            "knn_backend": backend, "selected": ranking[0]["expert"], "ranking": ranking,
            "seconds": round(time.time() - t0, 3)}
  io_utils.atomic_write_json(os.path.join(workdir, SELECTION_FILE), result)
  return result
