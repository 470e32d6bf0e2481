"""The fast log p(x, z) of the marginal-likelihood estimators against the readable one.

Three layers, each tied to the code people read:
* ``kernels.bernoulli_log_lik`` and ``bernoulli_log_lik_and_dlogits`` against their references
  (``distributions.bernoulli_logpmf_forward`` / ``_backward``), and the gradient against finite
  differences of the kernel's own value;
* ``model.decoder_backward(..., param_grads=False)``: the same dz, no parameter gradients;
* ``marginal.make_log_joint(vae, x, fast=True)`` against ``fast=False``, and the estimators with each.

Float32 tolerances are error bounds derived in ``f32_kernel_bound`` and ``f32_readable_bound`` below,
with u = 2^-24 the unit roundoff; a wrong formula or a float64 constant leaking into a float32 path
misses them by orders of magnitude (the float64 tests catch formula errors at 1e-12).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from npvae import VAE
from npvae import kernels as K
from npvae import marginal as M
from npvae.gradcheck import numerical_gradient, relative_error
from npvae.model import decoder_backward, decoder_forward

from .helpers import TOL, check_backward

U32 = 2.0 ** -24          # float32 unit roundoff
U64 = 2.0 ** -53


def random_inputs(dtype, shape=(3, 5, 9), binary=True, scale=5.0, seed=0):
    """logits (..., B, D) ~ N(0, scale^2) and x (B, D): 0/1, or in [0, 1] when not binary."""
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal(shape)
    x = (rng.random(shape[-2:]) < 0.4) if binary else rng.random(shape[-2:])
    return x.astype(dtype), logits.astype(dtype)


def exact_terms(x, logits):
    """The per-pixel pieces in float64 from the (possibly float32) inputs: (log-lik (..., B), the sum
    of |x l| + max(l, 0) (..., B), the sum of e = exp(-|l|) (..., B))."""
    x, logits = x.astype(np.float64), logits.astype(np.float64)
    linear = np.abs(x * logits) + np.maximum(logits, 0.0)
    e = np.exp(-np.abs(logits))
    return K.bernoulli_log_lik_reference(x, logits), linear.sum(-1), e.sum(-1)


def f32_kernel_bound(x, logits):
    """How far the float32 kernel may be from the exact log-likelihood of its float32 inputs:
    x l and the subtraction of max(l, 0) rounded (at most 2u of |x l| + max(l, 0), and nothing when x
    is 0/1); e = exp(-|l|) from NumPy within 4 ulp, which moves log(1 + e) by at most 4u e; the float64
    sum, product and log (D + 2 float64 roundings, kept well below the rest); the result rounded to
    float32 (u of it)."""
    exact, linear, e_sum = exact_terms(x, logits)
    binary = np.isin(x, (0, 1)).all()
    d = logits.shape[-1]
    return U32 * (np.abs(exact) + (0.0 if binary else 2.0 * linear) + 4.0 * e_sum) + 4 * U64 * (d + np.abs(exact))


def f32_readable_bound(x, logits):
    """How far the readable float32 path may be from the exact value: each pixel's term x l - max(l, 0)
    - log1p(e) takes at most 4 roundings of its parts (4u of |x l| + max(l, 0) + log1p(e)), and NumPy's
    pairwise float32 sum of D <= 1024 terms adds at most 24u of the sum of |terms| (8 interleaved
    partial sums of up to 16 terms each per block of 128, then at most 3 + 3 pairwise levels)."""
    _, linear, e_sum = exact_terms(x, logits)
    return 28 * U32 * (linear + e_sum)         # log1p(e) <= e


# --------------------------------------------------------------------------- the kernels

def extreme_inputs(dtype):
    """Rows with a huge but finite logit, of either sign, with x = 0 and x = 1, among ordinary ones; at
    most one huge term per row, so that every row's log-likelihood is a finite number of the dtype."""
    x, logits = random_inputs(dtype, shape=(4, 6, 11))
    huge = [1e30, -1e30, 3e38, -3e38] if dtype == np.float32 else [1e30, -1e300, 1.7e308, -1.7e308]
    for b, v in enumerate(huge):
        for xv in (0.0, 1.0):
            row = int(xv)              # logits[row, b] gets the huge value at a pixel where x is xv
            d = 2 * b + row
            x[b, d], logits[row, b, d] = xv, v
    logits[2, 4, :5] = [3e4, -3e4, 710.0, -745.0, 0.0]
    logits[2, 5, :3] = [89.0, -104.0, -0.0]     # exp(-89) and exp(-104) are subnormal or 0 in float32
    return x, logits


