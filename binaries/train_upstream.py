r"""Trains the generalist on all upstream data.

  python binaries/train_upstream.py --config=tiny --workdir=/tmp/expert_hub --data_dir=/tmp/tfds
Resumes from <workdir>/generalist/checkpoints after a kill; a finished generalist is not retrained.
"""

from absl import flags

from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.train import strategies
from expert_hub.train import upstream

FLAGS = flags.FLAGS
flags_common.define_common_flags(export_dir=False)
flags.DEFINE_integer("steps", None, "Override the config's generalist steps.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  strategy = strategies.make_strategy(FLAGS.strategy)  # first: multi_worker must start before other TF ops
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  cfg = flags_common.override(cfg, **{"generalist.steps": FLAGS.steps})
  flags_common.check_workdir(FLAGS.workdir)
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  info = upstream.train_generalist(cfg, FLAGS.data_dir, FLAGS.workdir, strategy)
  print(f"generalist: {info['train']}")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
