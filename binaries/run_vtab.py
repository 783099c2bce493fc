r"""Runs the VTAB-1k protocol with an expert (or kNN selection per task); writes the leaderboard CSV/JSON/PNGs.

  python binaries/run_vtab.py --expert=auto --tasks=all --export_dir=/tmp/experts --data_dir=$TFDS \
      --workdir=/tmp/vtab
  python binaries/run_vtab.py --expert=world32/shapes --tasks=structured,dtd --lrs=0.01,0.03 --steps=100 ...

Per task: select (auto: kNN on train800val200), tune LR x steps on train800 -> val200, retrain the best on
train800val200, report test top-1. The datasets must be prepared in --data_dir (TFDS); --download prepares
missing ones (network; resisc45 and diabetic_retinopathy need their files in --manual_dir). Rerunning the same
command skips finished tasks. Outputs: <workdir>/vtab_results.csv (one row per run, a column per task, group
means, mean), vtab_results.json and vtab_<group>.png.
"""

from absl import app
from absl import flags

from expert_hub import configs
from expert_hub import flags_common
from expert_hub.tasks import vtab
from expert_hub.train import strategies
from expert_hub.transfer import vtab_runner

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags.DEFINE_string("expert", None, "Expert name, module path or URL used for every task, or 'auto' (kNN "
                    "selection per task among every expert in --export_dir).")
flags.DEFINE_list("experts", None, "With --expert=auto: the expert names/paths to select from ('bit-in21k': the "
                  "48 published BiT experts; default: every "
                  "expert in --export_dir).")
flags.DEFINE_list("tasks", ["all"], f"'all', a group {list(vtab.GROUPS)}, VTAB task names, or a mix.")
flags.DEFINE_string("run_name", None, "The leaderboard row (default: the expert's name).")
flags.DEFINE_list("lrs", None, "Sweep base learning rates at batch 512 (default: the config's x 0.3, 1, 3).")
flags.DEFINE_list("steps", None, "Sweep step counts (default: 1x and 2x the config's steps for 800 images).")
flags.DEFINE_integer("batch_size", None, "Override the config's fine-tuning batch size.")
flags.DEFINE_integer("image_size", None, "Resize task images to this (default: the config's upstream size; "
                     "VTAB uses 224).")
flags.DEFINE_bool("download", False, "Prepare missing datasets (uses the network).")
flags.DEFINE_string("manual_dir", None, "Files of the manual-download tasks (default <data_dir>/downloads/manual).")
flags_common.define_beam_flags()
flags.mark_flags_as_required(["expert", "workdir"])


def _sweep(finetune_cfg):
  default = vtab_runner.default_sweep(finetune_cfg)
  try:
    lrs = tuple(float(v) for v in FLAGS.lrs) if FLAGS.lrs else default.base_lrs
    steps = tuple(int(v) for v in FLAGS.steps) if FLAGS.steps else default.steps
  except ValueError as e:
    raise app.UsageError(f"--lrs={FLAGS.lrs} / --steps={FLAGS.steps}: {e}; expected numbers (steps: integers).")
  return vtab_runner.SweepConfig(lrs, steps)


def main(argv):
  options = flags_common.beam_options(argv)
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  if FLAGS.batch_size:
    cfg = configs.replace(cfg, **{"finetune.batch_size": FLAGS.batch_size})
  board = vtab_runner.run_vtab(FLAGS.tasks, FLAGS.expert, cfg, FLAGS.workdir, data_dir=FLAGS.data_dir,
                               export_dirs=[FLAGS.export_dir] if FLAGS.export_dir else None,
                               sweep=_sweep(cfg.finetune), run_name=FLAGS.run_name, image_size=FLAGS.image_size,
                               download=FLAGS.download, manual_dir=FLAGS.manual_dir, experts=FLAGS.experts,
                               strategy=strategies.make_strategy(FLAGS.strategy), beam_options=options)
  print(open(f"{FLAGS.workdir}/{vtab_runner.CSV_FILE}").read())
  print(f"Results: {FLAGS.workdir}/{vtab_runner.CSV_FILE}, {FLAGS.workdir}/{vtab_runner.JSON_FILE}, "
        + ", ".join(f"{FLAGS.workdir}/{p}" for p in board["files"]["plots"].values()))


def run():
  """Console-script entry point."""
  app.run(main, flags_parser=flags_common.parse_known_flags)


if __name__ == "__main__":
  run()
