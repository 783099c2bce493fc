"""Selection over experts x tasks as an Apache Beam pipeline: one element per module, keyed by task on the way out.

    (module units) -> Reshuffle -> ScoreUnit (per worker: one ModuleSession, every task's images)
        -> (task, partial scores) -> GroupByKey -> MergeTask (merge, rank) -> one JSON per task
                               \\-> failures -> one JSON listing every module that could not be scored

Each element is one unit of scoring.py (a module, or a pack with all its candidate experts, embedded together by
`embed_all`): the worker that takes it loads the module once (its ModuleSession, built in `DoFn.setup`), embeds
every task's images with it (through the embedding cache), scores every proxy, and emits one partial per task.
The grouping by task merges the partials exactly as the in-process path does (scoring.merge_partials,
scoring.finish), so rankings are the same, and an expert scored twice is an error, never a double count.

Why a DoFn holding a per-worker session rather than RunInference's KeyedModelHandler: an element's work is not
model inference alone but embedding many tasks, scoring proxies (kNN, LogME, ...) on the features, the pack's
one-graph `embed_all`, the embedding cache and our manifest / allowlist checks, all of which ModuleSession and
scoring.TaskState already do in-process; a DoFn runs that same code, so the Beam and in-process rankings cannot
drift apart. RunInference would add a model handler per module kind and still need this code after it.

Failures: a module that fails (verification, a missing file, a bad graph) is caught where it is scored and
emitted as a failure naming the expert and the error, and the pipeline goes on; the driver then raises one
error naming every failed expert and writes no selection. Such errors are deterministic, so retrying them
would only repeat them; what the runner retries is its own business (the DirectRunner retries nothing; Dataflow
retries a failing work item up to 4 times in batch mode) and applies to crashes outside our try (a worker lost).

The workdir (and the embedding cache under it) must be on a filesystem every worker sees; the export dirs too.
Workers need expert_hub installed (`pip install expert_hub[beam]`), the same versions as the driver.
"""

import logging
import os
import shutil
import tempfile
import traceback

from expert_hub import io_utils
from expert_hub.selection import scoring

log = logging.getLogger(__name__)
FAILURES_FILE = "selection_failures.json"
DIRECT_DEFAULTS = ("--direct_num_workers=2", "--direct_running_mode=multi_processing")


def pipeline_options(argv):
  """PipelineOptions from command-line words such as ["--runner=DirectRunner", "--direct_num_workers=4"].

  The DirectRunner runs in 2 worker processes unless told otherwise (DIRECT_DEFAULTS).
  """
  from apache_beam.options import pipeline_options as options_lib  # pylint: disable=g-import-not-at-top
  argv = list(argv)
  runner = next((a.split("=", 1)[1] for a in argv if a.startswith("--runner=")), None)
  if runner in ("DirectRunner", "direct"):
    given = {a.split("=", 1)[0] for a in argv}
    argv += [d for d in DIRECT_DEFAULTS if d.split("=", 1)[0] not in given]
  return options_lib.PipelineOptions(argv)


class _Scorer:
  """What ScoreUnit rebuilds on each worker: a session, the plan, and each task's state, built on first use."""

  def __init__(self, spec):
    from expert_hub.hub import registry as registry_lib  # pylint: disable=g-import-not-at-top
    from expert_hub.hub import session as session_lib  # pylint: disable=g-import-not-at-top
    self.spec = spec
    self.session = session_lib.ModuleSession(registry_lib.Registry(spec["export_dirs"]),
                                             allow_unsafe_ops=spec["allow_unsafe_ops"])
    self.plan = scoring.make_plan(spec["experts"], spec["cfg"], self.session, spec["proxies"], spec["generalist"],
                                  spec["strict"])
    self.states = {}

  def state(self, i):
    if i not in self.states:
      spec = self.spec
      self.states[i] = scoring.TaskState(spec["tasks"][i], self.plan, spec["image_size"], spec["cache_dirs"][i],
                                         self.session)
    return self.states[i]


