"""Scoring experts for many tasks at once, expert-major: each module is taken from the session once and embeds
every task's images before the next module is touched. Our modules embed through the session's shared
embedding template (their weights restored into a Keras backbone traced once per architecture, no graph load);
packs through their own `embed_all`; other modules through their loaded `__call__`.

Embedding a task's images is nearly all of selection's cost, and a module's first use (load, verification,
tracing) costs more than embedding 1,000 small images with it; looping task-major reloaded every module per task.
Here the loop is: for each unit (one module, or one pack with all its candidate experts, embedded together by
`embed_all`), for each task, compute (or read from the embedding cache) the inputs the proxies need, score every
proxy, and drop the arrays. Task images are held for a group of tasks at a time, grouped so that their float32
images stay under `max_image_bytes` (a 1,000-image task is 12 MB at 32 px, 600 MB at 224 px).

Per task the output is what select.py writes to selection.json (see select.py for the schema).
"""

import dataclasses
import logging
import time

import numpy as np
import tensorflow as tf

from expert_hub.selection import cache as cache_lib
from expert_hub.selection import embed as embed_lib
from expert_hub.selection import proxy_registry
from expert_hub.train import trainer

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 2 << 30
NO_LOGITS = ("the module has no `logits` endpoint (packed adapter experts, modules exported without an upstream "
             "head, and most published feature-vector modules have none)")


def find_generalist(session, expert_paths, handle=None):
  """(path, None) of the generalist for these experts, or (None, why not).

  With `handle`, that module. Otherwise the latest version of the registry's generalist of the experts' upstream
  (read from their expert.json).
  """
  registry = session.registry
  if handle:
    return session.resolve(handle), None
  upstreams = {session.metadata(p).get("upstream") for p in expert_paths} - {None}
  if len(upstreams) != 1:
    return None, (f"no generalist: the experts come from upstreams {sorted(upstreams)}, expected exactly one to "
                  "find it by (pass generalist= / --generalist)")
  upstream = upstreams.pop()
  found = [e for e in registry.entries() if e.metadata.get("kind") == "generalist" and e.upstream == upstream]
  if not found:
    return None, (f"no generalist of upstream {upstream!r} in export dirs {registry.export_dirs} (pass "
                  "generalist= / --generalist)")
  return max(found, key=lambda e: e.version).path, None


def _generalist_handle(registry, gen_path, paths, given):
  """How rankings name the generalist: as the candidates name it if it is one, else as given, else as the
  candidates name experts (a path if they were all given as paths, otherwise "upstream/name/version")."""
  for expert, path in paths.items():
    if path == gen_path:
      return expert
  if given:
    return given
  if all(e == p for e, p in paths.items()):
    return gen_path
  entry = next((e for e in registry.entries() if e.path == gen_path), None)
  return entry.qualified_name if entry else gen_path


def _logits(module, images, batch_size):
  out = []
  for start in range(0, len(images), batch_size):
    out.append(module.logits(tf.constant(images[start:start + batch_size])).numpy())
  return np.concatenate(out)


def _units(paths):
  """The order modules are visited: [(pack path, [(expert, packed name), ...])] for packs with 2+ candidates,
  [(None, [(expert, None)])] for every other candidate; first-seen order."""
  by_path = {path: expert for expert, path in paths.items()}
  packs, _ = embed_lib.group_packed(list(paths.values()))
  shared = {pack: names for pack, names in packs.items() if len(names) >= 2}
  units, seen = [], set()
  for expert, path in paths.items():
    pack = path.rsplit("#", 1)[0] if "#" in path else None
    if pack in shared:
      if pack not in seen:
        seen.add(pack)
        units.append((pack, [(by_path[f"{pack}#{n}"], n) for n in shared[pack]]))
    else:
      units.append((None, [(expert, None)]))
  return units


def _task_groups(tasks, make_state, max_image_bytes):
  """Yields {task index: _TaskState} groups whose images together stay under max_image_bytes (a task larger
  than that alone forms its own group)."""
  group, used = {}, 0
  for i in range(len(tasks)):
    state = make_state(i)
    if group and used + state.images.nbytes > max_image_bytes:
      yield group
      group, used = {}, 0
    group[i] = state
    used += state.images.nbytes
  if group:
    yield group


@dataclasses.dataclass
class Plan:
  """What every (module, task) step needs to know: proxies, resolved candidates, the generalist, visit order.

  Built by make_plan from the same arguments on every machine (Beam workers build their own), so it is never
  pickled.
  """
  cfg: object
  parsed: list
  paths: dict  # expert handle -> resolved handle
  needs: set
  gen_path: object
  gen_handle: object
  why_not: object
  units: list  # see _units
  strict: bool


