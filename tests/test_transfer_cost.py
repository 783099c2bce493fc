"""DAT-style transfer and the transfer-cost measurement: importance re-sampling, FLOPs, one task end to end."""

import shutil

import numpy as np
import pytest

from expert_hub.data import upstream as upstream_data
from expert_hub.experiments import report
from expert_hub.experiments import transfer_cost as cost
from expert_hub.hub import registry
from expert_hub.hub import session as session_lib
from expert_hub.models import resnet_v2
from expert_hub.tasks import sources
from expert_hub.train import upstream as upstream_train
from expert_hub.transfer import dat


def test_keep_probabilities_hand_case():
  keep, acceptance = dat.keep_probabilities([0.5, 0.25, 0.25, 0.0], [10, 10, 20, 0])
  # P_s = [.25, .25, .5, 0]; w = P_t / P_s = [2, 1, .5, 0]; keep = w / max w; acceptance = sum P_s * keep.
  np.testing.assert_allclose(keep, [1.0, 0.5, 0.25, 0.0])
  assert acceptance == pytest.approx(0.25 + 0.125 + 0.125)
  with pytest.raises(ValueError, match=r"shape \(3,\) but source counts \(4,\)"):
    dat.keep_probabilities([0.5, 0.25, 0.25], [1, 2, 3, 4])


def test_resampled_upstream_stream_follows_keep_probabilities(smoke_cfg, data_dir):
  builder = upstream_data.get_builder(smoke_cfg.upstream.tfds_name, data_dir)
  num_labels = builder.info.features["label"].num_classes
  counts = dat.label_counts(builder, smoke_cfg.upstream, num_labels)
  a, b = np.argsort(-counts)[:2]
  keep = np.zeros([num_labels], np.float32)
  keep[a], keep[b] = 1.0, 0.5
  train_cfg = smoke_cfg.experts.full
  stream = upstream_train.make_upstream_stream(builder, smoke_cfg.upstream, train_cfg, num_labels,
                                               keep_probability=keep)
  labels = np.concatenate([y.numpy().argmax(1) for _, y in stream(0).take(12)])
  assert set(labels) <= {a, b}
  expected = 0.5 * counts[b] / counts[a]
  assert (labels == b).sum() / (labels == a).sum() == pytest.approx(expected, rel=0.35)


def test_forward_flops_grow_with_pixels():
  tiny = resnet_v2.MODEL_SIZES["tiny"]
  small, large = cost.forward_flops(tiny, 32), cost.forward_flops(tiny, 64)
  assert small > 1e6
  assert 3.5 < large / small < 4.5


def test_budget_ratios_hand_case():
  flops = {"embed": 10.0, "upstream_train": 10.0, "finetune_train": 5.0}
  r = cost.budget_ratios(num_experts=4, select_images=100, dat_train_images=1000, finetune_images=200, flops=flops)
  # (a) 4 x 100 x 10 + 3 x 200 x 5 = 4000 + 3000; (c) 100 x 10 + 3 x 1000 x 10 + 3000 = 31000 + 3000.
  assert (r["a_flops"], r["c_flops"], r["finetune_flops"]) == (7000, 34000, 3000)
  assert r["c/a flops"] == pytest.approx(34000 / 7000) and r["c/a flops before finetune"] == pytest.approx(31000 / 4000)
  table = report.budget_markdown([("hand", r)])
  assert "| 0x |" not in table and "| 5x | 8x |" in table
  with pytest.raises(ValueError, match="num_experts=0; expected a positive count"):
    cost.budget_ratios(0, 100, 1000, 200, flops)


@pytest.mark.slow
def test_one_task_costs_all_three_routes(trained_workdir, export_dir, smoke_cfg, data_dir, tmp_path):
  workdir, exports = str(tmp_path / "workdir"), str(tmp_path / "export")
  shutil.copytree(trained_workdir, workdir)
  shutil.copytree(export_dir, exports)
  modules = {p.name: str(p) for p in (tmp_path / "export" / smoke_cfg.upstream.name).iterdir()}
  experts = sorted(n for n in modules if n not in registry.BASELINE_KINDS)[:2]  # not the generalist or control
  modules = {n: modules[n] for n in ["generalist"] + experts}
  task = sources.get_task("world/colours_novel", data_dir, smoke_cfg.upstream.image_size)
  flops = dict.fromkeys(("embed", "upstream_train", "finetune_train"), 1e7)
  session = session_lib.ModuleSession.for_export_dirs([exports])
  result = cost.measure_task(task, smoke_cfg, workdir, exports, modules, data_dir, flops, session)
  a, b, c = result["a_expert_hub"], result["b_oracle"], result["c_dat"]
  experts = [m for m in modules if m != "generalist"]
  assert a["expert"] in experts and b["expert"] in experts
  assert b["accuracy"] >= a["accuracy"]  # the oracle fine-tuned the pick too
  assert set(result["finetune_accuracy"]) == set(experts)
  assert c["flops"] > a["flops"]  # DAT trains on upstream data; expert_hub only embeds and fine-tunes once
  assert result["ratios"]["c/a flops before finetune"] > result["ratios"]["c/a flops"]  # the shared part dilutes
  assert 0.0 < c["acceptance"] <= 1.0 and c["top_target_labels"]
  assert upstream_train.is_trained(dat.dat_dir(workdir, task.name))
  assert cost.measure_task(task, smoke_cfg, workdir, exports, modules, data_dir, flops, session) == result  # cached
  table = report.transfer_cost_markdown([result], cost.one_off_costs(smoke_cfg, workdir, flops))
  assert "colours_novel" in table and "One-off experts (4 models)" in table
  assert "One-off control (1 models)" in table  # the baseline apart: not part of what experts cost


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
