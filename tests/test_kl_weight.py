"""The KL weight beta and KL warm-up in the AEVB learner, and the choice of decoder: the schedule,
training through the harness (bitwise resume, older checkpoints), evaluation of the true bound,
a Gaussian decoder of fixed variance, and the configuration's checks.  The gradients themselves
are checked against finite differences in tests/test_model.py and tests/test_fast.py."""
import os

import numpy as np
import pytest

from npvae.config import ConfigError, TrainConfig
from npvae.learners import AEVB
from npvae.train import RunFolderError, TrainingData, train

from .test_train import params_of, toy_config, toy_data

QUIET = dict(log=lambda *_: None)


def test_warmup_raises_beta_linearly_from_zero_then_holds_it(tmp_path):
    data = toy_data()
    learner = AEVB(toy_config(tmp_path, beta=2.0, kl_warmup=100), 16, 300, np.random.default_rng(0), binary=True)
    rng = np.random.default_rng(1)
    seen = []
    for k in range(7):                                      # minibatches of 20: beta_t = 2 min(1, 20 k / 100)
        seen.append(learner.kl_weight())
        assert learner.step(data, np.arange(20 * k, 20 * k + 20), rng)
    assert seen == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.0], abs=1e-15)
    assert learner.samples_seen == 140
    plain = AEVB(toy_config(tmp_path, beta=0.5), 16, 300, np.random.default_rng(0))
    assert plain.kl_weight() == 0.5                         # no warm-up: beta from the first step


