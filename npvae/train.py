"""The training harness: one loop for every learning algorithm (the paper's Algorithm 1 and its baselines).

    for each minibatch of M datapoints (drawn without replacement, epoch by epoch):
        learner.step(data, idx, rng)                  AEVB: one SGVB step (Algorithm 1, lines 3-6);
                                                      wake-sleep: a wake and a sleep step
        at log-spaced sample counts: evaluate the bound on the training and test sets
        every checkpoint_seconds, and on Ctrl-C: write a checkpoint

The loop owns what every learner shares: the minibatch order (a fresh permutation each epoch),
the budget in training samples, the evaluation schedule, progress, Ctrl-C, checkpoints, history,
summary and figures.  A learner (``npvae.learners``) owns its model and optimizers.

Everything random comes from one ``numpy.random.Generator`` created from ``config.seed``; its
state is checkpointed with the learner's arrays, so a resumed run ends with bitwise the same
parameters as an uninterrupted one.

A run folder is never lost: a new run refuses a folder that holds one (``--resume`` or
``--overwrite``), nothing is written into the folder before the data have loaded and the model
is built, a resume takes the run's configuration from its checkpoint and refuses changes to the
experiment, one process at a time holds a run (a lock file), and every file is written
atomically (a killed write leaves a hidden temp file, removed at the run's next start).
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
import time
from dataclasses import dataclass, field

import numpy as np

from . import paper
from .config import ConfigError, TrainConfig, help_text, parse_overrides, quiet_broken_pipe
from .data import TrainingData, load_training_data
from .fileio import FolderLockedError, atomic_path, remove_stale_temps, run_lock
from .learners import LEARNERS, evaluate_bound, marginal_eval_rng, prior_grads

__all__ = ["TrainConfig", "TrainingData", "TrainingDiverged", "RunFolderError", "train", "main", "eval_schedule",
           "evaluate", "prior_grads", "parse_overrides", "pick_learning_rate"]

evaluate = evaluate_bound          # the name earlier code used
RUN_FILES = ("config.json", "history.csv", "summary.json", "checkpoint.npz")
# what --overwrite removes besides RUN_FILES: only files a run writes, never a user's own
FIGURE_FILES = ("learning_curves.png", "samples.png", "reconstructions.png", "latent_scatter.png", "manifold.png")


class TrainingDiverged(RuntimeError):
    pass


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked (a user's mistake; one line on the command line)."""


# --------------------------------------------------------------------------- schedule

def eval_schedule(budget, batch_size, per_decade):
    """Sample counts 10^(k/per_decade) (rounded to whole minibatches) up to the budget, and the budget."""
    points = set()
    k = 0
    while True:
        s = int(round(10 ** (k / per_decade) / batch_size)) * batch_size
        if s > budget:
            break
        if s >= max(batch_size, 10_000):
            points.add(s)
        k += 1
    points.add(int(math.ceil(budget / batch_size)) * batch_size)
    return sorted(points)


# --------------------------------------------------------------------------- checkpoints

@dataclass
class RunState:
    """Everything that a resumed run needs besides the config and the learner's arrays."""
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    epoch_perm: np.ndarray = None
    epoch_pos: int = 0
    history: list = field(default_factory=list)       # rows (samples, seconds, train, test): the metric


SNAPSHOT_DIR = "snapshots"          # <out>/snapshots/checkpoint_<samples>.npz, with --snapshots
SNAPSHOT_RE = re.compile(r"checkpoint_\d{12}\.npz")
# files a study writes into a run's folder about its model (examples/marginal_table.py: log p(x) by
# importance sampling, of the run or of one of its snapshots): --overwrite removes them with the run,
# or a rerun of the study would continue from values computed for the replaced model
STUDY_FILE_RE = re.compile(r"marginal(_at\d+)?\.json|marginal_k\d+_seed\d+(_at\d+)?\.npz")


def snapshot_path(out, samples):
    """Where --snapshots keeps the checkpoint of the evaluation at this many training samples."""
    return os.path.join(out, SNAPSHOT_DIR, f"checkpoint_{samples:012d}.npz")


