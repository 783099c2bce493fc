"""The paper-scale configuration: BiT ResNet50x1 at 224 px on a user's TFDS upstream with its hierarchy.

Command (ImageNet-21k prepared in $DATA_DIR as TFDS `imagenet21k`, WordNet hierarchy exported to JSON):
  python binaries/run_pipeline.py --config=paper --workdir=$WD --data_dir=$DATA_DIR \
      --hierarchy_file=$DATA_DIR/imagenet21k_hierarchy.json
Cost: BiT-M's upstream run is ~90 epochs of 13 M images (order 10^20 FLOPs: weeks on a TPUv3-32); each expert
is a few epochs of its subtree (hours to a day on 8 accelerators); selection embeds 1,000 images per expert
(~1.5 min per expert at 224 px on this 2-core CPU, seconds on a GPU); each VTAB fine-tune is BiT-HyperRule's
500 steps at batch 512. Tasks are prepared TFDS datasets (`tfds:<name>`, VTAB splits mapped as in
expert_hub/tasks/sources.py).
"""

from expert_hub.configs import base
from expert_hub.models import adapters
from expert_hub.models import resnet_v2


def get_config():
  return base.Config(
      name="paper",
      model=resnet_v2.MODEL_SIZES["r50x1"],
      upstream=base.UpstreamConfig(tfds_name="imagenet21k", name="in21k", train_split="train",
                                   eval_split="validation", image_size=224),
      generalist=base.TrainConfig(batch_size=4096, steps=90 * 3200, base_lr=0.03 * 4096 / 256,
                                  warmup_steps=5000, schedule="step",
                                  decay_steps=(30 * 3200, 60 * 3200, 80 * 3200),
                                  checkpoint_every=5000, log_every=500),
      experts=base.ExpertsConfig(
          min_images=50_000, max_experts=None, min_depth=1, kinds=("full", "adapter"),
          full=base.TrainConfig(batch_size=4096, steps=10_000, base_lr=0.048, warmup_steps=500,
                                checkpoint_every=2000, log_every=200),
          adapter=base.TrainConfig(batch_size=4096, steps=10_000, base_lr=0.48, warmup_steps=500,
                                   checkpoint_every=2000, log_every=200, weight_decay=0.0),
          adapter_arch=adapters.AdapterConfig(reduction=4, placement="stage_input")),
      selection=base.SelectionConfig(proxy="knn", k=1, backend="auto", split="train800val200", batch_size=64),
      finetune=base.FinetuneConfig(batch_size=512, base_lr=0.003),
      tasks=("tfds:cifar100", "tfds:dtd", "tfds:oxford_flowers102"),
      oracle=False,
  )
