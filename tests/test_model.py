import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npvae import VAE
from npvae.gradcheck import check_vae, relative_error, ridders_derivative
from npvae.model import (decoder_backward, decoder_forward, elbo_forward, encoder_backward, encoder_forward,
                         mlp_backward, mlp_forward)

TOL = 1e-6


def small_problem(likelihood, hidden=(5,), L=2, B=4, x_dim=7, z_dim=3, seed=0, init_std=0.5):
    rng = np.random.default_rng(seed)
    vae = VAE(x_dim, z_dim, hidden, likelihood, seed=seed, init_std=init_std)
    x = (rng.random((B, x_dim)) < 0.4).astype(float) if likelihood == "bernoulli" else rng.random((B, x_dim))
    eps = rng.standard_normal((L, B, z_dim))
    return vae, x, eps


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("estimator", ["A", "B"])
@pytest.mark.parametrize("hidden,L", [((5,), 1), ((5,), 3), ((6, 4), 2)])
def test_full_model_gradient_matches_finite_differences_elementwise(likelihood, estimator, hidden, L):
    vae, x, eps = small_problem(likelihood, hidden, L)
    rows = check_vae(vae, x, eps, estimator, mode="elements")
    assert {r.name for r in rows} == set(vae.params)
    for r in rows:
        assert r.rel_error <= TOL, (r.name, r.rel_error)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_paper_init_gradient_matches_along_random_directions(likelihood):
    vae, x, eps = small_problem(likelihood, (20,), L=1, B=10, x_dim=30, z_dim=4, init_std=0.01)
    for r in check_vae(vae, x, eps, "B", mode="directions", n_directions=2):
        assert r.rel_error <= TOL, (r.name, r.rel_error)


def test_gradient_is_checked_across_the_logvar_clamp():
    """Where a log-variance is clamped its gradient is zero, and finite differences agree."""
    vae, x, eps = small_problem("gaussian")
    vae.params["enc.logvar.b"][0] = 1e4        # far above LOGVAR_MAX: exp would overflow without the clamp
    vae.params["dec.logvar.b"][1] = -1e4       # far below LOGVAR_MIN: exp(-logvar) would overflow
    assert np.all(vae.encode(x)[1][:, 0] == 30.0)
    with np.errstate(over="raise", invalid="raise"):
        loss, grads = vae.loss_and_grads(x, eps)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    # A bound of -1e13 nats leaves finite differences nothing to resolve, so check the
    # clamp at moderate values: active below the bound for q, above it for p(x|z).
    vae.params["enc.logvar.b"][0] = -80.0
    vae.params["dec.logvar.b"][1] = 80.0
    loss, grads = vae.loss_and_grads(x, eps)
    assert grads["enc.logvar.b"][0] == 0.0 and grads["dec.logvar.b"][1] == 0.0
    for r in check_vae(vae, x, eps, "B", mode="elements"):
        assert r.rel_error <= TOL, (r.name, r.rel_error)


def test_loss_is_minus_mean_elbo_and_grads_match_params():
    vae, x, eps = small_problem("bernoulli")
    loss, grads = vae.loss_and_grads(x, eps, "A")
    assert isinstance(loss, float) and loss == pytest.approx(-vae.elbo(x, eps, "A").mean(), rel=1e-15)
    assert grads.keys() == vae.params.keys()
    for k, g in grads.items():
        assert g.shape == vae.params[k].shape and g.dtype == vae.params[k].dtype


def test_param_names_follow_the_contract():
    assert list(VAE(784, 20, 500).params) == [
        "enc.h1.W", "enc.h1.b", "enc.mu.W", "enc.mu.b", "enc.logvar.W", "enc.logvar.b",
        "dec.h1.W", "dec.h1.b", "dec.logits.W", "dec.logits.b"]
    g = VAE(560, 5, (200, 100), "gaussian").params
    assert [k for k in g if k.startswith("dec")] == [
        "dec.h1.W", "dec.h1.b", "dec.h2.W", "dec.h2.b", "dec.mu.W", "dec.mu.b", "dec.logvar.W", "dec.logvar.b"]
    assert g["enc.h1.W"].shape == (560, 200) and g["enc.h2.W"].shape == (200, 100)
    assert g["dec.h1.W"].shape == (5, 100) and g["dec.h2.W"].shape == (100, 200)


def test_init_is_seeded_normal_with_std_001():
    a, b, c = VAE(784, 20, 500, seed=3), VAE(784, 20, 500, seed=3), VAE(784, 20, 500, seed=4)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert not np.array_equal(a.params["enc.h1.W"], c.params["enc.h1.W"])
    assert abs(a.params["enc.h1.W"].std() - 0.01) < 1e-4 and abs(a.params["enc.h1.W"].mean()) < 1e-4


