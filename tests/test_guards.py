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
from expert_hub.hub import trust


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
  with pytest.raises(loading.UnsafeModuleError, match="No command-line flag skips this check") as raised:
    session_lib.ModuleSession(registry_lib.Registry([])).module(path)
  assert not os.path.exists(target)
  assert "--allow_unsafe_ops" not in str(raised.value) and "ExpertLayer.loading" in str(raised.value)


def test_no_program_defines_an_allow_unsafe_ops_flag():
  """The allowlist error tells command-line users that no flag skips it; that stays true only while no program
  defines one (a program that adds it must change the message)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  programs = [os.path.join(root, d, f) for d in ("binaries", "export") for f in os.listdir(os.path.join(root, d))
              if f.endswith(".py")] + [os.path.join(root, "expert_hub", "flags_common.py")]
  assert len(programs) > 10
  defining = [p for p in programs if "allow_unsafe_ops" in open(p).read()]
  assert not defining, defining


def _file_writing_function(target):
  """The FunctionDef of a function that writes a checkpoint to `target` with SaveV2 (one of SAVER_OPS): a file
  write that an exemption for "saver" functions would let through."""

  @tf.function(input_signature=[])
  def write():
    op = tf.raw_ops.SaveV2(prefix=tf.constant(target), tensor_names=tf.constant(["t"]),
                           shape_and_slices=tf.constant([""]), tensors=[tf.constant(1.0)])
    with tf.control_dependencies([op]):
      return tf.constant(0)

  return write.get_concrete_function().function_def


def _inject_saver_reachable(path, fdef):
  """Adds `fdef` to saved_model.pb's library, reachable from the saver_def's save node (through a list-valued
  function attribute, which TF2 loaders ignore): by the old rule, part of the module's "saver". Returns the
  parsed SavedModel, its meta graph and the function's name, to edit further and `_write`."""
  sm = loading.read_saved_model_proto(path)
  mg = sm.meta_graphs[0]
  mg.graph_def.library.function.add().CopyFrom(fdef)
  save_node = mg.saver_def.save_tensor_name.split(":")[0]
  next(n for n in mg.graph_def.node if n.name == save_node).attr["_saver_also"].list.func.add().name = (
      fdef.signature.name)
  return sm, mg, fdef.signature.name


def _write(path, sm):
  with open(os.path.join(path, "saved_model.pb"), "wb") as f:
    f.write(sm.SerializeToString())


def _call_function(mg):
  return next(n for n in mg.object_graph_def.concrete_functions if "call" in n and "signature" not in n)


def _linear(x, v):
  return tf.reduce_mean(x, [1, 2]) @ v


@pytest.mark.parametrize("how", ["registered_gradient", "gradient", "api_implements", "nested_attr"])
def test_functions_tensorflow_runs_for_a_caller_are_scanned_even_if_marked_saver(tmp_path, how):
  """Gradient functions (run by tf.GradientTape when fine-tuning), functions TensorFlow may swap in for another
  and functions passed inside another's attributes all run for a caller: none is exempt as "saver"."""
  path = _reusable_module(str(tmp_path / "m"), _linear)
  assert loading.disallowed_ops(path) == {}
  sm, mg, write = _inject_saver_reachable(path, _file_writing_function(str(tmp_path / "pwned")))
  _write(path, sm)
  assert loading.disallowed_ops(path) == {}  # nothing a load runs reaches it: like the saver's own functions
  library = mg.graph_def.library
  if how == "registered_gradient":  # what tf.custom_gradient saves; the loader registers it with TensorFlow
    library.registered_gradients.add(gradient_func=write, registered_op_type="CustomGradient-1")
  elif how == "gradient":
    library.gradient.add(function_name=_call_function(mg), gradient_func=write)
  elif how == "api_implements":
    next(f for f in library.function if f.signature.name == write).attr["api_implements"].s = b"linear"
  else:  # f={name: call, attr: {inner: write}}: a function handed to a callable function as an attribute
    call = next(f for f in library.function if f.signature.name == _call_function(mg))
    carrier = call.node_def.add(name="carrier", op="NoOp")
    carrier.attr["f"].func.name = _call_function(mg)
    carrier.attr["f"].func.attr["inner"].func.name = write
  _write(path, sm)
  assert write in loading.disallowed_ops(path).get("SaveV2", [])
  with pytest.raises(loading.UnsafeModuleError, match="SaveV2"):
    loading.check_ops(path, trusted_dirs=[])


