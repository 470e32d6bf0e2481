"""The stochastic node: where the gradient crosses the sampler.

The reparameterization trick (paper §2.4) writes a sample of
q(z|x) = N(mu, diag sigma^2) as a deterministic function of the encoder's
outputs and of noise that does not depend on any parameter:

    sigma = exp(logvar / 2)          logvar is always log sigma^2
    z     = mu + sigma * eps         eps ~ N(0, I), passed in, never drawn here

Because eps is an input, z is an ordinary differentiable function of
(mu, logvar) and backprop goes straight through it.  The local derivatives
are all there is to it:

    dz/dmu     = 1          so  dmu    = dz            (summed over the L samples)
    dz/dsigma  = eps        so  dsigma = dz * eps      (summed over the L samples)
    dsigma/dlogvar = sigma / 2   so  dlogvar = 0.5 * sigma * dsigma

Shapes: mu, logvar are (B, Z); eps and z are (L, B, Z): L samples for each
of the B datapoints.  Broadcasting mu over the first axis is what makes the
backward pass *sum* over L.
"""
import numpy as np


def logvar_to_sigma_forward(logvar):
    """sigma = exp(logvar / 2).   logvar: (B, Z) -> sigma: (B, Z)."""
    sigma = np.exp(0.5 * logvar)
    return sigma, sigma


def logvar_to_sigma_backward(dsigma, cache):
    """dlogvar = dsigma * dsigma/dlogvar = dsigma * sigma / 2."""
    sigma = cache
    return 0.5 * sigma * dsigma


def reparameterize_forward(mu, sigma, eps):
    """z = mu + sigma * eps.   mu, sigma: (B, Z); eps: (L, B, Z) -> z: (L, B, Z)."""
    z = mu + sigma * eps
    return z, eps


def reparameterize_backward(dz, cache):
    """dz: (L, B, Z) -> dmu, dsigma: (B, Z).

    The two local derivatives of the trick, summed over the L samples that
    share one (mu, sigma):  dz/dmu = 1,  dz/dsigma = eps.
    """
    eps = cache
    dmu = dz.sum(axis=0)                 # dz/dmu = 1
    dsigma = (dz * eps).sum(axis=0)      # dz/dsigma = eps
    return dmu, dsigma


def sample_forward(mu, logvar, eps):
    """The whole node, logvar -> sigma -> z.   Returns z (L, B, Z) and a cache."""
    sigma, sigma_cache = logvar_to_sigma_forward(logvar)
    z, z_cache = reparameterize_forward(mu, sigma, eps)
    return z, (sigma_cache, z_cache)


def sample_backward(dz, cache):
    """dz: (L, B, Z) -> (dmu, dlogvar), each (B, Z)."""
    sigma_cache, z_cache = cache
    dmu, dsigma = reparameterize_backward(dz, z_cache)
    dlogvar = logvar_to_sigma_backward(dsigma, sigma_cache)
    return dmu, dlogvar
