"""The fast training step: the same arithmetic as the reference path, without fresh memory.

``VAE.loss_and_grads`` followed by the prior and ``Adagrad.update`` is the readable
reference.  It allocates a new array for almost every intermediate; at the paper's
size those are 0.2-3 MB temporaries, and the page faults of fresh memory cost more
than the arithmetic.  ``FastStep`` does the very same computation (estimator B,
Bernoulli decoder, tanh hidden units, any depth, float32 or float64) into buffers
allocated once, with ``out=`` everywhere:

    gather + binarize + noise   np.take / Generator.random / standard_normal into buffers
    forward                     matmul(out=), += bias, tanh(out=); the stochastic node as two small kernels
    likelihood + KL gradient    one fused kernel (npvae/kernels.py), which also sums the logits' bias gradient
    backward                    the mirror of the forward, matmul(out=); each tanh backward sums its
                                bias gradient in the same pass
    prior + Adagrad             one fused Numba pass per parameter tensor, run as soon as the
                                backward is done with that tensor

Transcendentals (tanh, exp, expm1) stay with NumPy, whose SIMD loops beat Numba's scalar
calls; the Numba kernels do the arithmetic around them in single passes.  Everything is serial:
OpenBLAS's worker thread spins between products, and every threaded variant measured here
(Numba ``parallel=True``, a Python worker thread, splitting the batch over two threads with
one-threaded BLAS) was slower than this (``benchmarks/bench_threads.py``).

``benchmarks/bench_step.py`` measures the step against its matrix products alone (the floor)
and against the products plus the Adagrad pass, which is divider-bound (a square root and a
division per parameter) and which no arrangement of the rest removes.  ``tests/test_fast.py``
asserts that the step gives the reference step to rounding and checks its gradients against
finite differences.
"""
import math

import numpy as np
from numba import njit

from .distributions import LOGVAR_MAX, LOGVAR_MIN
from .kernels import add_bias_neg_abs, bernoulli_kl_grads_from_neg_abs
from .optim import Adagrad, has_prior


@njit(cache=True, error_model="numpy")
def tanh_backward_inplace(dh, h, one, db):
    """dh <- dh * (1 - h^2), where h = tanh(a): the tanh layer's backward, in place; and
    db <- the column sums of the new dh (the layer's bias gradient), in the same pass.
    ``one`` is 1 in the arrays' dtype, so float32 stays float32 (and vectorizes twice as wide)."""
    db[:] = 0
    for r in range(dh.shape[0]):
        for c in range(dh.shape[1]):
            v = dh[r, c] * (one - h[r, c] * h[r, c])
            dh[r, c] = v
            db[c] += v


def tanh_backward_reference(dh, h):
    """NumPy reference of ``tanh_backward_inplace``: returns (dh * (1 - h^2), its column sums)."""
    out = dh * (1.0 - h * h)
    return out, out.sum(axis=0)


@njit(cache=True, error_model="numpy")
def heads_bias_clamp(mu, logvar, b_mu, b_logvar, lo, hi, inside):
    """mu += b_mu; logvar = clamp(logvar + b_logvar, lo, hi); inside marks the logvars the clamp
    left alone (its gradient is zero elsewhere).  NaN stays NaN.  lo, hi in the arrays' dtype
    (LOGVAR_MIN, LOGVAR_MAX): a float64 constant would promote a float32 loop."""
    B, Z = mu.shape
    for b in range(B):
        for j in range(Z):
            mu[b, j] += b_mu[j]
            v = logvar[b, j] + b_logvar[j]
            inside[b, j] = (v > lo) & (v < hi)
            logvar[b, j] = lo if v < lo else (hi if v > hi else v)


def heads_bias_clamp_reference(mu, logvar, b_mu, b_logvar, lo, hi):
    """NumPy reference of ``heads_bias_clamp``: returns (mu, logvar, inside), new arrays."""
    raw = logvar + b_logvar
    return mu + b_mu, np.clip(raw, lo, hi), (raw > lo) & (raw < hi)


@njit(cache=True, error_model="numpy")
def reparameterize_forward(mu, sigma, eps, z):
    """The stochastic node: z[l] = mu + sigma * eps[l]."""
    L, B, Z = eps.shape
    for l in range(L):
        for b in range(B):
            for j in range(Z):
                z[l, b, j] = mu[b, j] + sigma[b, j] * eps[l, b, j]


