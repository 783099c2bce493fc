"""The classes of the embedded world: six visual domains, their groups, held-out classes and structured tasks.

Every class is a function `render(rng, size) -> uint8 [size, size, 3]`. Upstream classes form the label
hierarchy entity -> domain -> group -> class; downstream tasks use *held-out* classes of one domain (so that
domain's expert should help) or structured attributes (count, position) that belong to no domain.

The domains differ in what a network must see: silhouettes (shapes), periodic statistics (textures), fine
stroke layouts (glyphs), multi-part objects among distractors (scenes), specific hues (colours) and thin curves
(strokes). Position, scale, rotation, colour, clutter and noise vary in every image.
"""

from expert_hub.data.world.domains import colours, glyphs, scenes, shapes, strokes, structured, textures


def _domain(groups, make):
  return {group: {name: make(obj) for name, obj in classes.items()} for group, classes in groups.items()}


# domain -> group -> class -> renderer. Order is the label order.
UPSTREAM = {
    "shapes": _domain(shapes.SHAPES, shapes.make_shape_renderer),
    "textures": _domain(textures.TEXTURES, textures.make_texture_renderer),
    "glyphs": _domain(glyphs.GLYPHS, glyphs.make_glyph_renderer),
    "scenes": _domain(scenes.SCENES, scenes.make_scene_renderer),
    "colours": colours.COLOURS,
    "strokes": _domain(strokes.STROKES, strokes.make_curve_renderer),
}


def _task(domain, classes, description, augmentations=("flip", "crop")):
  return {"domain": domain, "classes": classes, "description": description, "augmentations": augmentations}


# task -> {"domain": tied domain or None, "classes": {name: renderer}, "description", "augmentations": the
# training augmentations that keep its labels}. A mirror image of a letter or a curve can be another class; a
# flip moves an object to the other column of the grid and a crop can move it across a cell; a crop can also cut
# an object out of a count.
TASKS = {
    "shapes_novel": _task("shapes", {k: shapes.make_shape_renderer(v) for k, v in shapes.SHAPES_NOVEL.items()},
                          "held-out silhouettes"),
    "textures_novel": _task("textures", {k: textures.make_texture_renderer(v)
                                         for k, v in textures.TEXTURES_NOVEL.items()}, "held-out textures"),
    "textures_fine": _task("textures", {k: textures.make_texture_renderer(v)
                                        for k, v in textures.TEXTURES_FINE.items()},
                           "held-out textures beside near twins"),
    "glyphs_novel": _task("glyphs", {k: glyphs.make_glyph_renderer(v) for k, v in glyphs.GLYPHS_NOVEL.items()},
                          "held-out letters", augmentations=("crop",)),
    "scenes_novel": _task("scenes", {k: scenes.make_scene_renderer(v) for k, v in scenes.SCENES_NOVEL.items()},
                          "held-out scene objects among distractors"),
    "colours_novel": _task("colours", colours.COLOURS_NOVEL, "held-out colour layouts"),
    "colours_fine": _task("colours", colours.COLOURS_FINE, "held-out tricolours one neighbouring hue apart"),
    "strokes_novel": _task("strokes", {k: strokes.make_curve_renderer(v) for k, v in strokes.STROKES_NOVEL.items()},
                           "held-out curves", augmentations=("crop",)),
    "count": _task(None, {f"count_{n}": structured.make_count_renderer(n) for n in range(1, 7)},
                   "number of objects (structured)", augmentations=("flip",)),
    "position": _task(None, {f"cell_{i}": structured.make_position_renderer(i) for i in range(9)},
                      "grid cell of the object (structured)", augmentations=()),
}


def upstream_classes():
  """[(domain, group, class_name, renderer)] in label order."""
  return [(d, g, c, fn) for d, groups in UPSTREAM.items() for g, classes in groups.items()
          for c, fn in classes.items()]


# The tasks the demo (configs.tiny) reports: one per domain and the structured ones, none at the ceiling for every
# model. colours_novel and textures_novel stay in the world as easy tasks (92-99% whatever the model; the smoke
# config and tests use colours_novel), each beside its finer twin.
DEMO_TASKS = ("shapes_novel", "textures_fine", "glyphs_novel", "scenes_novel", "colours_fine", "strokes_novel",
              "count", "position")
