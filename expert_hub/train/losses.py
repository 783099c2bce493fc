"""Multi-label sigmoid loss and precision@1, optionally restricted to an expert's labels."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="expert_hub")
class MaskedSigmoidCrossEntropy(keras.losses.Loss):
  """Per-class sigmoid cross-entropy summed over the labels where `mask` is 1, averaged over the batch.

  The mask is a variable so that one compiled model (one traced train step) serves every expert: assigning
  the next expert's label mask changes the objective without retracing. Logits outside the mask get no
  gradient, which is the same as training a head over the subset's labels only.
  """

  def __init__(self, num_labels, name="masked_sigmoid_xent", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_labels = int(num_labels)
    self.mask = tf.Variable(tf.ones([self.num_labels]), trainable=False, name="label_mask")

  def set_labels(self, label_ids):
    """Restricts the loss to label_ids (None: all labels)."""
    mask = np.ones([self.num_labels], np.float32)
    if label_ids is not None:
      mask[:] = 0.0
      mask[list(label_ids)] = 1.0
    self.mask.assign(mask)

  def call(self, y_true, y_pred):
    y_true = tf.cast(y_true, y_pred.dtype)
    xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=y_pred)
    return tf.reduce_sum(xent * self.mask, axis=-1)

  def get_config(self):
    return {"num_labels": self.num_labels, "name": self.name}


def make_precision_at_1(loss):
  """Metric: is the top logit (within the loss's current mask) one of the true labels?"""
  def precision_at_1(y_true, y_pred):
    masked = y_pred + (loss.mask - 1.0) * 1e9
    top = tf.argmax(masked, axis=-1, output_type=tf.int32)
    return tf.gather(tf.cast(y_true, tf.float32), top, batch_dims=1)
  return precision_at_1
