"""The importance-sampled log p(x) beside the lower bound, on the test set, for trained runs.

    python examples/marginal_table.py runs/fig2_mnist/aevb_nz20 runs/fig2_mnist/wakesleep_nz20
    python examples/marginal_table.py RUN --points=1000 --k=5000 --seed=0
    python examples/marginal_table.py --smoke            # trains a tiny MNIST run, k = 100: seconds
    python examples/marginal_table.py RUN/snapshots/checkpoint_000010000000.npz   # the model at 1e7 samples

For each run folder (a run of the harness: checkpoint.npz, config.json, summary.json, history.csv),
or checkpoint file of a run (a --snapshots copy: the model at one of its evaluations; its results
go to the run folder, named with "_at<samples>"), it loads the trained model
(``npvae.runs.load_run``) and the run's test set as the harness evaluated it
(``npvae.runs.evaluation_sets``: the same binarized points and fixed noise), and
computes on the first --points of them (default: all)

    the bound      the average lower bound per datapoint (estimator B, the harness's fixed noise:
                   the test number of the run's history.csv at the same budget);
    log p(x)       importance sampling with k samples of q(z|x) (``npvae.marginal``), datapoint i's
                   noise from numpy.random.default_rng([seed, i]) alone, so that no value depends
                   on how the work was split into chunks or sessions.

The estimate is unbiased for p(x), so it sits below log p(x) in expectation (Jensen) and above
the bound in expectation; the gap IS - bound is the posterior mismatch that the bound hides.

It is slow: at k = 5000 the paper's MNIST model (784-500-20) took 0.27 s per point in float32 and
0.62 s in float64 with the readable log p(x|z) (2026-11-22, one BLAS thread, the 2-core machine
shared with two training jobs), and the fused Bernoulli kernel since then measured 1.85x and 1.80x
faster: about 25 and 55 minutes for MNIST's 10,000 test points under such load
(``python benchmarks/bench_marginal.py --estimator=is`` times it).  So it is resumable.  Per-datapoint values go to
RUN/marginal_k<k>_seed<seed>.npz every --chunk points (atomically), together with the parameters
they were computed with; a rerun continues where it stopped, with those same parameters even if
the run has trained on since (it says so; --restart starts over from the current checkpoint), so
values from two checkpoints are never mixed.  Ctrl-C stops after the current datapoint and saves;
a second Ctrl-C stops at once (the last save is kept).  When every point is done it writes
RUN/marginal.json and adds the run to the table (--out/marginal_table.md and .csv).  For a
checkpoint file the two files are RUN/marginal_k<k>_seed<seed>_at<samples>.npz and
RUN/marginal_at<samples>.json (RUN/checkpoint.npz itself stands for RUN).  marginal.json
describes the last computation that finished (a quick look with a small --k replaces it); the
per-datapoint files stay, one per k and seed, so the k = 5000 command rewrites it in seconds.
Replacing the run with --overwrite removes all of these files with it (npvae.train.STUDY_FILE_RE).
"""
import dataclasses
import datetime
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import UsageError, make_out, markdown_table, require, run, study_parser  # noqa: E402
from _study import write_csv, write_text  # noqa: E402

from npvae.config import ConfigError, TrainConfig  # noqa: E402
from npvae.data import ChecksumError, DataNotFoundError, data_folders  # noqa: E402
from npvae.fileio import atomic_path  # noqa: E402
from npvae.learners import evaluate_bound  # noqa: E402
from npvae.marginal import importance_sampled_log_px  # noqa: E402
from npvae.runs import RunLoadError, evaluation_sets, load_run, load_run_data, reported_bound  # noqa: E402
from npvae.runs import checkpoint_path, read_checkpoint_config, run_folder  # noqa: E402
from npvae.train import StopFlag  # noqa: E402

SMOKE_RUN = dict(dataset="mnist", binarize="dynamic", nz=5, hidden=(64,), samples=30_000, eval_max=500,
                 eval_per_decade=1, progress=False, figures=False)
SMOKE_K, SMOKE_POINTS, SMOKE_CHUNK = 100, 200, 50


# --------------------------------------------------------------------------- the per-datapoint file

