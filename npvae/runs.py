"""Trained models from run folders: what a figure reads from a run that the harness wrote.

    run = load_run("runs/fig45/mnist_nz2")   # or a --snapshots file: ".../snapshots/checkpoint_<samples>.npz"
    run.vae            # the VAE with the checkpoint's parameters, in the run's dtype
    run.samples        # training samples those parameters have seen
    run.config         # the run's TrainConfig;  run.status: finished, running, interrupted or unknown
    run.chains         # Monte Carlo EM only: its training points' chain positions (N, Nz); else None
    evaluation_sets(run.config)["test"]   # (x, eps): the test points and fixed noise its bound was evaluated with

Everything comes from the run's checkpoint.npz (``npvae.train.save_checkpoint``): the parameters
("param/<name>"), the run's config ("config", JSON) and its counters ("counters": training
samples, steps, position in the epoch).  They are written together in one atomic file, so the
parameters and the number of training samples they have seen always agree, even while the run
is still training.  config.json beside it may have been edited by hand, and summary.json is
rewritten at a run's start, so neither is trusted for the model; summary.json only says whether
the run has finished.
"""
import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from .config import ConfigError, TrainConfig
from .data import FREY_SHAPE
from .model import VAE

# (rows, cols) of one image, as npvae.data's loaders give TrainingData.image_shape; here so that a
# figure can draw a run's images without loading its data set
IMAGE_SHAPES = {"mnist": (28, 28), "frey": FREY_SHAPE}


class RunLoadError(ValueError):
    """A folder that holds no readable trained run (the message names the folder and why)."""


@dataclass(frozen=True)
class TrainedRun:
    folder: str
    vae: VAE
    config: TrainConfig
    samples: int            # training samples the parameters have seen (the checkpoint's counter)
    status: str             # summary.json's "status": finished, running, interrupted; "snapshot" for a
                            # checkpoint file itself; "unknown" if unreadable
    chains: np.ndarray = None   # MCEM's persistent chains ("mcem/z"), from the same file as the parameters

    @property
    def image_shape(self):
        return IMAGE_SHAPES[self.config.dataset]


def checkpoint_path(run):
    """run: a run folder, or a checkpoint file itself (a --snapshots copy, <run>/snapshots/checkpoint_<samples>.npz)."""
    run = os.fspath(run)
    return run if os.path.isfile(run) else os.path.join(run, "checkpoint.npz")


def run_folder(run):
    """The run folder of a run folder or of a checkpoint file in it or in its snapshots/."""
    run = os.path.normpath(os.fspath(run))
    if not os.path.isfile(run):
        return run
    from .train import SNAPSHOT_DIR
    parent = os.path.dirname(run) or "."      # a bare file name is in the working directory
    # the absolute path says whether the parent is snapshots/ even for "checkpoint_x.npz" or "."
    in_snapshots = os.path.basename(os.path.abspath(parent)) == SNAPSHOT_DIR
    return os.path.normpath(os.path.join(parent, os.pardir)) if in_snapshots else parent


def has_checkpoint(folder):
    return os.path.isfile(checkpoint_path(folder))


def _read_checkpoint(folder, want_params):
    """(config dict, training samples, {name: array}) from folder/checkpoint.npz; with want_params,
    MCEM's chains ride along in the dict as "mcem/z" (one read, so they fit the parameters)."""
    path = checkpoint_path(folder)
    if not os.path.isfile(path):
        raise RunLoadError(f"{folder} holds no trained run (no checkpoint.npz)")
    try:
        with np.load(path, allow_pickle=False) as z:
            config = json.loads(str(z["config"]))
            samples = int(z["counters"][0])
            params = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")} if want_params else {}
            if want_params and "mcem/z" in z.files:
                params["mcem/z"] = z["mcem/z"]
    except Exception as e:        # zipfile, OSError, KeyError, JSON, ValueError: all mean "not readable"
        raise RunLoadError(f"{path} cannot be read as a run's checkpoint ({type(e).__name__}: {e})") from None
    return config, samples, params


def _config_of(raw_config, folder):
    try:
        return TrainConfig.from_dict(raw_config, where=f"{checkpoint_path(folder)} (its config)")
    except ConfigError as e:
        raise RunLoadError(str(e)) from None


def read_checkpoint_config(folder):
    """(TrainConfig, training samples reached) of folder's checkpoint, without its parameters."""
    raw_config, samples, _ = _read_checkpoint(folder, want_params=False)
    return _config_of(raw_config, folder), samples


