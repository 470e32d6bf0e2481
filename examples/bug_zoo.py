"""The bug zoo: plant the classic NumPy-VAE bugs one at a time and see which check catches each.

    python examples/bug_zoo.py                 # the table in runs/studies/bug_zoo/bug_zoo.md (~1 min)
    python examples/bug_zoo.py --smoke         # fewer samples and steps, a few seconds (CI)
    python examples/bug_zoo.py --seed 1

The model under test is a compact copy of npvae's model (one tanh hidden layer each way,
Bernoulli decoder, x_dim 16 = hidden 16 so that enc.h1.W is square, z_dim 2), written out in
``ModelUnderTest`` with a switch per bug.  The library is never touched; with the switch off the
copy agrees with npvae.model.elbo_forward / elbo_backward to round-off (tests/test_studies.py).

The bugs (BUGS below): the power instead of the product in sigma; a sampler that reads logvar
as log sigma; the wrong KL sign; a missing 1/2 in dsigma/dlogvar; the KL gradient pushed to the
first layer separately and double-counted; BCE from clipped probabilities; noise drawn inside
the differentiated function; a transposed weight gradient on the square layer; the weight
prior's gradient with the wrong sign.  Plus a control row with no bug.

The checks, each with a threshold fixed in advance:
  (a)  finite-difference gradient check of the training objective (Ridders, random directions;
       a smaller first step when Ridders' own error estimate says the first did not converge):
       caught if any tensor's relative error > 1e-6 -- at a generic point (N(0, 0.5^2) weights,
       so logvar is far from 0 and every unit is non-linear) and (a') at the same point with half
       of the decoder's logits pushed to +-25 (extreme logits);
  (b)  Monte Carlo KL: mean of log q(z|x) - log p(z) over z from the model's own sampler against
       the model's analytic KL, per datapoint;
  (c1) estimators A (eq. 6) and B (eq. 7): their means over the same noise, per datapoint;
  (c2) pathwise gradient (the model's backward) against the score-function gradient of
       E_q[log p(x, z) - log q(z|x)] (leave-one-out baseline), per encoder weight;
  (b), (c1), (c2) are caught when max |z| exceeds the Bonferroni threshold for a family-wise
       false-alarm rate of 1e-3 over the compared quantities (Student t for (c2));
  (d)  a short training run (Adagrad) with the model's own gradient; the *correct* bound on the
       training set (fixed noise) must rise by more than 3 standard errors; caught if it does
       not, or if training goes non-finite.

Outputs in --out: bug_zoo.md, bug_zoo.csv and bug_zoo.png (which check catches which bug).
"""
import os
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # examples/_study.py

from _study import make_out, markdown_table, pyplot, run, save_figure, study_parser  # noqa: E402
from _study import synthetic_binary, write_csv, write_text  # noqa: E402

from npvae.distributions import LOGVAR_MAX, LOGVAR_MIN  # noqa: E402
from npvae.gradcheck import relative_error, ridders_derivative  # noqa: E402
from npvae.layers import sigmoid  # noqa: E402
from npvae.optim import Adagrad  # noqa: E402

X_DIM, HIDDEN, Z_DIM = 16, 16, 2          # X_DIM == HIDDEN: enc.h1.W (and dec.logits.W) are square
LOG_2PI = float(np.log(2.0 * np.pi))
CLIP = 1e-7                                # the tutorials' probability clip

BUGS = {
    "none": "no bug (control)",
    "pow_sigma": "sigma = exp(0.5 ** logvar): a power instead of the product",
    "sampler_log_sigma": "sampler reads logvar as log sigma (sigma = exp(logvar)); the KL reads log sigma^2",
    "kl_sign": "bound = E log p(x|z) + KL: the wrong KL sign",
    "half_missing": "dlogvar = sigma * dsigma: the 1/2 of dsigma/dlogvar missing",
    "kl_double": "KL gradient pushed to the first layer separately, then added to the joined one",
    "clipped_bce": "BCE from clip(sigmoid(l), 1e-7, 1 - 1e-7), value and gradient",
    "noise_inside": "eps drawn inside the differentiated function",
    "transposed_grad": "dW of the square layer enc.h1 transposed",
    "prior_sign": "the weight prior's gradient with the wrong sign (training objective)",
}
CHECKS = ("a_gradcheck", "a_extreme", "b_mc_kl", "c1_a_vs_b", "c2_path_vs_score", "d_training")
CHECK_TITLES = {"a_gradcheck": "(a) gradient check", "a_extreme": "(a') gradient check, extreme logits",
                "b_mc_kl": "(b) MC KL = analytic KL", "c1_a_vs_b": "(c1) estimator A = B",
                "c2_path_vs_score": "(c2) pathwise = score function", "d_training": "(d) training improves the bound"}
