"""The fast training step: the same arithmetic as the reference path, without fresh memory.

``VAE.loss_and_grads`` followed by the prior and ``Adagrad.update`` is the readable
reference.  It allocates a new array for almost every intermediate; at the paper's
size those are 0.2-3 MB temporaries, and the page faults of fresh memory cost more
than the arithmetic.  ``FastStep`` does the very same computation (estimator B,
Bernoulli decoder, tanh hidden units, any depth, float32 or float64, any KL weight) into buffers
allocated once, with ``out=`` everywhere:

    gather + binarize + noise   np.take / Generator.random / standard_normal into buffers
    forward                     matmul(out=), += bias, tanh(out=); the stochastic node as two small kernels;
                                the first layer on a sparse 0/1 minibatch as a sum of W's rows (below)
    likelihood + KL gradient    one fused kernel, which also sums the logits' bias gradient
    backward                    the mirror of the forward, matmul(out=); each tanh backward sums its
                                bias gradient in the same pass
    prior + Adagrad             one fused Numba pass per parameter tensor, run as soon as the
                                backward is done with that tensor

All kernels live in ``npvae/kernels.py``, each beside a NumPy reference written with the
readable functions.  ``FastWakeSleep`` is wake-sleep's step built from the same pieces.

Binary inputs.  A dynamically or statically binarized MNIST minibatch is exactly 0/1 with about
13% ones, so the first encoder layer's x @ W is, row by row, a sum of the rows of W at the
on-pixels, and its weight gradient x.T @ dh a sum of rows of dh per pixel: a seventh of the
dense work.  With ``binary=True`` (``TrainingData.binary``) every minibatch's on-pixels are
listed (which also checks that it is 0/1), and the minibatch takes these sparse kernels when its
fraction of ones is at most ``SPARSE_MAX_DENSITY``, the dense products otherwise.  Wake-sleep's
dreams are Bernoulli samples, so its sleep phase always looks.  The sums run in another order than
BLAS's, so the two paths agree to rounding (``tests/test_sparse.py``).

Transcendentals (tanh, exp, expm1) stay with NumPy, whose SIMD loops beat Numba's scalar
calls; the Numba kernels do the arithmetic around them in single passes.  ``FastStep`` is serial
apart from BLAS's own threads: OpenBLAS's worker thread spins between products, and threading
single pieces of the step beside it (Numba ``parallel=True``, a Python worker thread for the
Adagrad pass) was slower (``benchmarks/bench_threads.py``).  ``TwoThreadStep`` threads the whole
step instead: the minibatch's two halves each run a ``FastStep`` on its own thread with one BLAS
thread, then the two threads share the update (for one job on two cores; a sweep's one-thread
jobs keep ``FastStep``).

``benchmarks/bench_step.py`` measures the step against its matrix products alone (the floor)
and against the products plus the Adagrad pass, which is divider-bound (a square root and a
division per parameter) and which no arrangement of the rest removes.  ``tests/test_fast.py``
asserts that the step gives the reference step to rounding and checks its gradients against
finite differences.
"""
import math
import queue
import threading
import weakref

import numpy as np

from . import blas
from . import distributions as D
from .data import gather_minibatch
from .distributions import LOGVAR_MAX, LOGVAR_MIN
from .kernels import (_bernoulli_log_lik_dlogits_kernel, active_indices, active_indices_by_column, adagrad_update,
                      add_bias_neg_abs, bernoulli_kl_grads_from_neg_abs, bernoulli_sample_from_logits, heads_bias_clamp,
                      log_q_grads_into, reparameterize_backward_into, reparameterize_into,
                      sparse_affine_forward_into, sparse_weight_grad_into, tanh_backward_inplace, tanh_inplace)
from .model import ESTIMATORS
from .optim import Adagrad, Optimizer, has_prior

FAST_PRIORS = ("weights", "all", "none")

# The fraction of ones at or below which a 0/1 minibatch's first layer runs on its on-pixels
# (``npvae.kernels.sparse_affine_forward_into`` and ``sparse_weight_grad_into``, with the index
# lists) instead of as two dense products.  Where the two cost the same, measured with
# ``python benchmarks/bench_sparse.py`` (M = 100, 784 -> 500; 2026-11-22 on this 2-core machine
# while 4-6 other processes ran, two runs):
#   1 BLAS thread    forward + weight gradient 0.34-0.35 (float64), 0.31-0.32 (float32);
#                    the forward alone (wake-sleep's wake phase) 0.29-0.33 and 0.24-0.25
#   2 BLAS threads   above 0.5 in the medians (the load stalls OpenBLAS's second thread);
#                    about 0.2 between the fastest tenths of the rounds, when it was not stalled
# 0.2 is at or below every one of them.  MNIST minibatches have 0.13, an untrained model's dreams 0.5.
SPARSE_MAX_DENSITY = 0.2


