"""What transferring to one new task costs, three ways, measured side by side (the paper's headline claim).

  (a) expert_hub: embed the task with every expert, kNN-score them, fine-tune the pick once;
  (b) oracle: fine-tune every expert, keep the best;
  (c) DAT: re-sample the upstream data towards the task, continue the generalist on it for a full expert's
      budget, fine-tune once (transfer/dat.py).
Cost is wall seconds (measured) and compute: images through the network times forward FLOPs per image, with a
training image counted as 3 forward passes (forward + backward). The one-off costs every task shares — the
generalist and the experts — are reported apart, with their amortisation over the number of tasks.
Tables and the plot: report.transfer_cost_markdown, report.budget_markdown, report.plot_transfer_cost.
"""

import logging
import os
import time

import tensorflow as tf

from expert_hub import io_utils
from expert_hub import naming
from expert_hub.hub import export_trained
from expert_hub.hub import registry as registry_lib
from expert_hub.models import resnet_v2
from expert_hub.selection import embed as embed_lib
from expert_hub.selection import select
from expert_hub.train import experts as experts_train
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
  task_dir = os.path.join(workdir, "cost", naming.folder_name(task.name))
  out = task_dir + ".json"
  if os.path.exists(out):
    log.info("Cost of %s already measured; reusing %s.", task.name, out)
    return io_utils.read_json(out)
  image_size = cfg.upstream.image_size
  handles = {n: f"{cfg.upstream.name}/{n}/{cfg.version}" for n in modules}
  experts = sorted(n for n in modules if n not in registry_lib.BASELINE_KINDS)
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


def one_off_costs(cfg, workdir, flops):
  """Seconds and FLOPs of training the generalist and all experts (shared by every task), and of the
  equal-compute control apart (an evaluation baseline trained like a full expert, not needed to use experts)."""
  groups = {"generalist": ("generalist", cfg.generalist), "full": ("experts", cfg.experts.full),
            "adapter": ("experts", cfg.experts.adapter), experts_train.CONTROL: ("control", cfg.experts.full)}
  out = {}
  for folder in export_trained.trained_model_dirs(workdir):
    info = upstream_train.read_model_info(folder)
    if info["kind"] not in groups:
      raise ValueError(f"{folder!r} records kind {info['kind']!r}; expected one of {sorted(groups)}.")
    group, train_cfg = groups[info["kind"]]
    entry = out.setdefault(group, {"seconds": 0.0, "flops": 0, "models": 0})
    entry["seconds"] += info["train"]["seconds"]
    entry["flops"] += TRAIN_PASSES * info["train"]["steps"] * train_cfg.batch_size * flops["upstream_train"]
    entry["models"] += 1
  return out
