"""Training with AEVB (the paper's Algorithm 1): one loop to read top to bottom.

    for each minibatch of M datapoints (drawn without replacement, epoch by epoch):
        x   <- the minibatch (re-binarized with the run's generator for binarize="dynamic")
        eps <- N(0, I) noise of shape (L, M, Nz)                      (Algorithm 1, line 4)
        g   <- gradient of  -[ mean_i elbo_i + log p(theta) / N ]     (eq. 8 divided by N)
        theta <- optimizer step (Adagrad by default)                  (Algorithm 1, line 6)

Dividing eq. 8, (N/M) sum_i elbo_i + log p(theta), by N gives the per-datapoint
objective that ``VAE.loss_and_grads`` already computes, plus the prior term
scaled by 1/N per datapoint (M/N per minibatch sum, as in the authors' code).
Adagrad is invariant to that constant factor but for its eps.

The prior p(theta) = N(0, I) (MAP, §5 "small weight decay") is put on the
weight matrices only (``*.W``), not on biases, as in the authors' code.

Everything random comes from one ``numpy.random.Generator`` created from
``config.seed``; its state is checkpointed, so a resumed run ends with
bitwise the same parameters as an uninterrupted one.
"""
import csv
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .data import binarize
from .fast import FastStep
from .fileio import atomic_path
from .model import VAE
from .optim import has_prior, make_optimizer

PAPER_FIG2 = {  # ../shared/PAPER.md, read off Figure 2 (end of training): (train, test)
    ("mnist", 3): (-128, -133.5), ("mnist", 5): (-115, -119), ("mnist", 10): (-99, -103.5),
    ("mnist", 20): (-97, -100), ("mnist", 200): (-97, -100),
    ("frey", 2): (940, 880), ("frey", 5): (1230, 1110), ("frey", 10): (1460, 1300), ("frey", 20): (1490, 1310),
}


