"""Numpy drawing primitives for the procedural world: soft-edged shapes, curves, textures, glyphs.

Everything works on a canvas of float32 [S, S, 3] in [0, 1] and a coordinate grid in [-1, 1]. Shapes are
signed distance functions (negative inside) in a unit frame; `place` maps the canvas grid into that frame
with a random centre, scale and rotation, and edges are anti-aliased over one pixel so that 32 px images stay
legible.
"""

import colorsys
import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def grid(size):
  """(x, y) coordinate grids of shape [size, size] spanning [-1, 1] at pixel centres."""
  c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
  y, x = np.meshgrid(c, c, indexing="ij")
  return x, y


class Frame:
  """A similarity transform from canvas coordinates into a shape's unit frame."""

  def __init__(self, size, cx=0.0, cy=0.0, scale=1.0, angle=0.0):
    x, y = grid(size)
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    self.u = (cos * dx + sin * dy) / scale
    self.v = (-sin * dx + cos * dy) / scale
    self.pixel = 2.0 / size / scale  # one canvas pixel in unit-frame units
    self.size = size

  def alpha(self, sdf):
    """Anti-aliased coverage of the region where sdf < 0."""
    return np.clip(0.5 - sdf / self.pixel, 0.0, 1.0).astype(np.float32)

  def line_alpha(self, dist, width):
    """Coverage of a stroke of half-width `width` (unit frame) around a distance field."""
    return self.alpha(dist - width)


def random_frame(rng, size, scale=(0.35, 0.6), angle=np.pi, margin=None):
  """A Frame at a random position/scale/rotation that keeps the unit shape mostly on the canvas."""
  s = rng.uniform(*scale)
  m = (1.0 - s) if margin is None else margin
  m = max(m, 0.0)
  return Frame(size, rng.uniform(-m, m), rng.uniform(-m, m), s, rng.uniform(-angle, angle))


# ----------------------------------------------------------------------------------------------- colours
def hsv(h, s, v):
  return np.array(colorsys.hsv_to_rgb(h % 1.0, np.clip(s, 0, 1), np.clip(v, 0, 1)), np.float32)


def random_colour(rng, min_s=0.4, min_v=0.5):
  return hsv(rng.uniform(), rng.uniform(min_s, 1.0), rng.uniform(min_v, 1.0))


def contrasting_pair(rng):
  """Two random colours that differ clearly in brightness, so colour-agnostic patterns stay visible."""
  a = random_colour(rng, 0.2, 0.1)
  while True:
    b = random_colour(rng, 0.2, 0.1)
    if abs(float(a.mean() - b.mean())) > 0.3:
      return a, b


def jitter_hue(rng, hue, amount=0.03):
  return (hue + rng.uniform(-amount, amount)) % 1.0


# ----------------------------------------------------------------------------------------------- canvas
def blank(size, colour):
  return np.broadcast_to(np.asarray(colour, np.float32), (size, size, 3)).copy()


def paint(canvas, alpha, colour):
  """Alpha-composites a flat colour onto the canvas in place."""
  a = alpha[..., None]
  canvas *= 1.0 - a
  canvas += a * np.asarray(colour, np.float32)
  return canvas


def smooth_noise(rng, size, cells):
  """Value noise in [0, 1]: a cells x cells random grid, bilinearly upsampled to size x size."""
  g = rng.uniform(size=(cells + 1, cells + 1)).astype(np.float32)
  t = np.linspace(0, cells, size, dtype=np.float32)
  i = np.minimum(t.astype(int), cells - 1)
  f = t - i
  rows = g[i] * (1 - f)[:, None] + g[i + 1] * f[:, None]
  return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def background(rng, size):
  """A plain, gradient or low-contrast noisy background."""
  kind = rng.integers(3)
  base = random_colour(rng, 0.0, 0.2)
  if kind == 0:
    return blank(size, base)
  if kind == 1:
    x, y = grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * x + np.sin(angle) * y + 1.0) / 2.0
    other = random_colour(rng, 0.0, 0.2)
    return (base * (1 - t[..., None]) + other * t[..., None]).astype(np.float32)
  n = smooth_noise(rng, size, int(rng.integers(2, 6)))
  return (base * (0.75 + 0.5 * n[..., None])).clip(0, 1).astype(np.float32)


def add_clutter(rng, canvas, count):
  """Small low-contrast distractor blobs and strokes that carry no label."""
  size = canvas.shape[0]
  for _ in range(count):
    f = random_frame(rng, size, scale=(0.05, 0.15), margin=0.9)
    colour = canvas.mean(axis=(0, 1)) * 0.5 + random_colour(rng, 0.0, 0.0) * 0.5
    if rng.uniform() < 0.5:
      paint(canvas, f.alpha(disk(f.u, f.v)), colour)
    else:
      paint(canvas, f.alpha(box(f.u, f.v, 1.0, 0.25)), colour)
  return canvas


def finish(rng, canvas, noise=(0.0, 0.06)):
  """Random contrast/brightness and Gaussian pixel noise, then uint8."""
  contrast = rng.uniform(0.8, 1.1)
  brightness = rng.uniform(-0.08, 0.08)
  img = (canvas - 0.5) * contrast + 0.5 + brightness
  img = img + rng.normal(0.0, rng.uniform(*noise), img.shape).astype(np.float32)
  return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- SDFs
