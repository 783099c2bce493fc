r"""Ranks experts for a task by performance proxies on its training images; writes selection.json.

The default proxy is leave-one-out kNN accuracy; --proxy names others, several comma-separated, each ranked in
selection.json (the first one selects): knn, linear_probe, logme, hscore, nce, leep, domain_prediction,
generalist, random, with parameters as "knn(k=3, metric=euclidean)" (see expert_hub/selection/proxy_registry.py).

  python binaries/select_expert.py --task=world/shapes_novel --export_dir=/tmp/experts --workdir=/tmp/sel
  python binaries/select_expert.py --task=world/shapes_novel --proxy=knn,logme,leep,domain_prediction ...
  python binaries/select_expert.py --task=folder:/data/my_task --export_dir=/tmp/experts --workdir=/tmp/sel
  python binaries/select_expert.py --task=folder:/data/my_task --experts=bit-in21k --image_size=224 --workdir=/tmp/sel
  python binaries/select_expert.py --task=tfds:cifar100 --split='train[:1000]' --data_dir=... ...

Embeddings are cached in <workdir>/embeddings/, so a re-run (other proxies, or after an interruption) only embeds
what is missing. Many machines share the experts through Apache Beam (--runner; each worker loads a module once
and embeds every task with it): --runner=DirectRunner runs 2 local worker processes (--direct_num_workers=N for
more); any other Beam option passes through:

  python binaries/select_expert.py --task=world/count --export_dir=... --workdir=... --runner=DirectRunner
  python binaries/select_expert.py ... --runner=DataflowRunner --project=P --region=R --temp_location=gs://...
"""

from absl import app
from absl import flags

from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.hub import registry
from expert_hub.hub import session as session_lib
from expert_hub.selection import select
from expert_hub.tasks import sources

FLAGS = flags.FLAGS
flags_common.define_common_flags()
flags_common.define_proxy_flags()
flags.DEFINE_string("task", None, "world/<task>, tfds:<name> or folder:<path>.")
flags.DEFINE_list("experts", None, "Expert names/paths to rank (default: every expert in --export_dir); "
                  "'bit-in21k' stands for the 48 published BiT-M R50x1 experts, 'bit-in21k/bird' for one.")
flags.DEFINE_string("split", None, "Task split to embed (default: the config's, train800val200).")
flags.DEFINE_integer("k", None, "Neighbours per vote (default: the config's, 1).")
flags.DEFINE_enum("backend", None, ["auto", "exact", "scann", "scann_ah"], "kNN search backend.")
flags.DEFINE_string("proxy", None, "Proxies, comma-separated, first one selects: "
                    f"{', '.join(select.PROXIES)}; e.g. 'knn,logme,leep' or 'knn(k=3),random(seed=1)' "
                    "(default: the config's, knn).")
flags.DEFINE_integer("image_size", None, "Resize task images to this (default: the config's upstream size).",
                     lower_bound=1)
flags.DEFINE_bool("cache", True, "Reuse and keep embeddings in <workdir>/embeddings/ (--nocache recomputes all).")
flags_common.define_beam_flags()
flags.mark_flags_as_required(["task", "workdir"])  # --export_dir may be left out with --experts=bit-in21k


def main(argv):
  options = flags_common.beam_options(argv)
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  # An explicit 0 or "" reaches SelectionConfig's validation, which names it.
  sel = flags_common.override(cfg.selection, split=FLAGS.split, k=FLAGS.k, backend=FLAGS.backend, proxy=FLAGS.proxy)
  image_size = cfg.upstream.image_size if FLAGS.image_size is None else FLAGS.image_size
  flags_common.check_workdir(FLAGS.workdir)
  flags_common.check_task_specs([FLAGS.task], FLAGS.data_dir)
  if FLAGS.export_dir is None and FLAGS.experts is None:
    raise app.UsageError("Pass --export_dir (its experts are ranked) or --experts (e.g. --experts=bit-in21k).")
  if FLAGS.experts is not None and not FLAGS.experts:
    raise app.UsageError("--experts= names no expert; name some, or leave it out to rank --export_dir's.")
  export_dirs = None if FLAGS.export_dir is None else [flags_common.check_dir(FLAGS.export_dir, "--export_dir")]
  session = session_lib.ModuleSession(registry.Registry(export_dirs))
  # "bit-in21k" in the list stands for the 48 published experts (hub/catalogue.py).
  experts = session.registry.expand_handles(FLAGS.experts) if FLAGS.experts else session.registry.expert_handles()
  if not experts:
    raise FileNotFoundError(f"--export_dir={FLAGS.export_dir!r} holds no experts; export some first "
                            "(export/export_experts.py) or name them with --experts.")
  for handle in experts + ([FLAGS.generalist] if FLAGS.generalist is not None else []):
    session.registry.resolve(handle)  # an unknown name fails now, before the task is read
  task = sources.get_task(FLAGS.task, FLAGS.data_dir, image_size)
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  result = select.select_expert(task, experts, sel, FLAGS.workdir, image_size, generalist=FLAGS.generalist,
                                strict=FLAGS.strict_proxies, use_cache=FLAGS.cache, session=session,
                                beam_options=options)
  _print(result)


def _print(result):
  for label, record in result["proxies"].items():
    print(f"== {label}: selected {record['selected']}")
    for r in record["ranking"]:
      print(f"{r['score']:10.4f}  {r['expert']}")
    for expert, why in record["skipped"].items():
      print(f"   skipped  {expert}: {why}")
  print(f"selected ({result['proxy']}): {result['selected']}")


def run():
  """Console-script entry point."""
  flags_common.run(main, flags_parser=flags_common.parse_known_flags)


if __name__ == "__main__":
  run()
