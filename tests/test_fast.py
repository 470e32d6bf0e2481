import numpy as np
import pytest

from npvae import VAE, Adagrad, Adam
from npvae.fast import FastStep
from npvae.kernels import adagrad_update, adagrad_update_reference, tanh_backward_inplace
from npvae.learners import prior_grads
from npvae.train import TrainConfig, train

from .test_train import params_of, toy_data


def problem(hidden, L, dtype=np.float64, B=6, seed=0):
    rng = np.random.default_rng(seed)
    vae = VAE(11, 3, hidden, seed=seed, init_std=0.4, dtype=dtype)
    x = (rng.random((B, 11)) < 0.4).astype(dtype)
    eps = rng.standard_normal((L, B, 3)).astype(dtype)
    return vae, x, eps


@pytest.mark.parametrize("hidden,L", [((7,), 1), ((7,), 3), ((8, 5), 2)])
def test_fast_gradients_equal_the_reference(hidden, L):
    vae, x, eps = problem(hidden, L)
    loss, grads = vae.loss_and_grads(x, eps, "B")
    fast = FastStep(vae, Adagrad(), batch_size=6, L=L)
    fast_loss = fast.loss_and_grads(x, eps, want_loss=True)
    assert fast_loss == pytest.approx(loss, rel=1e-13)
    for k in grads:
        assert np.allclose(fast.grads[k], grads[k], rtol=1e-12, atol=1e-15), k
    assert fast.loss_and_grads(x, eps, want_loss=False) is None


def test_fast_gradients_with_the_logvar_clamp_active():
    vae, x, eps = problem((7,), 2)
    vae.params["enc.logvar.b"][1] = -100.0
    _, grads = vae.loss_and_grads(x, eps)
    fast = FastStep(vae, Adagrad(), 6, 2)
    fast.loss_and_grads(x, eps)
    assert grads["enc.logvar.b"][1] == 0.0 and fast.grads["enc.logvar.b"][1] == 0.0
    assert all(np.allclose(fast.grads[k], grads[k], rtol=1e-12, atol=1e-15) for k in grads)


@pytest.mark.parametrize("opt_cls", [Adagrad, Adam])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fast_step_equals_reference_step(opt_cls, dtype, rtol):
    ref, x, eps = problem((7, 5), 1, dtype)
    fast_vae, _, _ = problem((7, 5), 1, dtype)
    kw = {"lr": 0.05, "warmup": 1} if opt_cls is Adagrad else {"lr": 0.01}
    ref_opt, fast_opt = opt_cls(**kw), opt_cls(**kw)
    fast = FastStep(fast_vae, fast_opt, 6, 1, prior="weights", prior_scale=1e-2)
    for _ in range(3):                     # the warm-up call, then real steps
        _, grads = ref.loss_and_grads(x, eps)
        prior_grads(ref.params, grads, 1e-2, "weights")
        ref_opt.update(ref.params, grads)
        _, finite = fast.step(x, eps)
        assert finite
    for k in ref.params:
        assert fast_vae.params[k].dtype == dtype
        assert np.allclose(fast_vae.params[k], ref.params[k], rtol=rtol, atol=rtol * 1e-3), k


def test_adagrad_kernel_matches_reference_and_flags_non_finite():
    rng = np.random.default_rng(0)
    p, g, s = rng.standard_normal(1000), rng.standard_normal(1000), rng.random(1000)
    p2, s2 = p.copy(), s.copy()
    assert not adagrad_update(p, g, s, 0.01, 1e-8, 0.002, True)
    assert not adagrad_update_reference(p2, g, s2, 0.01, 1e-8, 0.002, True)
    assert np.allclose(p, p2, rtol=1e-15, atol=0) and np.allclose(s, s2, rtol=1e-15, atol=0)
    for bad in (np.nan, np.inf, -np.inf):
        g[17] = bad
        assert adagrad_update(p.copy(), g, s.copy(), 0.01, 1e-8, 0.0, False)


def test_tanh_backward_inplace_is_the_tanh_backward():
    from npvae.layers import tanh_backward, tanh_forward
    rng = np.random.default_rng(1)
    a, dout = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    h, cache = tanh_forward(a)
    expected = tanh_backward(dout, cache)
    db = np.empty(5)
    tanh_backward_inplace(dout, h, 1.0, db)
    assert np.allclose(db, expected.sum(axis=0), rtol=1e-14)
    assert np.allclose(dout, expected, rtol=1e-15)


