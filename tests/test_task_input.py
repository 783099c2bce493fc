"""Hostile or careless task input: bad labels and pixels, NaN features, messy image folders, huge photos."""

import logging
import os
import pickle
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from expert_hub import configs
from expert_hub.data import preprocessing
from expert_hub.selection import knn
from expert_hub.selection import proxies
from expert_hub.selection import proxy_registry
from expert_hub.tasks import ArrayTask, FolderTask, Task, get_task
from expert_hub.tasks import base
from expert_hub.transfer import finetune, hyperrule


def _images(n=4, size=8, dtype=np.uint8):
  return np.zeros([n, size, size, 3], dtype)


# ------------------------------------------------------------------------------------------- ArrayTask input
def test_array_task_names_labels_outside_its_classes():
  with pytest.raises(ValueError, match=r"label 3 at index 2 is not below num_classes=3 .*\[0, 3\)"):
    ArrayTask({"train": (_images(), np.array([0, 1, 3, 2]))}, num_classes=3)
  with pytest.raises(ValueError, match=r"label -1 at index 1 is negative"):
    ArrayTask({"train": (_images(), np.array([0, -1, 1, 2]))})
  with pytest.raises(ValueError, match=r"dtype float64 \(e\.g\. 1\.5 at index 1\)"):
    ArrayTask({"train": (_images(), np.array([0, 1.5, 1, 0]))})
  with pytest.raises(ValueError, match=r"dtype <U3 \(e\.g\. 'cat' at index 0\)"):
    ArrayTask({"train": (_images(), np.array(["cat", "dog", "cat", "dog"]))})
  # num_classes=0 is not "infer it": a number that cannot hold two classes is refused.
  for bad in (0, 1, 2.0, True):
    with pytest.raises(ValueError, match=f"num_classes={bad!r}; expected an integer of at least 2"):
      ArrayTask({"train": (_images(), np.array([0, 1, 0, 1]))}, num_classes=bad)
  # A label valid in one split but beyond num_classes in another names that split.
  with pytest.raises(ValueError, match="split 'test': label 5"):
    ArrayTask({"train": (_images(), np.array([0, 1, 0, 1])), "test": (_images(), np.array([0, 5, 0, 1]))},
              num_classes=2)


def test_array_task_refuses_mis_scaled_pixels():
  with pytest.raises(ValueError, match=r"values in \[0, 255\] \(0-255 floats\? divide by 255"):
    ArrayTask({"train": (np.linspace(0, 255, 4 * 8 * 8 * 3).reshape(4, 8, 8, 3), np.arange(4))})
  with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
    ArrayTask({"train": (np.full([4, 8, 8, 3], -1.0, np.float32) + np.eye(8)[None, :, :, None] * 2,
                         np.arange(4))})
  with pytest.raises(ValueError, match="dtype uint16 .*expected uint8 in \\[0, 255\\] or float in \\[0, 1\\]"):
    ArrayTask({"train": (_images(dtype=np.uint16), np.arange(4))})
  with pytest.raises(ValueError, match="dtype int64 \\(values 0-255\\? convert with .astype\\(np.uint8\\)"):
    ArrayTask({"train": (_images(dtype=np.int64), np.arange(4))})
  nan = _images(dtype=np.float32)
  nan[2, 1, 1, 0] = np.nan
  with pytest.raises(ValueError, match="contain NaN"):
    ArrayTask({"train": (nan, np.arange(4))})
  with pytest.raises(ValueError, match=r"shape \(4, 8, 8\) \(rank 3\)"):
    ArrayTask({"train": (np.zeros([4, 8, 8], np.uint8), np.arange(4))})
  with pytest.raises(ValueError, match="2 channels"):
    ArrayTask({"train": (np.zeros([4, 8, 8, 2], np.uint8), np.arange(4))})
  with pytest.raises(ValueError, match="has no images"):
    ArrayTask({"train": (np.zeros([0, 8, 8, 3], np.uint8), np.zeros([0], np.int64))}, num_classes=2)
  # What is allowed: uint8, and float in [0, 1] of any float width.
  for images in (_images(), _images(dtype=np.float64) + 1.0, _images(dtype=np.float16)):
    assert ArrayTask({"train": (images, np.arange(4))}).num_classes == 4
  # The shared preprocessing refuses integer pixels it would otherwise cast unscaled.
  with pytest.raises(ValueError, match="dtype uint16"):
    preprocessing.to_float_image(np.zeros([4, 4, 3], np.uint16))


