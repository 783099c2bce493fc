"""Fine-tuning an expert on a task: a fresh head (zero, or a linear probe: head_init), the whole network trained,
test top-1.

`Finetuner` holds one task's data. Modules written by expert_hub carry their architecture in expert.json, so
they fine-tune in a compiled Keras template whose variables are restored from the module's SavedModel
checkpoint (ModuleSession.restore_variables: verified, no graph loaded). One template exists per (architecture,
adapter plan, head size (head_size: padded to a power of two, the padding masked), batch, crop) for the whole
process, kept in the session and shared by every task and
expert: its learning-rate schedule lives in variables (schedules.AssignableStepSchedule), so it is traced once.
Any other hub module is fine-tuned through ExpertLayer, loaded once per process by the session.
"""

import dataclasses
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from expert_hub import configs
from expert_hub import io_utils
from expert_hub import naming
from expert_hub import provenance
from expert_hub.data import preprocessing
from expert_hub.hub import layer as layer_lib
from expert_hub.hub import session as session_lib
from expert_hub.models import builder
from expert_hub.models import resnet_v2
from expert_hub.selection import cache
from expert_hub.train import schedules
from expert_hub.train import strategies
from expert_hub.train import trainer
from expert_hub.transfer import hyperrule
from expert_hub.transfer import linear_head

log = logging.getLogger(__name__)
FINETUNE_FILE = "finetune.json"
# What a fine-tune does beyond its made_from inputs; bumped when the same inputs and seed train differently, so
# that results made by an older recipe are fine-tuned again, not reused (is_older_recipe). 2: each epoch's
# order is a stateless permutation keyed by the seed (preprocessing.make_train_dataset), not a Dataset.shuffle.
# 3: the linear-probe head is fitted until lbfgs converges (linear_head.fit, proxies.PROBE_MAX_ITER).
# 4: ... on one BLAS thread (proxies.PROBE_BLAS_THREADS), not the machine's count: the head's last bits, and
# so the fine-tune's trajectory, no longer depend on the cores (a fresh run moved 24 of 96 seeds' accuracies).
# 5: the probe's l2 is the config's FinetuneConfig.head_l2 (a grid of them is cross-validated); at its default
# 0.01, the l2 fixed before, the same inputs train alike.
RECIPE_FORMAT = 5


def is_older_recipe(result, made_from, path):
  """True, and logged, when the fine-tune `result` read from `path` was not made from `made_from` because an
  older recipe made it (before RECIPE_FORMAT, or without one: another stream or starting head): the caller
  fine-tunes it again. A result made from other inputs by this recipe is for the caller to refuse."""
  if result.get("made_from") == made_from or result.get("recipe_format") == RECIPE_FORMAT:
    return False
  log.info("%s was fine-tuned by an older expert_hub (recipe format %s, now %d); fine-tuning again.", path,
           result.get("recipe_format"), RECIPE_FORMAT)
  return True


def _mixup(alpha, seed):
  """MixUp of batch i with its reverse, its mixing weight drawn from Beta(alpha, alpha) statelessly from
  (seed, i): the same batches mix alike in every run and after a resume."""
  def fn(index, batch):
    images, labels = batch
    if alpha > 0:
      g = tf.random.stateless_gamma([2], seed=preprocessing.example_seed(seed, index), alpha=alpha)
      lam = g[0] / (g[0] + g[1])
    else:
      lam = 1.0
    return lam * images + (1 - lam) * tf.reverse(images, [0]), lam * labels + (1 - lam) * tf.reverse(labels, [0])
  return fn


def head_size(num_classes):
  """The head a task of `num_classes` trains: the next power of two, at least 8. Templates are shared per size,
  so a process holds a few of them (VTAB's 19 tasks need six sizes), not one per class count."""
  if num_classes < 1:
    raise ValueError(f"num_classes={num_classes}; expected a positive integer.")
  return max(8, 1 << (num_classes - 1).bit_length())


class LogitMask(keras.layers.Layer):
  """Adds 0 to the task's logits and -1e9 to the padding of a sized head (head_size): padded classes get
  probability 0, hence zero gradient, so the head trains exactly as one of `num_classes` outputs would."""

  def __init__(self, size, **kwargs):
    super().__init__(**kwargs)
    self.size = size

  def build(self, input_shape):
    self.mask = self.add_weight(shape=(self.size,), initializer="zeros", trainable=False, name="mask")

  def call(self, logits):
    return logits + self.mask

  def set_classes(self, num_classes):
    if not 1 <= num_classes <= self.size:
      raise ValueError(f"num_classes={num_classes} does not fit a head of {self.size}.")
    self.mask.assign(np.where(np.arange(self.size) < num_classes, 0.0, -1e9).astype(np.float32))


