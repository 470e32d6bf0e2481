"""Learning algorithms that plug into the training harness (``npvae.train``).

The harness owns what every learner shares: minibatch order, the budget, evaluation,
checkpoints, progress, Ctrl-C, history and figures.  A learner owns its model and optimizers
and does one step on a minibatch:

    learner = LEARNERS[config.algorithm](config, x_dim, n_train, rng, binary=data.binary)   # model from rng
    finite  = learner.step(data, idx, rng)        # idx: the minibatch's row indices into data.train_x
    learner.evaluate(x, eps)                      # average lower bound per datapoint, fixed noise
    learner.state_arrays() / load_state_arrays()  # flat arrays for the npz checkpoint (no pickle)

It gets the minibatch's indices (not just its rows) because a learner may keep state per
datapoint (Monte Carlo EM keeps a chain per datapoint).  Every learner takes its minibatch from
``npvae.data.gather_minibatch`` and its randomness from the generator it is given, so a seed
fixes a run and a checkpoint of the generator makes a resumed run bitwise the same.

The objective is eq. 8 divided by N: the mean over the minibatch of the per-datapoint objective,
plus the N(0, I) parameter prior scaled 1/N (M/N per minibatch sum, as in the authors' code).
"""
import math

import numpy as np

from . import blas
from . import distributions as D
from .data import gather_minibatch
from .fast import (FastDecoderJoint, FastStep, FastWakeSleep, TwoThreadStep, fused_adagrad_applies,
                   fused_adagrad_update, two_thread_reason, unsupported_reason)
from .kernels import bernoulli_log_lik_and_dlogits
from .marginal import ADAPT_SMOOTHING, adapt_step_size, best_starts, hmc_log_px, hmc_transition
from .marginal import _vae_log_joint
from .model import VAE, decoder_backward, decoder_forward
from .optim import has_prior, make_optimizer
from .wakesleep import dream, sample_posterior, sleep_loss_and_grads, wake_loss_and_grads


def prior_grads(params, grads, scale, which):
    """Add the gradient of -log N(theta; 0, I) * scale to grads, in place, for the parameters
    the prior covers (``optim.has_prior``: weights only, all, or none)."""
    for name in grads:
        if has_prior(name, which):
            grads[name] += scale * params[name]


def _fused_note(config):
    """What a readable step with --fast still fuses (``Learner._prior_and_update``)."""
    return "; prior and Adagrad fused" if config.optimizer == "adagrad" else ""


