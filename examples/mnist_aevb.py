"""AEVB on MNIST, the paper's model (§5): 500 tanh hidden units, Nz = 20, Bernoulli decoder,
Adagrad (step 0.01, 10 warm-up minibatches), M = 100, L = 1, init N(0, 0.01^2), prior on weights.

    python examples/mnist_aevb.py                      # default budget (about 6 minutes here)
    python examples/mnist_aevb.py --smoke              # a few seconds: checks that everything runs
    python examples/mnist_aevb.py --nz=2 --samples=1e6 --out=runs/mnist_nz2
    python examples/mnist_aevb.py --resume runs/mnist --samples=1e7   # continue a run to a larger budget
    python examples/mnist_aevb.py --algorithm=wakesleep --out=runs/mnist_ws   # the paper's baseline (Fig. 2)
    python examples/mnist_aevb.py --help               # every option, its default and meaning

Any field of npvae.config.TrainConfig can be overridden as --key=value.  A folder that holds a run
is never replaced silently: continue it with --resume, or start over with --overwrite.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae.train import TrainConfig, main  # noqa: E402

DEFAULTS = TrainConfig(dataset="mnist", binarize="dynamic", nz=20, hidden=(500,), samples=3_000_000,
                       out="runs/mnist")
SMOKE = dict(samples=20_000, eval_max=1000, out="runs/mnist_smoke", checkpoint_seconds=5.0)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS, SMOKE))