def unsupported_reason(vae, estimator="B", optimizer=None, prior="weights"):
    """Why the fast steps cannot run this configuration exactly as the reference would, or ""
    when they can.  They implement: a Bernoulli decoder, tanh hidden units (any depth), estimator
    B, float32 or float64, the parameter names and shapes of ``Architecture.param_shapes``, any
    npvae optimizer (Adagrad fused with the prior, the others through their own ``update``) and the
    three parameter priors."""
    a = vae.arch
    if a.likelihood != "bernoulli":
        return f"the {a.likelihood} decoder (the fast steps are Bernoulli only)"
    if a.activation != "tanh":
        return f"{a.activation} hidden units (the fast steps are tanh only)"
    if estimator != "B":
        return f"estimator {estimator} (the fast AEVB step is estimator B)" if estimator in ESTIMATORS \
            else f"unknown estimator {estimator!r}"
    if vae.dtype not in (np.float32, np.float64):
        return f"dtype {vae.dtype}"
    shapes = a.param_shapes()
    if list(vae.params) != list(shapes) or any(vae.params[k].shape != shapes[k] for k in shapes):
        return "parameters that differ from the architecture's names and shapes"
    if any(not p.flags.c_contiguous or p.dtype != vae.dtype for p in vae.params.values()):
        return "parameters that are not C-contiguous arrays of the model's dtype"
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        return f"optimizer {type(optimizer).__name__} (not an npvae optimizer)"
    if prior not in FAST_PRIORS:
        return f"prior {prior!r}"
    return ""


class _FastNetwork:
    """Preallocated buffers and the forward/backward passes of the two networks, shared by the
    fast AEVB step and the fast wake-sleep step.  Rows: M for the encoder, R (= L*M) for the decoder.
    minibatch=False: no minibatch buffers (x, uniform, is_on: None), for a network only ever handed
    its x by the caller (``TwoThreadStep``'s halves read rows of the whole step's)."""

    def __init__(self, vae, M, R, sparse_max_density=None, minibatch=True):
        arch, dt = vae.arch, vae.dtype
        E = np.empty
        self.vae, self.M, self.R = vae, M, R
        D, Z = arch.x_dim, arch.z_dim
        self.x = E((M, D), dt) if minibatch else None                  # the minibatch
        # the sparse first layer: an input's on-pixels by row (CSR), and by pixel for the weight gradient
        density = SPARSE_MAX_DENSITY if sparse_max_density is None else sparse_max_density
        self.max_ones = math.floor(density * M * D) if density >= 0 else -1
        self.on_idx, self.on_count = E((M, D), np.int32), E(M, np.int32)
        self.col_start, self.col_rows = E(D + 1, np.int32), E(M * D, np.int32)
        self.sparse = False                       # whether the last encoder_forward ran sparse
        self.uniform = E((M, D), dt) if minibatch else None            # dynamic binarization draws
        self.is_on = E((M, D), np.bool_) if minibatch else None
        self.enc_h = [E((M, w), dt) for w in arch.enc_hidden]
        self.enc_dh = [E((M, w), dt) for w in arch.enc_hidden]
        self.enc_tmp = E((M, arch.enc_hidden[-1]), dt)
        self.mu, self.logvar, self.sigma = E((M, Z), dt), E((M, Z), dt), E((M, Z), dt)
        self.inside = E((M, Z), np.bool_)
        self.dmu, self.dlogvar = E((M, Z), dt), E((M, Z), dt)
        self.dec_h = [E((R, w), dt) for w in arch.dec_hidden]
        self.dec_dh = [E((R, w), dt) for w in arch.dec_hidden]
        self.logits = E((R, D), dt)
        self.work = E((R, D), dt)                 # -|logits|, then exp(-|logits|)
        self.tanh_work = E(max([M * w for w in arch.enc_hidden] + [R * w for w in arch.dec_hidden]), dt)
        self.grads = {name: np.empty_like(p) for name, p in vae.params.items()}
        # constants in the parameters' dtype, so that the kernels' float32 arithmetic stays float32
        self.one, self.half = dt.type(1), dt.type(0.5)
        self.lo, self.hi = dt.type(LOGVAR_MIN), dt.type(LOGVAR_MAX)

    def encoder_forward(self, x, binary=False):
        """x (M, D) -> self.mu, self.logvar (clamped; self.inside marks the logvars the clamp left alone).

        binary: x may be 0/1.  Its on-pixels are then listed (which checks that it is), and when it
        is, with at most self.max_ones ones, the first layer runs on them; self.sparse says whether
        it did, for ``encoder_backward`` on the same x."""
        p = self.vae.params
        n_ones = active_indices(x, self.on_idx, self.on_count) if binary and self.max_ones >= 0 else -1
        self.sparse = 0 <= n_ones <= self.max_ones
        h = x
        for k, hk in enumerate(self.enc_h, 1):
            if k == 1 and self.sparse:
                sparse_affine_forward_into(self.on_idx, self.on_count, p["enc.h1.W"], p["enc.h1.b"], hk)
            else:
                np.matmul(h, p[f"enc.h{k}.W"], out=hk)
                hk += p[f"enc.h{k}.b"]
            tanh_inplace(hk, self.tanh_work)
            h = hk
        np.matmul(h, p["enc.mu.W"], out=self.mu)
        np.matmul(h, p["enc.logvar.W"], out=self.logvar)
        heads_bias_clamp(self.mu, self.logvar, p["enc.mu.b"], p["enc.logvar.b"], self.lo, self.hi, self.inside)

    def decoder_forward(self, z2):
        """z2 (R, Z) -> self.logits (R, D), and self.work = -|logits|."""
        p = self.vae.params
        h = z2
        for k, hk in enumerate(self.dec_h, 1):
            np.matmul(h, p[f"dec.h{k}.W"], out=hk)
            hk += p[f"dec.h{k}.b"]
            tanh_inplace(hk, self.tanh_work)
            h = hk
        np.matmul(h, p["dec.logits.W"], out=self.logits)
        add_bias_neg_abs(self.logits, p["dec.logits.b"], self.work)       # + bias, and -|logits| for the kernels

    def decoder_backward(self, dlogits2, z2, dz2, done_with, param_grads=True):
        """From d loss/d logits (R, D) to every dec.* gradient; into dz2 (R, Z) unless dz2 is None.
        param_grads=False: to dz2 alone (the weight products are skipped; bias gradients are still
        written, at no extra cost)."""
        p, g = self.vae.params, self.grads
        if param_grads:
            np.matmul(self.dec_h[-1].T, dlogits2, out=g["dec.logits.W"])
        np.matmul(dlogits2, p["dec.logits.W"].T, out=self.dec_dh[-1])
        done_with("dec.logits.W", "dec.logits.b")
        for k in range(len(self.dec_h), 0, -1):
            dh = self.dec_dh[k - 1]
            tanh_backward_inplace(dh, self.dec_h[k - 1], self.one, g[f"dec.h{k}.b"])
            below = self.dec_h[k - 2] if k > 1 else z2
            if param_grads:
                np.matmul(below.T, dh, out=g[f"dec.h{k}.W"])
            if k > 1:
                np.matmul(dh, p[f"dec.h{k}.W"].T, out=self.dec_dh[k - 2])
            elif dz2 is not None:
                np.matmul(dh, p["dec.h1.W"].T, out=dz2)
            done_with(f"dec.h{k}.W", f"dec.h{k}.b")

    def encoder_backward(self, x, done_with):
        """From self.dmu, self.dlogvar (the heads' bias gradients already in self.grads) to every
        enc.* gradient, for the x of the last ``encoder_forward``.  No gradient for the data."""
        p, g = self.vae.params, self.grads
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
            if k > 1:
                np.matmul(self.enc_h[k - 2].T, dh, out=g[f"enc.h{k}.W"])
                np.matmul(dh, p[f"enc.h{k}.W"].T, out=self.enc_dh[k - 2])
            elif self.sparse:
                active_indices_by_column(self.on_idx, self.on_count, self.col_start, self.col_rows)
                sparse_weight_grad_into(self.col_start, self.col_rows, dh, g["enc.h1.W"])
            else:
                np.matmul(x.T, dh, out=g["enc.h1.W"])
            done_with(f"enc.h{k}.W", f"enc.h{k}.b")

    def gather(self, data_x, idx, rng, dynamic):
        """The minibatch into self.x (``_gather_into``)."""
        return _gather_into(data_x, idx, rng, dynamic, self.x, self.uniform, self.is_on)


