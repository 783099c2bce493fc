"""The published BiT experts by name, offline: a pre-filled kagglehub cache of small stand-in SavedModels at the
catalogue's cache paths; resolve, select, fine-tune, tampering refused, the offline error; model cards.

No test reaches the network: every test runs with HTTP(S) proxies pointing at a closed loopback port and
kagglehub's API environment set to localhost, so a download attempt fails at once, as it would offline.
"""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import run_python
from expert_hub import configs
from expert_hub.hub import (catalogue, export, layer as layer_lib, loading, model_card, published, registry,
                            session as session_lib, trust)
from expert_hub.selection import scoring
from expert_hub.tasks import ArrayTask
from expert_hub.transfer import finetune

COLLECTION_NAMES = """artifact organism animal chordate vertebrate plant device nutrient structure mammal placental
covering bird container commodity tree clothing implement herb conveyance nutriment invertebrate vehicle
spermatophyte carnivore angiosperm equipment flower instrument foodstuff arthropod entity physical_entity object
whole living_thing instrumentality vascular_plant matter substance woody_plant abstraction consumer_goods solid food
natural_object relation part""".split()  # tensorflow/tfhub.dev: assets/docs/google/collections/experts/bit/1.md
DEAD_PROXY = "http://127.0.0.1:9"
OFFLINE_ENV = {"HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "http_proxy": DEAD_PROXY,
               "https_proxy": DEAD_PROXY, "NO_PROXY": "", "no_proxy": "", "KAGGLE_API_ENVIRONMENT": "TEST"}
DIM = 16


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
  """Empty kagglehub and tensorflow_hub caches under tmp_path, no trust-file override, no network."""
  env = dict(OFFLINE_ENV, KAGGLEHUB_CACHE=str(tmp_path / "kagglehub"), TFHUB_CACHE_DIR=str(tmp_path / "tfhub"))
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  monkeypatch.delenv(trust.TRUST_FILE_ENV, raising=False)
  return env


def _save_stand_in(folder, informative=True, seed=0, unsafe=False):
  """A tiny Reusable SavedModel shaped like a published feature vector (no expert.json): images [B, H, W, 3] ->
  [B, DIM]. Informative ones project each image's mean colour; the others its per-channel spread, which is the
  same for every class of a colour task."""
  rng = np.random.default_rng(seed)
  kernel = tf.Variable(rng.normal(size=(3, DIM)).astype(np.float32), name="kernel")
  bias = tf.Variable(rng.normal(size=(DIM,)).astype(np.float32), name="bias")

  def call(images, training=False):
    stats = tf.reduce_mean(images, [1, 2]) if informative else tf.math.reduce_std(images, [1, 2])
    if unsafe:
      tf.io.write_file("/tmp/expert_hub_should_not_exist", "x")
    return tf.matmul(stats, kernel) + bias

  fn = tf.function(call)
  spec = tf.TensorSpec([None, None, None, 3], tf.float32)
  for training in (False, True):
    fn.get_concrete_function(spec, training=training)
  obj = tf.train.Checkpoint()
  obj.__call__ = fn
  obj.variables = [kernel, bias]
  obj.trainable_variables = [kernel, bias]
  obj.regularization_losses = []
  tf.saved_model.save(obj, folder)
  return folder


def _prefill(name, source):
  """Copies a stand-in to where kagglehub caches catalogue module `name`, with kagglehub's completion marker."""
  entry = catalogue.load_catalogue().lookup(f"bit-in21k/{name}")
  folder, marker = published.kagglehub_cache_dir(entry.kaggle_handle)
  shutil.copytree(source, folder)
  open(marker, "w").close()
  return folder


@pytest.fixture
def stand_ins(tmp_path):
  return {"good": _save_stand_in(str(tmp_path / "stand_in_good"), informative=True),
          "flat": _save_stand_in(str(tmp_path / "stand_in_flat"), informative=False, seed=1)}


