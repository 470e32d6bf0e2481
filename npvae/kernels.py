"""Numerical kernels (Numba), all of them, each with its plain NumPy reference beside it.

Each reference is written by calling the readable functions of ``npvae.layers``,
``npvae.stochastic``, ``npvae.distributions`` and ``npvae.optim``, so the kernel-vs-reference
tests (``tests/test_fast.py``, ``tests/test_kernels.py``, ``tests/test_fast_marginal.py``) tie the
fast path to the code people read.  A kernel's name never repeats a readable function's:
``reparameterize_into`` is the kernel, ``npvae.stochastic.reparameterize_forward`` the readable node.

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
OpenBLAS's for the two cores), ``cache=True``, ``fastmath`` off (except reassociation in the
log-likelihood's row reductions, see ``_bernoulli_row_log_lik``), and
``error_model='numpy'`` so that division does not check for zero and the loop
vectorizes.  Set ``NUMBA_DISABLE_JIT=1`` to step through them in Python.
"""

import math

import numpy as np
from numba import njit

from . import distributions as D
from . import layers, stochastic
from .optim import Adagrad


def bernoulli_kl_grads_reference(logits, x, mu, logvar, scale, want_elbo=False):
    """NumPy reference, from the readable densities.  logits: (L, B, D); x: (B, D); mu, logvar: (B, Z).

    loss = -scale * sum_b [ mean_l log p(x_b | z_lb) - KL_b ].
    Returns (elbo (B,) or None, dlogits (L, B, D), dmu (B, Z), dlogvar (B, Z)).
    """
    L, B = logits.shape[:2]
    log_px, lik_cache = D.bernoulli_logpmf_forward(x, logits)                  # (L, B)
    kl, kl_cache = D.kl_standard_normal_forward(mu, logvar)                     # (B,)
    dlogits = D.bernoulli_logpmf_backward(np.full((L, B), -scale / L, logits.dtype), lik_cache)
    dmu, dlogvar = D.kl_standard_normal_backward(np.full(B, scale, mu.dtype), kl_cache)
    elbo = log_px.mean(axis=0) - kl if want_elbo else None
    return elbo, dlogits, dmu, dlogvar


@njit(cache=True, error_model="numpy", nogil=True)
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


@njit(cache=True, error_model="numpy", nogil=True)
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


# --------------------------------------------------------------------------- the fast step's small kernels
# (npvae/fast.py).  Scalars such as ``one``, ``half``, ``lo``, ``hi`` come in the arrays' dtype: a
# float64 literal would promote a float32 loop to float64.


@njit(cache=True, error_model="numpy", nogil=True)
def tanh_backward_inplace(dh, h, one, db):
    """dh <- dh * (1 - h^2), where h = tanh(a): the tanh layer's backward, in place; and
    db <- the column sums of the new dh (the layer's bias gradient), in the same pass."""
    db[:] = 0
    for r in range(dh.shape[0]):
        for c in range(dh.shape[1]):
            v = dh[r, c] * (one - h[r, c] * h[r, c])
            dh[r, c] = v
            db[c] += v


def tanh_backward_reference(dh, h):
    """Reference of ``tanh_backward_inplace``: ``layers.tanh_backward`` and its column sums (new arrays)."""
    out = layers.tanh_backward(dh, h)
    return out, out.sum(axis=0)



# tanh for float64.  NumPy's float64 tanh has no SIMD loop here (about 2.7x the time of its SIMD
# exp on the paper's 100 x 500 hidden layer), so the fast path takes tanh from one vectorized exp:
# tanh|a| = (1 - e) / (1 + e) with e = exp(-2|a|), which cannot overflow.  Near 0 the difference
# 1 - e cancels, so for |a| < TANH_SERIES_BELOW the Taylor series is used instead.  float32 keeps
# NumPy's tanh, which has a SIMD loop.
TANH_SERIES_BELOW = 0.02     # the series' next term there is 9e-20 of the value; (1 - e) / (1 + e)
                             # loses at most ~3e-15 relative just above it


