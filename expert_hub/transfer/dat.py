"""DAT-style transfer (Ngiam et al. 2018, "Domain Adaptive Transfer Learning"): the baseline that revisits upstream.

For each new task, DAT estimates which upstream labels the task resembles — the generalist's predicted upstream
label distribution averaged over the task's training images, P_t(y) — and continues training on the upstream
data re-weighted by the importance ratio w(y) = P_t(y) / P_s(y), where P_s is the upstream label frequency.
It then fine-tunes the result on the task. Unlike experts, none of this is shared between tasks: every task pays
for a pass of upstream training, which is the cost expert_hub avoids (binaries/benchmark_transfer_cost.py).

Here the re-weighting is importance *re-sampling*: each upstream example is kept with probability
w(label) / max(w), so the training budget (steps x batch) equals a full expert's, as the issue asks.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from expert_hub import io_utils
from expert_hub import naming
from expert_hub.data import experts as experts_lib
from expert_hub.data import upstream as upstream_lib
from expert_hub.models import weights as weights_lib
from expert_hub.train import trainer
from expert_hub.train import upstream

log = logging.getLogger(__name__)


def dat_dir(workdir, task_name):
  return os.path.join(workdir, "dat", naming.folder_name(task_name))


def target_label_distribution(generalist, images, session, batch_size=256):
  """P_t(y): mean over `images` of the softmax of the generalist module's upstream logits; [num_labels]."""
  module, path = session.module(generalist)
  if not hasattr(module, "logits"):
    raise ValueError(f"Module {path!r} has no `logits` endpoint; DAT needs the generalist's upstream head.")
  total = None
  for start in range(0, len(images), batch_size):
    probs = tf.nn.softmax(module.logits(tf.constant(images[start:start + batch_size])), axis=-1).numpy()
    total = probs.sum(0) if total is None else total + probs.sum(0)
  return total / len(images)


def keep_probabilities(target_distribution, source_counts):
  """Importance re-sampling probabilities w(y) / max w with w = P_t / P_s; labels with no images get 0.

  Returns:
    (keep [num_labels], acceptance: the expected fraction of upstream examples kept).
  """
  target = np.asarray(target_distribution, np.float64)
  counts = np.asarray(source_counts, np.float64)
  if target.shape != counts.shape:
    raise ValueError(f"Target distribution has shape {target.shape} but source counts {counts.shape}; both must "
                     "have one entry per upstream label.")
  source = counts / counts.sum()
  w = np.where(counts > 0, target / np.maximum(source, 1e-12), 0.0)
  keep = w / w.max()
  return keep.astype(np.float32), float((source * keep).sum())


def label_counts(builder, upstream_cfg, num_labels):
  """Upstream training images per label id ([num_labels]; multi-hot images count for each of their labels)."""
  labels = upstream_lib.load_labels(builder, upstream_cfg.train_split, upstream_cfg.label_key)
  return experts_lib.count_label_images(labels, num_labels)


def train_dat(cfg, data_dir, workdir, task_name, target_distribution, strategy=None):
  """Continues the generalist on upstream data re-sampled towards one task, for a full expert's budget.

  Writes `<workdir>/dat/<task>/{weights.npz, model.json}` (resumable like every training run here) and returns
  the model info, which records the keep probabilities' acceptance rate and the upstream images read.
  """
  out = dat_dir(workdir, task_name)
  if upstream.is_trained(out):
    log.info("DAT model for %s already trained; skipping.", task_name)
    return upstream.read_model_info(out)
  generalist_dir = os.path.join(workdir, "generalist")
  generalist_info = upstream.read_model_info(generalist_dir)
  builder = upstream_lib.get_builder(cfg.upstream.tfds_name, data_dir)
  num_labels = generalist_info["num_labels"]
  keep, acceptance = keep_probabilities(target_distribution, label_counts(builder, cfg.upstream, num_labels))
  train_cfg = cfg.experts.full
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    model, loss = upstream.build_upstream_model(cfg.model, num_labels, train_cfg, name="dat")
  weights_lib.set_weights(model, weights_lib.load_weights(os.path.join(generalist_dir, upstream.WEIGHTS_FILE)))
  loss.set_labels(None)
  stream = upstream.make_upstream_stream(builder, cfg.upstream, train_cfg, num_labels, keep_probability=keep)
  log.info("[dat %s] training %d steps on upstream re-sampled towards the task (keeps %.1f%% of images).",
           task_name, train_cfg.steps, 100 * acceptance)
  result = trainer.fit(model, stream, train_cfg, out, name=f"dat/{task_name}", strategy=strategy)
  weights_lib.save_weights(model, os.path.join(out, upstream.WEIGHTS_FILE))
  top = np.argsort(-np.asarray(target_distribution))[:5]
  info = dict(generalist_info, kind="dat", node=None, name=f"dat_{os.path.basename(out)}", task=task_name,
              train=result, acceptance=round(acceptance, 4),
              upstream_images_read=int(round(train_cfg.steps * train_cfg.batch_size / max(acceptance, 1e-9))),
              top_target_labels=[generalist_info["label_names"][i] if generalist_info.get("label_names") else int(i)
                                 for i in top])
  upstream.write_model_info(out, info)
  io_utils.atomic_write_json(os.path.join(out, "keep_probability.json"), {"keep": keep.tolist()})
  return info
