"""Numbers read off the paper (Kingma & Welling, 2013, arXiv:1312.6114 v11), in one place.

Training, plots, the sweep and the studies all import them from here.  Values marked [F] in
``../shared/PAPER.md`` were read off the figures: about +-1-2 nats on MNIST, +-30 on Frey Face.
"""

# Figure 2, end of training (~1e8 samples): (dataset, Nz) -> (train, test) average lower bound
# per datapoint.  AEVB and wake-sleep.  [F]
FIG2_AEVB = {
    ("mnist", 3): (-128.0, -133.5), ("mnist", 5): (-115.0, -119.0), ("mnist", 10): (-99.0, -103.5),
    ("mnist", 20): (-97.0, -100.0), ("mnist", 200): (-97.0, -100.0),
    ("frey", 2): (940.0, 880.0), ("frey", 5): (1230.0, 1110.0), ("frey", 10): (1460.0, 1300.0),
    ("frey", 20): (1490.0, 1310.0),
}
FIG2_WAKESLEEP = {
    ("mnist", 3): (-138.5, -137.5), ("mnist", 5): (-121.0, -120.5), ("mnist", 10): (-106.0, -106.0),
    ("mnist", 20): (-103.5, -103.5), ("mnist", 200): (-103.5, -103.5),
    ("frey", 2): (575.0, 575.0), ("frey", 5): (575.0, 575.0), ("frey", 10): (575.0, 575.0),
    ("frey", 20): (575.0, 575.0),
}
FIG2 = {"aevb": FIG2_AEVB, "wakesleep": FIG2_WAKESLEEP}

# Figure 3: estimated marginal log-likelihood, MNIST, Nz = 3, 100 hidden units.
# (algorithm, Ntrain) -> (train, test).  [F]  MCEM at Ntrain = 50000 was still rising.
FIG3 = {
    ("aevb", 1000): (-109.0, -143.0), ("wakesleep", 1000): (-125.5, -145.0), ("mcem", 1000): (-109.0, -141.5),
    ("aevb", 50000): (-131.0, -138.0), ("wakesleep", 50000): (-137.0, -141.0), ("mcem", 50000): (-147.0, -148.5),
}

# §5: "stepsize ... chosen from {0.01, 0.02, 0.1} based on performance on the training set in the
# first few iterations".
LR_CANDIDATES = (0.01, 0.02, 0.1)

# §5, Fig. 2 caption: hidden units per dataset; Fig. 3 uses 100.
HIDDEN = {"mnist": 500, "frey": 200}

# The paper's names (Appendix C) for npvae's parameters.  W here is the paper's matrix transposed
# (applied as h @ W + b, so that a minibatch's rows stay contiguous).
PARAM_TABLE = (
    ("enc.h1.W / enc.h1.b", "W3 / b3", "encoder hidden: h = tanh(x W3 + b3)"),
    ("enc.mu.W / enc.mu.b", "W4 / b4", "mu = h W4 + b4"),
    ("enc.logvar.W / .b", "W5 / b5", "log sigma^2 = h W5 + b5"),
    ("dec.h1.W / dec.h1.b", "W1 / b1", "Bernoulli decoder hidden: tanh(z W1 + b1)"),
    ("dec.logits.W / .b", "W2 / b2", "logits; y = sigmoid(h W2 + b2)"),
    ("dec.h1.W / dec.h1.b", "W3 / b3", "Gaussian decoder hidden (theta's own W3)"),
    ("dec.mu.W / dec.mu.b", "W4 / b4", "mean = sigmoid(h W4 + b4)"),
    ("dec.logvar.W / .b", "W5 / b5", "log sigma^2 = h W5 + b5"),
)


def fig2_value(algorithm, dataset, nz):
    """The paper's Figure 2 end value (train, test) for a cell, or None where the paper has none."""
    return FIG2.get(algorithm, {}).get((dataset, nz))