def test_training_with_the_fast_path_tracks_the_reference_path(tmp_path):
    data = toy_data()
    kw = dict(nz=2, hidden=(8,), samples=2000, batch_size=20, checkpoint_seconds=1e9, progress=False,
              figures=False, warmup=2, lr=0.02)
    train(TrainConfig(out=str(tmp_path / "fast"), fast=True, **kw), data=data, log=lambda *_: None)
    train(TrainConfig(out=str(tmp_path / "ref"), fast=False, **kw), data=data, log=lambda *_: None)
    a, b = params_of(str(tmp_path / "fast")), params_of(str(tmp_path / "ref"))
    assert all(np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)


def test_float32_training_tracks_float64(tmp_path):
    data64 = toy_data()
    data32 = type(data64)(*(v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == float else v
                            for v in (data64.train_x, data64.train_eval_x, data64.test_x, data64.test_y,
                                      data64.image_shape, data64.dynamic)))
    kw = dict(nz=2, hidden=(8,), samples=4000, batch_size=20, checkpoint_seconds=1e9, progress=False,
              figures=False, warmup=2, lr=0.02, binarize="none")
    data64.dynamic = data32.dynamic = False           # same minibatches in both precisions
    s64 = train(TrainConfig(out=str(tmp_path / "64"), **kw), data=data64, log=lambda *_: None)
    s32 = train(TrainConfig(out=str(tmp_path / "32"), dtype="float32", **kw), data=data32, log=lambda *_: None)
    assert abs(s32["train_elbo"] - s64["train_elbo"]) < 0.01 * abs(s64["train_elbo"])
    a, b = params_of(str(tmp_path / "64")), params_of(str(tmp_path / "32"))
    assert all(b[k].dtype == np.float32 for k in b)
    assert all(np.allclose(a[k], b[k], rtol=1e-2, atol=1e-3) for k in a)


@pytest.mark.parametrize("L", [1, 3])
def test_fast_gradients_pass_finite_differences(L):
    """FastStep's own backward (its fused kernels) against central differences of its own loss,
    float64, every element: independent of the reference path."""
    from npvae.gradcheck import check_elements
    vae, x, eps = problem((7, 5), L, seed=3)
    vae.params["enc.logvar.b"][0] = -45.0          # one logvar unit held by the clamp: gradient 0 there
    fast = FastStep(vae, Adagrad(), 6, L)
    fast.loss_and_grads(x, eps)
    grads = {k: g.copy() for k, g in fast.grads.items()}
    assert grads["enc.logvar.b"][0] == 0.0
    rows = check_elements(lambda: fast.loss_and_grads(x, eps, want_loss=True), vae.params, grads)
    worst = max(rows, key=lambda r: r.rel_error)
    assert worst.rel_error < 1e-6, worst