@njit(cache=True, error_model="numpy", nogil=True)
def _neg_two_abs(a, out):
    """out = -2 |a| (flat arrays)."""
    for i in range(a.size):
        out[i] = -2.0 * abs(a[i])


@njit(cache=True, error_model="numpy", nogil=True)
def _tanh_from_exp(a, e):
    """a <- tanh(a) from e = exp(-2|a|) (flat arrays).  Both branches are computed and one is
    selected, so that the loop has no branch and vectorizes; NaN stays NaN, -0.0 stays -0.0."""
    for i in range(a.size):
        x = a[i]
        x2 = x * x
        series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
        big = math.copysign((1.0 - e[i]) / (1.0 + e[i]), x)
        a[i] = series if abs(x) < TANH_SERIES_BELOW else big


def tanh_inplace(a, work):
    """a <- tanh(a) in place; work: a scratch array of at least a.size elements of a's dtype.

    float64 (C-contiguous): from NumPy's SIMD exp (see TANH_SERIES_BELOW); the result is within
    2.3e-16 of np.tanh everywhere (tests/test_kernels.py).  Otherwise: np.tanh itself."""
    if a.dtype != np.float64 or not a.flags.c_contiguous:      # (the fast path's buffers always are)
        np.tanh(a, out=a)
        return
    flat, scratch = a.reshape(-1), work.reshape(-1)[:a.size]
    _neg_two_abs(flat, scratch)
    np.exp(scratch, out=scratch)
    _tanh_from_exp(flat, scratch)


def tanh_inplace_reference(a):
    """Reference of ``tanh_inplace``: ``layers.tanh_forward`` (a new array)."""
    return layers.tanh_forward(a)[0]


@njit(cache=True, error_model="numpy", nogil=True)
def heads_bias_clamp(mu, logvar, b_mu, b_logvar, lo, hi, inside):
    """mu += b_mu; logvar = clamp(logvar + b_logvar, lo, hi); inside marks the logvars the clamp
    left alone (its gradient is zero elsewhere).  NaN stays NaN."""
    B, Z = mu.shape
    for b in range(B):
        for j in range(Z):
            mu[b, j] += b_mu[j]
            v = logvar[b, j] + b_logvar[j]
            inside[b, j] = (v > lo) & (v < hi)
            logvar[b, j] = lo if v < lo else (hi if v > hi else v)


def heads_bias_clamp_reference(mu, logvar, b_mu, b_logvar, lo, hi):
    """Reference of ``heads_bias_clamp``: the bias adds and ``layers.clamp_forward``.
    Returns (mu, logvar, inside), new arrays."""
    logvar, inside = layers.clamp_forward(logvar + b_logvar, lo, hi)
    return mu + b_mu, logvar, inside


@njit(cache=True, error_model="numpy", nogil=True)
def reparameterize_into(mu, sigma, eps, z):
    """The stochastic node into a buffer: z[l] = mu + sigma * eps[l]."""
    L, B, Z = eps.shape
    for l in range(L):
        for b in range(B):
            for j in range(Z):
                z[l, b, j] = mu[b, j] + sigma[b, j] * eps[l, b, j]


def reparameterize_into_reference(mu, sigma, eps):
    """Reference of ``reparameterize_into``: ``stochastic.reparameterize_forward``."""
    z, _ = stochastic.reparameterize_forward(mu, sigma, eps)
    return z


