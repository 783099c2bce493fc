"""Training: a short fit beats chance; a killed run resumes from its checkpoint; experts skip when done."""

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from expert_hub.data import experts as experts_data
from expert_hub.models import resnet_v2
from expert_hub.tasks import sources
from expert_hub.train import schedules, trainer
from expert_hub.train import experts as experts_train


def test_short_fit_beats_chance(data_dir):
  task = sources.world_task("colours_novel", data_dir)
  x, y = task.arrays("train800")
  xt, yt = task.arrays("test")
  model = resnet_v2.build_classifier(resnet_v2.build_backbone(resnet_v2.MODEL_SIZES["tiny"]), task.num_classes)
  model.compile(optimizer=keras.optimizers.SGD(schedules.WarmupSchedule(0.05, 100, 10), momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  model.fit(x.astype("float32") / 255, y, batch_size=64, epochs=8, verbose=0)
  _, acc = model.evaluate(xt.astype("float32") / 255, yt, verbose=0)
  chance = 1.0 / task.num_classes
  assert acc > chance + 0.3, (acc, chance)


def test_schedule_warmup_and_step_decay():
  s = schedules.WarmupSchedule(1.0, 100, warmup_steps=10, schedule="step", decay_steps=(50, 80))
  assert float(s(0)) == pytest.approx(0.1) and float(s(20)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.1) and float(s(90)) == pytest.approx(0.01)
  c = schedules.WarmupSchedule(1.0, 100, warmup_steps=0)
  assert float(c(0)) == pytest.approx(1.0) and float(c(100)) == pytest.approx(0.0, abs=1e-6)


RESUME_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from expert_hub import configs
from expert_hub.train import upstream
cfg = configs.replace(configs.get_config("smoke"), **{"generalist.steps": 60, "generalist.checkpoint_every": 10,
                                                     "generalist.log_every": 10})
upstream.train_generalist(cfg, sys.argv[1], sys.argv[2])
"""


def test_resume_after_kill(tmp_path, data_dir):
  workdir = str(tmp_path / "wd")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  cmd = [sys.executable, "-c", RESUME_SCRIPT, data_dir, workdir]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(workdir, "generalist", "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpt_dir) and any(f.startswith("ckpt-") and f.endswith(".index") for f in os.listdir(ckpt_dir)):
      break
    time.sleep(0.2)
  assert proc.poll() is None, "training finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(workdir, "generalist", "model.json"))
  done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "resumed from" in done.stderr
  with open(os.path.join(workdir, "generalist", "train_result.json")) as f:
    result = json.load(f)
  assert 10 <= result["start_step"] < 60 and result["start_step"] % 10 == 0
  assert result["steps"] == 60


def test_resume_finds_a_checkpoint_the_state_file_does_not_name_yet(tmp_path):
  """A kill between writing ckpt-N and recording it in the state file: ckpt-N is complete and is the newest."""
  variable = tf.Variable(1.0)
  checkpoint = tf.train.Checkpoint(v=variable)
  manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=2)
  manager.save(checkpoint_number=10)
  variable.assign(2.0)
  checkpoint.write(str(tmp_path / "ckpt-20"))  # written, never recorded (as if killed before the state update)
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-10")
  assert trainer.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-20")
  assert trainer.latest_checkpoint(str(tmp_path / "none")) is None


def test_experts_train_once_and_skip_when_done(trained_workdir, smoke_cfg, data_dir, caplog):
  plan = json.load(open(os.path.join(trained_workdir, "experts.json")))
  names = [e["name"] for e in plan["experts"]]
  assert len(names) == 2
  for kind in ("full", "adapter"):
    for n in names:
      assert os.path.exists(os.path.join(trained_workdir, "experts", kind, n, "weights.npz"))
  before = os.path.getmtime(os.path.join(trained_workdir, "experts", "full", names[0], "weights.npz"))
  caplog.set_level("INFO")
  experts_train.train_experts(smoke_cfg, data_dir, trained_workdir)
  assert "already trained; skipping" in caplog.text
  assert os.path.getmtime(os.path.join(trained_workdir, "experts", "full", names[0], "weights.npz")) == before
  with pytest.raises(ValueError, match="Unknown expert"):
    experts_train.train_experts(smoke_cfg, data_dir, trained_workdir, names=["shapez"])


def test_an_experts_subset_held_in_memory_streams_the_same_batches(smoke_cfg, data_dir):
  from expert_hub.data import upstream as upstream_data
  from expert_hub.train import upstream
  builder = upstream_data.get_builder(smoke_cfg.upstream.tfds_name, data_dir)
  node = experts_train.plan_experts(smoke_cfg, data_dir, None, write=False)[0]
  num_labels = upstream_data.load_hierarchy(smoke_cfg.upstream, builder).num_labels
  train_cfg = smoke_cfg.experts.full
  streams = {cache: upstream.make_upstream_stream(builder, smoke_cfg.upstream, train_cfg, num_labels, node.labels,
                                                  seed=3, cache_subset=cache) for cache in (False, True)}
  batches = 2 * node.num_images // train_cfg.batch_size + 2  # into the third epoch: replayed from the cache
  streamed, cached = (list(streams[c](0).take(batches)) for c in (False, True))
  for (x, y), (cx, cy) in zip(streamed, cached):
    np.testing.assert_array_equal(x.numpy(), cx.numpy())
    np.testing.assert_array_equal(y.numpy(), cy.numpy())
  resumed = next(iter(streams[True](batches - 1)))  # a resume skips into the cached epochs alike
  np.testing.assert_array_equal(resumed[0].numpy(), streamed[-1][0].numpy())
  # The budget rule: the split's mean encoded example size times the subset's images.
  split = builder.info.splits[smoke_cfg.upstream.train_split]
  subset_bytes = node.num_images * int(split.num_bytes) / split.num_examples
  fits = upstream_data.subset_fits_in_memory
  assert fits(builder, smoke_cfg.upstream.train_split, node.num_images, int(subset_bytes) + 1)
  assert not fits(builder, smoke_cfg.upstream.train_split, node.num_images, int(subset_bytes) - 1)


def test_input_pipelines_end_without_the_autotuning_thread_and_keep_their_order(smoke_cfg, data_dir):
  """The upstream stream and the fine-tuning train / eval datasets turn tf.data's autotuning off (its thread
  delays the end of a fit by seconds, see preprocessing.without_autotuning) and yield what they yielded with it."""
  from expert_hub.data import preprocessing
  from expert_hub.data import upstream as upstream_data
  from expert_hub.train import upstream
  builder = upstream_data.get_builder(smoke_cfg.upstream.tfds_name, data_dir)
  num_labels = upstream_data.load_hierarchy(smoke_cfg.upstream, builder).num_labels
  images = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
  labels = np.arange(40) % 4
  build = {  # each built twice: a seeded Dataset.shuffle moves on at every new iterator of one dataset
      "upstream": lambda: upstream.make_upstream_stream(builder, smoke_cfg.upstream, smoke_cfg.experts.full,
                                                        num_labels, seed=3)(0),
      "finetune train": lambda: preprocessing.make_train_dataset(images, labels, 8, 12, 10, seed=5),
      "finetune eval": lambda: preprocessing.make_eval_dataset(
          tf.data.Dataset.from_tensor_slices((images, labels)), 16, 10),
  }
  autotuned = tf.data.Options()
  autotuned.autotune.enabled = True
  for name, make in build.items():
    ds, with_thread = make(), make().with_options(autotuned)
    assert ds.options().autotune.enabled is False, name
    assert with_thread.options().autotune.enabled is True
    for (x, y), (ax, ay) in zip(ds.take(3), with_thread.take(3)):
      np.testing.assert_array_equal(x.numpy(), ax.numpy(), err_msg=name)
      np.testing.assert_array_equal(y.numpy(), ay.numpy(), err_msg=name)


def test_adapter_expert_leaves_the_trunk_frozen(trained_workdir):
  from expert_hub.models import weights
  plan = json.load(open(os.path.join(trained_workdir, "experts.json")))
  name = plan["experts"][0]["name"]
  g = weights.load_weights(os.path.join(trained_workdir, "generalist", "weights.npz"))
  a = weights.load_weights(os.path.join(trained_workdir, "experts", "adapter", name, "weights.npz"))
  f = weights.load_weights(os.path.join(trained_workdir, "experts", "full", name, "weights.npz"))
  trunk = [k for k in g if not k.startswith("head/")]
  assert all(np.array_equal(g[k], a[k]) for k in trunk)
  assert any(not np.array_equal(g[k], f[k]) for k in trunk)
  assert any(not np.allclose(a[k], 0) for k in a if k.startswith("adapter_") and "_up/" in k)
  assert experts_data.label_mask([1], 3).tolist() == [0, 1, 0]


def test_the_control_starts_from_the_generalist_and_sees_all_upstream_labels(trained_workdir, smoke_cfg, data_dir,
                                                                            export_dir):
  """The equal-compute control: the generalist continued on every label with a full expert's recipe and steps."""
  from expert_hub import provenance
  from expert_hub.data import upstream as upstream_data
  from expert_hub.models import weights
  from expert_hub.train import upstream
  generalist = upstream.read_model_info(os.path.join(trained_workdir, "generalist"))
  folder = os.path.join(trained_workdir, "experts", "control", "control")
  control = upstream.read_model_info(folder)
  assert control["kind"] == "control" and control["node"] is None
  assert control["labels"] == list(range(generalist["num_labels"]))  # every upstream label
  builder = upstream_data.get_builder(smoke_cfg.upstream.tfds_name, data_dir)
  assert control["num_images"] == builder.info.splits[smoke_cfg.upstream.train_split].num_examples
  assert control["train"]["steps"] == smoke_cfg.experts.full.steps  # as many steps as a full expert
  # Before training it was the generalist exactly: its precision on all labels was the generalist's own.
  assert control["train"]["generalist_eval_precision_at_1"] == pytest.approx(
      generalist["train"]["eval_precision_at_1"], abs=1e-6)
  made_from = provenance.read(folder)
  assert made_from["generalist"] == provenance.digest(provenance.read(os.path.join(trained_workdir, "generalist")))
  assert made_from["train"] == provenance.describe(smoke_cfg.experts.full)
  g = weights.load_weights(os.path.join(trained_workdir, "generalist", "weights.npz"))
  c = weights.load_weights(os.path.join(folder, "weights.npz"))
  assert any(not np.array_equal(g[k], c[k]) for k in g)  # and then it trained
  from expert_hub.hub import registry
  exported = registry.Registry([export_dir])
  assert exported.lookup("control").metadata["kind"] == "control"
  assert exported.lookup("control").path not in exported.expert_handles()  # a baseline, never a candidate


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from expert_hub import configs
from expert_hub.train import strategies, upstream
strategy = strategies.make_strategy("mirrored")
cfg = configs.replace(configs.get_config("smoke"), **{"generalist.steps": 6, "generalist.checkpoint_every": 3,
                                                     "generalist.batch_size": 16})
info = upstream.train_generalist(cfg, sys.argv[1], sys.argv[2], strategy)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "steps": info["train"]["steps"]}))
"""


def test_mirrored_strategy_over_two_cpu_devices(tmp_path, data_dir):
  from conftest import run_python
  proc = run_python(["-c", MIRRORED_SCRIPT, data_dir, str(tmp_path / "wd")])
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out == {"replicas": 2, "steps": 6}
  assert os.path.exists(tmp_path / "wd" / "generalist" / "weights.npz")
  with pytest.raises(ValueError, match="Unknown strategy 'horovod'"):
    from expert_hub.train import strategies
    strategies.make_strategy("horovod")


def test_experts_record_the_generalists_precision_on_their_subset(trained_workdir, smoke_cfg, data_dir):
  from expert_hub.data import upstream as upstream_lib
  from expert_hub.train import upstream
  node = json.load(open(os.path.join(trained_workdir, "experts.json")))["experts"][0]
  generalist_dir = os.path.join(trained_workdir, "generalist")
  info = upstream.read_model_info(generalist_dir)
  generalist = upstream.model_from_info(info, generalist_dir)
  builder = upstream_lib.get_builder(smoke_cfg.upstream.tfds_name, data_dir)
  expected = upstream.evaluate_upstream(generalist, builder, smoke_cfg.upstream, info["num_labels"], node["labels"])
  for kind in ("full", "adapter"):
    expert = upstream.read_model_info(os.path.join(trained_workdir, "experts", kind, node["name"]))
    # Measured before training, when the expert still computes the generalist (adapters start as the identity);
    # the tolerance allows an argmax tie or two to break differently in the other graph.
    assert expert["train"]["generalist_eval_precision_at_1"] == pytest.approx(expected, abs=0.01)
  assert expert["adapter"] == dataclasses.asdict(smoke_cfg.experts.adapter_arch)


def test_written_files_are_atomic_and_get_the_permissions_open_would_give(trained_workdir, tmp_path):
  from expert_hub import io_utils
  mask = os.umask(0o022)
  os.umask(mask)
  for rel in ("experts.json", "generalist/model.json", "generalist/weights.npz"):
    mode = stat.S_IMODE(os.stat(os.path.join(trained_workdir, rel)).st_mode)
    assert mode == 0o666 & ~mask, f"{rel}: {oct(mode)}"  # not mkstemp's private 0o600
  target = tmp_path / "result.json"
  with pytest.raises(RuntimeError, match="interrupted"):
    with io_utils.atomic_writer(str(target)) as f:
      f.write("half")
      raise RuntimeError("interrupted")
  assert os.listdir(tmp_path) == []  # neither the file nor its temp file
