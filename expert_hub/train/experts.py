"""Expert training: one full or adapter expert per selected hierarchy node, initialised from the generalist,
and optionally the equal-compute control (the generalist trained on for a full expert's steps on all labels).

One compiled model per kind serves every expert: weights are re-loaded from the generalist, the optimiser is
zeroed and the loss's label mask is pointed at the next expert's labels, so Keras reuses its traced train step
instead of spending seconds tracing a new model per expert.
"""

import dataclasses
import logging
import os

import tensorflow as tf

from expert_hub import io_utils
from expert_hub import provenance
from expert_hub import seeds
from expert_hub.data import experts as experts_lib
from expert_hub.data import upstream as upstream_lib
from expert_hub.models import adapters as adapters_lib
from expert_hub.models import weights as weights_lib
from expert_hub.train import strategies
from expert_hub.train import trainer
from expert_hub.train import upstream

log = logging.getLogger(__name__)
KINDS = ("full", "adapter")
# The equal-compute control (ExpertsConfig.control): the generalist continued on all upstream labels with a full
# expert's recipe and steps, so an expert's gain can be told from the gain of training longer.
CONTROL = "control"
EXPERTS_FILE = "experts.json"
# An expert's subset of encoded upstream examples is held in memory when it fits this budget: streamed, each of
# its epochs reads the whole split (README, "Benchmarks": benchmark_expert_stream).
SUBSET_CACHE_BYTES = 2 << 30


def expert_dir(workdir, kind, name):
  return os.path.join(workdir, "experts", kind, name)


def plan_experts(cfg, data_dir, workdir, write=True):
  """Selects expert nodes by the config's rule and writes `<workdir>/experts.json` (if `write`); returns them."""
  builder = upstream_lib.get_builder(cfg.upstream.tfds_name, data_dir)
  hierarchy = upstream_lib.load_hierarchy(cfg.upstream, builder)
  labels = upstream_lib.load_labels(builder, cfg.upstream.train_split, cfg.upstream.label_key)
  counts = experts_lib.node_image_counts(hierarchy, labels)
  e = cfg.experts
  nodes = experts_lib.select_expert_nodes(hierarchy, counts, e.min_images, e.max_experts, e.min_depth,
                                          e.max_depth)
  if not nodes:
    raise ValueError(f"No hierarchy node holds min_images={e.min_images} upstream images at depth "
                     f"{e.min_depth}..{e.max_depth}; the largest non-root subtree has "
                     f"{max([c for n, c in counts.items() if n not in hierarchy.roots] or [0])}.")
  if write:
    io_utils.atomic_write_json(os.path.join(workdir, EXPERTS_FILE), {
        "upstream": cfg.upstream.name, "hierarchy": hierarchy.name,
        "experts": [{"name": n.expert_name, "node": n.node, "labels": list(n.labels), "num_images": n.num_images}
                    for n in nodes]})
  return nodes


def expert_made_from(kind, node, train_cfg, adapter_cfg, generalist_record, seed):
  """What an expert is made from (provenance): the generalist it starts from, its node's labels, its recipe
  and its seed (derived from the config's)."""
  return {"stage": f"{kind} expert", "generalist": provenance.digest(generalist_record), "node": node.node,
          "labels": list(node.labels), "train": train_cfg, "adapter_arch": adapter_cfg,
          "seed": seeds.derive(seed, "expert", kind, node.node)}


