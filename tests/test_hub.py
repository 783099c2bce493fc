"""Export, registry and ExpertLayer: modules reproduce the in-memory model and fine-tune through Keras 3."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

import expert_hub
from expert_hub.hub import export, loading, registry
from expert_hub.models import resnet_v2
from expert_hub.train import upstream

# GroupNorm + WS numerics of a reloaded graph differ from eager by up to ~1.6e-4 (stack.md pitfall 5).
FEATURE_ATOL = 1e-3


def _module_paths(export_dir):
  return {e["name"]: e["path"] for e in registry.list_experts([export_dir])}


def test_export_layout_and_metadata(export_dir, trained_workdir):
  paths = _module_paths(export_dir)
  plan = json.load(open(os.path.join(trained_workdir, "experts.json")))
  names = [e["name"] for e in plan["experts"]]
  assert set(paths) == {"generalist", "control", *names, *[f"{n}_adapter" for n in names]}
  for name, path in paths.items():
    assert path.endswith(os.path.join("mini32", name, "1"))
    meta = export.verify_module(path)
    for key in ("name", "kind", "node", "labels", "feature_dim", "image_size", "num_params",
                "num_trainable_params", "sha256"):
      assert key in meta, (name, key)
    assert "saved_model.pb" in meta["sha256"]
    assert meta["kind"] == (name if name in ("generalist", "control") else
                            "adapter" if name.endswith("_adapter") else "full")
  adapter, full = export.read_metadata(paths[f"{names[0]}_adapter"]), export.read_metadata(paths[names[0]])
  assert adapter["num_params"] > full["num_params"]


def test_module_reproduces_in_memory_model(export_dir, trained_workdir):
  paths = _module_paths(export_dir)
  plan = json.load(open(os.path.join(trained_workdir, "experts.json")))
  name = plan["experts"][0]["name"]
  folder = os.path.join(trained_workdir, "experts", "adapter", name)
  backbone = upstream.model_from_info(upstream.read_model_info(folder), folder, with_head=False)
  module = hub.load(paths[f"{name}_adapter"])
  for size in (32, 40):  # any image size
    x = np.random.RandomState(size).rand(4, size, size, 3).astype("float32")
    np.testing.assert_allclose(module(x, training=False).numpy(), backbone(x).numpy(), atol=FEATURE_ATOL)
  assert len(module.variables) == len(backbone.variables)
  assert module.regularization_losses == [] or all(callable(f) for f in module.regularization_losses)
  sig = module.signatures["serving_default"]
  assert list(sig.structured_outputs.values())[0].shape.as_list() == [None, backbone.output_shape[-1]]


def test_existing_version_is_refused_and_nothing_written(export_dir):
  before = sorted(os.walk(export_dir))
  backbone = resnet_v2.build_backbone(resnet_v2.MODEL_SIZES["tiny"])
  with pytest.raises(FileExistsError, match="already holds"):
    export.export_module(backbone, export_dir, "mini32", "generalist", 1, {"kind": "generalist"})
  for bad in ("../evil", "/abs", "a/b", ".hidden"):
    with pytest.raises(ValueError, match="not a valid name"):
      export.export_module(backbone, export_dir, "mini32", bad, 1, {"kind": "full"})
  assert sorted(os.walk(export_dir)) == before


def test_tampered_module_fails_verification(export_dir, tmp_path):
  import shutil
  src = _module_paths(export_dir)["generalist"]
  copy = str(tmp_path / "copy")
  shutil.copytree(src, copy)
  with open(os.path.join(copy, "saved_model.pb"), "ab") as f:
    f.write(b"x")
  with pytest.raises(ValueError, match="saved_model.pb"):
    export.verify_module(copy)


def test_registry_names_paths_urls_and_unknown(export_dir):
  reg = registry.Registry([export_dir])
  path = _module_paths(export_dir)["generalist"]
  assert reg.resolve("generalist") == path
  assert reg.resolve("mini32/generalist") == path
  assert reg.resolve("mini32/generalist/1") == path
  assert reg.resolve(path) == path
  url = "https://tfhub.dev/google/experts/bit/r50x1/in21k/bird/1"
  assert reg.resolve(url) == url
  with pytest.raises(KeyError, match="nearest known names: .*generalist"):
    reg.resolve("generalistt")
  assert {e["name"] for e in expert_hub.list_experts([export_dir])} == set(reg.names())


def test_expert_layer_fine_tunes_module_variables(export_dir):
  path = _module_paths(export_dir)["generalist"]
  layer = expert_hub.ExpertLayer(path, trainable=True)
  images = keras.Input((32, 32, 3))
  model = keras.Model(images, keras.layers.Dense(3)(layer(images)))
  model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  module_vars = layer._module.trainable_variables  # pylint: disable=protected-access
  before = [v.numpy().copy() for v in module_vars]
  x = np.random.rand(16, 32, 32, 3).astype("float32")
  model.fit(x, np.arange(16) % 3, batch_size=8, epochs=1, verbose=0)
  changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, module_vars))
  assert changed == len(module_vars)
  frozen = expert_hub.ExpertLayer(path, trainable=False)
  assert not frozen.trainable_weights and frozen.non_trainable_weights



def _save_write_file_module(path, target):
  obj = tf.train.Checkpoint()

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
  def call(images):
    tf.io.write_file(target, "written by a module")
    return tf.reduce_mean(images, axis=[1, 2])

  obj.__call__ = call
  obj.variables, obj.trainable_variables, obj.regularization_losses = [], [], []
  tf.saved_model.save(obj, path)


def test_untrusted_module_with_write_file_is_refused(tmp_path, export_dir):
  path, target = str(tmp_path / "evil"), str(tmp_path / "pwned.txt")
  _save_write_file_module(path, target)
  with pytest.raises(loading.UnsafeModuleError, match="WriteFile"):
    loading.load_module(path, [export_dir])
  with pytest.raises(loading.UnsafeModuleError, match="allow_unsafe_ops"):
    expert_hub.ExpertLayer(path, export_dirs=[export_dir])
  assert not os.path.exists(target)
  module, _ = loading.load_module(path, [export_dir], allow_unsafe_ops=True)
  module(tf.zeros([1, 8, 8, 3]))
  assert os.path.exists(target)


def test_our_modules_pass_the_allowlist_anywhere(export_dir, tmp_path):
  import shutil
  copy = str(tmp_path / "copied_generalist")
  shutil.copytree(_module_paths(export_dir)["generalist"], copy)
  assert loading.disallowed_ops(copy) == {}
  module, path = loading.load_module(copy)
  assert path == copy and module(tf.zeros([1, 32, 32, 3])).shape[0] == 1
  os.remove(os.path.join(copy, "variables", "variables.index"))
  with pytest.raises(ValueError, match="missing file 'variables/variables.index'"):
    loading.load_module(copy)



def test_logits_endpoint_matches_the_classifier(export_dir, trained_workdir):
  plan = json.load(open(os.path.join(trained_workdir, "experts.json")))
  node = plan["experts"][0]
  folder = os.path.join(trained_workdir, "experts", "full", node["name"])
  classifier = upstream.model_from_info(upstream.read_model_info(folder), folder)
  module = hub.load(_module_paths(export_dir)[node["name"]])
  meta = export.read_metadata(_module_paths(export_dir)[node["name"]])
  x = np.random.RandomState(0).rand(3, 32, 32, 3).astype("float32")
  expected = classifier(x).numpy()[:, node["labels"]]
  np.testing.assert_allclose(module.logits(x).numpy(), expected, atol=FEATURE_ATOL)
  assert meta["labels"] == node["labels"] and len(meta["label_names"]) == len(node["labels"])
  assert "logits" in meta["endpoints"] and "logits" in module.signatures
  generalist = export.read_metadata(_module_paths(export_dir)["generalist"])
  assert generalist["label_names"][0] == "disk" and len(generalist["label_names"]) == 80


def test_tfsm_layer_fine_tunes_through_the_named_endpoints(export_dir):
  path = _module_paths(export_dir)["generalist"]
  layer = keras.layers.TFSMLayer(path, call_endpoint="serve", call_training_endpoint="call_training",
                                 trainable=True)
  images = keras.Input((32, 32, 3))
  model = keras.Model(images, keras.layers.Dense(3)(layer(images)))
  model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  before = [w.numpy().copy() for w in layer.trainable_weights]
  model.fit(np.random.rand(8, 32, 32, 3).astype("float32"), np.arange(8) % 3, epochs=1, verbose=0)
  assert before and all(not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights))



def test_hub_load_gradient_tape_step(export_dir):
  module = hub.load(_module_paths(export_dir)["generalist"])
  x = tf.constant(np.random.rand(4, 32, 32, 3).astype("float32"))
  before = [v.numpy().copy() for v in module.trainable_variables]
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.square(module(x, training=True)))
  grads = tape.gradient(loss, module.trainable_variables)
  assert all(g is not None for g in grads)
  for v, g in zip(module.trainable_variables, grads):
    v.assign_sub(0.1 * g)
  assert sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, module.trainable_variables)) == len(before)


TF_KERAS_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf, tensorflow_hub as hub, tf_keras
path, trainable = sys.argv[1], sys.argv[2] == "1"
layer = hub.KerasLayer(path, trainable=trainable)
model = tf_keras.Sequential([tf_keras.Input((32, 32, 3)), layer, tf_keras.layers.Dense(3)])
model.compile(tf_keras.optimizers.SGD(0.05), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
before = [v.numpy().copy() for v in layer.variables]
model.fit(np.random.rand(8, 32, 32, 3).astype("float32"), np.arange(8) % 3, epochs=1, verbose=0)
changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, layer.variables))
print(json.dumps({"changed": changed, "total": len(before), "trainable": len(layer.trainable_variables)}))
"""


