r"""Inference throughput of an exported ResNet50 module vs the in-memory model vs Keras' ResNet50V2.

  python binaries/benchmark_inference.py --sizes=64,224 --batch_size=32
All candidates run in this one process, interleaved round-robin over --repeats rounds so that machine noise
hits them alike; the printed ratios are against keras.applications.ResNet50V2(weights=None) (BatchNorm, the
peer). Variants: (a) our exported module (hub.load, training=False), (b) our in-memory model in training mode,
(c) the peer, (d) our in-memory model with weight standardisation folded into the kernels, which isolates
what standardising the kernels on every call costs, and (e) the same with keras.layers.GroupNormalization in
place of ours (expert_hub.models.layers.GroupNorm), which isolates what our GroupNorm saves.
The two architectures differ in work: BiT's ResNet-v2 strides in the first unit of a stage, Keras' ResNet50V2 in
the last, so ours does ~1.17x the peer's FLOPs per image. The last column, throughput x FLOPs per image against
the peer's, compares how fast each runs its own arithmetic.
"""

import shutil
import tempfile
import time

from absl import flags
import numpy as np

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["64", "224"], "Image sizes.")
flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Round-robin rounds; each round times every candidate.", lower_bound=1)
flags.DEFINE_float("seconds", 4.0, "Minimum seconds per candidate per round.", lower_bound=0.0)
flags.DEFINE_enum("model", "r50x1", ["r50x1", "tiny"], "Our backbone size.")


def _throughput(fn, x, min_seconds):
  n, t0 = 0, time.time()
  while time.time() - t0 < min_seconds or n < 2:
    fn(x).numpy()
    n += 1
  return n * x.shape[0] / (time.time() - t0)


def main(argv):
  del argv
  sizes = flags_common.positive_ints("--sizes", FLAGS.sizes)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from expert_hub.hub import export  # pylint: disable=g-import-not-at-top
  from expert_hub.models import layers, resnet_v2, weights  # pylint: disable=g-import-not-at-top
  from expert_hub.experiments import transfer_cost as cost  # pylint: disable=g-import-not-at-top

  cfg = resnet_v2.MODEL_SIZES[FLAGS.model]
  ours = resnet_v2.build_backbone(cfg, name="ours")
  folded = keras.models.clone_model(ours)
  folded.set_weights(ours.get_weights())
  weights.fold_standardization_in_place([folded])

  def keras_group_norm(layer):
    if isinstance(layer, layers.GroupNorm):
      return keras.layers.GroupNormalization(groups=layer.groups, epsilon=layer.epsilon, name=layer.name)
    return layer.__class__.from_config(layer.get_config())

  folded_keras_gn = keras.models.clone_model(folded, clone_function=keras_group_norm)
  weights.set_weights(folded_keras_gn, weights.get_weights(folded))
  root = tempfile.mkdtemp(prefix="benchmark_inference_")
  path = export.export_module(ours, root, "bench", "module", 1, {"kind": "generalist"})
  module = tf.saved_model.load(path)
  peer = keras.applications.ResNet50V2(weights=None, include_top=False, pooling="avg")
  candidates = {
      "(a) exported module": lambda x: module(x, training=False),
      "(b) in-memory, training mode": tf.function(lambda x: ours(x, training=True)),
      "(c) keras ResNet50V2 (peer)": tf.function(lambda x: peer(x, training=False)),
      "(d) in-memory, WS folded": tf.function(lambda x: folded(x, training=False)),
      "(e) (d) with keras GroupNormalization": tf.function(lambda x: folded_keras_gn(x, training=False)),
  }
  for size in sizes:
    x = tf.constant(np.random.RandomState(0).rand(FLAGS.batch_size, size, size, 3).astype("float32"))
    diff = float(np.abs(module(x, training=False).numpy() - ours(x).numpy()).max())
    diff_folded = float(np.abs(folded(x).numpy() - ours(x).numpy()).max())
    diff_keras_gn = float(np.abs(folded_keras_gn(x).numpy() - folded(x).numpy()).max())
    for fn in candidates.values():
      fn(x)  # trace / warm up
    rates = {k: [] for k in candidates}
    for _ in range(FLAGS.repeats):
      for name, fn in candidates.items():
        rates[name].append(_throughput(fn, x, FLAGS.seconds))
    peer_rate = np.median(rates["(c) keras ResNet50V2 (peer)"])
    ours_flops = cost.flops_per_image(lambda x: ours(x, training=False), size)
    peer_flops = cost.flops_per_image(lambda x: peer(x, training=False), size)
    print(f"\n{size}x{size}, batch {FLAGS.batch_size}, {FLAGS.model} (max |feature diff| module vs in-memory "
          f"{diff:.2e}, folded vs in-memory {diff_folded:.2e}, keras GroupNormalization vs ours {diff_keras_gn:.2e}); "
          f"GFLOPs per image: ours {ours_flops / 1e9:.2f}, peer {peer_flops / 1e9:.2f}")
    print("| candidate | images/s (median) | ratio to peer | FLOP-rate ratio to peer |\n|---|---|---|---|")
    for name, r in rates.items():
      flops = peer_flops if name.startswith("(c)") else ours_flops
      print(f"| {name} | {np.median(r):.1f} | {np.median(r) / peer_rate:.2f} | "
            f"{np.median(r) * flops / (peer_rate * peer_flops):.2f} |")
  shutil.rmtree(root, ignore_errors=True)


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
