"""How far to trust the paper's marginal-likelihood estimator (Appendix D): its error against the exact answer.

    python examples/appendix_d_accuracy.py            # 8 seeds x 4 datapoints x 4 settings: under a minute
    python examples/appendix_d_accuracy.py --smoke    # one seed: seconds (CI)

Figure 3 reports log p(x) by the Appendix D estimator (``npvae.marginal.hmc_log_px``): HMC draws
from the posterior p(z|x), a kernel density q(z) fitted to half of them, and

    log p(x) ~= -logmeanexp [log q(z) - log p(x, z)]     over the other half.

On MNIST its error cannot be seen: log p(x) is unknown.  Here it can.  The model is a Bernoulli VAE
with a 2-D latent space (20 pixels, 8 tanh units, N(0, 1) weights, so the posteriors are far from
Gaussian, with sds from 0.33 to 0.98; tests/test_marginal.py's model), and its exact log p(x) is a
sum over a fine grid (``npvae.marginal.grid_log_px``).  Each setting estimates log p(x) of the same
4 random binary datapoints once per seed (``numpy.random.default_rng(seed)``):

  the paper's        50 draws after 200 burn-in transitions of 4 leapfrog steps, q a Gaussian KDE
                     whose width is picked from Scott's factor x e^((i - 5)/2), i = 0..9 (the authors')
  up to Scott's      the same, with the widths above Scott's left out (KDE_FACTORS_UP_TO_SCOTT)
  400 draws          every 5th of 2000 transitions, with either set of widths

The table gives the error, estimate - exact, over seeds x datapoints, and how the estimator's own
standard error (``harmonic_log_px``, computed from the same draws) covers it: rms(error / stderr)
is about 1 when the standard error is calibrated, and well above 1 when it misses the error.  Wide
KDEs give heavy-tailed weights q / p(x, z): the rare large ones are what the 50 draws miss.

Writes --out/accuracy.md and .csv (one row per setting), errors.csv (every estimate) and
accuracy.png (each setting's errors, with the estimator's 2 standard errors as bars).
"""
import os
import sys
from typing import NamedTuple

if __name__ == "__main__":
    # Set before NumPy loads BLAS: the tiny model gains nothing from BLAS threads, and on a machine
    # busy with other runs idle ones spin.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import fmt, make_out, markdown_table, pyplot, require, run, save_figure, study_parser  # noqa: E402
from _study import write_csv, write_text  # noqa: E402

from npvae import VAE  # noqa: E402
from npvae.marginal import KDE_FACTORS, KDE_FACTORS_UP_TO_SCOTT, grid_log_px, hmc_log_px  # noqa: E402

# the KDE widths q may take, by the label the table prints
KDE_WIDTHS = {"the authors'": KDE_FACTORS, "up to Scott's": KDE_FACTORS_UP_TO_SCOTT}


class Setting(NamedTuple):
    n_samples: int       # posterior draws kept (half fit q, half evaluate)
    thin: int            # keep every thin-th transition after burn-in
    kde_widths: str      # a key of KDE_WIDTHS: which set of KDE widths q may take

    @property
    def name(self):
        draws = f"{self.n_samples} draws" + (f", every {self.thin}th" if self.thin > 1 else "")
        return f"{draws}; KDE widths {self.kde_widths}"


SETTINGS = (Setting(50, 1, "the authors'"),          # the paper's Appendix D
            Setting(50, 1, "up to Scott's"),
            Setting(400, 5, "the authors'"),
            Setting(400, 5, "up to Scott's"))


def grid_problem(n_points=4, model_seed=1, data_seed=101):
    """A Bernoulli VAE(20 pixels, Nz = 2, 8 tanh units) with N(0, 1) weights, n_points random binary
    datapoints (each pixel 1 with probability 1/2), and their exact log p(x) by grid_log_px."""
    vae = VAE(20, 2, 8, "bernoulli", seed=model_seed, init_std=1.0)
    x = (np.random.default_rng(data_seed).random((n_points, 20)) < 0.5).astype(np.float64)
    return vae, x, grid_log_px(vae, x)


def estimate(vae, x, exact, setting, seeds):
    """Every estimate of one setting: a list of dicts (seed, point, exact, estimate, stderr, error),
    seed by seed, each seed's chains from ``numpy.random.default_rng(seed)`` (one child per point)."""
    rows = []
    for seed in seeds:
        est = hmc_log_px(vae, x, np.random.default_rng(seed), n_samples=setting.n_samples, thin=setting.thin,
                         kde_factors=KDE_WIDTHS[setting.kde_widths])
        for i in range(x.shape[0]):
            rows.append({"seed": seed, "point": i, "exact": float(exact[i]), "estimate": float(est.log_px[i]),
                         "stderr": float(est.stderr[i]), "error": float(est.log_px[i] - exact[i])})
    return rows


