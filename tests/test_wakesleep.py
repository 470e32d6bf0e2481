"""Wake-sleep: both phases' gradients against finite differences, the fast step against the
readable one, the decoder's samples, and training through the harness (learning, bitwise resume)."""
import dataclasses

import numpy as np
import pytest

from npvae import VAE, Adagrad
from npvae.fast import FastWakeSleep
from npvae.gradcheck import check_elements
from npvae.learners import WakeSleep, evaluate_bound
from npvae.model import sample_x
from npvae.train import TrainConfig, train
from npvae.wakesleep import dream, sample_posterior, sleep_loss_and_grads, wake_loss_and_grads

from .test_train import params_of, toy_config, toy_data


def problem(likelihood, dtype=np.float64, B=5, seed=0):
    rng = np.random.default_rng(seed)
    vae = VAE(7, 3, (6,), likelihood, seed=seed, init_std=0.5, dtype=dtype)
    x = (rng.random((B, 7)) < 0.4).astype(dtype) if likelihood == "bernoulli" else rng.random((B, 7)).astype(dtype)
    z = rng.standard_normal((B, 3)).astype(dtype)
    return vae, x, z


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_wake_gradient_matches_finite_differences(likelihood):
    vae, x, z = problem(likelihood)
    loss, grads = wake_loss_and_grads(vae.params, vae.arch, x, z)
    assert sorted(grads) == sorted(k for k in vae.params if k.startswith("dec."))
    assert loss == pytest.approx(-vae.log_joint(x, z).mean(), rel=1e-13)
    dec = {k: p for k, p in vae.params.items() if k.startswith("dec.")}
    rows = check_elements(lambda: wake_loss_and_grads(vae.params, vae.arch, x, z)[0], dec, grads)
    assert max(r.rel_error for r in rows) < 1e-6, max(rows, key=lambda r: r.rel_error)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_sleep_gradient_matches_finite_differences(likelihood):
    vae, x, z = problem(likelihood, seed=1)
    loss, grads = sleep_loss_and_grads(vae.params, vae.arch, x, z)
    assert sorted(grads) == sorted(k for k in vae.params if k.startswith("enc."))
    assert loss == pytest.approx(-vae.log_q(z, x).mean(), rel=1e-13)
    enc = {k: p for k, p in vae.params.items() if k.startswith("enc.")}
    rows = check_elements(lambda: sleep_loss_and_grads(vae.params, vae.arch, x, z)[0], enc, grads)
    assert max(r.rel_error for r in rows) < 1e-6, max(rows, key=lambda r: r.rel_error)


def test_sleep_gradient_is_zero_across_the_clamp():
    vae, x, z = problem("bernoulli", seed=2)
    vae.params["enc.logvar.b"][0] = -60.0                 # held by the logvar clamp: no gradient
    _, grads = sleep_loss_and_grads(vae.params, vae.arch, x, z)
    assert grads["enc.logvar.b"][0] == 0.0 and grads["enc.logvar.W"][:, 0].tolist() == [0.0] * 6


def test_the_wake_sample_is_the_reparameterized_posterior_sample():
    vae, x, _ = problem("bernoulli")
    eps = np.random.default_rng(3).standard_normal((5, 3))
    mu, logvar = vae.encode(x)
    assert np.allclose(sample_posterior(vae.params, vae.arch, x, eps), mu + np.exp(0.5 * logvar) * eps, rtol=1e-15)


def test_bernoulli_dreams_are_samples_with_the_decoders_probabilities():
    vae, _, _ = problem("bernoulli")
    z = np.zeros((40_000, 3))
    x = sample_x(vae.params, vae.arch, z, np.random.default_rng(0))
    p = vae.decode(z[:1])[0]
    assert set(np.unique(x)) <= {0.0, 1.0}                                 # a sample, not the mean
    assert np.abs(x.mean(axis=0) - p).max() < 5 * np.sqrt(0.25 / 40_000)
    again = sample_x(vae.params, vae.arch, z, np.random.default_rng(0))
    assert np.array_equal(x, again)                                       # randomness only from the Generator


