"""The classes of the embedded world: six visual domains, their groups, held-out classes and structured tasks.

Every class is a function `render(rng, size) -> uint8 [size, size, 3]`. Upstream classes form the label
hierarchy entity -> domain -> group -> class; downstream tasks use *held-out* classes of one domain (so that
domain's expert should help) or structured attributes (count, position) that belong to no domain.

The domains differ in what a network must see: silhouettes (shapes), periodic statistics (textures), fine
stroke layouts (glyphs), multi-part objects among distractors (scenes), specific hues (colours) and thin curves
(strokes). Position, scale, rotation, colour, clutter and noise vary in every image.
"""

import numpy as np

from expert_hub.data.world import render as r

TAU = 2 * np.pi


# ================================================================================================ shapes
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


# ================================================================================================ textures
def _rot(rng, size, freq):
  f = r.Frame(size, 0.0, 0.0, 1.0 / freq, rng.uniform(0, TAU))
  return f.u, f.v


def _stripes(rng, size):
  u, _ = _rot(rng, size, rng.uniform(2.5, 4.5))
  return np.sin(TAU * u)


def _wavy(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.5, 4.0))
  return np.sin(TAU * (u + 0.25 * np.sin(TAU * v * 0.7)))


def _zigzag(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.5, 4.0))
  return np.sin(TAU * (u + 0.6 * np.abs(np.mod(v, 1.0) - 0.5)))


def _rings(rng, size):
  cx, cy = rng.uniform(-0.5, 0.5, 2)
  x, y = r.grid(size)
  return np.sin(TAU * rng.uniform(2.5, 4.0) * np.sqrt((x - cx) ** 2 + (y - cy) ** 2))


def _checker(rng, size):
  u, v = _rot(rng, size, rng.uniform(1.5, 3.0))
  return np.sin(TAU * u) * np.sin(TAU * v)


def _dots(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.5, 4.0))
  d = np.sqrt((np.mod(u, 1.0) - 0.5) ** 2 + (np.mod(v, 1.0) - 0.5) ** 2)
  return 0.3 - d


def _grid_lines(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.0, 3.5))
  d = np.minimum(np.abs(np.mod(u, 1.0) - 0.5), np.abs(np.mod(v, 1.0) - 0.5))
  return 0.12 - d


def _argyle(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.0, 3.0))
  return np.abs(np.mod(u, 1.0) - 0.5) + np.abs(np.mod(v, 1.0) - 0.5) - 0.3


def _blobs(rng, size):
  return r.smooth_noise(rng, size, int(rng.integers(3, 6))) - 0.5


def _speckle(rng, size):
  cells = max(4, size // 3)
  return r.smooth_noise(rng, size, cells) - 0.5


def _marble(rng, size):
  u, v = _rot(rng, size, rng.uniform(1.5, 2.5))
  n = r.smooth_noise(rng, size, 4)
  return np.sin(TAU * (u + 1.5 * n))


def _cells(rng, size):
  x, y = r.grid(size)
  pts = rng.uniform(-1.1, 1.1, (int(rng.integers(8, 14)), 2)).astype(np.float32)
  d = np.sqrt((x[..., None] - pts[:, 0]) ** 2 + (y[..., None] - pts[:, 1]) ** 2)
  d.sort(axis=-1)
  return (d[..., 1] - d[..., 0]) - 0.08  # thin dark borders between Voronoi cells


TEXTURES = {
    "banded": {"stripes": _stripes, "wavy_stripes": _wavy, "zigzag_stripes": _zigzag, "rings": _rings},
    "lattice": {"checkerboard": _checker, "polka_dots": _dots, "grid_lines": _grid_lines, "argyle": _argyle},
    "organic": {"blobs": _blobs, "speckle": _speckle, "marble": _marble, "cells": _cells},
}


def _bricks(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.0, 3.0))
  row = np.floor(v * 2.0)
  uu = u + 0.5 * np.mod(row, 2)
  d = np.minimum(np.abs(np.mod(v * 2.0, 1.0) - 0.5) * 0.5, np.abs(np.mod(uu, 1.0) - 0.5))
  return d - 0.2


