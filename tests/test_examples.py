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
    # far above a model that learned nothing: MNIST's every pixel at 1/2 (784 log 1/2 = -543.4);
    # Frey Face's unit-variance Gaussian, which is below 560 x (-1/2 log 2 pi) = -514.6
    untrained = {"mnist_aevb.py": 784 * math.log(0.5), "freyface_aevb.py": -0.5 * 560 * math.log(2 * math.pi)}[script]
    assert summary["train_elbo"] > untrained + 300 and summary["test_elbo"] > untrained + 300
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


def _figure4_5():
    import importlib.util
    spec = importlib.util.spec_from_file_location("figure4_5", os.path.join(ROOT, "examples", "figure4_5.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _decoder_mean_by_hand(folder, z):
    """The paper's decoder mean (App. C) straight from the checkpoint's arrays, without npvae's model:
    sigmoid(tanh(z W1 + b1) W2 + b2) for MNIST, the sigmoid mean head for Frey Face."""
    import numpy as np
    with np.load(os.path.join(folder, "checkpoint.npz")) as ckpt:
        p = {k[len("param/"):]: ckpt[k].astype(np.float64) for k in ckpt.files if k.startswith("param/")}
    h = np.tanh(z @ p["dec.h1.W"] + p["dec.h1.b"])
    head = "dec.logits" if "dec.logits.W" in p else "dec.mu"
    return 1.0 / (1.0 + np.exp(-(h @ p[f"{head}.W"] + p[f"{head}.b"])))


def test_figure4_5_smoke_draws_the_decoder_means_of_its_runs(tmp_path, capsys):
    """--smoke trains five tiny runs and draws Figs. 4 and 5 from them; what the panels show is the
    decoder's mean on norm.ppf of a regular grid (Fig. 4) and at z ~ N(0, I) from --seed (Fig. 5);
    a second call reuses the runs; --train resumes a run to a larger budget; a missing or wrong run
    is one error line."""
    import matplotlib.image
    import numpy as np
    from scipy.stats import norm
    from npvae.runs import load_run
    if not (have("mnist.pkl.gz") and have("frey_rawface.mat")):
        pytest.skip("mnist.pkl.gz or frey_rawface.mat not found: set NPVAE_DATA_DIR (e.g. ../shared/data)")
    out = tmp_path / "fig45"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "figure4_5.py"), "--smoke", f"--out={out}"]
    # one BLAS thread, as --smoke sets for itself: idle BLAS threads spin on a busy machine
    env = dict(os.environ, MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("fig4_manifolds.png", "fig5_samples.png"):
        png = matplotlib.image.imread(out / name)[..., :3]
        assert png.shape[0] > 300 and png.shape[1] > 700 and png.std() > 0.1, name   # drawn, not blank
    fig45 = _figure4_5()
    runs = {name: load_run(str(out / name)) for name in fig45.RUNS}
    assert {name: (r.config.dataset, r.config.nz, r.samples) for name, r in runs.items()} == {
        name: (dataset, nz, fig45.SMOKE_SAMPLES) for name, (dataset, nz, _) in fig45.RUNS.items()}

    grid = 7
    centres = (np.arange(grid) + 0.5) / grid              # a regular grid on the unit square
    frey, mnist = fig45.fig4_panels(runs["frey_nz2"], runs["mnist_nz2"], grid)
    for panel, folder, shape in ((frey, out / "frey_nz2", (28, 20)), (mnist, out / "mnist_nz2", (28, 28))):
        z = panel.z.reshape(grid, grid, 2)                 # as tile() lays them out: row by row
        assert np.allclose(z[:, :, 0], norm.ppf(centres)[None, :])           # z1 grows to the right
        assert np.allclose(z[:, :, 1], norm.ppf(centres)[::-1, None])        # z2 grows upwards
        assert panel.image_shape == shape and panel.n_cols == grid
        assert np.allclose(panel.images, _decoder_mean_by_hand(folder, panel.z.astype(float)), atol=1e-5)
        assert f"{fig45.SMOKE_SAMPLES:,} training samples" in panel.title

    panels = fig45.fig5_panels([runs[name] for name in fig45.FIG5_RUNS], np.random.default_rng(3), side=4)
    rng = np.random.default_rng(3)                          # the same draws, in the panels' order
    for panel, name, nz in zip(panels, fig45.FIG5_RUNS, (2, 5, 10, 20)):
        assert np.allclose(panel.z, rng.standard_normal((16, nz)))
        assert np.allclose(panel.images, _decoder_mean_by_hand(out / name, panel.z.astype(float)), atol=1e-5)
        assert f"{nz}-D latent space" in panel.title and f"{fig45.SMOKE_SAMPLES:,} training samples" in panel.title

    # each Fig. 4 panel's spread is printed, as manifold_spread computes it
    for letter, name in zip("ab", fig45.FIG4_RUNS):
        assert f"Fig. 4 ({letter}) {fig45.DATA_NAMES[runs[name].config.dataset]}: the decoder means vary" in proc.stdout
    spread = fig45.manifold_spread(runs["frey_nz2"], fig45.fig4_panels(runs["frey_nz2"], runs["mnist_nz2"])[0])
    assert f"by {spread['decoder_sd']:.3f} per pixel" in proc.stdout
    assert f"have sd {spread['encoder_sd'][0]:.2f}, {spread['encoder_sd'][1]:.2f}" in proc.stdout

    # again: the runs are reused (not retrained) and only the two PNGs are redrawn
    ckpt = (out / "mnist_nz5" / "checkpoint.npz").read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "not trained" in again.stdout, again.stderr[-3000:]
    assert (out / "mnist_nz5" / "checkpoint.npz").read_bytes() == ckpt

    # --train resumes a run that holds a checkpoint, through the harness, to the new budget
    folders = [f"--frey_nz2={out / 'frey_nz2'}", f"--mnist_nz2={out / 'mnist_nz2'}"]
    resumed = subprocess.run(cmd[:2] + ["--only=4", "--train", "--samples=30000", f"--out={tmp_path / 'redrawn'}",
                                        *folders], capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0 and resumed.stdout.count("resuming") == 2, resumed.stderr[-3000:]
    assert load_run(str(out / "mnist_nz2")).samples == 30_000 and (tmp_path / "redrawn" / "fig4_manifolds.png").exists()
    assert json.load(open(out / "mnist_nz2" / "summary.json"))["status"] == "finished"

    # --panels draws each panel named to its own PNG from its own run only; a panel's z do not
    # depend on which panels are drawn
    alone = tmp_path / "alone"
    proc = subprocess.run(cmd[:2] + ["--smoke", "--panels=5c,4a", f"--out={alone}"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in alone.iterdir()) == ["fig4a_frey_nz2.png", "fig5c_mnist_nz10.png",
                                                       "frey_nz2", "mnist_nz10"]       # no other run trained
    for name in ("fig4a_frey_nz2.png", "fig5c_mnist_nz10.png"):
        png = matplotlib.image.imread(alone / name)[..., :3]
        assert png.shape[0] > 300 and png.std() > 0.1, name
    assert [line.split(" | ")[0] for line in proc.stdout.splitlines() if line.startswith("| Fig.")] == \
        ["| Fig. 4 (a)", "| Fig. 5 (c)"]
    assert "Fig. 4 (a) Frey Face: the decoder means vary" in proc.stdout and "Fig. 4 (b)" not in proc.stdout
    every = fig45.fig5_latents(np.random.default_rng(5), side=3)
    assert [z.shape for z in every] == [(9, 2), (9, 5), (9, 10), (9, 20)]
    rng = np.random.default_rng(5)
    assert all(np.array_equal(z, rng.standard_normal(z.shape)) for z in every)
    single = fig45.fig5_panel("c", runs["mnist_nz10"], every[2])
    whole = fig45.fig5_panels([runs[name] for name in fig45.FIG5_RUNS], np.random.default_rng(5), side=3)[2]
    assert np.array_equal(single.images, whole.images) and single.title == whole.title and single.n_cols == 3

    # a missing run names the command that trains it; a run of the wrong Nz is refused
    for args, says in (([f"--mnist_nz2={tmp_path / 'none'}"], "--train --samples=N"),
                       ([f"--mnist_nz2={out / 'mnist_nz5'}"], "Nz = 5; its panel needs one on MNIST with Nz = 2"),
                       (["--panels=4b"], "--only and --panels both choose what is drawn")):
        assert fig45.main(["--only=4", f"--frey_nz2={out / 'frey_nz2'}", f"--out={tmp_path / 'x'}", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "x").exists()                    # nothing written on an error
    with pytest.raises(SystemExit) as exit_:                # argparse's own error, on the same one line
        fig45.main(["--panels=4c", f"--out={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "expected panels among 4a, 4b, 5a, 5b, 5c, 5d" in err


def test_manifold_spread_is_the_standard_deviation_over_the_grid_the_images_and_the_encoder_means():
    """What figure4_5.py prints for a Fig. 4 panel, on arrays whose answers are known by hand."""
    import types
    import numpy as np
    from npvae import VAE
    fig45 = _figure4_5()
    vae = VAE(4, 2, 3, "bernoulli", seed=0, init_std=1.0)
    grey = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    binary = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    mu = vae.encode(binary)[0]
    lo, hi = np.sort(mu[:, 0])[1], np.inf                   # a "grid" whose first axis leaves out the lowest mean
    panel = types.SimpleNamespace(images=np.array([[0.2, 0.2, 0.2, 0.2], [0.8, 0.8, 0.8, 0.8]]),
                                  z=np.array([[lo, -np.inf], [hi, np.inf]]))
    s = fig45.manifold_spread(types.SimpleNamespace(vae=vae, config=None), panel,
                              data=types.SimpleNamespace(train_x=grey, train_eval_x=binary))
    assert np.isclose(s["decoder_sd"], 0.3)                  # two images 0.6 apart in every pixel
    assert np.isclose(s["data_sd"], np.sqrt(2.0 / 9.0))      # the grey images: each pixel takes 0, 1 and one again
    # the encoder sees what the model trained on (train_eval_x), not the grey levels
    assert s["encoder_sd"].shape == (2,) and np.allclose(s["encoder_sd"], mu.std(axis=0))
    assert s["in_grid"] == 0.75                              # 3 of the 4 means are inside
