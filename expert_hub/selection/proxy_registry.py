"""Selection proxies by name: one interface over proxies.py's measures, a registry and spec strings.

Every proxy has one interface: `Proxy.score(ProxyInputs) -> (score, extras)`. ProxyInputs carries the expert's
features of the task's images and the task labels, plus what some proxies need besides: the expert's upstream
`logits` (NCE, LEEP), the upstream label ids it covers and the generalist's upstream logits (Domain Prediction).
A proxy whose input is absent raises MissingInputError naming the expert and the missing input; the selector
records it as a skip (or re-raises it when asked to be strict). An input holding NaN or Inf (features, logits)
raises proxies.NonFiniteInputError naming the proxy, the expert and the values, from every proxy.

| name              | measure (proxies.py)                     | needs                                  |
|-------------------|------------------------------------------|----------------------------------------|
| knn               | knn_accuracy                             | features, labels                       |
| linear_probe      | linear_probe_accuracy                    | features, labels                       |
| logme             | logme                                    | features, labels                       |
| hscore            | h_score                                  | features, labels                       |
| nce               | nce                                      | expert logits (argmax = source label)  |
| leep              | leep                                     | expert logits                          |
| domain_prediction | domain_prediction                        | generalist logits + expert label ids   |
| generalist        | reference: always the generalist         | whether the candidate is the generalist|
| random            | reference: a seeded random expert        | task and expert names                  |

Proxies are named by a spec string, "name" or "name(key=value, ...)" (values are Python literals or bare words;
parsed without eval), several separated by commas: "knn(k=3, metric=euclidean),logme,leep".
"""

import ast
import dataclasses
import inspect
import re
import zlib
from typing import Any, Callable, Dict, FrozenSet, Optional, Sequence

import numpy as np

from expert_hub.selection import knn as knn_lib
from expert_hub.selection import proxies


class MissingInputError(ValueError):
  """A proxy cannot score an expert because an input it needs (e.g. a `logits` endpoint) is absent."""


# The ProxyInputs fields that are float arrays, checked for NaN / Inf before any proxy reads them.
_ARRAY_INPUTS = ("features", "logits", "generalist_logits")


@dataclasses.dataclass(frozen=True)
class ProxyInputs:
  """What a proxy may look at for one (task, expert) pair; None means "not available".

  Attributes:
    features: [N, D] the expert's features of the task's images.
    labels: [N] integer task labels.
    expert: the expert's handle (named in errors; seeds the random reference).
    task: the task's name (seeds the random reference).
    logits: [N, L] the expert's upstream logits (`module.logits(images)`), or None when it has no such endpoint.
    label_ids: the L upstream label ids the expert covers (expert.json "labels"), or None.
    generalist_logits: [N, G] the generalist's upstream logits of the same images, or None.
    generalist_label_ids: the G upstream label ids of generalist_logits, or None.
    is_generalist: whether this candidate is the generalist (the "generalist" reference); None when no
      generalist is known.
    missing: {input name: why it is absent}, quoted in MissingInputError.
  """
  features: Optional[np.ndarray] = None
  labels: Optional[np.ndarray] = None
  expert: str = ""
  task: str = ""
  logits: Optional[np.ndarray] = None
  label_ids: Optional[Sequence[int]] = None
  generalist_logits: Optional[np.ndarray] = None
  generalist_label_ids: Optional[Sequence[int]] = None
  is_generalist: Optional[bool] = False
  missing: Dict[str, str] = dataclasses.field(default_factory=dict)


def _need(inputs, proxy_name, *names):
  for name in names:
    if getattr(inputs, name) is None:
      why = inputs.missing.get(name, "not provided")
      raise MissingInputError(f"Proxy {proxy_name!r} cannot score expert {inputs.expert!r}: its {name} is "
                              f"missing ({why}).")
  return [getattr(inputs, name) for name in names]


