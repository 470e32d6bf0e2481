"""Figures 4 and 5 of the paper, drawn from trained runs: the learned 2-D manifolds and random samples.

    python examples/figure4_5.py                         # draw both figures from the default run folders
    python examples/figure4_5.py --train --samples=1e7   # first train (or resume) every run short of 1e7 samples
    python examples/figure4_5.py --smoke                 # tiny runs and both figures in seconds (CI)
    python examples/figure4_5.py --docs                  # also copy the two PNGs to docs/img/
    python examples/figure4_5.py --panels=4a,5c --docs   # only these panels, each to its own PNG

Fig. 4 (two panels, Frey Face left, MNIST right): models with Nz = 2.  A regular N x N grid on the
unit square (the cell centres (i + 1/2) / N) is mapped through the inverse Gaussian CDF
(scipy.stats.norm.ppf) to z, and each grid point is drawn as the decoder's mean: the sigmoid of the
logits for MNIST, the Gaussian mean for Frey Face (images 28 rows x 20 columns).  z1 grows to the
right, z2 upwards.  Fig. 5 (four panels): MNIST models with Nz = 2, 5, 10, 20, each drawn as the
decoder's mean at z ~ N(0, I), from one generator seeded with --seed.

The run folders (each can be replaced by another run of the same data set and Nz):

    --frey_nz2=DIR     runs/fig2_frey/aevb_nz2     Fig. 4 (a)   (a run of the Figure 2 sweep)
    --mnist_nz2=DIR    runs/fig45/mnist_nz2        Fig. 4 (b) and Fig. 5 (a)
    --mnist_nz5=DIR    runs/fig2_mnist/aevb_nz5    Fig. 5 (b)   (a run of the Figure 2 sweep)
    --mnist_nz10=DIR   runs/fig2_mnist/aevb_nz10   Fig. 5 (c)   (a run of the Figure 2 sweep)
    --mnist_nz20=DIR   runs/fig2_mnist/aevb_nz20   Fig. 5 (d)   (a run of the Figure 2 sweep)

Each panel's title gives the training samples that its run's checkpoint had reached (and says so
when the run has not finished): a run still training can be drawn at any time.  Without --train a
folder without a checkpoint is an error that names the command which trains it.

--train --samples=N trains, one after the other through the harness (npvae.sweep.run_spec, the
Figure 2 sweep's own runner), every run these figures need whose checkpoint is short of N
training samples: a folder with a checkpoint is resumed with its own configuration and the budget
N, a folder without one gets a new AEVB run in the Figure 2 sweep's protocol (examples/figure2.py
with --dtype=float32 --eval_per_decade=10, as docs/RUNS.md started it; 500 hidden units and step
0.01 for MNIST, 200 and 0.02 for Frey Face), so the sweep later resumes and extends it.  Each
run's log is train.log in its folder.

For each Fig. 4 panel it prints how much the manifold varies beside the data (manifold_spread):
the decoder means' per-pixel standard deviation over the grid against the training images', and
the spread of the encoder's means against the grid's range.

Outputs in --out (default runs/fig45; --smoke: runs/fig45_smoke, with its runs in it):
fig4_manifolds.png and fig5_samples.png.  Redrawing replaces these two files and no other; --docs
copies them to docs/img/fig4_manifolds.png and docs/img/fig5_samples.png, replacing those.

--panels=IDS draws only the panels named (4a, 4b, 5a, 5b, 5c, 5d: the figure and the panel's
letter), each to its own PNG (fig4a_frey_nz2.png, ..., fig5d_mnist_nz20.png), and needs only their
runs: a panel can be brought up to date as soon as its run has finished, without the others.  A
panel drawn alone is the panel the whole figure draws from the same run: Fig. 5's z come from one
generator in the order (a)-(d) whatever is drawn (fig5_latents).
"""
import argparse
import dataclasses
import os
import shutil
import sys
from typing import NamedTuple

if __name__ == "__main__" and "--smoke" in sys.argv[1:]:
    # Set before NumPy loads BLAS: the smoke's tiny models gain nothing from BLAS threads, and on a
    # machine busy with other runs idle BLAS threads spin (the smoke took 5x as long with two).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _study import StudyParser, UsageError, nonnegative_int, require, run  # noqa: E402
