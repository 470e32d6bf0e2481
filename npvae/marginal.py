"""The marginal likelihood log p(x): the paper's Appendix D estimator (HMC) and importance sampling.

Both estimate log p(x) = log integral p(x|z) p(z) dz for a fixed decoder, one datapoint at a time:

    make_log_joint(vae, x)          z -> (log p(x, z), d/dz log p(x, z))     the target of both
    hmc_transition(...)             one HMC transition per chain, randomness passed in
    hmc_sample(target, z0, rng)     one chain per datapoint; step sizes adapted in burn-in, then frozen
    fit_log_density(samples)        q(z) for Appendix D: Gaussian KDE or diagonal Gaussian
    harmonic_log_px(log_q, log_j)   Appendix D step (3): log p(x) ~ -logmeanexp(log q(z) - log p(x, z))
    hmc_log_px(model, x, rng)       Appendix D end to end (steps 1-3)
    importance_log_px(...)          log p(x) ~ logmeanexp_k(log p(x, z_k) - log r(z_k)), z_k ~ r
    importance_sampled_log_px(...)  the same with r = q(z|x), the encoder, as proposal
    grid_log_px(vae, x)             the exact answer for Nz = 2 (a sum over a fine grid), for checks

Every "target" here is a function of z alone, for a fixed x:

    target(z) -> (logp, dlogp_dz)      z: (..., B, Z) -> logp (..., B), dlogp_dz (..., B, Z)

``make_log_joint`` builds one from a ``VAE``; anything else with the same contract (a closed-form
model in a test, a model under Monte Carlo EM) works with every function below.

Randomness.  Each estimator gives every datapoint its own ``numpy.random.Generator``, spawned from the
one passed in (``rng.spawn(B)``) or passed in directly as a list, so that a datapoint's estimate does
not depend on which other datapoints share its batch: a batch gives the datapoints' one-by-one answers
(tested).  The authors' batched Appendix D code did not (PAPER.md).

Numerics.  Every mean of exponentials is a log-sum-exp (``scipy.special.logsumexp``); HMC never lets a
non-finite position, log-density or gradient into a chain (such proposals are rejected).

Speed.  The estimators spend most of their time in log p(x|z).  For a Bernoulli decoder they take it,
and its gradient, from ``npvae.kernels`` (``make_log_joint(..., fast=True)``), and skip the decoder's
weight gradients, which no estimator uses; tests/test_fast_marginal.py ties that path to the readable
one below, which stays the default of ``make_log_joint``.
"""
from typing import NamedTuple
import warnings

import numpy as np
from scipy.special import logsumexp

from . import distributions as D
from .kernels import bernoulli_log_lik, bernoulli_log_lik_and_dlogits
from .model import (VAE, decoder_backward, decoder_forward, encoder_forward, log_likelihood_backward,
                    log_likelihood_forward, standard_normal_logpdf_backward, standard_normal_logpdf_forward)

ADAPT_FACTOR = 1.02          # step size x 1.02^(+-1) per burn-in transition (the authors' hmc.py)
ADAPT_SMOOTHING = 0.1        # weight of the newest transition in a chain's running acceptance rate
KDE_FACTORS = np.exp((np.arange(10) - 5) / 2.0)    # Scott's factor x e^((i - 5)/2), i = 0..9 (App. D)
# The same without the widths above Scott's (i = 0..5): a q no wider than the posterior keeps the
# weights q / p(x, z) light-tailed (see hmc_log_px).
KDE_FACTORS_UP_TO_SCOTT = KDE_FACTORS[:6]
MIN_KDE_SAMPLES_PER_DIM = 4  # fewer fitting samples per latent dimension: a diagonal Gaussian instead


# --------------------------------------------------------------------------- the target log p(x, z)

def make_log_joint(vae, x, fast=False):
    """The target for HMC: log p(x, z) = log p(x|z) + log p(z) and its gradient with respect to z.

    vae: a ``VAE``; x: (B, x_dim), checked once here, not in every leapfrog step.
    Returns ``log_joint_and_grad_z(z, grad=True)``:
        z: (..., B, z_dim) -> (logp (..., B), dlogp/dz (..., B, z_dim)), or (logp, None) if grad=False.
    It reads ``vae.params`` at each call, so a model updated in place (Monte Carlo EM) is seen.
    fast=True: for a Bernoulli decoder, what the estimators use: log p(x|z) and its gradient from
    ``kernels.bernoulli_log_lik*`` and no weight gradients; equal to this readable path to 1e-12 in
    float64 (tests/test_fast_marginal.py).  The log p(x|z) pass is 3 to 10 times faster, the estimators
    about 2 times (benchmarks/bench_marginal.py).  A Gaussian decoder ignores it.
    """
    if not isinstance(vae, VAE):
        raise TypeError(f"make_log_joint needs a npvae.VAE, got {type(vae).__name__}")
    return _vae_log_joint(vae, vae._check_x(x), fast)


