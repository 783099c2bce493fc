"""Flags shared by the absl binaries (environment facts only; everything else is the config)."""

import logging as std_logging

from absl import flags
from absl import logging

from expert_hub import configs

FLAGS = flags.FLAGS


def define_common_flags(export_dir=True):
  flags.DEFINE_enum("config", "tiny", list(configs.CONFIG_NAMES), "Which config file (expert_hub/configs/).")
  flags.DEFINE_string("workdir", None, "Where this run keeps checkpoints, models and results.")
  flags.DEFINE_string("data_dir", None, "TFDS data dir (default $EXPERT_HUB_DATA_DIR or ~/tensorflow_datasets).")
  flags.DEFINE_string("hierarchy_file", None, "Hierarchy JSON of the upstream (default: the dataset's metadata).")
  flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                    "tf.distribute strategy (multi_worker reads TF_CONFIG).")
  if export_dir:
    flags.DEFINE_string("export_dir", None, "Root of exported hub modules (default <workdir>/export).")


def define_proxy_flags():
  """--generalist and --strict_proxies, for the binaries that score proxies (select_expert, evaluate_proxies)."""
  flags.DEFINE_string("generalist", None, "Generalist handle for domain_prediction and the generalist reference "
                      "(default: the export dir's generalist of the experts' upstream).")
  flags.DEFINE_bool("strict_proxies", False, "Fail when a proxy lacks an input for an expert (e.g. NCE/LEEP and an "
                    "expert without a logits endpoint) instead of recording it under 'skipped'.")


def load_config():
  """The config named by --config, with --hierarchy_file applied."""
  cfg = configs.get_config(FLAGS.config)
  if FLAGS.hierarchy_file:
    cfg = configs.replace(cfg, **{"upstream.hierarchy_file": FLAGS.hierarchy_file})
  return cfg


def setup_logging():
  """Library progress lines (python logging) go to stderr through absl at INFO."""
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger("expert_hub").setLevel(std_logging.INFO)
  # TFDS logs every dataset it opens through absl at INFO; keep its warnings only.
  std_logging.getLogger("absl").setLevel(std_logging.WARNING)
