import numpy as np
import pytest

from npvae.kernels import bernoulli_kl_grads, bernoulli_kl_grads_reference
from npvae.model import VAE, elbo_forward


def inputs(dtype=np.float64, L=2, B=5, D=9, Z=3, seed=0, extreme=False):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 5, (L, B, D))
    if extreme:
        logits[0, 0, :4] = [3e4, -3e4, 700.0, -745.0]
    x = (rng.random((B, D)) < 0.4).astype(float)
    mu, logvar = rng.standard_normal((B, Z)), rng.uniform(-30, 30, (B, Z))
    return [a.astype(dtype) for a in (logits, x, mu, logvar)]


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("want_elbo", [False, True])
def test_kernel_matches_numpy_reference_to_1e12(extreme, want_elbo):
    args = inputs(extreme=extreme)
    ref = bernoulli_kl_grads_reference(*args, 0.37, want_elbo)
    got = bernoulli_kl_grads(*args, 0.37, want_elbo)
    for r, g in zip(ref, got):
        if r is None:
            assert g is None
        else:
            assert np.isfinite(g).all()
            assert np.allclose(g, r, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(r).max()))


def test_kernel_float32_and_preallocated_buffers():
    args = inputs(np.float32)
    out = (np.empty(5, np.float32), np.empty((2, 5, 9), np.float32), np.empty((5, 3), np.float32),
           np.empty((5, 3), np.float32))
    elbo, dlogits, dmu, dlogvar = bernoulli_kl_grads(*args, 0.01, True, out=out, work=np.empty_like(args[0]))
    assert dlogits is out[1] and dlogits.dtype == np.float32
    ref = bernoulli_kl_grads_reference(*[a.astype(np.float64) for a in args], 0.01, True)
    assert np.allclose(elbo, ref[0], rtol=1e-5) and np.allclose(dlogits, ref[1], rtol=1e-5, atol=1e-9)


def test_kernel_elbo_is_the_models_estimator_b():
    rng = np.random.default_rng(1)
    vae = VAE(9, 3, 4, seed=0, init_std=0.5)
    x = (rng.random((5, 9)) < 0.4).astype(float)
    eps = rng.standard_normal((2, 5, 3))
    elbo, cache = elbo_forward(vae.params, vae.arch, x, eps, "B")
    mu, logvar = vae.encode(x)
    logits = cache[6][1]                              # the likelihood's cache holds (x, logits)
    k_elbo, dlogits, _, _ = bernoulli_kl_grads(logits, x, mu, logvar, 1.0, True)
    assert np.allclose(k_elbo, elbo, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_bias_gradient_is_the_column_sum_of_dlogits(dtype):
    args = inputs(dtype, L=3)
    dbias = np.full(args[0].shape[-1], np.nan, dtype)
    _, dlogits, _, _ = bernoulli_kl_grads(*args, 0.2, False, dbias=dbias)
    assert dbias.dtype == dtype and dlogits.dtype == dtype
    expected = dlogits.astype(np.float64).sum(axis=(0, 1))
    assert np.allclose(dbias, expected, rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-7)


def test_add_bias_neg_abs():
    from npvae.kernels import add_bias_neg_abs
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 6)), rng.standard_normal(6)
    expected = a + b
    neg_abs = np.empty_like(a)
    add_bias_neg_abs(a, b, neg_abs)
    assert np.array_equal(a, expected) and np.array_equal(neg_abs, -np.abs(expected))


def test_tanh_inplace_float64_is_np_tanh_to_rounding():
    """The float64 tanh from exp(-2|a|) (and its series near 0) against np.tanh: within one ulp of
    1 absolutely everywhere, and within 2e-15 relatively, across the series' threshold, tiny and
    subnormal inputs, huge ones and the special values."""
    from npvae.kernels import TANH_SERIES_BELOW, tanh_inplace
    rng = np.random.default_rng(3)
    t = TANH_SERIES_BELOW
    special = [0.0, -0.0, t, -t, np.nextafter(t, 0), np.nextafter(-t, 0), 5e-324, -5e-324, 1e-300, -1e-300, 18.0, 19.5,
               30.0, -30.0, 700.0, -750.0,
               1e308, -1e308, np.inf, -np.inf]
    x = np.concatenate([rng.normal(0, 3, 20000), rng.normal(0, 2 * t, 20000),
                        10.0 ** rng.uniform(-320, 3, 20000) * rng.choice([-1, 1], 20000), special]).reshape(-1, 20)
    got = x.copy()
    tanh_inplace(got, np.empty(x.size + 7))
    ref = np.tanh(x)
    assert np.abs(got - ref).max() <= np.spacing(1.0)
    nonzero = ref != 0
    assert (np.abs(got - ref)[nonzero] / np.abs(ref[nonzero])).max() <= 4e-15     # ~3e-15 just above t
    assert np.array_equal(np.signbit(got), np.signbit(ref))          # -0.0 stays -0.0
    nan = np.array([np.nan, 1.0])
    tanh_inplace(nan, np.empty(2))
    assert np.isnan(nan[0]) and nan[1] == np.tanh(1.0)


def test_tanh_inplace_float32_is_np_tanh():
    from npvae.kernels import tanh_inplace, tanh_inplace_reference
    a = np.random.default_rng(4).normal(0, 2, (7, 9)).astype(np.float32)
    got = a.copy()
    tanh_inplace(got, np.empty(a.size, np.float32))
    assert got.dtype == np.float32 and np.array_equal(got, tanh_inplace_reference(a))


def test_tanh_inplace_on_a_view_that_is_not_contiguous():
    from npvae.kernels import tanh_inplace
    a = np.random.default_rng(6).normal(0, 2, (5, 8))
    view = a.T                       # reshape(-1) of it would copy: the kernel must not write into a copy
    expected = np.tanh(view)
    tanh_inplace(view, np.empty(a.size))
    assert np.array_equal(view, expected)