def as_run(run):
    """A run folder or a checkpoint file that is not the run's own (a --snapshots copy, which never
    changes); a run's own RUN/checkpoint.npz, which changes while the run trains, stands for RUN."""
    if os.path.isfile(run):
        own = checkpoint_path(run_folder(run))
        if os.path.isfile(own) and os.path.samefile(run, own):
            return run_folder(run)
    return run


def _suffix(run):
    """The result files' name suffix: none for a run folder, "_at<samples>" for a checkpoint file (a
    --snapshots copy), so that each snapshot's results sit beside the run's own under names of their own."""
    return f"_at{read_checkpoint_config(run)[1]}" if os.path.isfile(run) else ""


def point_file(run, k, seed):
    """The per-datapoint file of a run folder, or of a checkpoint file: kept in its run folder, never
    in snapshots/, where a glob like snapshots/*.npz would take it for a snapshot."""
    run = as_run(run)
    return os.path.join(run_folder(run), f"marginal_k{k}_seed{seed}{_suffix(run)}.npz")


def result_file(run):
    """RUN/marginal.json, or RUN/marginal_at<samples>.json for a checkpoint file of the run (run as
    marginal_of_run holds it, already through as_run)."""
    return os.path.join(run_folder(run), f"marginal{_suffix(run)}.json")


