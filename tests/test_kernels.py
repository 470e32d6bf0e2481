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
