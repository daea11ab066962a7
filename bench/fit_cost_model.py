"""Refit the CPU cost model that ``algorithm="auto"`` uses.

Times every algorithm and op (forward, input_grad, weight_grad) on the benchmark's layer
shapes (bench/cases.py) and a random grid of convolution shapes, then fits, per
algorithm and op, the non-negative constants that turn the operation/byte counts of each
registry entry's ``cpu_features(spec, op)`` into seconds (least squares on relative
error), and writes them to this host class's section of ``fastconv/cost_model.json``
(``avx512`` or ``avx2``; the other sections are kept). Run it on an otherwise idle machine of the class
you deploy to:

    python bench/fit_cost_model.py [--cases 60] [--seed 0] [--dry-run] [--times t.json]
                                   [--ops input_grad weight_grad]

It prints, per op, how often the refitted model picks the measured-fastest algorithm and
the mean and worst slowdown of its picks against the fastest.
"""
import argparse
import json
import os
import time

import numpy as np
from scipy.optimize import nnls

import fastconv as fc
from cases import LAYERS
from fastconv import dispatch
from fastconv._arrays import proxy
from fastconv._fileio import atomic_write
from fastconv._validate import conv_spec

ALGOS = tuple(dispatch.REGISTRY)
LAYER_WEIGHT = 20.0      # weight of each benchmark layer shape in the fit
LAYER_ROUNDS = 4         # timing rounds for each benchmark layer
MIN_ROWS = 8             # fewest rows counting a feature for it to be refitted


