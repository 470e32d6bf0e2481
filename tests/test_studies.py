"""The gradient studies in examples/ (issue 11): each --smoke run writes its outputs, and the
properties they exist to show hold -- with fixed seeds, so nothing here is left to chance."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import _study  # noqa: E402
import appendix_d_accuracy  # noqa: E402
import bound_spread  # noqa: E402
import bug_zoo  # noqa: E402
import gradcheck_study  # noqa: E402
import gradient_variance  # noqa: E402
import kl_weight  # noqa: E402
import likelihoods  # noqa: E402
import reparam_by_hand  # noqa: E402


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- reparam_by_hand

def test_reparam_by_hand_every_derivative_matches_finite_differences(tmp_path, capsys):
    assert reparam_by_hand.main(["--smoke", "--out", str(tmp_path)]) == 0
    for name in ("local_derivatives.md", "local_derivatives.csv", "weight_paths.md", "weight_paths.csv"):
        assert (tmp_path / name).stat().st_size > 100
    assert (tmp_path / "reparam_by_hand.png").stat().st_size > 5000
    assert "match their finite differences" in capsys.readouterr().out

    vae, x, eps = reparam_by_hand.make_setup(seed=0)
    (mu, logvar), _ = reparam_by_hand.encoder_forward(vae.params, vae.arch, x)
    local = reparam_by_hand.local_derivatives(mu, logvar, eps)
    assert len(local) == 6 * 2                                   # six derivatives per latent
    assert max(r["rel_error"] for r in local) <= 1e-6
    sigma = np.exp(0.5 * logvar[0])
    by_name = {(r["derivative"].split(" =")[0], r["j"]): r["formula"] for r in local}
    for j in range(2):                                           # the formulas are the textbook ones
        assert by_name[("dz/dmu", j)] == 1.0
        assert by_name[("dz/dsigma", j)] == eps[0, 0, j]
        assert np.isclose(by_name[("dsigma/dlogvar", j)], sigma[j] / 2)
    terms, totals = reparam_by_hand.weight_paths(vae, x, eps)
    assert max(r["rel_error"] for r in totals) <= 1e-6
    assert {t["path"] for t in terms} >= {"reconstruction", "KL"}


# --------------------------------------------------------------------------- gradcheck_study

def test_gradcheck_study_finds_the_v_and_float32_needs_a_larger_step(tmp_path):
    assert gradcheck_study.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "gradcheck_study.png").stat().st_size > 5000
    assert len(read_csv(tmp_path / "curves.csv")) == 10 * 2 * 45          # tensors x dtypes x steps
    rows = {(r["tensor"], r["dtype"]): r for r in read_csv(tmp_path / "gradcheck_table.csv")}
    best64 = float(rows[("enc.logvar.W", "float64")]["best h central"])
    best32 = float(rows[("enc.logvar.W", "float32")]["best h central"])
    assert 1e-7 <= best64 <= 1e-2
    assert best32 > best64
    for (tensor, dtype), r in rows.items():
        if dtype == "float64":
            assert float(r["min error central"]) < 1e-6, tensor        # the V's floor is a usable check
            assert float(r["min error forward"]) > float(r["min error central"]), tensor


def test_forward_difference_restores_the_parameter_exactly():
    x = np.array([0.1, 0.2])
    d = np.array([1.0, -1.0])
    value = gradcheck_study.forward_difference(lambda: float((x ** 2).sum()), x, d, 1e-3, 0.05)
    assert np.isclose(value, 0.2 - 0.4, atol=3e-3) and x.tolist() == [0.1, 0.2]


# --------------------------------------------------------------------------- gradient_variance

def test_three_estimates_equal_the_librarys_estimators():
    from npvae import VAE, reconstruction_grads
    from npvae.model import decoder_forward, log_likelihood_forward
    rng = np.random.default_rng(0)
    vae = VAE(6, 2, 4, seed=1, init_std=0.5)
    x = (rng.random((3, 6)) < 0.5).astype(float)
    eps, eps_b = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    g = gradient_variance.encoder_gradient_estimates(vae, x, eps, eps_b)
    mu, logvar = vae.encode(x)
    z_b = mu + np.exp(0.5 * logvar) * eps_b                     # independent draws -> b = mean log p(x|z')
    baseline = log_likelihood_forward("bernoulli", x, decoder_forward(vae.params, vae.arch, z_b)[0])[0].mean(0)
    for method, key, b in (("reparam", "reparam", 0.0), ("score", "score", 0.0), ("score", "score_baseline", baseline)):
        ref = reconstruction_grads(vae, x, eps, method, baseline=b)
        for k in ref:
            assert np.allclose(g[key][k], ref[k], rtol=1e-10, atol=1e-14), (key, k)


def _variance_rows(path):
    rows = read_csv(path)
    for r in rows:
        r["L"], r["repeats"], r["variance"] = int(r["L"]), int(r["repeats"]), float(r["variance"])
        r["z"] = float(r["z_vs_pathwise"]) if r["z_vs_pathwise"] else np.nan
    return rows


def test_gradient_variance_smoke_score_function_is_noisier_and_both_are_unbiased(tmp_path):
    assert gradient_variance.main(["--smoke", "--out", str(tmp_path)]) == 0
    for name in ("variance.csv", "variance_ratio.md", "variance_vs_L.png", "variance_ratio.png"):
        assert (tmp_path / name).stat().st_size > 100
    rows = _variance_rows(tmp_path / "variance.csv")
    ratios = gradient_variance.ratios(rows)
    assert {L for (_, L) in ratios} == {1, 10, 100}
    for (tensor, L), (no_baseline, with_baseline) in ratios.items():
        assert no_baseline > 1.0, (tensor, L)          # > 10x: the score function is far noisier
        assert with_baseline > 0.0, (tensor, L)        # a baseline helps but does not close the gap
        assert with_baseline < no_baseline, (tensor, L)
    threshold, n = gradient_variance.z_threshold(rows)
    zs = [abs(r["z"]) for r in rows if r["estimator"] != "reparam"]
    assert len(zs) == n and max(zs) < threshold       # same mean: the difference is variance, not bias
    assert -1.2 < gradient_variance.slope(rows, "reparam") < -0.8     # a mean of L draws: variance ~ 1/L


def test_gradient_variance_reads_a_training_runs_checkpoint(tmp_path):
    import dataclasses

    from npvae import VAE
    from npvae.config import TrainConfig
    run = tmp_path / "run"
    run.mkdir()
    trained = VAE(64, 4, 32, seed=5, init_std=0.3)      # stands in for a trained model
    config = TrainConfig(nz=4, hidden=(32,), dataset="mnist")
    np.savez(run / "checkpoint.npz", config=np.array(json.dumps(dataclasses.asdict(config))),   # what the harness
             counters=np.array([1000, 10, 0]), **{f"param/{k}": v for k, v in trained.params.items()})  # writes
    vae, cfg = _study.load_run(str(run))
    assert cfg["nz"] == 4 and tuple(cfg["hidden"]) == (32,) and cfg["dataset"] == "mnist" and vae.dtype == np.float64
    from_file, _ = _study.load_run(str(run / "checkpoint.npz"))     # a checkpoint file (a snapshot) reads the same
    assert all(np.array_equal(from_file.params[k], vae.params[k]) for k in vae.params)
    out = tmp_path / "out"
    assert gradient_variance.main(["--smoke", "--checkpoint", str(run), "--L", "1,10", "--out", str(out)]) == 0
    rows = read_csv(out / "variance.csv")
    assert {r["state"] for r in rows} == {"init", "trained"}


def test_gradient_variance_draws_its_points_from_the_runs_own_training_split():
    # a run on another Frey Face split holds out other images: the study must not take them for training ones
    import dataclasses

    from npvae import VAE, data
    from npvae.config import TrainConfig
    data_dir = os.environ.get("NPVAE_DATA_DIR")
    if not data_dir or not os.path.isfile(os.path.join(data_dir, "frey_rawface.mat")):
        pytest.skip("NPVAE_DATA_DIR has no frey_rawface.mat: real-data test skipped")
    vae = VAE(560, 5, 200, "gaussian", seed=0)
    for seed in (0, 1):
        config = dataclasses.asdict(TrainConfig(dataset="frey", frey_split_seed=seed))
        x = gradient_variance.study_data(vae, 40, np.random.default_rng(3), False, config)
        split = data.load_frey_face(download=False, seed=seed)
        assert x.shape == (40, 560)
        assert all((split.train.x == row).all(axis=1).any() for row in x)
        assert not any((split.test.x == row).all(axis=1).any() for row in x)
    # a run with --n_train (Figure 3's) trained on its first n images only
    config = dataclasses.asdict(TrainConfig(dataset="frey", n_train=50))
    x = gradient_variance.study_data(vae, 40, np.random.default_rng(3), False, config)
    first = data.load_frey_face(download=False, seed=0).train.x[:50]
    assert all((first == row).all(axis=1).any() for row in x)


def test_gradient_variance_refuses_a_folder_without_a_run_in_one_line(tmp_path, capsys):
    for folder in (tmp_path / "missing", tmp_path):
        assert gradient_variance.main(["--smoke", "--checkpoint", str(folder), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --checkpoint {folder}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()              # refused before anything is written


# --------------------------------------------------------------------------- bug_zoo

def test_bug_zoo_model_without_a_bug_is_npvaes_model():
    from npvae import VAE
    from npvae.model import elbo_backward, elbo_forward
    rng = np.random.default_rng(0)
    params = bug_zoo.init_params(rng, 0.5)
    vae = VAE(bug_zoo.X_DIM, bug_zoo.Z_DIM, bug_zoo.HIDDEN, seed=0)
    for k in vae.params:
        vae.params[k][...] = params[k]
    x = (rng.random((5, bug_zoo.X_DIM)) < 0.5).astype(float)
    eps = rng.standard_normal((3, 5, bug_zoo.Z_DIM))
    model = bug_zoo.ModelUnderTest("none")
    elbo, cache = model.elbo(params, x, eps)
    ref, ref_cache = elbo_forward(vae.params, vae.arch, x, eps, "B")
    assert np.allclose(elbo, ref, rtol=1e-12, atol=1e-12)
    delbo = rng.standard_normal(5)
    grads, ref_grads = model.elbo_backward(params, delbo, cache), elbo_backward(delbo, ref_cache)
    for k in ref_grads:
        assert np.allclose(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12), k
    with pytest.raises(ValueError, match="unknown bug"):
        bug_zoo.ModelUnderTest("typo")


def test_bug_zoo_every_bug_is_caught_and_the_control_by_none(tmp_path):
    assert bug_zoo.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bug_zoo.png").stat().st_size > 5000
    assert "| `none`: no bug (control) |" in (tmp_path / "bug_zoo.md").read_text()
    rows = {r["bug"]: r for r in read_csv(tmp_path / "bug_zoo.csv")}
    assert set(rows) == set(bug_zoo.BUGS)
    caught = {bug: [c for c in bug_zoo.CHECKS if r[f"{c}_caught"] == "1"] for bug, r in rows.items()}
    assert caught.pop("none") == []                       # no check fires without a bug
    for bug, checks in caught.items():
        assert checks, f"{bug} slipped past every check"
    # value-consistent bugs slip past the gradient check: that is why the other checks exist
    for bug in ("pow_sigma", "sampler_log_sigma", "kl_sign"):
        assert "a_gradcheck" not in caught[bug], bug
    assert caught["clipped_bce"] == ["a_extreme"]          # only extreme logits expose the clip
    # margins: the control stays well inside every threshold
    control = rows["none"]
    assert float(control["a_gradcheck_statistic"]) < 1e-8
    for c in ("b_mc_kl", "c1_a_vs_b", "c2_path_vs_score"):
        assert float(control[f"{c}_statistic"]) < 0.75 * float(control[f"{c}_threshold"]), c


# --------------------------------------------------------------------------- the command line

@pytest.mark.parametrize("script,args", [("gradcheck_study.py", ["--per-decade", "0"]),
                                         ("gradient_variance.py", ["--L", "0,10"]),
                                         ("bug_zoo.py", ["--bug", "nonsense"]),
                                         ("kl_weight.py", ["--betas", "1,-2"]),
                                         ("kl_weight.py", ["--smoke", "--samples", "6000", "--warmup-samples", "7000"]),
                                         ("likelihoods.py", ["--decoder-var", "0"]),
                                         ("likelihoods.py", ["--smoke", "--decoder-var", "1e-20"]),
                                         ("appendix_d_accuracy.py", ["--seeds", "0"]),
                                         ("appendix_d_accuracy.py", ["--points", "0"])])
def test_bad_arguments_give_one_error_line_and_exit_code_2(script, args, tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args, "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


# --------------------------------------------------------------------------- kl_weight

def test_kl_weight_smoke_beta_trades_kl_for_reconstruction(tmp_path, capsys):
    assert kl_weight.main(["--smoke", "--out", str(tmp_path)]) == 0
    for name in ("kl_weight_samples.png", "kl_weight_tradeoff.png", "kl_weight_curves.png"):
        assert (tmp_path / name).stat().st_size > 5000, name
    assert "bound (beta = 1)" in (tmp_path / "kl_weight.md").read_text()
    rows = {r["run"]: r for r in read_csv(tmp_path / "kl_weight.csv")}
    assert set(rows) == {"beta_0.5", "beta_1", "beta_2", "beta_4", "warmup_3000"}
    for r in rows.values():
        assert float(r["bound"]) == pytest.approx(float(r["reconstruction"]) - float(r["kl"]), abs=2e-6)
        assert float(r["kl"]) > 0 and 0 <= int(r["active_units"]) <= int(r["nz"])
    kls = [float(rows[f"beta_{b}"]["kl"]) for b in ("0.5", "1", "2", "4")]
    assert all(a > b for a, b in zip(kls, kls[1:]))                  # a larger beta, a smaller KL
    recs = [float(rows[f"beta_{b}"]["reconstruction"]) for b in ("0.5", "1", "2", "4")]
    assert recs[0] > recs[-1]                                         # ... bought with reconstruction
    assert int(rows["warmup_3000"]["kl_warmup"]) == 3000
    with np.load(tmp_path / "runs" / "warmup_3000" / "checkpoint.npz") as z:
        assert int(z["aevb/samples_seen"]) == 6000
    assert "active units" in capsys.readouterr().out
    assert len(read_csv(tmp_path / "active_units.csv")) == 5 * 4


def test_kl_weight_bound_equals_the_harness_evaluation_of_the_same_model(tmp_path):
    """measure() gives the bound the harness evaluates, for the same noise: the study reports the true bound."""
    from npvae import VAE
    from npvae.learners import evaluate_bound
    rng = np.random.default_rng(0)
    vae = VAE(12, 3, 6, seed=1, init_std=0.3)
    x = (rng.random((50, 12)) < 0.3).astype(float)
    eps = rng.standard_normal((1, 50, 3))
    r = kl_weight.measure(vae, x, eps, batch_size=16)
    assert r["bound"] == pytest.approx(evaluate_bound(vae, x, eps), rel=1e-12)


def test_active_units_counts_dimensions_whose_mean_varies_over_the_data():
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((4000, 3)) * np.array([1.0, np.sqrt(0.02), np.sqrt(0.005)]) + 5.0
    count, var = _study.active_units(mu)
    assert count == 2 and np.allclose(var, [1.0, 0.02, 0.005], rtol=0.1)


def test_a_study_refuses_an_out_folder_with_results_unless_overwrite(tmp_path):
    assert kl_weight.main(["--smoke", "--betas", "1", "--warmup-samples", "0", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "kl_weight.csv").read_bytes()
    cmd = [sys.executable, os.path.join(ROOT, "examples", "kl_weight.py"), "--smoke", "--betas", "1",
           "--warmup-samples", "0", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--overwrite" in proc.stderr
    assert (tmp_path / "kl_weight.csv").read_bytes() == before
    proc = subprocess.run(cmd + ["--overwrite", "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "kl_weight.csv").read_bytes() != before


# --------------------------------------------------------------------------- likelihoods

def test_likelihoods_smoke_reports_each_model_in_its_units(tmp_path, capsys):
    assert likelihoods.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "likelihoods_samples.png").stat().st_size > 5000
    text = (tmp_path / "likelihoods.md").read_text()
    assert "a mass on {0,1}^64" in text and "not a likelihood" in text and "a density on R^64" in text
    rows = {r["run"]: r for r in read_csv(tmp_path / "likelihoods.csv")}
    assert set(rows) == set(likelihoods.RUNS)
    binary, grey = rows["bernoulli_binary"], rows["bernoulli_grey"]
    assert float(binary["bound"]) < 0                                  # a log-probability of a 0/1 image
    assert float(grey["bound"]) < -float(grey["bernoulli_entropy_floor"])   # BCE of grey levels has a floor
    assert float(rows["gaussian_learned"]["bound"]) > 0                # a density can exceed 1
    for n in ("bernoulli_grey", "gaussian_learned", "gaussian_fixed"):
        assert float(rows[n]["dequantized_8bit_bound"]) < 0, n         # a probability cannot
        assert float(rows[n]["bits_per_pixel"]) > 0, n
    assert float(grey["density_01"]) == pytest.approx(float(grey["bound"]) + float(grey["log_cb_normaliser"]),
                                                      abs=1e-5)
    assert float(rows["gaussian_fixed"]["share_sigma_below_1_256"]) == 0.0      # sigma = 0.1
    assert float(rows["gaussian_learned"]["share_sigma_below_1_256"]) > 0.0     # the always-0 border
    with np.load(tmp_path / "runs" / "gaussian_fixed" / "checkpoint.npz") as z:
        assert "param/dec.mu.W" in z.files and "param/dec.logvar.W" not in z.files
    assert "compares with the paper" in capsys.readouterr().out


def test_grey_level_bin_masses_sum_to_one():
    k = np.arange(256)[:, None]
    for mean, sigma in ((0.3, 0.05), (0.0, 1e-7), (0.999, 1e-3), (-2.0, 0.5), (0.5, 30.0), (1.5, 1e-9)):
        mass = np.exp(likelihoods.log_gaussian_bin_mass(k, np.full((256, 1), mean), sigma))
        assert mass.sum() == pytest.approx(1.0, abs=1e-12), (mean, sigma)
    for logit in (0.0, 1e-8, -3.0, 0.7, 40.0, -60.0):
        mass = np.exp(likelihoods.log_cb_bin_mass(k, np.full((256, 1), logit)))
        assert mass.sum() == pytest.approx(1.0, abs=1e-12), logit


def test_continuous_bernoulli_normaliser_and_bins_match_integrals():
    from scipy.integrate import quad
    from npvae.layers import sigmoid
    for logit in (-4.0, 0.0, 1e-6, 2.5, 9.0):
        y = float(sigmoid(np.array(logit)))
        c = float(np.exp(likelihoods.log_cb_normaliser(np.array(logit))))
        assert quad(lambda x: c * y ** x * (1 - y) ** (1 - x), 0, 1)[0] == pytest.approx(1.0, rel=1e-10), logit
        for k in (0, 17, 255):
            integral = quad(lambda x: c * y ** x * (1 - y) ** (1 - x), k / 256, (k + 1) / 256)[0]
            mass = float(np.exp(likelihoods.log_cb_bin_mass(np.array(k), np.array(logit))))
            assert mass == pytest.approx(integral, rel=1e-9), (logit, k)


def test_bernoulli_entropy_is_zero_on_binary_pixels_and_log2_at_one_half():
    assert likelihoods.bernoulli_entropy(np.array([[0.0, 1.0, 1.0]]))[0] == 0.0
    assert likelihoods.bernoulli_entropy(np.array([[0.5, 0.5]]))[0] == pytest.approx(2 * np.log(2), rel=1e-14)


# --------------------------------------------------------------------------- appendix_d_accuracy

def test_appendix_d_accuracy_more_draws_shrink_the_error_and_calibrate_its_stderr(tmp_path, capsys):
    assert appendix_d_accuracy.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "accuracy.png").stat().st_size > 5000
    assert "rms(error / stderr)" in (tmp_path / "accuracy.md").read_text()
    table = read_csv(tmp_path / "accuracy.csv")
    errors = read_csv(tmp_path / "errors.csv")
    assert len(table) == len(appendix_d_accuracy.SETTINGS) and len(errors) == 4 * len(table)   # one seed x 4 points

    # the model is tests/test_marginal.py's (as the study says), and each written error is the
    # library's estimator against the library's grid, for that seed
    from npvae.marginal import grid_log_px, hmc_log_px
    from tests.test_marginal import bernoulli_vae_problem
    vae, x, exact = appendix_d_accuracy.grid_problem()
    test_vae, test_x = bernoulli_vae_problem()
    np.testing.assert_array_equal(x, test_x)
    np.testing.assert_array_equal(exact, grid_log_px(test_vae, test_x))
    paper = appendix_d_accuracy.SETTINGS[0]
    est = hmc_log_px(vae, x, np.random.default_rng(0), n_samples=paper.n_samples,
                     kde_factors=appendix_d_accuracy.KDE_WIDTHS[paper.kde_widths])
    written = [float(r["error"]) for r in errors if r["setting"] == paper.name]
    np.testing.assert_allclose(written, est.log_px - exact, atol=1e-6)

    # what the study exists to show (seed 0, fixed): 400 draws err far less than the paper's 50, and
    # their standard error covers the error (rms of error / stderr near 1)
    by = {r["setting"]: r for r in table}
    rms = {t: float(by[t.name]["rms error"]) for t in appendix_d_accuracy.SETTINGS}
    for t in appendix_d_accuracy.SETTINGS:
        if t.n_samples == 400:
            assert rms[t] < 0.1 and rms[t] < rms[paper] / 3, (t, rms)
            assert 0.5 < float(by[t.name]["rms(error / stderr)"]) < 2.0
        assert by[t.name]["failed"] == "0"


def test_appendix_d_accuracy_summary_leaves_failed_estimates_out_and_counts_them():
    rows = [{"estimate": -10.5, "error": 0.5, "stderr": 0.25}, {"estimate": -11.0, "error": -1.0, "stderr": 0.5},
            {"estimate": float("nan"), "error": float("nan"), "stderr": float("nan")}]
    s = appendix_d_accuracy.summarize(rows)
    assert (s["estimates"], s["failed"]) == (3, 1)
    assert np.isclose(s["mean_error"], -0.25) and np.isclose(s["rms_error"], np.sqrt(0.625))
    assert s["max_abs_error"] == 1.0 and s["max_abs_error_over_stderr"] == 2.0
    assert np.isclose(s["rms_error_over_stderr"], 2.0)                     # both ratios are +-2
    s = appendix_d_accuracy.summarize(rows[2:])                             # every estimate failed
    assert (s["estimates"], s["failed"]) == (1, 1) and np.isnan(s["rms_error"]) and np.isnan(s["mean_error"])


# --------------------------------------------------------------------------- bound_spread

def test_bound_spread_smoke_reproduces_every_reported_bound(tmp_path, capsys):
    assert bound_spread.main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "bound_spread.csv")
    assert len(rows) == 8 and {r["set"] for r in rows} == {"train", "test"}
    for r in rows:                  # each snapshot's mean is the bound its run reported there
        assert r["history"] and float(r["mean"]) == pytest.approx(float(r["history"]), abs=0.006)
        assert float(r["p5"]) < float(r["median"]) < float(r["p95"])
        assert float(r["mean"]) == pytest.approx(float(r["reconstruction"]) - float(r["KL"]), abs=0.016)
    assert (tmp_path / "bound_spread.png").stat().st_size > 5000
    assert "agree with the runs' own evaluations" in capsys.readouterr().out


def test_bound_spread_terms_are_the_harness_bound_point_by_point():
    from npvae.learners import evaluate_bound
    from npvae.model import VAE
    rng = np.random.default_rng(3)
    for likelihood in ("bernoulli", "gaussian"):
        vae = VAE(12, 3, 7, likelihood, seed=1)
        x = (rng.random((25, 12)) < 0.4).astype(float) if likelihood == "bernoulli" else rng.random((25, 12))
        eps = rng.standard_normal((1, 25, 3))
        terms = bound_spread.point_terms(vae, x, eps, chunk=7)       # chunks must not change anything
        assert terms["elbo"].shape == (25,)
        np.testing.assert_allclose(terms["elbo"], terms["reconstruction"] - terms["kl"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(terms["elbo"], vae.elbo(x, eps), rtol=0, atol=1e-12)
        assert terms["elbo"].mean() == pytest.approx(evaluate_bound(vae, x, eps), abs=1e-12)
        assert ("decoder_logvar" in terms) == (likelihood == "gaussian")
        s = bound_spread.summarize(terms)
        assert s["median"] == pytest.approx(np.median(terms["elbo"])) and s["p5"] < s["median"] < s["p95"]
        assert s["stderr"] == pytest.approx(np.std(terms["elbo"], ddof=1) / 5)
        assert np.isnan(s["decoder_logvar"]) == (likelihood == "bernoulli")


@pytest.mark.parametrize("shift", [1.0, 1e-3])
def test_bound_spread_fails_when_a_mean_disagrees_with_the_run(tmp_path, capsys, monkeypatch, shift):
    real = bound_spread.reported_bound
    monkeypatch.setattr(bound_spread, "reported_bound", lambda *a: real(*a) + shift)
    assert bound_spread.main(["--smoke", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"differs from the run's own evaluation by up to {shift:.3g}" in err and "smoke_run at 40,000, test" in err


def test_bound_spread_fails_on_a_non_finite_point(tmp_path, capsys, monkeypatch):
    real = bound_spread.point_terms

    def one_nan(*a, **kw):
        terms = real(*a, **kw)
        terms["elbo"][3] = np.nan
        return terms
    monkeypatch.setattr(bound_spread, "point_terms", one_nan)
    assert bound_spread.main(["--smoke", "--out", str(tmp_path)]) == 1
    assert "non-finite per-point bounds" in capsys.readouterr().err


def test_bound_spread_uses_the_runs_estimator_and_its_evaluation_sets(tmp_path):
    from npvae.runs import evaluation_key, read_checkpoint_config
    from npvae.train import train
    from .test_train import toy_config, toy_data
    data = toy_data(dynamic=False)
    cfg = toy_config(tmp_path, estimator="A", samples=2000, snapshots=True)
    train(cfg, data=data, log=lambda *_: None)
    [result] = bound_spread.study([cfg.out], data).values()
    assert result["sets"]["test"][0]["mean"] == pytest.approx(result["history"]["test"], abs=1e-9)
    config, _ = read_checkpoint_config(cfg.out)
    import dataclasses
    assert evaluation_key(config) == evaluation_key(dataclasses.replace(config, samples=10**8, snapshots=False))
    for change in (dict(frey_split_seed=1), dict(eval_seed=1), dict(data_dir="elsewhere")):
        assert evaluation_key(config) != evaluation_key(dataclasses.replace(config, **change))


@pytest.mark.parametrize("argv, message", [
    ([], "give run folders or snapshot files"),
    (["nowhere/checkpoint_000000001000.npz"], "no such run folder or snapshot file"),
    (["--smoke", "some_run"], "give no paths with it"),
])
def test_bound_spread_bad_arguments_are_one_line(tmp_path, capsys, argv, message):
    assert bound_spread.main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bound_spread_refuses_a_file_that_is_not_a_checkpoint_in_one_line(tmp_path, capsys):
    bad = tmp_path / "checkpoint_000000001000.npz"
    bad.write_text("not a zip")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (bad, empty):
        assert bound_spread.main([str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bound_spread_refuses_mcem_and_checks_no_log_px_history(tmp_path, capsys):
    from npvae.train import train
    from .test_mcem import mcem_config
    from .test_train import toy_config, toy_data
    data = toy_data(dynamic=False)
    mcem = mcem_config(tmp_path / "mcem", samples=400)
    train(mcem, data=data, log=lambda *_: None)
    assert bound_spread.main([mcem.out, "--out", str(tmp_path / "o")]) == 2
    assert "trains no encoder" in capsys.readouterr().err
    # an AEVB run evaluated by log p(x): its bound is spread, but not checked against that history
    marginal = toy_config(tmp_path / "aevb", samples=400, metric="marginal", eval_max=12, eval_per_decade=1)
    train(marginal, data=data, log=lambda *_: None)
    [result] = bound_spread.study([marginal.out], data).values()
    assert result["history"] == {"train": None, "test": None}
    assert np.isfinite(result["sets"]["test"][0]["mean"])


def test_bound_spread_point_changes_split_the_mean_into_the_tail_and_the_rest():
    def result(run, samples, elbo):
        return {"run": run, "samples": samples, "sets": {"test": ({}, {"elbo": np.asarray(elbo, float)})}}
    n = 40
    before = np.zeros(n)
    after = np.full(n, 2.0)
    after[:2] = -100.0                       # two points (5% of 40) fall far, the other 38 rise by 2
    results = {"a": result("r", 10, before), "b": result("r", 20, after), "c": result("lone", 10, before)}
    [(run, c)] = bound_spread.point_changes(results).items()      # a run with one checkpoint has no change
    assert run == "r" and (c["first"], c["last"], c["n_tail"]) == (10, 20, 2)
    assert c["rose"] == pytest.approx(38 / 40) and c["median_change"] == 2.0
    assert c["mean_change"] == pytest.approx((38 * 2 - 200) / 40)
    assert c["tail_share"] == pytest.approx(-200 / 40)
    assert "the 2 points that fell most contribute -5.00 of the mean's change, the rest +1.90" in \
        bound_spread.change_lines({run: c})[0]


def test_bound_spread_marks_the_papers_values_only_for_the_papers_model():
    from npvae.config import TrainConfig
    assert tuple(bound_spread.fig2_value(TrainConfig(dataset="frey", nz=5, hidden=(200,)))) == (1230, 1110)
    assert tuple(bound_spread.fig2_value(TrainConfig(dataset="mnist", nz=20, hidden=(500,)))) == (-97, -100)
    assert bound_spread.fig2_value(TrainConfig(dataset="frey", nz=5, hidden=(100,))) is None
    assert bound_spread.fig2_value(TrainConfig(dataset="frey", nz=7, hidden=(200,))) is None