def test_params_are_live():
    vae, x, eps = small_problem("bernoulli")
    before = vae.encode(x)[0].copy()
    vae.params["enc.mu.b"] += 1.0
    assert np.allclose(vae.encode(x)[0], before + 1.0)


def test_encode_decode_shapes_and_ranges():
    vae, x, eps = small_problem("bernoulli")
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (4, 3)
    means = vae.decode(eps)
    assert means.shape == (2, 4, 7) and np.all((means > 0) & (means < 1))
    g, xg, _ = small_problem("gaussian")
    mean, lv = g.decode(np.zeros((5, 3)))
    assert mean.shape == lv.shape == (5, 7) and np.all((mean > 0) & (mean < 1))


def test_estimators_a_and_b_have_the_same_expectation():
    vae, x, _ = small_problem("gaussian", B=3, init_std=0.3)
    rng = np.random.default_rng(5)
    eps = rng.standard_normal((2000, 10, 3, 3))          # 2000 estimates, each with L = 10
    a = np.stack([vae.elbo(x, e, "A") for e in eps])
    b = np.stack([vae.elbo(x, e, "B") for e in eps])
    diff = a - b                                    # same noise: a paired comparison
    se = diff.std(axis=0) / np.sqrt(diff.shape[0])
    assert np.all(np.abs(diff.mean(axis=0)) < 5 * se + 1e-12)
    # and B has the smaller variance (the analytic KL removes one source of noise)
    assert np.all(b.var(axis=0) < a.var(axis=0))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_q_and_log_joint_gradients_match_finite_differences(likelihood):
    vae, x, eps = small_problem(likelihood, (5, 4))
    z = eps * 0.7 + 0.1
    lq, gq = vae.log_q_and_grads(z, x)
    assert lq.shape == (2, 4) and set(gq) == {k for k in vae.params if k.startswith("enc")}
    lp, dz, gp = vae.log_joint_and_grads(x, z)
    assert lp.shape == (2, 4) and set(gp) == {k for k in vae.params if k.startswith("dec")}
    rng = np.random.default_rng(0)
    for name, g in list(gq.items()) + list(gp.items()):
        f = (lambda: vae.log_q(z, x).sum()) if name.startswith("enc") else (lambda: vae.log_joint(x, z).sum())
        d = rng.standard_normal(g.shape)
        num, _ = ridders_derivative(f, vae.params[name], d)
        assert relative_error(np.vdot(g, d), num) <= TOL, name
    d = rng.standard_normal(z.shape)
    num, _ = ridders_derivative(lambda: vae.log_joint(x, z).sum(), z, d, h0=1e-3)
    assert relative_error(np.vdot(dz, d), num) <= TOL


def test_encoder_and_decoder_backward_directly():
    vae, x, eps = small_problem("gaussian", (5, 4))
    rng = np.random.default_rng(2)
    (mu, logvar), cache = encoder_forward(vae.params, vae.arch, x)
    dmu, dlv = rng.standard_normal(mu.shape), rng.standard_normal(logvar.shape)
    dx, grads = encoder_backward(dmu, dlv, cache, need_dx=True)

    def f():
        (m, lv), _ = encoder_forward(vae.params, vae.arch, x)
        return float((m * dmu).sum() + (lv * dlv).sum())
    # random directions: along all-ones, a gradient with its entries permuted would pass too
    d = rng.standard_normal(x.shape)
    num, _ = ridders_derivative(f, x, d, h0=1e-3)
    assert relative_error(np.vdot(dx, d), num) <= TOL
    out, dcache = decoder_forward(vae.params, vae.arch, eps)
    douts = tuple(rng.standard_normal(o.shape) for o in out)
    dz, dgrads = decoder_backward(douts, dcache)

    def g():
        o, _ = decoder_forward(vae.params, vae.arch, eps)
        return float(sum((a * b).sum() for a, b in zip(o, douts)))
    d = rng.standard_normal(eps.shape)
    num, _ = ridders_derivative(g, eps, d, h0=1e-3)
    assert relative_error(np.vdot(dz, d), num) <= TOL
    # the MLP trunk on its own
    h, mcache = mlp_forward(vae.params, "enc", x, 2, "tanh")
    dh = rng.standard_normal(h.shape)
    dx2, mgrads = mlp_backward(dh, mcache)
    d = rng.standard_normal((7, 5))
    num, _ = ridders_derivative(lambda: float((mlp_forward(vae.params, "enc", x, 2, "tanh")[0] * dh).sum()),
                                vae.params["enc.h1.W"], d, h0=1e-3)
    assert relative_error(np.vdot(mgrads["enc.h1.W"], d), num) <= TOL


