"""Configs as code: `get_config("tiny")` or `get_config("paper")`."""

import importlib

from expert_hub.configs.base import (HEAD_INITS, Config, ExpertsConfig, FinetuneConfig, SelectionConfig,  # noqa: F401
                                     TrainConfig, UpstreamConfig, replace)

CONFIG_NAMES = ("tiny", "smoke", "paper")


def get_config(name="tiny"):
  """Returns the named Config. Raises ValueError naming the known configs."""
  if name not in CONFIG_NAMES:
    raise ValueError(f"Unknown config {name!r}; expected one of {CONFIG_NAMES}.")
  return importlib.import_module(f"expert_hub.configs.{name}").get_config()
