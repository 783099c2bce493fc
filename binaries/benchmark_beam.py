r"""What Apache Beam costs locally: kNN selection in this process vs on the DirectRunner with N worker processes.

  python binaries/benchmark_beam.py --num_modules=8 --num_tasks=2 --direct_num_workers=2 --workdir=/tmp/eh_beam

One export of --num_modules random-weight tiny full modules (hub/synthetic.py; separate modules, so the runner can
spread them) and --num_tasks seeded 32 px tasks of --num_examples images (tasks/synthetic.py). Both routes start
cold (no embedding cache; the in-process route in a fresh ModuleSession, the Beam workers in their own processes)
and include loading every module once. Prints images/s (images embedded by every module, all tasks) for each,
their ratio and Beam's overhead in seconds, and checks the two rankings agree.
"""

import os
import time

from absl import flags

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_modules", 8, "Random tiny full modules to select among.", lower_bound=1)
flags.DEFINE_integer("num_tasks", 2, "Tasks scored in one selection run.", lower_bound=1)
flags.DEFINE_integer("num_examples", 1000, "Images per task.", lower_bound=1)
flags.DEFINE_integer("direct_num_workers", 2, "DirectRunner worker processes.", lower_bound=1)
flags.DEFINE_string("workdir", None, "Where the modules and selections go.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  from expert_hub import io_utils  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import registry, session as session_lib, synthetic  # pylint: disable=g-import-not-at-top
  from expert_hub.selection import beam_selection, select  # pylint: disable=g-import-not-at-top
  from expert_hub.tasks import synthetic as synthetic_tasks  # pylint: disable=g-import-not-at-top

  flags_common.check_workdir(FLAGS.workdir)
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  export_dir = os.path.join(FLAGS.workdir, "export")
  if not os.path.isdir(export_dir):
    synthetic.build_experts(export_dir, num_adapters=0, num_full=FLAGS.num_modules)
  cfg = configs.get_config("tiny").selection
  tasks = synthetic_tasks.colour_tasks(FLAGS.num_tasks, FLAGS.num_examples)
  experts = registry.Registry([export_dir]).expert_handles()
  images = len(experts) * FLAGS.num_tasks * FLAGS.num_examples
  runs = {}
  for route, options in (("in-process", None), (f"DirectRunner x{FLAGS.direct_num_workers}",
                                                beam_selection.pipeline_options(
                                                    ["--runner=DirectRunner",
                                                     f"--direct_num_workers={FLAGS.direct_num_workers}"]))):
    session = session_lib.ModuleSession(registry.Registry([export_dir]))
    folders = [os.path.join(FLAGS.workdir, route.split()[0], t.name) for t in tasks]
    for f in folders:
      os.makedirs(f, exist_ok=True)
    t0 = time.time()
    result = select.select_experts(tasks, experts, cfg, folders, 32, session, use_cache=False, beam_options=options)
    runs[route] = (time.time() - t0, [[r["expert"] for r in sel["ranking"]] for sel in result])
  (local, (local_s, local_rank)), (beam, (beam_s, beam_rank)) = runs.items()
  print(f"\n{len(experts)} tiny modules x {FLAGS.num_tasks} tasks x {FLAGS.num_examples} images at 32 px, "
        f"{os.cpu_count()} CPUs, cold starts (module loads included)\n")
  print("| route | seconds | images/s |")
  print("|---|---|---|")
  for route, (seconds, _) in runs.items():
    print(f"| {route} | {seconds:.1f} | {images / seconds:.0f} |")
  print(f"\n{beam} / {local} images/s: {local_s / beam_s:.2f}x; Beam's overhead here: {beam_s - local_s:+.1f} s; "
        f"rankings {'agree' if beam_rank == local_rank else 'DIFFER'}.")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