def run_status(folder):
    """summary.json's "status" (finished, running, interrupted), "snapshot" for a checkpoint file
    itself, or "unknown" when summary.json is missing or unreadable."""
    if os.path.isfile(folder):
        return "snapshot"
    try:
        with open(os.path.join(folder, "summary.json")) as f:
            return str(json.load(f)["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def load_run(folder, dtype=None):
    """The trained model of a run folder, with its config, budget reached and status.

    dtype: the model's float type (default: the run's own).  Raises RunLoadError (one line) when
    the folder holds no checkpoint, or one whose parameters do not fit its own config."""
    raw_config, samples, params = _read_checkpoint(folder, want_params=True)
    chains = params.pop("mcem/z", None)
    config = _config_of(raw_config, folder)
    out_head = "dec.logits.W" if config.likelihood() == "bernoulli" else "dec.mu.W"   # (hidden, D)
    if out_head not in params:
        raise RunLoadError(f"{checkpoint_path(folder)} holds no param/{out_head}, so no {config.likelihood()} decoder")
    vae = VAE(int(params[out_head].shape[1]), config.nz, config.hidden, config.likelihood(), seed=0,
              dtype=np.dtype(dtype or config.dtype), activation=config.activation,
              decoder_var=config.decoder_var or None)        # a fixed variance: no dec.logvar head
    if set(params) != set(vae.params):
        raise RunLoadError(f"{checkpoint_path(folder)}: parameters {sorted(set(params) ^ set(vae.params))} do not "
                           f"fit the run's config ({config.dataset}, Nz = {config.nz}, hidden {config.hidden})")
    for name, p in vae.params.items():            # VAE's random initial values are all replaced
        if params[name].shape != p.shape:
            raise RunLoadError(f"{checkpoint_path(folder)}: {name} has shape {params[name].shape}, the run's "
                               f"config implies {p.shape}")
        p[...] = params[name]
    if chains is not None and chains.shape[1:] != (config.nz,):
        raise RunLoadError(f"{checkpoint_path(folder)}: its MCEM chains have shape {chains.shape}, not (N, {config.nz})")
    return TrainedRun(folder, vae, config, samples, run_status(folder), chains)


def load_run_data(config, data_dir=None):
    """A run's ``TrainingData``, loaded with the arguments ``npvae.train`` loads it with (data_dir:
    where to look for the files; default: the run's own ``data_dir``, then $NPVAE_DATA_DIR)."""
    from .train import _load_data                       # the one place that says how a run loads its data
    return _load_data(dataclasses.replace(config, data_dir=data_dir) if data_dir else config)


def reported_bound(run, samples, which):
    """The bound a run reported at exactly this many training samples on "train" or "test", read
    from its checkpoint's own history (the rows of history.csv), or None when it has no evaluation
    there, evaluated log p(x) instead (--metric=marginal), or cannot be read."""
    try:
        with np.load(checkpoint_path(run), allow_pickle=False) as z:
            metric = json.loads(str(z["config"])).get("metric", "bound")
            history = z["history"] if "history" in z.files else np.zeros((0, 4))
    except Exception:             # zipfile, OSError, KeyError, JSON: no readable record to compare with
        return None
    hits = history[history[:, 0] == samples]
    if metric != "bound" or not len(hits):
        return None
    return float(hits[-1, 2 if which == "train" else 3])


def evaluation_key(config):
    """A string that equals another config's exactly when both have the same evaluation sets
    (every field a resume may not change, and where the data are read from)."""
    fixed = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
             if not f.metadata.get("resumable") or f.name == "data_dir"}
    return json.dumps(fixed, sort_keys=True, default=str)


def evaluation_sets(config, data=None, data_dir=None):
    """The points and fixed noise on which the harness evaluated a run's bound, drawn as
    ``npvae.train`` draws them: {"train": (x, eps), "test": (x, eps)}, x: (n, x_dim), eps: (1, n, Nz).

    The MNIST evaluation sets are binarized once with a generator seeded ``eval_seed`` (in the
    run's dtype, so a float32 run has its own 0/1 test set), and the noise of both sets comes from
    one generator seeded ``eval_seed + 1``, the training set's first: both depend on the whole
    configuration, so a bound computed here on the "test" pair is the number in the run's
    history.csv (tested).  data: the run's ``TrainingData`` (default: ``load_run_data``).
    """
    from .train import first_n_training_points      # the training set a run with --n_train evaluated
    if data is None:
        data = load_run_data(config, data_dir)
    data = first_n_training_points(data, config.n_train)
    sets = {"train": data.train_eval_x, "test": data.test_x}
    if config.eval_max:
        sets = {k: v[:config.eval_max] for k, v in sets.items()}
    rng = np.random.default_rng(config.eval_seed + 1)
    dtype = np.dtype(config.dtype)
    return {k: (v, rng.standard_normal((1, v.shape[0], config.nz)).astype(dtype)) for k, v in sets.items()}
