"""Stacked multi-expert inference: every adapter expert of a pack in one graph equals each expert on its own."""

import types

import numpy as np
import pytest
import tensorflow as tf

from expert_hub.hub import export, loading
from expert_hub.models import adapters, packing, resnet_v2, stacking
from expert_hub.selection import embed

TINY = resnet_v2.MODEL_SIZES["tiny"]
# Same maths in another op order (one stacked matmul vs per-expert 1x1 convs; graph vs eager); features are O(1).
ATOL = 1e-4


def _build_pack(adapter_cfgs, seed=0):
  """(trunk, {name: SharedTrunkBackbone}) of tiny adapter experts with random, distinct, non-zero adapters."""
  shared = {}
  resnet_v2.build_backbone(TINY, name="trunk", trunk_layers=shared)
  models = {}
  for i, cfg in enumerate(adapter_cfgs):
    model = resnet_v2.build_backbone(TINY, adapter=cfg, name=f"e{i}", trunk_layers=shared)
    adapters.randomize_adapters(model, seed=seed + i)
    models[f"e{i}"] = (model, cfg)
  return packing.build_packed(TINY, shared, models)


def _images(n, seed=0):
  return np.random.RandomState(seed).rand(n, 32, 32, 3).astype("float32")


@pytest.mark.parametrize("placement,first_stage", [(p, 1) for p in adapters.PLACEMENTS] + [("stage_input", 3)])
def test_stacked_forward_equals_each_expert(placement, first_stage):
  cfg = adapters.AdapterConfig(placement=placement, first_stage=first_stage)
  _, experts = _build_pack([cfg] * 3)
  x = _images(5)
  stacked = stacking.StackedExperts(experts, names=["e2", "e0", "e1"])
  out = stacked(x).numpy()
  assert out.shape == (3, 5, TINY.feature_dim)
  for i, name in enumerate(stacked.names):
    np.testing.assert_allclose(out[i], experts[name](x).numpy(), atol=ATOL)
  # The adapters matter: experts differ from each other by far more than the tolerance.
  assert np.abs(out[0] - out[1]).max() > 100 * ATOL
  # Chunks of fewer experts (the memory cap), and a traced graph, give the same features.
  for per_chunk in (1, 2):
    np.testing.assert_allclose(stacked(x, experts_per_chunk=per_chunk).numpy(), out, atol=ATOL)
  traced = tf.function(lambda images: stacked(images, experts_per_chunk=2))
  np.testing.assert_allclose(traced(x).numpy(), out, atol=ATOL)


def test_stacked_forward_mixes_adapter_configs():
  cfgs = [adapters.AdapterConfig(placement=p, reduction=r)
          for p, r in (("stage_input", 4), ("every_unit", 4), ("stage_input", 2), ("stage_input", 4))]
  cfgs.append(adapters.AdapterConfig(first_stage=3))  # a longer shared prefix: its own group
  _, experts = _build_pack(cfgs)
  x = _images(4, seed=1)
  stacked = stacking.StackedExperts(experts)
  assert sorted(stacked.groups.values()) == [["e0", "e3"], ["e1"], ["e2"], ["e4"]]
  out = stacked(x, experts_per_chunk=1).numpy()
  for i, name in enumerate(stacked.names):
    np.testing.assert_allclose(out[i], experts[name](x).numpy(), atol=ATOL)


def test_experts_per_chunk():
  assert stacking.experts_per_chunk(16, 32) == 16
  assert stacking.experts_per_chunk(16, 32, max_stacked_batch=256) == 8
  assert stacking.experts_per_chunk(16, 32, max_stacked_batch=8) == 1
  with pytest.raises(ValueError, match="same pack"):
    _, a = _build_pack([adapters.AdapterConfig()])
    _, b = _build_pack([adapters.AdapterConfig()])
    stacking.StackedExperts({"a": a["e0"], "b": b["e0"]})


@pytest.fixture(scope="module")
def pack_path(tmp_path_factory):
  trunk, experts = _build_pack([adapters.AdapterConfig()] * 3, seed=10)
  root = str(tmp_path_factory.mktemp("packs"))
  return export.export_pack(trunk, experts, root, "bench", "pack", 1, {}, max_experts_per_graph=2)


def test_exported_embed_all_matches_each_packed_expert(pack_path):
  meta = export.verify_module(pack_path)
  assert meta["embed_all"] == {"experts": ["e0", "e1", "e2"], "experts_per_graph": 2}
  assert loading.disallowed_ops(pack_path) == {}
  module = tf.saved_model.load(pack_path)
  assert [n.decode() for n in module.embed_all_experts.numpy()] == meta["embed_all"]["experts"]
  x = _images(6, seed=2)
  out = module.embed_all(tf.constant(x)).numpy()
  assert out.shape == (3, 6, TINY.feature_dim)
  for i, name in enumerate(meta["embed_all"]["experts"]):
    np.testing.assert_allclose(out[i], getattr(module, name)(x).numpy(), atol=ATOL)


def test_embed_pack_uses_embed_all_and_falls_back(pack_path):
  module, _ = loading.load_module(pack_path, export_dirs=[])
  x = _images(7, seed=3)
  singles = {name: embed.embed(getattr(module, name), x, batch_size=3) for name in ("e0", "e1", "e2")}
  assert embed.has_embed_all(module)
  # Stacked, 2 experts per graph: batches of 5 images (the default cap is far above 2 x 5 rows at 32 px), or of
  # 1 image under a cap of 3 stacked rows.
  for cap in (None, 3):
    features = embed.embed_pack(module, x, batch_size=5, max_stacked_batch=cap)
    assert sorted(features) == ["e0", "e1", "e2"]
    for name, f in features.items():
      np.testing.assert_allclose(f, singles[name], atol=ATOL)
  # A cap too small for one image per call, a pack without embed_all (exported before it existed) and a module
  # that is not a pack all fall back to one expert at a time.
  old_pack = types.SimpleNamespace(experts=module.experts, e0=module.e0, e1=module.e1, e2=module.e2)
  assert not embed.has_embed_all(old_pack)
  for pack, cap in ((module, 1), (old_pack, None)):
    features = embed.embed_pack(pack, x, batch_size=4, experts=["e1", "e2"], max_stacked_batch=cap)
    assert sorted(features) == ["e1", "e2"]
    for name, f in features.items():
      np.testing.assert_allclose(f, singles[name], atol=ATOL)
  single = embed.embed_pack(module.e0, x, batch_size=4)
  np.testing.assert_allclose(single[None], singles["e0"], atol=ATOL)
  with pytest.raises(KeyError, match="holds no expert"):
    embed.embed_pack(module, x, experts=["nope"])


def test_group_packed():
  packs, singles = embed.group_packed(["/a/p/1#x", "/b/full/1", "/a/p/1#y", "/c/q/2#z"])
  assert packs == {"/a/p/1": ["x", "y"], "/c/q/2": ["z"]} and singles == ["/b/full/1"]


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
