"""VTAB-1k: the 19 task definitions (TFDS builders, label rules, classes, splits), missing-data messages, and the
run_vtab protocol end to end on three tasks faked with tfds.testing.mock_data (offline)."""

import contextlib
import csv
import glob
import json
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import run_python
from expert_hub import naming
from expert_hub import provenance
from expert_hub.experiments import vtab_runner
from expert_hub.tasks import get_task
from expert_hub.tasks import vtab
from expert_hub.transfer import finetune

# The doc's table (shared/docs/bit_and_vtab.md): group, TFDS spec, classes, and (train, val, trainval, test).
_90_10 = ("train[:90%]", "train[90%:]", "train", "test")
_VALIDATION = ("train", "validation", "train+validation", "test")
_60_20_20 = ("train[:60%]", "train[60%:80%]", "train[:80%]", "train[80%:]")
_DSPRITES = ("train[:80%]", "train[80%:90%]", "train[:90%]", "train[90%:]")
_SMALLNORB = ("train", "test[:50%]", "train+test[:50%]", "test[50%:]")
EXPECTED = {
    "caltech101": ("natural", "caltech101:3.*.*", 102, _90_10),
    "cifar100": ("natural", "cifar100:3.*.*", 100, _90_10),
    "dtd": ("natural", "dtd:3.*.*", 47, _VALIDATION),
    "oxford_flowers102": ("natural", "oxford_flowers102:2.*.*", 102, _VALIDATION),
    "oxford_iiit_pet": ("natural", "oxford_iiit_pet:3.*.*", 37, ("train[:80%]", "train[80%:]", "train", "test")),
    "sun397": ("natural", "sun397/tfds:4.*.*", 397, _VALIDATION),
    "svhn": ("natural", "svhn_cropped:3.*.*", 10, _90_10),
    "patch_camelyon": ("specialized", "patch_camelyon:2.*.*", 2, _VALIDATION),
    "eurosat": ("specialized", "eurosat/rgb:2.*.*", 10, _60_20_20),
    "resisc45": ("specialized", "resisc45:3.*.*", 45, _60_20_20),
    "diabetic_retinopathy": ("specialized", "diabetic_retinopathy_detection/btgraham-300:3.*.*", 5, _VALIDATION),
    "clevr_count": ("structured", "clevr:3.*.*", 8, _90_10[:3] + ("validation",)),
    "clevr_distance": ("structured", "clevr:3.*.*", 6, _90_10[:3] + ("validation",)),
    "dmlab": ("structured", "dmlab:2.0.1", 6, _VALIDATION),
    "kitti_distance": ("structured", "kitti:3.1.0", 4, _VALIDATION),
    "dsprites_location": ("structured", "dsprites:2.*.*", 16, _DSPRITES),
    "dsprites_orientation": ("structured", "dsprites:2.*.*", 16, _DSPRITES),
    "smallnorb_azimuth": ("structured", "smallnorb:2.*.*", 18, _SMALLNORB),
    "smallnorb_elevation": ("structured", "smallnorb:2.*.*", 9, _SMALLNORB),
}
# The first 200 of the val part: a TFDS slice where val starts at index 0, else a take() of the val part.
VAL200 = {_90_10[1]: "train[90%:].take(200)", "validation": "validation[:200]",
          "train[80%:]": "train[80%:].take(200)", _60_20_20[1]: "train[60%:80%].take(200)",
          _DSPRITES[1]: "train[80%:90%].take(200)", "test[:50%]": "test[:200]"}


def test_the_19_tasks_match_the_doc():
  assert vtab.TASKS.names() == list(EXPECTED)  # Leaderboard order: natural, specialized, structured.
  assert [len(vtab.TASKS.names(g)) for g in vtab.GROUPS] == [7, 4, 8]
  for name, (group, spec, classes, _) in EXPECTED.items():
    d = vtab.TASKS.get(name)
    assert (d.group, d.tfds_spec, d.num_classes) == (group, spec, classes), name
    assert d.grayscale == name.startswith(("dsprites", "smallnorb")), name
    assert d.manual_download == (name in ("resisc45", "diabetic_retinopathy")), name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_split_strings(name):
  train, val, trainval, test = EXPECTED[name][3]
  d = vtab.TASKS.get(name)
  assert [d.split_string(s) for s in ("train", "val", "trainval", "test")] == [train, val, trainval, test]
  assert d.split_string("train800") == "train[:800]"  # Every train part starts at TFDS train's first example.
  assert d.split_string("val200") == VAL200[val]
  assert d.split_string("train800val200") == f"train[:800]+{VAL200[val]}"
  with pytest.raises(KeyError, match="train800val200"):
    d.split_parts("train1000")