SHORT = {"a_gradcheck": "a", "a_extreme": "a'", "b_mc_kl": "b", "c1_a_vs_b": "c1", "c2_path_vs_score": "c2",
         "d_training": "d"}
GRAD_TOL = 1e-6
ALPHA = 1e-3                               # family-wise false-alarm rate of each statistical check


def param_shapes():
    """npvae's names and shapes (npvae.model.Architecture.param_shapes) for the 16-16-2 model."""
    return {"enc.h1.W": (X_DIM, HIDDEN), "enc.h1.b": (HIDDEN,), "enc.mu.W": (HIDDEN, Z_DIM), "enc.mu.b": (Z_DIM,),
            "enc.logvar.W": (HIDDEN, Z_DIM), "enc.logvar.b": (Z_DIM,), "dec.h1.W": (Z_DIM, HIDDEN),
            "dec.h1.b": (HIDDEN,), "dec.logits.W": (HIDDEN, X_DIM), "dec.logits.b": (X_DIM,)}


def init_params(rng, std):
    return {k: std * rng.standard_normal(s) for k, s in param_shapes().items()}


class ModelUnderTest:
    """A compact one-hidden-layer Bernoulli VAE with one planted bug (or none).

    Shapes: x (B, 16); mu, logvar (B, 2); eps and z (L, B, 2); logits (L, B, 16).  Methods
    mirror npvae's forward/backward pairs; every ``*_backward`` returns gradients of the scalar
    sum(d_out * out).  Only the "noise_inside" bug uses the model's own generator.
    """

    def __init__(self, bug="none", noise_seed=0):
        if bug not in BUGS:
            raise ValueError(f"unknown bug {bug!r}; choose one of {', '.join(BUGS)}")
        self.bug = bug
        self._noise = np.random.default_rng(noise_seed)

    # -- q(z|x) -------------------------------------------------------------------------------
    def encode(self, params, x):
        h = np.tanh(x @ params["enc.h1.W"] + params["enc.h1.b"])
        mu = h @ params["enc.mu.W"] + params["enc.mu.b"]
        lv_raw = h @ params["enc.logvar.W"] + params["enc.logvar.b"]
        return mu, np.clip(lv_raw, LOGVAR_MIN, LOGVAR_MAX), (x, h, lv_raw)

    def encode_backward(self, params, dmu, dlogvar, cache):
        x, h, lv_raw = cache
        dlogvar = dlogvar * ((lv_raw > LOGVAR_MIN) & (lv_raw < LOGVAR_MAX))   # the clamp
        g = {"enc.mu.W": h.T @ dmu, "enc.mu.b": dmu.sum(0), "enc.logvar.W": h.T @ dlogvar,
             "enc.logvar.b": dlogvar.sum(0)}
        da = (dmu @ params["enc.mu.W"].T + dlogvar @ params["enc.logvar.W"].T) * (1.0 - h * h)
        dW = x.T @ da
        if self.bug == "transposed_grad":
            dW = dW.T                       # a square layer: the shapes agree, so nothing complains
        g["enc.h1.W"], g["enc.h1.b"] = dW, da.sum(0)
        return g

    # -- the stochastic node ------------------------------------------------------------------
    def sigma(self, logvar):
        """sigma and dsigma/dlogvar, both (B, Z)."""
        if self.bug == "pow_sigma":
            power = 0.5 ** logvar
            s = np.exp(power)
            return s, s * power * np.log(0.5)          # consistent with the (wrong) value
        if self.bug == "sampler_log_sigma":
            s = np.exp(logvar)
            return s, s
        s = np.exp(0.5 * logvar)
        return s, (s if self.bug == "half_missing" else 0.5 * s)

    def sample(self, mu, logvar, eps):
        if self.bug == "noise_inside":
            eps = self._noise.standard_normal(eps.shape)   # ignores the eps it was given
        s, ds = self.sigma(logvar)
        return mu + s * eps, (eps, ds)

    def sample_backward(self, dz, cache):
        eps, ds = cache
        return dz.sum(0), (dz * eps).sum(0) * ds

    # -- p(x|z) -------------------------------------------------------------------------------
    def decode(self, params, z):
        hd = np.tanh(z @ params["dec.h1.W"] + params["dec.h1.b"])
        return hd @ params["dec.logits.W"] + params["dec.logits.b"], (z, hd)

    def decode_backward(self, params, dlogits, cache):
        z, hd = cache
        Wo = params["dec.logits.W"]
        g = {"dec.logits.W": np.einsum("lbh,lbd->hd", hd, dlogits), "dec.logits.b": dlogits.sum((0, 1))}
        da = (dlogits @ Wo.T) * (1.0 - hd * hd)
        g["dec.h1.W"], g["dec.h1.b"] = np.einsum("lbz,lbh->zh", z, da), da.sum((0, 1))
        return da @ params["dec.h1.W"].T, g

    def log_px(self, x, logits):
        """log p(x|z) (L, B) and its derivative with respect to the logits (L, B, 16)."""
        if self.bug == "clipped_bce":
            p = np.clip(sigmoid(logits), CLIP, 1.0 - CLIP)
            ll = (x * np.log(p) + (1.0 - x) * np.log(1.0 - p)).sum(-1)
            # the tutorials' chain rule (x/p - (1-x)/(1-p)) * p(1-p) with the clipped p: x - p
            return ll, x - p
        ll = (x * logits - np.maximum(logits, 0.0) - np.log1p(np.exp(-np.abs(logits)))).sum(-1)
        return ll, x - sigmoid(logits)

    # -- densities of z -------------------------------------------------------------------------
    @staticmethod
    def kl(mu, logvar):
        """KL(q || N(0, I)) (B,), analytic, and (dKL/dmu, dKL/dlogvar)."""
        var_m1 = np.expm1(logvar)
        return 0.5 * (mu * mu + var_m1 - logvar).sum(-1), (mu, 0.5 * var_m1)

    @staticmethod
    def log_q(z, mu, logvar):
        """log N(z; mu, exp(logvar)) (L, B) and its (d/dmu, d/dlogvar) at fixed z, each (L, B, Z)."""
        inv_var = np.exp(-logvar)
        sq = (z - mu) ** 2 * inv_var
        return -0.5 * (LOG_2PI + logvar + sq).sum(-1), ((z - mu) * inv_var, 0.5 * (sq - 1.0))

    @staticmethod
    def log_pz(z):
        return -0.5 * (LOG_2PI * z.shape[-1] + (z * z).sum(-1))

    # -- the bound and the training objective -----------------------------------------------
    def kl_sign(self):
        return 1.0 if self.bug == "kl_sign" else -1.0

    def elbo(self, params, x, eps):
        """Estimator B (eq. 7) per datapoint (B,) and the cache for elbo_backward."""
        mu, logvar, enc_cache = self.encode(params, x)
        z, node_cache = self.sample(mu, logvar, eps)
        logits, dec_cache = self.decode(params, z)
        ll, dll = self.log_px(x, logits)
        kl, dkl = self.kl(mu, logvar)
        return ll.mean(0) + self.kl_sign() * kl, (eps.shape[0], enc_cache, node_cache, dec_cache, dll, dkl)

    def elbo_backward(self, params, delbo, cache):
        """delbo (B,) -> gradients of sum(delbo * elbo) for every parameter."""
        L, enc_cache, node_cache, dec_cache, dll, (dkl_mu, dkl_lv) = cache
        dz, grads = self.decode_backward(params, (delbo / L)[None, :, None] * dll, dec_cache)
        dmu, dlogvar = self.sample_backward(dz, node_cache)
        dmu_kl = self.kl_sign() * delbo[:, None] * dkl_mu
        dlv_kl = self.kl_sign() * delbo[:, None] * dkl_lv
        grads.update(self.encode_backward(params, dmu + dmu_kl, dlogvar + dlv_kl, enc_cache))
        if self.bug == "kl_double":         # the KL path pushed down on its own as well, and added again
            extra = self.encode_backward(params, dmu_kl, dlv_kl, enc_cache)
            for k, v in extra.items():
                grads[k] = grads[k] + v
        return grads

    def objective(self, params, x, eps, prior_scale):
        """Training loss -mean(elbo) + prior_scale * sum_W ||W||^2 / 2: the N(0, I) prior on the
        weights, scaled by 1/N per datapoint as in npvae.train.  The value is always right."""
        elbo, cache = self.elbo(params, x, eps)
        prior = sum(float((p * p).sum()) for k, p in params.items() if k.endswith(".W"))
        return -float(elbo.mean()) + prior_scale * 0.5 * prior, elbo, cache

    def objective_and_grads(self, params, x, eps, prior_scale):
        """The training loss and its gradient (the prior bug is in the gradient)."""
        loss, elbo, cache = self.objective(params, x, eps, prior_scale)
        grads = self.elbo_backward(params, np.full(elbo.shape, -1.0 / elbo.shape[0]), cache)
        sign = -1.0 if self.bug == "prior_sign" else 1.0
        for k, p in params.items():
            if k.endswith(".W"):
                grads[k] = grads[k] + sign * prior_scale * p
        return loss, grads

    def bounds_per_sample(self, params, x, eps):
        """Per-sample terms of estimators A and B (each (S, B)), and the analytic KL (B,), from one draw."""
        mu, logvar, _ = self.encode(params, x)
        z, _ = self.sample(mu, logvar, eps)
        ll, _ = self.log_px(x, self.decode(params, z)[0])
        kl, _ = self.kl(mu, logvar)
        lq, _ = self.log_q(z, mu, logvar)
        return ll + self.log_pz(z) - lq, ll + self.kl_sign() * kl, (lq - self.log_pz(z)), kl

    def score_grads(self, params, x, eps):
        """Score-function estimate of d/dphi mean_b E_q[log p(x, z) - log q(z|x)] for the encoder.

        Uses only forward values and grad_phi log q(z|x) at fixed z:  E[(f - b) grad log q], with a
        leave-one-out baseline b_l = mean of the other L - 1 draws' f (unbiased; needs L >= 2).
        """
        mu, logvar, enc_cache = self.encode(params, x)
        z, _ = self.sample(mu, logvar, eps)
        ll, _ = self.log_px(x, self.decode(params, z)[0])
        lq, (dq_mu, dq_lv) = self.log_q(z, mu, logvar)
        f = ll + self.log_pz(z) - lq                                        # (L, B)
        L, B = f.shape
        w = (f - (f.sum(0) - f) / (L - 1)) / (L * B)
        return self.encode_backward(params, (w[..., None] * dq_mu).sum(0), (w[..., None] * dq_lv).sum(0), enc_cache)


