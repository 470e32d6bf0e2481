"""Which MNIST protocol did Figure 2 use?  The same model under each binarization, on one plot.

    # the Figure 2 sweep's run is the dynamic one:
    python examples/protocols.py --samples=1e8 --dtype=float32 --eval_per_decade=10 --dynamic_run=runs/fig2_mnist/aevb_nz20
    python examples/protocols.py --smoke             # the whole pipeline in seconds

The paper does not say how it binarized MNIST.  This sweep trains Figure 2's MNIST model (AEVB,
Nz = 20, 500 hidden units, the paper's optimizer) once per protocol:

    dynamic   a fresh binarization of every minibatch (the Figure 2 sweep's default)
    static    Larochelle's fixed binarized set (models can overfit it: train rises above test)
    none      grey levels as Bernoulli targets, as the authors' 2013 loaders fed them (not a
              proper likelihood of binary data)

Each run lives in its own folder under --out (default runs/protocols): <out>/<protocol>, except
where --dynamic_run (or --static_run, --none_run) puts one elsewhere: the Figure 2 sweep's own
dynamic run need not be trained twice.  Such a run is resumed where it lives (its lock keeps two
sweeps from training it at once) and must be the same run as this sweep's, or it is reported as
failed with the difference; if its protocol is left out of --protocols, it is drawn and
tabulated but not trained (while the Figure 2 sweep trains it):

    python examples/protocols.py --protocols=static,none --dynamic_run=runs/fig2_mnist/aevb_nz20 ...

After every run, and with the progress lines (at most once a minute), the sweep redraws
protocols.png (the curves of every protocol, train solid and test dashed, the paper's Fig. 2 end
values in black; once a run passes 2e7 samples, beside them the same curves from 1e7 on, where they
end a nat or two apart) and protocols_table.md / .csv (each protocol at the budget its run reached,
with train - test beside the paper's gap). Re-running the command skips finished runs, resumes the
others and extends them to a larger --samples; Ctrl-C stops with checkpoints.

Sweep options: --protocols=dynamic,static,none, --nz=20, --algorithm=aevb, and the executor's
and progress options (--jobs, --threads, --scheduler, --tls-*, --status_every, --status) as in
examples/figure2.py.  Any TrainConfig field (--dtype=float32, --seed=1, ...) passes through to every run.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import sweep  # noqa: E402
from npvae.config import ConfigError, TrainConfig, parse_overrides  # noqa: E402

SMOKE = dict(samples=20_000, eval_max=1000, checkpoint_seconds=5.0, out="runs/protocols_smoke")
RUN_OPTIONS = tuple(f"--{p}_run" for p in sweep.PROTOCOLS)


def plan(argv):
    smoke, status, opts, rest, executor = sweep.parse_command(argv, ("--protocols",) + RUN_OPTIONS)
    if any(a.startswith("--binarize=") for a in rest):
        raise ConfigError("the binarization is what this sweep varies: choose among them with --protocols=...")
    base = parse_overrides(rest, sweep.fig2_base("mnist", **{"nz": 20, "out": "runs/protocols", **(SMOKE if smoke else {})}))
    if base.dataset != "mnist":
        raise ConfigError(f"binarization is MNIST's question; got --dataset={base.dataset}")
    protocols = sweep.algorithm_list(opts.get("protocols", ",".join(sweep.PROTOCOLS)), sweep.PROTOCOLS, "--protocols")
    where = {p: opts[f"{p}_run"] for p in sweep.PROTOCOLS if f"{p}_run" in opts}
    # a --X_run whose protocol is not in --protocols is drawn, not trained (another sweep trains it)
    shown = tuple(p for p in sweep.PROTOCOLS if p in protocols or p in where)
    out = base.out
    sweep.protocol_folders(out, shown, where)                      # refuses two protocols in one folder
    specs = sweep.plan_protocols(base, out, protocols, where)
    for spec in specs:
        TrainConfig.from_dict(spec.config).validate()
    return sweep.SweepCommand(
        out, f"protocol sweep {out}: MNIST, Nz {base.nz}, {base.algorithm}, binarize {','.join(protocols)}, "
             f"{base.samples:,} samples per run", specs,
        lambda: sweep.redraw_protocols(out, base, shown, where), os.path.join(out, "protocols.png"),
        executor, base.data_dir or None, status_only=status)


if __name__ == "__main__":
    sys.exit(sweep.command_main(sys.argv[1:], __doc__, "examples/protocols.py", plan))