def _label(name, **example):
  example = tf.nest.map_structure(tf.constant, example)
  return int(vtab.TASKS.get(name).label_fn(example))


def _clevr(depths):
  return {"objects": {"size": np.zeros(len(depths), np.int64),
                      "pixel_coords": np.array([[10.0, 20.0, d] for d in depths], np.float32)}}


def _kitti(objects):  # [(type, depth)]; types 0-2 Car/Van/Truck, 3 Pedestrian, 5 Cyclist.
  return {"objects": {"type": np.array([t for t, _ in objects], np.int64).reshape([-1]),
                      "location": np.array([[1.0, 1.5, z] for _, z in objects], np.float32).reshape([-1, 3])}}


def test_clevr_labels():
  assert _label("clevr_count", **_clevr([9.0] * 5)) == 2
  assert _label("clevr_count", **_clevr([9.0] * 3)) == 0
  assert _label("clevr_count", **_clevr([9.0] * 10)) == 7
  # Closest depth binned at [0, 8, 8.5, 9, 9.5, 10, 100]: index of the last threshold below it.
  assert _label("clevr_distance", **_clevr([12.0, 8.2, 9.7])) == 1
  assert _label("clevr_distance", **_clevr([7.5, 11.0])) == 0
  assert _label("clevr_distance", **_clevr([9.25])) == 3
  assert _label("clevr_distance", **_clevr([10.5, 13.0])) == 5


def test_kitti_distance_label():
  assert _label("kitti_distance", **_kitti([])) == 3  # No object at all: no vehicle.
  assert _label("kitti_distance", **_kitti([(3, 4.0), (5, 2.0)])) == 3  # Pedestrian and cyclist only.
  assert _label("kitti_distance", **_kitti([(0, 25.0), (3, 4.0)])) == 2  # Closest vehicle is the car at 25 m.
  assert _label("kitti_distance", **_kitti([(1, 10.0), (0, 30.0)])) == 1  # Van at 10 m.
  assert _label("kitti_distance", **_kitti([(2, 5.0)])) == 0  # Truck at 5 m.


def test_dsprites_smallnorb_and_plain_labels():
  assert _label("dsprites_orientation", label_orientation=39) == 15
  assert [_label("dsprites_orientation", label_orientation=v) for v in (0, 2, 3, 20)] == [0, 0, 1, 8]
  assert [_label("dsprites_location", label_x_position=v) for v in (0, 1, 2, 31)] == [0, 0, 1, 15]
  assert _label("smallnorb_azimuth", label_azimuth=17) == 17
  assert _label("smallnorb_elevation", label_elevation=8) == 8
  for name in ("cifar100", "dmlab", "diabetic_retinopathy", "sun397"):
    assert _label(name, label=np.int64(4)) == 4


def test_preprocess_scales_tiles_and_resizes():
  mask = np.zeros([64, 64, 1], np.uint8)
  mask[16:48, 16:48] = 1  # dSprites stores 0/1 masks.
  image, label = vtab.TASKS.get("dsprites_location").preprocess(
      {"image": tf.constant(mask), "label_x_position": tf.constant(np.int64(31))}, 32)
  image = image.numpy()
  assert image.shape == (32, 32, 3) and image.dtype == np.float32 and label.dtype == tf.int64
  assert image.max() == 1.0 and image.min() == 0.0 and np.array_equal(image[..., 0], image[..., 2])
  grey = np.full([96, 96, 1], 255, np.uint8)
  image, _ = vtab.TASKS.get("smallnorb_azimuth").preprocess(
      {"image": tf.constant(grey), "label_azimuth": tf.constant(np.int64(3))}, 48)
  np.testing.assert_allclose(image.numpy(), np.ones([48, 48, 3]))
  rgb = np.random.RandomState(0).randint(0, 256, [20, 30, 3]).astype(np.uint8)
  image, _ = vtab.TASKS.get("caltech101").preprocess({"image": tf.constant(rgb), "label": tf.constant(1)}, 16)
  assert image.shape == (16, 16, 3) and 0 <= image.numpy().min() and image.numpy().max() <= 1


