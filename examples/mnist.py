#!/usr/bin/env python
"""Train PyTorch's classic MNIST CNN on fastconv's kernels.

    conv 1->10 k5 -> max-pool 2 -> ReLU -> conv 10->20 k5 -> max-pool 2 -> ReLU
    -> flatten 320 -> linear 50 -> ReLU -> linear 10 -> log-softmax;  NLL loss,
    SGD lr 0.01 momentum 0.5, batch 64, inputs (x / 255 - 0.1307) / 0.3081.

Usage::

    python examples/mnist.py --epochs 3 --data-dir ../shared/data/mnist
    python examples/mnist.py --epochs 1 --save ckpt.npz            # then, later:
    python examples/mnist.py --epochs 2 --resume ckpt.npz --save ckpt.npz
    python examples/mnist.py --epochs 3 --device cuda             # on the GPU (numba.cuda)
    python examples/mnist.py --epochs 10 --plot curves.png        # loss/accuracy curves

Data are found by :func:`fastconv.datasets.load_mnist` (``--data-dir``, then
``$FASTCONV_DATA_DIR``, then the user cache, downloading if needed). ``--save`` writes an
atomic checkpoint (model, optimiser, epoch, random-generator states, metrics so far)
after every epoch; ``--resume`` continues from it exactly: 1 epoch + resume 1 epoch gives
bit for bit the parameters of a 2-epoch run.

``--device cuda`` trains entirely on the GPU: the normalised images and the labels are
uploaded once, every epoch's shuffling permutation is uploaded and batches are gathered
on the device; forward, backward and the SGD update run there. Only the loss (one
scalar per batch) and the test-set count of correct predictions come back. Checkpoints
hold host arrays either way.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# numpy's OpenBLAS keeps its worker threads spinning for a while after every call; on a
# machine with few cores they starve the numba kernels' threads (measured on 2 cores: a
# training step 2.6x slower). The GEMMs here are small, so one BLAS thread is faster
# overall. Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

try:
    import fastconv  # noqa: E402
except ImportError:                       # running from a source checkout, not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import fastconv
from fastconv import datasets, nn, optim  # noqa: E402
from fastconv._fileio import atomic_write  # noqa: E402

# (mean, std) of the training pixels / 255
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
EVAL_BATCH = 1000


def build_model():
    """The network of PyTorch's examples/mnist (2017 version)."""
    return nn.Sequential(
        nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10), nn.LogSoftmax(dim=1))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10, help="total epochs to train (default 10)")
    ap.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (default 0.01)")
    ap.add_argument("--momentum", type=float, default=0.5, help="SGD momentum (default 0.5)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the initial weights and the "
                    "shuffling (default 1)")
    ap.add_argument("--data-dir", help="directory with the IDX files (default: the search "
                    "order of fastconv.datasets.load_mnist)")
    ap.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    ap.add_argument("--limit", type=int, metavar="N",
                    help="train on the first N training images only (smoke tests)")
    ap.add_argument("--save", metavar="PATH", help="write a checkpoint here after every epoch")
    ap.add_argument("--resume", metavar="PATH", help="continue from this checkpoint")
    ap.add_argument("--metrics-json", metavar="PATH",
                    help="write per-epoch metrics (seconds, loss, test accuracy %%) here")
    ap.add_argument("--plot", metavar="PATH",
                    help="draw the per-epoch training loss and test accuracy curves (those "
                    "of --metrics-json, resumed history included) to this image (PNG, SVG, "
                    "...; needs matplotlib: pip install matplotlib)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("--plot needs matplotlib: pip install matplotlib (or the bench extra, "
                     "pip install -e '.[bench]')")
    return args


def load_data(args):
    root = args.data_dir
    if root is not None and not Path(root).expanduser().is_dir():
        print(f"note: --data-dir {root} does not exist; using the default search order",
              file=sys.stderr)
        root = None
    load = datasets.load_mnist
    try:
        train = load(root, "train", dataset=args.dataset)
        test = load(root, "test", dataset=args.dataset)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        sys.exit(f"examples/mnist.py: {exc}")
    return train, test


def normaliser(dataset):
    """A 256-entry lookup table: uint8 pixel -> normalised float32."""
    mean, std = NORMALISATION[dataset]
    return ((np.arange(256, dtype=np.float64) / 255 - mean) / std).astype(np.float32)


class HostData:
    """uint8 images and labels in host memory; batches normalised on the fly."""

    def __init__(self, images, labels, lut):
        self.images, self.labels, self.lut = images, labels, lut
        self.n = len(images)

    def shuffle(self, perm):
        return perm

    def batch(self, perm, start, stop):
        idx = perm[start:stop]
        return self.lut[self.images[idx]][:, None], self.labels[idx]   # (B, 1, 28, 28) float32

    def slice(self, start, stop):
        return self.lut[self.images[start:stop]][:, None], self.labels[start:stop]

    def new_counter(self):
        return 0

    def count_correct(self, counter, out, labels):
        return counter + int((out.argmax(axis=1) == labels).sum())

    def read(self, counter):
        return counter


class DeviceData(HostData):
    """The normalised images (N, 1, 28, 28) float32 and int64 labels on the GPU, uploaded
    once; batches are gathered there by a permutation uploaded once per epoch."""

    def __init__(self, images, labels, lut):
        from fastconv.cuda import nn_ops
        from fastconv.cuda import runtime as rt
        self.ops, self.rt = nn_ops, rt
        self.images = rt.to_device(lut[images][:, None])
        self.labels = rt.to_device(labels, np.int64)
        self.n = len(images)

    def shuffle(self, perm):
        return self.rt.to_device(perm, np.int64)

    def batch(self, perm, start, stop):
        idx = perm[start:stop]
        return self.ops.take(self.images, idx), self.ops.take(self.labels, idx)

    def slice(self, start, stop):
        return self.images[start:stop], self.labels[start:stop]

    def new_counter(self):
        return self.ops.zeros((1,), np.float64)

    def count_correct(self, counter, out, labels):
        return self.ops.axpy(counter, 1.0, self.ops.count_correct(out, labels))

    def read(self, counter):
        return int(round(float(counter.copy_to_host()[0])))


def evaluate(model, data):
    """Test accuracy in percent (eval mode, batches of 1000)."""
    model.eval()
    correct = data.new_counter()
    for i in range(0, data.n, EVAL_BATCH):
        x, y = data.slice(i, i + EVAL_BATCH)
        correct = data.count_correct(correct, model(x), y)
    model.train()
    return 100.0 * data.read(correct) / max(data.n, 1)


def train_epoch(model, opt, loss_fn, data, batch_size, rng, desc, progress):
    """One pass over the shuffled training set. Returns (mean loss, seconds)."""
    from tqdm import tqdm

    n = data.n
    perm = data.shuffle(rng.permutation(n))
    total_loss = 0.0
    bar = tqdm(total=n, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
               disable=not progress, file=sys.stderr)
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, n, batch_size)):
        x, y = data.batch(perm, start, start + batch_size)
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        opt.zero_grad()
        size = min(batch_size, n - start)
        total_loss += loss * size
        bar.update(size)
        if b % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    seconds = time.perf_counter() - t0
    bar.close()
    return total_loss / n, seconds


