"""The `tiny` configuration: the whole pipeline on the embedded world at 32 px on 2 CPU cores.

Command:  python binaries/run_pipeline.py --config=tiny --workdir=/tmp/expert_hub_demo
Cost:     14:37 on the project's 2-core AVX-512 EPYC machine (21-27 minutes on its earlier one), 2.8-3.0 GB peak
          (see README). The experts take 6 minutes (10-12 on the earlier machine).

A 0.55 M-parameter ResNet-v2 (units 1/1/1/1, width 1/4, GroupNorm + WS) trains at ~2,000-4,000 images/s here, so
the generalist sees ~3 epochs of the 64k-image upstream split (it does not absorb it all, as in the paper),
each expert 720 steps of its domain (~92k images, nearly 3x what the generalist saw of that domain), and
each downstream fine-tune a shortened BiT-HyperRule schedule (0.2x, 100 steps) at 10x its learning rate
(base 0.03 at batch 512 instead of 0.003), from a linear-probe head (LP-FT) instead of a zero head, on whole
32 px images instead of 128 px crops (so the random-crop augmentation is a no-op; the flip stays where the
task's label allows it), 3 seeds per model and task.
"""

from expert_hub.configs import base
from expert_hub.data.world import catalogue
from expert_hub.models import adapters
from expert_hub.models import resnet_v2


def get_config():
  return base.Config(
      name="tiny",
      model=resnet_v2.MODEL_SIZES["tiny"],
      upstream=base.UpstreamConfig(tfds_name="expert_hub_world/upstream_32", name="world32", image_size=32),
      generalist=base.TrainConfig(batch_size=128, steps=1600, base_lr=0.1, warmup_steps=100,
                                  checkpoint_every=400, log_every=100),
      experts=base.ExpertsConfig(
          min_images=2000, max_experts=6, min_depth=1, max_depth=1, kinds=("full", "adapter"),
          # 720 steps (0.45x the generalist's) at lr 0.05, not 240 at 0.01: experts then specialise (frozen
          # kNN on their domain's task +5 to +17 points over the generalist; README, "Issue 12 variants").
          full=base.TrainConfig(batch_size=128, steps=720, base_lr=0.05, warmup_steps=60,
                                checkpoint_every=240, log_every=120),
          # Adapters at lr 0.3 and full width (reduction 1): of 11 lr x width x placement variants on scenes,
          # the best upstream precision@1 (69% vs 58% at lr 0.1, reduction 4; README, benchmark_selection).
          adapter=base.TrainConfig(batch_size=128, steps=720, base_lr=0.3, warmup_steps=60,
                                   checkpoint_every=240, log_every=120, weight_decay=0.0),
          adapter_arch=adapters.AdapterConfig(reduction=1, placement="stage_input"), control=True),
      selection=base.SelectionConfig(proxy="knn", k=1, backend="auto", split="train800val200"),
      # LP-FT (the head starts as a linear probe of the frozen features) at base_lr 0.03, on whole 32 px images:
      # at the same 100 steps it ends above the frozen probe on the test split, where a zero head at 0.1 ended
      # 2-12 points below it on 3 of the 4 tasks probed (README, "Fine-tuning schedule"). resize 32 = crop 32,
      # not 36 -> 32: evaluation sees the whole image at 32, and training at a 1.125x zoom cost textures_novel
      # 6 points (90.3 vs 96.2).
      finetune=base.FinetuneConfig(batch_size=64, base_lr=0.03, steps_scale=0.2, resize=32, crop=32,
                                   head_init="linear_probe"),
      tasks=tuple(f"world/{t}" for t in catalogue.DEMO_TASKS),
      oracle=False,  # the oracle (every expert fine-tuned) is evaluate_proxies' job
      seed=0,
      seeds=3,
  )