@pytest.mark.parametrize("kind", ["random", "non-binary x", "extreme"])
def test_kernels_match_the_readable_density_in_float64(kind):
    if kind == "extreme":
        x, logits = extreme_inputs(np.float64)
    else:
        x, logits = random_inputs(np.float64, binary=kind == "random")
    ref = K.bernoulli_log_lik_reference(x, logits)
    ref_value, ref_grad = K.bernoulli_log_lik_and_dlogits_reference(x, logits)
    value = K.bernoulli_log_lik(x, logits)
    value2, grad = K.bernoulli_log_lik_and_dlogits(x, logits)
    assert np.isfinite(ref).all() and np.abs(ref).max() > (1e300 if kind == "extreme" else 10)
    # the log of the product of the 1 + e rounds each of them: D/2 ulp(1) besides 1e-12 relative
    atol = logits.shape[-1] * 2 * U64
    for v in (value, value2):
        assert v.shape == ref.shape and v.dtype == np.float64
        np.testing.assert_allclose(v, ref, rtol=1e-12, atol=atol)
    np.testing.assert_array_equal(ref_value, ref)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["random", "non-binary x", "large logits", "extreme"])
def test_kernels_in_float32_are_within_their_error_bound_and_stay_finite(kind):
    if kind == "extreme":
        x, logits = extreme_inputs(np.float32)
    else:
        x, logits = random_inputs(np.float32, binary=kind != "non-binary x", scale=40.0 if kind == "large logits"
                                  else 5.0)
    exact = K.bernoulli_log_lik_reference(x.astype(np.float64), logits.astype(np.float64))
    value = K.bernoulli_log_lik(x, logits)
    value2, grad = K.bernoulli_log_lik_and_dlogits(x, logits)
    assert value.dtype == grad.dtype == np.float32
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    bound = f32_kernel_bound(x, logits)
    for v in (value, value2):
        assert (np.abs(v - exact) <= bound).all(), np.max(np.abs(v - exact) / bound)
    # the gradient: the same float32 operations as layers.sigmoid on the same e, so the same bits (a
    # float64 constant in the kernel's sigmoid would round differently here and there)
    _, ref_grad = K.bernoulli_log_lik_and_dlogits_reference(x, logits)
    np.testing.assert_array_equal(grad, ref_grad)
    # at +-1e30 and beyond sigmoid is exactly 1 or 0, so the gradient is exactly x - 1 or x
    big = np.abs(logits) >= 1e30
    np.testing.assert_array_equal(grad[big], (np.broadcast_to(x, logits.shape) - (logits > 0))[big])


def test_float32_bound_is_tight_enough_to_mean_something():
    """The bound used above is a few float32 ulps of the answer, not a blanket tolerance: on ordinary
    logits it is below 1e-4 nats for |log p| of hundreds, and the kernel's error uses a good part of it."""
    x, logits = random_inputs(np.float32, shape=(50, 4, 784))
    exact = K.bernoulli_log_lik_reference(x.astype(np.float64), logits.astype(np.float64))
    bound = f32_kernel_bound(x, logits)
    err = np.abs(K.bernoulli_log_lik(x, logits) - exact)
    assert (bound < 1e-6 * np.abs(exact) + 1e-4).all() and np.abs(exact).min() > 100
    assert (err <= bound).all() and err.max() > 0.1 * bound.max()