def _hatch(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.5, 4.0))
  return np.maximum(np.sin(TAU * (u + v) / 1.4), np.sin(TAU * (u - v) / 1.4)) - 0.6


def _spiral(rng, size):
  x, y = r.grid(size)
  cx, cy = rng.uniform(-0.4, 0.4, 2)
  rad, th = np.sqrt((x - cx) ** 2 + (y - cy) ** 2), np.arctan2(y - cy, x - cx)
  return np.sin(TAU * rng.uniform(2.0, 3.0) * rad + rng.choice([-1, 1]) * 2 * th)


def _sunburst(rng, size):
  x, y = r.grid(size)
  cx, cy = rng.uniform(-0.5, 0.5, 2)
  return np.sin(int(rng.integers(6, 10)) * np.arctan2(y - cy, x - cx) + rng.uniform(0, TAU))


def _scales(rng, size):
  u, v = _rot(rng, size, rng.uniform(2.0, 3.0))
  row = np.floor(v)
  uu = np.mod(u + 0.5 * np.mod(row, 2), 1.0) - 0.5
  vv = np.mod(v, 1.0)
  return np.sin(TAU * 1.5 * np.sqrt(uu ** 2 + vv ** 2))


TEXTURES_NOVEL = {"bricks": _bricks, "cross_hatch": _hatch, "spiral": _spiral, "sunburst": _sunburst,
                  "scales": _scales}


def make_texture_renderer(field):
  def render(rng, size):
    a, b = r.contrasting_pair(rng)
    value = field(rng, size)
    alpha = np.clip(0.5 + value * size / 8.0, 0.0, 1.0).astype(np.float32)
    canvas = r.blank(size, b)
    r.paint(canvas, alpha, a)
    return r.finish(rng, canvas, noise=(0.0, 0.08))
  return render


# ================================================================================================ glyphs
GLYPHS = {
    "digits": {f"digit_{c}": c for c in "0123456789"},
    "letters": {f"letter_{c.lower()}": c for c in "ACEFHL"},
    "symbols": {"symbol_plus": "+", "symbol_equals": "=", "symbol_hash": "#", "symbol_question": "?"},
}
GLYPHS_NOVEL = {f"letter_{c.lower()}": c for c in "KMNPRS"}


def make_glyph_renderer(char):
  def render(rng, size):
    canvas = r.background(rng, size)
    r.add_clutter(rng, canvas, int(rng.integers(0, 3)))
    f = r.random_frame(rng, size, scale=(0.45, 0.75), angle=0.35)
    ink = r.random_colour(rng, 0.0, 0.0)
    if abs(float(ink.mean() - canvas.mean())) < 0.25:
      ink = 1.0 - ink
    r.paint(canvas, r.glyph_alpha(f, char, bold=rng.uniform(0.0, 0.3)), ink)
    return r.finish(rng, canvas)
  return render


# ================================================================================================ scenes
def _house(u, v):
  return r.union(r.box(u, v - 0.3, 0.6, 0.5), r.polygon(u, (v + 0.45) / 0.7, 3, 0.75) * 0.7)


def _tower(u, v):
  return r.union(r.box(u, v - 0.15, 0.25, 0.85), r.polygon(u, (v + 1.0) / 0.6, 3, 0.4) * 0.6)


def _tent(u, v):
  return r.subtract(r.polygon(u, v + 0.15, 3, 1.0), r.box(u, v - 0.55, 0.12, 0.3))


def _bridge(u, v):
  return r.subtract(r.box(u, v, 1.0, 0.45), r.disk(u, v - 0.45, 0.6))


def _car(u, v):
  body = r.union(r.box(u, v, 0.95, 0.25), r.box(u + 0.1, v + 0.35, 0.45, 0.2))
  return r.union(body, r.disk(u + 0.55, v - 0.3, 0.22), r.disk(u - 0.55, v - 0.3, 0.22))


def _boat(u, v):
  hull = r.intersect(r.box(u, v - 0.45, 0.95, 0.2), np.abs(u) + (v - 0.25) * 1.2 - 1.0)
  return r.union(hull, r.polygon(u * 1.4 - 0.2, (v + 0.2) * 1.1, 3, 0.6) / 1.4, r.box(u, v, 0.04, 0.5))


