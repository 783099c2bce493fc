r"""Ranks experts for a task by leave-one-out kNN accuracy on its training images; writes selection.json.

  python binaries/select_expert.py --task=world/shapes_novel --export_dir=/tmp/experts --workdir=/tmp/sel
  python binaries/select_expert.py --task=folder:/data/my_task --export_dir=/tmp/experts --workdir=/tmp/sel
  python binaries/select_expert.py --task=tfds:cifar100 --split='train[:1000]' --data_dir=... ...
"""

from absl import app
from absl import flags

from expert_hub import configs
from expert_hub import flags_common
from expert_hub.hub import registry
from expert_hub.selection import select
from expert_hub.tasks import sources

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_string("task", None, "world/<task>, tfds:<name> or folder:<path>.")
flags.DEFINE_list("experts", None, "Expert names/paths to rank (default: every expert in --export_dir).")
flags.DEFINE_string("split", None, "Task split to embed (default: the config's, train800val200).")
flags.DEFINE_integer("k", None, "Neighbours per vote (default: the config's, 1).")
flags.DEFINE_enum("backend", None, ["auto", "scann", "exact"], "kNN search backend.")
flags.DEFINE_integer("image_size", None, "Resize task images to this (default: the config's upstream size).")
flags.mark_flags_as_required(["task", "workdir", "export_dir"])


def main(argv):
  del argv
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  sel = cfg.selection
  overrides = {k: v for k, v in (("split", FLAGS.split), ("k", FLAGS.k), ("backend", FLAGS.backend)) if v}
  sel = configs.replace(sel, **overrides)
  image_size = FLAGS.image_size or cfg.upstream.image_size
  task = sources.get_task(FLAGS.task, FLAGS.data_dir, image_size)
  experts = FLAGS.experts or registry.Registry([FLAGS.export_dir]).expert_handles()
  result = select.select_expert(task, experts, sel, FLAGS.workdir, image_size, export_dirs=[FLAGS.export_dir])
  for r in result["ranking"]:
    print(f"{r['score']:.4f}  {r['expert']}")
  print(f"selected: {result['selected']}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