def _vae_log_joint(vae, x, fast=True):
    """make_log_joint without the check of x (the caller has done it); fast by default (the estimators')."""
    arch, batch = vae.arch, x.shape[0]

    def check_and_cast(z):
        if z.ndim < 2 or z.shape[-2:] != (batch, arch.z_dim):
            raise ValueError(f"z must have shape (..., {batch}, {arch.z_dim}), got {z.shape}")
        return z.astype(vae.dtype, copy=False)   # a float32 model runs its products in float32

    def log_joint_and_grad_z(z, grad=True):
        z = check_and_cast(z)
        dec_out, dec_cache = decoder_forward(vae.params, arch, z)
        log_px_z, lik_cache = log_likelihood_forward(arch.likelihood, x, dec_out)     # (..., B)
        log_pz, pz_cache = standard_normal_logpdf_forward(z)                           # (..., B)
        logp = log_px_z + log_pz
        if not grad:
            return logp, None
        # d/dz of each logp element on its own: the elements depend on disjoint z rows, so a
        # backward pass of sum(logp) gives every row its own gradient.
        ones = np.ones_like(logp)
        dz, _ = decoder_backward(log_likelihood_backward(ones, lik_cache, arch.likelihood), dec_cache)
        return logp, dz + standard_normal_logpdf_backward(ones, pz_cache)

    def bernoulli_log_joint_and_grad_z(z, grad=True):
        """The same for a Bernoulli decoder, fast: log p(x|z) and its gradient in one kernel call, and
        no weight gradients.  tests/test_fast_marginal.py holds it to the function above."""
        z = check_and_cast(z)
        logits, dec_cache = decoder_forward(vae.params, arch, z)
        log_pz, pz_cache = standard_normal_logpdf_forward(z)                           # (..., B)
        if not grad:
            return bernoulli_log_lik(x, logits) + log_pz, None
        log_px_z, dlogits = bernoulli_log_lik_and_dlogits(x, logits)                  # (..., B), like logits
        dz, _ = decoder_backward(dlogits, dec_cache, param_grads=False)
        return log_px_z + log_pz, dz + standard_normal_logpdf_backward(np.ones_like(log_pz), pz_cache)

    return bernoulli_log_joint_and_grad_z if fast and arch.likelihood == "bernoulli" else log_joint_and_grad_z