def _rocket(u, v):
  return r.union(r.box(u, v, 0.25, 0.6), r.polygon(u, v + 0.8, 3, 0.3),
                 r.polygon(u * 0.8, -(v - 0.6), 3, 0.45))


def _truck(u, v):
  return r.union(r.box(u + 0.25, v, 0.65, 0.4), r.box(u - 0.65, v + 0.1, 0.3, 0.3),
                 r.disk(u + 0.5, v - 0.45, 0.2), r.disk(u - 0.6, v - 0.45, 0.2))


def _tree(u, v):
  return r.union(r.disk(u, v + 0.3, 0.6), r.box(u, v - 0.55, 0.14, 0.45))


def _sun(u, v):
  return r.union(r.disk(u, v, 0.5), r.subtract(r.star(u, v, 12, 0.2), r.disk(u, v, 0.62)))


def _mountain(u, v):
  return r.union(r.polygon(u + 0.35, v - 0.05, 3, 0.7), r.polygon(u - 0.4, v - 0.25, 3, 0.5))


def _flower(u, v):
  petals = r.union(*[r.disk(u - 0.35 * np.cos(a), v + 0.35 + 0.35 * np.sin(a), 0.22)
                     for a in np.linspace(0, TAU, 6, endpoint=False)])
  return r.union(petals, r.box(u, v - 0.45, 0.05, 0.5))


SCENES = {
    "buildings": {"house": _house, "tower": _tower, "tent": _tent, "bridge": _bridge},
    "vehicles": {"car": _car, "boat": _boat, "rocket": _rocket, "truck": _truck},
    "nature": {"tree": _tree, "sun": _sun, "mountain": _mountain, "flower": _flower},
}


def _snowman(u, v):
  return r.union(r.disk(u, v - 0.5, 0.45), r.disk(u, v + 0.15, 0.33), r.disk(u, v + 0.65, 0.22))


def _umbrella(u, v):
  canopy = r.intersect(r.disk(u, v, 0.9), v)
  return r.union(canopy, r.box(u, v - 0.45, 0.05, 0.45), r.box(u - 0.1, v - 0.88, 0.14, 0.05))


def _mushroom(u, v):
  return r.union(r.intersect(r.disk(u, v - 0.2, 0.85), v - 0.2), r.box(u, v - 0.45, 0.22, 0.45))


def _cloud(u, v):
  return r.union(r.disk(u + 0.45, v - 0.1, 0.4), r.disk(u, v + 0.15, 0.5), r.disk(u - 0.5, v - 0.1, 0.35),
                 r.box(u, v - 0.25, 0.8, 0.2))


def _windmill(u, v):
  blades = r.union(r.box(u, v + 0.35, 0.07, 0.6), r.box(u, v + 0.35, 0.6, 0.07))
  return r.union(blades, r.polygon(u, (v - 0.35) * 0.8, 3, 0.55) / 0.8)


SCENES_NOVEL = {"snowman": _snowman, "umbrella": _umbrella, "mushroom": _mushroom, "cloud": _cloud,
                "windmill": _windmill}


def _scene_background(rng, size):
  """Sky above a ground band at a random horizon."""
  x, y = r.grid(size)
  horizon = rng.uniform(0.2, 0.7)
  sky = r.hsv(r.jitter_hue(rng, 0.58, 0.08), rng.uniform(0.2, 0.7), rng.uniform(0.6, 1.0))
  ground = r.hsv(rng.uniform(0.05, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.6))
  canvas = r.blank(size, sky)
  r.paint(canvas, np.clip((y - horizon) * size / 2.0, 0, 1).astype(np.float32), ground)
  return canvas


def _draw_part(rng, canvas, sdf, frame, colour):
  r.paint(canvas, frame.alpha(sdf(frame.u, frame.v)), colour)


