"""Flags shared by the absl binaries (environment facts only; everything else is the config), and how they fail.

Every program starts through `run(main)`: a ValueError, KeyError or path error (FileNotFoundError,
NotADirectoryError, FileExistsError, PermissionError) that reaches it is bad input the library has named, so it
prints `<program>: error: <message>` on stderr and exits with status 2, without a traceback
(EXPERT_HUB_TRACEBACK=1 shows the traceback instead). Flags that fail to parse, and app.UsageError, exit 1 as
absl does. Programs check their flags, config, paths and task specs before they write anything, so a bad input
fails in seconds and leaves no workdir, data or export behind.
"""

import difflib
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging

# The config, hierarchy and task modules load TensorFlow; they are imported where used, so that a benchmark whose
# main imports TensorFlow late (or not at all) can start through run() cheaply.
FLAGS = flags.FLAGS
EXIT_BAD_INPUT = 2
# What the library raises for a bad value, name or path (HierarchyError, ProvenanceError, UnsafeModuleError and
# the other checks are ValueErrors).
BAD_INPUT_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError,
                    IsADirectoryError, PermissionError)
TRACEBACK_ENV = "EXPERT_HUB_TRACEBACK"


def define_common_flags(export_dir=True):
  """--config, --workdir, --data_dir, --hierarchy_file, --strategy and (if export_dir) --export_dir."""
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
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
  """The config named by --config, with --hierarchy_file applied and read (so a bad file fails before training).

  Raises:
    FileNotFoundError, hierarchy.HierarchyError: --hierarchy_file is missing or invalid (named).
  """
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  from expert_hub.data import hierarchy as hierarchy_lib  # pylint: disable=g-import-not-at-top
  cfg = configs.get_config(FLAGS.config)
  if FLAGS.hierarchy_file is not None:
    cfg = configs.replace(cfg, **{"upstream.hierarchy_file": FLAGS.hierarchy_file})
    hierarchy_lib.load_hierarchy(FLAGS.hierarchy_file)
  return cfg


def override(obj, **values):
  """configs.replace(obj, **values) for the values given (not None); an explicit 0 or "" reaches the config's
  validation, which names it, instead of being dropped. Keys may be dotted ("generalist.steps")."""
  from expert_hub import configs  # pylint: disable=g-import-not-at-top
  return configs.replace(obj, **{k: v for k, v in values.items() if v is not None})


def positive_ints(flag, values):
  """The integers of a list flag (["16", "48"]), each >= 1.

  Raises:
    ValueError: naming the flag as given and the bad entry.
  """
  out = []
  for v in values or ():
    try:
      n = int(v)
    except (TypeError, ValueError):
      n = None
    if n is None or n < 1:
      raise ValueError(f"{flag}={','.join(map(str, values))}: {v!r} is not a positive integer.")
    out.append(n)
  if not out:
    raise ValueError(f"{flag} is empty; expected one or more positive integers.")
  return out


def check_dir(path, flag):
  """A folder a flag names that must exist (it is read); returns it.

  Raises:
    FileNotFoundError / NotADirectoryError: naming the flag and the path.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{flag}={path!r} does not exist; expected an existing folder.")
  if not os.path.isdir(path):
    raise NotADirectoryError(f"{flag}={path!r} is not a folder.")
  return path


def check_workdir(path, flag="--workdir"):
  """A folder a program may create: fails now, not at its first write, where something else is in the way.

  Raises:
    ValueError: an empty path. NotADirectoryError: `path`, or the nearest existing folder above it, is a file.
  """
  if not path:
    raise ValueError(f"{flag}={path!r}; expected a folder path.")
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if os.path.exists(probe) and not os.path.isdir(probe):
    where = "is a file" if probe == os.path.abspath(path) else f"is inside {probe!r}, which is a file"
    raise NotADirectoryError(f"{flag}={path!r} {where}; expected a folder.")
  return path


def check_task_specs(specs, data_dir=None):
  """Checks task specs without building them (world tasks render on first use): known world and VTAB names,
  existing image folders, prepared TFDS datasets.

  Raises:
    ValueError: a spec that is not 'world/<task>', 'tfds:<name>', 'folder:<path>' or 'vtab/<task>'.
    KeyError: an unknown world or VTAB task (with the nearest names).
    FileNotFoundError: a missing image folder, or a TFDS dataset not prepared in data_dir.
  """
  # Late imports: the task modules load TensorFlow and TFDS.
  from expert_hub.data import upstream as upstream_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.data.world import catalogue  # pylint: disable=g-import-not-at-top
  from expert_hub.tasks import sources, vtab  # pylint: disable=g-import-not-at-top
  for spec in specs:
    if not isinstance(spec, str) or not spec.strip():
      raise ValueError(f"Task spec {spec!r} is not a non-empty string.")
    if spec.startswith(sources.WORLD_PREFIX):
      name = spec[len(sources.WORLD_PREFIX):]
      if name not in catalogue.TASKS:
        near = difflib.get_close_matches(name, list(catalogue.TASKS), n=3)
        raise KeyError(f"Unknown world task {name!r} in {spec!r}; world tasks are {sorted(catalogue.TASKS)} "
                       f"(nearest: {near}).")
    elif spec.startswith(sources.VTAB_PREFIX):
      vtab.TASKS.get(spec[len(sources.VTAB_PREFIX):])
    elif spec.startswith(sources.FOLDER_PREFIX):
      path = spec[len(sources.FOLDER_PREFIX):]
      if not os.path.isdir(path):
        raise FileNotFoundError(f"Task {spec!r}: image folder {path!r} does not exist; expected "
                                "<path>/<split>/<class>/<image>.")
    elif spec.startswith(sources.TFDS_PREFIX):
      name = spec[len(sources.TFDS_PREFIX):]
      if not name:
        raise ValueError(f"Task spec {spec!r} names no TFDS dataset; expected e.g. 'tfds:cifar100'.")
      if not name.startswith(upstream_lib.WORLD_PREFIX):  # the world renders itself; others must be prepared
        upstream_lib.get_builder(name, data_dir)
    else:
      raise ValueError(f"Unknown task spec {spec!r}; expected 'world/<task>', 'tfds:<name>', 'folder:<path>' or "
                       "'vtab/<task>'.")


def error_message(error):
  """The one-line text of a bad-input error (a KeyError's str() would quote its message)."""
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    return error.args[0]
  return str(error) or type(error).__name__


def run(main, flags_parser=None):
  """app.run(main) for a program: BAD_INPUT_ERRORS become `<program>: error: <message>` and exit status 2."""
  def guarded(argv):
    try:
      return main(argv)
    except BAD_INPUT_ERRORS as e:
      if os.environ.get(TRACEBACK_ENV):
        raise
      program = os.path.basename(argv[0]) if argv else "expert_hub"
      print(f"{program}: error: {error_message(e)}", file=sys.stderr, flush=True)
      sys.exit(EXIT_BAD_INPUT)

  if flags_parser is None:
    app.run(guarded)
  else:
    app.run(guarded, flags_parser=flags_parser)


def setup_logging():
  """Library progress lines (python logging) go to stderr through absl at INFO."""
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger("expert_hub").setLevel(std_logging.INFO)
  # TFDS logs every dataset it opens through absl at INFO; keep its warnings only.
  std_logging.getLogger("absl").setLevel(std_logging.WARNING)
