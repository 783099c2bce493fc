"""Loading hub modules safely: every load verifies the module's files and, for modules not trusted by where
they are, checks the graph against an allowlist of ops.

Files (verify_manifest): a module written by expert_hub carries expert.json, whose sha256 manifest lists every
other file of the module; all must match, none may be added, linked or missing. A manifest proves integrity
against accidents (a truncated copy, a file edited or lost), not authenticity: whoever can write the folder can
rewrite its manifest. Trust comes from where a module came from: the registry's export dirs (ours, trusted
for their ops), or a published module's trust-on-first-use record (trust.py).

Ops (check_ops): a SavedModel is a program: loading one from elsewhere can run arbitrary TensorFlow ops (write
files, call Python, reach the network) when it is loaded or called. Every module but ours inside trusted dirs
is scanned: every function TensorFlow's loader runs or hands to a caller may use ALLOWED_OPS only
(disallowed_ops says how that set is derived), unless the caller passes `allow_unsafe_ops=True`.
"""

import collections
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

from expert_hub.hub import export
from expert_hub.hub import published
from expert_hub.hub import registry as registry_lib

# Pure tensor computation, variables and control flow: what image feature extractors are made of.
ALLOWED_OPS = frozenset("""
Abs Add AddN AddV2 ArgMax ArgMin Assert AssignVariableOp AvgPool BatchMatMulV2 BiasAdd BroadcastArgs BroadcastTo
Cast Ceil ClipByValue ConcatV2 Const Conv2D Conv2DBackpropInput Cumsum DepthwiseConv2dNative DisableCopyOnRead Div
DivNoNan Einsum Elu Enter Equal Erf EuclideanNorm Exit Exp ExpandDims Fill Floor FloorDiv FloorMod FusedBatchNorm
FusedBatchNormV3 GatherV2 Greater GreaterEqual Identity IdentityN If L2Loss LeakyRelu Less LessEqual Log
LogSoftmax LogicalAnd LogicalNot LogicalOr LoopCond MatMul MatrixBandPart Max MaxPool Maximum Mean Merge Min
Minimum MirrorPad Mod Mul Neg NextIteration NoOp NotEqual OneHot OnesLike Pack Pad PadV2 PartitionedCall
Placeholder Pow Prod Range Rank ReadVariableOp RealDiv Reciprocal Relu Relu6 Reshape ResizeBilinear
ResizeNearestNeighbor ResourceGather Round Rsqrt Select SelectV2 Selu Shape Sigmoid Sign Size Slice Softmax
Softplus Split SplitV Sqrt Square SquaredDifference Squeeze StatefulPartitionedCall StatelessIf StatelessWhile
StopGradient StridedSlice Sub Sum Switch Tanh Tile TopKV2 Transpose Unpack VarHandleOp Where While ZerosLike
""".split())

# Ops of the checkpoint functions tf.saved_model.save writes for TF1 loaders (the saver_def's save and restore).
# TensorFlow 2's loader never runs those functions (it restores through its own Python saver), so these ops are
# allowed in functions that nothing a TF2 load runs or hands out can reach, and nowhere else: in a callable
# function SaveV2 writes and MergeV2Checkpoints deletes files wherever its constants say.
SAVER_OPS = frozenset("MergeV2Checkpoints RestoreV2 SaveV2 ShardedFilename StaticRegexFullMatch StringJoin".split())

# FunctionDef attributes by which TensorFlow may swap one function for another at run time (grappler's
# implementation selector picks among functions with the same "api_implements").
_SWAP_ATTRS = ("api_implements", "_implements")


class UnsafeModuleError(ValueError):
  """A module whose graph uses ops outside the allowlist."""


def _func_names(attr_value):
  """Function names an AttrValue refers to, nested NameAttrList attributes included."""
  funcs = ([attr_value.func] if attr_value.HasField("func") else []) + list(attr_value.list.func)
  for func in funcs:
    yield func.name
    for nested in func.attr.values():
      yield from _func_names(nested)


def _is_call(op, functions):
  """Whether a node's op names a library function (a direct call) rather than a registered op."""
  return op in functions and op_def_registry.get(op) is None


def _called(node_defs, functions):
  """Library functions the nodes call: function-valued attributes (PartitionedCall and StatefulPartitionedCall
  `f`, If/While/Case branches and bodies, any other) and nodes whose op is itself a library function."""
  for node in node_defs:
    if _is_call(node.op, functions):
      yield node.op
    for attr in node.attr.values():
      yield from _func_names(attr)