def test_float32_model_runs_in_float32():
    vae = VAE(7, 3, 5, seed=0, dtype=np.float32)
    x = np.random.default_rng(0).random((4, 7)) < 0.5
    eps = np.random.default_rng(1).standard_normal((1, 4, 3))
    loss, grads = vae.loss_and_grads(x, eps)
    assert all(g.dtype == np.float32 for g in grads.values())
    v64 = VAE(7, 3, 5, seed=0)
    assert loss == pytest.approx(v64.loss_and_grads(x, eps)[0], rel=1e-5)


# ---------------------------------------------------------------------------- bad input

@pytest.fixture
def vae():
    return VAE(7, 3, 5)


def test_bad_x(vae):
    eps = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 7\)"):
        vae.elbo(np.zeros(7), eps)
    with pytest.raises(ValueError, match=r"shape \(batch, 7\)"):
        vae.elbo(np.zeros((2, 6)), eps)
    with pytest.raises(ValueError, match="NaN or inf"):
        vae.elbo(np.full((2, 7), np.nan), eps)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        vae.elbo(np.full((2, 7), 1.5), eps)
    with pytest.raises(TypeError, match="numeric"):
        vae.elbo(np.array([["a"] * 7] * 2), eps)
    with pytest.raises(ValueError, match="empty"):
        vae.encode(np.zeros((0, 7)))


def test_bad_eps_and_names(vae):
    x = np.zeros((2, 7))
    with pytest.raises(ValueError, match=r"eps must have shape \(L, 2, 3\)"):
        vae.elbo(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"eps must have shape"):
        vae.elbo(x, np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        vae.elbo(x, np.full((1, 2, 3), np.inf))
    with pytest.raises(ValueError, match="unknown estimator 'C'"):
        vae.elbo(x, np.zeros((1, 2, 3)), estimator="C")


def test_elbo_forward_checks_the_estimator_and_the_L_axis_itself(vae):
    """The function level does the cheap checks: a typo in the estimator, or eps without its L axis
    (which would broadcast into a wrong answer), raise instead of computing something else."""
    x = np.zeros((2, 7))
    with pytest.raises(ValueError, match="unknown estimator 'b'"):
        elbo_forward(vae.params, vae.arch, x, np.zeros((1, 2, 3)), "b")
    with pytest.raises(ValueError, match=r"eps must have shape \(L, 2, 3\)"):
        elbo_forward(vae.params, vae.arch, x, np.zeros((2, 3)), "B")
    with pytest.raises(ValueError, match=r"eps must have shape"):
        elbo_forward(vae.params, vae.arch, x, np.zeros((1, 1, 3)), "A")


def test_permuted_gradient_fails_the_random_direction_check():
    """The check the tests rely on can fail: a gradient with two entries swapped is caught."""
    vae, x, eps = small_problem("bernoulli", (5,))
    _, grads = vae.loss_and_grads(x, eps)
    g = grads["enc.h1.W"].copy()
    g.flat[[0, 1]] = g.flat[[1, 0]]
    d = np.random.default_rng(4).standard_normal(g.shape)
    num, _ = ridders_derivative(lambda: vae.loss_and_grads(x, eps)[0], vae.params["enc.h1.W"], d)
    assert relative_error(np.vdot(grads["enc.h1.W"], d), num) <= TOL < relative_error(np.vdot(g, d), num)


def test_bad_construction():
    with pytest.raises(ValueError, match="z_dim must be positive"):
        VAE(7, 0)
    with pytest.raises(ValueError, match="hidden width must be positive"):
        VAE(7, 3, (5, 0))
    with pytest.raises(TypeError, match="hidden must be an int or a tuple"):
        VAE(7, 3, "500")
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        VAE(7, 3, likelihood="poisson")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        VAE(7, 3, dtype=np.int32)
    with pytest.raises(TypeError, match="x_dim must be an int"):
        VAE(7.5, 3)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 4), x_dim=st.integers(1, 5), z_dim=st.integers(1, 3), h=st.integers(1, 4),
       L=st.integers(1, 3), lik=st.sampled_from(["bernoulli", "gaussian"]), seed=st.integers(0, 1000))
def test_any_shape_gives_finite_bound_and_checked_gradient(B, x_dim, z_dim, h, L, lik, seed):
    vae, x, eps = small_problem(lik, (h,), L, B, x_dim, z_dim, seed)
    rows = check_vae(vae, x, eps, "B", mode="directions", n_directions=1)
    assert max(r.rel_error for r in rows) <= TOL