@dataclass
class TrainConfig:
    """A run's resolved configuration; the defaults are the paper's MNIST setting (§5)."""
    dataset: str = "mnist"          # "mnist" or "frey"
    binarize: str = "dynamic"       # MNIST only: "none" (grey levels), "dynamic", "static" (Larochelle)
    nz: int = 20                    # latent dimensions; Fig. 2 uses 3, 5, 10, 20, 200 (MNIST)
    hidden: tuple = (500,)          # §5: 500 hidden units for MNIST, 200 for Frey Face
    activation: str = "tanh"        # App. C
    estimator: str = "B"            # eq. 7 (analytic KL), used for the paper's experiments
    samples: int = 3_000_000        # budget: training samples evaluated (Fig. 2's x-axis)
    batch_size: int = 100           # M = 100 (§5)
    L: int = 1                      # samples of z per datapoint (§5)
    optimizer: str = "adagrad"      # §5
    lr: float = 0.01                # §5: picked from {0.01, 0.02, 0.1} ...
    lr_probe: int = 0               # ... by the paper's rule when > 0: this many samples per candidate
    lr_probe_results: str = ""      # filled in by the probe: {lr: train bound} as JSON
    warmup: int = 10                # Adagrad: minibatches that only accumulate g^2 (authors' code)
    prior: str = "weights"          # N(0, I) prior on "weights", "all" parameters, or "none" (§5: MAP)
    init_std: float = 0.01          # §5: N(0, 0.01^2)
    seed: int = 0
    dtype: str = "float64"
    eval_per_decade: int = 4        # evaluations at log-spaced sample counts (10^(k/4))
    eval_max: int = 0               # evaluate on at most this many points per set (0: the full sets)
    eval_seed: int = 1234           # fixed evaluation noise and eval-set binarization
    frey_n_test: int = 0            # 0: data module's default split
    checkpoint_seconds: float = 60.0
    data_dir: str = ""              # "" : NPVAE_DATA_DIR, then ~/.cache/npvae
    out: str = "runs/mnist"
    fast: bool = True               # npvae.fast.FastStep where it applies (tanh, Bernoulli, estimator B)
    progress: bool = True
    figures: bool = True

    def likelihood(self):
        return "bernoulli" if self.dataset == "mnist" else "gaussian"

    def validate(self):
        choices = {"dataset": ("mnist", "frey"), "binarize": ("none", "dynamic", "static"),
                   "estimator": ("A", "B"), "optimizer": ("adagrad", "adam", "sgd"),
                   "prior": ("weights", "all", "none"), "dtype": ("float64", "float32")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("nz", "samples", "batch_size", "L", "eval_per_decade"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.hidden or min(self.hidden) <= 0:
            raise ValueError(f"hidden must be positive widths, got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive, got {self.lr}")
        return self


# --------------------------------------------------------------------------- command line

def parse_overrides(argv, defaults):
    """``--key=value`` (or ``--key value``) overrides of a TrainConfig, typed by its fields (nanoGPT style)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ValueError(f"expected --key=value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise ValueError(f"unknown option --{key}; known: {', '.join(sorted(fields))}")
        if not eq:
            if fields[key].type in (bool, "bool") and (not args or args[0].startswith("--")):
                value = "true"
            elif args:
                value = args.pop(0)
            else:
                raise ValueError(f"--{key} needs a value")
        values[key] = _convert(key, value, getattr(defaults, key))
    return dataclasses.replace(defaults, **values)


def _convert(key, text, default):
    try:
        if isinstance(default, bool):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, tuple):
            return tuple(int(w) for w in text.split(","))
        if isinstance(default, int):
            return int(float(text)) if "e" in text.lower() else int(text)
        if isinstance(default, float):
            return float(text)
        return text
    except ValueError:
        raise ValueError(f"--{key}: cannot read {text!r} as {type(default).__name__}") from None


# --------------------------------------------------------------------------- data

@dataclass
class TrainingData:
    train_x: np.ndarray          # what minibatches are drawn from (grey levels when binarize="dynamic")
    train_eval_x: np.ndarray     # the training set as evaluated (binarized once for "dynamic")
    test_x: np.ndarray
    test_y: object               # labels or None
    image_shape: tuple
    dynamic: bool                # re-binarize each minibatch with the run's generator


def load_training_data(config):
    """Load and prepare the data sets that a config names."""
    from . import data

    dtype = np.dtype(config.dtype)
    path = config.data_dir or None
    if config.dataset == "frey":
        kw = {"n_test": config.frey_n_test} if config.frey_n_test else {}
        ds = data.load_frey_face(path, dtype=dtype, **kw)
        return TrainingData(ds.train.x, ds.train.x, ds.test.x, None, ds.image_shape, False)
    if config.binarize == "static":
        ds = data.load_binarized_mnist(path, dtype=dtype)    # no labels: its rows do not align with mnist.pkl.gz
        return TrainingData(ds.train.x, ds.train.x, ds.test.x, None, ds.image_shape, False)
    ds = data.load_mnist(path, dtype=dtype)
    if config.binarize == "none":
        return TrainingData(ds.train.x, ds.train.x, ds.test.x, ds.test.y, ds.image_shape, False)
    # dynamic: evaluation sets are binarized once, with a generator of their own
    eval_rng = np.random.default_rng(config.eval_seed)
    return TrainingData(ds.train.x, data.binarize(ds.train.x, eval_rng), data.binarize(ds.test.x, eval_rng),
                        ds.test.y, ds.image_shape, True)


# --------------------------------------------------------------------------- evaluation

def evaluate(vae, x, eps, estimator="B", batch_size=1000):
    """Average lower bound per datapoint over x, with the given fixed noise eps: (L, n, Nz)."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        total += float(vae.elbo(x[sl], eps[:, sl], estimator).sum(dtype=np.float64))
    return total / x.shape[0]


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


def prior_grads(params, grads, scale, which):
    """Add the gradient of -log N(theta; 0, I) * scale to grads, in place (weights only, or all)."""
    for name, p in params.items():
        if has_prior(name, which):
            grads[name] += scale * p


# --------------------------------------------------------------------------- checkpoints

class TrainingDiverged(RuntimeError):
    pass


@dataclass
class RunState:
    """Everything that a resumed run needs besides the config."""
    samples: int = 0
    steps: int = 0
    seconds: float = 0.0
    epoch_perm: np.ndarray = None
    epoch_pos: int = 0
    history: list = field(default_factory=list)       # rows (samples, seconds, train_elbo, test_elbo)


def save_checkpoint(path, vae, opt, rng, state, config):
    """Write params, optimizer state, generator state, counters and history atomically (npz, no pickle)."""
    arrays = {f"param/{k}": v for k, v in vae.params.items()}
    arrays.update({f"opt/{k}": v for k, v in opt.state_dict().items()})
    arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    arrays["config"] = np.array(json.dumps(dataclasses.asdict(config)))
    arrays["counters"] = np.array([state.samples, state.steps, state.epoch_pos], dtype=np.int64)
    arrays["seconds"] = np.array(state.seconds)
    arrays["epoch_perm"] = state.epoch_perm
    arrays["history"] = np.array(state.history, dtype=np.float64).reshape(-1, 4)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_checkpoint(path, vae, opt, rng):
    """Restore what save_checkpoint wrote into vae, opt and rng (in place); return the RunState."""
    with np.load(path, allow_pickle=False) as z:
        for k in vae.params:
            saved = z[f"param/{k}"]
            if saved.shape != vae.params[k].shape:
                raise ValueError(f"checkpoint {path}: {k} has shape {saved.shape}, the model {vae.params[k].shape}")
            vae.params[k][...] = saved
        opt.load_state_dict({k[4:]: z[k] for k in z.files if k.startswith("opt/")})
        rng.bit_generator.state = json.loads(str(z["rng_state"]))
        samples, steps, pos = (int(v) for v in z["counters"])
        return RunState(samples, steps, float(z["seconds"]), z["epoch_perm"].copy(), pos,
                        [tuple(r) for r in z["history"].tolist()])


def write_history(path, history):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["samples", "seconds", "train_elbo", "test_elbo"])
            for s, sec, tr, te in history:
                w.writerow([int(s), f"{sec:.3f}", f"{tr:.6f}", f"{te:.6f}"])


def write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


# --------------------------------------------------------------------------- the loop

class _StopFlag:
    """Ctrl-C sets a flag; the loop stops at the next step boundary, so the checkpoint is consistent."""

    def __init__(self):
        self.set = False
        self._old = None

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

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _print(message):
    print(message, flush=True)       # flushed, so a run's log file follows it under nohup


def train(config, resume=False, callback=None, data=None, log=_print):
    """Run (or resume) AEVB training as configured.  Returns the summary dict.

    callback(vae, state) is called after every step; returning True stops the
    run as Ctrl-C does (checkpoint written, summary marked "interrupted").
    data: a TrainingData to use instead of loading (tests).
    """
    config.validate()
    out = config.out
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "checkpoint.npz")
    if data is None:
        data = load_training_data(config)
    if config.lr_probe and not resume:
        lr, results = pick_learning_rate(config, data, log)
        config = dataclasses.replace(config, lr=lr, lr_probe=0, lr_probe_results=json.dumps(results))
    n_train, x_dim = data.train_x.shape
    dtype = np.dtype(config.dtype)

    rng = np.random.default_rng(config.seed)
    vae = VAE(x_dim, config.nz, config.hidden, config.likelihood(), seed=rng, dtype=dtype,
              activation=config.activation, init_std=config.init_std)
    opt_kwargs = {"lr": config.lr}
    if config.optimizer == "adagrad":
        opt_kwargs["warmup"] = config.warmup
    opt = make_optimizer(config.optimizer, **opt_kwargs)
    if resume:
        state = load_checkpoint(ckpt_path, vae, opt, rng)
        log(f"resumed from {ckpt_path} at {state.samples:,} training samples")
    else:
        state = RunState(epoch_perm=rng.permutation(n_train))
    write_json(os.path.join(out, "config.json"), dataclasses.asdict(config))

    # Fixed evaluation noise, so successive evaluations differ only through the parameters.
    eval_rng = np.random.default_rng(config.eval_seed + 1)
    eval_sets = {"train": data.train_eval_x, "test": data.test_x}
    if config.eval_max:
        eval_sets = {k: v[:config.eval_max] for k, v in eval_sets.items()}
    eval_eps = {k: eval_rng.standard_normal((1, v.shape[0], config.nz)).astype(dtype) for k, v in eval_sets.items()}

    schedule = [s for s in eval_schedule(config.samples, config.batch_size, config.eval_per_decade)
                if s > (state.history[-1][0] if state.history else 0)]
    budget = schedule[-1] if schedule else state.samples
    M, L, prior_scale = config.batch_size, config.L, 1.0 / n_train

    fast = None
    if config.fast and FastStep.supports(vae, config.estimator):
        fast = FastStep(vae, opt, M, L, config.prior, prior_scale)

    bar = _progress(config, budget, state.samples)
    last_ckpt = time.monotonic()
    status = "finished"
    with _StopFlag() as stop:
        t0 = time.perf_counter() - state.seconds
        while state.samples < budget:
            # -- one step of Algorithm 1 ------------------------------------------------------
            if state.epoch_pos + M > n_train:                       # a new epoch
                state.epoch_perm, state.epoch_pos = rng.permutation(n_train), 0
            idx = state.epoch_perm[state.epoch_pos:state.epoch_pos + M]
            if fast is not None:                                     # same arithmetic, preallocated
                x, eps = fast.load_batch(data.train_x, idx, rng, data.dynamic)
                _, finite = fast.step(x, eps)
            else:                                                    # the readable reference
                x = data.train_x[idx]
                if data.dynamic:
                    x = binarize(x, rng)
                eps = rng.standard_normal((L, M, config.nz)).astype(dtype)   # float64 draws: float32 runs see the same noise
                loss, grads = vae.loss_and_grads(x, eps, config.estimator)
                finite = math.isfinite(loss)
                if finite:
                    prior_grads(vae.params, grads, prior_scale, config.prior)
                    opt.update(vae.params, grads)
            if not finite:
                raise TrainingDiverged(
                    f"non-finite loss or gradient at step {state.steps + 1} ({state.samples:,} samples); "
                    f"the last good checkpoint is kept at {ckpt_path}")
            state.epoch_pos += M
            state.samples += M
            state.steps += 1
            # ----------------------------------------------------------------------------------
            if bar is not None:
                bar.update(M)
            if schedule and state.samples >= schedule[0]:
                state.seconds = time.perf_counter() - t0
                te = time.perf_counter()
                row = (state.samples, state.seconds,
                       evaluate(vae, eval_sets["train"], eval_eps["train"], config.estimator),
                       evaluate(vae, eval_sets["test"], eval_eps["test"], config.estimator))
                t0 += time.perf_counter() - te                       # evaluation time is not training time
                _check_finite(vae, state, ckpt_path)
                state.history.append(row)
                schedule.pop(0)
                write_history(os.path.join(out, "history.csv"), state.history)
                if bar is not None:
                    bar.set_postfix(train=f"{row[2]:.2f}", test=f"{row[3]:.2f}")
                else:
                    log(f"{row[0]:>12,} samples  {row[1]:8.1f} s  train {row[2]:9.3f}  test {row[3]:9.3f}")
            if callback is not None and callback(vae, state):
                stop.set = True
            if stop.set or time.monotonic() - last_ckpt > config.checkpoint_seconds:
                state.seconds = time.perf_counter() - t0
                _check_finite(vae, state, ckpt_path)
                save_checkpoint(ckpt_path, vae, opt, rng, state, config)
                last_ckpt = time.monotonic()
                if stop.set:
                    status = "interrupted"
                    break
        state.seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    _check_finite(vae, state, ckpt_path)
    save_checkpoint(ckpt_path, vae, opt, rng, state, config)
    summary = _summary(config, state, status)
    write_json(os.path.join(out, "summary.json"), summary)
    if status == "finished" and config.figures:
        from . import plots
        plots.make_figures(vae, data, state.history, out, config, np.random.default_rng(config.eval_seed + 2))
    return summary


