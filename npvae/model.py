"""The variational auto-encoder of the paper (§3, Appendix C), forward and backward by hand.

The model is a handful of pure functions over a flat ``params`` dict:

    encoder_forward   x -> (mu, logvar)                       q(z|x)
    sample_forward    (mu, logvar, eps) -> z                  npvae/stochastic.py
    decoder_forward   z -> logits, or (mean, logvar)          p(x|z)
    elbo_forward      all of the above -> per-datapoint bound (eq. 6 or eq. 7)
    elbo_backward     its line-by-line mirror; with kl_weight = beta, the gradient of the
                      training objective E_q[log p(x|z)] - beta KL (beta-VAE, KL warm-up)

and ``VAE``, a thin class that owns the parameters and checks its inputs.
The same pieces give log q(z|x) and log p(x, z) with their gradients, which
is what wake-sleep, HMC and Monte Carlo EM are built from.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import distributions as D
from .layers import affine_backward, affine_forward, clamp_backward, clamp_forward, get_activation
from .layers import sigmoid, sigmoid_backward, sigmoid_forward
from .stochastic import sample_backward, sample_forward

LIKELIHOODS = ("bernoulli", "gaussian")
ESTIMATORS = ("A", "B")


@dataclass(frozen=True)
class Architecture:
    """Sizes and choices that fix the shape of ``params`` (no learned state here)."""
    x_dim: int
    z_dim: int
    enc_hidden: tuple          # widths from x towards z
    dec_hidden: tuple          # widths from z towards x
    likelihood: str = "bernoulli"
    activation: str = "tanh"
    decoder_logvar: float = None   # Gaussian decoder: None learns log sigma^2 (a head, the paper's);
                                   # a number fixes it for every pixel (no head)

    def param_shapes(self):
        """{name: shape} in a fixed order: encoder first, then decoder."""
        shapes = {}
        fan_in = self.x_dim
        for k, width in enumerate(self.enc_hidden, 1):
            shapes[f"enc.h{k}.W"], shapes[f"enc.h{k}.b"] = (fan_in, width), (width,)
            fan_in = width
        for head in ("mu", "logvar"):
            shapes[f"enc.{head}.W"], shapes[f"enc.{head}.b"] = (fan_in, self.z_dim), (self.z_dim,)
        fan_in = self.z_dim
        for k, width in enumerate(self.dec_hidden, 1):
            shapes[f"dec.h{k}.W"], shapes[f"dec.h{k}.b"] = (fan_in, width), (width,)
            fan_in = width
        if self.likelihood == "bernoulli":
            heads = ("logits",)
        else:
            heads = ("mu", "logvar") if self.decoder_logvar is None else ("mu",)
        for head in heads:
            shapes[f"dec.{head}.W"], shapes[f"dec.{head}.b"] = (fan_in, self.x_dim), (self.x_dim,)
        return shapes


# --------------------------------------------------------------------------- MLP trunk

def mlp_forward(params, prefix, x, n_layers, activation):
    """Hidden layers ``prefix.h1 ... prefix.h{n_layers}``.   x: (N, fan_in) -> h: (N, width)."""
    act_forward, _ = get_activation(activation)
    caches = []
    h = x
    for k in range(1, n_layers + 1):
        a, affine_cache = affine_forward(h, params[f"{prefix}.h{k}.W"], params[f"{prefix}.h{k}.b"])
        h, act_cache = act_forward(a)
        caches.append((affine_cache, act_cache))
    return h, (prefix, activation, caches)


def mlp_backward(dh, cache, need_dx=True, param_grads=True):
    """dh: (N, width) -> (dx or None, grads).  need_dx=False skips the product that only the data would use;
    param_grads=False skips those only the weights and biases would use (grads is then {})."""
    prefix, activation, caches = cache
    _, act_backward = get_activation(activation)
    grads = {}
    for k in range(len(caches), 0, -1):
        affine_cache, act_cache = caches[k - 1]
        da = act_backward(dh, act_cache)
        if not param_grads:
            _, W = affine_cache
            dh = da @ W.T                     # affine_backward's dx alone
        elif k == 1 and not need_dx:
            x, _ = affine_cache
            dh = None
            grads[f"{prefix}.h1.W"], grads[f"{prefix}.h1.b"] = x.T @ da, da.sum(axis=0)
        else:
            dh, grads[f"{prefix}.h{k}.W"], grads[f"{prefix}.h{k}.b"] = affine_backward(da, affine_cache)
    return dh, grads


def _head_forward(params, name, h):
    return affine_forward(h, params[name + ".W"], params[name + ".b"])


def _head_backward(dout, cache, name, grads, param_grads=True):
    if not param_grads:                       # affine_backward's dx alone; grads left as they are
        _, W = cache
        return dout @ W.T
    dh, grads[name + ".W"], grads[name + ".b"] = affine_backward(dout, cache)
    return dh


# --------------------------------------------------------------------------- encoder q(z|x)

def encoder_forward(params, arch, x):
    """x: (B, x_dim) -> (mu, logvar), each (B, z_dim).  logvar = log sigma^2, clamped (see distributions)."""
    h, trunk = mlp_forward(params, "enc", x, len(arch.enc_hidden), arch.activation)
    mu, mu_cache = _head_forward(params, "enc.mu", h)
    logvar_raw, lv_cache = _head_forward(params, "enc.logvar", h)
    logvar, clamp_cache = clamp_forward(logvar_raw, D.LOGVAR_MIN, D.LOGVAR_MAX)
    return (mu, logvar), (trunk, mu_cache, lv_cache, clamp_cache)


def encoder_backward(dmu, dlogvar, cache, need_dx=False):
    """(dmu, dlogvar): (B, z_dim) each -> (dx or None, grads of every ``enc.*`` parameter)."""
    trunk, mu_cache, lv_cache, clamp_cache = cache
    grads = {}
    dh = _head_backward(dmu, mu_cache, "enc.mu", grads)
    dh += _head_backward(clamp_backward(dlogvar, clamp_cache), lv_cache, "enc.logvar", grads)
    dx, trunk_grads = mlp_backward(dh, trunk, need_dx=need_dx)
    grads.update(trunk_grads)
    return dx, grads


# --------------------------------------------------------------------------- decoder p(x|z)

def decoder_forward(params, arch, z):
    """z: (..., z_dim) -> decoder output with leading shape (...):

    bernoulli: logits (..., x_dim)                 (means are sigmoid(logits))
    gaussian:  (mean, logvar), each (..., x_dim)   mean = sigmoid(.) lies in (0, 1); logvar from its
                                                   head, or the constant arch.decoder_logvar
    """
    lead = z.shape[:-1]
    h, trunk = mlp_forward(params, "dec", z.reshape(-1, arch.z_dim), len(arch.dec_hidden), arch.activation)
    if arch.likelihood == "bernoulli":
        logits, cache = _head_forward(params, "dec.logits", h)
        return logits.reshape(lead + (arch.x_dim,)), (arch, lead, trunk, cache)
    a, mu_cache = _head_forward(params, "dec.mu", h)
    mean, sig_cache = sigmoid_forward(a)
    if arch.decoder_logvar is None:
        logvar_raw, lv_cache = _head_forward(params, "dec.logvar", h)
        logvar, clamp_cache = clamp_forward(logvar_raw, D.LOGVAR_MIN, D.LOGVAR_MAX)
    else:                       # a fixed variance: a constant, with no parameter behind it
        logvar, lv_cache, clamp_cache = np.full_like(mean, arch.decoder_logvar), None, None
    out = (mean.reshape(lead + (arch.x_dim,)), logvar.reshape(lead + (arch.x_dim,)))
    return out, (arch, lead, trunk, (mu_cache, sig_cache, lv_cache, clamp_cache))


def decoder_backward(dout, cache, param_grads=True):
    """dout shaped like decoder_forward's output -> (dz (..., z_dim), grads of every ``dec.*`` parameter).

    param_grads=False returns (dz, {}) without the weights' and biases' products (HMC needs dz alone)."""
    arch, lead, trunk, head_cache = cache
    grads = {}
    if arch.likelihood == "bernoulli":
        dh = _head_backward(dout.reshape(-1, arch.x_dim), head_cache, "dec.logits", grads, param_grads)
    else:
        dmean, dlogvar = (d.reshape(-1, arch.x_dim) for d in dout)
        mu_cache, sig_cache, lv_cache, clamp_cache = head_cache
        dh = _head_backward(sigmoid_backward(dmean, sig_cache), mu_cache, "dec.mu", grads, param_grads)
        if arch.decoder_logvar is None:      # a fixed log sigma^2 has no parameter: its gradient stops here
            dh += _head_backward(clamp_backward(dlogvar, clamp_cache), lv_cache, "dec.logvar", grads, param_grads)
    dz, trunk_grads = mlp_backward(dh, trunk, param_grads=param_grads)
    grads.update(trunk_grads)
    return dz.reshape(lead + (arch.z_dim,)), grads


def log_likelihood_forward(likelihood, x, dec_out):
    """log p(x|z) from the decoder's output.   x: (B, x_dim); dec_out with leading (L, B) -> (L, B)."""
    if likelihood == "bernoulli":
        return D.bernoulli_logpmf_forward(x, dec_out)
    mean, logvar = dec_out
    return D.gaussian_logpdf_forward(x, mean, logvar)


