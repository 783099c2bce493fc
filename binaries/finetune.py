r"""Fine-tunes an expert on a task with a fresh zero-initialised head (BiT-HyperRule); writes finetune.json.

  python binaries/finetune.py --expert=shapes --task=world/shapes_novel --export_dir=/tmp/experts \
      --workdir=/tmp/ft
  python binaries/finetune.py --expert=auto --task=... (uses <workdir>/selection.json's pick)
"""

import os

from absl import app
from absl import flags

from expert_hub import configs
from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.selection import select
from expert_hub.tasks import sources
from expert_hub.train import strategies
from expert_hub.transfer import finetune

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_string("task", None, "world/<task>, tfds:<name> or folder:<path>.")
flags.DEFINE_string("expert", None, "Expert name, module path or URL; 'auto' reads <workdir>/selection.json.")
flags.DEFINE_integer("steps", None, "Override the HyperRule's number of steps.")
flags.DEFINE_integer("batch_size", None, "Override the config's fine-tuning batch size.")
flags.DEFINE_integer("image_size", None, "Task image size for world tasks (default: the config's).")
flags.mark_flags_as_required(["task", "expert", "workdir"])


def main(argv):
  del argv
  strategy = strategies.make_strategy(FLAGS.strategy)  # first: multi_worker must start before other TF ops
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  ft = cfg.finetune
  overrides = {k: v for k, v in (("steps", FLAGS.steps), ("batch_size", FLAGS.batch_size)) if v}
  ft = configs.replace(ft, **overrides)
  expert = FLAGS.expert
  if expert == "auto":
    path = os.path.join(FLAGS.workdir, select.SELECTION_FILE)
    if not os.path.exists(path):
      raise app.UsageError(f"--expert=auto needs {path}; run select_expert with this --workdir first.")
    expert = io_utils.read_json(path)["selected"]
  task = sources.get_task(FLAGS.task, FLAGS.data_dir, FLAGS.image_size or cfg.upstream.image_size)
  export_dirs = [FLAGS.export_dir] if FLAGS.export_dir else None
  result = finetune.finetune(expert, task, ft, FLAGS.workdir, export_dirs=export_dirs, strategy=strategy)
  print(f"{result['expert']} on {result['task']}: test accuracy {result['test_accuracy']:.4f}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
