"""Where the App. D estimator's HMC chains start, and how much the estimate of log p(x) moves with it.

    python examples/marginal_starts.py runs/fig3/aevb_n1000 runs/fig3/wakesleep_n1000
    python examples/marginal_starts.py runs/fig3/mcem_n1000 --points=100   # the first 100 train and test points
    python examples/marginal_starts.py --smoke               # trains two tiny runs first (AEVB, MCEM): seconds

The Appendix D estimator (``npvae.marginal.hmc_log_px``: 50 HMC samples after 200 burn-in
transitions, a density fitted on half of them) only sees the posterior mode that its chain finds.
For each run folder (trained with --metric=marginal), on the points its harness evaluated (the
first eval_max training and test points, ``npvae.runs.evaluation_sets``), this estimates log p(x)
twice, with the harness's generator, so that only the starts differ:

  plain start   AEVB and wake-sleep: each chain starts at the encoder's mean mu(x), as their
                harness's evaluation does.  Monte Carlo EM, which has no encoder: at z = 0 (the
                first MCEM evaluation's start);
  best start    each chain starts at the best (highest log p(x, z)) of the plain start, z = 0,
                256 prior draws and the z of up to 2000 training points: their encoder means, or
                MCEM's chains (``npvae.learners.encoder_marginal_start``, ``mcem_marginal_start``),
                which is what MCEM's evaluation does, and any run's with --marginal_start=best.

The harness's own number (the best start for MCEM and for runs trained with --marginal_start=best,
else mu(x)) is the value of the run's history.csv at the checkpoint's budget, printed beside it as a check (MCEM runs evaluated
before the best start existed, such as runs/mcem_zero_start/, recorded the z = 0 estimate).  A higher estimate
from the best start means that chains from the plain start burned in at a poorer mode.

Both means are over the same points: a point whose chain stayed put (NaN) from either start is
left out of both, and the table says how many.  --prior_k=K adds a check that starts nowhere:
importance sampling with the prior N(0, I) as the proposal and K samples per point
(``importance_sampled_log_px``, noise from default_rng([eval_seed, 6])), a lower bound on log p(x)
in expectation that rises with K, given with its standard error.  Where it lies above an App. D
estimate by more than that error, the estimate is too low.  It costs K decoder passes per point
(K = 200,000 on 100 points of Figure 3's model: 3 minutes a set).

Writes --out/marginal_starts.md and .csv; an --out that holds them is refused unless --overwrite.
"""
import contextlib
import os
import sys
import warnings
from typing import NamedTuple

if __name__ == "__main__" and "--smoke" in sys.argv[1:]:
    # Set before NumPy loads BLAS (as figure4_5.py does): the smoke's tiny model gains nothing from
    # BLAS threads, and on a machine busy with other runs idle ones spin (6x slower, measured).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import UsageError, claim_out, markdown_table, require, run, study_parser  # noqa: E402
from _study import write_csv, write_text  # noqa: E402

from npvae import blas  # noqa: E402
from npvae.config import ConfigError, TrainConfig  # noqa: E402
from npvae.data import ChecksumError, DataNotFoundError  # noqa: E402
from npvae.learners import MCEM_START_STEP, encoder_marginal_start, marginal_eval_rng, mcem_marginal_start  # noqa: E402
from npvae.marginal import hmc_log_px, importance_sampled_log_px  # noqa: E402
from npvae.runs import RunLoadError, evaluation_sets, load_run, load_run_data  # noqa: E402
from npvae.sweep import read_history  # noqa: E402
from npvae.train import first_n_training_points, train  # noqa: E402

PRIOR_IS_STREAM = 6        # default_rng([eval_seed, 6]): a stream no harness generator takes (npvae.learners)
OUTPUTS = ("marginal_starts.md", "marginal_starts.csv", "smoke_aevb", "smoke_mcem")
SMOKE_RUN = dict(dataset="mnist", binarize="fixed", nz=2, hidden=(32,), samples=20_000, n_train=1000,
                 metric="marginal", eval_max=40, eval_per_decade=1, progress=False, figures=False)


class Starts(NamedTuple):
    plain: float            # mean App. D estimate from the plain start (mu(x); z = 0 for MCEM)
    best: float             # ... from the best candidate start, over the same points
    moved: float            # fraction of the chains whose best start is not the plain one
    points: int             # the points compared
    left_out: int = 0       # points whose chain stayed put (NaN) from either start: in neither mean
    prior_is: float = None  # mean importance-sampled log p(x) with the prior as proposal (prior_k > 0)
    prior_is_stderr: float = None   # its standard error, from each point's (delta method)


def checked_run(folder):
    """The run in folder (``npvae.runs.load_run``), or a one-line UsageError if it is none or was
    not evaluated by App. D."""
    try:
        model = load_run(folder)
    except RunLoadError as e:
        raise UsageError(str(e)) from None
    require(model.config.metric == "marginal",
            f"{folder} evaluated the bound (--metric={model.config.metric}): this compares App. D estimates, for "
            f"runs with --metric=marginal (Nz <= 4)")
    return model


