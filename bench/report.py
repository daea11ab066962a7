"""Comparison report: fastconv.conv2d per algorithm vs PyTorch CPU (2 threads), all
measured in this one process. Prints a Markdown table (times are best-of-N, ms).

    python bench/report.py [--rounds 3] [--repeat 5] [--json out.json] [--plot out.png]
    python bench/report.py --from-json out.json --plot out.png     # replot, time nothing

The chart in the README: ``python bench/report.py --rounds 3 --json
docs/_static/report.json --plot docs/_static/report.png``.
"""
import argparse
import json
import os
import platform
import sys
import time


sys.path.insert(0, os.path.dirname(__file__))
from cases import ALGORITHMS, LAYERS, flops, make  # noqa: E402

import fastconv as fc  # noqa: E402
from fastconv._fileio import atomic_write  # noqa: E402


def best_time(fn, repeat, min_time=0.05):
    fn()  # warm-up: compile, allocate
    best = float("inf")
    t_start = time.perf_counter()
    n = 0
    while n < repeat or (time.perf_counter() - t_start < min_time and n < 50):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def machine(torch=None):
    """The machine line of the table and the chart's title."""
    import numba

    from fastconv._show_config import cpu_model, usable_cores
    return {"cpu": cpu_model(), "cores": usable_cores(),
            "numba_threads": numba.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__ if torch is not None else None}


def measure(cases, rounds, repeat, torch):
    rows = {}
    # round-robin: every candidate is timed once per round and keeps its best round, so a
    # burst of load on this shared machine cannot favour one column
    for rnd in range(rounds):
        for name in cases:
            x, w, b, kw = make(name)
            r = rows.setdefault(name, {})
            t = {}
            # every algorithm that can run the layer (Winograd: 3x3, stride 1 only)
            runs = fc.choose_algorithm(x.shape, w.shape, precision="medium", **kw).estimates
            for algo in ("auto",) + tuple(a for a in ALGORITHMS if a in runs):
                t[algo] = best_time(lambda: fc.conv2d(x, w, b, algorithm=algo, **kw), repeat)
            if torch is not None:
                tx, tw, tb = map(torch.from_numpy, (x, w, b))
                with torch.no_grad():
                    t["torch"] = best_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, **kw),
                                           repeat)
            for k, v in t.items():
                r[k] = min(v, r.get(k, float("inf")))
            r["chosen"] = fc.choose_algorithm(x.shape, w.shape, **kw).algorithm
            print(rnd, name, {k: (f"{v * 1e3:.2f}" if isinstance(v, float) else v)
                              for k, v in r.items()}, file=sys.stderr, flush=True)
    return rows


def print_table(data):
    m = data["machine"]
    if isinstance(m, str):                  # JSON written before the machine details
        m = {"cpu": m}
    print(f"\nMachine: {m['cpu']}, {m.get('cores', '?')} cores, numba threads "
          f"{m.get('numba_threads', '?')}, Python {m.get('python', '?')}"
          + (f", torch {m['torch']} (2 threads)" if m.get("torch") else ""))
    algos = [a for a in ALGORITHMS if a != "auto"]
    hdr = ("| layer | " + " | ".join(algos) + " | auto (pick) | torch | auto/torch | auto/best "
           "| GFLOP/s (auto) | winograd effective GFLOP/s |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for name, r in data["results"].items():
        best = min(r[a] for a in algos if a in r)
        tt = r.get("torch")
        cells = " | ".join(f"{r[a] * 1e3:.2f}" if a in r else "-" for a in algos)
        print(f"| {name} | {cells} | {r['auto'] * 1e3:.2f} ({r['chosen']}) | "
              + (f"{tt * 1e3:.2f} | {r['auto'] / tt:.2f} | " if tt else "n/a | n/a | "), end="")
        # effective: the direct convolution's FLOPs per second (Winograd does fewer)
        wino = f"{flops(name) / r['winograd'] / 1e9:.0f}" if "winograd" in r else "-"
        print(f"{r['auto'] / best:.2f} | {flops(name) / r['auto'] / 1e9:.1f} | {wino} |")


# --- charts (matplotlib, from the bench extra; bench/signal_report.py uses these too) --
def require_matplotlib():
    """matplotlib.pyplot on a file-only backend, or exit with how to install it."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("--plot needs matplotlib: pip install -e '.[bench]' (or pip install matplotlib)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def machine_title(m):
    if isinstance(m, str):
        return m
    return f"{m['cpu']}, {m.get('cores', '?')} cores, numba threads {m.get('numba_threads', '?')}"


def grouped_bars(ax, groups, series, colors, ylabel="ms (log scale)"):
    """Bars of ``series`` ({label: [value or None per group]}) side by side per group, on
    a log axis; a missing value leaves a gap."""
    n = len(series)
    width = 0.8 / n
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g, v in enumerate(values) if v]
        ax.bar(xs, [v for v in values if v], width, label=label, color=colors[i % len(colors)])
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)


def save(fig, ax, path, ncol):
    """The legend (``ax``'s series) under the whole figure, then the file, trimmed to
    its content."""
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, ncol=ncol, loc="upper center",
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    print(f"wrote {path}", file=sys.stderr)


def plot(data, path):
    """One group of bars per layer: each algorithm, auto (its pick above) and PyTorch."""
    plt = require_matplotlib()
    rows = data["results"]
    names = list(rows)
    series = {a: [rows[n][a] * 1e3 if a in rows[n] else None for n in names]
              for a in ALGORITHMS if a != "auto"}
    series["auto"] = [rows[n]["auto"] * 1e3 for n in names]
    if all("torch" in rows[n] for n in names):
        series["PyTorch"] = [rows[n]["torch"] * 1e3 for n in names]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    palette = ["#6baed6", "#74c476", "#9e9ac8", "#fd8d3c", "#fdd0a2", "#bcbddc", "#c7e9c0"]
    colors = palette[:len(series) - 1 - ("PyTorch" in series)] + ["#08519c", "#e6550d"]
    grouped_bars(ax, names, series, colors[:len(series)])
    width = 0.8 / len(series)
    at = list(series).index("auto")
    for g, n in enumerate(names):
        ax.annotate(rows[n]["chosen"], (g + (at - (len(series) - 1) / 2) * width,
                                        rows[n]["auto"] * 1e3), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_title("fastconv.conv2d per algorithm vs PyTorch, float32 forward\n"
                 + machine_title(data["machine"]), fontsize=10)
    save(fig, ax, path, ncol=len(series))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--cases", nargs="*", default=list(LAYERS))
    ap.add_argument("--plot", metavar="FILE", help="draw a chart (PNG, SVG, ...) of the "
                    "times per layer, log scale (needs matplotlib: the bench extra)")
    ap.add_argument("--from-json", metavar="FILE", help="time nothing: print the table and "
                    "draw the chart from a file written by --json")
    args = ap.parse_args()
    if args.plot:
        require_matplotlib()                # fail before minutes of timing, not after
    if args.from_json:
        with open(args.from_json) as fh:
            data = json.load(fh)
    else:
        try:
            import torch
            torch.set_num_threads(2)
        except ImportError:
            torch = None
        unknown = [c for c in args.cases if c not in LAYERS]
        if unknown:
            ap.error(f"--cases: unknown {unknown}; choose from {list(LAYERS)}")
        data = {"machine": machine(torch),
                "results": measure(args.cases, args.rounds, args.repeat, torch)}
    print_table(data)
    if args.json and not args.from_json:
        with atomic_write(args.json, "w") as fh:
            json.dump(data, fh, indent=1)
    if args.plot:
        plot(data, args.plot)


if __name__ == "__main__":
    main()
