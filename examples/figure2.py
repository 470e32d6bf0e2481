"""Reproduce Figure 2: AEVB against wake-sleep over latent sizes, on MNIST or Frey Face.

    python examples/figure2.py --dataset=mnist --nz=3,5,10,20,200 --samples=1e8
    python examples/figure2.py --dataset=frey --nz=2,5,10,20 --samples=1e8
    python examples/figure2.py --dataset=mnist --smoke                 # the whole pipeline in seconds
    python examples/figure2.py --dataset=mnist --scheduler=tcp://10.0.0.5:8786   # on a Dask cluster
    python examples/figure2.py --dataset=mnist --status       # where the runs stand; trains nothing

Each (algorithm, Nz) run lives in its own folder under --out (default runs/fig2_<dataset>):
500 hidden units for MNIST, 200 for Frey Face, everything else the paper's protocol (§5).
Re-running the command skips finished runs, resumes unfinished ones and extends runs to a larger
--samples.  After every run the sweep redraws fig2.png (one panel per Nz, train solid, test
dashed, the paper's end values marked) and fig2_table.md / .csv (every cell at the budget its
run has reached, beside the paper's value, failures with their reason).  Both show every Nz and
algorithm with a run folder in --out, not only this command's, so sweeps of one Nz each into one
folder draw one whole figure.

Local runs go to a process pool: --jobs=N workers with --threads BLAS threads each (default: all
cores split over the jobs).  With --scheduler the runs go to an existing Dask cluster
(pip install -e ".[dask]"); a run is an ordinary function of its config, so a worker needs only
npvae and the data (--data_dir as the workers see it).  A Dask scheduler runs whatever code it is
sent: keep it on a trusted network, or use TLS (--tls-ca-file, --tls-cert, --tls-key).
While runs train, the sweep prints a line per running run every --status_every seconds (default
600; 0: none): samples trained of the budget, the rate, the time left; with each such line (at
most once a minute) it redraws the figure and the table too.
Any TrainConfig field (--dtype=float32, --binarize=static, --seed=1, ...) passes through to every run.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import sweep  # noqa: E402
from npvae.config import ConfigError, TrainConfig, parse_overrides  # noqa: E402

SMOKE = dict(samples=20_000, eval_max=1000, checkpoint_seconds=5.0, figures=False)


def plan(argv):
    smoke, status, opts, rest, executor = sweep.parse_command(argv, ("--nz", "--algorithms"))
    dataset = next((a.partition("=")[2] for a in rest if a.startswith("--dataset=")), "mnist")
    if dataset not in sweep.FIG2_NZ:
        raise ConfigError(f"--dataset must be mnist or frey; got {dataset!r}")
    defaults = sweep.fig2_base(dataset, **(dict(SMOKE, out=f"runs/fig2_{dataset}_smoke") if smoke else {}))
    base = parse_overrides(rest, defaults)
    default_nz = (3, 10) if smoke and dataset == "mnist" else (2, 5) if smoke else sweep.FIG2_NZ[dataset]
    nzs = sweep.int_list(opts.get("nz", ",".join(map(str, default_nz))), "--nz")
    algorithms = sweep.algorithm_list(opts.get("algorithms", ",".join(sweep.ALGORITHMS)), sweep.ALGORITHMS)
    for nz in nzs:
        TrainConfig(**{**base.__dict__, "nz": nz}).validate()
    out = base.out

    def redraw():
        # the whole figure, not only these runs: what the folder holds now, not when the sweep began
        # (another sweep into the same folder may have started a run since)
        shown = sweep.algorithms_to_show(out, algorithms, sweep.ALGORITHMS)
        return sweep.redraw(out, base.dataset, sweep.nzs_to_show(out, nzs, shown), shown)

    return sweep.SweepCommand(
        out, f"sweep {out}: {base.dataset}, Nz {','.join(map(str, nzs))}, {base.samples:,} samples per run",
        sweep.plan_sweep(base, out, nzs, algorithms), redraw,
        os.path.join(out, "fig2.png"), executor, base.data_dir or None, status_only=status)


if __name__ == "__main__":
    sys.exit(sweep.command_main(sys.argv[1:], __doc__, "examples/figure2.py", plan))
