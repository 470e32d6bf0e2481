"""examples/marginal_starts.py: the App. D estimate from the plain start (the encoder's mean, or
z = 0 for MCEM) against the best candidate start; each learner's harness number is one of the two."""
import csv
import dataclasses
import os
import sys

import numpy as np
import pytest

from npvae import learners
from npvae.config import ConfigError
from npvae.marginal import _vae_log_joint, importance_sampled_log_px
from npvae.runs import evaluation_sets, load_run
from npvae.train import train

from .test_mcem import mcem_config
from .test_train import toy_config, toy_data

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import marginal_starts  # noqa: E402
from _study import UsageError  # noqa: E402


def test_the_encoder_mean_start_is_the_harness_estimate_and_the_best_start_differs_only_in_z0(tmp_path, monkeypatch):
    data = toy_data(dynamic=False)
    config = toy_config(tmp_path, samples=2000, metric="marginal", eval_max=12, eval_per_decade=1, lr=0.05)
    train(config, data=data, log=lambda *_: None)
    results, cfg, samples, recorded = marginal_starts.compare_starts(config.out, data=data)
    assert samples == 2000 and set(results) == {"train", "test"}
    history = list(csv.DictReader(open(os.path.join(config.out, "history.csv"))))[-1]
    for name in ("train", "test"):
        r = results[name]
        # the harness's generator and starts: its own number, to the 6 decimals history.csv keeps
        assert r.plain == pytest.approx(float(history[f"{name}_log_px"]), abs=2e-6) and r.points == 12
        assert r.left_out == 0 and recorded[name] == pytest.approx(float(history[f"{name}_log_px"]), abs=1e-9)
        assert np.isfinite(r.best)
    # each best start is at least as probable as the encoder's mean (its first candidate), and better somewhere
    model = load_run(config.out)
    log_joint_at = (lambda x, z: np.asarray(_vae_log_joint(model.vae, x)(z, grad=False)[0]))
    for name, (x, _) in evaluation_sets(model.config, data).items():
        best = learners.encoder_marginal_start(model.vae, x, data.train_x, model.config.eval_seed)["z0"]
        mu = np.asarray(model.vae.encode(x)[0], dtype=np.float64)
        assert (log_joint_at(x, best) >= log_joint_at(x, mu)).all(), name
    assert (log_joint_at(x, best) > log_joint_at(x, mu)).any() and results["test"].moved > 0
    # with only a hopeless shared candidate every chain keeps its encoder-mean start, and then the
    # two estimates are one computation: nothing but z0 tells them apart
    monkeypatch.setattr(learners, "start_candidates", lambda train_z, seed: np.full((1, 2), 1e3))
    alone, *_ = marginal_starts.compare_starts(config.out, data=data)
    for name in ("train", "test"):
        assert alone[name].best == alone[name].plain and alone[name].moved == 0.0
    # --points takes the first points only, and then has no history value to compare with
    few, *_, none = marginal_starts.compare_starts(config.out, points=5, data=data)
    assert few["test"].points == 5 and none == {"train": None, "test": None}
    assert results["test"].prior_is is None                             # no --prior_k, no prior IS
    # --prior_k: importance sampling from the prior, a check that starts nowhere, agrees with App. D
    # on this barely trained model (broad posteriors), and is the library's estimator with N(0, I)
    checked, *_ = marginal_starts.compare_starts(config.out, points=5, data=data, prior_k=20_000)
    model = load_run(config.out)
    x = evaluation_sets(model.config, data)["test"][0][:5]
    zero = np.zeros((5, 2))
    direct = importance_sampled_log_px(model.vae, x, k=20_000, rng=np.random.default_rng([model.config.eval_seed, 6]),
                                       proposal=(zero, zero))
    assert checked["test"].prior_is == pytest.approx(float(direct.mean()), abs=1e-12)
    for name in ("train", "test"):
        assert checked[name].prior_is == pytest.approx(checked[name].best, abs=0.3), name
        assert 0 < checked[name].prior_is_stderr < 0.1
    rows = marginal_starts.table_rows([config.out], 5, data, prior_k=100)     # the table's extra column
    assert [len(r) for r in rows] == [12, 12] and all(np.isfinite(float(r[11].split(" ± ")[0])) for r in rows)


