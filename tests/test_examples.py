"""Every example runs in its --smoke mode (CI runs these)."""
import json
import math
import os
import subprocess
import sys

import pytest

from npvae import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def have(name):
    """Whether a data file is present; only its absence skips a test (a checksum error fails it)."""
    try:
        data.find_file(name, download=False)
        return True
    except data.DataNotFoundError:
        return False


@pytest.mark.parametrize("script,needs", [("mnist_aevb.py", "mnist.pkl.gz"), ("freyface_aevb.py", "frey_rawface.mat")])
def test_example_smoke(script, needs, tmp_path):
    if not have(needs):
        pytest.skip(f"{needs} not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    out = tmp_path / "run"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--smoke", f"--out={out}",
                           "--progress=false"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "average lower bound per datapoint" in proc.stdout
    summary = json.load(open(out / "summary.json"))
    assert summary["status"] == "finished" and summary["samples"] == 20_000
    assert math.isfinite(summary["train_elbo"]) and math.isfinite(summary["test_elbo"])
    for fig in ("learning_curves.png", "samples.png", "reconstructions.png"):
        assert (out / fig).stat().st_size > 1000


def test_wakesleep_smoke_then_the_same_command_refuses_and_resume_extends(tmp_path):
    """As a new user would: run, run the same command again (refused in one line, nothing lost),
    then --resume with a larger budget."""
    if not have("mnist.pkl.gz"):
        pytest.skip("mnist.pkl.gz not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    out = tmp_path / "ws"
    env = dict(os.environ, MPLBACKEND="Agg")
    cmd = [sys.executable, os.path.join(ROOT, "examples", "mnist_aevb.py"), "--smoke", "--algorithm=wakesleep",
           f"--out={out}", "--progress=false", "--figures=false"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = (out / "checkpoint.npz").read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and again.stderr.count("\n") == 1
    assert f"--resume {out}" in again.stderr and (out / "checkpoint.npz").read_bytes() == ckpt
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "mnist_aevb.py"), "--resume", str(out),
                              "--samples=30000"], capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["algorithm"] == "wakesleep" and summary["samples"] == 30_000
    assert math.isfinite(summary["test_elbo"])