from npvae import paper, plots  # noqa: E402
from npvae.config import ConfigError, TrainConfig  # noqa: E402
from npvae.fileio import atomic_path  # noqa: E402
from npvae.data import ChecksumError, DataNotFoundError  # noqa: E402
from npvae.runs import RunLoadError, has_checkpoint, load_run, load_run_data, read_checkpoint_config  # noqa: E402

# name (its option, and its folder under --out in --smoke): (data set, Nz, default folder)
RUNS = {
    "frey_nz2": ("frey", 2, os.path.join("runs", "fig2_frey", "aevb_nz2")),
    "mnist_nz2": ("mnist", 2, os.path.join("runs", "fig45", "mnist_nz2")),
    "mnist_nz5": ("mnist", 5, os.path.join("runs", "fig2_mnist", "aevb_nz5")),
    "mnist_nz10": ("mnist", 10, os.path.join("runs", "fig2_mnist", "aevb_nz10")),
    "mnist_nz20": ("mnist", 20, os.path.join("runs", "fig2_mnist", "aevb_nz20")),
}
FIG4_RUNS = ("frey_nz2", "mnist_nz2")                          # the paper's order: Frey Face left
FIG5_RUNS = ("mnist_nz2", "mnist_nz5", "mnist_nz10", "mnist_nz20")
FIG4_PNG, FIG5_PNG = "fig4_manifolds.png", "fig5_samples.png"
# --panels: a panel's id (its figure and letter) -> the run it draws
PANELS = {f"4{letter}": name for letter, name in zip("ab", FIG4_RUNS)}
PANELS.update({f"5{letter}": name for letter, name in zip("abcd", FIG5_RUNS)})
DATA_NAMES = {"mnist": "MNIST", "frey": "Frey Face"}

# The Figure 2 sweep's step sizes (examples/figure2.py): a run started here in a sweep's folder must
# be the run the sweep would start, or the sweep refuses to resume it.
SWEEP_LR = {"mnist": 0.01, "frey": 0.02}
SMOKE_SAMPLES = 20_000
SMOKE_HIDDEN = {"mnist": 50, "frey": 20}                        # small, so five runs take seconds
SMOKE_OVERRIDES = dict(eval_max=1000, eval_per_decade=1, checkpoint_seconds=5.0)


class Panel(NamedTuple):
    z: np.ndarray             # (n, Nz): where the decoder was evaluated
    images: np.ndarray        # (n, D): the decoder's means at z, drawn as images
    image_shape: tuple        # (rows, cols) of one image
    n_cols: int
    title: str


# --------------------------------------------------------------------------- the figures

def budget_text(trained):
    """The budget a panel states: training samples of the checkpoint drawn, and whether the run finished."""
    text = f"{trained.samples:,} training samples"
    return text if trained.status == "finished" else text + " (run not finished)"


def _algorithm_text(trained):
    return "" if trained.config.algorithm == "aevb" else f", {trained.config.algorithm}"


def fig4_panel(letter, trained, grid=20):
    """One Fig. 4 panel: the decoder's mean on manifold_grid(grid) for a model with Nz = 2."""
    z, means = plots.manifold_means(trained.vae, grid)
    title = (f"({letter}) Learned {DATA_NAMES[trained.config.dataset]} manifold{_algorithm_text(trained)}\n"
             f"{budget_text(trained)}")
    return Panel(z, means, trained.image_shape, grid, title)


def fig4_panels(frey_run, mnist_run, grid=20):
    """Fig. 4: the decoder's mean on manifold_grid(grid) for the Frey Face and the MNIST model (Nz = 2)."""
    return [fig4_panel(letter, trained, grid) for letter, trained in zip("ab", (frey_run, mnist_run))]