def test_registry_resolves_groups_and_refuses_bad_names():
  assert vtab.TASKS.resolve("all") == list(EXPECTED)
  assert vtab.TASKS.resolve(["natural"]) == list(EXPECTED)[:7]
  assert vtab.TASKS.resolve("kitti_distance,dtd,vtab/dtd") == ["dtd", "kitti_distance"]
  assert vtab.TASKS.resolve(["specialized", "svhn"]) == ["svhn"] + list(EXPECTED)[7:11]
  with pytest.raises(KeyError, match="nearest: \\['clevr_count'"):
    vtab.TASKS.resolve("clevr_cont")
  with pytest.raises(ValueError, match="already registered"):
    vtab.TaskRegistry([vtab.TASKS.get("dtd"), vtab.TASKS.get("dtd")])


@pytest.fixture
def no_network():
  """Any attempt to prepare (download) a dataset fails the test."""
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                         side_effect=AssertionError("download_and_prepare was called")) as m:
    yield m


def test_missing_datasets_say_what_to_put_where(tmp_path, no_network):
  dd = str(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError) as e:
    vtab.VtabTask("cifar100", dd)
  msg = str(e.value)
  assert "'cifar100:3.*.*'" in msg and f"data_dir {dd!r}" in msg and os.path.join(dd, "cifar100", "3.x.x") in msg
  assert "--download" in msg and "download_and_prepare" in msg
  with pytest.raises(FileNotFoundError) as e:
    vtab.VtabTask("resisc45", dd)
  msg = str(e.value)
  manual = os.path.join(dd, "downloads", "manual")
  assert f"manual_dir {manual!r}" in msg and f"{manual}/NWPU-RESISC45/<class>/<image>.jpg" in msg
  with pytest.raises(FileNotFoundError, match=r"/elsewhere/train/.*trainLabels\.csv"):
    vtab.VtabTask("vtab/diabetic_retinopathy", dd, manual_dir="/elsewhere")
  with pytest.raises(FileNotFoundError, match="oxford_iiit_pet:3.*TFDS cannot open it"):
    get_task("vtab/oxford_iiit_pet", dd)  # This TFDS builds only 4.0.0; VTAB's 3.x must be on disk.
  with pytest.raises(ValueError, match="image_size=0"):
    vtab.VtabTask("dtd", dd, image_size=0)
  assert not no_network.called


# --- Mock data -----------------------------------------------------------------------------------------------

_CLASSES_BY_BUILDER = {spec.split(":")[0].split("/")[0]: classes for _, spec, classes, _ in EXPECTED.values()}
N_PER_SPLIT = 40  # Every TFDS split string the fake serves has this many examples (take(200) keeps them all).


def _fake_examples(builder_name, seed):
  """Examples with the features the VTAB label rules read, valid labels, and label-dependent brightness."""
  rng = np.random.RandomState(seed)
  for _ in range(N_PER_SPLIT):
    if builder_name == "clevr":
      n = rng.randint(3, 11)
      image = np.full([24, 32, 3], 20 * n, np.uint8)
      yield {"image": image, "objects": {"size": np.zeros(n, np.int64),
                                         "pixel_coords": rng.uniform(7, 12, [n, 3]).astype(np.float32)}}
    elif builder_name == "kitti":
      n = rng.randint(1, 5)
      yield {"image": np.full([24, 40, 3], 30 * n, np.uint8),
             "objects": {"location": rng.uniform(2, 40, [n, 3]).astype(np.float32),
                         "type": rng.randint(0, 8, [n]).astype(np.int64)}}
    elif builder_name == "smallnorb":
      a, e = rng.randint(18), rng.randint(9)
      yield {"image": np.full([32, 32, 1], 10 * a + e, np.uint8), "label_azimuth": np.int64(a),
             "label_elevation": np.int64(e)}
    elif builder_name == "dsprites":
      o = rng.randint(40)
      yield {"image": (rng.rand(64, 64, 1) < o / 40).astype(np.uint8), "label_orientation": np.int64(o),
             "label_x_position": np.int64(rng.randint(32))}
    else:  # a label below the task's class count (TFDS builder name: the spec before ':' and '/')
      y = rng.randint(min(10, _CLASSES_BY_BUILDER.get(builder_name, 10)))
      yield {"image": np.full([64, 64, 3], 25 * y, np.uint8), "label": np.int64(y)}