def test_a_point_stuck_from_either_start_is_left_out_of_every_column(tmp_path, monkeypatch):
    """The two means (and prior IS) are over the same points, so "best - plain" compares like with
    like; the table counts the points left out, and no history.csv value is claimed for them."""
    data = toy_data(dynamic=False)
    config = toy_config(tmp_path, samples=2000, metric="marginal", eval_max=12, eval_per_decade=1, lr=0.05)
    train(config, data=data, log=lambda *_: None)
    whole, *_ = marginal_starts.compare_starts(config.out, data=data, prior_k=50)
    real = marginal_starts.hmc_log_px
    calls = []

    def stuck_once(vae, x, rng, **start):                # point 3 stuck from the plain start, 7 from the best
        estimate = real(vae, x, rng, **start)
        calls.append(1)
        estimate.log_px[3 if len(calls) % 2 else 7] = np.nan
        return estimate
    monkeypatch.setattr(marginal_starts, "hmc_log_px", stuck_once)
    part, _, _, recorded = marginal_starts.compare_starts(config.out, data=data, prior_k=50)
    assert recorded == {"train": None, "test": None}
    model = load_run(config.out)
    for name, (x, _) in evaluation_sets(model.config, data).items():
        assert (whole[name].points, whole[name].left_out, part[name].points, part[name].left_out) == (12, 0, 10, 2)
        each = real(model.vae, x, learners.marginal_eval_rng(model.config.eval_seed)).log_px   # from mu(x)
        assert part[name].plain == pytest.approx(np.delete(each, [3, 7]).mean(), abs=1e-12)
        assert whole[name].plain == pytest.approx(each.mean(), abs=1e-12)
        assert np.isfinite([part[name].best, part[name].prior_is]).all()


def test_mcem_best_start_is_the_harness_estimate_and_the_plain_start_is_z_zero(tmp_path, monkeypatch):
    data = toy_data(dynamic=False)
    mcem = mcem_config(tmp_path / "m", samples=400)
    train(mcem, data=data, log=lambda *_: None)
    results, cfg, samples, recorded = marginal_starts.compare_starts(mcem.out, data=data)
    history = list(csv.DictReader(open(os.path.join(mcem.out, "history.csv"))))[-1]
    assert cfg.algorithm == "mcem" and samples == 400
    for name in ("train", "test"):
        r = results[name]
        # MCEM's harness starts at the best candidate (its chains among them): its own number
        assert r.best == pytest.approx(float(history[f"{name}_log_px"]), abs=2e-6) and r.points == 12
        assert recorded[name] == pytest.approx(float(history[f"{name}_log_px"]), abs=1e-9)
        assert np.isfinite(r.plain) and r.moved > 0                  # the chains beat z = 0 somewhere
    # z = 0 as the only candidate: the best start is the plain one, and the two computations are one
    monkeypatch.setattr(learners, "start_candidates", lambda chains, seed: np.zeros((1, chains.shape[1])))
    alone, *_ = marginal_starts.compare_starts(mcem.out, data=data)
    for name in ("train", "test"):
        assert alone[name].best == alone[name].plain and alone[name].moved == 0.0
    # the chains come from the same file as the parameters
    chains = load_run(mcem.out).chains
    with np.load(os.path.join(mcem.out, "checkpoint.npz")) as ckpt:
        assert chains.shape == (len(data.train_x), cfg.nz) and np.array_equal(chains, ckpt["mcem/z"])
    # with only the chains as candidates (no z = 0, no prior draws), the best starts are chains
    monkeypatch.setattr(learners, "start_candidates", lambda chains, seed: chains)
    x = load_run(mcem.out)
    train_x = evaluation_sets(x.config, data)["train"][0]
    start = learners.mcem_marginal_start(x.vae, train_x, x.chains, 0)
    assert start["step_size"] == learners.MCEM_START_STEP == 0.1
    assert all((row == chains).all(axis=1).any() for row in start["z0"])
    # ... and each at least as probable as the point's own chain, which is among them
    log_joint = _vae_log_joint(x.vae, train_x)
    at_best, at_own = (np.asarray(log_joint(z, grad=False)[0]) for z in (start["z0"], chains[:len(train_x)]))
    assert (at_best >= at_own).all()