def make_scene_renderer(sdf):
  """The labelled object plus 1-3 smaller objects of other scene classes (but never of its own class)."""
  others = [f for group in SCENES.values() for f in group.values() if f is not sdf]

  def render(rng, size):
    canvas = _scene_background(rng, size)
    for i in rng.choice(len(others), int(rng.integers(1, 4)), replace=False):
      f = r.random_frame(rng, size, scale=(0.12, 0.2), angle=0.2, margin=0.85)
      _draw_part(rng, canvas, others[i], f, r.random_colour(rng, 0.2, 0.3) * 0.7 + canvas[0, 0] * 0.3)
    f = r.random_frame(rng, size, scale=(0.32, 0.55), angle=0.25)
    _draw_part(rng, canvas, sdf, f, r.random_colour(rng, 0.3, 0.3))
    return r.finish(rng, canvas)
  return render


# ================================================================================================ colours
RED, ORANGE, YELLOW, GREEN, CYAN, BLUE, PURPLE, MAGENTA = 0.0, 0.08, 0.16, 0.33, 0.5, 0.64, 0.75, 0.86
WHITE, BLACK = "white", "black"


def _named(rng, hue):
  if hue == WHITE:
    return r.hsv(0, rng.uniform(0, 0.1), rng.uniform(0.85, 1.0))
  if hue == BLACK:
    return r.hsv(0, rng.uniform(0, 0.2), rng.uniform(0.0, 0.15))
  return r.hsv(r.jitter_hue(rng, hue, 0.025), rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0))


def _tricolour(hues):
  def render(rng, size):
    f = r.Frame(size, 0, 0, 1.0, rng.uniform(0, TAU))
    canvas = r.blank(size, _named(rng, hues[0]))
    r.paint(canvas, f.alpha(-f.u - 0.33), _named(rng, hues[1]))
    r.paint(canvas, f.alpha(-f.u + 0.33), _named(rng, hues[2]))
    r.add_clutter(rng, canvas, int(rng.integers(0, 3)))
    return r.finish(rng, canvas)
  return render


def _gradient(h0, h1):
  def render(rng, size):
    f = r.Frame(size, 0, 0, 1.0, rng.uniform(0, TAU))
    t = np.clip((f.u + 1) / 2, 0, 1)[..., None]
    canvas = (_named(rng, h0) * (1 - t) + _named(rng, h1) * t).astype(np.float32)
    r.add_clutter(rng, canvas, int(rng.integers(0, 3)))
    return r.finish(rng, canvas)
  return render


def _palette(hues):
  def render(rng, size):
    n = r.smooth_noise(rng, size, int(rng.integers(3, 7)))
    cuts = np.quantile(n, [1 / 3, 2 / 3])
    canvas = r.blank(size, _named(rng, hues[0]))
    r.paint(canvas, (n > cuts[0]).astype(np.float32), _named(rng, hues[1]))
    r.paint(canvas, (n > cuts[1]).astype(np.float32), _named(rng, hues[2]))
    return r.finish(rng, canvas)
  return render


COLOURS = {
    "tricolours": {"tricolour_rwb": _tricolour((RED, WHITE, BLUE)), "tricolour_gwr": _tricolour((GREEN, WHITE, RED)),
                   "tricolour_byr": _tricolour((BLACK, YELLOW, RED)), "tricolour_bwb": _tricolour((BLUE, WHITE, BLACK))},
    "gradients": {"gradient_red_yellow": _gradient(RED, YELLOW), "gradient_blue_cyan": _gradient(BLUE, CYAN),
                  "gradient_green_purple": _gradient(GREEN, PURPLE), "gradient_magenta_orange": _gradient(MAGENTA, ORANGE)},
    "palettes": {"palette_warm": _palette((RED, ORANGE, YELLOW)), "palette_cool": _palette((BLUE, CYAN, GREEN)),
                 "palette_night": _palette((BLACK, PURPLE, BLUE)), "palette_candy": _palette((MAGENTA, WHITE, CYAN))},
}
COLOURS_NOVEL = {
    "tricolour_gwo": _tricolour((GREEN, WHITE, ORANGE)), "tricolour_rys": _tricolour((RED, YELLOW, GREEN)),
    "gradient_yellow_blue": _gradient(YELLOW, BLUE), "gradient_red_purple": _gradient(RED, PURPLE),
    "palette_forest": _palette((GREEN, BLACK, YELLOW)),
}