class _BadLabels(Task):
  """A task whose source yields a label its num_classes does not cover (a TFDS split with -1 labels, say)."""
  name, num_classes = "bad_labels", 3

  def _load(self, split):
    return tf.data.Dataset.from_tensor_slices((np.zeros([3, 4, 4, 3], np.uint8), np.array([0, 7, 1])))


def test_every_task_checks_the_labels_it_yields():
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"Task bad_labels, split test: a label is outside \[0, 3\):\] \[7\]"):
    list(_BadLabels().load("test"))
  with pytest.raises(ValueError, match=r"Task 'bad_labels' split 'test': label 7 at index 1 is not below "
                                       "num_classes=3"):
    base.load_arrays(_BadLabels(), "test")
  with pytest.raises(ValueError, match="label 7 at index 1"):
    _BadLabels().arrays("test")


# ------------------------------------------------------------------------------------------- NaN / Inf features
def _proxy_inputs(bad):
  rng = np.random.default_rng(0)
  labels = np.arange(12) % 3
  features = rng.standard_normal((12, 5))
  logits = rng.standard_normal((12, 4))
  fields = {"features": features, "logits": logits, "generalist_logits": logits.copy()}
  fields[bad] = fields[bad].copy()
  fields[bad][4, 2] = np.nan
  fields[bad][7, 0] = np.inf
  return proxy_registry.ProxyInputs(labels=labels, expert="broken_expert", task="t", label_ids=[0, 1],
                             generalist_label_ids=[0, 1, 2, 3], **fields)


@pytest.mark.parametrize("spec,bad", [
    ("knn", "features"), ("knn(metric=euclidean)", "features"), ("knn(k=3)", "features"),
    ("linear_probe", "features"), ("logme", "features"), ("hscore", "features"), ("nce", "logits"),
    ("leep", "logits"), ("domain_prediction", "generalist_logits")])
def test_every_proxy_refuses_non_finite_inputs(spec, bad):
  proxy = proxy_registry.parse_proxies(spec)[0]
  message = f"Proxy {proxy.label!r} cannot score expert 'broken_expert': its {bad} hold 1 NaN and 1 Inf value(s), " \
            "the first at [4, 2]"
  with pytest.raises(ValueError, match=re.escape(message)) as raised:
    proxy.score(_proxy_inputs(bad))
  assert isinstance(raised.value, proxies.NonFiniteInputError)


def test_proxy_functions_refuse_non_finite_features():
  labels = np.arange(10) % 2
  features = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
  features[3] = np.nan
  for fn in (lambda f: knn.leave_one_out_accuracy(f, labels), lambda f: proxies.knn_accuracy(f, labels),
             lambda f: proxies.knn_accuracy(f, labels, metric="euclidean"),
             lambda f: proxies.linear_probe_accuracy(f, labels), lambda f: proxies.logme(f, labels),
             lambda f: proxies.h_score(f, labels), lambda f: proxies.leep(f, labels),
             lambda f: knn.NeighbourIndex(f, 1)):
    with pytest.raises(ValueError, match=r"hold 3 NaN and 0 Inf value\(s\), the first at \[3, 0\]"):
      fn(features)
  features[3] = np.inf
  with pytest.raises(ValueError, match=r"0 NaN and 3 Inf"):
    knn.leave_one_out_accuracy(features, labels)
  # Finite values whose sum overflows float32 are not mistaken for Inf.
  assert knn.non_finite_summary(np.full([4, 4], 3e38, np.float32)) is None