def _colour_images(n, size, seed):
  rng = np.random.default_rng(seed)
  centres = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220]])
  labels = np.arange(n) % 3
  noise = rng.normal(0, 30, (n, size, size, 3))
  return np.clip(centres[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels


def test_catalogue_lists_the_48_experts_and_the_generalist():
  cat = catalogue.load_catalogue()
  experts = [m for m in cat.modules() if m.kind == "full"]
  assert [m.name for m in experts] == COLLECTION_NAMES and len(cat) == 49
  assert cat.expert_handles() == [f"bit-in21k/{n}" for n in COLLECTION_NAMES]
  generalist = cat.lookup("bit-in21k/generalist")
  assert generalist.tfhub_handle == "https://tfhub.dev/google/bit/m-r50x1/1"
  assert generalist.kaggle_handle == "google/bit/tensorFlow2/m-r50x1/1"
  from kagglehub import handle as kaggle_handle  # pylint: disable=g-import-not-at-top
  for m in experts:
    assert m.tfhub_handle == f"https://tfhub.dev/google/experts/bit/r50x1/in21k/{m.name}/1"
    assert m.kaggle_handle == f"google/experts-bit/tensorFlow2/r50x1-in21k-{m.name.replace('_', '-')}/1"
    parsed = kaggle_handle.parse_model_handle(m.kaggle_handle)  # kagglehub accepts it as a versioned handle
    assert (parsed.owner, parsed.model, parsed.version) == ("google", "experts-bit", 1)
    assert m.wordnet_node == m.name and m.feature_dim == 2048
    assert m.input["range"] == [0.0, 1.0] and m.input["dtype"] == "float32" and not m.input["logits"]
  assert len({m.kaggle_handle for m in cat.modules()}) == 49


def test_names_resolve_the_collection_expands_and_own_modules_win(tmp_path):
  reg = registry.Registry([str(tmp_path / "export")])
  assert reg.resolve("bit-in21k/bird") == "https://tfhub.dev/google/experts/bit/r50x1/in21k/bird/1"
  assert reg.resolve("bit-in21k/bird/1") == reg.resolve("bit-in21k/bird")
  assert reg.resolve("bit-in21k/generalist") == "https://tfhub.dev/google/bit/m-r50x1/1"
  with pytest.raises(KeyError, match=r"nearest in the 'bit-in21k' catalogue: \['bit-in21k/bird'"):
    reg.resolve("bit-in21k/brid")
  with pytest.raises(KeyError, match="whole collection of 48 experts"):
    reg.resolve("bit-in21k")
  expanded = reg.expand_handles(["bit-in21k/bird", "bit-in21k", "/some/path"])
  assert expanded[0] == "bit-in21k/bird" and len(expanded) == 49 and expanded[-1] == "/some/path"
  assert expanded[1:-1] == [h for h in catalogue.load_catalogue().expert_handles() if h != "bit-in21k/bird"]
  assert not os.path.exists(tmp_path / "kagglehub")  # naming and listing download nothing
  # A module of the user's own export dir with the same name wins over the catalogue.
  own = tmp_path / "export" / "bit-in21k" / "bird" / "1"
  own.mkdir(parents=True)
  (own / export.METADATA_FILE).write_text(json.dumps({"name": "bird", "upstream": "bit-in21k", "kind": "full"}))
  reg = registry.Registry([str(tmp_path / "export")])
  assert reg.resolve("bit-in21k/bird") == str(own)
  assert reg.resolve("bit-in21k/flower").startswith("https://tfhub.dev/")
  listed = registry.list_experts([str(tmp_path / "export")], published=True)
  assert len(listed) == 49  # 48 catalogue entries + the user's bird, which shadows the catalogue's
  assert not [e for e in listed if e.get("handle") == "bit-in21k/bird"]
  assert [e["path"] for e in listed if (e["upstream"], e["name"]) == ("bit-in21k", "bird")] == [str(own)]
  assert registry.list_experts([str(tmp_path / "export")]) == [dict(json.loads((own / "expert.json").read_text()),
                                                                     path=str(own))]


def test_the_prefilled_cache_is_where_kagglehub_looks(stand_ins):
  import kagglehub  # pylint: disable=g-import-not-at-top
  from kagglehub import cache as kaggle_cache, handle as kaggle_handle  # pylint: disable=g-import-not-at-top
  folder = _prefill("bird", stand_ins["good"])
  h = kaggle_handle.parse_model_handle(catalogue.load_catalogue().lookup("bit-in21k/bird").kaggle_handle)
  assert kaggle_cache.get_cached_path(h) == folder
  assert kaggle_cache.Cache().load_from_cache(h) == folder  # kagglehub's own cache check sees the marker
  # kagglehub itself returns the pre-filled folder, offline.
  assert kagglehub.model_download(catalogue.load_catalogue().lookup("bit-in21k/bird").kaggle_handle) == folder


def test_expert_layer_by_name_from_the_cache_trusted_on_first_use(stand_ins, tmp_path):
  folder = _prefill("bird", stand_ins["good"])
  images = np.random.default_rng(0).random((4, 24, 24, 3)).astype(np.float32)
  layer = layer_lib.ExpertLayer("bit-in21k/bird", export_dirs=[str(tmp_path / "export")])
  assert layer.module_path == folder
  expected = tf.saved_model.load(stand_ins["good"])(tf.constant(images)).numpy()
  np.testing.assert_allclose(np.asarray(layer(images)), expected, rtol=1e-5)
  trust_file = os.path.join(published.kagglehub_cache_root(), trust.TRUST_FILE_NAME)
  record = json.load(open(trust_file))["modules"][os.path.realpath(folder)]
  assert record["handle"] == "bit-in21k/bird" and record["source"] == "kagglehub cache"
  assert set(record["sha256"]) == set(trust.file_hashes(folder)) and "saved_model.pb" in record["sha256"]
  # A model using the layer saves and loads back by name (the handle is in its config).
  inputs = keras.Input((24, 24, 3))
  model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
  model.save(tmp_path / "m.keras")
  reloaded = keras.models.load_model(tmp_path / "m.keras")
  np.testing.assert_allclose(np.asarray(reloaded(images)), np.asarray(model(images)), rtol=1e-5)


def test_select_expert_over_the_whole_collection_for_an_image_folder(stand_ins, tmp_path, offline):
  """The README command: select_expert --experts=bit-in21k --task=folder:PATH, on 48 cached stand-ins."""
  for name in COLLECTION_NAMES:
    _prefill(name, stand_ins["good" if name == "flower" else "flat"])
  images, labels = _colour_images(60, 16, seed=0)
  for i, (im, y) in enumerate(zip(images, labels)):
    os.makedirs(tmp_path / "task" / "train" / f"c{y}", exist_ok=True)
    Image.fromarray(im).save(tmp_path / "task" / "train" / f"c{y}" / f"{i}.png")
  out = tmp_path / "sel"
  proc = run_python(["binaries/select_expert.py", "--config=smoke", "--experts=bit-in21k",
                     f"--task=folder:{tmp_path / 'task'}", "--split=train", "--image_size=16", "--proxy=knn,nce",
                     f"--workdir={out}"], env=offline)
  result = json.load(open(out / "selection.json"))
  assert result["selected"] == "bit-in21k/flower", proc.stdout[-2000:]
  ranking = result["ranking"]
  assert len(ranking) == 48 and {r["expert"] for r in ranking} == {f"bit-in21k/{n}" for n in COLLECTION_NAMES}
  assert ranking[0]["score"] > 0.9 and ranking[1]["score"] < 0.7  # the informative one, by a wide margin
  skipped = result["proxies"]["nce"]["skipped"]
  assert len(skipped) == 48 and all(scoring.NO_LOGITS in why for why in skipped.values())
  assert "selected (knn): bit-in21k/flower" in proc.stdout


def test_finetune_a_published_expert_through_expert_layer(stand_ins, tmp_path):
  folder = _prefill("flower", stand_ins["good"])
  train = _colour_images(96, 16, seed=1)
  test = _colour_images(60, 16, seed=2)
  task = ArrayTask({"train800val200": train, "test": test}, name="colours3", num_classes=3)
  session = session_lib.ModuleSession(registry.Registry([str(tmp_path / "export")]))
  cfg = configs.FinetuneConfig(batch_size=32, base_lr=1.5, steps=60, resize=20, crop=16)
  result = finetune.Finetuner(task, cfg, session=session).run("bit-in21k/flower")
  assert result["expert"] == "bit-in21k/flower" and result["steps"] == 60
  assert result["test_accuracy"] > 0.8, result  # chance: 1/3
  module, path = session.module("bit-in21k/flower")
  assert path == folder
  saved = tf.saved_model.load(stand_ins["good"])
  # The next user of the session gets the module's saved weights back, not the fine-tuned ones.
  np.testing.assert_allclose(module.variables[0].numpy(), saved.variables[0].numpy())


def test_a_changed_cached_file_is_refused_and_named(stand_ins, tmp_path):
  folder = _prefill("bird", stand_ins["good"])
  export_dirs = [str(tmp_path / "export")]
  session_lib.ModuleSession.for_export_dirs(export_dirs).module("bit-in21k/bird")  # first use: recorded
  data = next(f for f in os.listdir(os.path.join(folder, "variables")) if f.startswith("variables.data"))
  with open(os.path.join(folder, "variables", data), "ab") as f:
    f.write(b"\0")
  with pytest.raises(trust.UntrustedModuleError, match=re.escape(f"changed: ['variables/{data}']")):
    session_lib.ModuleSession.for_export_dirs(export_dirs).module("bit-in21k/bird")
  with pytest.raises(trust.UntrustedModuleError, match="bit-in21k/bird"):
    loading.load_module("https://tfhub.dev/google/experts/bit/r50x1/in21k/bird/1", export_dirs)
  os.remove(os.path.join(folder, "saved_model.pb"))
  open(os.path.join(folder, "extra.bin"), "w").write("x")
  with pytest.raises(trust.UntrustedModuleError, match=r"missing: \['saved_model.pb'\]; added: \['extra.bin'\]"):
    session_lib.ModuleSession.for_export_dirs(export_dirs).module("bit-in21k/bird")


def test_any_kaggle_handle_loads_from_the_kagglehub_cache(stand_ins, tmp_path):
  folder, marker = published.kagglehub_cache_dir("someone/model/tensorFlow2/small/3")
  shutil.copytree(stand_ins["good"], folder)
  open(marker, "w").close()
  module, path = loading.load_module("kaggle://someone/model/tensorFlow2/small/3", [str(tmp_path / "export")])
  assert path == folder and module(tf.zeros([2, 8, 8, 3])).shape == (2, DIM)
  with pytest.raises(ValueError, match="'owner/model/framework/variation/version'"):
    loading.load_module("kaggle://someone/model", [str(tmp_path / "export")])


def test_the_op_allowlist_applies_to_published_modules(tmp_path):
  _prefill("tree", _save_stand_in(str(tmp_path / "unsafe"), unsafe=True))
  session = session_lib.ModuleSession.for_export_dirs([str(tmp_path / "export")])
  with pytest.raises(loading.UnsafeModuleError, match="WriteFile"):
    session.module("bit-in21k/tree")
  module, _ = session.module("bit-in21k/tree", allow_unsafe_ops=True)  # the caller's explicit choice
  assert module.variables[0].shape == (3, DIM)


def test_no_cache_and_no_network_names_the_handle_both_sources_and_the_folder(stand_ins, tmp_path):
  entry = catalogue.load_catalogue().lookup("bit-in21k/bird")
  folder, marker = published.kagglehub_cache_dir(entry.kaggle_handle)
  with pytest.raises(published.PublishedModuleUnavailable) as raised:
    layer_lib.ExpertLayer("bit-in21k/bird", export_dirs=[str(tmp_path / "export")])
  message = str(raised.value)
  for part in ("'bit-in21k/bird'", f"kagglehub.model_download('{entry.kaggle_handle}')",
               f"tensorflow_hub.resolve('{entry.tfhub_handle}')", folder, marker, "KAGGLEHUB_CACHE"):
    assert part in message, (part, message)
  assert message.count("Error") >= 2  # what each source said
  # Following the message's instructions (copy the files, create the marker) makes it load, still offline.
  shutil.copytree(stand_ins["good"], folder)
  open(marker, "w").close()
  layer = layer_lib.ExpertLayer("bit-in21k/bird", export_dirs=[str(tmp_path / "export")])
  assert layer.module_path == folder


def _tiny_backbone():
  images = keras.Input((None, None, 3))
  return keras.Model(images, keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(images)))


def test_every_export_gets_a_model_card_generated_from_expert_json(tmp_path):
  metadata = {"kind": "full", "node": "animals/birds", "labels": [3, 4, 5], "label_names": ["owl", "heron", "wren"],
              "image_size": 32, "num_images": 1234,
              "train": {"steps": 10, "seconds": 4.2, "eval_precision_at_1": 0.712,
                        "generalist_eval_precision_at_1": 0.655}}
  path = export.export_module(_tiny_backbone(), str(tmp_path), "mini32", "birds", 1, metadata)
  card_path = os.path.join(path, model_card.MODEL_CARD_FILE)
  card = open(card_path).read()
  info = export.verify_module(path)  # the card is in the manifest, like every file but expert.json
  assert model_card.MODEL_CARD_FILE in info["sha256"] and "saved_model.pb" in info["sha256"]
  for part in ("# mini32/birds/1", "a full expert", "`animals/birds`", "`owl`, `heron`, `wren`", "1,234 images",
               "| this module | 71.2% |", "| the generalist, on the same labels | 65.5% |",
               "float32 [batch, height, width, 3] in [0, 1]", "[batch, 8] features", "hub.load(path)",
               "hub.KerasLayer(path, trainable=True)", "keras.layers.TFSMLayer(path", 'ExpertLayer("mini32/birds/1"'):
    assert part in card, (part, card)
  assert model_card.render(info) == card  # generated from expert.json alone
  with open(card_path, "a") as f:
    f.write("local notes\n")
  with pytest.raises(ValueError, match="README.md"):
    export.verify_module(path)  # an edited card is a modified file
  assert open(model_card.write_model_card(path)).read() == card  # it regenerates from expert.json, byte for byte
  export.verify_module(path)


def test_a_pack_card_lists_its_experts():
  info = {"name": "adapters", "upstream": "mini32", "version": 1, "kind": "pack", "feature_dim": 64,
          "embed_all": {"experts": ["birds_adapter", "cars_adapter"]},
          "experts": {"birds_adapter": {"kind": "adapter", "node": "animals/birds", "labels": [1, 2],
                                        "num_own_params": 5000,
                                        "train": {"eval_precision_at_1": 0.5, "generalist_eval_precision_at_1": 0.4}},
                      "cars_adapter": {"kind": "adapter", "node": "vehicles/cars", "labels": [7],
                                       "num_own_params": 5000}}}
  card = model_card.render(info)
  assert "## Experts (2)" in card and '"mini32/adapters/1#<expert>"' in card
  assert "| `birds_adapter` | adapter | `animals/birds` | 2 | 5,000 | 50.0% (40.0%) |" in card
  assert "| `cars_adapter` | adapter | `vehicles/cars` | 1 | 5,000 | not recorded |" in card
  assert "module = hub.load(path).birds_adapter" in card and 'ExpertLayer("mini32/adapters/1#birds_adapter"' in card


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