def test_extreme_logits_do_not_overflow():
    vae, x, eps = small_problem("bernoulli")
    vae.params["dec.logits.b"][:] = 3e4
    vae.params["dec.logits.b"][::2] = -3e4
    with np.errstate(over="raise", invalid="raise"):
        loss, grads = vae.loss_and_grads(x, eps)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())


# ---------------------------------------------------------------------------- each backward by name

def test_standard_normal_logpdf_backward_matches_finite_differences():
    from npvae.model import standard_normal_logpdf_backward, standard_normal_logpdf_forward

    from .helpers import check_backward
    rng = np.random.default_rng(0)
    check_backward(standard_normal_logpdf_forward, standard_normal_logpdf_backward, [rng.standard_normal((3, 4, 2))], rng)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_log_likelihood_backward_matches_finite_differences(likelihood):
    from npvae.model import log_likelihood_backward, log_likelihood_forward

    from .helpers import check_backward
    rng = np.random.default_rng(1)
    x = rng.random((4, 5))
    if likelihood == "bernoulli":
        inputs = [rng.standard_normal((2, 4, 5))]
        fwd = lambda out: log_likelihood_forward("bernoulli", x, out)                       # noqa: E731
        bwd = lambda d, c: log_likelihood_backward(d, c, "bernoulli")                       # noqa: E731
    else:
        inputs = [rng.random((2, 4, 5)), rng.uniform(-2, 2, (2, 4, 5))]
        fwd = lambda mean, lv: log_likelihood_forward("gaussian", x, (mean, lv))            # noqa: E731
        bwd = lambda d, c: log_likelihood_backward(d, c, "gaussian")                        # noqa: E731
    check_backward(fwd, bwd, inputs, rng)


def test_head_backward_matches_finite_differences():
    from npvae.model import _head_backward, _head_forward

    from .helpers import check_backward
    rng = np.random.default_rng(2)
    h, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)

    def fwd(h, W, b):
        return _head_forward({"q.W": W, "q.b": b}, "q", h)

    def bwd(dout, cache):
        grads = {}
        dh = _head_backward(dout, cache, "q", grads)
        return dh, grads["q.W"], grads["q.b"]
    check_backward(fwd, bwd, [h, W, b], rng)


@pytest.mark.parametrize("estimator", ["A", "B"])
def test_elbo_backward_with_any_upstream_gradient(estimator):
    """elbo_backward(delbo) for a random delbo (not just -1/B) against differences of sum(delbo * elbo)."""
    from npvae.model import elbo_backward, elbo_forward
    vae, x, eps = small_problem("gaussian", (5,), L=2)
    rng = np.random.default_rng(3)
    delbo = rng.standard_normal(x.shape[0])
    _, cache = elbo_forward(vae.params, vae.arch, x, eps, estimator)
    grads = elbo_backward(delbo, cache)

    def f():
        return float((elbo_forward(vae.params, vae.arch, x, eps, estimator)[0] * delbo).sum())
    for name, g in grads.items():
        d = rng.standard_normal(g.shape)
        num, _ = ridders_derivative(f, vae.params[name], d)
        assert relative_error(np.vdot(g, d), num) <= TOL, name


# --------------------------------------------------------------------------- the KL weight (beta)

@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("estimator", ["A", "B"])
@pytest.mark.parametrize("kl_weight", [0.0, 0.3, 4.0])
def test_kl_weighted_gradient_matches_finite_differences(likelihood, estimator, kl_weight):
    """The gradient of E_q[log p(x|z)] - beta KL, every element, float64, against Ridders'
    differences of the weighted objective computed by the forward pass alone."""
    vae, x, eps = small_problem(likelihood, (5,), L=2)
    rows = check_vae(vae, x, eps, estimator, mode="elements", kl_weight=kl_weight)
    assert {r.name for r in rows} == set(vae.params)
    for r in rows:
        assert r.rel_error <= TOL, (r.name, r.rel_error)


