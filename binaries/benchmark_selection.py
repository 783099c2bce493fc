r"""Images/s of embedding images with every adapter expert of a pack: one expert at a time vs `embed_all`.

  python binaries/benchmark_selection.py --model=tiny --image_size=32 --num_experts=1,4,16
  python binaries/benchmark_selection.py --model=r50x1 --image_size=64 --num_experts=16 --num_images=64 \
      --batch_size=32
For each N a pack of N adapter experts (random non-zero adapters, so experts differ) on one random trunk is
exported and loaded, then, interleaved round-robin over --repeats rounds so that machine noise hits them alike:
(a) one expert at a time: each packed expert's own `__call__` ("<pack>#<expert>") over the images in batches of
--batch_size (selection.embed.embed); (b) `embed_all` via selection.embed.embed_pack: every expert in one graph
(models/stacking.py), batches of --batch_size images, N x batch_size stacked rows; (c) as (a) with batches of
N x batch_size images, the same rows per call as (b), which separates the stacking itself from a larger batch.
Images/s counts images embedded by all N experts; ratios are medians over rounds. A first call of each is made
before timing (loading restores traced functions; the first call still warms them).
"""

import shutil
import tempfile
import time

from absl import flags
import numpy as np

from expert_hub import flags_common

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "tiny", ["tiny", "r26x1", "r50x1"], "Backbone size.")
flags.DEFINE_integer("image_size", 32, "Image height and width.", lower_bound=1)
flags.DEFINE_list("num_experts", ["1", "4", "16"], "Pack sizes to measure.")
flags.DEFINE_integer("num_images", 1024, "Images embedded by every expert.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Images per call.", lower_bound=1)
flags.DEFINE_integer("max_stacked_batch", None, "Cap on stacked rows per embed_all call (default: embed_pack's).",
                     lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Round-robin rounds; each round times every candidate once.", lower_bound=1)
flags.DEFINE_enum("placement", "stage_input", ["stage_input", "every_unit"], "Adapter placement.")
flags.DEFINE_integer("first_stage", 1, "Adapters only in stages >= this (1-based); earlier stages are shared.",
                     lower_bound=1)
flags.DEFINE_integer("reduction", 4, "Adapter reduction.", lower_bound=1)


def _build_pack(cfg, adapter, n, root):
  """Exports a pack of n random adapter experts; returns (path, export seconds)."""
  from expert_hub.hub import synthetic  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  path = synthetic.build_pack(cfg, adapter, n, root, upstream="bench", name=f"pack{n}")
  return path, time.time() - t0


def _candidates(module, images, batch, max_stacked_batch):
  """{"a", "b", "c"}: functions returning {expert: features} (see the module docstring)."""
  from expert_hub.selection import embed  # pylint: disable=g-import-not-at-top
  names = [e.decode() for e in module.experts.numpy()]
  one_at_a_time = lambda b: {name: embed.embed(getattr(module, name), images, b) for name in names}
  return {
      "a": lambda: one_at_a_time(batch),
      "b": lambda: embed.embed_pack(module, images, batch, max_stacked_batch=max_stacked_batch),
      "c": lambda: one_at_a_time(len(names) * batch),
  }


def _timed(fn):
  t0 = time.time()
  out = fn()
  return out, time.time() - t0


def main(argv):
  del argv
  pack_sizes = sorted(flags_common.positive_ints("--num_experts", FLAGS.num_experts))
  from expert_hub.hub import loading  # pylint: disable=g-import-not-at-top
  from expert_hub.models import adapters, resnet_v2  # pylint: disable=g-import-not-at-top

  cfg = resnet_v2.MODEL_SIZES[FLAGS.model]
  adapter = adapters.AdapterConfig(reduction=FLAGS.reduction, placement=FLAGS.placement,
                                    first_stage=FLAGS.first_stage)
  size, batch = FLAGS.image_size, FLAGS.batch_size
  images = np.random.RandomState(0).rand(FLAGS.num_images, size, size, 3).astype("float32")
  root = tempfile.mkdtemp(prefix="benchmark_selection_")
  rows = []
  try:
    for n in pack_sizes:
      path, export_s = _build_pack(cfg, adapter, n, root)
      t0 = time.time()
      module, _ = loading.load_module(path, export_dirs=[root])
      load_s = time.time() - t0
      names = [e.decode() for e in module.experts.numpy()]
      candidates = _candidates(module, images, batch, FLAGS.max_stacked_batch)
      first = {}
      for key, fn in candidates.items():  # warm up; keep the features to compare
        first[key], _ = _timed(fn)
      diff = max(float(np.abs(first["b"][name] - first["a"][name]).max()) for name in names)
      spread = max(float(np.abs(first["a"][name] - first["a"][names[0]]).max()) for name in names)
      seconds = {key: [] for key in candidates}
      for _ in range(FLAGS.repeats):
        for key, fn in candidates.items():
          seconds[key].append(_timed(fn)[1])
      rate = {key: FLAGS.num_images / float(np.median(s)) for key, s in seconds.items()}
      rows.append((n, rate, diff, spread, export_s, load_s))
      shutil.rmtree(path)
    print(f"\n{FLAGS.model} at {size}x{size}, adapters {adapter.placement} r={adapter.reduction} "
          f"from stage {adapter.first_stage}, "
          f"{FLAGS.num_images} images, batch {batch}, median of {FLAGS.repeats} rounds; images/s = images embedded "
          "by all N experts per second\n")
    print("| N | (a) one at a time img/s | (b) embed_all img/s | (b)/(a) | (c) one at a time, batch N x B img/s | "
          "(b)/(c) | max abs diff (b) vs (a) | max abs diff between experts | export s | load s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, rate, diff, spread, export_s, load_s in rows:
      print(f"| {n} | {rate['a']:.1f} | {rate['b']:.1f} | {rate['b'] / rate['a']:.2f} | {rate['c']:.1f} | "
            f"{rate['b'] / rate['c']:.2f} | {diff:.1e} | {spread:.2f} | {export_s:.0f} | {load_s:.1f} |")
  finally:
    shutil.rmtree(root, ignore_errors=True)


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
