"""Wake-sleep (Hinton, Dayan, Frey & Neal, 1995), the paper's baseline in Figure 2, by hand.

The same two networks as AEVB: the recognition model q(z|x) (the encoder, ``enc.*``) and the
generative model p(x|z) p(z) (the decoder, ``dec.*``).  Each step has two phases, each with its
own objective and its own optimizer (as in the authors' code, anglepy ``wzoptim.step_wakesleep``):

    wake   z ~ q(z|x) for the minibatch: an ordinary sample, no gradient flows through it;
           ascend  mean_b log p(x_b, z_b)  with respect to the generative parameters.
    sleep  M dreams from the just-updated generative model: z ~ N(0, I), x ~ p(x|z)
           (a Bernoulli *sample* for binary data, not the mean; N(mean, exp(logvar)) for the
           Gaussian decoder); ascend  mean_b log q(z_b|x_b)  with respect to the recognition
           parameters.

Unlike AEVB, no gradient ever crosses a sampler: both objectives are log-densities at given
points, so each phase is an ordinary backward pass (``decoder_backward``, ``encoder_backward``).
The price is that the recognition model is fitted to the generative model's dreams, not to the
data, and the wake phase climbs log p(x, z) at one z, not a bound on log p(x).

Both functions return the *loss* (minimized, per datapoint) and the gradients of the parameters
their phase trains; the training loop adds the weight prior and steps each optimizer
(``npvae.learners.WakeSleep``).  ``tests/test_wakesleep.py`` checks both against finite differences.
"""
import numpy as np

from . import distributions as D
from .model import (decoder_backward, decoder_forward, encoder_backward, encoder_forward,
                    log_likelihood_backward, log_likelihood_forward, sample_x)
from .stochastic import sample_forward


def wake_loss_and_grads(params, arch, x, z):
    """loss = -mean_b log p(x_b, z_b) and its gradient for every ``dec.*`` parameter.

    x: (B, x_dim); z: (B, z_dim), held fixed.  log p(z) has no parameter, so only log p(x|z)
    contributes to the gradients; it is in the loss so that the loss is what the phase climbs.
    """
    B = x.shape[0]
    dec_out, dec_cache = decoder_forward(params, arch, z)
    log_px, lik_cache = log_likelihood_forward(arch.likelihood, x, dec_out)        # (B,)
    log_pz = -0.5 * (D.LOG_2PI * arch.z_dim + (z * z).sum(axis=-1))
    loss = -float((log_px + log_pz).mean())
    dlog_px = np.full(B, -1.0 / B, dtype=x.dtype)                                   # d loss / d log p(x_b|z_b)
    _, grads = decoder_backward(log_likelihood_backward(dlog_px, lik_cache, arch.likelihood), dec_cache)
    return loss, grads


def sleep_loss_and_grads(params, arch, x, z):
    """loss = -mean_b log q(z_b|x_b) and its gradient for every ``enc.*`` parameter.

    x: (B, x_dim) and z: (B, z_dim) are a dream (drawn by ``dream``), held fixed.
    """
    B = x.shape[0]
    (mu, logvar), enc_cache = encoder_forward(params, arch, x)
    log_q, q_cache = D.gaussian_logpdf_forward(z, mu, logvar)                      # (B,)
    _, dmu, dlogvar = D.gaussian_logpdf_backward(np.full(B, -1.0 / B, dtype=x.dtype), q_cache)
    _, grads = encoder_backward(dmu, dlogvar, enc_cache)
    return -float(log_q.mean()), grads


def sample_posterior(params, arch, x, eps):
    """The wake phase's z ~ q(z|x): z = mu + sigma * eps.   x: (B, x_dim); eps: (B, z_dim) -> (B, z_dim)."""
    (mu, logvar), _ = encoder_forward(params, arch, x)
    z, _ = sample_forward(mu, logvar, eps)
    return z


def dream(params, arch, batch_size, rng, dtype=np.float64):
    """M dreams of the generative model: z ~ N(0, I) (float64 draws, cast), then x ~ p(x|z).
    Returns (x (M, x_dim), z (M, z_dim))."""
    z = rng.standard_normal((batch_size, arch.z_dim)).astype(dtype)
    return sample_x(params, arch, z, rng), z