def read_saved_model_proto(path):
  """The parsed saved_model.pb of a SavedModel folder (its graphs and object graph; no variables, nothing run)."""
  pb = os.path.join(path, "saved_model.pb")
  if not os.path.exists(pb):
    raise FileNotFoundError(f"{path!r} is not a SavedModel (saved_model.pb is missing).")
  sm = saved_model_pb2.SavedModel()
  with open(pb, "rb") as f:
    sm.ParseFromString(f.read())
  return sm


def _reachable(roots, functions):
  """Names of the library functions that run when one of `roots` runs (the roots included), transitively."""
  seen, stack = set(), [r for r in roots if r in functions]
  while stack:
    name = stack.pop()
    if name in seen:
      continue
    seen.add(name)
    stack.extend(n for n in _called(functions[name].node_def, functions) if n in functions and n not in seen)
  return seen


def takes_tf2_path(sm):
  """Whether tf.saved_model.load restores `sm` as a TF2 object graph, by TensorFlow's own rule (load.py
  load_partial): exactly one meta graph, with an object graph. Anything else goes through load_v1_in_v2, which
  runs the graph's own saver_def restore op and init op while loading."""
  return len(sm.meta_graphs) == 1 and sm.meta_graphs[0].HasField("object_graph_def")


def _tf2_run_roots(mg):
  """Library functions a TF2 load runs or hands to its caller: every concrete function of the object graph
  (methods, signatures, the save/restore functions of saveable objects and the create/initialize functions of
  resources, which the loader runs itself), every gradient function (run by tf.GradientTape, for fine-tuning)
  and every function TensorFlow may swap in for another (_SWAP_ATTRS)."""
  og, library = mg.object_graph_def, mg.graph_def.library
  roots = set(og.concrete_functions)
  for node in og.nodes:
    kind = node.WhichOneof("kind")
    if kind == "function":
      roots.update(node.function.concrete_functions)
    elif kind == "bare_concrete_function":
      roots.add(node.bare_concrete_function.concrete_function_name)
  roots.update(g.gradient_func for g in library.gradient)
  roots.update(g.gradient_func for g in library.registered_gradients)
  roots.update(f.signature.name for f in library.function if any(a in f.attr for a in _SWAP_ATTRS))
  return roots


def disallowed_ops(path):
  """{op: [where]} for the ops of a SavedModel outside the allowlist ("<graph>" or a library function's name).

  What is exempt is derived from what tf.saved_model.load runs, never from what the module says of itself (its
  saver_def names whatever nodes its author likes). Every function and node is scanned against ALLOWED_OPS;
  SAVER_OPS pass only in library functions that a TF2 load neither runs nor hands out (not reachable from
  _tf2_run_roots): the TF1-style checkpoint functions tf.saved_model.save writes beside the object graph. A
  SavedModel that takes TensorFlow's TF1 path (no object graph, or several meta graphs) gets no exemption: that
  loader runs the saver_def's restore op itself.
  """
  sm = read_saved_model_proto(path)
  tf2 = takes_tf2_path(sm)
  bad = {}
  for mg in sm.meta_graphs:
    functions = {f.signature.name: f for f in mg.graph_def.library.function}
    runs = _reachable(_tf2_run_roots(mg), functions) if tf2 else set(functions)
    scopes = [("<graph>", mg.graph_def.node, ALLOWED_OPS)]
    scopes += [(name, f.node_def, ALLOWED_OPS if name in runs else ALLOWED_OPS | SAVER_OPS)
               for name, f in functions.items()]
    for scope, nodes, allowed in scopes:
      for node in nodes:
        if node.op not in allowed and not _is_call(node.op, functions):  # a call's function is scanned itself
          bad.setdefault(node.op, []).append(scope)
  return bad


def _inside(path, dirs):
  return registry_lib.trusted_location(path, dirs)  # every file's real path, not just the folder's


# tf.saved_model.load calls of this process, per local module path. TensorFlow keeps every load's functions
# for the life of the process (tensorflow/tensorflow#45453), so each count is memory that is never given back:
# a loop that loads should go through a session.ModuleSession, which loads each module once.
LOADS = collections.Counter()


