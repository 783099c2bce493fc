r"""Per-task cost of expert_hub vs fine-tuning every expert vs DAT-style transfer, measured in one run.

  python binaries/benchmark_transfer_cost.py --config=tiny --workdir=/tmp/expert_hub_demo

Trains (or reuses, in --workdir) the generalist and experts of --config and exports them, then for each task
measures (a) kNN selection over all experts + one fine-tune, (b) fine-tuning every expert, (c) DAT: upstream
re-sampled towards the task by the generalist's predicted label distribution, the generalist continued on it for
a full expert's training budget, one fine-tune (expert_hub/experiments/transfer_cost.py). Prints the ratios
and accuracies side by side and the one-off costs; writes `<workdir>/cost/transfer_cost.{json,md,png}`.
Resumable per task.

Then the same FLOP accounting from budgets alone (transfer_cost.budget_ratios; nothing trained) for --budget_config
(default: paper, ResNet50x1 at 224 px) with --budget_experts experts and a --budget_task_images-image task,
fine-tuned with BiT-HyperRule's schedule at each of --budget_finetune_crops: the ratio at sizes too big to run here.
"""

import os

from absl import flags
from absl import logging

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_list("tasks", [], "Task specs; default the config's tasks.")
flags.DEFINE_string("budget_config", "paper", "Config whose budgets the computed (not trained) ratios use; "
                    "empty to skip them.")
flags.DEFINE_integer("budget_experts", 48, "Experts in the budget ratios (48: the paper's released experts).",
                     lower_bound=1)
flags.DEFINE_integer("budget_task_images", 1000, "Task training images in the budget ratios (VTAB-1k: 1000).",
                     lower_bound=1)
flags.DEFINE_list("budget_finetune_crops", ["128", "480"], "Fine-tune crops in the budget ratios (BiT-HyperRule: "
                  "128 below 96x96 images, else 480).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from expert_hub import io_utils  # pylint: disable=g-import-not-at-top
  from expert_hub.experiments import report  # pylint: disable=g-import-not-at-top
  from expert_hub.experiments import transfer_cost as cost  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import export_trained  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import session as session_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.tasks import sources  # pylint: disable=g-import-not-at-top
  from expert_hub.train import experts as experts_train  # pylint: disable=g-import-not-at-top
  from expert_hub.train import upstream as upstream_train  # pylint: disable=g-import-not-at-top

  from expert_hub import configs  # pylint: disable=g-import-not-at-top

  flags_common.setup_logging()
  cfg = flags_common.load_config()
  if FLAGS.budget_config and FLAGS.budget_config not in configs.CONFIG_NAMES:
    raise ValueError(f"--budget_config={FLAGS.budget_config!r}; expected one of {configs.CONFIG_NAMES} or '' (none).")
  crops = flags_common.positive_ints("--budget_finetune_crops", FLAGS.budget_finetune_crops)
  flags_common.check_workdir(FLAGS.workdir)
  data_dir = f"{FLAGS.workdir}/tfds" if FLAGS.data_dir is None else FLAGS.data_dir
  export_dir = os.path.join(FLAGS.workdir, "export") if FLAGS.export_dir is None else FLAGS.export_dir
  flags_common.check_workdir(export_dir, "--export_dir")
  flags_common.check_task_specs(FLAGS.tasks or cfg.tasks, data_dir)
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  upstream_train.train_generalist(cfg, data_dir, FLAGS.workdir)
  experts_train.train_experts(cfg, data_dir, FLAGS.workdir)
  modules = export_trained.export_trained(FLAGS.workdir, export_dir, cfg.version)
  size = cfg.upstream.image_size
  flops = {"embed": cost.forward_flops(cfg.model, size), "upstream_train": cost.forward_flops(cfg.model, size),
           "finetune_train": cost.forward_flops(cfg.model, cfg.finetune.crop or size)}
  logging.info("Forward FLOPs per image: %s", flops)
  session = session_lib.ModuleSession.for_export_dirs([export_dir])
  results = []
  for spec in FLAGS.tasks or cfg.tasks:
    task = sources.get_task(spec, data_dir, size)
    results.append(cost.measure_task(task, cfg, FLAGS.workdir, export_dir, modules, data_dir, flops, session))
  one_off = cost.one_off_costs(cfg, FLAGS.workdir, flops)
  table = report.transfer_cost_markdown(results, one_off)
  out = os.path.join(FLAGS.workdir, "cost")
  io_utils.atomic_write_json(os.path.join(out, "transfer_cost.json"),
                             {"config": cfg.name, "flops_per_image": flops, "tasks": results, "one_off": one_off})
  io_utils.atomic_write_text(os.path.join(out, "transfer_cost.md"), table + "\n")
  report.plot_transfer_cost(results, os.path.join(out, "transfer_cost.png"))
  print(table)
  if FLAGS.budget_config:
    budget_table = _budget_table(cost, crops)
    io_utils.atomic_write_text(os.path.join(out, "budget_ratios.md"), budget_table + "\n")
    print(budget_table)


def _budget_table(cost, crops):
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  from expert_hub.experiments import report  # pylint: disable=g-import-not-at-top
  from expert_hub.transfer import hyperrule  # pylint: disable=g-import-not-at-top
  bcfg = configs.get_config(FLAGS.budget_config)
  size = bcfg.upstream.image_size
  per_image = cost.forward_flops(bcfg.model, size)
  schedule = hyperrule.get_schedule(FLAGS.budget_task_images, bcfg.finetune.steps_scale)
  finetune_images = (bcfg.finetune.steps or schedule.steps) * bcfg.finetune.batch_size
  dat_images = bcfg.experts.full.steps * bcfg.experts.full.batch_size
  rows = []
  for crop in crops:
    flops = {"embed": per_image, "upstream_train": per_image,
             "finetune_train": cost.forward_flops(bcfg.model, int(crop))}
    label = (f"{bcfg.name}: {FLAGS.budget_experts} experts, {FLAGS.budget_task_images} task images at {size} px, "
             f"DAT {dat_images:,} images, fine-tune {finetune_images:,} images at {crop} px")
    rows.append((label, cost.budget_ratios(FLAGS.budget_experts, FLAGS.budget_task_images, dat_images,
                                           finetune_images, flops)))
  return report.budget_markdown(rows)


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
