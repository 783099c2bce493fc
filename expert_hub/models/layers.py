"""Building blocks of BiT ResNet-v2: weight-standardised convolutions and GroupNorm."""

import keras
from keras import ops

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
  return keras.layers.GroupNormalization(groups=groups, epsilon=GN_EPSILON, name=name)