LR_CANDIDATES = (0.01, 0.02, 0.1)   # §5


def pick_learning_rate(config, data, log=_print):
    """The paper's rule (§5): of the step sizes {0.01, 0.02, 0.1}, the one that makes the most
    progress on the training set in the first iterations.

    Each candidate trains from the same initialization with the same minibatches and noise (the
    same seed) for ``config.lr_probe`` samples; the training bound is then compared on (at most)
    10,000 training points.  Returns (lr, {lr: bound}).
    """
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory(prefix="npvae_lr_probe_") as tmp:
        for lr in LR_CANDIDATES:
            probe = dataclasses.replace(config, lr=lr, samples=config.lr_probe, lr_probe=0, progress=False,
                                        figures=False, eval_max=10_000, out=os.path.join(tmp, str(lr)))
            try:
                bound = train(probe, data=data, log=lambda *_: None)["train_elbo"]
            except TrainingDiverged:
                bound = float("nan")
            results[lr] = bound
            log(f"lr probe: step size {lr}: training bound {bound:.3f} after {config.lr_probe:,} samples")
    finite = {lr: b for lr, b in results.items() if math.isfinite(b)}
    if not finite:
        raise TrainingDiverged(f"every step size in {LR_CANDIDATES} diverged in the probe")
    best = max(finite, key=finite.get)
    log(f"lr probe: picked {best}")
    return best, results


