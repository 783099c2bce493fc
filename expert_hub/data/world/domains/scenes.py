"""Multi-part objects (buildings, vehicles, nature) on sky and ground, among smaller distractors."""

import numpy as np

from expert_hub.data.world import render as r

TAU = 2 * np.pi


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