def manifold_spread(trained, panel, data=None):
    """How much a Fig. 4 panel varies, beside what its model was fitted to:

    decoder_sd   the decoder means' standard deviation over the grid, per pixel, averaged over pixels;
    data_sd      the same over the training images (data.train_x: for MNIST the grey levels, which
                 a Bernoulli mean is compared with, not one binarization of them);
    encoder_sd   (Nz,) the standard deviation of the encoder's means mu(x) over the training images
                 as the model sees them (data.train_eval_x: binarized, for MNIST), per latent axis;
    in_grid      the fraction of those means inside the grid's square, whose centres span the
                 prior's 2.5-97.5% range on each axis (|z| <= norm.ppf(1 - 1/(2 grid))).

    data: the run's TrainingData (default: loaded as the run loaded it, ``npvae.runs.load_run_data``)."""
    if data is None:
        data = load_run_data(trained.config)
    mu, _ = trained.vae.encode(np.asarray(data.train_eval_x, dtype=trained.vae.dtype))
    mu = np.asarray(mu, dtype=np.float64)
    z = np.asarray(panel.z, dtype=np.float64)
    return {"decoder_sd": float(np.asarray(panel.images, dtype=np.float64).std(axis=0).mean()),
            "data_sd": float(np.asarray(data.train_x, dtype=np.float64).std(axis=0).mean()),
            "encoder_sd": mu.std(axis=0),
            "in_grid": float(np.all((mu >= z.min(axis=0)) & (mu <= z.max(axis=0)), axis=1).mean())}


def spread_line(label, trained, panel):
    """One printed line of manifold_spread for a Fig. 4 panel (or why it was not computed)."""
    try:
        s = manifold_spread(trained, panel)
    except (DataNotFoundError, ChecksumError) as e:
        return f"{label}: spread not computed ({' '.join(str(e).split())})"
    return (f"{label}: the decoder means vary over the grid by {s['decoder_sd']:.3f} per pixel (sd, averaged "
            f"over pixels), the training images by {s['data_sd']:.3f}; the encoder means of the training "
            f"images have sd {', '.join(f'{v:.2f}' for v in s['encoder_sd'])}, and {100 * s['in_grid']:.0f}% "
            f"of them lie inside the grid's square")


def fig5_latents(rng, side=10):
    """Fig. 5's z: side x side draws from N(0, I) for each panel (a)-(d), in that order from rng, so a
    panel's z do not depend on which panels are drawn (float64 draws, so a float32 run sees the same
    z as a float64 one)."""
    return [rng.standard_normal((side * side, RUNS[name][1])) for name in FIG5_RUNS]


def fig5_panel(letter, trained, z):
    """One Fig. 5 panel: the decoder's means at the rows of z, laid out in a square."""
    z = z.astype(trained.vae.dtype)
    side = int(round(np.sqrt(len(z))))
    title = f"({letter}) {trained.config.nz}-D latent space{_algorithm_text(trained)}\n{budget_text(trained)}"
    return Panel(z, plots.decoder_mean(trained.vae, z), trained.image_shape, side, title)


def fig5_panels(mnist_runs, rng, side=10):
    """Fig. 5: side x side decoder means at z ~ N(0, I) for the MNIST models with Nz = 2, 5, 10, 20
    (in that order), z from fig5_latents(rng, side)."""
    return [fig5_panel(letter, trained, z)
            for letter, trained, z in zip("abcd", mnist_runs, fig5_latents(rng, side))]


def draw(panels, path, panel_height):
    plots.plot_image_panels([(p.images, p.image_shape, p.n_cols, p.title) for p in panels], path, panel_height)


# --------------------------------------------------------------------------- runs

def run_config(name, folder, budget, smoke=False):
    """A new run for `name` in the Figure 2 sweep's protocol (tiny with smoke)."""
    dataset, nz, _ = RUNS[name]
    config = TrainConfig(algorithm="aevb", dataset=dataset, nz=nz, hidden=(paper.HIDDEN[dataset],),
                         lr=SWEEP_LR[dataset], dtype="float32", eval_per_decade=10, samples=budget, out=folder,
                         progress=False, figures=False)
    if smoke:
        config = dataclasses.replace(config, hidden=(SMOKE_HIDDEN[dataset],), **SMOKE_OVERRIDES)
    return config.validate()


