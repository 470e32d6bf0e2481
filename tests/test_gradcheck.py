import numpy as np
import pytest

from npvae import VAE
from npvae.gradcheck import central_difference, check_vae, main, numerical_gradient, relative_error, ridders_derivative


def test_ridders_is_accurate_where_a_fixed_step_is_not():
    x = np.array([0.3])
    f = lambda: 500.0 + np.sin(1e-3 * x[0])        # big value, small derivative: round-off dominates
    exact = 1e-3 * np.cos(1e-3 * 0.3)
    d, err = ridders_derivative(f, x, np.ones(1))
    assert relative_error(d, exact) < 1e-8
    assert relative_error(central_difference(f, x, np.ones(1), 1e-9), exact) > 1e-6
    assert x[0] == 0.3                               # restored exactly


def test_numerical_gradient_of_a_known_function():
    x = np.array([[0.1, -0.4], [2.0, 0.5]])
    n = numerical_gradient(lambda: float((x ** 3).sum()), x)
    assert relative_error(3 * x ** 2, n) < 1e-8


def test_check_vae_detects_a_wrong_gradient(monkeypatch):
    rng = np.random.default_rng(0)
    vae = VAE(6, 2, 4, seed=0, init_std=0.5)
    x, eps = (rng.random((3, 6)) < 0.5).astype(float), rng.standard_normal((1, 3, 2))
    good = vae.loss_and_grads

    def off_by_a_little(x, eps, estimator="B"):
        loss, grads = good(x, eps, estimator)
        grads["enc.logvar.W"][0, 0] *= 1.01          # one element, 1% off
        return loss, grads
    monkeypatch.setattr(vae, "loss_and_grads", off_by_a_little)
    rows = {r.name: r.rel_error for r in check_vae(vae, x, eps, mode="elements")}
    assert rows["enc.logvar.W"] > 1e-5
    assert max(v for k, v in rows.items() if k != "enc.logvar.W") < 1e-6


def test_cli_prints_a_table_and_passes(capsys):
    code = main(["--x-dim", "12", "--hidden", "6,5", "--z-dim", "3", "--batch", "4", "-L", "2",
                 "--likelihood", "gaussian", "--estimator", "A"])
    out = capsys.readouterr().out
    assert code == 0
    assert "dec.logvar.W" in out and "enc.h2.b" in out and "max relative error" in out


def test_cli_checks_a_trained_run(tmp_path, capsys):
    from npvae.train import TrainConfig, train

    from .test_train import toy_data
    out = str(tmp_path / "run")
    train(TrainConfig(nz=2, hidden=(8,), samples=400, batch_size=20, progress=False, figures=False, out=out),
          data=toy_data(), log=lambda *_: None)
    assert main(["--checkpoint", out, "--batch", "5"]) == 0
    text = capsys.readouterr().out
    assert "trained parameters from" in text and "x_dim=16" in text and "(16, 8)" in text


def test_cli_refuses_a_folder_without_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"error: --checkpoint {tmp_path}: " in err and "Traceback" not in err