def _evaluate(target, z):
    """(logp, grad) in float64, whatever the target returns; non-finite values are the caller's to handle."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        logp, grad = target(z)
    return np.asarray(logp, dtype=np.float64), np.asarray(grad, dtype=np.float64)


def _log_joint_only(target, is_vae):
    """z -> log p(x, z) in float64: a VAE target skips its backward pass; a plain callable may
    return (logp, grad) or logp alone."""
    def log_joint(z):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = target(z, grad=False) if is_vae else target(z)
        return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float64)
    return log_joint


# --------------------------------------------------------------------------- Hamiltonian Monte Carlo

def hmc_transition(target, z, logp, grad, step_size, n_leapfrog, momentum, log_u):
    """One HMC transition per chain (leapfrog with a half momentum step at each end, then Metropolis-Hastings).

    z: (B, Z) current positions with logp: (B,) and grad: (B, Z) = target(z), all finite;
    step_size: (B,); momentum: (B, Z) ~ N(0, I); log_u: (B,) = log of U(0, 1) draws.
    Energy H(z, p) = -log p(x, z) + |p|^2 / 2; accept with probability min(1, exp(H_start - H_end)).
    Returns (z, logp, grad, accept_prob), the first three after accept/reject, accept_prob: (B,).

    A chain whose trajectory reaches a non-finite position, log-density, gradient or momentum stops
    there (its last finite state is kept, so the target never sees a non-finite z) and is rejected.
    """
    with np.errstate(over="ignore", invalid="ignore"):   # non-finite values are handled explicitly below
        return _hmc_transition(target, z, logp, grad, step_size, n_leapfrog, momentum, log_u)


def _hmc_transition(target, z, logp, grad, step_size, n_leapfrog, momentum, log_u):
    eps = step_size[:, None]
    p = momentum + 0.5 * eps * grad                      # first half step of the momentum
    z_new, logp_new, grad_new = z, logp, grad
    alive = np.ones(z.shape[0], dtype=bool)
    for step in range(n_leapfrog):
        z_try = z_new + eps * p                          # full step of the position
        alive &= np.isfinite(z_try).all(axis=-1)
        z_try = np.where(alive[:, None], z_try, z_new)
        logp_try, grad_try = _evaluate(target, z_try)
        alive &= np.isfinite(logp_try) & np.isfinite(grad_try).all(axis=-1)
        z_new = np.where(alive[:, None], z_try, z_new)
        logp_new = np.where(alive, logp_try, logp_new)
        grad_new = np.where(alive[:, None], grad_try, grad_new)
        # full momentum steps in between, a half step at the end
        p = p + (eps if step < n_leapfrog - 1 else 0.5 * eps) * grad_new
        alive &= np.isfinite(p).all(axis=-1)
    h_start = -logp + 0.5 * (momentum * momentum).sum(axis=-1)
    h_end = -logp_new + 0.5 * (p * p).sum(axis=-1)
    log_accept = np.where(alive, np.minimum(0.0, h_start - h_end), -np.inf)
    log_accept = np.where(np.isnan(log_accept), -np.inf, log_accept)
    accept = log_u < log_accept
    z_out = np.where(accept[:, None], z_new, z)
    return z_out, np.where(accept, logp_new, logp), np.where(accept[:, None], grad_new, grad), np.exp(log_accept)


def adapt_step_size(step_size, accept_rate, target_accept=0.9, factor=ADAPT_FACTOR):
    """step x factor where a chain accepts more often than the target, / factor where less.  All (B,)."""
    return step_size * factor ** np.sign(accept_rate - target_accept)


class HMCSamples(NamedTuple):
    samples: np.ndarray        # (n_samples, B, Z)
    accept_rate: np.ndarray    # (B,) mean Metropolis-Hastings acceptance probability after burn-in
    step_size: np.ndarray      # (B,) the frozen step sizes the samples were drawn with


def hmc_sample(target, z0, rng, n_samples, n_leapfrog=4, step_size=0.1, burn_in=200, target_accept=0.9,
               thin=1, step_jitter=0.2):
    """Hamiltonian Monte Carlo on z, one chain per datapoint, vectorized over the batch.

    target: z (B, Z) -> (logp (B,), dlogp/dz (B, Z)), e.g. ``make_log_joint(vae, x)``;
    z0: (B, Z), where the target must be finite;
    rng: a Generator (draws shaped (B, Z) from it) or a sequence of B Generators, one per chain
         (then a chain's draws do not depend on the other chains: what ``hmc_log_px`` uses);
    step_size: a float or (B,), the initial leapfrog step sizes.

    ``burn_in`` transitions first, during which each chain's step size is multiplied by 1.02 when
    its running acceptance rate (an exponential average of its MH acceptance probabilities, weight
    ADAPT_SMOOTHING) is above ``target_accept`` and divided by 1.02 when below.  Then each step size
    is frozen at its geometric mean over the second half of the burn-in, so that the sampling phase
    is a time-homogeneous, valid MCMC, and every ``thin``-th of n_samples * thin transitions is kept.
    (Comparing the running rate, not each transition's acceptance, with the target makes the *mean*
    acceptance settle at the target: a single transition's acceptance probability is 1 more than half
    the time, and the +-1 rule on it would settle its median, ~0.72 mean for a 0.9 target in
    the tests' VAE.  The average removes the phase of the rule's +-2% oscillation.)

    Each transition scales its chain's step size by U(1 - step_jitter, 1 + step_jitter) (Neal, 2011,
    "MCMC using Hamiltonian dynamics", sec. 5.4.2.2).  The authors' code used a fixed step, but a fixed
    step with a fixed number of leapfrog steps can make the trajectory nearly periodic in a direction
    of the posterior: in tests/test_marginal.py's linear-Gaussian model, 4 steps at the adapted size
    rotate the narrow direction by 2 pi - 0.13 rad: over 400 chains of 100 draws, the 5% quantile
    of the chains' variances there was 1/20 of the true variance (2/3 with step_jitter=0.2).
    step_jitter=0 reproduces the fixed step.

    Returns HMCSamples(samples (n_samples, B, Z), accept_rate (B,), step_size (B,)), a tuple;
    accept_rate is the mean acceptance probability over the sampling phase (an estimate of the
    fraction accepted with less noise than counting).
    """
    z = _as_finite_2d(z0, "z0")
    batch, z_dim = z.shape
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_leapfrog = _check_int(n_leapfrog, "n_leapfrog", 1)
    burn_in = _check_int(burn_in, "burn_in", 0)
    thin = _check_int(thin, "thin", 1)
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
    step = _check_step_size(step_size, batch)
    if not 0.0 <= step_jitter < 1.0:
        raise ValueError(f"step_jitter must lie in [0, 1), got {step_jitter}")
    draw = _momentum_source(rng, batch, z_dim)

    logp, grad = _evaluate(target, z)
    if logp.shape != (batch,) or grad.shape != (batch, z_dim):
        raise ValueError(f"target(z) must return shapes ({batch},) and ({batch}, {z_dim}), "
                         f"got {logp.shape} and {grad.shape}")
    bad = ~(np.isfinite(logp) & np.isfinite(grad).all(axis=-1))
    if bad.any():
        raise ValueError(f"the target is not finite at z0 for chains {np.flatnonzero(bad)[:10].tolist()}")

    samples = np.empty((n_samples, batch, z_dim))
    accept_sum = np.zeros(batch)
    rate, log_step_sum, n_averaged = None, np.zeros(batch), max(1, burn_in // 2)
    for t in range(burn_in + n_samples * thin):
        momentum, jitter, log_u = draw()
        z, logp, grad, accept_prob = hmc_transition(target, z, logp, grad, step * (1.0 + step_jitter * jitter),
                                                    n_leapfrog, momentum, log_u)
        if t < burn_in:
            rate = accept_prob if rate is None else rate + ADAPT_SMOOTHING * (accept_prob - rate)
            step = adapt_step_size(step, rate, target_accept)
            if t >= burn_in - n_averaged:
                log_step_sum += np.log(step)
            if t == burn_in - 1:
                step = np.exp(log_step_sum / n_averaged)
            continue
        accept_sum += accept_prob
        kept, rest = divmod(t - burn_in + 1, thin)
        if rest == 0:
            samples[kept - 1] = z
    return HMCSamples(samples, accept_sum / (n_samples * thin), step)


def _momentum_source(rng, batch, z_dim):
    """A function () -> (momentum (B, Z) ~ N(0, I), jitter (B,) ~ U(-1, 1), log_u (B,) = log U(0, 1)),
    drawing from rng as hmc_sample describes."""
    if isinstance(rng, np.random.Generator):
        return lambda: (rng.standard_normal((batch, z_dim)), rng.uniform(-1.0, 1.0, batch),
                        np.log(rng.random(batch)))
    gens = list(rng) if isinstance(rng, (list, tuple)) else None
    if gens is None or len(gens) != batch or not all(isinstance(g, np.random.Generator) for g in gens):
        raise TypeError(f"rng must be a numpy.random.Generator or a sequence of {batch} of them")

    def draw():
        momentum = np.stack([g.standard_normal(z_dim) for g in gens])
        return momentum, np.array([g.uniform(-1.0, 1.0) for g in gens]), np.log([g.random() for g in gens])
    return draw


# --------------------------------------------------------------------------- Appendix D

def fit_log_density(samples, kde_factors=KDE_FACTORS):
    """q(z) for Appendix D, fitted to posterior samples of one datapoint (the authors' hmc_est.py).

    samples: (n, Z) -> a function logpdf(z: (m, Z)) -> (m,).
    * Z >= 2 and n >= 4 Z: the Gaussian KDE of ``scipy.stats.gaussian_kde`` (``gaussian_kde_logpdf``)
      whose bandwidth factor (the kernel's standard deviation in units of the samples' own) is
      Scott's factor n^(-1/(Z+4)) times the best of kde_factors (default e^((i-5)/2), i = 0..9), best
      by held-out log-likelihood: fit on the first half of the samples, score on the second half;
      then refit on all n with that multiple of all n's Scott factor.
    * otherwise (Z = 1 or too few samples for a covariance): a diagonal Gaussian with the samples'
      mean and (unbiased) variance; also the fallback when the samples lie in a subspace.
    """
    samples = np.asarray(samples, dtype=np.float64)
    n, z_dim = samples.shape
    if n < 2:
        raise ValueError(f"need at least 2 samples to fit q(z), got {n}")
    if z_dim >= 2 and n >= MIN_KDE_SAMPLES_PER_DIM * z_dim:
        try:
            return _fit_kde(samples, np.asarray(kde_factors, dtype=np.float64))
        except np.linalg.LinAlgError:          # samples in a subspace: the KDE's covariance is singular
            pass
    mean, var = samples.mean(axis=0), samples.var(axis=0, ddof=1)

    def logpdf(z):
        with np.errstate(divide="ignore", invalid="ignore"):
            return D.gaussian_logpdf_forward(z, mean, np.log(var))[0]
    return logpdf


def _fit_kde(samples, factors):
    n, z_dim = samples.shape
    half = n // 2
    scott = half ** (-1.0 / (z_dim + 4))
    scores = [gaussian_kde_logpdf(samples[:half], scott * c)(samples[half:]).sum() for c in factors]
    best = factors[int(np.nanargmax(scores))]
    return gaussian_kde_logpdf(samples, n ** (-1.0 / (z_dim + 4)) * best)


def gaussian_kde_logpdf(data, factor):
    """log q(z) for q = ``scipy.stats.gaussian_kde(data.T, bw_method=factor)``, in NumPy (tested equal).

    data: (n, Z) -> logpdf(z: (m, Z)) -> (m,), with
        q(z) = (1/n) sum_j N(z; data_j, factor^2 C),   C = the data's unbiased covariance,
    as a log-sum-exp over j of Gaussian log-densities in coordinates whitened by C's Cholesky factor.
    (scipy's own logpdf solves its triangular systems in scipy's bundled OpenBLAS, which took 21 ms
    per 2 x 25 solve on this project's loaded 2-core machine, against 0.2 ms single-threaded.)
    Raises numpy.linalg.LinAlgError when C is singular, as gaussian_kde does.
    """
    n, z_dim = data.shape
    chol = np.linalg.cholesky(np.cov(data, rowvar=False).reshape(z_dim, z_dim))
    whiten = np.linalg.inv(chol).T                      # u = z @ whiten has identity covariance under C
    centres = data @ whiten / factor
    log_norm = -np.log(n) - 0.5 * z_dim * D.LOG_2PI - np.log(np.diag(chol)).sum() - z_dim * np.log(factor)

    def logpdf(z):
        u = np.asarray(z, dtype=np.float64) @ whiten / factor                      # (m, Z)
        sq = ((u[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1)             # (m, n)
        return logsumexp(-0.5 * sq, axis=1) + log_norm
    return logpdf


def harmonic_log_px(log_q, log_joint):
    """Appendix D step (3):  1/p(x) = E_{z ~ p(z|x)}[q(z) / p(x, z)]  for any normalized q, so

        log p(x) ~= -logmeanexp_l [log q(z_l) - log p(x, z_l)],   z_l ~ p(z|x),  l = 1..L.

    log_q, log_joint: (L, ...) -> (log_px (...), stderr (...)).
    stderr is the delta-method standard error: with w_l = q(z_l) / p(x, z_l),
    sd(log p_hat) ~= sd(w) / (sqrt(L) mean(w)).  It treats the L samples as independent (for an
    autocorrelated chain it is too small by about sqrt(integrated autocorrelation time)) and, like
    the estimator's own Jensen bias (it is -log of an unbiased estimate of 1/p(x), biased upwards by
    about stderr^2 / 2), it is only meaningful when q is no heavier-tailed than the posterior.
    """
    a = np.asarray(log_q, dtype=np.float64) - np.asarray(log_joint, dtype=np.float64)
    n = a.shape[0]
    log_mean_w = logsumexp(a, axis=0) - np.log(n)
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.exp(a - log_mean_w)                        # w / mean(w): each in [0, L], no overflow
        stderr = np.sqrt(np.maximum(r.var(axis=0, ddof=1), 0.0) / n)
    return -log_mean_w, stderr


class MarginalEstimate(NamedTuple):
    log_px: np.ndarray         # (B,) the estimates of log p(x)
    stderr: np.ndarray         # (B,) their standard errors (see harmonic_log_px)
    accept_rate: np.ndarray    # (B,) HMC acceptance after burn-in (diagnostic)
    step_size: np.ndarray      # (B,) the frozen HMC step sizes


def best_starts(vae, x, candidates, chunk=65536, own=None):
    """Per datapoint, the candidate z with the highest log p(x, z): chain starts for ``hmc_log_px``
    when no encoder gives one (Monte Carlo EM), or a better one than the encoder's mean
    (``examples/marginal_starts.py``).  A chain started at z = 0 on a sharp, multimodal
    posterior often burns in at a poor mode: on a Figure 3 MCEM model (N = 1000, 2.5e7 samples) the
    App. D estimate of the first 100 training points was 40 nats higher from the best of z = 0, the
    prior draws and the training chains than from z = 0 (README, "Where the estimator's chains start").

    vae: a ``VAE``; x: (B, x_dim); candidates: (K, Z), tried for every datapoint, as many at a time
    as keep a decoder call within ``chunk`` (candidate, datapoint) pairs (memory ~ chunk x x_dim
    floats: 200 MB for Figure 3's model in float32 at the default); own: optional (B, Z), one more
    candidate per datapoint (its encoder mean), tried first.  Returns (B, Z) float64; ties go to the
    first candidate."""
    x = vae._check_x(x)
    candidates = _as_finite_2d(candidates, "candidates")
    if candidates.shape[1] != vae.arch.z_dim:
        raise ValueError(f"candidates must have shape (K, {vae.arch.z_dim}), got {candidates.shape}")
    log_joint = _vae_log_joint(vae, x)

    def score(z):                                       # log p(x, z), NaN (overflow) as -inf
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            lp = np.asarray(log_joint(z, grad=False)[0], dtype=np.float64)
        return np.where(np.isnan(lp), -np.inf, lp)

    best, best_lp = np.zeros((x.shape[0], vae.arch.z_dim)), np.full(x.shape[0], -np.inf)
    if own is not None:
        own = _as_finite_2d(own, "own")
        if own.shape != best.shape:
            raise ValueError(f"own must have shape {best.shape}, got {own.shape}")
        best[:], best_lp[:] = own, score(own)
    rows = np.arange(x.shape[0])
    per_call = max(1, int(chunk) // max(1, x.shape[0]))                # candidates per decoder call
    for start in range(0, len(candidates), per_call):
        c = candidates[start:start + per_call]
        lp = score(np.broadcast_to(c[:, None, :], (len(c),) + best.shape))                      # (k, B)
        k = lp.argmax(axis=0)
        better = lp[k, rows] > best_lp                  # strictly: an earlier chunk keeps its ties
        best[better], best_lp[better] = c[k[better]], lp[k[better], rows[better]]
    return best


def hmc_log_px(model, x, rng, n_samples=50, n_leapfrog=4, step_size=None, burn_in=200, thin=1,
               target_accept=0.9, z0=None, step_jitter=0.2, kde_factors=KDE_FACTORS, fast=True):
    """Appendix D: log p(x) from posterior samples, for small latent spaces (the paper: Nz < 5).

    model: a ``VAE`` (with x: (B, x_dim)), or a target z (B, Z) -> (logp (B,), dlogp/dz (B, Z)) for a
           fixed batch (then x must be None and z0 is required);
    rng:   a Generator, from which one child per datapoint is spawned (``rng.spawn(B)``), or a
           sequence of B Generators; datapoint i's answer depends only on its own Generator, so a
           batch equals the datapoints one by one (to rounding);
    z0:    (B, Z) chain starts; default for a VAE: the encoder's mean mu(x);
    step_size: initial step sizes (float or (B,)); default for a VAE: half the smallest encoder
           standard deviation per datapoint (the posterior's scale, roughly), else 0.1;
    fast:  for a VAE, ``make_log_joint``'s fast path (False: the readable one, for checks and timings).

    Per datapoint (the authors' hmc_est.py with the paper's settings, 50 samples, 4 leapfrog steps):
    (1) n_samples posterior draws by ``hmc_sample`` (after ``burn_in`` adapting transitions, keeping
        every ``thin``-th; the other HMC arguments are hmc_sample's);
    (2) q(z) = ``fit_log_density`` of the first n_samples // 2 draws;
    (3) log p(x) ~= -logmeanexp(log q(z) - log p(x, z)) over the other draws (``harmonic_log_px``).

    Returns MarginalEstimate(log_px (B,), stderr (B,), accept_rate (B,), step_size (B,)), a tuple.
    A datapoint whose chain stayed put in some direction gets NaN and a warning.

    How far to trust it (measured 2026-11-22 on tests/test_marginal.py's models, exact answers known):
    the weights w = q(z) / p(x, z) have finite variance only if q's tails are lighter than the
    posterior's, and a KDE wider than Scott's rule often is not.  On the Nz = 2 Bernoulli VAE, with q
    fitted to 25 exact posterior draws, the true relative variance of w (computed on a grid) exceeded
    100 for 30% of 40 fits with the authors' factors, against 5% with
    kde_factors=KDE_FACTORS_UP_TO_SCOTT; with the paper's settings end to end (HMC, 50 draws), over
    8 seeds x 4 datapoints the estimates were off by 0.52 nats rms (max 2.1) against 0.32 (max 0.87).
    Such errors are missed by stderr, which is computed from the same 25 draws: take it as a lower
    bound at these settings.  With 400 draws (thin=5) and the narrower factors the error is
    0.03 nats rms and stderr is calibrated (rms of error / stderr 1.02).  The end-to-end numbers
    are examples/appendix_d_accuracy.py's (re-measured 2026-11-23, the same to the digit).  The
    default is the authors' procedure; the bias it leaves is upwards (large weights are the rare
    ones).
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    if n_samples < 4:
        raise ValueError(f"n_samples={n_samples} is too small to split: need >= 2 draws to fit q(z) "
                         "and >= 2 to evaluate the estimate, so at least 4")
    if isinstance(model, VAE):
        x = model._check_x(x)
        target = _vae_log_joint(model, x, fast)
        mu, logvar = encoder_forward(model.params, model.arch, x)[0]
        if z0 is None:
            z0 = mu
        if step_size is None:   # the posterior is rarely wider than the prior N(0, I): cap at 1
            step_size = 0.5 * np.minimum(np.exp(0.5 * logvar.astype(np.float64)).min(axis=-1), 1.0)
    elif callable(model):
        if x is not None:
            raise ValueError("a callable target already fixes x: pass x=None (and z0)")
        if z0 is None:
            raise ValueError("a callable target needs z0, the chains' starting points, shape (B, Z)")
        target = model
        step_size = 0.1 if step_size is None else step_size
    else:
        raise TypeError(f"model must be a npvae.VAE or a callable target, got {type(model).__name__}")
    z0 = _as_finite_2d(z0, "z0")
    batch = z0.shape[0]
    if isinstance(model, VAE) and z0.shape != (x.shape[0], model.arch.z_dim):
        raise ValueError(f"z0 must have shape ({x.shape[0]}, {model.arch.z_dim}), got {z0.shape}")
    gens = _per_datapoint_generators(rng, batch)

    samples, accept_rate, step = hmc_sample(target, z0, gens, n_samples, n_leapfrog, step_size, burn_in,
                                            target_accept, thin, step_jitter)
    n_fit = n_samples // 2
    fitting, evaluation = samples[:n_fit], samples[n_fit:]          # (n_fit, B, Z), (n_eval, B, Z)
    log_joint = _log_joint_only(target, isinstance(model, VAE))(evaluation)   # (n_eval, B)
    # A chain that did not move in some direction leaves q degenerate (or the evaluation trivial).
    stuck = (fitting.var(axis=0) == 0).any(axis=-1) | (evaluation == evaluation[:1]).all(axis=(0, 2))
    log_q = np.zeros_like(log_joint)
    for i in np.flatnonzero(~stuck):  # q is fitted to one datapoint's own draws, never across datapoints
        log_q[:, i] = fit_log_density(fitting[:, i], kde_factors)(evaluation[:, i])
    log_px, stderr = harmonic_log_px(log_q, log_joint)
    if stuck.any():
        log_px[stuck], stderr[stuck] = np.nan, np.nan
        warnings.warn(f"HMC chains of datapoints {np.flatnonzero(stuck)[:10].tolist()} stayed put in some "
                      "direction while sampling; their log p(x) is NaN (try a smaller step_size or a longer "
                      "burn_in)", RuntimeWarning, stacklevel=2)
    return MarginalEstimate(log_px, stderr, accept_rate, step)


# --------------------------------------------------------------------------- importance sampling

def importance_log_px(log_joint, proposal, rngs, k, z_dim, k_chunk):
    """log p(x) ~= log (1/k) sum_k p(x, z_k) / r(z_k),  z_k = proposal(eps_k),  eps_k ~ N(0, I).

    log_joint: z (K, B, Z) -> log p(x, z) (K, B);
    proposal:  eps (K, B, Z) -> (z (K, B, Z), log r(z) (K, B)), a reparameterized sampler of r(z|x);
    rngs: B Generators, datapoint i's noise from rngs[i] (its stream does not depend on k_chunk);
    k_chunk: importance samples per call, so memory is bounded for any k.

    Unbiased for p(x), so by Jensen E[estimate] <= log p(x); with k = 1 its mean is the ELBO of r
    (eq. 6) and it rises towards log p(x) as k grows (Burda et al., 2015).
    Returns (log_px (B,), stderr (B,)); stderr is the delta-method sd(w) / (sqrt(k) mean(w)).
    The sums of w and w^2 are carried across chunks as running log-sum-exps.
    """
    batch = len(rngs)
    lse_w = np.full(batch, -np.inf)          # log sum_k w_k
    lse_w2 = np.full(batch, -np.inf)         # log sum_k w_k^2
    for start in range(0, k, k_chunk):
        kc = min(k_chunk, k - start)
        eps = np.stack([g.standard_normal((kc, z_dim)) for g in rngs], axis=1)    # (kc, B, Z)
        z, log_r = proposal(eps)
        log_w = log_joint(z) - log_r                                               # (kc, B)
        log_w = np.where(np.isnan(log_w), -np.inf, log_w)     # a NaN weight would poison the sum
        lse_w = np.logaddexp(lse_w, logsumexp(log_w, axis=0))
        lse_w2 = np.logaddexp(lse_w2, logsumexp(2.0 * log_w, axis=0))
    log_px = lse_w - np.log(k)
    with np.errstate(invalid="ignore", over="ignore"):
        # var(w) / mean(w)^2 = mean(w^2) / mean(w)^2 - 1 = exp(lse_w2 - 2 lse_w + log k) - 1  (<= k - 1)
        rel_var = np.maximum(np.exp(lse_w2 - 2.0 * lse_w + np.log(k)) - 1.0, 0.0) * (k / max(k - 1, 1))
        stderr = np.sqrt(rel_var / k)
    return log_px, stderr


def diagonal_gaussian_proposal(mu, logvar):
    """r(z) = N(mu, diag exp(logvar)) as a reparameterized sampler: eps -> (mu + sigma eps, log r).

    mu, logvar: (B, Z).  log r is computed from eps, -1/2 sum (log 2 pi + logvar + eps^2), exact.
    """
    mu, logvar = np.asarray(mu, dtype=np.float64), np.asarray(logvar, dtype=np.float64)
    sigma = np.exp(0.5 * logvar)

    def proposal(eps):
        return mu + sigma * eps, -0.5 * (D.LOG_2PI + logvar + eps * eps).sum(axis=-1)
    return proposal


def importance_sampled_log_px(model, x, k=5000, *, rng, chunk=4096, proposal=None, return_stderr=False,
                              fast=True):
    """log p(x) by importance sampling with k samples per datapoint (the IWAE bound of Burda et al.).

        log p(x) ~= logmeanexp_k [log p(x, z_k) - log q(z_k|x)],   z_k = mu(x) + sigma(x) eps_k

    model: a ``VAE`` (x: (B, x_dim); proposal default q(z|x), the encoder), or a target
           z (K, B, Z) -> logp (K, B) or (logp, grad) (then x must be None and ``proposal`` given);
    proposal: optional (mu, logvar), each (B, Z): a diagonal Gaussian in place of the encoder;
    rng: a Generator (one child per datapoint is spawned) or a sequence of B Generators;
    chunk: at most this many z per decoder call: memory ~ chunk x (hidden + x_dim) x 8 bytes x a few,
           ~150 MB for the paper's MNIST model at the default; datapoints are chunked too;
    fast: for a VAE, ``make_log_joint``'s fast path (False: the readable one, for checks and timings).

    Returns log_px (B,), or (log_px, stderr) with return_stderr=True (see importance_log_px).
    """
    k = _check_int(k, "k", 1)
    chunk = _check_int(chunk, "chunk", 1)
    if isinstance(model, VAE):
        x = model._check_x(x)
        if proposal is None:
            mu, logvar = encoder_forward(model.params, model.arch, x)[0]
        else:
            mu, logvar = _check_proposal(proposal, (x.shape[0], model.arch.z_dim))
        gens = _per_datapoint_generators(rng, x.shape[0])
        # Datapoint blocks of size b with k-chunks of kc: kc * b <= chunk z per decoder call.
        kc = min(k, chunk)
        b = max(1, chunk // kc)
        log_px, stderr = np.empty(x.shape[0]), np.empty(x.shape[0])
        for s in range(0, x.shape[0], b):
            rows = slice(s, s + b)
            target = _vae_log_joint(model, x[rows], fast)
            log_px[rows], stderr[rows] = importance_log_px(
                _log_joint_only(target, True), diagonal_gaussian_proposal(mu[rows], logvar[rows]), gens[rows],
                k, model.arch.z_dim, kc)
    elif callable(model):
        if x is not None:
            raise ValueError("a callable target already fixes x: pass x=None (and a proposal)")
        if proposal is None:
            raise ValueError("a callable target needs proposal=(mu, logvar), each (B, Z)")
        mu, logvar = _check_proposal(proposal, None)
        gens = _per_datapoint_generators(rng, mu.shape[0])
        kc = max(1, min(k, chunk // mu.shape[0]))
        log_px, stderr = importance_log_px(_log_joint_only(model, False), diagonal_gaussian_proposal(mu, logvar),
                                           gens, k, mu.shape[1], kc)
    else:
        raise TypeError(f"model must be a npvae.VAE or a callable target, got {type(model).__name__}")
    return (log_px, stderr) if return_stderr else log_px


# --------------------------------------------------------------------------- the exact answer, for Nz = 2

def grid_log_px(vae, x, half_width=6.0, n=301):
    """The exact log p(x) of a VAE with a 2-D latent space, to check the estimators against.

        log p(x) = log integral p(x|z) p(z) dz ~= logsumexp_cells log p(x, z_cell) + log(cell area)

    on an n x n grid over [-half_width, half_width]^2.  A Riemann sum of a smooth integrand that
    vanishes at the edges converges fast: for tests/test_marginal.py's Bernoulli VAE (posterior sds
    0.33 and more) the default 0.04-wide cells agree with a 601-point grid to 2e-8, and with the same
    cells over [-9, 9]^2 to 3.3e-7 (measured; the test asserts 1e-7 and 1e-6).  Check both on a
    model of your own: narrow posteriors need finer cells, wide ones a wider square.
    x: (B, x_dim) -> (B,), one datapoint at a time (memory ~ n^2 x (hidden + x_dim) x 8 bytes).
    """
    if not isinstance(vae, VAE):
        raise TypeError(f"vae must be a npvae.VAE, got {type(vae).__name__}")
    if vae.arch.z_dim != 2:
        raise ValueError(f"grid_log_px integrates over a 2-D latent space; this VAE has z_dim={vae.arch.z_dim}")
    n = _check_int(n, "n", 2)
    try:
        half_width = float(half_width)
    except (TypeError, ValueError):
        raise TypeError(f"half_width must be a number, got {type(half_width).__name__}") from None
    if not (np.isfinite(half_width) and half_width > 0):
        raise ValueError(f"half_width must be positive and finite, got {half_width}")
    x = vae._check_x(x)
    g = np.linspace(-half_width, half_width, n)
    z = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 1, 2)
    log_cell = 2.0 * np.log(g[1] - g[0])
    return np.array([logsumexp(vae.log_joint(x[i:i + 1], z)) + log_cell for i in range(x.shape[0])])


# --------------------------------------------------------------------------- input checks

def _check_int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_finite_2d(a, name):
    a = np.array(a, dtype=np.float64)          # a copy: the chains never write into the caller's array
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, Z) with B, Z >= 1, got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _check_step_size(step_size, batch):
    step = np.array(np.broadcast_to(np.asarray(step_size, dtype=np.float64), (batch,)))
    if not (np.isfinite(step).all() and (step > 0).all()):
        raise ValueError("step_size must be positive and finite")
    return step


def _check_proposal(proposal, shape):
    try:
        mu, logvar = (np.asarray(a, dtype=np.float64) for a in proposal)
    except (TypeError, ValueError):
        raise TypeError("proposal must be a pair (mu, logvar) of arrays shaped (B, Z)") from None
    if mu.ndim != 2 or mu.shape != logvar.shape or (shape is not None and mu.shape != shape):
        raise ValueError(f"proposal (mu, logvar) must both have shape {shape or '(B, Z)'}, "
                         f"got {mu.shape} and {logvar.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(logvar).all()):
        raise ValueError("proposal (mu, logvar) contains NaN or inf")
    return mu, logvar


def _per_datapoint_generators(rng, batch):
    """B Generators: rng.spawn(B) for one Generator (children independent of the batch's other
    datapoints), or a sequence of B Generators as given."""
    if isinstance(rng, np.random.Generator):
        return rng.spawn(batch)
    if isinstance(rng, (list, tuple)) and len(rng) == batch and all(isinstance(g, np.random.Generator)
                                                                     for g in rng):
        return list(rng)
    raise TypeError(f"rng must be a numpy.random.Generator or a sequence of {batch} Generators, "
                    f"got {type(rng).__name__}")
