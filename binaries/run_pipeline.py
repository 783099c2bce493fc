r"""The main job: the whole expert pipeline on the embedded world, then a results table.

  python binaries/run_pipeline.py --config=tiny --workdir=/tmp/expert_hub_demo
Stages: render the world, train the generalist, train full and adapter experts, export them as hub modules,
then per downstream task select an expert by kNN, fine-tune it, the generalist and (tiny config) every
expert. Re-running continues where a previous run stopped.
"""

from absl import flags

from expert_hub import configs
from expert_hub import flags_common
from expert_hub.experiments import pipeline
from expert_hub.experiments import report
from expert_hub.train import strategies

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_list("tasks", None, "Only these task specs (default: the config's).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  if FLAGS.tasks is not None:
    cfg = configs.replace(cfg, tasks=tuple(FLAGS.tasks))
  flags_common.check_workdir(FLAGS.workdir)
  if FLAGS.export_dir is not None:
    flags_common.check_workdir(FLAGS.export_dir, "--export_dir")
  data_dir = f"{FLAGS.workdir}/tfds" if FLAGS.data_dir is None else FLAGS.data_dir
  flags_common.check_task_specs(cfg.tasks, data_dir)  # a bad task fails now, not after hours of training
  results = pipeline.run_pipeline(cfg, FLAGS.workdir, data_dir, FLAGS.export_dir,
                                  strategies.make_strategy(FLAGS.strategy))
  print(report.markdown_table(results))
  print(f"\nResults: {FLAGS.workdir}/results.json, {FLAGS.workdir}/results.md, {FLAGS.workdir}/results.png")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
