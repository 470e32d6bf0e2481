"""The scikit-learn-style facade: fit returns self and trains with the harness, learned
attributes end in _, transform / score_samples / sample have the documented shapes and meaning."""
import numpy as np
import pytest

from npvae import VAEModel
from npvae.facade import NotFittedError


def data(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)) * (rng.random(d) < 0.5)          # grey levels, some always-off pixels


def test_fit_transform_score_sample():
    X = data()
    model = VAEModel(nz=2, hidden=8, samples=6000, batch_size=20, lr=0.05)
    assert model.fit(X) is model and not hasattr(VAEModel(), "vae_")
    assert model.n_features_in_ == 16 and model.history_.shape[1] == 4 and model.history_[-1, 0] == 6000
    Z = model.transform(X)
    assert Z.shape == (300, 2) and np.isfinite(Z).all()
    Xb = (X > 0.5).astype(float)
    log_px = model.score_samples(Xb[:20], k=200, rng=np.random.default_rng(1))
    eps = np.random.default_rng(2).standard_normal((200, 20, 2))
    elbo = model.vae_.elbo(Xb[:20], eps).mean()                   # the bound, averaged over 200 draws
    assert log_px.shape == (20,) and log_px.mean() >= elbo - 0.05   # IS(k) sits at or above the ELBO
    # an untrained decoder says 1/2 for every pixel: 16 log(1/2) = -11.09 nats; it learned
    assert model.history_[-1, 2] > 16 * np.log(0.5) + 2.0
    S = model.sample(5, np.random.default_rng(3))
    assert S.shape == (5, 16) and set(np.unique(S)) <= {0.0, 1.0}


def test_gaussian_model_and_errors():
    X = np.random.default_rng(1).random((120, 6))
    model = VAEModel(nz=2, hidden=5, likelihood="gaussian", samples=2000, batch_size=20).fit(X)
    assert model.sample(3, np.random.default_rng(0)).shape == (3, 6)
    with pytest.raises(NotFittedError, match="fit"):
        VAEModel().transform(X)
    with pytest.raises(ValueError, match="features"):
        model.transform(X[:, :5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VAEModel(samples=100, batch_size=10).fit(X * 3)
    with pytest.raises(ValueError, match="larger than X"):
        VAEModel(samples=100, batch_size=500).fit(X)
    assert "nz=2" in repr(model) and VAEModel().set_params(nz=3).nz == 3
