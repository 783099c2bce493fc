"""Many adapter experts of one pack in one graph, their activations stacked along the batch axis.

Selecting among N adapter experts embeds the same images N times. In a pack (packing.py) the experts share
the trunk's layers and variables and differ only in their adapters, so instead of N calls that each run the
whole trunk, one call:

  1. runs the trunk steps before the first adapter once on the images [B, ...] (the shared prefix);
  2. tiles that activation to [E*B, ...], expert e owning rows e*B .. (e+1)*B - 1;
  3. runs every later trunk step ONCE on the [E*B, ...] batch (one op dispatch, bigger convolutions);
  4. applies each expert's adapter to its own rows in one set of ops: per-expert 1x1 kernels as one batched
     matmul [E, B*H*W, C] x [E, C, C'], per-expert GroupNorm scales and offsets as per-row [E*B, C] tensors;
  5. returns [E, B, D].

Why it is exact (the same function of each expert, up to float summation order):
  - the trunk is frozen and shared: every expert's trunk step is literally the same layer on the same
    variables, so running it on the stacked batch computes, row by row, what each expert's call computes;
  - nothing in the trunk or the adapters mixes examples at inference: GroupNorm normalises each example over
    its own positions and channel groups (no batch statistics), convolutions, ReLU, pooling and the residual
    adds are per example. Stacking along the batch axis therefore never lets one expert's rows see another's;
  - before the first adapter all experts compute the identical function of the images, so the prefix is
    computed once and copied;
  - an adapter's 1x1 convolution is a matmul over channels, and its GroupNorm is layers.group_normalize, the
    arithmetic of the experts' own GroupNorm layer, fed per-example gamma and beta.
Tests check the stacked features against each expert's own forward pass for both adapter placements.

Memory: the stacked batch holds E times the activations of one expert's call. `experts_per_chunk` bounds it:
experts run in chunks of that many, one chunk after another (control dependencies keep TF's executor from
running the chunks at once); the prefix is still computed once.
"""

import tensorflow as tf

from expert_hub.models import layers


