"""A classification head fitted on frozen features: the linear probe as the fine-tune's starting point (LP-FT).

BiT fine-tunes from a zero head, so the first steps train the head on features the backbone is already
changing. Kumar et al. (2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-
Distribution") start instead from a logistic-regression probe fitted on the frozen features: fine-tuning then
begins at the probe's accuracy and its gradients reach the backbone without a random head's noise.
`FinetuneConfig.head_init = "linear_probe"` selects it (transfer/finetune.py), `FinetuneConfig.head_l2` its l2 (one
value, or several that `choose_l2` cross-validates).

The probe is the linear-probe proxy's estimator (selection/proxies.fit_probe): features standardised, a
multinomial scikit-learn LogisticRegression minimising mean cross-entropy + l2/2 ||W||^2 on one BLAS thread. The
standardisation is folded into the returned kernel and bias, so the head reads the backbone's raw features.
"""

import numpy as np

from expert_hub.selection import proxies


def fit(features, labels, size, l2=1e-2, max_iter=proxies.PROBE_MAX_ITER, blas_threads=proxies.PROBE_BLAS_THREADS):
  """(kernel [D, size], bias [size]) float32 of a probe on `features` [N, D] and integer `labels` [N].

  Columns of classes absent from `labels` (and the padding up to `size`, see finetune.head_size) stay 0. With
  two classes present, scikit-learn fits one logit z; the head gets -z/2 and +z/2, whose softmax is the same
  sigmoid(z).

  Raises:
    ValueError: features not finite or not [N, D], labels outside [0, size), or fewer than 2 classes.
  """
  features, labels = np.asarray(features, np.float64), np.asarray(labels)
  if features.ndim != 2 or labels.shape != (features.shape[0],):
    raise ValueError(f"features of shape {features.shape} and labels of shape {labels.shape}; expected [N, D] "
                     "and [N].")
  if not np.isfinite(features).all():
    raise ValueError(f"{int(np.sum(~np.isfinite(features)))} non-finite feature values; expected finite "
                     "features to fit the head on.")
  if labels.size and (labels.min() < 0 or labels.max() >= size):
    raise ValueError(f"labels in [{labels.min()}, {labels.max()}]; expected labels in [0, {size}).")
  classes = np.unique(labels)
  if len(classes) < 2:
    raise ValueError(f"labels hold {len(classes)} class(es) ({classes.tolist()}); expected at least 2.")
  scaler, probe = proxies.fit_probe(features, labels, l2, max_iter, blas_threads)
  coef, intercept = probe.coef_, probe.intercept_
  if len(classes) == 2:
    coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
  coef = coef / scaler.scale_  # w . (x - mean) / scale = (w / scale) . x - (w / scale) . mean
  intercept = intercept - coef @ scaler.mean_
  kernel, bias = np.zeros([features.shape[1], size]), np.zeros([size])
  kernel[:, probe.classes_], bias[probe.classes_] = coef.T, intercept
  return kernel.astype(np.float32), bias.astype(np.float32)


def choose_l2(features, labels, l2, seed):
  """The probe's l2 for `features` [N, D] and integer `labels` [N]: `l2` itself when it is one number; of several,
  the one whose probe reaches the best 5-fold cross-validated accuracy (proxies.linear_probe_accuracy, folds
  shuffled by `seed`; the first of a tie)."""
  grid = [float(v) for v in (l2 if isinstance(l2, (tuple, list)) else [l2])]
  if len(grid) == 1:
    return grid[0]
  return proxies.linear_probe_accuracy(features, labels, l2=grid, seed=seed)[1]