def disk(u, v, r=1.0):
  return np.sqrt(u * u + v * v) - r


def box(u, v, hw, hh):
  return np.maximum(np.abs(u) - hw, np.abs(v) - hh)


def polygon(u, v, n, r=1.0):
  """Regular n-gon of circumradius r (exact along edges, close enough at corners)."""
  theta = np.arctan2(v, u) + np.pi / 2
  sector = 2 * np.pi / n
  local = np.mod(theta, sector) - sector / 2
  return np.sqrt(u * u + v * v) * np.cos(local) - r * np.cos(np.pi / n)


def star(u, v, points=5, inner=0.45):
  theta = np.arctan2(v, u) + np.pi / 2
  sector = 2 * np.pi / points
  t = np.abs(np.mod(theta, sector) - sector / 2) / (sector / 2)  # 0 at tips, 1 between them
  radius = inner + (1.0 - inner) * (1.0 - t)
  return np.sqrt(u * u + v * v) - radius


def union(*sdfs):
  return functools.reduce(np.minimum, sdfs)


def intersect(*sdfs):
  return functools.reduce(np.maximum, sdfs)


def subtract(a, b):
  return np.maximum(a, -b)


def segment_distance(u, v, points):
  """Distance from every pixel to a polyline given as an [N, 2] array of unit-frame points."""
  p = np.asarray(points, np.float32)
  a, b = p[:-1], p[1:]
  d = b - a
  px = u[..., None] - a[:, 0]
  py = v[..., None] - a[:, 1]
  length2 = np.maximum((d * d).sum(-1), 1e-9)
  t = np.clip((px * d[:, 0] + py * d[:, 1]) / length2, 0.0, 1.0)
  ex, ey = px - t * d[:, 0], py - t * d[:, 1]
  return np.sqrt(np.nanmin(ex * ex + ey * ey, axis=-1))  # NaN points split the polyline


# ----------------------------------------------------------------------------------------------- glyphs
# A 5x7 bitmap font: each glyph is seven rows of five pixels.
FONT = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "C": ["01110", "10001", "10000", "10000", "10000", "10001", "01110"],
    "D": ["11100", "10010", "10001", "10001", "10001", "10010", "11100"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "F": ["11111", "10000", "10000", "11110", "10000", "10000", "10000"],
    "G": ["01110", "10001", "10000", "10111", "10001", "10001", "01111"],
    "H": ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],
    "J": ["00111", "00010", "00010", "00010", "00010", "10010", "01100"],
    "K": ["10001", "10010", "10100", "11000", "10100", "10010", "10001"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "M": ["10001", "11011", "10101", "10101", "10001", "10001", "10001"],
    "N": ["10001", "10001", "11001", "10101", "10011", "10001", "10001"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    "V": ["10001", "10001", "10001", "10001", "10001", "01010", "00100"],
    "W": ["10001", "10001", "10001", "10101", "10101", "10101", "01010"],
    "X": ["10001", "10001", "01010", "00100", "01010", "10001", "10001"],
    "Y": ["10001", "10001", "01010", "00100", "00100", "00100", "00100"],
    "Z": ["11111", "00001", "00010", "00100", "01000", "10000", "11111"],
    "+": ["00000", "00100", "00100", "11111", "00100", "00100", "00000"],
    "=": ["00000", "00000", "11111", "00000", "11111", "00000", "00000"],
    "#": ["01010", "01010", "11111", "01010", "11111", "01010", "01010"],
    "%": ["11001", "11010", "00010", "00100", "01000", "01011", "10011"],
    "?": ["01110", "10001", "00001", "00010", "00100", "00000", "00100"],
    "&": ["01100", "10010", "10100", "01000", "10101", "10010", "01101"],
    "$": ["00100", "01111", "10100", "01110", "00101", "11110", "00100"],
    "@": ["01110", "10001", "10111", "10101", "10111", "10000", "01111"],
    "<": ["00010", "00100", "01000", "10000", "01000", "00100", "00010"],
    ">": ["01000", "00100", "00010", "00001", "00010", "00100", "01000"],
}


@functools.lru_cache(maxsize=None)
def _bitmap(char):
  return np.array([[c == "1" for c in row] for row in FONT[char]], np.float32)


def glyph_alpha(frame, char, bold=0.0):
  """Coverage of a glyph in the unit frame (its cell grid spans u in [-5/7, 5/7], v in [-1, 1])."""
  bitmap = _bitmap(char)
  col = (frame.u / (10.0 / 7.0) + 0.5) * 5.0
  row = (frame.v / 2.0 + 0.5) * 7.0
  inside = (col >= 0) & (col < 5) & (row >= 0) & (row < 7)
  ci = np.clip(col.astype(int), 0, 4)
  ri = np.clip(row.astype(int), 0, 6)
  hard = np.where(inside, bitmap[ri, ci], 0.0)
  if bold > 0:  # thicken strokes by sampling the neighbours a fraction of a cell away
    for dc, dr in ((bold, 0), (-bold, 0), (0, bold), (0, -bold)):
      c2 = np.clip((col + dc).astype(int), 0, 4)
      r2 = np.clip((row + dr).astype(int), 0, 6)
      ok = (col + dc >= 0) & (col + dc < 5) & (row + dr >= 0) & (row + dr < 7)
      hard = np.maximum(hard, np.where(ok, bitmap[r2, c2], 0.0))
  return hard.astype(np.float32)
