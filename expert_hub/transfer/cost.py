"""What transferring to one new task costs, three ways, measured side by side (the paper's headline claim).

  (a) expert_hub: embed the task with every expert, kNN-score them, fine-tune the pick once;
  (b) oracle: fine-tune every expert, keep the best;
  (c) DAT: re-sample the upstream data towards the task, continue the generalist on it for a full expert's
      budget, fine-tune once (transfer/dat.py).
Cost is wall seconds (measured) and compute: images through the network times forward FLOPs per image, with a
training image counted as 3 forward passes (forward + backward). The one-off costs every task shares — the
generalist and the experts — are reported apart, with their amortisation over the number of tasks.
"""

import logging
import os
import time

import numpy as np
import tensorflow as tf

from expert_hub import io_utils
from expert_hub import report
from expert_hub.hub import export_trained
from expert_hub.models import resnet_v2
from expert_hub.selection import embed as embed_lib
from expert_hub.selection import select
from expert_hub.train import upstream as upstream_train
from expert_hub.transfer import dat
from expert_hub.transfer import finetune as finetune_lib

log = logging.getLogger(__name__)
TRAIN_PASSES = 3  # forward + backward of a training image, in forward-pass units


def forward_flops(model_cfg, image_size):
  """FLOPs of one image through the backbone of model_cfg at image_size (see flops_per_image)."""
  backbone = resnet_v2.build_backbone(model_cfg, name="flops_probe")
  return flops_per_image(lambda x: backbone(x, training=False), image_size)


def flops_per_image(fn, image_size):
  """FLOPs of one image through fn(images) at image_size (TF's graph profiler; multiply-add = 2 FLOPs).

  Counted as the difference between batches of 2 and 1, so per-batch work that does not grow with images
  (weight standardisation of the kernels) is left out. Works for any Keras model, ours or a peer's.
  """
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-import-not-at-top
  traced = tf.function(fn)
  opts = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()).with_empty_output()
  total = {}
  for batch in (1, 2):
    graph = traced.get_concrete_function(tf.TensorSpec([batch, image_size, image_size, 3], tf.float32)).graph
    total[batch] = int(model_analyzer.profile(graph, options=opts.build()).total_float_ops)
  return total[2] - total[1]


def _finetune_images(result):
  return result["steps"] * result["batch_size"]