def _make_dofns(beam):
  """The pipeline's DoFns (defined here so that importing this module does not need apache_beam)."""

  class ScoreUnit(beam.DoFn):
    """unit index -> (task index, partial) per task, or a failure naming the unit's experts (tagged output)."""

    def __init__(self, spec):
      super().__init__()
      self.spec = spec
      self.scorer = None

    def setup(self):
      self.scorer = _Scorer(self.spec)

    def process(self, unit_index):
      plan = self.scorer.plan
      unit = plan.units[unit_index]
      try:
        parts = [(i, self.scorer.state(i).score_unit(plan, unit, self.scorer.session))
                 for i in range(len(self.spec["tasks"]))]
      except Exception as e:  # pylint: disable=broad-except
        if plan.strict and type(e).__name__ == "MissingInputError":
          raise
        for expert, _ in unit[1]:
          yield beam.pvalue.TaggedOutput("failed", {"expert": expert, "error": f"{type(e).__name__}: {e}",
                                                    "traceback": traceback.format_exc(limit=5)})
        return
      yield from parts

  class MergeTask(beam.DoFn):
    """(task index, [partials]) -> its scores written to `<staging>/task-<i>.json`."""

    def __init__(self, spec, staging):
      super().__init__()
      self.spec, self.staging = spec, staging
      self.plan = None

    def setup(self):
      self.plan = _Scorer(self.spec).plan  # no module is loaded for planning

    def process(self, element):
      i, partials = element
      task_name = self.spec["tasks"][i].name
      scored = scoring.finish(self.plan, task_name, scoring.merge_partials(self.plan, list(partials)))
      io_utils.atomic_write_json(os.path.join(self.staging, f"task-{i:05d}.json"), scored)
      yield i

  return ScoreUnit, MergeTask


def score_tasks(tasks, experts, cfg, image_size, export_dirs, options, proxies=None, generalist=None, strict=False,
                cache_dirs=None, staging_dir=None, allow_unsafe_ops=False):
  """scoring.score_tasks on Apache Beam: the same arguments and result, with the modules spread over workers.

  Args:
    tasks, experts, cfg, image_size, proxies, generalist, strict, cache_dirs: as in scoring.score_tasks (tasks
      are pickled to the workers).
    export_dirs: the registry's export dirs (every worker builds its own ModuleSession from them).
    options: Beam PipelineOptions (pipeline_options), e.g. the DirectRunner with several workers, or
      DataflowRunner with its project and region.
    staging_dir: a folder on a filesystem every worker sees, under which a fresh subfolder receives each task's
      scores for the driver to read (removed afterwards); default this machine's temp dir (enough for the
      DirectRunner).
    allow_unsafe_ops: as ModuleSession's.

  Raises:
    RuntimeError: some modules could not be scored; every one is named with its error (nothing is returned).
    KeyError, ValueError: unknown names or proxies, before the pipeline starts.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import registry as registry_lib  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import session as session_lib  # pylint: disable=g-import-not-at-top
  tasks = list(tasks)
  cache_dirs = list(cache_dirs) if cache_dirs is not None else [None] * len(tasks)
  spec = {"tasks": tasks, "experts": list(experts), "cfg": cfg, "image_size": image_size,
          "export_dirs": list(export_dirs or []), "proxies": proxies, "generalist": generalist, "strict": strict,
          "cache_dirs": cache_dirs, "allow_unsafe_ops": allow_unsafe_ops}
  plan = scoring.make_plan(experts, cfg, session_lib.ModuleSession(registry_lib.Registry(spec["export_dirs"])),
                           proxies, generalist, strict)  # fails on unknown names and proxies before any work
  if staging_dir:
    os.makedirs(staging_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".beam_staging-", dir=staging_dir)
  score_unit, merge_task = _make_dofns(beam)
  try:
    with beam.Pipeline(options=options) as p:
      scored = (p | "Units" >> beam.Create(list(range(len(plan.units))))
                | "Spread" >> beam.Reshuffle()
                | "Score" >> beam.ParDo(score_unit(spec)).with_outputs("failed", main="scored"))
      _ = (scored.scored | "ByTask" >> beam.GroupByKey() | "Merge" >> beam.ParDo(merge_task(spec, staging)))
      _ = (scored.failed | "AllFailures" >> beam.combiners.ToList()
           | "WriteFailures" >> beam.Map(lambda failures: io_utils.atomic_write_json(
               os.path.join(staging, FAILURES_FILE), sorted(failures, key=lambda f: f["expert"]))))
    failures = io_utils.read_json(os.path.join(staging, FAILURES_FILE))
    if failures:
      listing = "\n".join(f"- {f['expert']}: {f['error']}" for f in failures)
      raise RuntimeError(f"{len(failures)} of {len(experts)} experts could not be scored on the Beam runner; "
                         f"nothing was selected:\n{listing}")
    out = []
    for i, task in enumerate(tasks):
      path = os.path.join(staging, f"task-{i:05d}.json")
      if not os.path.exists(path):
        raise RuntimeError(f"The Beam pipeline wrote no scores for task {task.name!r} ({path}).")
      out.append(io_utils.read_json(path))
    log.info("[select, beam] %d modules x %d tasks scored on %s", len(plan.units), len(tasks),
             options.get_all_options().get("runner"))
    return out
  finally:
    shutil.rmtree(staging, ignore_errors=True)