def small_kernel_cases(dtype, rng):
    """(name, run the Numba kernel -> results, run its NumPy reference -> results) on random inputs."""
    from npvae import kernels as F
    t = np.dtype(dtype).type
    r = lambda *s: rng.standard_normal(s).astype(dtype)          # noqa: E731
    L, B, Z, H = 3, 7, 4, 9
    mu, logvar, b_mu, b_lv = r(B, Z), 20 * r(B, Z), r(Z), r(Z)
    logvar[0, :2] = [-100.0, 100.0]                               # both sides of the clamp
    logvar[1, 0] = np.nan                                         # NaN passes through as NaN
    lo, hi = t(-30.0), t(30.0)
    eps, sigma, dz = r(L, B, Z), np.exp(r(B, Z)), r(L, B, Z)
    inside = rng.random((B, Z)) < 0.8
    dmu_kl, dlv_kl, dh, h, a, bias = r(B, Z), r(B, Z), r(B, H), np.tanh(r(B, H)), r(B, H), r(H)

    def heads():
        m, lv, ins = mu.copy(), logvar.copy(), np.empty((B, Z), bool)
        F.heads_bias_clamp(m, lv, b_mu, b_lv, lo, hi, ins)
        return m, lv, ins

    def node_fwd():
        z = np.empty((L, B, Z), dtype)
        F.reparameterize_into(mu, sigma, eps, z)
        return (z,)

    def node_bwd():
        outs = [np.empty((B, Z), dtype), np.empty((B, Z), dtype), np.empty(Z, dtype), np.empty(Z, dtype)]
        F.reparameterize_backward_into(dz, eps, sigma, inside, dmu_kl, dlv_kl, t(0.5), *outs)
        return outs

    def tanh_bwd():
        d, db = dh.copy(), np.empty(H, dtype)
        F.tanh_backward_inplace(d, h, t(1), db)
        return d, db

    def bias_neg_abs():
        x, w = a.copy(), np.empty_like(a)
        F.add_bias_neg_abs(x, bias, w)
        return x, w

    logits, u = 30 * r(B, H), rng.random((B, H)).astype(dtype)
    logits[0, :3] = [3e4, -3e4, 0.0]                              # extreme and zero logits
    z = r(B, Z)

    def dream_sample():
        x = np.empty((B, H), dtype)
        F.bernoulli_sample_from_logits(logits, np.exp(-np.abs(logits)), u, t(1), x)
        return (x,)

    lv_clamped = np.clip(logvar, -30, 30)

    def log_q_grads():
        outs = [np.empty((B, Z), dtype), np.exp(-lv_clamped), np.empty(Z, dtype), np.empty(Z, dtype)]
        F.log_q_grads_into(z, mu, lv_clamped, inside, t(0.1), t(0.5), t(1), outs[0], outs[1], outs[2], outs[3])
        return outs

    return [("heads_bias_clamp", heads, lambda: F.heads_bias_clamp_reference(mu, logvar, b_mu, b_lv, lo, hi)),
            ("reparameterize_into", node_fwd, lambda: (F.reparameterize_into_reference(mu, sigma, eps),)),
            ("reparameterize_backward_into", node_bwd,
             lambda: F.reparameterize_backward_into_reference(dz, eps, sigma, inside, dmu_kl, dlv_kl)),
            ("tanh_backward_inplace", tanh_bwd, lambda: F.tanh_backward_reference(dh, h)),
            ("add_bias_neg_abs", bias_neg_abs, lambda: F.add_bias_neg_abs_reference(a, bias)),
            ("bernoulli_sample_from_logits", dream_sample,
             lambda: (F.bernoulli_sample_from_logits_reference(logits, u),)),
            ("log_q_grads_into", log_q_grads,
             lambda: F.log_q_grads_into_reference(z, mu, lv_clamped, inside, t(0.1)))]


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_small_kernels_match_their_numpy_references(dtype, rtol):
    for name, kernel, reference in small_kernel_cases(dtype, np.random.default_rng(5)):
        got, want = kernel(), reference()
        assert len(got) == len(want), name
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype, name
            assert np.allclose(g, w, rtol=rtol, atol=rtol, equal_nan=True), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_load_batch_gathers_binarizes_and_draws_like_the_reference_loop(dtype):
    from npvae.data import binarize
    vae, _, _ = problem((7,), 2, dtype)
    fast = FastStep(vae, Adagrad(), batch_size=4, L=2)
    data = np.random.default_rng(0).random((30, 11)).astype(dtype)       # grey values in [0, 1)
    idx = np.array([29, 0, 7, 7])
    x, eps = fast.load_batch(data, idx, np.random.default_rng(9), dynamic=True)
    rng = np.random.default_rng(9)
    expected_x = binarize(data[idx], rng)
    expected_eps = rng.standard_normal((2, 4, 3)).astype(dtype)           # float64 draws, as the reference loop
    assert x.dtype == dtype and np.array_equal(x, expected_x)
    assert eps.dtype == dtype and np.array_equal(eps, expected_eps)
    x, _ = fast.load_batch(data, idx)                                     # no rng: gather only
    assert np.array_equal(x, data[idx])


@pytest.mark.parametrize("idx", [[0, 1, 2, 30], [-1, 0, 1, 2], [0, 1, 2]])
def test_load_batch_rejects_bad_indices(idx):
    vae, _, _ = problem((7,), 1)
    fast = FastStep(vae, Adagrad(), batch_size=4)
    with pytest.raises(IndexError, match="row indices"):
        fast.load_batch(np.zeros((30, 11)), np.array(idx))


