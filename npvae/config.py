"""A run's configuration: the paper's defaults (§5), typed ``--key=value`` overrides, and checks.

Each field says, in its metadata, what it means (``--help`` prints it) and whether ``--resume``
may change it.  Experiment fields (the model, the data, the optimizer, the seed) fix what a run
is, so a resume that changed one would silently splice two experiments: it is refused.  Run
fields (the budget, the display, where data are read from) may change between sessions.
"""
import dataclasses
import functools
import math
import os
import select
import sys
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A user's configuration mistake; the command line prints it as one line ``error: ...``."""


def _stdout_is_broken():
    """Whether standard output is a pipe whose reader has gone (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):          # no poll, or stdout is no file
        return False


def quiet_broken_pipe(main):
    """Decorate a command's main so that output piped into a reader that stops early (``--help |
    head``) ends the command quietly, as a Unix filter does, instead of with a BrokenPipeError
    traceback.  Python's signal docs ("Note on SIGPIPE") give the recipe: point stdout at devnull
    so that the interpreter's final flush cannot raise again.  A broken pipe anywhere else (a
    worker's, a socket's) is not the reader's doing, and is raised as before."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BrokenPipeError:
            if not _stdout_is_broken():
                raise
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 141                    # 128 + SIGPIPE, what a shell reports for a killed filter
    return wrapped


def _f(default, help, resumable=False, choices=None):
    return field(default=default, metadata={"help": help, "resumable": resumable, "choices": choices})


