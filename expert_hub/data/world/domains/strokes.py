"""Thin curves: periodic, closed and open line drawings."""

import numpy as np

from expert_hub.data.world import render as r

TAU = 2 * np.pi


def make_curve_renderer(points_fn):
  def render(rng, size):
    canvas = r.background(rng, size)
    r.add_clutter(rng, canvas, int(rng.integers(0, 2)))
    f = r.random_frame(rng, size, scale=(0.45, 0.7))
    ink = r.random_colour(rng, 0.3, 0.0)
    if abs(float(ink.mean() - canvas.mean())) < 0.2:
      ink = 1.0 - ink
    width = rng.uniform(0.5, 1.2) * f.pixel * 1.5 + 0.04
    r.paint(canvas, f.line_alpha(r.segment_distance(f.u, f.v, points_fn()), width), ink)
    return r.finish(rng, canvas)
  return render


def _param(fx, fy, t0=0.0, t1=1.0, n=40):
  t = np.linspace(t0, t1, n)
  return lambda: np.stack([fx(t), fy(t)], -1)


def _outline(n_sides, star_inner=None):
  k = n_sides * (2 if star_inner else 1)
  a = np.linspace(0, TAU, k + 1) - np.pi / 2
  rad = np.ones(k + 1)
  if star_inner:
    rad[1::2] = star_inner
  return lambda: np.stack([rad * np.cos(a), rad * np.sin(a)], -1)


STROKES = {
    "periodic": {
        "sine_wave": _param(lambda t: 2 * t - 1, lambda t: 0.5 * np.sin(TAU * 2 * t)),
        "zigzag": _param(lambda t: 2 * t - 1, lambda t: 0.5 * (2 * np.abs(np.mod(4 * t, 1) - 0.5) * 2 - 1), n=9),
        "square_wave": lambda: np.array([[-1, .4], [-.5, .4], [-.5, -.4], [0, -.4], [0, .4], [.5, .4], [.5, -.4],
                                         [1, -.4]]),
        "coil": _param(lambda t: 2 * t - 1 + 0.25 * np.cos(TAU * 4 * t), lambda t: 0.4 * np.sin(TAU * 4 * t), n=80),
    },
    "closed": {
        "circle_outline": _param(lambda t: np.cos(TAU * t), lambda t: np.sin(TAU * t)),
        "square_outline": _outline(4),
        "triangle_outline": _outline(3),
        "spiral_curve": _param(lambda t: t * np.cos(TAU * 2.5 * t), lambda t: t * np.sin(TAU * 2.5 * t), n=80),
    },
    "open": {
        "arc": _param(lambda t: np.cos(np.pi * t), lambda t: np.sin(np.pi * t) - 0.5),
        "hook": _param(lambda t: np.where(t < 0.5, 0.3, 0.3 - 0.5 * np.sin(np.pi * (2 * t - 1))),
                       lambda t: np.where(t < 0.5, -1 + 3.2 * t, 0.6 - 0.5 * np.cos(np.pi * (2 * t - 1)) + 0.5)),
        "s_curve": _param(lambda t: 0.5 * np.sin(TAU * t), lambda t: 2 * t - 1),
        "chevron": lambda: np.array([[-0.9, -0.6], [0.0, 0.6], [0.9, -0.6]]),
    },
}
STROKES_NOVEL = {
    "figure_eight": _param(lambda t: 0.9 * np.sin(TAU * t), lambda t: 0.6 * np.sin(2 * TAU * t), n=60),
    "star_outline": _outline(5, star_inner=0.45),
    "pentagon_outline": _outline(5),
    "wavy_circle": _param(lambda t: (0.8 + 0.2 * np.sin(8 * TAU * t)) * np.cos(TAU * t),
                          lambda t: (0.8 + 0.2 * np.sin(8 * TAU * t)) * np.sin(TAU * t), n=120),
    "double_arc": lambda: np.concatenate([
        _param(lambda t: np.cos(np.pi * t), lambda t: np.sin(np.pi * t) - 0.6)(),
        np.full((1, 2), np.nan),
        _param(lambda t: 0.6 * np.cos(np.pi * t), lambda t: 0.6 * np.sin(np.pi * t) - 0.6)()]),
}
