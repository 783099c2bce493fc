"""Structured attributes that belong to no domain: object count and grid position."""

import numpy as np

from expert_hub.data.world import render as r
from expert_hub.data.world.domains import shapes

TAU = 2 * np.pi


_STRUCTURED_SHAPES = [s for g in shapes.SHAPES.values() for s in g.values()]


def _object_in_cell(rng, canvas, cell, spacing, jitter, scale):
  """Paints one random structured shape near the centre of `cell` (row-major 3x3 grid)."""
  cx = (cell % 3 - 1) * spacing + rng.uniform(-jitter, jitter)
  cy = (cell // 3 - 1) * spacing + rng.uniform(-jitter, jitter)
  f = r.Frame(canvas.shape[0], cx, cy, rng.uniform(*scale), rng.uniform(0, TAU))
  sdf = _STRUCTURED_SHAPES[rng.integers(len(_STRUCTURED_SHAPES))]
  r.paint(canvas, f.alpha(sdf(f.u, f.v)), r.random_colour(rng))


def make_count_renderer(count):
  """`count` small objects of random shapes and colours on non-overlapping cells of a 3x3 grid."""
  def render(rng, size):
    canvas = r.background(rng, size)
    for cell in rng.choice(9, count, replace=False):
      _object_in_cell(rng, canvas, cell, spacing=0.62, jitter=0.08, scale=(0.16, 0.24))
    return r.finish(rng, canvas)
  return render


def make_position_renderer(cell):
  """One object of a random shape in grid cell `cell` (row-major 3x3), plus distractor clutter."""
  def render(rng, size):
    canvas = r.background(rng, size)
    r.add_clutter(rng, canvas, int(rng.integers(0, 3)))
    _object_in_cell(rng, canvas, cell, spacing=0.66, jitter=0.12, scale=(0.18, 0.3))
    return r.finish(rng, canvas)
  return render
