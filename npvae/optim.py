"""Optimizers with one interface: ``opt.update(params, grads)`` changes ``params`` in place.

State is kept per parameter, keyed like ``params``, and can be saved and
restored as a flat dict of arrays (``state_dict`` / ``load_state_dict``), so
a checkpoint needs no pickle.  Every optimizer *minimizes*: pass gradients of
a loss (``VAE.loss_and_grads`` gives d(-elbo)).
"""
import numpy as np


class Optimizer:
    """Base class.  Subclasses name their per-parameter state arrays in ``slots``
    and implement ``_step(name, p, g)``."""
    slots = ()

    def __init__(self, lr):
        if not (isinstance(lr, (int, float, np.floating)) and np.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive finite number, got {lr!r}")
        self.lr = float(lr)
        self.t = 0                                         # number of update() calls so far
        self.state = {slot: {} for slot in self.slots}     # slot -> {param name -> array}

    def update(self, params, grads):
        """One step: params[k] -= ... for every k in params (in place)."""
        if params.keys() != grads.keys():
            raise ValueError(f"params and grads have different keys: {sorted(set(params) ^ set(grads))}")
        self.t += 1
        for name, p in params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name} has shape {g.shape}, parameter {p.shape}")
            for slot in self.slots:
                if name not in self.state[slot]:
                    self.state[slot][name] = np.zeros_like(p)
            self._step(name, p, g)

    def _step(self, name, p, g):
        raise NotImplementedError

    def state_dict(self):
        """Flat {key: ndarray}: 't' and '<slot>/<param name>'."""
        d = {"t": np.array(self.t)}
        for slot, arrays in self.state.items():
            for name, a in arrays.items():
                d[f"{slot}/{name}"] = a.copy()
        return d

    def load_state_dict(self, d):
        self.t = int(d["t"])
        self.state = {slot: {} for slot in self.slots}
        for key, a in d.items():
            if key == "t":
                continue
            slot, _, name = key.partition("/")
            if slot not in self.state:
                raise ValueError(f"state entry {key!r} does not belong to {type(self).__name__}")
            self.state[slot][name] = np.array(a, copy=True)


class SGD(Optimizer):
    """Gradient descent with (heavy-ball) momentum:  v <- m v - lr g;  p <- p + v."""
    slots = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)

    def _step(self, name, p, g):
        v = self.state["velocity"][name]
        v *= self.momentum
        v -= self.lr * g
        p += v


class Adagrad(Optimizer):
    """Adagrad as the paper used it (§5): a global step size and per-parameter
    accumulated squared gradients,  p <- p - lr g / sqrt(sum g^2 + eps).

    warmup: the first ``warmup`` calls only accumulate g^2 and leave p alone, so
    the very first real step is not divided by a single noisy gradient (the
    authors' code did this).  eps sits inside the square root, as there.
    """
    slots = ("sum_sq",)

    def __init__(self, lr=0.01, warmup=0, eps=1e-8):
        super().__init__(lr)
        if int(warmup) != warmup or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.warmup, self.eps = int(warmup), float(eps)

    def _step(self, name, p, g):
        sum_sq = self.state["sum_sq"][name]
        sum_sq += g * g
        if self.t > self.warmup:
            p -= self.lr * g / np.sqrt(sum_sq + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction."""
    slots = ("m", "v")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(lr)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {beta1}, {beta2}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def _step(self, name, p, g):
        m, v = self.state["m"][name], self.state["v"][name]
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * g * g
        m_hat = m / (1.0 - self.beta1 ** self.t)
        v_hat = v / (1.0 - self.beta2 ** self.t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def has_prior(name, which):
    """Whether the N(0, I) parameter prior (MAP, paper §5) covers parameter `name`:
    which = "weights" (``*.W`` only, as in the authors' code), "all", or "none"."""
    return which == "all" or (which == "weights" and name.endswith(".W"))


OPTIMIZERS = {"adagrad": Adagrad, "adam": Adam, "sgd": SGD}


def make_optimizer(name, **kwargs):
    """Build an optimizer by name ('adagrad', 'adam', 'sgd')."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}") from None
    return cls(**kwargs)
