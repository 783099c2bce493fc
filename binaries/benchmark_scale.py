r"""Memory and cost of selection + fine-tuning over a grid of (experts, tasks), each point in a fresh process.

  python binaries/benchmark_scale.py --grid=4x1,16x4,48x8 --workdir=/tmp/expert_hub_scale

One export of random-weight tiny modules (hub/synthetic.py: a pack of 48 adapter experts, --num_full full
experts, a generalist) serves every point. A point (E experts, T tasks) runs in its own process, as a user's
run would: one ModuleSession, expert-major kNN selection over E candidates (E - num_full packed adapter
experts plus the full ones) on T tasks (select.select_experts), then one fine-tune of each task's selected
expert with the `tiny` config's schedule (Finetuner, templates shared across tasks). Tasks are seeded
1,000 + 1,000-image 32 px arrays of 10 classes, the shape of the world's tasks. Each point prints its peak resident
memory (/proc VmHWM), SavedModel loads (loading.LOADS), wall time, selection seconds per task and fine-tune seconds
per task; the table then gives the goals as ratios:
  - peak RSS of the largest point over the smallest (goal <= 1.5);
  - selection seconds per (expert, task) pair, per point (goal: roughly constant);
  - selection per task over fine-tuning every candidate once (E x the median fine-tune), goal <= 10%.
"""

import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags.DEFINE_list("grid", ["4x1", "16x4", "48x8"], "Points EXPERTSxTASKS.")
flags.DEFINE_integer("num_full", 2, "Full experts among the candidates of every point (the rest are packed adapters).",
                     lower_bound=0)
flags.DEFINE_integer("num_adapters", 48, "Adapter experts in the pack (at least the largest point's E - num_full).",
                     lower_bound=0)
flags.DEFINE_integer("num_examples", 1000, "Images per task split (train800val200 and test).", lower_bound=1)
flags.DEFINE_string("workdir", None, "Where the modules and each point's outputs go.")
flags.DEFINE_string("point", None, "Internal: run one point EXPERTSxTASKS in this process and print its JSON.")
flags.mark_flag_as_required("workdir")


def _parse(point):
  try:
    experts, tasks = (int(v) for v in point.lower().split("x"))
  except ValueError:
    raise app.UsageError(f"Grid point {point!r}; expected EXPERTSxTASKS, e.g. 16x4.")
  if experts < 1 or tasks < 1:
    raise app.UsageError(f"Grid point {point!r}; expected positive counts.")
  return experts, tasks


def _peak_rss_mb():
  """This process's peak resident memory. /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss would
  carry the parent's peak over into a child (Linux keeps it across execve)."""
  try:
    with open("/proc/self/status") as f:
      return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
  except (OSError, StopIteration):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _run_point(experts, tasks):
  """One point in this process: {"experts", "tasks", "peak_rss_mb", "loads", ...}."""
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import loading, registry, session as session_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.selection import select  # pylint: disable=g-import-not-at-top
  from expert_hub.tasks import synthetic as synthetic_tasks  # pylint: disable=g-import-not-at-top
  from expert_hub.transfer import finetune  # pylint: disable=g-import-not-at-top
  t_start = time.time()
  cfg = configs.get_config("tiny")
  export_dir = os.path.join(FLAGS.workdir, "export")
  handles = json.load(open(os.path.join(FLAGS.workdir, "handles.json")))
  full, packed = handles["full"][:FLAGS.num_full], handles["packed"]
  candidates = full + packed[:experts - len(full)]
  if len(candidates) < experts:
    raise app.UsageError(f"Point {experts}x{tasks} needs {experts} experts; the export has {len(full + packed)}.")
  task_list = synthetic_tasks.colour_tasks(tasks, FLAGS.num_examples)
  rss_start = _peak_rss_mb()
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  out = os.path.join(FLAGS.workdir, f"point_{experts}x{tasks}")
  folders = [os.path.join(out, t.name) for t in task_list]
  for f in folders:
    os.makedirs(f, exist_ok=True)
  t0 = time.time()
  selections = select.select_experts(task_list, candidates, cfg.selection, folders, 32, session, use_cache=False)
  select_s = time.time() - t0
  finetune_s = []
  for task, selection in zip(task_list, selections):
    result = finetune.Finetuner(task, cfg.finetune, session=session).run(selection["selected"])
    finetune_s.append(result["seconds"])
  return {"experts": experts, "tasks": tasks, "peak_rss_mb": round(_peak_rss_mb(), 1),
          "rss_after_setup_mb": round(rss_start, 1), "loads": int(sum(loading.LOADS.values())),
          "wall_s": round(time.time() - t_start, 1), "selection_s_per_task": round(select_s / tasks, 2),
          "finetune_s": finetune_s}


