"""A scikit-learn-style facade for users who do not want the training loop.

    model = VAEModel(nz=2, hidden=200, samples=1e6).fit(X)      # X: (n, D) in [0, 1]
    codes = model.transform(X)                                  # posterior means, (n, nz)
    log_px = model.score_samples(X, rng=np.random.default_rng(0))   # importance-sampled log p(x)
    x_new = model.sample(16, np.random.default_rng(1))          # (16, D)

``__init__`` only stores hyper-parameters; ``fit`` trains with the harness (``npvae.train``: the
same loop, optimizer rule and checkpoints as the examples) and returns self; learned attributes
end in ``_`` (``vae_``, ``history_``, ``n_features_in_``, ``summary_``).  Data with 0/1 or grey
values in [0, 1] go to a Bernoulli decoder (re-binarized every minibatch by default); other real
data to the Gaussian one with sigmoid means, so they must lie in [0, 1] as well (scale them).
"""
import tempfile

import numpy as np

from .config import TrainConfig


class NotFittedError(RuntimeError):
    """The model was used before ``fit``."""


class VAEModel:
    """AEVB (or wake-sleep) on an array of data, with the paper's defaults.

    Parameters
    ----------
    nz : int, latent dimensions.          hidden : int or tuple, hidden widths.
    likelihood : "bernoulli" (data in [0, 1]; binarize picks how) or "gaussian" (sigmoid means).
    binarize : "dynamic" (a fresh Bernoulli sample of every minibatch, the default for
        Bernoulli data) or "none" (use the values as they are).
    samples : training budget in training samples.   algorithm : "aevb" or "wakesleep".
    lr, batch_size, seed, dtype : as in ``npvae.config.TrainConfig``.
    out : a folder for the run (its checkpoint and history); None: a temporary folder.
    """

    def __init__(self, nz=20, hidden=500, likelihood="bernoulli", binarize="dynamic", samples=1_000_000,
                 algorithm="aevb", lr=0.01, batch_size=100, seed=0, dtype="float64", out=None):
        self.nz, self.hidden, self.likelihood, self.binarize = nz, hidden, likelihood, binarize
        self.samples, self.algorithm, self.lr, self.batch_size = samples, algorithm, lr, batch_size
        self.seed, self.dtype, self.out = seed, dtype, out

    def _config(self, out):
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}")
        if self.binarize not in ("dynamic", "none"):
            raise ValueError(f"binarize must be 'dynamic' or 'none', got {self.binarize!r}")
        hidden = (self.hidden,) if np.isscalar(self.hidden) else tuple(self.hidden)
        # the harness names the likelihood by its data set: "mnist" is Bernoulli, "frey" Gaussian
        return TrainConfig(algorithm=self.algorithm, dataset="mnist" if self.likelihood == "bernoulli" else "frey",
                           binarize=self.binarize, nz=int(self.nz), hidden=tuple(int(h) for h in hidden),
                           samples=int(self.samples), batch_size=int(self.batch_size), lr=float(self.lr),
                           seed=int(self.seed), dtype=self.dtype, out=out, progress=False, figures=False,
                           eval_per_decade=1, checkpoint_seconds=600.0)

    def _check_X(self, X, fitted=True):
        X = np.asarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
        if fitted and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {self.n_features_in_}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or inf")
        if self.likelihood == "bernoulli" and (X.min() < 0 or X.max() > 1):
            raise ValueError(f"Bernoulli data must lie in [0, 1]; X spans [{X.min()}, {X.max()}]")
        return np.ascontiguousarray(X)

    def fit(self, X, y=None):
        """Train on X (n, D) with the harness; returns self.  y is ignored."""
        from .data import TrainingData, binarize
        from .train import train
        X = self._check_X(X, fitted=False)
        dynamic = self.likelihood == "bernoulli" and self.binarize == "dynamic"
        evaluated = binarize(X, np.random.default_rng(self.seed + 1)) if dynamic else X
        data = TrainingData(X, evaluated, evaluated, None, (1, X.shape[1]), dynamic)
        captured = {}

        def keep(learner, state):          # the harness's learner and run state (its history grows in place)
            captured["learner"], captured["state"] = learner, state
            return False

        with tempfile.TemporaryDirectory(prefix="npvae_fit_") as tmp:
            config = self._config(self.out or tmp)
            if config.batch_size > X.shape[0]:
                raise ValueError(f"batch_size {config.batch_size} is larger than X ({X.shape[0]} rows)")
            self.summary_ = train(config, data=data, callback=keep, log=lambda *_: None, overwrite=True)
        self.vae_ = captured["learner"].vae
        # rows (training samples, seconds, train bound, bound on the evaluation copy of X)
        self.history_ = np.array(captured["state"].history, dtype=np.float64).reshape(-1, 4)
        self.n_features_in_ = X.shape[1]
        return self

    def _fitted(self):
        if not hasattr(self, "vae_"):
            raise NotFittedError("this VAEModel is not fitted yet: call fit(X) first")

    def transform(self, X):
        """The posterior means E_q[z|x], shape (n, nz)."""
        self._fitted()
        mu, _ = self.vae_.encode(self._check_X(X))
        return mu

    def score_samples(self, X, k=5000, rng=None):
        """Importance-sampled log p(x) per row (k samples of q(z|x) each), shape (n,)."""
        from .marginal import importance_sampled_log_px
        self._fitted()
        X = self._check_X(X)
        if self.likelihood == "bernoulli" and not np.isin(X, (0, 1)).all():
            raise ValueError("score_samples needs 0/1 data for a Bernoulli model (binarize X first)")
        rng = np.random.default_rng(0) if rng is None else rng
        return importance_sampled_log_px(self.vae_, X, k, rng=rng)

    def sample(self, n, rng):
        """n samples x ~ p(x|z), z ~ N(0, I): shape (n, D)."""
        self._fitted()
        x, _ = self.vae_.sample(n, rng)
        return x

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in ("nz", "hidden", "likelihood", "binarize", "samples", "algorithm",
                                               "lr", "batch_size", "seed", "dtype", "out")}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def __repr__(self):
        defaults = VAEModel().get_params()
        changed = {k: v for k, v in self.get_params().items() if v != defaults[k]}
        return "VAEModel(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

