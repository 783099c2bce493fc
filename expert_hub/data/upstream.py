"""Loading an upstream TFDS dataset and its hierarchy; preparing the embedded world on demand."""

import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from expert_hub.data import hierarchy as hierarchy_lib

WORLD_PREFIX = "expert_hub_world/"


def default_data_dir():
  return os.environ.get("EXPERT_HUB_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def get_builder(tfds_name, data_dir=None):
  """A TFDS builder; `expert_hub_world/*` configs are generated (offline) on first use."""
  data_dir = data_dir or default_data_dir()
  if tfds_name.startswith(WORLD_PREFIX):
    from expert_hub.data import world  # pylint: disable=g-import-not-at-top,unused-import  (registers it)
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
      logging.info("Rendering %s into %s (one-off, offline).", tfds_name, data_dir)
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Cannot open TFDS dataset {tfds_name!r} in data_dir {data_dir!r}: {e}") from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"TFDS dataset {tfds_name!r} is not prepared in data_dir {data_dir!r}. Prepare it first (for example "
        f"`tfds build {tfds_name.split(':')[0]} --data_dir={data_dir}`); expert_hub never downloads at run time.")
  return builder


def data_version(tfds_name, data_dir=None):
  """The version of the dataset `get_builder` would read (what a model trained on it records), without preparing
  it: a new version of the world (more images, other renderers) is other data. None when TFDS cannot name it."""
  if tfds_name.startswith(WORLD_PREFIX):
    from expert_hub.data import world  # pylint: disable=g-import-not-at-top,unused-import  (registers it)
  try:
    return str(tfds.builder(tfds_name, data_dir=data_dir or default_data_dir()).version)
  except Exception:  # pylint: disable=broad-except  (get_builder names the problem when the data is read)
    return None


def load_hierarchy(upstream_cfg, builder):
  """The upstream's hierarchy: `upstream_cfg.hierarchy_file`, else `info.metadata["hierarchy"]`."""
  if upstream_cfg.hierarchy_file:
    return hierarchy_lib.load_hierarchy(upstream_cfg.hierarchy_file)
  metadata = builder.info.metadata or {}
  if "hierarchy" not in metadata:
    raise ValueError(f"Upstream {upstream_cfg.tfds_name!r} carries no hierarchy in its metadata; pass "
                     "hierarchy_file= (a JSON of nodes with parents and label ids).")
  data = metadata["hierarchy"]
  return hierarchy_lib.Hierarchy(data["nodes"], name=data.get("name", upstream_cfg.name))


def load_labels(builder, split, label_key="label"):
  """All labels of a split as numpy ([N] ids or [N, C] multi-hot), without decoding images."""
  decoders = {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
              if isinstance(f, tfds.features.Image)}
  ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
  ds = ds.map(lambda ex: ex[label_key]).batch(4096)
  return np.concatenate([b.numpy() for b in ds]) if builder.info.splits[split].num_examples else np.zeros([0])


def load_encoded(builder, split, image_key="image", label_key="label"):
  """(encoded image bytes, label) pairs in file order; decode with `decode_image` after shuffling/skipping."""
  ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()}, shuffle_files=False)
  return ds.map(lambda ex: (ex[image_key], ex[label_key]))


def subset_fits_in_memory(builder, split, num_examples, limit_bytes):
  """Whether `num_examples` examples of `split`, at the split's mean encoded size, take at most `limit_bytes`."""
  info = builder.info.splits[split]
  if not info.num_examples:
    return True
  return num_examples * int(info.num_bytes) / info.num_examples <= limit_bytes


def decode_image(encoded):
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)
