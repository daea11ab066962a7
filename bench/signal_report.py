"""fastconv.signal vs scipy.signal, measured in this one process; prints a Markdown table.

    python bench/signal_report.py [--repeat 9] [--quick] [--json out.json] [--plot out.png]
    python bench/signal_report.py --from-json out.json --plot out.png   # replot, time nothing
    python bench/signal_report.py --fit      # refit fastconv/signal/_cost.py's constants
    python bench/signal_report.py --fit --fit-logs a.txt b.txt   # best of saved fit runs

Cases (from the issue): a 1024x1024 image, mode 'same', kernels k = 3, 5, 7, 15, 31, 63,
fastconv.signal.convolve2d against the fastest of scipy.signal.convolve2d / fftconvolve /
oaconvolve; a 10**6-sample signal with a 101-tap filter, fastconv.signal.convolve against
the fastest of scipy.signal.convolve(method='direct') / fftconvolve / oaconvolve; float64
and float32. The machine is shared, so each case runs its candidates round-robin in
blocks of BLOCK calls (``--block``), drops each block's first call and keeps each one's
best time (the least disturbed run); ratios compare times of one run.
GFLOP/s counts the direct method's 2 * outputs * taps flops, whatever method ran. A
second table times the direct kernel alone, for the kernel owners.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time

import numpy as np
import scipy.signal as ss

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))
from fastconv import signal as fs  # noqa: E402
from fastconv._fileio import atomic_write  # noqa: E402

IMAGE_KERNELS = (3, 5, 7, 15, 31, 63)
# issue 14's targets, float64: our time / the fastest SciPy method's, at most
TARGET = {3: 0.05, 5: 0.05, 7: 0.05, 15: 0.3, 31: 0.5, 63: 0.5}
TARGET_1D = 0.15
PEAK_GFLOPS = 95.0   # float64 FMA peak of the 2-core development machine (issue 14)
SCIPY_DIRECT_LIMIT = 2.0e9      # skip scipy.signal.convolve2d above this many multiply-adds


def image_case(k, dtype):
    rng = np.random.default_rng(k)
    return (rng.standard_normal((1024, 1024)).astype(dtype),
            rng.standard_normal((k, k)).astype(dtype))


def signal_case(dtype, n=10 ** 6, taps=101):
    rng = np.random.default_rng(taps)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(taps).astype(dtype)


def best_time(fn, repeat, min_time=0.3, max_n=60):
    """Best wall time of ``fn`` over at least ``repeat`` runs (more while under
    ``min_time`` seconds in total), after one warm-up run."""
    fn()
    best, n, start = math.inf, 0, time.perf_counter()
    while n < repeat or (time.perf_counter() - start < min_time and n < max_n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def scipy_candidates(x, h, image):
    cands = {"fftconvolve": lambda: ss.fftconvolve(x, h, "same"),
             "oaconvolve": lambda: ss.oaconvolve(x, h, "same")}
    if x.size * h.size <= SCIPY_DIRECT_LIMIT:
        if image:
            cands["convolve2d"] = lambda: ss.convolve2d(x, h, "same")
        else:
            cands["convolve(direct)"] = lambda: ss.convolve(x, h, "same", method="direct")
    return cands


BLOCK = 3     # calls per block; each block's first call is not counted


def best_times(fns, repeat, block=None, pause=0.0):
    """Best wall time of each function, running them round-robin in blocks of ``block``
    calls (``repeat`` rounds after a warm-up) so that a change in the machine's load hits
    all of them alike; each block's first call is dropped: it pays for what the previous
    block (another library) left in the caches, which one call of A then one of B would
    charge to every call. ``pause`` seconds of sleep before each block let the previous
    block's worker threads stop spinning (PyTorch's OpenMP workers spin for milliseconds
    after each op, longer than a block of sub-millisecond calls: every call of the next
    block would share the cores with them)."""
    block = BLOCK if block is None else block
    best = dict.fromkeys(fns, math.inf)
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            if pause:
                time.sleep(pause)
            for i in range(block):
                t0 = time.perf_counter()
                fn()
                if i or block == 1:
                    best[name] = min(best[name], time.perf_counter() - t0)
    return best


def run_case(name, x, h, image, repeat):
    """Our default call and each of our methods, against SciPy's candidates, in one
    round-robin; SciPy's direct method (up to seconds per call) is timed separately."""
    ours = {"ours": (lambda: fs.convolve2d(x, h, "same")) if image else
            (lambda: fs.convolve(x, h, "same"))}
    for m in ("direct", "fft", "oa"):
        if m != "direct" or x.size * h.size <= 4e8:
            ours[m] = lambda m=m: fs.convolve(x, h, "same", method=m)
    cands = scipy_candidates(x, h, image)
    slow = {k: v for k, v in cands.items() if k in ("convolve2d", "convolve(direct)")}
    times = best_times({**ours, **{k: v for k, v in cands.items() if k not in slow}}, repeat)
    for label, fn in slow.items():
        times[label] = best_time(fn, 1 if x.size * h.size > 5e7 else 3, min_time=0)
    scipy_times = {k: times[k] for k in cands}
    best_label = min(scipy_times, key=scipy_times.get)
    t_ours = times["ours"]
    flops = 2.0 * x.size * h.size
    return {"case": name, "dtype": str(x.dtype), "method": fs.choose_conv_method(x, h, "same"),
            "ours_ms": t_ours * 1e3, "gflops": flops / t_ours / 1e9, "scipy_best": best_label,
            "scipy_ms": scipy_times[best_label] * 1e3,
            "scipy_all_ms": {k: v * 1e3 for k, v in scipy_times.items()},
            "ratio": scipy_times[best_label] / t_ours,
            "time_ratio": t_ours / scipy_times[best_label],
            "per_method_ms": {k: times[k] * 1e3 for k in ours if k != "ours"}}


