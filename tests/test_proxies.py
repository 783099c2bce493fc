"""Performance proxies: each against a hand-computed case or an independent numpy formula; invariances; and
selection writing every proxy's ranking to selection.json (library and binary)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_python
from expert_hub import configs
from expert_hub.hub import registry
from expert_hub.hub import session as session_lib
from expert_hub.selection import proxies
from expert_hub.selection import proxy_registry
from expert_hub.selection import select
from expert_hub.tasks import ArrayTask

# Five 2-D points; angles from the x axis: p0 0, p1 2.9, p2 90, p3 88.1, p4 47.7 degrees.
KNN_X = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [1.0, 1.1]])
KNN_Y = np.array([0, 0, 1, 1, 0])


def test_knn_hand_computed():
  # Cosine 1-NN (smallest angle): p0<->p1, p2<->p3 right; p4's nearest is p3 (40.4 deg, label 1): 4/5.
  assert proxies.knn_accuracy(KNN_X, KNN_Y)[0] == pytest.approx(0.8)
  # Cosine 3-NN: p2 and p3 see {each other, p4, p1} -> labels {1, 0, 0}: wrong; p4 sees p3 (40.4 deg), p2 (42.3)
  # and p1 (44.8) -> {1, 1, 0}: wrong; p0 and p1 see {each other, p4, p3} -> {0, 0, 1}: right. 2/5.
  assert proxies.knn_accuracy(KNN_X, KNN_Y, k=3)[0] == pytest.approx(0.4)
  # Euclidean 1-NN: p2's nearest is p4 (1.005, label 0) and p4's is p2 (label 1): both wrong: 3/5.
  accuracy, backend = proxies.knn_accuracy(KNN_X, KNN_Y, metric="euclidean")
  assert accuracy == pytest.approx(0.6) and backend == "exact"
  with pytest.raises(ValueError, match=r"metric 'manhattan'; expected one of \('cosine', 'euclidean'\)"):
    proxies.knn_accuracy(KNN_X, KNN_Y, metric="manhattan")
  with pytest.raises(ValueError, match=r"k=5; expected 1 <= k < num_examples \(5\)"):
    proxies.knn_accuracy(KNN_X, KNN_Y, k=5, metric="euclidean")


def test_linear_probe_hand_computed_cv():
  # 3 stratified folds: classes 0 and 1 (3 examples each, one per fold) are separated with a wide margin; class 2
  # has one example, which is never in its own training folds, so it is always wrong: 6/7.
  x1 = np.array([[-3.0], [-2.0], [-1.0], [1.0], [2.0], [3.0], [10.0]])
  y1 = np.array([0, 0, 0, 1, 1, 1, 2])
  accuracy, l2 = proxies.linear_probe_accuracy(x1, y1, num_folds=3)
  assert accuracy == pytest.approx(6 / 7) and l2 == 0.01
  assert proxies.linear_probe_accuracy(x1[:6], y1[:6], num_folds=3, l2=[0.0, 1.0]) == (1.0, 0.0)
  with pytest.raises(ValueError, match=r"num_folds=1; expected 2 <= num_folds <= num_examples \(7\)"):
    proxies.linear_probe_accuracy(x1, y1, num_folds=1)
  with pytest.raises(ValueError, match=r"num_folds=4; expected at most the largest class's 3"):
    proxies.linear_probe_accuracy(x1, y1, num_folds=4)
  with pytest.raises(ValueError, match=r"l2=-1.0; expected a non-negative"):
    proxies.linear_probe_accuracy(x1, y1, num_folds=3, l2=-1.0)


def test_probes_converge_where_the_former_iteration_caps_stopped_short():
  """Embedding-like features (rectified low-rank, more dimensions than examples) on which lbfgs needs more than
  the 100 (CV probe) and 200 (fine-tuning head) iterations the probes used to stop at: both now converge, so
  the probe accuracies reported beside fine-tuning are the probe's, not an early stop's. 512 dimensions, not 256:
  lbfgs needs 310-360 iterations on them at 1 or 2 BLAS threads; at 256 it needed more than 200 on earlier CI
  machines but 193-197 on an AVX-512 EPYC, where the guard below failed."""
  import warnings
  from sklearn import exceptions, linear_model, preprocessing as sk_preprocessing
  from expert_hub.transfer import linear_head
  rng = np.random.default_rng(0)
  labels = np.arange(200) % 10
  latent = rng.normal(size=(10, 4))[labels] + rng.normal(size=(200, 4))
  features = np.maximum(latent @ rng.normal(size=(4, 512)), 0) + 0.1 * rng.normal(size=(200, 512))
  standardised = sk_preprocessing.StandardScaler().fit_transform(features)
  with pytest.warns(exceptions.ConvergenceWarning):  # the data is as hard as claimed
    linear_model.LogisticRegression(C=1 / (0.01 * 200), max_iter=200).fit(standardised, labels)
  with warnings.catch_warnings():
    warnings.simplefilter("error", exceptions.ConvergenceWarning)
    accuracy, _ = proxies.linear_probe_accuracy(features, labels)
    kernel, bias = linear_head.fit(features, labels, size=10)
  assert 0.1 < accuracy <= 1.0
  assert np.mean(np.argmax(features @ kernel + bias, axis=1) == labels) > accuracy  # its own training data


def test_probes_fit_on_one_blas_thread_to_the_coefficients_of_the_librarys_own_count():
  """Every probe fit (the CV proxy and the fine-tune's head, through proxies.fit_probe) runs with BLAS held at
  PROBE_BLAS_THREADS, whatever the process's setting, and reaches what the default thread count reaches."""
  import threadpoolctl
  from sklearn import linear_model
  from expert_hub.selection import synthetic_features
  from expert_hub.transfer import linear_head
  features, labels = synthetic_features.synthetic_features(300, 64, 6, seed=0)
  seen = []
  real_fit = linear_model.LogisticRegression.fit

  def fit_recording_threads(self, x, y):
    seen.append({lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"})
    return real_fit(self, x, y)

  with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # a multi-threaded process, as on CI's 2 cores
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(linear_model.LogisticRegression, "fit", fit_recording_threads)
      accuracy = proxies.linear_probe_accuracy(features, labels, num_folds=3)
      kernel, bias = linear_head.fit(features, labels, size=6)
    assert seen == [{proxies.PROBE_BLAS_THREADS}] * 4  # 3 folds + the head
    assert proxies.linear_probe_accuracy(features, labels, num_folds=3, blas_threads=None) == accuracy
    default_kernel, default_bias = linear_head.fit(features, labels, size=6, blas_threads=None)
  np.testing.assert_allclose(kernel, default_kernel, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bias, default_bias, rtol=1e-5, atol=1e-6)
  assert proxies.PROBE_BLAS_THREADS == 1


def _gaussian_log_evidence(f, y, alpha, beta):
  """log N(y; 0, I / beta + F F^T / alpha): the marginal likelihood LogME maximises, in closed form."""
  cov = np.eye(len(y)) / beta + f @ f.T / alpha
  return -0.5 * (len(y) * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + y @ np.linalg.solve(cov, y))


@pytest.mark.parametrize("n,d", [(8, 3), (5, 7)])
def test_logme_is_the_maximised_evidence(n, d):
  rng = np.random.default_rng(1)
  f = rng.standard_normal((n, d))
  # A target partly explained by the features: the evidence peaks at a finite (alpha, beta). (With a target the
  # features explain exactly, as any target when n <= d, beta runs off to infinity.)
  y = 0.5 * f @ rng.standard_normal(d) + rng.standard_normal(n)
  score, alpha, beta = proxies.logme_evidence(f, y)
  assert score == pytest.approx(_gaussian_log_evidence(f, y, alpha, beta) / n, abs=1e-9)
  # The fixed point of You et al.'s Algorithm 1, in dense form.
  a = alpha * np.eye(d) + beta * f.T @ f
  m = beta * np.linalg.solve(a, f.T @ y)
  gamma = np.trace(beta * f.T @ f @ np.linalg.inv(a))
  assert alpha == pytest.approx(gamma / (m @ m), rel=1e-3)
  assert beta == pytest.approx((n - gamma) / np.sum((f @ m - y) ** 2), rel=1e-3)
  # ... and a maximum of the evidence.
  best = _gaussian_log_evidence(f, y, alpha, beta)
  for da, db in [(1.2, 1.0), (0.8, 1.0), (1.0, 1.2), (1.0, 0.8)]:
    assert _gaussian_log_evidence(f, y, alpha * da, beta * db) < best
  labels = np.array([0, 1, 2, 0, 1][:n] + [2, 0, 1][:max(0, n - 5)])
  per_class = [proxies.logme_evidence(f, (labels == c).astype(float))[0] for c in range(3)]
  assert proxies.logme(f, labels) == pytest.approx(np.mean(per_class))


def test_logme_stays_finite_where_the_evidence_is_a_limit():
  labels = np.arange(12) % 3
  # All-zero features explain nothing: y ~ N(0, I / beta), best at beta = n / y.y = 12 / 4 = 3, for every class.
  assert proxies.logme(np.zeros((12, 8)), labels) == pytest.approx(0.5 * np.log(3) - 0.5 * np.log(2 * np.pi) - 0.5)
  # Features that fit every class exactly (beta -> infinity): finite, and above features that explain little.
  separable = proxies.logme(np.eye(3)[labels], labels)
  assert np.isfinite(separable) and separable > proxies.logme(np.random.default_rng(0).normal(size=(12, 3)), labels)


def test_h_score_hand_computed():
  # f = 0, 2, 4, 6 with classes {0, 2}, {4, 6}: var f = (9+1+1+9)/4 = 5, class means 1, 1, 5, 5: var 4. H = 0.8.
  assert proxies.h_score(np.array([[0.0], [2.0], [4.0], [6.0]]), np.array([0, 0, 1, 1])) == pytest.approx(0.8)
  rng = np.random.default_rng(1)
  f, y = rng.standard_normal((7, 3)), np.array([0, 0, 1, 1, 2, 2, 2])
  cov_f = np.cov(f.T, bias=True)
  g = np.stack([f[y == c].mean(axis=0) for c in y])
  cov_g = np.cov(g.T, bias=True)
  assert proxies.h_score(f, y) == pytest.approx(np.trace(np.linalg.pinv(cov_f) @ cov_g))
  shrunk = 0.7 * cov_f + 0.3 * np.trace(cov_f) / 3 * np.eye(3)
  assert proxies.h_score(f, y, shrinkage=0.3) == pytest.approx(np.trace(np.linalg.inv(shrunk) @ cov_g))
  # n <= D, unshrunk: the covariance is not estimable and any features score num_classes - 1.
  assert proxies.h_score(rng.standard_normal((6, 10)), np.array([0, 1, 2, 0, 1, 2])) == pytest.approx(2.0)
  with pytest.raises(ValueError, match=r"shrinkage=1.0; expected a value in \[0, 1\)"):
    proxies.h_score(f, y, shrinkage=1.0)


def test_nce_hand_computed():
  z, y = np.array([0, 0, 1, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 1])
  # z=0 and z=2 determine y; z=1 holds y = 1, 1, 0: P(y|z=1) = 2/3, 1/3.
  assert proxies.nce(z, y) == pytest.approx(2 / 6 * np.log(2 / 3) + 1 / 6 * np.log(1 / 3))
  assert proxies.nce(z, z * 10 + 3) == 0.0
  with pytest.raises(ValueError, match=r"source_labels \(6,\) and labels \(5,\)"):
    proxies.nce(z, y[:5])


def test_leep_hand_computed_and_bounds_nce():
  # theta = [.8, .2], [.2, .8], labels 0, 1: P(y|z) = [[.8, .2], [.2, .8]]; each term is .8*.8 + .2*.2 = .68.
  logits = np.log(np.array([[0.8, 0.2], [0.2, 0.8]]))
  assert proxies.leep(logits, np.array([0, 1])) == pytest.approx(np.log(0.68))
  rng = np.random.default_rng(2)
  logits, y = rng.standard_normal((8, 3)) * 2, np.array([0, 1, 1, 0, 2, 2, 1, 0])
  theta = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  joint = np.zeros((3, 3))
  for i in range(8):
    joint[y[i]] += theta[i] / 8
  expected = np.mean([np.log(sum(joint[y[i], z] / joint[:, z].sum() * theta[i, z] for z in range(3)))
                      for i in range(8)])
  assert proxies.leep(logits, y) == pytest.approx(expected)
  # Nguyen et al. 2020, Theorem 1: LEEP >= NCE(Y | argmax theta) + mean log theta(x_i)_{z_i}.
  z = theta.argmax(axis=1)
  assert proxies.leep(logits, y) >= proxies.nce(z, y) + np.mean(np.log(theta[np.arange(8), z]))


def test_domain_prediction_hand_computed():
  # softmax([0, 0, 0]) = 1/3 each; softmax([ln 2, 0, 0]) = [1/2, 1/4, 1/4]. Expert labels {10, 12}:
  # (2/3 + 3/4) / 2 = 17/24.
  logits = np.array([[0.0, 0.0, 0.0], [np.log(2.0), 0.0, 0.0]])
  assert proxies.domain_prediction(logits, [10, 11, 12], [12, 10]) == pytest.approx(17 / 24)
  assert proxies.domain_prediction(logits, [10, 11, 12], [10, 11, 12]) == pytest.approx(1.0)
  with pytest.raises(ValueError, match=r"Expert label ids \[99\] are not among the generalist's 3 labels"):
    proxies.domain_prediction(logits, [10, 11, 12], [10, 99])


def test_references_and_missing_inputs():
  by_name = {name: proxy_registry.parse_proxies(name)[0]
             for name in ("random", "generalist", "leep", "domain_prediction")}
  rand = by_name["random"]
  a = rand.score(proxy_registry.ProxyInputs(expert="shapes", task="t1"))[0]
  assert a == rand.score(proxy_registry.ProxyInputs(expert="shapes", task="t1"))[0] and 0.0 <= a < 1.0
  assert a != rand.score(proxy_registry.ProxyInputs(expert="shapes", task="t2"))[0]
  reseeded = proxy_registry.parse_proxies("random(seed=1)")[0]
  assert a != reseeded.score(proxy_registry.ProxyInputs(expert="shapes", task="t1"))[0]
  # the same module scores alike wherever its export folder sits, by path or registry handle
  where = ["/tmp/run_a/export/world32/shapes/1", "/data/b/world32/shapes/1/", "world32/shapes/1"]
  assert len({rand.score(proxy_registry.ProxyInputs(expert=e, task="t1"))[0] for e in where}) == 1
  assert (rand.score(proxy_registry.ProxyInputs(expert="/a/pack#shapes_adapter", task="t1"))[0]
          != rand.score(proxy_registry.ProxyInputs(expert="/a/pack#glyphs_adapter", task="t1"))[0])
  gen = by_name["generalist"]
  assert gen.score(proxy_registry.ProxyInputs(is_generalist=True))[0] == 1.0
  assert gen.score(proxy_registry.ProxyInputs(is_generalist=False))[0] == 0.0
  inputs = proxy_registry.ProxyInputs(features=np.zeros((4, 2)), labels=np.arange(4), expert="w/shapes_adapter",
                               missing={"logits": "no `logits` endpoint"})
  with pytest.raises(proxy_registry.MissingInputError,
                     match=r"'leep' cannot score expert 'w/shapes_adapter': its logits is missing \(no `logits`"):
    by_name["leep"].score(inputs)
  with pytest.raises(proxy_registry.MissingInputError, match=r"its generalist_logits is missing \(not provided\)"):
    by_name["domain_prediction"].score(inputs)


def test_proxy_specs():
  parsed = proxy_registry.parse_proxies("knn(k=3, metric=euclidean), logme,linear_probe(l2=(0.1, 1.0))",
                                 defaults={"knn": {"k": 1, "backend": "exact"}})
  assert [p.name for p in parsed] == ["knn", "logme", "linear_probe"]
  assert parsed[0].params == {"k": 3, "metric": "euclidean", "backend": "exact"}
  assert [p.label for p in parsed] == ["knn(backend='exact', k=3, metric='euclidean')", "logme",
                                       "linear_probe(l2=(0.1, 1.0))"]
  assert proxy_registry.parse_proxies(["knn", "leep"])[0].label == "knn"
  assert set(proxy_registry.PROXIES) == {"knn", "linear_probe", "logme", "hscore", "nce", "leep", "domain_prediction",
                                  "generalist", "random"}
  with pytest.raises(ValueError, match=r"Unknown proxy 'logm'; expected one of \('knn', "):
    proxy_registry.parse_proxies("knn,logm")
  with pytest.raises(ValueError, match=r"Proxy 'knn' has no parameter\(s\) \['kk'\]; allowed: \['k', 'metric'"):
    proxy_registry.parse_proxies("knn(kk=3)")
  with pytest.raises(ValueError, match=r"Proxies \['logme'\] are requested more than once"):
    proxy_registry.parse_proxies("logme,knn,logme")
  with pytest.raises(ValueError, match="Unbalanced"):
    proxy_registry.parse_proxies("knn(k=3")
  registry = proxy_registry.ProxyRegistry()
  registry.register("mine", lambda inputs: (0.0, {}), {"features"})
  with pytest.raises(ValueError, match="'mine' is already registered"):
    registry.register("mine", lambda inputs: (1.0, {}), {"features"})


def test_separable_features_score_higher_than_random():
  rng = np.random.default_rng(3)
  labels = np.repeat(np.arange(3), 20)
  separable = np.eye(3)[labels] * 4.0 + rng.standard_normal((60, 3)) * 0.5
  noise = rng.standard_normal((60, 3))
  for name in ("knn", "linear_probe", "logme", "hscore", "knn(metric=euclidean)"):
    proxy = proxy_registry.parse_proxies(name)[0]
    good = proxy.score(proxy_registry.ProxyInputs(features=separable, labels=labels))[0]
    bad = proxy.score(proxy_registry.ProxyInputs(features=noise, labels=labels))[0]
    assert good > bad, (name, good, bad)
  # Logits that predict the task (one upstream label per class) beat random logits for NCE and LEEP.
  informative = np.eye(4)[labels] * 3.0 + rng.standard_normal((60, 4)) * 0.3
  for name in ("nce", "leep"):
    proxy = proxy_registry.parse_proxies(name)[0]
    good = proxy.score(proxy_registry.ProxyInputs(logits=informative, labels=labels))[0]
    bad = proxy.score(proxy_registry.ProxyInputs(logits=rng.standard_normal((60, 4)), labels=labels))[0]
    assert good > bad, (name, good, bad)


ALL = "knn,linear_probe,logme,hscore,nce,leep,domain_prediction,generalist,random"


def _experts(export_dir):
  return [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] not in registry.BASELINE_KINDS]


def _small_task(n=24):
  """24 random 32x32 images of 2 classes: enough to rank experts, without a TFDS pipeline."""
  images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  return ArrayTask({"train800val200": (images, np.arange(n) % 2)}, name="small")


def test_select_expert_ranks_by_every_proxy(export_dir, tmp_path, smoke_cfg):
  task = _small_task(40)
  experts = _experts(export_dir)
  sel_cfg = smoke_cfg.selection
  result = select.select_expert(task, experts, sel_cfg, str(tmp_path), 32, [export_dir], proxies=ALL)
  assert json.load(open(tmp_path / "selection.json")) == result
  assert list(result["proxies"]) == ALL.split(",") and result["proxy"] == "knn"
  generalist = [e["path"] for e in registry.list_experts([export_dir]) if e["kind"] == "generalist"][0]
  assert result["generalist"] == generalist
  for label, record in result["proxies"].items():
    assert not record["skipped"], (label, record["skipped"])
    ranked = [r["expert"] for r in record["ranking"]]
    assert sorted(ranked) == sorted(experts + ([generalist] if label == "generalist" else [])), label
    scores = [r["score"] for r in record["ranking"]]
    assert scores == sorted(scores, reverse=True) and record["selected"] == ranked[0], label
  assert result["proxies"]["generalist"]["selected"] == generalist
  dp = {r["expert"]: r["score"] for r in result["proxies"]["domain_prediction"]["ranking"]}
  assert all(0.0 < s < 1.0 for s in dp.values())
  # The first proxy is the top-level ranking, in its old format.
  assert result["selected"] == result["proxies"]["knn"]["selected"]
  assert [r["expert"] for r in result["ranking"]] == [r["expert"] for r in result["proxies"]["knn"]["ranking"]]
  assert all(set(r) == {"expert", "score", "embed_seconds", "knn_seconds"} for r in result["ranking"])


def test_logits_proxies_skip_or_fail_without_logits(export_dir, tmp_path, smoke_cfg, monkeypatch):
  task = _small_task()
  experts = _experts(export_dir)[:2]
  sel_cfg = configs.replace(smoke_cfg.selection, proxy="knn,nce")
  # An expert without a logits endpoint, as a packed adapter expert is: its module has no `logits`.
  real = session_lib.ModuleSession.module

  def load_without_logits(self, handle, **kwargs):
    module, path = real(self, handle, **kwargs)
    return (NoLogits(module) if handle == experts[1] else module), path

  class NoLogits:
    def __init__(self, module):
      self.module = module

    def __call__(self, *args, **kwargs):
      return self.module(*args, **kwargs)

  monkeypatch.setattr(session_lib.ModuleSession, "module", load_without_logits)
  result = select.select_expert(task, experts, sel_cfg, str(tmp_path), 32, [export_dir])
  nce = result["proxies"]["nce"]
  assert [r["expert"] for r in nce["ranking"]] == [experts[0]] and list(nce["skipped"]) == [experts[1]]
  assert "no `logits` endpoint" in nce["skipped"][experts[1]]
  assert len(result["proxies"]["knn"]["ranking"]) == 2
  with pytest.raises(proxy_registry.MissingInputError, match=rf"'nce' cannot score expert '{experts[1]}': its logits"):
    select.select_expert(task, experts, sel_cfg, str(tmp_path / "strict"), 32, [export_dir], strict=True)
  with pytest.raises(ValueError, match="Proxy 'nce' could not score any expert"):
    select.select_expert(task, experts[1:], sel_cfg, str(tmp_path / "none"), 32, [export_dir], proxies="nce,knn")


def test_select_expert_binary_with_several_proxies(export_dir, tmp_path):
  for c in ("round", "square"):  # a folder task: two classes of 6 flat images each
    os.makedirs(tmp_path / "task" / "train" / c)
    for i in range(6):
      Image.fromarray(np.full((32, 32, 3), 20 * i + (120 if c == "square" else 0), np.uint8)).save(
          tmp_path / "task" / "train" / c / f"{i}.png")
  out = tmp_path / "sel"
  proc = run_python(["binaries/select_expert.py", "--config=smoke", f"--export_dir={export_dir}", f"--workdir={out}",
                     f"--task=folder:{tmp_path / 'task'}", "--proxy=knn,logme,leep"])
  result = json.load(open(out / "selection.json"))
  assert list(result["proxies"]) == ["knn", "logme", "leep"] and result["num_examples"] == 12
  for record in result["proxies"].values():
    assert len(record["ranking"]) == len(_experts(export_dir)) and not record["skipped"]
  assert f"selected (knn): {result['selected']}" in proc.stdout and "== leep: selected" in proc.stdout


if __name__ == "__main__":
  import sys
  sys.exit(pytest.main([__file__, "-q"]))
