r"""Disk size and load time: one packed module of N adapter experts vs N separate modules.

  python binaries/benchmark_packing.py --model=r50x1 --num_experts=4,16,48
Experts are freshly initialised (a size measurement). Separate modules of one architecture are identical in
size and load time, so --measure_separate=K of each kind are written and loaded for real, and N separate
modules are reported as N times their mean (marked "x N").
"""

import os
import shutil
import tempfile
import time

from absl import flags

from expert_hub import flags_common
from expert_hub.hub import export
from expert_hub.models import adapters
from expert_hub.models import packing
from expert_hub.models import resnet_v2

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "r50x1", list(resnet_v2.MODEL_SIZES), "Backbone size.")
flags.DEFINE_list("num_experts", ["4", "16", "48"], "Pack sizes to measure.")
flags.DEFINE_integer("measure_separate", 2, "Separate modules of each kind actually written and loaded.",
                     lower_bound=1)
flags.DEFINE_enum("placement", "stage_input", list(adapters.PLACEMENTS), "Adapter placement.")
flags.DEFINE_integer("first_stage", 1, "Adapters only in stages >= this (1-based); earlier stages are shared.",
                     lower_bound=1)
flags.DEFINE_integer("reduction", 4, "Adapter reduction.", lower_bound=1)


def _size(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _load_seconds(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  tf.saved_model.load(path)
  return time.time() - t0


def main(argv):
  del argv
  pack_sizes = sorted(flags_common.positive_ints("--num_experts", FLAGS.num_experts))
  cfg = resnet_v2.MODEL_SIZES[FLAGS.model]
  adapter = adapters.AdapterConfig(reduction=FLAGS.reduction, placement=FLAGS.placement,
                                    first_stage=FLAGS.first_stage)
  root = tempfile.mkdtemp(prefix="benchmark_packing_")
  try:
    separate = {}
    for kind in ("full", "adapter"):
      sizes, loads = [], []
      for i in range(FLAGS.measure_separate):
        backbone = resnet_v2.build_backbone(cfg, adapter=adapter if kind == "adapter" else None)
        path = export.export_module(backbone, root, "bench", f"{kind}{i}", 1, {"kind": kind})
        sizes.append(_size(path))
        loads.append(_load_seconds(path))
      separate[kind] = (sum(sizes) / len(sizes), sum(loads) / len(loads))
    rows = []
    for n in pack_sizes:
      shared = {}
      resnet_v2.build_backbone(cfg, name="trunk", trunk_layers=shared)
      experts = {f"e{i:02d}": (resnet_v2.build_backbone(cfg, adapter=adapter, name=f"e{i:02d}",
                                                        trunk_layers=shared), adapter) for i in range(n)}
      trunk, experts = packing.build_packed(cfg, shared, experts)
      t0 = time.time()
      path = export.export_pack(trunk, experts, root, "bench", f"pack{n}", 1, {})
      export_s = time.time() - t0
      rows.append((n, _size(path), _load_seconds(path), export_s))
      shutil.rmtree(path)
    mb = lambda b: b / 2 ** 20
    full_b, full_s = separate["full"]
    ad_b, ad_s = separate["adapter"]
    print(f"\n{FLAGS.model}, adapters {adapter.placement} r={adapter.reduction} from stage {adapter.first_stage}; "
          "one full module "
          f"{mb(full_b):.1f} MiB (load {full_s:.1f} s), one adapter module {mb(ad_b):.1f} MiB (load {ad_s:.1f} s)\n")
    print("| N | pack MiB | pack load s | pack export s | N full MiB (x N) | N full load s (x N) | "
          "N adapter MiB (x N) | N adapter load s (x N) | pack / 3 full |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, size, load, export_s in rows:
      print(f"| {n} | {mb(size):.1f} | {load:.1f} | {export_s:.0f} | {mb(n * full_b):.0f} | {n * full_s:.1f} | "
            f"{mb(n * ad_b):.0f} | {n * ad_s:.1f} | {size / (3 * full_b):.2f} |")
  finally:
    shutil.rmtree(root, ignore_errors=True)


def run():
  """Console-script entry point."""
  flags_common.run(main)


if __name__ == "__main__":
  run()