@contextlib.contextmanager
def mock_vtab_data():
  """tfds.testing.mock_data serving _fake_examples per split string; records (builder, split) requests."""
  requests = []

  def as_dataset_fn(self, split, **kwargs):
    del kwargs
    requests.append((self.name, split))
    examples = list(_fake_examples(self.name, seed=abs(hash(split)) % 1000))
    signature = tf.nest.map_structure(lambda v: tf.TensorSpec([None] * np.ndim(v), tf.as_dtype(v.dtype)),
                                      examples[0])
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)

  with tfds.testing.mock_data(as_dataset_fn=as_dataset_fn), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    yield requests


def test_task_reads_vtab_splits_under_mock():
  with mock_vtab_data() as requests:
    task = get_task("vtab/clevr_count", "/unused", image_size=24)
    assert (task.name, task.num_classes, task.group) == ("vtab/clevr_count", 8, "structured")
    images, labels = task.arrays("train800val200")
  assert requests == [("clevr", "train[:800]"), ("clevr", "train[90%:]")]
  assert images.shape == (2 * N_PER_SPLIT, 24, 24, 3) and images.dtype == np.float32
  assert 0 <= labels.min() and labels.max() <= 7
  np.testing.assert_allclose(images[:, 0, 0, 0], (labels + 3) * 20 / 255, atol=1e-6)  # Count as in the fake.


def test_sweep_picks_the_best_point_and_resumes(tmp_path, smoke_cfg):
  """run_task's tuning logic with the fine-tune faked: val200 decides, test is reported, finished points stay."""
  calls = []

  class FakeFinetuner:
    def __init__(self, lr, steps, train_split, test_split):
      self.point = (lr, steps, train_split, test_split)

    def made_from(self, expert):
      return {"expert": expert, "point": list(self.point)}

    def run(self, expert):
      lr, steps, train_split, test_split = self.point
      calls.append((expert, lr, steps, train_split, test_split))
      acc = 0.9 if test_split == "test" else {(0.01, 10): 0.5, (0.03, 10): 0.7, (0.01, 20): 0.7}.get((lr, steps), 0.2)
      return {"test_accuracy": acc, "seconds": 1.0, "num_test_examples": 123,
              "made_from": provenance.digest(self.made_from(expert))}

  def fake_finetuner(task, ft_cfg, lr, steps, train_split, test_split, session, strategy=None):
    del task, ft_cfg, session, strategy
    return FakeFinetuner(lr, steps, train_split, test_split)

  task = vtab.VtabTask.__new__(vtab.VtabTask)  # Definition only; the fake fine-tune never reads data.
  task.definition, task.name, task.num_classes = vtab.TASKS.get("dtd"), "vtab/dtd", 47
  task.group = task.domain = "natural"
  sweep = vtab_runner.SweepConfig((0.03, 0.01), (20, 10))
  task_dir = str(tmp_path / "dtd")
  with mock.patch.object(vtab_runner, "_finetuner", fake_finetuner):
    result = vtab_runner.run_task(task, "mini32/shapes/1", smoke_cfg, sweep, task_dir)
  tuning = [c for c in calls if c[3] == "train800"]
  assert [(c[1], c[2]) for c in tuning] == [(0.01, 10), (0.03, 10), (0.01, 20), (0.03, 20)]
  assert all(c[4] == "val200" for c in tuning)
  assert calls[-1] == ("mini32/shapes/1", 0.03, 10, "train800val200", "test")  # Tie 0.7: the shorter schedule.
  assert result["best"] == {"base_lr": 0.03, "steps": 10, "val_accuracy": 0.7} and result["test_accuracy"] == 0.9
  assert result["task"] == "dtd" and result["group"] == "natural" and result["selection"] is None
  assert json.load(open(os.path.join(task_dir, "result.json"))) == result
  # A run killed before result.json keeps its finished sweep points: only the final fine-tune is redone.
  os.remove(os.path.join(task_dir, "result.json"))
  calls.clear()
  with mock.patch.object(vtab_runner, "_finetuner", fake_finetuner):
    assert vtab_runner.run_task(task, "mini32/shapes/1", smoke_cfg, sweep, task_dir)["best"] == result["best"]
  assert len(calls) == 1 and calls[0][3] == "train800val200"
  # A finished task or sweep point made from other inputs (re-prepared data, another module) is refused.
  with mock.patch.object(vtab_runner, "_finetuner", fake_finetuner):
    finished = json.load(open(os.path.join(task_dir, "result.json")))
    assert vtab_runner.run_task(task, "mini32/shapes/1", smoke_cfg, sweep, task_dir) == finished
    with pytest.raises(provenance.ProvenanceError, match="VTAB task result made from other inputs"):
      vtab_runner.run_task(task, "mini32/glyphs/1", smoke_cfg, sweep, task_dir)
    os.remove(os.path.join(task_dir, "result.json"))
    with pytest.raises(provenance.ProvenanceError, match="VTAB sweep point made from other inputs"):
      vtab_runner.run_task(task, "mini32/glyphs/1", smoke_cfg, sweep, task_dir)
    # Files made by an older fine-tuning recipe (no recipe_format) are fine-tuned again, not refused.
    for path in glob.glob(os.path.join(task_dir, "sweep", "*.json")):
      older = json.load(open(path))
      json.dump({k: v for k, v in dict(older, made_from="older").items() if k != "recipe_format"}, open(path, "w"))
    calls.clear()
    again = vtab_runner.run_task(task, "mini32/shapes/1", smoke_cfg, sweep, task_dir)
  assert again["best"] == result["best"] and again["recipe_format"] == finetune.RECIPE_FORMAT
  assert len(calls) == 5  # the 4 sweep points and the final fine-tune
  path = os.path.join(task_dir, "result.json")
  json.dump({k: v for k, v in dict(again, made_from="older").items() if k != "recipe_format"}, open(path, "w"))
  calls.clear()
  with mock.patch.object(vtab_runner, "_finetuner", fake_finetuner):
    redone = vtab_runner.run_task(task, "mini32/shapes/1", smoke_cfg, sweep, task_dir)
  assert (redone["best"], redone["test_accuracy"]) == (again["best"], again["test_accuracy"])
  assert len(calls) == 1 and calls[0][3] == "train800val200"  # the sweep points were current: reused
  default = vtab_runner.default_sweep(smoke_cfg.finetune)  # smoke: tiny's base_lr 0.03, 20 steps.
  assert smoke_cfg.finetune.base_lr == 0.03
  assert default.base_lrs == (0.009, 0.03, 0.09) and default.steps == (20, 40)
  with pytest.raises(ValueError, match="steps"):
    vtab_runner.SweepConfig((0.1,), (0,))