def make_plan(experts, cfg, session, proxies=None, generalist=None, strict=False):
  """Parses the proxies and resolves every candidate (an unknown name fails here, before any work)."""
  parsed = proxy_registry.parse_proxies(cfg.proxy if proxies is None else proxies,
                                     defaults={"knn": {"k": cfg.k, "backend": cfg.backend}})
  if not experts:
    raise ValueError("No experts to select from; export some first (export_experts) or pass --experts.")
  paths = {e: session.resolve(e) for e in experts}
  needs = set().union(*(p.requires for p in parsed))
  gen_path, gen_handle, why_not = None, None, None
  if needs & {"generalist_logits", "is_generalist"}:
    gen_path, why_not = find_generalist(session, list(paths.values()), generalist)
    if gen_path is not None:
      gen_handle = _generalist_handle(session.registry, gen_path, paths, generalist)
  units = _units(paths) if "features" in needs else [(None, [(e, None)]) for e in paths]
  return Plan(cfg, parsed, paths, needs, gen_path, gen_handle, why_not, units, strict)


def empty_partial(plan):
  """Scores of no expert yet: what score_unit returns for one (module, task), and merge_partials combines."""
  return {"records": {p.label: {"ranking": [], "skipped": {}, "seconds": 0.0} for p in plan.parsed},
          "input_seconds": {}, "seconds": 0.0, "num_examples": 0, "generalist_seconds": 0.0,
          "prepare_seconds": 0.0, "data": None}


def merge_partials(plan, partials):
  """One task's partials (from any modules, workers, in any order) -> one partial; each expert once."""
  out = empty_partial(plan)
  for part in partials:
    twice = set(part["input_seconds"]) & set(out["input_seconds"])
    if twice:
      raise ValueError(f"Experts {sorted(twice)} were scored twice for one task; each must be scored once.")
    for label, record in part["records"].items():
      out["records"][label]["ranking"] += record["ranking"]
      out["records"][label]["skipped"].update(record["skipped"])
      out["records"][label]["seconds"] += record["seconds"]
    out["input_seconds"].update(part["input_seconds"])
    out["seconds"] += part["seconds"]
    for key in ("num_examples", "generalist_seconds", "prepare_seconds"):  # the same task: the same values
      out[key] = max(out[key], part[key])
    data = part.get("data")
    if data is not None and out["data"] is not None and data != out["data"]:
      # Workers (or task groups) read different images for one task: its scores would mix two datasets.
      raise ValueError(f"One task's data was read as two different contents ({out['data']} and {data}); the "
                       "task's source changed during selection, or reads it non-deterministically.")
    out["data"] = out["data"] or data
  return out


class TaskState:
  """One task's images, labels, generalist inputs and embedding cache while its modules are scored."""

  def __init__(self, task, plan, image_size, cache_dir, session):
    t0 = time.time()
    self.task = task
    # One pass reads, resizes and fingerprints the split: the cache is keyed by its content, not its name.
    self.images, self.labels, self.data = embed_lib.load_split(task, plan.cfg.split, image_size)
    self.cache = cache_lib.EmbeddingCache(cache_dir)
    self.key = (self.data["fingerprint"], plan.cfg.split, image_size)
    self.prepare_seconds = time.time() - t0
    self.gen_fields, self.gen_missing, self.gen_seconds = {}, {}, 0.0
    _generalist_inputs(self, plan.gen_handle, plan.gen_path, plan.why_not, plan.cfg, session, plan.needs)

  def score_unit(self, plan, unit, session):
    """A partial (empty_partial's form) with every expert of one unit (a module, or a pack's candidates)."""
    t0 = time.time()
    pack, members = unit
    part = empty_partial(plan)
    part.update(num_examples=len(self.labels), generalist_seconds=self.gen_seconds,
                prepare_seconds=self.prepare_seconds, data=self.data)
    packed = _pack_features(self, pack, members, plan.cfg, session) if pack is not None else {}
    for expert, _ in members:
      path = plan.paths[expert]
      fields, missing, embed_s, logits_s, cached = _expert_inputs(self, expert, path, plan.cfg, session,
                                                                  plan.needs, packed.get(expert))
      part["input_seconds"][expert] = {"embed": round(embed_s, 3), "logits": round(logits_s, 3), "cached": cached}
      inputs = proxy_registry.ProxyInputs(
          labels=self.labels, expert=expert, task=self.task.name,
          is_generalist=None if plan.gen_path is None else path == plan.gen_path,
          missing=dict(self.gen_missing, **missing), **self.gen_fields, **fields)
      scores = {p.label: _score(p, inputs, plan.strict, part["records"][p.label]) for p in plan.parsed}
      shown = ", ".join(f"{k}={v:.4f}" if v is not None else f"{k}=skipped" for k, v in scores.items())
      log.info("[select %s] %s: %s%s", self.task.name, expert, shown,
               f" (cached {'+'.join(cached)})" if cached else "")
    part["seconds"] = time.time() - t0
    return part