def measure_task(task, cfg, workdir, export_dir, modules, data_dir, flops, session):
  """Costs and accuracies of (a), (b), (c) for one task; cached in `<workdir>/cost/<task>.json`.

  Selection writes `<workdir>/cost/<task>/selection.json`; the DAT model trains in `<workdir>/dat/<task>/`.
  """
  task_dir = os.path.join(workdir, "cost", task.name.replace("/", "_").replace(":", "_"))
  out = task_dir + ".json"
  if os.path.exists(out):
    log.info("Cost of %s already measured; reusing %s.", task.name, out)
    return io_utils.read_json(out)
  image_size = cfg.upstream.image_size
  handles = {n: f"{cfg.upstream.name}/{n}/{cfg.version}" for n in modules}
  experts = sorted(n for n in modules if n != "generalist")
  f_embed, f_train, f_finetune = flops["embed"], flops["upstream_train"], flops["finetune_train"]
  finetuner = finetune_lib.Finetuner(task, cfg.finetune, session=session)

  # (a) select with the kNN proxy over all experts, fine-tune the pick once.
  t0 = time.time()
  os.makedirs(task_dir, exist_ok=True)
  selection = select.select_expert(task, [handles[n] for n in experts], cfg.selection, task_dir, image_size,
                                   use_cache=False, session=session)  # A cost measurement: embed all.
  select_s = time.time() - t0
  picked = {h: n for n, h in handles.items()}[selection["selected"]]
  runs = {picked: finetuner.run(handles[picked])}
  n_select = selection["num_examples"]
  a = {"seconds": select_s + runs[picked]["seconds"],
       "flops": len(experts) * n_select * f_embed + TRAIN_PASSES * _finetune_images(runs[picked]) * f_finetune,
       "accuracy": runs[picked]["test_accuracy"], "expert": picked,
       "parts": {"selection_s": round(select_s, 2), "finetune_s": runs[picked]["seconds"]}}

  # (b) fine-tune every expert and keep the best.
  for name in experts:
    if name not in runs:
      runs[name] = finetuner.run(handles[name])
  best = max(experts, key=lambda n: runs[n]["test_accuracy"])
  b = {"seconds": sum(runs[n]["seconds"] for n in experts),
       "flops": sum(TRAIN_PASSES * _finetune_images(runs[n]) * f_finetune for n in experts),
       "accuracy": runs[best]["test_accuracy"], "expert": best}

  # (c) DAT: the generalist's view of the task re-weights upstream; train for a full expert's budget; fine-tune.
  t0 = time.time()
  images, _ = embed_lib.prepare_images(task, cfg.selection.split, image_size)
  target = dat.target_label_distribution(handles["generalist"], images, session)
  estimate_s = time.time() - t0
  info = dat.train_dat(cfg, data_dir, workdir, task.name, target)
  train_s = info["train"]["seconds"]  # as measured when trained (a resumed run reports its own share only)
  t0 = time.time()
  path = export_trained.export_model_dir(dat.dat_dir(workdir, task.name), export_dir, info["name"], cfg.version)
  export_s = time.time() - t0
  run = finetuner.run(path)
  dat_images = info["train"]["steps"] * cfg.experts.full.batch_size
  c = {"seconds": estimate_s + train_s + export_s + run["seconds"],
       "flops": (len(images) * f_embed + TRAIN_PASSES * dat_images * f_train
                 + TRAIN_PASSES * _finetune_images(run) * f_finetune),
       "accuracy": run["test_accuracy"], "acceptance": info["acceptance"],
       "top_target_labels": info["top_target_labels"],
       "parts": {"estimate_s": round(estimate_s, 2), "upstream_train_s": round(train_s, 2),
                 "export_s": round(export_s, 2), "finetune_s": run["seconds"]}}
  # What each route spends before its one fine-tune, which both pay: selection's embeddings vs DAT's estimate
  # and upstream training.
  a["flops_before_finetune"] = len(experts) * n_select * f_embed
  c["flops_before_finetune"] = len(images) * f_embed + TRAIN_PASSES * dat_images * f_train
  result = {"task": task.name, "domain": task.domain, "a_expert_hub": a, "b_oracle": b, "c_dat": c,
            "ratios": {"b/a seconds": b["seconds"] / a["seconds"], "c/a seconds": c["seconds"] / a["seconds"],
                       "b/a flops": b["flops"] / a["flops"], "c/a flops": c["flops"] / a["flops"],
                       "c/a flops before finetune": c["flops_before_finetune"] / a["flops_before_finetune"]},
            "finetune_accuracy": {n: r["test_accuracy"] for n, r in runs.items()}}
  io_utils.atomic_write_json(out, result)
  return result


def budget_ratios(num_experts, select_images, dat_train_images, finetune_images, flops):
  """Compute of (a) and (c) for one task from budgets alone (no training): how the ratio scales with them.

  The measured run reports what the world's small budgets cost; this gives the same accounting for any
  budgets, e.g. the paper config's (a full expert's 10,000 steps at batch 4096 for DAT, 48 experts, a VTAB-1k
  task's 1,000 images and BiT-HyperRule's 500 steps at batch 512), so the claim can be checked where the runs are
  too big to make here. FLOPs as in measure_task: `flops` = {"embed", "upstream_train", "finetune_train"} per
  image forward, a training image counted as TRAIN_PASSES forwards.
  """
  for name, value in (("num_experts", num_experts), ("select_images", select_images),
                      ("dat_train_images", dat_train_images), ("finetune_images", finetune_images)):
    if value <= 0:
      raise ValueError(f"{name}={value}; expected a positive count.")
  finetune = TRAIN_PASSES * finetune_images * flops["finetune_train"]
  a_select = num_experts * select_images * flops["embed"]
  c_upstream = select_images * flops["embed"] + TRAIN_PASSES * dat_train_images * flops["upstream_train"]
  return {"a_flops": a_select + finetune, "c_flops": c_upstream + finetune, "finetune_flops": finetune,
          "c/a flops": (c_upstream + finetune) / (a_select + finetune),
          "c/a flops before finetune": c_upstream / a_select}


def budget_markdown(rows):
  """Table of budget_ratios rows: [(label, ratios dict)]."""
  lines = ["| budgets | (a) TFLOPs | (c) TFLOPs | shared fine-tune TFLOPs | c/a | c/a before fine-tune |",
           "|---" * 6 + "|"]
  for label, r in rows:
    lines.append(f"| {label} | {r['a_flops'] / 1e12:.1f} | {r['c_flops'] / 1e12:.1f} | "
                 f"{r['finetune_flops'] / 1e12:.1f} | {r['c/a flops']:.0f}x | {r['c/a flops before finetune']:.0f}x |")
  return "\n".join(lines)


