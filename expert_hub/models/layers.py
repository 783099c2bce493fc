"""Building blocks of BiT ResNet-v2: weight-standardised convolutions and GroupNorm."""

import keras
from keras import ops
import tensorflow as tf

# BiT's TF code standardises with eps=1e-10; GroupNorm uses 1e-5 (paper.md).
WS_EPSILON = 1e-10
GN_EPSILON = 1e-5


class StandardizedConv2D(keras.layers.Conv2D):
  """Conv2D whose kernel is standardised per output channel (zero mean, unit variance).

  Weight Standardization (Qiao et al. 2019) makes GroupNorm networks train as well as BatchNorm ones
  without batch statistics, which is what lets BiT transfer with tiny batches. The standardisation runs on
  every call so that the training path is exact; an exported inference module may fold it once.
  """

  def __init__(self, *args, use_bias=False, standardize=True, **kwargs):
    """standardize: True (every call, the training model), False (never: kernels folded once) or "training"
    (only when training; at inference the kernel must already be standardised, see hub/export.py)."""
    super().__init__(*args, use_bias=use_bias, **kwargs)
    if standardize not in (True, False, "training"):
      raise ValueError(f"standardize={standardize!r}; expected True, False or 'training'.")
    self.standardize = standardize

  def call(self, inputs, training=None):
    kernel = self.kernel
    if self.standardize is True or (self.standardize == "training" and training):
      kernel = standardize_kernel(kernel)
    outputs = self.convolution_op(inputs, kernel)
    if self.use_bias:
      outputs = outputs + self.bias
    return self.activation(outputs) if self.activation is not None else outputs

  def get_config(self):
    return dict(super().get_config(), standardize=self.standardize)


def standardize_kernel(kernel):
  """Zero mean, unit variance per output channel over (H, W, Cin); works on tensors and numpy arrays."""
  mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) / ops.sqrt(var + WS_EPSILON)


def group_norm(channels, max_groups, name):
  """GroupNorm with `max_groups` groups, fewer when `channels` cannot be split that way.

  BiT uses 32 groups; the tiny variants have as few as 16 channels, so the group count falls back to the
  largest divisor of `channels` that does not exceed `max_groups`.
  """
  groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
  return GroupNorm(groups=groups, epsilon=GN_EPSILON, name=name)


@keras.saving.register_keras_serializable(package="expert_hub")
class GroupNorm(keras.layers.Layer):
  """GroupNorm (Wu & He 2018) over the last axis: keras.layers.GroupNormalization's maths, about 1.6x faster.

  GroupNorm is most of what a GN+WS ResNet costs beyond a BatchNorm one at inference (BatchNorm folds into the
  convolution; GroupNorm needs per-image statistics). Keras' layer reshapes to (N, ..., G, C/G) and runs
  two-pass moments plus a 5-D broadcast; this one takes per-channel sums and sums of squares over the spatial
  axes in two single-pass reductions, combines them per group on the tiny (N, C) result, and applies one
  per-(image, channel) scale and offset to the (N, H*W, C) view. Variance is E[x^2] - E[x]^2 clipped at 0, which
  in float32 matches the two-pass result to ~1e-5 for activations whose mean is not orders of magnitude above
  their spread (tested against keras.layers.GroupNormalization, values and gradients).
  `binaries/benchmark_inference.py` measures the difference.
  """

  def __init__(self, groups, epsilon=GN_EPSILON, **kwargs):
    super().__init__(**kwargs)
    self.groups = int(groups)
    self.epsilon = float(epsilon)

  def build(self, input_shape):
    channels = input_shape[-1]
    if channels is None or channels % self.groups:
      raise ValueError(f"GroupNorm {self.name!r}: {channels} channels cannot be split into {self.groups} groups.")
    self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
    self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

  def call(self, inputs):
    return group_normalize(inputs, self.groups, self.epsilon, self.gamma, self.beta)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return dict(super().get_config(), groups=self.groups, epsilon=self.epsilon)


def group_normalize(inputs, groups, epsilon, gamma, beta):
  """GroupNorm's maths: gamma and beta are per channel [C], or per example and channel [N, C].

  The per-example form lets several adapter experts' GroupNorms run as one op on their stacked activations
  (models/stacking.py) with exactly the arithmetic of each expert's own layer.
  """
  x = tf.convert_to_tensor(inputs)
  dtype = x.dtype
  channels = x.shape[-1]
  # Static sizes where known, so that shapes (and FLOP counts, experiments/transfer_cost.py) stay known after
  # the reshapes.
  shape = [d if d is not None else tf.shape(x)[i] for i, d in enumerate(x.shape)]
  x3 = tf.cast(tf.reshape(x, [shape[0], -1, channels]), tf.float32)  # (N, positions, C)
  per_group = channels // groups
  count = tf.cast(tf.shape(x3)[1] * per_group, tf.float32)

  def group_mean(per_channel):  # (N, C) sums -> (N, G, 1) means
    return tf.reduce_sum(tf.reshape(per_channel, [shape[0], groups, per_group]), 2, keepdims=True) / count

  mean = group_mean(tf.reduce_sum(x3, 1))
  var = tf.maximum(group_mean(_sum_of_squares(x3)) - tf.square(mean), 0.0)
  inv = tf.math.rsqrt(var + epsilon)
  scale = tf.reshape(tf.broadcast_to(inv, [shape[0], groups, per_group]), [shape[0], channels])
  scale *= tf.cast(gamma, tf.float32)
  mean_c = tf.reshape(tf.broadcast_to(mean, [shape[0], groups, per_group]), [shape[0], channels])
  offset = tf.cast(beta, tf.float32) - mean_c * scale
  y = x3 * scale[:, None, :] + offset[:, None, :]
  return tf.cast(tf.reshape(y, shape), dtype)


@tf.custom_gradient
def _sum_of_squares(x3):
  """sum(x^2) over axis 1 in one pass (a Euclidean-norm reduction); gradient 2x, finite where the norm is 0."""
  norm = tf.math.reduce_euclidean_norm(x3, axis=1)

  def grad(upstream):
    return 2.0 * x3 * upstream[:, None, :]

  return tf.square(norm), grad