def check_run(name, folder):
    """The (config, samples) of folder's checkpoint, checked to be the data set and Nz the panel needs;
    None when the folder holds no checkpoint."""
    if not has_checkpoint(folder):
        return None
    dataset, nz, _ = RUNS[name]
    try:
        config, samples = read_checkpoint_config(folder)
    except RunLoadError as e:
        raise UsageError(f"--{name}={folder}: {e}") from None
    require(config.dataset == dataset and config.nz == nz,
            f"--{name}={folder} holds a run on {DATA_NAMES.get(config.dataset, config.dataset)} with Nz = "
            f"{config.nz}; its panel needs one on {DATA_NAMES[dataset]} with Nz = {nz}")
    return config, samples


def plan(name, folder, budget, smoke):
    """A RunSpec for npvae.sweep.run_spec, or None when the checkpoint has reached the budget."""
    from npvae.sweep import RunSpec
    found = check_run(name, folder)
    if found is None:
        return RunSpec(name, dataclasses.asdict(run_config(name, folder, budget, smoke)), "new")
    saved, samples = found
    if samples >= budget:
        return None
    # resumed as it was started, with the new budget (a resume may change only run options)
    return RunSpec(name, dataclasses.asdict(dataclasses.replace(saved, samples=budget, out=folder, progress=False)),
                   "resume")


def train_runs(folders, budget, smoke):
    """Train every run short of the budget, one after the other; returns the failures' messages."""
    from npvae.sweep import run_spec
    specs = {name: plan(name, folder, budget, smoke) for name, folder in folders.items()}
    failures = []
    for name, spec in specs.items():
        folder = folders[name]
        if spec is None:
            print(f"{folder}: its checkpoint has reached {budget:,} training samples; not trained")
            continue
        print(f"{folder}: {'resuming' if spec.action == 'resume' else 'training a new run'} to {budget:,} "
              f"training samples (log: {os.path.join(folder, 'train.log')})", flush=True)
        result = run_spec(spec)
        if result["status"] != "finished":
            failures.append(f"{folder}: training {result['status']}: {result.get('reason') or 'see train.log'}")
    return failures


def train_command(name, folder):
    option = "" if folder == RUNS[name][2] else f" --{name}={folder}"
    return f"python examples/figure4_5.py --train --samples=N{option} (e.g. N = 1e7)"


# --------------------------------------------------------------------------- the command line