def _score_knn(inputs, k=1, metric="cosine", backend="auto"):
  accuracy, used = proxies.knn_accuracy(*_need(inputs, "knn", "features", "labels"), k=k, metric=metric,
                                        backend=backend)
  return accuracy, {"backend": used}


def _score_linear_probe(inputs, num_folds=5, l2=1e-2, max_iter=proxies.PROBE_MAX_ITER, seed=0):
  accuracy, best_l2 = proxies.linear_probe_accuracy(*_need(inputs, "linear_probe", "features", "labels"),
                                                    num_folds, l2, max_iter, seed)
  return accuracy, {"l2": best_l2}


def _score_logme(inputs, max_iter=100, tol=1e-6):
  return proxies.logme(*_need(inputs, "logme", "features", "labels"), max_iter, tol), {}


def _score_hscore(inputs, shrinkage=0.0):
  return proxies.h_score(*_need(inputs, "hscore", "features", "labels"), shrinkage), {}


def _score_nce(inputs):
  logits, labels = _need(inputs, "nce", "logits", "labels")
  return proxies.nce(np.argmax(logits, axis=1), labels), {}


def _score_leep(inputs):
  return proxies.leep(*_need(inputs, "leep", "logits", "labels")), {}


def _score_domain_prediction(inputs):
  return proxies.domain_prediction(*_need(inputs, "domain_prediction", "generalist_logits",
                                          "generalist_label_ids", "label_ids")), {}


def _score_generalist(inputs):
  return (1.0 if _need(inputs, "generalist", "is_generalist")[0] else 0.0), {}


def _module_key(handle):
  """The part of a handle that names its module wherever the export folder sits: the last three path components
  (`<upstream>/<name>/<version>` for expert_hub's exports) and a packed expert's `#<expert>`."""
  base, sep, packed = str(handle).partition("#")
  return "/".join(base.rstrip("/").split("/")[-3:]) + sep + packed


def _score_random(inputs, seed=0):
  # crc32, not hash(): the same (seed, task, module) scores the same in every process, and the key makes it
  # the same for a module exported under another workdir (_module_key).
  key = zlib.crc32(f"{seed}\0{inputs.task}\0{_module_key(inputs.expert)}".encode())
  return float(np.random.default_rng(key).random()), {}


@dataclasses.dataclass(frozen=True)
class Proxy:
  """One configured proxy: `score(inputs)` -> (float, extras dict); higher is better.

  Attributes:
    name: registered name ("knn", ...).
    params: keyword arguments given in the spec (e.g. {"k": 3}).
    requires: ProxyInputs fields it reads; the selector computes only what some proxy requires.
    fn: fn(inputs, **params) -> (score, extras).
  """
  name: str
  params: Dict[str, Any]
  requires: FrozenSet[str]
  fn: Callable

  @property
  def label(self):
    """The canonical spec, e.g. "knn(k=3)": the name and the parameters that differ from their defaults."""
    defaults = {k: p.default for k, p in inspect.signature(self.fn).parameters.items()}
    changed = sorted((k, v) for k, v in self.params.items() if defaults.get(k, inspect.Parameter.empty) != v)
    if not changed:
      return self.name
    return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in changed) + ")"

  def score(self, inputs):
    """(score, extras); raises proxies.NonFiniteInputError if an input it reads holds NaN / Inf, naming it."""
    for name in sorted(self.requires & set(_ARRAY_INPUTS)):
      if getattr(inputs, name) is not None:
        knn_lib.check_finite(getattr(inputs, name), f"its {name}",
                             f"Proxy {self.label!r} cannot score expert {inputs.expert!r}: ")
    value, extras = self.fn(inputs, **self.params)
    value = float(value)
    if not np.isfinite(value):
      raise ValueError(f"Proxy {self.label!r} gave {value} for expert {inputs.expert!r}.")
    return value, extras


