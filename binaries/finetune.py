r"""Fine-tunes an expert on a task with a fresh head (BiT-HyperRule); writes finetune.json.

The head starts at zero (BiT) or as a linear probe of the frozen features (--head_init=linear_probe, at the l2
of --head_l2, or the best of several cross-validated); the config's by default.

  python binaries/finetune.py --expert=shapes --task=world/shapes_novel --export_dir=/tmp/experts \
      --workdir=/tmp/ft
  python binaries/finetune.py --expert=auto --task=... (uses <workdir>/selection.json's pick; it must have
      been made on this task's data, its recorded fingerprint, or the run stops)
  python binaries/finetune.py ... --head_init=zeros --steps=200 --batch_size=32 --base_lr=0.5
      (the zero-head schedule README's "Fine-tuning schedule" measures against the tiny config's LP-FT)
"""

import os

from absl import app
from absl import flags

from expert_hub import configs
from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.hub import registry
from expert_hub.selection import select
from expert_hub.tasks import sources
from expert_hub.train import strategies
from expert_hub.transfer import finetune

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_string("task", None, "world/<task>, tfds:<name> or folder:<path>.")
flags.DEFINE_string("expert", None, "Expert name, module path or URL; 'auto' reads <workdir>/selection.json.")
flags.DEFINE_integer("steps", None, "Override the HyperRule's number of steps (an integer >= 1).")
flags.DEFINE_integer("batch_size", None, "Override the config's fine-tuning batch size (an integer >= 1).")
flags.DEFINE_float("base_lr", None, "Override the config's base learning rate (at batch 512, scaled linearly to the "
                   "batch; a finite number > 0).")
flags.DEFINE_integer("image_size", None, "Task image size for world tasks (default: the config's).", lower_bound=1)
flags.DEFINE_enum("head_init", None, list(configs.HEAD_INITS), "The head fine-tuning starts from (default: the "
                  "config's): zeros (BiT) or linear_probe (fitted on the frozen features first).")
flags.DEFINE_list("head_l2", None, "The linear-probe head's l2 (default: the config's): one number >= 0, or several "
                  "(e.g. 0.01,0.1,1), the best of them cross-validated on the training split.")
flags.mark_flags_as_required(["task", "expert", "workdir"])


def main(argv):
  del argv
  strategy = strategies.make_strategy(FLAGS.strategy)  # first: multi_worker must start before other TF ops
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  ft = flags_common.override(cfg.finetune, steps=FLAGS.steps, batch_size=FLAGS.batch_size, base_lr=FLAGS.base_lr,
                             head_init=FLAGS.head_init, head_l2=_numbers("--head_l2", FLAGS.head_l2))
  image_size = cfg.upstream.image_size if FLAGS.image_size is None else FLAGS.image_size
  flags_common.check_workdir(FLAGS.workdir)
  export_dirs = None if FLAGS.export_dir is None else [flags_common.check_dir(FLAGS.export_dir, "--export_dir")]
  flags_common.check_task_specs([FLAGS.task], FLAGS.data_dir)
  expert = FLAGS.expert
  path = os.path.join(FLAGS.workdir, select.SELECTION_FILE)
  if expert == "auto" and not os.path.exists(path):
    raise app.UsageError(f"--expert=auto needs {path}; run select_expert with this --workdir first.")
  if expert != "auto":
    registry.Registry(export_dirs).resolve(expert)  # an unknown name fails before the task is read
  task = sources.get_task(FLAGS.task, FLAGS.data_dir, image_size)
  if expert == "auto":
    try:  # only a selection made on this task's data (its fingerprint) picks the expert
      expert = select.selection_for_task(path, task)["selected"]
    except select.SelectionMismatchError as e:
      raise app.UsageError(f"--expert=auto: {e}") from e
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  result = finetune.finetune(expert, task, ft, FLAGS.workdir, export_dirs=export_dirs, strategy=strategy)
  print(f"{result['expert']} on {result['task']}: test accuracy {result['test_accuracy']:.4f}")


def _numbers(flag, values):
  """The floats of a list flag as a tuple (None when the flag is not given); the config checks their range."""
  if values is None:
    return None
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise ValueError(f"{flag}={','.join(values)}; expected one or more numbers (e.g. 0.01,0.1,1).") from None


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
