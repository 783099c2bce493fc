"""Characters of a 5x7 bitmap font: digits, letters and symbols, slightly rotated."""

from expert_hub.data.world import render as r


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