def summarize(rows):
    """Mean, rms and largest |error| over the rows, and rms and largest |error / stderr|; an estimate
    that failed (NaN: a chain that stayed put) is counted, and left out of the rest."""
    ok = [r for r in rows if np.isfinite(r["estimate"])]
    counts = {"estimates": len(rows), "failed": len(rows) - len(ok)}
    if not ok:
        return {**counts, **{k: float("nan") for k in ("mean_error", "rms_error", "max_abs_error",
                                                        "rms_error_over_stderr", "max_abs_error_over_stderr")}}
    err = np.array([r["error"] for r in ok])
    err_over_stderr = err / np.array([r["stderr"] for r in ok])
    return {**counts, "mean_error": float(err.mean()), "rms_error": float(np.sqrt(np.mean(err**2))),
            "max_abs_error": float(np.abs(err).max()),
            "rms_error_over_stderr": float(np.sqrt(np.mean(err_over_stderr**2))),
            "max_abs_error_over_stderr": float(np.abs(err_over_stderr).max())}


SUMMARY_HEADER = ("setting", "draws", "thin", "KDE widths", "estimates", "failed", "mean error", "rms error",
                  "max |error|", "rms(error / stderr)", "max |error / stderr|")


def summary_row(setting, s, spec=".3f"):
    return (setting.name, setting.n_samples, setting.thin, setting.kde_widths, s["estimates"], s["failed"],
            fmt(s["mean_error"], spec), fmt(s["rms_error"], spec), fmt(s["max_abs_error"], spec),
            fmt(s["rms_error_over_stderr"], ".2f"), fmt(s["max_abs_error_over_stderr"], ".2f"))


def draw(results, path):
    """One column per setting: each estimate's error (dots, a colour per datapoint) with its +-2 stderr."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, (setting, rows) in enumerate(results):
        n = max(len(rows), 2)
        for j, r in enumerate(rows):
            xk = k + 0.6 * (j / (n - 1) - 0.5)
            ax.errorbar(xk, r["error"], yerr=2 * r["stderr"], fmt="o", ms=3, lw=0.8, color=f"C{r['point'] % 10}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels([s.name.replace("; ", "\n") for s, _ in results], fontsize=8)
    ax.set_ylabel("estimate - exact log p(x)  (nats)")
    ax.set_title("Appendix D estimator on a 2-D Bernoulli VAE: error, and its own 2 standard errors\n"
                 "(a colour per datapoint; seeds side by side)", fontsize=10)
    save_figure(fig, path)


def main(argv=None):
    p = study_parser("appendix_d_accuracy", __doc__)
    p.add_argument("--seeds", type=int, default=None, help="seeds per setting: --seed, --seed + 1, ... "
                   "(default 8; 1 with --smoke)")
    p.add_argument("--points", type=int, default=4, help="datapoints (default 4)")
    args = p.parse_args(argv)
    n_seeds = args.seeds if args.seeds is not None else (1 if args.smoke else 8)
    require(n_seeds >= 1, f"--seeds must be at least 1, got {n_seeds}")
    require(args.points >= 1, f"--points must be at least 1, got {args.points}")
    out = make_out(args.out)
    seeds = range(args.seed, args.seed + n_seeds)

    vae, x, exact = grid_problem(args.points)
    print(f"exact log p(x) of {args.points} datapoints by a 301 x 301 grid (npvae.marginal.grid_log_px): "
          + ", ".join(f"{v:.3f}" for v in exact), flush=True)
    results = []
    for setting in SETTINGS:
        rows = estimate(vae, x, exact, setting, seeds)
        results.append((setting, rows))
        s = summarize(rows)
        print(f"  {setting.name}: rms error {s['rms_error']:.3f} nats (largest {s['max_abs_error']:.2f}), "
              f"rms(error / stderr) {s['rms_error_over_stderr']:.2f}", flush=True)

    summaries = [(setting, summarize(rows)) for setting, rows in results]
    caption = (f"Appendix D estimator against the exact log p(x) (grid), {args.points} datapoints x "
               f"{n_seeds} seed(s) ({args.seed}..{args.seed + n_seeds - 1}) per setting; "
               f"error = estimate - exact, nats.\n\n")
    write_text(os.path.join(out, "accuracy.md"),
               caption + markdown_table(SUMMARY_HEADER, [summary_row(t, s) for t, s in summaries]))
    write_csv(os.path.join(out, "accuracy.csv"), SUMMARY_HEADER,
              [summary_row(t, s, ".6f") for t, s in summaries])
    write_csv(os.path.join(out, "errors.csv"), ("setting", "seed", "point", "exact", "estimate", "stderr", "error"),
              [(t.name, r["seed"], r["point"], f"{r['exact']:.6f}", f"{r['estimate']:.6f}", f"{r['stderr']:.6f}",
                f"{r['error']:.6f}") for t, rows in results for r in rows])
    draw(results, os.path.join(out, "accuracy.png"))
    print(f"wrote {out}/accuracy.md, accuracy.csv, errors.csv and accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, sys.argv[1:]))