def _gather_into(data_x, idx, rng, dynamic, x, uniform, is_on):
    """Rows idx of data_x into the buffer x (``npvae.data.gather_minibatch``), after checking idx."""
    idx = np.asarray(idx)
    if idx.shape != (x.shape[0],):
        raise IndexError(f"need {x.shape[0]} row indices in [0, {len(data_x)}), got shape {idx.shape}")
    return gather_minibatch(data_x, idx, rng, dynamic, x, uniform, is_on)


def _draw_noise(rng, eps, eps64):
    """eps ~ N(0, I) from float64 draws in either precision, as the reference loop draws it: a float32
    run sees the same noise."""
    rng.standard_normal(out=eps64)
    if eps64 is not eps:
        np.copyto(eps, eps64)


def _adagrad_tensor(opt, name, p, g, prior_scale, do_step):
    """Fused prior + Adagrad on one tensor (``kernels.adagrad_update``), its accumulator from opt's
    state (created on first use, as ``Optimizer.update`` creates it).  True when g' is not finite."""
    sum_sq = opt.state["sum_sq"].get(name)
    if sum_sq is None:
        sum_sq = opt.state["sum_sq"][name] = np.zeros_like(p)
    t = p.dtype.type           # scalars in the parameters' dtype keep float32 arithmetic in float32
    return adagrad_update(p.reshape(-1), g.reshape(-1), sum_sq.reshape(-1), t(opt.lr), t(opt.eps), t(prior_scale),
                          do_step)


def fused_adagrad_applies(params, grads, optimizer, prior_scale):
    """Whether ``fused_adagrad_update`` computes exactly what the readable update would: Adagrad,
    the same names, each parameter (and its accumulator, where it has one) a C-contiguous float32
    or float64 array, updated in place through a flat view, with a gradient of its dtype and shape,
    and prior_scale a Python float.  (Mixed dtypes, or a NumPy float64 scale that NumPy's readable
    ``scale * p`` would compute in float64, round differently from the kernel's arithmetic.)"""
    if type(optimizer) is not Adagrad or type(prior_scale) is not float or params.keys() != grads.keys():
        return False
    sum_sq = optimizer.state["sum_sq"]

    def same(a, p):
        return a.dtype == p.dtype and a.shape == p.shape
    return all(p.dtype in (np.float32, np.float64) and p.flags.c_contiguous and p.flags.writeable
               and same(grads[k], p)
               and (k not in sum_sq or (same(sum_sq[k], p) and sum_sq[k].flags.c_contiguous)) for k, p in params.items())


