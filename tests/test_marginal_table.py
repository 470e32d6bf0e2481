"""examples/marginal_table.py: the importance-sampled log p(x) beside the bound, resumable.

What must hold: the bound is the harness's own test number; IS sits above it on average for a
trained model; per-datapoint values do not depend on the chunking or on an interruption; values
computed for one checkpoint are never mixed with another's.  Seeds are fixed throughout."""
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from npvae.config import TrainConfig
from npvae.data import TrainingData
from npvae.train import train

from .test_examples import have

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import marginal_table  # noqa: E402
from _study import UsageError, synthetic_binary  # noqa: E402

K = 30


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A tiny run of the harness (784-64-5, 20,000 samples) on synthetic binary data: no data files needed."""
    rng = np.random.default_rng(0)
    x = synthetic_binary(rng, 1060, 784)
    data = TrainingData(x[:1000], x[:1000], x[1000:], None, (28, 28), dynamic=False)
    folder = str(tmp_path_factory.mktemp("runs") / "tiny")
    config = TrainConfig(nz=5, hidden=(64,), samples=20_000, eval_per_decade=1, progress=False, figures=False,
                         out=folder)
    train(config, data=data, log=lambda *_: None)
    return folder, data, config


def copy_run(folder, tmp_path, name):
    dest = str(tmp_path / name)
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".lock", "marginal*"))
    return dest


def point_values(folder, k=K, seed=0):
    return marginal_table.load_points(marginal_table.point_file(folder, k, seed))


def quiet(*_):
    pass


def test_bound_is_the_harness_and_chunking_does_not_change_any_value(synthetic_run, tmp_path):
    folder, data, _ = synthetic_run
    a, b = copy_run(folder, tmp_path, "a"), copy_run(folder, tmp_path, "b")
    ra = marginal_table.marginal_of_run(a, K, seed=0, chunk=7, data=data, log=quiet)
    rb = marginal_table.marginal_of_run(b, K, seed=0, chunk=1000, data=data, log=quiet)
    pa, pb = point_values(a), point_values(b)
    assert pa.done == pb.done == 60
    assert np.array_equal(pa.log_px, pb.log_px) and np.array_equal(pa.stderr, pb.stderr)
    assert ra["test_log_px"] == rb["test_log_px"] and ra["test_elbo"] == rb["test_elbo"]
    # the bound on the same points with the harness's fixed noise is history.csv's test number (6 decimals there)
    assert ra["samples"] == 20_000 and ra["test_elbo_history"] is not None
    assert abs(ra["test_elbo"] - ra["test_elbo_history"]) < 1e-6
    assert json.load(open(os.path.join(a, "marginal.json"))) == ra
    # fewer points reuse the saved values (a prefix) and give their mean
    rc = marginal_table.marginal_of_run(a, K, seed=0, points=20, data=data, log=quiet)
    assert rc["test_log_px"] == pytest.approx(pa.log_px[:20].mean(), abs=1e-12) and rc["test_elbo_history"] is None


def test_an_interrupted_run_resumes_to_the_same_values(synthetic_run, tmp_path, monkeypatch):
    folder, data, _ = synthetic_run
    whole, cut = copy_run(folder, tmp_path, "whole"), copy_run(folder, tmp_path, "cut")
    marginal_table.marginal_of_run(whole, K, seed=3, chunk=25, data=data, log=quiet)
    real, calls = marginal_table.importance_sampled_log_px, []

    def ctrl_c_at_the_13th_point(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 13:
            os.kill(os.getpid(), signal.SIGINT)          # a real Ctrl-C, in the middle of the first chunk
        return out

    monkeypatch.setattr(marginal_table, "importance_sampled_log_px", ctrl_c_at_the_13th_point)
    with marginal_table.StopAtBoundary() as stop:
        assert marginal_table.marginal_of_run(cut, K, seed=3, chunk=25, data=data, stop=stop, log=quiet) is None
    assert point_values(cut, seed=3).done == 13                  # stopped after that datapoint, and saved it
    assert not os.path.exists(os.path.join(cut, "marginal.json"))
    monkeypatch.setattr(marginal_table, "importance_sampled_log_px", real)
    resumed = marginal_table.marginal_of_run(cut, K, seed=3, chunk=25, data=data, log=quiet)
    assert np.array_equal(point_values(cut, seed=3).log_px, point_values(whole, seed=3).log_px)
    assert resumed["test_log_px"] == json.load(open(os.path.join(whole, "marginal.json")))["test_log_px"]


def test_a_run_that_trained_on_is_never_mixed_with_its_earlier_checkpoint(synthetic_run, tmp_path, monkeypatch):
    folder, data, config = synthetic_run
    run = copy_run(folder, tmp_path, "moving")
    reference = copy_run(folder, tmp_path, "reference")
    marginal_table.marginal_of_run(reference, K, seed=0, data=data, log=quiet)
    real = marginal_table.importance_sampled_log_px

    class StopAtTheTenthPoint:
        calls, set = 0, False

    stop = StopAtTheTenthPoint()

    def counting(*args, **kwargs):
        stop.calls += 1
        stop.set = stop.calls >= 10
        return real(*args, **kwargs)

    monkeypatch.setattr(marginal_table, "importance_sampled_log_px", counting)
    assert marginal_table.marginal_of_run(run, K, seed=0, data=data, stop=stop, log=quiet) is None
    monkeypatch.setattr(marginal_table, "importance_sampled_log_px", real)
    assert point_values(run).done == 10
    # the run trains on: its checkpoint now holds other parameters
    train(dataclasses.replace(config, samples=30_000, out=run), resume=True, data=data, log=quiet)
    messages = []
    cont = marginal_table.marginal_of_run(run, K, seed=0, data=data, log=messages.append)
    assert any("now at 30,000" in m for m in messages)
    assert cont["samples"] == 20_000 and cont["checkpoint_samples_now"] == 30_000    # all from the first model
    assert np.array_equal(point_values(run).log_px, point_values(reference).log_px)
    assert cont["test_elbo"] == json.load(open(os.path.join(reference, "marginal.json")))["test_elbo"]
    fresh = marginal_table.marginal_of_run(run, K, seed=0, restart=True, data=data, log=quiet)
    assert fresh["samples"] == 30_000 and fresh["test_elbo"] != cont["test_elbo"]
    assert not np.array_equal(point_values(run).log_px, point_values(reference).log_px)


def test_the_bound_is_the_harnesss_for_a_run_on_part_of_the_training_set(synthetic_run, tmp_path):
    """--n_train shortens the training set the harness evaluates, and so the noise stream the test set gets."""
    _, data, config = synthetic_run
    folder = str(tmp_path / "n_train")
    train(dataclasses.replace(config, n_train=300, samples=10_000, out=folder), data=data, log=quiet)
    r = marginal_table.marginal_of_run(folder, k=2, data=data, log=quiet)
    assert r["test_elbo_history"] is not None and abs(r["test_elbo"] - r["test_elbo_history"]) < 1e-6


def test_a_snapshot_gives_what_its_run_gave_at_that_budget_and_keeps_its_own_files(synthetic_run, tmp_path):
    """A --snapshots checkpoint file is measured as the run was at that evaluation: the same values as a
    run folder whose checkpoint is that file, the history's bound at its budget, and result files of
    its own in the run folder (never in snapshots/, never the run's marginal.json)."""
    _, data, config = synthetic_run
    run = str(tmp_path / "with_snapshots")
    train(dataclasses.replace(config, snapshots=True, out=run), data=data, log=quiet)
    snapshot = os.path.join(run, "snapshots", "checkpoint_000000010000.npz")
    assert os.path.isfile(snapshot)
    r = marginal_table.marginal_of_run(snapshot, K, seed=0, data=data, log=quiet)
    assert r["samples"] == r["checkpoint_samples_now"] == 10_000 and r["status"] == "snapshot"
    assert r["test_elbo_history"] is not None and abs(r["test_elbo"] - r["test_elbo_history"]) < 1e-6
    assert sorted(f for f in os.listdir(run) if f.startswith("marginal")) == [
        "marginal_at10000.json", f"marginal_k{K}_seed0_at10000.npz"]
    assert json.load(open(os.path.join(run, "marginal_at10000.json"))) == r
    assert sorted(os.listdir(os.path.join(run, "snapshots"))) == ["checkpoint_000000010000.npz",
                                                                  "checkpoint_000000020000.npz"]
    # the same model as a run folder's own checkpoint: the same numbers
    same = copy_run(run, tmp_path, "snapshot_as_run")
    shutil.copyfile(snapshot, os.path.join(same, "checkpoint.npz"))
    r_same = marginal_table.marginal_of_run(same, K, seed=0, data=data, log=quiet)
    assert np.array_equal(point_values(same).log_px, marginal_table.load_points(
        marginal_table.point_file(snapshot, K, 0)).log_px)
    assert (r_same["test_log_px"], r_same["test_elbo"]) == (r["test_log_px"], r["test_elbo"])
    # the finished run's own numbers are another model's, in marginal.json
    r_end = marginal_table.marginal_of_run(run, K, seed=0, data=data, log=quiet)
    assert r_end["samples"] == 20_000 and r_end["test_elbo"] != r["test_elbo"]
    assert json.load(open(os.path.join(run, "marginal_at10000.json"))) == r


@pytest.mark.parametrize("replacement", [dict(seed=1), dict(samples=30_000)])
def test_overwrite_removes_the_replaced_runs_study_files_and_only_those(synthetic_run, tmp_path, replacement):
    """A run replaced with --overwrite takes its marginal files with it (of the run and of its snapshots):
    a rerun of the study measures the new model, never continues the replaced one's values, also when
    the new run is the same experiment (the same seed to another budget, which the per-point file's
    own checks would take for the old run trained on).  A user's own files, named like them but not
    quite, stay."""
    from npvae.train import STUDY_FILE_RE
    _, data, config = synthetic_run
    run = str(tmp_path / "replaced")
    train(dataclasses.replace(config, snapshots=True, out=run), data=data, log=quiet)
    snapshot = os.path.join(run, "snapshots", "checkpoint_000000010000.npz")
    old = marginal_table.marginal_of_run(run, K, seed=0, data=data, log=quiet)
    marginal_table.marginal_of_run(snapshot, K, seed=0, data=data, log=quiet)
    written = {f for f in os.listdir(run) if f.startswith("marginal")}
    # the names marginal_table writes are the ones --overwrite knows
    assert written == {"marginal.json", f"marginal_k{K}_seed0.npz", "marginal_at10000.json",
                       f"marginal_k{K}_seed0_at10000.npz"}
    assert all(STUDY_FILE_RE.fullmatch(f) for f in written)
    mine = ["marginal_notes.json", "marginal.json.bak", "my_marginal.json"]
    for name in mine:
        open(os.path.join(run, name), "w").write("a user's own file")
    train(dataclasses.replace(config, snapshots=True, out=run, **replacement), data=data, log=quiet, overwrite=True)
    assert sorted(f for f in os.listdir(run) if "marginal" in f) == sorted(mine)
    seen = []
    new = marginal_table.marginal_of_run(run, K, seed=0, data=data, log=seen.append)
    assert not any("continuing" in line for line in seen)
    assert new["test_elbo"] != old["test_elbo"]
    assert point_values(run).meta["params_sha256"] == marginal_table.params_sha256(
        marginal_table.load_run(run).vae.params)


def test_a_relative_snapshot_path_and_the_runs_own_checkpoint_file(synthetic_run, tmp_path, monkeypatch):
    """From inside snapshots/, a bare file name still puts the results in the run folder; the run's own
    checkpoint.npz (which changes while the run trains) stands for the run folder itself."""
    _, data, config = synthetic_run
    run = str(tmp_path / "relative")
    train(dataclasses.replace(config, snapshots=True, out=run), data=data, log=quiet)
    monkeypatch.chdir(os.path.join(run, "snapshots"))
    r = marginal_table.marginal_of_run("checkpoint_000000010000.npz", 3, seed=0, data=data, log=quiet)
    assert r["samples"] == 10_000
    assert sorted(os.listdir(".")) == ["checkpoint_000000010000.npz", "checkpoint_000000020000.npz"]
    assert os.path.isfile(os.path.join(run, "marginal_at10000.json"))
    monkeypatch.chdir(run)
    r_own = marginal_table.marginal_of_run("checkpoint.npz", 3, seed=0, data=data, log=quiet)
    assert r_own["run"] == "." and r_own["status"] == "finished" and r_own["samples"] == 20_000
    assert os.path.isfile("marginal.json") and os.path.isfile("marginal_k3_seed0.npz")
    assert not any(f.startswith("marginal_at20000") or f.endswith("_at20000.npz") for f in os.listdir("."))


def test_a_file_that_is_no_checkpoint_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "marginal_table.py"), str(bad),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "cannot be read as a run's checkpoint" in lines[0], proc.stderr


