"""Two unbiased estimators of the same gradient, side by side.

The encoder gradient of the expected reconstruction term

    R(phi) = mean_b E_{q(z|x_b)} [ log p(x_b|z) ]

can be estimated from the same noise eps (z = mu + sigma * eps) in two ways:

* reparameterization (pathwise, the paper's §2.4): differentiate log p(x|z)
  through z, across the stochastic node, into (mu, logvar);
* score function (REINFORCE, Williams 1992; the paper's eq. 3 discusses its
  variance):  E_q[ (log p(x|z) - b) * grad_phi log q(z|x) ],  with
  grad_mu log q = eps / sigma and grad_logvar log q = (eps^2 - 1) / 2 at z.

Both return gradients of R (to be *maximized*) for every ``enc.*`` parameter.
Their means agree (tests check it); their variances do not, which is the
point of the paper's estimator.
"""
import numpy as np

from . import distributions as D
from .model import decoder_forward, decoder_backward, encoder_backward, encoder_forward
from .model import log_likelihood_backward, log_likelihood_forward
from .stochastic import sample_backward, sample_forward


def reconstruction_grads(vae, x, eps, method="reparam", baseline=0.0):
    """Estimate d R / d phi from the L samples in eps.   x: (B, x_dim); eps: (L, B, z_dim).

    method: "reparam" or "score".  baseline: a constant (or (B,) array)
    subtracted from log p(x|z) in the score-function estimator (a control
    variate; any value keeps it unbiased).  Returns {enc.* name: gradient}.
    """
    if method not in ("reparam", "score"):
        raise ValueError(f"unknown method {method!r}; choose 'reparam' or 'score'")
    x = vae._check_x(x)
    eps = vae._check_eps(eps, x.shape[0])
    arch, params = vae.arch, vae.params
    L, B = eps.shape[:2]

    (mu, logvar), enc_cache = encoder_forward(params, arch, x)
    z, sample_cache = sample_forward(mu, logvar, eps)
    dec_out, dec_cache = decoder_forward(params, arch, z)
    log_px, lik_cache = log_likelihood_forward(arch.likelihood, x, dec_out)      # (L, B)
    weight = np.full(log_px.shape, 1.0 / (L * B), dtype=vae.dtype)              # d R / d log p(x|z_l)

    if method == "reparam":
        dz, _ = decoder_backward(log_likelihood_backward(weight, lik_cache, arch.likelihood), dec_cache)
        dmu, dlogvar = sample_backward(dz, sample_cache)
    else:
        # z is held fixed: only log q(z|x) is differentiated, weighted by the reward.
        _, qz_cache = D.gaussian_logpdf_forward(z, mu, logvar)
        reward = (log_px - baseline) * weight
        _, dmu, dlogvar = D.gaussian_logpdf_backward(reward, qz_cache)
        dmu, dlogvar = dmu.sum(axis=0), dlogvar.sum(axis=0)
    _, grads = encoder_backward(dmu, dlogvar, enc_cache)
    return grads
