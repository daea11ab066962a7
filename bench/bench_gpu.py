"""GPU benchmark: fastconv's CUDA kernels against torch.nn.functional.conv2d (cuDNN).

conv2d forward and forward+backward (input, weight and bias gradients) at batch 64 on the
five layer shapes of the core issue, every algorithm plus "auto", in one process with
CUDA-event timing. Each fastconv result is checked against cuDNN before it is timed.
cuDNN runs in strict FP32 (TF32 off, the precision fastconv computes in) with
``cudnn.benchmark`` on; its TF32 forward time is reported alongside for reference.

    python bench/bench_gpu.py --out gpu_bench.json         # on a GPU
    NUMBA_ENABLE_CUDASIM=1 python bench/bench_gpu.py --quick  # logic check on a CPU

Prints one line per measurement as it goes and writes every number to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastconv as fc  # noqa: E402
from fastconv import dispatch  # noqa: E402
from fastconv._spec import _prod, out_size  # noqa: E402
from fastconv.cuda.cost import GPU_TABLE  # noqa: E402

#: name: (N, C_in, H, W, C_out, k, stride, padding)
SHAPES = {   # the 3x3 layers first: they carry the <= 3x cuDNN target
    "resnet": (64, 64, 56, 56, 64, 3, 1, 1),
    "vgg": (64, 128, 56, 56, 128, 3, 1, 1),
    "stem": (64, 3, 224, 224, 64, 7, 2, 3),
    "mnist.conv1": (64, 1, 28, 28, 10, 5, 1, 0),
    "mnist.conv2": (64, 10, 12, 12, 20, 5, 1, 0),
}
QUICK = {  # tiny stand-ins for checking this script under the simulator
    "mnist.conv1": (2, 1, 8, 8, 3, 3, 1, 0),
    "resnet": (2, 4, 6, 6, 4, 3, 1, 1),
    "stem": (1, 3, 9, 9, 4, 3, 2, 1),
}
ALGOS = tuple(dispatch.REGISTRY) + ("auto",)
H200_FP32_PEAK = GPU_TABLE["peak_flops"]["float32"]   # the cost table's (dense FP32)


def log(msg):
    print(msg, flush=True)


class Timer:
    """Milliseconds per call: warm-up excluded, repeats sized to ~``budget`` seconds."""

    def __init__(self, cuda, torch, budget):
        self.cuda, self.torch, self.budget = cuda, torch, budget

    def _events(self, fn, reps, use_torch):
        if use_torch:
            e0 = self.torch.cuda.Event(enable_timing=True)
            e1 = self.torch.cuda.Event(enable_timing=True)
        else:
            e0, e1 = self.cuda.event(), self.cuda.event()
        e0.record()
        for _ in range(reps):
            fn()
        e1.record()
        e1.synchronize()
        ms = e0.elapsed_time(e1) if use_torch else self.cuda.event_elapsed_time(e0, e1)
        return ms / reps

    def __call__(self, fn, use_torch=False):
        fn()                                     # warm-up: JIT compile, cuDNN autotune
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        once = time.perf_counter() - t0
        if _simulated(self.cuda) or (use_torch and not self.torch.cuda.is_available()):
            return once * 1e3
        reps = max(1, min(20, int(self.budget / max(once, 1e-6))))
        return self._events(fn, reps, use_torch)

    def sync(self):
        self.cuda.synchronize()
        if self.torch is not None and self.torch.cuda.is_available():
            self.torch.cuda.synchronize()


def _simulated(cuda):
    return cuda.jit.__module__.startswith("numba.cuda.simulator")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_bench.json"))
    ap.add_argument("--quick", action="store_true", help="tiny shapes (simulator logic check)")
    ap.add_argument("--shapes", default=None, help="comma-separated subset of the shape names")
    ap.add_argument("--algos", default=",".join(ALGOS))
    ap.add_argument("--budget", type=float, default=0.25, help="seconds of repeats per timing")
    ap.add_argument("--deadline", type=float, default=165.0,
                    help="seconds after which remaining measurements are skipped")
    args = ap.parse_args(argv)

    from numba import cuda
    import torch
    import torch.nn.functional as F
    from fastconv.cuda import nn_ops
    from fastconv.cuda import runtime as rt

    sim = _simulated(cuda)
    on_gpu = torch.cuda.is_available() and not sim
    tdev = "cuda" if on_gpu else "cpu"
    torch.backends.cudnn.benchmark = True
    shapes = QUICK if args.quick else SHAPES
    if args.shapes:
        shapes = {k: shapes[k] for k in args.shapes.split(",")}
    algos = args.algos.split(",")
    timer = Timer(cuda, torch, args.budget)
    meta = {"device": torch.cuda.get_device_name() if on_gpu else ("simulator" if sim else "cpu"),
            "numba": __import__("numba").__version__, "torch": torch.__version__,
            "python": platform.python_version(), "fp32_peak_flops": H200_FP32_PEAK}
    try:
        from importlib.metadata import version
        meta["numba_cuda"] = version("numba-cuda")
    except Exception:
        pass
    log(f"# {meta}")
    results = []
    t_start = time.perf_counter()
    for name, (N, C, H, W, O, k, s, p) in shapes.items():
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(N, C, H, W, generator=g).to(tdev)
        w = (torch.randn(O, C, k, k, generator=g) / math.sqrt(C * k * k)).to(tdev)
        b = torch.randn(O, generator=g).to(tdev)
        spec_flops = 2 * N * O * C * k * k * _prod(out_size((H + 2 * p, W + 2 * p), (k, k), (s, s), (1, 1)))
        # cuDNN, strict FP32
        xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=False):
            y_ref = F.conv2d(x, w, b, s, p)
            gy = torch.randn(y_ref.shape, generator=g).to(tdev)
            ref_fwd = timer(lambda: F.conv2d(x, w, b, s, p), use_torch=True)

            def torch_fwd_bwd():
                xr.grad = wr.grad = br.grad = None
                F.conv2d(xr, wr, br, s, p).backward(gy)
            ref_both = timer(torch_fwd_bwd, use_torch=True)
        # the gradients of the last timed call are the references
        want = {"y": y_ref.detach().cpu().numpy(), "gx": xr.grad.cpu().numpy(),
                "gw": wr.grad.cpu().numpy(), "gb": br.grad.cpu().numpy()}
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=True):
            ref_tf32 = timer(lambda: F.conv2d(x, w, b, s, p), use_torch=True) if on_gpu else None
        log(f"{name:12s} cuDNN fp32: fwd {ref_fwd:8.3f} ms ({spec_flops / ref_fwd / 1e9:6.2f} TFLOP/s)"
            f"  fwd+bwd {ref_both:8.3f} ms" + (f"  | tf32 fwd {ref_tf32:.3f} ms" if ref_tf32 else ""))
        if on_gpu:
            xd, wd, bd, gyd = (cuda.as_cuda_array(t.detach()) for t in (x, w, b, gy))
        else:
            xd, wd, bd, gyd = (cuda.to_device(t.detach().numpy()) for t in (x, w, b, gy))
        out = cuda.device_array(tuple(y_ref.shape), np.float32)
        for algo in algos:
            row = {"shape": name, "dims": [N, C, H, W, O, k, s, p], "algorithm": algo,
                   "flops_fwd": spec_flops, "cudnn_fwd_ms": ref_fwd, "cudnn_fwd_bwd_ms": ref_both,
                   "cudnn_tf32_fwd_ms": ref_tf32}
            if time.perf_counter() - t_start > args.deadline:
                row["error"] = "skipped: deadline"
                log(f"  {algo:7s} skipped (deadline {args.deadline:.0f} s)")
                results.append(row)
                continue
            if algo == "auto":
                row["chosen"] = fc.choose_algorithm((N, C, H, W), (O, C, k, k), s, p, device="cuda",
                                                   dtype="float32").algorithm
            try:
                def fwd():
                    return fc.conv2d(xd, wd, bd, s, p, algorithm=algo, out=out)

                def fwd_bwd():
                    fc.conv2d(xd, wd, bd, s, p, algorithm=algo, out=out)
                    gx = fc.grad.conv2d_input((N, C, H, W), wd, gyd, s, p, algorithm=algo)
                    gw = fc.grad.conv2d_weight(xd, (O, C, k, k), gyd, s, p, algorithm=algo)
                    return gx, gw, nn_ops.bias_grad(gyd)
                t0 = time.perf_counter()
                fwd()
                gx, gw, gb = fwd_bwd()
                cuda.synchronize()
                row["first_call_s"] = time.perf_counter() - t0      # includes JIT compiles
                err = {}
                for key, got in (("y", out), ("gx", gx), ("gw", gw), ("gb", gb)):
                    ref = want[key]
                    err[key] = float(np.abs(got.copy_to_host() - ref).max() / max(1e-30, np.abs(ref).max()))
                row["max_rel_err"] = err
                row["fwd_ms"] = timer(fwd)
                row["fwd_bwd_ms"] = timer(fwd_bwd)
                row["fwd_tflops"] = spec_flops / row["fwd_ms"] / 1e9
                row["fwd_bwd_tflops"] = 3 * spec_flops / row["fwd_bwd_ms"] / 1e9
                row["fwd_ratio_vs_cudnn"] = row["fwd_ms"] / ref_fwd
                row["fwd_bwd_ratio_vs_cudnn"] = row["fwd_bwd_ms"] / ref_both
                row["fwd_pct_fp32_peak"] = 100 * spec_flops / (row["fwd_ms"] * 1e-3) / H200_FP32_PEAK
                ok = max(err.values()) < 1e-3
                log(f"  {algo:7s}{'->' + row['chosen'] if 'chosen' in row else '':9s} "
                    f"fwd {row['fwd_ms']:8.3f} ms {row['fwd_tflops']:6.2f} TFLOP/s x{row['fwd_ratio_vs_cudnn']:5.2f}"
                    f" | fwd+bwd {row['fwd_bwd_ms']:8.3f} ms {row['fwd_bwd_tflops']:6.2f} TFLOP/s"
                    f" x{row['fwd_bwd_ratio_vs_cudnn']:5.2f} | err {max(err.values()):.1e}{'' if ok else ' MISMATCH'}"
                    f" | first call {row['first_call_s']:.1f} s")
            except Exception as exc:          # report and go on: one failure must not hide the rest
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"  {algo:7s} FAILED {row['error'][:300]}")
            results.append(row)
            rt.release_workspaces()
        _write(args.out, meta, results, time.perf_counter() - t_start)
    _write(args.out, meta, results, time.perf_counter() - t_start)
    log(f"# wrote {args.out} ({len(results)} rows, {time.perf_counter() - t_start:.1f} s)")
    summary(results)
    return 0


def _write(path, meta, results, seconds):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"meta": meta, "seconds": seconds, "results": results}, fh, indent=1)


def summary(results):
    log("\n| shape | algorithm | fwd ms | fwd TFLOP/s | x cuDNN | fwd+bwd ms | fwd+bwd TFLOP/s | x cuDNN |")
    log("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "fwd_ms" not in r:
            log(f"| {r['shape']} | {r['algorithm']} | failed: {r.get('error', '')[:60]} |||||")
            continue
        algo = r["algorithm"] + (f" ({r['chosen']})" if "chosen" in r else "")
        log(f"| {r['shape']} | {algo} | {r['fwd_ms']:.3f} | {r['fwd_tflops']:.2f} | "
            f"{r['fwd_ratio_vs_cudnn']:.2f} | {r['fwd_bwd_ms']:.3f} | {r['fwd_bwd_tflops']:.2f} | "
            f"{r['fwd_bwd_ratio_vs_cudnn']:.2f} |")
    shown = {}
    for r in results:
        if "fwd_ms" in r:
            shown.setdefault(r["shape"], (r["cudnn_fwd_ms"], r["cudnn_fwd_bwd_ms"], r["cudnn_tf32_fwd_ms"]))
    log("\n| shape | cuDNN fp32 fwd ms | cuDNN fp32 fwd+bwd ms | cuDNN tf32 fwd ms |")
    log("|---|---|---|---|")
    for k, (a, b, c) in shown.items():
        log(f"| {k} | {a:.3f} | {b:.3f} | {'' if c is None else f'{c:.3f}'} |")


if __name__ == "__main__":
    sys.exit(main())