def train_experts(cfg, data_dir, workdir, kinds=None, names=None, strategy=None,
                  subset_cache_bytes=SUBSET_CACHE_BYTES):
  """Trains the selected experts of each kind; finished experts are skipped on re-run.

  Args:
    cfg: the pipeline Config.
    data_dir: TFDS data dir of the upstream.
    workdir: holds generalist/ (required) and receives experts/<kind>/<name>/.
    kinds: subset of ("full", "adapter"); default cfg.experts.kinds.
    names: train only these experts (by expert name); default all selected.
    strategy: a tf.distribute strategy.
    subset_cache_bytes: an expert's encoded upstream subset is held in memory when it fits this (0: never).

  Returns:
    {kind: {name: model info}}.
  """
  kinds = tuple(kinds or cfg.experts.kinds)
  for kind in kinds:
    if kind not in KINDS:
      raise ValueError(f"Unknown expert kind {kind!r}; expected one of {KINDS}.")
  generalist_dir = os.path.join(workdir, "generalist")
  generalist_info = upstream.read_model_info(generalist_dir)
  generalist_weights = weights_lib.load_weights(os.path.join(generalist_dir, upstream.WEIGHTS_FILE))
  strategy = strategy or tf.distribute.get_strategy()
  chief = strategies.is_chief(strategy)  # a multi-worker job's workers all train; only the chief writes
  nodes = plan_experts(cfg, data_dir, workdir, write=chief)
  if names:
    known = {n.expert_name: n for n in nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
      import difflib  # pylint: disable=g-import-not-at-top
      near = sorted({m for u in unknown for m in difflib.get_close_matches(u, list(known), n=3)})
      raise ValueError(f"Unknown expert(s) {unknown}; selected experts are {sorted(known)} "
                       f"(nearest: {near}).")
    nodes = [known[n] for n in names]
  builder = upstream_lib.get_builder(cfg.upstream.tfds_name, data_dir)
  hierarchy = upstream_lib.load_hierarchy(cfg.upstream, builder)
  num_labels = generalist_info["num_labels"]
  results = {}
  generalist_record = provenance.read(generalist_dir)
  jobs = [(kind, nodes) for kind in kinds]
  if cfg.experts.control and not names:
    all_labels = experts_lib.ExpertNode(CONTROL, tuple(range(num_labels)),
                                        builder.info.splits[cfg.upstream.train_split].num_examples)
    jobs.append((CONTROL, [all_labels]))
  for kind, kind_nodes in jobs:
    train_cfg = cfg.experts.adapter if kind == "adapter" else cfg.experts.full  # the control: a full expert's
    adapter_cfg = cfg.experts.adapter_arch if kind == "adapter" else None
    made_from = {n.expert_name: expert_made_from(kind, n, train_cfg, adapter_cfg, generalist_record, cfg.seed)
                 for n in kind_nodes}
    for n in kind_nodes:
      folder = expert_dir(workdir, kind, n.expert_name)
      provenance.check(folder, made_from[n.expert_name], f"{kind} expert {n.expert_name}",
                       has_output=upstream.is_trained(folder), write=chief)
    todo = [n for n in kind_nodes if not upstream.is_trained(expert_dir(workdir, kind, n.expert_name))]
    results[kind] = {n.expert_name: upstream.read_model_info(expert_dir(workdir, kind, n.expert_name))
                     for n in kind_nodes if n not in todo}
    for n in kind_nodes:
      if n not in todo:
        log.info("Expert %s/%s already trained; skipping.", kind, n.expert_name)
    if not todo:
      continue
    seeds.seed_everything(seeds.derive(cfg.seed, "expert", kind))  # the fresh adapters' initial weights
    with strategy.scope():
      model, loss = upstream.build_upstream_model(cfg.model, num_labels, train_cfg, adapter_cfg=adapter_cfg,
                                                  freeze_trunk=(kind == "adapter"), name=f"{kind}_expert")
    fresh_adapters = {k: v for k, v in weights_lib.get_weights(model).items()
                      if adapters_lib.is_adapter_layer(k)}
    for i, node in enumerate(todo):
      log.info("Training %s expert %d/%d: %s (%d images, %d labels).", kind, i + 1, len(todo),
               node.expert_name, node.num_images, len(node.labels))
      out = expert_dir(workdir, kind, node.expert_name)
      weights_lib.set_weights(model, {**generalist_weights, **fresh_adapters})
      trainer.reset_optimizer(model.optimizer)
      loss.set_labels(node.labels)
      # Before training the model is the generalist (adapters start as the identity): its precision on the
      # subset is the baseline that says whether the expert learnt anything the generalist had not.
      before = upstream.evaluate_upstream(model, builder, cfg.upstream, num_labels, node.labels)
      subset = None if kind == CONTROL else node.labels
      cache = subset is not None and upstream_lib.subset_fits_in_memory(
          builder, cfg.upstream.train_split, node.num_images, subset_cache_bytes)
      stream = upstream.make_upstream_stream(builder, cfg.upstream, train_cfg, num_labels, subset,
                                             seed=made_from[node.expert_name]["seed"], cache_subset=cache)
      result = trainer.fit(model, stream, train_cfg, out, name=f"{kind}/{node.expert_name}", strategy=strategy,
                           made_from=made_from[node.expert_name])
      result["eval_precision_at_1"] = upstream.evaluate_upstream(model, builder, cfg.upstream, num_labels,
                                                                 node.labels)
      result["generalist_eval_precision_at_1"] = before
      info = dict(generalist_info, kind=kind, node=None if kind == CONTROL else node.node, name=node.expert_name,
                  adapter=None if adapter_cfg is None else dataclasses.asdict(adapter_cfg),
                  labels=list(node.labels), label_names=[hierarchy.label_name(i) for i in node.labels],
                  num_images=node.num_images, train=result)
      if chief:
        weights_lib.save_weights(model, os.path.join(out, upstream.WEIGHTS_FILE))
        upstream.write_model_info(out, info)
      results[kind][node.expert_name] = info
  return results
