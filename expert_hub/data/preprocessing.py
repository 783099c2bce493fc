"""Image preprocessing shared by training, selection and fine-tuning.

All models take float32 images in [0, 1]. Inputs may be uint8 or float, 1 or 3 channels; anything else is
rejected with the shape that was received.
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
  else:
    image = tf.cast(image, tf.float32)
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


def train_augment(image, resize_to, crop_to, flip=True):
  """BiT's training augmentation: resize, random crop, random horizontal flip."""
  image = resize(image, resize_to)
  if crop_to != resize_to:
    image = tf.image.random_crop(image, [crop_to, crop_to, 3])
  if flip:
    image = tf.image.random_flip_left_right(image)
  return image


def make_train_dataset(ds, batch_size, resize_to, crop_to, augment=True, shuffle_buffer=10_000, seed=0,
                       label_fn=None):
  """(image, label) pairs -> shuffled, repeated, batched, augmented training batches."""
  label_fn = label_fn or (lambda y: y)

  def prep(image, label):
    image = to_float_image(image)
    if augment:
      image = train_augment(image, resize_to, crop_to)
    else:
      image = resize(image, crop_to)
    return image, label_fn(label)

  ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(ds, batch_size, size, label_fn=None):
  """(image, label) pairs -> resized batches in order (no shuffling, last batch kept)."""
  label_fn = label_fn or (lambda y: y)
  ds = ds.map(lambda x, y: (resize(to_float_image(x), size), label_fn(y)), num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
