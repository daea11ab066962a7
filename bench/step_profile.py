"""Per-layer profile of one MNIST training step (the network of examples/mnist.py, batch
64): forward and backward of every layer in ms, best over the timed steps, with the
same steps' totals in PyTorch (2 threads) for reference. The per-layer rows call each
layer on its own; the Sequential row times the same steps through the model, which runs
MaxPool2d(2) and the ReLU after it as one pass each way.

    python bench/step_profile.py [--steps 30] [--data-dir /path/to/mnist] [--threads 2]
"""
import argparse
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--batch-size", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--data-dir", help="MNIST IDX directory (default: random images)")
ARGS = ap.parse_args()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")      # as bench/mnist_vs_torch.py
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, str(ARGS.threads))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fastconv import nn, optim  # noqa: E402


def net():
    return nn.Sequential(
        nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10), nn.LogSoftmax(dim=1))


def images(n):
    rng = np.random.default_rng(0)
    if ARGS.data_dir:
        from fastconv import datasets
        imgs, labels = datasets.load_mnist(ARGS.data_dir, "train", download=False)
        x = (imgs[:n].astype(np.float32) / 255 - 0.1307) / 0.3081
        return np.ascontiguousarray(x[:, None]), labels[:n].astype(np.int64)
    return (rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int64))


def profile_fastconv(x, y):
    model = net()
    mods = list(model._modules.values())
    loss_fn = nn.NLLLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    B = ARGS.batch_size
    fwd = np.full(len(mods), np.inf)
    bwd = np.full(len(mods), np.inf)
    rest = step = np.inf
    for s in range(ARGS.steps + 1):                    # step 0: warm-up (compilation)
        i0 = (s * B) % (len(x) - B + 1)
        h = x[i0:i0 + B]
        t_start = time.perf_counter()
        tf = np.zeros(len(mods))
        tb = np.zeros(len(mods))
        for i, m in enumerate(mods):
            t0 = time.perf_counter()
            h = m(h)
            tf[i] = time.perf_counter() - t0
        t0 = time.perf_counter()
        loss_fn(h, y[i0:i0 + B])
        g = loss_fn.backward()
        t_loss = time.perf_counter() - t0
        for i in range(len(mods) - 1, -1, -1):
            t0 = time.perf_counter()
            g = mods[i].backward(g, input_grad=i > 0)
            tb[i] = time.perf_counter() - t0
        t0 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t_rest = t_loss + time.perf_counter() - t0
        total = time.perf_counter() - t_start
        if s:
            fwd, bwd = np.minimum(fwd, tf), np.minimum(bwd, tb)
            rest, step = min(rest, t_rest), min(step, total)
    seq = np.inf                  # the same steps through Sequential (fused layer pairs)
    for s in range(ARGS.steps + 1):
        i0 = (s * B) % (len(x) - B + 1)
        t0 = time.perf_counter()
        loss_fn(model(x[i0:i0 + B]), y[i0:i0 + B])
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
        if s:
            seq = min(seq, time.perf_counter() - t0)
    return mods, fwd, bwd, rest, step, seq


def torch_step(x, y):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(ARGS.threads)
    T = torch.nn
    model = T.Sequential(T.Conv2d(1, 10, 5), T.MaxPool2d(2), T.ReLU(), T.Conv2d(10, 20, 5),
                         T.MaxPool2d(2), T.ReLU(), T.Flatten(), T.Linear(320, 50), T.ReLU(),
                         T.Linear(50, 10), T.LogSoftmax(dim=1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    B = ARGS.batch_size
    best = np.inf
    for s in range(ARGS.steps + 1):
        i0 = (s * B) % (len(x) - B + 1)
        t0 = time.perf_counter()
        loss = torch.nn.functional.nll_loss(model(tx[i0:i0 + B]), ty[i0:i0 + B])
        loss.backward()
        opt.step()
        opt.zero_grad()
        if s:
            best = min(best, time.perf_counter() - t0)
    return best


def main():
    x, y = images(max(ARGS.batch_size * 4, 256))
    mods, fwd, bwd, rest, step, seq = profile_fastconv(x, y)
    print(f"| layer | forward ms | backward ms |\n|---|---|---|")
    for m, f, b in zip(mods, fwd, bwd):
        print(f"| {m!r} | {f * 1e3:.3f} | {b * 1e3:.3f} |")
    print(f"| loss + optimiser | {rest * 1e3:.3f} | |")
    print(f"| sum of best parts | {(fwd.sum() + bwd.sum() + rest) * 1e3:.3f} | |")
    print(f"| best whole step | {step * 1e3:.3f} | |")
    print(f"| best whole step, model(x) / model.backward (Sequential: MaxPool2d(2) + ReLU "
          f"fused) | {seq * 1e3:.3f} | |")
    t = torch_step(x, y)
    if t is not None:
        print(f"| torch best whole step | {t * 1e3:.3f} | (ratio {step / t:.2f}x; "
              f"Sequential {seq / t:.2f}x) |")


if __name__ == "__main__":
    main()
