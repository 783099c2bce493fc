"""Guards that cannot be walked around: the op allowlist, complete manifests, and `.keras` files (issue 14, 5-7)."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from expert_hub.hub import export
from expert_hub.hub import layer as layer_lib
from expert_hub.hub import loading
from expert_hub.hub import registry as registry_lib
from expert_hub.hub import session as session_lib


def _reusable_module(path, body):
  """A minimal TF2 Reusable SavedModel whose __call__(images, training) runs `body(images, v)`."""
  root = tf.train.Checkpoint()
  v = tf.Variable(tf.ones([3, 4]))
  root.variables, root.trainable_variables, root.regularization_losses = [v], [v], []

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([], tf.bool)])
  def call(images, training):
    del training
    return body(images, v)

  root.__call__ = call
  tf.saved_model.save(root, path)
  return path


def _hijack_saver(path):
  """Rewrites saved_model.pb so that the saver_def's save node calls the module's __call__ function: a module
  marking its own callable function as "saver" to have it exempted from the allowlist."""
  sm = loading.read_saved_model_proto(path)
  mg = sm.meta_graphs[0]
  call = next(name for name in mg.object_graph_def.concrete_functions if "call" in name and "signature" not in name)
  save_node = mg.saver_def.save_tensor_name.split(":")[0]
  for node in mg.graph_def.node:
    if node.name == save_node:
      node.attr["f"].func.name = call
  with open(os.path.join(path, "saved_model.pb"), "wb") as f:
    f.write(sm.SerializeToString())
  return call


def test_a_callable_marked_as_saver_is_still_scanned(tmp_path):
  target = str(tmp_path / "pwned.txt")
  path = _reusable_module(str(tmp_path / "m"), lambda x, v: (tf.io.write_file(target, "x"),
                                                             tf.reduce_mean(x, [1, 2]) @ v)[1])
  call = _hijack_saver(path)
  bad = loading.disallowed_ops(path)
  assert call in bad.get("WriteFile", []), bad  # exempted entirely by the old saver_def rule
  with pytest.raises(loading.UnsafeModuleError, match="WriteFile"):
    loading.check_ops(path, trusted_dirs=[])
  with pytest.raises(loading.UnsafeModuleError, match="no command-line flag"):
    session_lib.ModuleSession(registry_lib.Registry([])).module(path)
  assert not os.path.exists(target)


def test_our_exports_pass_the_allowlist_even_untrusted(export_dir):
  for entry in registry_lib.Registry([export_dir]).entries():
    assert loading.disallowed_ops(entry.path) == {}, entry.path
    loading.check_ops(entry.path, trusted_dirs=[])


def _copy_module(export_dir, tmp_path):
  entry = registry_lib.Registry([export_dir]).lookup("generalist")
  dst = str(tmp_path / "world" / "generalist" / "1")
  shutil.copytree(entry.path, dst)
  return dst


def _rewrite_manifest(path, change):
  meta = os.path.join(path, export.METADATA_FILE)
  info = json.load(open(meta))
  change(info["sha256"])
  with open(meta, "w") as f:
    json.dump(info, f)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update({"../../../etc/passwd": "0" * 64}), "relative paths inside the module"),
    (lambda m: m.update({"/dev/zero": "0" * 64}), "relative paths inside the module"),
    (lambda m: m.update({"variables/../../x": "0" * 64}), "relative paths inside the module"),
    (lambda m: m.clear(), "has no sha256 manifest"),
    (lambda m: m.pop("saved_model.pb"), "does not list saved_model.pb"),
])
def test_a_manifest_covers_the_module_and_nothing_outside_it(export_dir, tmp_path, change, message):
  path = _copy_module(export_dir, tmp_path)
  _rewrite_manifest(path, change)
  with pytest.raises(ValueError, match=message):
    loading.verify_manifest(path)


def test_files_outside_the_manifest_and_links_are_refused(export_dir, tmp_path):
  path = _copy_module(export_dir, tmp_path)
  loading.verify_manifest(path)  # the copy is intact
  with open(os.path.join(path, "variables", "extra.bin"), "wb") as f:
    f.write(b"added later")
  with pytest.raises(ValueError, match=r"does not list: \['variables/extra.bin'\]"):
    loading.verify_manifest(path)
  os.remove(os.path.join(path, "variables", "extra.bin"))
  pb = os.path.join(path, "saved_model.pb")
  elsewhere = str(tmp_path / "elsewhere.pb")
  shutil.move(pb, elsewhere)
  os.symlink(elsewhere, pb)  # same bytes, so the sha256 alone would pass
  with pytest.raises(ValueError, match="'saved_model.pb' is a symbolic link"):
    loading.verify_manifest(path)


def test_a_module_without_expert_json_is_not_trusted_by_location(tmp_path):
  """A folder inside the export dirs without expert.json has no manifest to verify: its ops are checked."""
  root = str(tmp_path / "exports")
  path = _reusable_module(os.path.join(root, "up", "evil", "1"), lambda x, v: tf.math.cumprod(
      tf.reduce_mean(x, [1, 2]) @ v, axis=1))
  with pytest.raises(loading.UnsafeModuleError, match="Cumprod"):
    loading.check_ops(path, trusted_dirs=[root])


def test_a_keras_file_cannot_allow_unsafe_ops_or_trust_its_own_dirs(tmp_path):
  root = str(tmp_path / "exports")
  path = _reusable_module(str(tmp_path / "cumprod"), lambda x, v: tf.math.cumprod(tf.reduce_mean(x, [1, 2]) @ v,
                                                                                  axis=1))
  images = keras.Input((8, 8, 3))
  model = keras.Model(images, layer_lib.ExpertLayer(path, allow_unsafe_ops=True, export_dirs=[root])(images))
  file = str(tmp_path / "model.keras")
  model.save(file)
  config = json.dumps(model.get_config())
  assert "allow_unsafe_ops" not in config  # never written
  with pytest.raises(loading.UnsafeModuleError, match="Cumprod"):
    keras.saving.load_model(file)
  with layer_lib.ExpertLayer.loading(allow_unsafe_ops_for=[path]):  # the caller says it again
    restored = keras.saving.load_model(file)
  x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(restored(x), model(x), rtol=1e-6)
  # A config that does carry the flag (an old or hand-made file) is not obeyed.
  layer_config = dict(model.layers[-1].get_config(), allow_unsafe_ops=True)
  with pytest.raises(loading.UnsafeModuleError, match="Cumprod"):
    layer_lib.ExpertLayer.from_config(layer_config)