def test_run_vtab_end_to_end_on_three_mock_tasks(export_dir, tmp_path, smoke_cfg):
  workdir = str(tmp_path / "vtab")
  tasks = ["dsprites_orientation", "eurosat", "clevr_count"]
  sweep = vtab_runner.SweepConfig((0.1,), (5,))
  experts = ["mini32/glyphs/1", "mini32/colours_adapter/1"]  # Two candidates keep module loading short.
  with mock_vtab_data() as requests:
    board = vtab_runner.run_vtab(tasks, "auto", smoke_cfg, workdir, data_dir=str(tmp_path / "unused"),
                                 export_dirs=[export_dir], sweep=sweep, image_size=32, experts=experts)
  run = board["runs"]["auto"]
  assert list(run["tasks"]) == ["eurosat", "clevr_count", "dsprites_orientation"]  # Leaderboard order.
  for name, r in run["tasks"].items():
    assert sorted(r["selection"]["scores"]) == sorted(experts) and r["selection"]["split"] == "train800val200"
    assert r["selection"]["scores"][r["expert"]] == max(r["selection"]["scores"].values())  # kNN's pick.
    assert r["num_test_examples"] == N_PER_SPLIT and 0 <= r["test_accuracy"] <= 1
    assert r["best"] == {"base_lr": 0.1, "steps": 5, "val_accuracy": None} and r["sweep"] == []
    assert r["num_classes"] == EXPECTED[name][2]
  asked = set(requests)  # Each task read its own VTAB splits, and its test split only for the final test.
  assert {("eurosat", "train[:800]"), ("eurosat", "train[60%:80%]"), ("eurosat", "train[80%:]")} <= asked
  assert ("clevr", "validation") in asked and ("dsprites", "train[90%:]") in asked
  assert not {s for _, s in asked} - {"train[:800]", "train[60%:80%]", "train[80%:]", "train[90%:]",
                                      "validation", "train[80%:90%]"}

  rows = list(csv.reader(open(os.path.join(workdir, "vtab_results.csv"))))
  header, row = rows[0], dict(zip(rows[0], rows[1]))
  assert len(rows) == 2 and header == ["run", "expert"] + list(EXPECTED) + ["natural", "specialized",
                                                                            "structured", "mean", "tasks_done"]
  assert row["run"] == "auto" and row["tasks_done"] == "3/19" and row["natural"] == "" and row["dtd"] == ""
  acc = {n: 100 * r["test_accuracy"] for n, r in run["tasks"].items()}
  assert float(row["eurosat"]) == pytest.approx(acc["eurosat"], abs=0.05)
  assert float(row["specialized"]) == pytest.approx(acc["eurosat"], abs=0.05)
  assert float(row["structured"]) == pytest.approx((acc["clevr_count"] + acc["dsprites_orientation"]) / 2, abs=0.06)
  assert float(row["mean"]) == pytest.approx(np.mean(list(acc.values())), abs=0.06)
  assert json.load(open(os.path.join(workdir, "vtab_results.json"))) == board
  assert sorted(f for f in os.listdir(workdir) if f.endswith(".png")) == ["vtab_specialized.png",
                                                                           "vtab_structured.png"]

  # Resumable: a rerun of the same command reads every finished task back and trains nothing. No mock data
  # here: finished tasks do not even open their datasets.
  with mock.patch.object(vtab_runner.finetune_lib, "Finetuner", side_effect=AssertionError("retrained")):
    again = vtab_runner.run_vtab(tasks, "auto", smoke_cfg, workdir, export_dirs=[export_dir], sweep=sweep,
                                 image_size=32, experts=experts)
  assert again == board
  with pytest.raises(ValueError, match="other settings"):
    vtab_runner.run_vtab(tasks, "auto", smoke_cfg, workdir, export_dirs=[export_dir],
                         sweep=vtab_runner.SweepConfig((0.3,), (5,)), image_size=32, experts=experts)