def fused_adagrad_update(params, grads, optimizer, prior, prior_scale):
    """``learners.prior_grads`` followed by ``optimizer.update(params, grads)`` (Adagrad), in one Numba
    pass per tensor instead of eight NumPy passes: the same arithmetic in the same order, so the
    same bits (tests/test_fast.py), about 5x faster.  The readable steps of the models the fast
    steps do not cover (the Gaussian decoder) spent a third of their time in the two.  Check
    ``fused_adagrad_applies`` first.  Returns True when a gradient was not finite; unlike the
    readable update, which then steps nothing, every tensor has been stepped by then (NaN in, NaN
    out): the harness stops the run as diverged and keeps its last good checkpoint."""
    optimizer.t += 1                                   # as Optimizer.update counts its calls
    do_step = optimizer.t > optimizer.warmup
    bad = False
    for name, p in params.items():
        bad |= _adagrad_tensor(optimizer, name, p, grads[name], prior_scale if has_prior(name, prior) else 0.0,
                               do_step)
    return bad


class _FusedUpdate:
    """Prior + optimizer for a set of parameters.  With Adagrad, one fused Numba pass per tensor,
    run as soon as the backward pass is done with that tensor (its gradient still in cache);
    other optimizers step all tensors at the end through their own ``update``."""

    def __init__(self, vae, grads, optimizer, names, prior, prior_scale):
        self.params, self.grads, self.opt = vae.params, grads, optimizer
        self.names = list(names)
        self.prior_scale = {name: prior_scale if has_prior(name, prior) else 0.0 for name in self.names}
        self.fused = type(optimizer) is Adagrad
        self.bad = False

    def begin(self):
        self.bad = False
        if not self.fused:
            return
        opt = self.opt
        opt.t += 1                               # as Optimizer.update counts its calls
        self._do_step = opt.t > opt.warmup
        for name in self.names:
            if name not in opt.state["sum_sq"]:
                opt.state["sum_sq"][name] = np.zeros_like(self.params[name])

    def tensors_done(self, *names):
        """The backward pass is done with these tensors: update them now (fused Adagrad only)."""
        if self.fused:
            self.bad |= self.update_now(names)

    def update_now(self, names):
        """Fused Adagrad on these tensors (after ``begin``); returns True when a gradient was not
        finite, and leaves ``self.bad`` alone, so that two threads may update disjoint tensors at once."""
        bad = False
        for name in names:
            bad |= _adagrad_tensor(self.opt, name, self.params[name], self.grads[name], self.prior_scale[name],
                                   self._do_step)
        return bad

    def finish(self):
        """Returns True when a gradient was not finite."""
        if not self.fused:
            params = {name: self.params[name] for name in self.names}
            grads = {name: self.grads[name] for name in self.names}
            for name, gr in grads.items():
                if self.prior_scale[name]:
                    gr += self.prior_scale[name] * params[name]
                self.bad |= not np.isfinite(gr).all()
            self.opt.update(params, grads)
        return self.bad


