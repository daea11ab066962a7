"""MNIST training speed: fastconv.nn vs PyTorch CPU, same network, batch size and threads,
measured in one process, once with fastconv imported first and once with torch first.

    python bench/mnist_vs_torch.py [--batches 50] [--rounds 10] [--threads 2]
                                   [--data-dir ../shared/data/mnist] [--profile] [--json out.json]
                                   [--import-order {both,fastconv-first,torch-first}]
                                   [--repeats 2] [--plot steps.png] [--device cuda]

Both frameworks train the network of examples/mnist.py (SGD lr 0.01 momentum 0.5,
batch 64) from the same initial weights on the same batches. The timed work alternates
between them in rounds of ``--batches`` training steps (fastconv first in odd rounds,
torch first in even ones), so a noisy, shared machine slows both alike; the ratio is
reported over all rounds and as the median of the per-round ratios (robust to load
spikes). The epoch time is the per-step time times the steps of one MNIST epoch
(60,000 / batch size), or the measured time of whole epochs with ``--batches epoch``.
Warm-up (JIT compilation, first allocations) is excluded. Without PyTorch, only
fastconv is timed.

Import order (issue 17): which library is imported first decided, before fastconv
loaded numba's OpenMP runtime itself, whose OpenMP runtime numba's workers ran in and so
how they waited. ``--import-order both`` (the default on the CPU) runs each order in a
fresh interpreter, ``--repeats`` times alternately, and reports fastconv's step time
with torch imported first over its step time with fastconv first (the target is within
10 %) and the epoch-time ratio to PyTorch in each order. ``--plot FILE`` draws the
per-step time distributions of both frameworks in both orders (needs matplotlib).

numpy's BLAS (fastconv's im2col GEMMs and Linear run on it) gets ``--blas-threads``
threads (default 1), set through threadpoolctl, so that it holds whichever library
imported numpy first; PyTorch uses its own MKL, unaffected. Measured on 2 shared AMD
EPYC cores before the import-order fix: fastconv 13.4 ms/step vs torch 14.9 (0.90x) with
one BLAS thread; 41.7 vs 14.6 ms/step (2.9x) with ``--blas-threads 2``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORDERS = ("fastconv-first", "torch-first")
_ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
_ap.add_argument("--batches", default="50",
                 help="training steps per framework per round, or 'epoch' (default 50)")
_ap.add_argument("--rounds", type=int, default=10, help="alternating rounds (default 10)")
_ap.add_argument("--batch-size", type=int, default=64)
_ap.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
_ap.add_argument("--blas-threads", type=int, default=1,
                 help="threads of numpy's BLAS, used by fastconv's im2col GEMMs and Linear "
                      "(default 1; PyTorch uses its own MKL, unaffected)")
_ap.add_argument("--data-dir", help="MNIST IDX directory (default: random images)")
_ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                 help="cuda: fastconv's numba.cuda backend vs PyTorch on the GPU (images "
                      "uploaded once, no host round trip per step)")
_ap.add_argument("--import-order", choices=("both",) + ORDERS, default=None,
                 help="which of fastconv and torch this process imports first; 'both' runs "
                      "each order in a fresh interpreter and compares them (default: both "
                      "on the CPU, fastconv-first on the GPU)")
_ap.add_argument("--repeats", type=int, default=2,
                 help="with --import-order both: interpreters per order, run alternately "
                      "(default 2)")
_ap.add_argument("--plot", metavar="FILE",
                 help="draw the per-step time distribution of both frameworks (matplotlib)")
_ap.add_argument("--profile", action="store_true", help="also print a cProfile breakdown of "
                 "the fastconv training step")
_ap.add_argument("--json", metavar="PATH", help="write the results here")
ARGS = _ap.parse_args()
if ARGS.import_order is None:
    ARGS.import_order = "both" if ARGS.device == "cpu" else "fastconv-first"
if ARGS.plot:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("--plot needs matplotlib, which is not installed: pip install matplotlib")

# thread counts must be fixed before numba/torch start their pools (the environment may
# override them); numpy's BLAS is set through threadpoolctl below, whoever loaded it
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, str(ARGS.threads))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

np = nn = optim = torch = None


def import_frameworks(order):
    """Import torch and fastconv in ``order``; torch is None when not installed."""
    global np, nn, optim

    def load_torch():
        global torch
        try:
            import torch as t
            t.set_num_threads(ARGS.threads)
            torch = t
        except ImportError:
            torch = None

    if order == "torch-first":
        load_torch()
    import numpy
    from fastconv import nn as fnn, optim as foptim
    np, nn, optim = numpy, fnn, foptim
    if order == "fastconv-first":
        load_torch()


EPOCH_IMAGES = 60_000


def fastconv_net():
    return nn.Sequential(
        nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10), nn.LogSoftmax(dim=1))


def torch_net():
    T = torch.nn
    return T.Sequential(
        T.Conv2d(1, 10, kernel_size=5), T.MaxPool2d(2), T.ReLU(),
        T.Conv2d(10, 20, kernel_size=5), T.MaxPool2d(2), T.ReLU(),
        T.Flatten(), T.Linear(320, 50), T.ReLU(), T.Linear(50, 10), T.LogSoftmax(dim=1))


def load_images():
    """(images float32 (N, 1, 28, 28) normalised, labels int64)."""
    if ARGS.data_dir:
        from fastconv import datasets
        images, labels = datasets.load_mnist(ARGS.data_dir, "train")
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (EPOCH_IMAGES, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, EPOCH_IMAGES).astype(np.uint8)
    x = ((images.astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None]
    return np.ascontiguousarray(x), labels.astype(np.int64)


class FastconvTrainer:
    name = "fastconv"

    def __init__(self, state, x, y):
        self.model = fastconv_net()
        self.model.load_state_dict(state)
        self.model.to(ARGS.device)
        self.opt = optim.SGD(self.model.parameters(), lr=0.01, momentum=0.5)
        self.loss_fn = nn.NLLLoss()
        if ARGS.device == "cuda":
            from fastconv.cuda import runtime as rt
            self.x, self.y = rt.to_device(x), rt.to_device(y, np.int64)
        else:
            self.x, self.y = x, y

    def step(self, x, y):
        loss = self.loss_fn(self.model(x), y)
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.opt.step()
        self.opt.zero_grad()
        return loss

    def sync(self):
        if ARGS.device == "cuda":
            from numba import cuda
            cuda.synchronize()


class TorchTrainer:
    name = "torch"

    def __init__(self, state, x, y):
        dev = ARGS.device
        self.model = torch_net().to(dev)
        self.model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.5)
        self.loss_fn = torch.nn.NLLLoss()
        self.x, self.y = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)

    def step(self, x, y):
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss            # no .item(): that would wait for the GPU after every step

    def sync(self):
        if ARGS.device == "cuda":
            torch.cuda.synchronize()


def run(trainer, batches, start, steps=None):
    """Train ``batches`` steps from batch ``start`` (wrapping) on the trainer's copy of
    the images; returns seconds (the GPU's queue drained). On the CPU each step's
    seconds are appended to ``steps``."""
    x, y = trainer.x, trainer.y
    bs = ARGS.batch_size
    n_batches = len(x) // bs
    per_step = steps is not None and ARGS.device == "cpu"
    trainer.sync()
    t0 = t = time.perf_counter()
    for b in range(start, start + batches):
        i = (b % n_batches) * bs
        trainer.step(x[i:i + bs], y[i:i + bs])
        if per_step:
            t, t_prev = time.perf_counter(), t
            steps.append(t - t_prev)
    trainer.sync()
    return time.perf_counter() - t0


def profile_fastconv(trainer, steps=100):
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.enable()
    run(trainer, steps, 0)
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())          # all tottime
    rows = sorted(((v[2], k) for k, v in stats.stats.items()), reverse=True)
    print(f"\nfastconv training step, cProfile over {steps} steps (self time):")
    groups = {}
    for tt, (path, line, func) in rows:
        if any(k in path for k in ("/cpu/direct.py", "/cpu/im2col.py", "/cpu/fft.py",
                                   "/engine.py", "/_pad.py", "scipy")):
            g = "convolution kernels and engine"
        elif "matmul" in func:
            g = "BLAS GEMMs (im2col and Linear)"
        elif "/cpu/pool.py" in path or "/cpu/nn_act.py" in path:
            g = "pooling / ReLU / log-softmax kernels"
        elif "/fastconv/nn/" in path or "/fastconv/optim.py" in path:
            g = "fastconv.nn / optim Python"
        elif path == "~":
            g = "numpy calls (allocation, reshapes, sums)"
        else:
            g = "other Python"
        groups[g] = groups.get(g, 0.0) + tt
    for g, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:40s} {1e3 * tt / steps:7.3f} ms/step  {100 * tt / total:5.1f}%")
    print("  top functions:")
    for tt, (path, line, func) in rows[:10]:
        short = "/".join(Path(path).parts[-2:]) if path != "~" else ""
        print(f"    {1e3 * tt / steps:7.3f} ms/step  {short}:{line}({func})")


def measure():
    """Time both frameworks in this process (imported in ARGS.import_order); returns the
    results and prints them."""
    import threadpoolctl
    from fastconv import _config
    x, y = load_images()
    bs = ARGS.batch_size
    steps_per_epoch = math.ceil(EPOCH_IMAGES / bs)
    batches = steps_per_epoch if ARGS.batches == "epoch" else int(ARGS.batches)
    nn.manual_seed(0)
    state = fastconv_net().state_dict()
    trainers = [FastconvTrainer(state, x, y)]
    if torch is not None and (ARGS.device == "cpu" or torch.cuda.is_available()):
        trainers.append(TorchTrainer(state, x, y))
    else:
        print(f"PyTorch ({ARGS.device}) is not available: timing fastconv only")
    with threadpoolctl.threadpool_limits(limits=ARGS.blas_threads, user_api="blas"):
        for tr in trainers:                                 # warm-up: JIT, caches, allocations
            run(tr, min(20, batches), 0)
        times = {tr.name: [] for tr in trainers}
        steps = {tr.name: [] for tr in trainers}
        for r in range(ARGS.rounds):
            order = trainers if r % 2 == 0 else trainers[::-1]
            for tr in order:
                times[tr.name].append(run(tr, batches, r * batches, steps[tr.name]))
        info = _config.threading_info()
        if ARGS.profile:
            profile_fastconv(trainers[0])
    print(f"MNIST CNN on {ARGS.device}, {ARGS.import_order}, batch {bs}, {ARGS.threads} threads "
          f"(numpy BLAS: {ARGS.blas_threads}), {ARGS.rounds} rounds x {batches} steps per "
          f"framework ({'MNIST' if ARGS.data_dir else 'random'} images)")
    print(f"  fastconv threads: numba {info['numba_threading_layer']} x{info['numba_threads']}, "
          f"OpenMP {info['openmp_runtime']} ({info['openmp_wait_policy']}"
          f"{', private' if info['openmp_private'] else ''})"
          + (f"; {info['note']}" if info["note"] else ""))
    result = {"device": ARGS.device, "import_order": ARGS.import_order, "batch_size": bs,
              "threads": ARGS.threads, "steps_per_round": batches,
              "blas_threads": ARGS.blas_threads, "rounds": ARGS.rounds,
              "threading_info": info, "frameworks": {}}
    for name, ts in times.items():
        per_step = sum(ts) / (len(ts) * batches)
        best = min(ts) / batches
        epoch = per_step * steps_per_epoch
        result["frameworks"][name] = {"ms_per_step": 1e3 * per_step,
                                      "best_round_ms_per_step": 1e3 * best,
                                      "epoch_seconds": epoch,
                                      "round_seconds": ts,
                                      "step_ms": [1e3 * t for t in steps[name]]}
        print(f"  {name:9s} {1e3 * per_step:7.2f} ms/step (best round {1e3 * best:.2f})  "
              f"epoch {epoch:6.1f} s  {bs / per_step:6.0f} img/s")
    if "torch" in times:
        f, t = times["fastconv"], times["torch"]
        ratio = sum(f) / sum(t)
        per_round = [a / b for a, b in zip(f, t)]
        median = float(np.median(per_round))
        result["epoch_time_ratio"] = ratio
        result["median_round_ratio"] = median
        result["per_round_ratios"] = per_round
        print(f"epoch-time ratio fastconv / torch: {ratio:.2f}x over all rounds, median of "
              f"rounds {median:.2f}x  (per round: {', '.join(f'{r:.2f}' for r in per_round)})")
        print("target (<= 1.0x) " + ("met" if max(ratio, median) <= 1.0 else
                                     "not met: fastconv is slower than PyTorch"))
    return result


def _child_argv(order, json_path):
    """This command line for one import order, in a fresh interpreter."""
    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        name = a.split("=")[0]
        if name in ("--import-order", "--json", "--plot", "--repeats"):
            skip = "=" not in a
            continue
        argv.append(a)
    return [sys.executable, __file__, *argv, "--import-order", order, "--json", json_path]


def compare_orders():
    """Run each import order ARGS.repeats times, alternately, each in a fresh interpreter;
    pool the rounds per order and compare."""
    runs = {o: [] for o in ORDERS}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(ARGS.repeats):
            for order in (ORDERS if k % 2 == 0 else ORDERS[::-1]):
                path = os.path.join(tmp, f"{order}-{k}.json")
                print(f"== {order} (run {k + 1} of {ARGS.repeats})", flush=True)
                subprocess.run(_child_argv(order, path), check=True)
                runs[order].append(json.loads(Path(path).read_text()))
    summary = {"import_orders": {}, "runs": runs}
    rows = []
    for order, results in runs.items():
        fw = {}
        for name in results[0]["frameworks"]:
            rounds = [t for r in results for t in r["frameworks"][name]["round_seconds"]]
            n = results[0]["steps_per_round"]
            fw[name] = {"ms_per_step": 1e3 * sum(rounds) / (len(rounds) * n),
                        "best_round_ms_per_step": 1e3 * min(rounds) / n}
        entry = {"frameworks": fw}
        if "torch" in fw:
            entry["epoch_time_ratio"] = fw["fastconv"]["ms_per_step"] / fw["torch"]["ms_per_step"]
            per_round = [x for r in results for x in r["per_round_ratios"]]
            entry["median_round_ratio"] = float(sorted(per_round)[len(per_round) // 2])
        summary["import_orders"][order] = entry
        rows.append((order, entry))
    print(f"\nMNIST CNN, {ARGS.repeats} interpreter(s) per import order, alternately "
          f"(ms/step: mean over rounds, best round in brackets)")
    print(f"  {'import order':15s} {'fastconv':>18s} {'torch':>18s}  epoch ratio  median round")
    for order, e in rows:
        f = e["frameworks"]["fastconv"]
        t = e["frameworks"].get("torch")
        cols = f"{f['ms_per_step']:8.2f} ({f['best_round_ms_per_step']:6.2f})"
        if t:
            cols += (f" {t['ms_per_step']:8.2f} ({t['best_round_ms_per_step']:6.2f})  "
                     f"{e['epoch_time_ratio']:9.2f}x  {e['median_round_ratio']:10.2f}x")
        print(f"  {order:15s} {cols}")
    a, b = (summary["import_orders"][o]["frameworks"]["fastconv"] for o in ORDERS)
    slow = b["ms_per_step"] / a["ms_per_step"]
    slow_best = b["best_round_ms_per_step"] / a["best_round_ms_per_step"]
    summary["fastconv_torch_first_over_fastconv_first"] = slow
    summary["fastconv_torch_first_over_fastconv_first_best_round"] = slow_best
    print(f"fastconv step time, torch first / fastconv first: {slow:.2f}x (best rounds "
          f"{slow_best:.2f}x); target within 10 %: "
          + ("met" if min(slow, slow_best) <= 1.10 else "not met"))
    if "torch" in rows[0][1]["frameworks"]:
        ra, rb = (summary["import_orders"][o]["epoch_time_ratio"] for o in ORDERS)
        print(f"epoch-time ratio to PyTorch: {ra:.2f}x fastconv first, {rb:.2f}x torch first")
    return summary


def plot(results, path):
    """Per-step time distributions: one box per framework and import order."""
    labels, data = [], []
    for order, runs in results.items():
        for name in runs[0]["frameworks"]:
            steps = [t for r in runs for t in r["frameworks"][name]["step_ms"]]
            if steps:
                labels.append(f"{name}\n{order}")
                data.append(steps)
    if not data:
        print("--plot: no per-step times (they are kept on the CPU only)")
        return
    fig, ax = plt.subplots(figsize=(1.8 * len(data) + 2, 4.5))
    ax.boxplot(data, whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for k, steps in enumerate(data, 1):                 # the individual steps, jittered
        xs = np.random.default_rng(k).uniform(k - 0.25, k + 0.25, len(steps))
        ax.scatter(xs, steps, s=2, alpha=0.15)
    top = max(np.percentile(d, 99.5) for d in data)
    low = min(np.percentile(d, 0.5) for d in data)
    if top > 20 * low:                               # a loaded machine: spread over decades
        ax.set_yscale("log")
        ax.set_ylim(0.8 * low, 1.2 * top)
    else:
        ax.set_ylim(0, 1.1 * top)
    ax.set_ylabel("ms per training step")
    ax.set_title(f"MNIST CNN training steps, batch {ARGS.batch_size}, {ARGS.threads} threads "
                 f"(whiskers 1-99 %)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def write_json(result):
    from fastconv._fileio import atomic_write
    with atomic_write(ARGS.json, "w") as fh:
        fh.write(json.dumps(result, indent=2) + "\n")


def main():
    global np
    if ARGS.import_order == "both":
        import numpy
        np = numpy
        summary = compare_orders()
        if ARGS.plot:
            plot(summary["runs"], ARGS.plot)
        if ARGS.json:
            write_json(summary)
        return
    import_frameworks(ARGS.import_order)
    result = measure()
    if ARGS.plot:
        plot({ARGS.import_order: [result]}, ARGS.plot)
    if ARGS.json:
        write_json(result)


if __name__ == "__main__":
    main()