# --------------------------------------------------------------------------- the checks

def bonferroni_z(n, alpha=ALPHA):
    """|z| above which one of n standard-normal statistics fires with probability <= alpha under no bug."""
    from scipy import stats
    return float(stats.norm.isf(alpha / (2 * n)))


def bonferroni_t(n, df, alpha=ALPHA):
    from scipy import stats
    return float(stats.t.isf(alpha / (2 * n), df))


def extreme_logits_point(params):
    """The same parameters with every other decoder logit pushed to +-25, far past the 1e-7 clip."""
    p = {k: v.copy() for k, v in params.items()}
    p["dec.logits.b"][0::2] = 25.0 * np.where(np.arange(X_DIM // 2) % 2 == 0, 1.0, -1.0)
    return p


def check_gradient(model, params, x, eps, prior_scale, rng, n_directions=3):
    """(a) max over tensors of the relative error of <grad, d> against Ridders' finite differences."""
    params = {k: v.copy() for k, v in params.items()}
    _, grads = model.objective_and_grads(params, x, eps, prior_scale)

    def f():
        return model.objective(params, x, eps, prior_scale)[0]

    worst = 0.0
    for name, p in params.items():
        for _ in range(n_directions):
            d = rng.standard_normal(p.shape)
            numeric = directional_derivative(f, p, d)
            err = relative_error(float(np.vdot(grads[name], d)), numeric)
            worst = max(worst, err if np.isfinite(err) else np.inf)
    return worst


def directional_derivative(f, p, d, first_steps=(1e-2, 1e-3, 1e-4)):
    """Ridders' estimate of the derivative of f() along d, trusted only when its own error estimate is
    below GRAD_TOL / 10 of its size: a strongly curved direction (large sigma, saturated units) can
    defeat a first step of 1e-2, and a finite-difference failure must not be reported as a bug.
    Smaller first steps are tried in turn; the estimate with the smallest error estimate is kept."""
    best, best_err = np.nan, np.inf
    for h0 in first_steps:
        value, err = ridders_derivative(f, p, d, h0=h0)
        if np.isfinite(err) and err < best_err:
            best, best_err = value, err
        if best_err <= 0.1 * GRAD_TOL * abs(best):
            break
    return best


def _max_abs_z(diff, axis=0):
    """max |mean / standard error| over the other axes; entries with zero spread are skipped."""
    n = diff.shape[axis]
    mean, sd = diff.mean(axis), diff.std(axis, ddof=1)
    ok = sd > 0
    if not np.all(np.isfinite(diff)):
        return np.inf, int(ok.sum())
    z = np.abs(mean[ok]) / (sd[ok] / np.sqrt(n))
    return (float(z.max()) if z.size else 0.0), int(ok.sum())


def check_mc_kl(model, params, x, rng, n_samples):
    """(b) per datapoint: MC mean of log q - log p (model's sampler) vs the analytic KL. -> (max |z|, threshold)."""
    _, _, log_ratio, kl = model.bounds_per_sample(params, x, rng.standard_normal((n_samples,) + (len(x), Z_DIM)))
    z, n = _max_abs_z(log_ratio - kl[None, :])
    return z, bonferroni_z(max(n, 1))


def check_estimators_agree(model, params, x, rng, n_samples):
    """(c1) per datapoint: estimator A minus estimator B over the same draws. -> (max |z|, threshold)."""
    est_a, est_b, _, _ = model.bounds_per_sample(params, x, rng.standard_normal((n_samples, len(x), Z_DIM)))
    z, n = _max_abs_z(est_a - est_b)
    return z, bonferroni_z(max(n, 1))


ENC = ("enc.h1.W", "enc.h1.b", "enc.mu.W", "enc.mu.b", "enc.logvar.W", "enc.logvar.b")


def check_pathwise_vs_score(model, params, x, rng, repeats, L):
    """(c2) per encoder weight: pathwise gradient of the model's bound vs the score-function gradient,
    paired over `repeats` independent sets of L draws. -> (max |z|, threshold)."""
    B = len(x)
    diffs = []
    for _ in range(repeats):
        eps = rng.standard_normal((L, B, Z_DIM))
        elbo, cache = model.elbo(params, x, eps)
        path = model.elbo_backward(params, np.full(B, 1.0 / B), cache)
        score = model.score_grads(params, x, eps)
        diffs.append(np.concatenate([(path[k] - score[k]).ravel() for k in ENC]))
    z, n = _max_abs_z(np.array(diffs))
    return z, bonferroni_t(max(n, 1), repeats - 1)


@dataclass
class TrainSetup:
    data: np.ndarray          # (N, 16) binary training set
    init: dict                # initial parameters
    eval_eps: np.ndarray      # (L_eval, N, 2) fixed evaluation noise
    steps: int
    batch: int
    lr: float


def correct_bound(params, setup):
    """The bug-free estimator B on the training set with the fixed evaluation noise, per datapoint (N,)."""
    elbo, _ = ModelUnderTest("none").elbo(params, setup.data, setup.eval_eps)
    return elbo


def check_training(model, setup, rng):
    """(d) Adagrad on the model's own objective and gradient; gain of the correct bound, paired per
    datapoint. -> (gain, its standard error, finite)."""
    params = {k: v.copy() for k, v in setup.init.items()}
    before = correct_bound(params, setup)
    opt = Adagrad(lr=setup.lr)
    n = len(setup.data)
    with np.errstate(all="ignore"):     # a bug may overflow; that is a finding, reported below
        for _ in range(setup.steps):
            idx = rng.choice(n, setup.batch, replace=False)
            eps = rng.standard_normal((1, setup.batch, Z_DIM))
            loss, grads = model.objective_and_grads(params, setup.data[idx], eps, 1.0 / n)
            if not (np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())):
                return np.nan, np.nan, False
            opt.update(params, grads)
        after = correct_bound(params, setup)
    gain = after - before
    if not np.all(np.isfinite(gain)):
        return np.nan, np.nan, False
    return float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(n)), True