class ProxyRegistry:
  """Proxy names -> (scoring function, required inputs). An instance per use; duplicate names are refused."""

  def __init__(self):
    self._entries = {}

  def register(self, name, fn, requires):
    if name in self._entries:
      raise ValueError(f"Proxy {name!r} is already registered.")
    self._entries[name] = (fn, frozenset(requires))

  def names(self):
    return tuple(self._entries)

  def build(self, name, **params):
    """A Proxy; unknown names or parameters raise ValueError listing the allowed ones."""
    if name not in self._entries:
      raise ValueError(f"Unknown proxy {name!r}; expected one of {self.names()}.")
    fn, requires = self._entries[name]
    allowed = [p for p in inspect.signature(fn).parameters if p != "inputs"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
      raise ValueError(f"Proxy {name!r} has no parameter(s) {unknown}; allowed: {allowed}.")
    return Proxy(name, dict(params), requires, fn)

  def parse(self, specs, defaults=None):
    """Proxies from a spec string "a,b(k=v, ...)" or a sequence of such strings; refuses duplicates.

    defaults: {proxy name: {param: value}} applied where the spec does not set the parameter (the selector
    passes the config's k and backend to knn this way).
    """
    if isinstance(specs, str):
      specs = [specs]
    proxies = []
    for spec in specs:
      for part in _split_top_level(spec):
        name, params = _parse_one(part)
        params = dict((defaults or {}).get(name, {}), **params)
        proxies.append(self.build(name, **params))
    if not proxies:
      raise ValueError(f"No proxy in {specs!r}; expected e.g. 'knn' or 'knn,logme,leep'.")
    labels = [p.label for p in proxies]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
      raise ValueError(f"Proxies {duplicates} are requested more than once in {specs!r}.")
    return proxies


_SPEC_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


def _split_top_level(spec):
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(spec):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if depth < 0:
      raise ValueError(f"Unbalanced ')' in proxy spec {spec!r}.")
    if ch == "," and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  if depth:
    raise ValueError(f"Unbalanced '(' in proxy spec {spec!r}.")
  return [p.strip() for p in parts + [spec[start:]] if p.strip()]


def _parse_one(part):
  match = _SPEC_RE.match(part)
  if not match:
    raise ValueError(f"Proxy spec {part!r}; expected 'name' or 'name(key=value, ...)'.")
  name, args = match.group(1), (match.group(2) or "").strip()
  params = {}
  if args:
    try:
      call = ast.parse(f"f({args})", mode="eval").body
    except SyntaxError as e:
      raise ValueError(f"Proxy spec {part!r}: cannot parse its arguments ({e.msg}).") from e
    if call.args or any(kw.arg is None for kw in call.keywords):
      raise ValueError(f"Proxy spec {part!r}: arguments must be key=value.")
    for kw in call.keywords:
      if isinstance(kw.value, ast.Name):  # a bare word: metric=euclidean
        params[kw.arg] = kw.value.id
      else:
        try:
          params[kw.arg] = ast.literal_eval(kw.value)
        except ValueError as e:
          raise ValueError(f"Proxy spec {part!r}: {kw.arg}= is not a literal.") from e
  return name, params


def default_registry():
  """The built-in proxies (see the module docstring)."""
  registry = ProxyRegistry()
  registry.register("knn", _score_knn, {"features", "labels"})
  registry.register("linear_probe", _score_linear_probe, {"features", "labels"})
  registry.register("logme", _score_logme, {"features", "labels"})
  registry.register("hscore", _score_hscore, {"features", "labels"})
  registry.register("nce", _score_nce, {"logits", "labels"})
  registry.register("leep", _score_leep, {"logits", "labels"})
  registry.register("domain_prediction", _score_domain_prediction,
                    {"generalist_logits", "generalist_label_ids", "label_ids"})
  registry.register("generalist", _score_generalist, {"is_generalist"})
  registry.register("random", _score_random, {"task", "expert"})
  return registry


PROXIES = default_registry().names()


def parse_proxies(specs, defaults=None):
  """default_registry().parse(specs, defaults)."""
  return default_registry().parse(specs, defaults)
