r"""Ranks experts for a task by performance proxies on its training images; writes selection.json.

The default proxy is leave-one-out kNN accuracy; --proxy names others, several comma-separated, each ranked in
selection.json (the first one selects): knn, linear_probe, logme, hscore, nce, leep, domain_prediction,
generalist, random, with parameters as "knn(k=3, metric=euclidean)" (see expert_hub/selection/proxies.py).

  python binaries/select_expert.py --task=world/shapes_novel --export_dir=/tmp/experts --workdir=/tmp/sel
  python binaries/select_expert.py --task=world/shapes_novel --proxy=knn,logme,leep,domain_prediction ...
  python binaries/select_expert.py --task=folder:/data/my_task --export_dir=/tmp/experts --workdir=/tmp/sel
  python binaries/select_expert.py --task=tfds:cifar100 --split='train[:1000]' --data_dir=... ...

Embeddings are cached in <workdir>/embeddings/, so a re-run (other proxies, or after an interruption) only embeds
what is missing. Many machines can share the experts: each runs with --shard=i/n (same flags otherwise) and
writes selection.shard-<i>-of-<n>.json; then one run with --merge_shards combines them into selection.json:

  python binaries/select_expert.py --task=world/count --export_dir=... --workdir=/shared/sel --shard=0/4  # ...3/4
  python binaries/select_expert.py --workdir=/shared/sel --merge_shards
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
flags_common.define_proxy_flags()
flags.DEFINE_string("task", None, "world/<task>, tfds:<name> or folder:<path>.")
flags.DEFINE_list("experts", None, "Expert names/paths to rank (default: every expert in --export_dir).")
flags.DEFINE_string("split", None, "Task split to embed (default: the config's, train800val200).")
flags.DEFINE_integer("k", None, "Neighbours per vote (default: the config's, 1).")
flags.DEFINE_enum("backend", None, ["auto", "exact", "scann", "scann_ah"], "kNN search backend.")
flags.DEFINE_string("proxy", None, "Proxies, comma-separated, first one selects: "
                    f"{', '.join(select.PROXIES)}; e.g. 'knn,logme,leep' or 'knn(k=3),random(seed=1)' "
                    "(default: the config's, knn).")
flags.DEFINE_integer("image_size", None, "Resize task images to this (default: the config's upstream size).")
flags.DEFINE_string("shard", None, "'i/n': score only every n-th expert starting at i and write "
                    "selection.shard-<i>-of-<n>.json (0 <= i < n).")
flags.DEFINE_bool("merge_shards", False, "Combine the workdir's shard files into selection.json (no scoring).")
flags.DEFINE_bool("cache", True, "Reuse and keep embeddings in <workdir>/embeddings/ (--nocache recomputes all).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  flags_common.setup_logging()
  if FLAGS.merge_shards:
    _print(select.merge_shards(FLAGS.workdir))
    return
  for name in ("task", "export_dir"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required (unless --merge_shards).")
  shard = select.parse_shard(FLAGS.shard)
  cfg = flags_common.load_config()
  sel = cfg.selection
  overrides = {k: v for k, v in (("split", FLAGS.split), ("k", FLAGS.k), ("backend", FLAGS.backend),
                                 ("proxy", FLAGS.proxy)) if v}
  sel = configs.replace(sel, **overrides)
  image_size = FLAGS.image_size or cfg.upstream.image_size
  task = sources.get_task(FLAGS.task, FLAGS.data_dir, image_size)
  experts = FLAGS.experts or registry.Registry([FLAGS.export_dir]).expert_handles()
  result = select.select_expert(task, experts, sel, FLAGS.workdir, image_size, export_dirs=[FLAGS.export_dir],
                                generalist=FLAGS.generalist, strict=FLAGS.strict_proxies, shard=shard,
                                use_cache=FLAGS.cache)
  _print(result)


def _print(result):
  for label, record in result["proxies"].items():
    print(f"== {label}: selected {record['selected']}")
    for r in record["ranking"]:
      print(f"{r['score']:10.4f}  {r['expert']}")
    for expert, why in record["skipped"].items():
      print(f"   skipped  {expert}: {why}")
  if "shard" in result:
    i, n = result["shard"]
    print(f"shard {i}/{n}: scored {len(result['shard_experts'])} of {result['num_candidates']} experts; merge "
          "with --merge_shards once all shards are done")
  else:
    print(f"selected ({result['proxy']}): {result['selected']}")


def run():
  """Console-script entry point."""
  app.run(main)


if __name__ == "__main__":
  run()
