"""``python -m fastconv``: diagnostics on the command line.

    python -m fastconv                    # fastconv.show_config(): versions, CPU, threads, ...
    python -m fastconv --json             # the same as JSON
    python -m fastconv explain --input 8,64,56,56 --weight 64,64,3,3 --padding 1
                                          # fastconv.choose_algorithm's choice and why

``explain`` calls the public :func:`fastconv.choose_algorithm` with the arguments given
(``--stride``, ``--padding``, ``--dilation``: an int, ``a,b``, ``same``/``valid`` for
padding, or a Python literal such as ``"((1, 0), (2, 1))"`` for per-side pairs).
"""
from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys


def _shape(text):
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 8,64,56,56, "
                                         f"got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}")
    return vals


def _size(text):
    """An int, ``a,b[,c]``, ``same``/``valid``, or a Python literal (per-side pairs)."""
    t = text.strip()
    if t in ("same", "valid"):
        return t
    try:
        vals = tuple(int(v) for v in t.split(","))
        return vals[0] if len(vals) == 1 else vals
    except ValueError:
        pass
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(
            f"expected an int, ints separated by commas, 'same', 'valid' or per-side pairs "
            f"such as '((1, 0), (2, 1))', got {text!r}") from None


def _parser():
    ap = argparse.ArgumentParser(
        prog="python -m fastconv",
        description="Print fastconv's configuration (versions, CPU and vector ISA, threads, "
                    "BLAS, caches, cost model, CUDA, Dask), or explain the algorithm "
                    "choose_algorithm picks for a convolution.")
    ap.add_argument("--json", action="store_true", help="print the configuration as JSON")
    sub = ap.add_subparsers(dest="command", metavar="{explain}")
    ex = sub.add_parser(
        "explain", help="the algorithm fastconv.choose_algorithm picks, its estimates and why",
        description="Print fastconv.choose_algorithm's choice for a convolution, its "
                    "estimated time per candidate and its reason.",
        epilog="example: python -m fastconv explain --input 8,64,56,56 --weight 64,64,3,3 "
               "--padding 1")
    ex.add_argument("--input", required=True, type=_shape, metavar="N,C,H,W",
                    help="input shape (N, C_in, *spatial), or unbatched (C_in, *spatial)")
    ex.add_argument("--weight", required=True, type=_shape, metavar="O,C,kH,kW",
                    help="weight shape (C_out, C_in/groups, *kernel); its length sets the "
                         "rank (conv1d/2d/3d)")
    ex.add_argument("--stride", type=_size, default=1, help="int or a,b (default 1)")
    ex.add_argument("--padding", type=_size, default=0,
                    help="int, a,b, same, valid or per-side pairs (default 0)")
    ex.add_argument("--dilation", type=_size, default=1, help="int or a,b (default 1)")
    ex.add_argument("--groups", type=int, default=1, help="default 1")
    ex.add_argument("--dtype", default="float32", help="default float32")
    ex.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    ex.add_argument("--op", help="forward, input_grad or weight_grad (when this fastconv's "
                                 "choose_algorithm takes op=)")
    ex.add_argument("--precision", help="highest, high or medium (when this fastconv's "
                                        "choose_algorithm takes precision=)")
    return ap, ex


def explain(args, parser) -> str:
    """The text ``python -m fastconv explain`` prints, from parsed arguments."""
    import numpy as np

    import fastconv as fc
    try:
        dtype = np.dtype(args.dtype)
    except TypeError:
        parser.error(f"--dtype: not a NumPy dtype: {args.dtype!r}")
    kwargs = dict(stride=args.stride, padding=args.padding, dilation=args.dilation,
                  groups=args.groups, dtype=dtype.name, device=args.device)
    accepted = inspect.signature(fc.choose_algorithm).parameters
    for name in ("op", "precision"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            parser.error(f"--{name}: this fastconv's choose_algorithm has no {name}= argument")
        kwargs[name] = value
    try:
        choice = fc.choose_algorithm(args.input, args.weight, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        parser.error(str(exc))
    nd = len(args.weight) - 2
    call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    lines = [f"conv{nd}d: input {args.input}, weight {args.weight}, {call}",
             f"algorithm: {choice.algorithm}",
             f"reason: {choice.reason}",
             "estimates:"]
    est = dict(choice.estimates)
    best = est.get(choice.algorithm) or min(est.values(), default=0.0)
    errors = getattr(choice, "errors", None) or {}
    for algo, sec in sorted(est.items(), key=lambda kv: kv[1]):
        rel = f"{sec / best:6.2f}x" if best else ""
        mark = "  <- chosen" if algo == choice.algorithm else ""
        err = f"  error: {errors[algo]}" if algo in errors else ""
        lines.append(f"  {algo:10s} {sec * 1e3:10.3f} ms {rel}{err}{mark}")
    return "\n".join(lines)


def main(argv=None):
    parser, explain_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "explain":
        print(explain(args, explain_parser))
        return 0
    from ._show_config import config_dict, format_config
    info = config_dict()
    print(json.dumps(info, indent=1, default=str) if args.json else format_config(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
