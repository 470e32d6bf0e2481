"""Log-densities and the analytic KL, each as a forward/backward pair.

Every function sums over the last axis (the dimensions of one datapoint or
one latent vector) and broadcasts over the leading ones, so the same code
serves a minibatch (B, D) and L samples per datapoint (L, B, D).

Numerics
--------
* Bernoulli from logits, never from probabilities:
  log p(x|l) = x*l - softplus(l) = x*l - max(l, 0) - log1p(exp(-|l|)).
  exp is only taken of -|l|, so any finite logit (even 3e4) is safe.
* Log-variances are clamped to [LOGVAR_MIN, LOGVAR_MAX] where the model
  produces them (``npvae.layers.clamp_forward``).  Within that range
  exp(logvar) and exp(-logvar) are finite in float32 and float64 (e^30 ~ 1e13,
  float32 overflows at e^88.7), so the KL and the Gaussian density stay finite
  for any finite network output.  The bound is far outside anything training
  visits (a standard deviation from 3e-7 to 3e6 for data in [0, 1]); outside
  it the gradient through the clamp is zero, as for any clip.
"""
import numpy as np

from .layers import sigmoid

LOGVAR_MIN = -30.0
LOGVAR_MAX = 30.0
LOG_2PI = float(np.log(2.0 * np.pi))


def bernoulli_logpmf_forward(x, logits):
    """log p(x|l) = sum_d x_d l_d - softplus(l_d).

    x: (..., D) in [0, 1]; logits: (..., D), broadcast against x -> (...,).
    """
    ll = x * logits - np.maximum(logits, 0.0) - np.log1p(np.exp(-np.abs(logits)))
    return ll.sum(axis=-1), (x, logits)


def bernoulli_logpmf_backward(dll, cache):
    """dll: (...,) -> dlogits (..., D).   d/dl [x l - softplus(l)] = x - sigmoid(l)."""
    x, logits = cache
    return dll[..., None] * (x - sigmoid(logits))


def gaussian_logpdf_forward(x, mu, logvar):
    """log N(x; mu, diag exp(logvar)) = -1/2 sum_d [log 2pi + logvar_d + (x_d - mu_d)^2 / exp(logvar_d)].

    x, mu, logvar broadcast together to (..., D) -> (...,).
    """
    inv_var = np.exp(-logvar)
    diff = x - mu
    sq = diff * diff * inv_var                       # squared standardized residual
    ll = -0.5 * (LOG_2PI + logvar + sq)
    return ll.sum(axis=-1), (diff, inv_var, sq)


def gaussian_logpdf_backward(dll, cache):
    """dll: (...,) -> (dx, dmu, dlogvar), each of the broadcast shape (..., D).

    d/dmu = (x - mu) / var = -d/dx;   d/dlogvar = -1/2 + (x - mu)^2 / (2 var).
    The caller sums them back to its own shapes where it broadcast.
    """
    diff, inv_var, sq = cache
    g = dll[..., None]
    dmu = g * diff * inv_var
    dlogvar = g * 0.5 * (sq - 1.0)
    return -dmu, dmu, dlogvar


def kl_standard_normal_forward(mu, logvar):
    """KL(N(mu, diag exp(logvar)) || N(0, I)) = 1/2 sum_j [mu_j^2 + exp(logvar_j) - logvar_j - 1]  (paper App. B).

    mu, logvar: (..., Z) -> (...,).  Zero exactly when mu = 0 and logvar = 0.
    """
    var_m1 = np.expm1(logvar)                # exp(logvar) - 1 without cancellation near logvar = 0,
    kl = 0.5 * (mu * mu + var_m1 - logvar)   # so KL >= 0 holds in floating point too
    return kl.sum(axis=-1), (mu, var_m1)


def kl_standard_normal_backward(dkl, cache):
    """dkl: (...,) -> (dmu, dlogvar), each (..., Z).   dKL/dmu = mu;  dKL/dlogvar = (exp(logvar) - 1) / 2."""
    mu, var_m1 = cache
    g = dkl[..., None]
    return g * mu, g * 0.5 * var_m1


def sum_to_shape(a, shape):
    """Undo broadcasting in a backward pass: sum `a` over the axes that were broadcast up to a.shape."""
    while a.ndim > len(shape):
        a = a.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and a.shape[axis] != 1:
            a = a.sum(axis=axis, keepdims=True)
    return a
