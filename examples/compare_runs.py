"""Draw several runs' learning curves on one panel laid out like the paper's Figure 2.

    python examples/compare_runs.py runs/fig2_mnist/aevb_nz20 runs/fig2_mnist/wakesleep_nz20 --out=cmp.png

Each run folder's history.csv is read as it stands (a run still going shows where it is); the
paper's end values for each run's algorithm, dataset and Nz are marked at the right edge.  The
curves are also printed as a table: the bound of every run at each budget it reached.
"""
import argparse
import csv
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npvae import paper, plots  # noqa: E402
from npvae.config import quiet_broken_pipe  # noqa: E402


def read_run(folder):
    """(config dict, history rows) of a run folder; raises ValueError with a one-line reason."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(folder, "history.csv")) as f:
            rows = [(float(r["samples"]), float(r["seconds"]), float(r["train_elbo"]), float(r["test_elbo"]))
                    for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{folder}: not a run folder with a history ({e})") from None
    return config, rows


@quiet_broken_pipe
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders")
    ap.add_argument("--out", required=True, help="the PNG to write")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    curves, marks = {}, {}
    try:
        for folder in args.runs:
            config, rows = read_run(folder)
            alg = config.get("algorithm", "aevb")
            if alg in curves:
                raise ValueError(f"{folder}: a second {alg} run; give one run per algorithm")
            curves[alg] = rows
            value = paper.fig2_value(alg, config["dataset"], config["nz"])
            if value:
                marks[alg] = value
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plots.plot_comparison(curves, args.out, marks, args.title)
    budgets = sorted({int(r[0]) for rows in curves.values() for r in rows})
    print("| samples | " + " | ".join(f"{plots.LABELS.get(a, a)} train | test" for a in curves) + " |")
    print("| ---: |" + " ---: | ---: |" * len(curves))
    for b in budgets:
        cells = []
        for rows in curves.values():
            row = next((r for r in rows if int(r[0]) == b), None)
            cells.append(f"{row[2]:.2f} | {row[3]:.2f}" if row else " | ")
        print(f"| {b:,} | " + " | ".join(cells) + " |")
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
