"""Comparison report: fastconv.conv2d per algorithm vs PyTorch CPU (2 threads) and SciPy,
all measured in this one process. Prints a Markdown table (times are best-of-N, ms).

    python bench/report.py [--rounds 3] [--repeat 5] [--json out.json]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--cases", nargs="*", default=list(LAYERS))
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        torch = None
    rows = {}
    # round-robin: every candidate is timed once per round and keeps its best round, so a
    # burst of load on this shared machine cannot favour one column
    for rnd in range(args.rounds):
        for name in args.cases:
            x, w, b, kw = make(name)
            r = rows.setdefault(name, {})
            t = {}
            for algo in ("auto",) + tuple(a for a in ALGORITHMS if a != "auto"):
                t[algo] = best_time(lambda: fc.conv2d(x, w, b, algorithm=algo, **kw), args.repeat)
            if torch is not None:
                tx, tw, tb = map(torch.from_numpy, (x, w, b))
                with torch.no_grad():
                    t["torch"] = best_time(lambda: torch.nn.functional.conv2d(tx, tw, tb, **kw),
                                           args.repeat)
            for k, v in t.items():
                r[k] = min(v, r.get(k, float("inf")))
            r["chosen"] = fc.choose_algorithm(x.shape, w.shape, **kw).algorithm
            print(rnd, name, {k: (f"{v * 1e3:.2f}" if isinstance(v, float) else v)
                              for k, v in r.items()}, file=sys.stderr, flush=True)
    cpu = fc.dispatch._cpu_model()
    print(f"\nMachine: {cpu}, {os.cpu_count()} cores, numba threads "
          f"{__import__('numba').get_num_threads()}, Python {platform.python_version()}"
          + (f", torch {torch.__version__} (2 threads)" if torch else ""))
    hdr = "| layer | direct | im2col | fft | auto (pick) | torch | auto/torch | auto/best | GFLOP/s (auto) |"
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for name, r in rows.items():
        best = min(r[a] for a in ("direct", "im2col", "fft"))
        tt = r.get("torch")
        print(f"| {name} | {r['direct'] * 1e3:.2f} | {r['im2col'] * 1e3:.2f} | {r['fft'] * 1e3:.2f} | "
              f"{r['auto'] * 1e3:.2f} ({r['chosen']}) | {tt * 1e3:.2f} | {r['auto'] / tt:.2f} | "
              if tt else f"| {name} | ... | n/a | ", end="")
        print(f"{r['auto'] / best:.2f} | {flops(name) / r['auto'] / 1e9:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": cpu, "results": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