def _write_json_atomic(path, obj):
    directory = Path(path).parent
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")


def plot_metrics(metrics, path, title):
    """Training loss and test accuracy per epoch, side by side, written to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    ax_loss.plot(epochs, [m["train_loss"] for m in metrics], "o-", color="#08519c")
    ax_loss.set_ylabel("training loss (mean NLL)")
    ax_acc.plot(epochs, [m["test_accuracy"] for m in metrics], "o-", color="#e6550d")
    ax_acc.set_ylabel("test accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 12 else epochs[::max(1, len(epochs) // 10)])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _config(args):
    return {"dataset": args.dataset, "batch_size": args.batch_size, "limit": args.limit,
            "seed": args.seed}


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda":
        try:
            from fastconv.cuda import runtime as rt
            rt.require("examples/mnist.py --device cuda")
        except RuntimeError as exc:
            sys.exit(f"examples/mnist.py: {exc}")
    (train_x, train_y), (test_x, test_y) = load_data(args)
    if args.limit is not None:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    lut = normaliser(args.dataset)
    Data = DeviceData if args.device == "cuda" else HostData
    train, test = Data(train_x, train_y, lut), Data(test_x, test_y, lut)

    nn.manual_seed(args.seed)
    model = build_model().to(args.device)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = nn.NLLLoss()
    rng = np.random.Generator(np.random.PCG64(args.seed))    # shuffling
    metrics = []
    start_epoch = 1
    if args.resume:
        try:
            ckpt = nn.load(args.resume)
        except (OSError, ValueError) as exc:
            sys.exit(f"examples/mnist.py: cannot resume from {args.resume}: {exc}")
        saved = ckpt.get("config", {})
        for key, value in _config(args).items():
            if key != "seed" and saved.get(key) != value:
                print(f"warning: resuming with {key}={value!r} but the checkpoint was trained "
                      f"with {saved.get(key)!r}; the run will not match an uninterrupted one",
                      file=sys.stderr)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        group = opt.param_groups[0]
        for key in ("lr", "momentum"):
            if group[key] != getattr(args, key):
                print(f"warning: --{key} {getattr(args, key)} is ignored: resuming with the "
                      f"checkpoint's optimizer state, {key}={group[key]}", file=sys.stderr)
        rng.bit_generator.state = ckpt["rng"]
        nn.set_rng_state(ckpt["nn_rng"])
        metrics = list(ckpt.get("metrics", []))
        start_epoch = int(ckpt["epoch"]) + 1
        print(f"resumed from {args.resume} after epoch {start_epoch - 1}")
    if start_epoch > args.epochs:
        print(f"nothing to do: the checkpoint already has {start_epoch - 1} epoch(s), "
              f"--epochs is {args.epochs}")

    n = train.n
    progress = not args.no_progress
    for epoch in range(start_epoch, args.epochs + 1):
        loss, seconds = train_epoch(model, opt, loss_fn, train, args.batch_size, rng,
                                    f"epoch {epoch}/{args.epochs}", progress)
        acc = evaluate(model, test)
        metrics.append({"epoch": epoch, "train_seconds": round(seconds, 3),
                        "train_loss": float(loss), "test_accuracy": acc})
        print(f"epoch {epoch}/{args.epochs}  train_loss {loss:.4f}  test_accuracy {acc:.2f}%  "
              f"train {seconds:.1f} s ({n / seconds:.0f} img/s)", flush=True)
        if args.save:
            nn.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                     "rng": rng.bit_generator.state, "nn_rng": nn.get_rng_state(),
                     "metrics": metrics, "config": _config(args)}, args.save)
        if args.metrics_json:
            _write_json_atomic(args.metrics_json, {"epochs": metrics})
    if args.plot:
        plot_metrics(metrics, args.plot,
                     f"fastconv: {args.dataset} CNN, batch {args.batch_size}, SGD lr "
                     f"{opt.param_groups[0]['lr']:g} momentum "
                     f"{opt.param_groups[0]['momentum']:g}, seed {args.seed}, {args.device}")
        print(f"wrote {args.plot}")
    return metrics


if __name__ == "__main__":
    main()