def _snapshot_files(out):
    """The snapshots a run wrote into out (never a user's own files beside them), as paths."""
    folder = os.path.join(out, SNAPSHOT_DIR)
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return [os.path.join(folder, n) for n in names if SNAPSHOT_RE.fullmatch(n)]


def _remove_snapshots(out):
    """Delete the snapshots a run wrote, and their folder if nothing else is in it."""
    for path in _snapshot_files(out):
        os.remove(path)
    folder = os.path.join(out, SNAPSHOT_DIR)
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def save_checkpoint(path, learner, rng, state, config):
    """Write the learner's arrays, the generator state, counters and history atomically (npz, no pickle)."""
    arrays = dict(learner.state_arrays())
    arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    arrays["config"] = np.array(json.dumps(dataclasses.asdict(config)))
    arrays["counters"] = np.array([state.samples, state.steps, state.epoch_pos], dtype=np.int64)
    arrays["seconds"] = np.array(state.seconds)
    arrays["epoch_perm"] = state.epoch_perm
    arrays["history"] = np.array(state.history, dtype=np.float64).reshape(-1, 4)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _open_checkpoint(path):
    """The checkpoint's arrays as a dict; RunFolderError (one line, saying what to do) when unreadable."""
    if not os.path.isfile(path):
        raise RunFolderError(f"{os.path.dirname(path) or '.'} has no checkpoint.npz, so there is nothing to resume; "
                             f"start a new run with --out={os.path.dirname(path) or '.'}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:                              # zipfile, OSError, ValueError: all mean "damaged"
        raise RunFolderError(f"{path} is damaged and cannot be read ({type(e).__name__}: {e}); the run cannot be "
                             f"resumed: start it again with --overwrite") from None


def checkpoint_config(path):
    """The TrainConfig a checkpoint was written with (the run's own record of what it is)."""
    arrays = _open_checkpoint(path)
    try:
        return TrainConfig.from_dict(json.loads(str(arrays["config"])), where=f"{path} (its config)")
    except (KeyError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} holds no readable config ({e}); the run cannot be resumed: start it again "
                             f"with --overwrite") from None


def load_checkpoint(path, learner, rng):
    """Restore what save_checkpoint wrote into the learner and rng (in place); return the RunState."""
    arrays = _open_checkpoint(path)
    try:
        learner.load_state_arrays(arrays)
        rng.bit_generator.state = json.loads(str(arrays["rng_state"]))
        samples, steps, pos = (int(v) for v in arrays["counters"])
        return RunState(samples, steps, float(arrays["seconds"]), arrays["epoch_perm"].copy(), pos,
                        [tuple(r) for r in arrays["history"].tolist()])
    except (KeyError, ValueError, TypeError) as e:
        raise RunFolderError(f"{path} does not fit this run ({e}); it cannot be resumed: start it again with "
                             f"--overwrite") from None


