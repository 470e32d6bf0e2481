"""Monte Carlo EM (App. E) through the harness, the Appendix D metric in the loop, --n_train,
and examples/figure3.py's pipeline."""
import csv
import dataclasses
import json
import os

import numpy as np
import pytest

from npvae.config import ConfigError, TrainConfig
from npvae.learners import MCEM
from npvae.train import first_n_training_points, train

from .helpers import run_sweep_script
from .test_examples import have
from .test_train import params_of, toy_config, toy_data


def mcem_config(tmp_path, **kw):
    return toy_config(tmp_path, **{**dict(algorithm="mcem", metric="marginal", eval_max=12, lr=0.05,
                                          eval_per_decade=1), **kw})


def test_mcem_learns_and_resumes_bitwise_with_its_chains(tmp_path):
    data = toy_data(dynamic=False)
    full = mcem_config(tmp_path / "a", samples=4000)
    s = train(full, data=data, log=lambda *_: None)
    history = list(csv.DictReader(open(os.path.join(full.out, "history.csv"))))
    assert list(history[0]) == ["samples", "seconds", "train_log_px", "test_log_px"]
    assert s["status"] == "finished" and "train_log_px" in s and "train_elbo" not in s
    # EM climbs the likelihood: the App. D estimate at the end beats the one after a single minibatch
    untrained = train(dataclasses.replace(full, samples=20, out=str(tmp_path / "u")), data=data,
                      log=lambda *_: None)
    assert s["train_log_px"] > untrained["train_log_px"] + 1.0
    part = dataclasses.replace(full, out=str(tmp_path / "b" / "run"))
    train(part, data=data, callback=lambda learner, st: st.steps == 37, log=lambda *_: None)
    train(part, resume=True, data=data, log=lambda *_: None)
    a, b = params_of(full.out), params_of(part.out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with np.load(f"{full.out}/checkpoint.npz") as za, np.load(f"{part.out}/checkpoint.npz") as zb:
        for name in ("mcem/z", "mcem/step_size", "mcem/accept_rate", "opt/t"):
            assert np.array_equal(za[name], zb[name]), name
        assert za["mcem/z"].shape == (300, 2)
        history_a, history_b = za["history"], zb["history"]
    assert np.array_equal(history_a[:, [0, 2, 3]], history_b[:, [0, 2, 3]])      # evaluations too


def test_mcem_lr_probe_picks_by_the_training_log_px_and_then_runs_as_if_given(tmp_path):
    """MCEM has no bound: the paper's step-size rule (§5) compares its App. D estimate on training
    points instead.  The picked run is the run one would get by giving that step size."""
    data = toy_data(dynamic=False)
    log = []
    probed = train(mcem_config(tmp_path / "p", samples=1200, lr_probe=600), data=data, log=log.append)
    results = {float(k): v for k, v in json.loads(probed["config"]["lr_probe_results"]).items()}
    assert set(results) == {0.01, 0.02, 0.1} and all(np.isfinite(v) for v in results.values())
    assert len(set(results.values())) == 3               # the candidates trained differently
    best = max(results, key=results.get)
    assert probed["config"]["lr"] == best and any("training log p(x) (App. D)" in line for line in log)
    given = train(mcem_config(tmp_path / "d", samples=1200, lr=best), data=data, log=lambda *_: None)
    a, b = params_of(str(tmp_path / "p" / "run")), params_of(str(tmp_path / "d" / "run"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert probed["train_log_px"] == given["train_log_px"]


def test_an_mcem_step_moves_only_its_minibatch_chains_and_tunes_them_to_90_percent():
    data = toy_data(dynamic=False)
    config = TrainConfig(algorithm="mcem", metric="marginal", nz=2, hidden=(8,), batch_size=20, lr=1e-9, warmup=0)
    rng = np.random.default_rng(0)
    learner = MCEM(config, 16, 300, rng)
    z0 = learner.z.copy()
    idx = np.arange(40, 60)
    assert learner.step(data, idx, rng)
    others = np.setdiff1d(np.arange(300), idx)
    assert np.array_equal(learner.z[others], z0[others])
    assert not np.array_equal(learner.z[idx], z0[idx])
    # With the decoder frozen (a step of 1e-9), the adaptation settles each chain's running
    # acceptance near the 90% target, starting from step sizes of 0.1.
    for _ in range(400):
        learner.step(data, idx, rng)
    assert 0.8 < learner.accept_rate[idx].mean() < 0.97
    assert not np.allclose(learner.step_size[idx], 0.1)


def test_n_train_keeps_the_first_points_and_the_test_set():
    data = toy_data()
    cut = first_n_training_points(data, 50)
    assert np.array_equal(cut.train_x, data.train_x[:50]) and np.array_equal(cut.train_eval_x, data.train_eval_x[:50])
    assert cut.test_x is data.test_x and cut.dynamic == data.dynamic and cut.binary == data.binary
    assert first_n_training_points(data, 0) is data


def test_n_train_limits_what_a_run_trains_on(tmp_path):
    data = toy_data(dynamic=False)
    seen = set()
    config = toy_config(tmp_path, n_train=60, samples=2000)

    def record(learner, state):
        seen.update(state.epoch_perm[max(0, state.epoch_pos - 20):state.epoch_pos].tolist())
    train(config, data=data, callback=record, log=lambda *_: None)
    assert seen == set(range(60))


@pytest.mark.parametrize("overrides,message", [
    (dict(algorithm="mcem"), "add --metric=marginal"),
    (dict(metric="marginal", nz=20), "for Nz <= 4"),
    (dict(n_train=70_000), "larger than the training set"),
    (dict(n_train=50, batch_size=100), "--batch_size 100 is larger than the training set (50 images)"),
    (dict(mcem_leapfrog=0), "--mcem_leapfrog must be positive"),
])
def test_bad_mcem_and_marginal_options_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=None) as e:
        TrainConfig(**overrides).validate()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_figure3_smoke(tmp_path):
    """`python examples/figure3.py --smoke`: three algorithms, two training-set sizes, the table and figure."""
    if not have("mnist.pkl.gz"):
        pytest.skip("mnist.pkl.gz not found: set NPVAE_DATA_DIR")
    out = tmp_path / "fig3"
    _, rows = run_sweep_script("figure3.py", out, "--smoke", table="fig3_table")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert {r["algorithm"] for r in rows} == {"aevb", "wakesleep", "mcem"}
    assert all(np.isfinite(float(r["train"])) and np.isfinite(float(r["test"])) for r in rows)
    assert {r["paper_test"] for r in rows if r["n_train"] == "1000"} == {"-143.0", "-145.0", "-141.5"}
    assert (out / "fig3.png").stat().st_size > 5000
    config = json.load(open(out / "mcem_n200" / "config.json"))
    assert (config["n_train"], config["nz"], config["metric"], config["binarize"]) == (200, 3, "marginal", "fixed")
    assert config["batch_size"] == 200                                   # MCEM is full-batch, as the authors ran it
    assert json.load(open(out / "aevb_n200" / "config.json"))["batch_size"] == 100
    # each run's step size: the paper's rule's pick where it was measured (N = 1000), --lr elsewhere
    lrs = {name: json.load(open(out / name / "config.json"))["lr"] for name in ("mcem_n1000", "aevb_n1000",
                                                                                "wakesleep_n1000", "mcem_n200")}
    assert lrs == {"mcem_n1000": 0.1, "aevb_n1000": 0.1, "wakesleep_n1000": 0.02, "mcem_n200": 0.01}
    with np.load(out / "mcem_n200" / "checkpoint.npz") as z:
        assert z["mcem/z"].shape == (200, 3)
    again, _ = run_sweep_script("figure3.py", out, "--smoke")
    assert again.count(": skip") == 6


def test_figure3_takes_the_rules_step_sizes_unless_told_otherwise(tmp_path):
    """FIG3_LR holds Adagrad's measured picks; a user's --lr, or another optimizer, sets every run's."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import figure3
    from npvae import sweep

    def step_sizes(*argv):
        return {s.name: s.config["lr"] for s in figure3.plan([*argv, f"--out={tmp_path}"]).specs}
    assert step_sizes() == {sweep.fig3_name(a, n): lr for (a, n), lr in sweep.FIG3_LR.items()}
    assert set(step_sizes("--lr=0.05").values()) == {0.05}
    assert set(step_sizes("--optimizer=adam").values()) == {TrainConfig().lr}
    # every cell's App. D chains start at the best candidate: AEVB's and wake-sleep's by
    # --marginal_start=best, MCEM's by its own rule (kept "own", as its runs recorded it)
    starts = {s.name: s.config["marginal_start"] for s in figure3.plan([f"--out={tmp_path}"]).specs}
    assert starts == {sweep.fig3_name(a, n): "own" if a == "mcem" else "best" for (a, n) in sweep.FIG3_LR}
    assert set({s.name: s.config["marginal_start"] for s in figure3.plan(
        ["--marginal_start=own", f"--out={tmp_path}"]).specs}.values()) == {"own"}


def test_an_mcem_run_draws_no_figure_of_the_encoder_it_does_not_have(tmp_path):
    config = mcem_config(tmp_path, samples=200, figures=True)
    train(config, data=toy_data(dynamic=False), log=lambda *_: None)
    files = set(os.listdir(config.out))
    assert {"learning_curves.png", "samples.png", "manifold.png"} <= files
    assert not {"reconstructions.png", "latent_scatter.png"} & files


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_the_fused_m_step_equals_the_readable_wake_gradient(dtype, rtol):
    """MCEM's M-step takes log p(x|z) and its logit gradient from one fused kernel; the readable
    ``wake_loss_and_grads`` is its reference (loss and every decoder gradient)."""
    from npvae.wakesleep import wake_loss_and_grads
    config = TrainConfig(algorithm="mcem", metric="marginal", nz=3, hidden=(7,), dtype=np.dtype(dtype).name,
                         init_std=0.5)
    rng = np.random.default_rng(3)
    learner = MCEM(config, 11, 40, rng)
    x = (rng.random((6, 11)) < 0.3).astype(dtype)
    z = (3.0 * rng.standard_normal((6, 3))).astype(dtype)
    loss, grads = learner.m_step_loss_and_grads(x, z)
    ref_loss, ref_grads = wake_loss_and_grads(learner.vae.params, learner.vae.arch, x, z)
    assert loss == pytest.approx(ref_loss, rel=rtol)
    assert set(grads) == set(ref_grads) and all(k.startswith("dec.") for k in grads)
    for k in grads:
        assert grads[k].dtype == dtype
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=rtol, atol=rtol * np.abs(ref_grads[k]).max())


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_the_fast_e_step_target_is_the_readable_log_joint(dtype, rtol):
    """FastDecoderJoint.target (MCEM's HMC target with --fast) against the readable log p(x, z) and
    its z-gradient (``marginal._vae_log_joint(..., fast=False)``), on a decoder with two hidden layers."""
    from npvae.fast import FastDecoderJoint
    from npvae.marginal import _vae_log_joint
    from npvae.model import VAE
    from npvae.optim import Adagrad
    rng = np.random.default_rng(4)
    vae = VAE(11, 3, (9, 7), seed=1, dtype=dtype, init_std=0.7)
    fast = FastDecoderJoint(vae, Adagrad(0.01), 6)
    x = (rng.random((6, 11)) < 0.3).astype(dtype)
    z = 2.0 * rng.standard_normal((6, 3))
    fast.set_x(x)
    logp, grad = fast.target(z)
    ref_logp, ref_grad = (np.asarray(a, np.float64) for a in _vae_log_joint(vae, x, fast=False)(z))
    assert logp.dtype == grad.dtype == np.float64
    np.testing.assert_allclose(logp, ref_logp, rtol=rtol)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * np.abs(ref_grad).max())
    value_only, none = fast.target(z, grad=False)
    assert none is None and np.array_equal(value_only, logp)
    with pytest.raises(ValueError, match="z must have shape"):
        fast.target(z[:5])


def test_fast_mcem_steps_equal_the_readable_ones():
    """Twenty MCEM steps (E-step chains, step sizes, M-step Adagrad with the prior) with --fast
    and without, from the same state and draws: the same chains and decoder to rounding."""
    data = toy_data(dynamic=False)
    config = TrainConfig(algorithm="mcem", metric="marginal", nz=2, hidden=(8, 6), batch_size=20, lr=0.05,
                         warmup=2, init_std=0.5)
    fast, readable = (MCEM(dataclasses.replace(config, fast=f), 16, 300, np.random.default_rng(0))
                      for f in (True, False))
    assert fast.fast is not None and readable.fast is None and "fast" in fast.implementation
    for step in range(20):
        idx = np.random.default_rng(100 + step).permutation(300)[:20]
        assert fast.step(data, idx, np.random.default_rng(step))
        assert readable.step(data, idx, np.random.default_rng(step))
    np.testing.assert_allclose(fast.z, readable.z, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.step_size, readable.step_size, rtol=1e-12)
    for k, p in readable.vae.params.items():
        np.testing.assert_allclose(fast.vae.params[k], p, rtol=1e-10, atol=1e-12, err_msg=k)
    assert fast.opt.t == readable.opt.t == 100


@pytest.mark.parametrize("prior", ["weights", "all", "none"])
def test_the_fast_m_step_is_one_step_of_the_readable_gradient(prior):
    """FastDecoderJoint.m_step with plain SGD: the parameter change is exactly lr times the readable
    gradient (``wake_loss_and_grads`` + the prior the parameter's name calls for), on a decoder with
    two hidden layers; the encoder is untouched."""
    from npvae.fast import FastDecoderJoint
    from npvae.learners import prior_grads
    from npvae.model import VAE
    from npvae.optim import SGD
    from npvae.wakesleep import wake_loss_and_grads
    rng = np.random.default_rng(5)
    vae = VAE(11, 3, (9, 7), seed=2, init_std=0.6)
    before = {k: v.copy() for k, v in vae.params.items()}
    x = (rng.random((6, 11)) < 0.3).astype(float)
    z = 1.5 * rng.standard_normal((6, 3))
    ref_loss, grads = wake_loss_and_grads(vae.params, vae.arch, x, z)
    prior_grads(vae.params, grads, 0.1, prior)
    fast = FastDecoderJoint(vae, SGD(lr=0.5), 6, prior, 0.1)
    fast.set_x(x)
    loss, finite = fast.m_step(z)
    assert finite and loss == pytest.approx(ref_loss, rel=1e-13)
    for k, p in vae.params.items():
        if k.startswith("dec."):
            np.testing.assert_allclose((before[k] - p) / 0.5, grads[k], rtol=1e-10, atol=1e-13, err_msg=k)
        else:
            assert np.array_equal(p, before[k]), k
