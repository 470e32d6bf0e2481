"""AEVB on Frey Face (§5): 200 tanh hidden units, Nz = 5, Gaussian decoder (sigmoid means),
Adagrad, M = 100, L = 1, init N(0, 0.01^2), prior on weights.  Pixels are ff.T / 256.

    python examples/freyface_aevb.py
    python examples/freyface_aevb.py --smoke
    python examples/freyface_aevb.py --nz=2 --out=runs/frey_nz2     # with the Fig. 4 manifold
    python examples/freyface_aevb.py --algorithm=wakesleep --out=runs/frey_ws

Any field of npvae.config.TrainConfig can be overridden as --key=value (--help lists them).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae.train import TrainConfig, main  # noqa: E402

DEFAULTS = TrainConfig(dataset="frey", nz=5, hidden=(200,), samples=3_000_000, lr=0.02, out="runs/frey")
SMOKE = dict(samples=20_000, out="runs/frey_smoke", checkpoint_seconds=5.0)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS, SMOKE))