def run_zoo(seed=0, smoke=False, bugs=None):
    """Every check on every bug.  Returns {bug: {check: (caught, statistic, threshold)}} and the settings."""
    rng = np.random.default_rng(seed)
    cfg = dict(batch=8, directions=1, mc_samples=2000, repeats=40, L=50, n_train=200, steps=100, train_batch=20,
               lr=0.05) if smoke else dict(batch=20, directions=3, mc_samples=20000, repeats=200, L=100, n_train=500,
                                           steps=600, train_batch=20, lr=0.05)
    data = synthetic_binary(rng, cfg["n_train"], X_DIM)
    point = init_params(rng, 0.5)                  # the generic point of checks (a)-(c)
    x = data[:cfg["batch"]]
    eps_fixed = rng.standard_normal((1, cfg["batch"], Z_DIM))
    setup = TrainSetup(data, init_params(rng, 0.1), rng.standard_normal((8, cfg["n_train"], Z_DIM)),
                       cfg["steps"], cfg["train_batch"], cfg["lr"])
    check_seed = int(rng.integers(2 ** 31))
    results = {}
    for bug in (bugs or BUGS):
        model = ModelUnderTest(bug, noise_seed=check_seed)
        # every bug sees the same draws: a generator per check, seeded the same way for each bug
        sub = np.random.default_rng([check_seed, 0])
        ga = check_gradient(model, point, x, eps_fixed, 1.0 / cfg["n_train"], sub, cfg["directions"])
        sub = np.random.default_rng([check_seed, 1])
        ge = check_gradient(model, extreme_logits_point(point), x, eps_fixed, 1.0 / cfg["n_train"], sub,
                            cfg["directions"])
        with np.errstate(all="ignore"):
            zb, tb = check_mc_kl(model, point, x, np.random.default_rng([check_seed, 2]), cfg["mc_samples"])
            zc1, tc1 = check_estimators_agree(model, point, x, np.random.default_rng([check_seed, 3]),
                                              cfg["mc_samples"])
            zc2, tc2 = check_pathwise_vs_score(model, point, x, np.random.default_rng([check_seed, 4]),
                                               cfg["repeats"], cfg["L"])
        gain, se, finite = check_training(model, setup, np.random.default_rng([check_seed, 5]))
        results[bug] = {
            "a_gradcheck": (not ga <= GRAD_TOL, ga, GRAD_TOL),
            "a_extreme": (not ge <= GRAD_TOL, ge, GRAD_TOL),
            "b_mc_kl": (not zb <= tb, zb, tb),
            "c1_a_vs_b": (not zc1 <= tc1, zc1, tc1),
            "c2_path_vs_score": (not zc2 <= tc2, zc2, tc2),
            "d_training": (not (finite and gain > 3 * se), gain, 3 * se if finite else np.nan),
        }
    return results, cfg


