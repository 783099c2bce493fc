"""Fine-tuning an expert on a task: a fresh zero-initialised head, the whole network trained, test top-1.

`Finetuner` holds one task's data and a compiled model per expert architecture: modules written by expert_hub
carry their architecture in expert.json, so their variables load into a cached, already-traced Keras model
(seconds saved per expert); any other hub module is fine-tuned through ExpertLayer.
"""

import logging
import os
import re
import time

import keras
import numpy as np
import tensorflow as tf

from expert_hub import configs
from expert_hub import io_utils
from expert_hub.data import preprocessing
from expert_hub.hub import export
from expert_hub.hub import layer as layer_lib
from expert_hub.hub import loading
from expert_hub.hub import registry as registry_lib
from expert_hub.models import adapters as adapters_lib
from expert_hub.models import resnet_v2
from expert_hub.train import schedules
from expert_hub.train import strategies
from expert_hub.train import trainer
from expert_hub.transfer import hyperrule

log = logging.getLogger(__name__)
FINETUNE_FILE = "finetune.json"


def _mixup(alpha):
  def fn(images, labels):
    lam = tf.compat.v1.distributions.Beta(alpha, alpha).sample([]) if alpha > 0 else 1.0
    return lam * images + (1 - lam) * tf.reverse(images, [0]), lam * labels + (1 - lam) * tf.reverse(labels, [0])
  return fn