def evaluate_bound(vae, x, eps, estimator="B", batch_size=1000):
    """Average lower bound per datapoint over x with the given fixed noise eps: (L, n, Nz)."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        total += float(vae.elbo(x[sl], eps[:, sl], estimator).sum(dtype=np.float64))
    return total / x.shape[0]


def _optimizer(config):
    kwargs = {"lr": config.lr}
    if config.optimizer == "adagrad":
        kwargs["warmup"] = config.warmup
    return make_optimizer(config.optimizer, **kwargs)


def _save_optimizer(prefix, opt):
    return {f"{prefix}/{k}": v for k, v in opt.state_dict().items()}


def _load_optimizer(prefix, opt, arrays):
    opt.load_state_dict({k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")})


class Learner:
    """What every learner shares: the VAE (built from the run's generator first, so a seed fixes
    the initial parameters; or from its own generator with ``init_seed``), evaluation of the
    bound, and saving the parameters.  binary: every
    training minibatch is 0/1 (``TrainingData.binary``), which a fast step can exploit."""

    name = ""

    def __init__(self, config, x_dim, n_train, rng, binary=False):
        self.config = config
        self.M, self.L, self.prior_scale = config.batch_size, config.L, 1.0 / int(n_train)
        init = rng if config.init_seed < 0 else np.random.default_rng(config.init_seed)
        self.vae = VAE(x_dim, config.nz, config.hidden, config.likelihood(), seed=init,
                       dtype=np.dtype(config.dtype), activation=config.activation, init_std=config.init_std)
        self.implementation = "reference"

    def evaluate(self, x, eps):
        """The average lower bound per datapoint on x with fixed noise eps (the curves' quantity)."""
        return evaluate_bound(self.vae, x, eps, self.config.estimator)

    def evaluate_marginal(self, x, rng, log=print, train_x=None):
        """The average log p(x) per datapoint on x by the Appendix D estimator (``hmc_log_px``, the
        paper's settings: 50 HMC samples, 4 leapfrog steps), datapoint i's randomness from rng's i-th
        spawned child.  Datapoints whose chain got stuck (NaN) are left out, and the log says so.
        train_x: the training set, whose encoder means are candidate starts with --marginal_start=best."""
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # counted below instead, once
            estimate = hmc_log_px(self.vae, x, rng, **self._marginal_start(x, train_x))
        stuck = int(np.isnan(estimate.log_px).sum())
        if stuck:
            log(f"App. D estimate: {stuck} of {len(x)} datapoints' HMC chains stayed put; left out of the mean")
        return float(np.nanmean(estimate.log_px))

    def _marginal_start(self, x, train_x=None):
        if self.config.marginal_start == "best":
            if train_x is None:
                raise ValueError("--marginal_start=best needs the training set (train_x) for its candidates")
            return encoder_marginal_start(self.vae, x, train_x, self.config.eval_seed)
        return {}           # the chains start at the encoder's mean, with steps from its sigma

    def state_arrays(self):
        return {f"param/{k}": v for k, v in self.vae.params.items()}

    def load_state_arrays(self, arrays):
        for k, p in self.vae.params.items():
            key = f"param/{k}"
            if key not in arrays:
                raise ValueError(f"the checkpoint has no {key}: it was not written by this model")
            saved = arrays[key]
            if saved.shape != p.shape:
                raise ValueError(f"{k} has shape {saved.shape} in the checkpoint, {p.shape} in the model")
            p[...] = saved

    def _gather(self, data, idx, rng):
        return gather_minibatch(data.train_x, idx, rng, data.dynamic)

    def _normal(self, shape, rng):
        # float64 draws in either precision: a float32 run sees the same noise as a float64 one
        return rng.standard_normal(shape).astype(self.vae.dtype)

    def _prior_and_update(self, opt, grads):
        """The readable steps' last act: add the parameter prior's gradient to grads, then step opt
        on the parameters grads holds.  False when a gradient is not finite (the run then stops as
        diverged).  With --fast, Adagrad runs both as one Numba pass per tensor
        (``fast.fused_adagrad_update``): the same arithmetic, bitwise, and a third of a Frey Face
        step saved; otherwise the three readable lines below (whose finiteness check, since
        2026-11-23 also on AEVB's and MCEM's readable steps, stops a run one step before a NaN
        gradient would reach the parameters)."""
        params = {k: self.vae.params[k] for k in grads}
        if self.config.fast and fused_adagrad_applies(params, grads, opt, self.prior_scale):
            return not fused_adagrad_update(params, grads, opt, self.config.prior, self.prior_scale)
        prior_grads(params, grads, self.prior_scale, self.config.prior)
        if not all(np.isfinite(g).all() for g in grads.values()):
            return False
        opt.update(params, grads)
        return True


class AEVB(Learner):
    """Auto-Encoding Variational Bayes (Algorithm 1): one SGVB gradient step on encoder and
    decoder together.  ``FastStep`` where it computes exactly the same, the readable
    ``VAE.loss_and_grads`` otherwise (or with ``fast=False``).

    The objective's KL term is weighted by beta_t (``kl_weight``; 1, the bound, by default); the
    learner counts the training samples it has stepped on for the warm-up, and checkpoints the
    count.  Evaluation always measures the bound itself (beta = 1)."""

    name = "aevb"

    def __init__(self, config, x_dim, n_train, rng, binary=False):
        super().__init__(config, x_dim, n_train, rng)
        if config.decoder_var:     # the base class built the learned log sigma^2 head: a fixed variance has none
            self.vae.use_fixed_decoder_var(config.decoder_var)
        self.samples_seen = 0
        self.opt = _optimizer(config)
        self.fast = None
        self.binary = binary
        reason = unsupported_reason(self.vae, config.estimator, self.opt, config.prior)
        if config.fast and not reason:
            # automatic: two threads for one float64 job on two cores (bench_step: +11-14%; float32 -3..+11%);
            # a resume keeps the checkpoint's choice (load_state_arrays), so that it stays bitwise
            auto = 2 if config.dtype == "float64" and blas.get_threads() == 2 else 1
            self._use_fast_step(config.step_threads or auto)
        elif config.fast:
            self.implementation = f"reference (the fast step does not implement {reason}){_fused_note(config)}"

    def _use_fast_step(self, threads):
        """The fast step with this many threads (TwoThreadStep for 2 where it can run, else FastStep)."""
        config = self.config
        serial_reason = two_thread_reason(self.vae, self.opt, self.M, self.L, config.prior) if threads == 2 else ""
        if isinstance(self.fast, TwoThreadStep):
            self.fast.close()
        sparse = " (sparse first layer on 0/1 minibatches)" if self.binary else ""
        if threads == 2 and not serial_reason:
            self.fast = TwoThreadStep(self.vae, self.opt, self.M, config.prior, self.prior_scale, binary=self.binary)
            self.implementation = "fast step on two threads" + sparse
        else:
            self.fast = FastStep(self.vae, self.opt, self.M, self.L, config.prior, self.prior_scale,
                                 binary=self.binary)
            self.implementation = "fast step" + sparse + (f"; one thread: the two-thread step does not "
                                                          f"implement {serial_reason}" if serial_reason else "")

    def kl_weight(self):
        """beta_t, the KL weight of the next step: beta min(1, samples_seen / kl_warmup) during a
        warm-up (--kl_warmup > 0), beta otherwise."""
        beta, warmup = float(self.config.beta), self.config.kl_warmup
        return beta * min(1.0, self.samples_seen / warmup) if warmup else beta

    def step(self, data, idx, rng):
        kl_weight = self.kl_weight()
        self.samples_seen += len(idx)
        if self.fast is not None:                                    # same arithmetic, preallocated
            self.fast.kl_weight = kl_weight
            x, eps = self.fast.load_batch(data.train_x, idx, rng, data.dynamic)
            _, finite = self.fast.step(x, eps)
            return finite
        x = self._gather(data, idx, rng)                             # the readable reference
        eps = self._normal((self.L, len(idx), self.config.nz), rng)
        loss, grads = self.vae.loss_and_grads(x, eps, self.config.estimator, kl_weight)
        return math.isfinite(loss) and self._prior_and_update(self.opt, grads)

    def state_arrays(self):
        threads = 2 if isinstance(self.fast, TwoThreadStep) else 1       # the step that produced these parameters
        return {**super().state_arrays(), **_save_optimizer("opt", self.opt),
                "aevb/samples_seen": np.array(self.samples_seen, dtype=np.int64),
                "aevb/step_threads": np.array(threads if self.fast is not None else 0, dtype=np.int64)}

    def load_state_arrays(self, arrays):
        super().load_state_arrays(arrays)
        _load_optimizer("opt", self.opt, arrays)
        saved_threads = int(arrays.get("aevb/step_threads", 0))
        if self.fast is not None and self.config.step_threads == 0 and saved_threads in (1, 2):
            # --step_threads=0 chose by the machine; a resume continues with the run's own step
            # (sums split over two halves round differently from one serial sum)
            current = 2 if isinstance(self.fast, TwoThreadStep) else 1
            if saved_threads != current:
                self._use_fast_step(saved_threads)
        if "aevb/samples_seen" in arrays:
            self.samples_seen = int(arrays["aevb/samples_seen"])
        elif self.config.kl_warmup:
            raise ValueError("the checkpoint has no aevb/samples_seen (it predates --kl_warmup), so the KL warm-up "
                             "cannot continue where it stopped")
        # else: a checkpoint from before the counter; without a warm-up the count is never read


class WakeSleep(Learner):
    """Wake-sleep (``npvae.wakesleep``): a wake step on the generative parameters, then a sleep
    step on the recognition parameters with dreams of the just-updated generative model.
    Separate optimizers (and Adagrad accumulators) for the two sets, same rule and step size."""

    name = "wakesleep"

    def __init__(self, config, x_dim, n_train, rng, binary=False):
        super().__init__(config, x_dim, n_train, rng)
        self.gen_opt, self.rec_opt = _optimizer(config), _optimizer(config)
        self.fast = None
        reason = unsupported_reason(self.vae, "B", self.gen_opt, config.prior)
        if config.fast and not reason:
            self.fast = FastWakeSleep(self.vae, self.gen_opt, self.rec_opt, self.M, config.prior, self.prior_scale,
                                      binary=binary)
            self.implementation = ("fast step (sparse first layer on 0/1 minibatches and dreams)" if binary
                                   else "fast step (sparse first layer on dreams)")
        elif config.fast:
            self.implementation = f"reference (the fast step does not implement {reason}){_fused_note(config)}"

    def step(self, data, idx, rng):
        if self.fast is not None:
            return self.fast.step(data.train_x, idx, rng, data.dynamic)
        params, arch, dtype = self.vae.params, self.vae.arch, self.vae.dtype
        x = self._gather(data, idx, rng)
        # wake: z ~ q(z|x), no gradient through it; climb log p(x, z) in the generative parameters
        z = sample_posterior(params, arch, x, self._normal((len(idx), arch.z_dim), rng))
        loss, grads = wake_loss_and_grads(params, arch, x, z)
        if not self._update(self.gen_opt, loss, grads):
            return False
        # sleep: dreams of the just-updated generative model; climb log q(z|x) in the recognition parameters
        x_dream, z_dream = dream(params, arch, len(idx), rng, dtype)
        loss, grads = sleep_loss_and_grads(params, arch, x_dream, z_dream)
        return self._update(self.rec_opt, loss, grads)

    def _update(self, opt, loss, grads):
        return math.isfinite(loss) and self._prior_and_update(opt, grads)

    def state_arrays(self):
        return {**super().state_arrays(), **_save_optimizer("opt.gen", self.gen_opt),
                **_save_optimizer("opt.rec", self.rec_opt)}

    def load_state_arrays(self, arrays):
        super().load_state_arrays(arrays)
        _load_optimizer("opt.gen", self.gen_opt, arrays)
        _load_optimizer("opt.rec", self.rec_opt, arrays)


START_PRIOR_DRAWS = 256
START_FROM_TRAINING = 2000
# The evaluation's generators are streams [eval_seed, s] of their own: each evaluation draws the
# same noise, and nothing from the training stream.  (examples/marginal_starts.py takes 6.)
MARGINAL_EVAL_STREAM = 3     # the App. D estimator's HMC and KDE noise
START_PRIOR_STREAM = 5       # start_candidates' prior draws


def marginal_eval_rng(eval_seed):
    """The generator of the harness's App. D evaluation (``Learner.evaluate_marginal``): the same at
    every evaluation, so that successive values differ only through the parameters."""
    return np.random.default_rng([eval_seed, MARGINAL_EVAL_STREAM])


def start_candidate_rows(n_train):
    """Which training points' z ``start_candidates`` takes: all of them for N <= 2000, else the
    first 1000 (the training evaluation set's, for --eval_max <= 1000) and 1000 spread over the rest."""
    half = START_FROM_TRAINING // 2
    return np.arange(n_train) if n_train <= START_FROM_TRAINING else np.concatenate(
        [np.arange(half), np.linspace(half, n_train - 1, half).astype(int)])


def start_candidates(train_z, eval_seed):
    """Candidate starts of the App. D chains (``marginal.best_starts``): z = 0, 256 prior draws (a
    generator seeded [eval_seed, START_PRIOR_STREAM]: every evaluation tries the same) and the
    training points' z (N, Z), MCEM's chains or an encoder's means, of the rows
    ``start_candidate_rows`` picks."""
    nz = train_z.shape[1]
    prior = np.random.default_rng([eval_seed, START_PRIOR_STREAM]).standard_normal((START_PRIOR_DRAWS, nz))
    return np.concatenate([np.zeros((1, nz)), prior, train_z[start_candidate_rows(len(train_z))]])


MCEM_START_STEP = 0.1       # no encoder sigma to scale the first HMC steps by; burn-in adapts them


def mcem_marginal_start(vae, x, chains, eval_seed):
    """``hmc_log_px``'s start for a model with no encoder (MCEM's evaluation): each App. D chain
    starts at the best (highest log p(x, z)) of the ``start_candidates`` built from the training
    chains' positions, ``chains`` (N, Z), with initial HMC steps of 0.1."""
    candidates = start_candidates(np.asarray(chains, dtype=np.float64), eval_seed)
    return {"z0": best_starts(vae, x.astype(vae.dtype, copy=False), candidates), "step_size": MCEM_START_STEP}


def encoder_marginal_start(vae, x, train_x, eval_seed):
    """``hmc_log_px``'s start with --marginal_start=best for a model with an encoder: each App. D
    chain starts at the best (highest log p(x, z)) of its encoder mean mu(x) (tried first) and the
    ``start_candidates`` built from the encoder means of the training points train_x (N, D) that
    ``start_candidate_rows`` picks; the step sizes stay hmc_log_px's, from the encoder's sigma.
    On an overfit encoder mu(x) can put a test point's chain in a poor mode (README, Figure 3)."""
    rows = np.asarray(train_x)[start_candidate_rows(len(train_x))]
    train_mu = vae.encode(rows.astype(vae.dtype, copy=False))[0]
    candidates = start_candidates(np.asarray(train_mu, dtype=np.float64), eval_seed)
    mu = np.asarray(vae.encode(x)[0], dtype=np.float64)
    return {"z0": best_starts(vae, x, candidates, own=mu)}


class MCEM(Learner):
    """Monte Carlo EM (the paper's Appendix E): the generative model alone, no encoder.

    Every training datapoint n keeps a persistent chain z_n, its own HMC step size and its running
    acceptance rate (learner state, checkpointed).  A step on a minibatch:

      E-step  one HMC transition of each of its datapoints' chains towards p(z | x_n) under the current
              decoder (``mcem_leapfrog`` leapfrog steps, 10 in the paper); each step size is then nudged
              x 1.02^(+-1) towards a running acceptance of 90%, for as long as training lasts (the target
              moves with the decoder, so the adaptation never stops);
      M-step  ``mcem_updates`` (5) Adagrad steps on the decoder, each ascending
              mean_n log p(x_n, z_n) + (1/N) log p(theta) at the new z (``wake_loss_and_grads``: the
              same gradient as wake-sleep's wake phase, with z from HMC instead of from q(z|x)).

    A step counts its M datapoints as M training samples, as AEVB's does (it also evaluates the
    decoder 10 + 5 times per datapoint).  The authors ran it full-batch (--batch_size = the training
    set's size, as examples/figure3.py does): with small minibatches of a large set the decoder
    takes many updates per chain transition and the chains drift (``npvae.sweep.plan_figure3``).
    The VAE object's encoder is carried untrained, so that the run folder holds a full VAE; nothing
    uses it: evaluation is the Appendix D estimate of log p(x) (``--metric=marginal``) with chains
    started at the best of z = 0, prior draws and the training chains (``_marginal_start``).
    """

    name = "mcem"
    TARGET_ACCEPT = 0.9

    def __init__(self, config, x_dim, n_train, rng, binary=False):
        super().__init__(config, x_dim, n_train, rng)
        self.opt = _optimizer(config)
        self.z = rng.standard_normal((n_train, config.nz))       # the chains start from the prior
        self.step_size = np.full(n_train, 0.1)
        self.accept_rate = np.full(n_train, self.TARGET_ACCEPT)
        self.fast = None
        if config.fast and FastDecoderJoint.supports(self.vae, self.opt, config.prior):
            self.fast = FastDecoderJoint(self.vae, self.opt, config.batch_size, config.prior, self.prior_scale)
        self.implementation = f"{'fast' if self.fast else 'reference'} (HMC E-step, {config.mcem_leapfrog} " \
                              f"leapfrog steps; {config.mcem_updates} {config.optimizer} M-steps)" \
                              f"{_fused_note(config) if config.fast and not self.fast else ''}"

    def step(self, data, idx, rng):
        params, config = self.vae.params, self.config
        x = self._gather(data, idx, rng)
        fast = self.fast if self.fast is not None and x.shape[0] == self.fast.B else None
        if fast is not None:
            fast.set_x(x)
        target = fast.target if fast is not None else _vae_log_joint(self.vae, x)
        z = self.z[idx]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            logp, grad = (np.asarray(a, dtype=np.float64) for a in target(z))
        if not (np.isfinite(logp).all() and np.isfinite(grad).all()):
            return False
        momentum, log_u = rng.standard_normal(z.shape), np.log(rng.random(len(idx)))
        z, _, _, accept_prob = hmc_transition(target, z, logp, grad, self.step_size[idx], config.mcem_leapfrog,
                                              momentum, log_u)
        self.z[idx] = z
        rate = self.accept_rate[idx] + ADAPT_SMOOTHING * (accept_prob - self.accept_rate[idx])
        self.accept_rate[idx] = rate
        self.step_size[idx] = adapt_step_size(self.step_size[idx], rate, self.TARGET_ACCEPT)
        z = z.astype(self.vae.dtype)
        for _ in range(config.mcem_updates):
            if fast is not None:
                loss, finite = fast.m_step(z)
                if not (finite and math.isfinite(loss)):
                    return False
                continue
            loss, grads = self.m_step_loss_and_grads(x, z)
            if not (math.isfinite(loss) and self._prior_and_update(self.opt, grads)):
                return False
        return True

    def m_step_loss_and_grads(self, x, z):
        """The M-step's -mean log p(x, z) and its decoder gradients: ``wake_loss_and_grads``, the
        readable function, with for a Bernoulli decoder the log-likelihood and its logit gradient from
        one fused kernel (``kernels.bernoulli_log_lik_and_dlogits``; tests/test_mcem.py holds the two
        equal).  The readable log-likelihood pass was a third of an MCEM step."""
        params, arch = self.vae.params, self.vae.arch
        if arch.likelihood != "bernoulli" or not self.config.fast:
            return wake_loss_and_grads(params, arch, x, z)
        B = x.shape[0]
        logits, dec_cache = decoder_forward(params, arch, z)
        log_px, dlogits = bernoulli_log_lik_and_dlogits(x, logits)
        log_pz = -0.5 * (D.LOG_2PI * arch.z_dim + (z * z).sum(axis=-1))
        dlogits *= dlogits.dtype.type(-1.0 / B)                                   # d loss / d logits
        _, grads = decoder_backward(dlogits, dec_cache)
        return -float((log_px + log_pz).mean()), grads

    def _marginal_start(self, x, train_x=None):
        return mcem_marginal_start(self.vae, x, self.z, self.config.eval_seed)

    def state_arrays(self):
        return {**super().state_arrays(), **_save_optimizer("opt", self.opt), "mcem/z": self.z,
                "mcem/step_size": self.step_size, "mcem/accept_rate": self.accept_rate}

    def load_state_arrays(self, arrays):
        super().load_state_arrays(arrays)
        _load_optimizer("opt", self.opt, arrays)
        for name in ("z", "step_size", "accept_rate"):
            saved, mine = arrays.get(f"mcem/{name}"), getattr(self, name)
            if saved is None or saved.shape != mine.shape:
                raise ValueError(f"the checkpoint's mcem/{name} does not fit a training set of {len(self.z)} points")
            mine[...] = saved


LEARNERS = {AEVB.name: AEVB, WakeSleep.name: WakeSleep, MCEM.name: MCEM}