def _cell(check, caught, stat, thr):
    word = "**CAUGHT**" if caught else "pass"
    if check.startswith("a_"):
        return f"{word} ({stat:.0e})"
    if check == "d_training":
        return f"{word} (gain {stat:+.3g} nats)" if np.isfinite(stat) else f"{word} (non-finite)"
    return f"{word} (|z| {stat:.1f})" if np.isfinite(stat) else f"{word} (non-finite)"


def zoo_table(results):
    header = ["bug"] + [CHECK_TITLES[c] for c in CHECKS] + ["caught by"]
    rows = []
    for bug, res in results.items():
        caught_by = [SHORT[c] for c in CHECKS if res[c][0]]
        rows.append([f"`{bug}`: {BUGS[bug]}"] + [_cell(c, *res[c]) for c in CHECKS]
                    + [", ".join(caught_by) if caught_by else "none"])
    return header, rows


def plot_zoo(results, path):
    plt = pyplot()
    bugs = list(results)
    grid = np.array([[1.0 if results[b][c][0] else 0.0 for c in CHECKS] for b in bugs])
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(bugs) + 1.6))
    ax.imshow(grid, cmap="RdYlGn_r", vmin=-0.3, vmax=1.3, aspect="auto")
    for i, b in enumerate(bugs):
        for j, c in enumerate(CHECKS):
            caught, stat, _ = results[b][c]
            if c.startswith("a_"):
                text = f"{stat:.0e}"
            elif c == "d_training":
                text = f"{stat:+.3g} nats" if np.isfinite(stat) else "non-finite"
            else:
                text = f"|z| {stat:.1f}" if np.isfinite(stat) else "non-finite"
            ax.text(j, i, ("CAUGHT\n" if caught else "") + text, ha="center", va="center", fontsize=7)
    ticks = ["(a) gradient\ncheck", "(a') gradient check,\nextreme logits", "(b) MC KL =\nanalytic KL",
             "(c1) estimator\nA = B", "(c2) pathwise =\nscore function", "(d) training\nimproves bound"]
    ax.set_xticks(range(len(CHECKS)), ticks, fontsize=7)
    ax.set_yticks(range(len(bugs)), bugs, fontsize=8)
    ax.set_title("Which check catches which planted bug (red: caught)", fontsize=10)
    save_figure(fig, path)


