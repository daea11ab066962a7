"""Test accuracy of the examples/mnist.py recipe over several seeds: fastconv and PyTorch.

    python bench/mnist_accuracy.py --data-dir ../shared/data/mnist [--seeds 1 2 3]
                                   [--epochs 10] [--frameworks fastconv torch] [--json out.json]

One number from one seed says little about a recipe: with plain SGD (lr 0.01, momentum
0.5, batch 64, no dropout, no schedule) the test accuracy moves by a few tenths of a percent
from epoch to epoch and from seed to seed. This script trains the same network with the
same recipe for every seed, in fastconv (``examples/mnist.py`` in a subprocess, exactly as
a user runs it) and in PyTorch (same layers, PyTorch's own initialisation seeded with
``torch.manual_seed(seed)``, the same shuffling generator), and reports per epoch the
mean, minimum and maximum test accuracy over the seeds. PyTorch is skipped when absent.
Slow by design: about 2 minutes per seed and framework on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fastconv._fileio import atomic_write  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="directory with the MNIST IDX files")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frameworks", nargs="+", choices=("fastconv", "torch"),
                    default=["fastconv", "torch"])
    ap.add_argument("--json", metavar="PATH", help="write all per-epoch accuracies here")
    return ap.parse_args(argv)


def run_fastconv(args, seed):
    """Per-epoch test accuracies of ``examples/mnist.py --seed seed``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.json"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads))
        subprocess.run([sys.executable, str(ROOT / "examples" / "mnist.py"), "--seed", str(seed),
                        "--epochs", str(args.epochs), "--data-dir", args.data_dir,
                        "--no-progress", "--metrics-json", str(out)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return [e["test_accuracy"] for e in json.loads(out.read_text())["epochs"]]


def run_torch(args, seed, data):
    """The same recipe in PyTorch; shuffling from the same generator as examples/mnist.py."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    (xtr, ytr), (xte, yte) = data
    T = torch.nn
    torch.manual_seed(seed)
    net = T.Sequential(
        T.Conv2d(1, 10, kernel_size=5), T.MaxPool2d(2), T.ReLU(),
        T.Conv2d(10, 20, kernel_size=5), T.MaxPool2d(2), T.ReLU(),
        T.Flatten(), T.Linear(320, 50), T.ReLU(), T.Linear(50, 10), T.LogSoftmax(dim=1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.5)
    loss_fn = T.NLLLoss()
    rng = np.random.Generator(np.random.PCG64(seed))
    accs = []
    for _ in range(args.epochs):
        perm = torch.from_numpy(rng.permutation(len(ytr)))
        net.train()
        for start in range(0, len(ytr), 64):
            idx = perm[start:start + 64]
            loss = loss_fn(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(xte[s:s + 1000]).argmax(1) == yte[s:s + 1000]).sum())
                          for s in range(0, len(yte), 1000))
        accs.append(100.0 * correct / len(yte))
    return accs


def load_torch_data(data_dir):
    import numpy as np
    import torch

    from fastconv import datasets

    def prep(split):
        images, labels = datasets.load_mnist(data_dir, split)
        x = (images.astype(np.float32) / 255 - 0.1307) / 0.3081
        return torch.from_numpy(x[:, None].copy()), torch.from_numpy(labels.astype(np.int64))

    return prep("train"), prep("test")


def summary(name, runs, epochs):
    print(f"\n{name}: test accuracy %, {len(runs)} seeds")
    print(f"{'epoch':>5} {'mean':>7} {'min':>7} {'max':>7}  per seed")
    for e in range(epochs):
        col = [r[e] for r in runs.values()]
        print(f"{e + 1:>5} {statistics.mean(col):7.2f} {min(col):7.2f} {max(col):7.2f}  "
              + " ".join(f"{v:.2f}" for v in col))
    last = [r[-1] for r in runs.values()]
    hit = sum(v >= 99.0 for v in last)
    print(f"after epoch {epochs}: {hit} of {len(last)} seeds at >= 99 %")


def main(argv=None):
    args = parse_args(argv)
    frameworks = list(args.frameworks)
    data = None
    if "torch" in frameworks:
        try:
            data = load_torch_data(args.data_dir)
        except ImportError:
            print("PyTorch is not installed: fastconv only")
            frameworks.remove("torch")
    results = {f: {} for f in frameworks}
    for seed in args.seeds:
        for f in frameworks:
            t0 = time.perf_counter()
            accs = run_fastconv(args, seed) if f == "fastconv" else run_torch(args, seed, data)
            results[f][seed] = accs
            print(f"{f:8} seed {seed}: " + " ".join(f"{a:.2f}" for a in accs)
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    for f in frameworks:
        summary(f, results[f], args.epochs)
    if args.json:
        with atomic_write(args.json, "w") as fh:
            json.dump({f: {str(s): a for s, a in r.items()} for f, r in results.items()}, fh,
                      indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