def reparameterize_forward_reference(mu, sigma, eps):
    """NumPy reference of ``reparameterize_forward`` (npvae.stochastic's node, broadcast over L)."""
    return mu + sigma * eps


@njit(cache=True, error_model="numpy")
def reparameterize_backward(dz, eps, sigma, inside, dmu_kl, dlogvar_kl, half, dmu, dlogvar, db_mu, db_logvar):
    """The gradient crosses the stochastic node z = mu + sigma * eps:

        dz/dmu = 1       ->  dmu     = sum_l dz[l]            (+ the KL's dmu)
        dz/dsigma = eps  ->  dsigma  = sum_l dz[l] * eps[l]
        sigma = exp(logvar / 2)  ->  dlogvar = sigma / 2 * dsigma  (+ the KL's dlogvar), times the clamp mask

    and the heads' bias gradients db_mu, db_logvar (column sums) in the same pass.  dlogvar
    holds dsigma until the last loop turns it into dlogvar; half is 0.5 in the arrays' dtype."""
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


def reparameterize_backward_reference(dz, eps, sigma, inside, dmu_kl, dlogvar_kl):
    """NumPy reference of ``reparameterize_backward``: returns (dmu, dlogvar, db_mu, db_logvar)."""
    dmu = dz.sum(axis=0) + dmu_kl
    dlogvar = (0.5 * sigma * (dz * eps).sum(axis=0) + dlogvar_kl) * inside
    return dmu, dlogvar, dmu.sum(axis=0), dlogvar.sum(axis=0)


@njit(cache=True, error_model="numpy")
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
    """NumPy reference of ``adagrad_update`` (the same expression chain as optim.Adagrad + train.prior_grads)."""
    g = g + prior_scale * p
    sum_sq += g * g
    if do_step:
        p -= lr * g / np.sqrt(sum_sq + eps)
    return not np.isfinite(g).all()