@pytest.mark.parametrize("kl_weight", [0.0, 0.3, 2.5])
@pytest.mark.parametrize("L", [1, 3])
def test_fast_kl_weight_equals_the_reference(kl_weight, L):
    """beta-weighted KL in the fast step: the readable VAE.loss_and_grads(..., kl_weight) to rounding."""
    vae, x, eps = problem((7,), L)
    loss, grads = vae.loss_and_grads(x, eps, "B", kl_weight=kl_weight)
    fast = FastStep(vae, Adagrad(), batch_size=6, L=L)
    fast.kl_weight = kl_weight
    assert fast.loss_and_grads(x, eps, want_loss=True) == pytest.approx(loss, rel=1e-13)
    for k in grads:
        assert np.allclose(fast.grads[k], grads[k], rtol=1e-12, atol=1e-15), k
    _, unweighted = vae.loss_and_grads(x, eps, "B")
    assert not np.allclose(fast.grads["enc.mu.W"], unweighted["enc.mu.W"])       # beta did change it


def test_fast_kl_weighted_training_tracks_the_reference_path(tmp_path):
    data = toy_data()
    kw = dict(nz=2, hidden=(8,), samples=2000, batch_size=20, checkpoint_seconds=1e9, progress=False,
              figures=False, warmup=2, lr=0.02, beta=2.0, kl_warmup=1000)
    s = train(TrainConfig(out=str(tmp_path / "fast"), fast=True, **kw), data=data, log=lambda *_: None)
    train(TrainConfig(out=str(tmp_path / "ref"), fast=False, **kw), data=data, log=lambda *_: None)
    assert s["implementation"].startswith("fast step")
    a, b = params_of(str(tmp_path / "fast")), params_of(str(tmp_path / "ref"))
    assert all(np.allclose(a[k], b[k], rtol=1e-9, atol=1e-12) for k in a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("prior", ["weights", "all", "none"])
def test_fused_adagrad_update_is_the_readable_prior_and_adagrad_bitwise(dtype, prior):
    from npvae.fast import fused_adagrad_applies, fused_adagrad_update
    rng = np.random.default_rng(7)
    shapes = {"enc.h0.W": (30, 20), "enc.h0.b": (20,), "dec.mean.W": (20, 30), "dec.mean.b": (30,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    ref, start = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    fused_opt, ref_opt = Adagrad(lr=0.02, warmup=2), Adagrad(lr=0.02, warmup=2)
    for step in range(6):                          # two warm-up calls, then steps on a growing accumulator
        grads = {k: (rng.standard_normal(s) * 10.0 ** rng.uniform(-4, 2)).astype(dtype) for k, s in shapes.items()}
        assert fused_adagrad_applies(params, grads, fused_opt, 1 / 300)
        assert not fused_adagrad_update(params, {k: g.copy() for k, g in grads.items()}, fused_opt, prior, 1 / 300)
        prior_grads(ref, grads, 1 / 300, prior)
        ref_opt.update(ref, grads)
        assert fused_opt.t == ref_opt.t
        for k in shapes:
            assert params[k].dtype == dtype and np.array_equal(params[k], ref[k]), (step, k)
            assert np.array_equal(fused_opt.state["sum_sq"][k], ref_opt.state["sum_sq"][k]), (step, k)
    assert not any(np.array_equal(params[k], start[k]) for k in shapes)          # the steps did step
    bad = {k: g.copy() for k, g in grads.items()}
    bad["enc.h0.b"][3] = np.nan
    assert fused_adagrad_update(params, bad, fused_opt, prior, 1 / 300)         # a NaN is reported


def test_fused_adagrad_is_not_taken_where_it_would_differ():
    from npvae.fast import fused_adagrad_applies
    p, g = {"w": np.zeros((4, 6), np.float32)}, {"w": np.ones((4, 6), np.float32)}
    assert fused_adagrad_applies(p, g, Adagrad(), 0.01)
    assert not fused_adagrad_applies(p, g, Adam(), 0.01)                                     # another rule
    assert not fused_adagrad_applies(p, {"w": np.ones((4, 6))}, Adagrad(), 0.01)             # mixed dtypes round otherwise
    assert not fused_adagrad_applies({"w": np.zeros((6, 4), np.float32).T}, g, Adagrad(), 0.01)   # no flat view
    assert not fused_adagrad_applies(p, {"v": g["w"]}, Adagrad(), 0.01)
    # NumPy computes float64-scalar * float32-array in float64; the kernel takes the scale in float32
    assert not fused_adagrad_applies(p, g, Adagrad(), np.float64(0.01))
    opt = Adagrad()
    opt.state["sum_sq"]["w"] = np.zeros((6, 4), np.float32).T                              # updated through a copy
    assert not fused_adagrad_applies(p, g, opt, 0.01)
    opt.state["sum_sq"]["w"] = np.zeros((4, 6))                                             # another dtype
    assert not fused_adagrad_applies(p, g, opt, 0.01)
    opt.state["sum_sq"]["w"] = np.zeros((4, 6), np.float32)
    assert fused_adagrad_applies(p, g, opt, 0.01)


@pytest.mark.parametrize("algorithm", ["aevb", "wakesleep", "mcem"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_readable_gaussian_training_is_bitwise_the_same_with_the_fused_update(tmp_path, monkeypatch, algorithm,
                                                                                dtype):
    # the Gaussian decoder has no fast step: --fast changes only its prior + Adagrad update, bit for bit
    from npvae import fast as fast_module
    from npvae import learners
    from npvae.data import TrainingData
    calls = []

    def counted(*args):
        calls.append(1)
        return fast_module.fused_adagrad_update(*args)
    monkeypatch.setattr(learners, "fused_adagrad_update", counted)
    rng = np.random.default_rng(0)
    grey, test = rng.random((300, 16)), rng.random((60, 16))
    data = TrainingData(grey, grey, test, None, (4, 4), False)
    kw = dict(nz=2, hidden=(8,), samples=2000 if algorithm != "mcem" else 600, batch_size=20, checkpoint_seconds=1e9,
              progress=False, figures=False, warmup=2, lr=0.02, decoder="gaussian", binarize="none",
              algorithm=algorithm, dtype=dtype)
    if algorithm == "mcem":                         # no encoder: it is evaluated by log p(x), on a few points
        kw.update(metric="marginal", eval_max=6, eval_per_decade=1)
    s = train(TrainConfig(out=str(tmp_path / "fast"), fast=True, **kw), data=data, log=lambda *_: None)
    assert s["status"] == "finished" and s["implementation"].endswith("prior and Adagrad fused") and calls
    n_fused = len(calls)
    train(TrainConfig(out=str(tmp_path / "ref"), fast=False, **kw), data=data, log=lambda *_: None)
    assert len(calls) == n_fused                                                   # the readable update
    # a run resumed across the change: --fast=false to half the budget, then --fast=true
    half = TrainConfig(out=str(tmp_path / "mixed"), fast=False, **{**kw, "samples": kw["samples"] // 2})
    train(half, data=data, log=lambda *_: None)
    train(TrainConfig(out=half.out, fast=True, **kw), resume=True, data=data, log=lambda *_: None)
    assert len(calls) > n_fused
    ref, mixed = np.load(tmp_path / "ref" / "checkpoint.npz"), np.load(tmp_path / "mixed" / "checkpoint.npz")
    arrays = [k for k in ref.files if k not in ("config", "seconds", "history")]      # the timings differ
    assert ref.files == mixed.files and {"opt", "rng_state"} & {k.split("/")[0] for k in arrays}
    assert all(np.array_equal(ref[k], mixed[k]) for k in arrays), [k for k in arrays if not np.array_equal(ref[k], mixed[k])]
    assert np.array_equal(ref["history"][-1, [0, 2, 3]], mixed["history"][-1, [0, 2, 3]])  # samples, train, test
    a, b = params_of(str(tmp_path / "fast")), params_of(str(tmp_path / "ref"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    init = TrainConfig(out=str(tmp_path / "init"), fast=True, **{**kw, "samples": 20})
    train(init, data=data, log=lambda *_: None)
    assert not all(np.array_equal(a[k], params_of(init.out)[k]) for k in a)        # training moved them
