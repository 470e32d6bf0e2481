import numpy as np
from hypothesis import given, settings, strategies as st

from npvae import distributions as D
from npvae import stochastic as S

from .helpers import check_backward


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 4), B=st.integers(1, 5), Z=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_reparameterize_backward_matches_finite_differences(L, B, Z, seed):
    rng = np.random.default_rng(seed)
    mu, sigma, eps = rng.standard_normal((B, Z)), rng.uniform(0.1, 2, (B, Z)), rng.standard_normal((L, B, Z))
    check_backward(S.reparameterize_forward, S.reparameterize_backward, [mu, sigma, eps], rng, wrt=[0, 1])


def test_local_derivatives_are_one_and_eps():
    # dz/dmu = 1 and dz/dsigma = eps, read off with a one-hot upstream gradient
    eps = np.array([[[0.3, -1.2]]])
    z, cache = S.reparameterize_forward(np.zeros((1, 2)), np.ones((1, 2)), eps)
    dmu, dsigma = S.reparameterize_backward(np.ones_like(z), cache)
    assert np.array_equal(dmu, [[1.0, 1.0]]) and np.array_equal(dsigma, eps[0])


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), Z=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_logvar_to_sigma_backward_matches_finite_differences(B, Z, seed):
    rng = np.random.default_rng(seed)
    check_backward(S.logvar_to_sigma_forward, S.logvar_to_sigma_backward, [rng.uniform(-5, 5, (B, Z))], rng)


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 4), B=st.integers(1, 5), Z=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_sample_backward_matches_finite_differences(L, B, Z, seed):
    rng = np.random.default_rng(seed)
    mu, logvar, eps = rng.standard_normal((B, Z)), rng.uniform(-3, 3, (B, Z)), rng.standard_normal((L, B, Z))
    check_backward(S.sample_forward, S.sample_backward, [mu, logvar, eps], rng, wrt=[0, 1])


def test_samples_have_variance_exp_logvar_and_match_the_analytic_kl():
    """The sampler and the KL must agree on what logvar means (log sigma^2)."""
    rng = np.random.default_rng(1)
    mu = np.array([[0.7, -1.5, 0.0]])
    logvar = np.array([[np.log(0.25), np.log(4.0), 0.0]])
    n = 200_000
    z, _ = S.sample_forward(mu, logvar, rng.standard_normal((n, 1, 3)))
    se_var = np.exp(logvar[0]) * np.sqrt(2.0 / n)
    assert np.all(np.abs(z[:, 0].var(axis=0) - np.exp(logvar[0])) < 5 * se_var)
    # Monte Carlo KL: E_q[log q(z) - log p(z)]
    log_q, _ = D.gaussian_logpdf_forward(z, mu, logvar)
    log_p, _ = D.gaussian_logpdf_forward(z, 0.0, 0.0)
    terms = (log_q - log_p)[:, 0]
    kl, _ = D.kl_standard_normal_forward(mu, logvar)
    assert abs(terms.mean() - kl[0]) < 5 * terms.std() / np.sqrt(n)
