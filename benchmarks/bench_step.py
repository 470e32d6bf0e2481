"""One full AEVB training step of the paper's MNIST model, npvae against the BLAS floor, PyTorch and JAX.

    python benchmarks/bench_step.py                 # float64 and float32; a few minutes with both peers
    python benchmarks/bench_step.py --quick         # fewer rounds: ~15 s without the peers; compiling the
                                                    # peers (torch.compile twice per precision) adds ~1 min
    python benchmarks/bench_step.py --peers=none    # npvae and the floors only (also --no-torch, --no-jax)
    python benchmarks/bench_step.py --peers=jax     # or --peers=torch: one peer only
    python benchmarks/bench_step.py --json out.json

Model and step: 784-500-20 (tanh), Bernoulli decoder from logits, estimator B with the analytic KL,
M = 100, L = 1, init N(0, 0.01^2), Adagrad (lr 0.01, eps 1e-8, every step updates: no warm-up)
with the N(0, I) prior on the weights scaled 1/N.  A step = minibatch gather by index + noise +
forward + backward + prior + update.

Variants, timed in the same run and interleaved in rounds (this machine drifts 5-15% over
minutes, so only ratios measured side by side mean anything):

  npvae           npvae.fast.FastStep (a sweep's one-thread jobs use it), with the sparse first layer: the
                  data are 0/1
  npvae 2 threads npvae.fast.TwoThreadStep (what one job on two cores uses, as the examples do by
                  default): the minibatch's halves each run FastStep's pass on their own thread with one
                  BLAS thread, then the two threads share the update
  npvae wake-sleep  npvae.fast.FastWakeSleep, the paper's baseline learner (not a peer: its own row)
  floor           the step's own matrix products alone, into preallocated outputs: the BLAS bound
  floor + update  the floor plus the prior + Adagrad pass over all 795k parameters (npvae's fused
                  kernel): the least a step with a serial optimizer update can cost
  torch eager     the same model and step in PyTorch (CPU), torch.optim.Adagrad with its default
                  implementation (on CPU that is the per-tensor loop: foreach defaults to off there)
  torch compile   the same, forward and backward through torch.compile
  torch compile+fused
                  the same, forward and backward through torch.compile, and
                  torch.optim.Adagrad(fused=True) (one fused kernel for all tensors; CPU has it)
  jax jit         the whole step (gather, noise, forward, grad, prior, Adagrad) as one jax.jit
                  function, params, optimizer state and PRNG key donated (donate_argnums) and
                  passed in and out; the key is split inside the function every step

Optional peers: PyTorch (``pip install torch==2.13.0``) and JAX (``pip install jax``, a CPU build).
A missing peer's rows are skipped with a one-line message.  The peers start from npvae's own
initial parameters (VAE(seed=0)).  PyTorch's Adagrad puts eps outside the square root
(g / (sqrt(s) + eps)); npvae and the JAX step put it inside (g / sqrt(s + eps)), as the paper's
authors did: the same cost either way.

Before timing, every variant that trains is checked once per precision: from the same initial
parameters, on the same minibatches and noise, its loss at each of the first few steps must match
the reference (VAE.loss_and_grads + prior + npvae.Adagrad, with the peer's eps placement) to a
tolerance; a variant that fails is reported, left out of the timing, and the exit status is 1.

Threads: 2 everywhere (the machine has 2 cores).  BLAS: OPENBLAS_NUM_THREADS=2, OMP_NUM_THREADS=2;
PyTorch: torch.set_num_threads(2); JAX: PJRT_NPROC=2 (the size of XLA:CPU's intra-op pool, which
otherwise is the core count) and XLA_FLAGS=--xla_cpu_multi_thread_eigen=true (XLA's default,
stated).  The often-quoted "intra_op_parallelism_threads=N" is a TensorFlow option, not an XLA
flag: XLA rejects it as --intra_op_parallelism_threads and ignores it without the dashes.  Each
variable is only set when the environment does not set it already.  JAX runs with
jax_enable_x64 on and explicit dtypes, so that float64 and float32 both run in one process.

Run it on an otherwise idle machine (the 1-minute load average is printed at start).  With the two
cores oversubscribed, two-threaded OpenBLAS (npvae, the floors) and PyTorch slow down 4-10x (a
thread that spins at a barrier waits for a partner that is not running), XLA's pool about 2x,
so the ratios then say nothing.
"""
import argparse
import json
import os
import sys
import time
from functools import partial

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("PJRT_NPROC", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import VAE, Adagrad, blas  # noqa: E402
from npvae.fast import FastStep, FastWakeSleep, TwoThreadStep  # noqa: E402
from npvae.optim import has_prior  # noqa: E402

try:
    from npvae.kernels import adagrad_update  # noqa: E402
except ImportError:                         # where it lived before the kernels moved to npvae/kernels.py
    from npvae.fast import adagrad_update  # noqa: E402

X_DIM, H, Z, M, L, N = 784, 500, 20, 100, 1, 50_000
LR, EPS, PRIOR = 0.01, 1e-8, 1.0 / N
PEERS = ("torch", "jax")
CHECK_STEPS = 3                             # steps of the loss check, from the initial parameters
CHECK_RTOL = {"float64": 1e-9, "float32": 1e-4}


def make_data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((N, X_DIM)) < 0.13).astype(dtype)        # binary, MNIST's mean pixel