def test_non_finite_logits_give_non_finite_values_where_the_readable_density_does():
    """HMC rejects a proposal whose log-density is not finite: the kernels must not make one finite."""
    x, logits = random_inputs(np.float64, shape=(2, 4, 6))
    logits[0, 0, 1], logits[0, 1, 2], logits[1, 2, 0], logits[1, 3, 3] = np.inf, -np.inf, np.nan, -np.inf
    x[3, 3] = 0.0     # -inf logit where x is 0: the readable gives 0 * -inf = nan
    with np.errstate(invalid="ignore"):
        ref, ref_grad = K.bernoulli_log_lik_and_dlogits_reference(x, logits)
        value, grad = K.bernoulli_log_lik_and_dlogits(x, logits)
        value_only = K.bernoulli_log_lik(x, logits)
    np.testing.assert_array_equal(np.isfinite(value), np.isfinite(ref))
    np.testing.assert_array_equal(np.isfinite(value_only), np.isfinite(ref))
    assert not np.isfinite(ref).all()
    np.testing.assert_array_equal(np.isfinite(grad), np.isfinite(ref_grad))


def test_kernel_gradient_matches_finite_differences_of_its_own_value():
    rng = np.random.default_rng(3)
    for binary in (True, False):
        x, logits = random_inputs(np.float64, shape=(2, 3, 7), binary=binary, scale=3.0, seed=4)
        r = rng.standard_normal(logits.shape[:-1])
        _, grad = K.bernoulli_log_lik_and_dlogits(x, logits)
        numeric = numerical_gradient(lambda: float(np.sum(r * K.bernoulli_log_lik(x, logits))), logits, h=1e-6)
        assert relative_error(r[..., None] * grad, numeric) <= TOL


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rows_cross_exp_blocks_and_pair_with_their_datapoint(dtype):
    """More rows than one exp block holds, and a batch size that does not divide the block: row n of the
    flattened logits must meet x[n % B] in every block (the kernels get the block's first row)."""
    x, logits = random_inputs(dtype, shape=(15, 13, 784), seed=5)
    rows_per_block = K.BLOCK_BYTES // (784 * logits.itemsize)
    assert 15 * 13 > 2 * rows_per_block and rows_per_block % 13 != 0
    exact = K.bernoulli_log_lik_reference(x.astype(np.float64), logits.astype(np.float64))
    tol = 1e-12 * np.abs(exact) + 784 * 2 * U64 if dtype == np.float64 else f32_kernel_bound(x, logits)
    value, grad = K.bernoulli_log_lik_and_dlogits(x, logits)
    assert (np.abs(K.bernoulli_log_lik(x, logits) - exact) <= tol).all()
    assert (np.abs(value - exact) <= tol).all()
    _, ref_grad = K.bernoulli_log_lik_and_dlogits_reference(x, logits)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-15 if dtype == np.float64 else 8 * U32)
    # and a 2-D logits array (one row per datapoint) is the same computation
    np.testing.assert_array_equal(K.bernoulli_log_lik(x, logits[4]), K.bernoulli_log_lik(x, logits)[4])


def test_kernels_reject_mismatched_shapes_and_integer_logits():
    x = np.zeros((3, 5))
    for bad in (np.zeros((2, 4, 5)), np.zeros((3, 6)), np.zeros(5)):
        with pytest.raises(ValueError, match="logits must have shape"):
            K.bernoulli_log_lik(x, bad)
        with pytest.raises(ValueError, match="logits must have shape"):
            K.bernoulli_log_lik_and_dlogits(x, bad)
    with pytest.raises(TypeError, match="float32 or float64"):
        K.bernoulli_log_lik(x, np.zeros((3, 5), dtype=np.int64))


# --------------------------------------------------------------------------- decoder_backward(param_grads=False)

def decoder_models():
    yield VAE(9, 3, (6,), "bernoulli", seed=0, init_std=0.7)
    yield VAE(9, 3, (6, 5), "bernoulli", seed=1, init_std=0.7)
    yield VAE(9, 3, (6, 5), "gaussian", seed=2, init_std=0.7)
    yield VAE(9, 3, (6,), "gaussian", seed=3, init_std=0.7).use_fixed_decoder_var(0.3)