def test_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    data = toy_data(dynamic=False)
    bound = toy_config(tmp_path / "b", samples=400)                     # --metric=bound: no App. D values
    train(bound, data=data, log=lambda *_: None)
    with pytest.raises(UsageError, match="evaluated the bound"):
        marginal_starts.compare_starts(bound.out, data=data)
    assert load_run(bound.out).chains is None                          # no chains but MCEM's
    assert marginal_starts.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    # a bad folder late in the list is refused before any folder is computed
    good = toy_config(tmp_path / "g", samples=400, metric="marginal", eval_max=4, eval_per_decade=1)
    train(good, data=data, log=lambda *_: None)
    computed = []
    monkeypatch.setattr(marginal_starts, "compare_starts", lambda *a, **k: computed.append(a))
    with pytest.raises(UsageError, match="evaluated the bound"):
        marginal_starts.table_rows([good.out, bound.out], 0)
    assert computed == []
    for bad in (["--points=-1"], ["--prior_k=-1"]):
        assert marginal_starts.main([good.out, "--out", str(tmp_path / "o")] + bad) == 2
    assert marginal_starts.main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 4 and "Traceback" not in err


def test_smoke_trains_a_run_and_writes_the_table(tmp_path, capsys):
    from .test_examples import have
    if not have("mnist.pkl.gz"):
        pytest.skip("mnist.pkl.gz not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    assert marginal_starts.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = list(csv.reader(open(tmp_path / "marginal_starts.csv")))
    assert [(r[2], r[5]) for r in rows[1:]] == [("train", "mu(x)"), ("test", "mu(x)"), ("train", "z = 0"),
                                                ("test", "z = 0")]
    for r in rows[1:]:
        # the harness's start gives the run's own history.csv value: mu(x) for AEVB (--marginal_start=own),
        # the best for MCEM
        assert r[4] == "0" and r[10] == (r[6] if r[5] == "mu(x)" else r[7])
    # the results took training runs: the same --out again is refused, before any work, unless --overwrite
    before = (tmp_path / "marginal_starts.csv").read_bytes()
    assert marginal_starts.main(["--smoke", "--out", str(tmp_path)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "marginal_starts.csv").read_bytes() == before


def test_marginal_start_best_makes_the_harness_start_at_the_best_candidate(tmp_path):
    data = toy_data(dynamic=False)
    config = toy_config(tmp_path, samples=2000, metric="marginal", eval_max=12, eval_per_decade=1, lr=0.05,
                        marginal_start="best")
    train(config, data=data, log=lambda *_: None)
    results, *_, recorded = marginal_starts.compare_starts(config.out, data=data)
    history = list(csv.DictReader(open(os.path.join(config.out, "history.csv"))))
    for name in ("train", "test"):
        # the harness's number is now the best start's, not the encoder mean's
        assert results[name].best == pytest.approx(float(history[-1][f"{name}_log_px"]), abs=2e-6)
        assert recorded[name] == pytest.approx(float(history[-1][f"{name}_log_px"]), abs=1e-9)
    # the same parameters' curve with --marginal_start=own differs only from the first evaluation on
    own = train(dataclasses.replace(config, marginal_start="own", out=str(tmp_path / "own")), data=data,
                log=lambda *_: None)
    assert own["test_log_px"] == pytest.approx(results["test"].plain, abs=2e-6)


def test_marginal_start_needs_the_marginal_metric(tmp_path):
    with pytest.raises(ConfigError, match="add --metric=marginal"):
        toy_config(tmp_path, marginal_start="best").validate()
    with pytest.raises(ConfigError, match="--marginal_start must be one of own, best"):
        toy_config(tmp_path, metric="marginal", marginal_start="zero").validate()
