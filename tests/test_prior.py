"""The N(0, I) parameter prior (paper §5, MAP): ``learners.prior_grads`` and the scale the learners give it.

Contract (``optim.has_prior``, ``learners.prior_grads``, ``TrainConfig.prior``, the ``npvae.learners``
docstring): prior_grads adds, in place, the gradient of scale * (-log N(theta; 0, I)) = scale/2 |theta|^2
(+ const) for the covered tensors: "weights" the weight matrices ``*.W`` only (biases skipped, as in the
authors' code), "all" every parameter, "none" nothing.  The objective is the minibatch mean plus the prior
scaled 1/N (M/N per minibatch *sum*), so a learner's prior_scale is 1/n_train.
"""
import numpy as np
import pytest

from npvae import VAE
from npvae.gradcheck import numerical_gradient, relative_error
from npvae.learners import LEARNERS, prior_grads
from npvae.train import TrainConfig, TrainingData

SCALE = 0.37            # not 1, so a dropped scale factor shows


def documented_cover(name, which):
    """The covered tensors, from the documentation: weight matrices (``*.W``) for "weights"."""
    return {"weights": name.endswith(".W"), "all": True, "none": False}[which]


def small_vae(likelihood):
    # two hidden layers, large init so every entry matters; float64 throughout
    return VAE(5, 2, (4, 3), likelihood, seed=0, init_std=0.7, dtype=np.float64)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("which", ["weights", "all", "none"])
def test_prior_grads_match_finite_differences_of_the_documented_prior(which, likelihood):
    vae = small_vae(likelihood)
    params = vae.params
    assert all(p.dtype == np.float64 for p in params.values())
    # "weights" means the weight matrices: exactly the 2-D tensors, and there are biases to skip
    if which == "weights":
        assert {k for k in params if documented_cover(k, which)} == {k for k, p in params.items() if p.ndim == 2}
        assert any(not documented_cover(k, which) for k in params)
    covered = [k for k in params if documented_cover(k, which)]

    def f():
        return SCALE / 2.0 * float(sum(np.sum(params[k] ** 2) for k in covered))

    before = {k: p.copy() for k, p in params.items()}
    grads = {k: np.zeros_like(p) for k, p in params.items()}
    prior_grads(params, grads, SCALE, which)
    assert all(np.array_equal(params[k], before[k]) for k in params)          # parameters untouched
    for name, p in params.items():
        numeric = numerical_gradient(f, p)
        err = relative_error(grads[name], numeric)
        assert err <= 1e-6, f"{name}: relative error {err:.2e}"
        if not documented_cover(name, which):                                  # e.g. biases for "weights"
            assert np.array_equal(grads[name], np.zeros_like(p)), name
        else:
            assert np.abs(grads[name]).max() > 0.1, name                       # a real, non-trivial check

    # it adds to what is there (the likelihood's gradient), rather than replacing it
    base = {k: np.random.default_rng(1).standard_normal(p.shape) for k, p in params.items()}
    acc = {k: g.copy() for k, g in base.items()}
    prior_grads(params, acc, SCALE, which)
    for k in params:
        want = base[k] + (SCALE * params[k] if documented_cover(k, which) else 0.0)
        np.testing.assert_allclose(acc[k], want, rtol=1e-12, atol=0, err_msg=k)


@pytest.mark.parametrize("algorithm", sorted(LEARNERS))
def test_learners_scale_the_prior_by_one_over_n_train(algorithm, tmp_path):
    """Documented: the objective is the minibatch *mean* plus the prior scaled 1/N (M/N per
    minibatch sum), so prior_scale = 1/n_train, independent of the batch size M."""
    n_train, x_dim = 300, 6
    for batch_size in (20, 50):
        cfg = TrainConfig(algorithm=algorithm, nz=2, hidden=(4,), batch_size=batch_size, fast=False,
                          progress=False, figures=False, out=str(tmp_path / "run"), metric="marginal")
        learner = LEARNERS[algorithm](cfg, x_dim, n_train, np.random.default_rng(0))
        assert learner.prior_scale == 1.0 / n_train


def test_aevb_step_adds_the_prior_at_one_over_n_to_the_weights_only(tmp_path, monkeypatch):
    """End to end through the readable AEVB step: the gradient the optimizer receives is the
    model's d(-mean elbo) plus W / N on every weight matrix, and exactly the model's on the biases."""
    rng = np.random.default_rng(0)
    grey = rng.random((300, 16))
    data = TrainingData(grey, (grey > 0.5).astype(float), (rng.random((60, 16)) > 0.5).astype(float), None,
                        (4, 4), True)
    n_train = data.train_x.shape[0]
    cfg = TrainConfig(nz=2, hidden=(8,), batch_size=20, fast=False, optimizer="sgd", lr=0.01, prior="weights",
                      progress=False, figures=False, out=str(tmp_path / "run"))
    learner = LEARNERS["aevb"](cfg, data.train_x.shape[1], n_train, np.random.default_rng(0))
    vae, seen = learner.vae, {}
    model_grads = vae.loss_and_grads

    def record_model(*args, **kw):
        loss, grads = model_grads(*args, **kw)
        seen["model"] = {k: g.copy() for k, g in grads.items()}
        return loss, grads

    def record_update(params, grads):
        seen["update"] = {k: g.copy() for k, g in grads.items()}
        seen["params"] = {k: p.copy() for k, p in params.items()}

    monkeypatch.setattr(vae, "loss_and_grads", record_model)
    monkeypatch.setattr(learner.opt, "update", record_update)
    assert learner.step(data, np.arange(20), np.random.default_rng(1))
    for k, g in seen["update"].items():
        prior = seen["params"][k] / n_train if k.endswith(".W") else 0.0
        np.testing.assert_allclose(g, seen["model"][k] + prior, rtol=1e-12, atol=1e-300, err_msg=k)
        if k.endswith(".b"):
            assert np.array_equal(g, seen["model"][k]), k
