"""Every example runs in its --smoke mode (CI runs these)."""
import json
import os
import subprocess
import sys

import pytest

from npvae import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def have(name):
    try:
        data.find_file(name, download=False)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("script,needs", [("mnist_aevb.py", "mnist.pkl.gz"), ("freyface_aevb.py", "frey_rawface.mat")])
def test_example_smoke(script, needs, tmp_path):
    if not have(needs):
        pytest.skip(f"{needs} not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    out = tmp_path / "run"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), "--smoke", f"--out={out}",
                           "--progress=false"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "average lower bound per datapoint" in proc.stdout
    summary = json.load(open(out / "summary.json"))
    assert summary["status"] == "finished" and summary["samples"] == 20_000
    assert summary["train_elbo"] == summary["train_elbo"]                      # not NaN
    for fig in ("learning_curves.png", "samples.png", "reconstructions.png"):
        assert (out / fig).stat().st_size > 1000