def test_a_saved_model_for_the_tf1_loader_gets_no_saver_exemption(tmp_path):
  """Without an object graph, tf.saved_model.load takes TensorFlow's TF1 path (load_v1_in_v2), which runs the
  saver_def's restore op while loading: a module naming its own file writer as restore op writes on load."""
  target = str(tmp_path / "pwned")
  path = _reusable_module(str(tmp_path / "m"), _linear)
  sm, mg, write = _inject_saver_reachable(path, _file_writing_function(target))
  mg.ClearField("object_graph_def")
  restore = next(n for n in mg.graph_def.node if n.name == mg.saver_def.restore_op_name)
  call = mg.graph_def.node.add()
  call.CopyFrom(restore)  # a StatefulPartitionedCall with the attributes TensorFlow expects
  call.name, call.attr["f"].func.name = "hijacked_call", write
  del call.input[:]
  call.attr["Tin"].list.Clear()
  call.attr["Tout"].list.Clear()
  call.attr["Tout"].list.type.append(tf.int32.as_datatype_enum)
  hijacked = mg.graph_def.node.add(name="hijacked_restore", op="Identity", input=["hijacked_call"])
  hijacked.attr["T"].type = tf.int32.as_datatype_enum
  for name in (write, restore.attr["f"].func.name):  # the old rule followed these into "saver" functions
    hijacked.attr["_saver_also"].list.func.add().name = name
  mg.saver_def.restore_op_name = "hijacked_restore"
  _write(path, sm)
  with pytest.raises(loading.UnsafeModuleError, match="SaveV2"):
    loading.check_ops(path, trusted_dirs=[])
  assert not os.path.exists(target + ".index")
  tf.saved_model.load(path)  # what allow_unsafe_ops=True would do: the threat is real
  assert os.path.exists(target + ".index")


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


def test_listed_files_that_are_missing_changed_or_special_are_named(export_dir, tmp_path):
  path = _copy_module(export_dir, tmp_path)
  index = os.path.join(path, "variables", "variables.index")
  original = open(index, "rb").read()
  with open(index, "ab") as f:
    f.write(b"x")
  with pytest.raises(ValueError, match=r"'variables/variables.index' does not match its sha256"):
    loading.verify_manifest(path)
  os.remove(index)
  with pytest.raises(ValueError, match=r"missing file 'variables/variables.index'"):
    loading.verify_manifest(path)
  os.symlink("/dev/zero", index)  # listed, and a hash of it would never end
  with pytest.raises(ValueError, match="'variables/variables.index' is a symbolic link"):
    loading.verify_manifest(path)
  os.remove(index)
  os.mkfifo(index)  # opening a FIFO for its hash would wait for a writer forever
  with pytest.raises(ValueError, match="'variables/variables.index' is not a regular file"):
    loading.verify_manifest(path)
  os.remove(index)
  with open(index, "wb") as f:
    f.write(original)
  loading.verify_manifest(path)


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_published_module_with_a_link_is_not_trusted(tmp_path, link):
  """Trust on first use hashes regular files only: a link (to a file elsewhere, or a linked variables/) is
  refused by name, not followed (or, for a folder, silently left out of the record)."""
  folder, elsewhere = tmp_path / "cache" / "bird", tmp_path / "elsewhere"
  (folder / "variables").mkdir(parents=True)
  (elsewhere / "variables").mkdir(parents=True)
  (folder / "saved_model.pb").write_bytes(b"graph")
  (elsewhere / "stolen").write_bytes(b"a file the module should not stand for")
  if link == "file":
    os.symlink(elsewhere / "stolen", folder / "variables" / "variables.index")
  else:
    os.rmdir(folder / "variables")
    os.symlink(elsewhere / "variables", folder / "variables")
  trust_path = str(tmp_path / "trust.json")
  with pytest.raises(trust.UntrustedModuleError, match="'variables.*' is a symbolic link"):
    trust.record(str(folder), "bit-in21k/bird", trust_path)
  assert not os.path.exists(trust_path)


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
  other = _reusable_module(str(tmp_path / "other"), _linear)
  with pytest.raises(loading.UnsafeModuleError, match="Cumprod"):
    with layer_lib.ExpertLayer.loading(allow_unsafe_ops_for=[other]):  # allowing one module allows only it
      keras.saving.load_model(file)
  with layer_lib.ExpertLayer.loading(allow_unsafe_ops_for=[path]):  # the caller says it again
    restored = keras.saving.load_model(file)
  os.symlink(path, str(tmp_path / "same_module"))
  with layer_lib.ExpertLayer.loading(allow_unsafe_ops_for=[str(tmp_path / "same_module")]):  # by its folder
    keras.saving.load_model(file)
  with pytest.raises(loading.UnsafeModuleError, match="Cumprod"):  # the allowance ends with the block
    keras.saving.load_model(file)
  x = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(restored(x), model(x), rtol=1e-6)
  # A config that does carry the flag (an old or hand-made file) is not obeyed.
  layer_config = dict(model.layers[-1].get_config(), allow_unsafe_ops=True)
  with pytest.raises(loading.UnsafeModuleError, match="Cumprod"):
    layer_lib.ExpertLayer.from_config(layer_config)
