"""Synthetic frozen features with class structure, for benchmarks of what scores features (kNN, probes).

ReLU of a random projection of noisy low-dimensional class centres, like pooled CNN features: classes overlap
as `noise` sets (at 100 classes a 1-NN stays well below 100% accuracy), and the cost of scoring them is that of
real features of the same shape.
"""

import numpy as np


def synthetic_features(n, dim, num_classes, seed, latent=64, noise=1.6):
  """[n, dim] float32 ReLU features and [n] integer labels in [0, num_classes), a function of `seed`."""
  rng = np.random.RandomState(seed)
  centres = rng.randn(num_classes, latent).astype(np.float32)
  projection = (rng.randn(latent, dim) / np.sqrt(latent)).astype(np.float32)
  labels = rng.randint(0, num_classes, n)
  x = np.empty([n, dim], np.float32)
  for start in range(0, n, 20_000):
    z = centres[labels[start:start + 20_000]]
    z = z + noise * rng.randn(*z.shape).astype(np.float32)
    x[start:start + 20_000] = np.maximum(z @ projection, 0.0)
  return x, labels