@njit(cache=True, error_model="numpy", nogil=True)
def reparameterize_backward_into(dz, eps, sigma, inside, dmu_kl, dlogvar_kl, half, dmu, dlogvar, db_mu, db_logvar):
    """The gradient crosses the stochastic node z = mu + sigma * eps:

        dz/dmu = 1       ->  dmu     = sum_l dz[l]            (+ the KL's dmu)
        dz/dsigma = eps  ->  dsigma  = sum_l dz[l] * eps[l]
        sigma = exp(logvar / 2)  ->  dlogvar = sigma / 2 * dsigma  (+ the KL's dlogvar), times the clamp mask

    and the heads' bias gradients db_mu, db_logvar (column sums) in the same pass.  dlogvar
    holds dsigma until the last loop turns it into dlogvar."""
    L, B, Z = dz.shape
    dsigma = dlogvar
    for b in range(B):
        for j in range(Z):
            dmu[b, j] = dz[0, b, j]
            dsigma[b, j] = dz[0, b, j] * eps[0, b, j]
        for l in range(1, L):
            for j in range(Z):
                dmu[b, j] += dz[l, b, j]
                dsigma[b, j] += dz[l, b, j] * eps[l, b, j]
    db_mu[:] = 0
    db_logvar[:] = 0
    for b in range(B):
        for j in range(Z):
            dmu[b, j] += dmu_kl[b, j]
            dlogvar[b, j] = (sigma[b, j] * half * dsigma[b, j] + dlogvar_kl[b, j]) * inside[b, j]
            db_mu[j] += dmu[b, j]
            db_logvar[j] += dlogvar[b, j]


def reparameterize_backward_into_reference(dz, eps, sigma, inside, dmu_kl, dlogvar_kl):
    """Reference of ``reparameterize_backward_into``, from the readable pieces: ``stochastic.sample_backward``
    (the node), the KL's gradient joining at (mu, logvar), then ``layers.clamp_backward``.
    Returns (dmu, dlogvar, db_mu, db_logvar)."""
    dmu, dlogvar = stochastic.sample_backward(dz, (sigma, eps))    # sample_forward's cache: (sigma, eps)
    dmu = dmu + dmu_kl
    dlogvar = layers.clamp_backward(dlogvar + dlogvar_kl, inside)
    return dmu, dlogvar, dmu.sum(axis=0), dlogvar.sum(axis=0)


@njit(cache=True, error_model="numpy", nogil=True)
def adagrad_update(p, g, sum_sq, lr, eps, prior_scale, do_step):
    """Fused prior + Adagrad on flat arrays:  g' = g + prior_scale * p;  sum_sq += g'^2;
    p -= lr * g' / sqrt(sum_sq + eps) when do_step.  Returns True when some g' is not finite.

    The non-finite test is an integer OR of (g' - g' != 0), which is true exactly for
    NaN and inf and keeps the loop vectorizable (a float reduction would not be
    without fastmath)."""
    bad = False
    for i in range(p.size):
        gi = g[i] + prior_scale * p[i]
        s = sum_sq[i] + gi * gi
        sum_sq[i] = s
        if do_step:
            p[i] -= lr * gi / math.sqrt(s + eps)
        bad |= (gi - gi) != 0.0
    return bad


def adagrad_update_reference(p, g, sum_sq, lr, eps, prior_scale, do_step):
    """Reference of ``adagrad_update``: the prior's gradient added as the training loop adds it,
    then one ``optim.Adagrad.update`` on these arrays (p and sum_sq changed in place)."""
    g = g + prior_scale * p
    opt = Adagrad(lr=float(lr), warmup=0 if do_step else 1, eps=float(eps))
    opt.state["sum_sq"]["p"] = sum_sq
    opt.update({"p": p}, {"p": g})
    return not np.isfinite(g).all()


# --------------------------------------------------------------------------- wake-sleep's kernels


@njit(cache=True, error_model="numpy")
def bernoulli_sample_from_logits(logits, e, u, one, x):
    """x = (u < sigmoid(logits)) as 0/1 in x's dtype: a sample of p(x|z) from the decoder's logits.
    e = exp(-|logits|) comes precomputed (NumPy's SIMD exp); sigmoid is taken as ``layers.sigmoid``
    takes it, so the comparison sees the very same probability (``one`` in the arrays' dtype)."""
    for r in range(logits.shape[0]):
        for d in range(logits.shape[1]):
            v = logits[r, d]
            ed = e[r, d]
            s = (one / (one + ed)) if v >= 0 else (ed / (one + ed))
            x[r, d] = u[r, d] < s


