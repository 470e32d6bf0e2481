"""Where the App. D estimator's HMC chains start, and how much the estimate of log p(x) moves with it.

    python examples/marginal_starts.py runs/fig3/aevb_n1000 runs/fig3/wakesleep_n1000
    python examples/marginal_starts.py RUN --points=200      # the first 200 train and test points only
    python examples/marginal_starts.py --smoke               # trains a tiny run first: seconds

The Appendix D estimator (``npvae.marginal.hmc_log_px``: 50 HMC samples after 200 burn-in
transitions, a density fitted on half of them) only sees the posterior mode that its chain finds.
For each AEVB or wake-sleep run folder, on the points its harness evaluated (the first eval_max
training and test points, ``npvae.runs.evaluation_sets``), this estimates log p(x) twice, with
the harness's generator, so that only the starts differ:

  encoder mean   each chain starts at mu(x), as the harness's evaluation does: the value of the
                 run's history.csv at the checkpoint's budget (printed beside it, as a check);
  best start     each chain starts at the best (highest log p(x, z)) of mu(x), z = 0, 256 prior
                 draws and the encoder means of up to 2000 training points
                 (``npvae.learners.start_candidates``, ``npvae.marginal.best_starts``): the rule
                 that Monte Carlo EM's evaluation uses, with its chains in place of encoder means.

A higher estimate from the best start means that chains started at mu(x) burned in at a poorer
mode.  Writes --out/marginal_starts.md and .csv.
"""
import contextlib
import os
import sys

if __name__ == "__main__" and "--smoke" in sys.argv[1:]:
    # Set before NumPy loads BLAS (as figure4_5.py does): the smoke's tiny model gains nothing from
    # BLAS threads, and on a machine busy with other runs idle ones spin (6x slower, measured).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import UsageError, make_out, markdown_table, require, run, study_parser  # noqa: E402
from _study import write_csv, write_text  # noqa: E402

from npvae import blas  # noqa: E402
from npvae.config import ConfigError, TrainConfig  # noqa: E402
from npvae.data import ChecksumError, DataNotFoundError  # noqa: E402
from npvae.learners import start_candidate_rows, start_candidates  # noqa: E402
from npvae.marginal import best_starts, hmc_log_px  # noqa: E402
from npvae.runs import RunLoadError, evaluation_sets, load_run, load_run_data  # noqa: E402
from npvae.sweep import read_history  # noqa: E402
from npvae.train import first_n_training_points, train  # noqa: E402

SMOKE_RUN = dict(dataset="mnist", binarize="fixed", nz=2, hidden=(32,), samples=20_000, n_train=1000,
                 metric="marginal", eval_max=40, eval_per_decade=1, progress=False, figures=False)


def compare_starts(folder, points=None, data=None):
    """For the run in folder: ({set: (encoder-mean estimate, best-start estimate, fraction of starts
    moved off mu(x), points)}, its config, training samples, and history.csv's (train, test) at that
    budget or None).  data: the run's ``TrainingData`` (default: ``npvae.runs.load_run_data``)."""
    try:
        model = load_run(folder)
    except RunLoadError as e:
        raise UsageError(str(e)) from None
    vae, config = model.vae, model.config
    require(config.algorithm in ("aevb", "wakesleep"),
            f"{folder} is a {config.algorithm} run: MCEM has no encoder, and its evaluation already starts "
            f"at the best candidate")
    require(config.metric == "marginal",
            f"{folder} evaluated the bound (--metric={config.metric}): this compares App. D estimates, for runs "
            f"with --metric=marginal (Nz <= 4)")
    if data is None:
        try:
            data = load_run_data(config)
        except (DataNotFoundError, ChecksumError) as e:
            raise UsageError(" ".join(str(e).split())) from None
    sets = evaluation_sets(config, data)
    train_x = first_n_training_points(data, config.n_train).train_x
    train_x = train_x[start_candidate_rows(len(train_x))]              # only the rows that become candidates
    train_mu = vae.encode(train_x.astype(vae.dtype, copy=False))[0]
    candidates = start_candidates(np.asarray(train_mu, dtype=np.float64), config.eval_seed)
    history = [r for r in read_history(folder) if r[0] == model.samples]
    out, recorded = {}, {}
    for name, (x, _) in sets.items():
        # the harness's number, where this is the harness's computation (all of its points)
        whole = points is None or points >= len(x)
        recorded[name] = history[-1][2 + ("train", "test").index(name)] if history and whole else None
        x = x[:points] if points else x
        mu = vae.encode(x)[0]
        # the harness's generator and mean (npvae.train: default_rng([eval_seed, 3]); NaN left out)
        by_mean = hmc_log_px(vae, x, np.random.default_rng([config.eval_seed, 3]))
        z0 = best_starts(vae, x, candidates, own=mu)
        by_best = hmc_log_px(vae, x, np.random.default_rng([config.eval_seed, 3]), z0=z0)
        moved = float(np.mean(np.any(z0 != np.asarray(mu, dtype=np.float64), axis=1)))
        out[name] = (float(np.nanmean(by_mean.log_px)), float(np.nanmean(by_best.log_px)), moved, len(x))
    return out, config, model.samples, recorded


def main_body(argv):
    p = study_parser("marginal_starts", __doc__)
    p.add_argument("runs", nargs="*", help="run folders (AEVB or wake-sleep, trained with --metric=marginal)")
    p.add_argument("--points", type=int, default=0, help="the first this many train and test points (0: the run's eval_max)")
    args = p.parse_args(argv)
    require(args.points >= 0, f"--points must be >= 0, got {args.points}")
    out = make_out(args.out)
    runs = list(args.runs)
    require(not (args.smoke and runs), "--smoke trains its own run: give no run folders")
    require(runs or args.smoke, "give at least one run folder (or --smoke)")
    # one BLAS thread for the smoke's tiny model, in-process callers (tests) too: see the top
    with blas.threads(1) if args.smoke else contextlib.nullcontext():
        if args.smoke:
            runs = [os.path.join(out, "smoke_run")]
            try:
                train(TrainConfig(**SMOKE_RUN, out=runs[0], seed=args.seed), overwrite=True, log=lambda *_: None)
            except (ConfigError, DataNotFoundError, ChecksumError) as e:
                raise UsageError(" ".join(str(e).split())) from None
        rows = table_rows(runs, args.points)
    header = ["run", "training samples", "set", "points", "encoder-mean start", "best start", "best - mean",
              "starts moved", "history.csv"]
    write_text(os.path.join(out, "marginal_starts.md"), markdown_table(header, rows) + "\n")
    write_csv(os.path.join(out, "marginal_starts.csv"), header, rows)
    print(f"wrote {os.path.join(out, 'marginal_starts.md')}")
    return 0


def table_rows(runs, points):
    rows = []
    for folder in runs:
        results, config, samples, recorded = compare_starts(folder, points or None)
        for name, (by_mean, by_best, moved, n) in results.items():
            rows.append([folder, f"{samples:,}", name, n, f"{by_mean:.2f}", f"{by_best:.2f}",
                         f"{by_best - by_mean:+.2f}", f"{moved:.1%}",
                         f"{recorded[name]:.2f}" if recorded[name] is not None else "-"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    return rows


def main(argv=None):
    return run(main_body, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
