r"""Evaluates selection proxies against the oracle (every expert fine-tuned): regret, Kendall tau-b, Spearman rho, cost.

Per task, scores every expert by every proxy, fine-tunes every expert (and the generalist, for the `generalist`
reference), then reports per proxy its pick, regret, rank correlations and cost, and on domain tasks full vs
adapter experts (each kind's domain expert, best fine-tuned and best-ranked). Writes proxy_evaluation.json,
proxy_evaluation.md, proxy_regret.png, proxy_scores_<proxy>.png and, with domain tasks, full_vs_adapter.png to
--workdir; a re-run reuses what is done.

  # Reuse the fine-tunes of a finished pipeline run (its export/ and tfds/ are the defaults):
  python binaries/evaluate_proxies.py --config=tiny --pipeline_workdir=/tmp/expert_hub_demo --workdir=/tmp/proxy_eval
  # Fine-tune everything here, on chosen tasks and proxies:
  python binaries/evaluate_proxies.py --tasks=world/count,folder:/data/my_task --proxy=knn,logme \
      --export_dir=/tmp/experts --workdir=/tmp/proxy_eval
"""

import os

from absl import app
from absl import flags

from expert_hub import configs
from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.experiments import proxy_evaluation
from expert_hub.experiments import report
from expert_hub.hub import registry
from expert_hub.hub import session as session_lib
from expert_hub.selection import proxy_registry
from expert_hub.selection import select
from expert_hub.tasks import sources

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags_common.define_proxy_flags()
flags.DEFINE_list("tasks", None, "Task specs: world/<task>, tfds:<name>, folder:<path>, vtab/<task> "
                  "(default: the config's tasks, the embedded world's downstream tasks).")
flags.DEFINE_list("experts", None, "Expert names/paths to evaluate (default: every expert in --export_dir).")
flags.DEFINE_string("proxy", proxy_evaluation.DEFAULT_PROXIES,
                    f"Proxies to evaluate, comma-separated: {', '.join(select.PROXIES)}; parameters as 'knn(k=3)'.")
flags.DEFINE_string("pipeline_workdir", None, "Workdir of a finished run_pipeline run: reuse its fine-tuned "
                    "accuracies (and default --export_dir / --data_dir to its export/ and tfds/).")
flags.DEFINE_integer("image_size", None, "Resize task images to this for the proxies (default: the config's).",
                     lower_bound=1)
flags_common.define_beam_flags()
flags.mark_flag_as_required("workdir")


def main(argv):
  options = flags_common.beam_options(argv)
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  if FLAGS.tasks is not None:
    cfg = configs.replace(cfg, tasks=tuple(FLAGS.tasks))
  if not cfg.tasks:
    raise app.UsageError(f"No tasks to evaluate (--tasks={FLAGS.tasks}, config {cfg.name!r}); name some.")
  proxy_registry.parse_proxies(FLAGS.proxy)  # unknown names and malformed specs fail now, named
  pipeline_workdir = FLAGS.pipeline_workdir
  if pipeline_workdir is not None and not os.path.isdir(pipeline_workdir):
    raise app.UsageError(f"--pipeline_workdir={pipeline_workdir!r} is not a directory; expected the workdir of a "
                         "run_pipeline run.")
  export_dir = FLAGS.export_dir
  if export_dir is None and pipeline_workdir is not None:
    export_dir = os.path.join(pipeline_workdir, "export")
  if export_dir is None:
    raise app.UsageError("--export_dir is required (or --pipeline_workdir, whose export/ it defaults to).")
  flags_common.check_dir(export_dir, "--export_dir")
  data_dir = FLAGS.data_dir
  if data_dir is None and pipeline_workdir is not None:
    data_dir = os.path.join(pipeline_workdir, "tfds")
  image_size = cfg.upstream.image_size if FLAGS.image_size is None else FLAGS.image_size
  flags_common.check_workdir(FLAGS.workdir)
  flags_common.check_task_specs(cfg.tasks, data_dir)
  if FLAGS.experts is not None and not FLAGS.experts:
    raise app.UsageError("--experts= names no expert; name some, or leave it out to evaluate --export_dir's.")
  session = session_lib.ModuleSession(registry.Registry([export_dir]))
  experts = session.registry.expand_handles(FLAGS.experts) if FLAGS.experts else session.registry.expert_handles()
  if not experts:
    raise FileNotFoundError(f"--export_dir={export_dir!r} holds no experts; export some first "
                            "(export/export_experts.py) or name them with --experts.")
  for handle in experts + ([FLAGS.generalist] if FLAGS.generalist is not None else []):
    session.registry.resolve(handle)  # an unknown name fails now, before any task is read
  tasks = [sources.get_task(spec, data_dir, image_size) for spec in cfg.tasks]
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  results = proxy_evaluation.evaluate_proxies(
      tasks, experts, cfg, FLAGS.workdir, image_size, proxies=FLAGS.proxy, generalist=FLAGS.generalist,
      strict=FLAGS.strict_proxies, pipeline_workdir=pipeline_workdir, session=session, beam_options=options)
  print(report.proxy_markdown_table(results))
  print(f"\nResults: {FLAGS.workdir}/{proxy_evaluation.RESULTS_FILE}, {FLAGS.workdir}/proxy_evaluation.md, "
        f"{FLAGS.workdir}/proxy_regret.png, {FLAGS.workdir}/proxy_scores_<proxy>.png"
        + (f", {FLAGS.workdir}/full_vs_adapter.png" if results["full_vs_adapter"]["tasks"] else ""))


def run():
  """Console-script entry point."""
  flags_common.run(main, flags_parser=flags_common.parse_known_flags)


if __name__ == "__main__":
  run()