def bernoulli_sample_from_logits_reference(logits, u):
    """Reference of ``bernoulli_sample_from_logits``: ``layers.sigmoid`` and a comparison with
    the uniforms u (what ``npvae.data.binarize`` does with its own draws)."""
    return (u < layers.sigmoid(logits)).astype(logits.dtype)


@njit(cache=True, error_model="numpy")
def log_q_grads_into(z, mu, logvar, inside, scale, half, one, dmu, dlogvar, db_mu, db_logvar):
    """The gradient of  loss = -scale * sum_b log N(z_b; mu_b, diag exp(logvar_b))  with respect
    to mu and logvar (times the clamp mask), and their column sums (the heads' bias gradients):

        dmu     = -scale * (z - mu) / var
        dlogvar = -scale * ((z - mu)^2 / var - 1) / 2        var = exp(logvar)

    dlogvar must hold exp(-logvar) on entry (NumPy's SIMD exp) and is overwritten."""
    B, Z = mu.shape
    db_mu[:] = 0
    db_logvar[:] = 0
    for b in range(B):
        for j in range(Z):
            inv_var = dlogvar[b, j]
            diff = z[b, j] - mu[b, j]
            g_mu = -scale * diff * inv_var
            dmu[b, j] = g_mu
            g_lv = -scale * half * (diff * diff * inv_var - one) * inside[b, j]
            dlogvar[b, j] = g_lv
            db_mu[j] += g_mu
            db_logvar[j] += g_lv


def log_q_grads_into_reference(z, mu, logvar, inside, scale):
    """Reference of ``log_q_grads_into``: ``distributions.gaussian_logpdf_backward`` and
    ``layers.clamp_backward``.  Returns (dmu, dlogvar, db_mu, db_logvar)."""
    _, cache = D.gaussian_logpdf_forward(z, mu, logvar)
    _, dmu, dlogvar = D.gaussian_logpdf_backward(np.full(z.shape[0], -scale, z.dtype), cache)
    dlogvar = layers.clamp_backward(dlogvar, inside)
    return dmu, dlogvar, dmu.sum(axis=0), dlogvar.sum(axis=0)


# --------------------------------------------------------------------------- binary inputs: the first layer
# With dynamic or static binarization a minibatch x (B, D) is exactly 0/1, about 13% ones on MNIST.
# Then x @ W is, per row, the sum of the rows of W at the row's on-pixels, and x.T @ dh puts into
# row d of the gradient the sum of the rows of dh whose datapoint has pixel d on: about a seventh
# of the dense products' work.  ``npvae.fast`` picks these kernels per minibatch, below the density
# that ``benchmarks/bench_sparse.py`` measured (``npvae.fast.SPARSE_MAX_DENSITY``).


@njit(cache=True, error_model="numpy", nogil=True)
def active_indices(x, on_idx, on_count):
    """The on-pixels of each row of x (B, D), in ascending order: on_idx[b, :on_count[b]] (on_idx
    is (B, D) int32, on_count (B,) int32).  Returns the number of ones, or -1 when some entry of x
    is neither 0 nor 1 (NaN included): then the lists are not the input and must not be used.

    Every pixel's index is written and the count advanced by (x != 0), so the loop has no branch
    to mispredict on random pixels."""
    B, D = x.shape
    other = False
    total = 0
    for b in range(B):
        c = 0
        for d in range(D):
            v = x[b, d]
            on_idx[b, c] = d
            on = v != 0
            other |= on & (v != 1)
            c += on
        on_count[b] = c
        total += c
    return -1 if other else total


@njit(cache=True, error_model="numpy", nogil=True)
def active_indices_by_column(on_idx, on_count, col_start, col_rows):
    """The same ones by pixel: col_rows[col_start[d]:col_start[d + 1]] are the rows b (ascending)
    with pixel d on.  From the lists of ``active_indices``; col_start (D + 1,), col_rows (>= number
    of ones,), both int32.  A counting sort: count per pixel, running sum (col_start[d] = the end
    of pixel d's list), then fill each list from its end, rows in descending order, which leaves
    col_start[d] at the list's start."""
    D = col_start.shape[0] - 1
    col_start[:] = 0
    for b in range(on_count.shape[0]):
        for k in range(on_count[b]):
            col_start[on_idx[b, k]] += 1
    for d in range(1, D):
        col_start[d] += col_start[d - 1]
    col_start[D] = col_start[D - 1]
    for b in range(on_count.shape[0] - 1, -1, -1):
        for k in range(on_count[b]):
            d = on_idx[b, k]
            col_start[d] -= 1
            col_rows[col_start[d]] = b