def compare_starts(folder, points=None, data=None, prior_k=0):
    """For the run in folder: ({set: ``Starts``}, its config, training samples, and history.csv's
    (train, test) at that budget or None).  The plain start is mu(x) for AEVB and wake-sleep (their
    harness's), z = 0 for MCEM (whose harness takes the best start).  data: the run's
    ``TrainingData`` (default: ``npvae.runs.load_run_data``); prior_k: importance samples from the
    prior per point for ``Starts.prior_is`` (0: none)."""
    model = checked_run(folder)
    vae, config = model.vae, model.config
    mcem = config.algorithm == "mcem"
    if data is None:
        try:
            data = load_run_data(config)
        except (DataNotFoundError, ChecksumError) as e:
            raise UsageError(" ".join(str(e).split())) from None
    sets = evaluation_sets(config, data)
    train_x = first_n_training_points(data, config.n_train).train_x          # as the harness passes it
    history = [r for r in read_history(folder) if r[0] == model.samples]
    out, recorded = {}, {}
    for name, (x, _) in sets.items():
        # the harness's number, where this is the harness's computation (all of its points)
        whole = points is None or points >= len(x)
        recorded[name] = history[-1][2 + ("train", "test").index(name)] if history and whole else None
        x = x[:points] if points else x
        if mcem:       # the first MCEM evaluation's start, and the harness's (npvae.learners.MCEM)
            plain = {"z0": np.zeros((len(x), config.nz)), "step_size": MCEM_START_STEP}
            best = mcem_marginal_start(vae, x, model.chains, config.eval_seed)
        else:          # hmc_log_px's default start, and the best of it and the candidates (--marginal_start)
            plain = {"z0": np.asarray(vae.encode(x)[0], dtype=np.float64)}
            best = encoder_marginal_start(vae, x, train_x, config.eval_seed)
        # the harness's generator, so that the harness's start gives its own number
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # stuck chains: counted in the table
            by_plain, by_best = (hmc_log_px(vae, x, marginal_eval_rng(config.eval_seed), **start).log_px
                                 for start in (plain, best))
        kept = np.isfinite(by_plain) & np.isfinite(by_best)     # the same points in every column
        require(kept.any(), f"{folder}: every {name} chain stayed put from one start or the other: nothing to compare")
        if not kept.all():
            recorded[name] = None      # the harness's mean left out its own stuck points, not these
        moved = float(np.mean(np.any(best["z0"] != plain["z0"], axis=1)))
        prior_is = prior_is_stderr = None
        if prior_k:                # a check that starts nowhere: a lower bound in expectation
            zero = np.zeros((len(x), config.nz))
            log_px, stderr = importance_sampled_log_px(vae, x, k=prior_k, proposal=(zero, zero), return_stderr=True,
                                                       rng=np.random.default_rng([config.eval_seed, PRIOR_IS_STREAM]))
            prior_is = float(np.mean(log_px[kept]))
            prior_is_stderr = float(np.sqrt(np.sum(stderr[kept] ** 2)) / kept.sum())
        out[name] = Starts(float(np.mean(by_plain[kept])), float(np.mean(by_best[kept])), moved, int(kept.sum()),
                           int((~kept).sum()), prior_is, prior_is_stderr)
    return out, config, model.samples, recorded


def main_body(argv):
    p = study_parser("marginal_starts", __doc__)
    p.add_argument("runs", nargs="*", help="run folders (trained with --metric=marginal)")
    p.add_argument("--points", type=int, default=0, help="the first this many train and test points (0: the run's eval_max)")
    p.add_argument("--prior_k", type=int, default=0,
                   help="also importance-sample log p(x) from the prior, this many samples per point (0: no)")
    p.add_argument("--overwrite", action="store_true", help="replace the results that --out already holds")
    args = p.parse_args(argv)
    require(args.points >= 0, f"--points must be >= 0, got {args.points}")
    require(args.prior_k >= 0, f"--prior_k must be >= 0, got {args.prior_k}")
    out = claim_out(args.out, OUTPUTS, args.overwrite)
    runs = list(args.runs)
    require(not (args.smoke and runs), "--smoke trains its own run: give no run folders")
    require(runs or args.smoke, "give at least one run folder (or --smoke)")
    # one BLAS thread for the smoke's tiny model, in-process callers (tests) too: see the top
    with blas.threads(1) if args.smoke else contextlib.nullcontext():
        if args.smoke:
            runs = [os.path.join(out, f"smoke_{algorithm}") for algorithm in ("aevb", "mcem")]
            try:
                configs = [TrainConfig(**SMOKE_RUN, algorithm=a, out=f, seed=args.seed) for f, a in zip(runs, ("aevb", "mcem"))]
                data = load_run_data(configs[0])            # one load for both runs and the table: 7 s each
                for config in configs:
                    train(config, data=data, overwrite=True, log=lambda *_: None)
            except (ConfigError, DataNotFoundError, ChecksumError) as e:
                raise UsageError(" ".join(str(e).split())) from None
        rows = table_rows(runs, args.points, data if args.smoke else None, args.prior_k)
    header = ["run", "training samples", "set", "points", "left out (stuck)", "plain start", "from the plain start",
              "from the best start", "best - plain", "starts moved", "history.csv"] + (
        [f"prior IS, k = {args.prior_k:,}"] if args.prior_k else [])
    write_text(os.path.join(out, "marginal_starts.md"), markdown_table(header, rows) + "\n")
    write_csv(os.path.join(out, "marginal_starts.csv"), header, rows)
    print(f"wrote {os.path.join(out, 'marginal_starts.md')}")
    return 0


def table_rows(runs, points, data=None, prior_k=0):
    for folder in runs:              # every folder checked before minutes of work on the first
        checked_run(folder)
    rows = []
    for folder in runs:
        results, config, samples, recorded = compare_starts(folder, points or None, data, prior_k)
        for name, r in results.items():
            rows.append([folder, f"{samples:,}", name, r.points, r.left_out, "z = 0" if config.algorithm == "mcem" else "mu(x)",
                         f"{r.plain:.2f}", f"{r.best:.2f}", f"{r.best - r.plain:+.2f}", f"{r.moved:.1%}",
                         f"{recorded[name]:.2f}" if recorded[name] is not None else "-"]
                        + ([f"{r.prior_is:.2f} ± {r.prior_is_stderr:.2f}"] if prior_k else []))
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    return rows


def main(argv=None):
    return run(main_body, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