@pytest.mark.parametrize("vae", list(decoder_models()), ids=["bern", "bern-2layers", "gauss-2layers", "gauss-fixed"])
def test_decoder_backward_without_param_grads_gives_the_same_dz_and_no_grads(vae):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 3))
    out, cache = decoder_forward(vae.params, vae.arch, z)
    dout = rng.standard_normal(np.shape(out)) if vae.arch.likelihood == "bernoulli" else \
        tuple(rng.standard_normal(o.shape) for o in out)
    dz, grads = decoder_backward(dout, cache)
    dz_only, no_grads = decoder_backward(dout, cache, param_grads=False)
    assert no_grads == {} and len(grads) == sum(k.startswith("dec.") for k in vae.params)
    np.testing.assert_allclose(dz_only, dz, rtol=1e-14, atol=1e-15)

    # and its own finite-difference check (the dz-only products are new code)
    def forward(z):
        out, cache = decoder_forward(vae.params, vae.arch, z)
        return (out if vae.arch.likelihood == "bernoulli" else np.stack(out)), cache

    def backward(dout, cache):
        dout = dout if vae.arch.likelihood == "bernoulli" else tuple(dout)
        return decoder_backward(dout, cache, param_grads=False)[0]
    check_backward(forward, backward, [z], rng)


# --------------------------------------------------------------------------- make_log_joint(fast=True)

def log_joint_problem(dtype, extreme=False, seed=0):
    """A Bernoulli VAE with two hidden decoder layers, 4 datapoints, z (3, 4, 2).  extreme: z up to 1e4
    and an output layer scaled so that the logits reach ~1e25 (float32) or ~1e200 (float64)."""
    rng = np.random.default_rng(seed)
    vae = VAE(30, 2, (10, 8), "bernoulli", seed=seed, init_std=1.0, dtype=dtype)
    x = (rng.random((4, 30)) < 0.4).astype(dtype)
    z = 2.0 * rng.standard_normal((3, 4, 2))
    if extreme:
        z[0] *= 1e4
        vae.params["dec.logits.W"] *= dtype(1e24 if dtype == np.float32 else 1e199)
    return vae, x, z


@pytest.mark.parametrize("extreme", [False, True])
def test_fast_log_joint_equals_the_readable_one_in_float64(extreme):
    vae, x, z = log_joint_problem(np.float64, extreme)
    readable, fast = M.make_log_joint(vae, x), M.make_log_joint(vae, x, fast=True)
    (logp, dz), (f_logp, f_dz) = readable(z), fast(z)
    assert np.isfinite(f_logp).all() and np.isfinite(f_dz).all()
    if extreme:
        assert np.abs(logp).max() > 1e190
    np.testing.assert_allclose(f_logp, logp, rtol=1e-12, atol=30 * 2 * U64)
    np.testing.assert_allclose(f_dz, dz, rtol=1e-12, atol=1e-12 * np.abs(dz).max())
    value_only, none = fast(z, grad=False)
    assert none is None
    np.testing.assert_array_equal(value_only, f_logp)


@pytest.mark.parametrize("extreme", [False, True])
def test_fast_log_joint_equals_the_readable_one_in_float32(extreme):
    """Both paths share the decoder's float32 logits and log p(z); log p(x|z) differs only in rounding,
    by at most the two paths' error bounds added (plus u |log p| for the float32 sum with log p(z)).
    The gradient takes the same float32 operations in both (sigmoid from the same e, the same products)."""
    vae, x, z = log_joint_problem(np.float32, extreme)
    readable, fast = M.make_log_joint(vae, x), M.make_log_joint(vae, x, fast=True)
    (logp, dz), (f_logp, f_dz) = readable(z), fast(z)
    assert f_logp.dtype == f_dz.dtype == np.float32
    assert np.isfinite(f_logp).all() and np.isfinite(f_dz).all()
    logits = decoder_forward(vae.params, vae.arch, z.astype(np.float32))[0]
    if extreme:
        assert np.abs(logits).max() > 1e24
    tol = f32_kernel_bound(x, logits) + f32_readable_bound(x, logits) + 2 * U32 * np.abs(logp)
    assert (np.abs(f_logp.astype(np.float64) - logp) <= tol).all(), np.max(np.abs(f_logp - logp) / tol)
    # dlogits differ by at most 8u (the kernel test); |tanh'| <= 1, so through the layers that moves dz_j
    # by at most 8u (|W_h1| |W_h2| |W_logits| 1)_j, and each product's own rounding (fan-in 30, 8 and 10)
    # by at most 2 (30 + 8 + 10) u of the same.  (In practice the two gradients are equal bit for bit.)
    W = [np.abs(vae.params[f"dec.{name}.W"].astype(np.float64)) for name in ("h1", "h2", "logits")]
    magnitude = W[0] @ (W[1] @ (W[2] @ np.ones(30)))                                 # (z_dim,)
    assert (np.abs(f_dz - dz) <= (8 + 2 * 48) * U32 * magnitude).all()