def split_handle(resolved):
  """A resolved handle (Registry.resolve) -> (local module path, packed expert name or None).

  Published modules (a catalogued tfhub.dev handle, any kaggle:// handle) come from published.fetch: a cache,
  else kagglehub, else tensorflow_hub, trusted on first use. Other URLs go through tensorflow_hub's resolver and
  cache (a download on first use).
  """
  path, packed_expert = resolved, None
  if "#" in path:
    path, packed_expert = path.rsplit("#", 1)
  if path.startswith(registry_lib.URL_PREFIXES):
    published_module = published.module_for_url(path)
    if published_module is not None:
      return published.fetch(published_module), packed_expert
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    path = hub.resolve(path)
  return path, packed_expert


def verify_manifest(path):
  """Checks a module's files: one of ours against its expert.json manifest, a published one against its trust
  record.

  A folder with expert.json is ours and must carry a complete manifest (export.verify_module: every file but
  expert.json listed by a plain relative path, saved_model.pb included; regular files only, no links; nothing
  unlisted; every sha256 equal). A folder without one is foreign: nothing in it can say what its files should
  be, so it is checked against its trust record when it has one (a published module, trusted on first use), and
  check_ops never trusts it by location. Either check proves the files are the ones exported or first seen
  (integrity against accidents), not who wrote them.

  Raises:
    ValueError: a missing or incomplete manifest, a listed path outside the module, a link or special file, a
      file missing, unlisted or not matching (trust.UntrustedModuleError for a trust record): each named.
  """
  if os.path.exists(os.path.join(path, export.METADATA_FILE)):
    export.verify_module(path)
  published.verify(path)


def check_ops(path, trusted_dirs, allow_unsafe_ops=False):
  """Raises UnsafeModuleError for a module whose graph has ops outside the allowlist (disallowed_ops), unless
  it is trusted: one of ours (an expert.json) whose files all really are inside `trusted_dirs`, or
  `allow_unsafe_ops`. Run verify_manifest first (load_module and ModuleSession do): trust by location holds
  for the files the manifest vouches for."""
  ours = os.path.exists(os.path.join(path, export.METADATA_FILE))
  if allow_unsafe_ops or (ours and _inside(path, trusted_dirs)):
    return
  bad = disallowed_ops(path)
  if bad:
    listing = ", ".join(f"{op} (in {sorted(set(scopes))[:2]})" for op, scopes in sorted(bad.items()))
    raise UnsafeModuleError(
        f"Module {path!r} uses ops outside expert_hub's allowlist: {listing}. Load it only if you trust its "
        "author, from Python: allow_unsafe_ops=True to load_module, ModuleSession or ExpertLayer, or for a "
        "saved Keras model `with ExpertLayer.loading(allow_unsafe_ops_for=[handle]):` around "
        "keras.saving.load_model. No command-line flag skips this check.")


def load_saved_model(path):
  """tf.saved_model.load, counted in LOADS. Callers verify first (verify_manifest, check_ops)."""
  LOADS[os.path.realpath(path)] += 1
  return tf.saved_model.load(path)


def packed_expert_of(pack, packed_expert, path):
  """The sub-module of one expert of a loaded pack, keeping the pack alive (its functions use the pack's
  variables)."""
  sub_module = getattr(pack, packed_expert)
  sub_module.pack = pack
  return sub_module, f"{path}#{packed_expert}"


def load_module(handle, export_dirs=None, allow_unsafe_ops=False):
  """Resolves a handle, verifies it and loads it with tf.saved_model.load: a one-off load.

  Every call loads again, and TensorFlow never frees a load's functions; code that uses modules more than once
  holds a session.ModuleSession instead, which loads each module once per process.

  Args:
    handle: expert name, published name ("bit-in21k/bird"), module path or URL (published modules come
      through published.fetch, other URLs through tensorflow_hub's resolver and cache).
    export_dirs: the registry's export dirs; modules inside them are trusted for their ops.
    allow_unsafe_ops: load even if the graph uses ops outside ALLOWED_OPS.

  Returns:
    (loaded module, local path).

  Raises:
    ValueError: a file does not match the sha256 manifest in expert.json, or a published module's trust record
      (trust.UntrustedModuleError), named.
    published.PublishedModuleUnavailable: a published module is not cached and cannot be downloaded.
    UnsafeModuleError: ops outside the allowlist (named), unless allow_unsafe_ops.
  """
  registry = registry_lib.Registry(export_dirs)
  path, packed_expert = split_handle(registry.resolve(handle))
  verify_manifest(path)
  check_ops(path, registry.export_dirs, allow_unsafe_ops)
  module = load_saved_model(path)
  if packed_expert is not None:
    return packed_expert_of(module, packed_expert, path)
  return module, path