class Batches:
    """Minibatch indices from epoch permutations, as in training."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.perm, self.pos = self.rng.permutation(N), 0

    def next(self):
        if self.pos + M > N:
            self.perm, self.pos = self.rng.permutation(N), 0
        self.pos += M
        return self.perm[self.pos - M:self.pos]


def initial_params(dtype):
    """The parameters every training variant starts from: npvae's own initialization."""
    return VAE(X_DIM, Z, H, seed=0, dtype=dtype).params


# --------------------------------------------------------------------------- variants
# A training variant is a step() callable; step.check(idx, eps) runs one step on the given
# minibatch indices and noise (M, Z) instead of its own and returns the loss before the update.

def npvae_step(dtype, data, two_threads=False):
    """npvae's AEVB step: FastStep, or with two_threads TwoThreadStep (the same draws, the same checks)."""
    vae = VAE(X_DIM, Z, H, seed=0, dtype=dtype)
    opt = Adagrad(LR, warmup=0, eps=EPS)
    if two_threads:
        fast = TwoThreadStep(vae, opt, M, "weights", PRIOR, binary=True)
    else:
        fast = FastStep(vae, opt, M, L, "weights", PRIOR, binary=True)    # the data are 0/1: the sparse first layer
    batches, rng = Batches(1), np.random.default_rng(2)

    def step():
        x, eps = fast.load_batch(data, batches.next(), rng)
        fast.step(x, eps)

    def check(idx, eps):
        x, _ = fast.load_batch(data, idx)
        return fast.step(x, eps[None].astype(dtype), want_loss=True)[0]
    step.check = check
    return step


def wakesleep_step(dtype, data):
    """npvae's wake-sleep step (FastWakeSleep): gather, wake (decoder update), dreams, sleep (encoder update)."""
    vae = VAE(X_DIM, Z, H, seed=0, dtype=dtype)
    ws = FastWakeSleep(vae, Adagrad(LR, warmup=0, eps=EPS), Adagrad(LR, warmup=0, eps=EPS), M, "weights", PRIOR,
                       binary=True)
    batches, rng = Batches(1), np.random.default_rng(2)

    def step():
        ws.step(data, batches.next(), rng)
    return step