def one_off_costs(cfg, workdir, flops):
  """Seconds and FLOPs of training the generalist and all experts (shared by every task)."""
  out = {}
  for folder in export_trained.trained_model_dirs(workdir):
    info = upstream_train.read_model_info(folder)
    group = "generalist" if info["kind"] == "generalist" else "experts"
    train_cfg = {"generalist": cfg.generalist, "full": cfg.experts.full, "adapter": cfg.experts.adapter}[info["kind"]]
    entry = out.setdefault(group, {"seconds": 0.0, "flops": 0, "models": 0})
    entry["seconds"] += info["train"]["seconds"]
    entry["flops"] += TRAIN_PASSES * info["train"]["steps"] * train_cfg.batch_size * flops["upstream_train"]
    entry["models"] += 1
  return out


def markdown(results, one_off):
  """The side-by-side table: per task cost of (a), (b), (c), their ratios and accuracies."""
  lines = ["| task | (a) expert_hub s | (b) oracle s | (c) DAT s | b/a | c/a (s) | c/a (FLOPs) "
           "| c/a before fine-tune (FLOPs) | acc (a) | acc (b) | acc (c) |", "|---" * 11 + "|"]
  for r in results:
    a, b, c = r["a_expert_hub"], r["b_oracle"], r["c_dat"]
    before = r["ratios"].get("c/a flops before finetune", float("nan"))  # absent in results cached before it
    lines.append(f"| {r['task']} | {a['seconds']:.1f} | {b['seconds']:.1f} | {c['seconds']:.1f} | "
                 f"{r['ratios']['b/a seconds']:.1f}x | {r['ratios']['c/a seconds']:.1f}x | "
                 f"{r['ratios']['c/a flops']:.1f}x | {before:.1f}x | {100 * a['accuracy']:.1f} | "
                 f"{100 * b['accuracy']:.1f} | {100 * c['accuracy']:.1f} |")
  mean = lambda key, part: np.mean([r[part][key] for r in results])  # pylint: disable=unnecessary-lambda-assignment
  lines.append(f"| **mean** | {mean('seconds', 'a_expert_hub'):.1f} | {mean('seconds', 'b_oracle'):.1f} | "
               f"{mean('seconds', 'c_dat'):.1f} | {np.mean([r['ratios']['b/a seconds'] for r in results]):.1f}x | "
               f"{np.mean([r['ratios']['c/a seconds'] for r in results]):.1f}x | "
               f"{np.mean([r['ratios']['c/a flops'] for r in results]):.1f}x | "
               f"{np.mean([r['ratios'].get('c/a flops before finetune', np.nan) for r in results]):.1f}x | "
               f"{100 * mean('accuracy', 'a_expert_hub'):.1f} | {100 * mean('accuracy', 'b_oracle'):.1f} | "
               f"{100 * mean('accuracy', 'c_dat'):.1f} |")
  lines.append("")
  n = max(len(results), 1)
  for group, e in one_off.items():
    lines.append(f"One-off {group} ({e['models']} models): {e['seconds']:.0f} s, {e['flops'] / 1e12:.2f} TFLOPs; "
                 f"amortised over {n} tasks: {e['seconds'] / n:.1f} s per task.")
  return "\n".join(lines)


def plot(results, path):
  """Cost per task (log seconds) of the three routes, and their test accuracy."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [r["task"].split("/")[-1] for r in results]
  routes = [("a_expert_hub", "(a) expert_hub"), ("b_oracle", "(b) oracle"), ("c_dat", "(c) DAT")]
  x = np.arange(len(results))
  fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results)), 4))
  for i, (key, label) in enumerate(routes):
    axes[0].bar(x + (i - 1) * 0.27, [r[key]["seconds"] for r in results], 0.27, label=label)
    axes[1].bar(x + (i - 1) * 0.27, [100 * r[key]["accuracy"] for r in results], 0.27, label=label)
  axes[0].set_yscale("log")
  axes[0].set_ylabel("wall seconds per task (log)")
  axes[1].set_ylabel("test top-1 (%)")
  for ax in axes:
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
  axes[0].legend()
  report.save_figure(fig, path)