@pytest.mark.parametrize("trainable", [True, False])
def test_hub_keras_layer_in_tf_keras(export_dir, trainable):
  from conftest import run_python
  path = _module_paths(export_dir)["generalist"]
  proc = run_python(["-c", TF_KERAS_SCRIPT, path, "1" if trainable else "0"], env={"TF_USE_LEGACY_KERAS": "1"})
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  if trainable:
    assert out["changed"] == out["total"] == out["trainable"] > 0
  else:
    assert out["changed"] == 0 and out["trainable"] == 0


def test_expert_layer_adapters_only_and_keras_file_round_trip(export_dir, tmp_path):
  name = [n for n in _module_paths(export_dir) if n.endswith("_adapter")][0]
  layer = expert_hub.ExpertLayer(name, trainable=True, train_adapters_only=True, export_dirs=[export_dir])
  assert layer.trainable_weights and all("adapter_" in w.name for w in layer.trainable_weights)
  images = keras.Input((32, 32, 3))
  model = keras.Model(images, keras.layers.Dense(3, name="head")(layer(images)))
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  frozen_before = [w.numpy().copy() for w in layer.non_trainable_weights]
  tuned_before = [w.numpy().copy() for w in layer.trainable_weights]
  x = np.random.rand(8, 32, 32, 3).astype("float32")
  model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
  assert all(np.array_equal(b, w.numpy()) for b, w in zip(frozen_before, layer.non_trainable_weights))
  assert any(not np.array_equal(b, w.numpy()) for b, w in zip(tuned_before, layer.trainable_weights))
  file = str(tmp_path / "model.keras")
  model.save(file)
  reloaded = keras.models.load_model(file)
  np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="not an adapter expert"):
    expert_hub.ExpertLayer("generalist", trainable=True, train_adapters_only=True, export_dirs=[export_dir])