def log_likelihood_backward(dll, cache, likelihood):
    """dll: (L, B) -> gradient with respect to the decoder's output."""
    if likelihood == "bernoulli":
        return D.bernoulli_logpmf_backward(dll, cache)
    _, dmean, dlogvar = D.gaussian_logpdf_backward(dll, cache)
    return dmean, dlogvar


def sample_x(params, arch, z, rng):
    """x ~ p(x|z) for z: (B, z_dim) -> (B, x_dim) in z's dtype; randomness from the Generator rng.

    Bernoulli: 0/1 with P(1) = sigmoid(logits), drawn as rng.random(shape) < p (the draws of
    ``npvae.data.binarize``).  Gaussian: mean + exp(logvar / 2) * N(0, 1) (float64 normals, cast).
    """
    dec_out, _ = decoder_forward(params, arch, z)
    if arch.likelihood == "bernoulli":
        return (rng.random(dec_out.shape, dtype=z.dtype) < sigmoid(dec_out)).astype(z.dtype)
    mean, logvar = dec_out
    noise = rng.standard_normal(mean.shape).astype(z.dtype)
    return mean + np.exp(0.5 * logvar) * noise


def standard_normal_logpdf_forward(z):
    """log N(z; 0, I).   z: (..., Z) -> (...,)."""
    return -0.5 * (D.LOG_2PI * z.shape[-1] + (z * z).sum(axis=-1)), z