def floor_step(dtype):
    """Exactly the matrix products of FastStep.loss_and_grads, same shapes, same (transposed) operands."""
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(dtype)     # noqa: E731
    x, W1, Wmu, Wlv, Wd, Wo = r(M, X_DIM), r(X_DIM, H), r(H, Z), r(H, Z), r(Z, H), r(H, X_DIM)
    h, mu, lv, z, hd, lo = r(M, H), r(M, Z), r(M, Z), r(M, Z), r(M, H), r(M, X_DIM)
    dlo, dhd, dz, dmu, dlv, dh, tmp = r(M, X_DIM), r(M, H), r(M, Z), r(M, Z), r(M, Z), r(M, H), r(M, H)
    gW1, gWmu, gWlv, gWd, gWo = r(X_DIM, H), r(H, Z), r(H, Z), r(Z, H), r(H, X_DIM)
    mm = np.matmul

    def step():
        mm(x, W1, out=h)
        mm(h, Wmu, out=mu)
        mm(h, Wlv, out=lv)
        mm(z, Wd, out=hd)
        mm(hd, Wo, out=lo)
        mm(hd.T, dlo, out=gWo)
        mm(dlo, Wo.T, out=dhd)
        mm(z.T, dhd, out=gWd)
        mm(dhd, Wd.T, out=dz)
        mm(h.T, dmu, out=gWmu)
        mm(h.T, dlv, out=gWlv)
        mm(dmu, Wmu.T, out=dh)
        mm(dlv, Wlv.T, out=tmp)
        mm(x.T, dh, out=gW1)
    return step


def floor_update_step(dtype):
    """The floor's products, then the update npvae runs after them: sqrt and divide per parameter
    (divider-bound, ~5 cycles per float64 element here), which no arrangement of the element-wise
    work around the products removes."""
    products = floor_step(dtype)
    rng = np.random.default_rng(1)
    shapes = [p.shape for p in initial_params(dtype).values()]
    flat = [tuple(rng.standard_normal(int(np.prod(s))).astype(dtype) for _ in range(2)) + (np.zeros(int(np.prod(s)), dtype),)
            for s in shapes]
    t = np.dtype(dtype).type
    lr, eps, prior = t(LR), t(EPS), t(PRIOR)

    def step():
        products()
        for p, g, sum_sq in flat:
            adagrad_update(p, g, sum_sq, lr, eps, prior, True)
    return step


def torch_step(dtype, data, compiled, fused=False):
    import torch

    torch.set_num_threads(2)
    tdata = torch.from_numpy(data)                            # shares the array: no copy
    P = {name: torch.nn.Parameter(torch.from_numpy(p.copy())) for name, p in initial_params(dtype).items()}
    W1, b1, Wmu, bmu, Wlv, blv = (P[k] for k in ("enc.h1.W", "enc.h1.b", "enc.mu.W", "enc.mu.b",
                                                 "enc.logvar.W", "enc.logvar.b"))
    Wd, bd, Wo, bo = (P[k] for k in ("dec.h1.W", "dec.h1.b", "dec.logits.W", "dec.logits.b"))
    weights = [p for k, p in P.items() if has_prior(k, "weights")]
    biases = [p for k, p in P.items() if not has_prior(k, "weights")]
    opt = torch.optim.Adagrad([{"params": weights, "weight_decay": PRIOR}, {"params": biases}], lr=LR, eps=EPS,
                              fused=True if fused else None)

    def loss_fn(x, eps):
        h = torch.tanh(x @ W1 + b1)
        mu, logvar = h @ Wmu + bmu, torch.clamp(h @ Wlv + blv, -30.0, 30.0)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = torch.tanh(z @ Wd + bd) @ Wo + bo
        rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / M
        kl = 0.5 * (mu * mu + torch.expm1(logvar) - logvar).sum() / M
        return rec + kl

    fn = torch.compile(loss_fn) if compiled else loss_fn
    batches = Batches(1)

    def train(idx, eps):
        x = tdata.index_select(0, idx)
        opt.zero_grad(set_to_none=False)
        loss = fn(x, eps)
        loss.backward()
        opt.step()
        return loss

    def step():
        train(torch.from_numpy(batches.next()), torch.randn(M, Z, dtype=tdata.dtype))

    def check(idx, eps):
        return train(torch.from_numpy(idx), torch.from_numpy(eps.astype(dtype))).item()
    step.check = check
    return step


def import_jax():
    import jax
    jax.config.update("jax_enable_x64", True)    # before any array: float64 exists, dtypes are explicit
    return jax


