r"""Runs the VTAB-1k protocol with an expert (or kNN selection per task); writes the leaderboard CSV/JSON/PNGs.

  python binaries/run_vtab.py --expert=auto --tasks=all --export_dir=/tmp/experts --data_dir=$TFDS \
      --workdir=/tmp/vtab
  python binaries/run_vtab.py --expert=world32/shapes --tasks=structured,dtd --lrs=0.01,0.03 --steps=100 ...
  python binaries/run_vtab.py --expert=auto --tasks=world/shapes_novel,folder:/data/my_images --config=tiny ...

Per task: select (auto: kNN on train800val200), tune LR x steps on train800 -> val200, retrain the best on
train800val200, report test top-1. Besides VTAB's 19, any task spec with those splits runs the same protocol
(world/<task>, tfds:<name>, folder:<path>; listed after VTAB's, in the leaderboard's group "other"). VTAB's
datasets must be prepared in --data_dir (TFDS); --download prepares missing ones (network; resisc45 and
diabetic_retinopathy need their files in --manual_dir). Rerunning the same command skips finished tasks.
Outputs: <workdir>/vtab_results.csv (one row per run, a column per task, group means, mean), vtab_results.json
and vtab_<group>.png.
"""

import math

from absl import app
from absl import flags

from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.experiments import vtab_runner
from expert_hub.hub import registry
from expert_hub.tasks import vtab
from expert_hub.train import strategies

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_string("expert", None, "Expert name, module path or URL used for every task, or 'auto' (kNN "
                    "selection per task among every expert in --export_dir).")
flags.DEFINE_list("experts", None, "With --expert=auto: the expert names/paths to select from ('bit-in21k': the "
                  "48 published BiT experts; default: every "
                  "expert in --export_dir).")
flags.DEFINE_list("tasks", ["all"], f"'all', a group {list(vtab.GROUPS)}, VTAB task names, other task specs "
                  "(world/<task>, tfds:<name>, folder:<path>), or a mix.")
flags.DEFINE_string("run_name", None, "The leaderboard row (default: the expert's name).")
flags.DEFINE_list("lrs", None, "Sweep base learning rates at batch 512 (default: the config's x 0.3, 1, 3).")
flags.DEFINE_list("steps", None, "Sweep step counts (default: 1x and 2x the config's steps for 800 images).")
flags.DEFINE_integer("batch_size", None, "Override the config's fine-tuning batch size (an integer >= 1).")
flags.DEFINE_integer("image_size", None, "Resize task images to this (default: the config's upstream size; "
                     "VTAB uses 224).", lower_bound=1)
flags.DEFINE_bool("download", False, "Prepare missing datasets (uses the network).")
flags.DEFINE_string("manual_dir", None, "Files of the manual-download tasks (default <data_dir>/downloads/manual).")
flags_common.define_beam_flags()
flags.mark_flags_as_required(["expert", "workdir"])


def _sweep(finetune_cfg):
  """The sweep from --lrs / --steps (each value checked, named with its flag), else the config's default."""
  default = vtab_runner.default_sweep(finetune_cfg)
  lrs = default.base_lrs
  if FLAGS.lrs is not None:
    lrs = []
    for v in FLAGS.lrs:
      try:
        lr = float(v)
      except ValueError:
        lr = None
      if lr is None or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"--lrs={','.join(FLAGS.lrs)}: {v!r} is not a positive learning rate.")
      lrs.append(lr)
    if not lrs:
      raise ValueError("--lrs is empty; expected one or more positive learning rates, e.g. --lrs=0.01,0.03.")
  steps = default.steps if FLAGS.steps is None else flags_common.positive_ints("--steps", FLAGS.steps)
  return vtab_runner.SweepConfig(tuple(lrs), tuple(steps))


def _check_experts(export_dirs):
  """--expert (or, with auto, --experts / the export dirs' experts) resolve to modules; raises naming one that
  does not."""
  reg = registry.Registry(export_dirs)
  if FLAGS.expert != vtab_runner.AUTO:
    reg.resolve(FLAGS.expert)
    return
  if FLAGS.experts is not None and not FLAGS.experts:
    raise app.UsageError("--experts= names no expert; name some, or leave it out to select among --export_dir's.")
  handles = reg.expand_handles(FLAGS.experts) if FLAGS.experts else reg.expert_handles()
  if not handles:
    raise FileNotFoundError(f"--expert=auto found no experts under --export_dir={FLAGS.export_dir!r}; export some "
                            "first (export/export_experts.py) or name them with --experts.")
  for handle in handles:
    reg.resolve(handle)


def main(argv):
  options = flags_common.beam_options(argv)
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  cfg = flags_common.override(cfg, **{"finetune.batch_size": FLAGS.batch_size})
  sweep = _sweep(cfg.finetune)
  flags_common.check_workdir(FLAGS.workdir)
  export_dirs = None if FLAGS.export_dir is None else [flags_common.check_dir(FLAGS.export_dir, "--export_dir")]
  vtab_runner.resolve_tasks(FLAGS.tasks)  # unknown names fail now, before any work
  _check_experts(export_dirs)
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  board = vtab_runner.run_vtab(FLAGS.tasks, FLAGS.expert, cfg, FLAGS.workdir, data_dir=FLAGS.data_dir,
                               export_dirs=export_dirs,
                               sweep=sweep, run_name=FLAGS.run_name, image_size=FLAGS.image_size,
                               download=FLAGS.download, manual_dir=FLAGS.manual_dir, experts=FLAGS.experts,
                               strategy=strategies.make_strategy(FLAGS.strategy), beam_options=options)
  print(open(f"{FLAGS.workdir}/{vtab_runner.CSV_FILE}").read())
  print(f"Results: {FLAGS.workdir}/{vtab_runner.CSV_FILE}, {FLAGS.workdir}/{vtab_runner.JSON_FILE}, "
        + ", ".join(f"{FLAGS.workdir}/{p}" for p in board["files"]["plots"].values()))


def run():
  """Console-script entry point."""
  flags_common.run(main, flags_parser=flags_common.parse_known_flags)


if __name__ == "__main__":
  run()
