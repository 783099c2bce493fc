"""Loading hub modules safely: every load verifies the sha256 manifest and, for modules from outside the
registry's own export dirs, checks the graph against an allowlist of ops.

A SavedModel is a program: loading one from elsewhere can run arbitrary TensorFlow ops (write files, call
Python, reach the network) when it is called. `load_module` refuses graphs with ops outside ALLOWED_OPS unless
the caller passes `allow_unsafe_ops=True`. Checkpoint save/restore ops are allowed only inside the SavedModel's
own saver functions (every SavedModel has them), never in callable functions.
"""

import collections
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

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

# Ops every SavedModel's own saver functions use; allowed there and nowhere else.
SAVER_OPS = frozenset("MergeV2Checkpoints RestoreV2 SaveV2 ShardedFilename StaticRegexFullMatch StringJoin".split())


class UnsafeModuleError(ValueError):
  """A module whose graph uses ops outside the allowlist."""


def _called(node_defs):
  for node in node_defs:
    for attr in node.attr.values():
      if attr.HasField("func"):
        yield attr.func.name
      for f in attr.list.func:
        yield f.name


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
  """Names of the library functions reachable from `roots` through function-valued attributes (calls,
  If/While branches and bodies, gradients): everything that runs when a root runs."""
  seen, stack = set(), [r for r in roots if r in functions]
  while stack:
    name = stack.pop()
    if name in seen:
      continue
    seen.add(name)
    stack.extend(n for n in _called(functions[name].node_def) if n in functions and n not in seen)
  return seen


def _loader_functions(mg):
  """(callable roots, restore roots) of a meta graph's object graph.

  Callable: every concrete function of the object graph (what `module.f(...)`, signatures and Keras layers
  call). Restore: the save/restore functions of saveable objects, which tf.saved_model.load itself runs to
  restore them. The saver_def's graph nodes are run only by TF1 loaders; their functions get no exemption a
  caller could reach (a crafted saver_def naming `__call__` exempts nothing).
  """
  og = mg.object_graph_def
  callable_roots = set(og.concrete_functions)
  restore_roots = set()
  for node in og.nodes:
    if node.WhichOneof("kind") == "function":
      callable_roots.update(node.function.concrete_functions)
    elif node.WhichOneof("kind") == "bare_concrete_function":
      callable_roots.add(node.bare_concrete_function.concrete_function_name)
    for saveable in node.saveable_objects.values():
      for ref in (saveable.save_function, saveable.restore_function):
        target = og.nodes[ref] if 0 < ref < len(og.nodes) else None
        if target is not None and target.WhichOneof("kind") == "bare_concrete_function":
          restore_roots.add(target.bare_concrete_function.concrete_function_name)
  return callable_roots, restore_roots


def disallowed_ops(path):
  """{op: [function names]} for ops outside the allowlist anywhere a caller or the loader can make them run.

  Every library function is scanned. Functions a caller can reach (from the object graph's concrete functions)
  and the top-level graph allow ALLOWED_OPS only; the checkpoint functions that only the loader or a TF1 saver
  runs (reachable from saveable objects' save/restore functions or the saver_def's nodes, and from no callable
  function) allow SAVER_OPS as well, and nothing else.
  """
  sm = read_saved_model_proto(path)
  bad = {}
  for mg in sm.meta_graphs:
    functions = {f.signature.name: f for f in mg.graph_def.library.function}
    callable_roots, restore_roots = _loader_functions(mg)
    saver_nodes = {mg.saver_def.save_tensor_name.split(":")[0], mg.saver_def.restore_op_name.split(":")[0]}
    callable_funcs = _reachable(callable_roots, functions)
    saver_roots = set(_called(n for n in mg.graph_def.node if n.name in saver_nodes)) | restore_roots
    checkpoint_funcs = _reachable(saver_roots, functions) - callable_funcs
    scopes = [("<graph>", mg.graph_def.node, lambda node: node.name in saver_nodes)]
    scopes += [(name, f.node_def, (lambda node: True) if name in checkpoint_funcs else (lambda node: False))
               for name, f in functions.items()]
    for scope, nodes, may_save in scopes:
      for node in nodes:
        if node.op in ALLOWED_OPS or (node.op in SAVER_OPS and may_save(node)):
          continue
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
  """Checks every file against the sha256 list of the module's expert.json, when it has one, and a module
  trusted on first use against its trust record (published.verify), when it has one.

  Raises:
    ValueError: a file that does not match (trust.UntrustedModuleError for a trust record), named.
  """
  if os.path.exists(os.path.join(path, export.METADATA_FILE)):
    export.verify_module(path)
  published.verify(path)


def check_ops(path, trusted_dirs, allow_unsafe_ops=False):
  """Raises UnsafeModuleError for a module whose graph has ops outside the allowlist (disallowed_ops), unless
  it is trusted: one of ours (an expert.json, verified by verify_manifest) whose files all really are inside
  `trusted_dirs`, or `allow_unsafe_ops`."""
  ours = os.path.exists(os.path.join(path, export.METADATA_FILE))
  if allow_unsafe_ops or (ours and _inside(path, trusted_dirs)):
    return
  bad = disallowed_ops(path)
  if bad:
    listing = ", ".join(f"{op} (in {sorted(set(scopes))[:2]})" for op, scopes in sorted(bad.items()))
    raise UnsafeModuleError(f"Module {path!r} uses ops outside expert_hub's allowlist: {listing}. Load it only "
                            "if you trust its author, from Python with allow_unsafe_ops=True (ModuleSession, "
                            "load_module, ExpertLayer); no command-line flag skips this check.")


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