def jax_step(dtype, data):
    jax = import_jax()
    jnp = jax.numpy
    jdtype = jnp.dtype(dtype)
    jdata = jax.device_put(data)
    params = {k: jnp.asarray(p) for k, p in initial_params(dtype).items()}
    state = [params, {k: jnp.zeros_like(p) for k, p in params.items()}, jax.random.key(0)]   # params, sum_sq, key
    prior = {k: has_prior(k, "weights") for k in params}
    del params                                    # donated by the first step: only state holds them

    def loss_fn(p, x, eps):
        h = jnp.tanh(x @ p["enc.h1.W"] + p["enc.h1.b"])
        mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
        logvar = jnp.clip(h @ p["enc.logvar.W"] + p["enc.logvar.b"], -30.0, 30.0)
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = jnp.tanh(z @ p["dec.h1.W"] + p["dec.h1.b"]) @ p["dec.logits.W"] + p["dec.logits.b"]
        # -log Bernoulli(x | sigmoid(logits)) = max(l, 0) - x l + log1p(exp(-|l|))
        rec = jnp.sum(jnp.maximum(logits, 0) - x * logits + jnp.log1p(jnp.exp(-jnp.abs(logits)))) / M
        kl = 0.5 * jnp.sum(mu * mu + jnp.expm1(logvar) - logvar) / M
        return rec + kl

    def train(p, s, data, idx, eps):
        x = jnp.take(data, idx, axis=0, mode="clip")
        loss, g = jax.value_and_grad(loss_fn)(p, x, eps)
        new_p, new_s = {}, {}
        for k in p:                               # Python floats are weakly typed: float32 stays float32
            gk = g[k] + PRIOR * p[k] if prior[k] else g[k]
            new_s[k] = s[k] + gk * gk
            new_p[k] = p[k] - LR * gk / jnp.sqrt(new_s[k] + EPS)
        return new_p, new_s, loss

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def jit_step(p, s, key, data, idx):
        key, sub = jax.random.split(key)
        p, s, loss = train(p, s, data, idx, jax.random.normal(sub, (M, Z), jdtype))
        return p, s, key, loss

    @partial(jax.jit, donate_argnums=(0, 1))
    def jit_step_given_noise(p, s, data, idx, eps):
        return train(p, s, data, idx, eps)

    batches = Batches(1)

    def step():
        p, s, key, _ = jit_step(*state, jdata, batches.next())
        state[:] = p, s, key
        jax.block_until_ready((p, s))             # dispatch is asynchronous: time the work

    def check(idx, eps):
        p, s, loss = jit_step_given_noise(state[0], state[1], jdata, idx, jnp.asarray(eps, jdtype))
        state[0], state[1] = p, s
        return float(loss)
    step.check = check
    return step


# --------------------------------------------------------------------------- the loss check

class AdagradEpsOutside(Adagrad):
    """npvae's Adagrad with PyTorch's eps placement: p -= lr g / (sqrt(sum g^2) + eps)."""

    def _step(self, name, p, g):
        sum_sq = self.state["sum_sq"][name]
        sum_sq += g * g
        if self.t > self.warmup:
            p -= self.lr * g / (np.sqrt(sum_sq) + self.eps)


def check_inputs():
    batches, rng = Batches(7), np.random.default_rng(8)
    return [(batches.next().copy(), rng.standard_normal((M, Z))) for _ in range(CHECK_STEPS)]


def reference_losses(dtype, data, inputs, eps_outside=False):
    """The readable reference: VAE.loss_and_grads, the prior on the weights, npvae.Adagrad."""
    vae = VAE(X_DIM, Z, H, seed=0, dtype=dtype)
    opt = (AdagradEpsOutside if eps_outside else Adagrad)(LR, warmup=0, eps=EPS)
    losses = []
    for idx, eps in inputs:
        loss, grads = vae.loss_and_grads(data[idx], eps[None].astype(dtype))
        for name, p in vae.params.items():
            if has_prior(name, "weights"):
                grads[name] += PRIOR * p
        opt.update(vae.params, grads)
        losses.append(loss)
    return np.array(losses)


def check_variant(name, step, dtype, inputs, references, t0):
    """Run step.check on the check inputs; compare with the reference losses.  Returns True when they agree.
    t0: when the variant's construction began (the time printed includes any compilation)."""
    ref = references["torch" if name.startswith("torch") else "npvae"]
    got = np.array([step.check(idx, eps) for idx, eps in inputs])
    rel = float(np.max(np.abs(got - ref) / np.abs(ref)))
    tol = CHECK_RTOL[np.dtype(dtype).name]
    ok = bool(np.isfinite(got).all() and rel <= tol)
    print(f"  {name:<31} {' '.join(f'{v:.6f}' for v in got)}   max rel diff {rel:.1e}"
          f"  {'ok' if ok else 'MISMATCH'} (tol {tol:g})  [set up and checked in {time.perf_counter() - t0:.1f} s]")
    return ok