class FastStep:
    """One AEVB step for a Bernoulli VAE, estimator B, into preallocated buffers.

    vae: the model (its ``params`` arrays are updated in place); optimizer: any
    npvae optimizer (Adagrad gets the fused kernel, others their own ``update``);
    prior: "weights", "all" or "none" with ``prior_scale`` (1/N in training);
    binary: the minibatches may be 0/1 (``TrainingData.binary``): look for the sparse first layer;
    sparse_max_density: the fraction of ones up to which it runs (None: ``SPARSE_MAX_DENSITY``;
    negative: never).

    standalone=False makes a part of another step (``TwoThreadStep``'s halves): the caller hands it
    x and eps and applies its gradients, so it allocates no minibatch, noise or update rule of its
    own (``x``, ``eps``, ``update_rule`` are None) and only ``_forward_backward`` may be called.

    kl_weight: beta, the weight of the KL term in the objective of the next step (1: the bound,
    the paper's); the AEVB learner sets it before each step for --beta and --kl_warmup.  Its
    gradient is scaled where it joins at (mu, logvar), as ``elbo_backward(..., kl_weight)`` does.
    """

    def __init__(self, vae, optimizer, batch_size, L=1, prior="weights", prior_scale=0.0, binary=False,
                 sparse_max_density=None, *, standalone=True):
        reason = unsupported_reason(vae, "B", optimizer, prior)
        if reason:
            raise ValueError(f"FastStep does not implement {reason}; use VAE.loss_and_grads")
        self.vae, self.opt, self.M, self.L, self.binary = vae, optimizer, int(batch_size), int(L), bool(binary)
        M, L, Z, dt = self.M, self.L, vae.arch.z_dim, vae.dtype
        self.net = net = _FastNetwork(vae, M, L * M, sparse_max_density, minibatch=standalone)
        self.x, self.grads = net.x, net.grads
        if standalone:
            self.eps = np.empty((L, M, Z), dt)
            self.eps64 = self.eps if dt == np.float64 else np.empty((L, M, Z), np.float64)
            self.update_rule = _FusedUpdate(vae, net.grads, optimizer, vae.params, prior, prior_scale)
        else:     # a part: its whole step draws the noise and applies the gradients
            self.eps = self.eps64 = self.update_rule = None
        self.z = np.empty((L, M, Z), dt)
        self.dz = np.empty((L, M, Z), dt)
        self.kernel_out = (np.empty(M, dt), np.empty((L, M, vae.arch.x_dim), dt), np.empty((M, Z), dt),
                           np.empty((M, Z), dt))
        self.kl_weight = 1.0
        self.loss_scale = 1.0 / M        # d(-mean elbo): 1/M; TwoThreadStep's halves take 1/(their whole batch)

    @staticmethod
    def supports(vae, estimator="B", optimizer=None, prior="weights"):
        """Whether this step computes exactly what the reference step would (see ``unsupported_reason``)."""
        return not unsupported_reason(vae, estimator, optimizer, prior)

    # -- the step -------------------------------------------------------------------------

    def load_batch(self, data_x, idx, rng=None, dynamic=False):
        """Gather rows idx of data_x into the minibatch buffer; with dynamic, re-binarize them with rng
        (``npvae.data.gather_minibatch``).  Then draw eps.  Returns (x, eps) views."""
        self.net.gather(data_x, idx, rng, dynamic)
        if rng is not None:
            _draw_noise(rng, self.eps, self.eps64)
        return self.x, self.eps

    def loss_and_grads(self, x, eps, want_loss=True):
        """The reference's VAE.loss_and_grads(x, eps, "B", self.kl_weight), into self.grads.  Returns
        the loss or None."""
        return self._forward_backward(x, eps, want_loss, _no_update)

    def _forward_backward(self, x, eps, want_loss, done_with):
        """Forward and backward into self.grads.  done_with(*names) is called as soon as the
        backward pass no longer reads those parameters."""
        net, g = self.net, self.grads
        L, M, Z = self.L, self.M, self.vae.arch.z_dim
        net.encoder_forward(x, self.binary)
        # ---- the stochastic node: sigma = exp(logvar / 2), z = mu + sigma * eps
        np.multiply(net.logvar, 0.5, out=net.sigma)
        np.exp(net.sigma, out=net.sigma)
        reparameterize_into(net.mu, net.sigma, eps, self.z)
        z2 = self.z.reshape(L * M, Z)
        net.decoder_forward(z2)
        # ---- d(-mean elbo): likelihood and KL ends in one kernel (and the logits' bias gradient)
        elbo, dlogits, dmu_kl, dlogvar_kl = bernoulli_kl_grads_from_neg_abs(
            net.logits.reshape(L, M, -1), net.work.reshape(L, M, -1), x, net.mu, net.logvar, self.loss_scale, want_loss,
            self.kernel_out, g["dec.logits.b"])
        kl_weight = float(self.kl_weight)
        if kl_weight != 1.0:      # the objective weights the KL by beta, so does its gradient (M x Z, cheap)
            dmu_kl *= kl_weight
            dlogvar_kl *= kl_weight
            if elbo is not None:  # the loss of the weighted objective: elbo - (beta - 1) KL
                elbo = elbo - (kl_weight - 1.0) * D.kl_standard_normal_forward(net.mu, net.logvar)[0]
        net.decoder_backward(dlogits.reshape(L * M, -1), z2, self.dz.reshape(L * M, Z), done_with)
        # ---- the gradient crosses the stochastic node: dmu = sum_l dz, dsigma = sum_l dz * eps,
        #      and the KL's gradient joins at (mu, logvar)
        reparameterize_backward_into(self.dz, eps, net.sigma, net.inside, dmu_kl, dlogvar_kl, net.half, net.dmu,
                                     net.dlogvar, g["enc.mu.b"], g["enc.logvar.b"])
        net.encoder_backward(x, done_with)
        return None if elbo is None else -float(elbo.mean(dtype=np.float64))

    def update(self):
        """Prior + optimizer step from self.grads.  Returns True when a gradient was not finite."""
        u = self.update_rule
        u.begin()
        u.tensors_done(*self.vae.params)
        return u.finish()

    def step(self, x, eps, want_loss=False):
        """loss_and_grads + update.  Returns (loss or None, gradient_was_finite).

        With Adagrad each tensor is updated as soon as the backward pass is done with it,
        while its gradient is still in cache; the result is the same as updating at the end."""
        u = self.update_rule
        u.begin()
        loss = self._forward_backward(x, eps, want_loss, u.tensors_done)
        return loss, not u.finish()


class _Worker:
    """One persistent helper thread: ``run(f_other, f_here)`` runs f_other on it and f_here on the
    caller's thread, and returns when both are done (re-raising the helper's exception).

    ``run`` never returns, normally or by an exception (Ctrl-C included), while the helper is still
    at work: the two share buffers, and a step begun before the helper finished would race it."""

    def __init__(self):
        self._todo, self._done = queue.SimpleQueue(), queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, args=(self._todo, self._done), daemon=True,
                                        name="npvae-step")
        self._closed = False
        self._thread.start()

    @staticmethod
    def _loop(todo, done):
        while True:
            f = todo.get()
            if f is None:
                return
            try:
                f()
                done.put(None)
            except BaseException as e:       # handed to the caller
                done.put(e)
            f = None                         # drop the job (and what it holds) while waiting for the next

    def _wait(self):
        interrupted = None
        while True:
            try:
                err = self._done.get()
                break
            except KeyboardInterrupt as e:   # keep waiting for the helper; re-raised once it is done
                interrupted = e
        if interrupted is not None:
            raise interrupted
        return err

    def run(self, f_other, f_here):
        if self._closed:
            raise RuntimeError("this two-thread step was closed")
        self._todo.put(f_other)
        try:
            f_here()
        finally:
            err = self._wait()
        if err is not None:
            raise err

    def close(self):
        if not self._closed:
            self._closed = True
            self._todo.put(None)


