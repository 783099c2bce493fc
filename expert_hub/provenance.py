"""What a stage's output was made from, recorded beside it: a resumed or repeated run reuses only its own work.

Every resumable output (a trained generalist or expert, a fine-tune's checkpoints, an export, a task's
results) gets `made_from.json` in its folder: the inputs that determine it (configs, data fingerprints, the
identities of the modules it starts from, seeds). Before a stage reuses or resumes a folder it compares that
record with what it would make now; a mismatch is a `ProvenanceError` naming the folder and each differing
field with both values, never a silent reuse (run `smoke` and then `tiny` in one workdir: the tiny run stops at
the generalist and says `train.steps: recorded 40, now 1600`).
"""

import dataclasses
import enum
import hashlib
import json
import os

import numpy as np

from expert_hub import io_utils

MADE_FROM_FILE = "made_from.json"


class ProvenanceError(ValueError):
  """A folder holds the output of other inputs than the ones asked for."""


def describe(value):
  """`value` as plain JSON data: dataclasses become dicts, tuples lists, enums their values."""
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
  if isinstance(value, dict):
    return {str(k): describe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [describe(v) for v in value]
  if isinstance(value, enum.Enum):
    return value.value
  if hasattr(value, "item") and callable(value.item):  # numpy scalars
    return value.item()
  return json.loads(json.dumps(value))


def digest(record):
  """A short sha256 of a record's canonical JSON (dict order does not matter)."""
  return hashlib.sha256(json.dumps(describe(record), sort_keys=True).encode()).hexdigest()[:16]


def array_fingerprint(*arrays):
  """sha256 over arrays' dtypes, shapes and bytes: the identity of data held in memory."""
  h = hashlib.sha256()
  for a in arrays:
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def differences(recorded, wanted, prefix=""):
  """["field: recorded X, now Y", ...] between two described records, by dotted field path."""
  out = []
  if isinstance(recorded, dict) and isinstance(wanted, dict):
    for key in sorted(set(recorded) | set(wanted)):
      path = f"{prefix}.{key}" if prefix else key
      if key not in recorded:
        out.append(f"{path}: not recorded, now {_short(wanted[key])}")
      elif key not in wanted:
        out.append(f"{path}: recorded {_short(recorded[key])}, now absent")
      else:
        out += differences(recorded[key], wanted[key], path)
  elif recorded != wanted:
    out.append(f"{prefix or '(record)'}: recorded {_short(recorded)}, now {_short(wanted)}")
  return out


def _short(value, limit=120):
  text = json.dumps(value, sort_keys=True)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def read(folder):
  """The record in `folder`, or None when it has none."""
  path = os.path.join(folder, MADE_FROM_FILE)
  if not os.path.exists(path):
    return None
  try:
    return io_utils.read_json(path)
  except ValueError as e:
    raise ProvenanceError(f"{path} is not valid JSON ({e}); remove {folder!r} to redo that work.") from e


def check(folder, record, what, has_output=False, write=True):
  """Refuses `folder` unless its record equals `record`; records it when the folder holds no output yet.

  Args:
    folder: the stage's output folder.
    record: what the output is (or will be) made from; dataclasses and tuples are fine (see `describe`).
    what: the output, for messages ("generalist", "fine-tune of shapes on world/count").
    has_output: the folder already holds output (checkpoints, weights, results): without a record it cannot
      be vouched for, so it is refused rather than reused.
    write: record it when absent (False on a multi-worker job's non-chief workers, which write nothing).

  Raises:
    ProvenanceError: the recorded inputs differ (each differing field named, both values), or output without
      a record.
  """
  wanted = describe(record)
  recorded = read(folder)
  if recorded is None:
    if has_output:
      raise ProvenanceError(
          f"{folder!r} holds a {what} but no {MADE_FROM_FILE} saying what it was made from (made by an older "
          "expert_hub, or copied in); it is not reused. Use another workdir, or remove that folder to redo it.")
    if write:
      io_utils.atomic_write_json(os.path.join(folder, MADE_FROM_FILE), wanted)
    return
  diff = differences(recorded, wanted)
  if diff:
    listing = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
    raise ProvenanceError(
        f"{folder!r} holds a {what} made from other inputs than this run's: {listing}. Nothing was reused or "
        "overwritten; use another workdir, or remove that folder to redo it with these inputs.")