# --------------------------------------------------------------------------- timing

PAUSE_S = 0.25    # untimed, before each variant's round: the previous variant's idle threads (OpenBLAS's
                  # workers, OpenMP's, XLA's pool) spin for up to ~0.1 s before they sleep, and would
                  # otherwise take a core from the next variant's first steps


def run(variants, rounds, steps_per_round):
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for name, step in variants.items():         # interleaved: every round times every variant
            time.sleep(PAUSE_S)
            for _ in range(steps_per_round):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    return {k: np.array(v) * 1e3 for k, v in times.items()}   # milliseconds


# issue 9: npvae >= 1.25 x the fastest peer's throughput
PEER_TARGETS = {"torch eager": 1.25, "torch compile": 1.25, "torch compile+fused": 1.25, "jax jit": 1.25}


def report(dtype_name, t):
    med = {k: float(np.median(v)) for k, v in t.items()}
    print(f"\n{dtype_name}: ms per step (median, p10-p90), samples/s, over {len(next(iter(t.values())))} steps each")
    for k, v in t.items():
        print(f"  {k:<20} {med[k]:7.2f}  ({np.percentile(v, 10):6.2f}-{np.percentile(v, 90):6.2f})"
              f"  {M / med[k] * 1e3:9,.0f} samples/s")
    print(f"  npvae / floor        = {med['npvae'] / med['floor']:.3f}   (stretch target <= 1.05)")
    two = "npvae 2 threads"
    if two in med:
        print(f"  npvae 2 threads / floor = {med[two] / med['floor']:.3f};  npvae / npvae 2 threads = "
              f"{med['npvae'] / med[two]:.3f}   (throughput ratio of the two-thread step to the serial one)")
    if "npvae wake-sleep" in med:
        print(f"  wake-sleep / AEVB    = {med['npvae wake-sleep'] / med['npvae']:.3f}   (npvae's two steps; target <= 1.3)")
    if "floor + update" in med:
        print(f"  npvae / (floor + update) = {med['npvae'] / med['floor + update']:.3f}"
              f"   (update alone ~ {med['floor + update'] - med['floor']:.2f} ms"
              f" = {(med['floor + update'] - med['floor']) / med['floor']:.0%} of the floor)")
    for peer, target in PEER_TARGETS.items():
        if peer in med:
            goal = f"; target >= {target}" if target else ""
            print(f"  {peer + ' / npvae':<28} = {med[peer] / med['npvae']:.3f}"
                  f"   (throughput ratio: how many times faster npvae is{goal})")
            if two in med:
                print(f"  {peer + ' / npvae 2 threads':<38} = {med[peer] / med[two]:.3f}")
    print(f"  seconds per million training samples (npvae): {med['npvae'] * 1e-3 * 1e6 / M:.1f}"
          f"   (paper: 20-40 minutes)")
    if two in med:
        print(f"  seconds per million training samples (npvae 2 threads): {med[two] * 1e-3 * 1e6 / M:.1f}"
              f"   (target <= 40 in float32)")
    return med