def active_indices_reference(x):
    """Reference of ``active_indices`` and ``active_indices_by_column``: np.nonzero of x and of x.T.
    Returns (n, lists by row, lists by column) as Python lists of arrays; n is -1 when x is not 0/1."""
    binary = bool(np.isin(x, (0, 1)).all())
    by_row = [np.nonzero(row)[0] for row in x]
    by_col = [np.nonzero(col)[0] for col in x.T]
    return (int(np.count_nonzero(x)) if binary else -1), by_row, by_col


@njit(cache=True, error_model="numpy", nogil=True)
def sparse_affine_forward_into(on_idx, on_count, W, bias, out):
    """out = x @ W + bias for a 0/1 x given by its on-pixels (``active_indices``): out[b] = bias +
    the sum of W[d] over the on-pixels d of row b.  W (D, H), bias (H,), out (B, H).

    Row by row, so out[b] (2-4 KB) stays in L1 while rows of W stream past; four rows of W per
    pass over out[b] cut its loads and stores by four (the sum keeps its left-to-right order)."""
    B, H = out.shape
    for b in range(B):
        o = out[b]
        for j in range(H):
            o[j] = bias[j]
        n = on_count[b]
        k = 0
        while k + 4 <= n:
            w0, w1, w2, w3 = W[on_idx[b, k]], W[on_idx[b, k + 1]], W[on_idx[b, k + 2]], W[on_idx[b, k + 3]]
            for j in range(H):
                o[j] = o[j] + w0[j] + w1[j] + w2[j] + w3[j]
            k += 4
        while k < n:
            w0 = W[on_idx[b, k]]
            for j in range(H):
                o[j] += w0[j]
            k += 1


def sparse_affine_forward_reference(x, W, bias):
    """Reference of ``sparse_affine_forward_into``: ``layers.affine_forward`` on the dense 0/1 x."""
    out, _ = layers.affine_forward(x, W, bias)
    return out


@njit(cache=True, error_model="numpy", nogil=True)
def sparse_weight_grad_into(col_start, col_rows, dh, gW):
    """gW = x.T @ dh for a 0/1 x given by its on-pixels by column (``active_indices_by_column``):
    gW[d] = the sum of dh[b] over the rows b with pixel d on; zero for a pixel off in every row.
    dh (B, H), gW (D, H).

    By pixel rather than by row: each row of gW is written once while it sits in L1 (a scatter-add
    by row would load and store the 0.8-1.6 MB gradient a row at a time, after zeroing it), and
    dh (200-400 KB) stays in L2.  Four rows of dh per pass, as in the forward kernel."""
    D, H = gW.shape
    for d in range(D):
        g = gW[d]
        for j in range(H):
            g[j] = 0
        k, end = col_start[d], col_start[d + 1]
        while k + 4 <= end:
            r0, r1, r2, r3 = dh[col_rows[k]], dh[col_rows[k + 1]], dh[col_rows[k + 2]], dh[col_rows[k + 3]]
            for j in range(H):
                g[j] = g[j] + r0[j] + r1[j] + r2[j] + r3[j]
            k += 4
        while k < end:
            r0 = dh[col_rows[k]]
            for j in range(H):
                g[j] += r0[j]
            k += 1


def sparse_weight_grad_reference(x, dh, W):
    """Reference of ``sparse_weight_grad_into``: the dW of ``layers.affine_backward`` on the dense 0/1 x."""
    _, dW, _ = layers.affine_backward(dh, (x, W))
    return dW