# ================================================================================================ strokes
def _curve(points_fn):
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


# ================================================================================================ structured
_STRUCTURED_SHAPES = [s for g in SHAPES.values() for s in g.values()]


def _object_in_cell(rng, canvas, cell, spacing, jitter, scale):
  """Paints one random structured shape near the centre of `cell` (row-major 3x3 grid)."""
  cx = (cell % 3 - 1) * spacing + rng.uniform(-jitter, jitter)
  cy = (cell // 3 - 1) * spacing + rng.uniform(-jitter, jitter)
  f = r.Frame(canvas.shape[0], cx, cy, rng.uniform(*scale), rng.uniform(0, TAU))
  sdf = _STRUCTURED_SHAPES[rng.integers(len(_STRUCTURED_SHAPES))]
  r.paint(canvas, f.alpha(sdf(f.u, f.v)), r.random_colour(rng))


def _count_renderer(count):
  """`count` small objects of random shapes and colours on non-overlapping cells of a 3x3 grid."""
  def render(rng, size):
    canvas = r.background(rng, size)
    for cell in rng.choice(9, count, replace=False):
      _object_in_cell(rng, canvas, cell, spacing=0.62, jitter=0.08, scale=(0.16, 0.24))
    return r.finish(rng, canvas)
  return render


def _position_renderer(cell):
  """One object of a random shape in grid cell `cell` (row-major 3x3), plus distractor clutter."""
  def render(rng, size):
    canvas = r.background(rng, size)
    r.add_clutter(rng, canvas, int(rng.integers(0, 3)))
    _object_in_cell(rng, canvas, cell, spacing=0.66, jitter=0.12, scale=(0.18, 0.3))
    return r.finish(rng, canvas)
  return render


# ================================================================================================ catalogue
def _domain(groups, make):
  return {group: {name: make(obj) for name, obj in classes.items()} for group, classes in groups.items()}


# domain -> group -> class -> renderer. Order is the label order.
UPSTREAM = {
    "shapes": _domain(SHAPES, make_shape_renderer),
    "textures": _domain(TEXTURES, make_texture_renderer),
    "glyphs": _domain(GLYPHS, make_glyph_renderer),
    "scenes": _domain(SCENES, make_scene_renderer),
    "colours": COLOURS,
    "strokes": _domain(STROKES, _curve),
}


def _task(domain, classes, description):
  return {"domain": domain, "classes": classes, "description": description}


# task -> {"domain": tied domain or None, "classes": {name: renderer}, "description"}.
TASKS = {
    "shapes_novel": _task("shapes", {k: make_shape_renderer(v) for k, v in SHAPES_NOVEL.items()},
                          "held-out silhouettes"),
    "textures_novel": _task("textures", {k: make_texture_renderer(v) for k, v in TEXTURES_NOVEL.items()},
                            "held-out textures"),
    "glyphs_novel": _task("glyphs", {k: make_glyph_renderer(v) for k, v in GLYPHS_NOVEL.items()},
                          "held-out letters"),
    "scenes_novel": _task("scenes", {k: make_scene_renderer(v) for k, v in SCENES_NOVEL.items()},
                          "held-out scene objects among distractors"),
    "colours_novel": _task("colours", COLOURS_NOVEL, "held-out colour layouts"),
    "strokes_novel": _task("strokes", {k: _curve(v) for k, v in STROKES_NOVEL.items()}, "held-out curves"),
    "count": _task(None, {f"count_{n}": _count_renderer(n) for n in range(1, 7)},
                   "number of objects (structured)"),
    "position": _task(None, {f"cell_{i}": _position_renderer(i) for i in range(9)},
                      "grid cell of the object (structured)"),
}


def upstream_classes():
  """[(domain, group, class_name, renderer)] in label order."""
  return [(d, g, c, fn) for d, groups in UPSTREAM.items() for g, classes in groups.items()
          for c, fn in classes.items()]
