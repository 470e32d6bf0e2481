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


def test_score_function_baseline_keeps_the_mean_and_reduces_the_variance():
    """A baseline b_i near E_q[log p(x_i|z)] (estimated from independent draws, so it is a
    constant for the estimator) leaves the score-function estimate unbiased and cuts its variance:
    log p(x|z) is hundreds of nats below zero, and without a baseline that offset multiplies
    every grad log q."""
    from npvae.model import decoder_forward, encoder_forward, log_likelihood_forward
    rng = np.random.default_rng(3)
    vae = VAE(12, 2, 5, seed=0, init_std=0.5)
    x = (rng.random((3, 12)) < 0.5).astype(float)
    (mu, logvar), _ = encoder_forward(vae.params, vae.arch, x)
    z = mu + np.exp(0.5 * logvar) * rng.standard_normal((20_000, 3, 2))
    baseline = log_likelihood_forward("bernoulli", x, decoder_forward(vae.params, vae.arch, z)[0])[0].mean(axis=0)
    n = 3000
    draws = {"none": [], "baseline": []}
    for _ in range(n):
        eps = rng.standard_normal((1, 3, 2))
        for kind, b in (("none", 0.0), ("baseline", baseline)):
            g = reconstruction_grads(vae, x, eps, "score", baseline=b)
            draws[kind].append(np.concatenate([g[k].ravel() for k in sorted(g)]))
    plain, based = np.array(draws["none"]), np.array(draws["baseline"])
    se = np.sqrt(plain.var(axis=0) / n + based.var(axis=0) / n)
    assert (np.abs(plain.mean(axis=0) - based.mean(axis=0)) / np.maximum(se, 1e-300)).max() < 5.0
    assert based.var(axis=0).sum() < 0.2 * plain.var(axis=0).sum()


def test_unknown_method_is_an_error():
    vae = VAE(4, 2, 3, seed=0)
    with pytest.raises(ValueError, match="unknown method"):
        reconstruction_grads(vae, np.zeros((2, 4)), np.zeros((1, 2, 2)), "pathwise")


def test_the_sampler_draws_from_the_density_the_kl_assumes():
    """Monte Carlo KL with the library's own sampler, E_q[log q(z) - log p(z)], against the analytic
    KL: a sampler that read logvar as log sigma (or exp(0.5 ** logvar)) fails this, though each
    piece would pass its own gradient check."""
    from npvae import distributions as D
    from npvae.model import standard_normal_logpdf_forward
    from npvae.stochastic import sample_forward
    rng = np.random.default_rng(8)
    mu, logvar = rng.standard_normal((4, 3)), rng.uniform(-3, 2, (4, 3))
    z, _ = sample_forward(mu, logvar, rng.standard_normal((200_000, 4, 3)))
    log_q, _ = D.gaussian_logpdf_forward(z, mu, logvar)
    log_p, _ = standard_normal_logpdf_forward(z)
    mc = log_q - log_p                                                  # (n, 4)
    kl, _ = D.kl_standard_normal_forward(mu, logvar)
    se = mc.std(axis=0) / np.sqrt(mc.shape[0])
    assert (np.abs(mc.mean(axis=0) - kl) / se).max() < 5.0
    z_bad = mu + np.exp(logvar) * rng.standard_normal((200_000, 4, 3))  # logvar read as log sigma
    bad = D.gaussian_logpdf_forward(z_bad, mu, logvar)[0] - standard_normal_logpdf_forward(z_bad)[0]
    assert (np.abs(bad.mean(axis=0) - kl) / (bad.std(axis=0) / np.sqrt(200_000))).max() > 20.0