def _generalist_inputs(state, handle, path, why_not, cfg, session, needs):
  """Fills state.gen_fields / gen_missing / gen_seconds from the generalist's logits."""
  t0 = time.time()
  if "generalist_logits" in needs:
    if path is None:
      state.gen_missing["generalist_logits"] = state.gen_missing["generalist_label_ids"] = why_not
    else:
      module, _ = session.module(path)
      label_ids = session.metadata(path).get("labels")
      if not hasattr(module, "logits"):
        state.gen_missing["generalist_logits"] = f"generalist {handle!r}: {NO_LOGITS}"
      elif label_ids is None:
        state.gen_missing["generalist_label_ids"] = f"generalist {handle!r} lists no 'labels' in its expert.json"
      else:
        logits, _ = state.cache.get_or_compute(handle, path, *state.key, "logits", len(state.images),
                                               lambda: _logits(module, state.images, cfg.batch_size))
        state.gen_fields = {"generalist_logits": logits, "generalist_label_ids": label_ids}
  if path is None and why_not:
    state.gen_missing["is_generalist"] = why_not
  state.gen_seconds = time.time() - t0


def _pack_features(state, pack, members, cfg, session):
  """{expert: (features, seconds, from cache)} for a pack's candidates on one task: cached ones are read, the
  rest embedded by one embed.embed_pack call, whose seconds are shared equally among them."""
  out, todo = {}, []
  for expert, name in members:
    features = state.cache.get(expert, f"{pack}#{name}", *state.key, "features", len(state.images))
    if features is None:
      todo.append((expert, name))
    else:
      out[expert] = (features, 0.0, True)
  if todo:
    t0 = time.time()
    module, _ = session.module(pack)
    features = embed_lib.embed_pack(module, state.images, cfg.batch_size, experts=[n for _, n in todo])
    seconds = (time.time() - t0) / len(todo)
    log.info("[select %s] pack %s: %d experts embedded together (%.0f img/s per expert)", state.task.name, pack,
             len(todo), len(state.images) / max(seconds, 1e-9))
    for expert, name in todo:
      state.cache.put(expert, f"{pack}#{name}", *state.key, "features", features[name])
      out[expert] = (features[name], seconds, False)
  return out


def _expert_inputs(state, expert, path, cfg, session, needs, packed_features=None):
  """(fields for ProxyInputs from one expert on one task, missing reasons, embed seconds, logits seconds,
  kinds read from the cache). The module is taken from the session only when something must be computed."""
  fields, missing, cached = {}, {}, []
  embed_seconds = logits_seconds = 0.0
  images = state.images
  if "label_ids" in needs:
    label_ids = session.metadata(path).get("labels")
    if label_ids is None:
      missing["label_ids"] = "its expert.json lists no upstream 'labels'"
    fields["label_ids"] = label_ids
  loaded = lambda: session.module(path)[0]
  if "features" in needs and packed_features is not None:
    fields["features"], embed_seconds, hit = packed_features
    cached += ["features"] if hit else []
  elif "features" in needs:
    t0 = time.time()
    fields["features"], hit = state.cache.get_or_compute(
        expert, path, *state.key, "features", len(images),
        lambda: embed_lib.embed(session.embedder(path), images, cfg.batch_size))
    cached += ["features"] if hit else []
    embed_seconds = time.time() - t0
  if "logits" in needs:
    t1 = time.time()
    logits = state.cache.get(expert, path, *state.key, "logits", len(images))
    if logits is not None:
      fields["logits"] = logits
      cached.append("logits")
    elif hasattr(loaded(), "logits"):
      fields["logits"] = _logits(loaded(), images, cfg.batch_size)
      state.cache.put(expert, path, *state.key, "logits", fields["logits"])
    else:
      missing["logits"] = NO_LOGITS
    logits_seconds = time.time() - t1
  return fields, missing, embed_seconds, logits_seconds, cached


