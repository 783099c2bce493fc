"""BiT weight files land tensor by tensor in our ResNet-v2 (synthetic files with BiT's exact keys/shapes)."""

import json
import os

import numpy as np
import pytest
import tensorflow_hub as hub

from conftest import run_python
from expert_hub.models import bit_import, weights


def synthetic_bit_arrays(units, width, num_classes, seed=0):
  """A BiT-format weight dict written from the BiT layout (not from our mapping), filled with random values."""
  rng = np.random.RandomState(seed)
  arrays = {}

  def add(key, shape):
    arrays[key] = rng.randn(*shape).astype(np.float32)

  root = int(64 * width)
  add("resnet/root_block/standardized_conv2d/kernel", (7, 7, 3, root))
  cin = root
  for b, n in enumerate(units, start=1):
    mid = root * 2 ** (b - 1)
    out = 4 * mid
    for u in range(1, n + 1):
      p = f"resnet/block{b}/unit{u:02d}"
      add(f"{p}/a/group_norm/gamma", (cin,))
      add(f"{p}/a/group_norm/beta", (cin,))
      add(f"{p}/a/standardized_conv2d/kernel", (1, 1, cin, mid))
      if u == 1:
        add(f"{p}/a/proj/standardized_conv2d/kernel", (1, 1, cin, out))
      for part, shape in (("b", (3, 3, mid, mid)), ("c", (1, 1, mid, out))):
        add(f"{p}/{part}/group_norm/gamma", (mid,))
        add(f"{p}/{part}/group_norm/beta", (mid,))
        add(f"{p}/{part}/standardized_conv2d/kernel", shape)
      cin = out
  add("resnet/group_norm/gamma", (cin,))
  add("resnet/group_norm/beta", (cin,))
  if num_classes:
    add("resnet/head/conv2d/kernel", (1, 1, cin, num_classes))
    add("resnet/head/conv2d/bias", (num_classes,))
  return arrays


def _check_every_tensor_lands(arrays, model):
  ours = weights.get_weights(model)
  assert len(ours) == len(arrays)
  for key, value in arrays.items():
    np.testing.assert_array_equal(ours[bit_import.bit_key_to_name(key)], value.reshape(ours[
        bit_import.bit_key_to_name(key)].shape), err_msg=key)


def test_r50x1_with_21843_way_head():
  arrays = synthetic_bit_arrays((3, 4, 6, 3), 1.0, 21843)
  body = sum(v.size for k, v in arrays.items() if "/head/" not in k)
  head = sum(v.size for k, v in arrays.items() if "/head/" in k)
  assert (body, head) == (23_500_352, 44_756_307)  # BiT-M R50x1 (paper.md)
  model, cfg, num_classes = bit_import.build_from_bit(arrays)
  assert cfg.depth == 50 and cfg.width == 1.0 and num_classes == 21843
  _check_every_tensor_lands(arrays, model)


def test_unknown_missing_and_misshaped_keys_are_errors():
  arrays = synthetic_bit_arrays((1, 1, 1, 1), 0.25, 5)
  with pytest.raises(KeyError, match="resnet/block1/unit01/d/group_norm/gamma"):
    bit_import.build_from_bit({**arrays, "resnet/block1/unit01/d/group_norm/gamma": np.zeros(4)})
  missing = dict(arrays)
  missing.pop("resnet/block2/unit01/b/group_norm/beta")
  with pytest.raises(ValueError, match="missing"):
    bit_import.build_from_bit(missing)
  bad = dict(arrays)
  bad["resnet/group_norm/gamma"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match="resnet|final_gn/gamma"):
    bit_import.build_from_bit(bad)


def test_import_bit_binary_exports_generalist_with_logits(tmp_path):
  arrays = synthetic_bit_arrays((1, 1, 1, 1), 0.25, 7, seed=1)
  npz = str(tmp_path / "BiT-tiny.npz")
  np.savez(npz, **arrays)
  proc = run_python(["binaries/import_bit.py", f"--npz={npz}", f"--export_dir={tmp_path / 'export'}",
                     "--upstream=toy", "--image_size=32"])
  path = proc.stdout.strip().splitlines()[-1]
  meta = json.load(open(os.path.join(path, "expert.json")))
  assert meta["kind"] == "generalist" and meta["labels"] == list(range(7)) and "logits" in meta["endpoints"]
  model, _, _ = bit_import.build_from_bit(arrays)
  x = np.random.RandomState(0).rand(2, 32, 32, 3).astype("float32")
  module = hub.load(path)  # keep a reference: its functions need the loaded variables alive
  np.testing.assert_allclose(module.logits(x).numpy(), model(x).numpy(), rtol=1e-3, atol=1e-2)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