def two_thread_reason(vae, optimizer, batch_size, L=1, prior="weights"):
    """Why ``TwoThreadStep`` cannot run this configuration, or "" when it can: what ``FastStep``
    implements, with L = 1, Adagrad (the fused update), at least 2 datapoints per minibatch, and a
    BLAS whose thread count can be set while the process runs (``npvae.blas``)."""
    reason = unsupported_reason(vae, "B", optimizer, prior)
    if reason:
        return reason
    if L != 1:
        return f"L = {L} (the two-thread step splits the minibatch; L = 1 only)"
    if type(optimizer) is not Adagrad:
        return f"optimizer {type(optimizer).__name__} (the two-thread step fuses Adagrad only)"
    if batch_size < 2:
        return "a minibatch of one datapoint"
    if not blas.available():
        return "a BLAS whose thread count cannot be set here (npvae.blas)"
    return ""


class TwoThreadStep:
    """``FastStep`` on two threads, for one job with two cores: the same step, to rounding.

    Phase 1: the minibatch's two halves each run the whole forward and backward pass of a
    ``FastStep`` of half the size (on the caller's thread and a helper thread), into their own
    gradients, each scaled by 1/M of the whole minibatch.  Phase 2: the two threads add the halves'
    gradients and update the parameters (prior + fused Adagrad), the tensors split between them by
    size.  Every matrix product runs with one BLAS thread (``npvae.blas.threads(1)``) for the
    duration of the step: on two cores, OpenBLAS's two threads lose much of their time in the
    small products and in the serial kernels between them (sparse first layer, the element-wise
    kernels, the Adagrad pass), which here run side by side instead.  The kernels release the GIL.

    Draws as ``FastStep`` does (the minibatch, then its noise), so a run takes the same data,
    binarization and noise either way; sums over the minibatch are taken per half and then added,
    so results differ from ``FastStep``'s in the last bits (tests/test_two_thread.py).  Bitwise
    reproducible run to run: every sum is taken in a fixed order on a fixed thread.
    """

    def __init__(self, vae, optimizer, batch_size, prior="weights", prior_scale=0.0, binary=False,
                 sparse_max_density=None):
        reason = two_thread_reason(vae, optimizer, batch_size, 1, prior)
        if reason:
            raise ValueError(f"TwoThreadStep does not implement {reason}")
        M, D, Z, dt = int(batch_size), vae.arch.x_dim, vae.arch.z_dim, vae.dtype
        self.vae, self.opt, self.M, self.L, self.binary = vae, optimizer, M, 1, bool(binary)
        half = M // 2
        self.rows = (slice(0, half), slice(half, M))
        # parts, not steps: the halves are handed rows of self.x and self.eps (one draw for the whole
        # minibatch, as FastStep draws it) and phase 2 applies their summed gradients through
        # self.update_rule, so they keep no minibatch, noise or update rule of their own
        self.halves = [FastStep(vae, optimizer, r.stop - r.start, 1, prior, prior_scale, binary, sparse_max_density,
                                standalone=False) for r in self.rows]
        for h in self.halves:
            h.loss_scale = 1.0 / M
        self.x, self.uniform, self.is_on = np.empty((M, D), dt), np.empty((M, D), dt), np.empty((M, D), np.bool_)
        self.eps = np.empty((1, M, Z), dt)
        self.eps64 = self.eps if dt == np.float64 else np.empty((1, M, Z), np.float64)
        self.grads = self.halves[0].grads            # the whole minibatch's gradient after phase 2's sums
        self.update_rule = _FusedUpdate(vae, self.grads, optimizer, vae.params, prior, prior_scale)
        # phase 2's tensors by size, each to the thread with less so far: the two 784 x 500 weights part
        self.tensor_split = ([], [])
        load = [0, 0]
        for name in sorted(vae.params, key=lambda k: -vae.params[k].size):
            i = int(load[1] < load[0])
            self.tensor_split[i].append(name)
            load[i] += vae.params[name].size
        self.worker = _Worker()
        self._finalizer = weakref.finalize(self, self.worker.close)
        self.kl_weight = 1.0

    def close(self):
        """Stop the helper thread (also done when the step is garbage-collected)."""
        self._finalizer()

    def load_batch(self, data_x, idx, rng=None, dynamic=False):
        """As ``FastStep.load_batch``: the same draws, in the same order."""
        _gather_into(data_x, idx, rng, dynamic, self.x, self.uniform, self.is_on)
        if rng is not None:
            _draw_noise(rng, self.eps, self.eps64)
        return self.x, self.eps

    def _phase1(self, x, eps, want_loss):
        losses = [None, None]

        def half(i):
            h, r = self.halves[i], self.rows[i]
            h.kl_weight = self.kl_weight
            losses[i] = h._forward_backward(x[r], eps[:, r], want_loss, _no_update)
        self.worker.run(lambda: half(1), lambda: half(0))
        if not want_loss:
            return None
        n0, n1 = (r.stop - r.start for r in self.rows)
        return (losses[0] * n0 + losses[1] * n1) / self.M

    def _add_halves(self, names):
        g0, g1 = self.halves[0].grads, self.halves[1].grads
        for name in names:
            np.add(g0[name], g1[name], out=g0[name])

    def loss_and_grads(self, x, eps, want_loss=True):
        """The whole minibatch's loss and gradients (into self.grads), without an update."""
        with blas.threads(1):
            loss = self._phase1(x, eps, want_loss)
            self.worker.run(lambda: self._add_halves(self.tensor_split[1]),
                            lambda: self._add_halves(self.tensor_split[0]))
        return loss

    def step(self, x, eps, want_loss=False):
        """loss_and_grads + update, as ``FastStep.step``: returns (loss or None, gradient_was_finite)."""
        u = self.update_rule
        bad = [False, False]

        def update(i):
            self._add_halves(self.tensor_split[i])
            bad[i] = u.update_now(self.tensor_split[i])
        with blas.threads(1):
            loss = self._phase1(x, eps, want_loss)
            u.begin()
            self.worker.run(lambda: update(1), lambda: update(0))
        return loss, not (bad[0] or bad[1])