def _main(argv):
    p = study_parser("bug_zoo", __doc__)
    p.add_argument("--bug", action="append", choices=list(BUGS), help="only these bugs (repeatable; default all)")
    args = p.parse_args(argv)
    out = make_out(args.out)
    results, cfg = run_zoo(args.seed, args.smoke, args.bug)
    header, rows = zoo_table(results)
    r0 = next(iter(results.values()))
    notes = (f"Thresholds: (a) relative error > {GRAD_TOL:.0e}; (b), (c1), (c2) |z| above the Bonferroni threshold "
             f"for a family-wise false-alarm rate {ALPHA:g} ((b) {r0['b_mc_kl'][2]:.2f}, "
             f"(c1) {r0['c1_a_vs_b'][2]:.2f}, "
             f"(c2) {r0['c2_path_vs_score'][2]:.2f}); (d) gain of the correct bound <= 3 standard errors. "
             f"Settings: {cfg}, seed {args.seed}.\n")
    table = markdown_table(header, rows)
    write_text(os.path.join(out, "bug_zoo.md"), "# Bug zoo\n\n" + table + "\n" + notes)
    write_csv(os.path.join(out, "bug_zoo.csv"), ["bug"] + [f"{c}_{k}" for c in CHECKS for k in ("caught", "statistic",
                                                                                                "threshold")],
              [[b] + [v for c in CHECKS for v in (int(res[c][0]), f"{res[c][1]:.6g}", f"{res[c][2]:.6g}")]
               for b, res in results.items()])
    plot_zoo(results, os.path.join(out, "bug_zoo.png"))
    print(table + "\n" + notes)
    print(f"outputs in {out}/\n")

    n_caught = {c: sum(res[c][0] for b, res in results.items() if b != "none") for c in CHECKS}
    missed = [b for b, res in results.items() if b != "none" and not any(res[c][0] for c in CHECKS)]
    control = [c for c in CHECKS if "none" in results and results["none"][c][0]]
    bugs = [b for b in results if b != "none"]
    best = max(n_caught, key=n_caught.get)
    # bugs that both gradient checks miss: value and gradient agree, so only (b)-(d) can see them
    past_grad = {b: [SHORT[c] for c in CHECKS[2:] if results[b][c][0]] for b in bugs
                 if not (results[b]["a_gradcheck"][0] or results[b]["a_extreme"][0])}
    print(f"{len(bugs) - len(missed)} of {len(bugs)} planted bugs are caught by at least one check "
          f"({'none missed' if not missed else 'missed: ' + ', '.join(missed)}); the control row is flagged by "
          f"{'no check' if not control else ', '.join(control)}. The most productive check is "
          f"{CHECK_TITLES[best]} ({n_caught[best]} of {len(bugs)} bugs), but "
          + (", ".join(f"{b} (caught by {', '.join(v) or 'nothing'})" for b, v in past_grad.items())
             + " pass both gradient checks" if past_grad else "every bug fails a gradient check")
          + f"; training (d) flags {n_caught['d_training']} of {len(bugs)}.")
    return 0


def main(argv=None):
    return run(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