def experts_per_chunk(num_experts, batch_size, max_stacked_batch=None):
  """Experts per stacked call so that experts * batch_size <= max_stacked_batch (at least 1; all if no cap)."""
  if max_stacked_batch is None:
    return num_experts
  return max(1, min(num_experts, int(max_stacked_batch) // max(1, int(batch_size))))


def _raw(v):
  return getattr(v, "value", v)


def _adapter_params(adapter_model, step):
  """The weights of one adapter of one expert, checked to be what adapters.residual_adapter builds."""
  get = lambda part: adapter_model.get_layer(f"{step}_{part}")
  params = {}
  for part in ("gn_in", "gn_mid"):
    gn = get(part)
    if not isinstance(gn, layers.GroupNorm):
      raise ValueError(f"Adapter layer {gn.name!r} is a {type(gn).__name__}; stacking expects layers.GroupNorm.")
    params[part] = (gn.groups, gn.epsilon, _raw(gn.gamma), _raw(gn.beta))
  for part in ("down", "up"):
    conv = get(part)
    if (tuple(conv.kernel_size) != (1, 1) or tuple(conv.strides) != (1, 1) or conv.use_bias
        or conv.activation.__name__ != "linear"):
      raise ValueError(f"Adapter conv {conv.name!r} is not a 1x1, stride 1, bias-free linear conv; stacking "
                       "expects adapters.residual_adapter's layers.")
    params[part] = _raw(conv.kernel)
  return params


class StackedExperts:
  """Runs the adapter experts of one pack on the same images in one graph: images -> [E, B, D].

  Args:
    experts: {name: packing.SharedTrunkBackbone} built by one packing.build_packed call (they must share its
      trunk segment functions). Experts may use different adapter configs; each config forms its own stack.
    names: output order (default: sorted names, the order of a pack's `experts`).
  """

  def __init__(self, experts, names=None):
    self.names = tuple(sorted(experts) if names is None else names)
    if not self.names or len(set(self.names)) != len(self.names) or set(self.names) != set(experts):
      raise ValueError(f"names={list(self.names)} must list each of the experts {sorted(experts)} once.")
    self.experts = experts
    self.segment_fns = experts[self.names[0]].segment_fns
    for name in self.names:
      if experts[name].segment_fns is not self.segment_fns or experts[name].adapter_model is None:
        raise ValueError(f"Expert {name!r} is not an adapter expert of the same pack as {self.names[0]!r}; "
                         "stack only the experts of one packing.build_packed call.")
    self._params = {name: {step: _adapter_params(experts[name].adapter_model, step)
                           for kind, step, _ in experts[name].plan if kind == "adapter"} for name in self.names}
    # Experts with the same plan and adapter shapes (placement, reduction, groups) stack: one group each.
    self.groups = {}
    for name in self.names:
      plan = tuple((kind, step) for kind, step, _ in experts[name].plan)
      shapes = tuple((step, tuple(p["down"].shape), p["gn_in"][:2], p["gn_mid"][:2])
                     for step, p in self._params[name].items())
      self.groups.setdefault((plan, shapes), []).append(name)

  def __call__(self, images, experts_per_chunk=None):  # pylint: disable=redefined-outer-name
    """Features [E, B, D] of float images [B, H, W, 3] for every expert, in `names` order (training=False).

    Args:
      images: [B, H, W, 3] float32 in [0, 1].
      experts_per_chunk: at most this many experts per stacked trunk call (None: all of a group at once).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    prefixes, order, outputs, previous = {}, [], [], None
    for (plan, _), names in self.groups.items():
      first = next((i for i, (kind, _) in enumerate(plan) if kind == "adapter"), len(plan))
      if plan[:first] not in prefixes:  # the trunk steps before the first adapter: same for every expert
        x = images
        for _, step in plan[:first]:
          x = self.segment_fns[step](x, training=False)
        prefixes[plan[:first]] = x
      prefix = prefixes[plan[:first]]
      size = len(names) if experts_per_chunk is None else max(1, int(experts_per_chunk))
      for start in range(0, len(names), size):
        chunk = names[start:start + size]
        x = prefix
        if previous is not None:  # one chunk after another: the cap on the stacked batch holds
          with tf.control_dependencies([previous]):
            x = tf.identity(x)
        x = tf.tile(x, [len(chunk)] + [1] * (x.shape.rank - 1))
        for kind, step in plan[first:]:
          if kind == "trunk":
            x = self.segment_fns[step](x, training=False)
          else:
            x = _stacked_adapter(x, [self._params[name][step] for name in chunk])
        previous = tf.reshape(x, [len(chunk), -1, x.shape[-1]])
        outputs.append(previous)
        order += chunk
    out = outputs[0] if len(outputs) == 1 else tf.concat(outputs, 0)
    if tuple(order) != self.names:
      out = tf.gather(out, [order.index(name) for name in self.names])
    return out


def _per_row(values, rows_per_expert):
  """[E, C] per-expert values -> [E * rows_per_expert, C], expert e's values on its rows."""
  e, c = values.shape
  return tf.reshape(tf.broadcast_to(values[:, None, :], [e, rows_per_expert, c]), [-1, c])


def _stacked_norm(x, params, rows_per_expert):
  groups, epsilon = params[0][0], params[0][1]
  if any(p[0] != groups or p[1] != epsilon for p in params):
    raise ValueError("Stacked adapters must use the same GroupNorm groups and epsilon.")
  gamma = _per_row(tf.stack([p[2] for p in params]), rows_per_expert)
  beta = _per_row(tf.stack([p[3] for p in params]), rows_per_expert)
  return layers.group_normalize(x, groups, epsilon, gamma, beta)


def _stacked_conv1x1(x, kernels):
  """Per-expert 1x1 convolutions of stacked rows as one batched matmul: [E, rows*H*W, C] x [E, C, C']."""
  e = len(kernels)
  k = tf.stack([tf.reshape(kernel, kernel.shape[2:]) for kernel in kernels])  # [E, C, C']
  y = tf.matmul(tf.reshape(x, [e, -1, x.shape[-1]]), k)
  y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [k.shape[-1]]], 0))
  y.set_shape(x.shape[:-1].concatenate([k.shape[-1]]))
  return y


def _stacked_adapter(x, params):
  """adapters.residual_adapter (its ADAPTER_PARTS, in order) for E experts on stacked rows [E*B, H, W, C]."""
  rows = tf.shape(x)[0] // len(params)
  h = tf.nn.relu(_stacked_norm(x, [p["gn_in"] for p in params], rows))
  h = _stacked_conv1x1(h, [p["down"] for p in params])
  h = tf.nn.relu(_stacked_norm(h, [p["gn_mid"] for p in params], rows))
  h = _stacked_conv1x1(h, [p["up"] for p in params])
  return x + h

