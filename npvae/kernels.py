"""Numerical kernels (Numba), each with its plain NumPy reference beside it.

``bernoulli_kl_grads`` fuses the two element-wise ends of the model's
backward pass for a Bernoulli decoder with estimator B:

    loss = -scale * sum_b [ mean_l log p(x_b | z_lb) - KL(q(z|x_b) || p(z)) ]

    dloss/dlogits  = scale / L * (sigmoid(logits) - x)          (L, B, D)
    dloss/dmu      = scale * mu                                  (B, Z)
    dloss/dlogvar  = scale * expm1(logvar) / 2                   (B, Z)

and, only when asked (it costs a log1p per element), the per-datapoint elbo.
The kernel makes one arithmetic pass over the logits after a single
vectorized exp per element (sigmoid from exp(-|l|)); the reference spells out
the same arithmetic with NumPy array expressions.  ``tests/test_kernels.py`` asserts they agree to
1e-12 in float64 and ``benchmarks/bench_kernels.py`` times both.

Kernels are plain loops, serial (Numba's threads would compete with
OpenBLAS's for the two cores), ``cache=True``, ``fastmath`` off, and
``error_model='numpy'`` so that division does not check for zero and the loop
vectorizes.  Set ``NUMBA_DISABLE_JIT=1`` to step through them in Python.
"""

import numpy as np
from numba import njit

from .layers import sigmoid


def bernoulli_kl_grads_reference(logits, x, mu, logvar, scale, want_elbo=False):
    """NumPy reference.  logits: (L, B, D); x: (B, D); mu, logvar: (B, Z).

    Returns (elbo (B,) or None, dlogits (L, B, D), dmu (B, Z), dlogvar (B, Z)).
    """
    L = logits.shape[0]
    dlogits = (scale / L) * (sigmoid(logits) - x)
    var_m1 = np.expm1(logvar)
    dmu = scale * mu
    dlogvar = (0.5 * scale) * var_m1
    elbo = None
    if want_elbo:
        log_px = (x * logits - np.maximum(logits, 0.0) - np.log1p(np.exp(-np.abs(logits)))).sum(axis=-1)
        kl = 0.5 * (mu * mu + var_m1 - logvar).sum(axis=-1)
        elbo = log_px.mean(axis=0) - kl
    return elbo, dlogits, dmu, dlogvar


@njit(cache=True, error_model="numpy")
def _bernoulli_kl_kernel(logits, e, x, mu, logvar, var_m1, scale, c, one, want_elbo, elbo, dlogits, dmu, dlogvar,
                         dbias):
    """The fused arithmetic.  e = exp(-|logits|) and var_m1 = expm1(logvar) come in precomputed
    (by NumPy's SIMD loops), so the loops have no transcendental call left and LLVM vectorizes
    the big one.  var_m1 may be dlogvar itself: each element is read before it is written.
    dbias gets sum_{l,b} dlogits (the output bias's gradient) in the same pass.  The elbo's sum
    over d is a separate loop, run only when asked: a float reduction in the gradient loop would
    keep it from vectorizing.  scale, c = scale / L and one come in the arrays' dtype, so that
    float32 arithmetic stays float32 (a float64 literal would promote the loop)."""
    L, B, D = logits.shape
    Z = mu.shape[1]
    half_scale = scale / (one + one)
    for b in range(B):
        kl = 0.0
        for j in range(Z):
            vm1 = var_m1[b, j]
            dmu[b, j] = scale * mu[b, j]
            dlogvar[b, j] = half_scale * vm1
            kl += mu[b, j] * mu[b, j] + vm1 - logvar[b, j]
        elbo[b] = -0.5 * kl
    dbias[:] = 0
    for l in range(L):
        for b in range(B):
            for d in range(D):
                v = logits[l, b, d]
                ed = e[l, b, d]
                s = (one if v >= 0 else ed) / (one + ed)        # sigmoid(v) from exp(-|v|), no overflow
                g = c * (s - x[b, d])
                dlogits[l, b, d] = g
                dbias[d] += g
            if want_elbo:
                acc = 0.0
                for d in range(D):
                    v = logits[l, b, d]
                    acc += x[b, d] * v - max(v, 0.0)             # log p = this - log1p(e), added below
                elbo[b] += acc / L


@njit(cache=True, error_model="numpy")
def add_bias_neg_abs(a, bias, neg_abs):
    """a += bias (broadcast over rows) and neg_abs = -|a|, in one pass: the logits' bias and the
    input of the exp that ``bernoulli_kl_grads_from_neg_abs`` needs.  a, neg_abs: (rows, D)."""
    for r in range(a.shape[0]):
        for d in range(a.shape[1]):
            v = a[r, d] + bias[d]
            a[r, d] = v
            neg_abs[r, d] = -abs(v)


def add_bias_neg_abs_reference(a, bias):
    """NumPy reference of ``add_bias_neg_abs``: returns (a + bias, -|a + bias|), new arrays."""
    out = a + bias
    return out, -np.abs(out)


def bernoulli_kl_grads(logits, x, mu, logvar, scale, want_elbo=False, out=None, work=None, dbias=None):
    """Fused version of ``bernoulli_kl_grads_reference`` (same arguments and results).

    Measured here: Numba's exp and log1p are scalar calls (no SVML), several times
    slower per element than NumPy's SIMD loops.  So NumPy computes the one
    exp(-|l|) the gradient needs into a work buffer, the Numba loop does all the
    arithmetic in one pass, and the log1p that only the *value* needs is taken
    (by NumPy again) only when want_elbo is set.

    out: optional preallocated (elbo, dlogits, dmu, dlogvar); work: optional buffer
    shaped like logits; dbias: optional (D,) array that receives sum_{l,b} dlogits.
    With all three, no fresh memory is touched per call.
    """
    e = np.empty_like(logits) if work is None else work
    np.abs(logits, out=e)
    np.negative(e, out=e)
    return bernoulli_kl_grads_from_neg_abs(logits, e, x, mu, logvar, scale, want_elbo, out, dbias)


def bernoulli_kl_grads_from_neg_abs(logits, neg_abs, x, mu, logvar, scale, want_elbo=False, out=None, dbias=None):
    """``bernoulli_kl_grads`` for a caller that already holds -|logits| (in ``neg_abs``, which
    this overwrites): FastStep gets it for free from the pass that adds the logits' bias."""
    if out is None:
        out = (np.empty(x.shape[0], logits.dtype), np.empty_like(logits), np.empty_like(mu), np.empty_like(logvar))
    if dbias is None:
        dbias = np.empty(logits.shape[-1], logits.dtype)
    e = np.exp(neg_abs, out=neg_abs)
    elbo, dlogits, dmu, dlogvar = out
    var_m1 = np.expm1(logvar, out=dlogvar)               # read, then overwritten, by the kernel
    t = logits.dtype.type
    _bernoulli_kl_kernel(logits, e, x, mu, logvar, var_m1, t(scale), t(scale / logits.shape[0]), t(1), want_elbo,
                         elbo, dlogits, dmu, dlogvar, dbias)
    if not want_elbo:
        return None, dlogits, dmu, dlogvar
    np.log1p(e, out=e)
    elbo -= e.sum(axis=-1).mean(axis=0)
    return elbo, dlogits, dmu, dlogvar