# --------------------------------------------------------------------------- the marginal likelihood's log p(x|z)
# HMC and importance sampling (npvae/marginal.py) evaluate log p(x|z) for a fixed Bernoulli decoder
# hundreds of times per datapoint, and the readable density takes two transcendental calls per pixel:
# exp(-|l|), then log1p of it; NumPy's float32 log1p has no SIMD loop.  Here NumPy's SIMD exp gives
# e = exp(-|l|) by blocks of rows that stay in L2, and one Numba pass per row takes the rest:
#
#     sum_d log1p(e_d) = log prod_d (1 + e_d)          one log per row instead of one per pixel
#     sigmoid(l) = (1 or e) / (1 + e)                  the gradient x - sigmoid(l), from the same e
#
# Every factor 1 + e lies in [1, 2], so a product of MAX_FACTORS_PER_LOG of them stays below 2^1000
# (float64 overflows at 2^1024).  The row's two running reductions (the sum and the product) are
# float64 for float32 data too, and the one function that holds them is compiled with
# fastmath={"reassoc"} alone: LLVM may then regroup the sum and the product into SIMD lanes, which
# made the kernels 3-5x faster (per 100 x 784 rows, measured 2026-11-22: the value 220-250 -> 44 us,
# value and gradient 257 -> 62-81 us), without
# the other fast-math assumptions (NaN and inf still propagate).  Any grouping of the factors keeps
# the 2^1000 bound, and the rounding bound below holds for any order.
# The per-pixel terms x l - max(l, 0) and the sigmoid stay in the arrays' dtype (``zero``, ``one``);
# 1 + e is formed in float64 as it enters the product.  Precision, float64 data: rounding each 1 + e
# and each product moves the log by at most D ulp(1) ~ 2e-13 nats for D = 784, where the readable
# sum of log1p's is exact to relative rounding (this matters only when log p(x|z) is itself that
# close to 0); float32 data: within a few float32 roundings of the exact result (tests/test_fast_marginal.py).

MAX_FACTORS_PER_LOG = 1000
BLOCK_BYTES = 1 << 18           # rows of logits per exp block: 256 KB of them, L2-resident with e


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def _bernoulli_row_log_lik(logits, e, x, zero):
    """sum_d x_d l_d - max(l_d, 0) - log(1 + e_d) for one row: logits, e = exp(-|logits|), x: (D,)."""
    D = logits.shape[0]
    linear = 0.0
    log_of_products = 0.0
    for start in range(0, D, MAX_FACTORS_PER_LOG):
        product = 1.0
        for d in range(start, min(start + MAX_FACTORS_PER_LOG, D)):
            v = logits[d]
            linear += x[d] * v - max(v, zero)       # max, not (v + |v|) / 2: v + |v| overflows at 3e38
            product *= 1.0 + e[d]                   # in float64: keeps the e < 6e-8 that 1 + e loses in float32
        log_of_products += math.log(product)
    return linear - log_of_products


@njit(cache=True, error_model="numpy")
def _bernoulli_log_lik_kernel(logits, e, x, first_row, zero, log_lik):
    """log_lik[n] = the row sum for logits[n] (N, D) and x[(first_row + n) % B] (x: (B, D))."""
    B = x.shape[0]
    for n in range(logits.shape[0]):
        log_lik[n] = _bernoulli_row_log_lik(logits[n], e[n], x[(first_row + n) % B], zero)


@njit(cache=True, error_model="numpy")
def _bernoulli_log_lik_dlogits_kernel(logits, e, x, first_row, zero, one, log_lik, dlogits):
    """The value as above and dlogits[n] = x - sigmoid(logits[n]), per row: the value's loop first
    (a serial reduction), then the gradient's, which has none and vectorizes; the row is in L1 for both."""
    B = x.shape[0]
    D = logits.shape[1]
    for n in range(logits.shape[0]):
        xr, lr, er, gr = x[(first_row + n) % B], logits[n], e[n], dlogits[n]
        log_lik[n] = _bernoulli_row_log_lik(lr, er, xr, zero)
        for d in range(D):
            ed = er[d]
            s = (one if lr[d] >= zero else ed) / (one + ed)     # sigmoid as layers.sigmoid takes it, no overflow
            gr[d] = xr[d] - s


