"""The embedded procedural world: renderers, class catalogue and the `expert_hub_world` TFDS builder."""

from expert_hub.data.world.builder import ExpertHubWorld, WorldConfig, world_hierarchy  # noqa: F401