def _export(workdir):
  """The modules every point uses, exported once per workdir; their handles go to handles.json."""
  from expert_hub.hub import synthetic  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "handles.json")
  if os.path.exists(path):
    return
  made = synthetic.build_experts(os.path.join(workdir, "export"), num_adapters=FLAGS.num_adapters,
                                 num_full=FLAGS.num_full)
  packed = [h for h in made["handles"] if "#" in h]
  with open(path + ".tmp", "w") as f:
    json.dump({"full": made["full"], "packed": packed, "generalist": made["generalist"]}, f)
  os.rename(path + ".tmp", path)


def main(argv):
  del argv
  if FLAGS.point:
    print("POINT " + json.dumps(_run_point(*_parse(FLAGS.point))), flush=True)
    return
  points = [_parse(p) for p in FLAGS.grid]
  if not points:
    raise app.UsageError("--grid is empty; expected points EXPERTSxTASKS, e.g. --grid=4x1,16x4.")
  from expert_hub import io_utils  # pylint: disable=g-import-not-at-top
  flags_common.check_workdir(FLAGS.workdir)
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  _export(FLAGS.workdir)  # in this process: each point's memory is measured in its own
  child = [a for a in sys.argv if not a.startswith("--point")]
  rows = []
  for i, (experts, tasks) in enumerate(points):
    t0 = time.time()
    proc = subprocess.run([sys.executable, *child, f"--point={experts}x{tasks}"], capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("POINT ")]
    if proc.returncode or not lines:
      raise RuntimeError(f"Point {experts}x{tasks} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    rows.append(json.loads(lines[-1][len("POINT "):]))
    print(f"[benchmark_scale] point {i + 1}/{len(points)} {experts}x{tasks} done in {time.time() - t0:.0f} s",
          file=sys.stderr, flush=True)
  _print(rows)
  with open(os.path.join(FLAGS.workdir, "benchmark_scale.json"), "w") as f:
    json.dump(rows, f, indent=1)


def _print(rows):
  rows = sorted(rows, key=lambda r: r["experts"] * r["tasks"])
  print("| experts x tasks | peak RSS MB | SavedModel loads | wall s | selection s / task | selection s / pair | "
        "marginal selection s / pair | fine-tune s / task (median) | selection / fine-tune-all |")
  print("|---|---|---|---|---|---|---|---|---|")
  previous = None
  for r in rows:
    median_ft = float(np.median(r["finetune_s"]))
    pairs, select_total = r["experts"] * r["tasks"], r["selection_s_per_task"] * r["tasks"]
    marginal = "-" if previous is None else f"{(select_total - previous[1]) / (pairs - previous[0]):.3f}"
    print(f"| {r['experts']} x {r['tasks']} | {r['peak_rss_mb']:.0f} | {r['loads']} | {r['wall_s']:.0f} | "
          f"{r['selection_s_per_task']:.2f} | {select_total / pairs:.3f} | {marginal} | {median_ft:.1f} | "
          f"{100 * r['selection_s_per_task'] / (r['experts'] * median_ft):.1f}% |")
    previous = (pairs, select_total)
  small, large = rows[0], rows[-1]
  print(f"\npeak RSS {large['experts']}x{large['tasks']} / {small['experts']}x{small['tasks']}: "
        f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (goal <= 1.5). Selection s per (expert, task) pair "
        "must not grow with the grid (goal: no super-linear growth; it falls while fixed costs, module loads and "
        "traces, are shared by more pairs). Selection per task vs fine-tuning every candidate once at "
        f"{large['experts']}x{large['tasks']}: "
        f"{100 * large['selection_s_per_task'] / (large['experts'] * float(np.median(large['finetune_s']))):.1f}% "
        "(goal <= 10%).")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