def test_too_many_points_is_a_usage_error(synthetic_run):
    folder, data, _ = synthetic_run
    with pytest.raises(UsageError, match="60 points"):
        marginal_table.marginal_of_run(folder, K, points=61, data=data, log=quiet)


def test_trained_mnist_model_is_above_its_bound_and_the_bound_is_the_harnesss_float32(tmp_path):
    """A float32 run (its own binarized test set) of the harness on MNIST: the bound here is the
    history's, and IS (k = 200) lies above it on average, by more than its standard error."""
    if not have("mnist.pkl.gz"):
        pytest.skip("mnist.pkl.gz not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    folder = str(tmp_path / "mnist")
    train(TrainConfig(nz=5, hidden=(64,), samples=30_000, eval_max=300, eval_per_decade=1, dtype="float32",
                      progress=False, figures=False, out=folder), log=quiet)
    r = marginal_table.marginal_of_run(folder, k=200, seed=0, log=quiet)
    assert r["points"] == 300 and r["dtype"] == "float32"
    assert abs(r["test_elbo"] - r["test_elbo_history"]) < 1e-5
    assert r["gap"] > 5 * r["gap_stderr"] > 0
    pv = point_values(folder, k=200)
    assert np.isfinite(pv.log_px).all() and (pv.stderr > 0).all()


def test_smoke_command_line(tmp_path):
    if not have("mnist.pkl.gz"):
        pytest.skip("mnist.pkl.gz not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "marginal_table.py"), "--smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| run | dataset | Nz | algorithm | samples reached | test bound |" in proc.stdout
    result = json.load(open(tmp_path / "smoke_run" / "marginal.json"))
    assert result["k"] == marginal_table.SMOKE_K and result["points"] == marginal_table.SMOKE_POINTS
    assert result["test_log_px"] > result["test_elbo"]
    assert (tmp_path / "marginal_table.md").read_text().count("smoke_run") == 1


@pytest.mark.parametrize("args,message", [(["{tmp}/nowhere"], "no such run folder or checkpoint file"),
                                          (["{tmp}"], "no checkpoint.npz"),
                                          (["--k", "0", "{tmp}"], "--k must be at least 1"),
                                          (["--points", "0", "{tmp}"], "--points must be at least 1"),
                                          ([], "give one or more run folders")])
def test_bad_input_is_one_error_line_and_exit_code_2(args, message, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "marginal_table.py"),
                           *[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