class FastWakeSleep:
    """One wake-sleep step (``npvae.wakesleep``) for a Bernoulli model, into preallocated buffers.

    Draws, in this order, exactly as the reference learner: the minibatch (``gather_minibatch``),
    the wake noise eps (M, Z), the dreams' z (M, Z) and the uniforms (M, D) of their Bernoulli
    sample (float64 normals cast to the model's dtype; uniforms in the model's dtype).
    gen_optimizer steps the dec.* parameters, rec_optimizer the enc.* ones.  binary and
    sparse_max_density as for ``FastStep``; binary concerns the data only (the wake phase): the
    sleep phase's dreams are 0/1 samples and always look for the sparse first layer.
    """

    def __init__(self, vae, gen_optimizer, rec_optimizer, batch_size, prior="weights", prior_scale=0.0,
                 binary=False, sparse_max_density=None):
        for opt in (gen_optimizer, rec_optimizer):
            reason = unsupported_reason(vae, "B", opt, prior)
            if reason:
                raise ValueError(f"FastWakeSleep does not implement {reason}")
        self.vae, self.M, self.binary = vae, int(batch_size), bool(binary)
        M, Z, D, dt = self.M, vae.arch.z_dim, vae.arch.x_dim, vae.dtype
        self.net = net = _FastNetwork(vae, M, M, sparse_max_density)
        self.x, self.grads = net.x, net.grads
        self.eps = np.empty((M, Z), dt)
        self.z_dream = np.empty((M, Z), dt)
        self.normal64 = np.empty((M, Z), np.float64)
        self.x_dream = np.empty((M, D), dt)
        self.u_dream = np.empty((M, D), dt)
        self.z = np.empty((M, Z), dt)
        self.kernel_out = (np.empty(M, dt), np.empty((1, M, D), dt), np.empty((M, Z), dt), np.empty((M, Z), dt))
        self.gen = _FusedUpdate(vae, net.grads, gen_optimizer, [k for k in vae.params if k.startswith("dec.")],
                                prior, prior_scale)
        self.rec = _FusedUpdate(vae, net.grads, rec_optimizer, [k for k in vae.params if k.startswith("enc.")],
                                prior, prior_scale)

    def _normal(self, out, rng):
        _draw_noise(rng, out, self.normal64)

    def step(self, data_x, idx, rng, dynamic=False):
        """Gather, wake (update dec.*), dream, sleep (update enc.*).  Returns True when every
        gradient was finite."""
        net, g = self.net, self.grads
        M = self.M
        x = net.gather(data_x, idx, rng, dynamic)
        # ---- wake: z ~ q(z|x), a plain sample (no gradient through it)
        self._normal(self.eps, rng)
        net.encoder_forward(x, self.binary)
        np.multiply(net.logvar, 0.5, out=net.sigma)
        np.exp(net.sigma, out=net.sigma)
        reparameterize_into(net.mu, net.sigma, self.eps[None], self.z[None])
        net.decoder_forward(self.z)
        # d(-mean log p(x|z))/d logits = (sigmoid(logits) - x) / M: the kernel's likelihood end
        # (its KL outputs go unused: log p(z) has no parameter)
        _, dlogits, _, _ = bernoulli_kl_grads_from_neg_abs(
            net.logits[None], net.work[None], x, net.mu, net.logvar, 1.0 / M, False, self.kernel_out,
            g["dec.logits.b"])
        self.gen.begin()
        net.decoder_backward(dlogits[0], self.z, None, self.gen.tensors_done)
        bad = self.gen.finish()
        # ---- sleep: dreams from the just-updated generative model
        self._normal(self.z_dream, rng)
        rng.random(out=self.u_dream, dtype=self.u_dream.dtype)
        net.decoder_forward(self.z_dream)
        np.exp(net.work, out=net.work)                                 # exp(-|logits|)
        bernoulli_sample_from_logits(net.logits, net.work, self.u_dream, net.one, self.x_dream)
        net.encoder_forward(self.x_dream, binary=True)
        np.negative(net.logvar, out=net.dlogvar)
        np.exp(net.dlogvar, out=net.dlogvar)                           # exp(-logvar), read by the kernel
        log_q_grads_into(self.z_dream, net.mu, net.logvar, net.inside, net.one / M, net.half, net.one, net.dmu,
                         net.dlogvar, g["enc.mu.b"], g["enc.logvar.b"])
        self.rec.begin()
        net.encoder_backward(self.x_dream, self.rec.tensors_done)
        bad |= self.rec.finish()
        return not bad


