"""Downstream tasks: the embedded world's, TFDS datasets, image folders and arrays."""

from expert_hub.tasks.base import VTAB_SPLITS, ArrayTask, Task  # noqa: F401
from expert_hub.tasks.sources import FolderTask, TfdsTask, get_task, world_task  # noqa: F401
