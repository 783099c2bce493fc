"""Upstream training: the generalist on all upstream data, and the upstream input stream both stages share."""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from expert_hub import io_utils
from expert_hub import provenance
from expert_hub import seeds
from expert_hub.data import experts as experts_lib
from expert_hub.data import preprocessing
from expert_hub.data import upstream as upstream_lib
from expert_hub.models import adapters as adapters_lib
from expert_hub.models import builder
from expert_hub.models import resnet_v2
from expert_hub.models import weights as weights_lib
from expert_hub.train import losses
from expert_hub.train import schedules
from expert_hub.train import strategies
from expert_hub.train import trainer

log = logging.getLogger(__name__)
SHUFFLE_BUFFER = 20_000
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"


def make_upstream_stream(builder, upstream_cfg, train_cfg, num_labels, label_ids=None, seed=0,
                         keep_probability=None, cache_subset=False):
  """`skip_batches -> dataset` of (images, multi-hot labels) batches; optionally only an expert's images.

  The stream is a function of `seed` (shuffle order, resampling draws, and each example's augmentation, keyed by
  its stream position), so skipping the consumed batches after a resume continues it exactly.

  cache_subset: hold the `label_ids` subset's encoded examples in memory after its first pass (see
    `upstream_lib.subset_fits_in_memory`). Without it every epoch of an expert re-reads and filters the whole
    split; the batches are the same either way.

  keep_probability: optional [num_labels] array; each example is kept with the probability of its label (the
    largest over its labels when multi-hot), drawn from a seeded stream after the repeat so every pass draws
    afresh: importance re-sampling of the upstream data, as DAT-style transfer needs (transfer/dat.py).
  """
  size = upstream_cfg.image_size
  multi_hot = experts_lib.to_multi_hot(num_labels)

  def make(skip_batches):
    ds = upstream_lib.load_encoded(builder, upstream_cfg.train_split, upstream_cfg.image_key,
                                   upstream_cfg.label_key)
    if label_ids is not None:
      ds = ds.filter(experts_lib.make_subset_filter(label_ids, num_labels))
      if cache_subset:
        ds = ds.cache()
    ds = ds.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
    if keep_probability is not None:
      ds = _resample(ds, keep_probability, seed)
    ds = ds.enumerate().skip(skip_batches * train_cfg.batch_size)  # positions key the augmentation

    def prep(index, example):
      encoded, label = example
      image = preprocessing.to_float_image(upstream_lib.decode_image(encoded))
      if train_cfg.augment:
        image = preprocessing.train_augment(image, size + size // 8, size,
                                            preprocessing.example_seed(seed, index))
      else:
        image = preprocessing.resize(image, size)
      return image, multi_hot(label)

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
    return preprocessing.without_autotuning(
        ds.batch(train_cfg.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))

  return make


def _resample(ds, keep_probability, seed):
  keep = tf.constant(np.asarray(keep_probability, np.float32))

  def kept(example, draw):
    label = example[1]
    p = tf.gather(keep, label) if label.shape.rank == 0 else tf.reduce_max(keep * tf.cast(label, tf.float32))
    return tf.cast(draw % (1 << 24), tf.float32) / float(1 << 24) < p

  ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))
  return ds.filter(kept).map(lambda example, draw: example)


def build_upstream_model(model_cfg, num_labels, train_cfg, adapter_cfg=None, freeze_trunk=False,
                         name="generalist"):
  """Classifier + masked sigmoid loss + SGD with the config's schedule, compiled.

  Returns:
    (model, loss): the loss object's label mask selects an expert's labels (see losses.py).
  """
  backbone = resnet_v2.build_backbone(model_cfg, adapter=adapter_cfg, name=f"{name}_backbone")
  if freeze_trunk:
    for layer in backbone.layers:
      layer.trainable = adapters_lib.is_adapter_layer(layer.name)
  model = resnet_v2.build_classifier(backbone, num_labels, name=name)
  loss = losses.MaskedSigmoidCrossEntropy(num_labels)
  optimizer = keras.optimizers.SGD(schedules.from_train_config(train_cfg), momentum=train_cfg.momentum,
                                   weight_decay=train_cfg.weight_decay or None)
  model.compile(optimizer=optimizer, loss=loss, metrics=[losses.make_precision_at_1(loss)],
                jit_compile=False)
  return model, loss


def write_model_info(folder, info):
  io_utils.atomic_write_json(os.path.join(folder, MODEL_FILE), info)


def read_model_info(folder):
  return io_utils.read_json(os.path.join(folder, MODEL_FILE),
                            missing=f"{folder!r} holds no trained model ({MODEL_FILE} is missing).")


