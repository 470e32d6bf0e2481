"""npvae: Auto-Encoding Variational Bayes (Kingma & Welling, 2013) in NumPy, every backward pass by hand.

Where to start reading:
    npvae/stochastic.py   the reparameterization node z = mu + sigma * eps and its backward
    npvae/model.py        encoder, decoder, the bound (eq. 6 and 7), forward and backward
    npvae/gradcheck.py    finite-difference checks (python -m npvae.gradcheck)
"""
from .model import VAE, Architecture
from .optim import SGD, Adagrad, Adam, make_optimizer
from .estimators import reconstruction_grads
from .facade import VAEModel

__all__ = ["VAE", "VAEModel", "Architecture", "SGD", "Adagrad", "Adam", "make_optimizer", "reconstruction_grads"]
__version__ = "0.1.0"
