import csv
import json
import os

import numpy as np
import pytest

from npvae.train import (RunFolderError, TrainConfig, TrainingData, TrainingDiverged, eval_schedule, evaluate, main,
                         parse_overrides, train)
from npvae.config import ConfigError


def toy_data(dynamic=True, n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    grey = rng.random((n, d)) * (rng.random(d) < 0.5)      # some always-off pixels, like MNIST's border
    test = rng.random((60, d))
    return TrainingData(grey, (grey > 0.5).astype(float), (test > 0.5).astype(float), rng.integers(0, 10, 60),
                        (4, 4), dynamic)


def toy_config(tmp_path, **kw):
    base = dict(nz=2, hidden=(8,), samples=3000, batch_size=20, checkpoint_seconds=1e9, progress=False,
                figures=False, out=str(tmp_path / "run"), warmup=2)
    base.update(kw)
    return TrainConfig(**base)


def params_of(out):
    with np.load(os.path.join(out, "checkpoint.npz")) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


@pytest.mark.parametrize("optimizer", ["adagrad", "adam"])
def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path, optimizer):
    data = toy_data()
    full = toy_config(tmp_path / "a", optimizer=optimizer, lr=0.01)
    train(full, data=data, log=lambda *_: None)

    part = toy_config(tmp_path / "b", optimizer=optimizer, lr=0.01)
    s = train(part, data=data, callback=lambda learner, st: st.steps == 37, log=lambda *_: None)   # "Ctrl-C" at step 37
    assert s["status"] == "interrupted" and s["samples"] == 37 * 20
    s2 = train(part, resume=True, data=data, log=lambda *_: None)
    assert s2["status"] == "finished" and s2["samples"] == 3000
    a, b = params_of(full.out), params_of(part.out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # the history of the resumed run is the uninterrupted one's (evaluation uses fixed noise)
    ha = list(csv.reader(open(os.path.join(full.out, "history.csv"))))
    hb = list(csv.reader(open(os.path.join(part.out, "history.csv"))))
    assert [(r[0], r[2], r[3]) for r in ha] == [(r[0], r[2], r[3]) for r in hb]


def test_run_writes_its_outputs_and_learns(tmp_path):
    cfg = toy_config(tmp_path, samples=20_000, figures=True, lr=0.05)
    s = train(cfg, data=toy_data(), log=lambda *_: None)
    for name in ("config.json", "history.csv", "summary.json", "checkpoint.npz", "learning_curves.png",
                 "samples.png", "reconstructions.png", "latent_scatter.png", "manifold.png"):
        assert os.path.getsize(os.path.join(cfg.out, name)) > 0, name
    summary = json.load(open(os.path.join(cfg.out, "summary.json")))
    assert {"samples", "seconds", "train_elbo", "test_elbo", "config"} <= set(summary)
    rows = list(csv.DictReader(open(os.path.join(cfg.out, "history.csv"))))
    assert [int(r["samples"]) for r in rows] == eval_schedule(20_000, 20, 4)
    from npvae import VAE
    data = toy_data()
    untrained = evaluate(VAE(16, 2, 8), data.train_eval_x, np.zeros((1, 300, 2)))
    assert float(rows[-1]["train_elbo"]) > untrained + 3.0                          # it learned something
    assert s["train_elbo"] == pytest.approx(float(rows[-1]["train_elbo"]), abs=1e-6)
    assert not [f for f in os.listdir(cfg.out) if ".tmp" in f]                     # no temp files left


def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
    data = toy_data()
    cfg = toy_config(tmp_path, samples=2000)
    train(cfg, data=data, callback=lambda learner, st: st.steps == 10, log=lambda *_: None)
    good = params_of(cfg.out)

    def poison(learner, st):
        if st.steps == 14:
            learner.vae.params["dec.logits.b"][0] = np.nan
    with pytest.raises(TrainingDiverged, match=r"step 15"):
        train(cfg, resume=True, data=data, callback=poison, log=lambda *_: None)
    kept = params_of(cfg.out)
    assert all(np.array_equal(good[k], kept[k]) for k in good)


def test_evaluate_uses_the_given_noise_and_averages_per_datapoint():
    from npvae import VAE
    rng = np.random.default_rng(0)
    vae = VAE(16, 2, 8, seed=0, init_std=0.3)
    x = (rng.random((250, 16)) < 0.5).astype(float)
    eps = rng.standard_normal((1, 250, 2))
    assert evaluate(vae, x, eps, batch_size=60) == pytest.approx(vae.elbo(x, eps).mean(), rel=1e-12)


def test_eval_schedule_is_log_spaced_and_ends_at_the_budget():
    s = eval_schedule(1_000_000, 100, 4)
    assert s[0] == 10_000 and s[-1] == 1_000_000 and 100_000 in s and 17_800 in s
    assert all(v % 100 == 0 for v in s) and s == sorted(set(s))
    assert eval_schedule(1050, 100, 4)[-1] == 1100


def test_overrides_are_typed_and_checked():
    c = parse_overrides(["--nz=5", "--hidden=200,100", "--samples=1e7", "--lr", "0.02", "--progress=false",
                         "--binarize=static"], TrainConfig())
    assert (c.nz, c.hidden, c.samples, c.lr, c.progress, c.binarize) == (5, (200, 100), 10_000_000, 0.02, False,
                                                                         "static")
    with pytest.raises(ValueError, match="unknown option --bogus"):
        parse_overrides(["--bogus=1"], TrainConfig())
    with pytest.raises(ValueError, match="cannot read 'x' as an integer"):
        parse_overrides(["--nz=x"], TrainConfig())
    with pytest.raises(ValueError, match="--optimizer must be one of"):
        TrainConfig(optimizer="rmsprop").validate()


def test_resume_refuses_to_change_the_model(tmp_path, capsys):
    cfg = toy_config(tmp_path, samples=200)
    train(cfg, data=toy_data(), log=lambda *_: None)
    before = params_of(cfg.out)
    assert main(["--resume", cfg.out, "--nz=3"], TrainConfig()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume cannot change nz") and err.count("\n") == 1
    with pytest.raises(ConfigError, match="cannot change nz"):
        train(TrainConfig(**{**cfg.__dict__, "nz": 3}), resume=True, data=toy_data(), log=lambda *_: None)
    after = params_of(cfg.out)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_lr_probe_picks_by_training_progress_and_then_runs_as_if_given(tmp_path):
    data = toy_data()
    probed = train(toy_config(tmp_path / "p", samples=1000, lr_probe=400), data=data, log=lambda *_: None)
    results = json.loads(probed["config"]["lr_probe_results"])
    assert set(results) == {"0.01", "0.02", "0.1"}
    best = max(results, key=results.get)
    assert probed["config"]["lr"] == float(best) and probed["config"]["lr_probe"] == 0
    train(toy_config(tmp_path / "d", samples=1000, lr=float(best)), data=data, log=lambda *_: None)
    a, b = params_of(str(tmp_path / "p" / "run")), params_of(str(tmp_path / "d" / "run"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, capsys):
    import signal

    def press_ctrl_c(learner, st):
        if st.steps == 12:
            os.kill(os.getpid(), signal.SIGINT)       # the real signal, delivered to the handler
    cfg = toy_config(tmp_path, samples=2000, progress=True)
    before = signal.getsignal(signal.SIGINT)      # Python's default, or SIG_IGN under nohup / a background job
    s = train(cfg, data=toy_data(), callback=press_ctrl_c, log=lambda *_: None)
    assert s["status"] == "interrupted" and s["steps"] == 12
    assert capsys.readouterr().err.count("Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again") == 1
    with np.load(os.path.join(cfg.out, "checkpoint.npz")) as z:
        assert list(z["counters"][:2]) == [240, 12]
    assert signal.getsignal(signal.SIGINT) is before                           # handler restored


def test_compare_runs_draws_both_learners_and_tabulates_their_budgets(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "compare_runs", os.path.join(os.path.dirname(__file__), "..", "examples", "compare_runs.py"))
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    data = toy_data()
    a = toy_config(tmp_path / "a", samples=12_000)
    w = toy_config(tmp_path / "w", samples=12_000, algorithm="wakesleep")
    for cfg in (a, w):
        train(cfg, data=data, log=lambda *_: None)
    png = tmp_path / "cmp.png"
    assert compare.main([a.out, w.out, f"--out={png}"]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 1000 and "| 10,000 |" in out and "| 12,000 |" in out
    assert "AEVB train" in out and "wake-sleep train" in out
    assert compare.main([a.out, str(tmp_path), f"--out={png}"]) == 2             # not a run folder
    assert capsys.readouterr().err.startswith("error: ")


def test_init_seed_separates_the_initialization_from_the_data_and_noise_stream(tmp_path):
    """With --init_seed the initial parameters come from their own generator: two runs with one
    init_seed and different seeds start alike and then differ (the stream); two with one seed and
    different init_seeds start apart.  The default (-1) is the run's generator, as before."""
    from npvae.learners import AEVB
    cfg = toy_config(tmp_path)
    start = lambda **kw: AEVB(TrainConfig(**{**cfg.__dict__, **kw}), 16, 300,                 # noqa: E731
                              np.random.default_rng(kw.get("seed", 0))).vae.params
    a, b = start(init_seed=5, seed=0), start(init_seed=5, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = start(init_seed=6, seed=0)
    assert not np.array_equal(a["enc.h1.W"], c["enc.h1.W"])
    default, from_rng = start(seed=3), start(init_seed=-1, seed=3)
    assert all(np.array_equal(default[k], from_rng[k]) for k in default)
    d = start(seed=4)
    assert not np.array_equal(default["enc.h1.W"], d["enc.h1.W"])


def test_snapshots_keep_the_model_of_every_evaluation(tmp_path):
    from npvae.learners import evaluate_bound
    from npvae.runs import evaluation_sets, load_run
    from npvae.train import snapshot_path
    data = toy_data()
    cfg = toy_config(tmp_path, samples=40_000, eval_per_decade=4, snapshots=True, lr=0.05)
    train(cfg, data=data, log=lambda *_: None)
    rows = list(csv.DictReader(open(os.path.join(cfg.out, "history.csv"))))
    names = sorted(os.listdir(os.path.join(cfg.out, "snapshots")))
    assert names == sorted(os.path.basename(snapshot_path(cfg.out, int(r["samples"]))) for r in rows)
    assert len(rows) >= 4
    bounds = []
    for r in rows:                  # each snapshot is the model its history row evaluated
        run = load_run(snapshot_path(cfg.out, int(r["samples"])))
        assert run.samples == int(r["samples"]) and run.status == "snapshot"
        x, eps = evaluation_sets(run.config, data)["test"]
        bounds.append(evaluate_bound(run.vae, x, eps))
        assert bounds[-1] == pytest.approx(float(r["test_elbo"]), abs=1e-6)
    assert len(set(bounds)) == len(bounds)                       # the model changed between them
    # the last one is the final checkpoint's model
    last, final = load_run(snapshot_path(cfg.out, int(rows[-1]["samples"]))), load_run(cfg.out)
    assert all(np.array_equal(last.vae.params[k], final.vae.params[k]) for k in final.vae.params)


def test_no_snapshots_by_default_and_overwrite_removes_only_the_runs_own(tmp_path):
    data = toy_data()
    plain = toy_config(tmp_path / "plain")
    train(plain, data=data, log=lambda *_: None)
    assert not os.path.exists(os.path.join(plain.out, "snapshots"))
    cfg = toy_config(tmp_path, snapshots=True)
    train(cfg, data=data, log=lambda *_: None)
    folder = os.path.join(cfg.out, "snapshots")
    mine = os.path.join(folder, "notes.txt")
    open(mine, "w").write("a user's own file")
    first = set(os.listdir(folder)) - {"notes.txt"}
    train(toy_config(tmp_path, snapshots=True, samples=1000), overwrite=True, data=data, log=lambda *_: None)
    after = set(os.listdir(folder))
    assert "notes.txt" in after
    assert all(int(n[len("checkpoint_"):-len(".npz")]) <= 1000 for n in after - {"notes.txt"})
    assert first - after                    # the replaced run's later snapshots are gone
    os.remove(mine)
    train(toy_config(tmp_path), overwrite=True, data=data, log=lambda *_: None)
    assert not os.path.exists(folder)       # emptied, then removed


def test_a_checkpoint_file_reads_like_its_run_folder_whatever_the_names(tmp_path):
    from npvae.runs import RunLoadError, load_run, run_folder
    cfg = toy_config(tmp_path, snapshots=True, out=str(tmp_path / "run.npz"))    # a folder named like a file
    train(cfg, data=toy_data(), log=lambda *_: None)
    assert load_run(cfg.out).status == "finished"
    [name] = os.listdir(os.path.join(cfg.out, "snapshots"))
    snapshot = os.path.join(cfg.out, "snapshots", name)
    assert load_run(snapshot).status == "snapshot" and load_run(snapshot).samples == 3000
    folder = os.path.normpath(cfg.out)
    for path in (snapshot, cfg.out, cfg.out + "/", os.path.join(cfg.out, "checkpoint.npz")):
        assert run_folder(path) == folder
    with pytest.raises(RunLoadError, match="holds no trained run"):
        load_run(str(tmp_path / "missing.npz"))
    # a folder that holds only a run's snapshots still holds a run: a new one there is refused
    os.remove(os.path.join(cfg.out, "checkpoint.npz"))
    for name in ("config.json", "history.csv", "summary.json"):
        os.remove(os.path.join(cfg.out, name))
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(cfg, data=toy_data(), log=lambda *_: None)