def params_sha256(params):
    """A fingerprint of a model's parameters (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def data_sha256(x):
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


@dataclasses.dataclass
class PointValues:
    """What RUN/marginal_k<k>_seed<seed>.npz (a checkpoint file's: ..._at<samples>.npz) holds: log p(x)
    and its delta-method standard error for test points 0 .. done-1, the parameters they were computed with, and what they are for."""
    log_px: np.ndarray            # (done,)
    stderr: np.ndarray            # (done,)
    params: dict                  # name -> array: the model the values belong to
    meta: dict                    # k, seed, samples, params_sha256, data_sha256, config, seconds

    @property
    def done(self):
        return self.log_px.shape[0]


def save_points(path, pv):
    arrays = {f"param/{k}": v for k, v in pv.params.items()}
    arrays.update(log_px=pv.log_px, stderr=pv.stderr, meta=np.array(json.dumps(pv.meta)))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_points(path):
    """The PointValues in path, or None when there is no file; a damaged file is an error."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return PointValues(z["log_px"], z["stderr"],
                               {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")},
                               json.loads(str(z["meta"])))
    except Exception as e:                              # zipfile, OSError, KeyError, JSON: all mean "damaged"
        raise UsageError(f"{path} cannot be read ({type(e).__name__}: {e}); delete it or rerun with --restart")


# --------------------------------------------------------------------------- Ctrl-C at a datapoint boundary

def StopAtBoundary():
    """The harness's Ctrl-C flag, read here between datapoints: the first Ctrl-C sets it, a second
    raises KeyboardInterrupt at once."""
    return StopFlag("\nCtrl-C: stopping after this datapoint and saving (Ctrl-C again to stop at once)")


def _progress(total, initial, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # disable=None: a bar on a terminal only; a log file gets the per-chunk lines instead
    return tqdm(total=total, initial=initial, unit="point", desc=desc, disable=None, file=sys.stderr,
                dynamic_ncols=True)


# --------------------------------------------------------------------------- one run

def _why_not_reusable(saved, meta):
    """None when saved per-datapoint values can be continued for meta's run, k and seed; else why not."""
    if (saved.meta.get("k"), saved.meta.get("seed")) != (meta["k"], meta["seed"]):
        return "another k or seed"
    if saved.meta.get("data_sha256") != meta["data_sha256"]:
        return "another test set"
    try:        # the run's experiment fields (the ones a --resume may not change) must be the same
        changed = TrainConfig.from_dict(saved.meta["config"]).changes_a_resume_may_not_make(
            TrainConfig.from_dict(meta["config"]))
    except (KeyError, ConfigError) as e:
        return f"a run whose config cannot be compared ({e})"
    return f"another experiment ({', '.join(changed)})" if changed else None


def _spread(a):
    """Standard error of the mean of a over its entries (datapoints): sd / sqrt(n)."""
    return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")


def marginal_of_run(folder, k=5000, seed=0, points=None, chunk=500, restart=False, data=None, data_dir=None,
                    stop=None, log=print):
    """log p(x) by importance sampling and the bound on the run's test set; writes RUN/marginal.json.

    folder: a run folder, or a checkpoint file of a run (a --snapshots copy): its results go to the
    run folder as marginal_k<k>_seed<seed>_at<samples>.npz and marginal_at<samples>.json.

    points: the first this many test points (None: the harness's whole test set); chunk: points
    between saves of the per-datapoint file; data: the run's TrainingData (default: loaded as the
    harness does); stop: a StopAtBoundary (or anything with ``.set``).
    Returns the result dict (also written to marginal.json), or None when stopped before the end.
    """
    folder = as_run(folder)
    if read_checkpoint_config(folder)[0].algorithm == "mcem":
        raise UsageError(f"{folder} was trained by Monte Carlo EM, which has no encoder: importance sampling "
                         f"here uses q(z|x) as its proposal")
    trained = load_run(folder)
    config, vae, samples_now = trained.config, trained.vae, trained.samples     # one read of the checkpoint
    try:
        x_all, eps_all = evaluation_sets(config, data, data_dir)["test"]
    except DataNotFoundError:
        raise UsageError(f"{folder}: its {config.dataset} data were not found in "
                         f"{', '.join(data_folders(data_dir or config.data_dir or None))} (nor downloaded): "
                         f"set NPVAE_DATA_DIR or pass --data_dir") from None
    n_test = x_all.shape[0]
    n = n_test if points is None else points
    require(n <= n_test, f"--points {points}: {folder}'s test set as the harness evaluates it has {n_test:,} points")
    x, eps = x_all[:n], eps_all[:, :n]
    digest_now = params_sha256(vae.params)
    path = point_file(folder, k, seed)
    meta = {"k": k, "seed": seed, "samples": samples_now, "params_sha256": digest_now,
            "data_sha256": data_sha256(x_all), "config": json.loads(json.dumps(dataclasses.asdict(config))),
            "seconds": 0.0}
    saved = None if restart else load_points(path)
    why = None if saved is None else _why_not_reusable(saved, meta)
    if why:
        log(f"{folder}: {os.path.basename(path)} belongs to {why}: starting again")
        saved = None
    if saved is None:
        pv = PointValues(np.empty(0), np.empty(0), {name: p.copy() for name, p in vae.params.items()}, meta)
    else:
        # Continue with the parameters the saved values belong to, never the newer checkpoint's.
        pv = saved
        for name, p in vae.params.items():
            p[...] = saved.params[name]
        if saved.meta["params_sha256"] != digest_now:
            log(f"{folder}: continuing the {saved.done:,} points computed with the model at "
                f"{saved.meta['samples']:,} training samples (the checkpoint is now at {samples_now:,}; "
                f"--restart computes them for it)")
    model_samples = pv.meta["samples"]

    if pv.done < n:
        log(f"{folder}: {config.dataset}, Nz = {config.nz}, {config.algorithm}, {config.dtype}, model at "
            f"{model_samples:,} training samples; log p(x) with k = {k:,} on test points {pv.done:,}..{n - 1:,}")
        log_px, stderr = list(pv.log_px), list(pv.stderr)
        bar = _progress(n, pv.done, os.path.basename(os.path.normpath(folder)))
        start, seconds0, since_save, first = time.perf_counter(), pv.meta["seconds"], 0, pv.done

        def save():
            pv.log_px, pv.stderr = np.array(log_px), np.array(stderr)
            pv.meta["seconds"] = seconds0 + time.perf_counter() - start
            save_points(path, pv)

        try:
            for i in range(pv.done, n):
                # one datapoint per call, its generator from (seed, i) alone: the value does not
                # depend on the chunking, the session, or which points share a batch
                lp, se = importance_sampled_log_px(vae, x[i:i + 1], k, rng=[np.random.default_rng([seed, i])],
                                                   return_stderr=True)
                log_px.append(float(lp[0]))
                stderr.append(float(se[0]))
                since_save += 1
                if bar is not None:
                    bar.update(1)
                stopping = stop is not None and stop.set
                if since_save == chunk or i == n - 1 or stopping:
                    save()
                    since_save = 0
                    if bar is None or bar.disable:      # no bar (a log file): one line per save
                        rate = (time.perf_counter() - start) / (i + 1 - first)
                        log(f"{folder}: {len(log_px):,} of {n:,} points, {pv.meta['seconds']:.0f} s so far, "
                            f"about {rate * (n - 1 - i):.0f} s to go")
                if stopping:
                    log(f"{folder}: stopped at {len(log_px):,} of {n:,} points, saved in {path}; "
                        f"the same command continues")
                    return None
        finally:
            if bar is not None:
                bar.close()

    # -- the table's numbers, from the first n saved points (a longer earlier run may have saved more)
    log_px, stderr = pv.log_px[:n], pv.stderr[:n]
    elbo = evaluate_bound(vae, x, eps, config.estimator)         # what the harness's history reports
    elbo_points = np.concatenate([vae.elbo(x[s:s + 1000], eps[:, s:s + 1000], config.estimator)
                                  for s in range(0, n, 1000)]).astype(np.float64)
    gap_points = log_px - elbo_points
    result = {
        "run": folder, "dataset": config.dataset, "nz": config.nz, "algorithm": config.algorithm,
        "binarize": config.binarize if config.dataset == "mnist" else None, "dtype": config.dtype,
        "samples": model_samples,                           # the budget the evaluated model had reached
        "checkpoint_samples_now": samples_now, "status": trained.status,
        "points": n, "k": k, "seed": seed, "eval_seed": config.eval_seed,
        "test_elbo": elbo,                                  # the bound, estimator config.estimator, fixed noise
        # history.csv's test bound at this budget, on the harness's whole test set: equal to test_elbo
        "test_elbo_history": reported_bound(folder, model_samples, "test") if n == n_test else None,
        "test_log_px": float(log_px.mean()),                # importance-sampled log p(x), mean over points
        "test_log_px_stderr": _spread(log_px),                   # sd over datapoints / sqrt(n)
        "test_log_px_mean_point_stderr": float(stderr.mean()),   # mean per-datapoint Monte Carlo stderr
        "test_log_px_mc_stderr": float(np.sqrt((stderr ** 2).sum()) / n),   # MC error of the mean, these points
        "gap": float(log_px.mean() - elbo), "gap_stderr": _spread(gap_points),   # paired, over datapoints
        "seconds": round(float(pv.meta["seconds"]), 3),     # importance sampling, over all sessions
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "per_point_file": os.path.basename(path),
    }
    if result["test_elbo_history"] is not None and abs(result["test_elbo_history"] - elbo) > 1e-4:
        log(f"warning: {folder}: the bound here, {elbo:.6f}, is not the harness's {result['test_elbo_history']:.6f} "
            f"at the same budget: the test set or its noise is not the one the harness evaluated")
    with atomic_path(result_file(folder)) as tmp:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


# --------------------------------------------------------------------------- the table

def table(results, k):
    header = ["run", "dataset", "Nz", "algorithm", "samples reached", "test bound",
              f"test IS log p(x) (k={k}) ± s.e.", "gap (IS − bound) ± s.e."]
    rows = [[r["run"], r["dataset"], r["nz"], r["algorithm"], f"{r['samples']:,}", f"{r['test_elbo']:.2f}",
             f"{r['test_log_px']:.2f} ± {r['test_log_px_stderr']:.2f}", f"{r['gap']:.2f} ± {r['gap_stderr']:.2f}"]
            for r in results]
    return header, rows


def table_notes(results):
    pts = sorted({r["points"] for r in results})
    mc = max(r["test_log_px_mc_stderr"] for r in results)
    return (f"Test points: the first {', '.join(f'{p:,}' for p in pts)} of each run's test set as the harness "
            f"evaluates it (same binarization, the bound with the same fixed noise). ± s.e. is the standard "
            f"deviation over datapoints / sqrt(n) (the gap's is paired); the Monte Carlo error of the IS means "
            f"for these fixed points is at most {mc:.4f} nats. The IS estimate is a lower bound on log p(x) in "
            f"expectation; the gap is the posterior mismatch that the bound hides.\n")


# --------------------------------------------------------------------------- command line

def build_parser():
    p = study_parser("marginal_table", __doc__)
    for action in p._actions:         # the shared --seed's help, said for this script
        if action.dest == "seed":
            action.help = "datapoint i's importance samples come from numpy.random.default_rng([seed, i])"
        if action.dest == "out":
            action.help = ("folder for marginal_table.md / .csv (each run's marginal.json, or a checkpoint file's "
                           "marginal_at<samples>.json, goes into the run folder)")
    p.add_argument("runs", nargs="*", help="run folders, or checkpoint files of runs (a --snapshots copy: "
                                           "RUN/snapshots/checkpoint_<samples>.npz) (with --smoke: optional, "
                                           "else a tiny run is trained)")
    p.add_argument("--k", type=int, default=None, help="importance samples per datapoint (default 5000; --smoke 100)")
    p.add_argument("--points", type=int, default=None,
                   help="the first this many test points (default: the whole test set; --smoke 200)")
    p.add_argument("--chunk", type=int, default=None,
                   help="save the per-datapoint values every this many points (default 500; --smoke 50)")
    p.add_argument("--restart", action="store_true",
                   help="discard saved per-datapoint values and start from the current checkpoint")
    p.add_argument("--data_dir", default=None, help="folder with the data files (default: the run's, then "
                                                    "$NPVAE_DATA_DIR, then ~/.cache/npvae)")
    return p


def _smoke_run(out, data_dir):
    """Train a tiny MNIST run with the harness (seconds) into OUT/smoke_run; returns (folder, its data)."""
    from npvae.train import train
    config = TrainConfig(**SMOKE_RUN, out=os.path.join(out, "smoke_run"), data_dir=data_dir or "")
    try:
        data = load_run_data(config)          # loaded once, for the training and the table
    except DataNotFoundError:
        raise UsageError(f"--smoke trains on MNIST, which was not found in {', '.join(data_folders(data_dir))} "
                         f"(nor downloaded): set NPVAE_DATA_DIR or pass --data_dir") from None
    train(config, data=data, overwrite=True, log=lambda *_: None)
    return config.out, data


def _main(argv):
    args = build_parser().parse_args(argv)
    k = args.k if args.k is not None else SMOKE_K if args.smoke else 5000
    points = args.points if args.points is not None else SMOKE_POINTS if args.smoke else None
    chunk = args.chunk if args.chunk is not None else SMOKE_CHUNK if args.smoke else 500
    require(k >= 1, f"--k must be at least 1, got {k}")
    require(points is None or points >= 1, f"--points must be at least 1, got {points}")
    require(chunk >= 1, f"--chunk must be at least 1, got {chunk}")
    require(args.runs or args.smoke, "give one or more run folders or checkpoint files (or --smoke)")
    for folder in args.runs:                      # every folder checked before any work starts
        require(os.path.exists(folder), f"{folder}: no such run folder or checkpoint file")
        try:
            read_checkpoint_config(folder)
        except RunLoadError as e:
            raise UsageError(str(e)) from None
    out = make_out(args.out)
    runs, smoke_data = list(dict.fromkeys(as_run(os.path.normpath(r)) for r in args.runs)), None
    if not runs:
        folder, smoke_data = _smoke_run(out, args.data_dir)
        runs = [folder]
    results, stopped = [], False
    with StopAtBoundary() as stop:
        for folder in runs:
            if stop.set:                          # Ctrl-C came between two runs
                stopped = True
                break
            result = marginal_of_run(folder, k, args.seed, points, chunk, args.restart, data=smoke_data,
                                     data_dir=args.data_dir, stop=stop)
            if result is None:
                stopped = True
                break
            results.append(result)
            if result["checkpoint_samples_now"] != result["samples"]:
                print(f"note: {folder}'s checkpoint is now at {result['checkpoint_samples_now']:,} training samples; "
                      f"these numbers are for {result['samples']:,} (--restart recomputes them)")
    if results:
        header, rows = table(results, k)
        text = markdown_table(header, rows) + "\n" + table_notes(results)
        write_text(os.path.join(out, "marginal_table.md"), text)
        write_csv(os.path.join(out, "marginal_table.csv"), list(results[0]), [list(r.values()) for r in results])
        print(text, end="")
        print(f"table: {os.path.join(out, 'marginal_table.md')}")
    if stopped:
        print("interrupted: the points computed so far are saved; run the same command to continue")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(_main, argv)
    except (RunLoadError, ChecksumError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted by a second Ctrl-C; the per-datapoint values saved last are kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