def standard_normal_logpdf_backward(dlp, cache):
    z = cache
    return -dlp[..., None] * z


# --------------------------------------------------------------------------- the bound (eq. 6 and eq. 7)

class ElboCache(NamedTuple):
    """What ``elbo_backward`` needs, and the bound's two terms per datapoint."""
    arch: Architecture
    estimator: str
    L: int
    enc: tuple
    sample: tuple
    dec: tuple
    lik: tuple
    extra: tuple                 # B: the KL's cache; A: (log p(z)'s cache, log q(z|x)'s cache)
    reconstruction: np.ndarray   # (B,) mean_l log p(x|z_l)
    kl: np.ndarray               # (B,) the KL term: analytic (B), mean_l [log q(z_l|x) - log p(z_l)] (A)


def elbo_forward(params, arch, x, eps, estimator="B"):
    """Per-datapoint SGVB estimate of the lower bound.

    x: (B, x_dim); eps: (L, B, z_dim) -> elbo (B,)
      estimator "A" (eq. 6): mean_l [ log p(x|z_l) + log p(z_l) - log q(z_l|x) ]
      estimator "B" (eq. 7): mean_l [ log p(x|z_l) ] - KL(q(z|x) || p(z))

    The cache (an ``ElboCache``) also holds the two terms, reconstruction and KL, per datapoint:
    ``kl_weighted_objective`` weights the second.  Only cheap checks run here (the estimator's
    name, eps's L axis); ``VAE`` checks the rest.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose 'A' (eq. 6) or 'B' (eq. 7)")
    if eps.ndim != 3 or eps.shape[1:] != (x.shape[0], arch.z_dim):
        raise ValueError(f"eps must have shape (L, {x.shape[0]}, {arch.z_dim}), got {eps.shape} "
                         f"(for one sample per datapoint use eps[None])")
    (mu, logvar), enc_cache = encoder_forward(params, arch, x)
    z, sample_cache = sample_forward(mu, logvar, eps)                     # (L, B, Z)
    dec_out, dec_cache = decoder_forward(params, arch, z)
    log_px, lik_cache = log_likelihood_forward(arch.likelihood, x, dec_out)   # (L, B)
    if estimator == "B":
        kl, kl_cache = D.kl_standard_normal_forward(mu, logvar)           # (B,)
        reconstruction = log_px.mean(axis=0)
        elbo = reconstruction - kl
        extra = kl_cache
    else:
        log_pz, pz_cache = standard_normal_logpdf_forward(z)              # (L, B)
        log_qz, qz_cache = D.gaussian_logpdf_forward(z, mu, logvar)       # (L, B), z given
        elbo = (log_px + log_pz - log_qz).mean(axis=0)
        extra = (pz_cache, qz_cache)
        reconstruction, kl = log_px.mean(axis=0), (log_qz - log_pz).mean(axis=0)
    cache = ElboCache(arch, estimator, eps.shape[0], enc_cache, sample_cache, dec_cache, lik_cache, extra,
                      reconstruction, kl)
    return elbo, cache


def kl_weighted_objective(elbo, cache, kl_weight=1.0):
    """The training objective per datapoint (B,), its KL term weighted by kl_weight = beta:

      estimator "B": mean_l log p(x|z_l) - beta KL(q(z|x) || p(z))
      estimator "A": mean_l [ log p(x|z_l) - beta (log q(z_l|x) - log p(z_l)) ]

    beta = 1 returns the bound itself (elbo, bitwise).  For beta > 1 the objective is a looser
    lower bound on log p(x) (estimator B: the KL is >= 0); for beta < 1 it is not a bound at all.
    elbo, cache: from ``elbo_forward``; ``elbo_backward(dobjective, cache, kl_weight)`` is its gradient.
    """
    if kl_weight == 1.0:
        return elbo
    return cache.reconstruction - kl_weight * cache.kl


def elbo_backward(delbo, cache, kl_weight=1.0):
    """delbo: (B,) = d(scalar)/d(elbo) -> grads, one per parameter.

    kl_weight = beta: the gradient of sum(delbo * objective) for the objective whose KL term is
    weighted by beta (``kl_weighted_objective``): the paths through the KL term (B: the analytic
    KL; A: log p(z) and log q(z|x)) carry beta times their gradient.  beta = 1, the default, is
    the bound's gradient, bitwise (a product with 1.0 is exact).
    """
    arch, estimator, L, enc_cache = cache.arch, cache.estimator, cache.L, cache.enc
    kl_weight = float(kl_weight)        # a Python float keeps float32 arrays float32
    dterm = np.broadcast_to(delbo / L, (L,) + delbo.shape)              # each sample's share of the mean

    # p(x|z): back through the likelihood and the decoder, down to z.
    ddec_out = log_likelihood_backward(dterm, cache.lik, arch.likelihood)
    dz, grads = decoder_backward(ddec_out, cache.dec)

    if estimator == "A":   # log p(z) and -log q(z|x) also depend on z (the KL term: weighted by beta) ...
        pz_cache, qz_cache = cache.extra
        dkl_term = kl_weight * dterm
        dz = dz + standard_normal_logpdf_backward(dkl_term, pz_cache)
        dz_q, dmu_q, dlogvar_q = D.gaussian_logpdf_backward(-dkl_term, qz_cache)
        dz = dz + dz_q

    # ---- the gradient crosses the stochastic node z = mu + sigma * eps ----
    dmu, dlogvar = sample_backward(dz, cache.sample)

    # ---- the other path into (mu, logvar) joins here, once ----
    if estimator == "B":   # -beta KL(q || p), analytic
        dmu_kl, dlogvar_kl = D.kl_standard_normal_backward(-kl_weight * delbo, cache.extra)
        dmu = dmu + dmu_kl
        dlogvar = dlogvar + dlogvar_kl
    else:                  # ... and -log q(z|x) depends on (mu, logvar) directly as well
        dmu = dmu + dmu_q.sum(axis=0)
        dlogvar = dlogvar + dlogvar_q.sum(axis=0)

    _, enc_grads = encoder_backward(dmu, dlogvar, enc_cache)
    grads.update(enc_grads)
    return grads


# --------------------------------------------------------------------------- the public class

def _as_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


class VAE:
    """Variational auto-encoder trained with SGVB (Kingma & Welling, 2013).

    Parameters
    ----------
    x_dim, z_dim : int
        Data and latent dimensionality.
    hidden : int or tuple of int
        Widths of the encoder's hidden layers, from x towards z.  The decoder
        mirrors them (from z towards x).  The paper uses one layer: 500 (MNIST),
        200 (Frey Face).
    likelihood : "bernoulli" or "gaussian"
        Decoder family.  Gaussian means pass through a sigmoid, so they lie in
        (0, 1) as in the paper's Frey Face model.
    seed : int or numpy.random.Generator
        Initialization noise: every parameter ~ N(0, init_std^2) (paper §5).
    dtype : numpy.float64 or numpy.float32
    activation : "tanh" (paper), "relu", "softplus" or "sigmoid".
    init_std : float, default 0.01.
    decoder_var : None or float
        Gaussian decoder only.  None (default, the paper's): log sigma^2 is a learned head.
        A number fixes sigma^2 = decoder_var for every pixel; there is no ``dec.logvar`` head
        (see ``use_fixed_decoder_var``).

    Parameters, their names, and the paper (Appendix C; ``W`` here is the
    paper's matrix transposed, applied as ``h @ W + b``):

    ===================  ===========  =========================================
    ``params`` key       paper        role
    ===================  ===========  =========================================
    enc.h1.W, enc.h1.b   W3, b3       encoder hidden: h = tanh(x W3 + b3)
    enc.mu.W, enc.mu.b   W4, b4       mu = h W4 + b4
    enc.logvar.W/.b      W5, b5       log sigma^2 = h W5 + b5
    dec.h1.W, dec.h1.b   W1, b1       Bernoulli decoder hidden: tanh(z W1 + b1)
    dec.logits.W/.b      W2, b2       logits; y = sigmoid(h W2 + b2)
    dec.h1.W, dec.h1.b   W3, b3       Gaussian decoder hidden (θ's own W3)
    dec.mu.W, dec.mu.b   W4, b4       mean = sigmoid(h W4 + b4)
    dec.logvar.W/.b      W5, b5       log sigma^2 = h W5 + b5
    ===================  ===========  =========================================

    With more hidden layers the trunk is ``enc.h1 ... enc.hK`` and
    ``dec.h1 ... dec.hK``.  Log-variances are clamped to
    [LOGVAR_MIN, LOGVAR_MAX] = [-30, 30] so that exp never overflows.

    Attributes
    ----------
    params : dict of str -> ndarray
        The live parameters: changing an array in place changes the model.
    arch : Architecture
    """

    def __init__(self, x_dim, z_dim, hidden=500, likelihood="bernoulli", seed=0, dtype=np.float64,
                 activation="tanh", init_std=0.01, decoder_var=None):
        x_dim, z_dim = _as_int(x_dim, "x_dim"), _as_int(z_dim, "z_dim")
        widths = (hidden,) if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool) else hidden
        try:
            widths = tuple(_as_int(w, "hidden width") for w in widths)
        except TypeError:
            raise TypeError(f"hidden must be an int or a tuple of ints, got {hidden!r}") from None
        if not widths:
            raise ValueError("hidden must name at least one hidden layer")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
        get_activation(activation)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.arch = Architecture(x_dim, z_dim, widths, widths[::-1], likelihood, activation)
        self.dtype = dtype
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.params = {name: (init_std * rng.standard_normal(shape)).astype(dtype)
                       for name, shape in self.arch.param_shapes().items()}
        if decoder_var is not None:
            self.use_fixed_decoder_var(decoder_var)

    def use_fixed_decoder_var(self, var):
        """Fix the Gaussian decoder's variance: sigma^2 = var for every pixel, not learned.

        The log sigma^2 head (``dec.logvar.W``, ``dec.logvar.b``) leaves ``params``; every other
        parameter keeps its value, so a model built this way starts where the learned-variance model
        of the same seed starts.  With sigma^2 fixed, -log p(x|z) = |x - mean|^2 / (2 sigma^2)
        + (D/2) log(2 pi sigma^2): a squared error, scaled, plus a constant."""
        if self.arch.likelihood != "gaussian":
            raise ValueError(f"a fixed decoder variance needs the gaussian decoder, not {self.arch.likelihood!r}")
        if self.arch.decoder_logvar is not None:
            raise ValueError("the decoder's variance is already fixed")
        if isinstance(var, (bool, np.bool_)) or not isinstance(var, (int, float, np.integer, np.floating)):
            raise TypeError(f"decoder_var must be a number, got {type(var).__name__}")
        logvar = math.log(var) if math.isfinite(var) and var > 0 else math.nan
        if not D.LOGVAR_MIN <= logvar <= D.LOGVAR_MAX:
            raise ValueError(f"decoder_var must lie in [exp({D.LOGVAR_MIN:g}), exp({D.LOGVAR_MAX:g})], got {var}")
        self.arch = dataclasses.replace(self.arch, decoder_logvar=logvar)
        del self.params["dec.logvar.W"], self.params["dec.logvar.b"]
        return self

    # -- input checks --------------------------------------------------------------------

    def _check_x(self, x):
        x = _as_float_array(x, "x", self.dtype)
        if x.ndim != 2 or x.shape[1] != self.arch.x_dim:
            raise ValueError(f"x must have shape (batch, {self.arch.x_dim}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError("x is empty (batch size 0)")
        if not np.isfinite(x).all():
            raise ValueError("x contains NaN or inf")
        if self.arch.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"Bernoulli data must lie in [0, 1]; x spans [{x.min()}, {x.max()}]")
        return x

    def _check_z(self, z, name="z"):
        z = _as_float_array(z, name, self.dtype)
        if z.ndim < 1 or z.shape[-1] != self.arch.z_dim:
            raise ValueError(f"{name} must have shape (..., {self.arch.z_dim}), got {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError(f"{name} contains NaN or inf")
        return z

    def _check_eps(self, eps, batch):
        eps = self._check_z(eps, "eps")
        if eps.ndim != 3 or eps.shape[1] != batch or eps.shape[0] == 0:
            raise ValueError(f"eps must have shape (L, {batch}, {self.arch.z_dim}) with L >= 1, "
                             f"got {eps.shape} (for one sample per datapoint use eps[None])")
        return eps

    @staticmethod
    def _check_estimator(estimator):
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose 'A' (eq. 6) or 'B' (eq. 7)")

    # -- the contract ----------------------------------------------------------------------

    def encode(self, x):
        """x: (B, x_dim) -> (mu, logvar), each (B, z_dim); logvar = log sigma^2."""
        (mu, logvar), _ = encoder_forward(self.params, self.arch, self._check_x(x))
        return mu, logvar

    def decode(self, z):
        """z: (..., z_dim) -> Bernoulli means (..., x_dim), or (mean, logvar) for a Gaussian decoder
        (logvar the constant log decoder_var when the variance is fixed)."""
        out, _ = decoder_forward(self.params, self.arch, self._check_z(z))
        return sigmoid(out) if self.arch.likelihood == "bernoulli" else out

    def sample_x(self, z, rng):
        """x ~ p(x|z) for z: (B, z_dim) -> (B, x_dim); rng: a numpy.random.Generator."""
        z = self._check_z(z)
        if z.ndim != 2:
            raise ValueError(f"z must have shape (batch, {self.arch.z_dim}), got {z.shape}")
        return sample_x(self.params, self.arch, z, _generator(rng))

    def sample(self, n, rng):
        """n samples of the model: z ~ N(0, I), x ~ p(x|z).  Returns (x (n, x_dim), z (n, z_dim))."""
        rng = _generator(rng)
        z = rng.standard_normal((_as_int(n, "n"), self.arch.z_dim)).astype(self.dtype)
        return sample_x(self.params, self.arch, z, rng), z

    def elbo(self, x, eps, estimator="B"):
        """Per-datapoint SGVB estimate of the lower bound, shape (B,).  eps: (L, B, z_dim)."""
        self._check_estimator(estimator)
        x = self._check_x(x)
        elbo, _ = elbo_forward(self.params, self.arch, x, self._check_eps(eps, x.shape[0]), estimator)
        return elbo

    def loss_and_grads(self, x, eps, estimator="B", kl_weight=1.0):
        """loss = -mean(objective) (a float) and grads[k] = d loss / d params[k].

        objective is the bound (``elbo``) for kl_weight = 1, the paper's; kl_weight = beta >= 0
        weights its KL term (``kl_weighted_objective``: beta-VAE, KL warm-up)."""
        self._check_estimator(estimator)
        kl_weight = _as_kl_weight(kl_weight)
        x = self._check_x(x)
        elbo, cache = elbo_forward(self.params, self.arch, x, self._check_eps(eps, x.shape[0]), estimator)
        objective = kl_weighted_objective(elbo, cache, kl_weight)
        dobjective = np.full(elbo.shape, -1.0 / elbo.shape[0], dtype=self.dtype)   # loss = -mean(objective)
        return float(-objective.mean()), elbo_backward(dobjective, cache, kl_weight)

    # -- pieces for wake-sleep, HMC and Monte Carlo EM -------------------------------------

    def log_q(self, z, x):
        """log q(z|x) for given z: (..., B, z_dim) and x: (B, x_dim) -> (..., B)."""
        lq, _ = self.log_q_and_grads(z, x, grads=False)
        return lq

    def log_q_and_grads(self, z, x, grads=True):
        """log q(z|x) (..., B) and the gradient of its *sum* with respect to every ``enc.*`` parameter."""
        x, z = self._check_x(x), self._check_z(z)
        (mu, logvar), enc_cache = encoder_forward(self.params, self.arch, x)
        lq, cache = D.gaussian_logpdf_forward(z, mu, logvar)
        if not grads:
            return lq, None
        _, dmu, dlogvar = D.gaussian_logpdf_backward(np.ones_like(lq), cache)
        _, enc_grads = encoder_backward(D.sum_to_shape(dmu, mu.shape), D.sum_to_shape(dlogvar, logvar.shape),
                                        enc_cache)
        return lq, enc_grads

    def log_joint(self, x, z):
        """log p(x, z) = log p(x|z) + log p(z) for x: (B, x_dim), z: (..., B, z_dim) -> (..., B)."""
        lp, _, _ = self.log_joint_and_grads(x, z, grads=False)
        return lp

    def log_joint_and_grads(self, x, z, grads=True):
        """log p(x, z) (..., B), its gradient with respect to z (what HMC needs), and the
        gradient of its *sum* with respect to every ``dec.*`` parameter."""
        x, z = self._check_x(x), self._check_z(z)
        dec_out, dec_cache = decoder_forward(self.params, self.arch, z)
        log_px, lik_cache = log_likelihood_forward(self.arch.likelihood, x, dec_out)
        log_pz, pz_cache = standard_normal_logpdf_forward(z)
        lp = log_px + log_pz
        if not grads:
            return lp, None, None
        ones = np.ones_like(lp)
        dz, dec_grads = decoder_backward(log_likelihood_backward(ones, lik_cache, self.arch.likelihood), dec_cache)
        dz = dz + standard_normal_logpdf_backward(ones, pz_cache)
        return lp, dz, dec_grads

    def __repr__(self):
        a = self.arch
        fixed = "" if a.decoder_logvar is None else f", decoder_var={math.exp(a.decoder_logvar):.6g}"
        return (f"VAE(x_dim={a.x_dim}, z_dim={a.z_dim}, hidden={a.enc_hidden}, likelihood={a.likelihood!r}{fixed}, "
                f"activation={a.activation!r}, dtype={self.dtype.name})")


def _as_kl_weight(kl_weight):
    if isinstance(kl_weight, (bool, np.bool_)) or not isinstance(kl_weight, (int, float, np.integer, np.floating)):
        raise TypeError(f"kl_weight must be a number, got {type(kl_weight).__name__}")
    if not (math.isfinite(kl_weight) and kl_weight >= 0):
        raise ValueError(f"kl_weight must be a finite number >= 0, got {kl_weight}")
    return float(kl_weight)


def _generator(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return rng


def _as_float_array(a, name, dtype):
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:
            raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if np.iscomplexobj(a):
        raise TypeError(f"{name} must be real, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=dtype)
