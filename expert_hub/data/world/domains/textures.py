"""Full-frame periodic and organic patterns in two random contrasting colours."""

import numpy as np

from expert_hub.data.world import render as r

TAU = 2 * np.pi


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


def _tiles(rng, size):
  """Bricks without the half-brick offset between rows."""
  u, v = _rot(rng, size, rng.uniform(2.0, 3.0))
  d = np.minimum(np.abs(np.mod(v * 2.0, 1.0) - 0.5) * 0.5, np.abs(np.mod(u, 1.0) - 0.5))
  return d - 0.2


def _diamonds(rng, size):
  """A cross-hatch whose two line families meet at a flatter angle."""
  u, v = _rot(rng, size, rng.uniform(2.5, 4.0))
  return np.maximum(np.sin(TAU * (u + 0.5 * v) / 1.4), np.sin(TAU * (u - 0.5 * v) / 1.4)) - 0.6


def _fan(rng, size):
  """A sunburst with 3-4 broad rays instead of 6-9."""
  x, y = r.grid(size)
  cx, cy = rng.uniform(-0.5, 0.5, 2)
  return np.sin(int(rng.integers(3, 5)) * np.arctan2(y - cy, x - cx) + rng.uniform(0, TAU))


def _target(rng, size):
  """Rings about an off-centre point, bent by a threefold ripple (a spiral without the turn)."""
  x, y = r.grid(size)
  cx, cy = rng.uniform(-0.4, 0.4, 2)
  rad, th = np.sqrt((x - cx) ** 2 + (y - cy) ** 2), np.arctan2(y - cy, x - cx)
  return np.sin(TAU * rng.uniform(2.0, 3.0) * rad + 0.5 * np.sin(3 * th))


# The held-out textures and a near twin of four of them, so that classes differ in finer periodic structure:
# frozen 1-NN on the generalist's features reaches 68%, on the textures expert's 73% (README,
# "Variants"), where textures_novel sits at 92-96% for every model.
TEXTURES_FINE = dict(TEXTURES_NOVEL, tiles=_tiles, diamonds=_diamonds, fan=_fan, target=_target)


def make_texture_renderer(field):
  def render(rng, size):
    a, b = r.contrasting_pair(rng)
    value = field(rng, size)
    alpha = np.clip(0.5 + value * size / 8.0, 0.0, 1.0).astype(np.float32)
    canvas = r.blank(size, b)
    r.paint(canvas, alpha, a)
    return r.finish(rng, canvas, noise=(0.0, 0.08))
  return render
