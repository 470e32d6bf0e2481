"""The Figure 2 sweep: AEVB and wake-sleep over latent sizes, each run in its own folder.

    plan_sweep(...)   -> RunSpecs: which runs to skip (finished at the budget), resume or start
    run_spec(spec)    -> a result dict; an ordinary function of its spec, so a process pool or a
                         Dask worker needs nothing but npvae and the data to run it
    run_sweep(...)    -> sends the runs to an executor, redraws the figure and the table each
                         time a run ends (and every few minutes while runs train), and reports
                         failures without stopping the other runs
    collect(...)      -> every cell at the budget its run has reached, beside the paper's value

Re-running a sweep skips finished runs, resumes unfinished ones from their checkpoints (a worker
that died leaves one) and extends runs to a larger budget.  Each run keeps its own lock, so two
sweeps never train the same run at once.
"""
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

from . import paper
from .config import ConfigError, TrainConfig, quiet_broken_pipe
from .fileio import atomic_path, waiting_lock
from .train import StopFlag

ALGORITHMS = ("aevb", "wakesleep")
FIG2_NZ = {"mnist": (3, 5, 10, 20, 200), "frey": (2, 5, 10, 20)}
# The most informative cells first (issue 12): MNIST Nz = 20 and 3, Frey Face Nz = 5.
PRIORITY = {"mnist": (20, 3, 5, 10, 200), "frey": (5, 2, 10, 20)}


def fig2_base(dataset, **overrides):
    """The Figure 2 runs' protocol for a dataset (§5): 500 hidden units for MNIST, 200 for Frey Face,
    the step size the paper's rule picked here (0.01, 0.02), 1e8 samples; everything else TrainConfig's."""
    return TrainConfig(**{"dataset": dataset, "hidden": (paper.HIDDEN[dataset],), "samples": 100_000_000,
                          "lr": 0.01 if dataset == "mnist" else 0.02, "out": f"runs/fig2_{dataset}", "figures": False,
                          **overrides})


@dataclass(frozen=True)
class RunSpec:
    name: str                 # the run's folder name under the sweep's folder, e.g. "aevb_nz20"
    config: dict              # a TrainConfig as a dict (plain data, so it pickles to any worker)
    action: str               # "new", "resume" or "skip"


def run_name(algorithm, nz):
    return f"{algorithm}_nz{nz}"


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def plan_runs(configs, budget=None):
    """RunSpecs for named run configs (in the order given): skip a run finished at the budget,
    resume one with a checkpoint, start the others.  configs: {name: TrainConfig} (out set)."""
    specs = []
    for name, config in configs.items():
        budget_ = budget or config.samples
        config = dataclasses.replace(config, samples=budget_, progress=False)
        summary = _read_json(os.path.join(config.out, "summary.json"))
        if (summary and summary.get("status") == "finished" and summary.get("samples", 0) >= budget_
                and not differences(config)):
            action = "skip"
        elif os.path.exists(os.path.join(config.out, "checkpoint.npz")):
            action = "resume"
        else:
            action = "new"
        specs.append(RunSpec(name, dataclasses.asdict(config), action))
    return specs


def differences(config, saved=None):
    """The fields in which the run in config.out is another experiment than config (say, another
    step size); empty when it is the same one or there is no checkpoint.  plan_runs plans such a run
    as a resume, which reports the difference as the run's failure, so that a finished run of
    another configuration is never taken for this sweep's.  saved: the run's checkpoint config, if
    the caller has read it already."""
    from .runs import RunLoadError, read_checkpoint_config
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if saved is None:
        if not os.path.exists(os.path.join(config.out, "checkpoint.npz")):
            return []
        try:
            saved, _ = read_checkpoint_config(config.out)
        except RunLoadError:
            return ["its checkpoint (unreadable)"]
    changed = list(saved.changes_a_resume_may_not_make(config))
    if config.lr_probe and saved.lr_probe_results:      # the probe's pick, made when the run started
        changed = [name for name in changed if name not in ("lr", "lr_probe", "lr_probe_results")]
    return changed


def plan_sweep(base, out, nzs, algorithms=ALGORITHMS, budget=None):
    """The runs of a Figure 2 sweep in the order they should go (the most informative first).

    base: a TrainConfig with everything but algorithm, nz, out (and samples = the budget)."""
    order = [nz for nz in PRIORITY.get(base.dataset, ()) if nz in nzs] + [nz for nz in nzs
                                                                          if nz not in PRIORITY.get(base.dataset, ())]
    return plan_runs({run_name(alg, nz): dataclasses.replace(base, algorithm=alg, nz=nz,
                                                             out=os.path.join(out, run_name(alg, nz)))
                      for nz in order for alg in algorithms}, budget)