def _check_finite(vae, state, ckpt_path):
    for k, p in vae.params.items():
        if not np.isfinite(p).all():
            raise TrainingDiverged(f"parameter {k} became non-finite by step {state.steps} "
                                   f"({state.samples:,} samples); the last good checkpoint is kept at {ckpt_path}")


def _summary(config, state, status):
    last = state.history[-1] if state.history else (state.samples, state.seconds, float("nan"), float("nan"))
    paper = PAPER_FIG2.get((config.dataset, config.nz))
    return {"status": status, "samples": state.samples, "steps": state.steps, "seconds": round(state.seconds, 3),
            "evaluated_at": int(last[0]), "train_elbo": last[2], "test_elbo": last[3],
            "paper_fig2_train_test": paper, "config": dataclasses.asdict(config)}


def _progress(config, total, initial):
    if not config.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="sample", unit_scale=True, dynamic_ncols=True,
                file=sys.stderr, desc=f"{config.dataset} nz={config.nz}")


def main(argv, defaults, smoke_overrides=None):
    """Entry point for the example scripts: ``--smoke``, ``--resume DIR`` and ``--key=value`` overrides."""
    argv = list(argv)
    smoke = "--smoke" in argv
    if smoke:
        argv.remove("--smoke")
        defaults = dataclasses.replace(defaults, **(smoke_overrides or {}))
    resume_dir = None
    for i, a in enumerate(argv):
        if a.startswith("--resume"):
            resume_dir = a.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else "")
            del argv[i:i + (1 if "=" in a else 2)]
            break
    if resume_dir is not None:
        with open(os.path.join(resume_dir, "config.json")) as f:
            saved = json.load(f)
        saved["hidden"] = tuple(saved["hidden"])
        defaults = TrainConfig(**saved)
        config = parse_overrides(argv, defaults)
        changed = {k for k in saved if getattr(config, k) != getattr(defaults, k)}
        if changed - {"samples", "progress", "figures", "checkpoint_seconds", "data_dir", "fast"}:
            raise SystemExit(f"--resume: cannot change {sorted(changed)} of a run (only the budget and display)")
        config = dataclasses.replace(config, out=resume_dir)
    else:
        config = parse_overrides(argv, defaults)
    config.validate()
    print("config: " + json.dumps(dataclasses.asdict(config)), flush=True)
    from .data import ChecksumError, DataNotFoundError
    try:
        summary = train(config, resume=resume_dir is not None)
    except (TrainingDiverged, DataNotFoundError, ChecksumError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if summary["status"] == "interrupted":
        print(f"interrupted at {summary['samples']:,} training samples; checkpoint written. "
              f"Continue with: --resume {config.out}")
        return 0
    paper = summary["paper_fig2_train_test"]
    print(f"{summary['status']}: {summary['samples']:,} training samples in {summary['seconds']:.1f} s; "
          f"average lower bound per datapoint: train {summary['train_elbo']:.2f}, test {summary['test_elbo']:.2f}"
          + (f" (paper, Fig. 2 end of training: train {paper[0]}, test {paper[1]})" if paper else ""))
    print(f"outputs in {config.out}/")
    return 0