def test_packed_adapter_experts(trained_workdir, export_dir, tmp_path):
  from expert_hub.hub import export_trained
  packs = str(tmp_path / "packs")
  path = export_trained.export_pack(trained_workdir, packs, version=1)
  meta = export.verify_module(path)
  singles = _module_paths(export_dir)
  adapters = sorted(n for n in singles if n.endswith("_adapter"))
  assert meta["kind"] == "pack" and sorted(meta["experts"]) == adapters
  module = hub.load(path)
  assert sorted(n.decode() for n in module.experts.numpy()) == adapters
  x = np.random.RandomState(1).rand(2, 32, 32, 3).astype("float32")
  generalist = hub.load(singles["generalist"])
  np.testing.assert_allclose(module(x).numpy(), generalist(x).numpy(), atol=FEATURE_ATOL)
  for name in adapters:
    single = hub.load(singles[name])
    np.testing.assert_allclose(getattr(module, name)(x).numpy(), single(x).numpy(), atol=FEATURE_ATOL)
  pack_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  single_bytes = sum(os.path.getsize(os.path.join(d, f)) for n in adapters for d, _, fs in os.walk(singles[n])
                     for f in fs)
  assert pack_bytes < single_bytes
  # One packed expert fine-tunes through ExpertLayer; the pack's other experts keep their adapters.
  reg = registry.Registry([packs])
  handle = f"mini32/adapters#{adapters[0]}"
  assert reg.resolve(handle) == f"{path}#{adapters[0]}"
  assert f"{path}#{adapters[1]}" in reg.expert_handles()
  with pytest.raises(KeyError, match="holds no expert"):
    reg.resolve("mini32/adapters#nope")
  layer = expert_hub.ExpertLayer(handle, trainable=True, export_dirs=[packs])
  other = getattr(layer._module.pack, adapters[1])  # pylint: disable=protected-access
  own_ids = {id(v) for v in layer._module.variables}  # pylint: disable=protected-access
  other_own = [v for v in other.variables if id(v) not in own_ids]
  other_before = [v.numpy().copy() for v in other_own]
  images = keras.Input((32, 32, 3))
  model = keras.Model(images, keras.layers.Dense(3)(layer(images)))
  model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  before = [w.numpy().copy() for w in layer.trainable_weights]
  model.fit(np.random.RandomState(2).rand(16, 32, 32, 3).astype("float32"), np.arange(16) % 3, batch_size=8,
            epochs=1, verbose=0)
  unchanged = [w.name for b, w in zip(before, layer.trainable_weights) if np.array_equal(b, w.numpy())]
  assert not unchanged
  assert other_own and all(np.array_equal(b, v.numpy()) for b, v in zip(other_before, other_own))