# ------------------------------------------------------------------------------------------- image folders
def _png(path, value=100, size=(12, 10), mode="RGB"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
  array = np.full((size[1], size[0], channels), value, np.uint8)
  Image.fromarray(array[..., 0] if channels == 1 else array, mode).save(path)


def _write(path, data=b""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def test_folder_skips_clutter_and_names_every_skipped_file(tmp_path, caplog):
  root = tmp_path / "pets"
  for split, n in (("train", 3), ("test", 2)):
    for c, value in (("dog", 200), ("cat", 50)):  # written out of order: labels still follow sorted names
      for i in range(n):
        _png(str(root / split / c / f"{i}.png"), value)
  clutter = [root / ".DS_Store", root / "train" / ".DS_Store", root / "train" / "cat" / ".DS_Store",
             root / "train" / "cat" / "._0.png", root / "__MACOSX" / "train" / "cat" / "._0.png",
             root / "train" / ".ipynb_checkpoints" / "x.png", root / "train" / "cat" / ".ipynb_checkpoints" / "0.png",
             root / "train" / "dog" / "Thumbs.db"]
  for path in clutter:
    _write(str(path), b"\x00\x05\x16\x07 AppleDouble or other junk")
  _write(str(root / "train" / "cat" / "notes.txt"), b"not an image\n")
  _write(str(root / "train" / "cat" / "empty.jpg"))
  _write(str(root / "train" / "dog" / "corrupt.png"), b"\x89PNG\r\n\x1a\n" + os.urandom(64))
  noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8))
  noise.save(root / "noise.png")
  _write(str(root / "train" / "dog" / "truncated.png"), (root / "noise.png").read_bytes()[:200])  # cut pixels
  with caplog.at_level(logging.WARNING):
    task = get_task(f"folder:{root}")
  warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    train = list(task.load("train800val200").as_numpy_iterator())
  # 3 + 3 good images; the truncated one opened at construction but fails to decode, and is named now.
  assert len(train) == 6 and "truncated.png" in caplog.text and "failed to decode" in caplog.text
  assert task.class_names == ["cat", "dog"] and task.num_classes == 2
  assert "skipped 3 file(s)" in warning
  for name, why in (("notes.txt", "not an image"), ("empty.jpg", "0 bytes"), ("corrupt.png", "")):
    assert name in warning and why in warning
  assert not any(p.name in warning for p in clutter if p.name not in ("x.png", "0.png"))
  assert sorted(int(y) for _, y in train) == [0, 0, 0, 1, 1, 1]
  assert all(x.shape == (10, 12, 3) and x.dtype == np.uint8 and x[0, 0, 0] == (50, 200)[y] for x, y in train)
  assert sorted(task.files) == ["test", "train"]  # __MACOSX is no split
  # Deterministic: the same order in another instance, and after pickling (Beam ships tasks to workers).
  again = pickle.loads(pickle.dumps(task))
  assert again.files == task.files and again.class_names == task.class_names
  with pytest.raises(KeyError, match=r"no split 'validation'; it has \['test', 'train'\]"):
    task.load("validation")


