"""From a label hierarchy to expert subsets: which nodes get experts, and a tf.data filter for each.

Works with any hierarchy file and any TFDS upstream whose labels are integer ids or multi-hot vectors.
"""

import dataclasses
from typing import List, Optional

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ExpertNode:
  """A hierarchy node chosen to get an expert.

  Attributes:
    node: the hierarchy node name (also the expert's readable name; "/" becomes "_" on disk).
    labels: sorted upstream label ids in its subtree.
    num_images: upstream training images that carry at least one of those labels.
  """
  node: str
  labels: tuple
  num_images: int

  @property
  def expert_name(self):
    return self.node.replace("/", "_")


def count_label_images(labels, num_labels):
  """Images per label id from integer labels [N] or multi-hot labels [N, num_labels].

  Raises:
    ValueError: a label outside 0..num_labels-1 (a class of the data that no hierarchy node carries), or
      multi-hot labels of another width; counting them would drop those images silently.
  """
  labels = np.asarray(labels)
  if labels.ndim == 1:
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
      bad = sorted({int(v) for v in labels[(labels < 0) | (labels >= num_labels)]})
      raise ValueError(f"Upstream labels {bad[:10]} are outside the hierarchy's label ids 0..{num_labels - 1}; "
                       "every class of the data must be carried by a hierarchy node.")
    return np.bincount(labels.astype(np.int64), minlength=num_labels)
  if labels.ndim != 2 or labels.shape[1] != num_labels:
    raise ValueError(f"Upstream labels of shape {labels.shape}; expected [N] label ids or [N, {num_labels}] "
                     "multi-hot vectors (one column per hierarchy label).")
  return (labels > 0).sum(axis=0)


def node_image_counts(hierarchy, labels):
  """Images under every node: an image counts once per node even if it has several labels there."""
  labels = np.asarray(labels)
  num_labels = hierarchy.num_labels
  multi_hot = labels.ndim == 2
  counts = {}
  per_label = count_label_images(labels, num_labels)  # also checks every label is the hierarchy's
  for node in hierarchy.nodes:
    ids = hierarchy.labels_under(node)
    if not ids:
      counts[node] = 0
    elif multi_hot:
      counts[node] = int((labels[:, ids] > 0).any(axis=1).sum())
    else:
      counts[node] = int(per_label[ids].sum())
  return counts


def select_expert_nodes(hierarchy, counts, min_images, max_experts: Optional[int] = None, min_depth=1,
                        max_depth: Optional[int] = None) -> List[ExpertNode]:
  """Nodes whose subtree holds >= min_images images, largest first, optionally capped at max_experts.

  Subsets may overlap (a parent contains its children), as in the paper. Ties break by name so the choice is
  deterministic.
  """
  if min_images < 1:
    raise ValueError(f"min_images={min_images}; expected a positive integer.")
  if max_experts is not None and max_experts < 1:
    raise ValueError(f"max_experts={max_experts}; expected a positive integer or None.")
  chosen = []
  for node in hierarchy.nodes:
    depth = hierarchy.depth(node)
    if depth < min_depth or (max_depth is not None and depth > max_depth):
      continue
    if counts.get(node, 0) >= min_images:
      chosen.append(ExpertNode(node, tuple(hierarchy.labels_under(node)), counts[node]))
  chosen.sort(key=lambda e: (-e.num_images, e.node))
  names = [e.expert_name for e in chosen]
  if len(set(names)) != len(names):
    raise ValueError(f"Expert names collide after replacing '/' with '_': {names}.")
  return chosen[:max_experts] if max_experts else chosen


def label_mask(label_ids, num_labels):
  """A float32 [num_labels] vector with ones at label_ids."""
  mask = np.zeros([num_labels], np.float32)
  mask[list(label_ids)] = 1.0
  return mask


def make_subset_filter(label_ids, num_labels):
  """A tf.data predicate `(image, label) -> bool` keeping examples with any label in label_ids.

  `label` may be an integer id or a multi-hot vector of length num_labels.
  """
  mask = tf.constant(label_mask(label_ids, num_labels) > 0)

  def keep(image, label):
    del image
    label = tf.convert_to_tensor(label)
    if label.shape.rank == 0:
      return tf.gather(mask, tf.cast(label, tf.int32))
    return tf.reduce_any(tf.logical_and(tf.cast(label, tf.bool), mask))

  return keep


def to_multi_hot(num_labels):
  """A map fn: integer label or multi-hot vector -> float32 multi-hot [num_labels]."""
  def fn(label):
    label = tf.convert_to_tensor(label)
    if label.shape.rank == 0:
      return tf.one_hot(tf.cast(label, tf.int32), num_labels, dtype=tf.float32)
    return tf.cast(label > 0, tf.float32)
  return fn
