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


def define_beam_flags():
  """--runner: selection on Apache Beam (selection/beam_selection.py); other unknown flags go to Beam."""
  flags.DEFINE_string("runner", None, "Score experts on Apache Beam with this runner (DirectRunner, DataflowRunner, "
                      "FlinkRunner, SparkRunner, ...; needs expert_hub[beam]). Every flag this program does not "
                      "know passes to Beam's PipelineOptions (--direct_num_workers=4, --project=..., --region=...). "
                      "Default: in this process.")


def parse_known_flags(argv):
  """An app.run flags_parser that keeps the flags this program does not define, for Beam (beam_options)."""
  try:
    return FLAGS(argv, known_only=True)
  except flags.Error as e:
    raise SystemExit(f"FATAL Flags parsing error: {e}")


def beam_options(argv):
  """Beam PipelineOptions for --runner plus main's leftover flags, or None without --runner.

  Raises:
    app.UsageError: leftover words without --runner (a misspelt flag), or --runner without expert_hub[beam].
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  rest = list(argv[1:])
  if not FLAGS.runner:
    if rest:
      raise app.UsageError(f"Unknown flags or arguments {rest}; Beam options are accepted only with --runner.")
    return None
  try:
    from expert_hub.selection import beam_selection  # pylint: disable=g-import-not-at-top
    return beam_selection.pipeline_options([f"--runner={FLAGS.runner}", *rest])
  except ImportError as e:
    raise app.UsageError(f"--runner={FLAGS.runner} needs Apache Beam: pip install 'expert_hub[beam]' ({e}).")


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