def _rows_and_exp_blocks(x, logits):
    """Checks and flattens the arguments, and yields e = exp(-|logits|) block by block.

    Returns (x (B, D) in logits' dtype, logits as (N, D), blocks), where blocks yields
    (rows, e): a slice of the N rows and exp(-|logits[rows]|) in a buffer reused for every block."""
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"logits must be float32 or float64, got {logits.dtype}")
    x = np.ascontiguousarray(x, dtype=logits.dtype)
    if x.ndim != 2 or logits.ndim < 2 or logits.shape[-2:] != x.shape:
        raise ValueError(f"logits must have shape (..., {', '.join(map(str, x.shape))}) for x of shape {x.shape}, "
                         f"got {logits.shape}")
    rows2d = np.ascontiguousarray(logits).reshape(-1, x.shape[1])
    n_rows, width = rows2d.shape
    rows_per_block = max(1, BLOCK_BYTES // max(1, width * rows2d.itemsize))

    def blocks():
        buffer = np.empty((min(rows_per_block, n_rows), width), rows2d.dtype)
        for start in range(0, n_rows, rows_per_block):
            rows = slice(start, min(start + rows_per_block, n_rows))
            e = buffer[:rows.stop - start]
            np.abs(rows2d[rows], out=e)
            np.negative(e, out=e)
            np.exp(e, out=e)
            yield rows, e
    return x, rows2d, blocks()


def bernoulli_log_lik(x, logits):
    """The value of ``distributions.bernoulli_logpmf_forward``, fast: sum_d x_d l_d - softplus(l_d).

    x: (B, D) in [0, 1]; logits: (..., B, D), float32 or float64 -> (..., B) in logits' dtype.
    Row n of the flattened logits goes with x[n % B], as NumPy's broadcasting pairs them."""
    x, rows2d, blocks = _rows_and_exp_blocks(x, logits)
    t = rows2d.dtype.type
    log_lik = np.empty(rows2d.shape[0], rows2d.dtype)
    for rows, e in blocks:
        _bernoulli_log_lik_kernel(rows2d[rows], e, x, rows.start, t(0), log_lik[rows])
    return log_lik.reshape(np.shape(logits)[:-1])


def bernoulli_log_lik_reference(x, logits):
    """Reference of ``bernoulli_log_lik``: ``distributions.bernoulli_logpmf_forward``."""
    log_lik, _ = D.bernoulli_logpmf_forward(x, logits)
    return log_lik


def bernoulli_log_lik_and_dlogits(x, logits):
    """``bernoulli_log_lik`` and its gradient, from one exp(-|l|) per pixel:

        d/dl_d sum_d' [x_d' l_d' - softplus(l_d')] = x_d - sigmoid(l_d).

    x: (B, D); logits: (..., B, D) -> (log_lik (..., B), dlogits (..., B, D)), in logits' dtype."""
    x, rows2d, blocks = _rows_and_exp_blocks(x, logits)
    t = rows2d.dtype.type
    log_lik = np.empty(rows2d.shape[0], rows2d.dtype)
    dlogits = np.empty_like(rows2d)
    for rows, e in blocks:
        _bernoulli_log_lik_dlogits_kernel(rows2d[rows], e, x, rows.start, t(0), t(1), log_lik[rows], dlogits[rows])
    shape = np.shape(logits)
    return log_lik.reshape(shape[:-1]), dlogits.reshape(shape)


def bernoulli_log_lik_and_dlogits_reference(x, logits):
    """Reference of ``bernoulli_log_lik_and_dlogits``: ``distributions.bernoulli_logpmf_forward`` and
    ``bernoulli_logpmf_backward`` with an upstream gradient of ones (each row's own log-likelihood)."""
    log_lik, cache = D.bernoulli_logpmf_forward(x, logits)
    return log_lik, D.bernoulli_logpmf_backward(np.ones_like(log_lik), cache)