def positive_budget(text):
    """argparse type: a training budget such as 1e7 or 20000 -> an int > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of training samples such as 1e7, got {text!r}") from None
    if not (np.isfinite(value) and value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a positive whole number of training samples, got {text!r}")
    return int(value)


def panel_ids(text):
    """argparse type: --panels=4a,5c -> ("4a", "5c"), each a key of PANELS, in the figures' order."""
    ids = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in ids if t not in PANELS]
    if unknown or not ids:
        raise argparse.ArgumentTypeError(f"expected panels among {', '.join(PANELS)} (e.g. 4a,5c), got {text!r}")
    return tuple(t for t in PANELS if t in ids)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parser():
    p = StudyParser(prog="python examples/figure4_5.py", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder of the two PNGs (default runs/fig45; --smoke: "
                                               "runs/fig45_smoke); its two PNGs are replaced when redrawn")
    p.add_argument("--only", choices=("4", "5"), default=None, help="draw only Fig. 4 or only Fig. 5 "
                                                                    "(and need only its runs)")
    p.add_argument("--panels", type=panel_ids, default=None,
                   help="draw only these panels, each to its own PNG (see above): any of " + ", ".join(PANELS))
    p.add_argument("--grid", type=positive_int, default=20, help="Fig. 4: a grid x grid manifold (default 20)")
    p.add_argument("--sample_grid", type=positive_int, default=10,
                   help="Fig. 5: sample_grid x sample_grid samples per panel (default 10)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the generator of Fig. 5's z (default 0)")
    p.add_argument("--train", action="store_true", help="first train every run short of --samples (see above)")
    p.add_argument("--samples", type=positive_budget, default=None, help="--train's budget per run, e.g. 1e7")
    p.add_argument("--smoke", action="store_true",
                   help=f"train tiny runs ({SMOKE_SAMPLES:,} samples, small hidden layers) into --out and draw both "
                        f"figures (CI); runs already there are reused")
    p.add_argument("--docs", action="store_true", help="copy the PNGs to docs/img/ (replacing the copies there)")
    for name, (dataset, nz, default) in RUNS.items():
        p.add_argument(f"--{name}", default=None, metavar="DIR",
                       help=f"run folder of the {DATA_NAMES[dataset]} model with Nz = {nz} (default {default})")
    return p


def main_body(argv):
    args = parser().parse_args(argv)
    given = [name for name in RUNS if getattr(args, name) is not None]
    if args.smoke:
        if given:
            raise UsageError(f"--smoke trains its own runs under --out; it takes no run folder (--{given[0]})")
        require(args.samples is None and not args.train,
                f"--smoke trains {SMOKE_SAMPLES:,} samples per run; --train and --samples are for the real runs")
        require(not args.docs, "--docs copies the real figures to docs/img/; not the smoke ones")
    else:
        require(args.samples is None or args.train, "--samples is the budget of --train: add --train")
        require(args.samples is not None or not args.train,
                "--train needs a budget per run: --samples=N (e.g. --samples=1e7)")
    out = args.out or os.path.join("runs", "fig45_smoke" if args.smoke else "fig45")
    require(not os.path.exists(out) or os.path.isdir(out), f"--out {out} is a file, not a folder")

    require(args.panels is None or args.only is None, "--only and --panels both choose what is drawn: give one")
    # the panels drawn, by id, and the runs they need
    ids = args.panels or tuple(panel for panel in PANELS if args.only in (None, panel[0]))
    names = tuple(dict.fromkeys(PANELS[panel] for panel in ids))   # mnist_nz2 serves both figures: once
    if args.smoke:
        folders = {name: os.path.join(out, name) for name in names}
    else:
        folders = {name: getattr(args, name) or RUNS[name][2] for name in names}

    # every folder is checked before anything trains or is drawn
    for name, folder in folders.items():
        found = check_run(name, folder)
        require(found is not None or args.train or args.smoke,
                f"{folder} holds no trained run (no checkpoint.npz): train it with {train_command(name, folder)}")
    if args.train or args.smoke:
        failures = train_runs(folders, SMOKE_SAMPLES if args.smoke else args.samples, args.smoke)
        for message in failures:
            print(f"error: {message}", file=sys.stderr)
        if failures:
            return 1

    try:
        trained = {name: load_run(folder) for name, folder in folders.items()}
    except RunLoadError as e:
        raise UsageError(str(e)) from None
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    latents = dict(zip("abcd", fig5_latents(np.random.default_rng(args.seed), args.sample_grid)))
    panels = {panel: (fig4_panel(panel[1], trained[PANELS[panel]], args.grid) if panel[0] == "4" else
                      fig5_panel(panel[1], trained[PANELS[panel]], latents[panel[1]])) for panel in ids}
    height = {"4": 6.5, "5": 3.6}
    written = []
    if args.panels is not None:
        for panel in ids:
            written.append(os.path.join(out, f"fig{panel}_{PANELS[panel]}.png"))
            draw([panels[panel]], written[-1], panel_height=height[panel[0]])
    else:
        for figure, png in (("4", FIG4_PNG), ("5", FIG5_PNG)):
            if args.only in (None, figure):
                written.append(os.path.join(out, png))
                draw([panels[panel] for panel in ids if panel[0] == figure], written[-1], height[figure])
    spreads = [spread_line(f"Fig. 4 ({panel[1]}) {DATA_NAMES[trained[PANELS[panel]].config.dataset]}",
                           trained[PANELS[panel]], panels[panel]) for panel in ids if panel[0] == "4"]

    print("| panel | run | data, Nz | training samples | status |")
    print("| --- | --- | --- | ---: | --- |")
    rows = [(f"Fig. {panel[0]} ({panel[1]})", PANELS[panel]) for panel in ids]
    for panel, name in rows:
        t = trained[name]
        print(f"| {panel} | {t.folder} | {DATA_NAMES[t.config.dataset]}, {t.config.nz} | {t.samples:,} | {t.status} |")
    for line in spreads:
        print(line)
    for path in written:
        print(f"figure: {path}")
        if args.docs:
            target = os.path.join(ROOT, "docs", "img", os.path.basename(path))
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
            print(f"copied to {os.path.normpath(target)}")
    return 0


def main(argv=None):
    try:
        return run(main_body, sys.argv[1:] if argv is None else argv)
    except ConfigError as e:             # a run's config that the harness refuses
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
