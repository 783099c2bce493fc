"""Loading hub modules safely: every load verifies the sha256 manifest and, for modules from outside the
registry's own export dirs, checks the graph against an allowlist of ops.

A SavedModel is a program: loading one from elsewhere can run arbitrary TensorFlow ops (write files, call
Python, reach the network) when it is called. `load_module` refuses graphs with ops outside ALLOWED_OPS unless
the caller passes `allow_unsafe_ops=True`. Checkpoint save/restore ops are allowed only inside the SavedModel's
own saver functions (every SavedModel has them), never in callable functions.
"""

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from expert_hub.hub import export
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


def disallowed_ops(path):
  """{op: [function names]} for ops outside ALLOWED_OPS in a SavedModel's callable graph."""
  pb = os.path.join(path, "saved_model.pb")
  if not os.path.exists(pb):
    raise FileNotFoundError(f"{path!r} is not a SavedModel (saved_model.pb is missing).")
  sm = saved_model_pb2.SavedModel()
  with open(pb, "rb") as f:
    sm.ParseFromString(f.read())
  bad = {}
  for mg in sm.meta_graphs:
    functions = {f.signature.name: f for f in mg.graph_def.library.function}
    saver_nodes = {mg.saver_def.save_tensor_name.split(":")[0], mg.saver_def.restore_op_name.split(":")[0]}
    saver_funcs, stack = set(), list(_called(n for n in mg.graph_def.node if n.name in saver_nodes))
    while stack:
      name = stack.pop()
      if name in saver_funcs or name not in functions:
        continue
      saver_funcs.add(name)
      stack.extend(_called(functions[name].node_def))
    scopes = [("<graph>", [n for n in mg.graph_def.node if n.name not in saver_nodes])]
    scopes += [(name, f.node_def) for name, f in functions.items() if name not in saver_funcs]
    for scope, nodes in scopes:
      for node in nodes:
        if node.op not in ALLOWED_OPS:
          bad.setdefault(node.op, []).append(scope)
  return bad


def _inside(path, dirs):
  real = os.path.realpath(path)
  return any(real.startswith(os.path.realpath(d) + os.sep) for d in dirs)


def load_module(handle, export_dirs=None, allow_unsafe_ops=False):
  """Resolves a handle, verifies it and loads it with tf.saved_model.load.

  Args:
    handle: expert name, module path or URL (URLs go through tensorflow_hub's resolver and cache).
    export_dirs: the registry's export dirs; modules inside them are trusted for their ops.
    allow_unsafe_ops: load even if the graph uses ops outside ALLOWED_OPS.

  Returns:
    (loaded module, local path).

  Raises:
    ValueError: a file does not match the sha256 manifest in expert.json (named).
    UnsafeModuleError: ops outside the allowlist (named), unless allow_unsafe_ops.
  """
  registry = registry_lib.Registry(export_dirs)
  path = registry.resolve(handle)
  packed_expert = None
  if "#" in path:
    path, packed_expert = path.rsplit("#", 1)
  if path.startswith(registry_lib.URL_PREFIXES):
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    path = hub.resolve(path)
  if os.path.exists(os.path.join(path, export.METADATA_FILE)):
    export.verify_module(path)
  if not allow_unsafe_ops and not _inside(path, registry.export_dirs):
    bad = disallowed_ops(path)
    if bad:
      listing = ", ".join(f"{op} (in {sorted(set(scopes))[:2]})" for op, scopes in sorted(bad.items()))
      raise UnsafeModuleError(f"Module {path!r} uses ops outside expert_hub's allowlist: {listing}. Load it only "
                              "if you trust its author, with allow_unsafe_ops=True (--allow_unsafe_ops).")
  module = tf.saved_model.load(path)
  if packed_expert is not None:
    # Keep the pack alive: the expert's functions use variables the pack object owns.
    sub_module = getattr(module, packed_expert)
    sub_module.pack = module
    return sub_module, f"{path}#{packed_expert}"
  return module, path
