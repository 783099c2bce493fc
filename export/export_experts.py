r"""Exports the generalist and every trained expert of a workdir as TF Hub-style SavedModel modules.

  python export/export_experts.py --workdir=/tmp/expert_hub --export_dir=/tmp/experts --version=1
Writes <export_dir>/<upstream>/<expert>/<version>/ atomically; an existing version is an error unless
--skip_existing. With --packed, one module holds the trunk once and every adapter expert as a named
sub-callable; load one as "<upstream>/<pack_name>#<expert>".
"""

import difflib

from absl import flags

from expert_hub import flags_common
from expert_hub.hub import export
from expert_hub.hub import export_trained
from expert_hub.train import upstream

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir (generalist/, experts/).")
flags.DEFINE_string("export_dir", None, "Root of exported modules.")
flags.DEFINE_integer("version", 1, "Module version to write.", lower_bound=1)
flags.DEFINE_list("experts", None, "Only these module names (default: all trained).")
flags.DEFINE_bool("skip_existing", False, "Keep already-exported versions instead of failing.")
flags.DEFINE_bool("packed", False, "Write one module: the generalist trunk once plus every adapter expert.")
flags.DEFINE_string("pack_name", "adapters", "Name of the packed module (with --packed).")
flags.mark_flags_as_required(["workdir", "export_dir"])


def _check_flags():
  """The workdir holds trained models, the names and paths are usable: before anything is written."""
  flags_common.check_dir(FLAGS.workdir, "--workdir")
  flags_common.check_workdir(FLAGS.export_dir, "--export_dir")
  trained = export_trained.trained_model_dirs(FLAGS.workdir)
  if not trained:
    raise FileNotFoundError(f"--workdir={FLAGS.workdir!r} holds no trained model (generalist/ or "
                            f"experts/<kind>/<name>/ with {upstream.MODEL_FILE} and {upstream.WEIGHTS_FILE}); train "
                            "some first (train_upstream, train_experts).")
  if FLAGS.packed:
    export.check_name(FLAGS.pack_name, "--pack_name")
  if FLAGS.experts is not None:
    known = sorted(export_trained.module_name(upstream.read_model_info(d)) for d in trained)
    unknown = [n for n in FLAGS.experts if n not in known]
    if not FLAGS.experts or unknown:
      near = sorted({m for u in unknown for m in difflib.get_close_matches(u, known, n=3)})
      raise KeyError(f"--experts={','.join(FLAGS.experts)}: unknown module name(s) {unknown}; {FLAGS.workdir!r} "
                     f"has {known} (nearest: {near}).")


def main(argv):
  del argv
  flags_common.setup_logging()
  _check_flags()
  if FLAGS.packed:
    path = export_trained.export_pack(FLAGS.workdir, FLAGS.export_dir, FLAGS.version, FLAGS.pack_name)
    print(f"{FLAGS.pack_name:24s} {path}")
    return
  paths = export_trained.export_trained(FLAGS.workdir, FLAGS.export_dir, FLAGS.version, FLAGS.experts,
                                        skip_existing=FLAGS.skip_existing)
  for name, path in paths.items():
    print(f"{name:24s} {path}")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
