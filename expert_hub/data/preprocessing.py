"""Image preprocessing shared by training, selection and fine-tuning.

All models take float32 images in [0, 1]. Inputs may be uint8 or float, 1 or 3 channels; anything else (another
shape, uint16 or other integer pixels) is rejected with what was received.
"""

import tensorflow as tf


def to_float_image(image, name="image"):
  """uint8 [0, 255] or float [0, 1] image [H, W, C] (C in {1, 3}) -> float32 [H, W, 3] in [0, 1]."""
  image = tf.convert_to_tensor(image)
  if image.shape.rank is not None and image.shape.rank != 3:
    raise ValueError(f"{name} has shape {image.shape} (rank {image.shape.rank}); expected [height, width, "
                     "channels] with 1 or 3 channels.")
  channels = image.shape[-1]
  if channels not in (1, 3, None):
    raise ValueError(f"{name} has {channels} channels (shape {image.shape}); expected 1 (grey) or 3 (RGB).")
  if image.dtype == tf.uint8:
    image = tf.cast(image, tf.float32) / 255.0
  elif image.dtype.is_floating:
    image = tf.cast(image, tf.float32)
  else:  # uint16, int32, bool, ...: no scale to [0, 1] is right for all of them, so none is guessed
    raise ValueError(f"{name} has dtype {image.dtype.name}; expected uint8 in [0, 255] or float in [0, 1] "
                     "(scale other images to one of them first).")
  if channels == 1:
    image = tf.tile(image, [1, 1, 3])
  return image


def check_image_batch(images):
  """Validates a numpy/tensor batch of images [N, H, W, C]; returns nothing, raises ValueError."""
  shape = tuple(images.shape)
  if len(shape) != 4:
    raise ValueError(f"images have shape {shape} (rank {len(shape)}); expected [num_images, height, width, "
                     "channels].")
  if shape[-1] not in (1, 3):
    raise ValueError(f"images have {shape[-1]} channels (shape {shape}); expected 1 (grey) or 3 (RGB).")


def resize(image, size):
  return tf.image.resize(image, [size, size], method="bilinear", antialias=True)


def example_seed(seed, index):
  """The [2] seed of stateless random ops for the `index`-th example of a stream seeded with `seed`."""
  return tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])


def train_augment(image, resize_to, crop_to, seed, flip=True):
  """BiT's training augmentation: resize, random crop, random horizontal flip.

  `seed` (a [2] integer tensor, see example_seed) makes the crop and the flip stateless functions of it: the
  same stream position is augmented alike in every run and after a resume from a checkpoint. `flip=False` for
  tasks whose label a mirror image would change (a left/right position).
  """
  image = resize(image, resize_to)
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  if crop_to != resize_to:
    image = tf.image.stateless_random_crop(image, [crop_to, crop_to, 3], seed=crop_seed)
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return image


AUGMENTATIONS = ("flip", "crop")  # what a task may allow (Task.augmentations)


def check_augmentations(augmentations, where="augmentations"):
  """Returns `augmentations` as a tuple; ValueError naming any that is not one of AUGMENTATIONS."""
  if isinstance(augmentations, str):
    raise ValueError(f"{where}={augmentations!r}; expected a tuple of names from {AUGMENTATIONS}, e.g. ('crop',).")
  bad = [a for a in augmentations if a not in AUGMENTATIONS]
  if bad:
    raise ValueError(f"{where}={tuple(augmentations)!r}: unknown {bad}; expected names from {AUGMENTATIONS}.")
  return tuple(augmentations)


def epoch_order_seed(seed, epoch):
  """The [2] seed of the example order of `epoch` in a stream seeded with `seed`; its second word is negative,
  so it never equals an example's augmentation seed (example_seed: position >= 0)."""
  return tf.stack([tf.cast(seed, tf.int64), -1 - tf.cast(epoch, tf.int64)])


def make_train_dataset(images, labels, batch_size, resize_to, crop_to, augmentations=AUGMENTATIONS, seed=0,
                       label_fn=None):
  """In-memory examples -> shuffled, repeated, batched, augmented training batches.

  `augmentations` are the label-preserving ones the task allows (Task.augmentations): "crop" (resize to
  `resize_to`, then a random `crop_to` crop; without it, a plain resize to `crop_to`) and "flip" (a random
  horizontal flip).

  The stream is a function of `seed` alone: epoch e visits the N examples in the order of a stateless
  permutation keyed by (seed, e) (tf.random.experimental.index_shuffle), and the example at stream position p
  is augmented with stateless ops keyed by (seed, p). Nothing depends on TensorFlow's global seed or on how
  often this dataset was iterated before, so every model fine-tuned with one seed sees the same batches, a
  resumed run (`.skip(n)`) continues the same stream, and the same seed gives the same stream in any process.
  (A `Dataset.shuffle(seed=)` would not: its order mixes in the global seed and moves on at every new iterator.)
  """
  augmentations = check_augmentations(augmentations)
  label_fn = label_fn or (lambda y: y)
  crop = "crop" in augmentations
  images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
  n = int(labels.shape[0])
  if n < 1 or images.shape[0] != n:
    raise ValueError(f"{images.shape[0]} images and {n} labels; expected the same number, at least 1.")

  def epoch_examples(epoch):  # one gather per epoch: 1.3-1.7x the input rate of an index_shuffle per example
    order = tf.random.experimental.index_shuffle(tf.range(n, dtype=tf.int64), epoch_order_seed(seed, epoch),
                                                 tf.constant(n - 1, tf.int64))
    return tf.data.Dataset.from_tensor_slices((tf.gather(images, order), tf.gather(labels, order)))

  def prep(position, example):
    image, label = example
    image = train_augment(to_float_image(image), resize_to if crop else crop_to, crop_to,
                          example_seed(seed, position), flip="flip" in augmentations)
    return image, label_fn(label)

  ds = tf.data.Dataset.counter(dtype=tf.int64).flat_map(epoch_examples).enumerate()
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  return without_autotuning(ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def make_eval_dataset(ds, batch_size, size, label_fn=None):
  """(image, label) pairs -> resized batches in order (no shuffling, last batch kept)."""
  label_fn = label_fn or (lambda y: y)
  ds = ds.map(lambda x, y: (resize(to_float_image(x), size), label_fn(y)), num_parallel_calls=tf.data.AUTOTUNE)
  return without_autotuning(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def without_autotuning(ds):
  """`ds` without tf.data's autotuning thread; what the training streams and evaluation batches here end with.

  TensorFlow 2.20 gives each iterator a thread that re-tunes parallelism and buffers at growing intervals;
  destroying the iterator (the end of a Keras `fit`) often waits for that thread's current interval to run out
  instead of waking it: 4-19 s after 5 of 16 expert fits, 43-70 s of the main job's 15 minutes
  (binaries/benchmark_input_teardown.py measures it). Without it, `AUTOTUNE` parallelism is
  min(16, cores) and prefetch buffers grow by the older per-buffer rule; the fits trained as fast. The order of
  the elements does not change.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.with_options(options)
