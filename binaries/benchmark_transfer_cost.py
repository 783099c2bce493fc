r"""Per-task cost of expert_hub vs fine-tuning every expert vs DAT-style transfer, measured in one run.

  python binaries/benchmark_transfer_cost.py --config=tiny --workdir=/tmp/expert_hub_demo

Trains (or reuses, in --workdir) the generalist and experts of --config and exports them, then for each task
measures (a) kNN selection over all experts + one fine-tune, (b) fine-tuning every expert, (c) DAT: upstream
re-sampled towards the task by the generalist's predicted label distribution, the generalist continued on it for
a full expert's training budget, one fine-tune (expert_hub/transfer/cost.py). Prints the ratios and accuracies
side by side and the one-off costs; writes `<workdir>/cost/transfer_cost.{json,md,png}`. Resumable per task.
"""

import os

from absl import app
from absl import flags
from absl import logging

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_list("tasks", [], "Task specs; default the config's tasks.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from expert_hub import io_utils  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import export_trained  # pylint: disable=g-import-not-at-top
  from expert_hub.tasks import sources  # pylint: disable=g-import-not-at-top
  from expert_hub.train import experts as experts_train  # pylint: disable=g-import-not-at-top
  from expert_hub.train import upstream as upstream_train  # pylint: disable=g-import-not-at-top
  from expert_hub.transfer import cost  # pylint: disable=g-import-not-at-top

  flags_common.setup_logging()
  cfg = flags_common.load_config()
  data_dir = FLAGS.data_dir or f"{FLAGS.workdir}/tfds"
  export_dir = FLAGS.export_dir or os.path.join(FLAGS.workdir, "export")
  upstream_train.train_generalist(cfg, data_dir, FLAGS.workdir)
  experts_train.train_experts(cfg, data_dir, FLAGS.workdir)
  modules = export_trained.export_trained(FLAGS.workdir, export_dir, cfg.version)
  size = cfg.upstream.image_size
  flops = {"embed": cost.forward_flops(cfg.model, size), "upstream_train": cost.forward_flops(cfg.model, size),
           "finetune_train": cost.forward_flops(cfg.model, cfg.finetune.crop or size)}
  logging.info("Forward FLOPs per image: %s", flops)
  results = []
  for spec in FLAGS.tasks or cfg.tasks:
    task = sources.get_task(spec, data_dir, size)
    results.append(cost.measure_task(task, cfg, FLAGS.workdir, export_dir, modules, data_dir, flops))
  one_off = cost.one_off_costs(cfg, FLAGS.workdir, flops)
  table = cost.markdown(results, one_off)
  out = os.path.join(FLAGS.workdir, "cost")
  io_utils.atomic_write_json(os.path.join(out, "transfer_cost.json"),
                             {"config": cfg.name, "flops_per_image": flops, "tasks": results, "one_off": one_off})
  io_utils.atomic_write_text(os.path.join(out, "transfer_cost.md"), table + "\n")
  cost.plot(results, os.path.join(out, "transfer_cost.png"))
  print(table)


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