def test_run_vtab_binary_names_every_missing_dataset(export_dir, tmp_path):
  proc = run_python(["binaries/run_vtab.py", "--expert=auto", f"--tasks=dtd,resisc45,folder:{tmp_path}/my_images",
                     f"--export_dir={export_dir}", f"--data_dir={tmp_path}/tfds", f"--workdir={tmp_path}/wd"],
                    check=False, timeout=300)
  assert proc.returncode != 0
  assert "3 of the 3 tasks asked for cannot be read" in proc.stderr
  assert "'dtd:3.*.*'" in proc.stderr and "NWPU-RESISC45" in proc.stderr
  assert f"Image folder '{tmp_path}/my_images' does not exist" in proc.stderr


def test_resolve_tasks_puts_vtab_first_then_the_other_specs_as_given():
  assert vtab_runner.resolve_tasks("world/count,eurosat,folder:/d/x,vtab/dtd,world/count") == [
      "dtd", "eurosat", "world/count", "folder:/d/x"]
  assert vtab_runner.resolve_tasks(["tfds:cifar100", "cifar100"]) == ["cifar100", "tfds:cifar100"]
  with pytest.raises(KeyError, match="Unknown world task 'cont'.*nearest: \\['count'"):
    vtab_runner.resolve_tasks("world/cont")
  with pytest.raises(ValueError, match="No tasks in ' , '"):
    vtab_runner.resolve_tasks(" , ")