@pytest.mark.parametrize("estimator", ["A", "B"])
def test_kl_weighted_objective_is_reconstruction_minus_beta_kl(estimator):
    from npvae.model import elbo_backward, elbo_forward, kl_weighted_objective
    vae, x, eps = small_problem("bernoulli", (5,), L=3)
    elbo, cache = elbo_forward(vae.params, vae.arch, x, eps, estimator)
    assert kl_weighted_objective(elbo, cache, 1.0) is elbo                      # beta = 1: the bound itself
    assert np.allclose(cache.reconstruction - cache.kl, elbo, rtol=1e-13)      # the two terms make the bound
    if estimator == "B":
        assert np.all(cache.kl > 0)                                            # analytic KL
    loss0, g0 = vae.loss_and_grads(x, eps, estimator, kl_weight=0.0)
    loss1, g1 = vae.loss_and_grads(x, eps, estimator, kl_weight=1.0)
    loss3, g3 = vae.loss_and_grads(x, eps, estimator, kl_weight=3.0)
    assert loss0 == pytest.approx(-cache.reconstruction.mean(), rel=1e-13)     # beta = 0: reconstruction only
    assert loss1 == -elbo.mean()
    assert loss3 == pytest.approx(-(cache.reconstruction - 3.0 * cache.kl).mean(), rel=1e-13)
    for k in g0:                                       # the gradient is affine in beta ...
        assert np.allclose(g3[k], g0[k] + 3.0 * (g1[k] - g0[k]), rtol=1e-10, atol=1e-13), k
    for k in g0:      # ... and reaches only the encoder: the KL term has no decoder parameter
        assert np.array_equal(g0[k], g1[k]) == k.startswith("dec."), k
    delbo = np.full(x.shape[0], -1.0 / x.shape[0])
    assert all(np.array_equal(elbo_backward(delbo, cache)[k], g1[k]) for k in g1)


def test_kl_weight_keeps_float32_and_rejects_bad_values():
    vae, x, eps = small_problem("gaussian")
    vae32 = VAE(7, 3, (5,), "gaussian", seed=0, init_std=0.5, dtype=np.float32)
    _, grads = vae32.loss_and_grads(x.astype(np.float32), eps.astype(np.float32), "A", kl_weight=np.float64(0.5))
    assert all(g.dtype == np.float32 for g in grads.values())
    for bad, err in ((-1.0, ValueError), (np.nan, ValueError), (np.inf, ValueError), ("1", TypeError),
                     (True, TypeError)):
        with pytest.raises(err, match="kl_weight"):
            vae.loss_and_grads(x, eps, kl_weight=bad)


# --------------------------------------------------------------------------- a Gaussian decoder of fixed variance

def test_fixed_variance_decoder_has_no_logvar_head_and_starts_where_the_learned_one_does():
    learned = VAE(7, 3, (5,), "gaussian", seed=4, init_std=0.5)
    fixed = VAE(7, 3, (5,), "gaussian", seed=4, init_std=0.5, decoder_var=0.04)
    assert set(learned.params) - set(fixed.params) == {"dec.logvar.W", "dec.logvar.b"}
    assert all(np.array_equal(fixed.params[k], learned.params[k]) for k in fixed.params)
    assert "decoder_var=0.04" in repr(fixed)
    mean, logvar = fixed.decode(np.zeros((2, 3)))
    assert np.all(logvar == np.log(0.04)) and mean.shape == logvar.shape == (2, 7)


def test_fixed_variance_log_likelihood_is_a_scaled_squared_error():
    from npvae.model import decoder_forward, log_likelihood_forward
    vae, x, eps = small_problem("gaussian")
    vae.use_fixed_decoder_var(0.25)
    (mean, _), _ = decoder_forward(vae.params, vae.arch, eps)
    log_px, _ = log_likelihood_forward("gaussian", x, decoder_forward(vae.params, vae.arch, eps)[0])
    sse = ((x - mean) ** 2).sum(axis=-1)
    assert np.allclose(log_px, -sse / (2 * 0.25) - 0.5 * 7 * np.log(2 * np.pi * 0.25), rtol=1e-13)


@pytest.mark.parametrize("estimator", ["A", "B"])
@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_fixed_variance_gradient_matches_finite_differences(estimator, kl_weight):
    vae, x, eps = small_problem("gaussian", (5,), L=2)
    vae.use_fixed_decoder_var(0.1)
    rows = check_vae(vae, x, eps, estimator, mode="elements", kl_weight=kl_weight)
    assert {r.name for r in rows} == set(vae.params) and "dec.logvar.W" not in vae.params
    for r in rows:
        assert r.rel_error <= TOL, (r.name, r.rel_error)


def test_fixed_variance_needs_a_gaussian_decoder_and_a_usable_variance():
    with pytest.raises(ValueError, match="gaussian decoder"):
        VAE(7, 3, 5, "bernoulli", decoder_var=0.1)
    for bad in (0.0, -1.0, np.nan, np.inf, 1e-20):
        with pytest.raises(ValueError, match="decoder_var"):
            VAE(7, 3, 5, "gaussian", decoder_var=bad)
    vae = VAE(7, 3, 5, "gaussian", decoder_var=0.1)
    with pytest.raises(ValueError, match="already fixed"):
        vae.use_fixed_decoder_var(0.2)