@dataclass
class TrainConfig:
    """A run's resolved configuration; the defaults are the paper's MNIST setting (§5)."""
    algorithm: str = _f("aevb", "learning algorithm: aevb (the paper's), wakesleep (its Fig. 2 baseline) or mcem "
                                "(Monte Carlo EM, App. E; needs --metric=marginal)",
                        choices=("aevb", "wakesleep", "mcem"))
    dataset: str = _f("mnist", "mnist or frey (Frey Face)", choices=("mnist", "frey"))
    binarize: str = _f("dynamic", "MNIST only: dynamic (fresh per minibatch), fixed (binarized once with "
                                  "--eval_seed), static (Larochelle's), none (grey)",
                       choices=("none", "dynamic", "fixed", "static"))
    n_train: int = _f(0, "train on the first n_train training images only (0: all); Fig. 3 uses 1000 and 50000")
    nz: int = _f(20, "latent dimensions; Fig. 2 uses 3, 5, 10, 20, 200 (MNIST) and 2, 5, 10, 20 (Frey)")
    hidden: tuple = _f((500,), "hidden widths, comma-separated; §5: 500 for MNIST, 200 for Frey Face")
    activation: str = _f("tanh", "hidden units (App. C: tanh)", choices=("tanh", "relu", "softplus", "sigmoid"))
    decoder: str = _f("auto", "p(x|z): auto (the paper's: bernoulli for MNIST, gaussian for Frey Face), bernoulli or "
                              "gaussian (sigmoid means; on MNIST needs --binarize=none)",
                      choices=("auto", "bernoulli", "gaussian"))
    decoder_var: float = _f(0.0, "AEVB, gaussian decoder: 0 learns log sigma^2 per pixel (App. C); > 0 fixes "
                                 "sigma^2 to this value for every pixel (squared error, scaled)")
    estimator: str = _f("B", "SGVB estimator: A (eq. 6) or B (eq. 7, analytic KL; the paper's experiments)",
                        choices=("A", "B"))
    samples: int = _f(3_000_000, "budget in training samples (Fig. 2's x-axis); a resume may extend it",
                      resumable=True)
    batch_size: int = _f(100, "minibatch size M (§5: 100)")
    L: int = _f(1, "samples of z per datapoint (§5: 1)")
    beta: float = _f(1.0, "AEVB: weight of the KL term in the objective (1: the bound, the paper; the curves "
                          "always show the bound)")
    kl_warmup: int = _f(0, "AEVB: training samples over which the KL weight rises linearly from 0 to --beta "
                           "(0: none, the paper)")
    mcem_leapfrog: int = _f(10, "Monte Carlo EM: leapfrog steps of each E-step's HMC transition (App. E: 10)")
    mcem_updates: int = _f(5, "Monte Carlo EM: Adagrad updates of the decoder per E-step (App. E: 5)")
    optimizer: str = _f("adagrad", "adagrad (§5), adam or sgd", choices=("adagrad", "adam", "sgd"))
    lr: float = _f(0.01, "step size; §5 picks it from {0.01, 0.02, 0.1} (see --lr_probe)")
    lr_probe: int = _f(0, "> 0: pick lr by the paper's rule, training this many samples per candidate")
    lr_probe_results: str = _f("", "filled in by the probe: {lr: training bound, or log p(x) for MCEM} as JSON")
    warmup: int = _f(10, "Adagrad: minibatches that only accumulate g^2 before the first step (authors' code)")
    prior: str = _f("weights", "N(0, I) parameter prior (§5, MAP) on weights, all parameters, or none",
                    choices=("weights", "all", "none"))
    init_std: float = _f(0.01, "initial parameters ~ N(0, init_std^2) (§5: 0.01)")
    seed: int = _f(0, "seed of the run's generator: initialization, minibatch order, binarization, noise")
    init_seed: int = _f(-1, "-1: initial parameters from the run's generator; otherwise from their own, seeded so "
                            "(to vary the initialization and the data/noise stream separately)")
    dtype: str = _f("float64", "float64 or float32", choices=("float64", "float32"))
    eval_per_decade: int = _f(4, "evaluations per decade of training samples (log-spaced)", resumable=True)
    metric: str = _f("bound", "what evaluations measure: bound (average lower bound per datapoint, Fig. 2) or "
                              "marginal (log p(x) by the App. D HMC estimator, Fig. 3; Nz <= 4)",
                     choices=("bound", "marginal"))
    marginal_start: str = _f("own", "where --metric=marginal's HMC chains start: own, the learner's rule (AEVB and "
                                    "wake-sleep: the encoder's mean; MCEM: best), or best, the highest log p(x, z) "
                                    "of that, z = 0, 256 prior draws and up to 2000 training points' z",
                             choices=("own", "best"))
    eval_max: int = _f(0, "evaluate on at most this many points per set (0: the full sets)")
    eval_seed: int = _f(1234, "seed of the fixed evaluation noise and the evaluation sets' binarization")
    frey_n_test: int = _f(0, "Frey Face test-set size (0: the data module's default, 465)")
    frey_split_seed: int = _f(0, "seed of the Frey Face train/test split (a seeded permutation of the 1,965 images)")
    checkpoint_seconds: float = _f(60.0, "write a checkpoint at least this often (seconds)", resumable=True)
    data_dir: str = _f("", "folder with the data files (default: $NPVAE_DATA_DIR, then ~/.cache/npvae)",
                       resumable=True)
    out: str = _f("runs/mnist", "the run's folder", resumable=True)
    fast: bool = _f(True, "use the fast step where it computes exactly what the readable one does",
                    resumable=True)
    step_threads: int = _f(0, "threads of the fast AEVB step: 2 runs the minibatch's two halves side by side, "
                              "each with one BLAS thread (for one job on two cores); 1 the serial step; 0: 2 "
                              "for float64 when NumPy's BLAS starts with 2 or more threads, else 1 (measured: "
                              "float64 gains 11-14%, float32 nothing reliable)", resumable=True)
    progress: bool = _f(True, "show a progress bar", resumable=True)
    figures: bool = _f(True, "draw the figures at the end of the run", resumable=True)
    snapshots: bool = _f(False, "also keep the checkpoint of every evaluation, as <out>/snapshots/checkpoint_"
                                "<samples>.npz (for studies of how a model changes as it trains)", resumable=True)

    def metric_name(self):
        """The evaluated quantity's name in history.csv and summary.json: elbo (the bound) or log_px."""
        return "elbo" if self.metric == "bound" else "log_px"

    def likelihood(self):
        """The decoder's distribution: --decoder, or with "auto" the paper's for the data set."""
        if self.decoder != "auto":
            return self.decoder
        return "bernoulli" if self.dataset == "mnist" else "gaussian"

    def validate(self):
        """Check every value (no data is loaded); raise ConfigError naming the option."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}")
        for name in ("nz", "samples", "batch_size", "L", "eval_per_decade", "mcem_leapfrog", "mcem_updates"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive; got {getattr(self, name)}")
        for name in ("lr_probe", "warmup", "eval_max", "seed", "eval_seed", "frey_n_test", "frey_split_seed", "n_train",
                     "kl_warmup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be 0 or more; got {getattr(self, name)}")
        if self.step_threads not in (0, 1, 2):
            raise ConfigError(f"--step_threads must be 0 (automatic), 1 or 2; got {self.step_threads}")
        if self.init_seed < -1:
            raise ConfigError(f"--init_seed must be -1 (from the run's generator) or 0 or more; got {self.init_seed}")
        if not self.hidden or min(self.hidden) <= 0:
            raise ConfigError(f"--hidden must be positive widths; got {','.join(map(str, self.hidden)) or 'none'}")
        for name in ("lr", "init_std", "checkpoint_seconds"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"--{name} must be a positive finite number; got {v}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ConfigError(f"--beta must be a finite number >= 0; got {self.beta}")
        if self.algorithm != "aevb" and (self.beta != 1.0 or self.kl_warmup):
            raise ConfigError(f"--beta and --kl_warmup weight AEVB's KL term; {self.algorithm} has none")
        if self.likelihood() == "gaussian" and self.dataset == "mnist" and self.binarize != "none":
            raise ConfigError(f"--decoder=gaussian on 0/1 data (--binarize={self.binarize}) has an unbounded density "
                              f"(sigma -> 0 at every pixel): use --binarize=none (grey levels)")
        if not (math.isfinite(self.decoder_var) and self.decoder_var >= 0):
            raise ConfigError(f"--decoder_var must be a finite number >= 0; got {self.decoder_var}")
        if self.decoder_var and self.likelihood() != "gaussian":
            raise ConfigError(f"--decoder_var fixes a gaussian decoder's variance; this run's decoder is "
                              f"{self.likelihood()} (add --decoder=gaussian)")
        if self.decoder_var and self.algorithm != "aevb":
            raise ConfigError(f"--decoder_var is implemented for AEVB only, not {self.algorithm}")
        from .distributions import LOGVAR_MAX, LOGVAR_MIN
        if self.decoder_var and not math.exp(LOGVAR_MIN) <= self.decoder_var <= math.exp(LOGVAR_MAX):
            raise ConfigError(f"--decoder_var must lie in [exp({LOGVAR_MIN:g}), exp({LOGVAR_MAX:g})] (the log-variance "
                              f"clamp); got {self.decoder_var}")
        if self.algorithm == "mcem" and self.metric != "marginal":
            raise ConfigError("--algorithm=mcem has no encoder, so no lower bound to evaluate: add --metric=marginal")
        if self.marginal_start != "own" and self.metric != "marginal":
            raise ConfigError(f"--marginal_start={self.marginal_start} sets where the App. D estimator's chains start: "
                              f"add --metric=marginal")
        if self.metric == "marginal" and self.nz > 4:
            raise ConfigError(f"--metric=marginal (App. D) fits a density to 25 posterior samples per datapoint: "
                              f"it is for Nz <= 4, got --nz={self.nz}")
        from .data import FREY_N, train_set_size
        if self.dataset == "frey" and self.frey_n_test >= FREY_N:
            raise ConfigError(f"--frey_n_test must be below {FREY_N} (the number of Frey Face images)")
        n_train = train_set_size(self.dataset, self.binarize, self.frey_n_test)
        if self.n_train > n_train:
            raise ConfigError(f"--n_train {self.n_train} is larger than the training set ({n_train:,} images)")
        n_train = self.n_train or n_train
        if self.batch_size > n_train:
            raise ConfigError(f"--batch_size {self.batch_size} is larger than the training set ({n_train:,} images)")
        if self.lr_probe and self.lr_probe < self.batch_size:
            raise ConfigError(f"--lr_probe {self.lr_probe} is less than one minibatch ({self.batch_size})")
        return self

    def changes_a_resume_may_not_make(self, other):
        """Names of the fields in which other differs from self and that a resume may not change."""
        return [f.name for f in dataclasses.fields(self)
                if not f.metadata.get("resumable") and getattr(self, f.name) != getattr(other, f.name)]

    @classmethod
    def from_dict(cls, d, where="config"):
        """A config from its JSON form (fields missing from an older run take their defaults)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        values = dict(d)
        if "hidden" in values:
            try:
                values["hidden"] = tuple(int(w) for w in values["hidden"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: hidden must be a list of widths; got {values['hidden']!r}") from None
        for k, v in values.items():
            if not _has_type_of(v, names[k].default):
                raise ConfigError(f"{where}: {k} must be {type(names[k].default).__name__}; got {v!r}")
        return cls(**values)


def _has_type_of(value, default):
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


# --------------------------------------------------------------------------- command line

def parse_overrides(argv, defaults):
    """``--key=value`` (or ``--key value``) overrides of a TrainConfig, typed by its fields (nanoGPT style)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key=value, got {arg!r} (see --help)")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown option --{key} (see --help for the options)")
        if not eq:
            if args and not args[0].startswith("--"):
                value = args.pop(0)
            elif fields[key].type in (bool, "bool"):
                value = "true"                    # a bare --flag
            else:
                raise ConfigError(f"--{key} needs a value")
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
            if "e" in text.lower():
                v = float(text)
                if not (math.isfinite(v) and v == int(v)):
                    raise ValueError(text)
                return int(v)
            return int(text)
        if isinstance(default, float):
            return float(text)
        return text
    except (ValueError, OverflowError):
        kind = {bool: "true/false", tuple: "comma-separated integers", int: "an integer", float: "a number"}
        raise ConfigError(f"--{key}: cannot read {text!r} as {kind.get(type(default), 'text')}") from None


def help_text(defaults, prog="", smoke=False):
    """Every option with its default and its meaning (what ``--help`` prints)."""
    lines = [f"usage: {prog} [--smoke] [--resume DIR] [--overwrite] [--key=value ...]", "",
             "  --smoke          a tiny run of the whole pipeline (seconds)" if smoke else "",
             "  --resume DIR     continue the run in DIR (only run options may change, e.g. --samples)",
             "  --overwrite      replace the run that --out already holds", "", "options (default):"]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(defaults, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value).lower() \
            if isinstance(value, bool) else repr(value) if value == "" else str(value)
        lines.append(f"  --{f.name}={shown}".ljust(34) + f"  {f.metadata['help']}")
    return "\n".join(line for line in lines if line is not None)
