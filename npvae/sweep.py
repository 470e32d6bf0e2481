"""The Figure 2 sweep: AEVB and wake-sleep over latent sizes, each run in its own folder.

    plan_sweep(...)   -> RunSpecs: which runs to skip (finished at the budget), resume or start
    run_spec(spec)    -> a result dict; an ordinary function of its spec, so a process pool or a
                         Dask worker needs nothing but npvae and the data to run it
    run_sweep(...)    -> sends the runs to an executor, redraws the figure and the table each
                         time a run ends, and reports failures without stopping the other runs
    collect(...)      -> every cell at the budget its run has reached, beside the paper's value

Re-running a sweep skips finished runs, resumes unfinished ones from their checkpoints (a worker
that died leaves one) and extends runs to a larger budget.  Each run keeps its own lock, so two
sweeps never train the same run at once.
"""
import csv
import dataclasses
import json
import os
import time
import traceback
from dataclasses import dataclass

from . import paper
from .config import ConfigError, TrainConfig
from .fileio import atomic_path

ALGORITHMS = ("aevb", "wakesleep")
FIG2_NZ = {"mnist": (3, 5, 10, 20, 200), "frey": (2, 5, 10, 20)}
# The most informative cells first (issue 12): MNIST Nz = 20 and 3, Frey Face Nz = 5.
PRIORITY = {"mnist": (20, 3, 5, 10, 200), "frey": (5, 2, 10, 20)}


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


def plan_sweep(base, out, nzs, algorithms=ALGORITHMS, budget=None):
    """The runs of a sweep in the order they should go (the most informative first).

    base: a TrainConfig with everything but algorithm, nz, out (and samples = the budget)."""
    budget = budget or base.samples
    order = [nz for nz in PRIORITY.get(base.dataset, ()) if nz in nzs] + [nz for nz in nzs
                                                                          if nz not in PRIORITY.get(base.dataset, ())]
    specs = []
    for nz in order:
        for alg in algorithms:
            name = run_name(alg, nz)
            folder = os.path.join(out, name)
            config = dataclasses.replace(base, algorithm=alg, nz=nz, samples=budget, out=folder, progress=False)
            summary = _read_json(os.path.join(folder, "summary.json"))
            if summary and summary.get("status") == "finished" and summary.get("samples", 0) >= budget:
                action = "skip"
            elif os.path.exists(os.path.join(folder, "checkpoint.npz")):
                action = "resume"
            else:
                action = "new"
            specs.append(RunSpec(name, dataclasses.asdict(config), action))
    return specs


def run_spec(spec, data_dir=None):
    """Run (or resume) one run of a sweep; never raises for a run's own failure.

    Returns {"name", "status": finished | interrupted | failed | skipped, "reason", "samples",
    "seconds"}.  The run's log goes to train.log in its folder."""
    from .train import RunFolderError, TrainingDiverged, checkpoint_config, train
    if spec.action == "skip":
        return {"name": spec.name, "status": "skipped", "reason": "finished at the budget"}
    config = TrainConfig.from_dict(spec.config)
    if data_dir:
        config = dataclasses.replace(config, data_dir=data_dir)
    t0 = time.time()
    try:
        resume = spec.action == "resume"
        if resume:     # the run's own config, with this sweep's budget (a resume may only extend it)
            saved = checkpoint_config(os.path.join(config.out, "checkpoint.npz"))
            changed = saved.changes_a_resume_may_not_make(config)
            if changed:
                raise RunFolderError(f"the run in {config.out} differs from this sweep in {', '.join(changed)}")
            config = dataclasses.replace(saved, samples=config.samples, out=config.out, progress=False,
                                         data_dir=config.data_dir)
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
    except (TrainingDiverged, ConfigError) as e:
        return {"name": spec.name, "status": "failed", "reason": " ".join(str(e).split()),
                "seconds": round(time.time() - t0, 1)}
    except Exception as e:                              # a bug or a broken environment: keep the trace
        return {"name": spec.name, "status": "failed", "reason": f"{type(e).__name__}: {e}",
                "trace": traceback.format_exc(), "seconds": round(time.time() - t0, 1)}


# --------------------------------------------------------------------------- where the sweep stands

def read_history(folder):
    rows = []
    try:
        with open(os.path.join(folder, "history.csv")) as f:
            for r in csv.DictReader(f):
                rows.append((float(r["samples"]), float(r["seconds"]), float(r["train_elbo"]), float(r["test_elbo"])))
    except (OSError, ValueError, KeyError):
        pass
    return rows


def collect(out, dataset, nzs, algorithms=ALGORITHMS, failures=None):
    """One row per cell: the bound at the budget its run reached (or why there is none)."""
    failures = failures if failures is not None else (_read_json(os.path.join(out, "failures.json")) or {})
    rows = []
    for nz in nzs:
        for alg in algorithms:
            name = run_name(alg, nz)
            folder = os.path.join(out, name)
            history = read_history(folder)
            summary = _read_json(os.path.join(folder, "summary.json")) or {}
            config = _read_json(os.path.join(folder, "config.json")) or {}
            value = paper.fig2_value(alg, dataset, nz)
            last = history[-1] if history else None
            status = failures.get(name) and f"failed: {failures[name]}" or summary.get("status") or (
                "running" if os.path.exists(os.path.join(folder, "checkpoint.npz")) else "not started")
            rows.append({"dataset": dataset, "nz": nz, "algorithm": alg, "budget": config.get("samples"),
                         "samples_reached": int(last[0]) if last else 0,
                         "train": round(last[2], 2) if last else None, "test": round(last[3], 2) if last else None,
                         "paper_train": value[0] if value else None, "paper_test": value[1] if value else None,
                         "status": status, "history": history})
    return rows


