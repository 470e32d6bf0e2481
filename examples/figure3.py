"""Reproduce Figure 3: the marginal likelihood of AEVB, wake-sleep and Monte Carlo EM.

    python examples/figure3.py                       # MNIST, Nz = 3, 100 hidden, N train 1000 and 50000
    python examples/figure3.py --samples=1e7         # a smaller budget (re-run with more to extend)
    python examples/figure3.py --smoke               # the whole pipeline in a minute or so

Six runs (AEVB, wake-sleep, MCEM x 1,000 or 50,000 training images), each in its own folder under
--out (default runs/fig3): MNIST binarized once (--binarize=fixed: a fixed training set, so that
N = 1000 can overfit as in the paper, in MNIST's own order, so that the first 1000 test points are
a fair sample, which in Larochelle's static set they are not; --binarize=dynamic or none to try
others), Nz = 3,
100 hidden units, the paper's optimizer, float32.  At log-spaced budgets each run estimates
log p(x) on the first 1000 training and test points with the Appendix D estimator (HMC, 50
samples, 4 leapfrog steps, a KDE fitted per datapoint; ``npvae.marginal.hmc_log_px``), for
every algorithm alike, each chain started at the best (highest log p(x, z)) of z = 0, 256 prior
draws, the training points' z (encoder means, or MCEM's chains) and, for AEVB and wake-sleep, the
point's own encoder mean (--marginal_start=best; =own starts theirs at the encoder mean, which on
an overfit encoder can land a test point's chain in a poor mode: README, Figure 3).  MCEM (App. E) keeps one HMC chain per training image and runs
full-batch, as the authors' code did: each step is one HMC transition (10 leapfrog steps, step
sizes tuned to 90% acceptance) of every chain, then 5 Adagrad updates of the decoder on the whole
training set (--batch_size applies to AEVB and wake-sleep; see npvae.sweep.plan_figure3 for what
minibatch MCEM does at N = 50000).  Each run's Adagrad step size is the one the paper's rule
picks for it (npvae.sweep.FIG3_LR, measured with --lr_probe: 0.1 for AEVB and MCEM, 0.02 for
wake-sleep); --lr=X (or another --optimizer) sets every run's instead.

After every run, and with the progress lines (at most once a minute), the sweep redraws fig3.png
(one panel per training-set size, train solid, test dashed, the paper's end values marked) and
fig3_table.md / .csv (every cell at the budget its run has reached, beside the paper's value),
both for every training-set size and algorithm with a run folder in --out, not only this command's.
Re-running the command skips finished runs, resumes the others and extends them to a larger
--samples; Ctrl-C stops with checkpoints.

Sweep options: --n_train=1000,50000 --algorithms=aevb,wakesleep,mcem, and the executor's
and progress options (--jobs, --threads, --scheduler, --tls-*, --status_every, --status) as in
examples/figure2.py.  Any TrainConfig field (--dtype=float64, --seed=1, ...) passes through to every run.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import sweep  # noqa: E402
from npvae.config import TrainConfig, parse_overrides  # noqa: E402

DEFAULTS = dict(dataset="mnist", binarize="fixed", nz=3, hidden=(100,), samples=int(sweep.FIG3_PAPER_BUDGET), dtype="float32",
                metric="marginal", marginal_start="best", eval_max=1000, eval_per_decade=3, out="runs/fig3",
                figures=False)
SMOKE = dict(samples=3_000, batch_size=100, hidden=(20,), eval_max=20, eval_per_decade=1,
             checkpoint_seconds=5.0, out="runs/fig3_smoke")
SMOKE_N_TRAIN = (200, 1000)


def plan(argv):
    smoke, status, opts, rest, executor = sweep.parse_command(argv, ("--n_train", "--algorithms"))
    base = parse_overrides(rest, TrainConfig(**{**DEFAULTS, **(SMOKE if smoke else {})}))
    default_n = SMOKE_N_TRAIN if smoke else sweep.FIG3_N_TRAIN
    n_trains = sweep.int_list(opts.get("n_train", ",".join(map(str, default_n))), "--n_train")
    algorithms = sweep.algorithm_list(opts.get("algorithms", ",".join(sweep.FIG3_ALGORITHMS)),
                                      sweep.FIG3_ALGORITHMS)
    for n in n_trains:
        for alg in algorithms:
            TrainConfig(**{**base.__dict__, "n_train": n, "algorithm": alg}).validate()
    out = base.out
    # the measured step sizes are Adagrad's, and a step size the user gives is the user's
    given_lr = any(arg.split("=", 1)[0] == "--lr" for arg in rest)
    step_sizes = sweep.FIG3_LR if base.optimizer == "adagrad" and not given_lr else {}

    def redraw():      # the whole figure, not only these runs: what the folder holds at each redraw
        shown = sweep.algorithms_to_show(out, algorithms, sweep.FIG3_ALGORITHMS)
        return sweep.redraw_figure3(out, sweep.sizes_to_show(out, n_trains, shown, "n"), shown)

    return sweep.SweepCommand(
        out, f"Figure 3 sweep {out}: N train {','.join(map(str, n_trains))}, {base.samples:,} samples per run"
             + (" (MCEM full-batch)" if "mcem" in algorithms else ""),
        sweep.plan_figure3(base, out, n_trains, algorithms, step_sizes=step_sizes), redraw,
        os.path.join(out, "fig3.png"), executor, base.data_dir or None, status_only=status)


if __name__ == "__main__":
    sys.exit(sweep.command_main(sys.argv[1:], __doc__, "examples/figure3.py", plan))
