"""BiT ResNet-v2: shapes, weight standardisation, zero-init adapters equal the trunk, endpoints."""

import numpy as np
import pytest

from expert_hub.models import adapters, layers, resnet_v2, weights

TINY = resnet_v2.MODEL_SIZES["tiny"]


def test_backbone_features_any_size_and_param_count():
  m = resnet_v2.build_backbone(TINY)
  for size in (32, 48):
    assert m(np.random.rand(2, size, size, 3).astype("float32")).shape == (2, TINY.feature_dim)
  r50 = resnet_v2.build_backbone(resnet_v2.MODEL_SIZES["r50x1"])
  assert r50.count_params() == 23_500_352  # BiT-M R50x1 body (paper.md)


def test_weight_standardisation_normalises_kernels():
  conv = layers.StandardizedConv2D(4, 3)
  x = np.random.rand(1, 8, 8, 3).astype("float32")
  y = conv(x)
  k = conv.kernel.numpy()
  ks = (k - k.mean((0, 1, 2))) / np.sqrt(k.var((0, 1, 2)) + layers.WS_EPSILON)
  scaled = conv.kernel.numpy() * 7.0 + 3.0  # WS makes the conv invariant to kernel affine rescaling
  conv.kernel.assign(scaled)
  np.testing.assert_allclose(conv(x), y, atol=1e-4)
  assert abs(ks.std() - 1.0) < 1e-3


@pytest.mark.parametrize("shape,groups", [((3, 5, 7, 48), 16), ((2, 6, 6, 16), 16), ((2, 4, 4, 12), 3)])
def test_group_norm_matches_keras_values_and_gradients(shape, groups):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  x = tf.constant((rng.randn(*shape) * 2 + 3).astype("float32"))  # a mean well away from 0
  gamma, beta = rng.randn(shape[-1]).astype("float32"), rng.randn(shape[-1]).astype("float32")
  outputs, grads = [], []
  for layer in (layers.GroupNorm(groups), keras.layers.GroupNormalization(groups, epsilon=layers.GN_EPSILON)):
    layer.build(shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(tf.sin(y))
    outputs.append(y.numpy())
    grads.append([g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])])
  np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
  for ours, ref in zip(*grads):
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_group_norm_gradient_is_finite_on_a_constant_channel():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.constant(np.concatenate([np.zeros((2, 4, 4, 4)), np.random.rand(2, 4, 4, 4)], -1).astype("float32"))
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(tf.sin(layers.GroupNorm(8)(x)))  # group size 1: the zero channels have zero norm
  assert np.isfinite(tape.gradient(loss, x).numpy()).all()
  with pytest.raises(ValueError, match="12 channels cannot be split into 5 groups"):
    layers.GroupNorm(5)(np.zeros((1, 2, 2, 12), "float32"))


@pytest.mark.parametrize("placement,first_stage",
                         [(p, 1) for p in adapters.PLACEMENTS] + [("stage_input", 3), ("every_unit", 4)])
def test_fresh_adapter_expert_equals_generalist_exactly(placement, first_stage):
  plain = resnet_v2.build_backbone(TINY, name="plain")
  cfg = adapters.AdapterConfig(reduction=4, placement=placement, first_stage=first_stage)
  adapted = resnet_v2.build_backbone(TINY, adapter=cfg, name="adapted")
  weights.set_weights(adapted, weights.get_weights(plain), allow_missing=("adapter_",))
  x = np.random.rand(3, 32, 32, 3).astype("float32")
  np.testing.assert_array_equal(plain(x).numpy(), adapted(x).numpy())
  fraction = (adapted.count_params() - plain.count_params()) / plain.count_params()
  assert 0 < fraction < {"stage_input": 0.1, "every_unit": 0.4}[placement]
  # Adapters sit in stages first_stage.. only (tiny has one unit per stage: one adapter per adapted stage).
  adapted_stages = {int(layer.name.split("block")[1][0]) for layer in adapted.layers
                    if adapters.is_adapter_layer(layer.name)}
  assert adapted_stages == set(range(first_stage, 5))


def test_adapter_config_rejects_bad_values():
  with pytest.raises(ValueError, match="placement='everywhere'"):
    adapters.AdapterConfig(placement="everywhere")
  with pytest.raises(ValueError, match="first_stage=0"):
    adapters.AdapterConfig(first_stage=0)
  with pytest.raises(ValueError, match="first_stage=5, but the backbone has 4 stages"):
    resnet_v2.build_backbone(TINY, adapter=adapters.AdapterConfig(first_stage=5))
  with pytest.raises(ValueError, match="depth=51"):
    resnet_v2.ModelConfig(depth=51)


def test_classifier_head_is_zero_and_endpoints_are_named():
  clf = resnet_v2.build_classifier(resnet_v2.build_backbone(TINY), 5)
  x = np.random.rand(2, 32, 32, 3).astype("float32")
  np.testing.assert_array_equal(clf(x).numpy(), np.zeros([2, 5]))
  ends = resnet_v2.build_endpoints(clf)(x)
  assert set(ends) == {"pre_logits", "logits"} and ends["pre_logits"].shape == (2, TINY.feature_dim)


def test_set_weights_names_missing_and_misshaped():
  a = resnet_v2.build_backbone(TINY, name="a")
  w = weights.get_weights(a)
  w.pop("root_conv/kernel")
  with pytest.raises(ValueError, match="missing"):
    weights.set_weights(resnet_v2.build_backbone(TINY, name="b"), w)


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
