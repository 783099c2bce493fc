"""Silhouettes: round shapes, polygons and spiky shapes on cluttered backgrounds."""

import numpy as np

from expert_hub.data.world import render as r


def _heart(u, v):
  # The implicit heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, scaled to the unit frame.
  x, y = u * 1.25, -v * 1.25 + 0.2
  f = (x * x + y * y - 1) ** 3 - x * x * y ** 3
  return np.cbrt(f) * 0.5


SHAPES = {
    "round": {
        "disk": lambda u, v: r.disk(u, v),
        "ring": lambda u, v: np.abs(r.disk(u, v, 0.72)) - 0.28,
        "ellipse": lambda u, v: r.disk(u, v / 0.5) * 0.5,
        "semicircle": lambda u, v: r.intersect(r.disk(u, v + 0.4), v - 0.4 + 0.0 * u),
    },
    "polygon": {
        "triangle": lambda u, v: r.polygon(u, v, 3),
        "square": lambda u, v: r.polygon(u, v, 4),
        "pentagon": lambda u, v: r.polygon(u, v, 5),
        "hexagon": lambda u, v: r.polygon(u, v, 6),
    },
    "spiky": {
        "star": lambda u, v: r.star(u, v, 5, 0.42),
        "star_eight": lambda u, v: r.star(u, v, 8, 0.6),
        "plus": lambda u, v: r.union(r.box(u, v, 0.28, 1.0), r.box(u, v, 1.0, 0.28)),
        "gear": lambda u, v: r.subtract(r.star(u, v, 10, 0.78), r.disk(u, v, 0.3)),
    },
}
SHAPES_NOVEL = {
    "heart": _heart,
    "arrow": lambda u, v: r.union(r.box(u + 0.3, v, 0.55, 0.18), r.polygon((v) * 1.0, -(u - 0.45), 3, 0.55)),
    "crescent": lambda u, v: r.subtract(r.disk(u, v), r.disk(u - 0.45, v, 0.8)),
    "l_shape": lambda u, v: r.union(r.box(u + 0.55, v, 0.25, 0.9), r.box(u, v - 0.65, 0.8, 0.25)),
    "t_shape": lambda u, v: r.union(r.box(u, v + 0.65, 0.9, 0.25), r.box(u, v + 0.1, 0.25, 0.8)),
}


def make_shape_renderer(sdf):
  def render(rng, size):
    canvas = r.background(rng, size)
    r.add_clutter(rng, canvas, int(rng.integers(0, 3)))
    f = r.random_frame(rng, size, scale=(0.3, 0.6))
    r.paint(canvas, f.alpha(sdf(f.u, f.v)), r.random_colour(rng))
    return r.finish(rng, canvas)
  return render