def test_folder_reads_every_format_pillow_decodes_and_composites_alpha_on_white(tmp_path):
  root = tmp_path / "formats"
  pixels = np.full((6, 7, 3), 90, np.uint8)
  for split in ("train", "test"):
    for fmt, ext in (("BMP", "bmp"), ("WEBP", "webp"), ("TIFF", "tif"), ("GIF", "gif"), ("JPEG", "JPG"),
                     ("PNG", "png")):
      os.makedirs(root / split / "plain", exist_ok=True)
      Image.fromarray(pixels).save(root / split / "plain" / f"a.{ext}", fmt, **({"lossless": True} if fmt == "WEBP"
                                                                                  else {}))
    rgba = np.zeros((6, 7, 4), np.uint8)  # black, fully transparent ...
    rgba[:, :3] = (200, 0, 0, 255)  # ... except opaque red columns
    rgba[:, 3:5] = (0, 0, 200, 128)  # and half-transparent blue ones
    os.makedirs(root / split / "special", exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(root / split / "special" / "alpha.png")
    Image.fromarray(np.full((6, 7), 77, np.uint8), "L").save(root / split / "special" / "grey.png")
    Image.fromarray(np.full((6, 7), 65535, np.uint16)).save(root / split / "special" / "grey16.png")
    Image.fromarray(pixels).save(root / split / "special" / "no_extension", "PNG")
  task = FolderTask(str(root))
  assert len(list(task.load("train"))) == 10 and task.skipped == []
  decoded = {os.path.basename(f): x for f, x in zip((f for f, _ in task.files["test"]),
                                                       (x for x, _ in task.load("test").as_numpy_iterator()))}
  for name in ("a.bmp", "a.webp", "a.tif", "a.gif", "a.png", "no_extension"):
    assert decoded[name].shape == (6, 7, 3) and (decoded[name] == 90).all(), name
  assert np.abs(decoded["a.JPG"].astype(int) - 90).max() <= 3
  alpha = decoded["alpha.png"]
  assert (alpha[:, :3] == (200, 0, 0)).all()  # opaque: as it is
  assert (alpha[:, 5:] == 255).all()  # transparent: white, not the stored black
  assert np.abs(alpha[:, 3:5].astype(int) - (127, 127, 227)).max() <= 2  # half: blended with white
  assert (decoded["grey.png"] == 77).all() and (decoded["grey16.png"] == 255).all()


def test_folder_errors_name_the_class_and_the_layout(tmp_path):
  # Only clutter in a class folder: that class has no image, and the error names it.
  for c in ("cat", "dog"):
    _png(str(tmp_path / "a" / "train" / c / "0.png"))
  _write(str(tmp_path / "a" / "test" / "cat" / "notes.txt"), b"x")
  _write(str(tmp_path / "a" / "test" / "cat" / ".DS_Store"), b"x")
  _png(str(tmp_path / "a" / "test" / "dog" / "0.png"))
  with pytest.raises(ValueError, match=r"class folder\(s\) \['test/cat'\] hold no valid image \(1 file\(s\) "
                                       "skipped"):
    FolderTask(str(tmp_path / "a"))
  # One real class beside notebook and macOS folders is one class, not three.
  _png(str(tmp_path / "b" / "train" / "cat" / "0.png"))
  _png(str(tmp_path / "b" / "train" / ".ipynb_checkpoints" / "0.png"))
  _png(str(tmp_path / "b" / "train" / "__MACOSX" / "0.png"))
  with pytest.raises(ValueError, match=r"has 1 class folder\(s\) \['cat'\]"):
    FolderTask(str(tmp_path / "b"))
  # <path>/<class>/<image> without the split level: the error says so.
  for c in ("cat", "dog"):
    _png(str(tmp_path / "c" / c / "0.png"))
  with pytest.raises(ValueError, match=r"Split folder 'cat' holds files directly \('0.png', \.\.\.\)"):
    FolderTask(str(tmp_path / "c"))
  with pytest.raises(ValueError, match="max_side=0"):
    FolderTask(str(tmp_path / "a"), max_side=0)


def test_a_huge_photo_costs_one_image_not_every_image(tmp_path):
  root = tmp_path / "mixed"
  for split in ("train", "test"):
    for c, value in (("a", 30), ("b", 220)):
      for i in range(3):
        _png(str(root / split / c / f"{i}.png"), value, size=(32, 32))
  big = np.full((4000, 6000, 3), 220, np.uint8)
  Image.fromarray(big).save(root / "train" / "b" / "photo.jpg", quality=80)
  del big
  task = FolderTask(str(root))
  shapes = sorted(x.shape for x, _ in task.load("train").as_numpy_iterator())
  # The photo is decoded at a reduced scale and shrunk to max_side, aspect kept; the others are untouched.
  assert shapes == [(32, 32, 3)] * 6 + [(683, 1024, 3)]
  # In memory at the typical image's size, which the HyperRule then reads as small images (160 / 128).
  images, labels = base.load_arrays(task, "train")
  assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8 and images.nbytes < 25_000
  assert hyperrule.get_resolution(*images.shape[1:3]) == (160, 128)
  photo = images[[f.endswith("photo.jpg") for f, _ in task.files["train"]].index(True)]
  assert np.abs(photo.astype(int) - 220).max() <= 3 and labels.tolist().count(1) == 4
  resized, _ = finetune._arrays(task, "train")  # pylint: disable=protected-access
  np.testing.assert_array_equal(resized, images)


def test_load_arrays_keeps_uniform_images_and_bounds_the_rest():
  uniform = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)
  task = ArrayTask({"train": (uniform, np.array([0, 1, 0, 1]))})
  images, labels = base.load_arrays(task, "train")
  np.testing.assert_array_equal(images, np.repeat(uniform, 3, axis=-1))  # as they are, grey tiled to RGB
  assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 0, 1]
  floats = ArrayTask({"train": (np.full([2, 600, 600, 3], 0.5, np.float64), np.array([0, 1]))})
  images, _ = base.load_arrays(floats, "train")
  assert images.shape == (2, 512, 512, 3) and images.dtype == np.float32 and np.allclose(images, 0.5)
  assert hyperrule.get_resolution(*images.shape[1:3]) == hyperrule.get_resolution(600, 600)
  images, _ = base.load_arrays(floats, "train", resize=64)  # FinetuneConfig.resize bounds it instead
  assert images.shape == (2, 64, 64, 3)


def test_finetuner_resolution_follows_the_typical_image(tmp_path):
  root = tmp_path / "mixed"
  for split in ("train", "test"):
    for c in ("a", "b"):
      for i in range(2):
        _png(str(root / split / c / f"{i}.png"), 40 + 100 * i, size=(24, 20))
  Image.fromarray(np.zeros((3000, 2000, 3), np.uint8)).save(root / "train" / "a" / "photo.png")
  cfg = configs.FinetuneConfig(batch_size=2, steps=1, train_split="train")
  tuner = finetune.Finetuner(FolderTask(str(root)), cfg, export_dirs=[str(tmp_path / "none")])
  assert (tuner.resize, tuner.crop) == (160, 128)
  images, _ = next(iter(tuner.train_ds))
  assert images.shape == (2, 128, 128, 3)