def run_spec(spec, data_dir=None):
    """Run (or resume) one run of a sweep; never raises for a run's own failure.

    Returns {"name", "status": finished | interrupted | failed | skipped, "reason", "samples",
    "seconds"}.  The run's log goes to train.log in its folder."""
    from .data import ChecksumError, DataNotFoundError
    from .train import RunFolderError, TrainingDiverged, checkpoint_config, no_data_message, train
    if spec.action == "skip":
        return {"name": spec.name, "status": "skipped", "reason": "finished at the budget"}
    config = TrainConfig.from_dict(spec.config)
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    t0, created = time.time(), False
    try:
        resume = spec.action == "resume"
        if not resume and os.path.exists(os.path.join(config.out, "checkpoint.npz")):
            # planned as new, but a run has appeared there since (another sweep, or two of this
            # sweep's runs sharing a folder): never overwrite it
            raise RunFolderError(f"a run appeared in {config.out} after this sweep was planned; "
                                 f"run the same command again to resume it")
        if resume:     # the run's own config, with this sweep's budget (a resume may only extend it)
            saved = checkpoint_config(os.path.join(config.out, "checkpoint.npz"))
            changed = differences(config, saved)
            if changed:
                raise RunFolderError(f"the run in {config.out} differs from this sweep in {', '.join(changed)}")
            # --snapshots on the sweep's command line turns them on for a resumed run too (never off)
            config = dataclasses.replace(saved, samples=config.samples, out=config.out, progress=False,
                                         data_dir=config.data_dir, snapshots=saved.snapshots or config.snapshots)
        created = not os.path.exists(config.out)
        os.makedirs(config.out, exist_ok=True)
        log_path = os.path.join(config.out, "train.log")
        with open(log_path, "a") as log_file:
            def log(message):
                log_file.write(message + "\n")
                log_file.flush()
            # "new" means no checkpoint: whatever a run that never checkpointed left is not resumable
            summary = train(config, resume=resume, log=log, overwrite=not resume)
        return {"name": spec.name, "status": summary["status"], "reason": "", "samples": summary["samples"],
                "seconds": round(time.time() - t0, 1)}
    except DataNotFoundError:                   # a worker without the data: say so in one line
        if created:
            _remove_if_untouched(config.out)
        return {"name": spec.name, "status": "failed", "reason": no_data_message(config),
                "seconds": round(time.time() - t0, 1)}
    except (TrainingDiverged, ConfigError, ChecksumError) as e:
        return {"name": spec.name, "status": "failed", "reason": " ".join(str(e).split()),
                "seconds": round(time.time() - t0, 1)}
    except Exception as e:                              # a bug or a broken environment: keep the trace
        return {"name": spec.name, "status": "failed", "reason": f"{type(e).__name__}: {e}",
                "trace": traceback.format_exc(), "seconds": round(time.time() - t0, 1)}


def _remove_if_untouched(folder):
    """Remove a run folder that run_spec created and nothing wrote into (an empty train.log only),
    so that a run which never started leaves nothing behind."""
    path = os.path.join(folder, "train.log")
    if os.listdir(folder) == ["train.log"] and os.path.getsize(path) == 0:
        os.remove(path)
        os.rmdir(folder)


# --------------------------------------------------------------------------- where the sweep stands

def read_history(folder):
    """A run's history.csv as rows (samples, seconds, train, test), whatever its metric (elbo, log_px)."""
    rows = []
    try:
        with open(os.path.join(folder, "history.csv")) as f:
            reader = csv.reader(f)
            header = next(reader, [])
            if len(header) < 4 or header[:2] != ["samples", "seconds"] or not header[2].startswith("train_"):
                return rows
            for r in reader:
                rows.append(tuple(float(v) for v in r[:4]))
    except (OSError, ValueError, KeyError):
        pass
    return rows


def trained_samples(folder):
    """The training samples of a run's last checkpoint (0: none yet, or unreadable)."""
    from .runs import RunLoadError, read_checkpoint_config
    try:
        return read_checkpoint_config(folder)[1]
    except RunLoadError:
        return 0


def _cell(folder, name, failures):
    """Where one run stands: its history, the last evaluation, the samples trained so far (its
    checkpoint's: a run evaluates at log-spaced budgets, so it trains well past its last row), and
    its status."""
    history = read_history(folder)
    summary = _read_json(os.path.join(folder, "summary.json")) or {}
    config = _read_json(os.path.join(folder, "config.json")) or {}
    last = history[-1] if history else None
    status = failures.get(name) and f"failed: {failures[name]}" or summary.get("status") or (
        "running" if os.path.exists(os.path.join(folder, "checkpoint.npz")) else "not started")
    return {"budget": config.get("samples"), "samples_reached": int(last[0]) if last else 0,
            "trained": trained_samples(folder),
            "train": round(last[2], 2) if last else None, "test": round(last[3], 2) if last else None,
            "gap": round(last[2] - last[3], 2) if last else None, "status": status, "history": history}


def _beside_paper(cell, value):
    """A cell (``_cell``'s dict) with the paper's (train, test) beside it: the paper_* columns, and
    how far the cell's end values are from the paper's (None where either is missing)."""
    paper_train, paper_test = value or (None, None)

    def minus(a, b):
        return None if a is None or b is None else round(a - b, 2)
    return {**cell, "paper_train": paper_train, "paper_test": paper_test, "paper_gap": minus(paper_train, paper_test),
            "train_vs_paper": minus(cell["train"], paper_train), "test_vs_paper": minus(cell["test"], paper_test)}


def collect(out, dataset, nzs, algorithms=ALGORITHMS, failures=None):
    """One row per cell: the bound at the budget its run reached (or why there is none)."""
    failures = failures if failures is not None else (_read_json(os.path.join(out, "failures.json")) or {})
    rows = []
    for nz in nzs:
        for alg in algorithms:
            name = run_name(alg, nz)
            value = paper.fig2_value(alg, dataset, nz)
            rows.append({"dataset": dataset, "nz": nz, "algorithm": alg,
                         **_beside_paper(_cell(os.path.join(out, name), name, failures), value)})
    return rows


