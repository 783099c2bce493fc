r"""Expert training with its upstream subset streamed from disk vs held in memory, side by side.

  python binaries/benchmark_expert_stream.py --config=tiny --workdir=/tmp/expert_hub_demo --experts=glyphs

An expert trains on the upstream images under its hierarchy node, a tf.data filter over the whole split. Streamed,
every epoch of the expert reads and filters the whole split again (six times its own images in the world, where
each domain holds a sixth of the upstream); cached, its encoded examples are held in memory after the first pass
(experts.train_experts does this when they fit experts.SUBSET_CACHE_BYTES). For each of --experts this trains
the expert twice from the generalist in --workdir (the main job leaves one there), streamed then cached, in
scratch folders it removes afterwards, and prints seconds, images/s, the speed-up and whether both runs ended at
the same loss (they read the same batches, so they should).
"""

import os
import shutil
import tempfile

from absl import flags

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags_common.define_common_flags(export_dir=False)
flags.DEFINE_list("experts", [], "Expert names (default: the first selected).")
flags.DEFINE_enum("kind", "full", ["full", "adapter"], "Which kind of expert to train.")
flags.DEFINE_integer("steps", None, "Training steps of each run (default: the config's).", lower_bound=1)
flags.DEFINE_string("output", "", "Optional JSON path for the results.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  from expert_hub import io_utils  # pylint: disable=g-import-not-at-top
  from expert_hub.train import experts as experts_train  # pylint: disable=g-import-not-at-top

  flags_common.setup_logging()
  cfg = flags_common.load_config()
  flags_common.check_workdir(FLAGS.workdir)
  generalist = os.path.join(FLAGS.workdir, "generalist")
  if not os.path.isdir(generalist):
    raise FileNotFoundError(f"--workdir={FLAGS.workdir!r} holds no generalist/; run the main job (or "
                            "train_upstream.py) there first.")
  data_dir = f"{FLAGS.workdir}/tfds" if FLAGS.data_dir is None else FLAGS.data_dir
  if FLAGS.steps:
    field = f"experts.{FLAGS.kind}"
    train = getattr(cfg.experts, FLAGS.kind)
    cfg = configs.replace(cfg, **{f"{field}.steps": FLAGS.steps,
                                  f"{field}.warmup_steps": min(train.warmup_steps, FLAGS.steps // 2),
                                  f"{field}.checkpoint_every": FLAGS.steps, f"{field}.log_every": FLAGS.steps})
  names = FLAGS.experts or [experts_train.plan_experts(cfg, data_dir, None, write=False)[0].expert_name]
  rows = []
  for name in names:
    runs = {}
    for mode, budget in (("streamed", 0), ("cached", experts_train.SUBSET_CACHE_BYTES)):
      scratch = tempfile.mkdtemp(prefix=f"benchmark_expert_stream_{mode}_", dir=FLAGS.workdir)
      try:
        os.symlink(os.path.abspath(generalist), os.path.join(scratch, "generalist"))
        info = experts_train.train_experts(cfg, data_dir, scratch, kinds=[FLAGS.kind], names=[name],
                                           subset_cache_bytes=budget)[FLAGS.kind][name]
      finally:
        shutil.rmtree(scratch)
      runs[mode] = info["train"]
    streamed, cached = runs["streamed"], runs["cached"]
    rows.append({"expert": name, "kind": FLAGS.kind, "steps": cached["steps"], "images": info["num_images"],
                 "streamed_s": streamed["seconds"], "cached_s": cached["seconds"],
                 "streamed_images_per_s": streamed["images_per_second"],
                 "cached_images_per_s": cached["images_per_second"],
                 "speed_up": round(streamed["seconds"] / cached["seconds"], 2),
                 "same_final_loss": streamed["loss"] == cached["loss"]})
  columns = ["expert", "kind", "steps", "images", "streamed_s", "cached_s", "streamed_images_per_s",
             "cached_images_per_s", "speed_up", "same_final_loss"]
  print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
  for row in rows:
    print("| " + " | ".join(str(row[c]) for c in columns) + " |")
  if FLAGS.output:
    io_utils.atomic_write_json(FLAGS.output, {"config": cfg.name, "results": rows})


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