def write_history(path, history, metric_name="elbo"):
    """history.csv: samples, seconds, train_<metric>, test_<metric> (elbo: the bound; log_px: log p(x))."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["samples", "seconds", f"train_{metric_name}", f"test_{metric_name}"])
            for s, sec, tr, te in history:
                w.writerow([int(s), f"{sec:.3f}", f"{tr:.6f}", f"{te:.6f}"])


def write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def holds_a_run(out):
    return any(os.path.exists(os.path.join(out, name)) for name in RUN_FILES) or bool(_snapshot_files(out))


# --------------------------------------------------------------------------- the loop

class StopFlag:
    """Ctrl-C sets a flag; the loop stops at the next step boundary, so the checkpoint is consistent.
    A second Ctrl-C raises KeyboardInterrupt at once.  message: printed to stderr at the first."""

    def __init__(self, message=None):
        self.set = False
        self._old = None
        self.message = message

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:           # not the main thread: no handler, KeyboardInterrupt as usual
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.set:                 # a second Ctrl-C: stop now, without waiting for the step
            raise KeyboardInterrupt
        self.set = True
        if self.message:
            print(self.message, file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _print(message):
    print(message, flush=True)       # flushed, so a run's log file follows it under nohup


def _load_data(config):
    return load_training_data(config.dataset, config.binarize, config.dtype, config.data_dir or None,
                              config.eval_seed, config.frey_n_test, config.frey_split_seed)


def train(config, resume=False, callback=None, data=None, log=_print, overwrite=False):
    """Run (or resume) training as configured.  Returns the summary dict.

    callback(learner, state) is called after every step; returning True stops the run as
    Ctrl-C does (checkpoint written, summary marked "interrupted").  data: a TrainingData to use
    instead of loading (tests).  overwrite: replace a run that config.out already holds.
    Raises RunFolderError (before writing anything) when the folder cannot be used as asked.
    """
    config.validate()
    out = config.out
    ckpt_path = os.path.join(out, "checkpoint.npz")
    # -- nothing is written into the run folder until the run is known to start
    if resume:
        saved = checkpoint_config(ckpt_path)
        changed = saved.changes_a_resume_may_not_make(config)
        if changed:
            raise RunFolderError(f"--resume cannot change {', '.join(changed)} of the run in {out} "
                                 f"(only run options such as --samples); start a new run for a new experiment")
    elif holds_a_run(out) and not overwrite:
        raise RunFolderError(f"{out} already holds a run: continue it with --resume {out}, "
                             f"or replace it with --overwrite")
    if data is None:
        data = _load_data(config)
    data = first_n_training_points(data, config.n_train).astype(config.dtype)
    if config.lr_probe and not resume:
        lr, results = pick_learning_rate(config, data, log)
        config = dataclasses.replace(config, lr=lr, lr_probe=0, lr_probe_results=json.dumps(results))
    n_train, x_dim = data.train_x.shape
    if config.batch_size > n_train:
        raise ConfigError(f"--batch_size {config.batch_size} is larger than the training set ({n_train:,} images)")

    rng = np.random.default_rng(config.seed)
    learner = LEARNERS[config.algorithm](config, x_dim, n_train, rng, binary=data.binary)   # initial parameters first
    if resume:
        state = load_checkpoint(ckpt_path, learner, rng)
    else:
        state = RunState(epoch_perm=rng.permutation(n_train))

    os.makedirs(out, exist_ok=True)
    with _locked(out):
        if not resume:
            if holds_a_run(out) and not overwrite:        # another process started one meanwhile
                raise RunFolderError(f"{out} already holds a run: continue it with --resume {out}, "
                                     f"or replace it with --overwrite")
            for name in os.listdir(out):
                if name in RUN_FILES or name in FIGURE_FILES or STUDY_FILE_RE.fullmatch(name):
                    os.remove(os.path.join(out, name))
            _remove_snapshots(out)              # a replaced run's snapshots would pass for the new one's
        remove_stale_temps(out)
        if os.path.isdir(os.path.join(out, SNAPSHOT_DIR)):
            remove_stale_temps(os.path.join(out, SNAPSHOT_DIR))
        if resume:
            log(f"resumed from {ckpt_path} at {state.samples:,} training samples")
        log(f"{config.algorithm}: {learner.implementation}")
        write_json(os.path.join(out, "config.json"), dataclasses.asdict(config))
        # until it ends, the run is "running": a resumed run must not keep its last "finished"
        write_json(os.path.join(out, "summary.json"), _summary(config, learner, state, "running"))
        return _loop(config, learner, data, rng, state, ckpt_path, callback, log)


def first_n_training_points(data, n):
    """The training set cut to its first n images (n = 0: all of it); the test set is untouched."""
    if not n or data.train_x.shape[0] <= n:
        return data
    return dataclasses.replace(data, train_x=data.train_x[:n], train_eval_x=data.train_eval_x[:n])


@contextlib.contextmanager
def _locked(out):
    try:
        with run_lock(out):
            yield
    except FolderLockedError as e:
        raise RunFolderError(str(e)) from None


def _loop(config, learner, data, rng, state, ckpt_path, callback, log):
    out, dtype = config.out, np.dtype(config.dtype)
    # Fixed evaluation noise, so successive evaluations differ only through the parameters.
    eval_rng = np.random.default_rng(config.eval_seed + 1)
    eval_sets = {"train": data.train_eval_x, "test": data.test_x}
    if config.eval_max:
        eval_sets = {k: v[:config.eval_max] for k, v in eval_sets.items()}
    eval_eps = {k: eval_rng.standard_normal((1, v.shape[0], config.nz)).astype(dtype) for k, v in eval_sets.items()}

    def evaluate(which):
        if config.metric == "bound":
            return learner.evaluate(eval_sets[which], eval_eps[which])
        return learner.evaluate_marginal(eval_sets[which], marginal_eval_rng(config.eval_seed), log, data.train_x)

    schedule = [s for s in eval_schedule(config.samples, config.batch_size, config.eval_per_decade)
                if s > (state.history[-1][0] if state.history else 0)]
    budget = schedule[-1] if schedule else state.samples
    M, n_train = config.batch_size, data.train_x.shape[0]

    bar = _progress(config, budget, state.samples)
    last_ckpt = time.monotonic()
    status = "finished"
    # Said at once to a user watching the progress bar: an evaluation (the App. D estimate takes
    # minutes) may hold the stop a while.  A sweep's runs (no bar) leave it to the sweep, which says
    # it once for all of them; nothing is written to a log file from inside the signal handler.
    stopping = ("\nCtrl-C: stopping after this step" + (" and evaluation" if config.metric == "marginal" else "") +
                ", with a checkpoint (Ctrl-C again stops at once, losing the work since the last checkpoint)")
    with StopFlag(stopping if config.progress else None) as stop:
        t0 = time.perf_counter() - state.seconds
        while state.samples < budget:
            if state.epoch_pos + M > n_train:                       # a new epoch
                state.epoch_perm, state.epoch_pos = rng.permutation(n_train), 0
            idx = state.epoch_perm[state.epoch_pos:state.epoch_pos + M]
            if not learner.step(data, idx, rng):
                raise TrainingDiverged(
                    f"non-finite loss or gradient at step {state.steps + 1} ({state.samples:,} samples); "
                    f"the last good checkpoint is kept at {ckpt_path}")
            state.epoch_pos += M
            state.samples += M
            state.steps += 1
            if bar is not None:
                bar.update(M)
            if schedule and state.samples >= schedule[0]:
                state.seconds = time.perf_counter() - t0
                te = time.perf_counter()
                row = (state.samples, state.seconds, evaluate("train"), evaluate("test"))
                t0 += time.perf_counter() - te                       # evaluation time is not training time
                _check_finite(learner, state, ckpt_path)
                state.history.append(row)
                schedule.pop(0)
                write_history(os.path.join(out, "history.csv"), state.history, config.metric_name())
                if config.snapshots:      # the model as it was evaluated, for studies of how it changes
                    os.makedirs(os.path.join(out, SNAPSHOT_DIR), exist_ok=True)
                    save_checkpoint(snapshot_path(out, state.samples), learner, rng, state, config)
                if bar is not None:
                    bar.set_postfix(train=f"{row[2]:.2f}", test=f"{row[3]:.2f}")
                else:
                    log(f"{row[0]:>12,} samples  {row[1]:8.1f} s  train {row[2]:9.3f}  test {row[3]:9.3f}")
            if callback is not None and callback(learner, state):
                stop.set = True
            if stop.set or time.monotonic() - last_ckpt > config.checkpoint_seconds:
                state.seconds = time.perf_counter() - t0
                _check_finite(learner, state, ckpt_path)
                save_checkpoint(ckpt_path, learner, rng, state, config)
                last_ckpt = time.monotonic()
                if stop.set:
                    status = "interrupted"
                    break
        state.seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    _check_finite(learner, state, ckpt_path)
    save_checkpoint(ckpt_path, learner, rng, state, config)
    summary = _summary(config, learner, state, status)
    write_json(os.path.join(out, "summary.json"), summary)
    if status == "finished" and config.figures:
        from . import plots
        title = f"{config.dataset}, $N_z$ = {config.nz}" + (
            f", binarize={config.binarize}" if config.dataset == "mnist" else "")
        plots.make_figures(learner.vae, data, state.history, out, np.random.default_rng(config.eval_seed + 2),
                           title=title, paper=paper.fig2_value(config.algorithm, config.dataset, config.nz)
                           if config.metric == "bound" else None,
                           label=ALGORITHM_LABELS[config.algorithm], labelled_scatter=config.dataset == "mnist",
                           ylabel="average lower bound per datapoint" if config.metric == "bound"
                           else "average log p(x) (App. D estimate)", encoder=config.algorithm != "mcem")
    return summary


ALGORITHM_LABELS = {"aevb": "AEVB", "wakesleep": "wake-sleep", "mcem": "MCEM"}


def pick_learning_rate(config, data, log=_print):
    """The paper's rule (§5): of the step sizes {0.01, 0.02, 0.1}, the one that makes the most
    progress on the training set in the first iterations.

    Each candidate trains from the same initialization with the same minibatches and noise (the
    same seed) for ``config.lr_probe`` samples; the training bound is then compared on (at most)
    10,000 training points, whatever the run's --metric.  MCEM has no bound: it compares instead
    the App. D estimate of log p(x) on (at most) the first 1000 training points, evaluating once a
    decade (an evaluation's HMC chains take about a minute of one core on 1000 MNIST points).
    Returns (lr, {lr: training bound or log p(x)}).
    """
    import tempfile

    marginal = config.algorithm == "mcem"
    what, key = ("log p(x) (App. D)", "train_log_px") if marginal else ("bound", "train_elbo")
    evaluation = (dict(eval_per_decade=1, eval_max=min(config.eval_max or 1000, 1000)) if marginal
                  else dict(eval_max=10_000, metric="bound"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="npvae_lr_probe_") as tmp:
        for lr in paper.LR_CANDIDATES:
            probe = dataclasses.replace(config, lr=lr, samples=config.lr_probe, lr_probe=0, progress=False,
                                        figures=False, snapshots=False, out=os.path.join(tmp, str(lr)), **evaluation)
            try:
                value = train(probe, data=data, log=lambda *_: None)[key]
            except TrainingDiverged:
                value = float("nan")
            results[lr] = value
            log(f"lr probe: step size {lr}: training {what} {value:.3f} after {config.lr_probe:,} samples")
    finite = {lr: b for lr, b in results.items() if math.isfinite(b)}
    if not finite:
        raise TrainingDiverged(f"every step size in {paper.LR_CANDIDATES} diverged in the probe")
    best = max(finite, key=finite.get)
    log(f"lr probe: picked {best}")
    return best, results


def _check_finite(learner, state, ckpt_path):
    for k, p in learner.vae.params.items():
        if not np.isfinite(p).all():
            raise TrainingDiverged(f"parameter {k} became non-finite by step {state.steps} "
                                   f"({state.samples:,} samples); the last good checkpoint is kept at {ckpt_path}")


def _summary(config, learner, state, status):
    last = state.history[-1] if state.history else (state.samples, state.seconds, float("nan"), float("nan"))
    return {"status": status, "algorithm": config.algorithm, "implementation": learner.implementation,
            "samples": state.samples, "steps": state.steps, "seconds": round(state.seconds, 3),
            "evaluated_at": int(last[0]), f"train_{config.metric_name()}": last[2],
            f"test_{config.metric_name()}": last[3],
            "paper_fig2_train_test": paper.fig2_value(config.algorithm, config.dataset, config.nz),
            "config": dataclasses.asdict(config)}


def _progress(config, total, initial):
    if not config.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="sample", unit_scale=True, dynamic_ncols=True,
                file=sys.stderr, desc=f"{config.algorithm} {config.dataset} nz={config.nz}")


# --------------------------------------------------------------------------- the command line

def _take_flag(argv, name):
    if name in argv:
        argv.remove(name)
        return True
    return False


def _take_value(argv, name):
    for i, a in enumerate(argv):
        if a == name or a.startswith(name + "="):
            if "=" in a:
                value = a.partition("=")[2]
                del argv[i]
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                del argv[i:i + 2]
            else:
                raise ConfigError(f"{name} needs a folder: {name} runs/NAME")
            if not value:
                raise ConfigError(f"{name} needs a folder: {name} runs/NAME")
            return value
    return None


def resolve_config(argv, defaults, smoke_overrides=None):
    """(config, resume, overwrite) from the command line, checked, before anything is loaded or written."""
    argv = list(argv)
    if _take_flag(argv, "--smoke"):
        defaults = dataclasses.replace(defaults, **(smoke_overrides or {}))
    overwrite = _take_flag(argv, "--overwrite")
    resume_dir = _take_value(argv, "--resume")
    if resume_dir is None:
        return parse_overrides(argv, defaults).validate(), False, overwrite
    if overwrite:
        raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
    if not os.path.isdir(resume_dir):
        raise RunFolderError(f"--resume {resume_dir}: no such folder")
    saved = checkpoint_config(os.path.join(resume_dir, "checkpoint.npz"))
    config_json = os.path.join(resume_dir, "config.json")
    if os.path.exists(config_json):
        try:
            with open(config_json) as f:
                on_disk = TrainConfig.from_dict(json.load(f), where=config_json)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunFolderError(f"{config_json} is not valid JSON ({e}); the checkpoint holds the run's config, "
                                 f"so delete {config_json} and resume again") from None
        edited = saved.changes_a_resume_may_not_make(on_disk)
        if edited:
            raise RunFolderError(
                f"{config_json} differs from the run's checkpoint in {', '.join(edited)} (edited by hand?); "
                f"a resume cannot change those: restore them, or delete {config_json} to use the checkpoint's")
    config = parse_overrides(argv, dataclasses.replace(saved, out=resume_dir))
    changed = saved.changes_a_resume_may_not_make(config)
    if changed:
        raise RunFolderError(f"--resume cannot change {', '.join(changed)} of a run (only run options, such as "
                             f"--samples, --progress, --figures); start a new run with another --out instead")
    return dataclasses.replace(config, out=resume_dir).validate(), True, False


def no_data_message(config):
    """One line for a run whose data is nowhere: what is missing, where it was looked for, and how
    to provide it."""
    from .data import data_folders
    if config.dataset == "frey":
        what, files = "Frey Face", "frey_rawface.mat"
    elif config.binarize == "static":
        what, files = "binarized MNIST", "binarized_mnist_train.amat, _valid.amat and _test.amat"
    else:
        what, files = "MNIST", "mnist.pkl.gz (or the four MNIST idx files)"
    return (f"{what} not found: looked for {files} in {', '.join(data_folders(config.data_dir or None))} and could "
            f"not download it. Put it in a folder and pass --data_dir=FOLDER (or set NPVAE_DATA_DIR)")


@quiet_broken_pipe
def main(argv, defaults, smoke_overrides=None, prog=None):
    """Entry point for the example scripts: ``--smoke``, ``--resume DIR``, ``--overwrite``, ``--help``
    and ``--key=value`` overrides.  A user's mistake is one line ``error: ...`` on stderr, exit 2."""
    from .data import ChecksumError, DataNotFoundError
    prog = prog or os.path.basename(sys.argv[0] or "train")
    if "--help" in argv or "-h" in argv:
        print(help_text(defaults, prog, smoke=smoke_overrides is not None))
        return 0
    try:
        config, resume, overwrite = resolve_config(argv, defaults, smoke_overrides)
        print("config: " + json.dumps(dataclasses.asdict(config)), flush=True)
        summary = train(config, resume=resume, overwrite=overwrite)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DataNotFoundError:
        print(f"error: {no_data_message(config)}", file=sys.stderr)
        return 2
    except (TrainingDiverged, ChecksumError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted by Ctrl-C; the run folder keeps what was last written completely",
              file=sys.stderr)
        return 130
    if summary["status"] == "interrupted":
        print(f"interrupted at {summary['samples']:,} training samples; checkpoint written. "
              f"Continue with: --resume {config.out}")
        return 0
    fig2, key = summary["paper_fig2_train_test"], config.metric_name()
    what = "average lower bound per datapoint" if key == "elbo" else "average log p(x) (App. D estimate)"
    print(f"{summary['status']}: {summary['samples']:,} training samples in {summary['seconds']:.1f} s; "
          f"{what}: train {summary['train_' + key]:.2f}, test {summary['test_' + key]:.2f}"
          + (f" (paper, Fig. 2 end of training: train {fig2[0]}, test {fig2[1]})" if fig2 and key == "elbo" else ""))
    print(f"outputs in {config.out}/")
    return 0
