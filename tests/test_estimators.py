import numpy as np
import pytest

from npvae import VAE, reconstruction_grads


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_reparameterization_and_score_function_gradients_agree_in_mean(likelihood):
    """Both estimators are unbiased for the same gradient: their means over many eps agree
    within a tolerance set by their standard errors (fixed seed)."""
    rng = np.random.default_rng(7)
    vae = VAE(6, 2, 4, likelihood, seed=1, init_std=0.5)
    x = (rng.random((3, 6)) < 0.5).astype(float) if likelihood == "bernoulli" else rng.random((3, 6))
    n = 4000
    draws = {"reparam": [], "score": []}
    for _ in range(n):
        eps = rng.standard_normal((1, 3, 2))
        for method in draws:
            g = reconstruction_grads(vae, x, eps, method)
            draws[method].append(np.concatenate([g[k].ravel() for k in sorted(g)]))
    r, s = np.array(draws["reparam"]), np.array(draws["score"])
    se = np.sqrt(r.var(axis=0) / n + s.var(axis=0) / n)
    z = np.abs(r.mean(axis=0) - s.mean(axis=0)) / np.maximum(se, 1e-300)
    assert z.max() < 5.0, z.max()                     # 5 standard errors, over ~50 coordinates
    # the reason the paper prefers the reparameterization: far smaller variance
    assert r.var(axis=0).sum() < s.var(axis=0).sum()


def test_reparam_gradient_equals_the_encoder_part_of_the_elbo_gradient_without_kl():
    """With the KL switched off (estimator B minus its KL term), the training gradient of the
    encoder is exactly minus the pathwise reconstruction gradient."""
    rng = np.random.default_rng(0)
    vae = VAE(6, 2, 4, seed=0, init_std=0.5)
    x = (rng.random((3, 6)) < 0.5).astype(float)
    eps = rng.standard_normal((2, 3, 2))
    g = reconstruction_grads(vae, x, eps, "reparam")
    _, full = vae.loss_and_grads(x, eps, "B")
    # remove the KL's share, computed from mu and logvar directly
    from npvae.distributions import kl_standard_normal_backward, kl_standard_normal_forward
    from npvae.model import encoder_backward, encoder_forward
    (mu, logvar), cache = encoder_forward(vae.params, vae.arch, x)
    _, kl_cache = kl_standard_normal_forward(mu, logvar)
    dmu, dlv = kl_standard_normal_backward(np.full(3, 1 / 3), kl_cache)
    _, kl_grads = encoder_backward(dmu, dlv, cache)
    for k in g:
        assert np.allclose(-g[k], full[k] - kl_grads[k], rtol=1e-10, atol=1e-14), k


def test_score_function_baseline_keeps_mean_and_bad_method_is_an_error():
    rng = np.random.default_rng(3)
    vae = VAE(4, 2, 3, seed=0, init_std=0.5)
    x = (rng.random((2, 4)) < 0.5).astype(float)
    eps = rng.standard_normal((50_000, 2, 2))
    g0 = reconstruction_grads(vae, x, eps, "score")
    g1 = reconstruction_grads(vae, x, eps, "score", baseline=-2.77)
    for k in g0:        # E[grad log q] = 0, so a constant baseline changes the estimate only by noise
        assert np.allclose(g0[k], g1[k], atol=0.05), k
    with pytest.raises(ValueError, match="unknown method"):
        reconstruction_grads(vae, x, eps, "pathwise")