def is_trained(folder):
  return os.path.exists(os.path.join(folder, MODEL_FILE)) and os.path.exists(os.path.join(folder, WEIGHTS_FILE))


def generalist_made_from(cfg, data_dir=None):
  """What the generalist is made from (provenance): architecture, upstream data (config and dataset version)
  and its schedule."""
  return {"stage": "generalist", "model": cfg.model, "upstream": cfg.upstream,
          "data_version": upstream_lib.data_version(cfg.upstream.tfds_name, data_dir), "train": cfg.generalist,
          "seed": seeds.derive(cfg.seed, "generalist")}


def train_generalist(cfg, data_dir, workdir, strategy=None):
  """Trains the generalist on all upstream labels; writes `<workdir>/generalist/{weights.npz,model.json}`.

  Skips the work if that folder already holds a finished model; resumes from its checkpoints otherwise. Under a
  multi-worker strategy every worker calls this alike and only the chief writes (see trainer.fit).
  """
  out = os.path.join(workdir, "generalist")
  made_from = generalist_made_from(cfg, data_dir)
  provenance.check(out, made_from, "generalist", has_output=is_trained(out),
                   write=strategies.is_chief(strategy))
  if is_trained(out):
    log.info("Generalist already trained in %s; skipping.", out)
    return read_model_info(out)
  builder = upstream_lib.get_builder(cfg.upstream.tfds_name, data_dir)
  hierarchy = upstream_lib.load_hierarchy(cfg.upstream, builder)
  strategy = strategy or tf.distribute.get_strategy()
  seed = made_from["seed"]
  seeds.seed_everything(seed)  # the initial weights
  with strategy.scope():
    model, _ = build_upstream_model(cfg.model, hierarchy.num_labels, cfg.generalist)
  stream = make_upstream_stream(builder, cfg.upstream, cfg.generalist, hierarchy.num_labels, seed=seed)
  result = trainer.fit(model, stream, cfg.generalist, out, name="generalist", strategy=strategy,
                       made_from=made_from)
  result["eval_precision_at_1"] = evaluate_upstream(model, builder, cfg.upstream, hierarchy.num_labels)
  info = {"kind": "generalist", "node": hierarchy.roots[0] if len(hierarchy.roots) == 1 else None,
          "model": cfg.model.to_dict(), "adapter": None, "num_labels": hierarchy.num_labels,
          "labels": list(range(hierarchy.num_labels)),
          "label_names": [hierarchy.label_name(i) for i in range(hierarchy.num_labels)],
          "upstream": cfg.upstream.name,
          "image_size": cfg.upstream.image_size, "train": result}
  if strategies.is_chief(strategy):  # a multi-worker job's other workers hold the same weights
    weights_lib.save_weights(model, os.path.join(out, WEIGHTS_FILE))
    write_model_info(out, info)
  return info


def evaluate_upstream(model, builder, upstream_cfg, num_labels, label_ids=None, loss=None):
  """precision@1 on the upstream eval split (restricted to label_ids' images when given)."""
  ds = upstream_lib.load_encoded(builder, upstream_cfg.eval_split, upstream_cfg.image_key,
                                 upstream_cfg.label_key)
  if label_ids is not None:
    ds = ds.filter(experts_lib.make_subset_filter(label_ids, num_labels))
  ds = ds.map(lambda e, y: (upstream_lib.decode_image(e), y))
  ds = preprocessing.make_eval_dataset(ds, 256, upstream_cfg.image_size, experts_lib.to_multi_hot(num_labels))
  mask = tf.constant(experts_lib.label_mask(label_ids if label_ids is not None else range(num_labels),
                                            num_labels))
  hits, total = 0.0, 0
  for images, labels in ds:
    logits = model(images, training=False) + (mask - 1.0) * 1e9
    top = tf.argmax(logits, axis=-1, output_type=tf.int32)
    hits += float(tf.reduce_sum(tf.gather(labels, top, batch_dims=1)))
    total += int(labels.shape[0])
  return round(hits / max(total, 1), 4)


def model_from_info(info, folder=None, with_head=True):
  """Rebuilds a trained classifier (or its backbone) from model.json and loads weights.npz."""
  model = builder.classifier_from_metadata(info, info["num_labels"], name=info.get("name", "model"))
  if folder is not None:
    weights_lib.set_weights(model, weights_lib.load_weights(os.path.join(folder, WEIGHTS_FILE)))
  return model if with_head else resnet_v2.get_backbone(model)