def _classifier(backbone, size):
  """images -> masked logits [B, size]: the backbone, a zero-initialised head, a LogitMask."""
  images = keras.Input((None, None, 3), name="images")
  logits = keras.layers.Dense(size, kernel_initializer="zeros", name="head")(backbone(images))
  return keras.Model(images, LogitMask(size, name="logit_mask")(logits))


class _Template:
  """A compiled classifier and the assignable schedule its optimizer traced."""

  def __init__(self, model, schedule):
    self.model, self.schedule = model, schedule


class Finetuner:
  """Fine-tunes expert modules on one task with the BiT-HyperRule (see FinetuneConfig).

  Args:
    task: the tasks.Task.
    cfg: a FinetuneConfig.
    export_dirs: where names are looked up when no `session` is given.
    seed: the default seed of the training stream (shuffle, augmentation, MixUp); `run(..., seed=)` overrides it.
    strategy: the tf.distribute strategy (default: the current one).
    session: the session.ModuleSession modules and templates come from; build one per process and pass it to
      every Finetuner (None makes one for this Finetuner alone).
  """

  def __init__(self, task, cfg, export_dirs=None, seed=0, strategy=None, session=None):
    self.task, self.cfg, self.seed = task, cfg, seed
    self.session = session or session_lib.ModuleSession.for_export_dirs(export_dirs)
    self.export_dirs = self.session.export_dirs
    self.strategy = strategy or tf.distribute.get_strategy()
    train_images, self.train_labels = _arrays(task, cfg.train_split, cfg.resize)
    test_images, self.test_labels = _arrays(task, cfg.test_split, cfg.resize)
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
    self.head_size = head_size(task.num_classes)
    one_hot = lambda y: tf.one_hot(tf.cast(y, tf.int32), self.head_size)
    self._one_hot, self._train_source = one_hot, (train_images, self.train_labels)
    self._train_ds = {}
    self._probe_heads = {}  # handle -> (kernel, bias, l2): one probe per module, whatever the seeds
    self.augmentations = tuple(getattr(task, "augmentations", preprocessing.AUGMENTATIONS))  # label-preserving
    test = tf.data.Dataset.from_tensor_slices((test_images, self.test_labels))
    self.test_ds = preprocessing.make_eval_dataset(test, 256, self.crop, label_fn=one_hot).cache()
    self.data_fingerprint = provenance.array_fingerprint(train_images, self.train_labels, test_images,
                                                         self.test_labels)

  def train_dataset(self, seed=None):
    """The infinite stream of augmented training batches for `seed` (default the Finetuner's): its order,
    augmentation and MixUp are functions of the seed alone (preprocessing.make_train_dataset)."""
    seed = self.seed if seed is None else seed
    if seed not in self._train_ds:
      images, labels = self._train_source
      ds = preprocessing.make_train_dataset(images, labels, self.cfg.batch_size, self.resize, self.crop,
                                            self.augmentations, seed=seed, label_fn=self._one_hot)
      if self.schedule.mixup_alpha > 0:
        ds = ds.enumerate().map(_mixup(self.schedule.mixup_alpha, seed))
      self._train_ds[seed] = ds
    return self._train_ds[seed]

  @property
  def train_ds(self):
    return self.train_dataset()

  def made_from(self, handle, seed=None):
    """What fine-tuning `handle` here with `seed` (default the Finetuner's) is made from (provenance): the
    task's data, the module's identity (its files' sha256 for our modules), the schedule, resolution and seed.
    Checkpoints and results of a run resume or are reused only under the same record."""
    seed = self.seed if seed is None else seed
    path, packed = self.session.local_path(handle)
    record = {"stage": "fine-tune", "task": self.task.name, "num_classes": self.task.num_classes,
              "data": self.data_fingerprint, "module": cache.module_identity(f"{path}#{packed}" if packed else path),
              "config": self.cfg, "schedule": dataclasses.asdict(self.schedule), "learning_rate": self.lr,
              "resolution": [self.resize, self.crop], "augmentations": list(self.augmentations), "seed": seed,
              "recipe": RECIPE_FORMAT}
    if self.cfg.head_init == "linear_probe" and isinstance(self.cfg.head_l2, tuple) and len(self.cfg.head_l2) > 1:
      record["head_l2_folds_seed"] = self.seed  # the folds that pick the probe's l2 (_fit_head)
    return record

  def _compile(self, model):
    """Compiles under the strategy's scope (optimizer slots mirror the weights); call inside that scope.

    Returns the schedule, whose numbers `_start` assigns before each run.
    """
    schedule = schedules.AssignableStepSchedule()
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    return _Template(model, schedule)

  def _start(self, template):
    """Zero head, fresh optimizer, this task's schedule: the template is ready for one run."""
    template.schedule.assign(self.lr, self.schedule.warmup_steps, self.schedule.decay_steps)
    model = template.model
    for v in model.get_layer("head").weights:
      v.assign(tf.zeros_like(v))
    model.get_layer("logit_mask").set_classes(self.task.num_classes)
    trainer.reset_optimizer(model.optimizer)
    return model

  def _template(self, metadata):
    key = ("finetune_template", repr(metadata["model"]), repr(metadata.get("adapter")), self.head_size,
           self.cfg.batch_size, self.crop, id(self.strategy))

    def build():
      with self.strategy.scope():
        return self._compile(_classifier(builder.backbone_from_metadata(metadata, name="finetune_backbone"),
                                         self.head_size))
    return self.session.shared(key, build)

  def _model_for(self, handle):
    """A compiled classifier whose backbone holds the module's weights and whose head is zero."""
    metadata = self.session.metadata(handle)
    if not metadata.get("model"):  # not written by expert_hub: its graph is all we have
      with self.strategy.scope():
        layer = layer_lib.ExpertLayer(handle, trainable=True, export_dirs=self.export_dirs, session=self.session)
        return self._start(self._compile(_classifier(layer, self.head_size)))
    template = self._template(metadata)
    backbone = resnet_v2.get_backbone(template.model)
    self.session.restore_variables(handle, {v.path: v for v in backbone.variables})
    return self._start(template)

  def run(self, handle, workdir=None, seed=None):
    """Fine-tunes one expert; returns {"task", "expert", "test_accuracy", "steps", "seconds", ...}.

    With a `workdir`, training goes through trainer.fit: checkpoints every quarter of the schedule under
    `<workdir>/checkpoints`, a killed run (or multi-worker job) resumes there, and only the chief writes.
    `seed` (default the Finetuner's) seeds the training stream; the same seed gives every model the same batches.
    """
    t0 = time.time()
    seed = self.seed if seed is None else seed
    made_from = self.made_from(handle, seed)
    train_ds = self.train_dataset(seed)
    model = self._model_for(handle)
    head_l2 = self._fit_head(model, handle) if self.cfg.head_init == "linear_probe" else None
    steps = self.schedule.steps
    if workdir is not None:
      train_cfg = configs.TrainConfig(batch_size=self.cfg.batch_size, steps=steps, base_lr=self.lr,
                                      warmup_steps=self.schedule.warmup_steps, checkpoint_every=max(1, steps // 4),
                                      log_every=max(1, steps // 4))  # trainer.fit reads steps and the cadences
      fit = trainer.fit(model, train_ds.skip, train_cfg, workdir, name=f"finetune {handle}",
                        strategy=self.strategy, made_from=made_from)
      train_loss = fit.get("loss")  # None when a finished run was only restored
    else:
      trainer.prepare_multi_worker(model, self.strategy)
      history = model.fit(trainer.shard_by_data(train_ds), epochs=1, steps_per_epoch=steps, verbose=0,
                          shuffle=False)
      train_loss = history.history["loss"][-1]
    self._warn_if_diverged(handle, train_loss)
    loss, accuracy = self._evaluate(model)
    result = {"task": self.task.name, "expert": handle, "test_accuracy": round(float(accuracy), 4),
              "test_loss": None if loss is None else round(float(loss), 6),
              "steps": self.schedule.steps, "seconds": round(time.time() - t0, 2),
              "train_loss": None if train_loss is None else round(float(train_loss), 4),
              "batch_size": self.cfg.batch_size,
              "learning_rate": self.lr, "resolution": [self.resize, self.crop],
              "num_train_examples": int(len(self.train_labels)), "num_test_examples": int(len(self.test_labels)),
              "head_init": self.cfg.head_init, "head_l2": head_l2, "seed": seed, "recipe_format": RECIPE_FORMAT,
              "made_from": provenance.digest(made_from)}
    log.info("[finetune %s] %s: test accuracy %.4f (%d steps, %.1f s)", self.task.name, handle, accuracy,
             self.schedule.steps, result["seconds"])
    return result

  def _warn_if_diverged(self, handle, train_loss):
    """Logs a warning when the run ended above the cross-entropy of a uniform guess, ln(num_classes), or at NaN:
    it diverged, and its test accuracy is near chance (a learning rate too large for its head or batch)."""
    guess = math.log(self.task.num_classes)
    if train_loss is not None and not float(train_loss) <= guess:
      log.warning("[finetune %s] %s diverged: train loss %.4g, above the %.3f of a uniform guess over %d classes "
                  "(learning rate %g at batch %d, head %s); try a smaller base_lr.", self.task.name, handle,
                  float(train_loss), guess, self.task.num_classes, self.lr, self.cfg.batch_size,
                  self.cfg.head_init)

  def _fit_head(self, model, handle):
    """Sets the head to a linear probe of the backbone's frozen features on the training split, preprocessed as
    the test split is (linear_head.fit at the config's head_l2, or at the one of its grid that cross-validates
    best on folds shuffled by the Finetuner's seed); deterministic, so a resumed or repeated run starts alike. The
    backbone holds `handle`'s restored weights, so the probe is fitted once per handle and reused for its other
    seeds. Returns the probe's l2."""
    if handle not in self._probe_heads:
      backbone = model.layers[1]  # _classifier's layers: images, backbone, head, logit_mask
      images, labels = self._train_source
      ds = preprocessing.make_eval_dataset(tf.data.Dataset.from_tensor_slices((images, labels)), 256, self.crop)
      features, labels = np.concatenate([backbone(x, training=False).numpy() for x, _ in ds]), np.asarray(labels)
      l2 = linear_head.choose_l2(features, labels, self.cfg.head_l2, seed=self.seed)
      self._probe_heads[handle] = (*linear_head.fit(features, labels, self.head_size, l2=l2), l2)
    kernel, bias, l2 = self._probe_heads[handle]
    head = model.get_layer("head")
    head.kernel.assign(kernel)
    head.bias.assign(bias)
    return l2

  def _evaluate(self, model):
    """(test loss, test top-1) on the task's test split (the loss is None under multi-worker).

    Multi-worker: every worker scores the whole test set itself, since the replicas hold the same weights and
    Keras 3's distributed `evaluate` fails on this strategy's scalar reductions (see trainer.prepare_multi_worker).
    """
    if not strategies.is_multi_worker(self.strategy):
      loss, accuracy = model.evaluate(self.test_ds, verbose=0)[:2]
      return loss, accuracy
    hits, total = 0, 0
    for images, labels in self.test_ds:
      predicted = tf.argmax(model(images, training=False), axis=-1)
      hits += int(tf.reduce_sum(tf.cast(tf.equal(predicted, tf.argmax(labels, axis=-1)), tf.int32)))
      total += int(labels.shape[0])
    return None, hits / max(total, 1)


def _arrays(task, split, resize=None):
  """A split in memory at the HyperRule's resolution at most (tasks.base.load_arrays): uint8 or float32
  [N, H, W, 3], read one image at a time, so one large photo does not make every image large."""
  from expert_hub.tasks import base as tasks_base  # pylint: disable=g-import-not-at-top
  return tasks_base.load_arrays(task, split, resize)


def finetune(handle, task, cfg, workdir, export_dirs=None, strategy=None, session=None, seed=0):
  """Fine-tunes one expert on a task and writes `<workdir>/finetune.json`; returns its content.

  Checkpoints go to `<workdir>/finetune_runs/<expert>/` (resumed after a kill; a finished run is only
  re-evaluated). A run folder or `finetune.json` left by another run (another task, module, schedule or seed;
  see Finetuner.made_from) is refused with a ProvenanceError naming what differs: nothing is reused for, or
  overwritten by, a different run. Under a multi-worker strategy every worker calls this alike and only the
  chief writes.
  """
  finetuner = Finetuner(task, cfg, export_dirs, seed=seed, strategy=strategy, session=session)
  out = os.path.join(workdir, FINETUNE_FILE)
  made_from = provenance.digest(finetuner.made_from(handle))
  run_dir = os.path.join(workdir, "finetune_runs", naming.folder_name(handle))
  if os.path.exists(out):
    previous = io_utils.read_json(out)
    if is_older_recipe(previous, made_from, out):
      if strategies.is_chief(strategy):
        shutil.rmtree(run_dir, ignore_errors=True)  # its checkpoints hold the older recipe's run
    elif previous.get("made_from") != made_from:
      raise provenance.ProvenanceError(
          f"{out!r} holds the result of another fine-tune (task {previous.get('task')!r}, expert "
          f"{previous.get('expert')!r}); this one is {handle!r} on {task.name!r}. Nothing was overwritten; use "
          "another workdir.")
  result = finetuner.run(handle, workdir=run_dir)
  if strategies.is_chief(strategy):
    io_utils.atomic_write_json(out, result)
  return result
