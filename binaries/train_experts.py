r"""Trains full and/or adapter experts, one per selected hierarchy node, from the generalist.

  python binaries/train_experts.py --config=tiny --workdir=/tmp/expert_hub --kinds=full,adapter
  python binaries/train_experts.py --config=tiny --workdir=/tmp/expert_hub --experts=shapes,glyphs
  python binaries/train_experts.py --config=tiny --workdir=/tmp/expert_hub --kinds=adapter --adapter_first_stage=3
  python binaries/train_experts.py --config=tiny --workdir=/tmp/wd_r4 --kinds=adapter --adapter_reduction=4 \
      --adapter_lr=0.1 --experts=scenes   # a variant, in a workdir holding a copy of the generalist
Finished experts are skipped on re-run; an interrupted expert resumes from its checkpoint. Each expert's precision@1
on its own labels is printed beside the generalist's, measured on the same held-out images before training.
"""

import os

from absl import app
from absl import flags

from expert_hub import flags_common
from expert_hub import io_utils
from expert_hub.models import adapters
from expert_hub.train import experts
from expert_hub.train import strategies
from expert_hub.train import upstream

FLAGS = flags.FLAGS
flags_common.define_common_flags(export_dir=False)
flags.DEFINE_list("kinds", None, "Expert kinds to train (full, adapter); default: the config's.")
flags.DEFINE_list("experts", None, "Only these experts (node names with '/' as '_'); default: all selected.")
flags.DEFINE_integer("steps", None, "Override the config's expert steps (both kinds).")
flags.DEFINE_integer("adapter_first_stage", None, "Override the config's adapter first stage (adapters only in "
                     "stages >= this; see expert_hub.models.adapters.AdapterConfig).")
flags.DEFINE_integer("adapter_reduction", None, "Override the config's adapter width (hidden = channels // this).")
flags.DEFINE_enum("adapter_placement", None, list(adapters.PLACEMENTS), "Override the config's adapter placement.")
flags.DEFINE_float("adapter_lr", None, "Override the config's adapter experts' base learning rate.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  strategy = strategies.make_strategy(FLAGS.strategy)  # first: multi_worker must start before other TF ops
  flags_common.setup_logging()
  cfg = flags_common.load_config()
  cfg = flags_common.override(cfg, **{"experts.full.steps": FLAGS.steps, "experts.adapter.steps": FLAGS.steps,
                                      "experts.adapter_arch.first_stage": FLAGS.adapter_first_stage,
                                      "experts.adapter_arch.reduction": FLAGS.adapter_reduction,
                                      "experts.adapter_arch.placement": FLAGS.adapter_placement,
                                      "experts.adapter.base_lr": FLAGS.adapter_lr,
                                      "experts.kinds": None if FLAGS.kinds is None else tuple(FLAGS.kinds)})
  if FLAGS.experts is not None and not FLAGS.experts:
    raise app.UsageError("--experts= names no expert; leave it out to train every selected expert.")
  flags_common.check_dir(FLAGS.workdir, "--workdir")
  generalist = os.path.join(FLAGS.workdir, "generalist")
  if not upstream.is_trained(generalist):
    raise FileNotFoundError(f"--workdir={FLAGS.workdir!r} holds no trained generalist ({generalist} without "
                            f"{upstream.MODEL_FILE} and {upstream.WEIGHTS_FILE}); run train_upstream with this "
                            "--workdir first.")
  io_utils.make_workdir(FLAGS.workdir)  # private (0o700) when new; refuses one another user owns
  results = experts.train_experts(cfg, FLAGS.data_dir, FLAGS.workdir, kinds=FLAGS.kinds, names=FLAGS.experts,
                                  strategy=strategy)
  for kind, by_name in results.items():
    for name, info in by_name.items():
      train = info["train"]
      print(f"{kind:8s} {name:20s} eval precision@1 {train.get('eval_precision_at_1')} "
            f"(generalist {train.get('generalist_eval_precision_at_1')})")


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
