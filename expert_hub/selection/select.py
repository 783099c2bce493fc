"""Choosing an expert for a task without touching upstream data: embed, score by one or more proxies, rank.

`cfg.proxy` (or the `proxies` argument) names the proxies, "knn" by default, several comma-separated
("knn,logme,leep"; see proxies.py for the names and their parameters). Each expert is loaded once; its features
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

import glob
import logging
import os
import re
import time

import numpy as np
import tensorflow as tf

from expert_hub import io_utils
from expert_hub.hub import export
from expert_hub.hub import loading
from expert_hub.hub import registry as registry_lib
from expert_hub.selection import cache as cache_lib
from expert_hub.selection import embed as embed_lib
from expert_hub.selection import proxies as proxies_lib
from expert_hub.train import trainer

log = logging.getLogger(__name__)
PROXIES = proxies_lib.PROXIES
SELECTION_FILE = "selection.json"
EMBEDDINGS_DIR = "embeddings"
_SHARD_FILE = "selection.shard-{index:05d}-of-{count:05d}.json"
_SHARD_RE = re.compile(r"selection\.shard-(\d{5})-of-(\d{5})\.json$")
_NO_LOGITS = ("the module has no `logits` endpoint (packed adapter experts, modules exported without an upstream "
              "head, and most published feature-vector modules have none)")


def _metadata(path):
  """expert.json of a module path, or of one expert of a pack ("<path>#<expert>"); {} when there is none."""
  base, _, packed = path.partition("#")
  if base.startswith(registry_lib.URL_PREFIXES) or not os.path.exists(os.path.join(base, export.METADATA_FILE)):
    return {}
  info = export.read_metadata(base)
  if packed:
    return dict(info.get("experts", {}).get(packed, {}), upstream=info.get("upstream"))
  return info


def find_generalist(registry, expert_paths, handle=None):
  """(path, None) of the generalist for these experts, or (None, why not).

  With `handle`, that module. Otherwise the latest version of the registry's generalist of the experts' upstream
  (read from their expert.json).
  """
  if handle:
    return registry.resolve(handle), None
  upstreams = {_metadata(p).get("upstream") for p in expert_paths} - {None}
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


def _generalist_inputs(handle, path, why_not, images, cfg, export_dirs, needs, cache, cache_key):
  """(fields for ProxyInputs from the generalist, missing reasons, seconds)."""
  fields, missing, t0 = {}, {}, time.time()
  if "generalist_logits" not in needs:
    return fields, missing, 0.0
  if path is None:
    missing["generalist_logits"] = missing["generalist_label_ids"] = why_not
    return fields, missing, 0.0
  module, _ = loading.load_module(path, export_dirs)
  label_ids = _metadata(path).get("labels")
  if not hasattr(module, "logits"):
    missing["generalist_logits"] = f"generalist {handle!r}: {_NO_LOGITS}"
  elif label_ids is None:
    missing["generalist_label_ids"] = f"generalist {handle!r} lists no 'labels' in its expert.json"
  else:
    logits, _ = cache.get_or_compute(handle, path, *cache_key, "logits", len(images),
                                     lambda: _logits(module, images, cfg.batch_size))
    fields = {"generalist_logits": logits, "generalist_label_ids": label_ids}
  return fields, missing, time.time() - t0


def _embed_packs(paths, images, cfg, export_dirs, cache, cache_key):
  """{expert: (features, seconds, from cache)} for candidates that share a pack: what the cache holds is read
  once here, and each pack embeds all of its uncached candidates with one embed.embed_pack call (the pack's
  `embed_all`, every expert in one graph, where it has one). The pack's seconds are shared equally among the
  experts it embedded."""
  by_path = {path: expert for expert, path in paths.items()}
  packs, _ = embed_lib.group_packed(list(paths.values()))
  out = {}
  for pack, names in packs.items():
    if len(names) < 2:
      continue  # Nothing to share: the per-expert path embeds (or reads) it.
    todo = []
    for name in names:
      expert, path = by_path[f"{pack}#{name}"], f"{pack}#{name}"
      features = cache.get(expert, path, *cache_key, "features", len(images))
      if features is None:
        todo.append(name)
      else:
        out[expert] = (features, 0.0, True)
    if not todo:
      continue
    t0 = time.time()
    module, _ = loading.load_module(pack, export_dirs)
    features = embed_lib.embed_pack(module, images, cfg.batch_size, experts=todo)
    seconds = (time.time() - t0) / len(todo)
    log.info("[select] pack %s: %d experts embedded together (%.0f img/s per expert)", pack, len(todo),
             len(images) / max(seconds, 1e-9))
    for name in todo:
      expert = by_path[f"{pack}#{name}"]
      cache.put(expert, f"{pack}#{name}", *cache_key, "features", features[name])
      out[expert] = (features[name], seconds, False)
  return out


def _expert_inputs(expert, path, images, cfg, export_dirs, needs, cache, cache_key, packed_features=None):
  """(fields for ProxyInputs from one expert, missing reasons, embed seconds, logits seconds, cached kinds).

  Arrays come from `packed_features` ((features, seconds, from cache), read or computed with the expert's pack)
  or from `cache` when it holds them for `cache_key` (task, split, image size); the module is loaded only when
  something must be computed.
  """
  fields, missing, cached = {}, {}, []
  embed_seconds = logits_seconds = 0.0
  if "label_ids" in needs:
    label_ids = _metadata(path).get("labels")
    if label_ids is None:
      missing["label_ids"] = "its expert.json lists no upstream 'labels'"
    fields["label_ids"] = label_ids
  module = None

  def loaded():
    nonlocal module
    if module is None:
      module, _ = loading.load_module(path, export_dirs)
    return module

  if "features" in needs and packed_features is not None:
    fields["features"], embed_seconds, hit = packed_features
    cached += ["features"] if hit else []
  elif "features" in needs:
    t0 = time.time()
    fields["features"], hit = cache.get_or_compute(
        expert, path, *cache_key, "features", len(images),
        lambda: embed_lib.embed(loaded(), images, cfg.batch_size))
    cached += ["features"] if hit else []
    embed_seconds = time.time() - t0
  if "logits" in needs:
    t1 = time.time()
    logits = cache.get(expert, path, *cache_key, "logits", len(images))
    if logits is not None:
      fields["logits"] = logits
      cached.append("logits")
    elif hasattr(loaded(), "logits"):
      fields["logits"] = _logits(loaded(), images, cfg.batch_size)
      cache.put(expert, path, *cache_key, "logits", fields["logits"])
    else:
      missing["logits"] = _NO_LOGITS
    logits_seconds = time.time() - t1
  return fields, missing, embed_seconds, logits_seconds, cached


def _score(proxy, inputs, strict, record):
  t0 = time.time()
  try:
    value, extras = proxy.score(inputs)
  except proxies_lib.MissingInputError as e:
    if strict:
      raise
    record["skipped"][inputs.expert] = str(e)
    return None
  seconds = time.time() - t0
  record["ranking"].append(dict({"expert": inputs.expert, "score": round(value, 6), "seconds": round(seconds, 4)},
                                **extras))
  record["seconds"] += seconds
  return value


def score_proxies(task, experts, cfg, image_size, export_dirs=None, proxies=None, generalist=None, strict=False,
                  cache_dir=None):
  """Scores each expert on the task's `cfg.split` with every requested proxy.

  Args:
    task: a tasks.Task.
    experts: list of expert handles (names, paths, URLs or "<pack>#<expert>").
    cfg: a SelectionConfig; `cfg.proxy` names the proxies unless `proxies` does; `cfg.k` and `cfg.backend` are
      knn's defaults.
    image_size: side the task images are resized to before embedding.
    export_dirs: where names are looked up.
    proxies: a spec string ("knn,logme,leep") or a list of them; None for cfg.proxy.
    generalist: the generalist's handle for Domain Prediction and the generalist reference; None to find it in
      the registry by the experts' upstream.
    strict: raise MissingInputError where a proxy lacks an input, instead of recording a skip.
    cache_dir: folder of the embedding cache (cache.py): features and logits found there for this task, split
      and image size are reused, computed ones are added; None caches nothing.

  Returns:
    {"proxies": {label: record}, "order": [labels], "num_examples", "generalist" (its handle or None),
     "generalist_seconds", "input_seconds": {expert: {"embed", "logits", "cached": [kinds read from the cache]}}}.

  Raises:
    ValueError: unknown proxies or parameters, no experts.
    KeyError: an unknown expert name (before any work).
  """
  parsed = proxies_lib.parse_proxies(cfg.proxy if proxies is None else proxies,
                                     defaults={"knn": {"k": cfg.k, "backend": cfg.backend}})
  if not experts:
    raise ValueError("No experts to select from; export some first (export_experts) or pass --experts.")
  registry = registry_lib.Registry(export_dirs)
  paths = {e: registry.resolve(e) for e in experts}  # Fail on an unknown name before any work.
  needs = set().union(*(p.requires for p in parsed))
  gen_path, gen_handle, why_not = None, None, None
  if needs & {"generalist_logits", "is_generalist"}:
    gen_path, why_not = find_generalist(registry, list(paths.values()), generalist)
    if gen_path is not None:
      gen_handle = _generalist_handle(registry, gen_path, paths, generalist)
  images, labels = embed_lib.prepare_images(task, cfg.split, image_size)
  cache, cache_key = cache_lib.EmbeddingCache(cache_dir), (task.name, cfg.split, image_size)
  gen_fields, gen_missing, gen_seconds = _generalist_inputs(gen_handle, gen_path, why_not, images, cfg, export_dirs,
                                                            needs, cache, cache_key)
  if gen_path is None and why_not:
    gen_missing["is_generalist"] = why_not
  records = {p.label: {"name": p.name, "params": {k: list(v) if isinstance(v, tuple) else v  # as JSON reads back
                                                  for k, v in p.params.items()},
                       "ranking": [], "skipped": {}, "seconds": 0.0} for p in parsed}
  input_seconds = {}
  start = time.time()
  packed = _embed_packs(paths, images, cfg, export_dirs, cache, cache_key) if "features" in needs else {}
  for i, (expert, path) in enumerate(paths.items()):
    t0 = time.time()
    fields, missing, embed_seconds, logits_seconds, cached = _expert_inputs(expert, path, images, cfg, export_dirs,
                                                                            needs, cache, cache_key,
                                                                            packed.get(expert))
    input_seconds[expert] = {"embed": round(embed_seconds, 3), "logits": round(logits_seconds, 3), "cached": cached}
    inputs = proxies_lib.ProxyInputs(
        labels=labels, expert=expert, task=task.name, is_generalist=None if gen_path is None else path == gen_path,
        missing=dict(gen_missing, **missing), **gen_fields, **fields)
    scores = {p.label: _score(p, inputs, strict, records[p.label]) for p in parsed}
    eta = (time.time() - start) / (i + 1) * (len(paths) - i - 1)
    shown = ", ".join(f"{k}={v:.4f}" if v is not None else f"{k}=skipped" for k, v in scores.items())
    log.info("[select %s] %d/%d %s: %s (%s) ETA %s", task.name, i + 1, len(paths), expert, shown,
             f"cached {'+'.join(cached)}" if cached else
             f"{len(images) / max(time.time() - t0 + packed.get(expert, (None, 0.0, False))[1], 1e-9):.0f} img/s",
             trainer.format_seconds(eta))
  for proxy in parsed:
    record = records[proxy.label]
    if proxy.name == "generalist" and gen_path is not None and gen_path not in paths.values():
      # The reference always picks the generalist, which is usually not among the candidate experts.
      _score(proxy, proxies_lib.ProxyInputs(expert=gen_handle, task=task.name, is_generalist=True), strict, record)
    record["ranking"].sort(key=lambda r: (-r["score"], r["expert"]))
    record["selected"] = record["ranking"][0]["expert"] if record["ranking"] else None
    record["seconds"] = round(record["seconds"], 3)
  return {"proxies": records, "order": [p.label for p in parsed], "num_examples": len(labels),
          "generalist": gen_handle, "generalist_seconds": round(gen_seconds, 3), "input_seconds": input_seconds}


def score_experts(task, experts, cfg, image_size, export_dirs=None):
  """The first proxy's ranking: (ranking best first, number of examples, kNN backend used or None)."""
  scored = score_proxies(task, experts, cfg, image_size, export_dirs)
  return _primary_ranking(scored), scored["num_examples"], _knn_backend(scored)


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


def parse_shard(spec):
  """"i/n" -> (i, n) with 0 <= i < n; None or "" -> None."""
  if not spec:
    return None
  m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
  if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
    raise ValueError(f"shard={spec!r}; expected 'i/n' with 0 <= i < n, e.g. '0/4' for the first of 4 shards.")
  return int(m.group(1)), int(m.group(2))


def shard_experts(experts, shard):
  """The experts shard (i, n) scores: every n-th of the list, starting at i (the same list on every machine)."""
  if shard is None:
    return list(experts)
  index, count = shard
  return list(experts)[index::count]


def _result(task_name, k, split, scored, seconds, require_primary=True):
  """selection.json's content from score_proxies' output (a shard may have no primary ranking)."""
  primary = scored["order"][0]
  ranking = _primary_ranking(scored) if require_primary or scored["proxies"][primary]["ranking"] else []
  return {"task": task_name, "proxy": primary, "k": k, "num_examples": scored["num_examples"], "split": split,
          "knn_backend": _knn_backend(scored), "selected": ranking[0]["expert"] if ranking else None,
          "ranking": ranking, "proxies": scored["proxies"], "generalist": scored["generalist"],
          "generalist_seconds": scored["generalist_seconds"], "input_seconds": scored["input_seconds"],
          "seconds": round(seconds, 3)}


def select_expert(task, experts, cfg, workdir, image_size, export_dirs=None, proxies=None, generalist=None,
                  strict=False, shard=None, use_cache=True):
  """Ranks experts for the task by every proxy and writes `<workdir>/selection.json`; returns its content.

  Arguments as in score_proxies; the first proxy decides "selected" and the top-level "ranking". Embeddings are
  cached in `<workdir>/embeddings/` (unless use_cache=False), so a re-run (other proxies, after an interruption)
  skips the experts already embedded.

  With shard=(i, n) (see parse_shard), only shard_experts(experts, shard) are scored and the result goes to
  `<workdir>/selection.shard-<i>-of-<n>.json` instead; merge_shards(workdir) combines the n shard files into
  selection.json. Shards may share the workdir (a shared file system) or be copied into one before merging.
  """
  t0 = time.time()
  mine = shard_experts(experts, shard)
  if not mine:
    raise ValueError(f"Shard {shard[0]}/{shard[1]} of {len(experts)} experts is empty; use at most "
                     f"{len(experts)} shards.")
  cache_dir = os.path.join(workdir, EMBEDDINGS_DIR) if use_cache else None
  scored = score_proxies(task, mine, cfg, image_size, export_dirs, proxies, generalist, strict, cache_dir)
  result = _result(task.name, cfg.k, cfg.split, scored, time.time() - t0, require_primary=shard is None)
  if shard is None:
    io_utils.atomic_write_json(os.path.join(workdir, SELECTION_FILE), result)
  else:
    result.update(shard=list(shard), shard_experts=mine, num_candidates=len(experts))
    io_utils.atomic_write_json(os.path.join(workdir, _SHARD_FILE.format(index=shard[0], count=shard[1])), result)
  return result


def merge_shards(workdir):
  """Combines `<workdir>/selection.shard-*-of-<n>.json` into `<workdir>/selection.json`; returns its content.

  Raises:
    FileNotFoundError: no shard files, or some of the n shards are missing (named).
    ValueError: shards of different runs (task, split, k, proxies, example count or shard count differ), or an
      expert scored by two shards.
  """
  found = {}
  for path in glob.glob(os.path.join(workdir, "selection.shard-*-of-*.json")):
    m = _SHARD_RE.search(os.path.basename(path))
    if m:
      found[(int(m.group(1)), int(m.group(2)))] = path
  if not found:
    raise FileNotFoundError(f"No selection shard files (selection.shard-<i>-of-<n>.json) in {workdir}; run "
                            "select_expert --shard=i/n first.")
  counts = sorted({n for _, n in found})
  if len(counts) != 1:
    raise ValueError(f"Shard files in {workdir} come from different shard counts {counts}; keep one run's.")
  count = counts[0]
  missing = [i for i in range(count) if (i, count) not in found]
  if missing:
    raise FileNotFoundError(f"Shards {missing} of {count} have not written their files to {workdir} yet.")
  shards = [io_utils.read_json(found[(i, count)]) for i in range(count)]
  first = shards[0]
  for i, sh in enumerate(shards[1:], 1):
    for key in ("task", "split", "k", "num_examples", "proxy", "num_candidates"):
      if sh[key] != first[key]:
        raise ValueError(f"Shard {i} has {key}={sh[key]!r} but shard 0 has {first[key]!r}: not the same run.")
    if list(sh["proxies"]) != list(first["proxies"]):
      raise ValueError(f"Shard {i} ranks proxies {list(sh['proxies'])}, shard 0 {list(first['proxies'])}.")
  owner = {}
  for i, sh in enumerate(shards):
    for expert in sh["shard_experts"]:
      if expert in owner:
        raise ValueError(f"Expert {expert!r} was scored by shards {owner[expert]} and {i}.")
      owner[expert] = i
  records = {}
  for label, rec in first["proxies"].items():
    ranking, skipped = {}, {}
    for sh in shards:
      for r in sh["proxies"][label]["ranking"]:
        ranking.setdefault(r["expert"], r)  # The generalist reference appears in every shard: keep one.
      skipped.update(sh["proxies"][label]["skipped"])
    ordered = sorted(ranking.values(), key=lambda r: (-r["score"], r["expert"]))
    records[label] = dict(rec, ranking=ordered, skipped=skipped, selected=ordered[0]["expert"] if ordered else None,
                          seconds=round(sum(sh["proxies"][label]["seconds"] for sh in shards), 3))
  scored = {"proxies": records, "order": list(records), "num_examples": first["num_examples"],
            "generalist": first["generalist"],
            "generalist_seconds": round(sum(sh["generalist_seconds"] for sh in shards), 3),
            "input_seconds": {e: t for sh in shards for e, t in sh["input_seconds"].items()}}
  result = _result(first["task"], first["k"], first["split"], scored, sum(sh["seconds"] for sh in shards))
  result["shards"] = count
  io_utils.atomic_write_json(os.path.join(workdir, SELECTION_FILE), result)
  return result
