"""Seeds derived from one config seed: every random source of a run gets its own, stable across runs.

A stage's seed is a hash of the config seed and the stage's name (`derive(cfg.seed, "expert", "full", node)`),
so each expert, task and repetition draws independently of the others yet identically in every run, whatever
else ran before it in the process (a resumed run skips finished stages without shifting the rest).
"""

import hashlib

import keras


def derive(seed, *names):
  """A 31-bit seed from `seed` and the names of what it seeds (str or int)."""
  if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
    raise ValueError(f"seed={seed!r}; expected a non-negative integer.")
  text = "/".join([str(seed)] + [str(n) for n in names])
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def seed_everything(seed):
  """Seeds Python's, NumPy's, TensorFlow's and Keras' global generators (weight initialisers) with `seed`."""
  keras.utils.set_random_seed(seed)