class FastDecoderJoint:
    """Monte Carlo EM's two halves for a Bernoulli decoder on one minibatch x (B, D), into
    preallocated buffers (``npvae.learners.MCEM`` with ``fast``):

      target(z)   the HMC target of the E-step: z (B, Z) -> (log p(x, z) (B,), d/dz (B, Z)), as
                  ``marginal._vae_log_joint(vae, x)`` computes them, from the fast step's decoder
                  pass, one exp(-|logits|) and one kernel for log p(x|z) and x - sigmoid(logits),
                  and a backward pass that stops at z (no weight gradients);
      m_step(z)   one M-step update: the gradient of -mean_b log p(x_b, z_b) (``wake_loss_and_grads``'s)
                  for every dec.* parameter, with the prior and the optimizer fused as in ``FastStep``.

    set_x(x) loads the minibatch; both halves read it.  tests/test_mcem.py holds both to the readable
    functions."""

    def __init__(self, vae, optimizer, batch_size, prior="weights", prior_scale=0.0):
        reason = unsupported_reason(vae, "B", optimizer, prior)
        if reason:
            raise ValueError(f"FastDecoderJoint does not implement {reason}")
        self.vae, self.B, dt = vae, int(batch_size), vae.dtype
        B, Z, n_pixels = self.B, vae.arch.z_dim, vae.arch.x_dim
        self.net = net = _FastNetwork(vae, B, B, sparse_max_density=-1)
        self.z = np.empty((B, Z), dt)
        self.dz = np.empty((B, Z), dt)
        self.log_lik = np.empty(B, dt)
        self.dlogits = np.empty((B, n_pixels), dt)
        self.zero, self.log_2pi_z = dt.type(0), 0.5 * D.LOG_2PI * Z
        self.update_rule = _FusedUpdate(vae, net.grads, optimizer, [k for k in vae.params if k.startswith("dec.")],
                                        prior, prior_scale)

    @staticmethod
    def supports(vae, optimizer=None, prior="weights"):
        return not unsupported_reason(vae, "B", optimizer, prior)

    def set_x(self, x):
        if x.shape != self.net.x.shape:
            raise ValueError(f"x must have shape {self.net.x.shape}, got {x.shape}")
        np.copyto(self.net.x, x)

    def _log_lik_and_dlogits(self, z):
        """The decoder at z, then log p(x|z) (B,) into self.log_lik and x - sigmoid(logits) into self.dlogits."""
        net = self.net
        np.copyto(self.z, z, casting="same_kind")
        net.decoder_forward(self.z)                     # net.work = -|logits|
        np.exp(net.work, out=net.work)
        _bernoulli_log_lik_dlogits_kernel(net.logits, net.work, net.x, 0, self.zero, net.one, self.log_lik,
                                          self.dlogits)

    def target(self, z, grad=True):
        """log p(x, z) = log p(x|z) + log N(z; 0, I) per row, and its gradient in z (float64 both)."""
        z = np.asarray(z)
        if z.shape != self.z.shape:
            raise ValueError(f"z must have shape {self.z.shape}, got {z.shape}")
        self._log_lik_and_dlogits(z)
        z64 = z.astype(np.float64, copy=False)
        logp = self.log_lik.astype(np.float64) - (self.log_2pi_z + 0.5 * np.einsum("bz,bz->b", z64, z64))
        if not grad:
            return logp, None
        # back to z only: each row's log p depends on its own z row, so the pass of sum_b log p gives each its gradient
        self.net.decoder_backward(self.dlogits, self.z, self.dz, _no_update, param_grads=False)
        return logp, self.dz.astype(np.float64) - z64

    def m_step(self, z):
        """One update of the dec.* parameters on -mean_b log p(x_b, z_b) + the prior.  Returns
        (the loss before the update, whether every gradient was finite)."""
        self._log_lik_and_dlogits(z)
        z64 = self.z.astype(np.float64)
        loss = -float(self.log_lik.mean(dtype=np.float64)) + self.log_2pi_z + 0.5 * float((z64 * z64).sum()) / self.B
        self.dlogits *= self.dlogits.dtype.type(-1.0 / self.B)                    # d loss / d logits
        self.net.grads["dec.logits.b"][...] = self.dlogits.sum(axis=0)
        u = self.update_rule
        u.begin()
        self.net.decoder_backward(self.dlogits, self.z, None, u.tensors_done)
        return loss, not u.finish()


def _no_update(*names):
    pass