def test_gaussian_dreams_have_the_decoders_mean_and_variance():
    vae, _, _ = problem("gaussian")
    z = np.full((40_000, 3), 0.3)
    x = sample_x(vae.params, vae.arch, z, np.random.default_rng(1))
    mean, logvar = vae.decode(z[:1])
    var = np.exp(logvar[0])
    assert np.abs(x.mean(axis=0) - mean[0]).max() < 5 * np.sqrt(var.max() / 40_000)
    assert np.allclose(x.var(axis=0), var, rtol=0.05)


def test_dream_draws_z_then_x():
    vae, _, _ = problem("bernoulli")
    x, z = dream(vae.params, vae.arch, 4, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    z2 = rng.standard_normal((4, 3))
    assert np.array_equal(z, z2)
    assert np.array_equal(x, sample_x(vae.params, vae.arch, z2, rng))


def _learner(fast, dtype, seed=0, n_train=40):
    cfg = TrainConfig(algorithm="wakesleep", nz=3, hidden=(6,), batch_size=5, warmup=1, lr=0.05, fast=fast,
                      dtype=dtype, prior="weights")
    return WakeSleep(cfg, 7, n_train, np.random.default_rng(seed))


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("dynamic", [False, True])
def test_fast_wake_sleep_step_equals_the_readable_one(dtype, rtol, dynamic):
    fast, ref = _learner(True, dtype), _learner(False, dtype)
    assert isinstance(fast.fast, FastWakeSleep) and ref.fast is None
    data = toy_data(dynamic=dynamic, n=40, d=7)
    data.train_x = data.train_x.astype(dtype)
    rng_f, rng_r = np.random.default_rng(11), np.random.default_rng(11)
    for step in range(4):                                     # the warm-up call, then real steps
        idx = np.arange(5 * step, 5 * step + 5)
        assert fast.step(data, idx, rng_f) and ref.step(data, idx, rng_r)
    for k in ref.vae.params:
        assert fast.vae.params[k].dtype == np.dtype(dtype)
        assert np.allclose(fast.vae.params[k], ref.vae.params[k], rtol=rtol, atol=rtol * 1e-3), k
    assert rng_f.bit_generator.state == rng_r.bit_generator.state        # the same draws, in the same order
    for slot in ("gen_opt", "rec_opt"):
        a, b = getattr(fast, slot).state_dict(), getattr(ref, slot).state_dict()
        assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=rtol, atol=1e-12) for k in a)


def test_wake_updates_only_the_generative_and_sleep_only_the_recognition_parameters():
    ws = _learner(False, "float64")
    data = toy_data(dynamic=True, n=40, d=7)
    ws.step(data, np.arange(5), np.random.default_rng(0))              # warm-up: accumulate only
    assert set(ws.gen_opt.state["sum_sq"]) == {k for k in ws.vae.params if k.startswith("dec.")}
    assert set(ws.rec_opt.state["sum_sq"]) == {k for k in ws.vae.params if k.startswith("enc.")}


def test_fast_wake_sleep_needs_a_bernoulli_tanh_model():
    vae = VAE(7, 3, 6, "gaussian")
    with pytest.raises(ValueError, match="gaussian decoder"):
        FastWakeSleep(vae, Adagrad(), Adagrad(), 5)
    cfg = TrainConfig(algorithm="wakesleep", dataset="frey", nz=3, hidden=(6,), batch_size=5)
    assert WakeSleep(cfg, 7, 40, np.random.default_rng(0)).implementation.startswith("reference (")


def test_wake_sleep_trains_through_the_harness_and_resumes_bitwise(tmp_path):
    data = toy_data()
    full = toy_config(tmp_path / "a", algorithm="wakesleep", samples=6000, lr=0.05)
    s = train(full, data=data, log=lambda *_: None)
    assert s["status"] == "finished" and s["algorithm"] == "wakesleep"
    untrained = evaluate_bound(VAE(16, 2, 8), data.train_eval_x, np.zeros((1, 300, 2)))
    assert s["train_elbo"] > untrained + 3.0                             # it learned (from about -11 nats)
    part = dataclasses.replace(full, out=str(tmp_path / "b" / "run"))
    train(part, data=data, callback=lambda learner, st: st.steps == 41, log=lambda *_: None)
    train(part, resume=True, data=data, log=lambda *_: None)
    a, b = params_of(full.out), params_of(part.out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with np.load(f"{full.out}/checkpoint.npz") as z:
        assert {"opt.gen/t", "opt.rec/t"} <= set(z.files) and not [k for k in z.files if k.startswith("opt/")]