def available_peers(args):
    wanted = set(PEERS) if args.peers == "all" else set() if args.peers == "none" else set(args.peers.split(","))
    unknown = wanted - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peer(s) {sorted(unknown)}: --peers takes all, none or a comma list of {PEERS}")
    if args.no_torch:
        wanted.discard("torch")
    if args.no_jax:
        wanted.discard("jax")
    have = set()
    if "torch" in wanted:
        try:
            import torch
            have.add("torch")
            print(f"PyTorch {torch.__version__}")
        except ImportError:
            print("torch not installed: pip install torch==2.13.0; skipping the PyTorch rows")
    if "jax" in wanted:
        try:
            jax = import_jax()
            have.add("jax")
            print(f"JAX {jax.__version__} on {jax.devices()[0].platform}"
                  f" (PJRT_NPROC={os.environ.get('PJRT_NPROC')}, XLA_FLAGS={os.environ.get('XLA_FLAGS')!r})")
        except ImportError:
            print("jax not installed: pip install jax; skipping the JAX rows")
    return have


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--peers", default="all", help="optional peers to time: all (default), none, or a comma list "
                                                   "of torch,jax; those not installed are skipped")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--no-jax", action="store_true", help="skip JAX even when installed")
    p.add_argument("--no-compile", action="store_true", help="skip the two torch.compile rows")
    p.add_argument("--json", default=None, help="write the medians here")
    args = p.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 12)
    per_round = 25 if args.quick else 40

    load = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load:.2f}"
          + ("   -- other jobs are running: the timings and ratios are not reliable (two-thread BLAS"
             " degrades far more than XLA's pool when the cores are oversubscribed)" if load > 1.0 else ""))
    peers = available_peers(args)
    results, failed = {}, []
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        data = make_data(dtype)
        builders = {"npvae": lambda: npvae_step(dtype, data)}
        if blas.available():
            builders["npvae 2 threads"] = lambda: npvae_step(dtype, data, two_threads=True)
        else:
            print("NumPy's BLAS thread count cannot be set here (npvae.blas): no 'npvae 2 threads' row")
        if "torch" in peers:
            builders["torch eager"] = lambda: torch_step(dtype, data, compiled=False)
            if not args.no_compile:
                builders["torch compile"] = lambda: torch_step(dtype, data, compiled=True)
                builders["torch compile+fused"] = lambda: torch_step(dtype, data, compiled=True, fused=True)
        if "jax" in peers:
            builders["jax jit"] = lambda: jax_step(dtype, data)

        # the loss check, once per precision before any timing; it also compiles the compiled peers
        inputs = check_inputs()
        references = {"npvae": reference_losses(dtype, data, inputs)}
        if "torch" in peers:
            references["torch"] = reference_losses(dtype, data, inputs, eps_outside=True)
        print(f"\n{name}: loss at steps 1-{CHECK_STEPS} from the same parameters, minibatches and noise")
        for ref, label in (("npvae", "eps inside the sqrt"), ("torch", "eps outside, as torch")):
            if ref in references:
                print(f"  reference ({label:<21}) {' '.join(f'{v:.6f}' for v in references[ref])}")
        trained = {}
        for vname, build in builders.items():
            try:
                t0 = time.perf_counter()
                step = build()
                ok = check_variant(vname, step, dtype, inputs, references, t0)
            except Exception as e:                   # noqa: BLE001 - a peer that cannot run: report and go on
                if vname == "npvae":
                    raise
                print(f"  {vname} unavailable ({type(e).__name__}: {str(e)[:200]})")
                continue
            if ok:
                trained[vname] = step
            else:
                failed.append(f"{vname} {name}")
        if "npvae" not in trained:
            print(f"\nnpvae itself failed the loss check ({name}): not timing anything")
            return 1
        two_thread = {"npvae 2 threads": trained.pop("npvae 2 threads")} if "npvae 2 threads" in trained else {}
        variants = {"npvae": trained.pop("npvae"), **two_thread, "npvae wake-sleep": wakesleep_step(dtype, data),
                    "floor": floor_step(dtype), "floor + update": floor_update_step(dtype), **trained}
        for step in variants.values():                       # warm-up: JIT, caches, first-touch of buffers
            for _ in range(5):
                step()
        med = report(name, run(variants, rounds, per_round))
        results[name] = {"npvae_ms": med["npvae"], "npvae_two_thread_ms": med.get("npvae 2 threads"),
                         "wakesleep_ms": med["npvae wake-sleep"], "floor_ms": med["floor"],
                         "floor_update_ms": med["floor + update"],
                         "torch_eager_ms": med.get("torch eager"), "torch_compile_ms": med.get("torch compile"),
                         "torch_compile_fused_ms": med.get("torch compile+fused"), "jax_jit_ms": med.get("jax jit")}
        del variants, trained, builders, step, data           # free this precision's arrays
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if failed:
        print(f"\nFAILED the loss check (not timed): {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