class FastStep:
    """One AEVB step for a Bernoulli VAE, estimator B, into preallocated buffers.

    vae: the model (its ``params`` arrays are updated in place); optimizer: any
    npvae optimizer (Adagrad gets the fused kernel, others their own ``update``);
    prior: "weights", "all" or "none" with ``prior_scale`` (1/N in training).
    """

    def __init__(self, vae, optimizer, batch_size, L=1, prior="weights", prior_scale=0.0):
        arch = vae.arch
        if not self.supports(vae):
            raise ValueError("FastStep covers tanh Bernoulli models; use VAE.loss_and_grads otherwise")
        self.vae, self.opt, self.M, self.L = vae, optimizer, int(batch_size), int(L)
        self.prior_scale = {name: prior_scale if has_prior(name, prior) else 0.0 for name in vae.params}
        dt, M, L, Z, D = vae.dtype, self.M, self.L, arch.z_dim, arch.x_dim
        E = np.empty
        self.x = E((M, D), dt)                    # the minibatch
        self.uniform = E((M, D), dt)              # dynamic binarization draws
        self.is_on = E((M, D), np.bool_)
        self.eps = E((L, M, Z), dt)
        self.eps64 = self.eps if dt == np.float64 else E((L, M, Z), np.float64)
        self.enc_h = [E((M, w), dt) for w in arch.enc_hidden]
        self.enc_dh = [E((M, w), dt) for w in arch.enc_hidden]
        self.enc_tmp = E((M, arch.enc_hidden[-1]), dt)
        self.mu, self.logvar, self.sigma = E((M, Z), dt), E((M, Z), dt), E((M, Z), dt)
        self.inside = E((M, Z), np.bool_)
        self.dmu, self.dlogvar = E((M, Z), dt), E((M, Z), dt)
        self.z = E((L, M, Z), dt)
        self.dz = E((L, M, Z), dt)
        self.dec_h = [E((L * M, w), dt) for w in arch.dec_hidden]
        self.dec_dh = [E((L * M, w), dt) for w in arch.dec_hidden]
        self.logits = E((L, M, D), dt)
        self.kernel_out = (E(M, dt), E((L, M, D), dt), E((M, Z), dt), E((M, Z), dt))
        self.kernel_work = E((L, M, D), dt)
        self.grads = {name: np.empty_like(p) for name, p in vae.params.items()}
        self.fused_adagrad = type(optimizer) is Adagrad
        # constants in the parameters' dtype, so that the kernels' float32 arithmetic stays float32
        self.one, self.half = dt.type(1), dt.type(0.5)
        self.lo, self.hi = dt.type(LOGVAR_MIN), dt.type(LOGVAR_MAX)
        for name, p in vae.params.items():
            if not p.flags.c_contiguous:
                raise ValueError(f"params[{name!r}] is not C-contiguous; FastStep updates flat views in place")

    @staticmethod
    def supports(vae, estimator="B"):
        a = vae.arch
        return a.likelihood == "bernoulli" and a.activation == "tanh" and estimator == "B"

    # -- the step -------------------------------------------------------------------------

    def load_batch(self, data_x, idx, rng=None, dynamic=False):
        """Gather rows idx of data_x into the minibatch buffer; with dynamic, re-binarize them with rng
        (the same draws as ``npvae.data.binarize``).  Then draw eps.  Returns (x, eps) views."""
        idx = np.asarray(idx)
        if idx.shape != (self.M,) or idx.min() < 0 or idx.max() >= len(data_x):
            raise IndexError(f"need {self.M} row indices in [0, {len(data_x)}), got shape {idx.shape}")
        # mode="clip" (the indices are checked above): with the default mode="raise", np.take
        # buffers out= and the gather costs 2-3x more
        np.take(data_x, idx, axis=0, out=self.x, mode="clip")
        if dynamic:
            rng.random(out=self.uniform, dtype=self.x.dtype)
            np.less(self.uniform, self.x, out=self.is_on)
            np.copyto(self.x, self.is_on)
        if rng is not None:
            # float64 draws in either precision, as the reference loop does: a float32 run sees the same noise
            rng.standard_normal(out=self.eps64)
            np.copyto(self.eps, self.eps64)
        return self.x, self.eps

    def loss_and_grads(self, x, eps, want_loss=True):
        """The reference's VAE.loss_and_grads(x, eps, "B"), into self.grads.  Returns the loss or None."""
        return self._forward_backward(x, eps, want_loss, _no_update)

    def _forward_backward(self, x, eps, want_loss, done_with):
        """Forward and backward into self.grads.  done_with(*names) is called as soon as the
        backward pass no longer reads those parameters, so their update can run while their
        gradients are still in cache."""
        p, g, arch = self.vae.params, self.grads, self.vae.arch
        L, M, Z = self.L, self.M, arch.z_dim
        # ---- encoder
        h = x
        for k, hk in enumerate(self.enc_h, 1):
            np.matmul(h, p[f"enc.h{k}.W"], out=hk)
            hk += p[f"enc.h{k}.b"]
            np.tanh(hk, out=hk)
            h = hk
        np.matmul(h, p["enc.mu.W"], out=self.mu)
        np.matmul(h, p["enc.logvar.W"], out=self.logvar)
        # ---- the stochastic node (with the heads' biases and the logvar clamp):
        #      sigma = exp(logvar / 2), z = mu + sigma * eps
        heads_bias_clamp(self.mu, self.logvar, p["enc.mu.b"], p["enc.logvar.b"], self.lo, self.hi, self.inside)
        np.multiply(self.logvar, 0.5, out=self.sigma)
        np.exp(self.sigma, out=self.sigma)
        reparameterize_forward(self.mu, self.sigma, eps, self.z)
        # ---- decoder
        h = self.z.reshape(L * M, Z)
        for k, hk in enumerate(self.dec_h, 1):
            np.matmul(h, p[f"dec.h{k}.W"], out=hk)
            hk += p[f"dec.h{k}.b"]
            np.tanh(hk, out=hk)
            h = hk
        logits2 = self.logits.reshape(L * M, -1)
        np.matmul(h, p["dec.logits.W"], out=logits2)
        work2 = self.kernel_work.reshape(L * M, -1)
        add_bias_neg_abs(logits2, p["dec.logits.b"], work2)           # + bias, and -|logits| for the kernel
        # ---- d(-mean elbo): likelihood and KL ends in one kernel (and the logits' bias gradient)
        elbo, dlogits, dmu_kl, dlogvar_kl = bernoulli_kl_grads_from_neg_abs(
            self.logits, self.kernel_work, x, self.mu, self.logvar, 1.0 / M, want_loss, self.kernel_out,
            g["dec.logits.b"])
        # ---- decoder backward
        dlogits2 = dlogits.reshape(L * M, -1)
        np.matmul(self.dec_h[-1].T, dlogits2, out=g["dec.logits.W"])
        np.matmul(dlogits2, p["dec.logits.W"].T, out=self.dec_dh[-1])
        done_with("dec.logits.W", "dec.logits.b")
        dz2 = self.dz.reshape(L * M, Z)
        for k in range(len(self.dec_h), 0, -1):
            dh = self.dec_dh[k - 1]
            tanh_backward_inplace(dh, self.dec_h[k - 1], self.one, g[f"dec.h{k}.b"])
            below = self.dec_h[k - 2] if k > 1 else self.z.reshape(L * M, Z)
            np.matmul(below.T, dh, out=g[f"dec.h{k}.W"])
            np.matmul(dh, p[f"dec.h{k}.W"].T, out=self.dec_dh[k - 2] if k > 1 else dz2)
            done_with(f"dec.h{k}.W", f"dec.h{k}.b")
        # ---- the gradient crosses the stochastic node: dmu = sum_l dz, dsigma = sum_l dz * eps,
        #      and the KL's gradient joins at (mu, logvar)
        reparameterize_backward(self.dz, eps, self.sigma, self.inside, dmu_kl, dlogvar_kl, self.half, self.dmu,
                                self.dlogvar, g["enc.mu.b"], g["enc.logvar.b"])
        # ---- encoder backward
        h_top = self.enc_h[-1]
        np.matmul(h_top.T, self.dmu, out=g["enc.mu.W"])
        np.matmul(h_top.T, self.dlogvar, out=g["enc.logvar.W"])
        np.matmul(self.dmu, p["enc.mu.W"].T, out=self.enc_dh[-1])
        np.matmul(self.dlogvar, p["enc.logvar.W"].T, out=self.enc_tmp)
        self.enc_dh[-1] += self.enc_tmp
        done_with("enc.mu.W", "enc.mu.b", "enc.logvar.W", "enc.logvar.b")
        for k in range(len(self.enc_h), 0, -1):
            dh = self.enc_dh[k - 1]
            tanh_backward_inplace(dh, self.enc_h[k - 1], self.one, g[f"enc.h{k}.b"])
            below = self.enc_h[k - 2] if k > 1 else x
            np.matmul(below.T, dh, out=g[f"enc.h{k}.W"])
            if k > 1:
                np.matmul(dh, p[f"enc.h{k}.W"].T, out=self.enc_dh[k - 2])
            done_with(f"enc.h{k}.W", f"enc.h{k}.b")
        return None if elbo is None else -float(elbo.mean(dtype=np.float64))

    def update(self):
        """Prior + optimizer step from self.grads.  Returns True when a gradient was not finite."""
        if not self.fused_adagrad:
            return self._generic_update()
        self._begin_adagrad_step()
        self._adagrad(*self.vae.params)
        return self._bad

    def _generic_update(self):
        params, bad = self.vae.params, False
        for name, gr in self.grads.items():
            if self.prior_scale[name]:
                gr += self.prior_scale[name] * params[name]
            bad |= not np.isfinite(gr).all()
        self.opt.update(params, self.grads)
        return bad

    def _begin_adagrad_step(self):
        opt = self.opt
        opt.t += 1                               # as Optimizer.update counts its calls
        self._do_step = opt.t > opt.warmup
        self._bad = False
        for name, p in self.vae.params.items():
            if name not in opt.state["sum_sq"]:
                opt.state["sum_sq"][name] = np.zeros_like(p)

    def _adagrad(self, *names):
        opt, params, sum_sq = self.opt, self.vae.params, self.opt.state["sum_sq"]
        for name in names:
            p = params[name]
            t = p.dtype.type       # scalars in the parameters' dtype keep float32 arithmetic in float32
            self._bad |= adagrad_update(p.reshape(-1), self.grads[name].reshape(-1), sum_sq[name].reshape(-1),
                                        t(opt.lr), t(opt.eps), t(self.prior_scale[name]), self._do_step)

    def step(self, x, eps, want_loss=False):
        """loss_and_grads + update.  Returns (loss or None, gradient_was_finite).

        With Adagrad each tensor is updated as soon as the backward pass is done with it,
        while its gradient is still in cache; the result is the same as updating at the end."""
        if not self.fused_adagrad:
            loss = self.loss_and_grads(x, eps, want_loss)
            return loss, not self._generic_update()
        self._begin_adagrad_step()
        loss = self._forward_backward(x, eps, want_loss, self._adagrad)
        return loss, not self._bad


def _no_update(*names):
    pass