def kernel_rows(repeat, dtypes=("float64", "float32"), kernels=(3, 5, 7, 15, 31)):
    """The engine's direct kernel alone on the padded image (what 'same' mode runs; one
    channel: the stencil kernel), the 1-D signal on the stencil kernel, and the padding
    copy, for the kernel owners."""
    from fastconv.cpu import engine as _engine
    from fastconv.signal import _core as core
    rows = []
    for dtype in dtypes:
        for k in kernels:
            x, h = image_case(k, dtype)
            pads = ((k // 2, (k - 1) // 2),) * 2
            xs = x.reshape((1, 1) + x.shape)
            xp = core.pad(xs, pads, "fill", 0).reshape((1, 1, 1) + (1024 + k - 1,) * 2)
            w = np.ascontiguousarray(h[::-1, ::-1]).reshape(1, 1, 1, k, k)
            t = best_times({
                "kernel": lambda: _engine.forward(xp, w, None, (1, 1, 1), (1, 1, 1), 1,
                                                  _engine.DIRECT),
                "pad": lambda: core.pad(xs, pads, "fill", 0)}, repeat)
            rows.append({"dtype": dtype, "k": k, "kernel_ms": t["kernel"] * 1e3,
                         "gflops": 2.0 * x.size * h.size / t["kernel"] / 1e9,
                         "pad_ms": t["pad"] * 1e3})
        # the 1-D case: the stencil kernel's one-row tile on the padded signal
        from fastconv.cpu.stencil import stencil2d
        x, h = signal_case(dtype)
        m = h.size
        pads = (((m - 1) // 2, m // 2),)
        xs = x.reshape(1, 1, -1)
        xp = core.pad(xs, pads, "fill", 0).reshape(1, 1, 1, -1)
        w = np.ascontiguousarray(h[::-1]).reshape(1, 1, m)
        t = best_times({
            "kernel": lambda: stencil2d(np.empty((1, 1, 1, x.size), x.dtype), xp, w),
            "pad": lambda: core.pad(xs, pads, "fill", 0)}, repeat)
        rows.append({"dtype": dtype, "k": f"1-D {m}", "kernel_ms": t["kernel"] * 1e3,
                     "gflops": 2.0 * x.size * m / t["kernel"] / 1e9, "pad_ms": t["pad"] * 1e3})
    return rows


def report(repeat, quick, dtypes=("float64", "float32")):
    rows = []
    kernels = (3, 7, 15, 63) if quick else IMAGE_KERNELS
    for dtype in dtypes:
        for k in kernels:
            x, h = image_case(k, dtype)
            row = run_case(f"1024x1024 k={k}", x, h, True, repeat)
            row["target"] = TARGET[k] if dtype == "float64" else None   # the targets are float64
            rows.append(row)
            print_row(row, flush=True)
        x, h = signal_case(dtype)
        row = run_case("1-D 1e6, 101 taps", x, h, False, repeat)
        row["target"] = TARGET_1D if dtype == "float64" else None
        rows.append(row)
        print_row(row, flush=True)
    return rows


HEADER = ("| case | dtype | ours (method) ms | GFLOP/s | best SciPy ms | ours / SciPy | target | "
          "ours per method ms |\n|---|---|---|---|---|---|---|---|")


def print_row(row, flush=False):
    target = row.get("target")
    ratio = row.get("time_ratio", 1 / row["ratio"])
    ok = "" if target is None else (f"<= {target} " + ("ok" if ratio <= target else "MISSED"))
    per = ", ".join(f"{k} {v:.1f}" for k, v in row["per_method_ms"].items())
    print(f"| {row['case']} | {row['dtype']} | {row['ours_ms']:.2f} ({row['method']}) | "
          f"{row['gflops']:.1f} | {row['scipy_ms']:.1f} ({row['scipy_best']}) | "
          f"{ratio:.3f} | {ok} | {per} |", flush=flush)


# --- fitting the cost model -----------------------------------------------------------
FIT_CASES = (
    # (in1 shape, in2 shape, mode, dtype)
    [((n,), (k,), "same", d) for n in (2000, 50000, 1000000) for k in (3, 15, 101, 1001)
     if 10 * k < n for d in ("float64", "float32")]
    + [((n, n), (k, k), "same", d) for n in (64, 256, 1024) for k in (3, 5, 9, 17, 33, 65)
       if 4 * k < n for d in ("float64", "float32")]
    + [((n, n), (k, k), m, "complex128") for n in (128, 400) for k in (3, 9, 31)
       for m in ("full", "valid")]
    + [((n, n, n), (k, k, k), "same", d) for n in (24, 64) for k in (3, 5, 9)
       for d in ("float64", "float32")]
)


def _fit_problem(s1, s2, mode, dtype):
    from fastconv.signal import _core as core
    from fastconv.signal._cost import features
    plan = core.make_plan(s1, s2, [core.window(mode, n, m) for n, m in zip(s1, s2)])
    isz = np.dtype(dtype).itemsize // (2 if np.dtype(dtype).kind == "c" else 1)  # real
    cplx = np.dtype(dtype).kind == "c"
    return plan, features(plan, isz, cplx, cplx, core.fast_fir() and not cplx)


def fit(repeat, logs=()):
    """Time every method on FIT_CASES and fit the constants of signal/_cost.py CONSTANTS by
    non-negative least squares on relative error; prints the new dictionary. ``logs``:
    time nothing, fit the best time per case over these earlier --fit outputs (runs on a
    shared machine disturbed at different moments)."""
    from fastconv.signal._cost import METHODS

    times = {}
    if logs:
        for path in logs:
            with open(path) as fh:
                for line in fh:
                    got = re.match(r"(\w+)\s+(\(.*?\))\s+(\(.*?\))\s+(\w+)\s+(\w+)\s+"
                                   r"([\d.]+) ms$", line.strip())
                    if got:
                        key = got.groups()[:5]
                        t = float(got.group(6)) / 1e3
                        times[key] = min(times.get(key, math.inf), t)
    rows = {m: [] for m in METHODS}
    for s1, s2, mode, dtype in FIT_CASES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(s1).astype(dtype)
        h = rng.standard_normal(s2).astype(dtype)
        plan, feats = _fit_problem(s1, s2, mode, dtype)
        for m in METHODS:
            if (m == "direct" and plan.macs > 3e9) or feats[m] is None:
                continue
            if logs:
                t = times.get((m, str(s1), str(s2), mode, dtype))
                if t is None:
                    continue
            else:
                t = best_time(lambda m=m: fs.convolve(x, h, mode, method=m), repeat, 0.2, 20)
            rows[m].append((feats[m], t))
            print(f"{m:6s} {str(s1):16s} {str(s2):12s} {mode:5s} {dtype:10s} "
                  f"{t * 1e3:9.3f} ms", flush=True)
    return fit_constants(rows)


def fit_constants(rows):
    from scipy.optimize import nnls

    from fastconv.signal._cost import CONSTANTS, METHODS
    new = {}
    for m in METHODS:
        names = list(CONSTANTS[m])
        A = np.array([[f.get(n, 0.0) for n in names] for f, _ in rows[m]])
        t = np.array([t for _, t in rows[m]])
        scale = A.max(axis=0)
        scale[scale == 0] = 1
        coef, _ = nnls(A / scale / t[:, None], np.ones(len(t)))   # relative error
        new[m] = {n: float(f"{c / s:.3g}") for n, c, s in zip(names, coef, scale)}
        pred = (A / scale) @ coef
        err = np.abs(pred / t - 1)
        print(f"{m}: median |relative error| {np.median(err):.2f}, max {err.max():.2f}")
    print("CONSTANTS = " + json.dumps(new, indent=4).replace("\n}", ",\n}"))
    return new


def machine():
    from fastconv._show_config import cpu_model, usable_cores
    import numba
    return {"cpu": cpu_model(), "cores": usable_cores(),
            "numba_threads": numba.get_num_threads(), "python": platform.python_version()}


def plot(data, path):
    """Per dtype, one group of bars per case: our default call and each of our methods,
    beside each of SciPy's candidates (log scale)."""
    from report import grouped_bars, machine_title, require_matplotlib, save
    plt = require_matplotlib()
    rows = data["cases"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    labels = {"ours": "fastconv (auto)", "direct": "fastconv direct", "fft": "fastconv fft",
              "oa": "fastconv oa", "direct_scipy": "SciPy direct (convolve2d / convolve)",
              "fftconvolve": "SciPy fftconvolve", "oaconvolve": "SciPy oaconvolve"}
    colors = ["#08519c", "#6baed6", "#9e9ac8", "#74c476", "#e6550d", "#fd8d3c", "#fdd0a2"]
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(9, 3.3 * len(dtypes)), dpi=100,
                             squeeze=False)
    for ax, dtype in zip(axes[:, 0], dtypes):
        sub = [r for r in rows if r["dtype"] == dtype]
        times = []
        for r in sub:
            t = {"ours": r["ours_ms"], **r["per_method_ms"]}
            for k, v in r["scipy_all_ms"].items():
                t["direct_scipy" if k in ("convolve2d", "convolve(direct)") else k] = v
            times.append(t)
        series = {labels[k]: [t.get(k) for t in times] for k in labels}
        groups = [r["case"].replace("1024x1024 ", "").replace(", 101 taps", "\n101 taps")
                  for r in sub]
        grouped_bars(ax, groups, series, colors)
        ax.set_title(f"{dtype}", fontsize=9, loc="left")
    fig.suptitle("fastconv.signal vs scipy.signal, mode 'same' (1024x1024 image, kernel k; "
                 "1-D signal)\n" + machine_title(data.get("machine", "unknown machine")),
                 fontsize=10)
    fig.tight_layout()
    save(fig, axes[-1, 0], path, ncol=4)


def main():
    global BLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--block", type=int, default=BLOCK, help="calls per block (the first "
                    "of each is not counted; 1: single calls round-robin, all counted)")
    ap.add_argument("--quick", action="store_true", help="k = 3, 7, 15, 63 only")
    ap.add_argument("--fit", action="store_true", help="refit the cost model's constants")
    ap.add_argument("--fit-logs", nargs="+", metavar="FILE", help="with --fit: time nothing, "
                    "fit the best time per case over these saved --fit outputs")
    ap.add_argument("--peak", type=float, default=PEAK_GFLOPS,
                    help="float64 peak GFLOP/s of this machine, for the kernel table")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--plot", metavar="FILE", help="draw a chart (PNG, SVG, ...) of every "
                    "method's time per case, log scale (needs matplotlib: the bench extra)")
    ap.add_argument("--from-json", metavar="FILE", help="time nothing: print the table and "
                    "draw the chart from a file written by --json")
    args = ap.parse_args()
    BLOCK = max(1, args.block)
    if args.fit:
        fit(max(3, args.repeat // 2), args.fit_logs or ())
        return
    if args.plot:
        from report import require_matplotlib
        require_matplotlib()                # fail before minutes of timing, not after
    if args.from_json:
        with open(args.from_json) as fh:
            data = json.load(fh)
        print(HEADER)
        for row in data["cases"]:
            print_row(row)
        if args.plot:
            plot(data, args.plot)
        return
    print(f"# fastconv.signal vs scipy.signal -- {platform.processor() or platform.machine()},"
          f" {os.cpu_count()} CPUs, best of >= {args.repeat} rounds of blocks of {BLOCK} calls"
          " (SciPy's direct methods: 1 run)\n")
    print(HEADER)
    rows = report(args.repeat, args.quick)
    print("\n## The direct kernel alone: 1024x1024 image (k x k) or 1e6 signal (1-D) padded "
          "for 'same', one channel\n")
    print(f"| dtype | k | kernel ms | GFLOP/s | % of float64 peak ({args.peak:g} GFLOP/s) | "
          "padding copy ms |\n|---|---|---|---|---|---|")
    krows = kernel_rows(args.repeat)
    for r in krows:
        pct = f"{100 * r['gflops'] / args.peak:.0f}%" if r["dtype"] == "float64" else ""
        print(f"| {r['dtype']} | {r['k']} | {r['kernel_ms']:.2f} | {r['gflops']:.1f} | {pct} | "
              f"{r['pad_ms']:.2f} |")
    data = {"machine": machine(), "cases": rows, "kernel": krows}
    if args.json:
        with atomic_write(args.json, "w") as fh:
            json.dump(data, fh, indent=1)
    if args.plot:
        plot(data, args.plot)


if __name__ == "__main__":
    main()
