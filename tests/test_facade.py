"""The scikit-learn-style facade: fit returns self and trains with the harness, learned
attributes end in _, and transform / score_samples / sample are what they claim to be.

The Bernoulli tests share one model fitted on data with a known 2-D latent (``latent_data``), so
that the fitted model has structure: on unstructured noise it collapses to its prior (q(z|x) =
p(z), mean KL ~3e-5), and then every importance-sampled log p(x) equals the ELBO and the codes
carry nothing, which would let broken estimators and encoders pass.  With nz = 2, log p(x) can be
integrated on a grid (``npvae.marginal.grid_log_px``), so score_samples is checked
against the exact answer, not only against the bound.  Everything is float64 and seeded, so the
facade's outputs can be compared with the library's own functions bit for bit.
"""
from types import SimpleNamespace

import numpy as np
import pytest

from npvae import VAEModel
from npvae.facade import NotFittedError
from npvae.marginal import grid_log_px, importance_sampled_log_px

D = 16                      # pixels


def latent_data(n=500, seed=0):
    """n binary vectors from a fixed 2-D latent model: z ~ N(0, I), x ~ Bernoulli(sigmoid(z W + b)).

    Returns (x (n, D), z (n, 2)).  W's entries ~ N(0, 2.5^2) make every pixel depend strongly on z
    (pixel correlations ~0.24 in absolute value on average), so a VAE with nz = 2 finds both latent
    directions; the 0.5 N(0, 1) biases keep the pixel means near 1/2 (0.43 to 0.67)."""
    rng = np.random.default_rng(seed)
    W, b = 2.5 * rng.standard_normal((2, D)), 0.5 * rng.standard_normal(D)
    z = rng.standard_normal((n, 2))
    p = 1.0 / (1.0 + np.exp(-(z @ W + b)))
    return (rng.random((n, D)) < p).astype(np.float64), z


@pytest.fixture(scope="module")
def fitted():
    """One fit shared by the Bernoulli tests (~2 s): 20000 training samples, 40 passes over 500 points.
    With these settings both latent units are active (Cov(E_q[z_j]) ~0.75 and 0.85), the mean KL is
    ~1.4 nats and the codes predict the true z with linear R^2 ~0.8 per coordinate."""
    X, Z = latent_data()
    # binarize="none": the data are already 0/1.  dtype float64: results below are compared exactly.
    model = VAEModel(nz=2, hidden=32, samples=20000, batch_size=20, lr=0.05, binarize="none", dtype="float64")
    params = model.get_params()
    returned = model.fit(X)
    return SimpleNamespace(model=model, returned=returned, params=params, X=X, Z=Z)


def test_fit_returns_self_and_sets_only_underscored_attributes(fitted):
    model = fitted.model
    assert fitted.returned is model
    # __init__ only stores hyper-parameters, and fit does not change them (scikit-learn's contract)
    assert not hasattr(VAEModel(), "vae_") and model.get_params() == fitted.params
    assert model.n_features_in_ == D and model.history_.shape[1] == 4 and model.history_[-1, 0] == 20000
    # an untrained decoder says 1/2 for every pixel: 16 log(1/2) = -11.09 nats; it learned
    assert model.history_[-1, 2] > D * np.log(0.5) + 2.0


def test_transform_is_the_posterior_mean_and_recovers_the_latent(fitted):
    model, X = fitted.model, fitted.X
    codes = model.transform(X)
    np.testing.assert_array_equal(codes, model.vae_.encode(X)[0])       # E_q[z|x] = mu(x), exactly
    assert codes.shape == (500, 2) and codes.dtype == np.float64
    # Structure, not a collapsed posterior: both units active (a collapsed one has variance ~1e-4
    # here; Burda et al.'s threshold is 0.01), and the codes predict the true latent linearly
    # (R^2 ~0.8 per coordinate; a code unrelated to z gives ~0).
    assert np.all(codes.var(axis=0) > 0.1), codes.var(axis=0)
    A = np.column_stack([codes, np.ones(len(codes))])
    coef = np.linalg.lstsq(A, fitted.Z, rcond=None)[0]
    r2 = 1.0 - ((fitted.Z - A @ coef) ** 2).sum(axis=0) / ((fitted.Z - fitted.Z.mean(axis=0)) ** 2).sum(axis=0)
    assert np.all(r2 > 0.5), r2


