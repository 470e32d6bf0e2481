"""Shared plumbing of the studies (examples/gradient_variance.py, gradcheck_study.py,
reparam_by_hand.py, bug_zoo.py, kl_weight.py, likelihoods.py, appendix_d_accuracy.py): the command
line, atomic output files, tables, image grids, loading a run, and training runs through the one
harness (with their options and budget).

Nothing here computes a gradient; the studies' own logic lives in the scripts, as importable
functions, so that tests/test_studies.py can call it.
"""
import argparse
import csv
import io
import os
import sys

import numpy as np

from npvae.config import quiet_broken_pipe
from npvae.fileio import atomic_path


class UsageError(ValueError):
    """A bad argument value: reported as one `error: ...` line and exit code 2, no traceback."""


class StudyFailed(RuntimeError):
    """A study that could not finish (e.g. a training run diverged): `error: ...` and exit code 1."""


class StudyParser(argparse.ArgumentParser):
    """argparse with the project's error format: `error: ...` on stderr, exit code 2."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def study_parser(name, doc):
    """The options every study has: --smoke, --seed, --out (default runs/studies/<name>)."""
    p = StudyParser(prog=f"python examples/{name}.py", description=doc.strip().splitlines()[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="a few seconds: small model, few samples (CI)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the one numpy.random.Generator of the run")
    p.add_argument("--out", default=os.path.join("runs", "studies", name), help="output folder")
    return p


@quiet_broken_pipe
def run(main_body, argv):
    """Call main_body(argv); a UsageError becomes `error: ...` on stderr and exit code 2."""
    try:
        return main_body(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StudyFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def require(condition, message):
    if not condition:
        raise UsageError(message)


def nonnegative_int(text):
    """argparse type: an int >= 0 (what numpy.random.default_rng accepts as a seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def positive_int_list(text):
    """argparse type: '1,10,100' -> (1, 10, 100), every entry a positive int."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


# --------------------------------------------------------------------------- output files

def make_out(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot create the folder ({e.strerror})") from None
    return path


def claim_out(path, names, overwrite):
    """make_out for a study whose results (names: files and folders it writes into path) took
    training runs to make: a folder that already holds any of them is refused, unless overwrite."""
    held = [n for n in names if os.path.exists(os.path.join(path, n))]
    require(not held or overwrite, f"--out {path} already holds this study's results ({', '.join(held)}): "
                                   f"pass --overwrite to replace them, or choose another --out")
    return make_out(path)


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_csv(path, header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_text(path, buf.getvalue())


def save_figure(fig, path, dpi=100):
    """PNG through a temporary file, so an interrupted run never leaves half a figure."""
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported only when a figure is drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def markdown_table(header, rows):
    """A GitHub markdown table; numbers are written as given (format them first).  A "|" inside a
    cell (|f|, p(x|z)) is escaped, so that it does not start a new column."""
    def cell(c):
        return str(c).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- data and runs

def synthetic_binary(rng, n, x_dim, n_prototypes=4, flip=0.05):
    """n binary vectors (n, x_dim): noisy copies of a few random prototypes (a stand-in for MNIST).

    Structured enough that a VAE has something to learn, and needs no data files.
    """
    prototypes = rng.random((n_prototypes, x_dim)) < 0.5
    which = rng.integers(0, n_prototypes, size=n)
    flips = rng.random((n, x_dim)) < flip
    return (prototypes[which] ^ flips).astype(np.float64)


def load_run(run_dir, dtype=np.float64):
    """The model of a training run, read by ``npvae.runs.load_run`` from DIR/checkpoint.npz or from
    one of its checkpoint files (a snapshot, DIR/snapshots/checkpoint_*.npz): its parameters and the
    run's config.  Returns (VAE in dtype, the run's config as a dict: ``dataclasses.asdict`` of its
    TrainConfig, e.g. "nz", "hidden", "dataset", "activation", "decoder", "decoder_var").  A path
    without a readable run is a UsageError (one line)."""
    import dataclasses

    from npvae.runs import RunLoadError, load_run as load_trained_run

    require(os.path.exists(run_dir), f"--checkpoint {run_dir}: no such folder or file")
    try:
        trained = load_trained_run(run_dir, dtype=dtype)
    except RunLoadError as e:
        raise UsageError(f"--checkpoint {run_dir}: {' '.join(str(e).split())}") from None
    return trained.vae, dataclasses.asdict(trained.config)


def tile(images, n_cols):
    """(n, h, w) images -> one (rows*h, n_cols*w) canvas with 1-pixel white gaps (``npvae.plots.tile``)."""
    from npvae.plots import tile as plots_tile
    return plots_tile(images, n_cols)


ACTIVE_THRESHOLD = 0.01      # Burda et al. (2015): unit j is active when Cov_x(E_q[z_j]) > 0.01


def active_units(mu, threshold=ACTIVE_THRESHOLD):
    """(count, Var_x(mu_j) per dimension) for encoder means mu: (n, Z).  The variance over the data
    of E_q[z_j] = mu_j(x) is Burda et al.'s Cov_x(E_q[z_j]) (its diagonal)."""
    var = np.asarray(mu, dtype=np.float64).var(axis=0)
    return int((var > threshold).sum()), var