def test_fast_log_joint_gradient_matches_finite_differences():
    vae, x, z = log_joint_problem(np.float64, seed=3)
    fast = M.make_log_joint(vae, x, fast=True)
    logp, dz = fast(z)
    r = np.random.default_rng(1).standard_normal(logp.shape)
    numeric = numerical_gradient(lambda: float(np.sum(r * fast(z)[0])), z, h=1e-6)
    assert relative_error(r[..., None] * dz, numeric) <= TOL


def test_gaussian_decoders_keep_the_readable_path():
    vae = VAE(9, 2, 5, "gaussian", seed=0, init_std=0.7)
    x = np.random.default_rng(0).random((3, 9))
    z = np.random.default_rng(1).standard_normal((2, 3, 2))
    for a, b in zip(M.make_log_joint(vae, x)(z), M.make_log_joint(vae, x, fast=True)(z)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- the estimators use it

def small_bernoulli_problem():
    vae = VAE(20, 2, 8, "bernoulli", seed=1, init_std=1.0)
    x = (np.random.default_rng(101).random((3, 20)) < 0.5).astype(float)
    return vae, x


def test_estimators_use_the_kernels(monkeypatch):
    calls = {"value": 0, "grad": 0}

    def counting(name, f):
        def wrapped(*args):
            calls[name] += 1
            return f(*args)
        return wrapped
    monkeypatch.setattr(M, "bernoulli_log_lik", counting("value", K.bernoulli_log_lik))
    monkeypatch.setattr(M, "bernoulli_log_lik_and_dlogits", counting("grad", K.bernoulli_log_lik_and_dlogits))
    vae, x = small_bernoulli_problem()
    M.importance_sampled_log_px(vae, x, 20, rng=np.random.default_rng(0))
    assert calls == {"value": 1, "grad": 0}
    M.hmc_log_px(vae, x, np.random.default_rng(0), n_samples=4, burn_in=2, n_leapfrog=3)
    assert calls["grad"] == 1 + (2 + 4) * 3 and calls["value"] == 2


def test_estimators_give_the_readable_paths_answers():
    vae, x = small_bernoulli_problem()
    answers = {}
    for fast in (True, False):
        answers[fast] = (M.importance_sampled_log_px(vae, x, 500, rng=np.random.default_rng(0), chunk=300,
                                                     return_stderr=True, fast=fast),
                         M.hmc_log_px(vae, x, np.random.default_rng(1), burn_in=50, fast=fast))
    (fast_is, fast_hmc), (slow_is, slow_hmc) = answers[True], answers[False]
    np.testing.assert_allclose(fast_is, slow_is, rtol=1e-12)
    # the chains see log-densities equal to ~1e-14, so they take the same accept/reject decisions
    for a, b in zip(fast_hmc, slow_hmc):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_bench_marginal_quick_runs_both_estimators_on_both_paths():
    """benchmarks/bench_marginal.py --quick (CI runs the benchmarks' quick modes; no speed asserted)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                          "bench_marginal.py")
    for estimator in ("is", "hmc"):
        proc = subprocess.run([sys.executable, script, "--quick", f"--estimator={estimator}", "--dtype=both"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        for dtype in ("float64", "float32"):
            assert f"{dtype}  readable" in proc.stdout and f"{dtype}  fast" in proc.stdout
        # float64: the same answers; float32 chains may part (a rounding difference can flip an accept)
        diff = float(re.search(r"float64 +largest \|log p\(x\) fast - readable\| over the points: (\S+)",
                               proc.stdout).group(1))
        assert diff < 1e-9, (estimator, diff)