def test_run_vtab_runs_the_protocol_on_a_world_task_listed_under_other(export_dir, data_dir, tmp_path, smoke_cfg):
  """A task outside VTAB (here the world's) gets the same select -> sweep on train800 -> val200 -> retrain ->
  test, its own folder, a column after VTAB's 19 and the leaderboard group "other"; a rerun reuses it."""
  workdir, name = str(tmp_path / "vtab"), "world/colours_novel"
  sweep = vtab_runner.SweepConfig((0.01, 0.1), (5,))
  experts = ["mini32/glyphs/1", "mini32/colours_adapter/1"]
  board = vtab_runner.run_vtab(name, "auto", smoke_cfg, workdir, data_dir=data_dir, export_dirs=[export_dir],
                               sweep=sweep, image_size=32, experts=experts)
  run = board["runs"]["auto"]
  assert list(run["tasks"]) == [name]
  r = run["tasks"][name]
  assert r["selection"]["split"] == "train800val200" and sorted(r["selection"]["scores"]) == sorted(experts)
  assert r["selection"]["scores"][r["expert"]] == max(r["selection"]["scores"].values())
  assert [(p["base_lr"], p["steps"]) for p in r["sweep"]] == [(0.01, 5), (0.1, 5)]
  best = max(r["sweep"], key=lambda p: p["val_accuracy"])  # the first of equals: the smaller LR
  assert r["best"] == {k: best[k] for k in ("base_lr", "steps", "val_accuracy")}
  assert 0 <= r["test_accuracy"] <= 1 and r["num_test_examples"] > 0
  assert os.path.exists(os.path.join(workdir, "runs", "auto", naming.folder_name(name), "result.json"))
  assert run["summary"] == {"natural": None, "specialized": None, "structured": None, "other": r["test_accuracy"],
                            "mean": r["test_accuracy"], "tasks_done": "0/19 + 1 other"}
  rows = list(csv.reader(open(os.path.join(workdir, "vtab_results.csv"))))
  assert rows[0] == ["run", "expert"] + list(EXPECTED) + [name, "natural", "specialized", "structured", "other",
                                                          "mean", "tasks_done"]
  row = dict(zip(rows[0], rows[1]))
  assert float(row[name]) == float(row["other"]) == pytest.approx(100 * r["test_accuracy"], abs=0.05)
  assert row["dtd"] == "" and row["natural"] == ""
  assert sorted(f for f in os.listdir(workdir) if f.endswith(".png")) == ["vtab_other.png"]
  with mock.patch.object(vtab_runner.finetune_lib, "Finetuner", side_effect=AssertionError("retrained")):
    again = vtab_runner.run_vtab(name, "auto", smoke_cfg, workdir, data_dir=data_dir, export_dirs=[export_dir],
                                 sweep=sweep, image_size=32, experts=experts)
  assert again == board


_REHEARSAL = r'''
import json, sys
sys.path.insert(0, "tests")
from test_vtab import mock_vtab_data
from expert_hub import configs
from expert_hub.experiments import vtab_runner
from expert_hub.hub import loading, registry, session as session_lib
export_dir, workdir, num_experts, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
session = session_lib.ModuleSession(registry.Registry([export_dir]))
experts = session.registry.expert_handles()[:num_experts]
with mock_vtab_data():
  board = vtab_runner.run_vtab(tasks, "auto", configs.get_config("smoke"), workdir, data_dir="/unused",
                               sweep=vtab_runner.SweepConfig((0.1,), (2,)), image_size=32, experts=experts,
                               session=session)
peak_kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))  # not ru_maxrss:
print("REHEARSAL " + json.dumps({"peak_mb": peak_kib / 1024,  # Linux carries a parent's ru_maxrss over exec
                                 "loads": dict(loading.LOADS), "experts": len(experts),
                                 "done": board["runs"]["auto"]["summary"]["tasks_done"]}))
'''


@pytest.mark.slow
def test_the_papers_shape_48_packed_experts_on_all_19_tasks_in_one_process(tmp_path):
  """run_vtab --expert=auto over 48 packed adapter experts + 1 full one on 18 of the 19 VTAB tasks (mock data) runs
  to the end, loads each module once, and peaks within 1.5x the memory of 4 experts on one task."""
  from expert_hub.hub import synthetic
  export_dir = str(tmp_path / "export")
  synthetic.build_experts(export_dir, num_adapters=48, num_full=1)

  def rehearse(num_experts, tasks):
    proc = run_python(["-c", _REHEARSAL, export_dir, str(tmp_path / f"vtab{num_experts}"), str(num_experts), tasks],
                      timeout=1500)
    return json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("REHEARSAL "))[10:])

  small = rehearse(4, "eurosat")
  # Every VTAB task but oxford_iiit_pet, whose builder tfds.testing.mock_data cannot construct here.
  paper = rehearse(49, ",".join(n for n in vtab.TASKS.names() if n != "oxford_iiit_pet"))
  assert small["done"] == "1/19" and paper["done"] == "18/19" and paper["experts"] == 49
  assert paper["loads"] and set(paper["loads"].values()) == {1}, paper["loads"]  # every module once
  assert len(paper["loads"]) == 1  # the pack: the full expert embeds and fine-tunes by restore, never loaded
  assert paper["peak_mb"] <= 1.5 * small["peak_mb"], (paper["peak_mb"], small["peak_mb"])


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
