"""The `smoke` configuration: `tiny` shrunk to a couple of minutes, for the end-to-end test and quick checks.

Command:  python binaries/run_pipeline.py --config=smoke --workdir=/tmp/expert_hub_smoke
Cost:     about 2 minutes on a 2-core CPU. Its numbers mean nothing; it proves every stage runs.
"""

from expert_hub.configs import base
from expert_hub.configs import tiny


def get_config():
  cfg = tiny.get_config()
  return base.replace(
      cfg, name="smoke", seeds=2,
      tasks=("world/colours_novel", "world/count"),
      **{"upstream.tfds_name": "expert_hub_world/upstream_mini_32", "upstream.name": "mini32",
         "generalist.steps": 40, "generalist.checkpoint_every": 20, "generalist.log_every": 20,
         "generalist.warmup_steps": 5,
         "experts.min_images": 100, "experts.max_experts": 2,
         "experts.full.steps": 10, "experts.full.warmup_steps": 2, "experts.full.log_every": 5,
         "experts.adapter.steps": 10, "experts.adapter.warmup_steps": 2, "experts.adapter.log_every": 5,
         "finetune.steps": 20})
