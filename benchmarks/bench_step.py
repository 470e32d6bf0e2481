"""One full AEVB training step of the paper's MNIST model, npvae against the BLAS floor and PyTorch.

    python benchmarks/bench_step.py                 # float64 and float32, ~3 minutes with PyTorch
    python benchmarks/bench_step.py --quick         # under a minute
    python benchmarks/bench_step.py --json out.json

Model and step: 784-500-20 (tanh), Bernoulli decoder, estimator B, M = 100, L = 1, Adagrad
with a prior on the weights.  A step = minibatch gather + noise + forward + backward + update.

Variants, timed in the same run and interleaved in rounds (this machine drifts 5-15% over
minutes, so only ratios measured side by side mean anything):

  npvae           npvae.fast.FastStep (what the examples use)
  floor           the step's own matrix products alone, into preallocated outputs: the BLAS bound
  floor + update  the floor plus the prior + Adagrad pass over all 795k parameters (npvae's fused
                  kernel): the least a step with a serial optimizer update can cost
  torch eager     the same model and step in PyTorch (CPU), torch.optim.Adagrad
  torch compile   the same, forward and backward through torch.compile

PyTorch is optional (``pip install torch==2.13.0``); without it those rows are skipped.
BLAS and PyTorch use 2 threads.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import VAE, Adagrad  # noqa: E402
from npvae.fast import FastStep, adagrad_update  # noqa: E402

X_DIM, H, Z, M, L, N = 784, 500, 20, 100, 1, 50_000
LR, PRIOR = 0.01, 1.0 / N


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


# --------------------------------------------------------------------------- variants

def npvae_step(dtype):
    data = make_data(dtype)
    vae = VAE(X_DIM, Z, H, seed=0, dtype=dtype)
    opt = Adagrad(LR, warmup=0)
    fast = FastStep(vae, opt, M, L, "weights", PRIOR)
    batches, rng = Batches(1), np.random.default_rng(2)

    def step():
        x, eps = fast.load_batch(data, batches.next(), rng)
        fast.step(x, eps)
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
    shapes = [p.shape for p in VAE(X_DIM, Z, H, seed=0, dtype=dtype).params.values()]
    flat = [tuple(rng.standard_normal(int(np.prod(s))).astype(dtype) for _ in range(2)) + (np.zeros(int(np.prod(s)), dtype),)
            for s in shapes]
    t = np.dtype(dtype).type
    lr, eps, prior = t(LR), t(1e-8), t(PRIOR)

    def step():
        products()
        for p, g, sum_sq in flat:
            adagrad_update(p, g, sum_sq, lr, eps, prior, True)
    return step


def torch_step(dtype, compiled):
    import torch

    torch.set_num_threads(2)
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    data = torch.from_numpy(make_data(dtype))
    g = torch.Generator().manual_seed(0)

    def param(*shape):
        return torch.nn.Parameter(0.01 * torch.randn(*shape, generator=g, dtype=tdtype))
    W1, b1, Wmu, bmu, Wlv, blv = param(X_DIM, H), param(H), param(H, Z), param(Z), param(H, Z), param(Z)
    Wd, bd, Wo, bo = param(Z, H), param(H), param(H, X_DIM), param(X_DIM)
    weights, biases = [W1, Wmu, Wlv, Wd, Wo], [b1, bmu, blv, bd, bo]
    opt = torch.optim.Adagrad([{"params": weights, "weight_decay": PRIOR}, {"params": biases}], lr=LR, eps=1e-8)

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

    def step():
        idx = torch.from_numpy(batches.next())
        x = data.index_select(0, idx)
        eps = torch.randn(M, Z, dtype=tdtype)
        opt.zero_grad(set_to_none=False)
        loss = fn(x, eps)
        loss.backward()
        opt.step()
    return step


# --------------------------------------------------------------------------- timing

def run(variants, rounds, steps_per_round):
    times = {k: [] for k in variants}
    for _ in range(rounds):
        for name, step in variants.items():         # interleaved: every round times every variant
            for _ in range(steps_per_round):
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    return {k: np.array(v) * 1e3 for k, v in times.items()}   # milliseconds


def report(dtype_name, t):
    med = {k: float(np.median(v)) for k, v in t.items()}
    print(f"\n{dtype_name}: ms per step (median, p10-p90), samples/s, over {len(next(iter(t.values())))} steps each")
    for k, v in t.items():
        print(f"  {k:<14} {med[k]:7.2f}  ({np.percentile(v, 10):6.2f}-{np.percentile(v, 90):6.2f})"
              f"  {M / med[k] * 1e3:9,.0f} samples/s")
    print(f"  npvae / floor        = {med['npvae'] / med['floor']:.3f}   (target <= 1.15)")
    if "floor + update" in med:
        print(f"  npvae / (floor + update) = {med['npvae'] / med['floor + update']:.3f}"
              f"   (update alone ~ {med['floor + update'] - med['floor']:.2f} ms"
              f" = {(med['floor + update'] - med['floor']) / med['floor']:.0%} of the floor)")
    for peer, target in (("torch eager", 1.3), ("torch compile", 1.1)):
        if peer in med:
            print(f"  {peer} / npvae  = {med[peer] / med['npvae']:.3f}   (throughput ratio; target >= {target})")
    print(f"  seconds per million training samples (npvae): {med['npvae'] * 1e-3 * 1e6 / M:.1f}"
          f"   (paper: 20-40 minutes)")
    return med


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds: under a minute")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--json", default=None, help="write the medians here")
    args = p.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 12)
    per_round = 25 if args.quick else 40

    have_torch = False
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            have_torch = True
        except ImportError:
            print("PyTorch is not installed: timing npvae and the floor only (pip install torch==2.13.0 for the peers)")
    results = {}
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        variants = {"npvae": npvae_step(dtype), "floor": floor_step(dtype), "floor + update": floor_update_step(dtype)}
        if have_torch:
            variants["torch eager"] = torch_step(dtype, compiled=False)
            if not args.no_compile:
                try:
                    step = torch_step(dtype, compiled=True)
                    step()                                   # compile outside the timing
                    variants["torch compile"] = step
                except Exception as e:                       # noqa: BLE001 - report and go on
                    print(f"torch.compile unavailable ({type(e).__name__}: {str(e)[:200]})")
        for step in variants.values():                       # warm-up: JIT, caches, first-touch of buffers
            for _ in range(5):
                step()
        med = report(name, run(variants, rounds, per_round))
        results[name] = {"npvae_ms": med["npvae"], "floor_ms": med["floor"], "floor_update_ms": med["floor + update"],
                         "torch_eager_ms": med.get("torch eager"), "torch_compile_ms": med.get("torch compile")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
