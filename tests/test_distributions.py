import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from npvae import distributions as D

from .helpers import check_backward

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5))


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_bernoulli_logpmf_matches_scipy_and_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    L, B, Dd = shape
    x = (rng.random((B, Dd)) < 0.5).astype(float)
    logits = rng.uniform(-8, 8, (L, B, Dd))
    ll, _ = D.bernoulli_logpmf_forward(x, logits)
    ref = stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum(-1)
    assert np.allclose(ll, ref, rtol=1e-10, atol=1e-10)
    check_backward(lambda l: D.bernoulli_logpmf_forward(x, l), D.bernoulli_logpmf_backward, [logits], rng)


@settings(max_examples=50, deadline=None)
@given(v=st.floats(-3e4, 3e4, allow_nan=False), x=st.sampled_from([0.0, 0.25, 1.0]))
def test_bernoulli_logpmf_is_finite_and_exact_for_extreme_logits(v, x):
    xs, ls = np.array([[x]]), np.array([[v]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ll, cache = D.bernoulli_logpmf_forward(xs, ls)
        g = D.bernoulli_logpmf_backward(np.ones(1), cache)
    # x*l - softplus(l), computed another way: -softplus(-l) for x=1, -softplus(l) for x=0
    expected = x * v - (max(v, 0.0) + np.log1p(np.exp(-abs(v))))
    assert np.isfinite(ll[0]) and np.isclose(ll[0], expected, rtol=1e-12, atol=1e-12)
    assert np.isfinite(g).all() and -1.0 <= g[0, 0] <= 1.0


def test_bernoulli_logpmf_at_3e4_is_exact():
    ll, _ = D.bernoulli_logpmf_forward(np.array([1.0, 0.0]), np.array([3e4, 3e4]))
    assert ll == -3e4          # log sigmoid(3e4) = 0 for x=1, log(1-sigmoid(3e4)) = -3e4 for x=0


@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1))
def test_gaussian_logpdf_matches_scipy_and_finite_differences(shape, seed):
    rng = np.random.default_rng(seed)
    L, B, Dd = shape
    x, mu, logvar = rng.standard_normal((L, B, Dd)), rng.standard_normal((L, B, Dd)), rng.uniform(-3, 3, (L, B, Dd))
    ll, _ = D.gaussian_logpdf_forward(x, mu, logvar)
    ref = stats.norm.logpdf(x, mu, np.exp(0.5 * logvar)).sum(-1)
    assert np.allclose(ll, ref, rtol=1e-10, atol=1e-10)
    check_backward(D.gaussian_logpdf_forward, D.gaussian_logpdf_backward, [x, mu, logvar], rng)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), Z=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_kl_backward_matches_finite_differences(B, Z, seed):
    rng = np.random.default_rng(seed)
    check_backward(D.kl_standard_normal_forward, D.kl_standard_normal_backward,
                   [rng.standard_normal((B, Z)), rng.uniform(-4, 4, (B, Z))], rng)


@settings(max_examples=100, deadline=None)
@given(mu=st.floats(-50, 50), logvar=st.floats(D.LOGVAR_MIN, D.LOGVAR_MAX))
def test_kl_is_nonnegative_and_zero_only_at_the_prior(mu, logvar):
    kl, _ = D.kl_standard_normal_forward(np.array([[mu]]), np.array([[logvar]]))
    assert kl[0] >= 0.0
    if mu != 0.0 or logvar != 0.0:
        # strictly positive away from q = p (up to round-off at the minimum)
        assert kl[0] > 0.0 or (abs(mu) < 1e-7 and abs(logvar) < 1e-7)


def test_kl_is_exactly_zero_at_the_prior():
    kl, _ = D.kl_standard_normal_forward(np.zeros((3, 4)), np.zeros((3, 4)))
    assert np.array_equal(kl, np.zeros(3))


def test_kl_matches_numerical_integration_of_its_definition():
    """KL(q || p) = integral q(z) [log q(z) - log p(z)] dz, per dimension, by adaptive quadrature
    with scipy's own normal densities: independent of the closed form under test."""
    from scipy import integrate
    mu, logvar = np.array([[0.5, -1.0, 2.5, 0.0]]), np.array([[0.3, -2.0, 1.5, -6.0]])
    ref = 0.0
    for m, lv in zip(mu[0], logvar[0]):
        q = stats.norm(m, np.exp(0.5 * lv))
        value, err = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z)),
                                    m - 15 * q.std(), m + 15 * q.std(), points=[m], limit=200, epsabs=1e-13)
        assert err < 1e-8
        ref += value
    assert np.isclose(D.kl_standard_normal_forward(mu, logvar)[0][0], ref, rtol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logvar_within_the_clamp_is_finite(dtype):
    lv = np.array([[D.LOGVAR_MIN, D.LOGVAR_MAX]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        kl, _ = D.kl_standard_normal_forward(np.ones_like(lv), lv)
        ll, _ = D.gaussian_logpdf_forward(np.ones_like(lv), np.zeros_like(lv), lv)
    assert np.isfinite(kl).all() and np.isfinite(ll).all()


def test_sum_to_shape_undoes_broadcasting():
    a = np.ones((3, 4, 5))
    assert np.array_equal(D.sum_to_shape(a, (4, 5)), np.full((4, 5), 3.0))
    assert np.array_equal(D.sum_to_shape(a, (4, 1)), np.full((4, 1), 15.0))