def random_case(rng):
    while True:
        k = int(rng.choice([1, 3, 3, 5, 7, 9, 15, 25]))
        H = int(rng.choice([8, 12, 16, 28, 32, 56, 64, 128, 256]))
        if k > H:
            continue
        N = int(rng.choice([1, 2, 8, 32, 64]))
        C = int(rng.choice([1, 3, 8, 16, 32, 64, 128]))
        O = int(rng.choice([1, 4, 10, 16, 32, 64, 128]))
        s = int(rng.choice([1, 1, 1, 2]))
        p = int(rng.choice([0, k // 2]))
        groups = C if (C == O and rng.random() < 0.15) else 1
        shape = ((N, C, H, H), (O, C // groups, k, k))
        spec, *_ = conv_spec("fit", 2, proxy(shape[0], "float32"),
                             proxy(shape[1], "float32"), None, s, p, 1, groups, "zeros")
        if 2e5 < spec.flops < 3e9:
            return shape, dict(stride=s, padding=p, groups=groups)


OPS = dispatch.OPS


def op_fn(op, x, w, gy, algo, kw):
    if op == "forward":
        return lambda: fc.conv2d(x, w, algorithm=algo, **kw)
    if op == "input_grad":
        return lambda: fc.grad.conv2d_input(x.shape, w, gy, algorithm=algo, **kw)
    return lambda: fc.grad.conv2d_weight(x, w.shape, gy, algorithm=algo, **kw)


def best_time(fn, budget=0.15):
    fn()
    best, t_end = np.inf, time.perf_counter() + budget
    for i in range(20):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > t_end:
            break
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="fit and report, do not write")
    ap.add_argument("--times", help="JSON file of measured times: reused when it exists "
                    "(to try other features without re-timing), written otherwise")
    ap.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS),
                    help="refit these ops only; the others keep this host's constants")
    args = ap.parse_args()
    if not args.dry_run:
        read_model_file()
    rng = np.random.default_rng(args.seed)
    # the benchmark's layer shapes (bench/cases.py) first, then random ones
    fixed = [((N, C, H, W), (O, C, k, k), dict(stride=s, padding=p, groups=1))
             for N, C, H, W, O, k, s, p in LAYERS.values()]
    if args.times and os.path.exists(args.times):
        with open(args.times) as fh:
            measured = json.load(fh)
    else:
        measured = []
        for i in range(len(fixed) + args.cases):
            if i < len(fixed):
                xs, ws, kw = fixed[i]
            else:
                (xs, ws), kw = random_case(rng)
            x = rng.standard_normal(xs).astype(np.float32)
            w = rng.standard_normal(ws).astype(np.float32)
            gy = rng.standard_normal(fc.conv2d(x, w, **kw).shape).astype(np.float32)
            spec, *_ = conv_spec("fit", 2, x, w, None, kw["stride"], kw["padding"], 1,
                                 kw["groups"], "zeros")
            # every algorithm that can run it (Winograd: 3x3, stride 1); inf: cannot
            runs = [e.name for e in dispatch.candidates(spec)]
            times = {op: {a: np.inf for a in ALGOS} for op in OPS}
            # the benchmark layers: rounds that alternate the algorithms, best of each, so
            # that a burst of load on a shared machine cannot decide their order
            for _ in range(LAYER_ROUNDS if i < len(fixed) else 1):
                for op in OPS:
                    for a in runs:
                        times[op][a] = min(times[op][a], best_time(op_fn(op, x, w, gy, a, kw)))
            measured.append((xs, ws, kw, times))
            print(f"{i:3d} x{xs} w{ws} {kw}: " + "; ".join(
                f"{op} " + " ".join(f"{a}={t * 1e3:.2f}ms" for a, t in times[op].items())
                for op in OPS), flush=True)
        if args.times:
            with open(args.times, "w") as fh:
                json.dump(measured, fh)
    rows = []
    for xs, ws, kw, times in measured:
        x, w = np.broadcast_to(np.float32(0), xs), np.broadcast_to(np.float32(0), ws)
        spec, *_ = conv_spec("fit", 2, x, w, None, kw["stride"], kw["padding"], 1, kw["groups"], "zeros")
        rows.append((spec, times))

    model = {a: {} for a in ALGOS}
    current = dispatch._MODEL
    wt = np.where(np.arange(len(rows)) < len(fixed), LAYER_WEIGHT, 1.0)
    for a in ALGOS:
        entry = dispatch.REGISTRY[a]
        for op in OPS:
            if op in entry.delegate:             # another entry's kernel (and constants)
                continue
            if op not in args.ops:
                model[a][op] = dict(current[a][op])
                continue
            ran = [k for k, (_, t) in enumerate(rows) if np.isfinite(t[op][a])]
            # every feature any row counts (an algorithm's paths count different ones)
            names = list(dict.fromkeys(n for k in ran for n in entry.cpu_features(rows[k][0], op)))
            A = np.array([[entry.cpu_features(rows[k][0], op).get(n, 0.0) for n in names]
                          for k in ran])
            y = np.array([rows[k][1][op][a] for k in ran])
            # features that too few rows count (a path few random shapes take: depthwise
            # layers' stencil) keep their current constants instead of a fit on a few rows
            keep = [j for j, n in enumerate(names)
                    if np.count_nonzero(A[:, j]) < MIN_ROWS and n in current[a][op]]
            fit = [j for j in range(len(names)) if j not in keep]
            base = A[:, keep] @ np.array([current[a][op][names[j]] for j in keep], float)
            # minimise relative error; the benchmark layers (first rows) count LAYER_WEIGHT times
            w_ = wt[ran]
            coef, _ = nnls(A[:, fit] / y[:, None] * w_[:, None], (1.0 - base / y) * w_)
            model[a][op] = {**{names[j]: float(c) for j, c in zip(fit, coef)},
                            **{names[j]: float(current[a][op][names[j]]) for j in keep}}
    dispatch._MODEL = {a: {op: dict(v) for op, v in ops.items()} for a, ops in model.items()}
    for op in OPS:
        hits, slow = 0, []
        for k, (spec, times) in enumerate(rows):
            t = {a: v for a, v in times[op].items() if np.isfinite(v)}
            pick = min(dispatch.estimate(spec, op).items(), key=lambda kv: kv[1])[0]
            best = min(t, key=t.get)
            hits += pick == best
            slow.append(t[pick] / t[best])
            if slow[-1] > 1.1:
                print(f"  {op} miss: N={spec.N} C={spec.C_in} O={spec.C_out} in={spec.in_size} "
                      f"k={spec.kernel} s={spec.stride} g={spec.groups}: picks {pick} "
                      f"({t[pick] * 1e3:.2f} ms), {best} takes {t[best] * 1e3:.2f} ms")
        layers = slow[:len(fixed)]
        print(f"{op}: refitted model picks the fastest in {hits}/{len(rows)} cases; mean "
              f"slowdown of its picks {np.mean(slow):.3f}x, worst {np.max(slow):.2f}x; "
              f"benchmark layers worst {np.max(layers):.2f}x; within 10% in "
              f"{int(np.sum(np.array(slow) <= 1.1))}/{len(rows)}")
    print(json.dumps(model, indent=1))
    if not args.dry_run:
        write_section(model, args.ops)


def read_model_file():
    """cost_model.json's content, with its "hosts" sections (checked before any timing,
    so that a fit is not lost at the end)."""
    try:
        with open(dispatch._MODEL_FILE) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        data = {}
    if not isinstance(data, dict) or not isinstance(data.setdefault("hosts", {}), dict):
        raise SystemExit(f"{dispatch._MODEL_FILE}: not a cost model file (no 'hosts' object)")
    return data


def write_section(model, ops):
    """Replace this host class's section of cost_model.json, keeping the others."""
    data = read_model_file()
    cls = dispatch._model_section(data)[0]
    source = f"the {cls} section" if cls else "the built-in defaults"
    kept = [op for op in OPS if op not in ops]
    data["hosts"][dispatch.HOST_CLASS] = {
        "_fitted_on": dispatch._cpu_model(),
        "_comment": f"fitted by bench/fit_cost_model.py on {time.strftime('%Y-%m-%d')}" + (
            f"; {', '.join(kept)} kept from {source} (--ops)" if kept else ""),
        **model}
    with atomic_write(dispatch._MODEL_FILE, "w") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    print(f"wrote the {dispatch.HOST_CLASS} section of {dispatch._MODEL_FILE}")


if __name__ == "__main__":
    main()