def test_folded_standardization_stays_exact_after_training_through_the_module(export_dir, trained_workdir):
  from expert_hub.models import layers
  path = _module_paths(export_dir)["generalist"]
  module = hub.load(path)
  x = tf.constant(np.random.RandomState(3).rand(4, 32, 32, 3).astype("float32"))
  # Stored kernels are standardised once at export: inference does not recompute WS.
  kernel = [v for v in module.variables if v.name.startswith("root_conv/kernel")][0]
  np.testing.assert_allclose(kernel.numpy(), layers.standardize_kernel(kernel).numpy(), atol=1e-5)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.square(module(x, training=True)))
  for v, g in zip(module.trainable_variables, tape.gradient(loss, module.trainable_variables)):
    v.assign_sub(0.5 * g)
  assert bool(module.ws_refold_pending.numpy())
  # GroupNorm nets compute the same function in both modes, so inference must match the WS training path.
  inference = module(x, training=False).numpy()
  assert not bool(module.ws_refold_pending.numpy())  # re-folded in place
  np.testing.assert_allclose(inference, module(x, training=True).numpy(), atol=1e-4)
  folder = os.path.join(trained_workdir, "generalist")
  in_memory = upstream.model_from_info(upstream.read_model_info(folder), folder, with_head=False)
  export.export_module(in_memory, str(export_dir) + "_scratch", "u", "m", 1, {"kind": "full"})
  import shutil
  shutil.rmtree(str(export_dir) + "_scratch")
  conv = in_memory.get_layer("root_conv")
  assert conv.standardize is True  # exporting never changes the caller's training model



def test_published_hub_handles_resolve_through_the_hub_cache(export_dir, tmp_path, monkeypatch):
  import hashlib
  import shutil
  url = "https://tfhub.dev/google/experts/bit/r50x1/in21k/bird/1"
  assert registry.Registry([export_dir]).resolve(url) == url  # passed through untouched
  cache = tmp_path / "tfhub_cache"
  shutil.copytree(_module_paths(export_dir)["generalist"], cache / hashlib.sha1(url.encode()).hexdigest())
  monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
  module, path = loading.load_module(url, [export_dir])  # no network: tensorflow_hub finds its cache entry
  assert path.startswith(str(cache)) and module(tf.zeros([1, 32, 32, 3])).shape[0] == 1


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