@pytest.mark.parametrize("fast", [True, False])
def test_warmup_run_resumes_bitwise_and_differs_from_the_bound(tmp_path, fast):
    data = toy_data()
    kw = dict(beta=2.0, kl_warmup=1500, fast=fast, lr=0.02)
    full = toy_config(tmp_path / "a", **kw)
    s = train(full, data=data, **QUIET)
    assert s["implementation"].startswith("fast step" if fast else "reference")
    part = toy_config(tmp_path / "b", **kw)
    s = train(part, data=data, callback=lambda learner, st: st.steps == 37, **QUIET)     # "Ctrl-C" mid warm-up
    assert s["status"] == "interrupted" and s["samples"] == 740
    with np.load(os.path.join(part.out, "checkpoint.npz")) as z:
        assert int(z["aevb/samples_seen"]) == 740
    train(part, resume=True, data=data, **QUIET)
    a, b = params_of(full.out), params_of(part.out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    paper = toy_config(tmp_path / "c", fast=fast, lr=0.02)                            # beta = 1, no warm-up
    train(paper, data=data, **QUIET)
    c = params_of(paper.out)
    assert not np.allclose(a["param/enc.mu.W"], c["param/enc.mu.W"])                             # the weight was used


def _strip_counter(ckpt):
    with np.load(ckpt) as z:
        arrays = {k: z[k] for k in z.files if k != "aevb/samples_seen"}
    with open(ckpt, "wb") as f:
        np.savez(f, **arrays)


def test_a_checkpoint_without_the_counter_resumes_without_warmup_only(tmp_path):
    data = toy_data()
    full = toy_config(tmp_path / "a")
    train(full, data=data, **QUIET)
    old = toy_config(tmp_path / "b")
    train(old, data=data, callback=lambda learner, st: st.steps == 37, **QUIET)
    _strip_counter(os.path.join(old.out, "checkpoint.npz"))                      # as written before the counter
    train(old, resume=True, data=data, **QUIET)
    a, b = params_of(full.out), params_of(old.out)
    assert all(np.array_equal(a[k], b[k]) for k in a)

    warm = toy_config(tmp_path / "c", kl_warmup=1000)
    train(warm, data=data, callback=lambda learner, st: st.steps == 5, **QUIET)
    _strip_counter(os.path.join(warm.out, "checkpoint.npz"))
    with pytest.raises(RunFolderError, match="aevb/samples_seen"):
        train(warm, resume=True, data=data, **QUIET)


def test_evaluation_measures_the_bound_not_the_weighted_objective(tmp_path):
    data = toy_data()
    cfg = toy_config(tmp_path, beta=4.0, samples=400)
    captured = {}

    def keep(learner, state):
        captured["learner"] = learner
    train(cfg, data=data, callback=keep, **QUIET)
    learner = captured["learner"]
    x = data.test_x
    eps = np.random.default_rng(3).standard_normal((1, len(x), cfg.nz))
    bound = learner.evaluate(x, eps)
    assert bound == pytest.approx(float(learner.vae.elbo(x, eps).mean()), rel=1e-12)
    loss4, _ = learner.vae.loss_and_grads(x, eps, kl_weight=4.0)
    assert bound > -loss4 + 1e-6                   # beta = 4 weights a positive KL more: a lower number


# --------------------------------------------------------------------------- the decoder's distribution

def grey_data(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    grey = np.floor(rng.random((n, d)) * 256 * (rng.random(d) < 0.6)) / 256     # k/256, some pixels always 0
    test = np.floor(rng.random((60, d)) * 256) / 256
    return TrainingData(grey, grey, test, None, (4, 4), False)


def test_a_fixed_variance_gaussian_trains_resumes_and_has_no_logvar_head(tmp_path):
    data = grey_data()
    kw = dict(decoder="gaussian", decoder_var=0.05, binarize="none", lr=0.05)
    full = toy_config(tmp_path / "a", **kw)
    s = train(full, data=data, **QUIET)
    assert s["implementation"].startswith("reference (the fast step does not implement the gaussian decoder")
    a = params_of(full.out)
    assert "param/dec.mu.W" in a and not [k for k in a if "logvar" in k and k.startswith("param/dec.")]
    part = toy_config(tmp_path / "b", **kw)
    train(part, data=data, callback=lambda learner, st: st.steps == 20, **QUIET)
    train(part, resume=True, data=data, **QUIET)
    b = params_of(part.out)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    learned = toy_config(tmp_path / "c", **{**kw, "decoder_var": 0.0})
    train(learned, data=data, **QUIET)
    assert "param/dec.logvar.W" in params_of(learned.out)
    from npvae.runs import load_run                         # a figure script can load the run back
    run = load_run(full.out)
    assert "dec.logvar.W" not in run.vae.params and np.array_equal(run.vae.params["dec.mu.W"], a["param/dec.mu.W"])


def test_decoder_auto_is_the_papers_choice_and_explicit_choices_win():
    assert TrainConfig().likelihood() == "bernoulli"
    assert TrainConfig(dataset="frey").likelihood() == "gaussian"
    assert TrainConfig(decoder="gaussian", binarize="none").validate().likelihood() == "gaussian"
    assert TrainConfig(dataset="frey", decoder="bernoulli").validate().likelihood() == "bernoulli"


@pytest.mark.parametrize("changes,message", [
    (dict(decoder="gaussian"), "use --binarize=none"),
    (dict(decoder="gaussian", binarize="static"), "unbounded density"),
    (dict(decoder_var=0.1), "add --decoder=gaussian"),
    (dict(dataset="frey", decoder_var=-1.0), "finite number >= 0"),
    (dict(dataset="frey", decoder_var=float("nan")), "finite number >= 0"),
    (dict(dataset="frey", decoder_var=1e-20), "log-variance"),
    (dict(dataset="frey", decoder_var=0.1, algorithm="wakesleep"), "AEVB only"),
    (dict(decoder="student"), "--decoder must be one of"),
    (dict(beta=-0.5), "--beta"),
    (dict(beta=2.0, algorithm="wakesleep"), "AEVB's KL term"),
])
def test_decoder_and_beta_mistakes_are_one_line_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes).validate()


def test_beta_and_warmup_work_with_estimator_a(tmp_path):
    cfg = toy_config(tmp_path, estimator="A", beta=0.5, kl_warmup=500, samples=1000)
    s = train(cfg.validate(), data=toy_data(), **QUIET)
    assert s["status"] == "finished" and np.isfinite(s["train_elbo"])
    assert s["implementation"] == "reference (the fast step does not implement estimator A (the fast AEVB step " \
                                  "is estimator B)); prior and Adagrad fused"