def test_score_samples_is_importance_sampling_and_beats_the_elbo(fitted):
    model, x = fitted.model, fitted.X[:40]
    log_px = model.score_samples(x)
    # the documented defaults: k = 5000 draws of q(z|x), noise from np.random.default_rng(0)
    expected, stderr = importance_sampled_log_px(model.vae_, x, 5000, rng=np.random.default_rng(0),
                                                 return_stderr=True)
    np.testing.assert_array_equal(log_px, expected)
    assert log_px.shape == (40,) and np.all(stderr < 0.05)
    # IS with k = 5000 against the ELBO of the same q (analytic KL, eq. 7; 4000 draws of log p(x|z)).
    # For a k = 1 estimate, or a model collapsed to its prior, the gaps are zero-mean noise;
    # here the mean gap is ~0.13 nats, ~14 standard errors (from the spread over the 40 points).
    elbo = model.vae_.elbo(x, np.random.default_rng(5).standard_normal((4000, 40, 2)), "B")
    gap = log_px - elbo
    assert gap.mean() > 4 * gap.std(ddof=1) / np.sqrt(len(gap)), (gap.mean(), gap.std(ddof=1))
    with pytest.raises(ValueError, match="0/1"):
        model.score_samples(np.full((2, D), 0.5))


def test_score_samples_matches_the_grid(fitted):
    """k and rng are passed through; the estimate is within 4 of its standard errors of the exact
    log p(x), integrated on a 301 x 301 grid over [-6, 6]^2 (cells of 0.04; the posterior sds here are
    0.3 and more, and a 601-point grid over [-8, 8]^2 moves the values by < 1e-7)."""
    model, x = fitted.model, fitted.X[:4]
    log_px = model.score_samples(x, k=20000, rng=np.random.default_rng(3))
    expected, stderr = importance_sampled_log_px(model.vae_, x, 20000, rng=np.random.default_rng(3),
                                                 return_stderr=True)
    np.testing.assert_array_equal(log_px, expected)
    exact = grid_log_px(model.vae_, x)
    # 4 standard errors (~0.005 each with k = 20000) plus 0.005 for IS's downward bias (~stderr^2 / 2)
    # and the grid's error; the tolerance is asserted below 0.05 nats, so the check stays sharp
    tol = 4 * stderr + 0.005
    assert np.all(tol < 0.05), tol
    assert np.all(np.abs(log_px - exact) <= tol), (log_px - exact, stderr)


def test_sample_is_reproducible_binary_and_looks_like_the_data(fitted):
    model, X = fitted.model, fitted.X
    S = model.sample(2000, np.random.default_rng(3))
    assert S.shape == (2000, D) and set(np.unique(S)) == {0.0, 1.0}
    np.testing.assert_array_equal(S, model.sample(2000, np.random.default_rng(3)))    # same seed, same x
    assert not np.array_equal(S, model.sample(2000, np.random.default_rng(4)))        # another seed
    # The samples reproduce the data's pixel correlations (which come from z): mean absolute difference
    # ~0.04, mostly the sampling noise of 500 data points; independent pixels (an untrained decoder)
    # are off by ~0.24, the data's own mean absolute correlation.
    off = ~np.eye(D, dtype=bool)
    diff = np.abs(np.corrcoef(S.T)[off] - np.corrcoef(X.T)[off])
    assert diff.mean() < 0.08, diff.mean()


def test_gaussian_model_and_errors():
    X = np.random.default_rng(1).random((120, 6))
    model = VAEModel(nz=2, hidden=5, likelihood="gaussian", samples=2000, batch_size=20).fit(X)
    assert model.vae_.arch.likelihood == "gaussian" and "dec.logvar.W" in model.vae_.params
    S = model.sample(3, np.random.default_rng(0))
    assert S.shape == (3, 6) and not np.isin(S, (0.0, 1.0)).any()        # real values, not 0/1
    assert model.transform(X).shape == (120, 2)
    # grey data are accepted by a Gaussian model's score_samples, and it is the IS estimate too
    np.testing.assert_array_equal(model.score_samples(X[:5], k=50, rng=np.random.default_rng(2)),
                                  importance_sampled_log_px(model.vae_, X[:5], 50, rng=np.random.default_rng(2)))
    with pytest.raises(NotFittedError, match="fit"):
        VAEModel().transform(X)
    with pytest.raises(ValueError, match="features"):
        model.transform(X[:, :5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAEModel(samples=100, batch_size=10).fit(X * 3)
    with pytest.raises(ValueError, match="larger than X"):
        VAEModel(samples=100, batch_size=500).fit(X)
    assert "nz=2" in repr(model) and VAEModel().set_params(nz=3).nz == 3