# The training budget of a study that trains its own runs (kl_weight.py, likelihoods.py): the
# paper's MNIST models see 1e6 samples per run; --smoke runs are a few seconds.
SAMPLES, SMOKE_SAMPLES, MIN_SAMPLES = 1_000_000, 6000, 1000


def add_run_options(p):
    """Add --dtype and --overwrite, the options of a study that trains its own runs (train_runs),
    to the parser p; returns p.  Call it after the study's own options: --help lists them in order."""
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="training precision")
    p.add_argument("--overwrite", action="store_true", help="replace the results that --out already holds")
    return p


def training_samples(args):
    """The training samples per run (an int): args.samples, or by default SAMPLES (SMOKE_SAMPLES
    with --smoke).  Fewer than MIN_SAMPLES is a UsageError."""
    samples = args.samples if args.samples is not None else (SMOKE_SAMPLES if args.smoke else SAMPLES)
    require(samples >= MIN_SAMPLES, f"--samples must be at least {MIN_SAMPLES}, got {samples}")
    return samples


def train_runs(configs, data, overwrite=False):
    """Train each TrainConfig with the one harness, npvae.train.train, on the already loaded data.

    configs: {name: TrainConfig}; each run goes to its config.out.  Returns {name: summary}.  A run
    stopped by Ctrl-C (the harness writes its checkpoint) ends the study with a UsageError."""
    from npvae.config import ConfigError
    from npvae.train import TrainingDiverged, train

    summaries = {}
    for name, config in configs.items():
        print(f"training {name} for {config.samples:,} samples (npvae.train.train) into {config.out} ...", flush=True)
        try:
            summary = train(config, data=data, overwrite=overwrite, log=lambda m: print("  " + m, flush=True))
        except ConfigError as e:              # e.g. a run folder that already holds a run
            raise UsageError(f"run {name}: {e}") from None
        except TrainingDiverged as e:
            raise StudyFailed(f"run {name}: {' '.join(str(e).split())}") from None
        if summary["status"] != "finished":
            raise StudyFailed(f"run {name} stopped at {summary['samples']:,} samples ({summary['status']}); "
                             f"its checkpoint is in {config.out}")
        print(f"  {summary['samples']:,} samples in {summary['seconds']:.1f} s of training; bound on the "
              f"evaluated sets: train {summary['train_elbo']:.2f}, test {summary['test_elbo']:.2f}", flush=True)
        summaries[name] = summary
    return summaries


def fmt(x, spec=".3g"):
    """A number for a table; NaN as an em dash."""
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)