def write_table(rows, out):
    """fig2_table.md and fig2_table.csv in out: every cell at the budget its run reached."""
    fields = ["dataset", "nz", "algorithm", "samples_reached", "train", "test", "paper_train", "paper_test", "status"]
    with atomic_path(os.path.join(out, "fig2_table.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    lines = ["| data | Nz | algorithm | samples reached | train | test | paper train | paper test | status |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        cell = lambda v: "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)   # noqa: E731
        lines.append(f"| {r['dataset']} | {r['nz']} | {r['algorithm']} | {r['samples_reached']:,} | {cell(r['train'])} "
                     f"| {cell(r['test'])} | {cell(r['paper_train'])} | {cell(r['paper_test'])} | {r['status']} |")
    text = "\n".join(lines) + "\n"
    with atomic_path(os.path.join(out, "fig2_table.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return text


def draw_figure(rows, path, dataset):
    """Figure 2's layout: one panel per Nz, AEVB and wake-sleep, train solid and test dashed."""
    from . import plots
    import matplotlib.pyplot as plt
    nzs = sorted({r["nz"] for r in rows})
    fig, axes = plt.subplots(1, len(nzs), figsize=(3.2 * len(nzs), 3.4), squeeze=False)
    for ax, nz in zip(axes[0], nzs):
        cells = [r for r in rows if r["nz"] == nz]
        curves = {r["algorithm"]: r["history"] for r in cells if r["history"]}
        marks = {r["algorithm"]: (r["paper_train"], r["paper_test"]) for r in cells if r["paper_train"] is not None}
        left = plots.draw_fig2_panel(ax, curves, marks,
                                     f"{'MNIST' if dataset == 'mnist' else 'Frey Face'}, $N_z$ = {nz}")
        plots.fit_y(ax, curves, marks, left)
    axes[0][0].set_ylabel("average lower bound per datapoint")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    plots._save(fig, path)


def redraw(out, dataset, nzs, algorithms=ALGORITHMS):
    rows = collect(out, dataset, nzs, algorithms)
    text = write_table(rows, out)
    draw_figure(rows, os.path.join(out, "fig2.png"), dataset)
    return rows, text


# --------------------------------------------------------------------------- executors

def _local_executor(jobs, threads):
    """A process pool whose workers start with `threads` BLAS threads (set in the environment
    before they import NumPy: the spawn start method gives each a fresh interpreter)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def run_sweep(specs, out, dataset, nzs, algorithms=ALGORITHMS, jobs=2, threads=1, scheduler=None,
              security=None, data_dir=None, log=print):
    """Send the runs to an executor; redraw after each; return {name: result}.

    scheduler: None for a local process pool of ``jobs`` workers, or a Dask scheduler address
    (``tcp://host:port`` or ``tls://...``) with optional ``distributed.Security`` settings."""
    os.makedirs(out, exist_ok=True)
    failures = _read_json(os.path.join(out, "failures.json")) or {}
    todo = [s for s in specs if s.action != "skip"]
    results = {s.name: {"name": s.name, "status": "skipped", "reason": "finished at the budget"}
               for s in specs if s.action == "skip"}
    for s in todo:
        failures.pop(s.name, None)
    _write_failures(out, failures)

    def finished(result):
        results[result["name"]] = result
        if result["status"] == "failed":
            failures[result["name"]] = result["reason"]
            _write_failures(out, failures)
        log(f"{result['name']}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
        redraw(out, dataset, nzs, algorithms)

    if scheduler:
        from dask.distributed import Client, as_completed
        with Client(scheduler, security=security) as client:
            futures = {client.submit(run_spec, s, data_dir, pure=False, key=f"npvae-{s.name}-{time.time_ns()}"): s
                       for s in todo}
            for fut in as_completed(futures):
                try:
                    finished(fut.result())
                except Exception as e:                  # the worker died or was lost
                    finished({"name": futures[fut].name, "status": "failed", "reason": f"worker lost: {e}"})
    else:
        from concurrent.futures import as_completed
        with _local_executor(jobs, threads) as pool:
            futures = {pool.submit(run_spec, s, data_dir): s for s in todo}
            for fut in as_completed(futures):
                try:
                    finished(fut.result())
                except Exception as e:                  # BrokenProcessPool: a worker died mid-run
                    finished({"name": futures[fut].name, "status": "failed",
                              "reason": f"worker died ({type(e).__name__}); its checkpoint resumes next sweep"})
    redraw(out, dataset, nzs, algorithms)
    return results


def _write_failures(out, failures):
    with atomic_path(os.path.join(out, "failures.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump(failures, f, indent=2)