# "train - test": the gap issue 12 asks for beside the paper's (about 3 nats on MNIST); "train - paper"
# and "test - paper": how far each cell is from the paper's end value (its targets: within 2 nats on MNIST)
FIG2_COLUMNS = (("dataset", "data", ""), ("nz", "Nz", ":"), ("algorithm", "algorithm", ""),
                ("samples_reached", "evaluated at", ":"), ("train", "train", ":"), ("test", "test", ":"),
                ("gap", "train - test", ":"), ("paper_train", "paper train", ":"), ("paper_test", "paper test", ":"),
                ("paper_gap", "paper gap", ":"), ("train_vs_paper", "train - paper", ":"),
                ("test_vs_paper", "test - paper", ":"), ("trained", "trained", ":"), ("status", "status", ""))


def write_table(rows, out, name="fig2_table", columns=FIG2_COLUMNS):
    """<name>.md and <name>.csv in out: every cell at the budget its run reached.
    columns: (row key, markdown header, "" or ":" for right-aligned)."""
    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, name + ".csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[c[0] for c in columns], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def cell(v):
        return "" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else \
            f"{v:g}" if isinstance(v, float) else " ".join(str(v).split()).replace("|", "\\|")   # one table row
    lines = ["| " + " | ".join(c[1] for c in columns) + " |",
             "| " + " | ".join("---:" if c[2] else "---" for c in columns) + " |"]
    lines += ["| " + " | ".join(cell(r[c[0]]) for c in columns) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    with atomic_path(os.path.join(out, name + ".md")) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return text


def _legend_of_every_panel(panels, fig):
    """One legend, below the panels, with every curve of every panel: a panel may lack an algorithm
    that others have (a run not started yet), and the legend must still name it; below them, it
    hides no curve.  The paper's marker last.  Returns the legend."""
    handles = {}
    for ax in panels:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    labels = sorted(handles, key=lambda label: label.startswith("paper"))       # stable: curves in order
    # two rows, filled column by column: each curve's train and test stand one above the other
    return fig.legend([handles[k] for k in labels], labels, fontsize=7, loc="lower center",
                      ncol=max(1, -(-len(labels) // 2)), frameon=False)


def draw_panels(rows, path, panel_key, panel_title, ylabel, curve_key="algorithm", paper_budget=1e8,
                panel_size=(3.2, 3.4), zoom_from=None):
    """The layout every sweep's figure shares: one panel per value of ``panel_key`` (Nz, N train),
    one colour per value of ``curve_key`` (the algorithm, the binarization), train solid and test
    dashed, the paper's end values marked at the right edge, one legend for every panel.

    rows: ``collect``'s cells; a cell's paper marker takes its ``mark_as`` colour if it has one
    (a figure whose curves share one paper value), else its curve's.  panel_title: key -> title.
    zoom_from: right of each panel, the same curves from this many samples on, the y axis fitted to
    them (where curves a nat or two apart end, which a panel from 10^5 squeezes together); drawn
    once one of the panel's curves has passed twice zoom_from."""
    from . import plots
    import matplotlib.pyplot as plt
    keys = sorted({r[panel_key] for r in rows})
    def zoomed(key):
        return zoom_from is not None and any(r["history"] and r["history"][-1][0] >= 2 * zoom_from
                                             for r in rows if r[panel_key] == key)
    views = [view for key in keys for view in [(key, None)] + ([(key, zoom_from)] if zoomed(key) else [])]
    fig, axes = plt.subplots(1, len(views), figsize=(panel_size[0] * len(views), panel_size[1]), squeeze=False)
    for ax, (key, start) in zip(axes[0], views):
        cells = [r for r in rows if r[panel_key] == key]
        curves = {r[curve_key]: r["history"] for r in cells if r["history"]}
        marks = {r.get("mark_as", r[curve_key]): (r["paper_train"], r["paper_test"])
                 for r in cells if r["paper_train"] is not None}
        title = panel_title(key) if start is None else f"the same, from {_samples_label(start)} samples on"
        left = plots.draw_fig2_panel(ax, curves, marks, title, paper_budget=paper_budget)
        if start is not None:
            left = start
            ax.set_xlim(left, ax.get_xlim()[1])
        plots.fit_y(ax, curves, marks, left)
    axes[0][0].set_ylabel(ylabel)
    legend = _legend_of_every_panel(axes[0], fig)
    below = 0.05 + 0.17 * min(2, len(legend.get_texts()))                      # inches: the legend's rows
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + below)                                   # the panels keep their size
    fig.tight_layout(rect=(0, below / (height + below), 1, 1))
    plots._save(fig, path)


def _samples_label(n):
    """A number of samples for a title: a power of ten as 10 to its power, any other with commas."""
    power = math.log10(n)
    return f"$10^{{{power:.0f}}}$" if power == round(power) else f"{n:,.0f}"


def draw_figure(rows, path, dataset):
    """Figure 2's layout: one panel per Nz, AEVB and wake-sleep, train solid and test dashed."""
    name = "MNIST" if dataset == "mnist" else "Frey Face"
    draw_panels(rows, path, "nz", lambda nz: f"{name}, $N_z$ = {nz}", "average lower bound per datapoint")


def algorithms_to_show(out, requested, every):
    """The algorithms a sweep's table and figure show: those it runs, and any other of the figure's
    (``every``) that already has a run folder in out, so that a sweep of some algorithms (say
    --algorithms=mcem) redraws the whole figure rather than only its own curves."""
    present = set()
    if os.path.isdir(out):
        present = {name.split("_")[0] for name in os.listdir(out) if os.path.isdir(os.path.join(out, name))}
    return tuple(a for a in every if a in requested or a in present)


def sizes_to_show(out, requested, algorithms=ALGORITHMS, infix="nz"):
    """The sizes a sweep's table and figure show (Figure 2's Nz, infix "nz" as run_name names its
    folders; Figure 3's N train, infix "n" as fig3_name does): those it runs, and any other with a run
    folder of these algorithms in out, in increasing order.  So a sweep of one size (say two sweeps,
    --nz=10 and --nz=200, each on a core of its own, into one folder) redraws the whole figure, and the
    sweeps redraw the same one rather than each its own panel."""
    pattern = re.compile(rf"({'|'.join(map(re.escape, algorithms))})_{infix}([1-9][0-9]*)")
    present = set()
    if os.path.isdir(out):
        present = {int(m.group(2)) for m in map(pattern.fullmatch, os.listdir(out))
                   if m and os.path.isdir(os.path.join(out, m.group(0)))}
    return tuple(sorted(set(requested) | present))


def nzs_to_show(out, requested, algorithms=ALGORITHMS):
    """Figure 2's latent sizes to show (sizes_to_show)."""
    return sizes_to_show(out, requested, algorithms, "nz")


def redraw(out, dataset, nzs, algorithms=ALGORITHMS):
    """The Figure 2 table (markdown, CSV) and figure from whatever the runs have written so far."""
    rows = collect(out, dataset, nzs, algorithms)
    text = write_table(rows, out)
    draw_figure(rows, os.path.join(out, "fig2.png"), dataset)
    return rows, text


# --------------------------------------------------------------------------- Figure 3

FIG3_ALGORITHMS = ("aevb", "wakesleep", "mcem")
FIG3_N_TRAIN = (1000, 50000)
FIG3_PAPER_BUDGET = 6e7            # where the paper's Fig. 3 curves end (its x-axis)
# Each Figure 3 run's Adagrad step size, by the paper's rule (§5: of {0.01, 0.02, 0.1}, the one with
# the most training-set progress in the first iterations), measured 2026-11-22 on the Figure 3
# configuration (README, Figure 3).  AEVB and wake-sleep: --lr_probe=100000 with --metric=bound,
# the training bound after 10^5 samples for 0.01 / 0.02 / 0.1: AEVB -197.90 / -178.06 / -165.14
# (N = 1000) and -199.28 / -186.59 / -164.97 (N = 50,000); wake-sleep -191.77 / -188.95 / -191.00
# and -206.34 / -191.22 / -210.21.  MCEM (no bound): --lr_probe=1000000, the App. D log p(x) of the
# first 1000 training points after 10^6 samples (full-batch, 20 steps at N = 50,000): -148.43 /
# -132.91 / -104.55 and -207.04 / -201.23 / -166.50.
FIG3_LR = {("aevb", 1000): 0.1, ("aevb", 50000): 0.1, ("wakesleep", 1000): 0.02, ("wakesleep", 50000): 0.02,
           ("mcem", 1000): 0.1, ("mcem", 50000): 0.1}
FIG3_COLUMNS = (("n_train", "N train", ":"), ("algorithm", "algorithm", ""), ("samples_reached", "evaluated at", ":"),
                ("train", "train log p(x)", ":"), ("test", "test log p(x)", ":"), ("paper_train", "paper train", ":"),
                ("paper_test", "paper test", ":"), ("train_vs_paper", "train - paper", ":"),
                ("test_vs_paper", "test - paper", ":"), ("trained", "trained", ":"), ("status", "status", ""))


def fig3_name(algorithm, n_train):
    return f"{algorithm}_n{n_train}"


def plan_figure3(base, out, n_trains=FIG3_N_TRAIN, algorithms=FIG3_ALGORITHMS, budget=None, step_sizes=FIG3_LR):
    """Figure 3's runs, cheapest-to-informative first: the full training set's AEVB and wake-sleep,
    then N = 1000 (MCEM's home ground), and MCEM on the full set last (its E-steps make it the
    slowest per sample, and the paper shows it far from converged there).

    MCEM runs are full-batch, as the authors' code ran it (README, Monte Carlo EM): each step moves
    every chain once, then takes the 5 M-steps on the whole training set; "not online", as the
    paper says.  On minibatches of 100 the decoder takes N/20 updates per chain transition (2,500
    at N = 50,000), fits the chains' stale positions, and the chains drift outwards: measured at
    3.8e6 samples, mean |z| 10.2 against the prior's 1.6 (on the first 200 chains log p(x, z) -268
    at z, -205 at 0.2 z), and the estimated log p(x) of the first 1000 training points falling
    (-188 at 4.6e5 samples, -202 at 2.2e6): README, Monte Carlo EM.

    step_sizes: {(algorithm, n_train): lr}, by default FIG3_LR, the paper's rule's pick for each
    cell (measured for Adagrad); base.lr for the cells it does not name.  MCEM's runs keep
    marginal_start="own": their own rule is already the best start."""
    order = [(a, n) for n in sorted(n_trains, reverse=True) for a in algorithms if a != "mcem"]
    order = ([c for c in order if c[1] != min(n_trains)] + [("mcem", min(n_trains))] * ("mcem" in algorithms)
             + [c for c in order if c[1] == min(n_trains)]
             + [("mcem", n) for n in sorted(n_trains) if n != min(n_trains) and "mcem" in algorithms])
    return plan_runs({fig3_name(a, n): dataclasses.replace(base, algorithm=a, n_train=n,
                                                           out=os.path.join(out, fig3_name(a, n)),
                                                           lr=step_sizes.get((a, n), base.lr),
                                                           **({"batch_size": n, "marginal_start": "own"}
                                                              if a == "mcem" else {}))
                      for a, n in order}, budget)


def collect_figure3(out, n_trains=FIG3_N_TRAIN, algorithms=FIG3_ALGORITHMS):
    """One row per Figure 3 cell: the App. D estimate of log p(x) on the first 1000 training and
    test points at the budget the run reached, beside the paper's value."""
    failures = _read_json(os.path.join(out, "failures.json")) or {}
    rows = []
    for n in n_trains:
        for alg in algorithms:
            value = paper.FIG3.get((alg, n))
            rows.append({"n_train": n, "algorithm": alg,
                         **_beside_paper(_cell(os.path.join(out, fig3_name(alg, n)), fig3_name(alg, n), failures),
                                         value)})
    return rows


def draw_figure3(rows, path):
    """Figure 3's layout: one panel per training-set size, AEVB, wake-sleep and MCEM, train solid and
    test dashed, the paper's end values marked."""
    draw_panels(rows, path, "n_train", lambda n: f"MNIST, $N_z$ = 3, $N_{{train}}$ = {n:,}",
                "marginal log-likelihood (App. D estimate)", paper_budget=FIG3_PAPER_BUDGET, panel_size=(4.2, 3.6))


def redraw_figure3(out, n_trains=FIG3_N_TRAIN, algorithms=FIG3_ALGORITHMS):
    """fig3_table.md / .csv and fig3.png from whatever the runs have written so far."""
    rows = collect_figure3(out, n_trains, algorithms)
    text = write_table(rows, out, "fig3_table", FIG3_COLUMNS)
    draw_figure3(rows, os.path.join(out, "fig3.png"))
    return rows, text


# --------------------------------------------------------------------------- which MNIST protocol

PROTOCOLS = ("dynamic", "static", "none")
PROTOCOL_COLUMNS = (("binarize", "binarize", ""), ("folder", "run", ""), ("samples_reached", "evaluated at", ":"),
                    ("train", "train", ":"), ("test", "test", ":"), ("gap", "train - test", ":"),
                    ("paper_train", "paper train", ":"), ("paper_test", "paper test", ":"),
                    ("paper_gap", "paper gap", ":"), ("train_vs_paper", "train - paper", ":"),
                    ("test_vs_paper", "test - paper", ":"), ("trained", "trained", ":"), ("status", "status", ""))


def protocol_folders(out, protocols=PROTOCOLS, where=None):
    """{protocol: run folder}: <out>/<protocol>, unless ``where`` puts one elsewhere (the dynamic
    run is the Figure 2 sweep's own MNIST Nz = 20 AEVB run, which need not be trained twice).
    Raises ConfigError if two protocols would share a folder."""
    folders = {b: (where or {}).get(b) or os.path.join(out, b) for b in protocols}
    real = {}
    for b, folder in folders.items():
        other = real.setdefault(os.path.realpath(folder), b)
        if other != b:       # two runs in one folder: the second would find (and refuse) the first's
            raise ConfigError(f"--{other}_run and --{b}_run (or the default {os.path.join(out, b)}) name one folder, "
                              f"{folder}: each protocol needs its own")
    return folders


def plan_protocols(base, out, protocols=PROTOCOLS, where=None, budget=None):
    """One run per MNIST binarization (``base``: the Figure 2 MNIST run of one Nz and algorithm).
    A run that lives in another sweep's folder resumes there: each run's lock keeps two sweeps
    from training it at once, and a resume refuses a folder whose run differs from this one."""
    folders = protocol_folders(out, protocols, where)
    return plan_runs({b: dataclasses.replace(base, binarize=b, out=folders[b]) for b in protocols}, budget)


def collect_protocols(out, base, protocols=PROTOCOLS, where=None):
    """One row per binarization: the bound at the budget its run reached, beside the paper's
    Figure 2 value for base's algorithm and Nz (the same for every row: the paper names none)."""
    failures = _read_json(os.path.join(out, "failures.json")) or {}
    value = paper.fig2_value(base.algorithm, base.dataset, base.nz)
    return [{"binarize": b, "folder": folder, "nz": base.nz, "mark_as": "paper", **_beside_paper(_cell(folder, b, failures), value)}
            for b, folder in protocol_folders(out, protocols, where).items()]


def redraw_protocols(out, base, protocols=PROTOCOLS, where=None):
    """protocols_table.md / .csv and protocols.png (the curves of every binarization on one panel,
    the paper's end values marked in black) from whatever the runs have written so far."""
    rows = collect_protocols(out, base, protocols, where)
    text = write_table(rows, out, "protocols_table", PROTOCOL_COLUMNS)
    from .plots import LABELS
    label = LABELS.get(base.algorithm, base.algorithm)
    draw_panels(rows, os.path.join(out, "protocols.png"), "nz",
                lambda nz: f"MNIST, $N_z$ = {nz}, {label}: which binarization?",
                "average lower bound per datapoint", curve_key="binarize", panel_size=(6.4, 4.4), zoom_from=1e7)
    return rows, text


# --------------------------------------------------------------------------- command line

EXECUTOR_OPTIONS = ("--jobs", "--threads", "--scheduler", "--tls-ca-file", "--tls-cert", "--tls-key", "--status_every")
STATUS_EVERY = 600.0       # seconds between a sweep's progress lines (--status_every; 0: none)


def split_options(argv, names):
    """(the sweep's own options {name: value} for the given --names, the rest: TrainConfig overrides)."""
    opts, rest = {}, []
    for a in argv:
        key, eq, value = a.partition("=")
        if key in names:
            if not eq or not value:
                raise ConfigError(f"{key} needs a value: {key}=...")
            opts[key[2:].replace("-", "_")] = value
        else:
            rest.append(a)
    return opts, rest


def executor_options(opts):
    """(jobs, threads, scheduler, security, status_every) from split_options' dict: local jobs
    default to one per core with one BLAS thread each (measured: 2 jobs x 1 thread beat 1 x 2 by
    1.6-2x here); a progress line per running run every status_every seconds."""
    try:
        cores = os.cpu_count() or 1
        jobs = int(opts.get("jobs", max(1, cores)))
        threads = int(opts.get("threads", max(1, cores // max(1, jobs))))
        status_every = float(opts.get("status_every", STATUS_EVERY))
    except ValueError as e:
        raise ConfigError(f"cannot read --jobs, --threads or --status_every ({e})") from None
    if jobs <= 0 or threads <= 0:
        raise ConfigError("--jobs and --threads must be positive")
    if not (math.isfinite(status_every) and status_every >= 0):
        raise ConfigError(f"--status_every must be a number of seconds >= 0 (0: no progress lines); "
                          f"got {opts['status_every']}")
    security = None
    if any(k in opts for k in ("tls_ca_file", "tls_cert", "tls_key")):
        from distributed.security import Security
        security = Security(tls_ca_file=opts.get("tls_ca_file"), tls_client_cert=opts.get("tls_cert"),
                            tls_client_key=opts.get("tls_key"), require_encryption=True)
    return jobs, threads, opts.get("scheduler"), security, status_every


def int_list(text, option):
    try:
        values = tuple(int(float(v)) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} must be comma-separated integers; got {text!r}") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{option} must be positive; got {text!r}")
    return values


def algorithm_list(text, allowed, option="--algorithms"):
    """A comma-separated choice among ``allowed`` (algorithms, binarizations), in the order given."""
    algorithms = tuple(text.split(","))
    if not algorithms or set(algorithms) - set(allowed):
        raise ConfigError(f"{option} must be among {', '.join(allowed)}; got {text!r}")
    return algorithms


# --------------------------------------------------------------------------- executors

def _local_executor(jobs, threads):
    """A process pool whose workers start with `threads` BLAS threads (set in the environment
    before they import NumPy: the spawn start method gives each a fresh interpreter)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_leave_process_group)


def _leave_process_group():
    # A worker leaves the terminal's process group, so that a Ctrl-C (or kill -INT of the group)
    # reaches the sweep alone, which passes exactly one SIGINT to each worker: a run stops at its
    # next step with a checkpoint.  A worker that saw two (the terminal's and the sweep's) would
    # take the second as "stop now" and lose the minutes since its last checkpoint.
    os.setpgrp()
    # Out of the group, a worker would outlive a sweep killed outright (SIGKILL, a closed session):
    # it watches its parent and, once orphaned, stops its run as a Ctrl-C does (with a checkpoint).
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60.0)                         # the run's checkpoint has had its time: exit
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


class _SweepInterrupt(StopFlag):
    """The sweep's Ctrl-C (the harness's StopFlag, with more to do): the first passes one SIGINT to
    each local worker (its run writes a checkpoint and returns "interrupted") and cancels the runs
    not yet started; a second passes another and stops at once."""

    def __init__(self, log):
        super().__init__()
        self.log, self.cancel = log, lambda: None

    def _handle(self, signum, frame):
        import multiprocessing
        for worker in multiprocessing.active_children():
            with contextlib.suppress(OSError):
                os.kill(worker.pid, signal.SIGINT)
        first = not self.set
        super()._handle(signum, frame)          # sets the flag, or raises KeyboardInterrupt the second time
        if first:
            self.cancel()
            self.log("Ctrl-C: runs not yet started are cancelled and the running ones write a checkpoint and "
                     "stop (Ctrl-C again to stop at once); the same command resumes the sweep")


class _StatusReporter:
    """Every ``every`` seconds (from a thread of the sweep's own), a line per run in flight: the
    samples its checkpoint holds, of its budget, the rate since the sweep began watching it, and
    the time left at that rate.  It reads the runs' checkpoints, so it needs no word from the
    workers (on Dask, only those whose folders this machine sees).

    redraw: called at most every ``redraw_every`` seconds (default: every tick, but no more often
    than once a minute) after the lines, so that the figure and the table of a sweep whose runs take
    hours show where the runs stand, not where they stood when the last run ended.  The caller
    makes it safe to call beside its own redraws (run_sweep holds a lock)."""

    def __init__(self, every, log, redraw=None, redraw_every=None):
        self.every, self.log = every, log
        self.redraw = redraw
        self.redraw_every = max(every, 60.0) if redraw_every is None else redraw_every
        self._last_redraw = time.monotonic()
        self.in_flight = {}      # name -> RunSpec: submitted and not yet returned (on Dask: maybe queued)
        self.baseline = {}       # name -> (samples, time) when the run was first seen moving
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if every > 0 else None

    def __enter__(self):
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()          # wakes at once: no progress line after the sweep's table

    def _run(self):
        while not self._stop.wait(self.every):
            for line in self.lines():
                self.log(line)
            if self.redraw is not None and time.monotonic() - self._last_redraw >= self.redraw_every:
                self._last_redraw = time.monotonic()
                try:
                    self.redraw()
                except Exception as e:       # a figure that cannot be drawn now must not stop the reports
                    self.log(f"[{time.strftime('%H:%M')}] could not redraw the figure and table "
                             f"({type(e).__name__}: {' '.join(str(e).split())}); the next progress line tries again")

    def lines(self, now=None):
        now = time.monotonic() if now is None else now
        lines = []
        for name, spec in list(self.in_flight.items()):
            done, budget = trained_samples(spec.config["out"]), spec.config["samples"]
            stamp = f"[{time.strftime('%H:%M')}] {name}:"
            if not done:
                lines.append(f"{stamp} no checkpoint yet (starting, queued, or on a worker whose folders this "
                             f"machine does not see)")
                continue
            start_samples, start_time = self.baseline.setdefault(name, (done, now))
            if done == start_samples:
                # not moving yet (queued, loading data): the rate is measured from when it moves
                self.baseline[name] = (done, now)
            line = f"{stamp} {done:,} of {budget:,} samples ({100 * done / budget:.1f}%)"
            if done > start_samples and now > start_time:
                rate = (done - start_samples) / (now - start_time)
                left = (budget - done) / rate
                line += f", {rate:,.0f} samples/s, about " + (f"{left / 3600:.1f} h" if left >= 3600 else
                                                               f"{max(1, round(left / 60))} min") + " to go"
            lines.append(line)
        return lines


def check_data(specs, data_dir=None):
    """Load each distinct data set that the runs to do will train on, here, before any run starts.
    Raises ConfigError (one line) when one is nowhere: otherwise every run would fail alike, each
    after creating its folder.  For a local pool only: a Dask worker may keep its data elsewhere."""
    from .data import ChecksumError, DataNotFoundError
    from .runs import load_run_data
    from .train import no_data_message
    checked = set()
    for spec in specs:
        if spec.action == "skip":
            continue
        config = TrainConfig.from_dict(spec.config)
        config = dataclasses.replace(config, data_dir=data_dir or config.data_dir)
        files = (config.dataset, config.binarize == "static", config.data_dir)
        if files in checked:
            continue
        checked.add(files)
        try:
            load_run_data(config)
        except DataNotFoundError:
            raise ConfigError(no_data_message(config)) from None
        except ChecksumError as e:
            raise ConfigError(" ".join(str(e).split())) from None


def run_sweep(specs, out, redraw, jobs=2, threads=1, scheduler=None, security=None, data_dir=None, log=print,
              status_every=0):
    """Send the runs to an executor; call redraw() after each, and with the progress lines (at most
    once a minute) while runs train; return {name: result}.

    redraw: a function of no arguments that redraws the sweep's figure and table from its folders.
    scheduler: None for a local process pool of ``jobs`` workers, or a Dask scheduler address
    (``tcp://host:port`` or ``tls://...``) with optional ``distributed.Security`` settings.
    Ctrl-C (SIGINT): runs not yet started are cancelled, running local runs write a checkpoint and
    stop, and the results say "interrupted"; on a Dask cluster the running runs go on until their
    workers stop (their checkpoints keep them), as Dask cannot stop a running task.
    status_every: seconds between the progress lines of the runs in flight, which also redraw the
    figure and table (at most once a minute); 0: neither."""
    os.makedirs(out, exist_ok=True)
    todo = [s for s in specs if s.action != "skip"]
    lock = threading.Lock()          # the status thread redraws too: one redraw at a time (pyplot, files)

    def locked_redraw():
        with lock:
            return redraw()
    results = {s.name: {"name": s.name, "status": "skipped", "reason": "finished at the budget"}
               for s in specs if s.action == "skip"}
    _update_failures(out, {s.name: None for s in todo})

    def finished(result):
        results[result["name"]] = result
        status.in_flight.pop(result["name"], None)
        if result["status"] == "failed":
            _update_failures(out, {result["name"]: result["reason"]})
        log(f"{result['name']}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
        locked_redraw()

    with _SweepInterrupt(log) as interrupt, _StatusReporter(status_every, log, locked_redraw) as status:
        if scheduler:
            from dask.distributed import Client, as_completed
            with Client(scheduler, security=security) as client:
                futures = {client.submit(run_spec, s, data_dir, pure=False,
                                         key=f"npvae-{s.name}-{time.time_ns()}"): s for s in todo}
                status.in_flight.update({s.name: s for s in todo})       # queued ones too: Dask starts them
                interrupt.cancel = lambda: client.cancel([f for f in futures if not f.done()])
                for fut in as_completed(futures):
                    try:
                        finished(fut.result())
                    except Exception as e:                  # the worker died or was lost, or cancelled
                        finished({"name": futures[fut].name, "status": "interrupted" if interrupt.set else "failed",
                                  "reason": "cancelled by Ctrl-C" if interrupt.set else f"worker lost: {e}"})
        else:
            from concurrent.futures import FIRST_COMPLETED, wait
            # At most `jobs` runs in flight: a run is submitted only when a worker is free, so after a
            # Ctrl-C no queued run can start (a pool's own queue would start one more).
            with _local_executor(jobs, threads) as pool:
                pending, running = list(todo), {}
                while pending or running:
                    while pending and len(running) < jobs and not interrupt.set:
                        spec = pending.pop(0)
                        running[pool.submit(run_spec, spec, data_dir)] = spec
                        status.in_flight[spec.name] = spec
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        spec = running.pop(fut)
                        try:
                            finished(fut.result())
                        except Exception as e:              # BrokenProcessPool: a worker died mid-run
                            finished({"name": spec.name, "status": "failed",
                                      "reason": f"worker died ({type(e).__name__}); its checkpoint resumes next sweep"})
                for spec in pending:
                    results[spec.name] = {"name": spec.name, "status": "not started", "reason": "Ctrl-C"}
    locked_redraw()
    return results


def exit_status(results, command, log=print):
    """The sweep command's exit status: 1 if a run failed; an interrupted sweep says how to go on."""
    if any(r["status"] in ("interrupted", "not started") for r in results.values()):
        log(f"interrupted: checkpoints written; continue with: {command}")
    return 1 if any(r["status"] == "failed" for r in results.values()) else 0


# --------------------------------------------------------------------------- the scripts' command line

@dataclass
class SweepCommand:
    """What a sweep script (examples/figure2.py, figure3.py, protocols.py) makes of its argv."""
    out: str                  # the sweep's folder
    banner: str               # what the sweep is, printed first
    specs: list               # plan_runs' RunSpecs, in the order they go
    redraw: object            # () -> (rows, table text), from whatever the runs have written so far
    figure: str               # the figure's path
    executor: tuple           # executor_options' (jobs, threads, scheduler, security, status_every)
    data_dir: str = None      # the data folder as the workers see it (None: theirs)
    status_only: bool = False  # --status: say where the runs stand, train nothing


def parse_command(argv, own_options):
    """(smoke, status, {option: value} of the executor's and own_options, the rest: TrainConfig
    overrides, executor_options' tuple) from a sweep script's argv.  smoke: --smoke (the whole
    pipeline in seconds); status: --status (say where the sweep stands, train nothing)."""
    argv = list(argv)
    flags = {}
    for flag in ("--smoke", "--status"):
        if any(a.startswith(flag + "=") for a in argv):
            raise ConfigError(f"{flag} takes no value: {flag}")
        flags[flag] = flag in argv
        argv = [a for a in argv if a != flag]
    opts, rest = split_options(argv, EXECUTOR_OPTIONS + tuple(own_options))
    return flags["--smoke"], flags["--status"], opts, rest, executor_options(opts)


@quiet_broken_pipe
def command_main(argv, doc, script, plan):
    """The command line every sweep script shares.  plan: argv -> SweepCommand, raising ConfigError
    for bad input (printed as one line, exit status 2).  The runs go to the executor, the table is
    printed, and the exit status is 1 if a run failed; an interrupted sweep says how to go on."""
    if "--help" in argv or "-h" in argv:
        print(doc)
        return 0
    try:
        command = plan(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs, threads, scheduler, security, status_every = command.executor
    where = f"Dask scheduler {scheduler}" if scheduler else f"{jobs} local job(s) x {threads} BLAS thread(s)"
    print(f"{command.banner}, {where}")
    for s in command.specs:
        trained = trained_samples(s.config["out"])
        differs = differences(s.config) if s.action == "resume" else []
        print(f"  {s.name}: {s.action}" + (f" (at {trained:,} samples)" if trained and s.action == "resume" else "")
              + (f"; differs from this sweep in {', '.join(differs)}: it will not run" if differs else ""))
    if command.status_only:
        if not os.path.isdir(command.out):
            print(f"no runs in {command.out} yet")
            return 0
        _, table = command.redraw()
        print(table)
        print(f"figure: {command.figure}")
        return 0
    if not scheduler:
        try:
            check_data(command.specs, command.data_dir)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    results = run_sweep(command.specs, command.out, command.redraw, jobs=jobs, threads=threads, scheduler=scheduler,
                        security=security, data_dir=command.data_dir, status_every=status_every)
    _, table = command.redraw()
    print(table)
    print(f"figure: {command.figure}")
    return exit_status(results, f"python {script} {' '.join(argv)}")


def _update_failures(out, changes):
    """Record in out/failures.json each run's failure reason ({name: reason}; None clears it).  The
    file is read again at each change, so that two sweeps of some algorithms each into the same
    folder (say Figure 3's MCEM runs beside its minibatch ones) keep each other's entries."""
    path = os.path.join(out, "failures.json")
    with waiting_lock(os.path.join(out, ".failures.lock")):     # no other sweep's update in between
        failures = _read_json(path) or {}
        for name, reason in changes.items():
            if reason is None:
                failures.pop(name, None)
            else:
                failures[name] = reason
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                json.dump(failures, f, indent=2)