class Finetuner:
  """Fine-tunes expert modules on one task with the BiT-HyperRule (see FinetuneConfig)."""

  def __init__(self, task, cfg, export_dirs=None, seed=0, strategy=None):
    self.task, self.cfg, self.export_dirs, self.seed = task, cfg, export_dirs, seed
    self.strategy = strategy or tf.distribute.get_strategy()
    train_images, self.train_labels = _arrays(task, cfg.train_split)
    test_images, self.test_labels = _arrays(task, cfg.test_split)
    n, h, w = train_images.shape[:3]
    rule_resize, rule_crop = hyperrule.get_resolution(h, w)
    self.resize, self.crop = cfg.resize or rule_resize, cfg.crop or rule_crop
    sched = hyperrule.get_schedule(n, cfg.steps_scale)
    if cfg.steps:
      ratio = cfg.steps / sched.steps
      sched = hyperrule.Schedule(cfg.steps, int(sched.warmup_steps * ratio),
                                 tuple(int(d * ratio) for d in sched.decay_steps), sched.mixup_alpha)
    self.schedule = sched
    self.lr = hyperrule.get_learning_rate(cfg.batch_size, cfg.base_lr)
    num_classes = task.num_classes
    one_hot = lambda y: tf.one_hot(tf.cast(y, tf.int32), num_classes)
    train = tf.data.Dataset.from_tensor_slices((train_images, self.train_labels))
    self.train_ds = preprocessing.make_train_dataset(train, cfg.batch_size, self.resize, self.crop,
                                                     shuffle_buffer=n, seed=seed, label_fn=one_hot)
    if sched.mixup_alpha > 0:
      self.train_ds = self.train_ds.map(_mixup(sched.mixup_alpha))
    test = tf.data.Dataset.from_tensor_slices((test_images, self.test_labels))
    self.test_ds = preprocessing.make_eval_dataset(test, 256, self.crop, label_fn=one_hot).cache()
    self._templates = {}

  def _compile(self, model):
    """Compiles under the strategy's scope (optimizer slots mirror the weights); call inside that scope."""
    schedule = schedules.WarmupSchedule(self.lr, self.schedule.steps, self.schedule.warmup_steps, "step",
                                        self.schedule.decay_steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    return model

  def _model_for(self, path):
    """A compiled classifier whose backbone holds the module's weights and whose head is zero."""
    metadata = export.read_metadata(path) if os.path.exists(os.path.join(path, export.METADATA_FILE)) else {}
    if "model" not in metadata:
      with self.strategy.scope():
        layer = layer_lib.ExpertLayer(path, trainable=True, export_dirs=self.export_dirs)
        images = keras.Input((None, None, 3))
        logits = keras.layers.Dense(self.task.num_classes, kernel_initializer="zeros", name="head")(layer(images))
        return self._compile(keras.Model(images, logits))
    module, _ = loading.load_module(path, self.export_dirs)  # verifies the sha256 manifest
    key = (repr(metadata["model"]), repr(metadata.get("adapter")))
    if key not in self._templates:
      model_cfg = resnet_v2.ModelConfig.from_dict(metadata["model"])
      adapter = adapters_lib.AdapterConfig(**metadata["adapter"]) if metadata.get("adapter") else None
      with self.strategy.scope():
        backbone = resnet_v2.build_backbone(model_cfg, adapter=adapter, name="finetune_backbone")
        self._templates[key] = self._compile(resnet_v2.build_classifier(backbone, self.task.num_classes))
    model = self._templates[key]
    targets = resnet_v2.get_backbone(model).variables
    if len(targets) != len(module.variables):
      raise ValueError(f"Module {path!r} has {len(module.variables)} variables; its architecture in "
                       f"expert.json builds {len(targets)}.")
    for target, source in zip(targets, module.variables):
      if tuple(target.shape) != tuple(source.shape):
        raise ValueError(f"Module {path!r}: variable {source.name} has shape {source.shape}, the "
                         f"architecture expects {tuple(target.shape)}.")
      target.assign(source)
    for v in model.get_layer("head").weights:
      v.assign(tf.zeros_like(v))
    trainer.reset_optimizer(model.optimizer)
    return model

  def run(self, handle, workdir=None):
    """Fine-tunes one expert; returns {"task", "expert", "test_accuracy", "steps", "seconds", ...}.

    With a `workdir`, training goes through trainer.fit: checkpoints every quarter of the schedule under
    `<workdir>/checkpoints`, a killed run (or multi-worker job) resumes there, and only the chief writes.
    """
    t0 = time.time()
    path = registry_lib.resolve(handle, self.export_dirs)
    model = self._model_for(path)
    steps = self.schedule.steps
    if workdir is not None:
      train_cfg = configs.TrainConfig(batch_size=self.cfg.batch_size, steps=steps, base_lr=self.lr,
                                      warmup_steps=self.schedule.warmup_steps, checkpoint_every=max(1, steps // 4),
                                      log_every=max(1, steps // 4))  # trainer.fit reads steps and the cadences
      fit = trainer.fit(model, self.train_ds.skip, train_cfg, workdir, name=f"finetune {handle}",
                        strategy=self.strategy)
      train_loss = fit.get("loss")  # None when a finished run was only restored
    else:
      trainer.prepare_multi_worker(model, self.strategy)
      history = model.fit(trainer.shard_by_data(self.train_ds), epochs=1, steps_per_epoch=steps, verbose=0,
                          shuffle=False)
      train_loss = history.history["loss"][-1]
    accuracy = self._evaluate(model)
    result = {"task": self.task.name, "expert": handle, "test_accuracy": round(float(accuracy), 4),
              "steps": self.schedule.steps, "seconds": round(time.time() - t0, 2),
              "train_loss": None if train_loss is None else round(float(train_loss), 4),
              "batch_size": self.cfg.batch_size,
              "learning_rate": self.lr, "resolution": [self.resize, self.crop],
              "num_train_examples": int(len(self.train_labels)), "num_test_examples": int(len(self.test_labels))}
    log.info("[finetune %s] %s: test accuracy %.4f (%d steps, %.1f s)", self.task.name, handle, accuracy,
             self.schedule.steps, result["seconds"])
    return result

  def _evaluate(self, model):
    """Test top-1 on the task's test split.

    Multi-worker: every worker scores the whole test set itself, since the replicas hold the same weights and
    Keras 3's distributed `evaluate` fails on this strategy's scalar reductions (see trainer.prepare_multi_worker).
    """
    if not strategies.is_multi_worker(self.strategy):
      return model.evaluate(self.test_ds, verbose=0)[1]
    hits, total = 0, 0
    for images, labels in self.test_ds:
      predicted = tf.argmax(model(images, training=False), axis=-1)
      hits += int(tf.reduce_sum(tf.cast(tf.equal(predicted, tf.argmax(labels, axis=-1)), tf.int32)))
      total += int(labels.shape[0])
    return hits / max(total, 1)


def _arrays(task, split):
  images, labels = [], []
  for x, y in task.load(split).map(lambda x, y: (preprocessing.to_float_image(x), y)).as_numpy_iterator():
    images.append(x)
    labels.append(y)
  if not images:
    raise ValueError(f"Task {task.name!r} split {split!r} has no examples.")
  shapes = {im.shape for im in images}
  if len(shapes) > 1:  # Variable-size sources (image folders, natural datasets): bring to one size first.
    side = max(max(s[0], s[1]) for s in shapes)
    images = [tf.image.resize(im, [side, side]).numpy() for im in images]
  return np.stack(images).astype(np.float32), np.asarray(labels, np.int64)


def finetune(handle, task, cfg, workdir, export_dirs=None, strategy=None):
  """Fine-tunes one expert on a task and writes `<workdir>/finetune.json`; returns its content.

  Checkpoints go to `<workdir>/finetune_runs/<expert>/` (resumed after a kill; a finished run is only
  re-evaluated). Under a multi-worker strategy every worker calls this alike and only the chief writes.
  """
  run_dir = os.path.join(workdir, "finetune_runs", re.sub(r"[^A-Za-z0-9_.-]+", "_", handle).strip("_") or "expert")
  result = Finetuner(task, cfg, export_dirs, strategy=strategy).run(handle, workdir=run_dir)
  if strategies.is_chief(strategy):
    io_utils.atomic_write_json(os.path.join(workdir, FINETUNE_FILE), result)
  return result