# --- label-preserving augmentations (issue 12, item 6) -------------------------------------------------------


def test_tasks_declare_the_augmentations_that_keep_their_labels():
  from expert_hub.data.world import catalogue
  from expert_hub.tasks import vtab
  world = {name: t["augmentations"] for name, t in catalogue.TASKS.items()}
  assert world["position"] == ()  # a flip swaps columns, a crop moves the object across a cell
  assert world["count"] == ("flip",)  # a crop can cut an object out
  assert world["glyphs_novel"] == world["strokes_novel"] == ("crop",)  # mirrored letters/curves are other classes
  assert world["shapes_novel"] == ("flip", "crop")
  vt = {name: vtab.TASKS.get(name).augmentations for name in vtab.TASKS.names()}
  assert vt["dsprites_location"] == ()  # x position
  assert vt["dsprites_orientation"] == vt["smallnorb_azimuth"] == vt["svhn"] == ("crop",)  # a mirror changes it
  assert vt["smallnorb_elevation"] == vt["clevr_distance"] == vt["kitti_distance"] == ("flip", "crop")
  with pytest.raises(ValueError, match="unknown \\['rotate'\\]"):
    preprocessing.check_augmentations(("flip", "rotate"))
  with pytest.raises(ValueError, match="expected a tuple"):
    ArrayTask({"train": (np.zeros((2, 8, 8, 3), np.uint8), [0, 1])}, augmentations="flip")


def _left_bright_task(augmentations):
  images = np.zeros((16, 32, 32, 3), np.uint8)
  images[:, :, :8] = 255  # the left quarter is white: a flip moves it right, a crop shifts its edge
  splits = {s: (images, np.arange(16) % 2) for s in ("train800val200", "test")}
  return ArrayTask(splits, name=f"left_{'_'.join(augmentations) or 'none'}", augmentations=augmentations)


@pytest.mark.parametrize("augmentations, flips, crops", [
    ((), False, False), (("crop",), False, True), (("flip",), True, False), (("flip", "crop"), True, True)])
def test_finetuning_applies_only_the_tasks_augmentations(tmp_path, augmentations, flips, crops):
  cfg = configs.FinetuneConfig(batch_size=16, steps=1, resize=36, crop=32)
  tuner = finetune.Finetuner(_left_bright_task(augmentations), cfg, export_dirs=[str(tmp_path / "none")])
  batches = [b for b, _ in tuner.train_dataset(seed=3).take(4).as_numpy_iterator()]
  images = np.concatenate(batches)
  left, right = images[:, :, :4].mean(axis=(1, 2, 3)), images[:, :, -4:].mean(axis=(1, 2, 3))
  assert bool(np.any(right > left)) == flips  # some flipped iff flips are allowed
  unflipped = images[left > right]
  edges = {int(np.argmax(row < 0.5)) for row in unflipped[:, 16, :, 0]}  # first dark column of each image
  assert (len(edges) > 1) == crops  # a random crop moves the edge; a plain resize keeps it in place
  assert tuner.augmentations == augmentations


def test_the_fine_tuning_stream_is_a_function_of_its_seed_alone():
  """Every model fine-tuned with one seed sees the same batches: the stream depends neither on TensorFlow's global
  seed nor on how often the dataset was iterated before (a Dataset.shuffle(seed=) depended on both), each epoch
  visits every example once, and .skip(k) (a resume) continues the same stream."""
  images = np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
  labels = np.arange(10)
  stream = lambda seed=7: preprocessing.make_train_dataset(images, labels, 5, 4, 4, ("flip",), seed=seed)
  take = lambda ds, k=6: [(x.tolist(), y.tolist()) for x, y in ds.take(k).as_numpy_iterator()]
  once = stream()
  first = take(once)
  assert take(once) == first  # iterated again
  tf.random.set_seed(123)
  try:
    assert take(stream()) == first  # built under another global seed
  finally:
    tf.random.set_seed(None)
  assert take(stream().skip(2), 4) == first[2:]
  orders = [sum((y for _, y in first[2 * e:2 * e + 2]), []) for e in range(3)]
  assert all(sorted(order) == labels.tolist() for order in orders)  # each epoch: every example once
  assert len({tuple(order) for order in orders}) == 3  # in a new order
  assert [y for _, y in take(stream(seed=8))] != [y for _, y in first]
  with pytest.raises(ValueError, match="10 images and 9 labels"):
    preprocessing.make_train_dataset(images, labels[:9], 5, 4, 4, ())