def _score(proxy, inputs, strict, record):
  t0 = time.time()
  try:
    value, extras = proxy.score(inputs)
  except proxy_registry.MissingInputError as e:
    if strict:
      raise
    record["skipped"][inputs.expert] = str(e)
    return None
  seconds = time.time() - t0
  record["ranking"].append(dict({"expert": inputs.expert, "score": round(value, 6), "seconds": round(seconds, 4)},
                                **extras))
  record["seconds"] += seconds
  return value


def score_tasks(tasks, experts, cfg, image_size, session, proxies=None, generalist=None, strict=False,
                cache_dirs=None, max_image_bytes=MAX_IMAGE_BYTES):
  """Scores each expert on each task's `cfg.split` with every requested proxy, expert-major, in this process.

  Args:
    tasks: tasks.Task objects.
    experts: expert handles (names, paths, URLs or "<pack>#<expert>"), the same candidates for every task.
    cfg: a SelectionConfig; `cfg.proxy` names the proxies unless `proxies` does; `cfg.k` and `cfg.backend` are
      knn's defaults.
    image_size: side the task images are resized to before embedding.
    session: the session.ModuleSession modules come from (each loaded at most once).
    proxies: a spec string ("knn,logme,leep") or a list of them; None for cfg.proxy.
    generalist: the generalist's handle for Domain Prediction and the generalist reference; None to find it in
      the registry by the experts' upstream.
    strict: raise MissingInputError where a proxy lacks an input, instead of recording a skip.
    cache_dirs: per task, the folder of its embedding cache (cache.py), or None to cache nothing.
    max_image_bytes: the float32 task images held at once (tasks are scored in groups that fit).

  Returns:
    Per task, in order: {"proxies": {label: record}, "order": [labels], "num_examples", "generalist" (its
    handle or None), "generalist_seconds", "input_seconds": {expert: {"embed", "logits", "cached"}},
    "data" (the split's fingerprint record, tasks/fingerprint.py), "seconds" (this task's share: its images,
    inputs and scoring)}.

  Raises:
    ValueError: unknown proxies or parameters, no experts.
    KeyError: an unknown expert name (before any work).
  """
  tasks = list(tasks)
  cache_dirs = list(cache_dirs) if cache_dirs is not None else [None] * len(tasks)
  if len(cache_dirs) != len(tasks):
    raise ValueError(f"{len(cache_dirs)} cache dirs for {len(tasks)} tasks; expected one per task.")
  plan = make_plan(experts, cfg, session, proxies, generalist, strict)
  out = [None] * len(tasks)
  start, done, total = time.time(), 0, len(plan.units) * len(tasks)
  make_state = lambda i: TaskState(tasks[i], plan, image_size, cache_dirs[i], session)
  for states in _task_groups(tasks, make_state, max_image_bytes):
    partials = {i: [] for i in states}
    for unit in plan.units:
      for i, state in states.items():
        partials[i].append(state.score_unit(plan, unit, session))
        done += 1
        elapsed = time.time() - start
        log.info("[select] %d/%d (module x task) done, %.2f/s, ETA %s", done, total, done / max(elapsed, 1e-9),
                 trainer.format_seconds(elapsed / done * (total - done)))
    for i, state in states.items():
      out[i] = finish(plan, state.task.name, merge_partials(plan, partials[i]))
  return out


def finish(plan, task_name, partial):
  """A task's merged partial -> its scores: rankings sorted best first, the generalist reference added."""
  records = {}
  for proxy in plan.parsed:
    record = dict(partial["records"][proxy.label], name=proxy.name,
                  params={k: list(v) if isinstance(v, tuple) else v for k, v in proxy.params.items()})  # as JSON
    record = {k: record[k] for k in ("name", "params", "ranking", "skipped", "seconds")}
    record["ranking"] = list(record["ranking"])
    if proxy.name == "generalist" and plan.gen_path is not None and plan.gen_path not in plan.paths.values():
      # The reference always picks the generalist, which is usually not among the candidate experts.
      _score(proxy, proxy_registry.ProxyInputs(expert=plan.gen_handle, task=task_name, is_generalist=True),
             plan.strict, record)
    record["ranking"].sort(key=lambda r: (-r["score"], r["expert"]))
    record["selected"] = record["ranking"][0]["expert"] if record["ranking"] else None
    record["seconds"] = round(record["seconds"], 3)
    records[proxy.label] = record
  seconds = partial["seconds"] + partial["prepare_seconds"] + partial["generalist_seconds"]
  return {"proxies": records, "order": [p.label for p in plan.parsed], "num_examples": partial["num_examples"],
          "generalist": plan.gen_handle, "generalist_seconds": round(partial["generalist_seconds"], 3),
          "input_seconds": partial["input_seconds"], "data": partial.get("data"), "seconds": round(seconds, 3)}
